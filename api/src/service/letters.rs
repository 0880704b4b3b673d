//! What a referral's printed documents show: its clinical referral information (e-RS A007,
//! `$ers.generateCRI` on a referral; on an A&G request the same operation is the advice
//! summary, A043) and the letter for its patient (A019, `$ers.generatePatientLetter`). Each
//! is read whole and audited as a read of everything it shows.

use std::sync::Arc;

use ers_schema::store;
use ers_schema::{DbConnection, ResourceRow};
use serde_json::Value;

use super::advice::{self, Summary};
use super::audit::{self, AuditDraft, Outcome, Touched};
use super::referral::{invalid, load_json};
use super::resource;
use super::{scope, stored_value, Result, ServiceError};
use crate::domain::calendar::WorkingDays;
use crate::domain::Caller;
use crate::fhir::registry;
use crate::fhir::resources::advice as ag;
use crate::fhir::resources::appointment as appointment_res;
use crate::fhir::resources::service_request as sr;
use crate::fhir::At;

/// What `$ers.generateCRI` shows: an A&G request's conversation, or a referral's information.
pub enum Information {
    Advice(Box<Summary>),
    Referral(Box<ReferralInformation>),
}

/// A referral as its printed documents show it.
pub struct ReferralInformation {
    pub referral: Value,
    pub patient: Option<Value>,
    /// The referrer's PractitionerRole, its Practitioner and its Organization.
    pub requester: Option<Value>,
    pub referrer: Option<Value>,
    pub referring_organisation: Option<Value>,
    /// The shortlisted services, in the referral's order.
    pub services: Vec<Value>,
    /// The current appointment: booked, or deferred to the provider (proposed).
    pub appointment: Option<Value>,
    /// Where it is (the appointment's Location, else its service's first).
    pub location: Option<Value>,
    /// The referral letter and the provider's attachments (metadata, not the files).
    pub documents: Vec<Value>,
    /// Each version's state, oldest first.
    pub history: Vec<StateChange>,
    /// What its provider is to do, if it is deferred to one, and when the patient is to be
    /// contacted by.
    pub pending: Option<super::referral::Pending>,
    /// The advice and guidance conversation the referral was converted from.
    pub advice: Option<Summary>,
}

/// One version of the referral: when, the state it left the referral in, and who.
pub struct StateChange {
    pub at: String,
    pub state: String,
    pub reason: Option<String>,
    pub comment: Option<String>,
    /// Business function and organisation (`ROLE@ODS`), or the server.
    pub by: String,
}

/// The clinical referral information of a referral, or the advice summary of an A&G request
/// (e-RS A007 and A043), for a caller who may see it. `conversations`: whether the caller may
/// read advice messages (the summary is one; a referral's information shows the conversation
/// it came from only then).
pub fn clinical_information(
    conn: &mut DbConnection,
    id: &str,
    caller: &Caller,
    draft: &AuditDraft,
    conversations: bool,
    calendar: &WorkingDays,
) -> Result<Information> {
    let (row, request) = readable(conn, id, caller)?;
    if ag::is_advice(&request) {
        if !conversations {
            return Err(ServiceError::Forbidden(format!(
                "Business function {} may not read Communication resources: the advice summary is the conversation",
                caller.business_function
            )));
        }
        return advice::summary_of(conn, &row, request, draft)
            .map(|s| Information::Advice(Box::new(s)));
    }
    let mut info = gather(conn, &row, request, true, calendar)?;
    if !conversations {
        info.advice = None;
    }
    record(
        conn,
        draft,
        &row,
        &info,
        "clinical referral information ($ers.generateCRI)",
    )?;
    Ok(Information::Referral(Box::new(info)))
}

/// What the patient's letter about a referral shows (e-RS A019): the referrer's side prints
/// it for the patient.
pub fn patient_letter(
    conn: &mut DbConnection,
    id: &str,
    caller: &Caller,
    draft: &AuditDraft,
    calendar: &WorkingDays,
) -> Result<ReferralInformation> {
    if !caller.business_function.is_referrer() {
        return Err(ServiceError::Forbidden(format!(
            "{} may not print the patient's letter: the referrer's side gives it to the patient",
            caller.business_function
        )));
    }
    let (row, request) = readable(conn, id, caller)?;
    if ag::is_advice(&request) {
        return Err(invalid(
            "ServiceRequest",
            "INVALID_REQUEST_TYPE",
            "business-rule",
            format!("ServiceRequest/{id} is an advice and guidance request: a patient letter is about a referral"),
        ));
    }
    let info = gather(conn, &row, request, false, calendar)?;
    record(
        conn,
        draft,
        &row,
        &info,
        "patient letter ($ers.generatePatientLetter)",
    )?;
    Ok(info)
}

/// The request, if the caller may see it (404 as if it did not exist otherwise).
fn readable(conn: &mut DbConnection, id: &str, caller: &Caller) -> Result<(ResourceRow, Value)> {
    let def = registry::find("ServiceRequest")
        .ok_or_else(|| ServiceError::Internal("ServiceRequest is not registered".into()))?;
    let row = resource::read(conn, def, id)?;
    scope::check(conn, def, id, caller)?;
    let request = stored_value(&row)?;
    Ok((row, request))
}

fn loaded(c: &mut DbConnection, reference: Option<&str>) -> Result<Option<Value>> {
    Ok(match reference {
        Some(r) => load_json(c, r)?.map(Arc::unwrap_or_clone),
        None => None,
    })
}

/// Everything about the referral; `full` adds its documents, history and the advice it came
/// from (the letter shows none of them). A deferred referral's contact-by date counts
/// `calendar`'s working days.
fn gather(
    c: &mut DbConnection,
    row: &ResourceRow,
    referral: Value,
    full: bool,
    calendar: &WorkingDays,
) -> Result<ReferralInformation> {
    let patient = loaded(c, referral.at("/subject/reference").and_then(Value::as_str))?;
    let requester = loaded(
        c,
        referral.at("/requester/reference").and_then(Value::as_str),
    )?;
    let of_role = |pointer: &str| {
        requester
            .as_ref()
            .and_then(|r| r.at(pointer))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let (practitioner, organisation) = (
        of_role("/practitioner/reference"),
        of_role("/organization/reference"),
    );
    let referrer = loaded(c, practitioner.as_deref())?;
    let referring_organisation = loaded(c, organisation.as_deref())?;
    let mut services = Vec::new();
    for s in sr::shortlist(&referral) {
        if let Some(v) = loaded(c, Some(&s))? {
            services.push(v);
        }
    }
    let appointment = super::booking::current_appointments(c, &row.id)?
        .into_iter()
        .next()
        .map(|r| stored_value(&r))
        .transpose()?;
    // Where: the appointment's Location, else its service's first.
    let actor = |t: &str| {
        appointment
            .as_ref()
            .and_then(|a| appointment_res::actors(a, t).into_iter().next())
    };
    let at = actor("Location").or_else(|| {
        let service = actor("HealthcareService")?;
        services
            .iter()
            .find(|s| format!("HealthcareService/{}", str_of(s, "/id")) == service)?
            .at("/location/0/reference")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let location = loaded(c, at.as_deref())?;
    let pending = super::referral::pending(c, row, calendar)?;
    let (documents, history, advice) = if full {
        let documents = advice::related(c, "DocumentReference", "related", &row.id, "date")?;
        let history = history(c, &row.id)?;
        // A referral converted from advice keeps the request's UBRN and id after its prefix.
        let advice = match row.id.strip_prefix("r.") {
            Some(rest) => match store::get_current(c, "ServiceRequest", &format!("a.{rest}"))? {
                Some(a) if !a.is_deleted() => {
                    let request = stored_value(&a)?;
                    Some(advice::gather(c, &a, request)?)
                }
                _ => None,
            },
            None => None,
        };
        (documents, history, advice)
    } else {
        Default::default()
    };
    Ok(ReferralInformation {
        referral,
        patient,
        requester,
        referrer,
        referring_organisation,
        services,
        appointment,
        location,
        documents,
        history,
        pending,
        advice,
    })
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.at(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Each version's state, oldest first.
fn history(c: &mut DbConnection, id: &str) -> Result<Vec<StateChange>> {
    Ok(super::referral::state_history(c, id)?
        .into_iter()
        .rev()
        .map(|v| StateChange {
            at: crate::fhir::datetime::instant(v.at),
            state: v.state.state.code().to_owned(),
            reason: v.state.reason.map(|(_, code)| code),
            comment: v.state.comment,
            by: if v.author_role == "SYSTEM" {
                "e-RS".to_owned()
            } else {
                format!("{}@{}", v.author_role, v.author_org)
            },
        })
        .collect())
}

/// The read, audited with everything it showed.
fn record(
    c: &mut DbConnection,
    draft: &AuditDraft,
    row: &ResourceRow,
    info: &ReferralInformation,
    what: &str,
) -> Result<()> {
    let ubrn = sr::ubrn_of(&info.referral).map(str::to_owned);
    let mut touched = vec![audit::touched(row)];
    touched.extend(
        info.patient
            .iter()
            .chain(&info.appointment)
            .chain(&info.documents)
            .map(|v| Touched {
                entity_type: str_of(v, "/resourceType").to_owned(),
                entity_id: str_of(v, "/id").to_owned(),
                nhs_number: None,
                ubrn: ubrn.clone(),
            }),
    );
    audit::record(
        c,
        draft,
        &Outcome {
            action: "R",
            subtype: "read".into(),
            status: 200,
            description: Some(what.into()),
        },
        &touched,
    )?;
    Ok(())
}

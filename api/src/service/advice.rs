//! Advice and guidance use cases: create a request with its first message, the replies and
//! endings (each a Communication and a new request version in one transaction, at the version
//! the caller read), conversion into a referral with the same UBRN, the advice summary, and
//! UBRN expiry (messages and attachments hard-deleted, the request retired).

use crate::fhir::At;
use chrono::{Duration, NaiveDateTime, Utc};
use ers_schema::search as store_search;
use ers_schema::{store, write_tx, Author, DbConnection, ResourceRow};
use serde_json::{json, Value};

use super::attachments::{self, Attaching};
use super::audit::{self, AuditDraft, Outcome, Touched};
use super::referral::{self as referral_svc, invalid, Acting, Expected};
use super::resource::{self, Writer};
use super::stored_value;
use super::{scope, Result, ServiceError};
use crate::domain::advice::{
    self as rules, AdviceAction, AdviceStatus, GuidanceOutcome, Refusal, SentBy,
};
use crate::domain::referral::{ReferralState, Relation};
use crate::fhir::outcome::Issue;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::resources::advice::{self as ag, Message, ReplyOutcome};
use crate::fhir::resources::service_request::{self as sr, StateRecord, REVIEW_OUTCOME_SYSTEM};
use crate::fhir::{datetime, search as fsearch, terminology};

fn def(name: &str) -> Result<&'static ResourceDef> {
    registry::find(name).ok_or_else(|| ServiceError::Internal(format!("{name} is not registered")))
}

fn invalid_input(at: &str, issue: Issue) -> ServiceError {
    ServiceError::Invalid(vec![issue.with_expression(at)])
}

/// A message as given: its text and the uploads to attach.
#[derive(Debug, Clone, Default)]
pub struct Said {
    pub text: String,
    pub attachments: Vec<Attaching>,
}

/// The A&G service a request is addressed to: it exists, is active, gives advice and
/// guidance, and takes the request's priority.
fn check_service(c: &mut DbConnection, body: &Value, commissioning: Option<&str>) -> Result<()> {
    let services = sr::shortlist(body);
    let [service] = services.as_slice() else {
        // None or several: the request rules say which (`advice::check_request`).
        return Ok(());
    };
    let priority = sr::ers_priority(body).unwrap_or_default();
    usable_service(
        c,
        service,
        ("ServiceRequest.performer[0]", "ServiceRequest.performer[0]"),
        (
            &["ADVICE_AND_GUIDANCE"],
            "is not an advice and guidance service",
        ),
        priority,
        commissioning,
    )
}

/// A service that can take the request: it exists, is active, has one of `flows` (else
/// `refused`), takes the priority and is commissioned for the request's commissioning rule
/// organisation. `(name, at)`: how the error names the input, and where.
fn usable_service(
    c: &mut DbConnection,
    service: &str,
    (name, at): (&str, &str),
    (flows, refused): (&[&str], &str),
    priority: &str,
    commissioning: Option<&str>,
) -> Result<()> {
    let problem = match referral_svc::service_facts(c, service)? {
        None => Some((
            "REFERENCE_NOT_FOUND",
            "not-found",
            format!("'{name}' ({service}) is not a service on this server"),
        )),
        Some(f) if !f.active => Some((
            "SERVICE_UNAVAILABLE",
            "business-rule",
            format!("'{name}' ({service}) is no longer available"),
        )),
        Some(f) if !f.flows.iter().any(|x| flows.contains(&x.as_str())) => Some((
            "INAPPROPRIATE_VALUE",
            "business-rule",
            format!(
                "'{name}' ({service}) {refused} (its request flows: {})",
                f.flows.join(", ")
            ),
        )),
        Some(f) if !f.priorities.iter().any(|p| p == priority) => Some((
            "UNSUPPORTED_PRIORITY",
            "business-rule",
            format!(
                "'{name}' ({service}) does not support priority {priority} (it supports {})",
                f.priorities.join(", ")
            ),
        )),
        Some(f) => f
            .uncommissioned(name, service, commissioning)
            .map(|why| ("SHORTLISTED_SERVICE_NOT_IN_RESULTS", "business-rule", why)),
    };
    match problem {
        Some((ers, code, msg)) => Err(invalid(at, ers, code, msg)),
        None => Ok(()),
    }
}

/// Creates an A&G request: the server assigns the UBRN, the id `a.{uuid}` and the status
/// PROVIDER_RESPONSE_REQUIRED; the request's one `note` is the first message (stored as a
/// Communication, not on the request) and `supportingInfo` references to `Binary/{id}` are
/// attached to it.
pub fn create(conn: &mut DbConnection, mut body: Value, who: &Acting<'_>) -> Result<ResourceRow> {
    let caller = who.caller;
    let def = def("ServiceRequest")?;
    if sr::ubrn_of(&body).is_some() {
        return Err(invalid(
            "ServiceRequest.identifier",
            "FIELD_NOT_PERMITTED",
            "business-rule",
            "'ServiceRequest.identifier' (UBRN) is assigned by the server; leave it out".into(),
        ));
    }
    if ag::status_of(&body).is_some() || sr::state_of(&body).is_some() {
        return Err(invalid(
            "ServiceRequest.extension",
            "FIELD_NOT_PERMITTED",
            "business-rule",
            "'ServiceRequest.extension' (advice status) is set by the server; leave it out".into(),
        ));
    }
    referral_svc::check_new_request(&body)?;
    let notes = body
        .get("note")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text = match notes.as_slice() {
        [one] => one
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => {
            return Err(invalid(
                "ServiceRequest.note",
                "MISSING_VALUE",
                "required",
                format!(
                    "'ServiceRequest.note' holds {} notes; an advice request has exactly one: the first message",
                    notes.len()
                ),
            ))
        }
    };
    ag::check_text(&text, true, "ServiceRequest.note[0].text")
        .map_err(|i| ServiceError::Invalid(vec![i]))?;
    // Uploads named in supportingInfo become the first message's attachments.
    let mut uploads = Vec::new();
    if let Some(info) = body.get_mut("supportingInfo").and_then(Value::as_array_mut) {
        info.retain(|r| {
            let reference = r
                .get("reference")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if crate::fhir::resources::document_reference::binary_id(reference).is_some() {
                uploads.push(Attaching {
                    binary: reference.to_owned(),
                    title: r.get("display").and_then(Value::as_str).map(str::to_owned),
                });
                false
            } else {
                true
            }
        });
        if info.is_empty() {
            if let Some(o) = body.as_object_mut() {
                o.shift_remove("supportingInfo");
            }
        }
    }
    if let Some(o) = body.as_object_mut() {
        o.shift_remove("note");
    }
    write_tx(conn, |c| {
        referral_svc::check_requester(c, &body, caller)?;
        let commissioning = referral_svc::commission(c, &mut body, caller.organisation.as_str())?;
        check_service(c, &body, commissioning.as_deref())?;
        let ubrn = format!("{:012}", store::take_ubrn(c)?);
        let mut ids = body
            .get("identifier")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        ids.push(json!({"system": sr::UBRN_SYSTEM, "value": ubrn}));
        body["identifier"] = Value::Array(ids);
        body["intent"] = json!("order");
        ag::mark(&mut body);
        if let Some(p) = sr::ers_priority(&body).and_then(sr::fhir_priority) {
            body["priority"] = json!(p);
        }
        body["authoredOn"] = json!(datetime::instant(Utc::now().naive_utc()));
        ag::set_status(&mut body, AdviceStatus::ProviderResponseRequired, None);
        let mut access = referral_svc::organisations(c, &body)?;
        let me = caller.organisation.as_str().to_owned();
        if !access.contains(&me) {
            access.push(me);
        }
        let id = format!("a.{}", crate::fhir::new_id());
        let row = match resource::create(
            c,
            def,
            body,
            &Writer::new(who.author, who.audit).visible_to(&access),
            None,
            Some(id),
        )? {
            resource::Created::New(r) | resource::Created::Existing(r) => r,
        };
        let stored = stored_value(&row)?;
        let docs = attachments::attach(c, &stored, &uploads, "ADVICE_REQUEST", &access, who)?;
        post(
            c,
            &stored,
            SentBy::Requester,
            &text,
            &docs,
            None,
            &access,
            who,
        )?;
        Ok(row)
    })
}

/// Writes one message of the conversation.
#[allow(clippy::too_many_arguments)]
fn post(
    c: &mut DbConnection,
    request: &Value,
    sent_by: SentBy,
    text: &str,
    documents: &[String],
    outcome: Option<ReplyOutcome>,
    access: &[String],
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    let sender = match super::roles::role_of(c, who.caller)? {
        Some(role) => json!({"reference": role}),
        None => match referral_svc::organisation_id(c, who.caller.organisation.as_str())? {
            Some(org) => json!({"reference": format!("Organization/{org}")}),
            None => json!({"display": who.caller.organisation.as_str()}),
        },
    };
    let recipient = match sent_by {
        SentBy::Requester => request.at("/performer/0").cloned(),
        SentBy::Responder => request.get("requester").cloned(),
    }
    .unwrap_or_else(|| json!({"display": "unknown"}));
    let message = ag::communication(&Message {
        request,
        sent_by,
        sender,
        recipient,
        sent: datetime::instant(Utc::now().naive_utc()),
        text,
        documents,
        outcome,
    });
    match resource::create(
        c,
        def("Communication")?,
        message,
        &Writer::new(who.author, who.audit).visible_to(access),
        None,
        None,
    )? {
        resource::Created::New(r) | resource::Created::Existing(r) => Ok(r),
    }
}

/// How the caller's organisation relates to the request: the referrer's, or the advice
/// service's provider.
fn relation(
    c: &mut DbConnection,
    body: &Value,
    caller: &crate::domain::Caller,
) -> Result<Relation> {
    let me = caller.organisation.as_str();
    let of = |c: &mut DbConnection, r: Option<&str>| -> Result<bool> {
        Ok(match r {
            Some(r) => referral_svc::ods_behind(c, r)?.as_deref() == Some(me),
            None => false,
        })
    };
    Ok(Relation {
        referrer: of(c, body.at("/requester/reference").and_then(Value::as_str))?,
        provider: of(c, body.at("/performer/0/reference").and_then(Value::as_str))?,
    })
}

/// The request's status and what the caller may do now (the rule the operations apply).
pub(super) fn available_actions(
    c: &mut DbConnection,
    body: &Value,
    caller: &crate::domain::Caller,
) -> Result<(AdviceStatus, Vec<AdviceAction>)> {
    let status = ag::status_of(body)
        .ok_or_else(|| ServiceError::Internal("an advice request without a status".into()))?;
    let rel = relation(c, body, caller)?;
    Ok((
        status,
        rules::available_actions(status, caller.business_function, rel),
    ))
}

fn refusal(r: Refusal, action: AdviceAction, ubrn: &str) -> ServiceError {
    match r {
        Refusal::Status(s) => ServiceError::RequestState(format!(
            "'status' ({}) does not allow {} on advice request {ubrn}: {}",
            s.code(),
            action.code(),
            match s {
                AdviceStatus::ProviderResponseRequired => "the provider is to respond",
                AdviceStatus::ReferrerToSubmitFurtherInformation
                | AdviceStatus::ReferrerToReviewResponse => "the referrer is to act",
                _ => "the conversation has ended",
            }
        )),
        Refusal::Role(b) => referral_svc::role_refused(b, action.code(), action.roles()),
        Refusal::Organisation => ServiceError::Forbidden(format!(
            "advice request {ubrn}: {} is for the {} organisation, not yours",
            action.code(),
            match action.sent_by() {
                SentBy::Requester => "referring",
                SentBy::Responder => "advice service's provider",
            }
        )),
    }
}

/// A change of an A&G request, with its inputs: one per operation.
#[derive(Debug, Clone)]
pub enum AdviceChange {
    Respond {
        outcome: GuidanceOutcome,
        recommendation: Option<String>,
        said: Said,
    },
    FurtherInformation(Said),
    Close(Option<String>),
    Cancel(Option<String>),
    Convert {
        said: Said,
        priority: String,
        comment: String,
        service: Option<String>,
    },
}

impl AdviceChange {
    pub fn action(&self) -> AdviceAction {
        match self {
            AdviceChange::Respond { .. } => AdviceAction::Respond,
            AdviceChange::FurtherInformation(_) => AdviceAction::SendFurtherInformation,
            AdviceChange::Close(_) => AdviceAction::Close,
            AdviceChange::Cancel(_) => AdviceAction::Cancel,
            AdviceChange::Convert { .. } => AdviceAction::Convert,
        }
    }

    /// The message it sends (closing and cancelling say something only if given text).
    fn said(&self) -> Said {
        match self {
            AdviceChange::Respond { said, .. }
            | AdviceChange::FurtherInformation(said)
            | AdviceChange::Convert { said, .. } => said.clone(),
            AdviceChange::Close(t) | AdviceChange::Cancel(t) => Said {
                text: t.clone().unwrap_or_default(),
                attachments: Vec::new(),
            },
        }
    }

    /// The inputs on their own (before anything is read).
    fn check(&self) -> Result<()> {
        let said = self.said();
        let required = !matches!(self, AdviceChange::Close(_) | AdviceChange::Cancel(_));
        ag::check_text(&said.text, required, "Parameters.parameter[text]")
            .map_err(|i| ServiceError::Invalid(vec![i]))?;
        match self {
            AdviceChange::Respond {
                outcome,
                recommendation,
                ..
            } => {
                let at = "Parameters.parameter[recommendation]";
                match (outcome, recommendation) {
                    (GuidanceOutcome::ReturnToReferrerWithAdvice, None) => Err(invalid_input(
                        at,
                        Issue::error(
                            "required",
                            "VALUE_IS_REQUIRED",
                            format!("'recommendation' is required with advice; one of: {}", terminology::codes(ag::RECOMMENDATION_SYSTEM).join(", ")),
                        ),
                    )),
                    (GuidanceOutcome::RequireFurtherInformation, Some(_)) => Err(invalid_input(
                        at,
                        Issue::error(
                            "business-rule",
                            "FIELD_NOT_PERMITTED",
                            "'recommendation' goes with advice (RETURN_TO_REFERRER_WITH_ADVICE), not with a request for further information",
                        ),
                    )),
                    (_, Some(r)) if terminology::concept(ag::RECOMMENDATION_SYSTEM, r).is_none() => {
                        Err(invalid_input(
                            at,
                            Issue::error(
                                "code-invalid",
                                "INVALID_CODE",
                                format!("'recommendation' ({r}) is not one of: {}", terminology::codes(ag::RECOMMENDATION_SYSTEM).join(", ")),
                            ),
                        ))
                    }
                    _ => Ok(()),
                }
            }
            AdviceChange::Convert {
                priority, comment, ..
            } => {
                if sr::fhir_priority(priority).is_none() {
                    return Err(invalid_input(
                        "Parameters.parameter[priority]",
                        Issue::error(
                            "code-invalid",
                            "INVALID_CODE",
                            format!("'priority' ({priority}) is not an e-RS priority: ROUTINE, URGENT or TWO_WEEK_WAIT"),
                        ),
                    ));
                }
                referral_svc::check_comment(comment, true, "comment")
            }
            _ => Ok(()),
        }
    }
}

/// What a change produced: the request's new version, and the referral a conversion created.
pub struct Applied {
    pub request: ResourceRow,
    pub referral: Option<ResourceRow>,
}

/// Applies one change to the A&G request at the version the caller read.
pub fn apply(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    change: AdviceChange,
    who: &Acting<'_>,
) -> Result<Applied> {
    change.check()?;
    let action = change.action();
    let def = def("ServiceRequest")?;
    write_tx(conn, |c| {
        let row = resource::read(c, def, id)?;
        scope::check_write(c, def, id, who.caller)?;
        let given = Expected::IfMatch(if_match).check(&row)?;
        let mut body = stored_value(&row)?;
        if !ag::is_advice(&body) {
            return Err(invalid(
                "ServiceRequest",
                "INVALID_REQUEST_TYPE",
                "business-rule",
                format!(
                    "ServiceRequest/{id} is a referral, not an advice and guidance request: {} applies to advice requests",
                    action.operation()
                ),
            ));
        }
        let status = ag::status_of(&body).ok_or_else(|| {
            ServiceError::Internal(format!("ServiceRequest/{id} has no advice status"))
        })?;
        let ubrn = sr::ubrn_of(&body).unwrap_or(id).to_owned();
        let rel = relation(c, &body, who.caller)?;
        rules::check(status, action, who.caller.business_function, rel)
            .map_err(|r| refusal(r, action, &ubrn))?;
        let access = referral_svc::organisations(c, &body)?;
        let said = change.said();
        let (outcome, reply, kind) = match &change {
            AdviceChange::Respond {
                outcome,
                recommendation,
                ..
            } => (
                Some(*outcome),
                Some(ReplyOutcome {
                    outcome: outcome.code(),
                    recommendation: recommendation.clone(),
                }),
                "GUIDANCE_RESPONSE",
            ),
            AdviceChange::Convert { .. } => (
                None,
                Some(ReplyOutcome {
                    outcome: "CONVERT_TO_REFERRAL",
                    recommendation: None,
                }),
                "GUIDANCE_RESPONSE",
            ),
            _ => (None, None, "ADVICE_REQUEST"),
        };
        let referral = match &change {
            AdviceChange::Convert {
                priority,
                comment,
                service,
                ..
            } => {
                if ag::conversion(&body) != Some("AUTHORISED_TO_CONVERT") {
                    return Err(invalid(
                        "ServiceRequest.extension[conversionAuthorisation]",
                        "CONVERSION_NOT_AUTHORISED",
                        "business-rule",
                        format!(
                            "advice request {ubrn} is {}: the referrer did not authorise converting it into a referral; respond with advice instead",
                            ag::conversion(&body).unwrap_or("without a conversion authorisation")
                        ),
                    ));
                }
                Some(convert(
                    c,
                    &body,
                    priority,
                    comment,
                    service.as_deref(),
                    who,
                )?)
            }
            _ => None,
        };
        let docs = attachments::attach(c, &body, &said.attachments, kind, &access, who)?;
        if !said.text.is_empty() || !docs.is_empty() {
            post(
                c,
                &body,
                action.sent_by(),
                &said.text,
                &docs,
                reply,
                &access,
                who,
            )?;
        }
        ag::set_status(&mut body, rules::next_status(action, outcome), None);
        let request = resource::rewrite(
            c,
            def,
            id,
            given,
            body,
            &Writer::new(who.author, who.audit).visible_to(&access),
        )?;
        Ok(Applied { request, referral })
    })
}

/// The referral a conversion creates: same UBRN, id `r.{the request's uuid}`, `basedOn` the
/// request, with the chosen service of the caller's organisation, which will book it
/// (TRIAGED_PROVIDER_TO_ACTION).
fn convert(
    c: &mut DbConnection,
    request: &Value,
    priority: &str,
    comment: &str,
    service: Option<&str>,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    let at = "Parameters.parameter[service]";
    let service = match service {
        Some(s) if s.contains('/') => s.to_owned(),
        Some(s) => format!("HealthcareService/{s}"),
        None => sr::shortlist(request)
            .into_iter()
            .next()
            .unwrap_or_default(),
    };
    let me = who.caller.organisation.as_str();
    usable_service(
        c,
        &service,
        ("service", at),
        (
            &["BOOKABLE", "REVIEW"],
            "takes neither appointments nor triage referrals: name a bookable or triage service of your organisation",
        ),
        priority,
        sr::commissioning_org(request),
    )?;
    if referral_svc::ods_behind(c, &service)?.as_deref() != Some(me) {
        return Err(invalid(
            at,
            "INAPPROPRIATE_VALUE",
            "business-rule",
            format!("'service' ({service}) is not a service of your organisation ({me})"),
        ));
    }
    let request_id = request
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ubrn = sr::ubrn_of(request).unwrap_or_default();
    let mut referral = json!({
        "resourceType": "ServiceRequest",
        "identifier": [{"system": sr::UBRN_SYSTEM, "value": ubrn}],
        "basedOn": [{"reference": format!("ServiceRequest/{request_id}")}],
        "intent": "order",
        "category": [{"coding": [{"system": sr::REFERRAL_CATEGORY.0, "code": sr::REFERRAL_CATEGORY.1, "display": sr::REFERRAL_CATEGORY.2}]}],
        "priority": sr::fhir_priority(priority),
        "extension": [{"url": sr::PRIORITY_EXTENSION, "valueCoding": {"system": crate::fhir::resources::healthcare_service::PRIORITY_SYSTEM, "code": priority}}],
        "performer": [{"reference": service}],
        "authoredOn": datetime::instant(Utc::now().naive_utc()),
    });
    for field in ["subject", "requester", "performerType", "reasonCode"] {
        if let Some(v) = request.get(field) {
            referral[field] = v.clone();
        }
    }
    if let Some(o) = sr::commissioning_org(request) {
        sr::set_commissioning_org(&mut referral, o);
    }
    sr::set_state(
        &mut referral,
        &StateRecord {
            state: ReferralState::TriagedProviderToAction,
            reason: Some((
                REVIEW_OUTCOME_SYSTEM.to_owned(),
                "CONVERTED_FROM_ADVICE".into(),
            )),
            comment: Some(comment.to_owned()),
            service: Some(service),
        },
    );
    let access = referral_svc::organisations(c, &referral)?;
    let id = format!("r.{}", request_id.trim_start_matches("a."));
    match resource::create(
        c,
        def("ServiceRequest")?,
        referral,
        &Writer::new(who.author, who.audit).visible_to(&access),
        None,
        Some(id),
    )? {
        resource::Created::New(r) | resource::Created::Existing(r) => Ok(r),
    }
}

/// Everything an advice summary shows.
pub struct Summary {
    pub request: Value,
    pub patient: Option<Value>,
    pub service: Option<Value>,
    /// Oldest first.
    pub messages: Vec<Value>,
    pub documents: Vec<Value>,
    /// The referral it was converted into.
    pub referral: Option<Value>,
}

/// The whole conversation of an A&G request (e-RS `$ers.generateCRI`, found by
/// `letters::clinical_information`), audited as a read of everything in it.
pub(super) fn summary_of(
    conn: &mut DbConnection,
    row: &ResourceRow,
    request: Value,
    draft: &AuditDraft,
) -> Result<Summary> {
    let summary = gather(conn, row, request)?;
    let mut touched = vec![audit::touched(row)];
    touched.extend(
        summary
            .messages
            .iter()
            .chain(&summary.documents)
            .map(|v| Touched {
                entity_type: v["resourceType"].as_str().unwrap_or_default().to_owned(),
                entity_id: v["id"].as_str().unwrap_or_default().to_owned(),
                nhs_number: None,
                ubrn: sr::ubrn_of(&summary.request).map(str::to_owned),
            }),
    );
    audit::record(
        conn,
        draft,
        &Outcome {
            action: "R",
            subtype: "read".into(),
            status: 200,
            description: Some("advice summary ($ers.generateCRI)".into()),
        },
        &touched,
    )?;
    Ok(summary)
}

/// An A&G request's conversation: its patient, service, messages, documents and the referral
/// it became.
pub(super) fn gather(
    conn: &mut DbConnection,
    row: &ResourceRow,
    request: Value,
) -> Result<Summary> {
    let id = row.id.as_str();
    let load = |c: &mut DbConnection, pointer: &str| -> Result<Option<Value>> {
        match request.at(pointer).and_then(Value::as_str) {
            Some(r) => Ok(super::referral::load_json(c, r)?.map(std::sync::Arc::unwrap_or_clone)),
            None => Ok(None),
        }
    };
    let patient = load(conn, "/subject/reference")?;
    let service = load(conn, "/performer/0/reference")?;
    let messages = related(conn, "Communication", "based-on", id, "sent")?;
    let documents = related(conn, "DocumentReference", "related", id, "date")?;
    let referral = if ag::status_of(&request) == Some(AdviceStatus::AdviceConverted) {
        super::referral::load_json(
            conn,
            &format!("ServiceRequest/r.{}", id.trim_start_matches("a.")),
        )?
        .map(std::sync::Arc::unwrap_or_clone)
    } else {
        None
    };
    Ok(Summary {
        request,
        patient,
        service,
        messages,
        documents,
        referral,
    })
}

/// The resources of `res_type` whose `param` refers to the request, sorted by `sort`.
pub(super) fn related(
    c: &mut DbConnection,
    res_type: &str,
    param: &str,
    request_id: &str,
    sort: &str,
) -> Result<Vec<Value>> {
    let params = vec![
        (param.to_owned(), format!("ServiceRequest/{request_id}")),
        ("_sort".to_owned(), sort.to_owned()),
    ];
    let mut q = fsearch::parse(def(res_type)?, &params, true)
        .map_err(ServiceError::Invalid)?
        .query;
    q.offset = 0;
    q.limit = 10_000;
    store_search::search(c, &q, false)?
        .0
        .iter()
        .map(stored_value)
        .collect()
}

/// What an expiry run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExpiryReport {
    pub requests: usize,
    pub messages: usize,
    pub documents: usize,
    pub binaries: usize,
}

/// UBRN expiry: every A&G request (not converted: a referral keeps its UBRN alive) unchanged
/// for `days` before `now` loses its messages, attachment documents, their Provenance and
/// the uploads no other document uses — hard-deleted, an AuditEvent for each — and is
/// retired with its expiry recorded (reads answer 410). One transaction per request, so a
/// run that stops part way leaves each request either expired or untouched.
pub fn expire(conn: &mut DbConnection, now: NaiveDateTime, days: i64) -> Result<ExpiryReport> {
    let cutoff = now - Duration::days(days);
    let request_id = uuid::Uuid::new_v4().to_string();
    let author = Author {
        user: None,
        role: "SYSTEM".into(),
        org: "ers-server".into(),
        request_id: request_id.clone(),
        client_id: Some("ers-server expire".into()),
        on_behalf_of: None,
    };
    let mut report = ExpiryReport::default();
    loop {
        let ids = store::unchanged_since(
            conn,
            "ServiceRequest",
            ("category", ag::CATEGORY),
            ("advice-status", AdviceStatus::AdviceConverted.code()),
            cutoff,
            200,
        )?;
        if ids.is_empty() {
            break;
        }
        for id in ids {
            let draft = AuditDraft {
                client_id: Some("ers-server expire".into()),
                method: "DELETE".into(),
                path: format!("ServiceRequest/{id}"),
                request_id: request_id.clone(),
                ..AuditDraft::default()
            };
            match expire_one(conn, &id, cutoff, now, days, &author, &draft) {
                Ok(Some(r)) => {
                    report.requests += 1;
                    report.messages += r.messages;
                    report.documents += r.documents;
                    report.binaries += r.binaries;
                }
                Ok(None) => {}
                // Another instance expired it, or it changed, meanwhile: leave it.
                Err(ServiceError::ConcurrentUpdate { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(report)
}

fn expire_one(
    conn: &mut DbConnection,
    id: &str,
    cutoff: NaiveDateTime,
    now: NaiveDateTime,
    days: i64,
    author: &Author,
    draft: &AuditDraft,
) -> Result<Option<ExpiryReport>> {
    let def = def("ServiceRequest")?;
    write_tx(conn, |c| {
        let Some(row) = store::get_current(c, def.name, id)? else {
            return Ok(None);
        };
        if row.is_deleted() || row.last_updated >= cutoff {
            return Ok(None);
        }
        let mut body = stored_value(&row)?;
        let Some(status) = ag::status_of(&body) else {
            return Ok(None);
        };
        if status == AdviceStatus::AdviceConverted {
            return Ok(None);
        }
        let ubrn = sr::ubrn_of(&body).map(str::to_owned);
        let target = [id.to_owned()];
        let messages = store::referring(c, "Communication", "based-on", def.name, &target)?;
        let documents = store::referring(c, "DocumentReference", "related", def.name, &target)?;
        let mut uploads: Vec<String> = Vec::new();
        for d in store::get_many(c, "DocumentReference", &documents)? {
            for b in crate::fhir::resources::document_reference::extract_binary(&stored_value(&d)?)
            {
                if let Some(b) = b.as_str().filter(|b| !uploads.iter().any(|u| u == b)) {
                    uploads.push(b.to_owned());
                }
            }
        }
        // Their Provenance is their versions' (`provenance`): it goes with them.
        store::purge(c, "Communication", &messages)?;
        store::purge(c, "DocumentReference", &documents)?;
        // An upload another (live) document still shows stays.
        let mut erased = Vec::new();
        for b in uploads {
            if store::holders_of(c, "DocumentReference", "binary", &b)?.is_empty() {
                erased.push(b);
            }
        }
        store::purge_binaries(c, &erased)?;
        let why = format!(
            "UBRN {} expired: no activity for {days} days (ERS_UBRN_EXPIRY_DAYS); hard-deleted under the retention policy",
            ubrn.as_deref().unwrap_or(id)
        );
        let deleted = messages
            .iter()
            .map(|m| ("Communication", m))
            .chain(documents.iter().map(|d| ("DocumentReference", d)))
            .chain(erased.iter().map(|b| ("Binary", b)));
        for (t, rid) in deleted {
            audit::record(
                c,
                draft,
                &Outcome {
                    action: "D",
                    subtype: "delete".into(),
                    status: 204,
                    description: Some(why.clone()),
                },
                &[Touched {
                    entity_type: t.to_owned(),
                    entity_id: rid.clone(),
                    nhs_number: None,
                    ubrn: ubrn.clone(),
                }],
            )?;
        }
        ag::set_status(&mut body, status, Some(&datetime::instant(now)));
        let access = store::token_codes(c, def.name, id, scope::PARAM)?;
        resource::retire(
            c,
            def,
            &row,
            body,
            &Writer::new(author, draft).visible_to(&access),
        )?;
        audit::record(
            c,
            draft,
            &Outcome {
                action: "D",
                subtype: "delete".into(),
                status: 204,
                description: Some(format!("{why}: the request is retired (reads answer 410)")),
            },
            &[Touched {
                entity_type: def.name.to_owned(),
                entity_id: id.to_owned(),
                nhs_number: None,
                ubrn: ubrn.clone(),
            }],
        )?;
        Ok(Some(ExpiryReport {
            requests: 1,
            messages: messages.len(),
            documents: documents.len(),
            binaries: erased.len(),
        }))
    })
}

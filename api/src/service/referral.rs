//! Referral use cases: create (UBRN, initial state), the state-changing operations, and the
//! actions available to a caller. Every operation asks `domain::referral::check` (the same
//! answer `available_actions` gives), then writes a new version through `resource::update`
//! with the version the caller read, so two concurrent changes never both win.

use crate::fhir::At;
use std::sync::Arc;

use chrono::Utc;
use ers_schema::{store, Author, DbConnection, ResourceRow};
use serde_json::{json, Value};

use super::audit::AuditDraft;
use super::resource::{self, Writer};
use super::ServiceError;
use crate::domain::calendar::WorkingDays;
use crate::domain::referral::{
    self, Deferral, ReferralAction, ReferralState, Refusal, Relation, ReviewOutcome,
};
use crate::domain::{Caller, OdsCode, SdsUserId};
use crate::fhir::outcome::Issue;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::resources::healthcare_service::{
    self as hs, PRIORITY_SYSTEM, REQUEST_FLOW_SYSTEM,
};
use crate::fhir::resources::requirements;
use crate::fhir::resources::service_request::{self as sr, StateRecord, REVIEW_OUTCOME_SYSTEM};
use crate::fhir::terminology;

use super::Result;

pub const REFERRAL_CANCELLATION_SYSTEM: &str =
    "https://fhir.nhs.uk/CodeSystem/eRS-ReferralCancellationReason";
const MAX_COMMENT: usize = 2000;

fn def() -> Result<&'static ResourceDef> {
    registry::find("ServiceRequest")
        .ok_or_else(|| ServiceError::BadRequest("ServiceRequest is not hosted".into()))
}

pub(super) fn invalid(
    expression: &str,
    ers: &'static str,
    code: &'static str,
    msg: String,
) -> ServiceError {
    ServiceError::Invalid(vec![
        Issue::error(code, ers, msg).with_expression(expression)
    ])
}

/// The live resource a reference (`Type/id`) names, parsed (once per version in a use case's
/// scope: `memo::parsed`).
pub(super) fn load_json(c: &mut DbConnection, reference: &str) -> Result<Option<Arc<Value>>> {
    let Some((t, id)) = reference.split_once('/') else {
        return Ok(None);
    };
    match super::memo::current(c, t, id)?.filter(|r| !r.is_deleted()) {
        Some(row) => super::memo::parsed(&row).map(Some),
        None => Ok(None),
    }
}

/// The ODS code of the organisation behind a reference: an Organization, a PractitionerRole's
/// organisation, or the provider of a HealthcareService.
pub(super) fn ods_behind(c: &mut DbConnection, reference: &str) -> Result<Option<String>> {
    if let Some(known) = super::memo::ods(reference) {
        return Ok(known);
    }
    let found = read_ods_behind(c, reference)?;
    super::memo::put_ods(reference, &found);
    Ok(found)
}

fn read_ods_behind(c: &mut DbConnection, reference: &str) -> Result<Option<String>> {
    let Some(v) = load_json(c, reference)? else {
        return Ok(None);
    };
    let org_ref = match reference.split('/').next() {
        Some("Organization") => {
            return Ok(
                crate::fhir::resources::identifier(&v, OdsCode::ORGANIZATION_SYSTEM)
                    .map(str::to_owned),
            )
        }
        Some("PractitionerRole") => v.at("/organization/reference"),
        Some("HealthcareService") => v.at("/providedBy/reference"),
        _ => None,
    };
    match org_ref.and_then(Value::as_str) {
        Some(r) if r.starts_with("Organization/") => ods_behind(c, r),
        _ => Ok(None),
    }
}

/// How the caller's organisation relates to the referral.
fn relation(
    c: &mut DbConnection,
    body: &Value,
    state: &StateRecord,
    caller: &Caller,
) -> Result<Relation> {
    let me = caller.organisation.as_str();
    let referrer = match body.at("/requester/reference").and_then(Value::as_str) {
        Some(r) => ods_behind(c, r)?.as_deref() == Some(me),
        None => false,
    };
    let provider = match &state.service {
        Some(s) => ods_behind(c, s)?.as_deref() == Some(me),
        None => false,
    };
    Ok(Relation { referrer, provider })
}

/// The organisations that may see a referral (ODS codes): the referrer, each shortlisted
/// service's provider and the provider of the service it is with.
pub fn organisations(c: &mut DbConnection, body: &Value) -> Result<Vec<String>> {
    let mut refs: Vec<String> = body
        .at("/requester/reference")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .into_iter()
        .collect();
    refs.extend(sr::shortlist(body));
    refs.extend(sr::state_of(body).and_then(|s| s.service));
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        if refs[..i].contains(r) {
            continue;
        }
        if let Some(ods) = ods_behind(c, r)? {
            if !out.contains(&ods) {
                out.push(ods);
            }
        }
    }
    Ok(out)
}

/// 403 for a business function that may not take an action, naming those that may.
pub(super) fn role_refused(
    b: crate::domain::BusinessFunction,
    action: &str,
    roles: &[crate::domain::BusinessFunction],
) -> ServiceError {
    ServiceError::Forbidden(format!(
        "Business function {b} may not {action} (it may be done by {})",
        roles
            .iter()
            .map(|r| r.code())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn refusal(r: Refusal, action: ReferralAction, ubrn: &str) -> ServiceError {
    match r {
        Refusal::State(s) => ServiceError::RequestState(format!(
            "'state' ({}) does not allow {} on referral {ubrn}",
            s.code(),
            action.code()
        )),
        Refusal::Role(b) => role_refused(b, action.code(), action.roles()),
        Refusal::Organisation => ServiceError::Forbidden(format!(
            "referral {ubrn} has no relationship with your organisation that allows {}: only the referring organisation or the organisation of the service it is with may",
            action.code()
        )),
    }
}

/// What a shortlisted service supports: its request flows, priorities and how it is booked.
pub(super) struct ServiceFacts {
    pub flows: Vec<String>,
    pub priorities: Vec<String>,
    /// Its slots are booked through the API (`healthcare_service::is_directly_bookable`).
    pub directly_bookable: bool,
    pub active: bool,
    /// The commissioners it lists (none: open to every commissioner).
    pub commissioners: Vec<String>,
}

impl ServiceFacts {
    /// Why the service may not be used by a referral of the `commissioning` rule organisation
    /// (`SHORTLISTED_SERVICE_NOT_IN_RESULTS`), if it may not; `name` is the input naming it.
    pub fn uncommissioned(
        &self,
        name: &str,
        service: &str,
        commissioning: Option<&str>,
    ) -> Option<String> {
        let o = commissioning?;
        (!hs::admits(&self.commissioners, o)).then(|| format!(
            "'{name}' ({service}) is not commissioned for {o}, the referral's commissioning rule organisation (it takes referrals commissioned by {}): the Directory of Services search does not offer it",
            self.commissioners.join(", ")
        ))
    }
}

/// The commissioning rule organisation of a new referral or A&G request, recorded on it: the
/// one it names, else the default for its patient and the `referrer` organisation (ODS code).
/// A named one that is not an ODS code gives none here: the body's check refuses it.
pub(super) fn commission(
    c: &mut DbConnection,
    body: &mut Value,
    referrer: &str,
) -> Result<Option<String>> {
    let found = match sr::commissioning_org(body) {
        Some(named) => return Ok(OdsCode::parse(named).ok().map(|o| o.as_str().to_owned())),
        None => {
            let patient = match body.at("/subject/reference").and_then(Value::as_str) {
                Some(p) => load_json(c, p)?,
                None => None,
            };
            super::directory::default_commissioning(c, patient.as_deref(), referrer)?
        }
    };
    let found = found.map(|d| d.code().to_owned());
    if let Some(o) = &found {
        sr::set_commissioning_org(body, o);
    }
    Ok(found)
}

pub(super) fn service_facts(c: &mut DbConnection, reference: &str) -> Result<Option<ServiceFacts>> {
    let Some(v) = load_json(c, reference)? else {
        return Ok(None);
    };
    let codes = |system| hs::characteristic_codes(&v, system);
    Ok(Some(ServiceFacts {
        flows: codes(REQUEST_FLOW_SYSTEM),
        priorities: codes(PRIORITY_SYSTEM),
        directly_bookable: hs::is_directly_bookable(&v),
        active: hs::is_active(&v),
        commissioners: hs::commissioners(&v)
            .into_iter()
            .map(str::to_owned)
            .collect(),
    }))
}

/// Every shortlisted service exists, is active, takes referrals (bookable or triage), supports
/// the priority and is commissioned for the referral's commissioning rule organisation.
fn check_shortlist(
    c: &mut DbConnection,
    services: &[String],
    priority: &str,
    commissioning: Option<&str>,
) -> Result<()> {
    let mut issues = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let at = format!("ServiceRequest.performer[{i}]");
        match service_facts(c, s)? {
            None => issues.push(Issue::error("not-found", "REFERENCE_NOT_FOUND", format!("'{at}' ({s}) is not a service on this server")).with_expression(at)),
            Some(f) if !f.active => issues.push(Issue::error("business-rule", "SERVICE_UNAVAILABLE", format!("'{at}' ({s}) is no longer available")).with_expression(at)),
            Some(f) if !f.flows.iter().any(|x| x == "BOOKABLE" || x == "REVIEW") => issues.push(Issue::error("business-rule", "INAPPROPRIATE_VALUE", format!("'{at}' ({s}) takes neither appointments nor triage referrals (request flows: {})", f.flows.join(", "))).with_expression(at)),
            Some(f) if !f.priorities.iter().any(|p| p == priority) => issues.push(Issue::error("business-rule", "UNSUPPORTED_PRIORITY", format!("'{at}' ({s}) does not support priority {priority} (it supports {})", f.priorities.join(", "))).with_expression(at)),
            Some(f) => {
                if let Some(why) = f.uncommissioned(&at, s, commissioning) {
                    issues.push(Issue::error("business-rule", "SHORTLISTED_SERVICE_NOT_IN_RESULTS", why).with_expression(at));
                }
            }
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid(issues))
    }
}

/// The requester is a role at the caller's organisation; a referring clinician refers as
/// themself, an admin names the clinician.
pub(super) fn check_requester(c: &mut DbConnection, body: &Value, caller: &Caller) -> Result<()> {
    // The requester is a role at the caller's organisation; a referring clinician refers
    // as themself, an admin names the clinician.
    if let Some(role_ref) = body
        .at("/requester/reference")
        .and_then(Value::as_str)
        .map(str::to_owned)
    {
        if role_ref.starts_with("PractitionerRole/") {
            let ods = ods_behind(c, &role_ref)?;
            if ods.as_deref() != Some(caller.organisation.as_str()) {
                return Err(ServiceError::Forbidden(format!(
                    "'requester' ({role_ref}) is a role at {}, not at {} where you act",
                    ods.as_deref().unwrap_or("no known organisation"),
                    caller.organisation.as_str()
                )));
            }
            if caller.business_function == crate::domain::BusinessFunction::ReferringClinician {
                let role = load_json(c, &role_ref)?.unwrap_or_default();
                let practitioner = match role.at("/practitioner/reference").and_then(Value::as_str)
                {
                    Some(p) => load_json(c, p)?,
                    None => None,
                };
                let sds = practitioner
                    .as_ref()
                    .and_then(|p| crate::fhir::resources::identifier(p, SdsUserId::SYSTEM));
                if sds.is_none() || sds != caller.user_id.as_deref() {
                    return Err(ServiceError::Forbidden(format!(
                        "'requester' ({role_ref}) is not your own role: a REFERRING_CLINICIAN refers as themself (a REFERRING_CLINICIAN_ADMIN may name the clinician)"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// A new referral or A&G request is an active order, whose e-RS state (set by the server)
/// records its progress: a client may say so, but a `status` or `intent` other than that is
/// refused, not corrected.
pub(super) fn check_new_request(body: &Value) -> Result<()> {
    // `based-on` means "converted from" (its search and the advice's expiry rely on it).
    if body.get("basedOn").is_some() {
        return Err(invalid(
            "ServiceRequest.basedOn",
            "FIELD_NOT_PERMITTED",
            "business-rule",
            "'ServiceRequest.basedOn' is the advice request a referral was converted from, set by its $ers.convertToReferral; leave it out".into(),
        ));
    }
    for (field, wanted, why) in [
        (
            "status",
            "active",
            "a new request is active; its e-RS state records its progress",
        ),
        (
            "intent",
            "order",
            "a referral or advice request is an order",
        ),
    ] {
        if let Some(given) = body.get(field).and_then(Value::as_str) {
            if given != wanted {
                return Err(invalid(
                    &format!("ServiceRequest.{field}"),
                    "INAPPROPRIATE_VALUE",
                    "business-rule",
                    format!("'ServiceRequest.{field}' ({given}) must be {wanted}: {why}"),
                ));
            }
        }
    }
    Ok(())
}

/// Creates a referral: the server assigns the UBRN and id and sets it NOT_BOOKED.
pub fn create(conn: &mut DbConnection, mut body: Value, who: &Acting<'_>) -> Result<ResourceRow> {
    let (caller, author, audit) = (who.caller, who.author, who.audit);
    let def = def()?;
    if sr::ubrn_of(&body).is_some() {
        return Err(invalid(
            "ServiceRequest.identifier",
            "FIELD_NOT_PERMITTED",
            "business-rule",
            "'ServiceRequest.identifier' (UBRN) is assigned by the server; leave it out".into(),
        ));
    }
    if sr::state_of(&body).is_some() {
        return Err(invalid(
            "ServiceRequest.extension",
            "FIELD_NOT_PERMITTED",
            "business-rule",
            "'ServiceRequest.extension' (referral state) is set by the server; leave it out".into(),
        ));
    }
    check_new_request(&body)?;
    super::resource::resolve_logical_references(conn, &mut body)?;
    let _memo = super::memo::scope();
    // The referral is the only write: it waits for the end, where it is the one statement,
    // when this create is not part of a larger transaction (`unit_tx`).
    let hold = !super::deferred::gathering();
    super::deferred::unit_tx(conn, |c| {
        // The requester, patient and services, what they refer to, and the UBRN number, in
        // one statement.
        let fetched = super::memo::prefetch(
            c,
            store::Ahead {
                roots: super::memo::references(&body),
                depth: 1,
                ubrn: true,
                ..Default::default()
            },
        )?;
        check_requester(c, &body, caller)?;
        let commissioning = commission(c, &mut body, caller.organisation.as_str())?;
        let number = fetched
            .ubrn
            .ok_or_else(|| ServiceError::Internal("the read-ahead took no UBRN number".into()))?;
        let ubrn = format!("{number:012}");
        let priority = sr::ers_priority(&body).unwrap_or_default().to_owned();
        let services = sr::shortlist(&body);
        if sr::fhir_priority(&priority).is_some()
            && (1..=sr::MAX_SHORTLIST).contains(&services.len())
        {
            check_shortlist(c, &services, &priority, commissioning.as_deref())?;
        }
        if let Some(o) = body.as_object_mut() {
            let mut ids = o
                .get("identifier")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            ids.push(json!({"system": sr::UBRN_SYSTEM, "value": ubrn}));
            o.insert("identifier".into(), Value::Array(ids));
            o.insert("intent".into(), json!("order"));
            if !o.contains_key("category") {
                let (system, code, display) = sr::REFERRAL_CATEGORY;
                o.insert(
                    "category".into(),
                    json!([{"coding": [{"system": system, "code": code, "display": display}]}]),
                );
            }
            if let Some(p) = sr::fhir_priority(&priority) {
                o.insert("priority".into(), json!(p));
            }
            o.insert(
                "authoredOn".into(),
                json!(crate::fhir::datetime::instant(Utc::now().naive_utc())),
            );
        }
        sr::set_state(
            &mut body,
            &StateRecord {
                state: ReferralState::NotBooked,
                reason: None,
                comment: None,
                service: None,
            },
        );
        let id = format!("r.{}", crate::fhir::new_id());
        let mut access = organisations(c, &body)?;
        let me = caller.organisation.as_str().to_owned();
        if !access.contains(&me) {
            access.push(me);
        }
        // The UBRN was drawn from its sequence above.
        match resource::create(
            c,
            def,
            body,
            &Writer::new(author, audit)
                .visible_to(&access)
                .with_fresh_keys()
                .held_back(hold),
            None,
            Some(id),
        )? {
            resource::Created::New(row) | resource::Created::Existing(row) => Ok(row),
        }
    })
}

/// Who is acting: the caller, and how their writes are attributed and audited.
pub struct Acting<'a> {
    pub caller: &'a Caller,
    pub author: &'a Author,
    pub audit: &'a AuditDraft,
}

/// A stored referral's JSON and its state.
fn parsed(row: &ResourceRow) -> Result<(Value, StateRecord)> {
    // A copy to change; the version read stays parsed for the write's comparisons with it.
    let body = (*super::memo::parsed(row)?).clone();
    let state = sr::state_of(&body).ok_or_else(|| {
        ServiceError::BadRequest(format!("ServiceRequest/{} has no referral state", row.id))
    })?;
    Ok((body, state))
}

/// Where a change pins the referral's version (`Expected::Pinned`): an appointment's
/// `basedOn`.
pub(super) const PINNED_AT: &str = "Appointment.basedOn[0]";

/// The referral version a change is made against.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expected {
    /// From `If-Match`, which a referral operation must send (missing → 428; stale → 409).
    IfMatch(Option<i64>),
    /// Optionally pinned by the client (a versioned `basedOn`); else the current version,
    /// when the change is checked on another resource (an appointment's `If-Match`).
    Pinned(Option<i64>),
}

impl Expected {
    /// The version the change is made against, when it is the current one of `row` (428
    /// without If-Match where one is needed; 409 when another change came first).
    pub(super) fn check(self, row: &ResourceRow) -> Result<i64> {
        let given = match self {
            Expected::IfMatch(Some(v)) | Expected::Pinned(Some(v)) => v,
            Expected::Pinned(None) => row.version_id,
            Expected::IfMatch(None) => {
                return Err(ServiceError::IfMatchRequired {
                    res_type: row.res_type.clone(),
                })
            }
        };
        if given != row.version_id {
            if let Expected::Pinned(Some(_)) = self {
                return Err(ServiceError::Conflict {
                    ers_code: "INVALID_REQUEST_STATE",
                    message: format!(
                        "'basedOn' names version {given} of {}/{}, which is at version {}: another change came first; read it again",
                        row.res_type, row.id, row.version_id
                    ),
                    expression: PINNED_AT.into(),
                });
            }
            return Err(ServiceError::StaleVersion {
                res_type: row.res_type.clone(),
                id: row.id.clone(),
                given,
                current: row.version_id,
            });
        }
        Ok(given)
    }
}

/// Reads a referral for an operation: checks the expected version, the state machine and the
/// caller's relationship, then applies `change` and writes the new version.
pub(super) fn transition(
    conn: &mut DbConnection,
    id: &str,
    expected: Expected,
    action: ReferralAction,
    who: &Acting<'_>,
    change: impl FnOnce(&mut DbConnection, &mut Value, &StateRecord) -> Result<()>,
) -> Result<ResourceRow> {
    transition_reading(conn, id, Reading::Referral, expected, action, who, change)
}

/// What a transition reads before its checks.
pub(super) enum Reading {
    /// The referral (and what it refers to).
    Referral,
    /// A change of something that follows the referral (a booking): the referral and `also`
    /// (and what they refer to), and first of all, a caller from an unrelated organisation
    /// refused (403) before anything about the referral is said.
    Following { also: Vec<(String, String)> },
}

/// `transition`, reading as `reading` says.
pub(super) fn transition_reading(
    conn: &mut DbConnection,
    id: &str,
    reading: Reading,
    expected: Expected,
    action: ReferralAction,
    who: &Acting<'_>,
    change: impl FnOnce(&mut DbConnection, &mut Value, &StateRecord) -> Result<()>,
) -> Result<ResourceRow> {
    let def = def()?;
    let _memo = super::memo::scope();
    // The referral's write is the transaction's last: it waits for the end, when the
    // transaction is this transition's own (`unit_tx`).
    let hold = !super::deferred::gathering();
    super::deferred::unit_tx(conn, |c| {
        let mut roots = vec![(def.name.to_owned(), id.to_owned())];
        let gate = match reading {
            Reading::Referral => false,
            Reading::Following { also } => {
                roots.extend(also);
                true
            }
        };
        // In one statement: the referral, its requester, patient and services, and their
        // organisations and sites; who may see it now (its stored `_access` rows, not
        // re-derived); and its appointments (a booking, change or cancellation reads them).
        let before = super::memo::prefetch(
            c,
            store::Ahead {
                roots,
                depth: 2,
                tokens: Some((
                    def.name.to_owned(),
                    id.to_owned(),
                    super::scope::PARAM.to_owned(),
                )),
                referring: Some((
                    "Appointment".to_owned(),
                    "based-on".to_owned(),
                    def.name.to_owned(),
                    id.to_owned(),
                )),
                ubrn: false,
            },
        )?
        .tokens;
        if gate && super::memo::current(c, def.name, id)?.is_some() {
            super::scope::check_write_held(def, id, who.caller, &before)?;
        }
        let row = resource::read(c, def, id)?;
        let given = expected.check(&row)?;
        let (mut body, state) = parsed(&row)?;
        let ubrn = sr::ubrn_of(&body).unwrap_or(id).to_owned();
        let rel = relation(c, &body, &state, who.caller)?;
        referral::check(state.state, action, who.caller.business_function, rel)
            .map_err(|r| refusal(r, action, &ubrn))?;
        change(c, &mut body, &state)?;
        let access = organisations(c, &body)?;
        let row = resource::rewrite(
            c,
            def,
            id,
            given,
            body,
            &Writer::new(who.author, who.audit)
                .visible_to(&access)
                .held_back(hold),
        )?;
        // After the referral's own write, which a concurrent change of it fails first (409).
        let mut now = access.clone();
        now.sort();
        if now != before {
            super::deferred::write_held(c)?;
            super::scope::follow_referral(c, id, &access)?;
        }
        Ok(row)
    })
}

/// `$ers.changeShortlist`: replaces the shortlist (1-20 services); the state stays.
fn change_shortlist(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    services: Vec<String>,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    let referrer = who.caller.organisation.as_str().to_owned();
    transition(
        conn,
        id,
        Expected::IfMatch(if_match),
        ReferralAction::ChangeShortlist,
        who,
        |c, body, _| {
            if services.is_empty() || services.len() > sr::MAX_SHORTLIST {
                return Err(invalid(
                    "Parameters.parameter[service]",
                    "TOO_MANY_ITEMS",
                    "business-rule",
                    format!(
                        "'service' lists {} services; a shortlist has 1 to {}",
                        services.len(),
                        sr::MAX_SHORTLIST
                    ),
                ));
            }
            let priority = sr::ers_priority(body).unwrap_or_default().to_owned();
            // A referral made before commissioning rules were kept gains its default now.
            let commissioning = commission(c, body, &referrer)?;
            check_shortlist(c, &services, &priority, commissioning.as_deref())?;
            if sr::shortlist(body) == services {
                return Err(invalid(
                    "Parameters.parameter[service]",
                    "NO_CHANGES_DETECTED",
                    "business-rule",
                    "'service' is the current shortlist: nothing to change".into(),
                ));
            }
            body["performer"] =
                Value::Array(services.iter().map(|s| json!({"reference": s})).collect());
            Ok(())
        },
    )
}

/// `$ers.sendForTriage`: the referral goes to one shortlisted triage (REVIEW) service and
/// awaits its review.
fn send_for_triage(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    service: String,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    transition(
        conn,
        id,
        Expected::IfMatch(if_match),
        ReferralAction::SendForTriage,
        who,
        |c, body, _| {
            if !sr::shortlist(body).contains(&service) {
                return Err(invalid(
                    "Parameters.parameter[service]",
                    "INAPPROPRIATE_VALUE",
                    "business-rule",
                    format!("'service' ({service}) does not relate to a Service on the Shortlist"),
                ));
            }
            let facts = service_facts(c, &service)?;
            if !facts
                .as_ref()
                .is_some_and(|f| f.flows.iter().any(|x| x == "REVIEW"))
            {
                return Err(invalid(
                    "Parameters.parameter[service]",
                    "INAPPROPRIATE_VALUE",
                    "business-rule",
                    format!("'service' ({service}) is not a triage (Referral Assessment) service"),
                ));
            }
            sr::set_state(
                body,
                &StateRecord {
                    state: ReferralState::AwaitingTriage,
                    reason: None,
                    comment: None,
                    service: Some(service.clone()),
                },
            );
            Ok(())
        },
    )
}

/// `$ers.recordReviewOutcome`: the triage service returns the referral with advice, or accepts
/// it to book later. A comment is mandatory.
fn record_review_outcome(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    outcome: ReviewOutcome,
    comment: String,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    check_comment(&comment, true, "comment")?;
    transition(
        conn,
        id,
        Expected::IfMatch(if_match),
        ReferralAction::RecordReviewOutcome,
        who,
        |_, body, current| {
            let service = match outcome {
                // Back with the referrer: no longer on the triage service's lists.
                ReviewOutcome::ReturnToReferrerWithAdvice => None,
                ReviewOutcome::AcceptReferBookLater => current.service.clone(),
            };
            sr::set_state(
                body,
                &StateRecord {
                    state: outcome.next_state(),
                    reason: Some((REVIEW_OUTCOME_SYSTEM.to_owned(), outcome.code().to_owned())),
                    comment: Some(comment),
                    service,
                },
            );
            Ok(())
        },
    )
}

pub(super) fn check_comment(comment: &str, required: bool, name: &str) -> Result<()> {
    let at = format!("Parameters.parameter[{name}]");
    if required && comment.trim().is_empty() {
        return Err(ServiceError::Invalid(vec![Issue::required_at(
            at,
            "is missing.",
        )]));
    }
    if comment.chars().count() > MAX_COMMENT {
        return Err(invalid(
            &at,
            "INVALID_VALUE",
            "value",
            format!(
                "'{name}' is {} characters; at most {MAX_COMMENT}",
                comment.chars().count()
            ),
        ));
    }
    Ok(())
}

/// `$ers.cancelReferral`: terminal. The reason comes from the referral cancellation code
/// system; some reasons need a comment.
fn cancel(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    reason: String,
    comment: Option<String>,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    let Some(concept) = terminology::concept(REFERRAL_CANCELLATION_SYSTEM, &reason) else {
        return Err(invalid(
            "Parameters.parameter[reason]",
            "INVALID_CODE",
            "code-invalid",
            format!(
                "'reason' ({reason}) is not a referral cancellation reason; expected one of: {}",
                terminology::codes(REFERRAL_CANCELLATION_SYSTEM).join(", ")
            ),
        ));
    };
    let mandatory = terminology::property(concept, "commentIsMandatory")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    check_comment(comment.as_deref().unwrap_or_default(), mandatory, "comment").map_err(
        |e| match e {
            ServiceError::Invalid(_)
                if mandatory && comment.as_deref().unwrap_or_default().trim().is_empty() =>
            {
                ServiceError::Invalid(vec![Issue::error(
                    "required",
                    "VALUE_IS_REQUIRED",
                    format!("'comment' is required when the reason is {reason}"),
                )
                .with_expression("Parameters.parameter[comment]")])
            }
            other => other,
        },
    )?;
    let by_referrer = who.caller.business_function.is_referrer();
    let fits = |c: &mut DbConnection, now: &StateRecord| {
        cancellation_fits(c, id, concept, &reason, by_referrer, now.state)
    };
    close_with(
        conn,
        id,
        if_match,
        (
            ReferralAction::CancelReferral,
            ReferralState::CancelledReferral,
        ),
        (REFERRAL_CANCELLATION_SYSTEM, reason.clone()),
        comment,
        who,
        fits,
    )
}

/// Whether the caller's side may cancel referral `id`, now in `state`, with this reason (e-RS):
/// the referrer with a reason of `referrerUsage` CANCEL_REFERRAL, which must also be one that
/// can cancel the referral's appointment (`canCancelAppointment`) while it has one booked, and
/// not once that appointment has begun; the
/// provider with one of type PATIENT, PROVIDER or UNKNOWN, or PROVIDER_TRIAGE once it has
/// triaged the referral to action itself.
fn cancellation_fits(
    c: &mut DbConnection,
    id: &str,
    concept: &Value,
    reason: &str,
    by_referrer: bool,
    state: ReferralState,
) -> Result<()> {
    const AT: &str = "Parameters.parameter[reason]";
    let system = REFERRAL_CANCELLATION_SYSTEM;
    let code = |name: &str| terminology::property(concept, name).and_then(Value::as_str);
    let whose = |wanted: &dyn Fn(&Value) -> bool| -> String {
        terminology::codes(system)
            .into_iter()
            .filter(|c| terminology::concept(system, c).is_some_and(wanted))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let referrers = |c: &Value| {
        terminology::property(c, "referrerUsage").and_then(Value::as_str) == Some("CANCEL_REFERRAL")
    };
    if by_referrer {
        if !referrers(concept) {
            return Err(invalid(
                AT,
                "INAPPROPRIATE_VALUE",
                "business-rule",
                format!(
                    "'reason' ({reason}) is not a reason the referrer may cancel a referral with; the referrer's are: {}",
                    whose(&referrers)
                ),
            ));
        }
        // The referral's cancellation cancels its appointment, so it is timely as that would be.
        let action = ReferralAction::CancelReferral;
        let booked = super::booking::current_booked(c, id)?;
        if let Some(b) = booked
            .as_ref()
            .filter(|b| !action.timely(b.begun, by_referrer))
        {
            return Err(super::booking::untimely(&b.id, &b.start, action));
        }
        let cancels = terminology::property(concept, "canCancelAppointment")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !cancels {
            if let Some(booked) = booked {
                return Err(invalid(
                    AT,
                    "INAPPROPRIATE_VALUE",
                    "business-rule",
                    format!(
                        "'reason' ({reason}) does not cancel the referral's appointment: cancel Appointment/{} first ($ers.cancelAppointment), or give a reason that cancels it too",
                        booked.id
                    ),
                ));
            }
        }
        return Ok(());
    }
    match code("appointmentRequestCancellationReasonType") {
        Some("PATIENT" | "PROVIDER" | "UNKNOWN") => Ok(()),
        Some("PROVIDER_TRIAGE") if state == ReferralState::TriagedProviderToAction => Ok(()),
        Some("PROVIDER_TRIAGE") => Err(invalid(
            AT,
            "INAPPROPRIATE_VALUE",
            "business-rule",
            format!(
                "'reason' ({reason}) is for a referral the provider has triaged to action itself (TRIAGED_PROVIDER_TO_ACTION); this one is {}",
                state.code()
            ),
        )),
        _ => Err(invalid(
            AT,
            "INAPPROPRIATE_VALUE",
            "business-rule",
            format!("'reason' ({reason}) is not a reason the provider may cancel a referral with"),
        )),
    }
}

/// Takes `action` to `next` with a reason and comment; the referral's current appointment is
/// cancelled with the same reason and its slot released (cancel, reject). `fits` checks the
/// reason against the referral as it is, first.
#[allow(clippy::too_many_arguments)]
fn close_with(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    (action, next): (ReferralAction, ReferralState),
    (system, reason): (&str, String),
    comment: Option<String>,
    who: &Acting<'_>,
    fits: impl Fn(&mut DbConnection, &StateRecord) -> Result<()>,
) -> Result<ResourceRow> {
    transition(
        conn,
        id,
        Expected::IfMatch(if_match),
        action,
        who,
        |c, body, current| {
            fits(c, current)?;
            let access = organisations(c, body)?;
            super::booking::cancel_current(
                c,
                id,
                (system, &reason),
                comment.as_deref(),
                &access,
                who,
            )?;
            sr::set_state(
                body,
                &StateRecord {
                    state: next,
                    reason: Some((system.to_owned(), reason)),
                    comment: comment.filter(|c| !c.trim().is_empty()),
                    service: current.service.clone(),
                },
            );
            Ok(())
        },
    )
}

/// `$ers.rejectReferral`: the provider sends a booked referral back to the referrer with a
/// reason; the appointment is cancelled and its slot released.
fn reject(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    reason: String,
    comment: Option<String>,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    use crate::fhir::resources::appointment::CANCELLATION_SYSTEM;
    super::booking::cancellation_reason(&reason, comment.as_deref(), "REJECT", |name| {
        format!("Parameters.parameter[{name}]")
    })?;
    close_with(
        conn,
        id,
        if_match,
        (ReferralAction::RejectReferral, ReferralState::Rejected),
        (CANCELLATION_SYSTEM, reason),
        comment,
        who,
        |_, _| Ok(()),
    )
}

/// A change of a referral, with its inputs: one per operation.
#[derive(Debug, Clone)]
pub enum Change {
    Shortlist(Vec<String>),
    SendForTriage(String),
    ReviewOutcome {
        outcome: ReviewOutcome,
        comment: String,
    },
    Cancel {
        reason: String,
        comment: Option<String>,
    },
    /// The provider accepts a booked referral after reviewing it; it stays booked.
    Accept {
        comment: Option<String>,
    },
    /// The provider cancels the booked appointment and will arrange another (CAAL).
    ActionLater {
        comment: String,
    },
    /// The referral letter becomes exactly these uploads.
    Letter(Vec<super::attachments::Attaching>),
    /// The provider attaches an upload.
    ProviderDocument(super::attachments::Attaching),
    /// The patient's additional requirements (None: there are none), carried onto the
    /// current appointment.
    Requirements(Option<Value>),
    /// The provider rejects a booked referral: its appointment is cancelled.
    Reject {
        reason: String,
        comment: Option<String>,
    },
}

/// Applies one change to the referral at the version the caller read.
pub fn apply(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    change: Change,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    match change {
        Change::Shortlist(services) => change_shortlist(conn, id, if_match, services, who),
        Change::SendForTriage(service) => send_for_triage(conn, id, if_match, service, who),
        Change::ReviewOutcome { outcome, comment } => {
            record_review_outcome(conn, id, if_match, outcome, comment, who)
        }
        Change::Cancel { reason, comment } => cancel(conn, id, if_match, reason, comment, who),
        Change::Reject { reason, comment } => reject(conn, id, if_match, reason, comment, who),
        Change::Accept { comment } => {
            if let Some(text) = &comment {
                check_comment(text, false, "comment")?;
            }
            transition(
                conn,
                id,
                Expected::IfMatch(if_match),
                ReferralAction::AcceptReferral,
                who,
                |_, body, current| {
                    sr::set_state(
                        body,
                        &StateRecord {
                            state: ReferralState::Booked,
                            reason: Some((REVIEW_OUTCOME_SYSTEM.to_owned(), "ACCEPTED".into())),
                            comment: comment.filter(|c| !c.trim().is_empty()),
                            service: current.service.clone(),
                        },
                    );
                    Ok(())
                },
            )
        }
        Change::ActionLater { comment } => {
            check_comment(&comment, true, "comment")?;
            transition(
                conn,
                id,
                Expected::IfMatch(if_match),
                ReferralAction::CancelAppointmentActionLater,
                who,
                |c, body, current| {
                    let access = organisations(c, body)?;
                    super::booking::action_later(c, id, &comment, &access, who)?;
                    sr::set_state(
                        body,
                        &StateRecord {
                            state: ReferralState::TriagedProviderToAction,
                            reason: Some((
                                REVIEW_OUTCOME_SYSTEM.to_owned(),
                                "CANCEL_APPOINTMENT_ACTION_LATER".into(),
                            )),
                            comment: Some(comment.clone()),
                            service: current.service.clone(),
                        },
                    );
                    Ok(())
                },
            )
        }
        Change::Letter(docs) => super::attachments::maintain_letter(conn, id, if_match, docs, who),
        Change::ProviderDocument(doc) => {
            super::attachments::add_provider_document(conn, id, if_match, doc, who)
        }
        Change::Requirements(ext) => transition(
            conn,
            id,
            Expected::IfMatch(if_match),
            ReferralAction::UpdateRequirements,
            who,
            |c, body, _| {
                requirements::set(body, ext.clone());
                let access = organisations(c, body)?;
                super::booking::carry_requirements(c, id, ext.as_ref(), &access, who)
            },
        ),
    }
}

/// What the caller may do now to a referral (with its current booked appointment, where the
/// appointment actions are invoked) or to an A&G request.
pub enum Available {
    Referral {
        state: ReferralState,
        actions: Vec<ReferralAction>,
        appointment: Option<String>,
    },
    Advice {
        status: crate::domain::advice::AdviceStatus,
        actions: Vec<crate::domain::advice::AdviceAction>,
    },
}

/// A referral its provider is to act on (`ReferralState::deferral`): since when, with which
/// service, and the date by which the patient is to be contacted (the priority's working days
/// from that day in the UK).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub deferral: Deferral,
    /// When the referral entered its state (the oldest of the latest versions in it).
    pub since: chrono::NaiveDateTime,
    /// The service it is with (`HealthcareService/{id}`).
    pub service: Option<String>,
    pub contact_by: chrono::NaiveDate,
}

/// What the provider is to do about the referral `row` (its current version), if anything,
/// its contact-by date counted in `calendar`'s working days. Reads the referral's history only
/// when it is deferred and was stored before the state's start was recorded on it.
pub fn pending(
    conn: &mut DbConnection,
    row: &ResourceRow,
    calendar: &WorkingDays,
) -> Result<Option<Pending>> {
    let body = super::memo::parsed(row)?;
    if crate::fhir::resources::advice::is_advice(&body) {
        return Ok(None);
    }
    let Some(now) = sr::state_of(&body) else {
        return Ok(None);
    };
    let Some(deferral) = now.state.deferral() else {
        return Ok(None);
    };
    let since = match sr::state_since(&body) {
        Some(at) => at,
        // Stored before the state's start was recorded: the oldest of the latest versions in it.
        None => state_history(conn, &row.id)?
            .into_iter()
            .take_while(|v| v.state.same_stretch(&now))
            .last()
            .map_or(row.last_updated, |v| v.at),
    };
    let priority = sr::ers_priority(&body).unwrap_or_default();
    let days = terminology::concept(PRIORITY_SYSTEM, priority)
        .and_then(|c| terminology::property(c, deferral.contact_days_property()))
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .ok_or_else(|| {
            ServiceError::Internal(format!(
                "ServiceRequest/{}: its priority ({priority}) has no {} in {PRIORITY_SYSTEM}",
                row.id,
                deferral.contact_days_property()
            ))
        })?;
    Ok(Some(Pending {
        deferral,
        since,
        service: now.service,
        contact_by: calendar.after(crate::fhir::datetime::uk_date(since), days),
    }))
}

/// One version of a referral: when it was written, by whom, and the state it recorded.
pub struct VersionState {
    pub at: chrono::NaiveDateTime,
    pub author_role: String,
    pub author_org: String,
    pub state: StateRecord,
}

/// The state of each version of referral `id` that has one, newest first.
pub fn state_history(conn: &mut DbConnection, id: &str) -> Result<Vec<VersionState>> {
    let (rows, _) = store::history(
        conn,
        &store::HistoryQuery {
            res_type: Some("ServiceRequest".into()),
            id: Some(id.into()),
            limit: 1_000,
            count: ers_schema::search::Count::No,
            ..Default::default()
        },
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for v in rows {
        let body: Value = serde_json::from_str(&v.content)
            .map_err(|e| ServiceError::Internal(format!("stored version unreadable: {e}")))?;
        if let Some(state) = sr::state_of(&body) {
            out.push(VersionState {
                at: v.last_updated,
                author_role: v.author_role,
                author_org: v.author_org,
                state,
            });
        }
    }
    Ok(out)
}

/// The request now and what the caller may do to it.
pub fn available_actions(
    conn: &mut DbConnection,
    id: &str,
    caller: &Caller,
) -> Result<(ResourceRow, Available)> {
    let row = resource::read(conn, def()?, id)?;
    super::scope::check(conn, def()?, id, caller)?;
    let now = actions_on(conn, &row, caller)?;
    Ok((row, now))
}

/// What the caller may do now to the referral or A&G request `row` (its current version, which
/// they may see).
pub fn actions_on(
    conn: &mut DbConnection,
    row: &ResourceRow,
    caller: &Caller,
) -> Result<Available> {
    let id = row.id.as_str();
    let body: Value = super::parse_stored(row)?;
    if crate::fhir::resources::advice::is_advice(&body) {
        let (status, actions) = super::advice::available_actions(conn, &body, caller)?;
        return Ok(Available::Advice { status, actions });
    }
    let (body, state) = parsed(row)?;
    let rel = relation(conn, &body, &state, caller)?;
    let mut actions = referral::available_actions(state.state, caller.business_function, rel);
    // The current appointment is read only when an action's timeliness depends on it.
    let current = if actions.iter().any(|a| a.timed()) {
        super::booking::current_booked(conn, id)?
    } else {
        None
    };
    let begun = current.as_ref().is_some_and(|a| a.begun);
    actions.retain(|a| a.timely(begun, caller.business_function.is_referrer()));
    let appointment = current.map(|a| a.id);
    Ok(Available::Referral {
        state: state.state,
        actions,
        appointment,
    })
}

/// The logical id of the organisation with an ODS code (for worklists).
pub fn organisation_id(conn: &mut DbConnection, ods: &str) -> Result<Option<String>> {
    if let Some(id) = super::memo::identified("Organization", OdsCode::ORGANIZATION_SYSTEM, ods) {
        return Ok(Some(id));
    }
    Ok(store::unique_owner(
        conn,
        "Organization",
        &ers_schema::UniqueKey {
            system: OdsCode::ORGANIZATION_SYSTEM.to_owned(),
            value: ods.to_owned(),
        },
        None,
    )?)
}

//! Booking: book a slot, record an indirectly booked appointment, defer to the provider, move
//! to another slot, cancel, record non-attendance, and reject. Each runs in one transaction
//! with its referral's state change (`referral::transition`, which checks the state machine,
//! role and relationship), so a slot is never busy without its appointment nor the reverse.
//!
//! No double booking: a slot is taken by an update that names the version read; of two
//! bookings racing for one slot, the second finds the version gone (PostgreSQL re-checks the
//! row after the first commits; SQLite serialises writers) and gets 409 SLOT_NOT_AVAILABLE.
//! One current appointment per referral: every booking also writes its referral at the
//! version it read, so two bookings for one referral cannot both commit.

use crate::fhir::At;
use chrono::{NaiveDateTime, Utc};
use ers_schema::search as store_search;
use ers_schema::{DbConnection, ResourceRow};
use serde_json::{json, Value};

use super::referral::{
    self as referral_svc, check_comment, invalid, load_json, service_facts, Acting, Expected,
    ServiceFacts, PINNED_AT,
};
use super::resource::{self, Writer};
use super::stored_value;
use super::{scope, Result, ServiceError};
use crate::domain::referral::{ReferralAction, ReferralState};
use crate::fhir::index::split_reference;
use crate::fhir::outcome::Issue;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::resources::appointment as ap;
use crate::fhir::resources::requirements;
use crate::fhir::resources::service_request::REVIEW_OUTCOME_SYSTEM;
use crate::fhir::resources::service_request::{self as sr, StateRecord};
use crate::fhir::{datetime, search as fsearch, terminology};

fn def(name: &str) -> Result<&'static ResourceDef> {
    registry::find(name).ok_or_else(|| ServiceError::Internal(format!("{name} is not registered")))
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

fn slot_not_available(slot: &str, why: &str) -> ServiceError {
    ServiceError::Conflict {
        ers_code: "SLOT_NOT_AVAILABLE",
        message: format!("'slot' ({slot}) is not available: {why}; choose another slot"),
        expression: "Appointment.slot[0]".into(),
    }
}

/// A slot about to be booked, with what its schedule says.
struct SlotFacts {
    reference: String,
    row: ResourceRow,
    body: std::sync::Arc<Value>,
    service: String,
    location: Option<String>,
    clinician: Option<String>,
    start: Value,
    end: Value,
}

fn instant(v: &Value) -> Option<NaiveDateTime> {
    v.as_str().and_then(datetime::range).map(|(low, _)| low)
}

/// Checks that `slot` may be booked for the referral (free, in the future, of a shortlisted
/// service, of a priority the referral may use, the clinician matching) and reads its facts.
fn bookable_slot(
    c: &mut DbConnection,
    slot: &str,
    clinician: Option<&str>,
    referral: &Value,
    allowed_services: &[String],
    at: &str,
) -> Result<SlotFacts> {
    let Some((t, slot_id)) = split_reference(slot).filter(|(t, _)| *t == "Slot") else {
        return Err(invalid(
            at,
            "INVALID_VALUE",
            "value",
            format!("'slot' ({slot}) is not a Slot reference (Slot/{{id}})"),
        ));
    };
    let Some(row) = super::memo::current(c, t, slot_id)?.filter(|r| !r.is_deleted()) else {
        return Err(invalid(
            at,
            "REFERENCE_NOT_FOUND",
            "not-found",
            format!("'slot' ({slot}) does not exist"),
        ));
    };
    let body = super::memo::parsed(&row)?;
    if body.get("status").and_then(Value::as_str) != Some("free") {
        return Err(slot_not_available(slot, "it has been booked"));
    }
    let start = body.get("start").cloned().unwrap_or(Value::Null);
    if instant(&start).is_none_or(|s| s <= now()) {
        return Err(invalid(
            at,
            "INAPPROPRIATE_SLOT",
            "business-rule",
            format!(
                "'slot' ({slot}) starts in the past ({}); choose a future slot",
                start.as_str().unwrap_or("no start")
            ),
        ));
    }
    // The slot's priority must be one the referral may use.
    let priority = sr::ers_priority(referral).unwrap_or_default().to_owned();
    let slot_priority = body
        .get("appointmentType")
        .and_then(|t| t.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|c| c.get("code").and_then(Value::as_str))
        .unwrap_or("ROUTINE")
        .to_owned();
    if !registry::priorities_at_or_below(&priority).contains(&slot_priority.as_str()) {
        return Err(invalid(
            at,
            "INAPPROPRIATE_SLOT",
            "business-rule",
            format!(
                "'slot' ({slot}) is for {slot_priority} referrals; this referral is {priority}"
            ),
        ));
    }
    let schedule_ref = body
        .at("/schedule/reference")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let schedule = load_json(c, &schedule_ref)?.unwrap_or_default();
    let actor = |t: &str| crate::fhir::resources::schedule::actor(&schedule, t).map(str::to_owned);
    let service = actor("HealthcareService").unwrap_or_default();
    if !allowed_services.contains(&service) {
        return Err(invalid(
            at,
            "INAPPROPRIATE_VALUE",
            "business-rule",
            format!(
                "'service' ({service}) of 'slot' ({slot}) does not relate to a Service on the Shortlist"
            ),
        ));
    }
    if !crate::fhir::resources::schedule::is_active(&schedule) {
        return Err(slot_not_available(
            slot,
            &format!(
                "its schedule ({schedule_ref}) is inactive, so its slots are no longer offered"
            ),
        ));
    }
    let facts = service_facts(c, &service)?.ok_or_else(|| {
        slot_not_available(slot, &format!("its service ({service}) no longer exists"))
    })?;
    open_to(&facts, &service, referral, at)?;
    if !facts.directly_bookable {
        let why = if facts.flows.iter().any(|f| f == "BOOKABLE") {
            "it is indirectly bookable: its appointments are arranged with the provider and recorded with start, end and the service as a participant, without a slot"
        } else {
            "it does not take appointment requests (a triage or advice service)"
        };
        return Err(invalid(
            at,
            "INAPPROPRIATE_VALUE",
            "business-rule",
            format!("'service' ({service}) of 'slot' ({slot}) is not directly bookable: {why}"),
        ));
    }
    let named = actor("Practitioner");
    if named.as_deref() != clinician {
        return Err(invalid(
            "Appointment.participant",
            "INAPPROPRIATE_VALUE",
            "business-rule",
            match (&named, clinician) {
                (Some(n), Some(c)) => format!("'clinician' ({c}) does not match the slot: it is with {n}"),
                (Some(n), None) => format!("'clinician' is missing: 'slot' ({slot}) is with the named clinician {n}; include them as a participant of type CON"),
                (None, Some(c)) => format!("'clinician' ({c}) does not match the slot: it has no named clinician"),
                (None, None) => unreachable!("equal"),
            },
        ));
    }
    Ok(SlotFacts {
        reference: slot.to_owned(),
        end: body.get("end").cloned().unwrap_or(Value::Null),
        row,
        body,
        service,
        location: actor("Location"),
        clinician: named,
        start,
    })
}

/// A service on the referral's shortlist must still take its appointments when they are made:
/// it is active, and still commissioned for the referral's commissioning rule organisation
/// (a service definer may have changed either since the service was shortlisted).
fn open_to(facts: &ServiceFacts, service: &str, referral: &Value, at: &str) -> Result<()> {
    if !facts.active {
        return Err(invalid(
            at,
            "INAPPROPRIATE_VALUE",
            "business-rule",
            format!("'service' ({service}) is not active: it takes no appointments; choose another service on the shortlist or change the shortlist"),
        ));
    }
    match facts.uncommissioned("service", service, sr::commissioning_org(referral)) {
        Some(why) => Err(invalid(
            at,
            "SHORTLISTED_SERVICE_NOT_IN_RESULTS",
            "business-rule",
            why,
        )),
        None => Ok(()),
    }
}

/// Sets a slot's status (`busy` when booked, `free` when released) at the version read;
/// `held`: the write waits for the transaction's end (`Writer::held`).
fn set_slot_status(
    c: &mut DbConnection,
    slot_row: &ResourceRow,
    mut body: Value,
    status: &str,
    who: &Acting<'_>,
    held: bool,
) -> Result<()> {
    body["status"] = json!(status);
    let done = resource::rewrite(
        c,
        def("Slot")?,
        &slot_row.id,
        slot_row.version_id,
        body,
        &Writer::new(who.author, who.audit)
            .as_consequence()
            .held_back(held)
            .conflict_is(|id| slot_not_available(&format!("Slot/{id}"), "another booking took it")),
    );
    match done {
        Ok(_) => Ok(()),
        Err(ServiceError::StaleVersion { .. } | ServiceError::ConcurrentUpdate { .. }) => Err(
            slot_not_available(&format!("Slot/{}", slot_row.id), "another booking took it"),
        ),
        Err(e) => Err(e),
    }
}

/// Frees the slot of an appointment (if it has one and it is busy).
fn release_slot(c: &mut DbConnection, appointment: &Value, who: &Acting<'_>) -> Result<()> {
    for slot in ap::slots(appointment) {
        let Some((t, id)) = split_reference(&slot) else {
            continue;
        };
        if let Some(row) = super::memo::current(c, t, id)?.filter(|r| !r.is_deleted()) {
            let body: Value = super::parse_stored(&row)?;
            if body.get("status").and_then(Value::as_str) == Some("busy") {
                set_slot_status(c, &row, body, "free", who, false)?;
            }
        }
    }
    Ok(())
}

/// The referral's current appointments (booked or proposed), newest first.
pub(super) fn current_appointments(
    c: &mut DbConnection,
    referral_id: &str,
) -> Result<Vec<ResourceRow>> {
    appointments_with(c, referral_id, &["booked", "proposed"])
}

/// The referral's appointments in these statuses, newest first: its `based-on` references
/// read by key, not a search (a search is planned afresh on every call, and this one runs in
/// every booking, change and cancellation); inside a referral transition, from what its
/// read-ahead found.
fn appointments_with(
    c: &mut DbConnection,
    referral_id: &str,
    statuses: &[&str],
) -> Result<Vec<ResourceRow>> {
    #[derive(serde::Deserialize)]
    struct Status {
        status: Option<String>,
    }
    let ids = super::memo::referring(c, "Appointment", "based-on", "ServiceRequest", referral_id)?;
    let mut rows = Vec::new();
    for row in super::memo::live_many(c, "Appointment", &ids)? {
        let s: Status = super::parse_stored(&row)?;
        if s.status.as_deref().is_some_and(|s| statuses.contains(&s)) {
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| (b.last_updated, &b.id).cmp(&(a.last_updated, &a.id)));
    Ok(rows)
}

/// The referral's current booked appointment, if any, and whether it has begun (for available
/// actions).
pub fn current_booked(
    c: &mut DbConnection,
    referral_id: &str,
) -> Result<Option<CurrentAppointment>> {
    let Some(row) = appointments_with(c, referral_id, &["booked"])?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let body: Value = super::parse_stored(&row)?;
    Ok(Some(CurrentAppointment {
        id: row.id,
        begun: has_begun(&body),
        start: start_of(&body).to_owned(),
    }))
}

/// A referral's current booked appointment.
pub struct CurrentAppointment {
    pub id: String,
    /// Whether its time has come (`ReferralAction::timely`).
    pub begun: bool,
    /// Its start, as written (for saying so).
    pub start: String,
}

/// An appointment's start as written, or that it has none.
fn start_of(appointment: &Value) -> &str {
    appointment
        .get("start")
        .and_then(Value::as_str)
        .unwrap_or("no set time")
}

/// Why a change is not timely (`ReferralAction::timely`): appointment `id`, starting at
/// `start`, has not begun, or has.
pub(super) fn untimely(id: &str, start: &str, action: ReferralAction) -> ServiceError {
    let (code, why) = match action {
        ReferralAction::RecordNonAttendance => (
            "INVALID_STATE",
            format!("Appointment/{id} starts at {start}: a non-attendance can be recorded only once the appointment has begun"),
        ),
        ReferralAction::CancelAppointment => (
            "UNABLE_TO_CANCEL_APPOINTMENT",
            format!("Appointment/{id} began at {start}: the referrer can no longer cancel it; the provider records whether the patient attended ($ers.recordNonAttendance), or cancels it"),
        ),
        ReferralAction::CancelReferral => (
            "UNABLE_TO_CANCEL_APPOINTMENT",
            format!("Appointment/{id} began at {start}: the referrer can no longer cancel it, nor the referral with it; the provider records whether the patient attended first ($ers.recordNonAttendance)"),
        ),
        _ => (
            "INVALID_STATE",
            format!("Appointment/{id} began at {start}: it can no longer be moved; the provider records whether the patient attended ($ers.recordNonAttendance), then it can be booked again"),
        ),
    };
    invalid("Appointment.start", code, "business-rule", why)
}

/// Whether an appointment's start has passed.
fn has_begun(appointment: &Value) -> bool {
    appointment
        .get("start")
        .and_then(instant)
        .is_some_and(|s| s <= now())
}

/// Whether a service has a free future slot the referral could take.
fn has_free_slot(c: &mut DbConnection, service: &str, priority: &str) -> Result<bool> {
    let d = def("Slot")?;
    let params = vec![
        ("schedule.actor".to_owned(), service.to_owned()),
        ("status".to_owned(), "free".to_owned()),
        (
            "start".to_owned(),
            format!("gt{}", datetime::instant(now())),
        ),
        ("priority".to_owned(), priority.to_owned()),
    ];
    let req = fsearch::parse(d, &params, true).map_err(ServiceError::Invalid)?;
    let mut q = req.query;
    q.offset = 0;
    q.limit = 1;
    Ok(!store_search::search(c, &q, false)?.0.is_empty())
}

fn organization_ref(c: &mut DbConnection, ods: &str) -> Result<Option<String>> {
    Ok(referral_svc::organisation_id(c, ods)?.map(|id| format!("Organization/{id}")))
}

/// The appointment the server stores for a booking or deferral.
struct Draft {
    status: &'static str,
    slot: Option<SlotFacts>,
    start: Option<Value>,
    end: Option<Value>,
    service: String,
    reason: Option<(String, String)>,
}

fn appointment_body(
    c: &mut DbConnection,
    client: &Value,
    referral_id: &str,
    referral: &Value,
    d: &Draft,
    caller_ods: &str,
) -> Result<Value> {
    let mut a = json!({
        "resourceType": "Appointment",
        "status": d.status,
        "description": "e-Referral Appointment",
        "basedOn": [{"reference": format!("ServiceRequest/{referral_id}")}],
        "created": datetime::instant(now()),
    });
    // What the client may say about the booking: comment, patient instruction, and the
    // patient's requirements (kept as sent, validated as UK Core).
    for keep in ["comment", "patientInstruction", "extension"] {
        if let Some(v) = client.get(keep) {
            a[keep] = v.clone();
        }
    }
    if let Some(org) = organization_ref(c, caller_ods)? {
        let mut ext: Vec<Value> = a
            .get("extension")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        ext.retain(|e| {
            e.get("url").and_then(Value::as_str) != Some(ap::BOOKING_ORGANIZATION_EXTENSION)
        });
        ext.push(json!({"url": ap::BOOKING_ORGANIZATION_EXTENSION, "valueReference": {"reference": org}}));
        a["extension"] = Value::Array(ext);
    }
    // The patient's requirements come from the referral, as they are now.
    requirements::set(&mut a, requirements::of(referral).cloned());
    if let Some((system, code)) = &d.reason {
        a["reasonCode"] = json!([{"coding": [{"system": system, "code": code}]}]);
    }
    let mut participants = Vec::new();
    if let Some(p) = referral.at("/subject/reference").and_then(Value::as_str) {
        participants.push(ap::participant(p, None));
    }
    participants.push(ap::participant(&d.service, None));
    if let Some(s) = &d.slot {
        a["slot"] = json!([{"reference": s.reference}]);
        a["start"] = s.start.clone();
        a["end"] = s.end.clone();
        if let Some(l) = &s.location {
            participants.push(ap::participant(l, None));
        }
        if let Some(cl) = &s.clinician {
            participants.push(ap::participant(cl, Some(ap::CLINICIAN_TYPE)));
        }
    } else {
        if let Some(v) = &d.start {
            a["start"] = v.clone();
        }
        if let Some(v) = &d.end {
            a["end"] = v.clone();
        }
    }
    a["participant"] = Value::Array(participants);
    Ok(a)
}

fn set_state(
    body: &mut Value,
    state: ReferralState,
    current: &StateRecord,
    service: Option<String>,
) {
    sr::set_state(
        body,
        &StateRecord {
            state,
            reason: None,
            comment: None,
            service: service.or_else(|| current.service.clone()),
        },
    );
}

/// `POST Appointment`: books a slot (`booked` + `slot`), records an indirectly booked
/// appointment (`booked` + `start`/`end` + the service), or defers to the provider
/// (`proposed` + a review reason + the service).
pub fn create(conn: &mut DbConnection, body: Value, who: &Acting<'_>) -> Result<ResourceRow> {
    let bases = body
        .get("basedOn")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if bases.len() > 1 {
        return Err(invalid(
            "Appointment.basedOn",
            "TOO_MANY_ITEMS",
            "business-rule",
            format!(
                "'Appointment.basedOn' names {} resources; an appointment is based on one referral",
                bases.len()
            ),
        ));
    }
    let Some((referral_id, pinned)) = ap::based_on(&body) else {
        if let Some(given) = bases.first() {
            let given = compact(given.get("reference").unwrap_or(given));
            return Err(invalid(
                PINNED_AT,
                "INVALID_VALUE",
                "value",
                format!("'Appointment.basedOn' ({given}) is not a referral reference: name it as ServiceRequest/{{id}}, optionally /_history/{{version}}"),
            ));
        }
        return Err(invalid(
            "Appointment.basedOn",
            "MISSING_VALUE",
            "required",
            "'Appointment.basedOn' is missing: name the referral (ServiceRequest/{id}, optionally /_history/{version})".into(),
        ));
    };
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if status != "booked" && status != "proposed" {
        return Err(invalid(
            "Appointment.status",
            "INVALID_VALUE",
            "value",
            format!("'Appointment.status' ({status}) must be booked (a booking) or proposed (a deferral to the provider)"),
        ));
    }
    let slots = ap::slots(&body);
    if slots.len() > 1 {
        return Err(invalid(
            "Appointment.slot",
            "TOO_MANY_ITEMS",
            "business-rule",
            format!(
                "'Appointment.slot' names {} slots; a booking takes one",
                slots.len()
            ),
        ));
    }
    let caller_ods = who.caller.organisation.as_str().to_owned();
    let is_referrer = who.caller.business_function.is_referrer();
    let mut created: Option<ResourceRow> = None;
    let hold = !super::deferred::gathering();
    // The slot, its schedule and the schedule's service are read with the referral.
    let also = slots
        .iter()
        .filter_map(|s| split_reference(s))
        .filter(|(t, _)| *t == "Slot")
        .map(|(t, id)| (t.to_owned(), id.to_owned()))
        .collect();
    // An unrelated organisation is refused before anything about the referral is said.
    let unknown = |e: ServiceError| match e {
        ServiceError::NotFound { res_type, id }
            if res_type == "ServiceRequest" && id == referral_id =>
        {
            ServiceError::SubjectNotFound {
                path: PINNED_AT.into(),
                reference: format!("{res_type}/{id}"),
            }
        }
        e => e,
    };
    referral_svc::transition_reading(
        conn,
        &referral_id,
        referral_svc::Reading::Following { also },
        Expected::Pinned(pinned),
        ReferralAction::CreateAppointment,
        who,
        |c, referral, current| {
            let priority = sr::ers_priority(referral).unwrap_or_default().to_owned();
            // Referrers book the shortlist; a provider books its own service the referral
            // is with.
            let allowed: Vec<String> = if is_referrer {
                sr::shortlist(referral)
            } else {
                current.service.iter().cloned().collect()
            };
            let named_service = ap::actors(&body, "HealthcareService").into_iter().next();
            let clinician = ap::clinician(&body);
            let draft = if status == "booked" && !slots.is_empty() {
                let facts = bookable_slot(
                    c,
                    &slots[0],
                    clinician.as_deref(),
                    referral,
                    &allowed,
                    "Appointment.slot[0]",
                )?;
                if let Some(s) = &named_service {
                    if *s != facts.service {
                        return Err(invalid(
                            "Appointment.participant",
                            "INAPPROPRIATE_VALUE",
                            "business-rule",
                            format!(
                                "'service' ({s}) is not the service of 'slot' ({}): {}",
                                facts.reference, facts.service
                            ),
                        ));
                    }
                }
                said_with_slot(&body, &facts)?;
                Draft {
                    status: "booked",
                    service: facts.service.clone(),
                    slot: Some(facts),
                    start: None,
                    end: None,
                    reason: None,
                }
            } else {
                let Some(service) = named_service else {
                    return Err(invalid(
                        "Appointment.participant",
                        "MISSING_VALUE",
                        "required",
                        if status == "booked" {
                            "'service' is missing: a booking names a slot, or (indirectly bookable service) the HealthcareService as a participant with start and end".into()
                        } else {
                            "'service' is missing: a deferral names the HealthcareService it defers to as a participant".into()
                        },
                    ));
                };
                if !allowed.contains(&service) {
                    return Err(invalid(
                        "Appointment.participant",
                        "INAPPROPRIATE_VALUE",
                        "business-rule",
                        format!(
                            "'service' ({service}) does not relate to a Service on the Shortlist"
                        ),
                    ));
                }
                let facts = service_facts(c, &service)?.ok_or_else(|| {
                    invalid(
                        "Appointment.participant",
                        "REFERENCE_NOT_FOUND",
                        "not-found",
                        format!("'service' ({service}) does not exist"),
                    )
                })?;
                open_to(&facts, &service, referral, "Appointment.participant")?;
                if !facts.flows.iter().any(|f| f == "BOOKABLE") {
                    // e-RS A016 also sends to triage; here that is the referral's operation.
                    let what = if facts.flows.iter().any(|f| f == "REVIEW") {
                        format!("it is a triage service: send the referral to it with POST ServiceRequest/{referral_id}/$ers.sendForTriage")
                    } else {
                        "it is an advice service".to_owned()
                    };
                    return Err(invalid(
                        "Appointment.participant",
                        "INAPPROPRIATE_VALUE",
                        "business-rule",
                        format!("'service' ({service}) does not take appointment requests: {what}"),
                    ));
                }
                if status == "booked" {
                    indirect_booking(&body, &service, &facts)?
                } else {
                    if !is_referrer {
                        return Err(ServiceError::Forbidden(
                            "Only the referrer defers a referral to the provider".into(),
                        ));
                    }
                    deferral(c, &body, &service, &priority, &slots)?
                }
            };
            said_patient(&body, referral)?;
            let id = referral
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let next = if draft.status == "booked" {
                ReferralState::Booked
            } else {
                ReferralState::DeferredToProvider
            };
            set_state(referral, next, current, Some(draft.service.clone()));
            let access = referral_svc::organisations(c, referral)?;
            // A deferral the provider now books is superseded, not left current.
            let superseded = json!({"text": "Superseded by a new booking for the referral"});
            for_each_current(c, &id, &access, who, |c, old| {
                cancel_in_place(c, old, superseded.clone(), None, who)
            })?;
            let content = appointment_body(c, &body, &id, referral, &draft, &caller_ods)?;
            // Everything is read: the appointment, the slot and then the referral
            // (`transition_reading`) are written together at the end, when this booking is
            // not part of a larger transaction.
            let row = match resource::create(
                c,
                def("Appointment")?,
                content,
                &Writer::new(who.author, who.audit)
                    .visible_to(&access)
                    .held_back(hold),
                None,
                Some(format!("a.{}", crate::fhir::new_id())),
            )? {
                resource::Created::New(r) | resource::Created::Existing(r) => r,
            };
            if let Some(facts) = &draft.slot {
                set_slot_status(c, &facts.row, (*facts.body).clone(), "busy", who, hold)?;
            }
            created = Some(row);
            Ok(())
        },
    )
    .map_err(unknown)?;
    created.ok_or_else(|| ServiceError::Internal("booking wrote no appointment".into()))
}

/// A booking's patient is the referral's: a client may leave it out (the server adds it), but
/// a patient it names must be that one. A booking for another patient is refused, not
/// corrected.
fn said_patient(body: &Value, referral: &Value) -> Result<()> {
    let patient = referral
        .at("/subject/reference")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for (i, r) in ap::actors_at(body, "Patient") {
        if split_reference(r) != split_reference(patient) {
            return Err(invalid(
                &format!("Appointment.participant[{i}].actor"),
                "INAPPROPRIATE_VALUE",
                "business-rule",
                format!("'patient' ({r}) is not the referral's patient ({patient})"),
            ));
        }
    }
    Ok(())
}

/// What the slot decides about a booking (its start, end and location) may be left out, but
/// what a client says of it must agree: a booking at another time or place than the slot's
/// is refused, not corrected.
fn said_with_slot(body: &Value, slot: &SlotFacts) -> Result<()> {
    for (field, theirs) in [("start", &slot.start), ("end", &slot.end)] {
        let Some(given) = body.get(field) else {
            continue;
        };
        if instant(given).is_none() || instant(given) != instant(theirs) {
            return Err(invalid(
                &format!("Appointment.{field}"),
                "INAPPROPRIATE_VALUE",
                "business-rule",
                format!(
                    "'{field}' ({}) is not the {field} of 'slot' ({}): {}; leave it out or send the slot's",
                    compact(given),
                    slot.reference,
                    compact(theirs)
                ),
            ));
        }
    }
    for (i, r) in ap::actors_at(body, "Location") {
        if split_reference(r) != slot.location.as_deref().and_then(split_reference) {
            return Err(invalid(
                &format!("Appointment.participant[{i}].actor"),
                "INAPPROPRIATE_VALUE",
                "business-rule",
                match &slot.location {
                    Some(l) => format!("'location' ({r}) is not where 'slot' ({}) is: {l}", slot.reference),
                    None => format!("'location' ({r}) is not where 'slot' ({}) is: its schedule names no location", slot.reference),
                },
            ));
        }
    }
    Ok(())
}

/// A JSON value as a client would recognise it: a string without its quotes.
fn compact(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// An indirectly bookable service: the appointment made in the provider's system, recorded
/// with its start and end.
fn indirect_booking(
    body: &Value,
    service: &str,
    facts: &referral_svc::ServiceFacts,
) -> Result<Draft> {
    // Reached for a service with the BOOKABLE request flow: not directly bookable is
    // indirectly bookable.
    if facts.directly_bookable {
        return Err(invalid(
            "Appointment.slot",
            "MISSING_VALUE",
            "required",
            format!("'slot' is missing: {service} is directly bookable, so a booking takes one of its free slots"),
        ));
    }
    let (start, end) = (body.get("start").cloned(), body.get("end").cloned());
    let (Some(s), Some(e)) = (
        start.as_ref().and_then(instant),
        end.as_ref().and_then(instant),
    ) else {
        return Err(invalid(
            "Appointment.start",
            "MISSING_VALUE",
            "required",
            "'start' and 'end' are required for an indirectly booked appointment (instants with a time zone)".into(),
        ));
    };
    if s <= now() || e <= s {
        return Err(invalid(
            "Appointment.start",
            "INVALID_VALUE",
            "value",
            "'start' must be in the future and before 'end'".into(),
        ));
    }
    Ok(Draft {
        status: "booked",
        slot: None,
        start,
        end,
        service: service.to_owned(),
        reason: None,
    })
}

/// A deferral to the provider, allowed only when booking is not possible now.
fn deferral(
    c: &mut DbConnection,
    body: &Value,
    service: &str,
    priority: &str,
    slots: &[String],
) -> Result<Draft> {
    let Some(reason) = ap::reason(body, ap::REVIEW_REASON_SYSTEM) else {
        return Err(invalid(
            "Appointment.reasonCode",
            "MISSING_VALUE",
            "required",
            format!(
                "'reason' is missing: a deferral gives one of {} ({})",
                terminology::codes(ap::REVIEW_REASON_SYSTEM).join(", "),
                ap::REVIEW_REASON_SYSTEM
            ),
        ));
    };
    match reason.as_str() {
        "NO_SLOTS_AT_SERVICE" => {
            if has_free_slot(c, service, priority)? {
                return Err(invalid(
                    "Appointment.reasonCode",
                    "SLOTS_CURRENTLY_AVAILABLE",
                    "business-rule",
                    format!("'service' ({service}) has free {priority} slots now: book one instead of deferring"),
                ));
            }
        }
        "SLOT_NOT_AVAILABLE" => {
            let Some(slot) = slots.first() else {
                return Err(invalid(
                    "Appointment.slot",
                    "MISSING_VALUE",
                    "required",
                    "'slot' is missing: SLOT_NOT_AVAILABLE names the slot that could not be booked"
                        .into(),
                ));
            };
            if let Some(v) = load_json(c, slot)? {
                if v.get("status").and_then(Value::as_str) == Some("free") {
                    return Err(invalid(
                        "Appointment.slot[0]",
                        "THIS_SLOT_IS_AVAILABLE",
                        "business-rule",
                        format!("'slot' ({slot}) is still free: book it instead of deferring"),
                    ));
                }
            }
        }
        "BOOKING_ATTEMPT_PROBLEM" => {}
        other => {
            return Err(invalid(
                "Appointment.reasonCode",
                "INVALID_CODE",
                "code-invalid",
                format!(
                    "'reason' ({other}) is not a deferral reason; expected one of: {}",
                    terminology::codes(ap::REVIEW_REASON_SYSTEM).join(", ")
                ),
            ))
        }
    }
    Ok(Draft {
        status: "proposed",
        slot: None,
        start: None,
        end: None,
        service: service.to_owned(),
        reason: Some((ap::REVIEW_REASON_SYSTEM.to_owned(), reason)),
    })
}

/// Writes a new version of an appointment (at the version read).
fn rewrite(
    c: &mut DbConnection,
    row: &ResourceRow,
    body: Value,
    access: &[String],
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    resource::rewrite(
        c,
        def("Appointment")?,
        &row.id,
        row.version_id,
        body,
        &Writer::new(who.author, who.audit).visible_to(access),
    )
}

/// Cancels an appointment body in place: its slot released, the reason and comment recorded.
fn cancel_in_place(
    c: &mut DbConnection,
    body: &mut Value,
    reason: Value,
    comment: Option<&str>,
    who: &Acting<'_>,
) -> Result<()> {
    release_slot(c, body, who)?;
    body["status"] = json!("cancelled");
    body["cancelationReason"] = reason;
    if let Some(text) = comment.filter(|t| !t.trim().is_empty()) {
        body["comment"] = json!(text);
    }
    Ok(())
}

/// Applies `change` to each of the referral's current appointments and writes them.
fn for_each_current(
    c: &mut DbConnection,
    referral_id: &str,
    access: &[String],
    who: &Acting<'_>,
    mut change: impl FnMut(&mut DbConnection, &mut Value) -> Result<()>,
) -> Result<()> {
    for row in current_appointments(c, referral_id)? {
        let mut body = stored_value(&row)?;
        change(c, &mut body)?;
        rewrite(c, &row, body, access, who)?;
    }
    Ok(())
}

/// Where an input is in the request, for error locations: `Parameters.parameter[reason]` for
/// an operation, `Appointment.cancelationReason` for a PUT.
pub type Locate = fn(&str) -> String;

/// A change of an appointment, with its inputs: one per appointment operation.
#[derive(Debug, Clone)]
pub enum AppointmentChange {
    Cancel {
        reason: String,
        comment: Option<String>,
    },
    Move {
        slot: String,
        clinician: Option<String>,
    },
    NonAttendance {
        reason: String,
        comment: Option<String>,
    },
}

impl AppointmentChange {
    fn action(&self) -> ReferralAction {
        match self {
            AppointmentChange::Cancel { .. } => ReferralAction::CancelAppointment,
            AppointmentChange::Move { .. } => ReferralAction::ChangeAppointment,
            AppointmentChange::NonAttendance { .. } => ReferralAction::RecordNonAttendance,
        }
    }
}

/// A reason of the appointment cancellation code system with `usage`; its reason type
/// (PATIENT, PROVIDER, PROVIDER_REJECT, UNKNOWN).
pub(super) fn cancellation_reason(
    reason: &str,
    comment: Option<&str>,
    usage: &str,
    at: Locate,
) -> Result<String> {
    let (reason_at, comment_at) = (at("reason"), at("comment"));
    let system = ap::CANCELLATION_SYSTEM;
    let with_usage: Vec<&'static str> = terminology::codes(system)
        .into_iter()
        .filter(|code| {
            terminology::concept(system, code).is_some_and(|c| {
                terminology::properties(c, "usage")
                    .iter()
                    .any(|u| u.as_str() == Some(usage))
            })
        })
        .collect();
    let Some(concept) =
        terminology::concept(system, reason).filter(|_| with_usage.contains(&reason))
    else {
        return Err(invalid(
            &reason_at,
            "INAPPROPRIATE_VALUE",
            "code-invalid",
            format!(
                "'reason' ({reason}) is not an appointment cancellation reason for {usage}; expected one of: {}",
                with_usage.join(", ")
            ),
        ));
    };
    let mandatory = terminology::property(concept, "commentIsMandatory")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if mandatory && comment.unwrap_or_default().trim().is_empty() {
        return Err(ServiceError::Invalid(vec![Issue::error(
            "required",
            "MISSING_VALUE",
            format!("'comment' is missing: it is required when the reason is {reason}"),
        )
        .with_expression(comment_at)]));
    }
    if let Some(text) = comment {
        check_comment(text, false, "comment")?;
    }
    Ok(
        terminology::property(concept, "appointmentBookingCancellationReasonType")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
            .to_owned(),
    )
}

/// Cancels, moves or marks did-not-attend the current appointment `id` at version `if_match`,
/// with its referral and slots, in one transaction.
pub fn change(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    change: AppointmentChange,
    who: &Acting<'_>,
    at: Locate,
) -> Result<ResourceRow> {
    let d = def("Appointment")?;
    let row = resource::read(conn, d, id)?;
    scope::check_write(conn, d, id, who.caller)?;
    let Some(given) = if_match else {
        return Err(ServiceError::IfMatchRequired {
            res_type: d.name.to_owned(),
        });
    };
    let is_referrer = who.caller.business_function.is_referrer();
    // Inputs first: a reason of the right kind for the caller's side.
    let next_state = match &change {
        AppointmentChange::Cancel { reason, comment } => {
            let kind = cancellation_reason(reason, comment.as_deref(), "CANCEL", at)?;
            match (kind.as_str(), is_referrer) {
                ("PATIENT", true) | ("UNKNOWN", true) => ReferralState::ApptCancelledByPatient,
                ("PROVIDER", false) | ("UNKNOWN", false) => ReferralState::ApptCancelledByProvider,
                (k, _) => {
                    return Err(invalid(
                        &at("reason"),
                        "INAPPROPRIATE_VALUE",
                        "business-rule",
                        format!(
                            "'reason' ({reason}) is a {} reason; {} cancels with a {} reason",
                            k.to_lowercase(),
                            if is_referrer {
                                "the referrer"
                            } else {
                                "the provider"
                            },
                            if is_referrer {
                                "patient's"
                            } else {
                                "provider's"
                            }
                        ),
                    ))
                }
            }
        }
        AppointmentChange::NonAttendance { reason, comment } => {
            if terminology::concept(ap::NON_ATTENDANCE_SYSTEM, reason).is_none() {
                return Err(invalid(
                    &at("reason"),
                    "INVALID_CODE",
                    "code-invalid",
                    format!(
                        "'reason' ({reason}) is not a non-attendance reason; expected one of: {}",
                        terminology::codes(ap::NON_ATTENDANCE_SYSTEM).join(", ")
                    ),
                ));
            }
            if let Some(text) = comment {
                check_comment(text, false, "comment")?;
            }
            ReferralState::DidNotAttend
        }
        AppointmentChange::Move { .. } => ReferralState::Booked,
    };
    let mut body = stored_value(&row)?;
    if given != row.version_id {
        return Err(ServiceError::StaleVersion {
            res_type: d.name.to_owned(),
            id: id.to_owned(),
            given,
            current: row.version_id,
        });
    }
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if status != "booked" {
        return Err(ServiceError::RequestState(format!(
            "Appointment/{id} is {status}: only the referral's current booked appointment can be {}",
            match change {
                AppointmentChange::Cancel { .. } => "cancelled",
                AppointmentChange::Move { .. } => "changed",
                AppointmentChange::NonAttendance { .. } => "marked did-not-attend",
            }
        )));
    }
    if let AppointmentChange::Move { slot, .. } = &change {
        let wanted = split_reference(slot).map(|(_, sid)| sid);
        if ap::slots(&body)
            .iter()
            .any(|s| split_reference(s).map(|(_, sid)| sid) == wanted)
        {
            return Err(invalid(
                &at("slot"),
                "NO_CHANGES_DETECTED",
                "business-rule",
                format!("'slot' ({slot}) is the slot Appointment/{id} already has"),
            ));
        }
    }
    let Some((referral_id, _)) = ap::based_on(&body) else {
        return Err(ServiceError::Internal(format!(
            "Appointment/{id} has no referral"
        )));
    };
    let action = change.action();
    let mut written: Option<ResourceRow> = None;
    referral_svc::transition(
        conn,
        &referral_id,
        Expected::Pinned(None),
        action,
        who,
        |c, referral, current| {
            // Re-read inside the transaction: the version checked above must still hold.
            let now_row = resource::read(c, d, id)?;
            if now_row.version_id != given {
                return Err(ServiceError::StaleVersion {
                    res_type: d.name.to_owned(),
                    id: id.to_owned(),
                    given,
                    current: now_row.version_id,
                });
            }
            // Whether the appointment's time has come decides which changes are timely
            // (checked after the caller's right to make the change).
            if !action.timely(has_begun(&body), is_referrer) {
                return Err(untimely(id, start_of(&body), action));
            }
            let mut service = None;
            match &change {
                AppointmentChange::Cancel { reason, comment } => {
                    let why =
                        json!({"coding": [{"system": ap::CANCELLATION_SYSTEM, "code": reason}]});
                    cancel_in_place(c, &mut body, why, comment.as_deref(), who)?;
                }
                AppointmentChange::NonAttendance { reason, comment } => {
                    body["status"] = json!("noshow");
                    body["cancelationReason"] =
                        json!({"coding": [{"system": ap::NON_ATTENDANCE_SYSTEM, "code": reason}]});
                    if let Some(text) = comment.as_ref().filter(|t| !t.trim().is_empty()) {
                        body["comment"] = json!(text);
                    }
                }
                AppointmentChange::Move { slot, clinician } => {
                    let allowed: Vec<String> = if is_referrer {
                        sr::shortlist(referral)
                    } else {
                        current.service.iter().cloned().collect()
                    };
                    let facts = bookable_slot(
                        c,
                        slot,
                        clinician.as_deref(),
                        referral,
                        &allowed,
                        &at("slot"),
                    )?;
                    set_slot_status(c, &facts.row, (*facts.body).clone(), "busy", who, false)?;
                    release_slot(c, &body, who)?;
                    let mut participants: Vec<Value> = body
                        .get("participant")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    participants.retain(|p| {
                        let r = p
                            .at("/actor/reference")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        !["HealthcareService/", "Location/", "Practitioner/"]
                            .iter()
                            .any(|t| r.starts_with(t))
                    });
                    participants.push(ap::participant(&facts.service, None));
                    if let Some(l) = &facts.location {
                        participants.push(ap::participant(l, None));
                    }
                    if let Some(cl) = &facts.clinician {
                        participants.push(ap::participant(cl, Some(ap::CLINICIAN_TYPE)));
                    }
                    body["participant"] = Value::Array(participants);
                    body["slot"] = json!([{"reference": facts.reference}]);
                    body["start"] = facts.start.clone();
                    body["end"] = facts.end.clone();
                    service = Some(facts.service.clone());
                }
            }
            set_state(referral, next_state, current, service);
            let access = referral_svc::organisations(c, referral)?;
            written = Some(rewrite(c, &now_row, body.clone(), &access, who)?);
            Ok(())
        },
    )?;
    written.ok_or_else(|| ServiceError::Internal("the appointment change wrote nothing".into()))
}

/// Cancel appointment, action later: the booked appointment goes back to `proposed` with the
/// provider's reason and comment, its slot released, for the provider to book again.
pub fn action_later(
    c: &mut DbConnection,
    referral_id: &str,
    comment: &str,
    access: &[String],
    who: &Acting<'_>,
) -> Result<()> {
    for_each_current(c, referral_id, access, who, |c, body| {
        release_slot(c, body, who)?;
        if let Some(o) = body.as_object_mut() {
            for gone in ["slot", "start", "end", "minutesDuration"] {
                o.shift_remove(gone);
            }
        }
        body["status"] = json!("proposed");
        body["reasonCode"] = json!([{"coding": [{"system": REVIEW_OUTCOME_SYSTEM, "code": "CANCEL_APPOINTMENT_ACTION_LATER"}]}]);
        body["comment"] = json!(comment);
        Ok(())
    })
}

/// The referral's requirements, set on its current appointments too.
pub fn carry_requirements(
    c: &mut DbConnection,
    referral_id: &str,
    ext: Option<&Value>,
    access: &[String],
    who: &Acting<'_>,
) -> Result<()> {
    for_each_current(c, referral_id, access, who, |_, body| {
        requirements::set(body, ext.cloned());
        Ok(())
    })
}

/// When a referral is cancelled or rejected: its current appointment is cancelled with
/// `reason` (and its slot released), inside the referral's own transaction.
pub fn cancel_current(
    c: &mut DbConnection,
    referral_id: &str,
    reason: (&str, &str),
    comment: Option<&str>,
    access: &[String],
    who: &Acting<'_>,
) -> Result<()> {
    let why = json!({"coding": [{"system": reason.0, "code": reason.1}]});
    for_each_current(c, referral_id, access, who, |c, body| {
        cancel_in_place(c, body, why.clone(), comment, who)
    })
}

//! Appointment as e-RS uses it: a booking (`booked`, with a slot, or with start and end for an
//! indirectly bookable service), a deferral to the provider (`proposed`, with a review reason),
//! `cancelled` with a cancellation reason, or `noshow` with a non-attendance reason. Always
//! `basedOn` its referral.

use crate::fhir::At;
use serde_json::{json, Value};

use super::super::index::split_reference;
use super::{finish, Checked};
use crate::fhir::outcome::Issue;

/// Why a referral was deferred to the provider (`Appointment.reasonCode`).
pub const REVIEW_REASON_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-ReviewReason";
pub const CANCELLATION_SYSTEM: &str =
    "https://fhir.nhs.uk/CodeSystem/eRS-AppointmentCancellationReason";
pub const NON_ATTENDANCE_SYSTEM: &str =
    "https://fhir.nhs.uk/CodeSystem/eRS-AppointmentNonAttendanceReason";
/// UK Core: the organisation that made the booking.
pub const BOOKING_ORGANIZATION_EXTENSION: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-BookingOrganization";
/// Participant type of a named clinician (v3 ParticipationType CON, consultant).
pub const PARTICIPATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
pub const CLINICIAN_TYPE: &str = "CON";

/// The referral an appointment is based on: its id and, when the reference is versioned
/// (`ServiceRequest/{id}/_history/{v}`), the version the client read.
pub fn based_on(a: &Value) -> Option<(String, Option<i64>)> {
    let r = a
        .get("basedOn")?
        .as_array()?
        .iter()
        .find_map(|b| b.get("reference").and_then(Value::as_str))?;
    let mut parts = r.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ServiceRequest"), Some(id), None, None) => Some((id.to_owned(), None)),
        (Some("ServiceRequest"), Some(id), Some("_history"), Some(v)) => {
            Some((id.to_owned(), v.parse().ok()))
        }
        _ => None,
    }
}

/// The `Type/id` references of the participants' actors of one type.
pub fn actors(a: &Value, res_type: &str) -> Vec<String> {
    actors_at(a, res_type)
        .filter(|(_, r)| split_reference(r).is_some())
        .map(|(_, r)| r.to_owned())
        .collect()
}

/// The participants' actor references that name a type, well formed or not, with the
/// index of their participant.
pub fn actors_at<'a>(a: &'a Value, res_type: &'a str) -> impl Iterator<Item = (usize, &'a str)> {
    a.get("participant")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.at("/actor/reference")?.as_str()?)))
        .filter(move |(_, r)| r.split('/').next() == Some(res_type))
}

/// The actor of the participant typed as the named clinician (CON), if any.
pub fn clinician(a: &Value) -> Option<String> {
    a.get("participant")?
        .as_array()?
        .iter()
        .find(|p| {
            p.get("type")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|t| {
                    t.get("coding")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .any(|c| c.get("code").and_then(Value::as_str) == Some(CLINICIAN_TYPE))
        })?
        .at("/actor/reference")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The slot references (`Slot/{id}`).
pub fn slots(a: &Value) -> Vec<String> {
    a.get("slot")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("reference").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// The first code of `reasonCode` in `system`.
pub fn reason(a: &Value, system: &str) -> Option<String> {
    a.get("reasonCode")?
        .as_array()?
        .iter()
        .flat_map(|r| {
            r.get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|c| c.get("system").and_then(Value::as_str) == Some(system))
        .and_then(|c| c.get("code").and_then(Value::as_str))
        .map(str::to_owned)
}

/// A participant entry.
pub fn participant(reference: &str, kind: Option<&str>) -> Value {
    let mut p =
        json!({"actor": {"reference": reference}, "required": "required", "status": "accepted"});
    if let Some(code) = kind {
        p["type"] = json!([{"coding": [{"system": PARTICIPATION_SYSTEM, "code": code, "display": "consultant"}]}]);
    }
    p
}

fn actor_refs(a: &Value, res_type: &str) -> Vec<Value> {
    actors(a, res_type)
        .into_iter()
        .map(|r| json!({"reference": r}))
        .collect()
}

/// Search index values for the `patient` parameter.
pub fn extract_patient(a: &Value) -> Vec<Value> {
    actor_refs(a, "Patient")
}

/// Search index values for the `service` parameter.
pub fn extract_service(a: &Value) -> Vec<Value> {
    actor_refs(a, "HealthcareService")
}

/// Search index values for the `practitioner` parameter.
pub fn extract_practitioner(a: &Value) -> Vec<Value> {
    actor_refs(a, "Practitioner")
}

/// Search index values for the `location` parameter.
pub fn extract_location(a: &Value) -> Vec<Value> {
    actor_refs(a, "Location")
}

/// Rules every stored appointment follows beyond UK Core: its additional requirements.
pub fn check(a: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
    super::requirements::check(a, "Appointment", &mut issues);
    finish(Checked::default(), issues)
}

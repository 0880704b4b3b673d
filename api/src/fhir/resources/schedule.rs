//! Schedule: what and who a schedule is for.

use serde_json::Value;

use crate::fhir::index::split_reference;

/// The schedule's first actor of `res_type` (`HealthcareService`, `Practitioner`, `Location`),
/// as its reference `Type/id`.
pub fn actor<'a>(schedule: &'a Value, res_type: &str) -> Option<&'a str> {
    schedule
        .get("actor")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("reference").and_then(Value::as_str))
        .find(|r| split_reference(r).is_some_and(|(t, _)| t == res_type))
}

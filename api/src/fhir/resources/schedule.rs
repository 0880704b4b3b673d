//! Schedule: what and who a schedule is for. A schedule is one service's (its slots are that
//! service's availability, and the slot search by service relies on it): at most one
//! HealthcareService actor.

use serde_json::Value;

use super::*;
use crate::fhir::index::split_reference;

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
    let services: Vec<(usize, &str)> = r
        .get("actor")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, a)| Some((i, a.get("reference").and_then(Value::as_str)?)))
        .filter(|(_, r)| split_reference(r).is_some_and(|(t, _)| t == "HealthcareService"))
        .collect();
    if let [(_, first), rest @ ..] = services.as_slice() {
        for (i, other) in rest {
            issues.push(Issue::invalid_at(
                format!("Schedule.actor[{i}]"),
                format!("({other}) is a second service: a schedule belongs to one HealthcareService ({first}); give the other service its own schedule"),
            ));
        }
    }
    finish(Checked::default(), issues)
}

/// Whether the schedule's slots are offered (it is not inactive): they count as availability
/// in the Directory of Services search and may be booked.
pub fn is_active(schedule: &Value) -> bool {
    schedule.get("active").and_then(Value::as_bool) != Some(false)
}

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

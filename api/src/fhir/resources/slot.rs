//! e-RS Slot rules: a slot is for one priority, an e-RS one; it ends after it starts.

use crate::fhir::At;
use serde_json::Value;

use super::healthcare_service::{known_codes, PRIORITY_SYSTEM};
use super::*;

/// The code of the slot's `appointmentType` coding: the priority it is for (a slot has at most
/// one coding there).
pub fn priority_code(r: &Value) -> Option<&str> {
    r.at("/appointmentType/coding/0/code")
        .and_then(Value::as_str)
}

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
    let codings = codings(r, "appointmentType");
    if codings.len() > 1 {
        issues.push(Issue::invalid_at(
            "Slot.appointmentType.coding[1]",
            format!(
                "is a second coding: a slot is for one priority ({} codings given)",
                codings.len()
            ),
        ));
    }
    known_codes(
        r,
        "Slot",
        "appointmentType",
        &[PRIORITY_SYSTEM],
        &mut issues,
    );
    if let (Some(s), Some(e)) = (
        r.get("start").and_then(Value::as_str),
        r.get("end").and_then(Value::as_str),
    ) {
        if let (Some((start, _)), Some((end, _))) = (
            crate::fhir::datetime::range(s),
            crate::fhir::datetime::range(e),
        ) {
            if end <= start {
                issues.push(Issue::invalid_at(
                    "Slot.end",
                    format!("({e}) must be after the start ({s})"),
                ));
            }
        }
    }
    finish(Checked::default(), issues)
}

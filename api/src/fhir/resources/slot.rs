//! e-RS Slot rules: the priority a slot is for is an e-RS priority; it ends after it starts.

use serde_json::Value;

use super::healthcare_service::{known_codes, PRIORITY_SYSTEM};
use super::*;

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
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

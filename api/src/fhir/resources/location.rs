//! e-RS Location rules: ODS site codes well-formed and unique; a position on Earth; UK postcode.

use serde_json::Value;

use super::*;
use crate::domain::{OdsCode, Postcode};

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut checked = Checked::default();
    let mut issues = Vec::new();
    unique_identifier(
        r,
        "Location",
        OdsCode::SITE_SYSTEM,
        |v| OdsCode::parse(v).map(|c| c.as_str().to_owned()),
        &mut checked,
        &mut issues,
    );
    if let Some(pos) = r.get("position") {
        for (key, limit) in [("latitude", 90.0), ("longitude", 180.0)] {
            if let Some(x) = pos.get(key).and_then(Value::as_f64) {
                if !(-limit..=limit).contains(&x) {
                    issues.push(Issue::invalid_at(
                        format!("Location.position.{key}"),
                        format!("({x}) is out of range -{limit}..{limit}"),
                    ));
                }
            }
        }
    }
    if let Some(pc) = r
        .get("address")
        .and_then(|a| a.get("postalCode"))
        .and_then(Value::as_str)
    {
        if let Err(e) = Postcode::parse(pc) {
            issues.push(Issue::invalid_at("Location.address.postalCode", e.0));
        }
    }
    finish(checked, issues)
}

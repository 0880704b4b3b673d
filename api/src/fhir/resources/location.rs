//! UK Core Location rules.

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
        true,
        |v| OdsCode::parse(v).map(|c| c.as_str().to_owned()),
        &mut checked,
        &mut issues,
    );
    code_in(
        r,
        "Location",
        "status",
        &["active", "suspended", "inactive"],
        &mut issues,
    );
    code_in(r, "Location", "mode", &["instance", "kind"], &mut issues);
    if let Some(pos) = r.get("position") {
        for (key, limit) in [("latitude", 90.0), ("longitude", 180.0)] {
            let value = pos.get(key).and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            });
            match value {
                Some(x) if (-limit..=limit).contains(&x) => {}
                Some(x) => issues.push(Issue::invalid_at(
                    format!("Location.position.{key}"),
                    format!("({x}) is out of range -{limit}..{limit}"),
                )),
                None => issues.push(Issue::required_at(
                    format!("Location.position.{key}"),
                    "is required with a position",
                )),
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
    telecoms(r, "Location", &mut issues);
    finish(checked, issues)
}

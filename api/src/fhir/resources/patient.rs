//! e-RS Patient rules: a valid NHS number (Modulus 11), unique; UK postcodes.

use serde_json::Value;

use super::*;
use crate::domain::{NhsNumber, Postcode};

const UK_COUNTRIES: &[&str] = &[
    "GB",
    "GBR",
    "UK",
    "United Kingdom",
    "England",
    "Wales",
    "Scotland",
    "Northern Ireland",
];

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut checked = Checked::default();
    let mut issues = Vec::new();
    unique_identifier(
        r,
        "Patient",
        NhsNumber::SYSTEM,
        |v| NhsNumber::parse(v).map(|n| n.as_str().to_owned()),
        &mut checked,
        &mut issues,
    );
    for (i, a) in r
        .get("address")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let in_uk = a
            .get("country")
            .and_then(Value::as_str)
            .is_none_or(|c| UK_COUNTRIES.iter().any(|u| u.eq_ignore_ascii_case(c)));
        if let (true, Some(pc)) = (in_uk, a.get("postalCode").and_then(Value::as_str)) {
            if let Err(e) = Postcode::parse(pc) {
                issues.push(Issue::invalid_at(
                    format!("Patient.address[{i}].postalCode"),
                    e.0,
                ));
            }
        }
    }
    finish(checked, issues)
}

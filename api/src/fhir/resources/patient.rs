//! UK Core Patient rules.

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
        true,
        |v| NhsNumber::parse(v).map(|n| n.as_str().to_owned()),
        &mut checked,
        &mut issues,
    );
    code_in(
        r,
        "Patient",
        "gender",
        &["male", "female", "other", "unknown"],
        &mut issues,
    );
    date_element(r, "Patient", "birthDate", &mut issues);
    telecoms(r, "Patient", &mut issues);
    if let Some(addresses) = r.get("address").and_then(Value::as_array) {
        for (i, a) in addresses.iter().enumerate() {
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
            if let Some(p) = a.get("period") {
                period(p, &format!("Patient.address[{i}].period"), &mut issues);
            }
        }
    }
    if let Some(names) = r.get("name").and_then(Value::as_array) {
        for (i, n) in names.iter().enumerate() {
            code_in(
                n,
                &format!("Patient.name[{i}]"),
                "use",
                &[
                    "usual",
                    "official",
                    "temp",
                    "nickname",
                    "anonymous",
                    "old",
                    "maiden",
                ],
                &mut issues,
            );
        }
    }
    finish(checked, issues)
}

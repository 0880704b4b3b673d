//! e-RS Patient rules: a valid NHS number (Modulus 11), unique; UK postcodes; born and died in
//! the past, in that order.

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
    life_dates(r, chrono::Utc::now().naive_utc(), &mut issues);
    finish(checked, issues)
}

/// Born and died in the past, and died no earlier than born. A date as late as tomorrow in UTC
/// is today somewhere in the UK's time zones (a baby born after midnight in summer time).
fn life_dates(r: &Value, now: chrono::NaiveDateTime, issues: &mut Vec<Issue>) {
    let latest = now + chrono::Duration::days(1);
    let at = |element: &str| -> Option<(&str, chrono::NaiveDateTime, chrono::NaiveDateTime)> {
        let raw = r.get(element)?.as_str()?;
        let (low, high) = crate::fhir::datetime::range(raw)?;
        Some((raw, low, high))
    };
    let born = at("birthDate");
    let died = at("deceasedDateTime");
    for (element, date) in [("birthDate", born), ("deceasedDateTime", died)] {
        if let Some((raw, _, _)) = date.filter(|(_, low, _)| *low > latest) {
            issues.push(Issue::invalid_at(
                format!("Patient.{element}"),
                format!("({raw}) is in the future"),
            ));
        }
    }
    if let (Some((b, born_low, _)), Some((d, _, died_high))) = (born, died) {
        if died_high < born_low {
            issues.push(Issue::invalid_at(
                "Patient.deceasedDateTime",
                format!("({d}) is before the patient's birth ({b})"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn said(r: Value) -> Vec<(String, String)> {
        let now = chrono::NaiveDate::from_ymd_opt(2026, 6, 1)
            .and_then(|d| d.and_hms_opt(23, 30, 0))
            .expect("a date");
        let mut issues = Vec::new();
        life_dates(&r, now, &mut issues);
        issues
            .into_iter()
            .map(|i| (i.expression.unwrap_or_default(), i.diagnostics))
            .collect()
    }

    #[test]
    fn born_and_died_in_the_past_in_that_order() {
        assert!(said(
            json!({"birthDate": "1950-03-04", "deceasedDateTime": "2020-01-01T10:00:00Z"})
        )
        .is_empty());
        // Tomorrow in UTC is today in British summer time; a partial date counts from its start.
        assert!(said(json!({"birthDate": "2026-06-02"})).is_empty());
        assert!(said(json!({"birthDate": "2026"})).is_empty());
        let future = said(json!({"birthDate": "2026-06-03"}));
        assert_eq!(future.len(), 1, "{future:?}");
        assert_eq!(future[0].0, "Patient.birthDate");
        assert!(future[0].1.contains("in the future"), "{future:?}");
        assert_eq!(
            said(json!({"deceasedDateTime": "2027-01-01T00:00:00Z"}))[0].0,
            "Patient.deceasedDateTime"
        );
        let order = said(json!({"birthDate": "1950-03-04", "deceasedDateTime": "1949-12-31"}));
        assert_eq!(order.len(), 1, "{order:?}");
        assert!(
            order[0].1.contains("before the patient's birth"),
            "{order:?}"
        );
        // The same year, precision apart, is not before.
        assert!(said(json!({"birthDate": "1950-03-04", "deceasedDateTime": "1950"})).is_empty());
    }
}

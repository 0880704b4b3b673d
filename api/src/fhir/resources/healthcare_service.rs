//! e-RS HealthcareService rules: the e-RS codes a referrer filters on are ones e-RS knows.

use serde_json::Value;

use super::*;

pub const REQUEST_FLOW_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-RequestFlowType";
pub const BOOKABLE_TYPE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-BookableType";
pub const PRIORITY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-Priority";

const REQUEST_FLOWS: &[&str] = &["BOOKABLE", "REVIEW", "ADVICE_AND_GUIDANCE"];
const BOOKABLE_TYPES: &[&str] = &["DIRECTLY_BOOKABLE", "INDIRECTLY_BOOKABLE"];
pub const PRIORITIES: &[&str] = &["ROUTINE", "URGENT", "TWO_WEEK_WAIT"];

/// Codings of a known e-RS system must use one of its codes.
pub(super) fn known_codes(
    r: &Value,
    at: &str,
    element: &str,
    rules: &[(&str, &[&str])],
    issues: &mut Vec<Issue>,
) {
    let concepts: Vec<&Value> = match r.get(element) {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    };
    for (i, cc) in concepts.iter().enumerate() {
        for (j, coding) in cc
            .get("coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let system = coding
                .get("system")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some((_, codes)) = rules.iter().find(|(s, _)| *s == system) else {
                continue;
            };
            let code = coding
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !codes.contains(&code) {
                let path = if r.get(element).is_some_and(Value::is_array) {
                    format!("{at}.{element}[{i}].coding[{j}].code")
                } else {
                    format!("{at}.{element}.coding[{j}].code")
                };
                issues.push(Issue::invalid_at(
                    path,
                    format!(
                        "({code}) is not a code of {system}; expected one of: {}",
                        codes.join(", ")
                    ),
                ));
            }
        }
    }
}

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
    if r.pointer("/providedBy/reference").is_none() {
        issues.push(Issue::required_at(
            "HealthcareService.providedBy",
            "is required: the provider organisation that owns the service",
        ));
    }
    known_codes(
        r,
        "HealthcareService",
        "characteristic",
        &[
            (REQUEST_FLOW_SYSTEM, REQUEST_FLOWS),
            (BOOKABLE_TYPE_SYSTEM, BOOKABLE_TYPES),
            (PRIORITY_SYSTEM, PRIORITIES),
        ],
        &mut issues,
    );
    finish(Checked::default(), issues)
}

//! e-RS HealthcareService rules: a provider organisation, and e-RS codes that e-RS knows (the
//! code lists come from the CodeSystems this server serves).

use crate::fhir::At;
use serde_json::Value;

use super::*;
use crate::fhir::terminology;

pub const REQUEST_FLOW_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-RequestFlowType";
pub const BOOKABLE_TYPE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-BookableType";
pub const PRIORITY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-Priority";
pub const SPECIALTY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-Specialty";
pub const APPOINTMENT_TYPE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-AppointmentType";
pub const CLINIC_TYPE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-ClinicType";
pub const ELIGIBILITY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-AgeGenderEligibility";

/// `HealthcareService.characteristic` for request flows and priorities (a bookable service is
/// directly bookable).
pub fn characteristics(flows: &[&str], priorities: &[&str]) -> Vec<Value> {
    let coding = |system: &str, code: &str| serde_json::json!({"coding": [{"system": system, "code": code}]});
    let mut out: Vec<Value> = flows
        .iter()
        .map(|f| coding(REQUEST_FLOW_SYSTEM, f))
        .collect();
    if flows.contains(&"BOOKABLE") {
        out.push(coding(BOOKABLE_TYPE_SYSTEM, "DIRECTLY_BOOKABLE"));
    }
    out.extend(priorities.iter().map(|p| coding(PRIORITY_SYSTEM, p)));
    out
}

/// Codings in one of `systems` (e-RS CodeSystems served here) must use one of its codes.
pub(super) fn known_codes(
    r: &Value,
    at: &str,
    element: &str,
    systems: &[&str],
    issues: &mut Vec<Issue>,
) {
    let (concepts, many): (Vec<&Value>, bool) = match r.get(element) {
        Some(Value::Array(a)) => (a.iter().collect(), true),
        Some(v) => (vec![v], false),
        None => (Vec::new(), false),
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
            if !systems.contains(&system) {
                continue;
            }
            let codes = terminology::codes(system);
            let code = coding
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !codes.contains(&code) {
                let path = if many {
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
    if r.at("/providedBy/reference").is_none() {
        issues.push(Issue::required_at(
            "HealthcareService.providedBy",
            "is required: the provider organisation that owns the service",
        ));
    }
    known_codes(
        r,
        "HealthcareService",
        "characteristic",
        &[REQUEST_FLOW_SYSTEM, BOOKABLE_TYPE_SYSTEM, PRIORITY_SYSTEM],
        &mut issues,
    );
    known_codes(
        r,
        "HealthcareService",
        "specialty",
        &[SPECIALTY_SYSTEM],
        &mut issues,
    );
    known_codes(
        r,
        "HealthcareService",
        "type",
        &[APPOINTMENT_TYPE_SYSTEM, CLINIC_TYPE_SYSTEM],
        &mut issues,
    );
    for (i, e) in r
        .get("eligibility")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        known_codes(
            e,
            &format!("HealthcareService.eligibility[{i}]"),
            "code",
            &[ELIGIBILITY_SYSTEM],
            &mut issues,
        );
    }
    finish(Checked::default(), issues)
}

//! e-RS HealthcareService rules: a provider organisation; an active service's specialty, request
//! flows and priorities; and e-RS codes that e-RS knows (the code lists come from the
//! CodeSystems this server serves).

use crate::fhir::At;
use serde_json::Value;

use super::*;
use crate::fhir::terminology;

/// The e-RS service id: one service's, unique.
pub const SERVICE_SYSTEM: &str = "https://fhir.nhs.uk/Id/ers-service";
pub const REQUEST_FLOW_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-RequestFlowType";
pub const BOOKABLE_TYPE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-BookableType";
pub const PRIORITY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-Priority";
pub const SPECIALTY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-Specialty";
pub const APPOINTMENT_TYPE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-AppointmentType";
pub const CLINIC_TYPE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-ClinicType";
pub const ELIGIBILITY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-AgeGenderEligibility";

/// A commissioner whose referrals the service accepts (valueIdentifier, an ODS organisation
/// code; repeats). A service with none is open to referrals of every commissioner.
pub const COMMISSIONED_BY_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-CommissionedBy";
/// How the `commissioned-for` index marks a service open to every commissioner.
pub const OPEN_TO_ALL_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-Commissioning";
pub const OPEN_TO_ALL: &str = "ANY_COMMISSIONER";

/// The commissioners a service lists (`Extension-eRS-CommissionedBy`), as given.
pub fn commissioners(service: &Value) -> Vec<&str> {
    extensions_at(service, COMMISSIONED_BY_EXTENSION)
        .filter_map(|(_, e)| e.at("/valueIdentifier/value").and_then(Value::as_str))
        .collect()
}

/// Whether a referral whose commissioning rule organisation is `commissioner` may use a
/// service that lists `listed` (`commissioners`): it lists that commissioner, or none. The same
/// rule, indexed, is the `commissioned-for` search parameter (`extract_commissioned_for`,
/// `commissioned_for_any`).
pub fn admits<S: AsRef<str>>(listed: &[S], commissioner: &str) -> bool {
    listed.is_empty() || listed.iter().any(|l| l.as_ref() == commissioner)
}

/// Index values of `commissioned-for`: each listed commissioner, or the open-to-all marker.
pub fn extract_commissioned_for(service: &Value) -> Vec<Value> {
    let listed = commissioners(service);
    if listed.is_empty() {
        return vec![serde_json::json!({"system": OPEN_TO_ALL_SYSTEM, "code": OPEN_TO_ALL})];
    }
    listed
        .into_iter()
        .map(|c| serde_json::json!({"system": crate::domain::OdsCode::ORGANIZATION_SYSTEM, "code": c}))
        .collect()
}

/// A `commissioned-for` search value also finds the services open to every commissioner.
pub fn commissioned_for_any(
    m: &ers_schema::search::TokenMatch,
) -> Vec<ers_schema::search::TokenMatch> {
    let mut out = vec![m.clone()];
    if m.code.is_some() {
        out.push(ers_schema::search::TokenMatch {
            system: Some(OPEN_TO_ALL_SYSTEM.to_owned()),
            code: Some(OPEN_TO_ALL.to_owned()),
        });
    }
    out
}

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

/// The codes of one system among a service's characteristics (its request flows, bookable
/// type or priorities).
pub fn characteristic_codes(service: &Value, system: &str) -> Vec<String> {
    codes(service, "characteristic", system)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Whether a service's slots are booked through the API: a bookable request flow, not marked
/// indirectly bookable (the booking rule of `service::booking`).
pub fn is_directly_bookable(service: &Value) -> bool {
    codes(service, "characteristic", REQUEST_FLOW_SYSTEM).contains(&"BOOKABLE")
        && !codes(service, "characteristic", BOOKABLE_TYPE_SYSTEM).contains(&"INDIRECTLY_BOOKABLE")
}

/// `is_directly_bookable` of a stored service's JSON text, reading only its characteristics: a
/// page of search results is neither parsed whole nor kept.
pub fn is_directly_bookable_stored(content: &str) -> Result<bool, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Characteristics {
        #[serde(default)]
        characteristic: Value,
    }
    let only: Characteristics = serde_json::from_str(content)?;
    Ok(is_directly_bookable(
        &serde_json::json!({"characteristic": only.characteristic}),
    ))
}

/// Whether a service is in use (not `active: false`).
pub fn is_active(service: &Value) -> bool {
    service.get("active").and_then(Value::as_bool) != Some(false)
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
    let mut checked = Checked::default();
    unique_identifier(
        r,
        "HealthcareService",
        SERVICE_SYSTEM,
        |v| Ok(v.to_owned()),
        &mut checked,
        &mut issues,
    );
    if r.at("/providedBy/reference").is_none() {
        issues.push(Issue::required_at(
            "HealthcareService.providedBy",
            "is required: the provider organisation that owns the service",
        ));
    }
    // A service in use says what referrers find it by and what it takes; without these no
    // search finds it and no referral could be sent to it. A draft (`active: false`) may wait.
    if is_active(r) {
        let listed = |system| terminology::codes(system).join(", ");
        if r.at("/specialty/0/coding/0").is_none() {
            issues.push(Issue::required_at(
                "HealthcareService.specialty",
                format!("is required of an active service: its specialty from {SPECIALTY_SYSTEM} (CodeSystem/ers-specialty lists them)"),
            ));
        }
        for (system, what) in [
            (REQUEST_FLOW_SYSTEM, "what it takes"),
            (PRIORITY_SYSTEM, "the priorities it takes"),
        ] {
            if codes(r, "characteristic", system).is_empty() {
                issues.push(Issue::required_at(
                    "HealthcareService.characteristic",
                    format!(
                        "of an active service must say {what}: one or more of {} from {system}",
                        listed(system)
                    ),
                ));
            }
        }
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
    for (i, e) in extensions_at(r, COMMISSIONED_BY_EXTENSION) {
        ods_identifier(e, &format!("HealthcareService.extension[{i}]"), &mut issues);
    }
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
    finish(checked, issues)
}

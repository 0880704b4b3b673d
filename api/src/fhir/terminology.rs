//! The e-RS vocabulary as CodeSystems, written by the project as FHIR JSON
//! (`fhir-profiles/codesystems/`), built into the binary and served read-only. The resource
//! rules take their code lists from here, so the served reference data and the checks agree.

use std::sync::OnceLock;

use serde_json::Value;

const SOURCES: &[&str] = &[
    include_str!("../../../fhir-profiles/codesystems/ers-advice-and-guidance-status.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-age-gender-eligibility.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-appointment-cancellation-reason.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-appointment-non-attendance-reason.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-appointment-type.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-attachment-type.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-available-actions-for-user.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-bookable-type.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-business-function.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-clinic-type.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-communication-sent-by.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-error-codes.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-guidance-intended-recommendation.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-guidance-response-outcome.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-indicative-wait-time.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-priority.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-provider-conversion-authorisation.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-referral-cancellation-reason.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-referral-letter-intention.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-referral-state.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-request-flow-type.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-review-outcome.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-review-reason.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-service-request-category.json"),
    include_str!("../../../fhir-profiles/codesystems/ers-specialty.json"),
    include_str!("../../../fhir-profiles/codesystems/workflow-code.json"),
];

/// Every CodeSystem, parsed once (a file that does not parse is left out and logged).
pub fn code_systems() -> &'static [Value] {
    static ALL: OnceLock<Vec<Value>> = OnceLock::new();
    ALL.get_or_init(|| {
        SOURCES
            .iter()
            .filter_map(|s| match serde_json::from_str::<Value>(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    log::error!("a built-in CodeSystem does not parse: {e}");
                    None
                }
            })
            .collect()
    })
}

pub fn by_id(id: &str) -> Option<&'static Value> {
    code_systems()
        .iter()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
}

pub fn by_url(url: &str) -> Option<&'static Value> {
    code_systems()
        .iter()
        .find(|c| c.get("url").and_then(Value::as_str) == Some(url))
}

/// The codes of a CodeSystem given by its canonical URL.
pub fn codes(url: &str) -> Vec<&'static str> {
    by_url(url)
        .and_then(|c| c.get("concept"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("code").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// The e-RS clinic types linked to a specialty (the clinic-type CodeSystem's `specialty`
/// property).
pub fn clinic_types_of(specialty: &str) -> Vec<&'static str> {
    by_url(super::resources::healthcare_service::CLINIC_TYPE_SYSTEM)
        .and_then(|c| c.get("concept"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            c.get("property")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|p| {
                    p.get("code").and_then(Value::as_str) == Some("specialty")
                        && p.get("valueCode").and_then(Value::as_str) == Some(specialty)
                })
        })
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect()
}

/// One concept of a CodeSystem (by canonical URL).
pub fn concept(url: &str, code: &str) -> Option<&'static Value> {
    by_url(url)?
        .get("concept")?
        .as_array()?
        .iter()
        .find(|c| c.get("code").and_then(Value::as_str) == Some(code))
}

/// A property's value[x] on a concept.
pub fn property<'a>(concept: &'a Value, code: &str) -> Option<&'a Value> {
    concept
        .get("property")?
        .as_array()?
        .iter()
        .find(|p| p.get("code").and_then(Value::as_str) == Some(code))?
        .as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(_, v)| v)
}

/// Every value[x] of a repeated property on a concept.
pub fn properties<'a>(concept: &'a Value, code: &str) -> Vec<&'a Value> {
    concept
        .get("property")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("code").and_then(Value::as_str) == Some(code))
        .filter_map(|p| {
            p.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))
                .map(|(_, v)| v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_system_is_valid_fhir_and_has_codes() {
        assert_eq!(code_systems().len(), SOURCES.len());
        for cs in code_systems() {
            ers_fhir::canonicalise(cs.clone()).expect("valid R4 CodeSystem");
            let url = cs["url"].as_str().expect("url");
            assert!(!codes(url).is_empty(), "{url}");
            // A fragment (of an NHS code system) has only the codes used here: no count.
            let count = (cs["content"] == "complete").then_some(codes(url).len() as u64);
            assert_eq!(cs["count"].as_u64(), count, "{url}");
        }
        assert_eq!(
            codes("https://fhir.nhs.uk/CodeSystem/eRS-Priority"),
            ["ROUTINE", "URGENT", "TWO_WEEK_WAIT"]
        );
    }

    #[test]
    fn the_directory_projection_has_a_bit_for_every_priority() {
        // `directory_positions` keeps a service's priorities as bits; a priority it had no bit
        // for would never be found through the patient-centred search's fast path.
        let bits: Vec<i32> = codes("https://fhir.nhs.uk/CodeSystem/eRS-Priority")
            .iter()
            .map(|c| ers_schema::directory::priority_bit(c))
            .collect();
        assert!(bits.iter().all(|b| b.count_ones() == 1), "{bits:?}");
        assert_eq!(
            bits.iter().fold(0, |m, b| m | b).count_ones() as usize,
            bits.len()
        );
    }
}

//! e-RS rules on top of the R4 / UK Core validation (`ers_fhir::validate`): identifier formats
//! through the domain newtypes, and the business identifiers that must be unique. Each returns
//! every problem it finds, each with its location. Codes, dates, cardinality and invariants are
//! the validator's.

pub mod advice;
pub mod announcement;
pub mod appointment;
pub mod document_reference;
pub mod healthcare_service;
pub mod location;
pub mod organization;
pub mod patient;
pub mod practitioner;
pub mod practitioner_role;
pub mod requirements;
pub mod schedule;
pub mod service_request;
pub mod slot;
pub mod subscription;

use serde_json::Value;

use super::outcome::Issue;
use super::registry::Checked;
use crate::domain::identifiers::InvalidIdentifier;

/// Checks the identifiers of one system with `parse`; valid values become unique keys (at most
/// one per system is the profile's rule, checked by the validator).
fn unique_identifier(
    resource: &Value,
    res_type: &str,
    system: &str,
    parse: impl Fn(&str) -> Result<String, InvalidIdentifier>,
    checked: &mut Checked,
    issues: &mut Vec<Issue>,
) {
    if let Some(ids) = resource.get("identifier").and_then(Value::as_array) {
        for (i, id) in ids.iter().enumerate() {
            if id.get("system").and_then(Value::as_str) != Some(system) {
                continue;
            }
            if let Some(v) = id.get("value").and_then(Value::as_str) {
                match parse(v) {
                    Ok(normal) => checked.unique.push((system.to_owned(), normal)),
                    Err(e) => issues.push(Issue::invalid_at(
                        format!("{res_type}.identifier[{i}].value"),
                        e.0,
                    )),
                }
            }
        }
    }
}

/// The extensions of a resource with one URL, each with its index among its extensions.
pub fn extensions_at<'a>(r: &'a Value, url: &'a str) -> impl Iterator<Item = (usize, &'a Value)> {
    r.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter(move |(_, e)| e.get("url").and_then(Value::as_str) == Some(url))
}

/// An extension's `valueIdentifier` names an organisation by its ODS code (a commissioner).
fn ods_identifier(ext: &Value, at: &str, issues: &mut Vec<Issue>) {
    use crate::domain::OdsCode;
    let Some(id) = ext.get("valueIdentifier") else {
        return; // The validator names a missing or mistyped value.
    };
    match id.get("system").and_then(Value::as_str) {
        Some(OdsCode::ORGANIZATION_SYSTEM) => {}
        other => issues.push(Issue::invalid_at(
            format!("{at}.valueIdentifier.system"),
            format!(
                "({}) must be {}: the commissioner is named by its ODS code",
                other.unwrap_or("missing"),
                OdsCode::ORGANIZATION_SYSTEM
            ),
        )),
    }
    if let Err(e) = OdsCode::parse(id.get("value").and_then(Value::as_str).unwrap_or_default()) {
        issues.push(Issue::invalid_at(
            format!("{at}.valueIdentifier.value"),
            e.0,
        ));
    }
}

/// The hosted types of which a business identifier system names one resource (each holds its
/// identifiers of the system as unique keys, as the checks above make them), and the value as
/// it is kept. A logical reference by such an identifier is resolved on write
/// (`service::resource::resolve_logical_references`). An ODS site code may be a Location's or an
/// Organization's.
pub fn identified_by(system: &str, value: &str) -> Option<(&'static [&'static str], String)> {
    use crate::domain::{NhsNumber, OdsCode, SdsUserId};
    let ods = |v: &str| OdsCode::parse(v).map(|c| c.as_str().to_owned());
    let (types, kept): (&'static [&'static str], Result<String, InvalidIdentifier>) = match system {
        NhsNumber::SYSTEM => (
            &["Patient"],
            NhsNumber::parse(value).map(|n| n.as_str().to_owned()),
        ),
        OdsCode::ORGANIZATION_SYSTEM => (&["Organization"], ods(value)),
        OdsCode::SITE_SYSTEM => (&["Location", "Organization"], ods(value)),
        SdsUserId::SYSTEM => (
            &["Practitioner"],
            SdsUserId::parse(value).map(|s| s.as_str().to_owned()),
        ),
        practitioner_role::ROLE_SYSTEM => (&["PractitionerRole"], Ok(value.to_owned())),
        healthcare_service::SERVICE_SYSTEM => (&["HealthcareService"], Ok(value.to_owned())),
        _ => return None,
    };
    kept.ok().map(|v| (types, v))
}

/// `system|value` of the identifier of a Reference that has no `reference`: a logical reference
/// the write could not resolve (`identified_by`).
pub fn logical_only(reference: &Value) -> Option<String> {
    if reference.get("reference").is_some() {
        return None;
    }
    let identifier = reference.get("identifier")?;
    Some(format!(
        "{}|{}",
        identifier
            .get("system")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        identifier
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default()
    ))
}

/// Every coding of the CodeableConcept (or list of them) at `field` of a resource.
pub fn codings<'a>(r: &'a Value, field: &str) -> Vec<&'a Value> {
    let concepts: Vec<&Value> = match r.get(field) {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    };
    concepts
        .into_iter()
        .filter_map(|cc| cc.get("coding").and_then(Value::as_array))
        .flatten()
        .collect()
}

/// The codes of `system` among the codings at `field`, in order.
pub fn codes<'a>(r: &'a Value, field: &str, system: &str) -> Vec<&'a str> {
    codings(r, field)
        .into_iter()
        .filter(|c| c.get("system").and_then(Value::as_str) == Some(system))
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect()
}

/// The value of the resource's identifier of `system`.
pub fn identifier<'a>(r: &'a Value, system: &str) -> Option<&'a str> {
    r.get("identifier")?
        .as_array()?
        .iter()
        .find(|i| i.get("system").and_then(Value::as_str) == Some(system))?
        .get("value")?
        .as_str()
}

/// The profile the server validates a write against and claims in `meta.profile`: the type's
/// e-RS profile (for a ServiceRequest, the advice and guidance one when its category says so),
/// else its UK Core profile; None for a type with only its base R4 definition.
pub fn server_profile(
    res_type: &str,
    body: &Value,
) -> Option<&'static ers_fhir::validate::Profile> {
    if res_type == "ServiceRequest" && advice::is_advice(body) {
        return ers_fhir::validate::profile(advice::PROFILE);
    }
    ers_fhir::validate::default_profile(res_type)
}

/// For types with no rules beyond the profile.
pub fn no_rules(_: &Value) -> Result<Checked, Vec<Issue>> {
    Ok(Checked::default())
}

fn finish(checked: Checked, issues: Vec<Issue>) -> Result<Checked, Vec<Issue>> {
    if issues.is_empty() {
        Ok(checked)
    } else {
        Err(issues)
    }
}

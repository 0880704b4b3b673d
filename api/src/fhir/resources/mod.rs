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

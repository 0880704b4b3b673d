//! Resource-specific rules on top of the R4 structure check: identifier formats (through the
//! domain newtypes), codes the search relies on, and the business identifiers that must be
//! unique. Each returns every problem it finds, each with its location.

pub mod location;
pub mod organization;
pub mod patient;
pub mod practitioner;
pub mod practitioner_role;

use serde_json::Value;

use super::datetime;
use super::outcome::Issue;
use super::registry::Checked;
use crate::domain::identifiers::InvalidIdentifier;

/// Checks the identifiers of one system with `parse`; at most one per resource when `single`.
/// Valid values become unique keys.
fn unique_identifier(
    resource: &Value,
    res_type: &str,
    system: &str,
    single: bool,
    parse: impl Fn(&str) -> Result<String, InvalidIdentifier>,
    checked: &mut Checked,
    issues: &mut Vec<Issue>,
) {
    let mut seen = 0;
    if let Some(ids) = resource.get("identifier").and_then(Value::as_array) {
        for (i, id) in ids.iter().enumerate() {
            if id.get("system").and_then(Value::as_str) != Some(system) {
                continue;
            }
            seen += 1;
            let at = format!("{res_type}.identifier[{i}].value");
            match id.get("value").and_then(Value::as_str) {
                None => issues.push(Issue::required_at(
                    at,
                    format!("is required for an identifier with system {system}"),
                )),
                Some(v) => match parse(v) {
                    Ok(normal) => checked.unique.push((system.to_owned(), normal)),
                    Err(e) => issues.push(Issue::invalid_at(at, e.0)),
                },
            }
            if single && seen > 1 {
                issues.push(Issue::invalid_at(
                    format!("{res_type}.identifier[{i}]"),
                    format!("repeats system {system}: at most one such identifier is allowed"),
                ));
            }
        }
    }
}

/// A code element must hold one of `allowed`.
fn code_in(
    resource: &Value,
    res_type: &str,
    element: &str,
    allowed: &[&str],
    issues: &mut Vec<Issue>,
) {
    if let Some(v) = resource.get(element) {
        let ok = v.as_str().is_some_and(|s| allowed.contains(&s));
        if !ok {
            issues.push(Issue::invalid_at(
                format!("{res_type}.{element}"),
                format!(
                    "({}) is not a valid code; expected one of: {}",
                    v,
                    allowed.join(", ")
                ),
            ));
        }
    }
}

/// ContactPoint codes and values.
fn telecoms(resource: &Value, res_type: &str, issues: &mut Vec<Issue>) {
    const SYSTEMS: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];
    const USES: &[&str] = &["home", "work", "temp", "old", "mobile"];
    if let Some(items) = resource.get("telecom").and_then(Value::as_array) {
        for (i, t) in items.iter().enumerate() {
            let at = format!("{res_type}.telecom[{i}]");
            code_in(t, &at, "system", SYSTEMS, issues);
            code_in(t, &at, "use", USES, issues);
            if t.get("value").is_some() && t.get("system").is_none() {
                issues.push(Issue::required_at(
                    format!("{at}.system"),
                    "is required when a value is given (cpt-2)",
                ));
            }
        }
    }
}

/// Date-typed element checks.
fn date_element(resource: &Value, res_type: &str, element: &str, issues: &mut Vec<Issue>) {
    if let Some(v) = resource.get(element) {
        if !v.as_str().is_some_and(datetime::is_date) {
            issues.push(Issue::invalid_at(
                format!("{res_type}.{element}"),
                format!("({v}) is not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"),
            ));
        }
    }
}

/// Period start/end checks.
fn period(v: &Value, at: &str, issues: &mut Vec<Issue>) {
    let mut bounds = Vec::new();
    for key in ["start", "end"] {
        if let Some(x) = v.get(key) {
            match x
                .as_str()
                .filter(|s| datetime::is_datetime(s))
                .and_then(datetime::range)
            {
                Some(r) => bounds.push(r),
                None => issues.push(Issue::invalid_at(
                    format!("{at}.{key}"),
                    format!("({x}) is not a valid FHIR dateTime"),
                )),
            }
        }
    }
    if let [start, end] = bounds.as_slice() {
        if start.0 > end.1 {
            issues.push(Issue::invalid_at(
                at.to_owned(),
                "starts after it ends (per-1)",
            ));
        }
    }
}

/// For server-written types that have no client rules.
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

//! Operation inputs: a FHIR `Parameters` body read as (name, value) pairs, each value[x] in its
//! string form, so operations check their inputs the same way whether they came as a body or
//! as query parameters.

use crate::fhir::At;
use serde_json::Value;

use super::outcome::Issue;

/// A boolean input: `true` or `false`, nothing else (`at` names it).
pub fn boolean(at: &str, v: &str) -> Result<bool, Issue> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Issue::invalid_at(
            at,
            format!("({v}) must be true or false"),
        )),
    }
}

/// A `Parameters` body as (name, value) pairs; each value[x] read as its string form.
pub fn pairs(body: &Value, operation: &str) -> Result<Vec<(String, String)>, Vec<Issue>> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(vec![Issue::invalid_at(
            "resourceType",
            format!("must be Parameters for {operation}"),
        )]);
    }
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for (i, p) in body
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            issues.push(Issue::required_at(
                format!("Parameters.parameter[{i}].name"),
                "is required",
            ));
            continue;
        };
        let value = p.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| k.starts_with("value"))
                .map(|(k, v)| (k.as_str(), v))
        });
        let text = match value {
            Some((_, Value::String(s))) => Some(s.clone()),
            Some((_, Value::Bool(b))) => Some(b.to_string()),
            Some((_, Value::Number(n))) => Some(n.to_string()),
            Some(("valueCoding", v)) => v.get("code").and_then(Value::as_str).map(str::to_owned),
            Some(("valueCodeableConcept", v)) => v
                .at("/coding/0/code")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Some(("valueIdentifier", v)) => v.get("value").and_then(Value::as_str).map(|value| {
                match v.get("system").and_then(Value::as_str) {
                    Some(s) => format!("{s}|{value}"),
                    None => value.to_owned(),
                }
            }),
            Some(("valueReference", v)) => v
                .get("reference")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Some(("valueQuantity", v)) => v.get("value").map(|n| n.to_string()),
            _ => None,
        };
        match text {
            Some(t) => out.push((name.to_owned(), t)),
            None => issues.push(Issue::invalid_at(
                format!("Parameters.parameter[{i}]"),
                format!("('{name}') has no value this operation can read (use valueString, valueCode, valueCoding, valueBoolean, valueInteger, valueDecimal, valueIdentifier or valueReference)"),
            )),
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

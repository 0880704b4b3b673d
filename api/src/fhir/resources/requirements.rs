//! The patient's additional requirements for an appointment — interpreter and language,
//! accessibility, transport, a carer, communication needs — as one complex extension, kept on
//! the referral and copied onto its appointments (the real e-RS API has no way to send or
//! change them).

use serde_json::{json, Value};

use crate::fhir::outcome::Issue;

pub const EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AdditionalRequirements";
/// BCP-47 language tags (the interpreter's language).
pub const LANGUAGE_SYSTEM: &str = "urn:ietf:bcp:47";

/// The parts: (name, value[x] type, what it records).
pub const PARTS: &[(&str, &str, &str)] = &[
    (
        "interpreterLanguage",
        "valueCode",
        "an interpreter is needed, in this language (BCP-47, e.g. pl, bn, bfi for British Sign Language)",
    ),
    ("accessibility", "valueString", "access needs (e.g. wheelchair access)"),
    ("transport", "valueString", "transport needs (e.g. patient transport service)"),
    ("carer", "valueString", "a carer or companion attends"),
    ("communication", "valueString", "communication needs (e.g. large print, hearing loop)"),
];

/// The requirements extension of a resource, if any.
pub fn of(r: &Value) -> Option<&Value> {
    r.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(EXTENSION))
}

/// Replaces (or, with None, removes) the requirements extension.
pub fn set(r: &mut Value, ext: Option<Value>) {
    let Some(o) = r.as_object_mut() else { return };
    let mut exts: Vec<Value> = o
        .get("extension")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    exts.retain(|e| e.get("url").and_then(Value::as_str) != Some(EXTENSION));
    exts.extend(ext);
    if exts.is_empty() {
        o.shift_remove("extension");
    } else {
        o.insert("extension".into(), Value::Array(exts));
    }
}

/// The extension from `(name, value)` inputs; None when there are none (no requirements).
pub fn build(inputs: &[(String, String)]) -> Result<Option<Value>, Vec<Issue>> {
    let mut parts = Vec::new();
    let mut issues = Vec::new();
    for (name, value) in inputs {
        let Some((_, kind, _)) = PARTS.iter().find(|(n, _, _)| n == name) else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if *kind == "valueCode" && !is_language_tag(value) {
            issues.push(
                Issue::error(
                    "code-invalid",
                    "INVALID_CODE",
                    format!(
                        "'{name}' ({value}) is not a BCP-47 language tag (e.g. pl, pt-BR, bfi)"
                    ),
                )
                .with_expression(format!("Parameters.parameter[{name}]")),
            );
        }
        parts.push(json!({"url": name, *kind: value}));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok((!parts.is_empty()).then(|| json!({"url": EXTENSION, "extension": parts})))
}

/// Checks the requirements extension of a resource: known parts, each once, of the right
/// type, non-empty.
pub fn check(r: &Value, res_type: &str, issues: &mut Vec<Issue>) {
    let Some(ext) = of(r) else { return };
    let at = format!("{res_type}.extension[additionalRequirements]");
    let mut seen = Vec::new();
    for sub in ext
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let url = sub.get("url").and_then(Value::as_str).unwrap_or_default();
        let Some((_, kind, _)) = PARTS.iter().find(|(n, _, _)| *n == url) else {
            issues.push(Issue::invalid_at(
                at.clone(),
                format!(
                    "has an unknown part '{url}'; the parts are: {}",
                    PARTS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ),
            ));
            continue;
        };
        if seen.contains(&url) {
            issues.push(Issue::invalid_at(
                at.clone(),
                format!("gives '{url}' twice"),
            ));
        }
        seen.push(url);
        match sub.get(*kind).and_then(Value::as_str) {
            Some(v) if !v.trim().is_empty() => {
                if *kind == "valueCode" && !is_language_tag(v) {
                    issues.push(Issue::invalid_at(
                        at.clone(),
                        format!("'{url}' ({v}) is not a BCP-47 language tag"),
                    ));
                }
            }
            _ => issues.push(Issue::invalid_at(
                at.clone(),
                format!("'{url}' needs a non-empty {kind}"),
            )),
        }
    }
}

/// A BCP-47 tag's shape: a 2-3 letter language, then subtags of 1-8 letters or digits.
fn is_language_tag(v: &str) -> bool {
    let mut parts = v.split('-');
    let lang_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()));
    lang_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags() {
        for ok in ["pl", "pt-BR", "bfi", "zh-Hant-HK"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "p", "polish", "pl_PL", "pl--x"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }
}

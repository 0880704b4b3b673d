//! Operation inputs: a FHIR `Parameters` body (and an operation's query string) read against
//! the operation's declared parameters (`OpParam`, the same list its OperationDefinition is
//! made from): only declared names, each no more often than it is declared, each value[x] of
//! a type the parameter takes. The values come back as (name, value) pairs in their string
//! form, so an operation checks its inputs the same way whether they came as a body or as
//! query parameters.

use crate::domain::referral::OpParam;
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

/// Query parameters every interaction takes besides an operation's own (the response format).
const GENERAL: &[&str] = &["_format", "_pretty"];

/// The `value[x]` element names a parameter of FHIR type `kind` is read from: the type itself
/// and the types derived from it (a `code` or `id` is a string), and, as clients send them, a
/// code as a plain string or the code of a Coding, an integer's narrower kinds.
fn accepted(kind: &str) -> &'static [&'static str] {
    match kind {
        "string" => &["valueString", "valueCode", "valueId", "valueMarkdown"],
        "code" => &["valueCode", "valueString", "valueCoding"],
        "integer" => &["valueInteger", "valueUnsignedInt", "valuePositiveInt"],
        "boolean" => &["valueBoolean"],
        "instant" => &["valueInstant"],
        "Reference" => &["valueReference"],
        "Identifier" => &["valueIdentifier"],
        _ => &[],
    }
}

/// The element names a declared parameter accepts, its declared types' first.
fn accepted_by(p: &OpParam) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for kind in p.kind.split('|') {
        for e in accepted(kind) {
            if !out.contains(e) {
                out.push(e);
            }
        }
    }
    out
}

/// The string form of a value[x] (None: a value this reader cannot hold as text).
fn text_of(key: &str, v: &Value) -> Option<String> {
    match (key, v) {
        (_, Value::String(s)) => Some(s.clone()),
        (_, Value::Bool(b)) => Some(b.to_string()),
        (_, Value::Number(n)) => Some(n.to_string()),
        ("valueCoding", v) => v.get("code").and_then(Value::as_str).map(str::to_owned),
        ("valueIdentifier", v) => v.get("value").and_then(Value::as_str).map(|value| {
            match v.get("system").and_then(Value::as_str) {
                Some(s) => format!("{s}|{value}"),
                None => value.to_owned(),
            }
        }),
        ("valueReference", v) => v
            .get("reference")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

fn names(declared: &[OpParam]) -> String {
    if declared.is_empty() {
        "none".into()
    } else {
        declared
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn undeclared(at: String, operation: &str, declared: &[OpParam]) -> Issue {
    Issue::error(
        "structure",
        "UNEXPECTED_FIELD",
        format!(
            "'{at}' is not a parameter of {operation}; it takes: {}",
            names(declared)
        ),
    )
    .with_expression(at)
}

/// Each declared parameter given no more often than it takes (`at` names where).
fn counted<'a>(
    given: impl Iterator<Item = &'a str>,
    declared: &[OpParam],
    at: impl Fn(&str) -> String,
) -> Vec<Issue> {
    let given: Vec<&str> = given.collect();
    declared
        .iter()
        .filter_map(|p| {
            let n = given.iter().filter(|g| **g == p.name).count();
            let most = p.most()?;
            (n > most).then(|| {
                Issue::error(
                    "structure",
                    "TOO_MANY_ITEMS",
                    format!(
                        "'{}' is given {n} times; it takes {}",
                        at(p.name),
                        if most == 1 {
                            "one value".to_owned()
                        } else {
                            format!("at most {most}")
                        }
                    ),
                )
                .with_expression(at(p.name))
            })
        })
        .collect()
}

/// A `Parameters` body read against the operation's declared parameters, as (name, value)
/// pairs; every problem is reported at once.
pub fn read(
    body: &Value,
    operation: &str,
    declared: &[OpParam],
) -> Result<Vec<(String, String)>, Vec<Issue>> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(vec![Issue::invalid_at(
            "resourceType",
            format!("must be Parameters for {operation}"),
        )]);
    }
    let mut out = Vec::new();
    let mut issues = Vec::new();
    let mut given: Vec<&str> = Vec::new();
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
        given.push(name);
        let here = format!("Parameters.parameter[{name}]");
        let Some(decl) = declared.iter().find(|d| d.name == name) else {
            issues.push(undeclared(here, operation, declared));
            continue;
        };
        let takes = accepted_by(decl);
        // One value[x] at most: the body's parsing refused two.
        let Some((key, value)) = p
            .as_object()
            .into_iter()
            .flatten()
            .find(|(k, _)| k.starts_with("value"))
            .map(|(k, v)| (k.as_str(), v))
        else {
            let what = if p.get("resource").is_some() || p.get("part").is_some() {
                "has a resource or parts where a value is expected"
            } else {
                "has no value"
            };
            issues.push(Issue::required_at(
                here,
                format!("{what}: give it as {}", takes.join(" or ")),
            ));
            continue;
        };
        if !takes.contains(&key) {
            issues.push(
                Issue::error(
                    "value",
                    "INVALID_VALUE",
                    format!(
                        "'{here}' is {} {}: give it as {}, not {key}",
                        if decl.kind.starts_with(['a', 'e', 'i', 'o', 'u', 'I']) {
                            "an"
                        } else {
                            "a"
                        },
                        decl.kind.split('|').next().unwrap_or(decl.kind),
                        takes.join(" or "),
                    ),
                )
                .with_expression(format!("{here}.{key}")),
            );
            continue;
        }
        match text_of(key, value) {
            Some(t) => out.push((name.to_owned(), t)),
            None => issues.push(Issue::invalid_at(
                format!("{here}.{key}"),
                format!(
                    "has no {} to read",
                    match key {
                        "valueCoding" => "code",
                        "valueIdentifier" => "value",
                        "valueReference" => "reference",
                        _ => "value",
                    }
                ),
            )),
        }
    }
    issues.extend(counted(given.into_iter(), declared, |n| {
        format!("Parameters.parameter[{n}]")
    }));
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// An operation's query parameters checked against its declared parameters: only declared
/// names (and the general `_format`), each no more often than it takes.
pub fn query(
    pairs: &[(String, String)],
    operation: &str,
    declared: &[OpParam],
) -> Result<(), Vec<Issue>> {
    let mut issues: Vec<Issue> = pairs
        .iter()
        .filter(|(k, _)| !GENERAL.contains(&k.as_str()) && !declared.iter().any(|d| d.name == k))
        .map(|(k, _)| undeclared(k.clone(), operation, declared))
        .collect();
    issues.extend(counted(
        pairs.iter().map(|(k, _)| k.as_str()),
        declared,
        str::to_owned,
    ));
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

/// The OperationDefinition `parameter` of a declared input: its first type as `type`, any
/// further ones in the R5 `allowedType` extension (R4 has one type a parameter).
pub fn definition(p: &OpParam) -> Value {
    let mut kinds = p.kind.split('|');
    let mut out = serde_json::json!({
        "name": p.name, "use": "in", "min": p.min, "max": p.max,
        "documentation": p.doc, "type": kinds.next().unwrap_or(p.kind),
    });
    let more: Vec<Value> = kinds
        .map(|k| serde_json::json!({"url": ALLOWED_TYPE, "valueUri": k}))
        .collect();
    if !more.is_empty() {
        out["extension"] = Value::Array(more);
    }
    out
}

/// The R5 `OperationDefinition.parameter.allowedType` element, as an R4 extension.
pub const ALLOWED_TYPE: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-OperationDefinition.parameter.allowedType";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DECLARED: &[OpParam] = &[
        OpParam::new("text", 1, "1", "string", "t"),
        OpParam::new("reason", 0, "1", "code", "r"),
        OpParam::new("slot", 0, "1", "Reference|string", "s"),
        OpParam::new("n", 0, "*", "integer", "n"),
    ];

    fn body(params: Value) -> Value {
        json!({"resourceType": "Parameters", "parameter": params})
    }

    #[test]
    fn reads_each_declared_type_and_its_kin() {
        let got = read(
            &body(json!([
                {"name": "text", "valueString": "hello"},
                {"name": "reason", "valueCoding": {"code": "PATIENT_ILL"}},
                {"name": "slot", "valueReference": {"reference": "Slot/1"}},
                {"name": "n", "valueInteger": 5},
                {"name": "n", "valuePositiveInt": 6},
            ])),
            "$x",
            DECLARED,
        )
        .expect("reads");
        assert_eq!(
            got,
            [
                ("text", "hello"),
                ("reason", "PATIENT_ILL"),
                ("slot", "Slot/1"),
                ("n", "5"),
                ("n", "6")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn refuses_the_wrong_type_unknown_names_and_too_many() {
        let issues = read(
            &body(json!([
                {"name": "text", "valueInteger": 5},
                {"name": "colour", "valueString": "red"},
                {"name": "reason", "valueCode": "A"},
                {"name": "reason", "valueCode": "B"},
                {"name": "slot"},
            ])),
            "$x",
            DECLARED,
        )
        .expect_err("refused");
        let said: Vec<(String, String)> = issues
            .iter()
            .map(|i| {
                (
                    i.expression.clone().unwrap_or_default(),
                    i.diagnostics.clone(),
                )
            })
            .collect();
        assert_eq!(said.len(), 4, "{said:?}");
        assert_eq!(said[0].0, "Parameters.parameter[text].valueInteger");
        assert!(
            said[0]
                .1
                .contains("[text]' is a string: give it as valueString"),
            "{said:?}"
        );
        assert_eq!(said[1].0, "Parameters.parameter[colour]");
        assert!(said[1].1.contains("it takes: text, reason, slot, n"));
        assert_eq!(said[2].0, "Parameters.parameter[slot]");
        assert!(said[2].1.contains("valueReference or valueString"));
        assert_eq!(said[3].0, "Parameters.parameter[reason]");
        assert!(said[3].1.contains("given 2 times"));
    }

    #[test]
    fn a_query_takes_declared_names_and_the_format() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        assert!(query(
            &pairs(&[("text", "a"), ("_format", "json")]),
            "$x",
            DECLARED
        )
        .is_ok());
        assert_eq!(
            query(
                &pairs(&[("text", "a"), ("text", "b"), ("x", "1")]),
                "$x",
                DECLARED
            )
            .expect_err("refused")
            .len(),
            2
        );
    }

    #[test]
    fn a_definition_names_every_type() {
        let d = definition(&DECLARED[2]);
        assert_eq!(d["type"], "Reference");
        assert_eq!(d["extension"][0]["valueUri"], "string");
        assert!(definition(&DECLARED[0]).get("extension").is_none());
    }
}

//! Turns a resource into search-index entries, following the registry's element paths.

use ers_schema::{DateEntry, GeoEntry, IndexEntries, RefEntry, StringEntry, TokenEntry, UniqueKey};
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::datetime;
use super::registry::{Checked, ParamKind, ResourceDef};

/// The longest indexed value, in bytes: a PostgreSQL B-tree entry must stay under about 2.7 kB,
/// and a longer value could not be stored at all. Longer values are indexed by their first
/// bytes, and searches compare the same prefix (so a search for a longer value can match one
/// that differs only after it).
pub const MAX_INDEXED_BYTES: usize = 1000;

/// A value cut to `MAX_INDEXED_BYTES` at a character boundary.
pub fn cap(s: &str) -> &str {
    if s.len() <= MAX_INDEXED_BYTES {
        return s;
    }
    let mut end = MAX_INDEXED_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Case-, accent- and space-insensitive form of a string, for string search.
pub fn normalise(s: &str) -> String {
    let folded: String = s
        .nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// All values found at a dot-separated path (arrays are flattened at every step).
pub fn values_at<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in path.split('.') {
        let mut next = Vec::new();
        for v in current {
            match v.get(step) {
                Some(Value::Array(items)) => next.extend(items.iter()),
                Some(other) => next.push(other),
                None => {}
            }
        }
        current = next;
    }
    current
}

fn tokens_of(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((String::new(), s.clone())),
        Value::Bool(b) => out.push((String::new(), b.to_string())),
        Value::Object(o) => {
            let system = o
                .get("system")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(codings) = o.get("coding").and_then(Value::as_array) {
                for c in codings {
                    tokens_of(c, out);
                }
            } else if let Some(code) = o.get("code").and_then(Value::as_str) {
                out.push((system, code.to_owned()));
            } else if let Some(value) = o.get("value").and_then(Value::as_str) {
                out.push((system, value.to_owned()));
            }
        }
        _ => {}
    }
}

fn strings_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings_of(i, out)),
        Value::Object(o) => {
            // HumanName and Address parts.
            for key in [
                "text",
                "family",
                "given",
                "prefix",
                "suffix",
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
            ] {
                if let Some(part) = o.get(key) {
                    strings_of(part, out);
                }
            }
        }
        _ => {}
    }
}

fn dates_of(v: &Value) -> Option<(chrono::NaiveDateTime, chrono::NaiveDateTime)> {
    match v {
        Value::String(s) => datetime::range(s),
        Value::Object(o) => {
            let start = o
                .get("start")
                .and_then(Value::as_str)
                .and_then(datetime::range);
            let end = o
                .get("end")
                .and_then(Value::as_str)
                .and_then(datetime::range);
            let low = start.map(|s| s.0).unwrap_or(chrono::NaiveDateTime::MIN);
            let high = end.map(|e| e.1).unwrap_or(chrono::NaiveDateTime::MAX);
            (start.is_some() || end.is_some()).then_some((low, high))
        }
        _ => None,
    }
}

/// A relative literal reference `Type/id` (optionally `/_history/n`) split in two.
pub fn split_reference(reference: &str) -> Option<(&str, &str)> {
    let mut parts = reference.split('/');
    let (t, id) = (parts.next()?, parts.next()?);
    let valid_type = t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphanumeric());
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) | (Some("_history"), Some(_), None)
            if valid_type && super::is_valid_id(id) =>
        {
            Some((t, id))
        }
        _ => None,
    }
}

/// The index entries of a resource, with the unique identifiers its check found. A change to
/// what this makes from a stored resource (or to an `extract` function, or to a check's unique
/// identifiers) raises `service::reindex::REVISION`, so that start-up rebuilds the rows stored
/// before; a change to a parameter's definition is seen without it.
pub fn entries(def: &ResourceDef, resource: &Value, checked: &Checked) -> IndexEntries {
    let mut out = IndexEntries::default();
    for p in def.all_params() {
        let extracted: Vec<Value> = p.extract.map(|f| f(resource)).unwrap_or_default();
        let found: Vec<&Value> = p
            .paths
            .iter()
            .flat_map(|path| values_at(resource, path))
            .chain(extracted.iter())
            .collect();
        {
            for v in found {
                match p.kind {
                    ParamKind::Token => {
                        let mut found = Vec::new();
                        tokens_of(v, &mut found);
                        out.tokens
                            .extend(found.into_iter().map(|(system, code)| TokenEntry {
                                param: p.name.to_owned(),
                                system: cap(&system).to_owned(),
                                code: cap(&code).to_owned(),
                            }));
                    }
                    ParamKind::Uri => {
                        let Some(url) = v.as_str() else { continue };
                        // `url|version` is found by its URL too.
                        let unversioned = url.split_once('|').map(|(u, _)| u);
                        for code in std::iter::once(url).chain(unversioned) {
                            out.tokens.push(TokenEntry {
                                param: p.name.to_owned(),
                                system: String::new(),
                                code: cap(code).to_owned(),
                            });
                        }
                    }
                    ParamKind::String => {
                        let mut found = Vec::new();
                        strings_of(v, &mut found);
                        out.strings
                            .extend(found.into_iter().filter(|s| !s.trim().is_empty()).map(|s| {
                                StringEntry {
                                    param: p.name.to_owned(),
                                    norm: cap(&normalise(&s)).to_owned(),
                                    exact: cap(&s).to_owned(),
                                }
                            }));
                    }
                    ParamKind::Date => {
                        if let Some((low, high)) = dates_of(v) {
                            out.dates.push(DateEntry {
                                param: p.name.to_owned(),
                                low,
                                high,
                            });
                        }
                    }
                    ParamKind::Position if p.targets.is_empty() => {
                        if let (Some(latitude), Some(longitude)) = (
                            v.get("latitude").and_then(Value::as_f64),
                            v.get("longitude").and_then(Value::as_f64),
                        ) {
                            out.geo.push(GeoEntry {
                                param: p.name.to_owned(),
                                latitude,
                                longitude,
                            });
                        }
                    }
                    ParamKind::Position | ParamKind::Availability => {}
                    ParamKind::Reference => {
                        if let Some((t, id)) = v
                            .get("reference")
                            .and_then(Value::as_str)
                            .and_then(split_reference)
                        {
                            out.refs.push(RefEntry {
                                param: p.name.to_owned(),
                                target_type: t.to_owned(),
                                target_id: id.to_owned(),
                            });
                        }
                        // The identifier it carries (`:identifier` searches it too).
                        if let Some(identifier) = v.get("identifier") {
                            let mut found = Vec::new();
                            tokens_of(identifier, &mut found);
                            out.tokens
                                .extend(found.into_iter().map(|(system, code)| TokenEntry {
                                    param: identifier_param(p.name),
                                    system: cap(&system).to_owned(),
                                    code: cap(&code).to_owned(),
                                }));
                        }
                    }
                }
            }
        }
    }
    out.unique = checked
        .unique
        .iter()
        .map(|(system, value)| UniqueKey {
            system: system.clone(),
            value: value.clone(),
        })
        .collect();
    out.dedup();
    out
}

/// The token parameter under which a reference parameter's `Reference.identifier` values are
/// indexed (`param:identifier` searches it, beside what the reference points to).
pub fn identifier_param(param: &str) -> String {
    format!("{param}:identifier")
}

/// Makes every literal reference to a resource on this server (`{base}/Type/id`, FHIR's
/// absolute form of a local reference) relative (`Type/id`), as it is stored and checked;
/// references elsewhere are left as they are. Contained resources and a Bundle's entries are
/// included: every `reference` element anywhere in the body.
pub fn localise_references(body: &mut Value, base: &str) {
    match body {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference" {
                    let local = child
                        .as_str()
                        .and_then(|r| r.strip_prefix(base)?.strip_prefix('/'))
                        .filter(|rest| split_reference(rest).is_some())
                        .map(str::to_owned);
                    if let Some(local) = local {
                        *child = Value::String(local);
                    }
                } else {
                    localise_references(child, base);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| localise_references(i, base)),
        _ => {}
    }
}

/// Every literal reference in a resource, with its FHIRPath-like location.
pub fn all_references(resource: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    if k == "contained" {
                        continue;
                    }
                    if k == "reference" {
                        if let Some(r) = child.as_str() {
                            out.push((format!("{path}.reference"), r.to_owned()));
                        }
                        continue;
                    }
                    walk(child, &format!("{path}.{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let root = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource");
    let mut out = Vec::new();
    walk(resource, root, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalises_case_accents_and_space() {
        assert_eq!(normalise("  Zoë   O'BRIEN "), "zoe o'brien");
    }

    #[test]
    fn references_split() {
        assert_eq!(split_reference("Patient/abc"), Some(("Patient", "abc")));
        assert_eq!(
            split_reference("Patient/abc/_history/2"),
            Some(("Patient", "abc"))
        );
        assert_eq!(split_reference("http://x/Patient/abc"), None);
        assert_eq!(split_reference("#c1"), None);
    }

    #[test]
    fn references_to_this_server_become_relative() {
        let base = "https://ers.example/FHIR/R4";
        let mut r = json!({"resourceType": "Bundle", "entry": [{"fullUrl": "https://ers.example/FHIR/R4/Patient/p", "resource": {
        "resourceType": "Appointment",
        "slot": [{"reference": "https://ers.example/FHIR/R4/Slot/s1"}],
        "basedOn": [{"reference": "https://ers.example/FHIR/R4/ServiceRequest/r/_history/2"}],
        "participant": [
            {"actor": {"reference": "https://other.example/FHIR/R4/Patient/p"}},
            {"actor": {"reference": "https://ers.example/FHIR/R4/metadata"}},
            {"actor": {"reference": "https://ers.example/FHIR/R4x/Location/l"}},
            {"actor": {"reference": "Location/l"}}
        ]}}]});
        localise_references(&mut r, base);
        let a = &r["entry"][0]["resource"];
        assert_eq!(a["slot"][0]["reference"], "Slot/s1");
        assert_eq!(a["basedOn"][0]["reference"], "ServiceRequest/r/_history/2");
        assert_eq!(
            a["participant"][0]["actor"]["reference"],
            "https://other.example/FHIR/R4/Patient/p"
        );
        assert_eq!(
            a["participant"][1]["actor"]["reference"],
            "https://ers.example/FHIR/R4/metadata"
        );
        assert_eq!(
            a["participant"][2]["actor"]["reference"],
            "https://ers.example/FHIR/R4x/Location/l"
        );
        assert_eq!(a["participant"][3]["actor"]["reference"], "Location/l");
        assert_eq!(
            r["entry"][0]["fullUrl"],
            "https://ers.example/FHIR/R4/Patient/p"
        );
    }

    #[test]
    fn finds_all_references_with_paths() {
        let r = json!({"resourceType": "Patient", "generalPractitioner": [{"reference": "Organization/o1"}], "contact": [{"organization": {"reference": "Organization/o2"}}]});
        let refs = all_references(&r);
        assert!(
            refs.contains(&(
                "Patient.generalPractitioner[0].reference".into(),
                "Organization/o1".into()
            )),
            "{refs:?}"
        );
        assert!(
            refs.contains(&(
                "Patient.contact[0].organization.reference".into(),
                "Organization/o2".into()
            )),
            "{refs:?}"
        );
    }
}

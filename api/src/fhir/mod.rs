//! FHIR mapping: between FHIR JSON and what the service layer works with. No actix or diesel.

pub mod audit;
pub mod bundle;
pub mod capability;
pub mod conformance;
pub mod datetime;
pub mod index;
pub mod outcome;
pub mod parameters;
pub mod registry;
pub mod resources;
pub mod search;
pub mod service_search;
pub mod task;
pub mod terminology;

use serde_json::{json, Value};

/// `Value::pointer` without its allocations: serde_json turns every token of the pointer into
/// a new string, unescaping `~1` and `~0`, on every call (2.8 % of the server's CPU while
/// booking, `perf`). The pointers here are literals; one with an escape is left to serde_json.
pub trait At {
    /// The value at a JSON pointer (RFC 6901), as `Value::pointer` finds it.
    fn at(&self, pointer: &str) -> Option<&Value>;
}

impl At for Value {
    #[allow(clippy::disallowed_methods)]
    fn at(&self, pointer: &str) -> Option<&Value> {
        if pointer.contains('~') {
            return self.pointer(pointer);
        }
        if pointer.is_empty() {
            return Some(self);
        }
        pointer
            .strip_prefix('/')?
            .split('/')
            .try_fold(self, |v, token| match v {
                Value::Object(m) => m.get(token),
                // An array index as RFC 6901 writes it: digits, no sign, no leading zero.
                Value::Array(a) if token == "0" || !token.starts_with(['0', '+']) => {
                    token.parse::<usize>().ok().and_then(|i| a.get(i))
                }
                _ => None,
            })
    }
}

/// FHIR `id`: 1–64 of `A-Z a-z 0-9 - .`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// A new server-assigned resource id: a UUID whose leading bits are its creation time
/// (version 7). Resources made one after another get neighbouring ids, so every index keyed
/// by id (the resource, its versions and its search rows) grows at its end instead of at a
/// random page, and scans in change order (bulk export) probe those indexes in order.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Sets `id` and `meta.versionId` / `meta.lastUpdated` (keeping the rest of `meta`), with
/// `resourceType`, `id` and `meta` first as FHIR JSON writes them and every other element in
/// the order it had (`shift_remove`: serde_json's `remove` moves the last key into the hole).
pub fn stamp(resource: &mut Value, id: &str, version_id: i64, last_updated: chrono::NaiveDateTime) {
    let Some(o) = resource.as_object_mut() else {
        return;
    };
    let mut meta = match o.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let mut new_meta = serde_json::Map::new();
    new_meta.insert("versionId".into(), json!(version_id.to_string()));
    new_meta.insert("lastUpdated".into(), json!(datetime::instant(last_updated)));
    meta.shift_remove("versionId");
    meta.shift_remove("lastUpdated");
    new_meta.extend(meta);
    let resource_type = o.shift_remove("resourceType").unwrap_or(Value::Null);
    o.shift_remove("id");
    let mut out = serde_json::Map::new();
    out.insert("resourceType".into(), resource_type);
    out.insert("id".into(), json!(id));
    out.insert("meta".into(), Value::Object(new_meta));
    out.extend(std::mem::take(o));
    *o = out;
}

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

fn mark_subsetted(o: &mut serde_json::Map<String, Value>) {
    let meta = o.entry("meta").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        let tags = m.entry("tag").or_insert_with(|| json!([]));
        if let Some(t) = tags.as_array_mut() {
            t.push(json!({"system": SUBSETTED, "code": "SUBSETTED", "display": "Resource content has been reduced"}));
        }
    }
}

/// Applies `_elements` (keeps the named top-level elements and the mandatory ones).
pub fn apply_elements(resource: &Value, elements: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(o) = resource.as_object() {
        for (k, v) in o {
            if matches!(k.as_str(), "resourceType" | "id" | "meta")
                || elements.iter().any(|e| e == k || is_choice_of(k, e))
            {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    mark_subsetted(&mut out);
    Value::Object(out)
}

/// `deceasedBoolean` is an instance of the choice element `deceased`.
fn is_choice_of(key: &str, element: &str) -> bool {
    key.strip_prefix(element)
        .is_some_and(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
}

/// Applies `_summary` = true | text | data to one resource.
pub fn apply_summary(
    resource: &Value,
    summary: search::Summary,
    summary_elements: &[&str],
) -> Value {
    use search::Summary;
    let Some(o) = resource.as_object() else {
        return resource.clone();
    };
    let keep = |k: &str| -> bool {
        match summary {
            Summary::False | Summary::Count => true,
            Summary::Data => k != "text",
            Summary::Text => matches!(k, "resourceType" | "id" | "meta" | "text"),
            Summary::True => {
                matches!(k, "resourceType" | "id" | "meta" | "implicitRules")
                    || summary_elements.contains(&k)
            }
        }
    };
    if matches!(summary, Summary::False | Summary::Count) {
        return resource.clone();
    }
    let mut out: serde_json::Map<String, Value> = o
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    mark_subsetted(&mut out);
    Value::Object(out)
}

/// Calls `f` on every `reference` string in a resource (nested elements included).
pub fn for_each_reference_mut(v: &mut serde_json::Value, f: &mut dyn FnMut(&mut String)) {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match x {
                    Value::String(s) if k == "reference" => f(s),
                    _ => for_each_reference_mut(x, f),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| for_each_reference_mut(x, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn at_finds_what_a_json_pointer_finds() {
        let v = json!({
            "a": [{"b": 1}, {"b": 2}, 3],
            "": {"": "empty"},
            "c/d": "slash",
            "e~f": "tilde",
            "10": "ten"
        });
        for p in [
            "",
            "/",
            "//",
            "/a",
            "/a/0",
            "/a/1/b",
            "/a/2",
            "/a/3",
            "/a/01",
            "/a/+1",
            "/a/-1",
            "/a/ 1",
            "/a/1/b/c",
            "/a/x",
            "/c~1d",
            "/e~0f",
            "/10",
            "/10/0",
            "a",
            "/missing",
            "/a/18446744073709551616",
        ] {
            assert_eq!(v.at(p), v.pointer(p), "{p}");
        }
        assert_eq!(v.at("/a/1/b"), Some(&json!(2)));
        assert_eq!(v.at("/a/01"), None);
    }

    #[test]
    fn a_stamped_resource_keeps_its_elements_in_their_order() {
        let mut r: serde_json::Value = serde_json::from_str(
            r#"{"resourceType":"ServiceRequest","id":"old","meta":{"profile":["p"],"versionId":"1"},"extension":[{"url":"u","valueString":"s"}],"status":"active","intent":"order","subject":{"reference":"Patient/p"},"performer":[{"reference":"HealthcareService/h"}],"reasonCode":[{"text":"x"}]}"#,
        )
        .expect("json");
        let when = chrono::NaiveDate::from_ymd_opt(2026, 12, 6)
            .and_then(|d| d.and_hms_opt(9, 0, 0))
            .expect("a time");
        super::stamp(&mut r, "r", 2, when);
        let keys: Vec<&str> = r
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "resourceType",
                "id",
                "meta",
                "extension",
                "status",
                "intent",
                "subject",
                "performer",
                "reasonCode"
            ]
        );
        let meta: Vec<&str> = r["meta"]
            .as_object()
            .expect("meta")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(meta, ["versionId", "lastUpdated", "profile"]);
        assert_eq!(
            (r["id"].as_str(), r["meta"]["versionId"].as_str()),
            (Some("r"), Some("2"))
        );
    }

    #[test]
    fn new_ids_are_valid_and_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..2000).map(|_| super::new_id()).collect();
        assert!(ids.iter().all(|id| super::is_valid_id(id)), "{ids:?}");
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted, ids,
            "ids made one after another must sort in that order"
        );
    }
}

//! The one crate that calls fhirbolt (FHIR R4). Its (de)serialisers are generic and would be
//! re-monomorphised in every calling crate, so they sit behind plain functions here.
//!
//! Resources cross this boundary as `serde_json::Value` in FHIR JSON form: parsing checks the
//! structure strictly against the R4 model (unknown elements, wrong JSON types, missing required
//! elements, wrong `resourceType`) and returns the canonical JSON (elements in FHIR order).

pub mod fuzzing;
pub mod validate;

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode, SerializationConfig};
use serde_json::Value;

/// A body that is not a well-formed FHIR R4 resource.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not JSON / XML at all.
    #[error("{0}")]
    Syntax(String),
    /// Well-formed, but not a valid FHIR R4 resource structure.
    #[error("{0}")]
    Structure(String),
    /// XML with a document type declaration (refused: entities are never resolved).
    #[error("XML document type declarations (DOCTYPE) are not allowed")]
    Doctype,
    /// A resource we produced could not be serialised (a server fault).
    #[error("serialisation failed: {0}")]
    Serialise(String),
}

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

fn sorted() -> Option<SerializationConfig> {
    Some(SerializationConfig { always_sort: true })
}

/// Parses a FHIR JSON body into canonical FHIR JSON.
pub fn parse_json(bytes: &[u8]) -> Result<Value, FormatError> {
    // Syntax first, so that a broken document gets a syntax message with its position.
    let raw = strict_json(bytes)?;
    if !raw.is_object() {
        return Err(FormatError::Structure(
            "a FHIR resource must be a JSON object".into(),
        ));
    }
    if raw.get("resourceType").and_then(Value::as_str).is_none() {
        return Err(FormatError::Structure("missing 'resourceType'".into()));
    }
    no_empty_values(&raw)?;
    let resource: Resource = fhirbolt::json::from_json_value(raw, strict())
        .map_err(|e| FormatError::Structure(e.to_string()))?;
    fhirbolt::json::to_json_value(resource, sorted())
        .map_err(|e| FormatError::Serialise(e.to_string()))
}

/// JSON text as a value, refusing what serde_json alone would let through: a key given twice in
/// one object (it would keep the last, silently). Nesting deeper than 128 levels is refused by
/// serde_json itself.
fn strict_json(bytes: &[u8]) -> Result<Value, FormatError> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = strict::Strict::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v.0))
        .map_err(|e| FormatError::Syntax(format!("invalid JSON: {e}")))?;
    Ok(v)
}

mod strict {
    use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};
    use std::fmt;

    /// serde_json's own marker for a number kept as text (feature `arbitrary_precision`).
    const NUMBER_TOKEN: &str = "$serde_json::private::Number";

    pub struct Strict(pub Value);

    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor).map(Strict)
        }
    }

    struct StrictVisitor;

    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
            Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| E::custom("a number out of range"))
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E: Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E: Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Strict(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if key == NUMBER_TOKEN && out.is_empty() {
                    // A number, as text: parsed back into a number that keeps its digits.
                    let text: String = map.next_value()?;
                    return text
                        .parse::<Number>()
                        .map(Value::Number)
                        .map_err(A::Error::custom);
                }
                if out.contains_key(&key) {
                    return Err(A::Error::custom(format!(
                        "the key '{key}' appears twice in one object"
                    )));
                }
                let Strict(v) = map.next_value()?;
                out.insert(key, v);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Parses a FHIR JSON body for validation: canonical FHIR JSON when it is a valid R4 structure;
/// otherwise the JSON as sent, with the structural problem, so that the validator can report
/// every problem with its location instead of refusing the body.
pub fn parse_json_for_validation(bytes: &[u8]) -> Result<(Value, Option<String>), FormatError> {
    match parse_json(bytes) {
        Ok(v) => Ok((v, None)),
        Err(FormatError::Structure(m)) => {
            let raw = strict_json(bytes)?;
            if raw.get("resourceType").and_then(Value::as_str).is_none() {
                return Err(FormatError::Structure(m));
            }
            Ok((raw, Some(m)))
        }
        Err(e) => Err(e),
    }
}

/// Parses a FHIR XML body into canonical FHIR JSON. Any DOCTYPE is refused.
pub fn parse_xml(bytes: &[u8]) -> Result<Value, FormatError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| FormatError::Syntax(format!("XML is not UTF-8: {e}")))?;
    if text.contains("<!DOCTYPE") || text.contains("<!doctype") || text.contains("<!ENTITY") {
        return Err(FormatError::Doctype);
    }
    let resource: Resource = fhirbolt::xml::from_str(text, strict())
        .map_err(|e| FormatError::Structure(format!("invalid FHIR XML: {e}")))?;
    fhirbolt::json::to_json_value(resource, sorted())
        .map_err(|e| FormatError::Serialise(e.to_string()))
}

/// Checks that a JSON value is a valid FHIR R4 resource structure and returns it canonicalised.
pub fn canonicalise(value: Value) -> Result<Value, FormatError> {
    no_empty_values(&value)?;
    let resource: Resource = fhirbolt::json::from_json_value(value, strict())
        .map_err(|e| FormatError::Structure(e.to_string()))?;
    fhirbolt::json::to_json_value(resource, sorted())
        .map_err(|e| FormatError::Serialise(e.to_string()))
}

/// [`canonicalise`] for a resource edited from a stored version (`stored`, canonical as every
/// stored version is): when the edit kept its shape — the same keys in the same order, the
/// same number of items in each array, and at the leaves non-empty strings for strings,
/// booleans for booleans and the very same numbers — it is canonical and well-formed as it is,
/// and fhirbolt's round trip (a tenth of a booking's server time) is left out. Extension
/// arrays may also gain, lose or change items: each item not kept as it was is checked on its
/// own (an extension is canonical whatever holds it), so a referral's state that gains a
/// part skips the round trip of the whole referral. Any other edit takes the round trip.
/// Debug builds take it anyway and check that it agrees.
pub fn canonicalise_like(value: Value, stored: &Value) -> Result<Value, FormatError> {
    if !same_shape(&value, stored) {
        return canonicalise(value);
    }
    debug_assert_eq!(
        canonicalise(value.clone()).ok().as_ref(),
        Some(&value),
        "an edit that kept the stored version's shape is canonical as it is"
    );
    Ok(value)
}

/// Whether `edited` has `stored`'s shape (see [`canonicalise_like`]).
fn same_shape(edited: &Value, stored: &Value) -> bool {
    match (edited, stored) {
        (Value::Object(e), Value::Object(s)) => {
            e.len() == s.len()
                && e.iter().zip(s.iter()).all(|((ek, ev), (sk, sv))| {
                    ek == sk
                        && if ek == "extension" || ek == "modifierExtension" {
                            same_extensions(ev, sv)
                        } else {
                            same_shape(ev, sv)
                        }
                })
        }
        (Value::Array(e), Value::Array(s)) => {
            e.len() == s.len() && e.iter().zip(s.iter()).all(|(ev, sv)| same_shape(ev, sv))
        }
        (Value::String(e), Value::String(_)) => !e.is_empty(),
        (Value::Bool(_), Value::Bool(_)) => true,
        (Value::Number(e), Value::Number(s)) => e == s,
        _ => false,
    }
}

/// Whether an edited array of extensions is canonical: each item has the shape of the stored
/// item in its place, or is a canonical extension on its own.
fn same_extensions(edited: &Value, stored: &Value) -> bool {
    let (Value::Array(e), Value::Array(s)) = (edited, stored) else {
        return same_shape(edited, stored);
    };
    e.iter().enumerate().all(|(i, item)| {
        s.get(i).is_some_and(|kept| same_shape(item, kept)) || canonical_extension(item)
    })
}

/// Whether one extension is well-formed and canonical, by the round trip of a small resource
/// that holds only it: the same values (`==` of JSON objects ignores the order of their keys)
/// in the same order.
fn canonical_extension(item: &Value) -> bool {
    let host = serde_json::json!({"resourceType": "Basic", "code": {"text": "extension"}, "extension": [item]});
    matches!(canonicalise(host), Ok(v) if v
        .get("extension")
        .and_then(|x| x.get(0))
        .is_some_and(|c| c == item && same_shape(item, c)))
}

/// FHIR JSON has no empty arrays, empty objects or nulls (an absent element is left out):
/// refused with the element's path, before fhirbolt (which panics on some of them). The walk
/// builds no paths; the one to a problem is spelled out for the answer.
fn no_empty_values(value: &Value) -> Result<(), FormatError> {
    let Some((problem, mut trail)) = first_empty(value) else {
        return Ok(());
    };
    trail.reverse();
    let mut path = String::new();
    for step in trail {
        match step {
            Step::Key(k) if path.is_empty() => path.push_str(k),
            Step::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Step::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    let at = if path.is_empty() {
        "the resource".to_owned()
    } else {
        format!("'{path}'")
    };
    Err(FormatError::Structure(format!("{at} {problem}")))
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The first empty value: what is wrong with it, and the steps to it from the innermost out.
fn first_empty(v: &Value) -> Option<(&'static str, Vec<Step<'_>>)> {
    match v {
        Value::Null => Some((
            "is null: leave out an element that has no value",
            Vec::new(),
        )),
        Value::Array(a) if a.is_empty() => Some((
            "is an empty array: leave out an element that has no values",
            Vec::new(),
        )),
        Value::Object(o) if o.is_empty() => Some((
            "is an empty object: leave out an element that has no content",
            Vec::new(),
        )),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| {
            first_empty(x).map(|(p, mut t)| {
                t.push(Step::Index(i));
                (p, t)
            })
        }),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            first_empty(x).map(|(p, mut t)| {
                t.push(Step::Key(k));
                (p, t)
            })
        }),
        _ => None,
    }
}

/// Serialises a resource (FHIR JSON value) as FHIR XML.
pub fn to_xml(value: &Value) -> Result<Vec<u8>, FormatError> {
    let resource: Resource = fhirbolt::json::from_json_value(value.clone(), strict())
        .map_err(|e| FormatError::Serialise(e.to_string()))?;
    fhirbolt::xml::to_vec(&resource, None).map_err(|e| FormatError::Serialise(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_decimals_and_orders_elements() {
        let v = parse_json(br#"{"id":"x","resourceType":"Observation","status":"final","code":{"text":"t"},"valueQuantity":{"value":72.50}}"#)
            .expect("valid");
        let text = serde_json::to_string(&v).expect("json");
        assert!(
            text.starts_with(r#"{"resourceType":"Observation","id":"x""#),
            "{text}"
        );
        assert!(text.contains("72.50"), "{text}");
    }

    #[test]
    fn empty_values_are_refused_with_their_path() {
        let refused = |body: &str| match parse_json(body.as_bytes()) {
            Err(FormatError::Structure(m)) => m,
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(
            refused(r#"{"resourceType":"Patient","name":[{"family":"A"},{"given":[]}]}"#),
            "'name[1].given' is an empty array: leave out an element that has no values"
        );
        assert_eq!(
            refused(r#"{"resourceType":"Patient","gender":null}"#),
            "'gender' is null: leave out an element that has no value"
        );
        assert_eq!(
            refused(r#"{"resourceType":"Patient","meta":{}}"#),
            "'meta' is an empty object: leave out an element that has no content"
        );
        assert!(parse_json(br#"{"resourceType":"Patient","name":[{"given":["A"]}]}"#).is_ok());
    }

    #[test]
    fn an_edit_that_keeps_the_stored_shape_is_kept_as_it_is() {
        let stored = parse_json(br#"{"resourceType":"Slot","id":"s","schedule":{"reference":"Schedule/a"},"status":"free","start":"2026-01-02T09:00:00Z","end":"2026-01-02T09:15:00Z"}"#)
            .expect("valid");
        let mut busy = stored.clone();
        busy["status"] = Value::from("busy");
        assert_eq!(
            canonicalise_like(busy.clone(), &stored).expect("valid"),
            busy
        );
        // A key added at the end (out of FHIR order) takes the round trip, which orders it.
        let mut identified = stored.clone();
        identified["identifier"] = serde_json::json!([{"value": "x"}]);
        let text = canonicalise_like(identified, &stored)
            .expect("valid")
            .to_string();
        assert!(
            text.find("\"identifier\"") < text.find("\"schedule\""),
            "identifier comes before schedule in Slot: {text}"
        );
        // What the round trip refuses is still refused: an unknown element, a wrong type.
        let mut unknown = stored.clone();
        unknown["colour"] = Value::from("red");
        assert!(canonicalise_like(unknown, &stored).is_err());
        let mut wrong = stored.clone();
        wrong["status"] = Value::from(3);
        assert!(canonicalise_like(wrong, &stored).is_err());
        let mut emptied = stored.clone();
        emptied["status"] = Value::from("");
        assert!(!same_shape(&emptied, &stored));
        let mut added = stored.clone();
        added["overbooked"] = Value::from(true);
        assert!(!same_shape(&added, &stored));
        let (one, two) = (serde_json::json!({"a": [1]}), serde_json::json!({"a": [2]}));
        assert!(same_shape(&one, &one) && !same_shape(&one, &two));
    }

    #[test]
    fn an_edit_that_adds_a_canonical_extension_part_is_kept_as_it_is() {
        let state = "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ServiceRequest-State";
        let stored = canonicalise(serde_json::json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p"},
            "extension": [{"url": state, "extension": [{"url": "state", "valueCoding": {"system": "s", "code": "NOT_BOOKED"}}]}]}))
        .expect("valid");
        let book = |part: Value| {
            let mut booked = stored.clone();
            booked["extension"][0]["extension"][0]["valueCoding"]["code"] = Value::from("BOOKED");
            booked["extension"][0]["extension"]
                .as_array_mut()
                .expect("parts")
                .push(part);
            booked
        };
        // In canonical order: kept as it is, as the round trip would have it. (Compared as
        // text: `==` of JSON objects ignores the order of their keys.)
        let text = |v: Value| v.to_string();
        let service = r#"{"url":"service","valueReference":{"reference":"HealthcareService/h"}}"#;
        let booked = book(serde_json::from_str(service).expect("json"));
        assert!(same_shape(&booked, &stored));
        assert_eq!(
            text(canonicalise_like(booked.clone(), &stored).expect("valid")),
            text(booked.clone())
        );
        assert_eq!(
            text(canonicalise(booked.clone()).expect("valid")),
            text(booked.clone())
        );
        // Out of order: not the same shape, and the round trip orders it.
        let disordered = book(
            serde_json::from_str(
                r#"{"valueReference":{"reference":"HealthcareService/h"},"url":"service"}"#,
            )
            .expect("json"),
        );
        assert!(!same_shape(&disordered, &stored));
        assert_eq!(
            text(canonicalise_like(disordered, &stored).expect("valid")),
            text(booked.clone())
        );
        // An extension the round trip refuses is refused.
        let unknown = book(serde_json::json!({"url": "service", "valueColour": "red"}));
        assert!(canonicalise_like(unknown, &stored).is_err());
        // Whatever the round trip makes of an empty string, the edit gets the same.
        let empty = book(serde_json::json!({"url": "service", "valueString": ""}));
        assert!(!same_shape(&empty, &stored));
        assert_eq!(
            canonicalise_like(empty.clone(), &stored).ok().map(text),
            canonicalise(empty).ok().map(text)
        );
        // Losing a part keeps the others as they are.
        let mut unbooked = booked.clone();
        unbooked["extension"][0]["extension"]
            .as_array_mut()
            .expect("parts")
            .remove(0);
        assert!(same_shape(&unbooked, &booked));
    }

    #[test]
    fn unknown_element_is_a_structure_error() {
        let e = parse_json(br#"{"resourceType":"Patient","foo":1}"#).expect_err("invalid");
        assert!(matches!(e, FormatError::Structure(_)));
        assert!(e.to_string().contains("foo"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_refused_and_numbers_keep_their_digits() {
        let e = parse_json(br#"{"resourceType":"Patient","gender":"male","gender":"female"}"#)
            .expect_err("duplicate");
        assert!(e.to_string().contains("'gender' appears twice"), "{e}");
        let e = parse_json(br#"{"resourceType":"Patient","name":[{"family":"A","family":"B"}]}"#)
            .expect_err("nested duplicate");
        assert!(e.to_string().contains("'family'"), "{e}");
        let v = parse_json(br#"{"resourceType":"Observation","status":"final","code":{"text":"t"},"valueQuantity":{"value":1.000}}"#)
            .expect("valid");
        assert!(v.to_string().contains("1.000"), "{v}");
        let deep = format!(
            "{{\"resourceType\":\"Patient\",\"x\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            parse_json(deep.as_bytes()),
            Err(FormatError::Syntax(_))
        ));
    }

    #[test]
    fn doctype_is_refused() {
        let xml = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Patient xmlns="http://hl7.org/fhir"><id value="a"/></Patient>"#;
        assert!(matches!(parse_xml(xml), Err(FormatError::Doctype)));
    }

    #[test]
    fn xml_round_trip() {
        let v = parse_json(
            br#"{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1980-01-02"}"#,
        )
        .expect("valid");
        let xml = to_xml(&v).expect("xml");
        let back = parse_xml(&xml).expect("parse xml");
        assert_eq!(v, back);
    }
}

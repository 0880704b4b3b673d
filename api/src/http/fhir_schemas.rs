//! JSON Schemas of the hosted resource types, for the OpenAPI document: built from the base R4
//! definitions the validator carries (`ers_fhir::validate::elements`), so that a request
//! body's documentation (and a schema-driven client or fuzzer) knows each element's name, its
//! JSON type and whether it is an array. Choice elements (`[x]`) become one property per type
//! (`valueString`, `valueCoding`, …). A complex data type's value is an object titled with its
//! FHIR type, not described further: FHIR's data types refer to each other in cycles
//! (Identifier.assigner is a Reference, a Reference has an Identifier), which schema-driven
//! generators cannot bound. Profiles' own rules (cardinality, bindings, slices) are the
//! validator's and the CapabilityStatement's to state; only `resourceType` is required here,
//! and other properties are allowed (a primitive's `_element` sibling, say) and judged by the
//! server.

use std::collections::BTreeMap;

use ers_fhir::validate::{capitalise, elements, is_primitive, Element};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};

/// The component name of a resource type's schema.
pub fn component(type_name: &str) -> String {
    format!("fhir.{type_name}")
}

/// JSON type of a FHIR primitive; None for a complex type.
fn primitive(t: &str) -> Option<Type> {
    if !is_primitive(t) {
        return None;
    }
    Some(match t {
        "boolean" => Type::Boolean,
        "integer" | "positiveInt" | "unsignedInt" | "integer64" => Type::Integer,
        "decimal" => Type::Number,
        _ => Type::String,
    })
}

/// The schema of one type's value.
fn of_type(t: &str) -> RefOr<Schema> {
    if let Some(json) = primitive(t) {
        return ObjectBuilder::new().schema_type(json).into();
    }
    if t == "Resource" {
        return RefOr::Ref(Ref::from_schema_name("Resource"));
    }
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(t))
        .description(Some(format!("A FHIR R4 {t}")))
        .into()
}

/// An object with the children of `prefix` among `all` as its properties.
fn object(all: &[Element<'_>], prefix: &str, description: &str) -> Schema {
    let mut o = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description));
    for e in all {
        let Some(name) = e
            .path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|n| !n.contains('.'))
        else {
            continue;
        };
        for (property, value) in element(all, e, name) {
            let value = if e.array {
                ArrayBuilder::new().items(value).into()
            } else {
                value
            };
            o = o.property(property, value);
        }
    }
    o.into()
}

/// The properties one element stands for: one, or one per type of a choice.
fn element(all: &[Element<'_>], e: &Element<'_>, name: &str) -> Vec<(String, RefOr<Schema>)> {
    if let Some(base) = name.strip_suffix("[x]") {
        return e
            .types
            .iter()
            .map(|t| (format!("{base}{}", capitalise(t)), of_type(t)))
            .collect();
    }
    let value = match e.types {
        // Shares another element's definition (a recursive one, often): any object.
        [] if e.content_ref.is_some() => ObjectBuilder::new().schema_type(Type::Object).into(),
        [] => object(all, e.path, e.path).into(),
        [t] if t == "BackboneElement" || t == "Element" => object(all, e.path, e.path).into(),
        [t, ..] => of_type(t),
    };
    vec![(name.to_owned(), value)]
}

/// Schemas (by component name) of the resource types, each with `resourceType` its own and
/// required.
pub fn schemas<'a>(resource_types: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Schema> {
    let mut out = BTreeMap::new();
    for t in resource_types {
        let Some(all) = elements(t) else {
            continue;
        };
        let Schema::Object(mut o) = object(&all, t, &format!("A FHIR R4 {t}")) else {
            continue;
        };
        o.properties.insert(
            "resourceType".into(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([t]))
                .into(),
        );
        o.required.insert(0, "resourceType".into());
        out.insert(component(t), Schema::Object(o));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::schema::Object;

    fn object(s: &Schema) -> &Object {
        match s {
            Schema::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn a_resource_names_its_elements_their_json_types_and_arrays() {
        let all = schemas(["ServiceRequest"]);
        let sr = object(&all[&component("ServiceRequest")]);
        assert_eq!(sr.required, vec!["resourceType".to_owned()]);
        let json = serde_json::to_value(sr).expect("json");
        assert_eq!(
            json["properties"]["resourceType"]["enum"][0],
            "ServiceRequest"
        );
        assert_eq!(json["properties"]["status"]["type"], "string");
        assert_eq!(json["properties"]["doNotPerform"]["type"], "boolean");
        assert_eq!(json["properties"]["identifier"]["type"], "array");
        assert_eq!(json["properties"]["identifier"]["items"]["type"], "object");
        assert_eq!(
            json["properties"]["identifier"]["items"]["title"],
            "Identifier"
        );
        // A choice: one property per type.
        assert_eq!(json["properties"]["occurrenceDateTime"]["type"], "string");
        assert_eq!(json["properties"]["occurrencePeriod"]["title"], "Period");
        assert!(json["properties"].get("occurrence[x]").is_none());
        // Nothing refers to anything else: a generator can bound every value.
        assert!(!json.to_string().contains("schemas/fhir."), "{json}");
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn backbone_elements_are_described_inline() {
        let all = schemas(["Appointment"]);
        let json = serde_json::to_value(&all[&component("Appointment")]).expect("json");
        let participant = &json["properties"]["participant"];
        assert_eq!(participant["type"], "array");
        assert_eq!(participant["items"]["type"], "object");
        assert_eq!(
            participant["items"]["properties"]["actor"]["title"],
            "Reference"
        );
        assert_eq!(
            participant["items"]["properties"]["status"]["type"],
            "string"
        );
    }
}

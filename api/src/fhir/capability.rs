//! The CapabilityStatement, generated from the same registry the routes and search use.

use serde_json::{json, Value};

use super::registry::{self, ParamKind, RESOURCES};

pub fn capability_statement(base_url: &str, software_version: &str, published: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|r| {
            let mut interactions = vec!["read", "vread", "update", "create", "search-type", "history-instance", "history-type"];
            if r.delete {
                interactions.push("delete");
            }
            let mut params = vec![
                json!({"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id", "documentation": "Logical id"}),
                json!({"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated", "documentation": "When the resource version last changed"}),
            ];
            params.extend(r.params.iter().map(|p| json!({"name": p.name, "type": p.kind.fhir_name(), "documentation": p.doc})));
            let includes: Vec<String> = r
                .params
                .iter()
                .filter(|p| p.kind == ParamKind::Reference)
                .map(|p| format!("{}:{}", r.name, p.name))
                .collect();
            let revincludes: Vec<String> = registry::referrers_of(r.name).iter().map(|(src, p)| format!("{src}:{}", p.name)).collect();
            let mut res = json!({
                "type": r.name,
                "profile": r.profile,
                "interaction": interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": false,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": params,
            });
            if !includes.is_empty() {
                res["searchInclude"] = json!(includes);
            }
            if !revincludes.is_empty() {
                res["searchRevInclude"] = json!(revincludes);
            }
            res
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "id": "ers-fhir-server",
        "url": format!("{base_url}/metadata"),
        "version": software_version,
        "name": "ErsFhirServer",
        "title": "e-Referral Service FHIR R4 server",
        "status": "active",
        "experimental": false,
        "date": published,
        "publisher": "ers-fhir project",
        "description": "A FHIR R4 server that does what the NHS e-Referral Service does: referrals, booking, advice and guidance and the Directory of Services, with the e-RS vocabulary.",
        "kind": "instance",
        "software": {"name": "ers-server", "version": software_version},
        "implementation": {"description": "ers-server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "rest": [{
            "mode": "server",
            "documentation": "Every request under the base except metadata must name the caller's e-RS business function (NHSD-eRS-Business-Function) and organisation (NHSD-End-User-Organisation-ODS).",
            "resource": resources,
        }],
    })
}

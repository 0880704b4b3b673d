//! The server's own conformance resources, served read-only: the e-RS CodeSystems, a ValueSet
//! of all codes of each, a SearchParameter for every search parameter in the registry, an
//! OperationDefinition for every operation, and the StructureDefinitions: the e-RS profiles and
//! extensions (written in `fhir-profiles/definitions`) and the UK Core profiles of the hosted
//! types, each profile with the snapshot the validator checks against. The ValueSets,
//! SearchParameters and OperationDefinitions are derived from what the server runs on — the
//! registry, the referral state machine's operations, the patient-centred service search — so
//! they cannot drift from its behaviour.

use std::sync::OnceLock;

use serde_json::{json, Value};

use super::registry::{ParamKind, RESOURCES};
use super::resources::{announcement, subscription};
use super::{parameters, service_search, terminology};
use crate::domain::advice::AdviceAction;
use crate::domain::referral::{Endpoint, OpParam, ReferralAction, Worklist};

/// The canonical base of everything the project defines (the e-RS vocabulary's own).
pub const CANONICAL: &str = "https://fhir.nhs.uk";
const VERSION: &str = "1.0.0";

/// The conformance resource types served.
pub const TYPES: [&str; 5] = [
    "CodeSystem",
    "ValueSet",
    "SearchParameter",
    "OperationDefinition",
    "StructureDefinition",
];

/// Every served resource of a type (empty for a type not served).
pub fn all(res_type: &str) -> &'static [Value] {
    static VS: OnceLock<Vec<Value>> = OnceLock::new();
    static SP: OnceLock<Vec<Value>> = OnceLock::new();
    static OD: OnceLock<Vec<Value>> = OnceLock::new();
    match res_type {
        "CodeSystem" => terminology::code_systems(),
        "ValueSet" => VS.get_or_init(value_sets),
        "SearchParameter" => SP.get_or_init(search_parameters),
        "OperationDefinition" => OD.get_or_init(operation_definitions),
        "StructureDefinition" => ers_fhir::validate::structure_definitions(),
        _ => &[],
    }
}

pub fn by_id(res_type: &str, id: &str) -> Option<&'static Value> {
    all(res_type)
        .iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
}

/// A ValueSet of all the codes of each CodeSystem, expanded.
fn value_sets() -> Vec<Value> {
    terminology::code_systems()
        .iter()
        .map(|cs| {
            let url = cs["url"].as_str().unwrap_or_default();
            let contains: Vec<Value> = cs["concept"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| json!({"system": url, "code": c["code"], "display": c["display"]}))
                .collect();
            json!({
                "resourceType": "ValueSet",
                "id": cs["id"],
                "url": url.replace("/CodeSystem/", "/ValueSet/"),
                "version": cs["version"],
                "name": cs["name"],
                "title": cs["title"],
                "status": "active",
                "publisher": cs["publisher"],
                "description": format!("All the codes of {url}."),
                "compose": {"include": [{"system": url}]},
                "expansion": {
                    "timestamp": cs["date"],
                    "total": contains.len(),
                    "contains": contains,
                },
            })
        })
        .collect()
}

/// One SearchParameter per parameter of each hosted type.
fn search_parameters() -> Vec<Value> {
    let mut out = Vec::new();
    for def in RESOURCES {
        for p in def.params {
            let id = format!("{}-{}", def.name, p.name);
            let mut sp = json!({
                "resourceType": "SearchParameter",
                "id": id,
                "url": format!("{CANONICAL}/SearchParameter/{id}"),
                "version": VERSION,
                "name": format!("{}{}", def.name, p.name.replace(['-', ':', '.'], "")),
                "status": "active",
                "description": p.doc,
                "code": p.name,
                "base": [def.name],
                "type": p.kind.fhir_name(),
            });
            if p.paths.is_empty() {
                sp["description"] = json!(format!(
                    "{} (computed by the server from the resource)",
                    p.doc
                ));
            } else {
                sp["expression"] = json!(p
                    .paths
                    .iter()
                    .map(|path| format!("{}.{path}", def.name))
                    .collect::<Vec<_>>()
                    .join(" | "));
            }
            if p.kind == ParamKind::Reference && !p.targets.is_empty() {
                sp["target"] = json!(p.targets);
            }
            out.push(sp);
        }
    }
    out
}

fn operation(
    code: &str,
    resource: &str,
    instance: bool,
    affects_state: bool,
    description: String,
    parameters: Vec<Value>,
) -> Value {
    let id = code.to_owned();
    let mut od = json!({
        "resourceType": "OperationDefinition",
        "id": id,
        "url": format!("{CANONICAL}/OperationDefinition/{id}"),
        "version": VERSION,
        "name": code.replace('.', "_"),
        "status": "active",
        "kind": "operation",
        "affectsState": affects_state,
        "description": description,
        "code": code,
        "resource": [resource],
        "system": false,
        "type": !instance,
        "instance": instance,
    });
    // An element with no values is left out (one taking no inputs and answering 204).
    if !parameters.is_empty() {
        od["parameter"] = Value::Array(parameters);
    }
    od
}

/// The operations invoked at a level, as `$name`: the system's (`res_type` None), a type's, or
/// (`instance`) one of its resources': the served OperationDefinitions' and the standard
/// operations this server has (`$validate` on every type written through the API, Bulk Data's
/// `$export`, `$versions`).
pub fn operations_at(res_type: Option<&str>, instance: bool) -> Vec<String> {
    let mut ops: Vec<String> = match (res_type, instance) {
        (None, _) => vec!["$export".into(), "$versions".into()],
        (Some(t), false) => super::registry::find(t)
            .map(|_| "$validate")
            .into_iter()
            .chain((t == "Patient").then_some("$export"))
            .map(str::to_owned)
            .collect(),
        (Some(_), true) => Vec::new(),
    };
    let level = if instance { "instance" } else { "type" };
    ops.extend(
        all("OperationDefinition")
            .iter()
            .filter(|od| {
                od[level] == true
                    && res_type.is_some_and(|t| {
                        od["resource"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|x| x == t))
                    })
            })
            .filter_map(|od| od["code"].as_str().map(|c| format!("${c}"))),
    );
    ops
}

/// The canonical URL of the OperationDefinition of an operation (`$ers.…`).
pub fn operation_url(op: &str) -> String {
    format!(
        "{CANONICAL}/OperationDefinition/{}",
        op.trim_start_matches('$')
    )
}

/// One OperationDefinition per operation the server offers.
fn operation_definitions() -> Vec<Value> {
    let mut out: Vec<Value> = ReferralAction::ALL
        .into_iter()
        .filter_map(|a| {
            let resource = match a.endpoint() {
                Endpoint::Referral => "ServiceRequest",
                Endpoint::CurrentAppointment => "Appointment",
                Endpoint::NewAppointment => return None,
            };
            let mut params: Vec<Value> = a
                .parameters()
                .iter()
                .map(parameters::definition)
                .collect();
            params.push(json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": resource, "documentation": "the new version"}));
            Some(operation(
                a.operation().trim_start_matches('$'),
                resource,
                true,
                true,
                format!(
                    "e-RS action {}: POST with If-Match and a Parameters body. May be done by {}, when the referral's state and your organisation allow it ($ers.availableActions).",
                    a.code(),
                    a.roles().iter().map(|b| b.code()).collect::<Vec<_>>().join(", ")
                ),
                params,
            ))
        })
        .collect();
    for a in AdviceAction::ALL {
        let mut params: Vec<Value> = a.parameters().iter().map(parameters::definition).collect();
        let returns = if a == AdviceAction::Convert {
            "the referral created (201), with the request's UBRN"
        } else {
            "the request's new version"
        };
        params.push(json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": "ServiceRequest", "documentation": returns}));
        out.push(operation(
            a.operation().trim_start_matches('$'),
            "ServiceRequest",
            true,
            true,
            format!(
                "Advice and guidance {}: POST ServiceRequest/{{a.id}}/{} with If-Match and a Parameters body; sends a message (a Communication) and moves the request's status. May be done by {}, in its turn.",
                a.code(),
                a.operation(),
                a.roles().iter().map(|b| b.code()).collect::<Vec<_>>().join(", ")
            ),
            params,
        ));
    }
    out.push(operation(
        "ers.generateCRI",
        "ServiceRequest",
        true,
        false,
        "On an advice and guidance request, its advice summary (e-RS A043): the request, every message (oldest first), the attachments and the outcome. On a referral, its clinical referral information (e-RS A007): the referral, patient, referrer, shortlist, current appointment and where, attachments (not the files), each state change with who made it, and the advice conversation it came from (for those who may read messages). GET; Accept: application/pdf gives a PDF (NHS number and UBRN on every page), otherwise a FHIR collection Bundle.".into(),
        vec![json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle", "documentation": "the summary (or application/pdf)"})],
    ));
    out.push(operation(
        "ers.generatePatientLetter",
        "ServiceRequest",
        true,
        false,
        "The letter the referrer gives the patient about a referral (e-RS A019), a PDF: the patient's name, address and NHS number, their booking reference (UBRN), and their booked appointment (when, which service, where), or the shortlisted services to book with, or what happens next (deferred, in triage, cancelled). Referring roles only. GET (or POST with no inputs); answers application/pdf.".into(),
        vec![json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": "Binary", "documentation": "the letter, application/pdf"})],
    ));
    out.push(operation(
        "events",
        "Subscription",
        true,
        false,
        "The events a subscription matches after an event number (R4 subscriptions backport $events): for a subscriber that was away. GET.".into(),
        subscription::EVENTS_PARAMETERS
            .iter()
            .map(parameters::definition)
            .chain([json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle", "documentation": "a query-event notification Bundle"})])
            .collect(),
    ));
    out.push(operation(
        "ers.announcements",
        "CommunicationRequest",
        false,
        false,
        "The announcements for the caller's organisation and role, newest first, as a searchset; each one the caller has read is flagged in entry.search. GET.".into(),
        announcement::LIST_PARAMETERS
            .iter()
            .map(parameters::definition)
            .chain([json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle"})])
            .collect(),
    ));
    out.push(operation(
        "ers.markRead",
        "CommunicationRequest",
        true,
        true,
        "Marks the announcement read for the caller (204). POST, no body.".into(),
        Vec::new(),
    ));
    out.push(operation(
        "everything",
        "Patient",
        true,
        false,
        format!("The patient and what this server holds about them that the caller may see (FHIR R4 Patient-everything): the Patient compartment ({}) with what those refer to, as one searchset Bundle. GET, or POST with a Parameters body.", crate::service::exports::PATIENT_COMPARTMENT.join(", ")),
        crate::service::exports::EVERYTHING_INPUTS
            .iter()
            .map(parameters::definition)
            .chain([json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle", "documentation": "a searchset: the compartment's resources as matches, what they refer to as includes"})])
            .collect(),
    ));
    out.push(operation(
        "ers.availableActions",
        "ServiceRequest",
        true,
        false,
        "The actions the caller may take on the referral now (e-RS A029), each with the URL that performs it. GET.".into(),
        vec![
            json!({"name": "referral", "use": "out", "min": 1, "max": "1", "type": "Reference", "documentation": "the version the actions apply to"}),
            json!({"name": "state", "use": "out", "min": 1, "max": "1", "type": "Coding", "documentation": "the referral's state"}),
            json!({"name": "action", "use": "out", "min": 0, "max": "*", "documentation": "an action", "part": [
                {"name": "code", "use": "out", "min": 1, "max": "1", "type": "code"},
                {"name": "operation", "use": "out", "min": 1, "max": "1", "type": "uri"}]}),
        ],
    ));
    out.push(operation(
        "ers.worklist",
        "ServiceRequest",
        false,
        false,
        "A worklist of the caller's organisation as a paged searchset (e-RS A008/A023). GET."
            .into(),
        Worklist::PARAMETERS
            .iter()
            .map(parameters::definition)
            .chain([
                json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle"}),
            ])
            .collect(),
    ));
    // Invoked as AuditEvent/$export: its code is `export` (its id tells it from Bulk Data's).
    let mut audit_export = operation(
        "audit-export",
        "AuditEvent",
        false,
        false,
        "Every AuditEvent matching the AuditEvent search parameters, as application/fhir+ndjson. Auditors only. GET.".into(),
        ["date", "agent", "patient", "entity", "action", "subtype", "outcome"]
            .into_iter()
            .map(|n| {
                parameters::definition(&OpParam::new(
                    n,
                    0,
                    "*",
                    "string",
                    "as in the AuditEvent search",
                ))
            })
            .collect(),
    );
    audit_export["code"] = json!("export");
    out.push(audit_export);
    let mut params: Vec<Value> = service_search::parameters()
        .iter()
        .map(parameters::definition)
        .collect();
    params.push(json!({"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle"}));
    out.push(operation(
        service_search::NAME.trim_start_matches('$'),
        "HealthcareService",
        false,
        false,
        "Services a patient may be referred to (e-RS A010), by distance, priority, specialty, clinic type, request flow, free slots, age and gender. GET with query parameters or POST Parameters.".into(),
        params,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_and_parameter_is_defined_once() {
        for t in TYPES {
            let ids: Vec<&str> = all(t).iter().filter_map(|r| r["id"].as_str()).collect();
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(ids.len(), unique.len(), "{t}: duplicate ids");
            assert!(!ids.is_empty(), "{t}");
        }
        assert!(by_id("OperationDefinition", "ers.cancelAppointment").is_some());
        assert!(by_id("SearchParameter", "ServiceRequest-state").is_some());
        assert!(by_id("ValueSet", "ers-priority").is_some());
    }

    #[test]
    fn every_extension_the_server_writes_is_defined() {
        use crate::fhir::resources::{advice, announcement, requirements, service_request as sr};
        let defined = |url: &str| {
            all("StructureDefinition")
                .iter()
                .any(|sd| sd["url"] == url && sd["type"] == "Extension")
        };
        for url in [
            sr::STATE_EXTENSION,
            sr::PRIORITY_EXTENSION,
            sr::LETTER_INTENTION_EXTENSION,
            advice::STATUS_EXTENSION,
            advice::CONVERSION_EXTENSION,
            advice::OUTCOME_EXTENSION,
            requirements::EXTENSION,
            announcement::AUDIENCE_ROLE_EXTENSION,
            announcement::READ_EXTENSION,
        ] {
            assert!(
                defined(url),
                "{url} has no StructureDefinition in fhir-profiles/definitions"
            );
        }
        // The additional requirements' parts are the ones the server reads, with their types.
        let sd = all("StructureDefinition")
            .iter()
            .find(|sd| sd["url"] == requirements::EXTENSION)
            .expect("defined");
        for (name, kind, _) in requirements::PARTS {
            let value = sd["differential"]["element"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["id"] == format!("Extension.extension:{name}.value[x]"))
                .unwrap_or_else(|| panic!("part {name} is not defined"));
            assert_eq!(
                format!(
                    "value{}",
                    capitalise(value["type"][0]["code"].as_str().unwrap_or_default())
                ),
                *kind,
                "{name}"
            );
        }
        assert_eq!(
            sd["differential"]["element"]
                .as_array()
                .map(|a| a.iter().filter(|e| e["sliceName"].is_string()).count()),
            Some(requirements::PARTS.len())
        );
    }

    fn capitalise(t: &str) -> String {
        let mut c = t.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    }

    #[test]
    fn every_resource_is_valid_r4() {
        for t in TYPES {
            for r in all(t) {
                if let Err(e) = ers_fhir::canonicalise(r.clone()) {
                    panic!("{t}/{}: {e}", r["id"]);
                }
            }
        }
        let base = "http://localhost/FHIR/R4";
        for r in [
            super::super::capability::capability_statement(base, "0", "2026-01-01"),
            super::super::capability::terminology_capabilities(base, "0", "2026-01-01"),
        ] {
            if let Err(e) = ers_fhir::canonicalise(r.clone()) {
                panic!("{}: {e}", r["resourceType"]);
            }
        }
    }
}

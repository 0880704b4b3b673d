//! Audit rows as UK Core AuditEvent resources.

use ers_schema::audit::{AuditEntityRow, AuditRow};
use serde_json::{json, Value};

use super::datetime;
use crate::domain::{NhsNumber, OdsCode, SdsUserId};
use crate::service::seed::BUSINESS_FUNCTION_SYSTEM;

const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const ERS_SUBTYPE: &str = "https://fhir.nhs.uk/CodeSystem/ers-audit-subtype";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const AGENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
const UBRN: &str = "https://fhir.nhs.uk/Id/UBRN";

pub fn audit_event(row: &AuditRow, entities: &[AuditEntityRow]) -> Value {
    let subtype_system = if matches!(
        row.subtype.as_str(),
        "read"
            | "vread"
            | "update"
            | "patch"
            | "delete"
            | "create"
            | "search-type"
            | "history-instance"
            | "history-type"
    ) {
        INTERACTION
    } else {
        ERS_SUBTYPE
    };
    let mut agents = Vec::new();
    if let Some(user) = &row.user_id {
        let mut a = json!({
            "type": {"coding": [{"system": AGENT_TYPE, "code": "humanuser", "display": "human user"}]},
            "who": {"identifier": {"system": SdsUserId::SYSTEM, "value": user}},
            "requestor": true,
        });
        if let Some(role) = &row.role {
            a["role"] = json!([{"coding": [{"system": BUSINESS_FUNCTION_SYSTEM, "code": role}]}]);
        }
        if let Some(addr) = &row.source_address {
            a["network"] = json!({"address": addr, "type": "2"});
        }
        agents.push(a);
    }
    if let Some(client) = &row.client_id {
        let mut a = json!({
            "type": {"coding": [{"system": AGENT_TYPE, "code": "dataprocessor", "display": "data processor"}]},
            "who": {"identifier": {"system": "https://fhir.nhs.uk/Id/ers-application", "value": client}},
            "requestor": true,
        });
        if let Some(role) = &row.role {
            a["role"] = json!([{"coding": [{"system": BUSINESS_FUNCTION_SYSTEM, "code": role}]}]);
        }
        agents.push(a);
    }
    if let Some(org) = &row.org {
        agents.push(json!({
            "type": {"coding": [{"system": AGENT_TYPE, "code": "datacollector", "display": "data collector"}]},
            "who": {"identifier": {"system": OdsCode::ORGANIZATION_SYSTEM, "value": org}},
            "requestor": false,
        }));
    }
    if let Some(obo) = &row.on_behalf_of {
        agents.push(json!({
            "type": {"coding": [{"system": AGENT_TYPE, "code": "humanuser", "display": "human user"}]},
            "who": {"identifier": {"system": SdsUserId::SYSTEM, "value": obo}},
            "requestor": false,
            "role": [{"coding": [{"system": BUSINESS_FUNCTION_SYSTEM, "code": "SERVICE_PROVIDER_CLINICIAN"}]}],
        }));
    }
    if agents.is_empty() {
        agents.push(json!({"type": {"coding": [{"system": AGENT_TYPE, "code": "humanuser"}]}, "who": {"display": "unauthenticated"}, "requestor": true}));
    }
    let mut entity: Vec<Value> = entities
        .iter()
        .map(|e| {
            let mut what = json!({"reference": format!("{}/{}", e.entity_type, e.entity_id)});
            if let Some(n) = &e.nhs_number {
                what["identifier"] = json!({"system": NhsNumber::SYSTEM, "value": n});
            }
            let mut v = json!({"what": what, "type": {"system": ENTITY_TYPE, "code": if e.entity_type == "Patient" { "1" } else { "2" }}});
            if let Some(u) = &e.ubrn {
                v["detail"] = json!([{"type": "UBRN", "valueString": u}]);
                v["what"]["identifier"] = json!({"system": UBRN, "value": u});
            }
            v
        })
        .collect();
    let mut detail = vec![
        json!({"type": "X-Request-ID", "valueString": row.request_id}),
        json!({"type": "HTTP", "valueString": format!("{} {} -> {}", row.method, row.path, row.status)}),
    ];
    if let Some(c) = &row.correlation_id {
        detail.push(json!({"type": "X-Correlation-ID", "valueString": c}));
    }
    let mut request = json!({"type": {"system": ENTITY_TYPE, "code": "2"}, "what": {"display": "request"}, "detail": detail});
    if let Some(q) = &row.query {
        use base64::Engine;
        request["query"] = json!(base64::engine::general_purpose::STANDARD.encode(q));
    }
    entity.push(request);
    let mut v = json!({
        "resourceType": "AuditEvent",
        "id": row.id,
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-AuditEvent"]},
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": subtype_system, "code": row.subtype}],
        "action": row.action,
        "recorded": datetime::instant(row.recorded),
        "outcome": row.outcome,
        "agent": agents,
        "source": {"observer": {"display": "ers-server"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
        "entity": entity,
    });
    if let Some(d) = &row.outcome_desc {
        v["outcomeDesc"] = json!(d);
    }
    v
}

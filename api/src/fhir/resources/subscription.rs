//! R4 Subscription (rest-hook): what a system watches (`criteria`, a search of a type whose
//! changes are recorded), where it is told (`channel.endpoint`), and how much (`channel.payload`
//! `application/fhir+json`: the resource; none: its id only). Notifications are R4 backport
//! notification Bundles: a `history` Bundle whose first entry is the SubscriptionStatus
//! `Parameters`, with each event's number and focus.

use serde_json::{json, Value};

use super::*;
use crate::fhir::registry::{self, ResourceDef};

/// Backport extension: seconds between heartbeats when nothing happens.
pub const HEARTBEAT_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";
pub const PAYLOAD: &str = "application/fhir+json";
/// What a stored header's value reads as.
pub const REDACTED: &str = "***";

/// A subscription's search: the type and its parameters.
pub type Criteria = (&'static ResourceDef, Vec<(String, String)>);

/// The type and search parameters of `criteria` (`Type?a=b&c=d`).
pub fn criteria(s: &Value) -> Result<Criteria, String> {
    let raw = s
        .get("criteria")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (t, query) = raw.split_once('?').unwrap_or((raw, ""));
    let def = registry::find(t).filter(|d| d.events).ok_or_else(|| {
        format!(
            "({raw}) must be a search of a type whose changes are notified: {}",
            registry::RESOURCES
                .iter()
                .filter(|d| d.events)
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| format!("({raw}) is not a query string: {e}"))?;
    if let Some((name, _)) = params
        .iter()
        .find(|(k, _)| k.starts_with('_') && k != "_id")
    {
        return Err(format!("({raw}) may not use the result parameter {name}"));
    }
    Ok((def, params))
}

/// Whether notifications carry the resource.
pub fn full_resource(s: &Value) -> bool {
    s.pointer("/channel/payload").and_then(Value::as_str) == Some(PAYLOAD)
}

pub fn endpoint(s: &Value) -> Option<&str> {
    s.pointer("/channel/endpoint").and_then(Value::as_str)
}

/// Seconds between heartbeats, if asked for.
pub fn heartbeat(s: &Value) -> Option<i64> {
    s.pointer("/channel/extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(HEARTBEAT_EXTENSION))?
        .get("valueUnsignedInt")?
        .as_i64()
        .filter(|n| *n > 0)
}

/// The channel headers as (name, value).
pub fn headers(s: &Value) -> Vec<(String, String)> {
    s.pointer("/channel/header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|h| h.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The channel headers with their values hidden (as the resource is stored and read).
pub fn redact(s: &mut Value) {
    let names: Vec<Value> = headers(s)
        .into_iter()
        .map(|(n, _)| json!(format!("{n}: {REDACTED}")))
        .collect();
    if !names.is_empty() {
        s["channel"]["header"] = Value::Array(names);
    }
}

/// The shape of a Subscription this server delivers.
pub fn check(s: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
    if let Err(e) = criteria(s) {
        issues.push(Issue::invalid_at("Subscription.criteria", e));
    }
    match s.pointer("/channel/type").and_then(Value::as_str) {
        Some("rest-hook") => {}
        other => issues.push(Issue::invalid_at(
            "Subscription.channel.type",
            format!(
                "({}) is not supported: only rest-hook",
                other.unwrap_or("missing")
            ),
        )),
    }
    match endpoint(s) {
        Some(e) if e.starts_with("https://") || e.starts_with("http://") => {}
        other => issues.push(Issue::invalid_at(
            "Subscription.channel.endpoint",
            format!(
                "({}) must be an http(s) URL to POST notifications to",
                other.unwrap_or("missing")
            ),
        )),
    }
    match s.pointer("/channel/payload").and_then(Value::as_str) {
        None | Some(PAYLOAD) => {}
        Some(p) => issues.push(Issue::invalid_at(
            "Subscription.channel.payload",
            format!("({p}) must be {PAYLOAD} (the resource) or absent (its id only)"),
        )),
    }
    for (i, h) in s
        .pointer("/channel/header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let named = h
            .as_str()
            .and_then(|h| h.split_once(':'))
            .is_some_and(|(n, _)| !n.trim().is_empty());
        if !named {
            issues.push(Issue::invalid_at(
                format!("Subscription.channel.header[{i}]"),
                "must be 'Name: value'",
            ));
        }
    }
    finish(Checked::default(), issues)
}

/// One event in a notification: its number, when, and the version it is about.
pub struct Event {
    pub number: i64,
    pub at: String,
    pub focus: String,
    pub resource: Option<Value>,
}

/// A notification Bundle (`type`: handshake, heartbeat or event-notification).
pub fn notification(
    base: &str,
    subscription: &str,
    status: &str,
    kind: &str,
    since_start: i64,
    events: &[Event],
) -> Value {
    let mut params = vec![
        json!({"name": "subscription", "valueReference": {"reference": format!("Subscription/{subscription}")}}),
        json!({"name": "status", "valueCode": status}),
        json!({"name": "type", "valueCode": kind}),
        json!({"name": "events-since-subscription-start", "valueString": since_start.to_string()}),
    ];
    params.extend(events.iter().map(|e| {
        json!({"name": "notification-event", "part": [
            {"name": "event-number", "valueString": e.number.to_string()},
            {"name": "timestamp", "valueInstant": e.at},
            {"name": "focus", "valueReference": {"reference": e.focus}},
        ]})
    }));
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "resource": {"resourceType": "Parameters", "parameter": params},
        "request": {"method": "GET", "url": format!("Subscription/{subscription}/$status")},
        "response": {"status": "200"},
    })];
    entries.extend(events.iter().filter_map(|e| {
        let r = e.resource.as_ref()?;
        let (t, id) = (
            r["resourceType"].as_str().unwrap_or_default(),
            r["id"].as_str().unwrap_or_default(),
        );
        Some(json!({
            "fullUrl": format!("{base}/{t}/{id}"),
            "resource": r,
            "request": {"method": "PUT", "url": format!("{t}/{id}")},
            "response": {"status": "200"},
        }))
    }));
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": [crate::fhir::bundle::PROFILE]},
        "type": "history",
        "timestamp": crate::fhir::datetime::instant(chrono::Utc::now().naive_utc()),
        "entry": entries,
    })
}

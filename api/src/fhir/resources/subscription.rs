//! R4 Subscription (rest-hook): what a system watches (`criteria`, a search of a type whose
//! changes are recorded), where it is told (`channel.endpoint`), and how much (`channel.payload`
//! `application/fhir+json`: the resource; none: its id only). Notifications are R4 backport
//! notification Bundles: a `history` Bundle whose first entry is the SubscriptionStatus
//! `Parameters`, with each event's number and focus.

use crate::fhir::At;
use serde_json::{json, Value};

use super::*;
use crate::fhir::registry::{self, ResourceDef};

/// The inputs of `Subscription/{id}/$events` (the backport's types: an event number is a
/// string in R4).
pub const EVENTS_PARAMETERS: &[crate::domain::referral::OpParam] = &[
    crate::domain::referral::OpParam::new(
        "eventsSinceNumber",
        0,
        "1",
        "string",
        "events after this number (default 0)",
    ),
    crate::domain::referral::OpParam::new(
        "eventsUntilNumber",
        0,
        "1",
        "string",
        "up to this number",
    ),
];

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
    s.at("/channel/payload").and_then(Value::as_str) == Some(PAYLOAD)
}

pub fn endpoint(s: &Value) -> Option<&str> {
    s.at("/channel/endpoint").and_then(Value::as_str)
}

/// Seconds between heartbeats, if asked for.
pub fn heartbeat(s: &Value) -> Option<i64> {
    s.at("/channel/extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(HEARTBEAT_EXTENSION))?
        .get("valueUnsignedInt")?
        .as_i64()
        .filter(|n| *n > 0)
}

/// The channel headers as (name, value).
pub fn headers(s: &Value) -> Vec<(String, String)> {
    s.at("/channel/header")
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
    match s.at("/channel/type").and_then(Value::as_str) {
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
    match s.at("/channel/payload").and_then(Value::as_str) {
        None | Some(PAYLOAD) => {}
        Some(p) => issues.push(Issue::invalid_at(
            "Subscription.channel.payload",
            format!("({p}) must be {PAYLOAD} (the resource) or absent (its id only)"),
        )),
    }
    for (i, h) in s
        .at("/channel/header")
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

/// What every subscriber told of the same events gets, serialised once: each event's
/// `notification-event` parameter and, for full-resource payloads, the resources' entries
/// (each with a leading comma, to follow the parts in front of them).
#[derive(Default)]
pub struct Shared {
    params: String,
    entries: String,
}

impl Shared {
    pub fn new(base: &str, events: &[Event]) -> Shared {
        let mut shared = Shared::default();
        for e in events {
            shared.params.push(',');
            shared.params.push_str(
                &json!({"name": "notification-event", "part": [
                    {"name": "event-number", "valueString": e.number.to_string()},
                    {"name": "timestamp", "valueInstant": e.at},
                    {"name": "focus", "valueReference": {"reference": e.focus}},
                ]})
                .to_string(),
            );
            let Some(r) = &e.resource else { continue };
            let (t, id) = (
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default(),
            );
            shared.entries.push(',');
            shared.entries.push_str(
                &json!({
                    "fullUrl": format!("{base}/{t}/{id}"),
                    "resource": r,
                    "request": {"method": "PUT", "url": format!("{t}/{id}")},
                    "response": {"status": "200"},
                })
                .to_string(),
            );
        }
        shared
    }
}

/// A notification Bundle (`type`: handshake, heartbeat or event-notification) as JSON text:
/// this subscription's status parameters, then the shared events.
pub fn notification_text(
    subscription: &str,
    status: &str,
    kind: &str,
    since_start: i64,
    shared: &Shared,
) -> String {
    let head = [
        json!({"name": "subscription", "valueReference": {"reference": format!("Subscription/{subscription}")}}),
        json!({"name": "status", "valueCode": status}),
        json!({"name": "type", "valueCode": kind}),
        json!({"name": "events-since-subscription-start", "valueString": since_start.to_string()}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join(",");
    let status_entry = format!(
        r#"{{"fullUrl":{},"resource":{{"resourceType":"Parameters","parameter":[{head}{}]}},"request":{},"response":{{"status":"200"}}}}"#,
        json!(format!("urn:uuid:{}", uuid::Uuid::new_v4())),
        shared.params,
        json!({"method": "GET", "url": format!("Subscription/{subscription}/$status")}),
    );
    format!(
        r#"{{"resourceType":"Bundle","id":{},"meta":{},"type":"history","timestamp":{},"entry":[{status_entry}{}]}}"#,
        json!(uuid::Uuid::new_v4().to_string()),
        json!({"profile": [crate::fhir::bundle::PROFILE]}),
        json!(crate::fhir::datetime::instant(
            chrono::Utc::now().naive_utc()
        )),
        shared.entries,
    )
}

/// The same notification as a JSON value (for an answer the server builds further).
pub fn notification(
    base: &str,
    subscription: &str,
    status: &str,
    kind: &str,
    since_start: i64,
    events: &[Event],
) -> Value {
    let text = notification_text(
        subscription,
        status,
        kind,
        since_start,
        &Shared::new(base, events),
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_notifications_are_the_bundle_they_describe() {
        let events = [
            Event {
                number: 7,
                at: "2026-12-01T10:00:00.000Z".into(),
                focus: "ServiceRequest/a\"b/_history/2".into(),
                resource: None,
            },
            Event {
                number: 8,
                at: "2026-12-01T10:00:01.000Z".into(),
                focus: "ServiceRequest/c/_history/1".into(),
                resource: Some(json!({"resourceType": "ServiceRequest", "id": "c"})),
            },
        ];
        let b = notification(
            "http://x/FHIR/R4",
            "s1",
            "active",
            "event-notification",
            8,
            &events,
        );
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "history");
        let params = b["entry"][0]["resource"]["parameter"]
            .as_array()
            .expect("an array");
        assert_eq!(params.len(), 6);
        assert_eq!(params[0]["valueReference"]["reference"], "Subscription/s1");
        assert_eq!(params[3]["valueString"], "8");
        assert_eq!(
            params[4]["part"][2]["valueReference"]["reference"],
            "ServiceRequest/a\"b/_history/2"
        );
        assert_eq!(params[5]["part"][0]["valueString"], "8");
        assert_eq!(b["entry"][0]["request"]["url"], "Subscription/s1/$status");
        assert_eq!(b["entry"].as_array().expect("an array").len(), 2);
        assert_eq!(
            b["entry"][1]["fullUrl"],
            "http://x/FHIR/R4/ServiceRequest/c"
        );
        // A handshake has the status entry only.
        let h = notification("http://x/FHIR/R4", "s1", "requested", "handshake", 0, &[]);
        assert_eq!(h["entry"].as_array().expect("an array").len(), 1);
        assert_eq!(
            h["entry"][0]["resource"]["parameter"]
                .as_array()
                .expect("an array")
                .len(),
            4
        );
    }
}

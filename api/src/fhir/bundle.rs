//! Bundles: searchset and history.

use serde_json::{json, Value};

use super::datetime;

/// One searchset entry.
pub struct Entry {
    pub full_url: String,
    pub resource: Value,
    pub include: bool,
    /// For a `near` search: how far the match is, in km.
    pub distance_km: Option<f64>,
}

pub struct Links {
    pub self_url: String,
    pub next: Option<String>,
    pub previous: Option<String>,
}

impl Links {
    fn to_json(&self) -> Value {
        let mut link = vec![json!({"relation": "self", "url": self.self_url})];
        if let Some(n) = &self.next {
            link.push(json!({"relation": "next", "url": n}));
        }
        if let Some(p) = &self.previous {
            link.push(json!({"relation": "previous", "url": p}));
        }
        json!(link)
    }
}

/// The UK Core profile every Bundle the server returns claims.
pub const PROFILE: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Bundle";

pub fn searchset(
    total: Option<i64>,
    links: &Links,
    entries: Vec<Entry>,
    outcome: Option<Value>,
) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": datetime::instant(chrono::Utc::now().naive_utc()), "profile": [PROFILE]},
        "type": "searchset",
    });
    if let Some(t) = total {
        b["total"] = json!(t);
    }
    b["link"] = links.to_json();
    let mut out: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut search = json!({"mode": if e.include { "include" } else { "match" }});
            if let Some(d) = e.distance_km {
                let value = (d * 1000.0).round() / 1000.0;
                search["extension"] = json!([{
                    "url": "http://hl7.org/fhir/StructureDefinition/location-distance",
                    "valueDistance": {"value": value, "unit": "km", "system": "http://unitsofmeasure.org", "code": "km"},
                }]);
            }
            json!({"fullUrl": e.full_url, "resource": e.resource, "search": search})
        })
        .collect();
    if let Some(oo) = outcome {
        out.push(json!({"resource": oo, "search": {"mode": "outcome"}}));
    }
    if !out.is_empty() {
        b["entry"] = json!(out);
    }
    b
}

/// One history entry (a version).
pub struct HistoryEntry {
    pub full_url: String,
    pub resource: Option<Value>,
    pub method: String,
    pub url: String,
    pub status: &'static str,
    pub etag: String,
    pub last_modified: String,
}

pub fn history(total: i64, links: &Links, entries: Vec<HistoryEntry>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": datetime::instant(chrono::Utc::now().naive_utc()), "profile": [PROFILE]},
        "type": "history",
        "total": total,
    });
    b["link"] = links.to_json();
    let out: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut entry = json!({"fullUrl": e.full_url});
            if let Some(r) = e.resource {
                entry["resource"] = r;
            }
            entry["request"] = json!({"method": e.method, "url": e.url});
            entry["response"] =
                json!({"status": e.status, "etag": e.etag, "lastModified": e.last_modified});
            entry
        })
        .collect();
    if !out.is_empty() {
        b["entry"] = json!(out);
    }
    b
}

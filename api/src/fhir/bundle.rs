//! Bundles: searchset and history.

use serde_json::{json, Value};

use super::datetime;

/// One searchset entry.
pub struct Entry<'a> {
    pub full_url: String,
    pub resource: EntryResource<'a>,
    pub include: bool,
    /// For a `near` search: how far the match is, in km.
    pub distance_km: Option<f64>,
    /// For a patient-centred service search: how soon the service could see the patient
    /// (`Extension-eRS-IndicativeWaitTime`, made by `service_search::wait_extension`).
    pub wait: Option<Value>,
}

/// An entry's resource: its stored JSON text, written into the Bundle as it is (a search page
/// is mostly resources returned whole, which need not be parsed and built again), or a value
/// the server made or shaped (`_summary`, `_elements`).
pub enum EntryResource<'a> {
    Stored(&'a str),
    Value(Value),
}

impl serde::Serialize for EntryResource<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Checked as JSON on the way (a scan, no values built).
            EntryResource::Stored(text) => {
                serde_json::from_str::<&serde_json::value::RawValue>(text)
                    .map_err(|e| serde::ser::Error::custom(format!("stored JSON unreadable: {e}")))?
                    .serialize(s)
            }
            EntryResource::Value(v) => v.serialize(s),
        }
    }
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
    entries: Vec<Entry<'_>>,
    outcome: Option<Value>,
) -> Result<String, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Bundle<'a> {
        #[serde(rename = "resourceType")]
        resource_type: &'static str,
        id: String,
        meta: Value,
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<i64>,
        link: Value,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        entry: Vec<BundleEntry<'a>>,
    }
    #[derive(serde::Serialize)]
    struct BundleEntry<'a> {
        #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
        full_url: Option<String>,
        resource: EntryResource<'a>,
        search: Value,
    }
    let mut entry: Vec<BundleEntry<'_>> = entries
        .into_iter()
        .map(|e| {
            let mut search = json!({"mode": if e.include { "include" } else { "match" }});
            let mut extension = Vec::new();
            if let Some(d) = e.distance_km {
                let value = (d * 1000.0).round() / 1000.0;
                extension.push(json!({
                    "url": "http://hl7.org/fhir/StructureDefinition/location-distance",
                    "valueDistance": {"value": value, "unit": "km", "system": "http://unitsofmeasure.org", "code": "km"},
                }));
            }
            extension.extend(e.wait);
            if !extension.is_empty() {
                search["extension"] = Value::Array(extension);
            }
            BundleEntry {
                full_url: Some(e.full_url),
                resource: e.resource,
                search,
            }
        })
        .collect();
    if let Some(oo) = outcome {
        entry.push(BundleEntry {
            full_url: None,
            resource: EntryResource::Value(oo),
            search: json!({"mode": "outcome"}),
        });
    }
    serde_json::to_string(&Bundle {
        resource_type: "Bundle",
        id: uuid::Uuid::new_v4().to_string(),
        meta: json!({"lastUpdated": datetime::instant(chrono::Utc::now().naive_utc()), "profile": [PROFILE]}),
        kind: "searchset",
        total,
        link: links.to_json(),
        entry,
    })
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

pub fn history(total: Option<i64>, links: &Links, entries: Vec<HistoryEntry>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": datetime::instant(chrono::Utc::now().naive_utc()), "profile": [PROFILE]},
        "type": "history",
    });
    if let Some(t) = total {
        b["total"] = json!(t);
    }
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

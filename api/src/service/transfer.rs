//! Export to and import from NDJSON files for operators (`ers-server export` / `import`): the
//! same shape as a FHIR Bulk Data export, for migrations and load tests. Export reads every
//! live resource of the types (no organisation scoping: it is the operator's copy of the
//! database). Import goes through the same use cases as the API (validation, indexes,
//! reporting rows, audit), in batches of one transaction each, and is idempotent:
//! a resource already held with the same content is left alone, a changed one becomes a new
//! version, a new one is created with its id.

use chrono::{NaiveDateTime, Utc};
use ers_schema::exports::{self as store, PageQuery};
use ers_schema::{store as resources, write_tx, Author, DbConnection};
use serde_json::Value;

use super::audit::{self, AuditDraft, Outcome};
use super::resource::{self, IfMatch, Writer};
use super::{Result, ServiceError};
use crate::fhir::registry::{self, ResourceDef, Visibility};

/// Resources read per query.
const PAGE: i64 = 5000;

/// Types in the order an import must write them (what is referred to first).
pub const IMPORT_ORDER: &[&str] = &[
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "HealthcareService",
    "Schedule",
    "Slot",
    "Patient",
    "ServiceRequest",
    "Appointment",
    "DocumentReference",
    "Communication",
];

fn operator(action: &str) -> (Author, AuditDraft) {
    let request_id = format!("{action}-{}", uuid::Uuid::new_v4());
    (
        Author {
            user: None,
            role: "SYSTEM".into(),
            org: "ERS".into(),
            request_id: request_id.clone(),
            client_id: None,
            on_behalf_of: None,
        },
        AuditDraft {
            user_id: Some(format!("ers-server {action}")),
            role: Some("SYSTEM".into()),
            method: action.to_uppercase(),
            path: "ndjson".into(),
            request_id,
            ..Default::default()
        },
    )
}

fn query(def: &ResourceDef, since: Option<NaiveDateTime>, until: NaiveDateTime) -> PageQuery {
    PageQuery {
        res_type: def.name.to_owned(),
        since,
        until: Some(until),
        required: Vec::new(),
    }
}

/// How many resources of each type an export as of `until` covers.
pub fn count(
    c: &mut DbConnection,
    types: &[&'static ResourceDef],
    since: Option<NaiveDateTime>,
    until: NaiveDateTime,
) -> Result<Vec<u64>> {
    types
        .iter()
        .map(|d| Ok(super::provenance::count(c, &query(d, since, until))?.max(0) as u64))
        .collect()
}

/// Hands every live resource of the types changed after `since` (as of `until`), in id order
/// page by page, to `write(type, content)`; audits the export. Returns how many.
pub fn dump(
    c: &mut DbConnection,
    types: &[&'static ResourceDef],
    since: Option<NaiveDateTime>,
    until: NaiveDateTime,
    write: &mut dyn FnMut(&str, &str) -> std::io::Result<()>,
) -> Result<u64> {
    let (_, draft) = operator("export");
    let mut n = 0;
    for def in types {
        let q = query(def, since, until);
        let mut after = store::Cursor::default();
        loop {
            let rows = super::provenance::page(c, &q, &after, PAGE)?;
            let short = (rows.len() as i64) < PAGE;
            for row in rows {
                write(def.name, &row.content)
                    .map_err(|e| ServiceError::Internal(format!("writing {}: {e}", def.name)))?;
                n += 1;
                after = store::Cursor::after(&row);
            }
            if short {
                break;
            }
        }
    }
    audit::record(
        c,
        &draft,
        &Outcome {
            action: "E",
            subtype: "export".into(),
            status: 200,
            description: Some(format!(
                "NDJSON export of {n} resources ({})",
                types.iter().map(|d| d.name).collect::<Vec<_>>().join(",")
            )),
        },
        &[],
    )?;
    Ok(n)
}

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl Imported {
    pub fn total(&self) -> u64 {
        self.created + self.updated + self.unchanged
    }
}

/// The content without what the server sets on each version.
fn comparable(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
        m.shift_remove("versionId");
        m.shift_remove("lastUpdated");
    }
    v
}

/// The organisations that may see an imported resource of a scoped type: a referral's own
/// (referrer and providers); for what belongs to a referral or A&G request (appointments,
/// documents, messages), the request's.
fn access_for(c: &mut DbConnection, def: &ResourceDef, body: &Value) -> Result<Vec<String>> {
    match (def.visibility, def.name) {
        (Visibility::Everyone, _) => Ok(Vec::new()),
        (_, "ServiceRequest") => super::referral::organisations(c, body),
        (_, "Appointment" | "DocumentReference" | "Communication") => {
            let request = crate::fhir::index::all_references(body)
                .into_iter()
                .find_map(|(_, r)| r.strip_prefix("ServiceRequest/").map(str::to_owned))
                .ok_or_else(|| {
                    ServiceError::BadRequest(format!(
                        "a {} is imported for its referral or A&G request, and this one refers to none",
                        def.name
                    ))
                })?;
            let id = request.split('/').next().unwrap_or_default().to_owned();
            let codes = resources::token_codes(c, "ServiceRequest", &id, super::scope::PARAM)?;
            if codes.is_empty() {
                return Err(ServiceError::ReferenceNotFound {
                    path: def.name.to_owned(),
                    reference: format!("ServiceRequest/{id} (import it first)"),
                });
            }
            Ok(codes)
        }
        _ => Err(ServiceError::BadRequest(format!(
            "{} resources are not imported (importable: {})",
            def.name,
            IMPORT_ORDER.join(", ")
        ))),
    }
}

/// A copy of the resource without its references to resources not held yet of its own type or
/// a type imported after it (a referral's letter is a DocumentReference that itself refers to
/// the referral; an A&G request refers to the referral it became): each goes with the
/// top-level element item that holds it. None when nothing had to go.
fn without_forward_references(c: &mut DbConnection, body: &Value) -> Result<Option<Value>> {
    let own = import_rank(
        body.get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let mut drop: Vec<(String, Option<usize>)> = Vec::new();
    for (path, r) in crate::fhir::index::all_references(body) {
        let Some((t, id)) = r.split_once('/') else {
            continue;
        };
        if import_rank(t) < own || resources::exists(c, t, id)? {
            continue;
        }
        // `Type.element[i].…` or `Type.element.…`
        let first = path.split('.').nth(1).unwrap_or_default();
        let (name, index) = match first.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse().ok()),
            None => (first, None),
        };
        drop.push((name.to_owned(), index));
    }
    if drop.is_empty() {
        return Ok(None);
    }
    let mut copy = body.clone();
    drop.sort();
    drop.dedup();
    // Highest index first, so the earlier ones stay where they are.
    for (name, index) in drop.into_iter().rev() {
        let Some(o) = copy.as_object_mut() else {
            break;
        };
        match index {
            Some(i) => {
                if let Some(list) = o.get_mut(&name).and_then(Value::as_array_mut) {
                    if i < list.len() {
                        list.remove(i);
                    }
                    if list.is_empty() {
                        o.shift_remove(&name);
                    }
                }
            }
            None => {
                o.shift_remove(&name);
            }
        }
    }
    Ok(Some(copy))
}

/// Imports one batch of resources in one transaction (all or none). Resources written without
/// some references (see `without_forward_references`) come back in `deferred`, to import
/// again once everything else is in.
pub fn import_batch(c: &mut DbConnection, batch: Vec<Value>) -> Result<(Imported, Vec<Value>)> {
    let (author, draft) = operator("import");
    write_tx(c, |c| {
        let mut done = Imported::default();
        let mut deferred = Vec::new();
        for full in batch {
            let body = match without_forward_references(c, &full)? {
                Some(partial) => {
                    deferred.push(full);
                    partial
                }
                None => full,
            };
            let t = body
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let def = registry::find(&t)
                .filter(|d| IMPORT_ORDER.contains(&d.name))
                .ok_or_else(|| {
                    ServiceError::BadRequest(format!(
                        "'{t}' resources are not imported (importable: {})",
                        IMPORT_ORDER.join(", ")
                    ))
                })?;
            let id = body
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ServiceError::BadRequest(format!("a {t} without an id cannot be imported"))
                })?;
            let access = access_for(c, def, &body)?;
            let w = Writer::new(&author, &draft)
                .visible_to(&access)
                .as_consequence();
            match resources::get_current(c, def.name, &id)? {
                Some(row) if !row.is_deleted() => {
                    let held: Value = serde_json::from_str(&row.content)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                    if comparable(held) == comparable(body.clone()) {
                        done.unchanged += 1;
                        continue;
                    }
                    resource::update(
                        c,
                        def,
                        &id,
                        body,
                        IfMatch {
                            version: Some(row.version_id),
                            required: false,
                        },
                        &w,
                    )?;
                    done.updated += 1;
                }
                Some(_) => {
                    return Err(ServiceError::Gone {
                        res_type: t,
                        id,
                        version: 0,
                    })
                }
                None => {
                    resource::create(c, def, body, &w, None, Some(id))?;
                    done.created += 1;
                }
            }
        }
        Ok((done, deferred))
    })
}

/// The position of a type in the import order (unknown types last).
pub fn import_rank(res_type: &str) -> usize {
    IMPORT_ORDER
        .iter()
        .position(|t| *t == res_type)
        .unwrap_or(IMPORT_ORDER.len())
}

/// Now, for an export's "as of".
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

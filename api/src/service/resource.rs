//! Generic resource use cases: create, read, vread, update, delete, search, history.

use crate::fhir::At;
use chrono::{NaiveDateTime, Utc};
use ers_schema::search::{self as store_search, SearchQuery};
use ers_schema::store::{self, HistoryQuery, NewVersion};
use ers_schema::{
    read_tx, write_tx, Author, DbConnection, IndexEntries, ResourceRow, StorageError, UniqueKey,
    VersionRow,
};
use serde_json::Value;

use super::audit::{self, AuditDraft, Outcome};
use super::{provenance, scope, ServiceError};
use crate::domain::Caller;
use crate::fhir::index;
use crate::fhir::outcome::Issue;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::search::{SearchRequest, TotalMode};

use super::Result;

/// A resource ready to store: checked, with its index entries and references to verify.
struct Prepared {
    content: Value,
    index: IndexEntries,
    references: Vec<(String, String)>,
}

/// Resource rules in one place: type, id, the type's own checks, indexing. `stored`: a stored
/// version of the same resource the body may have been edited from (an update).
fn prepare(def: &'static ResourceDef, body: Value, stored: Option<&Value>) -> Result<Prepared> {
    let body_type = body
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if body_type != def.name {
        return Err(ServiceError::BadRequest(format!(
            "the body is a {body_type} but the URL is for {}",
            def.name
        )));
    }
    // One structural check and canonical element order for every write path (HTTP and seed).
    let mut body = match stored {
        Some(stored) => ers_fhir::canonicalise_like(body, stored),
        None => ers_fhir::canonicalise(body),
    }
    .map_err(|e| ServiceError::BadRequest(format!("not a valid FHIR R4 {}: {e}", def.name)))?;
    // Server-managed meta is replaced; profile, tag and security are kept.
    if let Some(meta) = body.get_mut("meta").and_then(Value::as_object_mut) {
        meta.shift_remove("versionId");
        meta.shift_remove("lastUpdated");
    }
    // R4 structure, codes and formats and the type's profile (e-RS on UK Core), then e-RS
    // rules: every problem in one answer.
    let profile = crate::fhir::resources::server_profile(def.name, &body);
    let found: Vec<Issue> = ers_fhir::validate::validate(&body, profile)
        .into_iter()
        .filter(|f| f.severity == ers_fhir::validate::Severity::Error)
        .map(crate::fhir::outcome::from_finding)
        .collect();
    let (checked, rules) = match (def.check)(&body) {
        Ok(c) => (c, Vec::new()),
        Err(more) => (Default::default(), more),
    };
    let issues = merge_issues(found, rules);
    if !issues.is_empty() {
        return Err(ServiceError::Invalid(issues));
    }
    claim_profile(
        &mut body,
        &profile.map_or_else(|| ers_fhir::validate::base_url(def.name), |p| p.url.clone()),
    );
    let index = index::entries(def, &body, &checked);
    let references = index::all_references(&body)
        .into_iter()
        .filter_map(|(path, r)| {
            if r.starts_with('#')
                || r.starts_with("http://")
                || r.starts_with("https://")
                || r.starts_with("urn:")
            {
                None
            } else {
                Some((path, r))
            }
        })
        .collect();
    Ok(Prepared {
        content: body,
        index,
        references,
    })
}

/// The index entries a stored version was written with, from its content (its `_access`
/// tokens aside: `store::KnownIndex`). Its unique keys are `same_keys`' when its identifiers
/// are the new version's; otherwise its type's checks say them again (None if they no longer
/// pass: the store then compares every table with its rows).
fn indexed_with(
    def: &ResourceDef,
    stored: &Value,
    same_keys: Option<&IndexEntries>,
) -> Option<IndexEntries> {
    let checked = match same_keys {
        Some(_) => registry::Checked::default(),
        None => (def.check)(stored).ok()?,
    };
    let mut entries = index::entries(def, stored, &checked);
    if let Some(same) = same_keys {
        entries.unique = same.unique.clone();
    }
    Some(entries)
}

/// The index entries a stored version's content makes now (a reindex), and whether they hold
/// its unique keys: not when its type's checks no longer pass it (they then stay as stored).
pub(super) fn index_of_stored(def: &ResourceDef, stored: &Value) -> (IndexEntries, bool) {
    match indexed_with(def, stored, None) {
        Some(entries) => (entries, true),
        None => (
            index::entries(def, stored, &registry::Checked::default()),
            false,
        ),
    }
}

/// The profile's findings and the e-RS rules' issues together. Where an e-RS rule speaks of
/// the same element as a profile finding, or of a part of it (a required subject, a shortlist
/// too long, its second service), its message is the more precise one and the finding is left
/// out. Findings on the resource as a whole are always kept.
fn merge_issues(found: Vec<Issue>, rules: Vec<Issue>) -> Vec<Issue> {
    let covered = |at: &str| {
        at.contains('.')
            && rules
                .iter()
                .filter_map(|r| r.expression.as_deref())
                .any(|r| {
                    r.strip_prefix(at)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                })
    };
    let mut issues: Vec<Issue> = found
        .into_iter()
        .filter(|f| !f.expression.as_deref().is_some_and(covered))
        .collect();
    issues.extend(rules);
    issues
}

/// Adds the profile the resource has just been validated against to `meta.profile`.
fn claim_profile(body: &mut Value, url: &str) {
    let Some(o) = body.as_object_mut() else {
        return;
    };
    let meta = o.entry("meta").or_insert_with(|| serde_json::json!({}));
    let Some(m) = meta.as_object_mut() else {
        return;
    };
    let profiles = m.entry("profile").or_insert_with(|| serde_json::json!([]));
    if let Some(list) = profiles.as_array_mut() {
        let claimed = list
            .iter()
            .any(|x| x.as_str().is_some_and(|u| u.split('|').next() == Some(url)));
        if !claimed {
            list.push(Value::from(url));
        }
    }
}

/// What `$validate` found: every problem, errors and warnings, nothing stored.
pub fn validate_only(
    def: &'static ResourceDef,
    body: &Value,
    profile: ValidateAgainst,
) -> Vec<Issue> {
    let (chosen, strict) = match profile {
        ValidateAgainst::Server => (crate::fhir::resources::server_profile(def.name, body), true),
        ValidateAgainst::Profile(p) => (Some(p), p.is_project()),
        ValidateAgainst::Base => (None, false),
    };
    let found: Vec<Issue> = ers_fhir::validate::validate(body, chosen)
        .into_iter()
        .map(crate::fhir::outcome::from_finding)
        .collect();
    // e-RS rules are errors under the project's profiles and warnings under UK Core or base R4
    // (UK Core accepts an NHS number that fails Modulus 11, for example).
    let rules = match (def.check)(body) {
        Ok(_) => Vec::new(),
        Err(more) => more
            .into_iter()
            .map(|mut i| {
                if !strict {
                    i.severity = crate::fhir::outcome::Severity::Warning;
                }
                i
            })
            .collect(),
    };
    merge_issues(found, rules)
}

/// What `$validate` checks against.
#[derive(Debug, Clone, Copy)]
pub enum ValidateAgainst {
    /// Everything the server enforces on a write: the profile it picks for the resource (e-RS
    /// on UK Core) and the e-RS rules.
    Server,
    /// One loaded profile (UK Core's or the project's); e-RS rules are errors only under the
    /// project's.
    Profile(&'static ers_fhir::validate::Profile),
    /// The base R4 definition alone.
    Base,
}

/// The ODS code of the organisation that owns a Directory of Services resource: a
/// HealthcareService's provider, a Schedule's service's, a Slot's schedule's. None for types
/// without an owner, or when the chain is incomplete.
fn owner_ods(
    c: &mut DbConnection,
    res_type: &str,
    body: &Value,
    depth: u8,
) -> Result<Option<String>> {
    let reference = |v: &Value, ptr: &str| {
        v.at(ptr)
            .and_then(Value::as_str)
            .and_then(index::split_reference)
            .map(|(t, i)| (t.to_owned(), i.to_owned()))
    };
    let load = |c: &mut DbConnection, t: &str, id: &str| -> Result<Option<Value>> {
        Ok(match super::memo::current(c, t, id)? {
            Some(row) => serde_json::from_str(&row.content).ok(),
            None => None,
        })
    };
    if depth > 3 {
        return Ok(None);
    }
    let next = match res_type {
        "HealthcareService" => {
            let Some((t, id)) = reference(body, "/providedBy/reference") else {
                return Ok(None);
            };
            let org = load(c, &t, &id)?;
            return Ok(org.as_ref().and_then(|o| {
                o.get("identifier")?
                    .as_array()?
                    .iter()
                    .find(|i| {
                        i.get("system").and_then(Value::as_str)
                            == Some(crate::domain::OdsCode::ORGANIZATION_SYSTEM)
                    })?
                    .get("value")?
                    .as_str()
                    .map(str::to_owned)
            }));
        }
        "Schedule" => body
            .get("actor")
            .and_then(Value::as_array)
            .and_then(|actors| {
                actors.iter().find_map(|a| {
                    a.at("/reference")
                        .and_then(Value::as_str)
                        .and_then(index::split_reference)
                        .filter(|(t, _)| *t == "HealthcareService")
                        .map(|(t, i)| (t.to_owned(), i.to_owned()))
                })
            }),
        "Slot" => reference(body, "/schedule/reference"),
        _ => return Ok(None),
    };
    let Some((t, id)) = next else { return Ok(None) };
    match load(c, &t, &id)? {
        Some(v) => owner_ods(c, &t, &v, depth + 1),
        None => Ok(None),
    }
}

/// A caller acting for one organisation may change only that organisation's services,
/// schedules and slots (server-made writes, with no acting organisation, are exempt).
fn check_owner(
    c: &mut DbConnection,
    res_type: &str,
    body: &Value,
    audit: &AuditDraft,
) -> Result<()> {
    let Some(acting) = audit.org.as_deref() else {
        return Ok(());
    };
    if let Some(owner) = owner_ods(c, res_type, body, 0)? {
        if owner != acting {
            return Err(ServiceError::Forbidden(format!(
                "{} at {acting} may not change a {res_type} of organisation {owner}",
                audit.role.as_deref().unwrap_or("the caller")
            )));
        }
    }
    Ok(())
}

/// The Directory's rules across resources, for an edit by a caller acting for an
/// organisation (a service definer; the server's own bulk writes are made consistent).
/// `before` is the live version an update replaces.
fn check_directory_rules(
    c: &mut DbConnection,
    res_type: &str,
    body: &Value,
    before: Option<&Value>,
    audit: &AuditDraft,
) -> Result<()> {
    if audit.org.is_some() && res_type == "Slot" {
        super::directory::check_slot_ahead(body, before)?;
        super::directory::check_slot_priority(c, body)?;
    }
    Ok(())
}

thread_local! {
    /// While a transaction entry is written: the resources (`Type/id`) its references name
    /// that entries run after it create (a cycle of references between the entries), which
    /// the transaction checks once it has written them all (`with_forward`).
    static FORWARD: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` (one transaction entry's write) taking the references to `forward` as live: the
/// transaction writes them later, and answers for them at its end.
pub fn with_forward<T>(forward: &[String], f: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            FORWARD.with(|s| s.borrow_mut().clear());
        }
    }
    FORWARD.with(|s| *s.borrow_mut() = forward.to_vec());
    let _clear = Clear;
    f()
}

/// Every local reference must name a live resource of a hosted type (or one the transaction
/// writes later: `with_forward`).
fn verify_references(conn: &mut DbConnection, refs: &[(String, String)]) -> Result<()> {
    let mut targets = Vec::with_capacity(refs.len());
    for (path, reference) in refs {
        let Some((t, id)) = index::split_reference(reference) else {
            return Err(ServiceError::Invalid(vec![Issue::invalid_at(
                path.clone(),
                format!("({reference}) is not a literal reference of the form Type/id"),
            )]));
        };
        targets.push((t, id));
    }
    // What the use case has read in its transaction and found live needs no query.
    let forward = FORWARD.with(|s| s.borrow().clone());
    let is_forward = |t: &str, id: &str| forward.iter().any(|f| f.split_once('/') == Some((t, id)));
    let read_live: Vec<bool> = targets
        .iter()
        .map(|(t, id)| super::memo::known_live(t, id) || is_forward(t, id))
        .collect();
    let unread: Vec<(&str, &str)> = targets
        .iter()
        .zip(&read_live)
        .filter(|((t, _), known)| !**known && registry::find(t).is_some())
        .map(|(target, _)| *target)
        .collect();
    let live = if unread.is_empty() {
        Default::default()
    } else {
        store::live_among(conn, &unread)?
    };
    // The first that does not resolve is named, in the order of the resource.
    for (((path, reference), (t, id)), known) in refs.iter().zip(&targets).zip(&read_live) {
        if !known && !live.contains(&((*t).to_owned(), (*id).to_owned())) {
            return Err(ServiceError::ReferenceNotFound {
                path: path.clone(),
                reference: reference.clone(),
            });
        }
    }
    // A version named (`Type/id/_history/n`) must be one the resource has had; one of a
    // resource this transaction writes later is its first.
    let versioned: Vec<(&String, &String, (&str, &str), i64)> = refs
        .iter()
        .zip(&targets)
        .filter_map(|((path, reference), target)| {
            let n = reference.split_once("/_history/")?.1;
            let n = n.parse::<i64>().unwrap_or(0);
            Some((path, reference, *target, n))
        })
        .collect();
    if versioned.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(&str, &str)> = versioned
        .iter()
        .map(|(_, _, target, _)| *target)
        .filter(|(t, id)| !is_forward(t, id))
        .collect();
    let current = store::get_pairs(conn, &pairs)?;
    for (path, reference, (t, id), n) in versioned {
        let latest = if is_forward(t, id) {
            1
        } else {
            current
                .iter()
                .find(|r| r.res_type == t && r.id == id)
                .map_or(0, |r| r.version_id)
        };
        if !(1..=latest).contains(&n) {
            return Err(ServiceError::ReferenceNotFound {
                path: path.clone(),
                reference: reference.clone(),
            });
        }
    }
    Ok(())
}

/// The references of an update that need checking: all but those the stored version already
/// made at the same place and indexes (a search parameter's reference). The stored version's
/// index rows keep their targets from being deleted (`delete` refuses while any refer), so
/// those are live; a reference no search parameter indexes could have lost its target since,
/// and is checked again.
fn new_references(prepared: &Prepared, live_before: Option<&Value>) -> Vec<(String, String)> {
    let stored: std::collections::HashSet<(String, String)> = live_before
        .map(|b| index::all_references(b).into_iter().collect())
        .unwrap_or_default();
    let indexed = |reference: &str| {
        index::split_reference(reference).is_some_and(|(t, id)| {
            prepared
                .index
                .refs
                .iter()
                .any(|r| r.target_type == t && r.target_id == id)
        })
    };
    prepared
        .references
        .iter()
        .filter(|r| !(stored.contains(*r) && indexed(&r.1)))
        .cloned()
        .collect()
}

fn check_unique(
    conn: &mut DbConnection,
    def: &ResourceDef,
    index: &IndexEntries,
    except: Option<&str>,
) -> Result<()> {
    for key in &index.unique {
        if let Some(existing) = store::unique_owner(conn, def.name, key, except)? {
            return Err(ServiceError::Duplicate {
                res_type: def.name.to_owned(),
                system: key.system.clone(),
                value: key.value.clone(),
                existing,
            });
        }
    }
    Ok(())
}

/// Sets the version's id, number and time (`fhir::stamp`), and what a type records of the live
/// version it follows (`before`): when a referral entered its state.
fn stamp(
    def: &ResourceDef,
    content: &mut Value,
    id: &str,
    version: i64,
    at: NaiveDateTime,
    before: Option<&Value>,
) {
    crate::fhir::stamp(content, id, version, at);
    if def.name == "ServiceRequest" {
        crate::fhir::resources::service_request::stamp_since(content, before, at);
    }
}

fn now() -> NaiveDateTime {
    // Microsecond precision: what both databases keep.
    let t = Utc::now().naive_utc();
    t - chrono::Duration::nanoseconds(i64::from(t.and_utc().timestamp_subsec_nanos() % 1000))
}

/// A write's storage error: a unique key taken by another writer since the write looked
/// (`check_unique`) is a conflict naming the keys the write held (`res_type`'s).
pub(super) fn storage_conflict(
    e: StorageError,
    res_type: &str,
    keys: &[UniqueKey],
) -> ServiceError {
    if !e.is_unique_violation() {
        return ServiceError::Storage(e);
    }
    let keys = if keys.is_empty() {
        "(a unique identifier)".to_owned()
    } else {
        keys.iter()
            .map(|k| format!("{}|{}", k.system, k.value))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    ServiceError::DuplicateConcurrent {
        res_type: res_type.to_owned(),
        keys,
    }
}

/// What every stored version brings with it, in its own transaction: for types systems may
/// subscribe to the change event (no lost or phantom events), and for reported types its
/// reporting row (`reporting`). (Its Provenance is the version row itself: `provenance`.)
fn record_change(
    c: &mut DbConnection,
    res_type: &str,
    id: &str,
    version: i64,
    activity: &str,
    content: &Value,
) -> Result<()> {
    super::memo::forget(res_type, id);
    if registry::find(res_type).is_some_and(|d| d.events) {
        super::deferred::event(
            c,
            ers_schema::store::NewEvent {
                res_type: res_type.to_owned(),
                res_id: id.to_owned(),
                version_id: version,
                method: activity.to_owned(),
                occurred: now(),
            },
        )?;
    }
    super::reporting::record(c, res_type, id, content, activity == "DELETE")
}

/// Who writes, and what a use case adds to a plain write.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub author: &'a Author,
    pub audit: &'a AuditDraft,
    /// The organisations that may see the resource (ODS codes), for types scoped by
    /// organisation (`service::scope`).
    pub access: &'a [String],
    /// The write is a use case's consequence under its own rules, not an edit by the caller
    /// (a referrer's booking makes a provider's slot busy): the owning-organisation check of
    /// directory data does not apply.
    pub owner_exempt: bool,
    /// The resource's business identifiers were just drawn from a sequence (a new referral's
    /// UBRN): no other resource can hold them, so the create does not look for an owner
    /// first; the store's unique index still refuses a duplicate (409).
    pub fresh_keys: bool,
    /// The write may wait for the transaction's end (`deferred::hold`, where the store
    /// allows): the caller reads nothing more in the transaction.
    pub held: bool,
    /// The refusal when a held replacement finds its resource no longer at the version it
    /// replaces, given its id (by default `ConcurrentUpdate`).
    pub conflict: Option<fn(&str) -> ServiceError>,
}

impl<'a> Writer<'a> {
    /// A plain write by the caller.
    pub fn new(author: &'a Author, audit: &'a AuditDraft) -> Self {
        Writer {
            author,
            audit,
            access: &[],
            owner_exempt: false,
            fresh_keys: false,
            held: false,
            conflict: None,
        }
    }

    /// Held back to the transaction's end when `yes` (see `held`).
    pub fn held_back(self, yes: bool) -> Self {
        Writer { held: yes, ..self }
    }

    /// With this refusal if a held replacement meets a concurrent change (see `conflict`).
    pub fn conflict_is(self, conflict: fn(&str) -> ServiceError) -> Self {
        Writer {
            conflict: Some(conflict),
            ..self
        }
    }

    /// Held back as well when the write is a use case of its own (no larger one is
    /// gathering) that changes nothing after its own rows (`reporting::changes_more`): it is
    /// then the one statement of a `deferred::unit_tx`, with no transaction around it. Asked
    /// before that `unit_tx` starts gathering.
    fn on_its_own(self, res_type: &str) -> Self {
        let alone =
            !super::deferred::gathering() && !super::reporting::changes_more(res_type, false);
        self.held_back(self.held || alone)
    }

    /// Whether this write waits for the transaction's end.
    fn holds(&self, c: &DbConnection, res_type: &str) -> bool {
        self.held && super::deferred::gathering() && store::can_defer(c, res_type)
    }

    /// Its unique identifiers are fresh from a sequence (see `fresh_keys`).
    pub fn with_fresh_keys(self) -> Self {
        Writer {
            fresh_keys: true,
            ..self
        }
    }

    /// Visible to these organisations only.
    pub fn visible_to(self, access: &'a [String]) -> Self {
        Writer { access, ..self }
    }

    /// Exempt from the owning-organisation check (see `owner_exempt`).
    pub fn as_consequence(self) -> Self {
        Writer {
            owner_exempt: true,
            ..self
        }
    }
}

/// The outcome of a create: the stored row, or the one match of `If-None-Exist`.
pub enum Created {
    New(ResourceRow),
    Existing(ResourceRow),
}

/// `PUT /{type}?criteria` (conditional update): the one resource the criteria find is updated
/// (`Existing`, with the client's `If-Match` if it sent one); none found, the body is created
/// (`New`: the server assigns the id, so the body may not name one); several, 412.
pub fn conditional_update(
    conn: &mut DbConnection,
    def: &'static ResourceDef,
    (query, criteria): (SearchQuery, String),
    mut body: Value,
    precondition: IfMatch,
    w: &Writer<'_>,
) -> Result<Created> {
    let w = &w.on_its_own(def.name);
    super::deferred::unit_tx(conn, move |c| {
        let named = body.get("id").and_then(Value::as_str).map(str::to_owned);
        match the_match(c, &query, &criteria)? {
            None => match named {
                Some(id) => Err(ServiceError::BadRequest(format!(
                    "no {} matches '{criteria}', so this creates one, and the server assigns ids: leave out the body's id ({id})",
                    def.name
                ))),
                None => create(c, def, body, w, None, None),
            },
            Some(found) => {
                if let Some(id) = named.filter(|id| *id != found.id) {
                    return Err(ServiceError::BadRequest(format!(
                        "'{criteria}' finds {}/{}, but the body's id is {id}",
                        def.name, found.id
                    )));
                }
                if let Some(o) = body.as_object_mut() {
                    o.insert("id".into(), Value::from(found.id.clone()));
                }
                update(c, def, &found.id, body, precondition, w).map(Created::Existing)
            }
        }
    })
}

/// The one resource the criteria of a conditional create or update find, if any; several is
/// 412, naming how many (counted as far as a search's total is by default).
fn the_match(
    c: &mut DbConnection,
    query: &SearchQuery,
    criteria: &str,
) -> Result<Option<ResourceRow>> {
    let mut q = query.clone();
    q.offset = 0;
    q.limit = 2;
    let count = store_search::Count::UpTo(crate::fhir::search::COUNT_UP_TO);
    let (mut rows, total) = store_search::search_counted(c, &q, count)?;
    if rows.len() > 1 {
        return Err(ServiceError::ConditionalMultiple {
            criteria: criteria.to_owned(),
            matched: total.map_or_else(
                || format!("more than {}", crate::fhir::search::COUNT_UP_TO),
                |n| n.to_string(),
            ),
        });
    }
    Ok(rows.pop())
}

/// `POST /{type}` (with optional `If-None-Exist` criteria, already parsed).
pub fn create(
    conn: &mut DbConnection,
    def: &'static ResourceDef,
    body: Value,
    w: &Writer<'_>,
    if_none_exist: Option<(SearchQuery, String)>,
    assigned_id: Option<String>,
) -> Result<Created> {
    let (author, audit, access) = (w.author, w.audit, w.access);
    // A transaction assigns ids up front so its entries can refer to each other.
    let id = assigned_id.unwrap_or_else(crate::fhir::new_id);
    let mut prepared = prepare(def, body, None)?;
    prepared.index.tokens.extend(scope::entries(def, access)?);
    let w = &w.on_its_own(def.name);
    super::deferred::unit_tx(conn, |c| {
        if let Some((query, criteria)) = &if_none_exist {
            if let Some(row) = the_match(c, query, criteria)? {
                let outcome = Outcome {
                    action: "C",
                    subtype: "create".into(),
                    status: 200,
                    description: Some(format!(
                        "If-None-Exist '{criteria}' matched an existing resource"
                    )),
                };
                audit::record(c, audit, &outcome, &[audit::touched(&row)])?;
                return Ok(Created::Existing(row));
            }
        }
        verify_references(c, &prepared.references)?;
        if !w.owner_exempt {
            check_owner(c, def.name, &prepared.content, audit)?;
            check_directory_rules(c, def.name, &prepared.content, None, audit)?;
        }
        if !w.fresh_keys {
            check_unique(c, def, &prepared.index, None)?;
        }
        let last_updated = now();
        let mut content = prepared.content.clone();
        stamp(def, &mut content, &id, 1, last_updated, None);
        let text = content.to_string();
        let v = NewVersion {
            res_type: def.name,
            id: &id,
            version_id: 1,
            last_updated,
            content: &text,
            author,
        };
        let projection = super::reporting::projection(c, def.name, &id, &content)?;
        if w.holds(c, def.name) {
            let write = store::PendingWrite::insert(&v, &prepared.index, &projection);
            super::deferred::hold(c, write, None)?;
        } else {
            super::deferred::begin_writing(c)?;
            store::insert_resource(c, &v, &prepared.index, &projection)
                .map_err(|e| storage_conflict(e, def.name, &prepared.index.unique))?;
        }
        let row = ResourceRow {
            res_type: def.name.to_owned(),
            id: id.clone(),
            version_id: 1,
            last_updated,
            deleted: 0,
            content: text,
        };
        record_change(c, def.name, &id, 1, "CREATE", &content)?;
        super::memo::wrote(&row, content);
        let outcome = Outcome {
            action: "C",
            subtype: "create".into(),
            status: 201,
            description: None,
        };
        audit::record(c, audit, &outcome, &[audit::touched(&row)])?;
        Ok(Created::New(row))
    })
}

/// `GET /{type}/{id}`.
pub fn read(conn: &mut DbConnection, def: &ResourceDef, id: &str) -> Result<ResourceRow> {
    if provenance::is(def) {
        return provenance::read(conn, id);
    }
    match super::memo::current(conn, def.name, id)? {
        None => Err(ServiceError::NotFound {
            res_type: def.name.to_owned(),
            id: id.to_owned(),
        }),
        Some(row) if row.is_deleted() => Err(gone(&row)),
        Some(row) => Ok(row),
    }
}

/// Why a deleted resource is gone: deleted, or expired under the retention policy (which
/// says when and why).
fn gone(row: &ResourceRow) -> ServiceError {
    let expired = serde_json::from_str::<Value>(&row.content)
        .ok()
        .as_ref()
        .and_then(crate::fhir::resources::advice::expiry_explanation);
    match expired {
        Some(explanation) => ServiceError::Expired {
            res_type: row.res_type.clone(),
            id: row.id.clone(),
            explanation,
        },
        None => ServiceError::Gone {
            res_type: row.res_type.clone(),
            id: row.id.clone(),
            version: row.version_id,
        },
    }
}

/// Takes a resource out of live use with a last version (`content`, e.g. marked expired):
/// reads answer 410, searches no longer find it, its history stays.
pub fn retire(
    c: &mut DbConnection,
    def: &ResourceDef,
    current: &ResourceRow,
    mut content: Value,
    w: &Writer<'_>,
) -> Result<()> {
    let version = current.version_id + 1;
    let last_updated = now();
    let before = super::memo::parsed(current)?;
    stamp(
        def,
        &mut content,
        &current.id,
        version,
        last_updated,
        Some(&before),
    );
    let text = content.to_string();
    let v = NewVersion {
        res_type: def.name,
        id: &current.id,
        version_id: version,
        last_updated,
        content: &text,
        author: w.author,
    };
    super::deferred::begin_writing(c)?;
    if !store::delete_resource(c, &v, current.version_id)? {
        return Err(ServiceError::ConcurrentUpdate {
            res_type: def.name.to_owned(),
            id: current.id.clone(),
        });
    }
    // Who may see it stays (its history remains readable to them).
    if !w.access.is_empty() {
        store::replace_tokens(
            c,
            def.name,
            std::slice::from_ref(&current.id),
            scope::PARAM,
            w.access,
        )?;
    }
    record_change(c, def.name, &current.id, version, "DELETE", &Value::Null)
}

/// `GET /{type}/{id}/_history/{vid}`.
pub fn vread(
    conn: &mut DbConnection,
    def: &ResourceDef,
    id: &str,
    version: i64,
) -> Result<VersionRow> {
    if provenance::is(def) {
        return provenance::vread(conn, id, version);
    }
    match store::get_version(conn, def.name, id, version)? {
        Some(v) if v.is_deleted() => Err(ServiceError::Gone {
            res_type: def.name.to_owned(),
            id: id.to_owned(),
            version,
        }),
        Some(v) => Ok(v),
        None if store::get_current(conn, def.name, id)?.is_none() => Err(ServiceError::NotFound {
            res_type: def.name.to_owned(),
            id: id.to_owned(),
        }),
        None => Err(ServiceError::VersionNotFound {
            res_type: def.name.to_owned(),
            id: id.to_owned(),
            version,
        }),
    }
}

/// The version precondition of an update: the `If-Match` version, and whether one is required.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch {
    pub version: Option<i64>,
    pub required: bool,
}

impl IfMatch {
    /// A change of `def`/`id`, now at `current`: 412 when the version the client names is not
    /// the current one (it would overwrite or remove a version it has not seen), 428 when it
    /// names none and one is required (by the type, or by `ERS_REQUIRE_IF_MATCH`).
    fn check(self, def: &ResourceDef, id: &str, current: i64) -> Result<()> {
        match self.version {
            Some(given) if given != current => Err(ServiceError::VersionMismatch {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
                given,
                current,
            }),
            None if def.if_match_required || self.required => Err(ServiceError::IfMatchRequired {
                res_type: def.name.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// Writes a new version of a resource this request read at `version` (an operation's own
/// write, not a client's `PUT`): a change that committed in between is a concurrent change
/// (409 `StaleVersion`), not a failed `If-Match` precondition (412).
pub fn rewrite(
    conn: &mut DbConnection,
    def: &'static ResourceDef,
    id: &str,
    version: i64,
    body: Value,
    w: &Writer<'_>,
) -> Result<ResourceRow> {
    let precondition = IfMatch {
        version: Some(version),
        required: true,
    };
    update(conn, def, id, body, precondition, w).map_err(|e| match e {
        ServiceError::VersionMismatch {
            res_type,
            id,
            given,
            current,
        } => ServiceError::StaleVersion {
            res_type,
            id,
            given,
            current,
        },
        other => other,
    })
}

/// `PATCH /{type}/{id}`: a JSON Patch (RFC 6902) of the current version, written as an update
/// of that version, so checked and stored as a `PUT` of the result would be. The caller must
/// be one who may change it before the patch is tried (its `test` operations would otherwise
/// tell a stranger what the resource holds). `shape` checks the patched resource's R4
/// structure. With `If-Match` the patch applies to that version only; without, to the version
/// current when it is written (a change in between is read again, up to three times).
pub fn patch(
    conn: &mut DbConnection,
    def: &'static ResourceDef,
    id: &str,
    operations: &json_patch::Patch,
    precondition: IfMatch,
    w: &Writer<'_>,
    shape: &dyn Fn(&Value) -> std::result::Result<Value, String>,
) -> Result<ResourceRow> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = read(conn, def, id)?;
        precondition.check(def, id, current.version_id)?;
        let mut body: Value = super::parse_stored(&current)?;
        if !w.owner_exempt {
            check_owner(conn, def.name, &body, w.audit)?;
        }
        json_patch::patch(&mut body, operations).map_err(|e| {
            ServiceError::Invalid(vec![Issue::error(
                "processing",
                "INVALID_VALUE",
                format!(
                    "the JSON Patch does not apply to {}/{id} version {}: operation {} ({}) at '{}': {}",
                    def.name,
                    current.version_id,
                    e.operation,
                    operations
                        .get(e.operation)
                        .map(patch_op_name)
                        .unwrap_or("?"),
                    e.path,
                    e.kind
                ),
            )
            .with_expression(pointer_path(def.name, &e.path.to_string()))])
        })?;
        let patched = shape(&body).map_err(|e| {
            ServiceError::Invalid(vec![Issue::error(
                "structure",
                "INVALID_VALUE",
                format!(
                    "the patched {} is not a valid R4 {}: {e}",
                    def.name, def.name
                ),
            )])
        })?;
        let mut patched = patched;
        resolve_logical_references(conn, &mut patched)?;
        let pinned = IfMatch {
            version: Some(current.version_id),
            required: precondition.required,
        };
        match update_as(conn, def, id, patched, pinned, w, "patch") {
            Err(ServiceError::VersionMismatch { .. })
                if precondition.version.is_none() && attempt < 3 => {}
            done => return done,
        }
    }
}

/// A JSON Pointer into a resource as a FHIRPath location: `/name/0/given` in a Patient is
/// `Patient.name[0].given`.
fn pointer_path(res_type: &str, pointer: &str) -> String {
    let mut out = res_type.to_owned();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else {
            out.push('.');
            out.push_str(&token);
        }
    }
    out
}

fn patch_op_name(op: &json_patch::PatchOperation) -> &'static str {
    use json_patch::PatchOperation as Op;
    match op {
        Op::Add(_) => "add",
        Op::Remove(_) => "remove",
        Op::Replace(_) => "replace",
        Op::Move(_) => "move",
        Op::Copy(_) => "copy",
        Op::Test(_) => "test",
    }
}

/// `PUT /{type}/{id}`.
pub fn update(
    conn: &mut DbConnection,
    def: &'static ResourceDef,
    id: &str,
    body: Value,
    precondition: IfMatch,
    w: &Writer<'_>,
) -> Result<ResourceRow> {
    update_as(conn, def, id, body, precondition, w, "update")
}

/// An update, audited as the interaction that made it (`update`, or `patch`).
fn update_as(
    conn: &mut DbConnection,
    def: &'static ResourceDef,
    id: &str,
    body: Value,
    precondition: IfMatch,
    w: &Writer<'_>,
    interaction: &str,
) -> Result<ResourceRow> {
    let (author, audit, access) = (w.author, w.audit, w.access);
    match body.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(ServiceError::BadRequest(format!(
                "the resource id in the body ({body_id}) does not match the id in the URL ({id})"
            )))
        }
        None => {
            return Err(ServiceError::BadRequest(format!(
                "the body has no id; an update must carry the id from the URL ({id})"
            )))
        }
    }
    // An operation's edit of a version it has read: the memory holds that version.
    let held = super::memo::held(def.name, id);
    let mut prepared = prepare(def, body, held.as_deref())?;
    prepared.index.tokens.extend(scope::entries(def, access)?);
    let w = &w.on_its_own(def.name);
    super::deferred::unit_tx(conn, |c| {
        let current = super::memo::current(c, def.name, id)?.ok_or_else(|| {
            ServiceError::MethodNotAllowed(format!(
                "{}/{id} does not exist and this server assigns ids: create it with POST /{}",
                def.name, def.name
            ))
        })?;
        precondition.check(def, id, current.version_id)?;
        // The version it replaces (a deleted one keeps the content it had): stored content
        // that does not parse is the server's fault, never a reason to skip the owner check.
        let before = super::memo::parsed(&current)?;
        let live_before = (!current.is_deleted()).then_some(&*before);
        verify_references(c, &new_references(&prepared, live_before))?;
        if !w.owner_exempt {
            check_owner(c, def.name, &before, audit)?;
            check_owner(c, def.name, &prepared.content, audit)?;
            check_directory_rules(c, def.name, &prepared.content, live_before, audit)?;
        }
        // Unique keys come from identifiers: the same identifiers as the live stored version
        // hold the same keys, already this resource's (the store's write refuses a key
        // another resource took meanwhile).
        let same_keys =
            live_before.is_some_and(|b| b.get("identifier") == prepared.content.get("identifier"));
        if !same_keys {
            check_unique(c, def, &prepared.index, Some(id))?;
        }
        let last_updated = now();
        let version_id = current.version_id + 1;
        let mut content = prepared.content.clone();
        stamp(def, &mut content, id, version_id, last_updated, live_before);
        let text = content.to_string();
        let v = NewVersion {
            res_type: def.name,
            id,
            version_id,
            last_updated,
            content: &text,
            author,
        };
        let stored_index =
            live_before.and_then(|b| indexed_with(def, b, same_keys.then_some(&prepared.index)));
        let known = stored_index.as_ref().map(|entries| store::KnownIndex {
            entries,
            tokens_complete: scope::tokens_from_content_alone(def, access),
        });
        let projection = super::reporting::projection(c, def.name, id, &content)?;
        let done = if w.holds(c, def.name) {
            let write = store::PendingWrite::update(
                &v,
                current.version_id,
                &prepared.index,
                known,
                &projection,
            );
            let conflict = match w.conflict {
                Some(f) => f(id),
                None => ServiceError::ConcurrentUpdate {
                    res_type: def.name.to_owned(),
                    id: id.to_owned(),
                },
            };
            super::deferred::hold(c, write, Some(conflict))?;
            true
        } else {
            super::deferred::begin_writing(c)?;
            store::update_resource(
                c,
                &v,
                current.version_id,
                &prepared.index,
                known,
                &projection,
            )
            .map_err(|e| storage_conflict(e, def.name, &prepared.index.unique))?
        };
        if !done {
            return Err(ServiceError::ConcurrentUpdate {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
            });
        }
        let row = ResourceRow {
            res_type: def.name.to_owned(),
            id: id.to_owned(),
            version_id,
            last_updated,
            deleted: 0,
            content: text,
        };
        record_change(c, def.name, id, version_id, "UPDATE", &content)?;
        super::memo::wrote(&row, content);
        let outcome = Outcome {
            action: "U",
            subtype: interaction.into(),
            status: 200,
            description: None,
        };
        audit::record(c, audit, &outcome, &[audit::touched(&row)])?;
        Ok(row)
    })
}

/// `DELETE /{type}/{id}`: a new, deleted version; refused while others refer to it. With the
/// client's `If-Match` if it sent one (a deletion already made answers as done, whatever
/// version it names: a retried DELETE is not refused).
pub fn delete(
    conn: &mut DbConnection,
    def: &'static ResourceDef,
    id: &str,
    precondition: IfMatch,
    author: &Author,
    audit: &AuditDraft,
) -> Result<()> {
    if !def.delete {
        return Err(ServiceError::MethodNotAllowed(format!(
            "{} resources cannot be deleted",
            def.name
        )));
    }
    super::deferred::write_tx(conn, |c| {
        let current =
            store::get_current(c, def.name, id)?.ok_or_else(|| ServiceError::NotFound {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
            })?;
        let outcome = Outcome {
            action: "D",
            subtype: "delete".into(),
            status: 204,
            description: None,
        };
        if current.is_deleted() {
            audit::record(c, audit, &outcome, &[audit::touched(&current)])?;
            return Ok(());
        }
        precondition.check(def, id, current.version_id)?;
        let before = super::memo::parsed(&current)?;
        check_owner(c, def.name, &before, audit)?;
        let by = store::referrers(c, def.name, id, 5)?;
        if !by.is_empty() {
            let by = by
                .iter()
                .map(|(t, i)| format!("{t}/{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ServiceError::StillReferenced {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
                by,
            });
        }
        let last_updated = now();
        let v = NewVersion {
            res_type: def.name,
            id,
            version_id: current.version_id + 1,
            last_updated,
            content: &current.content,
            author,
        };
        super::deferred::begin_writing(c)?;
        if !store::delete_resource(c, &v, current.version_id)? {
            return Err(ServiceError::ConcurrentUpdate {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
            });
        }
        record_change(
            c,
            def.name,
            id,
            current.version_id + 1,
            "DELETE",
            &Value::Null,
        )?;
        audit::record(c, audit, &outcome, &[audit::touched(&current)])?;
        Ok(())
    })
}

/// What a search found.
pub struct SearchResult {
    pub matches: Vec<ResourceRow>,
    pub included: Vec<ResourceRow>,
    pub total: Option<i64>,
    /// For a `near` search: the point, and each match's distance from it in km.
    pub distances: Option<std::collections::HashMap<String, f64>>,
    /// What the answer should say about itself (an `:iterate` include that reached its bound).
    pub notes: Vec<Issue>,
}

/// Great-circle distance in km (haversine).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().asin()
}

/// The parts of a resource a distance needs: its own position (a Location) and the Locations it
/// refers to (a HealthcareService). Parsed alone, the rest of the resource skipped unbuilt.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Placed {
    position: Option<Position>,
    location: Vec<PlacedReference>,
}

#[derive(serde::Deserialize)]
struct Position {
    latitude: f64,
    longitude: f64,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct PlacedReference {
    reference: Option<String>,
}

impl Placed {
    fn of(row: &ResourceRow) -> Placed {
        serde_json::from_str(&row.content).unwrap_or_default()
    }

    fn position(&self) -> Option<(f64, f64)> {
        self.position.as_ref().map(|p| (p.latitude, p.longitude))
    }

    fn location_ids(&self) -> impl Iterator<Item = &str> {
        self.location
            .iter()
            .filter_map(|l| l.reference.as_deref().and_then(index::split_reference))
            .filter(|(t, _)| *t == "Location")
            .map(|(_, id)| id)
    }
}

/// Each match's distance from the point: its own position, or its nearest referenced Location's
/// (read from `known` rows, the search's includes, before the database).
fn distances(
    c: &mut DbConnection,
    rows: &[ResourceRow],
    known: &[ResourceRow],
    point: (f64, f64),
) -> Result<std::collections::HashMap<String, f64>> {
    use std::collections::HashMap;
    let parsed: Vec<(&ResourceRow, Placed)> = rows.iter().map(|r| (r, Placed::of(r))).collect();
    // Every referenced Location in one query, not one per match.
    let known: HashMap<&str, &ResourceRow> = known
        .iter()
        .filter(|r| r.res_type == "Location")
        .map(|r| (r.id.as_str(), r))
        .collect();
    let mut wanted: Vec<String> = parsed
        .iter()
        .flat_map(|(_, p)| p.location_ids())
        .filter(|id| !known.contains_key(id))
        .map(str::to_owned)
        .collect();
    wanted.sort();
    wanted.dedup();
    let fetched = store::get_many(c, "Location", &wanted)?;
    let mut located: HashMap<&str, f64> = HashMap::new();
    for loc in known.into_values().chain(&fetched) {
        if let Some(p) = Placed::of(loc).position() {
            located.insert(loc.id.as_str(), distance_km(point, p));
        }
    }
    let mut out = HashMap::new();
    for (row, placed) in &parsed {
        let own = placed.position().map(|p| distance_km(point, p));
        let via = placed
            .location_ids()
            .filter_map(|id| located.get(id).copied())
            .fold(None, |best: Option<f64>, d| {
                Some(best.map_or(d, |b| b.min(d)))
            });
        if let Some(d) = match (own, via) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        } {
            out.insert(row.id.clone(), d);
        }
    }
    Ok(out)
}

/// `GET|POST /{type}?…`.
/// A postcode search becomes a `near` search at the postcode's coordinates (None: the request
/// has no postcode).
fn resolve_postcode(c: &mut DbConnection, req: &SearchRequest) -> Result<Option<SearchRequest>> {
    let Some((postcode, km, param)) = &req.postcode_near else {
        return Ok(None);
    };
    let bad = |message| ServiceError::BadSearch {
        param: format!("{}-postcode", param.name),
        message,
    };
    let at = match super::postcodes::place(c, postcode)? {
        super::postcodes::Placed::At(lat, long) => (lat, long),
        super::postcodes::Placed::NotAPostcode(why) => return Err(bad(why)),
        super::postcodes::Placed::Unknown(pc) => return Err(bad(format!(
            "{pc} is not a postcode this server knows (its postcode table is loaded with ers-server import-postcodes)"
        ))),
    };
    let mut resolved = req.clone();
    let def = registry::find(&req.query.res_type)
        .ok_or_else(|| ServiceError::BadRequest("unknown type".into()))?;
    let near = crate::fhir::search::Near {
        latitude: at.0,
        longitude: at.1,
        km: *km,
        param,
    };
    let (criterion, sort) =
        crate::fhir::search::near_parts(def, &near).map_err(|i| ServiceError::Invalid(vec![i]))?;
    resolved.query.criteria.push(criterion);
    if resolved.query.sort.is_empty() {
        resolved.query.sort.push((sort, false));
    }
    resolved.near = Some(near);
    resolved.postcode_near = None;
    Ok(Some(resolved))
}

/// The matches of a search the caller may make (scoped by `scope::restrict` before), with
/// what it includes that the caller may see.
pub fn search(
    conn: &mut DbConnection,
    req: &SearchRequest,
    caller: &Caller,
) -> Result<SearchResult> {
    if req.query.res_type == provenance::TYPE {
        let mut result = provenance::search(conn, req)?;
        scope::retain_visible(conn, &mut result.included, caller)?;
        if req
            .includes
            .iter()
            .chain(&req.revincludes)
            .any(|i| i.iterate)
        {
            let first = std::mem::take(&mut result.included);
            let (included, notes) = read_tx(conn, |c| {
                follow_includes(c, req, &result.matches, Some(first), caller)
            })?;
            result.included = included;
            result.notes = notes;
        }
        return Ok(result);
    }
    // One read transaction for the postcode and the search (on SQLite each one waits for a
    // WAL read mark when many readers are busy).
    read_tx(conn, |c| {
        let resolved = resolve_postcode(c, req)?;
        let req = resolved.as_ref().unwrap_or(req);
        let count_only = req.summary == crate::fhir::search::Summary::Count;
        let count = match req.total {
            TotalMode::None => store_search::Count::No,
            TotalMode::UpTo => store_search::Count::UpTo(req.count_up_to),
            TotalMode::Accurate => store_search::Count::All,
        };
        if count_only {
            let mut q = req.query.clone();
            q.limit = 0;
            let (_, total) = store_search::search(c, &q, true)?;
            return Ok(SearchResult {
                matches: Vec::new(),
                included: Vec::new(),
                total,
                distances: None,
                notes: Vec::new(),
            });
        }
        let started = std::time::Instant::now();
        let (matches, total) = store_search::search_counted(c, &req.query, count)?;
        log::debug!(
            "search {}: {} matches in {:?} ({} criteria)",
            req.query.res_type,
            matches.len(),
            started.elapsed(),
            req.query.criteria.len()
        );
        let (included, notes) = included(c, req, &matches, caller)?;
        let distances = match &req.near {
            Some(n) => Some(distances(
                c,
                &matches,
                &included,
                (n.latitude, n.longitude),
            )?),
            None => None,
        };
        Ok(SearchResult {
            matches,
            included,
            total,
            distances,
            notes,
        })
    })
}

/// One page of a worklist (`worklists::ListFilter`), with what the request includes; paging
/// and totals as in `search`.
pub fn search_list(
    conn: &mut DbConnection,
    req: &SearchRequest,
    list: &ers_schema::worklists::ListFilter,
    caller: &Caller,
) -> Result<SearchResult> {
    use ers_schema::worklists;
    read_tx(conn, |c| {
        let (offset, limit) = (req.query.offset, req.query.limit);
        let count_only = req.summary == crate::fhir::search::Summary::Count;
        let ids = if count_only {
            Vec::new()
        } else {
            worklists::page(c, list, offset, limit)?
        };
        let mut rows = store::get_many(c, &req.query.res_type, &ids)?;
        let place: std::collections::HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        rows.sort_by_key(|r| place.get(r.id.as_str()).copied());
        let n = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        let total = if count_only || req.total == TotalMode::Accurate {
            Some(worklists::count(c, list)?)
        } else if offset == 0 && n < limit {
            Some(n)
        } else {
            None
        };
        let (included, notes) = included(c, req, &rows, caller)?;
        Ok(SearchResult {
            matches: rows,
            included,
            total,
            distances: None,
            notes,
        })
    })
}

/// Rounds of `:iterate` includes after the first, from what the round before included (FHIR
/// lets a server bound them; a search that reaches the bound says so in a note).
pub const ITERATE_ROUNDS: usize = 3;

/// Most resources a page of a search includes (`_revinclude`, `:iterate` and `*` make large
/// sets easy to ask for); past it a note says that some were left out.
pub const MAX_INCLUDED: usize = 1000;

/// The resources a search's `_include` and `_revinclude` bring with its matches, each once and
/// only those the caller may see; `:iterate` ones follow from what was included too (never from
/// what the caller may not see). A note when `:iterate` stopped at `ITERATE_ROUNDS`.
fn included(
    c: &mut DbConnection,
    req: &SearchRequest,
    matches: &[ResourceRow],
    caller: &Caller,
) -> Result<(Vec<ResourceRow>, Vec<Issue>)> {
    follow_includes(c, req, matches, None, caller)
}

/// `included`, or with `first` (what the search itself included, which the caller may see: a
/// Provenance search's targets) only the `:iterate` includes, from those.
fn follow_includes(
    c: &mut DbConnection,
    req: &SearchRequest,
    matches: &[ResourceRow],
    first: Option<Vec<ResourceRow>>,
    caller: &Caller,
) -> Result<(Vec<ResourceRow>, Vec<Issue>)> {
    use std::collections::{BTreeMap, BTreeSet};
    if req.includes.is_empty() && req.revincludes.is_empty() {
        return Ok((first.unwrap_or_default(), Vec::new()));
    }
    let by_type = |rows: &[ResourceRow]| {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in rows {
            out.entry(r.res_type.clone())
                .or_default()
                .push(r.id.clone());
        }
        out
    };
    let (start, mut included) = match first {
        Some(rows) => (1, rows),
        None => (0, Vec::new()),
    };
    let mut seen: BTreeSet<(String, String)> = matches
        .iter()
        .chain(&included)
        .map(|r| (r.res_type.clone(), r.id.clone()))
        .collect();
    let mut frontier = by_type(if start == 0 { matches } else { &included });
    let iterating = req
        .includes
        .iter()
        .chain(&req.revincludes)
        .any(|i| i.iterate);
    // Ids not included yet, at most as many as there is room for (read no more than that).
    let mut cut = false;
    let mut fresh = |t: &str, ids: Vec<String>, seen: &BTreeSet<(String, String)>, room: usize| {
        let mut ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !seen.contains(&(t.to_owned(), id.clone())))
            .collect();
        if ids.len() > room {
            ids.truncate(room);
            cut = true;
        }
        ids
    };
    let mut notes = Vec::new();
    for round in start..=ITERATE_ROUNDS {
        let mut found: Vec<ResourceRow> = Vec::new();
        let room = |found: &Vec<ResourceRow>, included: &Vec<ResourceRow>| {
            MAX_INCLUDED.saturating_sub(included.len() + found.len())
        };
        for inc in req.includes.iter().filter(|i| round == 0 || i.iterate) {
            let Some(ids) = frontier.get(inc.source) else {
                continue;
            };
            let targets =
                store::refs_from(c, inc.source, ids, inc.param.name, inc.target.as_deref())?;
            let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (t, id) in targets {
                wanted.entry(t).or_default().push(id);
            }
            for (t, ids) in wanted {
                let ids = fresh(&t, ids, &seen, room(&found, &included));
                for row in store::get_many(c, &t, &ids)? {
                    seen.insert((row.res_type.clone(), row.id.clone()));
                    found.push(row);
                }
            }
        }
        for inc in req.revincludes.iter().filter(|i| round == 0 || i.iterate) {
            for (t, ids) in &frontier {
                if !inc.param.targets.contains(&t.as_str())
                    || inc.target.as_deref().is_some_and(|w| w != t)
                {
                    continue;
                }
                let rows = if inc.source == provenance::TYPE {
                    let all = provenance::of(c, t, ids)?;
                    let keep = fresh(
                        provenance::TYPE,
                        all.iter().map(|r| r.id.clone()).collect(),
                        &seen,
                        room(&found, &included),
                    );
                    all.into_iter().filter(|r| keep.contains(&r.id)).collect()
                } else {
                    let sources = store::refs_to(c, inc.source, inc.param.name, t, ids)?;
                    let sources = fresh(inc.source, sources, &seen, room(&found, &included));
                    store::get_many(c, inc.source, &sources)?
                };
                for row in rows {
                    seen.insert((row.res_type.clone(), row.id.clone()));
                    found.push(row);
                }
            }
        }
        scope::retain_visible(c, &mut found, caller)?;
        let last = found.is_empty() || !iterating;
        frontier = by_type(&found);
        included.extend(found);
        if last {
            break;
        }
        if round == ITERATE_ROUNDS {
            notes.push(Issue::warning(format!(
                "_include:iterate and _revinclude:iterate are followed {ITERATE_ROUNDS} levels beyond the first; any resources linked further are not included"
            )));
        }
    }
    if cut {
        notes.push(Issue::warning(format!(
            "At most {MAX_INCLUDED} resources are included with a page of results; others it links to were left out (ask for a smaller _count, or fewer includes)"
        )));
    }
    Ok((included, notes))
}

/// `GET /{type}/_history` and `GET /{type}/{id}/_history`.
pub fn history(
    conn: &mut DbConnection,
    def: &ResourceDef,
    q: HistoryQuery,
) -> Result<(Vec<VersionRow>, Option<i64>)> {
    if provenance::is(def) {
        return provenance::history(conn, &q);
    }
    read_tx(conn, |c| {
        if let Some(id) = &q.id {
            if store::get_current(c, def.name, id)?.is_none() {
                return Err(ServiceError::NotFound {
                    res_type: def.name.to_owned(),
                    id: id.clone(),
                });
            }
        }
        Ok(store::history(c, &q)?)
    })
}

/// Client input only (a create's, an update's or a patch's body, a Bundle entry's, `$validate`'s,
/// a referral's): run before the write's transaction holds anything back, it reads
/// `unique_identifiers`.
///
/// Makes each logical reference this server can resolve literal: a Reference that names its
/// target only by a business identifier the target holds as a unique key (an NHS number, an ODS
/// code, an SDS id, an e-RS service id: `resources::identified_by`), of a type everyone may
/// read, gets `reference: Type/id` beside its identifier, as e-RS clients name patients and
/// services (`subject.identifier`). `Reference.type`, when given, picks the type. One that names
/// nothing here, or resources of two types (a site code, without `type`), stays logical.
///
/// A Reference with both is checked instead: its identifier must be the one its target holds
/// (a referral to `Patient/A` with patient B's NHS number is 422 naming both), as R4 asks that
/// the two agree.
pub fn resolve_logical_references(conn: &mut DbConnection, body: &mut Value) -> Result<()> {
    let mut named: Vec<LogicalName> = Vec::new();
    for_each_identified_reference(body, &mut |name, _, _| {
        if !named.contains(&name) {
            named.push(name);
        }
    });
    let mut holders: Vec<(LogicalName, Vec<String>)> = Vec::new();
    for name in named {
        let Some((types, value)) = crate::fhir::resources::identified_by(&name.system, &name.value)
        else {
            continue;
        };
        // An identifier of another type than the Reference's says nothing of its target.
        if name
            .type_name
            .as_deref()
            .is_some_and(|given| !types.contains(&given))
        {
            continue;
        }
        let key = UniqueKey {
            system: name.system.clone(),
            value,
        };
        let mut owners = Vec::new();
        for t in types {
            let everyone =
                registry::find(t).is_some_and(|d| d.visibility == registry::Visibility::Everyone);
            if !everyone || name.type_name.as_deref().is_some_and(|given| given != *t) {
                continue;
            }
            if let Some(id) = store::unique_owner(conn, t, &key, None)? {
                owners.push(format!("{t}/{id}"));
            }
        }
        holders.push((name, owners));
    }
    if holders.is_empty() {
        return Ok(());
    }
    let mut mismatched: Vec<Issue> = Vec::new();
    for_each_identified_reference(body, &mut |name, path, reference| {
        let Some((name, owners)) = holders.iter().find(|(n, _)| *n == name) else {
            return;
        };
        match &name.literal {
            None => {
                if let [one] = owners.as_slice() {
                    reference.insert("reference".into(), Value::String(one.clone()));
                }
            }
            Some(literal) => {
                if !owners.contains(literal) {
                    let holder = match owners.as_slice() {
                        [] => "no resource here".to_owned(),
                        some => some.join(" and "),
                    };
                    mismatched.push(Issue::invalid_at(
                        format!("{path}.identifier"),
                        format!(
                            "({}|{}) is not the identifier of {literal}, which the reference names: {holder} holds it",
                            name.system, name.value
                        ),
                    ));
                }
            }
        }
    });
    if mismatched.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid(mismatched))
    }
}

/// A visit of `for_each_identified_reference`: the name, where it is, the Reference.
type Visit<'a> = dyn FnMut(LogicalName, &str, &mut serde_json::Map<String, Value>) + 'a;

/// What a Reference with an identifier names: the identifier, the type (the Reference's
/// `type`, or its literal reference's type) and the literal reference if it has one. It is
/// looked up once for all the References that name the same.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogicalName {
    system: String,
    value: String,
    type_name: Option<String>,
    literal: Option<String>,
}

/// Calls `f` with each Reference of a resource (not of its contained ones) that has an
/// identifier: an object of Reference's elements alone whose `identifier` is one Identifier
/// with a system and a value, and whose `reference`, if any, is a local `Type/id`; with where
/// it is (`ServiceRequest.subject`), written into one buffer as the walk goes.
fn for_each_identified_reference(v: &mut Value, f: &mut Visit<'_>) {
    fn walk(v: &mut Value, path: &mut String, f: &mut Visit<'_>) {
        use std::fmt::Write as _;
        const REFERENCE_ELEMENTS: &[&str] = &[
            "id",
            "extension",
            "reference",
            "type",
            "identifier",
            "display",
        ];
        match v {
            Value::Object(o) => {
                let identifier = o.get("identifier").and_then(|i| {
                    Some((
                        i.get("system")?.as_str()?.to_owned(),
                        i.get("value")?.as_str()?.to_owned(),
                    ))
                });
                if let Some((system, value)) = identifier {
                    if o.keys().all(|k| REFERENCE_ELEMENTS.contains(&k.as_str())) {
                        let literal = o.get("reference").and_then(Value::as_str).map(|r| {
                            index::split_reference(r).map(|(t, id)| (format!("{t}/{id}"), t))
                        });
                        // Another server's, a contained one's, or a conditional one: not ours to
                        // check.
                        let Some(literal) = literal.map_or(Some(None), |l| l.map(Some)) else {
                            return;
                        };
                        // `type` is a type's name or its canonical URL.
                        let given = o.get("type").and_then(Value::as_str).map(|t| {
                            t.strip_prefix("http://hl7.org/fhir/StructureDefinition/")
                                .unwrap_or(t)
                                .to_owned()
                        });
                        let type_name =
                            given.or_else(|| literal.as_ref().map(|(_, t)| (*t).to_owned()));
                        f(
                            LogicalName {
                                system,
                                value,
                                type_name,
                                literal: literal.map(|(l, _)| l),
                            },
                            path,
                            o,
                        );
                        return;
                    }
                }
                for (k, child) in o.iter_mut() {
                    if k != "contained" && (child.is_object() || child.is_array()) {
                        let at = path.len();
                        path.push('.');
                        path.push_str(k);
                        walk(child, path, f);
                        path.truncate(at);
                    }
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter_mut().enumerate() {
                    if x.is_object() || x.is_array() {
                        let at = path.len();
                        let _ = write!(path, "[{i}]");
                        walk(x, path, f);
                        path.truncate(at);
                    }
                }
            }
            _ => {}
        }
    }
    let mut path = v
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_owned();
    walk(v, &mut path, f);
}

/// Replaces each conditional reference (`Type?search`) in a resource about to be written in a
/// transaction with the one resource the search finds; none or several is an error naming the
/// reference.
pub fn resolve_conditional_references(conn: &mut DbConnection, body: &mut Value) -> Result<()> {
    let mut refs: Vec<String> = Vec::new();
    crate::fhir::for_each_reference_mut(body, &mut |r| {
        if r.contains('?') && !refs.contains(r) {
            refs.push(r.clone());
        }
    });
    for reference in refs {
        let (type_name, query) = reference.split_once('?').unwrap_or_default();
        let issue = |m: String| {
            ServiceError::Invalid(vec![Issue::invalid_at(
                "reference",
                format!("({reference}) {m}"),
            )])
        };
        let def = registry::find(type_name)
            .ok_or_else(|| issue(format!("names '{type_name}', which is not hosted here")))?;
        let params: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| issue(format!("is not a valid search: {e}")))?;
        let mut req =
            crate::fhir::search::parse(def, &params, true).map_err(ServiceError::Invalid)?;
        req.query.offset = 0;
        req.query.limit = 2;
        let (rows, _) = store_search::search(conn, &req.query, false)?;
        let target = match rows.as_slice() {
            [one] => format!("{}/{}", one.res_type, one.id),
            [] => return Err(issue("matches no resource".into())),
            _ => return Err(issue("matches more than one resource".into())),
        };
        crate::fhir::for_each_reference_mut(body, &mut |r| {
            if *r == reference {
                *r = target.clone();
            }
        });
    }
    Ok(())
}

/// Bulk load of resources the server itself generated (synthetic national-scale data): each is
/// validated and indexed exactly as a create is, then written with multi-row INSERTs in one
/// transaction, with one audit event for the batch. References are not looked up one by one
/// (the generator assigns the ids it refers to); no Provenance resources are written — each
/// version row still records its author.
pub fn load_generated(
    conn: &mut DbConnection,
    items: Vec<(&'static ResourceDef, String, Value, Vec<String>)>,
    author: &Author,
    audit: &AuditDraft,
) -> Result<usize> {
    let last_updated = now();
    let mut prepared = Vec::with_capacity(items.len());
    for (def, id, body, access) in items {
        let mut p = prepare(def, body, None)?;
        p.index.tokens.extend(scope::entries(def, &access)?);
        let mut content = p.content;
        stamp(def, &mut content, &id, 1, last_updated, None);
        prepared.push((def, id, content.to_string(), p.index, content));
    }
    let n = prepared.len();
    write_tx(conn, |c| {
        let rows: Vec<(NewVersion<'_>, &IndexEntries)> = prepared
            .iter()
            .map(|(def, id, text, index, _)| {
                (
                    NewVersion {
                        res_type: def.name,
                        id,
                        version_id: 1,
                        last_updated,
                        content: text,
                        author,
                    },
                    index,
                )
            })
            .collect();
        super::deferred::begin_writing(c)?;
        store::insert_many(c, &rows)?;
        let mut look = super::reporting::Lookups::default();
        let mut facts = Vec::new();
        let mut listed = Vec::new();
        for (def, id, _, _, content) in &prepared {
            let (f, entries) = super::reporting::facts(c, def.name, id, content, &mut look)?;
            facts.extend(f);
            listed.extend(entries);
        }
        ers_schema::reports::insert_many(c, &facts)?;
        ers_schema::worklists::insert_many(c, &listed)?;
        let outcome = Outcome {
            action: "C",
            subtype: "create".into(),
            status: 201,
            description: Some(format!("bulk load of {n} generated resources")),
        };
        audit::record(c, audit, &outcome, &[])?;
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::pointer_path;

    #[test]
    fn a_json_pointer_is_named_as_a_fhirpath_location() {
        assert_eq!(
            pointer_path("Patient", "/name/0/given"),
            "Patient.name[0].given"
        );
        assert_eq!(pointer_path("Patient", "/gender"), "Patient.gender");
        assert_eq!(pointer_path("Patient", ""), "Patient");
        assert_eq!(pointer_path("Patient", "/a~1b/~0c"), "Patient.a/b.~c");
    }
}

//! What one use case reads of the resources it consults again and again, kept for this thread
//! while the use case's scope lasts. A referral create or transition asks for the requester's
//! role, its organisation and each service's provider a dozen times between its checks, its
//! access list and its reporting and worklist rows; a booking reads its referral, its slot and
//! the slot's schedule once to check them and again to write or report them. A write of a
//! resource keeps it here as written, or forgets it (either way the next read sees the
//! write); a row kept from before another transaction's commit is at worst an older version,
//! which the version-checked write of it refuses (409), as it would refuse the reader's own
//! earlier read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};

use ers_schema::{store, DbConnection, ResourceRow, StorageError};
use serde_json::Value;

/// The types an organisation is found through (`ods`): a write of one forgets what was found.
const REFERENCE_DATA: &[&str] = &[
    "Organization",
    "PractitionerRole",
    "Practitioner",
    "HealthcareService",
    "Location",
];

#[derive(Default)]
struct Memo {
    rows: HashMap<(String, String), Option<ResourceRow>>,
    ods: HashMap<String, Option<String>>,
    /// (source type, param, target type, target id) → the ids of the live resources referring.
    referring: HashMap<(String, String, String, String), Vec<String>>,
    /// (type, id) → a version's content, parsed (`parsed`).
    parsed: HashMap<(String, String), (Stamp, Arc<Value>)>,
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// Keeps answers until the guard drops (nested scopes share the outer one).
pub struct Scope {
    outer: bool,
}

pub fn scope() -> Scope {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let outer = m.is_none();
        if outer {
            *m = Some(Memo::default());
        }
        Scope { outer }
    })
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.outer {
            MEMO.with(|m| *m.borrow_mut() = None);
        }
    }
}

/// The current version of a resource (deleted ones included), from the scope's memory when
/// it has read it before.
pub fn current(
    c: &mut DbConnection,
    res_type: &str,
    id: &str,
) -> Result<Option<ResourceRow>, StorageError> {
    // Outside a scope (a plain read, say) straight to the store, with no key built.
    if MEMO.with(|m| m.borrow().is_none()) {
        return store::get_current(c, res_type, id);
    }
    let key = (res_type.to_owned(), id.to_owned());
    if let Some(found) = MEMO.with(|m| m.borrow().as_ref().and_then(|m| m.rows.get(&key).cloned()))
    {
        return Ok(found);
    }
    let row = store::get_current(c, res_type, id)?;
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.rows.insert(key, row.clone());
        }
    });
    Ok(row)
}

/// The types whose parsed versions are also kept across use cases (`parsed`): the reference
/// data most requests read (who refers, where, to which service and schedule, for which
/// patient), not the referrals, slots and appointments each request has its own of.
const SHARED: &[&str] = &[
    "Organization",
    "PractitionerRole",
    "Practitioner",
    "HealthcareService",
    "Location",
    "Schedule",
    "Patient",
];

/// How many parsed versions of `SHARED` types the process keeps (the least recently used
/// go first): the services, schedules, organisations and sites in use. A parsed version takes
/// several times its text's size, so this bounds the memory too (docs/OPERATIONS.md).
const SHARED_CAPACITY: usize = 5_000;

type Key = (String, String);

/// Which version: its number, and when it was written (one process may meet copies of a
/// database that went their own ways after the copy, as the test suites' do; a version of one
/// is never taken for another's).
type Stamp = (i64, chrono::NaiveDateTime);

type SharedParsed = Mutex<lru::LruCache<Key, (Stamp, Arc<Value>)>>;

fn shared() -> &'static SharedParsed {
    static CACHE: OnceLock<SharedParsed> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(lru::LruCache::new(
            NonZeroUsize::new(SHARED_CAPACITY).unwrap_or(NonZeroUsize::MIN),
        ))
    })
}

/// A stored row's content, parsed once per version: in a scope, a booking's checks, its
/// reporting rows and its write read the same referral, slot, schedule and services again
/// and again (a version written in the scope is kept as written: `wrote`); across scopes,
/// the versions of `SHARED` types. A version never changes, so a kept one is always right;
/// a newer one is parsed when it is read. Content that does not parse is the server's fault
/// (`service::parse_stored`).
pub fn parsed(row: &ResourceRow) -> super::Result<Arc<Value>> {
    let key = (row.res_type.clone(), row.id.clone());
    let version = (row.version_id, row.last_updated);
    let in_scope = MEMO.with(|m| {
        let m = m.borrow();
        m.as_ref()?
            .parsed
            .get(&key)
            .filter(|(v, _)| *v == version)
            .map(|(_, p)| p.clone())
    });
    if let Some(v) = in_scope {
        return Ok(v);
    }
    let is_shared = SHARED.contains(&row.res_type.as_str());
    let kept = is_shared
        .then(|| {
            let mut cache = shared().lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&key)
                .filter(|(v, _)| *v == version)
                .map(|(_, p)| p.clone())
        })
        .flatten();
    let v = match kept {
        Some(v) => v,
        None => {
            let v = Arc::new(super::parse_stored::<Value>(row)?);
            if is_shared {
                keep_shared(key.clone(), version, &v);
            }
            v
        }
    };
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.parsed.insert(key, (version, v.clone()));
        }
    });
    Ok(v)
}

/// The version of a resource this scope holds parsed (read or written in it), whichever it is;
/// nothing is read. An update edited from it keeps its shape (`ers_fhir::canonicalise_like`).
pub fn held(res_type: &str, id: &str) -> Option<Arc<Value>> {
    MEMO.with(|m| {
        let m = m.borrow();
        let m = m.as_ref()?;
        m.parsed
            .get(&(res_type.to_owned(), id.to_owned()))
            .map(|(_, p)| p.clone())
    })
}

/// Keeps a parsed version of a `SHARED` type for other use cases, unless a newer one is kept.
fn keep_shared(key: Key, version: Stamp, v: &Arc<Value>) {
    let mut cache = shared().lock().unwrap_or_else(|e| e.into_inner());
    if cache.peek(&key).is_none_or(|(kept, _)| kept.0 < version.0) {
        cache.put(key, (version, v.clone()));
    }
}

/// Reads, in one statement, what a use case is about to read one by one (`store::Ahead`): the
/// resources its roots name and, `depth` levels on, those they refer to, and what else it
/// asks for (a resource's tokens, the resources referring to one). Each resource is kept in
/// the scope's memory (one that does not exist as absent), as are the referring ones, so the
/// use case's checks and writes find them there; roots already known are not read again.
/// Returns the tokens and the UBRN number asked for (read even outside a scope).
pub fn prefetch(c: &mut DbConnection, mut ahead: store::Ahead) -> Result<Fetched, StorageError> {
    let scoped = MEMO.with(|m| {
        let m = m.borrow();
        let Some(m) = m.as_ref() else {
            return false;
        };
        ahead.roots.retain(|k| !m.rows.contains_key(k));
        if let Some((s, p, t, id)) = &ahead.referring {
            if m.referring
                .contains_key(&(s.clone(), p.clone(), t.clone(), id.clone()))
            {
                ahead.referring = None;
            }
        }
        true
    });
    if !scoped {
        // Outside a scope nothing is kept: only the tokens and the number are worth reading.
        ahead.roots.clear();
        ahead.referring = None;
    }
    let read = store::read_ahead(c, &ahead)?;
    let fetched = Fetched {
        tokens: read.tokens,
        ubrn: read.ubrn,
    };
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            for (key, row) in read.found {
                m.rows.entry(key).or_insert(row);
            }
            if let Some(key) = ahead.referring {
                m.referring
                    .insert(key, read.referring.iter().map(|r| r.id.clone()).collect());
                for row in read.referring {
                    m.rows
                        .entry((row.res_type.clone(), row.id.clone()))
                        .or_insert(Some(row));
                }
            }
        }
    });
    Ok(fetched)
}

/// What a prefetch read that the scope does not keep.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The tokens `store::Ahead::tokens` asked for, in code order.
    pub tokens: Vec<String>,
    /// The UBRN number, when asked for (`store::Ahead::ubrn`).
    pub ubrn: Option<i64>,
}

/// The ids of the live resources of `source` type that refer to `target_type/target_id`
/// through `param`, from the scope's memory when a prefetch read them (`store::referring`).
pub fn referring(
    c: &mut DbConnection,
    source: &str,
    param: &str,
    target_type: &str,
    target_id: &str,
) -> Result<Vec<String>, StorageError> {
    let key = (
        source.to_owned(),
        param.to_owned(),
        target_type.to_owned(),
        target_id.to_owned(),
    );
    if let Some(ids) = MEMO.with(|m| {
        m.borrow()
            .as_ref()
            .and_then(|m| m.referring.get(&key).cloned())
    }) {
        return Ok(ids);
    }
    store::referring(c, source, param, target_type, &[target_id.to_owned()])
}

/// The live rows of these resources of one type: those the scope knows from its memory, the
/// rest in one read (`store::get_many`).
pub fn live_many(
    c: &mut DbConnection,
    res_type: &str,
    ids: &[String],
) -> Result<Vec<ResourceRow>, StorageError> {
    let mut out = Vec::with_capacity(ids.len());
    let mut unknown = Vec::new();
    MEMO.with(|m| {
        let m = m.borrow();
        for id in ids {
            match m
                .as_ref()
                .and_then(|m| m.rows.get(&(res_type.to_owned(), id.clone())))
            {
                Some(Some(row)) if !row.is_deleted() => out.push(row.clone()),
                Some(_) => {}
                None => unknown.push(id.clone()),
            }
        }
    });
    out.extend(store::get_many(c, res_type, &unknown)?);
    Ok(out)
}

/// The live resource of `res_type` the scope has read that holds the identifier
/// `system|value`: its owner, since the store keeps such identifiers unique per type (a
/// resource in memory is its current version as read in this scope).
pub fn identified(res_type: &str, system: &str, value: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Identifier {
        system: Option<String>,
        value: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Identified {
        #[serde(default)]
        identifier: Vec<Identifier>,
    }
    MEMO.with(|m| {
        let m = m.borrow();
        m.as_ref()?.rows.iter().find_map(|((t, id), row)| {
            let row = row.as_ref().filter(|r| t == res_type && !r.is_deleted())?;
            if !row.content.contains(value) {
                return None;
            }
            let found: Identified = serde_json::from_str(&row.content).ok()?;
            found
                .identifier
                .iter()
                .any(|i| i.system.as_deref() == Some(system) && i.value.as_deref() == Some(value))
                .then(|| id.clone())
        })
    })
}

/// The (type, id) of every literal reference in a resource to a type the server keeps.
pub fn references(resource: &serde_json::Value) -> Vec<(String, String)> {
    crate::fhir::index::all_references(resource)
        .into_iter()
        .filter_map(|(_, r)| {
            crate::fhir::index::split_reference(&r)
                .filter(|(t, _)| crate::fhir::registry::find(t).is_some())
                .map(|(t, id)| (t.to_owned(), id.to_owned()))
        })
        .collect()
}

/// The live row of this resource, if the scope has read it (no read of its own).
pub fn known(res_type: &str, id: &str) -> Option<ResourceRow> {
    MEMO.with(|m| {
        m.borrow().as_ref().and_then(|m| {
            m.rows
                .get(&(res_type.to_owned(), id.to_owned()))
                .and_then(|r| r.clone())
                .filter(|r| !r.is_deleted())
        })
    })
}

/// Whether the scope has read this resource and found it live (not deleted).
pub fn known_live(res_type: &str, id: &str) -> bool {
    known(res_type, id).is_some()
}

/// What `referral::ods_behind` found for a reference in this scope.
pub fn ods(reference: &str) -> Option<Option<String>> {
    MEMO.with(|m| {
        m.borrow()
            .as_ref()
            .and_then(|m| m.ods.get(reference).cloned())
    })
}

pub fn put_ods(reference: &str, ods: &Option<String>) {
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.ods.insert(reference.to_owned(), ods.clone());
        }
    })
}

/// A resource was written as `row`, whose text is `content` (its new current version): the
/// scope's next read of it finds that, as it would find it in the store (a booking's
/// appointment refers to the slot it has just made busy), already parsed. What was found
/// through it is forgotten (`forget`). Only the scope keeps it: the process keeps versions
/// read from the store, since a write held to its use case's end may yet be refused there
/// (`deferred::hold`), and its version number then belongs to another writer's version.
pub fn wrote(row: &ResourceRow, content: Value) {
    forget(&row.res_type, &row.id);
    let key = (row.res_type.clone(), row.id.clone());
    let content = Arc::new(content);
    let version = (row.version_id, row.last_updated);
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.parsed.insert(key.clone(), (version, content));
            m.rows.insert(key, Some(row.clone()));
        }
    })
}

/// A resource was written: what the scope knew of it is forgotten, and, when organisations are
/// found through its type, every organisation found.
pub fn forget(res_type: &str, id: &str) {
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.rows.remove(&(res_type.to_owned(), id.to_owned()));
            m.referring.retain(|(source, ..), _| source != res_type);
            if REFERENCE_DATA.contains(&res_type) {
                m.ods.clear();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ers_schema::{store::NewVersion, Author, IndexEntries, RefEntry};

    fn database() -> ers_schema::PooledConn {
        let file = std::env::temp_dir().join(format!(
            "ers_memo_{}_{}.db",
            std::process::id(),
            crate::fhir::new_id()
        ));
        let pool =
            ers_schema::build_pool(&format!("sqlite://{}", file.display()), 1).expect("a database");
        let mut conn = pool.get().expect("a connection");
        ers_schema::run_migrations(&mut conn).expect("migrations");
        conn
    }

    fn put(conn: &mut DbConnection, t: &str, id: &str, content: &str, index: IndexEntries) {
        let author = Author {
            user: None,
            role: "test".into(),
            org: "X".into(),
            request_id: "test".into(),
            client_id: None,
            on_behalf_of: None,
        };
        let v = NewVersion {
            res_type: t,
            id,
            version_id: 1,
            last_updated: chrono::Utc::now().naive_utc(),
            content,
            author: &author,
        };
        store::insert_resource(conn, &v, &index, &Default::default()).expect("a resource");
    }

    fn based_on(referral: &str) -> IndexEntries {
        IndexEntries {
            refs: vec![RefEntry {
                param: "based-on".into(),
                target_type: "ServiceRequest".into(),
                target_id: referral.into(),
            }],
            ..IndexEntries::default()
        }
    }

    /// A version written in a scope is not kept for other scopes: a held write may yet be
    /// refused, and its version number then belongs to another writer's version, which the
    /// next scope must read as stored.
    #[test]
    fn a_version_written_is_kept_for_its_scope_only() {
        let stamp = chrono::Utc::now().naive_utc();
        let id = crate::fhir::new_id();
        let row = |gender: &str| ResourceRow {
            res_type: "Patient".into(),
            id: id.clone(),
            version_id: 2,
            last_updated: stamp,
            deleted: 0,
            content: format!(r#"{{"resourceType":"Patient","gender":"{gender}"}}"#),
        };
        {
            let _scope = scope();
            wrote(
                &row("male"),
                serde_json::json!({"resourceType": "Patient", "gender": "male"}),
            );
            // The scope's own reads find what it wrote...
            let kept = parsed(&row("female")).expect("parsed");
            assert_eq!(kept["gender"], "male");
        }
        // ... another scope finds what the store holds under that version.
        let _scope = scope();
        let read = parsed(&row("female")).expect("parsed");
        assert_eq!(read["gender"], "female");
    }

    /// What a prefetch found referring to a resource is answered from memory until a resource
    /// of the referring type is written; then it is read again.
    #[test]
    fn referring_resources_are_kept_until_one_of_their_type_is_written() {
        let mut conn = database();
        let _scope = scope();
        put(&mut conn, "Appointment", "a.1", "{}", based_on("r.1"));
        let ahead = store::Ahead {
            referring: Some((
                "Appointment".into(),
                "based-on".into(),
                "ServiceRequest".into(),
                "r.1".into(),
            )),
            ..store::Ahead::default()
        };
        prefetch(&mut conn, ahead).expect("prefetch");
        let referring = |conn: &mut DbConnection| {
            let mut ids =
                super::referring(conn, "Appointment", "based-on", "ServiceRequest", "r.1")
                    .expect("referring");
            ids.sort();
            ids
        };
        // Another appointment stored behind the memory's back is not seen...
        put(&mut conn, "Appointment", "a.2", "{}", based_on("r.1"));
        assert_eq!(referring(&mut conn), ["a.1"]);
        assert!(known("Appointment", "a.1").is_some());
        // ... until an appointment is written in the scope (a slot's write changes nothing).
        forget("Slot", "s.1");
        assert_eq!(referring(&mut conn), ["a.1"]);
        forget("Appointment", "a.2");
        assert_eq!(referring(&mut conn), ["a.1", "a.2"]);
    }

    /// An organisation the scope holds answers a lookup by its identifier; one it does not
    /// hold, one deleted in the scope, or another identifier does not.
    #[test]
    fn an_organisation_held_answers_for_its_identifier() {
        let mut conn = database();
        let _scope = scope();
        let ods = |code: &str| {
            format!(
                r#"{{"resourceType":"Organization","identifier":[{{"system":"ods","value":"{code}"}}]}}"#
            )
        };
        put(
            &mut conn,
            "Organization",
            "o.1",
            &ods("R69"),
            IndexEntries::default(),
        );
        put(
            &mut conn,
            "Organization",
            "o.2",
            &ods("RCD"),
            IndexEntries::default(),
        );
        assert_eq!(
            identified("Organization", "ods", "R69"),
            None,
            "not read yet"
        );
        let ahead = store::Ahead {
            roots: vec![
                ("Organization".into(), "o.1".into()),
                ("Organization".into(), "o.2".into()),
            ],
            ..store::Ahead::default()
        };
        prefetch(&mut conn, ahead).expect("prefetch");
        assert_eq!(
            identified("Organization", "ods", "R69").as_deref(),
            Some("o.1")
        );
        assert_eq!(
            identified("Organization", "ods", "RCD").as_deref(),
            Some("o.2")
        );
        assert_eq!(identified("Organization", "other", "R69"), None);
        assert_eq!(identified("Organization", "ods", "R6"), None);
        assert_eq!(identified("Location", "ods", "R69"), None);
        // Deleted in the scope: no longer the owner.
        let mut gone = known("Organization", "o.2").expect("held");
        gone.deleted = 1;
        gone.version_id = 2;
        let content = serde_json::from_str(&gone.content).expect("json");
        wrote(&gone, content);
        assert_eq!(identified("Organization", "ods", "RCD"), None);
    }

    #[test]
    fn a_version_is_parsed_once_in_a_scope_and_a_write_is_kept_as_written() {
        let id = crate::fhir::new_id();
        let at = chrono::Utc::now().naive_utc();
        let row = |t: &str, version: i64, name: &str| ResourceRow {
            res_type: t.into(),
            id: id.clone(),
            version_id: version,
            last_updated: at + chrono::Duration::seconds(version),
            deleted: 0,
            content: format!(r#"{{"resourceType":"{t}","id":"{id}","name":"{name}"}}"#),
        };
        let referral = |version: i64, name: &str| row("ServiceRequest", version, name);
        // Outside a scope a referral's version is parsed each time it is asked for.
        let (a, b) = (
            parsed(&referral(1, "A")).expect("parsed"),
            parsed(&referral(1, "A")).expect("parsed"),
        );
        assert!(!Arc::ptr_eq(&a, &b));
        {
            let _scope = scope();
            let first = parsed(&referral(1, "A")).expect("parsed");
            assert!(Arc::ptr_eq(
                &first,
                &parsed(&referral(1, "A")).expect("parsed")
            ));
            assert_eq!(first["name"], "A");
            // Another version is parsed afresh.
            assert_eq!(parsed(&referral(2, "B")).expect("parsed")["name"], "B");
            // A write is kept as the content written, for the version written.
            wrote(
                &referral(3, "C"),
                serde_json::json!({"resourceType": "ServiceRequest", "id": id, "name": "C"}),
            );
            assert_eq!(parsed(&referral(3, "C")).expect("parsed")["name"], "C");
            assert_eq!(parsed(&referral(2, "B")).expect("parsed")["name"], "B");
        }
        // Reference data is kept across scopes, per version; a referral is not.
        let service = |version: i64, name: &str| row("HealthcareService", version, name);
        let kept = {
            let _scope = scope();
            parsed(&service(1, "S")).expect("parsed")
        };
        // The same version number written at another time (another copy of the database)
        // is another version.
        let mut elsewhere = service(1, "U");
        elsewhere.last_updated += chrono::Duration::milliseconds(1);
        assert_eq!(parsed(&elsewhere).expect("parsed")["name"], "U");
        {
            let _scope = scope();
            assert!(Arc::ptr_eq(
                &kept,
                &parsed(&service(1, "S")).expect("parsed")
            ));
            assert!(!Arc::ptr_eq(
                &a,
                &parsed(&referral(1, "A")).expect("parsed")
            ));
            let newer = parsed(&service(2, "T")).expect("parsed");
            assert_eq!(newer["name"], "T");
        }
        // An older version read late does not displace the newer one kept.
        let _ = parsed(&service(1, "S")).expect("parsed");
        assert_eq!(parsed(&service(2, "T")).expect("parsed")["name"], "T");
        assert!(!Arc::ptr_eq(
            &kept,
            &parsed(&service(2, "T")).expect("parsed")
        ));
        // What does not parse is the server's fault, named.
        let mut broken = referral(4, "D");
        broken.content = "{".into();
        let e = parsed(&broken).expect_err("unreadable");
        assert!(
            e.to_string().contains(&format!("ServiceRequest/{id}")),
            "{e}"
        );
    }
}

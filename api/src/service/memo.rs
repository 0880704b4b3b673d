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

use ers_schema::{store, DbConnection, ResourceRow, StorageError};

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

/// Most resources one level of a prefetch reads (a shortlist of twenty services, their
/// providers and sites stay well under it).
const PREFETCH_LIMIT: usize = 200;

/// Reads, in one statement per level, what a use case is about to read one by one: the
/// resources `roots` names and, `depth` levels on, those their references name. Each is kept
/// in the scope's memory (one that does not exist as absent), so the use case's checks and
/// writes find them there. Outside a scope it does nothing.
pub fn prefetch(
    c: &mut DbConnection,
    roots: Vec<(String, String)>,
    depth: usize,
) -> Result<(), StorageError> {
    if MEMO.with(|m| m.borrow().is_none()) {
        return Ok(());
    }
    let mut level = roots;
    for d in 0..=depth {
        let mut wanted: Vec<(String, String)> = Vec::new();
        MEMO.with(|m| {
            if let Some(m) = m.borrow().as_ref() {
                for key in level.drain(..) {
                    if !m.rows.contains_key(&key)
                        && !wanted.contains(&key)
                        && wanted.len() < PREFETCH_LIMIT
                    {
                        wanted.push(key);
                    }
                }
            }
        });
        if wanted.is_empty() {
            break;
        }
        let pairs: Vec<(&str, &str)> = wanted
            .iter()
            .map(|(t, id)| (t.as_str(), id.as_str()))
            .collect();
        let rows = store::get_pairs(c, &pairs)?;
        let mut next = Vec::new();
        let mut found: HashMap<(String, String), Option<ResourceRow>> =
            wanted.into_iter().map(|k| (k, None)).collect();
        for row in rows {
            if d < depth && !row.is_deleted() {
                if let Ok(body) = serde_json::from_str::<serde_json::Value>(&row.content) {
                    next.extend(references(&body));
                }
            }
            found.insert((row.res_type.clone(), row.id.clone()), Some(row));
        }
        MEMO.with(|m| {
            if let Some(m) = m.borrow_mut().as_mut() {
                m.rows.extend(found);
            }
        });
        level = next;
    }
    Ok(())
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

/// A resource was written as `row` (its new current version): the scope's next read of it
/// finds that, as it would find it in the store (a booking's appointment refers to the slot it
/// has just made busy). What was found through it is forgotten (`forget`).
pub fn wrote(row: &ResourceRow) {
    forget(&row.res_type, &row.id);
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.rows
                .insert((row.res_type.clone(), row.id.clone()), Some(row.clone()));
        }
    })
}

/// A resource was written: what the scope knew of it is forgotten, and, when organisations are
/// found through its type, every organisation found.
pub fn forget(res_type: &str, id: &str) {
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.rows.remove(&(res_type.to_owned(), id.to_owned()));
            if REFERENCE_DATA.contains(&res_type) {
                m.ods.clear();
            }
        }
    })
}

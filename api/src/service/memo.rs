//! What one use case reads of the reference data it consults again and again — organisations,
//! roles, practitioners, services, locations — kept for this thread while the use case's scope
//! lasts. A referral create or transition asks for the requester's role, its organisation and
//! each service's provider a dozen times between its checks, its access list and its
//! reporting and worklist rows; none of them writes such a resource (and a write of one forgets
//! it here all the same).

use std::cell::RefCell;
use std::collections::HashMap;

use ers_schema::{store, DbConnection, ResourceRow, StorageError};

/// The types whose current version is kept within a scope.
const KEPT: &[&str] = &[
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

/// The current version of a resource (deleted ones included), from the scope's memory for
/// reference data.
pub fn current(
    c: &mut DbConnection,
    res_type: &str,
    id: &str,
) -> Result<Option<ResourceRow>, StorageError> {
    let kept = KEPT.contains(&res_type);
    if kept {
        let key = (res_type.to_owned(), id.to_owned());
        if let Some(found) =
            MEMO.with(|m| m.borrow().as_ref().and_then(|m| m.rows.get(&key).cloned()))
        {
            return Ok(found);
        }
    }
    let row = store::get_current(c, res_type, id)?;
    if kept {
        MEMO.with(|m| {
            if let Some(m) = m.borrow_mut().as_mut() {
                m.rows
                    .insert((res_type.to_owned(), id.to_owned()), row.clone());
            }
        });
    }
    Ok(row)
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

/// A resource was written: what the scope knew of it, and every organisation found through
/// anything, is forgotten.
pub fn forget(res_type: &str, id: &str) {
    if !KEPT.contains(&res_type) {
        return;
    }
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            m.rows.remove(&(res_type.to_owned(), id.to_owned()));
            m.ods.clear();
        }
    })
}

//! What one use case reads of the resources it consults again and again, kept for this thread
//! while the use case's scope lasts. A referral create or transition asks for the requester's
//! role, its organisation and each service's provider a dozen times between its checks, its
//! access list and its reporting and worklist rows; a booking reads its referral, its slot and
//! the slot's schedule once to check them and again to write or report them. A write of a
//! resource forgets it here (the next read sees the write); a row kept from before another
//! transaction's commit is at worst an older version, which the version-checked write of it
//! refuses (409), as it would refuse the reader's own earlier read.

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

//! Rows a write transaction adds beside its resources — each audit event, each change event —
//! gathered while the use case runs and written together just
//! before it commits: one statement on PostgreSQL (`store::write_additions`), one multi-row
//! INSERT per table on SQLite, instead of a handful of statements per resource (a booking
//! writes three versions). Only inside `write_tx` below; elsewhere the
//! rows are written at once, as before.

use std::cell::RefCell;

use ers_schema::audit::{AuditEntityRow, AuditRow};
use ers_schema::idempotency::{self, Claim};
use ers_schema::store::{self, NewEvent};
use ers_schema::DbConnection;

#[derive(Default)]
struct Pending {
    /// The idempotency key the transaction's writes were asked for under (at most one: one
    /// request's).
    claims: Vec<Claim>,
    audits: Vec<(AuditRow, Vec<AuditEntityRow>)>,
    events: Vec<NewEvent>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Ends the gathering when dropped (an error or a panic discards what was gathered with the
/// transaction it belonged to).
struct Gathering {
    outer: bool,
}

impl Drop for Gathering {
    fn drop(&mut self) {
        if self.outer {
            PENDING.with(|p| *p.borrow_mut() = None);
        }
    }
}

fn gather() -> Gathering {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let outer = p.is_none();
        if outer {
            *p = Some(Pending::default());
        }
        Gathering { outer }
    })
}

/// A write transaction whose audit and outbox rows are written together at its
/// end. Nested calls join the outer one.
pub fn write_tx<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> super::Result<T>,
) -> super::Result<T> {
    ers_schema::write_tx(conn, |c| {
        let g = gather();
        let out = f(c)?;
        if g.outer {
            flush(c)?;
        }
        Ok(out)
    })
}

/// Gathers a row while a deferred transaction is open; otherwise hands it back.
fn defer<R>(row: R, put: impl FnOnce(&mut Pending, R)) -> Option<R> {
    PENDING.with(|p| match p.borrow_mut().as_mut() {
        Some(pending) => {
            put(pending, row);
            None
        }
        None => Some(row),
    })
}

/// Claims the request's idempotency key for the write transaction it is in (once, however
/// many writes it makes); refused when another request holds the key.
pub fn claim(c: &mut DbConnection, key: &Claim) -> super::Result<()> {
    let fresh = PENDING.with(|p| match p.borrow_mut().as_mut() {
        Some(pending) => {
            if !pending.claims.contains(key) {
                pending.claims.push(key.clone());
            }
            None
        }
        None => Some(key.clone()),
    });
    match fresh {
        Some(key) => take(c, &key),
        None => Ok(()),
    }
}

fn take(c: &mut DbConnection, key: &Claim) -> super::Result<()> {
    let now = chrono::Utc::now().naive_utc();
    if idempotency::claim(c, key, now)? {
        Ok(())
    } else {
        Err(super::ServiceError::Conflict {
            ers_code: "IDEMPOTENCY_KEY_IN_USE",
            message: format!(
                "Idempotency-Key ({}) was used by another request that is being done or was just done; send this request again to get its answer",
                key.key
            ),
            expression: "Idempotency-Key".into(),
        })
    }
}

pub fn audit(
    c: &mut DbConnection,
    row: AuditRow,
    entities: Vec<AuditEntityRow>,
) -> Result<(), ers_schema::StorageError> {
    if let Some((row, entities)) = defer((row, entities), |p, r| p.audits.push(r)) {
        ers_schema::audit::insert_many(c, &[(row, entities)])?;
    }
    Ok(())
}

pub fn event(c: &mut DbConnection, e: NewEvent) -> super::Result<()> {
    if let Some(e) = defer(e, |p, r| p.events.push(r)) {
        store::record_events(c, std::slice::from_ref(&e))?;
    }
    Ok(())
}

fn flush(c: &mut DbConnection) -> super::Result<()> {
    // Taken, leaving the gathering open and empty until the outer call returns.
    let Some(p) = PENDING.with(|p| p.borrow_mut().as_mut().map(std::mem::take)) else {
        return Ok(());
    };
    // First: a request that may not write under its key writes nothing.
    for key in &p.claims {
        take(c, key)?;
    }
    store::write_additions(c, &p.audits, &p.events)?;
    Ok(())
}

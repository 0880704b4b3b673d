//! Rows a write transaction adds beside its resources — each audit event, each change event —
//! gathered while the use case runs and written together just
//! before it commits: one statement on PostgreSQL (`store::write_additions`), one multi-row
//! INSERT per table on SQLite, instead of a handful of statements per resource (a booking
//! writes three versions). Only inside `write_tx` below; elsewhere the
//! rows are written at once, as before.
//!
//! On PostgreSQL a use case may also hold its resource writes back (`hold`), when it knows
//! that it reads nothing more before its end (a booking: the slot, the appointment and the
//! referral, after everything is read): they then go in that same statement, one round trip
//! for all. A statement run while writes are held would not see them, so it is refused
//! (`ers_schema::conn::hold_writes`): the transaction fails rather than commit what such a
//! read decided; `write_held` writes them at once for code that must read again.

use std::cell::RefCell;

use ers_schema::audit::{AuditEntityRow, AuditRow};
use ers_schema::idempotency::{self, Claim};
use ers_schema::store::{self, NewEvent, PendingWrite};
use ers_schema::DbConnection;
use ers_schema::UniqueKey;

#[derive(Default)]
struct Pending {
    /// The idempotency key the transaction's writes were asked for under (at most one: one
    /// request's).
    claims: Vec<Claim>,
    audits: Vec<(AuditRow, Vec<AuditEntityRow>)>,
    events: Vec<NewEvent>,
    /// Resource writes held back, each with the refusal to answer if its resource was no
    /// longer at the version it replaces.
    writes: Vec<(PendingWrite, Option<super::ServiceError>)>,
    /// A `unit_tx` that has opened no transaction yet (only read so far).
    reading: bool,
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
            ers_schema::conn::hold_writes(false);
            ers_schema::conn::reads_only(false);
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
    if reading() {
        // Inside a `unit_tx` that has only read: it joins it (a write it makes opens the
        // transaction first, `begin_writing`).
        return f(conn);
    }
    ers_schema::write_tx(conn, |c| {
        let g = gather();
        let out = f(c)?;
        if g.outer {
            flush(c)?;
        }
        Ok(out)
    })
}

/// A use case that reads, then writes everything it writes at its end (`hold`), needs no
/// transaction on PostgreSQL: its reads see what a transaction's would (PostgreSQL's read
/// committed: each statement its own snapshot), and its held writes, audit and outbox rows
/// are then one statement (`store::write_additions`), which writes all or nothing (a
/// replacement whose resource moved on fails it). That saves the round trips of `BEGIN` and
/// `COMMIT`: a booking is the read-ahead and one write. A write that cannot wait (one not
/// held, or held writes that must be written before a read) opens the transaction first
/// (`begin_writing`), and the use case ends as a `write_tx` would; so does one with more
/// rows than one statement takes, or with an idempotency key to claim. Until then a
/// statement that is not a plain read is stopped (`ers_schema::conn::reads_only`). Nested
/// in a write transaction (gathering or not: a transaction Bundle's), or on SQLite, it is
/// `write_tx`.
pub fn unit_tx<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> super::Result<T>,
) -> super::Result<T> {
    if gathering()
        || !matches!(conn, DbConnection::Postgresql(_))
        || ers_schema::in_transaction(conn)
    {
        return write_tx(conn, f);
    }
    let g = gather();
    PENDING.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            p.reading = true;
        }
    });
    ers_schema::conn::reads_only(true);
    let out = f(conn).and_then(|out| {
        if reading() && !fits_one_statement() {
            begin_writing(conn)?;
        }
        if reading() {
            ers_schema::conn::reads_only(false);
            flush(conn)?;
        } else {
            flush(conn)?;
            ers_schema::commit(conn)?;
        }
        Ok(out)
    });
    if out.is_err() && !reading() && ers_schema::in_transaction(conn) {
        if let Err(e) = ers_schema::rollback(conn) {
            log::error!("rolling back a use case's transaction failed: {e}");
        }
    }
    drop(g);
    out
}

/// Inside a `unit_tx` that has not opened its transaction.
fn reading() -> bool {
    PENDING.with(|p| p.borrow().as_ref().is_some_and(|p| p.reading))
}

/// Whether what is gathered fits the one statement of `store::write_additions`, with no
/// key to claim first.
fn fits_one_statement() -> bool {
    PENDING.with(|p| {
        p.borrow().as_ref().is_some_and(|p| {
            p.claims.is_empty()
                && store::fits_one_statement(p.writes.len(), p.audits.len(), p.events.len())
        })
    })
}

/// Before a write that cannot wait for the end of a `unit_tx` that has only read: opens its
/// transaction. Nothing to do anywhere else.
pub fn begin_writing(c: &mut DbConnection) -> super::Result<()> {
    if !reading() {
        return Ok(());
    }
    ers_schema::conn::reads_only(false);
    ers_schema::begin(c)?;
    PENDING.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            p.reading = false;
        }
    });
    Ok(())
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

/// Whether a write transaction is gathering (`write_tx`): a use case that holds its writes
/// back (`hold`) asks before it opens its own, so that it holds them only when nothing of an
/// outer transaction runs after it.
pub fn gathering() -> bool {
    PENDING.with(|p| p.borrow().is_some())
}

/// Holds a resource write back to the transaction's end (only while `gathering`, and where
/// `store::can_defer`). `conflict`: the refusal if the resource is by then no longer at the
/// version the write replaces. A second write of a resource already held writes the held
/// ones first: a statement writes each resource once.
pub fn hold(
    c: &mut DbConnection,
    write: PendingWrite,
    conflict: Option<super::ServiceError>,
) -> super::Result<()> {
    let again = PENDING.with(|p| {
        p.borrow().as_ref().is_some_and(|p| {
            p.writes
                .iter()
                .any(|(w, _)| w.res_type() == write.res_type() && w.id() == write.id())
        })
    });
    if again {
        write_held(c)?;
    }
    PENDING.with(|p| match p.borrow_mut().as_mut() {
        Some(pending) => {
            pending.writes.push((write, conflict));
            ers_schema::conn::hold_writes(true);
            Ok(())
        }
        None => Err(super::ServiceError::Internal(
            "a write was held back outside a write transaction".into(),
        )),
    })
}

/// Writes the held writes now (for code that must read after them).
pub fn write_held(c: &mut DbConnection) -> super::Result<()> {
    let writes = PENDING.with(|p| {
        p.borrow_mut()
            .as_mut()
            .map(|p| std::mem::take(&mut p.writes))
            .unwrap_or_default()
    });
    if writes.is_empty() {
        return Ok(());
    }
    unread()?;
    begin_writing(c)?;
    write_with(c, writes, &[], &[])
}

/// Ends the stretch of held writes: refused if a statement ran during it.
fn unread() -> super::Result<()> {
    if ers_schema::conn::writes_held() {
        Ok(())
    } else {
        Err(super::ServiceError::Internal(
            "a statement ran while this transaction held its writes back, so it did not see them; nothing was written".into(),
        ))
    }
}

/// Writes `writes` with the audit and outbox rows: a refusal for the first whose resource was
/// no longer at its version.
fn write_with(
    c: &mut DbConnection,
    writes: Vec<(PendingWrite, Option<super::ServiceError>)>,
    audits: &[(AuditRow, Vec<AuditEntityRow>)],
    events: &[NewEvent],
) -> super::Result<()> {
    // A unique key another writer took meanwhile: named by the keys the writes of the first
    // type that held any held.
    let keyed = writes
        .iter()
        .find(|(w, _)| !w.unique_keys().is_empty())
        .or(writes.first())
        .map(|(w, _)| w.res_type().to_owned());
    let keys: Vec<UniqueKey> = writes
        .iter()
        .filter(|(w, _)| keyed.as_deref() == Some(w.res_type()))
        .flat_map(|(w, _)| w.unique_keys().iter().cloned())
        .collect();
    let (writes, conflicts): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
    let done = store::write_additions(c, writes, audits, events).map_err(|e| match &keyed {
        Some(res_type) => super::resource::storage_conflict(e, res_type, &keys),
        None => e.into(),
    })?;
    for (done, conflict) in done.into_iter().zip(conflicts) {
        if !done {
            return Err(conflict.unwrap_or_else(|| {
                super::ServiceError::Internal("a held write did not happen".into())
            }));
        }
    }
    Ok(())
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
        Some(key) => take(c, &key, None),
        None => Ok(()),
    }
}

fn take(c: &mut DbConnection, key: &Claim, written: Option<&str>) -> super::Result<()> {
    let now = chrono::Utc::now().naive_utc();
    if idempotency::claim(c, key, now, written)? {
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
    // First: a request that may not write under its key writes nothing. The key keeps what
    // the write did, for a retry whose answer was lost with its server.
    let written = written_by(&p.audits);
    unread()?;
    for key in &p.claims {
        take(c, key, written.as_deref())?;
    }
    write_with(c, p.writes, &p.audits, &p.events)
}

/// What a transaction's writes did, from their audit events: "created Appointment/a.1;
/// updated Slot/s.1, ServiceRequest/r.1" (each resource once, in the order written; a long
/// list ends with how many more). A conditional create that found its match (200) is "found".
/// None when it wrote no resource.
fn written_by(audits: &[(AuditRow, Vec<AuditEntityRow>)]) -> Option<String> {
    const SHOWN: usize = 20;
    let done = |row: &AuditRow, action: &str| match action {
        "C" => row.action == "C" && row.status == 201,
        "M" => row.action == "C" && row.status == 200,
        other => row.action == other && row.status < 400,
    };
    let mut parts = Vec::new();
    for (action, verb) in [
        ("C", "created"),
        ("M", "found"),
        ("U", "updated"),
        ("D", "deleted"),
    ] {
        let mut refs: Vec<String> = Vec::new();
        for (row, entities) in audits {
            if !done(row, action) {
                continue;
            }
            for e in entities {
                let r = format!("{}/{}", e.entity_type, e.entity_id);
                if !refs.contains(&r) {
                    refs.push(r);
                }
            }
        }
        if refs.is_empty() {
            continue;
        }
        let more = refs.len().saturating_sub(SHOWN);
        refs.truncate(SHOWN);
        let mut part = format!("{verb} {}", refs.join(", "));
        if more > 0 {
            part.push_str(&format!(" and {more} more"));
        }
        parts.push(part);
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, status: i32, touched: &[&str]) -> (AuditRow, Vec<AuditEntityRow>) {
        let row = AuditRow {
            id: crate::fhir::new_id(),
            recorded: chrono::Utc::now().naive_utc(),
            action: action.into(),
            subtype: String::new(),
            outcome: "0".into(),
            outcome_desc: None,
            user_id: None,
            client_id: None,
            role: None,
            org: None,
            on_behalf_of: None,
            method: "POST".into(),
            path: "/FHIR/R4/Appointment".into(),
            query: None,
            status,
            source_address: None,
            request_id: "r".into(),
            correlation_id: None,
        };
        let entities = touched
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (t, id) = r.split_once('/').expect("Type/id");
                AuditEntityRow {
                    audit_id: row.id.clone(),
                    position: i32::try_from(i).expect("small"),
                    entity_type: t.into(),
                    entity_id: id.into(),
                    nhs_number: None,
                    ubrn: None,
                }
            })
            .collect();
        (row, entities)
    }

    #[test]
    fn what_a_transaction_wrote_is_said_once_per_resource_by_what_was_done() {
        let booking = [
            event("U", 200, &["Slot/s.1"]),
            event("C", 201, &["Appointment/a.1"]),
            event("R", 200, &["Patient/p.1"]),
            event("U", 200, &["ServiceRequest/r.1"]),
            event("U", 200, &["Slot/s.1"]),
            event("C", 409, &["Appointment/a.2"]),
        ];
        assert_eq!(
            written_by(&booking).as_deref(),
            Some("created Appointment/a.1; updated Slot/s.1, ServiceRequest/r.1")
        );
        // A conditional create's match is found, not created.
        assert_eq!(
            written_by(&[
                event("C", 200, &["Patient/p.1"]),
                event("C", 201, &["Patient/p.2"])
            ])
            .as_deref(),
            Some("created Patient/p.2; found Patient/p.1")
        );
        assert_eq!(written_by(&[event("R", 200, &["Patient/p.1"])]), None);
        let many: Vec<String> = (0..23).map(|i| format!("Patient/p.{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let said =
            written_by(&[event("C", 201, &refs), event("D", 200, &["Slot/s.9"])]).expect("written");
        assert!(
            said.starts_with("created Patient/p.0, Patient/p.1,"),
            "{said}"
        );
        assert!(
            said.ends_with("Patient/p.19 and 3 more; deleted Slot/s.9"),
            "{said}"
        );
    }
}

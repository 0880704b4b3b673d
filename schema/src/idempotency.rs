//! Idempotency keys: which writes were done under which key, and their answers
//! (`idempotency_keys`, see its migration).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::idempotency_keys;
use crate::{DbConnection, StorageError};

type QResult<T> = Result<T, StorageError>;

/// A key, as claimed by a write.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = idempotency_keys)]
pub struct KeyRow {
    pub owner: String,
    pub key: String,
    pub fingerprint: String,
    pub request_id: String,
    pub created_at: NaiveDateTime,
    pub status: Option<i32>,
    pub headers: Option<String>,
    pub body: Option<Vec<u8>>,
    /// What the write did, when its transaction said (`claim`).
    pub written: Option<String>,
}

/// What a write claims a key with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    pub key: String,
    pub fingerprint: String,
    pub request_id: String,
    /// Claims made before this are forgotten (the keys' lifetime).
    pub forgotten_before: NaiveDateTime,
}

/// The claim's key as held, unless it was claimed before the claim's window (forgotten).
pub fn find(conn: &mut DbConnection, c: &Claim) -> QResult<Option<KeyRow>> {
    Ok(idempotency_keys::table
        .filter(idempotency_keys::owner.eq(&c.owner))
        .filter(idempotency_keys::key.eq(&c.key))
        .filter(idempotency_keys::created_at.ge(c.forgotten_before))
        .select(KeyRow::as_select())
        .first(conn)
        .optional()?)
}

/// Claims a key for the write in the connection's transaction, with what it did (`written`,
/// e.g. "created Appointment/a.1; updated Slot/s.1", when known): false when another request
/// holds it (a write that committed, or one still running, which this waits for on
/// PostgreSQL). A forgotten claim is replaced; the request's own claim is kept, with what its
/// later transaction did added. One statement when the key is new.
pub fn claim(
    conn: &mut DbConnection,
    c: &Claim,
    now: NaiveDateTime,
    written: Option<&str>,
) -> QResult<bool> {
    let insert = |conn: &mut DbConnection| -> QResult<bool> {
        let row = (
            idempotency_keys::owner.eq(&c.owner),
            idempotency_keys::key.eq(&c.key),
            idempotency_keys::fingerprint.eq(&c.fingerprint),
            idempotency_keys::request_id.eq(&c.request_id),
            idempotency_keys::created_at.eq(now),
            idempotency_keys::written.eq(written),
        );
        let inserted = on_backend!(conn, |pc| diesel::insert_into(idempotency_keys::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(pc))?;
        Ok(inserted == 1)
    };
    if insert(conn)? {
        return Ok(true);
    }
    let this = || {
        idempotency_keys::table
            .filter(idempotency_keys::owner.eq(&c.owner))
            .filter(idempotency_keys::key.eq(&c.key))
    };
    let holder: Option<(String, NaiveDateTime, Option<String>)> = this()
        .select((
            idempotency_keys::request_id,
            idempotency_keys::created_at,
            idempotency_keys::written,
        ))
        .first(conn)
        .optional()?;
    match holder {
        Some((request, _, before)) if request == c.request_id => {
            // The request's next transaction (a batch's next entry): what it did is added.
            if let Some(w) = written {
                let all = before.map_or_else(|| w.to_owned(), |b| format!("{b}; {w}"));
                diesel::update(this())
                    .set(idempotency_keys::written.eq(all))
                    .execute(conn)?;
            }
            Ok(true)
        }
        Some((_, at, _)) if at < c.forgotten_before => {
            diesel::delete(this().filter(idempotency_keys::created_at.lt(c.forgotten_before)))
                .execute(conn)?;
            insert(conn)
        }
        Some(_) => Ok(false),
        // Forgotten meanwhile by another instance.
        None => insert(conn),
    }
}

/// An answer to store for the request that claimed its key.
#[derive(Debug, Clone)]
pub struct Answer {
    pub owner: String,
    pub key: String,
    pub request_id: String,
    pub status: i32,
    /// JSON object of the answer's headers that are replayed.
    pub headers: String,
    pub body: Vec<u8>,
}

/// Stores the answer of the request that claimed the key; false when that request claimed
/// nothing (it wrote nothing, or another request holds the key).
pub fn answer(conn: &mut DbConnection, a: &Answer) -> QResult<bool> {
    let n = diesel::update(
        idempotency_keys::table
            .filter(idempotency_keys::owner.eq(&a.owner))
            .filter(idempotency_keys::key.eq(&a.key))
            .filter(idempotency_keys::request_id.eq(&a.request_id))
            .filter(idempotency_keys::status.is_null()),
    )
    .set((
        idempotency_keys::status.eq(a.status),
        idempotency_keys::headers.eq(&a.headers),
        idempotency_keys::body.eq(&a.body),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Forgets the keys claimed before `before`; how many.
pub fn forget(conn: &mut DbConnection, before: NaiveDateTime) -> QResult<usize> {
    Ok(
        diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(before)))
            .execute(conn)?,
    )
}

//! Worklist entries: a row per list a referral or A&G request is on, for each organisation
//! whose list it is, kept in step with the resource (written in its transaction). A page of a
//! list is a range of the primary key `(list, org, authored, referral_id)`, read in the order
//! it is shown: its cost does not grow with the organisation's referrals.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::worklist_entries as w;
use crate::DbConnection;

type QResult<T> = Result<T, diesel::result::Error>;

/// One referral on one organisation's list.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = w, treat_none_as_default_value = false)]
pub struct Entry {
    pub list: String,
    /// ODS code of the organisation whose list it is.
    pub org: String,
    pub authored: NaiveDateTime,
    pub referral_id: String,
    /// Provider lists: the service the referral is with.
    pub service_id: Option<String>,
    pub specialty: String,
}

/// Rows per multi-row INSERT.
const CHUNK: usize = 1000;

/// Puts a referral on exactly `entries` (its lists after a write). A referral written for the
/// first time has nothing to remove (`fresh`).
pub fn replace(
    conn: &mut DbConnection,
    referral_id: &str,
    entries: &[Entry],
    fresh: bool,
) -> QResult<()> {
    if !fresh {
        diesel::delete(w::table.filter(w::referral_id.eq(referral_id))).execute(conn)?;
    }
    insert_many(conn, entries)
}

/// Takes a referral off every list (deleted or expired).
pub fn remove(conn: &mut DbConnection, referral_id: &str) -> QResult<()> {
    diesel::delete(w::table.filter(w::referral_id.eq(referral_id))).execute(conn)?;
    Ok(())
}

/// Inserts entries of referrals that have none yet (new referrals, bulk loads).
pub fn insert_many(conn: &mut DbConnection, entries: &[Entry]) -> QResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    if let DbConnection::Postgresql(pg) = conn {
        // Column arrays in one prepared statement (`pg_rows`), whatever the count.
        let mut rows = crate::pg_rows::WorklistRows::default();
        for e in entries {
            rows.entry(e);
        }
        return rows.write(pg);
    }
    for chunk in entries.chunks(CHUNK) {
        on_backend!(conn, |c| diesel::insert_into(w::table)
            .values(chunk)
            .execute(c))?;
    }
    Ok(())
}

/// Which entries of one organisation's list: optionally only some services or specialties
/// (either matching).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub list: String,
    pub org: String,
    pub services: Vec<String>,
    pub specialties: Vec<String>,
}

fn filtered(f: &ListFilter) -> w::BoxedQuery<'_, crate::conn::MultiBackend> {
    let mut q = w::table
        .filter(w::list.eq(&f.list))
        .filter(w::org.eq(&f.org))
        .into_boxed();
    if !f.services.is_empty() {
        q = q.filter(w::service_id.eq_any(&f.services));
    }
    if !f.specialties.is_empty() {
        q = q.filter(w::specialty.eq_any(&f.specialties));
    }
    q
}

/// The referral ids of one page of a list, oldest first (ties by id).
pub fn page(
    conn: &mut DbConnection,
    f: &ListFilter,
    offset: i64,
    limit: i64,
) -> QResult<Vec<String>> {
    filtered(f)
        .order_by((w::authored.asc(), w::referral_id.asc()))
        .offset(offset)
        .limit(limit)
        .select(w::referral_id)
        .load(conn)
}

/// How many referrals are on a list.
pub fn count(conn: &mut DbConnection, f: &ListFilter) -> QResult<i64> {
    filtered(f).count().get_result(conn)
}

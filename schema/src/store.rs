//! Query functions for resources, versions and their indexes. Callers own the transaction.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::pg_rows;
use crate::rows::*;
use crate::schema::*;
use crate::{DbConnection, StorageError};

type QResult<T> = Result<T, StorageError>;

pub(crate) fn take_sqlite_write_lock(conn: &mut DbConnection) -> Result<(), diesel::result::Error> {
    diesel::update(write_lock::table.filter(write_lock::id.eq(1)))
        .set(write_lock::counter.eq(write_lock::counter + 1))
        .execute(conn)
        .map(|_| ())
}

/// Refreshes the query planner's statistics (after a bulk load).
pub fn analyze(conn: &mut DbConnection) -> QResult<()> {
    diesel::sql_query("ANALYZE").execute(conn)?;
    Ok(())
}

/// After a bulk load of national-scale data, outside any transaction: PostgreSQL also
/// vacuums, so index-only scans (an export's organisation check, searches' token probes) skip
/// the table, as they do under autovacuum in production; SQLite analyzes.
pub fn settle_after_load(conn: &mut DbConnection) -> QResult<()> {
    if matches!(conn, DbConnection::Postgresql(_)) {
        diesel::sql_query("VACUUM (ANALYZE)").execute(conn)?;
        return Ok(());
    }
    analyze(conn)
}

/// The next UBRN number, inside the transaction that uses it. PostgreSQL takes it from a
/// sequence (no row lock held to commit, nothing to wait for; a rolled-back transaction
/// leaves a gap); SQLite from the `ubrn` counter row (its writers run one at a time anyway).
pub fn take_ubrn(conn: &mut DbConnection) -> QResult<i64> {
    Ok(take_ubrns(conn, 1)?.first().copied().unwrap_or_default())
}

/// `n` UBRN numbers (bulk loads), as `take_ubrn`.
pub fn take_ubrns(conn: &mut DbConnection, n: i64) -> QResult<Vec<i64>> {
    match conn {
        // A prepared statement (a `sql_query` would be parsed and planned on every referral).
        DbConnection::Postgresql(c) => Ok(pg_rows::NextUbrns(n).load::<i64>(c)?),
        DbConnection::Sqlite(_) => {
            let first = reserve_counter(conn, "ubrn", n)?;
            Ok((first..first + n).collect())
        }
    }
}

/// A named counter's value, if there is one.
pub fn counter_value(conn: &mut DbConnection, name: &str) -> QResult<Option<i64>> {
    Ok(counters::table
        .filter(counters::name.eq(name))
        .select(counters::value)
        .first(conn)
        .optional()?)
}

/// The named counters whose names start with `prefix`, with their values, in one statement.
pub fn counters_named(conn: &mut DbConnection, prefix: &str) -> QResult<Vec<(String, i64)>> {
    Ok(counters::table
        .filter(counters::name.like(format!("{prefix}%")))
        .select((counters::name, counters::value))
        .load(conn)?)
}

/// Sets a named counter (one-off markers, such as a finished backfill).
pub fn set_counter(conn: &mut DbConnection, name: &str, value: i64) -> QResult<()> {
    diesel::update(counters::table.filter(counters::name.eq(name)))
        .set(counters::value.eq(value))
        .execute(conn)?;
    Ok(())
}

/// Adds a named counter (a marker) that is not there yet.
pub fn add_counter(conn: &mut DbConnection, name: &str, value: i64) -> QResult<()> {
    diesel::insert_into(counters::table)
        .values((counters::name.eq(name), counters::value.eq(value)))
        .execute(conn)?;
    Ok(())
}

/// Live resources of a type with ids after `after`, in id order, at most `limit` (walks a
/// whole type in pages).
pub fn page_of_type(
    conn: &mut DbConnection,
    res_type: &str,
    after: &str,
    limit: i64,
) -> QResult<Vec<ResourceRow>> {
    Ok(resources::table
        .filter(resources::res_type.eq(res_type))
        .filter(resources::id.gt(after))
        .filter(resources::deleted.eq(0))
        .order_by(resources::id.asc())
        .limit(limit)
        .select(ResourceRow::as_select())
        .load(conn)?)
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// `page_of_type` in a write transaction, with the page's rows locked until it ends: a writer
/// of one of them waits, so what the transaction writes from their content stays true of it
/// (on PostgreSQL `FOR UPDATE`; SQLite's write transaction holds every writer off already).
pub fn page_of_type_locked(
    conn: &mut DbConnection,
    res_type: &str,
    after: &str,
    limit: i64,
) -> QResult<Vec<ResourceRow>> {
    if !matches!(conn, DbConnection::Postgresql(_)) {
        return page_of_type(conn, res_type, after, limit);
    }
    let ids: Vec<String> = diesel::sql_query(
        "SELECT id FROM resources WHERE res_type = $1 AND id > $2 AND deleted = 0 \
         ORDER BY id LIMIT $3 FOR UPDATE",
    )
    .bind::<diesel::sql_types::Text, _>(res_type)
    .bind::<diesel::sql_types::Text, _>(after)
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .load::<IdRow>(conn)?
    .into_iter()
    .map(|r| r.id)
    .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(resources::table
        .filter(resources::res_type.eq(res_type))
        .filter(resources::id.eq_any(&ids))
        .filter(resources::deleted.eq(0))
        .order_by(resources::id.asc())
        .select(ResourceRow::as_select())
        .load(conn)?)
}

/// Reserves `n` consecutive values of a named counter; returns the first (bulk loads).
pub fn reserve_counter(conn: &mut DbConnection, name: &str, n: i64) -> QResult<i64> {
    let updated = diesel::update(counters::table.filter(counters::name.eq(name)))
        .set(counters::value.eq(counters::value + n))
        .execute(conn)?;
    if updated == 0 {
        return Err(StorageError::Config(format!("no counter named '{name}'")));
    }
    let last: i64 = counters::table
        .filter(counters::name.eq(name))
        .select(counters::value)
        .first(conn)?;
    Ok(last - n + 1)
}

/// Records a client assertion's `jti` for its client; false when it was recorded before (a
/// replay). Expired records are dropped first.
pub fn record_assertion(
    conn: &mut DbConnection,
    client_id: &str,
    jti: &str,
    expires_at: NaiveDateTime,
    now: NaiveDateTime,
) -> QResult<bool> {
    diesel::delete(used_assertions::table.filter(used_assertions::expires_at.lt(now)))
        .execute(conn)?;
    // One statement decides, so two instances racing with the same assertion cannot both win.
    let row = (
        used_assertions::client_id.eq(client_id),
        used_assertions::jti.eq(jti),
        used_assertions::expires_at.eq(expires_at),
    );
    let inserted = on_backend!(conn, |c| diesel::insert_into(used_assertions::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(inserted == 1)
}

/// A check that the database answers.
pub fn ping(conn: &mut DbConnection) -> QResult<()> {
    resources::table
        .select(diesel::dsl::count_star())
        .filter(resources::res_type.eq("__ping__"))
        .first::<i64>(conn)?;
    Ok(())
}

/// Whether the database can take writes now: `ping`, and on SQLite the write lock taken and
/// given back at once (a file locked by another process reads fine but refuses every write).
pub fn ready(conn: &mut DbConnection) -> QResult<()> {
    ping(conn)?;
    if let DbConnection::Sqlite(c) = conn {
        use diesel::connection::SimpleConnection;
        c.batch_execute("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(crate::StorageError::Query)?;
    }
    Ok(())
}

/// The current row of a resource, deleted or not.
pub fn get_current(
    conn: &mut DbConnection,
    res_type: &str,
    id: &str,
) -> QResult<Option<ResourceRow>> {
    Ok(resources::table
        .filter(resources::res_type.eq(res_type))
        .filter(resources::id.eq(id))
        .select(ResourceRow::as_select())
        .first(conn)
        .optional()?)
}

/// The current versions (deleted ones included) of the resources named by (type, id) pairs,
/// in no particular order; those that do not exist are left out. One prepared statement on
/// PostgreSQL, whatever the types (`live_among`, a write's check of its references).
pub fn get_pairs(conn: &mut DbConnection, pairs: &[(&str, &str)]) -> QResult<Vec<ResourceRow>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    if let DbConnection::Postgresql(pg) = conn {
        return Ok(pg_rows::Pairs::new(pairs).load::<ResourceRow>(pg)?);
    }
    // SQLite answers in-process: a lookup each costs no round trip.
    let mut out = Vec::with_capacity(pairs.len());
    for (t, id) in pairs {
        out.extend(get_current(conn, t, id)?);
    }
    Ok(out)
}

/// What a use case reads before it decides anything (`read_ahead`).
#[derive(Debug, Default, Clone)]
pub struct Ahead {
    /// Resources named by (type, id): each is answered, with its current row (deleted ones
    /// included) or none.
    pub roots: Vec<(String, String)>,
    /// How many levels of references to follow from the roots, through the reference index
    /// (`search_refs`): each resource reached is answered like a root.
    pub depth: usize,
    /// (type, id, param): that resource's token codes of `param`, in code order.
    pub tokens: Option<(String, String, String)>,
    /// (source type, param, target type, target id): the live resources of the source type
    /// that refer to the target through `param`.
    pub referring: Option<(String, String, String, String)>,
    /// Whether to take the next UBRN number (`take_ubrn`).
    pub ubrn: bool,
}

/// What `read_ahead` found.
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// Each resource named or reached, with its current row or none.
    pub found: Vec<((String, String), Option<ResourceRow>)>,
    pub tokens: Vec<String>,
    pub referring: Vec<ResourceRow>,
    pub ubrn: Option<i64>,
}

/// Reads what `ahead` names in one statement on PostgreSQL (a part per level over the
/// reference index, one round trip where reading level by level took one per level, and the
/// tokens and referring resources beside it); SQLite answers in-process, a lookup at a time.
pub fn read_ahead(conn: &mut DbConnection, ahead: &Ahead) -> QResult<ReadAhead> {
    let mut out = ReadAhead::default();
    if ahead.roots.is_empty() && ahead.tokens.is_none() && ahead.referring.is_none() && !ahead.ubrn
    {
        return Ok(out);
    }
    if let DbConnection::Postgresql(pg) = conn {
        let pairs: Vec<(&str, &str)> = ahead
            .roots
            .iter()
            .map(|(t, id)| (t.as_str(), id.as_str()))
            .collect();
        let (tt, ti, tp) = ahead.tokens.clone().unwrap_or_default();
        let (rs, rp, rt, ri) = ahead.referring.clone().unwrap_or_default();
        let q = pg_rows::Ahead {
            pairs: pg_rows::Pairs::new(&pairs),
            depth: ahead.depth,
            token: [tt, ti, tp],
            referring: [rs, rp, rt, ri],
            ubrn: ahead.ubrn,
        };
        type Row = (
            i16,
            String,
            String,
            Option<i64>,
            Option<NaiveDateTime>,
            Option<i32>,
            Option<String>,
        );
        for (kind, res_type, id, version_id, last_updated, deleted, content) in q.load::<Row>(pg)? {
            let row = match (version_id, last_updated, deleted, content) {
                (Some(version_id), Some(last_updated), Some(deleted), Some(content)) => {
                    Some(ResourceRow {
                        res_type: res_type.clone(),
                        id: id.clone(),
                        version_id,
                        last_updated,
                        deleted,
                        content,
                    })
                }
                _ => None,
            };
            match (kind, row) {
                (0, row) => out.found.push(((res_type, id), row)),
                (1, _) => out.tokens.push(id),
                (3, _) => out.ubrn = version_id,
                (_, Some(row)) => out.referring.push(row),
                _ => {}
            }
        }
        out.tokens.sort();
        return Ok(out);
    }
    // SQLite: level by level, in-process.
    let mut seen = std::collections::HashSet::new();
    let mut level = ahead.roots.clone();
    for d in 0..=ahead.depth {
        let mut next = Vec::new();
        for key in level {
            if seen.len() >= pg_rows::AHEAD_LIMIT as usize || !seen.insert(key.clone()) {
                continue;
            }
            let row = get_current(conn, &key.0, &key.1)?;
            if d < ahead.depth && row.is_some() {
                next.extend(
                    search_refs::table
                        .filter(search_refs::res_type.eq(&key.0))
                        .filter(search_refs::res_id.eq(&key.1))
                        .select((search_refs::target_type, search_refs::target_id))
                        .load::<(String, String)>(conn)?,
                );
            }
            out.found.push((key, row));
        }
        level = next;
    }
    if let Some((t, id, param)) = &ahead.tokens {
        out.tokens = token_codes(conn, t, id, param)?;
    }
    if let Some((source, param, target_type, target_id)) = &ahead.referring {
        let ids = referring(
            conn,
            source,
            param,
            target_type,
            std::slice::from_ref(target_id),
        )?;
        out.referring = get_many(conn, source, &ids)?;
    }
    if ahead.ubrn {
        out.ubrn = Some(take_ubrn(conn)?);
    }
    Ok(out)
}

/// Live (not deleted) resources of a type among `ids`.
pub fn get_many(
    conn: &mut DbConnection,
    res_type: &str,
    ids: &[String],
) -> QResult<Vec<ResourceRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        out.extend(
            resources::table
                .filter(resources::res_type.eq(res_type))
                .filter(resources::id.eq_any(chunk))
                .filter(resources::deleted.eq(0))
                .select(ResourceRow::as_select())
                .load(conn)?,
        );
    }
    Ok(out)
}

/// Which of `ids` (of one type) hold a `param` token with one of `codes` (any system).
pub fn holding_token(
    conn: &mut DbConnection,
    res_type: &str,
    ids: &[String],
    param: &str,
    codes: &[String],
) -> QResult<Vec<String>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut q = search_tokens::table
            .filter(search_tokens::res_type.eq(res_type.to_owned()))
            .filter(search_tokens::param.eq(param.to_owned()))
            .filter(search_tokens::code.eq_any(codes.to_vec()))
            .select(search_tokens::res_id)
            .distinct()
            .into_boxed();
        q = match chunk {
            // One resource (the check before every write): an equality, which PostgreSQL
            // always takes as the index's key. With `= ANY` and statistics from before the
            // type had rows it filtered every row of the type instead (195 ms a booking at
            // 8,000 referrals).
            [id] => q.filter(search_tokens::res_id.eq(id.clone())),
            // Several (a page of search results): planned with the values each time. Kept
            // prepared, PostgreSQL's generic plan read every token of the organisation's code
            // through the (type, parameter, code) index and filtered them by id: 34 ms for a
            // worklist page of an organisation with 31,000 referrals, growing with them.
            _ => q
                .filter(search_tokens::res_id.eq_any(chunk.to_vec()))
                .filter(crate::search::planned_with_values()),
        };
        out.extend(q.load::<String>(conn)?);
    }
    Ok(out)
}

/// Whether a live resource exists.
pub fn exists(conn: &mut DbConnection, res_type: &str, id: &str) -> QResult<bool> {
    let n: i64 = resources::table
        .filter(resources::res_type.eq(res_type))
        .filter(resources::id.eq(id))
        .filter(resources::deleted.eq(0))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Which of these (type, id) pairs are live resources: one query for all of them (a booking's
/// appointment refers to five resources of five types). On PostgreSQL the prepared pair
/// lookup (`get_pairs`); the query built here was planned on every call.
pub fn live_among(
    conn: &mut DbConnection,
    refs: &[(&str, &str)],
) -> QResult<std::collections::HashSet<(String, String)>> {
    if matches!(conn, DbConnection::Postgresql(_)) {
        return Ok(get_pairs(conn, refs)?
            .into_iter()
            .filter(|r| !r.is_deleted())
            .map(|r| (r.res_type, r.id))
            .collect());
    }
    type Cond = Box<
        dyn BoxableExpression<
            resources::table,
            crate::conn::MultiBackend,
            SqlType = diesel::sql_types::Bool,
        >,
    >;
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (t, id) in refs {
        by_type.entry(t).or_default().push(id);
    }
    let mut any: Option<Cond> = None;
    for (t, ids) in by_type {
        let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        let one: Cond = Box::new(
            resources::res_type
                .eq(t.to_owned())
                .and(resources::id.eq_any(ids)),
        );
        any = Some(match any {
            Some(a) => Box::new(a.or(one)),
            None => one,
        });
    }
    let Some(any) = any else {
        return Ok(Default::default());
    };
    let found: Vec<(String, String)> = resources::table
        .filter(resources::deleted.eq(0))
        .filter(any)
        .select((resources::res_type, resources::id))
        .load(conn)?;
    Ok(found.into_iter().collect())
}

/// One version of a resource.
pub fn get_version(
    conn: &mut DbConnection,
    res_type: &str,
    id: &str,
    version_id: i64,
) -> QResult<Option<VersionRow>> {
    Ok(resource_versions::table
        .filter(resource_versions::res_type.eq(res_type))
        .filter(resource_versions::id.eq(id))
        .filter(resource_versions::version_id.eq(version_id))
        .select(VersionRow::as_select())
        .first(conn)
        .optional()?)
}

/// Scope of a history query.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub res_type: Option<String>,
    pub id: Option<String>,
    pub since: Option<NaiveDateTime>,
    pub at_or_before: Option<NaiveDateTime>,
    /// Only resources holding a `(param, code)` token with one of the codes (organisation
    /// scoping: the resources a caller may see).
    pub holding: Option<(String, Vec<String>)>,
    pub offset: i64,
    pub limit: i64,
    /// How far to count the versions for the total (`Count::All` by default).
    pub count: crate::search::Count,
}

fn history_base(
    q: &HistoryQuery,
) -> resource_versions::BoxedQuery<'static, crate::conn::MultiBackend> {
    let mut query = resource_versions::table.into_boxed();
    if let Some(t) = &q.res_type {
        query = query.filter(resource_versions::res_type.eq(t.clone()));
    }
    match &q.id {
        Some(id) => query = query.filter(resource_versions::id.eq(id.clone())),
        // A page of a type's (or every type's) versions, often an organisation's: planned with
        // its values each time. Kept prepared, the generic plan of an organisation's history
        // took 350-500 ms a page where the planned one took 50 (31,000 referrals).
        None => query = query.filter(crate::search::planned_with_values()),
    }
    if let Some(since) = q.since {
        query = query.filter(resource_versions::last_updated.ge(since));
    }
    if let Some(before) = q.at_or_before {
        query = query.filter(resource_versions::last_updated.le(before));
    }
    if let Some((param, codes)) = &q.holding {
        let holders = search_tokens::table
            .filter(search_tokens::param.eq(param.clone()))
            .filter(search_tokens::code.eq_any(codes.clone()))
            .filter(search_tokens::res_type.eq(q.res_type.clone().unwrap_or_default()))
            .select(search_tokens::res_id);
        query = query.filter(resource_versions::id.eq_any(holders));
    }
    query
}

/// Versions, newest first, and how many there are, as far as `q.count` asks (a first page that
/// is not full holds them all).
pub fn history(
    conn: &mut DbConnection,
    q: &HistoryQuery,
) -> QResult<(Vec<VersionRow>, Option<i64>)> {
    let rows = history_base(q)
        .order((
            resource_versions::last_updated.desc(),
            resource_versions::res_type.asc(),
            resource_versions::id.asc(),
            resource_versions::version_id.desc(),
        ))
        .offset(q.offset)
        .limit(q.limit)
        .select(VersionRow::as_select())
        .load(conn)?;
    let total = crate::versions::total(conn, q.count, (q.offset, q.limit, rows.len()), || {
        history_base(q)
    })?;
    Ok((rows, total))
}

/// A new resource version to store.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub res_type: &'a str,
    pub id: &'a str,
    pub version_id: i64,
    pub last_updated: NaiveDateTime,
    pub content: &'a str,
    pub author: &'a Author,
}

fn version_row(v: &NewVersion<'_>, method: &str, deleted: bool) -> VersionRow {
    VersionRow {
        res_type: v.res_type.to_owned(),
        id: v.id.to_owned(),
        version_id: v.version_id,
        last_updated: v.last_updated,
        method: method.to_owned(),
        deleted: i32::from(deleted),
        content: v.content.to_owned(),
        author_user: v.author.user.clone(),
        author_role: v.author.role.clone(),
        author_org: v.author.org.clone(),
        request_id: v.author.request_id.clone(),
        client_id: v.author.client_id.clone(),
        on_behalf_of: v.author.on_behalf_of.clone(),
    }
}

/// Inserts a brand-new resource (version 1), its version row and its indexes (`insert_many`
/// of one).
pub fn insert_resource(
    conn: &mut DbConnection,
    v: &NewVersion<'_>,
    index: &IndexEntries,
    projection: &crate::reports::Projection,
) -> QResult<()> {
    if let DbConnection::Postgresql(pg) = conn {
        // One round trip: the resource, its version, its index rows, its reporting row and
        // worklist entries.
        let mut rows = pg_rows::Rows::default();
        add_new(&mut rows, v, index);
        rows.project(pg_rows::ProjectionParts::new(projection, true));
        rows.write(pg)?;
        return refresh_directory(conn, &[(v.clone(), index)]);
    }
    insert_many(conn, &[(v.clone(), index)])?;
    Ok(projection.write(conn, true)?)
}

/// The newest first version of a type (the latest resource of it created).
pub fn latest_created(conn: &mut DbConnection, res_type: &str) -> QResult<Option<VersionRow>> {
    Ok(resource_versions::table
        .filter(resource_versions::res_type.eq(res_type))
        .filter(resource_versions::version_id.eq(1))
        .filter(resource_versions::method.eq("POST"))
        .order(resource_versions::last_updated.desc())
        .select(VersionRow::as_select())
        .first(conn)
        .optional()?)
}

/// The versions one request wrote (its `request_id`), in the order they were written.
pub fn versions_of_request(conn: &mut DbConnection, request_id: &str) -> QResult<Vec<VersionRow>> {
    Ok(resource_versions::table
        .filter(resource_versions::request_id.eq(request_id))
        .order((
            resource_versions::last_updated.asc(),
            resource_versions::id.asc(),
        ))
        .select(VersionRow::as_select())
        .load(conn)?)
}

/// Deletes the rows of `$table` owned by one resource (`$type_col`, `$id_col`).
macro_rules! delete_owned {
    ($conn:expr, $table:ident, $type_col:ident, $id_col:ident, $res_type:expr, $id:expr) => {
        diesel::delete(
            $table::table
                .filter($table::$type_col.eq($res_type))
                .filter($table::$id_col.eq($id)),
        )
        .execute($conn)?
    };
}

/// One stored index row of any table: kind, parameter, two text columns, a date range, a
/// position (`stored_index` reads them all in one statement).
#[derive(diesel::Queryable)]
struct StoredIndexRow {
    kind: String,
    param: String,
    a: String,
    b: String,
    low: Option<NaiveDateTime>,
    high: Option<NaiveDateTime>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// The six index tables' rows of one resource, in one statement: each branch is followed by
/// `res_type = ? AND res_id = ?`.
const STORED_INDEX: [&str; 6] = [
    "SELECT 't' AS kind, param, system AS a, code AS b, CAST(NULL AS TIMESTAMP) AS low, \
     CAST(NULL AS TIMESTAMP) AS high, CAST(NULL AS DOUBLE PRECISION) AS latitude, \
     CAST(NULL AS DOUBLE PRECISION) AS longitude FROM search_tokens WHERE ",
    " UNION ALL SELECT 's', param, value_norm, value_exact, NULL, NULL, NULL, NULL FROM search_strings WHERE ",
    " UNION ALL SELECT 'd', param, '', '', low, high, NULL, NULL FROM search_dates WHERE ",
    " UNION ALL SELECT 'r', param, target_type, target_id, NULL, NULL, NULL, NULL FROM search_refs WHERE ",
    " UNION ALL SELECT 'g', param, '', '', NULL, NULL, latitude, longitude FROM search_geo WHERE ",
    " UNION ALL SELECT 'u', '', system, value, NULL, NULL, NULL, NULL FROM unique_identifiers WHERE ",
];

/// `STORED_INDEX` for one resource, as a statement diesel keeps prepared (by its SQL text):
/// its plan does not depend on the values, and a raw `sql_query` would be planned afresh on
/// every update (a quarter of a millisecond on PostgreSQL).
struct StoredIndexQuery<'a> {
    res_type: &'a str,
    id: &'a str,
}

impl diesel::query_builder::QueryId for StoredIndexQuery<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::QueryFragment<crate::conn::MultiBackend> for StoredIndexQuery<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, crate::conn::MultiBackend>,
    ) -> QueryResult<()> {
        use diesel::sql_types::Text;
        for branch in STORED_INDEX {
            out.push_sql(branch);
            out.push_sql("res_type = ");
            out.push_bind_param::<Text, str>(self.res_type)?;
            out.push_sql(" AND res_id = ");
            out.push_bind_param::<Text, str>(self.id)?;
        }
        Ok(())
    }
}

impl diesel::query_builder::Query for StoredIndexQuery<'_> {
    type SqlType = StoredIndexSql;
}

type StoredIndexSql = (
    diesel::sql_types::Text,
    diesel::sql_types::Text,
    diesel::sql_types::Text,
    diesel::sql_types::Text,
    diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
    diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
    diesel::sql_types::Nullable<diesel::sql_types::Double>,
    diesel::sql_types::Nullable<diesel::sql_types::Double>,
);

/// `STORED_INDEX` for several resources of a type, each row led by its resource's id (a
/// reindex reads a page at a time).
struct StoredIndexesQuery<'a> {
    res_type: &'a str,
    ids: &'a [&'a str],
}

impl diesel::query_builder::QueryId for StoredIndexesQuery<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::QueryFragment<crate::conn::MultiBackend> for StoredIndexesQuery<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, crate::conn::MultiBackend>,
    ) -> QueryResult<()> {
        use diesel::sql_types::Text;
        // Its text changes with the number of ids: not kept prepared.
        out.unsafe_to_cache_prepared();
        for (i, branch) in STORED_INDEX.iter().enumerate() {
            // Each branch's columns after the resource's id.
            let (head, rest) = branch.split_at(branch.find("SELECT ").map_or(0, |at| at + 7));
            out.push_sql(head);
            out.push_sql(if i == 0 {
                "res_id AS owner, "
            } else {
                "res_id, "
            });
            out.push_sql(rest);
            out.push_sql("res_type = ");
            out.push_bind_param::<Text, str>(self.res_type)?;
            out.push_sql(" AND res_id IN (");
            for (j, id) in self.ids.iter().enumerate() {
                if j > 0 {
                    out.push_sql(", ");
                }
                out.push_bind_param::<Text, str>(id)?;
            }
            out.push_sql(")");
        }
        Ok(())
    }
}

impl diesel::query_builder::Query for StoredIndexesQuery<'_> {
    type SqlType = (diesel::sql_types::Text, StoredIndexSql);
}

impl<Conn> RunQueryDsl<Conn> for StoredIndexesQuery<'_> {}

impl<Conn> RunQueryDsl<Conn> for StoredIndexQuery<'_> {}

/// The index rows stored for a resource, as they were written (`insert_resource` writes them
/// back; `update_resource` compares them with the new version's).
pub fn stored_index(conn: &mut DbConnection, res_type: &str, id: &str) -> QResult<IndexEntries> {
    let rows: Vec<StoredIndexRow> = StoredIndexQuery { res_type, id }.load(conn)?;
    let mut index = IndexEntries::default();
    for r in rows {
        r.add_to(&mut index);
    }
    Ok(index)
}

/// The index rows stored for each of these resources of a type (`stored_index` in one
/// statement), by id; a resource without rows has none.
fn stored_indexes(
    conn: &mut DbConnection,
    res_type: &str,
    ids: &[&str],
) -> QResult<std::collections::HashMap<String, IndexEntries>> {
    let mut out: std::collections::HashMap<String, IndexEntries> = Default::default();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, StoredIndexRow)> = StoredIndexesQuery { res_type, ids }.load(conn)?;
    for (id, r) in rows {
        r.add_to(out.entry(id).or_default());
    }
    Ok(out)
}

impl StoredIndexRow {
    fn add_to(self, index: &mut IndexEntries) {
        let r = self;
        match r.kind.as_str() {
            "t" => index.tokens.push(TokenEntry {
                param: r.param,
                system: r.a,
                code: r.b,
            }),
            "s" => index.strings.push(StringEntry {
                param: r.param,
                norm: r.a,
                exact: r.b,
            }),
            "d" => index.dates.push(DateEntry {
                param: r.param,
                low: r.low.unwrap_or_default(),
                high: r.high.unwrap_or_default(),
            }),
            "r" => index.refs.push(RefEntry {
                param: r.param,
                target_type: r.a,
                target_id: r.b,
            }),
            "g" => index.geo.push(GeoEntry {
                param: r.param,
                latitude: r.latitude.unwrap_or_default(),
                longitude: r.longitude.unwrap_or_default(),
            }),
            _ => index.unique.push(UniqueKey {
                system: r.a,
                value: r.b,
            }),
        }
    }
}

/// The index entries a resource's stored version was written with, as its writer knows them
/// (from the stored content): an update then touches only the index tables whose entries
/// differ from the new version's.
#[derive(Debug, Clone, Copy)]
pub struct KnownIndex<'a> {
    pub entries: &'a IndexEntries,
    /// Whether `entries` holds all of the version's tokens. Not when it may have `_access`
    /// tokens (a type scoped by organisation or audience, or a version written for named
    /// organisations): they come from who may see it, not from its content, so its tokens are
    /// compared with the stored rows.
    pub tokens_complete: bool,
}

/// Replaces the current version if it is still `expected_version`; returns false when another
/// writer got there first (nothing is changed then). `known`: the stored version's index
/// entries, when the caller knows them (`KnownIndex`); without, every index table is
/// compared with its stored rows.
pub fn update_resource(
    conn: &mut DbConnection,
    v: &NewVersion<'_>,
    expected_version: i64,
    index: &IndexEntries,
    known: Option<KnownIndex<'_>>,
    projection: &crate::reports::Projection,
) -> QResult<bool> {
    let version = version_row(v, "PUT", false);
    if let DbConnection::Postgresql(pg) = conn {
        // One round trip: the row, its version and the index tables that may have changed
        // (`pg_rows::Rewrite`).
        let tables = tables_to_compare(index, known);
        let projection = pg_rows::ProjectionParts::new(projection, false);
        if !pg_rows::Rewrite::new(&version, expected_version, index, tables, projection)
            .apply(pg)?
        {
            return Ok(false);
        }
    } else {
        if !replace_row(conn, v, expected_version, false)? {
            return Ok(false);
        }
        let changed = match known {
            Some(k) if k.tokens_complete => {
                let c = changed(k.entries, index);
                clear_params(conn, v.res_type, &[v.id], &c)?;
                c.entries(index)
            }
            _ => reindex(conn, v.res_type, v.id, index)?,
        };
        diesel::insert_into(resource_versions::table)
            .values(version)
            .execute(conn)?;
        write_index(conn, v.res_type, v.id, &changed)?;
        projection.write(conn, false)?;
    }
    crate::directory::refresh(conn, v.res_type, &[v.id])?;
    Ok(true)
}

/// The index tables an update compares with their stored rows: those whose entries may
/// have changed.
fn tables_to_compare(index: &IndexEntries, known: Option<KnownIndex<'_>>) -> pg_rows::Tables {
    match known {
        Some(k) => {
            let mut t = changed(k.entries, index).tables();
            t.tokens |= !k.tokens_complete;
            t
        }
        None => pg_rows::Tables::ALL,
    }
}

/// A resource's write held back until the end of its transaction, where it goes with the
/// others and the audit and outbox rows in one statement (`write_additions`): PostgreSQL only
/// (`can_defer`). Nothing may read the database between the deferral and that statement
/// (`crate::conn::writes_held`).
pub struct PendingWrite {
    res_type: String,
    id: String,
    /// The unique keys its version holds (the key a concurrent writer may have taken).
    unique: Vec<UniqueKey>,
    kind: Pending,
}

// A transaction holds a handful, briefly: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Pending {
    New(pg_rows::Rows),
    Replace {
        version: VersionRow,
        expected: i64,
        index: IndexEntries,
        tables: pg_rows::Tables,
        projection: pg_rows::ProjectionParts,
    },
}

impl PendingWrite {
    /// `insert_resource`, held back.
    pub fn insert(
        v: &NewVersion<'_>,
        index: &IndexEntries,
        projection: &crate::reports::Projection,
    ) -> Self {
        let mut rows = pg_rows::Rows::default();
        add_new(&mut rows, v, index);
        rows.project(pg_rows::ProjectionParts::new(projection, true));
        PendingWrite {
            res_type: v.res_type.to_owned(),
            id: v.id.to_owned(),
            unique: index.unique.clone(),
            kind: Pending::New(rows),
        }
    }

    /// `update_resource`, held back: whether the resource was still at `expected_version`
    /// is known when it is written.
    pub fn update(
        v: &NewVersion<'_>,
        expected_version: i64,
        index: &IndexEntries,
        known: Option<KnownIndex<'_>>,
        projection: &crate::reports::Projection,
    ) -> Self {
        PendingWrite {
            res_type: v.res_type.to_owned(),
            id: v.id.to_owned(),
            unique: index.unique.clone(),
            kind: Pending::Replace {
                version: version_row(v, "PUT", false),
                expected: expected_version,
                tables: tables_to_compare(index, known),
                index: index.clone(),
                projection: pg_rows::ProjectionParts::new(projection, false),
            },
        }
    }

    pub fn res_type(&self) -> &str {
        &self.res_type
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn unique_keys(&self) -> &[UniqueKey] {
        &self.unique
    }
}

/// Whether a write of `res_type` may be held back to its transaction's end
/// (`PendingWrite`): on PostgreSQL, and for a type whose write has no consequences beyond its
/// own rows (a service's or location's write also refreshes the Directory's positions).
pub fn can_defer(conn: &DbConnection, res_type: &str) -> bool {
    matches!(conn, DbConnection::Postgresql(_))
        && res_type != crate::directory::SERVICE
        && res_type != crate::directory::LOCATION
}

/// Replaces a resource's row with version `v` (deleted or live) if it is still at
/// `expected_version`; false when another writer got there first.
fn replace_row(
    conn: &mut DbConnection,
    v: &NewVersion<'_>,
    expected_version: i64,
    deleted: bool,
) -> QResult<bool> {
    let n = diesel::update(
        resources::table
            .filter(resources::res_type.eq(v.res_type))
            .filter(resources::id.eq(v.id))
            .filter(resources::version_id.eq(expected_version)),
    )
    .set((
        resources::version_id.eq(v.version_id),
        resources::last_updated.eq(v.last_updated),
        resources::deleted.eq(i32::from(deleted)),
        resources::content.eq(v.content),
    ))
    .execute(conn)?;
    Ok(n > 0)
}

/// The parameters whose entries differ between two index versions (compared as sets).
fn changed_params<'a, E: Clone + PartialEq>(
    old: &'a [E],
    new: &'a [E],
    param: impl Fn(&E) -> &str,
    key: impl Fn(&E, &E) -> std::cmp::Ordering,
) -> Vec<String> {
    let group = |entries: &'a [E]| {
        let mut by: std::collections::BTreeMap<&str, Vec<E>> = std::collections::BTreeMap::new();
        for e in entries {
            by.entry(param(e)).or_default().push(e.clone());
        }
        for v in by.values_mut() {
            v.sort_by(&key);
            v.dedup_by(|a, b| key(a, b).is_eq());
        }
        by
    };
    let (old, new) = (group(old), group(new));
    let mut changed: Vec<String> = old
        .iter()
        .filter(|(p, v)| new.get(*p) != Some(*v))
        .map(|(p, _)| (*p).to_owned())
        .collect();
    changed.extend(
        new.keys()
            .filter(|p| !old.contains_key(*p))
            .map(|p| (*p).to_owned()),
    );
    changed
}

/// The entries whose parameter is one of `params`.
fn of_params<E: Clone>(entries: &[E], params: &[String], param: impl Fn(&E) -> &str) -> Vec<E> {
    entries
        .iter()
        .filter(|e| params.iter().any(|p| p == param(e)))
        .cloned()
        .collect()
}

/// The parameters whose entries differ between a resource's stored index and a new one,
/// table by table.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct Changed {
    tokens: Vec<String>,
    strings: Vec<String>,
    dates: Vec<String>,
    refs: Vec<String>,
    geo: Vec<String>,
    /// Not per parameter: any difference rewrites them all ("" when they differ).
    unique: Vec<String>,
}

fn changed(stored: &IndexEntries, index: &IndexEntries) -> Changed {
    Changed {
        tokens: changed_params(&stored.tokens, &index.tokens, |e| &e.param, |a, b| a.cmp(b)),
        strings: changed_params(
            &stored.strings,
            &index.strings,
            |e| &e.param,
            |a, b| (&a.param, &a.exact, &a.norm).cmp(&(&b.param, &b.exact, &b.norm)),
        ),
        dates: changed_params(&stored.dates, &index.dates, |e| &e.param, |a, b| a.cmp(b)),
        refs: changed_params(&stored.refs, &index.refs, |e| &e.param, |a, b| a.cmp(b)),
        geo: changed_params(
            &stored.geo,
            &index.geo,
            |e| &e.param,
            |a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
        ),
        unique: changed_params(&stored.unique, &index.unique, |_| "", |a, b| a.cmp(b)),
    }
}

impl Changed {
    fn is_empty(&self) -> bool {
        [
            &self.tokens,
            &self.strings,
            &self.dates,
            &self.refs,
            &self.geo,
            &self.unique,
        ]
        .iter()
        .all(|p| p.is_empty())
    }

    /// The tables with any change.
    fn tables(&self) -> pg_rows::Tables {
        pg_rows::Tables {
            tokens: !self.tokens.is_empty(),
            strings: !self.strings.is_empty(),
            dates: !self.dates.is_empty(),
            refs: !self.refs.is_empty(),
            geo: !self.geo.is_empty(),
            unique: !self.unique.is_empty(),
        }
    }

    /// The new entries of the changed parameters.
    fn entries(&self, index: &IndexEntries) -> IndexEntries {
        IndexEntries {
            tokens: of_params(&index.tokens, &self.tokens, |e| &e.param),
            strings: of_params(&index.strings, &self.strings, |e| &e.param),
            dates: of_params(&index.dates, &self.dates, |e| &e.param),
            refs: of_params(&index.refs, &self.refs, |e| &e.param),
            geo: of_params(&index.geo, &self.geo, |e| &e.param),
            unique: of_params(&index.unique, &self.unique, |_| ""),
        }
    }
}

/// Deletes the stored index rows of the changed parameters (SQLite; and a reindex on both).
fn clear_params(conn: &mut DbConnection, res_type: &str, ids: &[&str], c: &Changed) -> QResult<()> {
    macro_rules! clear_params {
        ($table:ident, $params:expr) => {
            if !$params.is_empty() {
                diesel::delete(
                    $table::table
                        .filter($table::res_type.eq(res_type))
                        .filter($table::res_id.eq_any(ids))
                        .filter($table::param.eq_any(&$params)),
                )
                .execute(conn)?;
            }
        };
    }
    clear_params!(search_tokens, c.tokens);
    clear_params!(search_strings, c.strings);
    clear_params!(search_dates, c.dates);
    clear_params!(search_refs, c.refs);
    clear_params!(search_geo, c.geo);
    if !c.unique.is_empty() {
        diesel::delete(
            unique_identifiers::table
                .filter(unique_identifiers::res_type.eq(res_type))
                .filter(unique_identifiers::res_id.eq_any(ids)),
        )
        .execute(conn)?;
    }
    Ok(())
}

/// Brings a resource's index rows from what is stored to `index`, rewriting only the
/// parameters whose entries changed: a slot booked changes one `status` token, not its
/// dozen rows, and a referral's transition its state tokens, not its whole index (fewer
/// B-tree deletions and insertions, fewer dead rows). Deletes the changed parameters' rows
/// and returns their new entries, for the caller to insert. (SQLite: PostgreSQL compares the
/// rows inside the update's one statement, `pg_rows::Rewrite`.)
fn reindex(
    conn: &mut DbConnection,
    res_type: &str,
    id: &str,
    index: &IndexEntries,
) -> QResult<IndexEntries> {
    let stored = stored_index(conn, res_type, id)?;
    let c = changed(&stored, index);
    clear_params(conn, res_type, &[id], &c)?;
    Ok(c.entries(index))
}

/// What a reindex leaves as stored (`replace_index`).
#[derive(Debug, Clone, Copy)]
pub struct Kept<'a> {
    /// The tokens of this parameter: they come from who may see the resource, not from its
    /// content.
    pub tokens_of: &'a str,
    /// The unique keys, when the new entries cannot say them.
    pub unique: bool,
}

/// Brings live resources' index rows to the entries given for them (a reindex, `ers-server
/// reindex`), reading their stored rows in one statement: the rows of each parameter whose
/// entries differ are replaced, the others left as they are, and what `kept` names stays as
/// stored. How many resources changed.
pub fn replace_indexes(
    conn: &mut DbConnection,
    res_type: &str,
    items: Vec<(String, IndexEntries)>,
    kept: Kept<'_>,
) -> QResult<usize> {
    let ids: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
    let mut stored = stored_indexes(conn, res_type, &ids)?;
    let mut writes = Vec::new();
    let mut clears: std::collections::HashMap<Changed, Vec<usize>> = Default::default();
    for (id, mut index) in items {
        let stored = stored.remove(&id).unwrap_or_default();
        index.tokens.retain(|t| t.param != kept.tokens_of);
        index.tokens.extend(
            stored
                .tokens
                .iter()
                .filter(|t| t.param == kept.tokens_of)
                .cloned(),
        );
        if kept.unique {
            index.unique.clone_from(&stored.unique);
        }
        let c = changed(&stored, &index);
        if !c.is_empty() {
            writes.push((id, c.entries(&index)));
            clears.entry(c).or_default().push(writes.len() - 1);
        }
    }
    // The rows of resources whose same parameters changed are cleared together (a new
    // parameter changes every resource's alike).
    for (c, at) in &clears {
        for chunk in at.chunks(500) {
            let ids: Vec<&str> = chunk.iter().map(|&i| writes[i].0.as_str()).collect();
            clear_params(conn, res_type, &ids, c)?;
        }
    }
    let rows: Vec<(&str, &str, &IndexEntries)> = writes
        .iter()
        .map(|(id, index)| (res_type, id.as_str(), index))
        .collect();
    write_indexes(conn, &rows)?;
    let changed: Vec<&str> = writes.iter().map(|(id, _)| id.as_str()).collect();
    crate::directory::refresh(conn, res_type, &changed)?;
    Ok(changed.len())
}

/// Marks a resource deleted (a new version with method DELETE and the given content, which
/// a plain delete keeps as it was), drops its indexes. Returns false when another writer changed it first.
pub fn delete_resource(
    conn: &mut DbConnection,
    v: &NewVersion<'_>,
    expected_version: i64,
) -> QResult<bool> {
    if !replace_row(conn, v, expected_version, true)? {
        return Ok(false);
    }
    diesel::insert_into(resource_versions::table)
        .values(version_row(v, "DELETE", true))
        .execute(conn)?;
    clear_index(conn, v.res_type, v.id)?;
    crate::directory::refresh(conn, v.res_type, &[v.id])?;
    Ok(true)
}

/// PostgreSQL clears every index table of a resource in one statement (one round trip instead
/// of six; data-modifying `WITH` parts always run to completion).
const PG_CLEAR_INDEX: &str =
    "WITH t AS (DELETE FROM search_tokens WHERE res_type = $1 AND res_id = $2), \
     s AS (DELETE FROM search_strings WHERE res_type = $1 AND res_id = $2), \
     d AS (DELETE FROM search_dates WHERE res_type = $1 AND res_id = $2), \
     r AS (DELETE FROM search_refs WHERE res_type = $1 AND res_id = $2), \
     u AS (DELETE FROM unique_identifiers WHERE res_type = $1 AND res_id = $2) \
     DELETE FROM search_geo WHERE res_type = $1 AND res_id = $2";

fn clear_index(conn: &mut DbConnection, res_type: &str, id: &str) -> QResult<()> {
    if let DbConnection::Postgresql(c) = conn {
        diesel::sql_query(PG_CLEAR_INDEX)
            .bind::<diesel::sql_types::Text, _>(res_type)
            .bind::<diesel::sql_types::Text, _>(id)
            .execute(c)?;
        return Ok(());
    }
    // SQLite runs in-process: six statements cost no round trips.
    delete_owned!(conn, search_tokens, res_type, res_id, res_type, id);
    delete_owned!(conn, search_strings, res_type, res_id, res_type, id);
    delete_owned!(conn, search_dates, res_type, res_id, res_type, id);
    delete_owned!(conn, search_refs, res_type, res_id, res_type, id);
    delete_owned!(conn, unique_identifiers, res_type, res_id, res_type, id);
    delete_owned!(conn, search_geo, res_type, res_id, res_type, id);
    Ok(())
}

fn write_index(
    conn: &mut DbConnection,
    res_type: &str,
    id: &str,
    index: &IndexEntries,
) -> QResult<()> {
    write_indexes(conn, &[(res_type, id, index)])
}

/// The resource (other than `except_id`) that already holds a unique business identifier.
pub fn unique_owner(
    conn: &mut DbConnection,
    res_type: &str,
    key: &UniqueKey,
    except_id: Option<&str>,
) -> QResult<Option<String>> {
    let mut q = unique_identifiers::table
        .filter(unique_identifiers::res_type.eq(res_type.to_owned()))
        .filter(unique_identifiers::system.eq(key.system.clone()))
        .filter(unique_identifiers::value.eq(key.value.clone()))
        .select(unique_identifiers::res_id)
        .into_boxed();
    if let Some(id) = except_id {
        q = q.filter(unique_identifiers::res_id.ne(id.to_owned()));
    }
    Ok(q.first::<String>(conn).optional()?)
}

/// Live resources that refer to `target_type/target_id`, at most `limit`.
pub fn referrers(
    conn: &mut DbConnection,
    target_type: &str,
    target_id: &str,
    limit: i64,
) -> QResult<Vec<(String, String)>> {
    Ok(search_refs::table
        .filter(search_refs::target_type.eq(target_type))
        .filter(search_refs::target_id.eq(target_id))
        .select((search_refs::res_type, search_refs::res_id))
        .distinct()
        .order((search_refs::res_type, search_refs::res_id))
        .limit(limit)
        .load(conn)?)
}

/// Reference targets of the given resources through one parameter (for `_include`).
pub fn refs_from(
    conn: &mut DbConnection,
    res_type: &str,
    ids: &[String],
    param: &str,
    target_type: Option<&str>,
) -> QResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut q = search_refs::table
            .filter(search_refs::res_type.eq(res_type.to_owned()))
            .filter(search_refs::param.eq(param.to_owned()))
            .select((search_refs::target_type, search_refs::target_id))
            .distinct()
            .into_boxed();
        // One resource as an equality (see `referring`).
        q = match chunk {
            [id] => q.filter(search_refs::res_id.eq(id.clone())),
            _ => q.filter(search_refs::res_id.eq_any(chunk.to_vec())),
        };
        if let Some(t) = target_type {
            q = q.filter(search_refs::target_type.eq(t.to_owned()));
        }
        out.extend(q.load::<(String, String)>(conn)?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Ids of `source_type` resources whose `param` refers to one of the targets (for `_revinclude`).
pub fn refs_to(
    conn: &mut DbConnection,
    source_type: &str,
    param: &str,
    target_type: &str,
    target_ids: &[String],
) -> QResult<Vec<String>> {
    let mut out = referring(conn, source_type, param, target_type, target_ids)?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// How many live resources of a type exist.
pub fn count_live(conn: &mut DbConnection, res_type: &str) -> QResult<i64> {
    Ok(resources::table
        .filter(resources::res_type.eq(res_type))
        .filter(resources::deleted.eq(0))
        .count()
        .get_result(conn)?)
}

/// Replaces the coordinates of these postcodes (a batch of an import).
pub fn upsert_postcodes(conn: &mut DbConnection, batch: &[(String, f64, f64)]) -> QResult<usize> {
    let codes: Vec<&String> = batch.iter().map(|(c, _, _)| c).collect();
    diesel::delete(postcodes::table.filter(postcodes::code.eq_any(codes))).execute(conn)?;
    let mut n = 0;
    for (code, lat, lon) in batch {
        n += diesel::insert_into(postcodes::table)
            .values((
                postcodes::code.eq(code),
                postcodes::latitude.eq(lat),
                postcodes::longitude.eq(lon),
            ))
            .execute(conn)?;
    }
    Ok(n)
}

/// The coordinates of a postcode: the full code if known, else its outward code.
pub fn postcode_position(
    conn: &mut DbConnection,
    full: &str,
    outward: &str,
) -> QResult<Option<(f64, f64)>> {
    for code in [full, outward] {
        let found = postcodes::table
            .filter(postcodes::code.eq(code))
            .select((postcodes::latitude, postcodes::longitude))
            .first::<(f64, f64)>(conn)
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// How many postcodes are loaded.
pub fn postcode_count(conn: &mut DbConnection) -> QResult<i64> {
    Ok(postcodes::table.count().get_result(conn)?)
}

/// Rows per multi-row INSERT in a bulk load (well under SQLite's 32,766 bound parameters).
pub(crate) const BULK_CHUNK: usize = 500;

/// Inserts many brand-new resources (version 1) with their indexes, one multi-row INSERT per
/// table and chunk instead of one per row: the bulk-load path (synthetic national-scale data).
/// Same tables and rows as `insert_resource`.
pub fn insert_many(
    conn: &mut DbConnection,
    items: &[(NewVersion<'_>, &IndexEntries)],
) -> QResult<()> {
    if let DbConnection::Postgresql(pg) = conn {
        for chunk in items.chunks(BULK_CHUNK) {
            let mut rows = pg_rows::Rows::default();
            for (v, ix) in chunk {
                add_new(&mut rows, v, ix);
            }
            rows.write(pg)?;
        }
        return refresh_directory(conn, items);
    }
    for chunk in items.chunks(BULK_CHUNK) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(v, _)| {
                (
                    resources::res_type.eq(v.res_type),
                    resources::id.eq(v.id),
                    resources::version_id.eq(v.version_id),
                    resources::last_updated.eq(v.last_updated),
                    resources::deleted.eq(0),
                    resources::content.eq(v.content),
                )
            })
            .collect();
        on_backend!(conn, |c| diesel::insert_into(resources::table)
            .values(&rows)
            .execute(c))?;
        let versions: Vec<VersionRow> = chunk
            .iter()
            .map(|(v, _)| version_row(v, "POST", false))
            .collect();
        on_backend!(conn, |c| diesel::insert_into(resource_versions::table)
            .values(&versions)
            .execute(c))?;
    }
    let owners: Vec<_> = items
        .iter()
        .map(|(v, ix)| (v.res_type, v.id, *ix))
        .collect();
    write_indexes(conn, &owners)?;
    refresh_directory(conn, items)
}

/// A brand-new resource's rows (resource, version 1, index) for PostgreSQL's one statement.
fn add_new(rows: &mut pg_rows::Rows, v: &NewVersion<'_>, index: &IndexEntries) {
    let version = version_row(v, "POST", false);
    rows.resource(&version);
    rows.version(version);
    rows.index(v.res_type, v.id, index);
}

/// The Directory positions of the services and locations among new resources.
fn refresh_directory(
    conn: &mut DbConnection,
    items: &[(NewVersion<'_>, &IndexEntries)],
) -> QResult<()> {
    for res_type in [crate::directory::SERVICE, crate::directory::LOCATION] {
        let ids: Vec<&str> = items
            .iter()
            .filter(|(v, _)| v.res_type == res_type)
            .map(|(v, _)| v.id)
            .collect();
        crate::directory::refresh(conn, res_type, &ids)?;
    }
    Ok(())
}

/// The index rows of these resources (type, id, entries): one multi-row INSERT per table and
/// chunk, and none for a table without rows (a booking writes some thirty index rows).
fn write_indexes(conn: &mut DbConnection, items: &[(&str, &str, &IndexEntries)]) -> QResult<()> {
    #[derive(Clone, Copy)]
    struct Owner<'a> {
        res_type: &'a str,
        id: &'a str,
    }
    macro_rules! index_rows {
        ($field:ident, $table:ident, |$v:ident, $e:ident| $row:expr) => {
            let rows: Vec<_> = items
                .iter()
                .flat_map(|&(res_type, id, ix)| {
                    let $v = Owner { res_type, id };
                    ix.$field.iter().map(move |$e| $row)
                })
                .collect();
            for c in rows.chunks(BULK_CHUNK) {
                on_backend!(conn, |conn| diesel::insert_into($table::table)
                    .values(c)
                    .execute(conn))?;
            }
        };
    }
    index_rows!(tokens, search_tokens, |v, t| (
        search_tokens::res_type.eq(v.res_type),
        search_tokens::res_id.eq(v.id),
        search_tokens::param.eq(t.param.as_str()),
        search_tokens::system.eq(t.system.as_str()),
        search_tokens::code.eq(t.code.as_str()),
    ));
    index_rows!(strings, search_strings, |v, s| (
        search_strings::res_type.eq(v.res_type),
        search_strings::res_id.eq(v.id),
        search_strings::param.eq(s.param.as_str()),
        search_strings::value_norm.eq(s.norm.as_str()),
        search_strings::value_exact.eq(s.exact.as_str()),
    ));
    index_rows!(dates, search_dates, |v, d| (
        search_dates::res_type.eq(v.res_type),
        search_dates::res_id.eq(v.id),
        search_dates::param.eq(d.param.as_str()),
        search_dates::low.eq(d.low),
        search_dates::high.eq(d.high),
    ));
    index_rows!(refs, search_refs, |v, r| (
        search_refs::res_type.eq(v.res_type),
        search_refs::res_id.eq(v.id),
        search_refs::param.eq(r.param.as_str()),
        search_refs::target_type.eq(r.target_type.as_str()),
        search_refs::target_id.eq(r.target_id.as_str()),
    ));
    index_rows!(geo, search_geo, |v, g| (
        search_geo::res_type.eq(v.res_type),
        search_geo::res_id.eq(v.id),
        search_geo::param.eq(g.param.as_str()),
        search_geo::latitude.eq(g.latitude),
        search_geo::longitude.eq(g.longitude),
    ));
    index_rows!(unique, unique_identifiers, |v, u| (
        unique_identifiers::res_type.eq(v.res_type),
        unique_identifiers::system.eq(u.system.as_str()),
        unique_identifiers::value.eq(u.value.as_str()),
        unique_identifiers::res_id.eq(v.id),
    ));
    Ok(())
}

/// Up to `limit` outward codes (postcodes without their inward part) and their coordinates,
/// for synthetic data.
pub fn outward_codes(conn: &mut DbConnection, limit: i64) -> QResult<Vec<(String, f64, f64)>> {
    Ok(postcodes::table
        .filter(postcodes::code.not_like("% %"))
        .order(postcodes::code.asc())
        .limit(limit)
        .select((postcodes::code, postcodes::latitude, postcodes::longitude))
        .load(conn)?)
}

/// Stores an uploaded attachment.
pub fn insert_binary(conn: &mut DbConnection, b: &NewBinary<'_>) -> QResult<()> {
    diesel::insert_into(binaries::table)
        .values(b)
        .execute(conn)?;
    Ok(())
}

/// An attachment's metadata.
pub fn binary_meta(conn: &mut DbConnection, id: &str) -> QResult<Option<BinaryMeta>> {
    Ok(binaries::table
        .filter(binaries::id.eq(id))
        .select(BinaryMeta::as_select())
        .first(conn)
        .optional()?)
}

/// An attachment's bytes.
pub fn binary_data(conn: &mut DbConnection, id: &str) -> QResult<Option<Vec<u8>>> {
    Ok(binaries::table
        .filter(binaries::id.eq(id))
        .select(binaries::data)
        .first(conn)
        .optional()?)
}

/// The resources of `source_type` whose `param` refers to `target_type/target_id` (any version).
pub fn referring(
    conn: &mut DbConnection,
    source_type: &str,
    param: &str,
    target_type: &str,
    target_ids: &[String],
) -> QResult<Vec<String>> {
    let referring = || {
        search_refs::table
            .filter(search_refs::res_type.eq(source_type))
            .filter(search_refs::param.eq(param))
            .filter(search_refs::target_type.eq(target_type))
            .select(search_refs::res_id)
            .distinct()
    };
    // One target (a booking's referral) as an equality: a prepared `= ANY($n)` gets a generic
    // plan that does not know how many ids it will be given, and under load PostgreSQL's
    // estimate for it went wrong (3 ms a call instead of 0.1 ms).
    if let [one] = target_ids {
        return Ok(referring()
            .filter(search_refs::target_id.eq(one))
            .load::<String>(conn)?);
    }
    let mut out = Vec::new();
    for chunk in target_ids.chunks(500) {
        out.extend(
            referring()
                .filter(search_refs::target_id.eq_any(chunk))
                .load::<String>(conn)?,
        );
    }
    Ok(out)
}

/// Replaces the `param` tokens (no system) of these resources with `codes`: index rows that
/// follow another resource (who may see it) without a new version of their own.
pub fn replace_tokens(
    conn: &mut DbConnection,
    res_type: &str,
    ids: &[String],
    param: &str,
    codes: &[String],
) -> QResult<()> {
    for chunk in ids.chunks(500) {
        let of_type = search_tokens::table
            .filter(search_tokens::res_type.eq(res_type))
            .filter(search_tokens::param.eq(param));
        // One resource (a referral's appointments following it) as an equality (see `referring`).
        match chunk {
            [id] => diesel::delete(of_type.filter(search_tokens::res_id.eq(id))).execute(conn)?,
            _ => {
                diesel::delete(of_type.filter(search_tokens::res_id.eq_any(chunk))).execute(conn)?
            }
        };
        let rows: Vec<_> = chunk
            .iter()
            .flat_map(|id| {
                codes.iter().map(move |code| {
                    (
                        search_tokens::res_type.eq(res_type),
                        search_tokens::res_id.eq(id.as_str()),
                        search_tokens::param.eq(param),
                        search_tokens::system.eq(""),
                        search_tokens::code.eq(code.as_str()),
                    )
                })
            })
            .collect();
        if !rows.is_empty() {
            // One multi-row INSERT per chunk.
            on_backend!(conn, |c| diesel::insert_into(search_tokens::table)
                .values(&rows)
                .execute(c))?;
        }
    }
    Ok(())
}

/// The codes of a resource's `param` tokens, sorted.
pub fn token_codes(
    conn: &mut DbConnection,
    res_type: &str,
    id: &str,
    param: &str,
) -> QResult<Vec<String>> {
    Ok(search_tokens::table
        .filter(search_tokens::res_type.eq(res_type))
        .filter(search_tokens::res_id.eq(id))
        .filter(search_tokens::param.eq(param))
        .select(search_tokens::code)
        .order(search_tokens::code)
        .load(conn)?)
}

/// Live resources of a type holding token `with` = (param, code) but not `without`, that have
/// not changed since `before`, oldest first, at most `limit`: candidates for a retention rule.
pub fn unchanged_since(
    conn: &mut DbConnection,
    res_type: &str,
    with: (&str, &str),
    without: (&str, &str),
    before: NaiveDateTime,
    limit: i64,
) -> QResult<Vec<String>> {
    let tagged = |(param, code): (&str, &str)| {
        search_tokens::table
            .filter(search_tokens::res_type.eq(res_type.to_owned()))
            .filter(search_tokens::param.eq(param.to_owned()))
            .filter(search_tokens::code.eq(code.to_owned()))
            .select(search_tokens::res_id)
    };
    Ok(resources::table
        .filter(resources::res_type.eq(res_type))
        .filter(resources::id.eq_any(tagged(with)))
        .filter(resources::id.ne_all(tagged(without)))
        .filter(resources::deleted.eq(0))
        .filter(resources::last_updated.lt(before))
        .order(resources::last_updated.asc())
        .limit(limit)
        .select(resources::id)
        .load(conn)?)
}

/// The resources of `res_type` holding token `param` = `code` (no system).
pub fn holders_of(
    conn: &mut DbConnection,
    res_type: &str,
    param: &str,
    code: &str,
) -> QResult<Vec<String>> {
    Ok(search_tokens::table
        .filter(search_tokens::res_type.eq(res_type))
        .filter(search_tokens::param.eq(param))
        .filter(search_tokens::code.eq(code))
        .select(search_tokens::res_id)
        .distinct()
        .load(conn)?)
}

/// Erases resources for good: every version and every index row (retention deletes; ordinary
/// deletes keep their history).
pub fn purge(conn: &mut DbConnection, res_type: &str, ids: &[String]) -> QResult<()> {
    for id in ids {
        clear_index(conn, res_type, id)?;
        delete_owned!(conn, resource_versions, res_type, id, res_type, id);
        delete_owned!(conn, resources, res_type, id, res_type, id);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    crate::directory::refresh(conn, res_type, &ids)
}

/// Erases uploaded attachments.
pub fn purge_binaries(conn: &mut DbConnection, ids: &[String]) -> QResult<usize> {
    Ok(diesel::delete(binaries::table.filter(binaries::id.eq_any(ids))).execute(conn)?)
}

/// A change for subscribers (`record_events`).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub res_type: String,
    pub res_id: String,
    pub version_id: i64,
    pub method: String,
    pub occurred: NaiveDateTime,
}

/// Whether `write_additions` writes this many held writes, audit events and change events
/// in one statement (on PostgreSQL), which needs no transaction around it.
pub fn fits_one_statement(writes: usize, audits: usize, events: usize) -> bool {
    writes <= pg_rows::FLUSH_WRITES && audits <= BULK_CHUNK && events <= BULK_CHUNK
}

/// What a write transaction adds at its end: audit events and change events. On PostgreSQL
/// one statement (`pg_rows::Batch`) when the rows fit one bulk chunk; otherwise
/// `audit::insert_many` and `record_events`.
///
/// With `writes` held back (`PendingWrite`, PostgreSQL only), they go in the same statement
/// (`pg_rows::Flush`), up to `pg_rows::FLUSH_WRITES` a statement. Answers, for each write,
/// whether it happened: false when a replacement found its resource no longer at the
/// expected version. Then nothing of that statement was written and, inside a transaction,
/// the transaction has failed: the caller must roll it back.
pub fn write_additions(
    conn: &mut DbConnection,
    writes: Vec<PendingWrite>,
    audits: &[(crate::audit::AuditRow, Vec<crate::audit::AuditEntityRow>)],
    events: &[NewEvent],
) -> QResult<Vec<bool>> {
    let batched = fits_one_statement(0, audits.len(), events.len());
    let mut done = Vec::with_capacity(writes.len());
    if let DbConnection::Postgresql(pg) = conn {
        let mut batch = pg_rows::Batch::default();
        if batched {
            for (e, entities) in audits {
                batch.audit.event(e, entities);
            }
            for e in events {
                batch.event(&e.res_type, &e.res_id, e.version_id, &e.method, e.occurred);
            }
        }
        if writes.is_empty() {
            if batched {
                batch.write(pg)?;
            }
        } else {
            let mut writes = writes.into_iter().map(|w| w.kind).collect::<Vec<_>>();
            let last = writes.len().div_ceil(pg_rows::FLUSH_WRITES);
            let mut chunk = 0;
            while !writes.is_empty() {
                let rest = writes.split_off(writes.len().min(pg_rows::FLUSH_WRITES));
                chunk += 1;
                // The batch goes with the last chunk.
                let b = if chunk == last {
                    std::mem::take(&mut batch)
                } else {
                    pg_rows::Batch::default()
                };
                let n = writes.len();
                let flush = pg_rows::Flush {
                    writes: writes
                        .iter_mut()
                        .map(|w| match w {
                            Pending::New(rows) => pg_rows::FlushWrite::New(std::mem::take(rows)),
                            Pending::Replace {
                                version,
                                expected,
                                index,
                                tables,
                                projection,
                            } => pg_rows::FlushWrite::Replace(pg_rows::Rewrite::new(
                                version,
                                *expected,
                                index,
                                *tables,
                                std::mem::take(projection),
                            )),
                        })
                        .collect(),
                    batch: b,
                };
                let (bits, failed) = match flush.apply(pg)? {
                    Ok(bits) => (bits, false),
                    Err(bits) => (bits, true),
                };
                done.extend((0..n).map(|k| bits & (1 << k) != 0));
                if failed {
                    // The statement failed and wrote nothing; so does the rest.
                    done.extend(rest.iter().map(|_| false));
                    return Ok(done);
                }
                writes = rest;
            }
        }
        if batched {
            return Ok(done);
        }
    } else {
        assert!(writes.is_empty(), "writes are held back on PostgreSQL only");
    }
    if !audits.is_empty() {
        crate::audit::insert_many(conn, audits)?;
    }
    if !events.is_empty() {
        record_events(conn, events)?;
    }
    Ok(done)
}

/// Records changes for subscribers, in order, in the transaction of the changes: one multi-row
/// INSERT per chunk.
pub fn record_events(conn: &mut DbConnection, events: &[NewEvent]) -> QResult<()> {
    for chunk in events.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|e| {
                (
                    outbox::res_type.eq(&e.res_type),
                    outbox::res_id.eq(&e.res_id),
                    outbox::version_id.eq(e.version_id),
                    outbox::method.eq(&e.method),
                    outbox::occurred.eq(e.occurred),
                )
            })
            .collect();
        on_backend!(conn, |c| diesel::insert_into(outbox::table)
            .values(&rows)
            .execute(c))?;
    }
    Ok(())
}

/// Numbers the changes that have committed since the last call, in the order they were
/// written; returns how many. Inside a write transaction: the `events` counter row stays
/// locked until it commits, so two instances never number the same change, and a change
/// still in flight is numbered by a later call, after every number given before it commits.
pub fn number_events(conn: &mut DbConnection, at_most: i64) -> QResult<usize> {
    let pending = |conn: &mut DbConnection| -> QResult<Vec<i64>> {
        Ok(outbox::table
            .filter(outbox::seq.is_null())
            .order(outbox::id.asc())
            .limit(at_most)
            .select(outbox::id)
            .load(conn)?)
    };
    // Nothing to number: no lock taken (what commits meanwhile is for the next call).
    if pending(conn)?.is_empty() {
        return Ok(0);
    }
    // Take the counter row's lock, then look again: what another instance numbered while
    // this one waited is numbered already.
    reserve_counter(conn, "events", 0)?;
    let pending = pending(conn)?;
    if pending.is_empty() {
        return Ok(0);
    }
    let n = i64::try_from(pending.len()).unwrap_or(i64::MAX);
    let first = reserve_counter(conn, "events", n)?;
    // One UPDATE per run of consecutive ids (usually one run): every row in a run's range is
    // pending, so `id + offset` numbers them in order.
    let mut k = 0i64;
    for run in pending.chunk_by(|a, b| *b == *a + 1) {
        let (start, end) = (run[0], run[run.len() - 1]);
        let offset = first + k - start;
        diesel::update(outbox::table.filter(outbox::id.between(start, end)))
            .set(outbox::seq.eq((outbox::id + offset).nullable()))
            .execute(conn)?;
        k += i64::try_from(run.len()).unwrap_or(i64::MAX);
    }
    Ok(pending.len())
}

/// Numbered changes after event number `after` (at most `limit`, in order).
pub fn events_after(conn: &mut DbConnection, after: i64, limit: i64) -> QResult<Vec<OutboxRow>> {
    Ok(outbox::table
        .filter(outbox::seq.gt(after))
        .order(outbox::seq.asc())
        .limit(limit)
        .select((
            outbox::seq.assume_not_null(),
            outbox::res_type,
            outbox::res_id,
            outbox::version_id,
            outbox::method,
            outbox::occurred,
        ))
        .load(conn)?)
}

/// The newest event number (0 with none).
pub fn last_event(conn: &mut DbConnection) -> QResult<i64> {
    // Numbered rows only: the terms of the partial index `outbox_seq` (migration 000026). The
    // last entry of the index, not `max(seq)`: PostgreSQL plans `max` as an aggregate over the
    // whole index when its statistics say few rows are numbered, as they do when the table was
    // analysed before its events were numbered (measured: 44,408 entries read, 16-23 ms, on
    // every delivery round; docs/BENCHMARKS.md, Booking).
    Ok(outbox::table
        .filter(outbox::seq.is_not_null())
        .order(outbox::seq.desc())
        .select(outbox::seq.assume_not_null())
        .first::<i64>(conn)
        .optional()?
        .unwrap_or(0))
}

pub fn subscription_state(conn: &mut DbConnection, id: &str) -> QResult<Option<SubscriptionState>> {
    Ok(subscription_state::table
        .find(id)
        .select(SubscriptionState::as_select())
        .first(conn)
        .optional()?)
}

/// Inserts or replaces a subscription's delivery state.
pub fn save_subscription_state(conn: &mut DbConnection, s: &SubscriptionState) -> QResult<()> {
    let n = diesel::update(subscription_state::table.find(&s.id))
        .set(s)
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(subscription_state::table)
            .values(s)
            .execute(conn)?;
    }
    Ok(())
}

/// Subscriptions with something to send at `now` (a handshake, events, a heartbeat) whose
/// back-off is over and whose lease is free.
pub fn due_subscriptions(conn: &mut DbConnection, now: NaiveDateTime) -> QResult<Vec<String>> {
    let rows: Vec<SubscriptionState> = subscription_state::table
        .filter(subscription_state::next_attempt.le(now))
        .filter(
            subscription_state::lease_until
                .is_null()
                .or(subscription_state::lease_until.lt(now)),
        )
        .select(SubscriptionState::as_select())
        .load(conn)?;
    // Every round asks; with no subscription free to send there is nothing to compare with.
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let last = last_event(conn)?;
    Ok(rows
        .into_iter()
        .filter(|s| s.has_work(last, now))
        .map(|s| s.id)
        .collect())
}

/// Takes the delivery lease, until `until`, of every subscription with something to send now
/// that no other round holds; returns those this round (`owner`) got.
pub fn claim_subscriptions(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    until: NaiveDateTime,
    owner: &str,
) -> QResult<Vec<SubscriptionState>> {
    let ids = due_subscriptions(conn, now)?;
    for chunk in ids.chunks(500) {
        diesel::update(
            subscription_state::table
                .filter(subscription_state::id.eq_any(chunk))
                .filter(
                    subscription_state::lease_until
                        .is_null()
                        .or(subscription_state::lease_until.lt(now)),
                ),
        )
        .set((
            subscription_state::lease_until.eq(Some(until)),
            subscription_state::lease_owner.eq(Some(owner)),
        ))
        .execute(conn)?;
    }
    Ok(subscription_state::table
        .filter(subscription_state::lease_owner.eq(owner))
        .select(SubscriptionState::as_select())
        .load(conn)?)
}

/// Records, in one statement, that these subscriptions (leased by the round, none of them
/// failing) delivered the same notification: cursor at `through`, `events` more sent, the
/// lease freed.
pub fn record_delivered(
    conn: &mut DbConnection,
    ids: &[String],
    through: i64,
    events: i64,
    at: NaiveDateTime,
) -> QResult<()> {
    use subscription_state::dsl as s;
    for chunk in ids.chunks(500) {
        diesel::update(s::subscription_state.filter(s::id.eq_any(chunk)))
            .set((
                s::cursor.eq(through),
                s::events_sent.eq(s::events_sent + events),
                s::handshake.eq(0),
                s::failures.eq(0),
                s::last_error.eq(None::<String>),
                s::last_sent.eq(at),
                s::next_attempt.eq(at),
                s::lease_until.eq(None::<NaiveDateTime>),
                s::lease_owner.eq(None::<String>),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Records, in one statement, that these subscriptions (leased by the round) had nothing to
/// send up to `cursor`: the lease freed, the next look at `next_attempt`.
pub fn record_idle(
    conn: &mut DbConnection,
    ids: &[String],
    cursor: i64,
    next_attempt: NaiveDateTime,
) -> QResult<()> {
    use subscription_state::dsl as s;
    for chunk in ids.chunks(500) {
        diesel::update(s::subscription_state.filter(s::id.eq_any(chunk)))
            .set((
                s::cursor.eq(cursor),
                s::next_attempt.eq(next_attempt),
                s::lease_until.eq(None::<NaiveDateTime>),
                s::lease_owner.eq(None::<String>),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn delete_subscription_state(conn: &mut DbConnection, id: &str) -> QResult<()> {
    diesel::delete(subscription_state::table.find(id)).execute(conn)?;
    Ok(())
}

/// Records that `reader` has read announcement `id` (once; later reads keep the first time).
pub fn mark_read(
    conn: &mut DbConnection,
    id: &str,
    reader: &str,
    at: NaiveDateTime,
) -> QResult<()> {
    let seen = announcement_reads::table
        .find((id, reader))
        .select(announcement_reads::read_at)
        .first::<NaiveDateTime>(conn)
        .optional()?;
    if seen.is_none() {
        diesel::insert_into(announcement_reads::table)
            .values((
                announcement_reads::id.eq(id),
                announcement_reads::reader.eq(reader),
                announcement_reads::read_at.eq(at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// When `reader` read each of these announcements (those read only).
pub fn read_times(
    conn: &mut DbConnection,
    ids: &[String],
    reader: &str,
) -> QResult<Vec<(String, NaiveDateTime)>> {
    Ok(announcement_reads::table
        .filter(announcement_reads::id.eq_any(ids))
        .filter(announcement_reads::reader.eq(reader))
        .select((announcement_reads::id, announcement_reads::read_at))
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::sql_types::BigInt;

    /// The partial indexes of migration 000026 still serve the reads they were made for: the
    /// changes after a number, the newest number, and audit events by NHS number.
    #[test]
    fn numbered_changes_and_audited_nhs_numbers_are_read_through_their_partial_indexes() {
        let mut conn = crate::testing::fresh();
        for (query, index) in [
            (
                "SELECT id FROM outbox WHERE seq > 5 ORDER BY seq LIMIT 100",
                "outbox_seq",
            ),
            (
                "SELECT seq FROM outbox WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
                "outbox_seq",
            ),
            (
                "SELECT audit_id FROM audit_entities WHERE nhs_number = '9912003888'",
                "audit_entities_nhs",
            ),
        ] {
            let plan = crate::testing::index_plan(&mut conn, query);
            assert!(plan.iter().any(|l| l.contains(index)), "{query}: {plan:?}");
        }
    }

    /// The newest event number is read from the end of its index, however stale the
    /// statistics: here PostgreSQL analysed the outbox while none of its events was numbered
    /// yet (as after `seed` or `generate-directory`, which run no delivery rounds, or on a
    /// server whose autovacuum has not caught up), and then all 3,000 were numbered.
    #[test]
    fn the_newest_event_number_is_read_without_reading_every_event() {
        let mut conn = crate::testing::fresh();
        let now = chrono::Utc::now().naive_utc();
        let events: Vec<NewEvent> = (0..3000)
            .map(|i| NewEvent {
                res_type: "Slot".into(),
                res_id: format!("s{i}"),
                version_id: 1,
                method: "PUT".into(),
                occurred: now,
            })
            .collect();
        record_events(&mut conn, &events).expect("events");
        diesel::sql_query("ANALYZE outbox")
            .execute(&mut conn)
            .expect("analyze");
        assert_eq!(number_events(&mut conn, 5000).expect("numbered"), 3000);
        let DbConnection::Postgresql(_) = &mut *conn else {
            assert_eq!(last_event(&mut conn).expect("last"), 3000);
            return;
        };
        let fetched = |c: &mut DbConnection| crate::testing::rows_fetched(c, "outbox");
        let (last, read) = conn
            .transaction::<_, diesel::result::Error, _>(|c| {
                let before = fetched(c);
                let last = last_event(c).expect("last");
                Ok((last, fetched(c) - before))
            })
            .expect("transaction");
        assert_eq!(last, 3000);
        assert!(read <= 2, "the newest event number read {read} events");
    }

    #[test]
    fn statements_over_an_organisations_rows_are_planned_with_their_values() {
        let mut conn = crate::testing::fresh();
        let author = crate::testing::author();
        let now = chrono::Utc::now().naive_utc();
        for (id, code) in [("r.a", "X"), ("r.b", "X"), ("r.c", "Y")] {
            let index = IndexEntries {
                tokens: vec![crate::testing::token("_access", code)],
                ..IndexEntries::default()
            };
            let v = NewVersion {
                res_type: "ServiceRequest",
                id,
                version_id: 1,
                last_updated: now,
                content: "{}",
                author: &author,
            };
            insert_resource(&mut conn, &v, &index, &Default::default())
                .expect("a resource and its index rows");
        }
        let ids = ["r.a", "r.b", "r.c"].map(str::to_owned);
        let codes = ["X".to_owned(), "*".to_owned()];
        // More runs than PostgreSQL takes before it considers a generic plan.
        for _ in 0..7 {
            let mut held =
                holding_token(&mut conn, "ServiceRequest", &ids, "_access", &codes).expect("query");
            held.sort();
            assert_eq!(held, ["r.a", "r.b"]);
            let one = holding_token(&mut conn, "ServiceRequest", &ids[2..], "_access", &codes)
                .expect("query");
            assert!(one.is_empty(), "r.c holds only Y: {one:?}");
            let history_query = HistoryQuery {
                res_type: Some("ServiceRequest".into()),
                holding: Some(("_access".into(), codes.to_vec())),
                limit: 20,
                ..HistoryQuery::default()
            };
            let (versions, total) = history(&mut conn, &history_query).expect("history");
            let mut seen: Vec<_> = versions.iter().map(|v| v.id.as_str()).collect();
            seen.sort();
            assert_eq!((seen, total), (vec!["r.a", "r.b"], Some(2)));
        }
        if let DbConnection::Postgresql(pg) = &mut *conn {
            let prepared = |pg: &mut PgConnection, shape: &str| -> i64 {
                diesel::select(diesel::dsl::sql::<BigInt>(&format!(
                    "(SELECT count(*) FROM pg_prepared_statements \
                     WHERE statement LIKE '%search_tokens%' AND statement LIKE '{shape}')"
                )))
                .get_result(pg)
                .expect("pg_prepared_statements")
            };
            // The one-resource check stays prepared (so the probe sees diesel's statements)...
            assert_eq!(prepared(pg, r#"%"res_id" = $%"#), 1);
            // ... the check of several is not: a generic plan of it would read every holder of
            // the code.
            assert_eq!(prepared(pg, r#"%"res_id" = ANY%"#), 0);
            // Nor is a page (or count) of a type's history of the organisation's resources.
            assert_eq!(prepared(pg, r#"%"resource_versions"%"#), 0);
        }
    }

    /// A read-ahead answers each root, follows references through the index to its depth and
    /// no further, tells what is absent, and reads one resource's tokens and the live resources
    /// referring to one, in one go (run more times than PostgreSQL takes before it plans the
    /// statement generically).
    #[test]
    fn a_read_ahead_follows_references_to_its_depth_and_reads_tokens_and_referrers() {
        let mut conn = crate::testing::fresh();
        let author = crate::testing::author();
        let now = chrono::Utc::now().naive_utc();
        let reference = |param: &str, t: &str, id: &str| RefEntry {
            param: param.into(),
            target_type: t.into(),
            target_id: id.into(),
        };
        let put = |conn: &mut DbConnection, t: &str, id: &str, index: IndexEntries| {
            let content = format!("{{\"id\":\"{id}\"}}");
            let v = NewVersion {
                res_type: t,
                id,
                version_id: 1,
                last_updated: now,
                content: &content,
                author: &author,
            };
            insert_resource(conn, &v, &index, &Default::default()).expect("a resource");
        };
        let refs = |r: Vec<RefEntry>| IndexEntries {
            refs: r,
            ..IndexEntries::default()
        };
        // r.1 -> p.1 -> o.1 -> o.2 (three levels), and r.1 -> missing Patient/p.0.
        put(
            &mut conn,
            "ServiceRequest",
            "r.1",
            IndexEntries {
                tokens: vec![
                    crate::testing::token("_access", "B"),
                    crate::testing::token("_access", "A"),
                    crate::testing::token("status", "active"),
                ],
                refs: vec![
                    reference("requester", "PractitionerRole", "p.1"),
                    reference("subject", "Patient", "p.0"),
                ],
                ..IndexEntries::default()
            },
        );
        put(
            &mut conn,
            "PractitionerRole",
            "p.1",
            refs(vec![reference("organization", "Organization", "o.1")]),
        );
        put(
            &mut conn,
            "Organization",
            "o.1",
            refs(vec![reference("partof", "Organization", "o.2")]),
        );
        put(&mut conn, "Organization", "o.2", IndexEntries::default());
        // Two appointments based on r.1, one of them deleted; one based on another referral.
        for id in ["a.1", "a.2", "a.3"] {
            let target = if id == "a.3" { "r.2" } else { "r.1" };
            put(
                &mut conn,
                "Appointment",
                id,
                refs(vec![reference("based-on", "ServiceRequest", target)]),
            );
        }
        let gone = NewVersion {
            res_type: "Appointment",
            id: "a.2",
            version_id: 2,
            last_updated: now,
            content: "{}",
            author: &author,
        };
        assert!(delete_resource(&mut conn, &gone, 1).expect("delete"));
        let ahead = Ahead {
            roots: vec![
                ("ServiceRequest".into(), "r.1".into()),
                ("Slot".into(), "s.0".into()),
            ],
            depth: 2,
            tokens: Some(("ServiceRequest".into(), "r.1".into(), "_access".into())),
            referring: Some((
                "Appointment".into(),
                "based-on".into(),
                "ServiceRequest".into(),
                "r.1".into(),
            )),
            ubrn: false,
        };
        for _ in 0..7 {
            let read = read_ahead(&mut conn, &ahead).expect("read ahead");
            let mut found: Vec<(String, bool)> = read
                .found
                .iter()
                .map(|((t, id), row)| {
                    if let Some(row) = row {
                        assert_eq!((&row.res_type, &row.id), (t, id));
                        assert_eq!(row.content, format!("{{\"id\":\"{id}\"}}"));
                    }
                    (format!("{t}/{id}"), row.is_some())
                })
                .collect();
            found.sort();
            assert_eq!(
                found,
                [
                    ("Organization/o.1".to_owned(), true),
                    ("Patient/p.0".to_owned(), false),
                    ("PractitionerRole/p.1".to_owned(), true),
                    ("ServiceRequest/r.1".to_owned(), true),
                    ("Slot/s.0".to_owned(), false),
                ]
            );
            assert_eq!(read.tokens, ["A", "B"]);
            let referring: Vec<_> = read.referring.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(referring, ["a.1"]);
        }
        // Nothing asked beside the roots: no tokens, no referrers; depth 0 follows nothing.
        let read = read_ahead(
            &mut conn,
            &Ahead {
                roots: vec![("ServiceRequest".into(), "r.1".into())],
                ..Ahead::default()
            },
        )
        .expect("read ahead");
        assert_eq!(read.found.len(), 1);
        assert!(read.tokens.is_empty() && read.referring.is_empty() && read.ubrn.is_none());
        // A UBRN number when asked, the sequence's next; none taken when not asked.
        let base = take_ubrn(&mut conn).expect("a number");
        let unnumbered = read_ahead(&mut conn, &ahead).expect("read ahead").ubrn;
        let numbered = Ahead {
            ubrn: true,
            ..Ahead::default()
        };
        let first = read_ahead(&mut conn, &numbered).expect("read ahead").ubrn;
        let second = read_ahead(&mut conn, &numbered).expect("read ahead").ubrn;
        assert_eq!(
            (unnumbered, first, second),
            (None, Some(base + 1), Some(base + 2))
        );
    }

    /// An update compares with the stored rows only the index tables whose entries the writer
    /// does not know to be unchanged; tokens it cannot know (`_access`) always.
    #[test]
    fn an_update_rewrites_only_the_index_tables_that_may_have_changed() {
        let mut conn = crate::testing::fresh();
        let author = crate::testing::author();
        let now = chrono::Utc::now().naive_utc();
        let token = crate::testing::token;
        // Whole seconds: PostgreSQL keeps microseconds.
        let day_one = chrono::DateTime::from_timestamp(1_900_000_000, 0)
            .expect("a time")
            .naive_utc();
        let date = |days: i64| DateEntry {
            param: "start".into(),
            low: day_one + chrono::Duration::days(days),
            high: day_one + chrono::Duration::days(days),
        };
        let version = |version_id| NewVersion {
            res_type: "Slot",
            id: "s.1",
            version_id,
            last_updated: now,
            content: "{}",
            author: &author,
        };
        let stored = |conn: &mut DbConnection| {
            let mut ix = stored_index(conn, "Slot", "s.1").expect("the stored index");
            ix.dedup();
            (ix.tokens, ix.dates)
        };
        let first = IndexEntries {
            tokens: vec![token("_access", "A"), token("status", "free")],
            dates: vec![date(1)],
            ..IndexEntries::default()
        };
        insert_resource(&mut conn, &version(1), &first, &Default::default())
            .expect("the first version");
        // Its content's entries are known; its `_access` token is not, and is gone.
        let content_of_first = IndexEntries {
            tokens: vec![token("status", "free")],
            dates: vec![date(1)],
            ..IndexEntries::default()
        };
        let second = content_of_first.clone();
        let known = KnownIndex {
            entries: &content_of_first,
            tokens_complete: false,
        };
        assert!(update_resource(
            &mut conn,
            &version(2),
            1,
            &second,
            Some(known),
            &Default::default()
        )
        .expect("update"));
        assert_eq!(stored(&mut conn), (second.tokens.clone(), vec![date(1)]));
        // A table the writer knows unchanged is left as stored (here, to show it, a date the
        // writer did not know about); a changed one is brought to the new entries.
        let third = IndexEntries {
            tokens: vec![token("status", "busy")],
            dates: vec![date(2)],
            ..IndexEntries::default()
        };
        let believed = IndexEntries {
            tokens: second.tokens.clone(),
            dates: vec![date(2)],
            ..IndexEntries::default()
        };
        let known = KnownIndex {
            entries: &believed,
            tokens_complete: true,
        };
        assert!(update_resource(
            &mut conn,
            &version(3),
            2,
            &third,
            Some(known),
            &Default::default()
        )
        .expect("update"));
        assert_eq!(stored(&mut conn), (third.tokens.clone(), vec![date(1)]));
        // Without what the writer knows, every table is compared with its stored rows.
        assert!(
            update_resource(&mut conn, &version(4), 3, &third, None, &Default::default())
                .expect("update")
        );
        assert_eq!(stored(&mut conn), (third.tokens.clone(), vec![date(2)]));
        if let DbConnection::Postgresql(pg) = &mut *conn {
            // The update that knew only its tokens changed named no other index table.
            let tokens_only: i64 = diesel::select(diesel::dsl::sql::<BigInt>(
                "(SELECT count(*) FROM pg_prepared_statements \
                 WHERE statement LIKE 'WITH u AS (UPDATE resources%' \
                 AND statement LIKE '%search_tokens%' AND statement NOT LIKE '%search_dates%')",
            ))
            .get_result(pg)
            .expect("pg_prepared_statements");
            assert_eq!(tokens_only, 1);
        }
    }

    /// Writes held back to a transaction's end go in one statement with its outbox rows; a
    /// replacement that finds its resource moved on is answered false and writes nothing.
    #[test]
    fn held_writes_are_written_together_and_a_stale_one_writes_nothing() {
        let mut conn = crate::testing::fresh();
        if !can_defer(&conn, "Slot") {
            // SQLite writes at once: nothing is held there.
            assert!(matches!(&*conn, DbConnection::Sqlite(_)));
            return;
        }
        assert!(!can_defer(&conn, crate::directory::SERVICE));
        let author = crate::testing::author();
        let now = chrono::Utc::now().naive_utc();
        let token = |code: &str| crate::testing::token("status", code);
        let version = |res_type, id, version_id, content| NewVersion {
            res_type,
            id,
            version_id,
            last_updated: now,
            content,
            author: &author,
        };
        let indexed = |code: &str| IndexEntries {
            tokens: vec![token(code)],
            ..IndexEntries::default()
        };
        insert_resource(
            &mut conn,
            &version("Slot", "s.1", 1, r#"{"status":"free"}"#),
            &indexed("free"),
            &Default::default(),
        )
        .expect("the slot");
        let known = indexed("free");
        let booked = |conn: &mut DbConnection, expected, slot_version| {
            let writes = vec![
                PendingWrite::insert(
                    &version("Appointment", "a.1", 1, r#"{"status":"booked"}"#),
                    &indexed("booked"),
                    &Default::default(),
                ),
                PendingWrite::update(
                    &version("Slot", "s.1", slot_version, r#"{"status":"busy"}"#),
                    expected,
                    &indexed("busy"),
                    Some(KnownIndex {
                        entries: &known,
                        tokens_complete: true,
                    }),
                    &Default::default(),
                ),
            ];
            let event = NewEvent {
                res_type: "Slot".into(),
                res_id: "s.1".into(),
                version_id: slot_version,
                method: "UPDATE".into(),
                occurred: now,
            };
            crate::write_tx(conn, |c| {
                let done = write_additions(c, writes, &[], &[event])?;
                // As a caller does: a write that did not happen ends the transaction.
                if done != [true, true] {
                    return Err(StorageError::from(
                        diesel::result::Error::RollbackTransaction,
                    ));
                }
                Ok(done)
            })
        };
        let outbox = |conn: &mut DbConnection| -> i64 {
            outbox::table.count().get_result(conn).expect("outbox")
        };
        let versions = |conn: &mut DbConnection| -> i64 {
            resource_versions::table
                .filter(resource_versions::res_type.eq("Slot"))
                .filter(resource_versions::id.eq("s.1"))
                .count()
                .get_result(conn)
                .expect("versions")
        };
        // The slot as the booking left it: busy, at its second version.
        let booked_slot = |conn: &mut DbConnection| {
            let slot = get_current(conn, "Slot", "s.1")
                .expect("read")
                .expect("a slot");
            assert_eq!(
                (slot.version_id, slot.content.as_str()),
                (2, r#"{"status":"busy"}"#)
            );
            assert_eq!(
                stored_index(conn, "Slot", "s.1").expect("index").tokens,
                [token("busy")]
            );
        };
        assert_eq!(booked(&mut conn, 1, 2).expect("written"), [true, true]);
        booked_slot(&mut conn);
        let appointment = get_current(&mut conn, "Appointment", "a.1")
            .expect("read")
            .expect("the appointment");
        assert_eq!(appointment.version_id, 1);
        assert_eq!(
            stored_index(&mut conn, "Appointment", "a.1")
                .expect("index")
                .tokens,
            [token("booked")]
        );
        assert_eq!(versions(&mut conn), 2);
        assert_eq!(outbox(&mut conn), 1);

        // Again at the slot's first version, outside any transaction: the slot is at its
        // second, so nothing of the statement is written, not even the new resource.
        let writes = vec![
            PendingWrite::insert(
                &version("Appointment", "a.2", 1, r#"{"status":"booked"}"#),
                &indexed("booked"),
                &Default::default(),
            ),
            PendingWrite::update(
                &version("Slot", "s.1", 2, r#"{"status":"free"}"#),
                1,
                &indexed("free"),
                None,
                &Default::default(),
            ),
        ];
        let event = NewEvent {
            res_type: "Slot".into(),
            res_id: "s.1".into(),
            version_id: 2,
            method: "UPDATE".into(),
            occurred: now,
        };
        let stale = write_additions(&mut conn, writes, &[], &[event]).expect("answered");
        assert_eq!(stale, [true, false]);
        assert!(get_current(&mut conn, "Appointment", "a.2")
            .expect("read")
            .is_none());
        assert!(stored_index(&mut conn, "Appointment", "a.2")
            .expect("index")
            .tokens
            .is_empty());
        booked_slot(&mut conn);
        assert_eq!(versions(&mut conn), 2);
        assert_eq!(outbox(&mut conn), 1);
    }

    /// Where only reads may run outside a transaction, a write is stopped before it runs.
    #[test]
    fn a_write_where_only_reads_may_run_is_stopped_before_it_runs() {
        let mut conn = crate::testing::fresh();
        crate::conn::reads_only(true);
        let read: i64 = resources::table
            .count()
            .get_result(&mut *conn)
            .expect("a read runs");
        assert_eq!(read, 0);
        // A value that reads like a lock is only a value.
        let named: i64 = resources::table
            .filter(resources::id.eq("x FOR UPDATE"))
            .count()
            .get_result(&mut *conn)
            .expect("a read with such a value runs");
        assert_eq!(named, 0);
        let write = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            diesel::sql_query("INSERT INTO counters (name, value) VALUES ('written-outside', 1)")
                .execute(&mut *conn)
        }));
        assert!(write.is_err(), "the write was stopped");
        crate::conn::reads_only(false);
        let written: i64 = counters::table
            .filter(counters::name.eq("written-outside"))
            .count()
            .get_result(&mut *conn)
            .expect("read");
        assert_eq!(written, 0);
    }

    /// A connection handed back to the pool inside a transaction (its user panicked) is not
    /// handed out again: the next user would work in the abandoned transaction.
    #[test]
    fn a_connection_left_inside_a_transaction_is_not_pooled_again() {
        let pool = crate::conn::build_pool(&crate::testing::database_url(), 1)
            .expect("connect to the test database");
        let mut conn = pool.get().expect("a connection");
        crate::conn::run_migrations(&mut conn).expect("migrations");
        crate::begin(&mut conn).expect("begin");
        assert!(crate::in_transaction(&mut conn));
        drop(conn);
        let mut conn = pool.get().expect("another connection");
        assert!(!crate::in_transaction(&mut conn));
    }

    /// A statement run while writes are held back is seen: it would not have seen them.
    #[test]
    fn a_statement_while_writes_are_held_is_caught() {
        let mut conn = crate::testing::fresh();
        crate::conn::hold_writes(true);
        assert!(crate::conn::writes_held(), "nothing ran meanwhile");
        crate::conn::hold_writes(true);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            diesel::sql_query("SELECT 1").execute(&mut *conn)
        }));
        // Debug builds stop at the statement; others let it run and say so at the end.
        assert_eq!(ran.is_err(), cfg!(debug_assertions));
        assert!(!crate::conn::writes_held(), "a statement ran meanwhile");
        assert!(crate::conn::writes_held(), "the stretch ended");
    }

    /// A referral's worklist entries are written with its versions: kept ones stay (with the
    /// new service and specialty), others go, new ones come.
    #[test]
    fn a_versions_worklist_entries_are_written_with_it() {
        use crate::reports::{Listing, Projection};
        use crate::worklists::Entry;
        let mut conn = crate::testing::fresh();
        let author = crate::testing::author();
        let now = chrono::DateTime::from_timestamp(1_900_000_000, 0)
            .expect("a time")
            .naive_utc();
        let version = |version_id| NewVersion {
            res_type: "ServiceRequest",
            id: "r.1",
            version_id,
            last_updated: now,
            content: "{}",
            author: &author,
        };
        let entry = |list: &str, service: &str, specialty: &str| Entry {
            list: list.into(),
            org: "X".into(),
            authored: now,
            referral_id: "r.1".into(),
            service_id: Some(service.into()),
            specialty: specialty.into(),
        };
        let listed = |entries: Vec<Entry>| Projection {
            facts: None,
            worklist: Some(Listing {
                referral_id: "r.1".into(),
                entries,
            }),
        };
        let stored = |conn: &mut DbConnection| {
            let mut rows: Vec<Entry> = on_backend!(conn, |c| worklist_entries::table
                .select(Entry::as_select())
                .load(c))
            .expect("the entries");
            rows.sort_by(|a, b| a.list.cmp(&b.list));
            rows
        };
        let ix = IndexEntries::default();
        let first = vec![
            entry("A", "s.1", "CARDIOLOGY"),
            entry("B", "s.1", "CARDIOLOGY"),
        ];
        insert_resource(&mut conn, &version(1), &ix, &listed(first.clone()))
            .expect("the first version");
        assert_eq!(stored(&mut conn), first);
        // A kept (another service and specialty), B gone, C new.
        let second = vec![
            entry("A", "s.2", "DERMATOLOGY"),
            entry("C", "s.2", "DERMATOLOGY"),
        ];
        assert!(update_resource(
            &mut conn,
            &version(2),
            1,
            &ix,
            None,
            &listed(second.clone())
        )
        .expect("update"));
        assert_eq!(stored(&mut conn), second);
        // On no list.
        assert!(
            update_resource(&mut conn, &version(3), 2, &ix, None, &listed(Vec::new()))
                .expect("update")
        );
        assert_eq!(stored(&mut conn), Vec::new());
    }
}

//! The generic search over the index tables. Knows nothing of FHIR element paths: the caller
//! turns search parameters into [`Criterion`]s and this module turns those into SQL.
//!
//! Every criterion becomes `resources.id IN (SELECT res_id FROM search_<kind> WHERE ...)`;
//! chained parameters nest one such subquery inside another; values of one parameter are ORed
//! and parameters are ANDed, as FHIR search says.
//!
//! Why the subqueries are SQL text with bind parameters ([`SqlPredicate`]) rather than diesel
//! DSL: a boxed diesel subquery over `MultiBackend` cannot be rendered inside `IN (...)` (diesel
//! dispatches that fragment per backend and the boxed query is neither `Pg` nor `Sqlite`). The
//! text is plain ANSI SQL that both databases run unchanged, every value is a bind parameter,
//! and the outer query is still diesel's.

use chrono::NaiveDateTime;
use diesel::dsl::sql;
use diesel::expression::{is_aggregate, ValidGrouping};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Double, Integer, Text, Timestamp};

use crate::conn::MultiBackend;
use crate::rows::ResourceRow;
use crate::schema::*;
use crate::{DbConnection, StorageError};

/// One value of a token parameter. `system: None` matches any system, `Some("")` only codes
/// without a system; `code: None` matches any code in the system.
#[derive(Debug, Clone)]
pub struct TokenMatch {
    pub system: Option<String>,
    pub code: Option<String>,
}

/// One value of a string parameter (already normalised for `StartsWith` and `Contains`).
#[derive(Debug, Clone)]
pub enum StringMatch {
    StartsWith(String),
    Contains(String),
    Exact(String),
}

/// Date comparison prefixes of FHIR search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Sa,
    Eb,
}

/// One value of a date parameter: the prefix and the range `[low, high]` the value covers.
#[derive(Debug, Clone)]
pub struct DateMatch {
    pub prefix: DatePrefix,
    pub low: NaiveDateTime,
    pub high: NaiveDateTime,
}

/// One value of a reference parameter.
#[derive(Debug, Clone)]
pub struct RefMatch {
    pub target_type: Option<String>,
    pub id: String,
}

/// Which index table a parameter lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Token,
    String,
    Date,
    Reference,
}

/// One ANDed search criterion.
#[derive(Debug, Clone)]
pub enum Criterion {
    Id(Vec<String>),
    LastUpdated(Vec<DateMatch>),
    Token {
        param: String,
        any_of: Vec<TokenMatch>,
        negate: bool,
    },
    String {
        param: String,
        any_of: Vec<StringMatch>,
    },
    Date {
        param: String,
        any_of: Vec<DateMatch>,
    },
    Reference {
        param: String,
        any_of: Vec<RefMatch>,
    },
    /// `param.inner`: resources whose `param` refers to a `target_type` matching `inner` and
    /// each of `also` (what the searcher may see of the target: its organisation scope).
    Chain {
        param: String,
        target_type: String,
        inner: Box<Criterion>,
        also: Vec<Criterion>,
    },
    /// `param:missing=true|false`.
    Missing {
        param: String,
        kind: IndexKind,
        missing: bool,
    },
    /// Resources that some `source_type` resource matching all of `all_of` refers to through
    /// `param` (a reverse chain: services that a schedule with a free slot belongs to).
    ReferencedBy {
        source_type: String,
        param: String,
        all_of: Vec<Criterion>,
    },
    /// Services with a free slot at one of `priorities` starting in `[from, to]`: one probe
    /// of the slot projection (`report_slots`, rewritten with every slot write) by service.
    FreeSlot {
        priorities: Vec<String>,
        from: NaiveDateTime,
        to: Option<NaiveDateTime>,
    },
    /// Positions within `km` of a point (equirectangular distance, accurate to well under 1%
    /// at the distances a referral searches).
    Near {
        param: String,
        latitude: f64,
        longitude: f64,
        km: f64,
    },
    /// Resources matching at least one of these (`:identifier`: a reference's own identifier,
    /// or the identifier of what it points to).
    AnyOf(Vec<Criterion>),
}

/// A sort key; `desc` reverses it.
#[derive(Debug, Clone)]
pub enum SortKey {
    Id,
    LastUpdated,
    /// By the smallest (ascending) or largest (descending) indexed value of a parameter.
    Param {
        param: String,
        kind: IndexKind,
    },
    /// Services by their earliest free slot from `after` on (the slot projection); services
    /// with none sort last.
    EarliestFreeSlot {
        after: NaiveDateTime,
    },
    /// By distance of the `param` position from a point; with `via`, of the nearest resource the
    /// `via` reference parameter points to (a service by its locations).
    Distance {
        param: String,
        via: Option<String>,
        latitude: f64,
        longitude: f64,
    },
}

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub res_type: String,
    pub criteria: Vec<Criterion>,
    pub sort: Vec<(SortKey, bool)>,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone)]
enum Part {
    Sql(String),
    Text(String),
    Ts(NaiveDateTime),
    F64(f64),
}

/// A condition that is always true and keeps the statement it is part of from being kept
/// prepared, so PostgreSQL plans each run with its values (see [`SqlPredicate`] for why): for
/// statements whose best plan depends on their values, such as a page of an organisation's rows
/// or a list of ids checked against a low-selectivity code.
pub fn planned_with_values() -> diesel::expression::SqlLiteral<Bool> {
    sql::<Bool>("1 = 1")
}

/// A boolean SQL expression: SQL text with bound values, usable in a diesel `filter`.
#[derive(Debug, Clone, Default)]
pub struct SqlPredicate {
    parts: Vec<Part>,
}

impl SqlPredicate {
    pub(crate) fn sql(mut self, s: &str) -> Self {
        self.parts.push(Part::Sql(s.to_owned()));
        self
    }
    pub(crate) fn text(mut self, v: &str) -> Self {
        self.parts.push(Part::Text(v.to_owned()));
        self
    }
    pub(crate) fn ts(mut self, v: NaiveDateTime) -> Self {
        self.parts.push(Part::Ts(v));
        self
    }
    fn f64(mut self, v: f64) -> Self {
        self.parts.push(Part::F64(v));
        self
    }
    pub(crate) fn append(mut self, other: SqlPredicate) -> Self {
        self.parts.extend(other.parts);
        self
    }
    /// `(a) OR (b) OR ...`; an empty list is TRUE (no restriction).
    pub(crate) fn any(preds: Vec<SqlPredicate>) -> SqlPredicate {
        if preds.is_empty() {
            return SqlPredicate::default().sql("1 = 1");
        }
        let mut out = SqlPredicate::default().sql("(");
        for (i, p) in preds.into_iter().enumerate() {
            if i > 0 {
                out = out.sql(" OR ");
            }
            out = out.sql("(").append(p).sql(")");
        }
        out.sql(")")
    }
}

impl Expression for SqlPredicate {
    type SqlType = Bool;
}
impl<QS> AppearsOnTable<QS> for SqlPredicate {}
impl<QS> SelectableExpression<QS> for SqlPredicate {}
impl ValidGrouping<()> for SqlPredicate {
    type IsAggregate = is_aggregate::Never;
}
impl QueryId for SqlPredicate {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}
impl QueryFragment<MultiBackend> for SqlPredicate {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        // Never kept as a prepared statement, so PostgreSQL plans each search with its values.
        // diesel keeps other statements (boxed ones by their SQL), and after five runs
        // PostgreSQL may give one a generic plan that does not know the binds: for a page of
        // an organisation's rows (`LIMIT $n`, its `_access` codes) that plan joins and sorts
        // every row the organisation may see, page after page (docs/BENCHMARKS.md, export).
        // The fixed statements of the write path keep their cached plans.
        out.unsafe_to_cache_prepared();
        for p in &self.parts {
            match p {
                Part::Sql(s) => out.push_sql(s),
                Part::Text(v) => out.push_bind_param::<Text, String>(v)?,
                Part::Ts(v) => out.push_bind_param::<Timestamp, NaiveDateTime>(v)?,
                Part::F64(v) => out.push_bind_param::<Double, f64>(v)?,
            }
        }
        Ok(())
    }
}

/// A bookable slot's row, as `report_slots fs`: free, not deleted, and live (its schedule still
/// the service's and not inactive). The terms of the partial index `report_slots_free`,
/// written as they are so that SQLite uses it.
pub(crate) const FREE_SLOT: &str = "fs.status = 'free' AND fs.deleted = 0 AND fs.live = 1";

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Kilometres per degree of latitude (and of longitude at the equator).
pub const KM_PER_DEGREE: f64 = 111.32;

/// The FHIR date-prefix semantics over a stored range `[lo, hi]` (column names) and a
/// searched range.
pub(crate) fn date_predicate(lo: &str, hi: &str, m: &DateMatch) -> SqlPredicate {
    let p = SqlPredicate::default();
    let (pl, ph) = (m.low, m.high);
    match m.prefix {
        DatePrefix::Eq => p
            .sql(&format!("{lo} >= "))
            .ts(pl)
            .sql(&format!(" AND {hi} <= "))
            .ts(ph),
        DatePrefix::Ne => p
            .sql(&format!("({lo} < "))
            .ts(pl)
            .sql(&format!(" OR {hi} > "))
            .ts(ph)
            .sql(")"),
        DatePrefix::Lt => p.sql(&format!("{lo} < ")).ts(pl),
        DatePrefix::Gt => p.sql(&format!("{hi} > ")).ts(ph),
        DatePrefix::Le => p.sql(&format!("{lo} <= ")).ts(ph),
        DatePrefix::Ge => p.sql(&format!("{hi} >= ")).ts(pl),
        DatePrefix::Sa => p.sql(&format!("{lo} > ")).ts(ph),
        DatePrefix::Eb => p.sql(&format!("{hi} < ")).ts(pl),
    }
}

fn table_of(kind: IndexKind) -> &'static str {
    match kind {
        IndexKind::Token => "search_tokens",
        IndexKind::String => "search_strings",
        IndexKind::Date => "search_dates",
        IndexKind::Reference => "search_refs",
    }
}

/// `latitude`/`longitude` columns within `km` of a point: a box first (index-friendly), then
/// the equirectangular distance.
fn near_predicate(latitude: f64, longitude: f64, km: f64) -> SqlPredicate {
    let d = km / KM_PER_DEGREE;
    let k = latitude.to_radians().cos();
    let dlon = d / k.max(0.01);
    SqlPredicate::default()
        .sql("latitude BETWEEN ")
        .f64(latitude - d)
        .sql(" AND ")
        .f64(latitude + d)
        .sql(" AND longitude BETWEEN ")
        .f64(longitude - dlon)
        .sql(" AND ")
        .f64(longitude + dlon)
        .sql(" AND ((longitude - ")
        .f64(longitude)
        .sql(") * ")
        .f64(k)
        .sql(") * ((longitude - ")
        .f64(longitude)
        .sql(") * ")
        .f64(k)
        .sql(") + (latitude - ")
        .f64(latitude)
        .sql(") * (latitude - ")
        .f64(latitude)
        .sql(") <= ")
        .f64(d * d)
}

/// One token value over `system`/`code` columns.
fn token_value(m: &TokenMatch) -> SqlPredicate {
    let mut p = SqlPredicate::default().sql("1 = 1");
    if let Some(code) = &m.code {
        p = p.sql(" AND code = ").text(code);
    }
    if let Some(system) = &m.system {
        p = p.sql(" AND system = ").text(system);
    }
    p
}

/// `SELECT res_id FROM <index> WHERE res_type = ? AND param = ? AND (<values>)`, or None
/// for criteria that are not over an index table.
fn index_subquery(res_type: &str, crit: &Criterion) -> Option<SqlPredicate> {
    if let Criterion::AnyOf(parts) = crit {
        let mut any = SqlPredicate::default();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                any = any.sql(" UNION ");
            }
            any = any.append(index_subquery(res_type, part)?);
        }
        return Some(any);
    }
    let (table, param, values) = index_terms(crit)?;
    Some(
        SqlPredicate::default()
            .sql(&format!("SELECT res_id FROM {table} WHERE res_type = "))
            .text(res_type)
            .sql(" AND param = ")
            .text(param)
            .sql(" AND ")
            .append(values),
    )
}

/// Whether the resource being checked (`resources`) has a row in the criterion's index table
/// that matches it. The resource's own rows are read by the primary key's prefix
/// `(res_type, res_id)` and tested after: the inner `LIMIT … OFFSET 0` keeps PostgreSQL from
/// pushing the tests into that scan. Given them, and statistics from before a table grew, it
/// took the index by value instead (every `status=active` token, filtered by resource): 4 ms
/// a candidate, half a second for the hundred ids a subscription's delivery round matches
/// (docs/BENCHMARKS.md, Notifications). A resource has a few dozen rows in a table, whatever
/// the statistics say. (SQLite wants a LIMIT before an OFFSET; no resource has 2^63 rows.)
fn per_resource_check(res_type: &str, crit: &Criterion) -> Option<SqlPredicate> {
    let (table, param, values) = index_terms(crit)?;
    Some(
        SqlPredicate::default()
            .sql(&format!(
                "SELECT 1 FROM (SELECT * FROM {table} WHERE res_type = "
            ))
            .text(res_type)
            .sql(&format!(
                " AND res_id = resources.id LIMIT {} OFFSET 0) s WHERE param = ",
                i64::MAX
            ))
            .text(param)
            .sql(" AND ")
            .append(values),
    )
}

/// The index table a criterion is answered from, its parameter, and the test of a row's
/// values; None for criteria that are not over an index table.
fn index_terms(crit: &Criterion) -> Option<(&'static str, &str, SqlPredicate)> {
    let (kind, param, values) = match crit {
        Criterion::Token { param, any_of, .. } => {
            let values = any_of.iter().map(token_value).collect();
            (IndexKind::Token, param, values)
        }
        Criterion::String { param, any_of } => {
            let values = any_of
                .iter()
                .map(|m| match m {
                    StringMatch::StartsWith(v) => SqlPredicate::default()
                        .sql("value_norm LIKE ")
                        .text(&format!("{}%", like_escape(v)))
                        .sql(" ESCAPE '\\'"),
                    StringMatch::Contains(v) => SqlPredicate::default()
                        .sql("value_norm LIKE ")
                        .text(&format!("%{}%", like_escape(v)))
                        .sql(" ESCAPE '\\'"),
                    StringMatch::Exact(v) => SqlPredicate::default().sql("value_exact = ").text(v),
                })
                .collect();
            (IndexKind::String, param, values)
        }
        Criterion::Date { param, any_of } => {
            let values = any_of
                .iter()
                .map(|m| date_predicate("low", "high", m))
                .collect();
            (IndexKind::Date, param, values)
        }
        Criterion::Reference { param, any_of } => {
            let values = any_of
                .iter()
                .map(|m| {
                    let mut p = SqlPredicate::default().sql("target_id = ").text(&m.id);
                    if let Some(t) = &m.target_type {
                        p = p.sql(" AND target_type = ").text(t);
                    }
                    p
                })
                .collect();
            (IndexKind::Reference, param, values)
        }
        Criterion::Missing { param, kind, .. } => (*kind, param, Vec::new()),
        Criterion::Near {
            param,
            latitude,
            longitude,
            km,
        } => {
            return Some((
                "search_geo",
                param,
                near_predicate(*latitude, *longitude, *km),
            ));
        }
        Criterion::Chain {
            param,
            target_type,
            inner,
            also,
        } => {
            let inner_sub = index_subquery(target_type, inner)?;
            let (inner_sub, negate) = match inner.as_ref() {
                Criterion::Token { negate: true, .. } => (inner_sub, true),
                Criterion::Missing { missing: true, .. } => (inner_sub, true),
                _ => (inner_sub, false),
            };
            let op = if negate { " NOT IN (" } else { " IN (" };
            let mut value = SqlPredicate::default()
                .sql("target_type = ")
                .text(target_type)
                .sql(" AND target_id")
                .sql(op)
                .append(inner_sub)
                .sql(")");
            for a in also {
                value = value
                    .sql(" AND target_id IN (")
                    .append(index_subquery(target_type, a)?)
                    .sql(")");
            }
            (IndexKind::Reference, param, vec![value])
        }
        Criterion::Id(_)
        | Criterion::LastUpdated(_)
        | Criterion::ReferencedBy { .. }
        | Criterion::FreeSlot { .. }
        | Criterion::AnyOf(_) => return None,
    };
    Some((table_of(kind), param, SqlPredicate::any(values)))
}

/// The predicate on `resources` for one criterion. `correlated`: the predicate is checked for
/// one resource at a time (inside a reverse chain), so index criteria become correlated EXISTS
/// lookups by primary key instead of lists of every matching id. `fenced`: each EXISTS ends
/// with `LIMIT 1 OFFSET 0`, which keeps PostgreSQL from pulling it up into a join it could
/// reorder to drive the search (for when the driver is known to be narrow: see
/// `directory_driver`). The OFFSET is what fences: PostgreSQL drops a bare `LIMIT 1` from an
/// EXISTS and pulls it up all the same. It also halves the planning (each check is planned
/// alone, not as one more relation in the join order search).
fn res_predicate(res_type: &str, crit: &Criterion, correlated: bool, fenced: bool) -> SqlPredicate {
    let fence = if fenced { " LIMIT 1 OFFSET 0" } else { "" };
    match crit {
        // One IN list (an OR per id makes PostgreSQL scan the table).
        Criterion::Id(ids) if ids.is_empty() => SqlPredicate::default().sql("1 = 0"),
        Criterion::Id(ids) => {
            let mut p = SqlPredicate::default().sql("resources.id IN (");
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    p = p.sql(", ");
                }
                p = p.text(id);
            }
            p.sql(")")
        }
        Criterion::LastUpdated(any_of) => SqlPredicate::any(
            any_of
                .iter()
                .map(|m| date_predicate("resources.last_updated", "resources.last_updated", m))
                .collect(),
        ),
        // Checked per candidate: a probe of each part. Driving the search: one list of the
        // parts' matches (`IN` a `UNION`), which PostgreSQL joins as it joins one part's; an
        // `OR` of two `IN` lists it can only answer by testing every resource of the type.
        Criterion::AnyOf(parts) if correlated || fenced => SqlPredicate::any(
            parts
                .iter()
                .map(|c| res_predicate(res_type, c, correlated, fenced))
                .collect(),
        ),
        Criterion::AnyOf(_) => match index_subquery(res_type, crit) {
            Some(sub) => SqlPredicate::default()
                .sql("resources.id IN (")
                .append(sub)
                .sql(")"),
            None => SqlPredicate::default().sql("1 = 0"),
        },
        Criterion::ReferencedBy {
            source_type,
            param,
            all_of,
        } => {
            // For each candidate: is there a referring resource (by the reference index) that
            // matches every inner criterion? Checked per candidate and stopping at the first
            // hit, so a service's free slot is found without listing every free slot.
            let mut source = SqlPredicate::default()
                .sql("SELECT 1 FROM resources WHERE resources.res_type = ")
                .text(source_type)
                .sql(" AND resources.id = rb.res_id AND resources.deleted = 0");
            for c in all_of {
                source = source
                    .sql(" AND ")
                    .append(res_predicate(source_type, c, true, false));
            }
            SqlPredicate::default()
                .sql("EXISTS (SELECT 1 FROM search_refs rb WHERE rb.res_type = ")
                .text(source_type)
                .sql(" AND rb.param = ")
                .text(param)
                .sql(" AND rb.target_type = ")
                .text(res_type)
                .sql(" AND rb.target_id = resources.id AND EXISTS (")
                .append(source)
                .sql(")")
                .sql(fence)
                .sql(")")
        }
        Criterion::FreeSlot {
            priorities,
            from,
            to,
        } => {
            let mut p = SqlPredicate::default().sql(&format!(
                "EXISTS (SELECT 1 FROM report_slots fs WHERE fs.service_id = resources.id AND {FREE_SLOT} AND fs.priority IN ("
            ));
            for (i, code) in priorities.iter().enumerate() {
                if i > 0 {
                    p = p.sql(", ");
                }
                p = p.text(code);
            }
            p = p.sql(") AND fs.start >= ").ts(*from);
            if let Some(to) = to {
                p = p.sql(" AND fs.start <= ").ts(*to);
            }
            p.sql(fence).sql(")")
        }
        other => {
            let negate = matches!(
                other,
                Criterion::Token { negate: true, .. } | Criterion::Missing { missing: true, .. }
            );
            if fenced {
                let Some(check) = per_resource_check(res_type, other) else {
                    return SqlPredicate::default().sql("1 = 0");
                };
                let exists = if negate { "NOT EXISTS (" } else { "EXISTS (" };
                return SqlPredicate::default()
                    .sql(exists)
                    .append(check)
                    .sql(fence)
                    .sql(")");
            }
            match index_subquery(res_type, other) {
                // A correlated NOT EXISTS, not NOT IN: PostgreSQL plans it as an anti-join
                // whatever its statistics say (NOT IN without fresh statistics became a
                // per-row rescan: seconds on a few thousand rows).
                Some(sub) if negate => SqlPredicate::default()
                    .sql("NOT EXISTS (")
                    .append(sub)
                    .sql(" AND res_id = resources.id")
                    .sql(fence)
                    .sql(")"),
                Some(sub) if correlated => SqlPredicate::default()
                    .sql("EXISTS (")
                    .append(sub)
                    .sql(" AND res_id = resources.id")
                    .sql(fence)
                    .sql(")"),
                Some(sub) => SqlPredicate::default()
                    .sql("resources.id IN (")
                    .append(sub)
                    .sql(")"),
                None => SqlPredicate::default().sql("1 = 0"),
            }
        }
    }
}

/// How well a criterion narrows a search, best first (no statistics: the shape decides).
fn selectivity_rank(c: &Criterion) -> u8 {
    match c {
        Criterion::Id(_) => 0,
        // References name their targets: a slot's appointments, a patient's referrals.
        Criterion::Near { .. } | Criterion::Reference { .. } => 1,
        Criterion::Token { negate: false, .. } | Criterion::String { .. } => 2,
        Criterion::Date { .. } | Criterion::LastUpdated(_) => 3,
        // As selective as what it chains to (`near` through a service's locations is as
        // narrow as `near`).
        Criterion::Chain { inner, .. } => selectivity_rank(inner).max(1),
        Criterion::Missing { missing: false, .. } => 5,
        Criterion::ReferencedBy { .. } | Criterion::FreeSlot { .. } => 6,
        Criterion::Token { negate: true, .. } | Criterion::Missing { missing: true, .. } => 7,
        // As narrow as its widest part.
        Criterion::AnyOf(parts) => parts.iter().map(selectivity_rank).max().unwrap_or(0),
    }
}

/// The most selective criterion drives the search (a list of matching ids); every other one
/// is checked per candidate by primary-key lookups, instead of listing all its matches too
/// (SQLite would build every list in full; PostgreSQL plans both forms as semi-joins).
fn filtered(q: &SearchQuery, page: Option<i64>) -> resources::BoxedQuery<'static, MultiBackend> {
    let mut query = resources::table
        .filter(resources::res_type.eq(q.res_type.clone()))
        .filter(resources::deleted.eq(0))
        .into_boxed();
    if let Some(conditions) = slot_driver(q) {
        let mut driver = SqlPredicate::default()
            .sql("resources.id IN (SELECT id FROM report_slots WHERE ")
            .append(conditions);
        // Exact, so a page in id order is the projection's first ids (its deleted flag follows
        // the resource's): nothing else is read. Left to itself, PostgreSQL walked the whole
        // projection in id order looking for ten matches.
        if let Some(n) = page {
            driver = driver.sql(&format!(" ORDER BY id LIMIT {n}"));
        }
        return query.filter(driver.sql(")"));
    }
    let mut criteria: Vec<&Criterion> = q.criteria.iter().collect();
    let mut driven = false;
    if let Some((driver, used)) = directory_driver(q) {
        query = query.filter(driver);
        criteria = q
            .criteria
            .iter()
            .enumerate()
            .filter(|(i, _)| !used.contains(i))
            .map(|(_, c)| c)
            .collect();
        driven = true;
    }
    criteria.sort_by_key(|c| selectivity_rank(c));
    // Driven by ids or by what the resources refer to (a few candidates), the other criteria
    // are fenced per-candidate checks too: unfenced, PostgreSQL with statistics from before
    // a table grew drove `Appointment?slot=…&status=booked` from every booked appointment
    // (84 ms instead of 0.1).
    let few = matches!(
        criteria.first(),
        Some(Criterion::Id(_) | Criterion::Reference { .. })
    );
    for (i, c) in criteria.into_iter().enumerate() {
        let fenced = driven || (few && i > 0);
        query = query.filter(res_predicate(&q.res_type, c, driven || i > 0, fenced));
    }
    query
}

/// A service search for a specialty within a radius of a point (`location.near` and
/// `specialty`, the patient-centred directory search): both answered by one range of the
/// `directory_positions` index (specialty code, latitude), which holds each service's
/// locations' positions by specialty coding, with the service's active flag and priorities, so
/// that `active=true` and code-only e-RS `priority` criteria are answered from the same range.
/// Returns the driving predicate and the positions of the criteria it replaces. Its candidates
/// are few (one specialty in one area), so the other criteria are fenced per-candidate checks:
/// without the fence PostgreSQL, whose row estimates for the index tables' (type, parameter)
/// pairs can be off a thousandfold, once drove a search from "has a free slot" and read
/// 750,000 slots (3.7 s).
fn directory_driver(q: &SearchQuery) -> Option<(SqlPredicate, Vec<usize>)> {
    use crate::directory::{
        priority_bit, ACTIVE_PARAM, LOCATION, LOCATION_PARAM, POSITION_PARAM, PRIORITY_PARAM,
        SERVICE, SPECIALTY_PARAM,
    };
    if q.res_type != SERVICE {
        return None;
    }
    let near = q.criteria.iter().position(|c| {
        matches!(c, Criterion::Chain { param, target_type, inner, also }
            if param == LOCATION_PARAM && target_type == LOCATION && also.is_empty()
                && matches!(inner.as_ref(), Criterion::Near { param, .. } if param == POSITION_PARAM))
    })?;
    let specialty = q.criteria.iter().position(|c| {
        matches!(c, Criterion::Token { param, any_of, negate: false }
            if param == SPECIALTY_PARAM && !any_of.is_empty() && any_of.iter().all(|m| m.code.is_some()))
    })?;
    let (Criterion::Chain { inner, .. }, Criterion::Token { any_of, .. }) =
        (&q.criteria[near], &q.criteria[specialty])
    else {
        return None;
    };
    let Criterion::Near {
        latitude,
        longitude,
        km,
        ..
    } = inner.as_ref()
    else {
        return None;
    };
    let mut driver = SqlPredicate::default()
        .sql("resources.id IN (SELECT service_id FROM directory_positions WHERE ")
        .append(SqlPredicate::any(any_of.iter().map(token_value).collect()))
        .sql(" AND ")
        .append(near_predicate(*latitude, *longitude, *km));
    let mut used = vec![near, specialty];
    // Code-only values: a system in the criterion would have to match the token's.
    let codes = |c: &Criterion, name: &str| -> Option<Vec<String>> {
        match c {
            Criterion::Token {
                param,
                any_of,
                negate: false,
            } if param == name && !any_of.is_empty() => any_of
                .iter()
                .map(|m| match (&m.system, &m.code) {
                    (None, Some(code)) => Some(code.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    };
    if let Some(i) = q
        .criteria
        .iter()
        .position(|c| codes(c, ACTIVE_PARAM).is_some_and(|v| v.iter().all(|c| c == "true")))
    {
        driver = driver.sql(" AND active = 1");
        used.push(i);
    }
    if let Some((i, mask)) = q.criteria.iter().enumerate().find_map(|(i, c)| {
        let bits: Vec<i32> = codes(c, PRIORITY_PARAM)?
            .iter()
            .map(|code| priority_bit(code))
            .collect();
        (!bits.contains(&0)).then(|| (i, bits.iter().fold(0, |m, b| m | b)))
    }) {
        driver = driver.sql(&format!(" AND (priorities & {mask}) <> 0"));
        used.push(i);
    }
    Some((driver.sql(")"), used))
}

/// A slot search for a service's slots (`schedule.actor=HealthcareService/{id}`, as a client
/// looking for a slot to book asks), answered from the slot projection alone (`report_slots`,
/// written with every slot and schedule write) when it holds every criterion exactly: the
/// slot's service (its schedule's only HealthcareService actor), status, priority (the code of
/// its only `appointmentType` coding) and start (the range the search index holds). One range
/// of `report_slots_service`, instead of following the service's schedules to every one of
/// their slots and probing each for status, priority and start. Any other criterion, or a
/// system in a token, and the search takes the general path.
fn slot_driver(q: &SearchQuery) -> Option<SqlPredicate> {
    use crate::directory::SERVICE;
    if q.res_type != "Slot" {
        return None;
    }
    let codes = |any_of: &[TokenMatch]| -> Option<Vec<String>> {
        (!any_of.is_empty() && any_of.iter().all(|m| m.system.is_none()))
            .then(|| any_of.iter().map(|m| m.code.clone()).collect())?
    };
    let in_list = |p: SqlPredicate, column: &str, values: &[String]| {
        let mut p = p.sql(&format!(" AND {column} IN ("));
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                p = p.sql(", ");
            }
            p = p.text(v);
        }
        p.sql(")")
    };
    let mut driver = SqlPredicate::default().sql("deleted = 0");
    let mut by_service = false;
    for c in &q.criteria {
        driver = match c {
            Criterion::Chain {
                param,
                target_type,
                inner,
                also,
            } if param == "schedule" && target_type == "Schedule" && also.is_empty() => {
                match inner.as_ref() {
                    Criterion::Reference { param, any_of }
                        if param == "actor"
                            && !any_of.is_empty()
                            && any_of
                                .iter()
                                .all(|m| m.target_type.as_deref() == Some(SERVICE)) =>
                    {
                        by_service = true;
                        let ids: Vec<String> = any_of.iter().map(|m| m.id.clone()).collect();
                        in_list(driver, "service_id", &ids)
                    }
                    _ => return None,
                }
            }
            Criterion::Token {
                param,
                any_of,
                negate: false,
            } if param == "status" => in_list(driver, "status", &codes(any_of)?),
            Criterion::Token {
                param,
                any_of,
                negate: false,
            } if param == "priority" || param == "appointment-type" => {
                in_list(driver, "search_priority", &codes(any_of)?)
            }
            Criterion::Date { param, any_of } if param == "start" && !any_of.is_empty() => {
                driver.sql(" AND ").append(SqlPredicate::any(
                    any_of
                        .iter()
                        .map(|m| date_predicate("start", "start_high", m))
                        .collect(),
                ))
            }
            _ => return None,
        };
    }
    by_service.then_some(driver)
}

/// The distance sort of a search `directory_driver` drives: the nearest of the service's
/// positions in `directory_positions` (a service with a row there has a row for each of its
/// positioned locations), read by primary key instead of joining its `location` references to
/// their positions.
fn directory_distance(q: &SearchQuery, param: &str, via: Option<&str>) -> bool {
    use crate::directory::{LOCATION_PARAM, POSITION_PARAM};
    param == POSITION_PARAM && via == Some(LOCATION_PARAM) && directory_driver(q).is_some()
}

/// Parameter names come from the server's registry, never from the client; this guard keeps
/// that true for the SQL text built below.
fn safe_param(param: &str) -> Result<&str, StorageError> {
    if !param.is_empty()
        && param
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(param)
    } else {
        Err(StorageError::Config(format!(
            "invalid sort parameter name '{param}'"
        )))
    }
}

/// Whether the search names its resources (ids) or what they refer to (references): few
/// matches, so it is driven from them and its matches sorted, never by walking a sort index.
fn pinned(q: &SearchQuery) -> bool {
    q.criteria
        .iter()
        .any(|c| matches!(c, Criterion::Id(_) | Criterion::Reference { .. }))
}

/// An ORDER BY term for a correlated subquery, resources without a value last in either
/// direction. `NULLS LAST` (PostgreSQL, SQLite ≥ 3.30) names the subquery once, so the planner
/// plans and runs it once per row rather than twice as a `CASE WHEN … IS NULL` key would.
fn nulls_last(sub: &str, desc: bool) -> diesel::expression::SqlLiteral<Integer> {
    let direction = if desc { "DESC" } else { "ASC" };
    sql::<Integer>(&format!("{sub} {direction} NULLS LAST"))
}

/// The matching rows for one page, and the total when `with_total` (or when the first page
/// holds every match).
/// How far a search counts its matches for the Bundle's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Count {
    /// Not at all (a first page that is not full still gives its total: it costs nothing).
    No,
    /// Up to this many: the total when there are no more, none when there are (counting costs
    /// time in proportion to what is counted; an organisation's referrals run to 100,000s).
    UpTo(i64),
    /// Every match.
    #[default]
    All,
}

impl Count {
    /// The total for a page of `page` rows at `offset` (at most `limit`): what the page shows
    /// when it is a first page that is not full, else counted as far as this asks, with `all`
    /// (a count of every match) or `first` (how many of the first `n` matches there are).
    pub(crate) fn total(
        self,
        conn: &mut DbConnection,
        (offset, limit, page): (i64, i64, usize),
        all: impl FnOnce(&mut DbConnection) -> diesel::QueryResult<i64>,
        first: impl FnOnce(&mut DbConnection, i64) -> diesel::QueryResult<usize>,
    ) -> diesel::QueryResult<Option<i64>> {
        let n = i64::try_from(page).unwrap_or(i64::MAX);
        if offset == 0 && n < limit {
            return Ok(Some(n));
        }
        Ok(match self {
            Count::No => None,
            Count::All => Some(all(conn)?),
            Count::UpTo(most) => {
                let seen = first(conn, most.saturating_add(1))?;
                let seen = i64::try_from(seen).unwrap_or(i64::MAX);
                (seen <= most).then_some(seen)
            }
        })
    }
}

/// A page of matches, with their total when `with_total` (every match counted).
pub fn search(
    conn: &mut DbConnection,
    q: &SearchQuery,
    with_total: bool,
) -> Result<(Vec<ResourceRow>, Option<i64>), StorageError> {
    search_counted(conn, q, if with_total { Count::All } else { Count::No })
}

/// A page of matches, with their total as far as `count` asks.
pub fn search_counted(
    conn: &mut DbConnection,
    q: &SearchQuery,
    count: Count,
) -> Result<(Vec<ResourceRow>, Option<i64>), StorageError> {
    // A page in id order only (no other sort key) ends at `offset + limit` in that order.
    let page = q.sort.is_empty().then(|| q.offset.saturating_add(q.limit));
    let mut query = filtered(q, page);
    // Named resources are found by their ids and sorted after, through an expression no index
    // provides. Given `ORDER BY id` and statistics from before the table grew, PostgreSQL
    // walked the type's primary key in id order testing each row against the list: 34 ms
    // for a hundred ids among 35,000 referrals, 4 ms found by id and sorted.
    let by_name = q.criteria.iter().any(|c| matches!(c, Criterion::Id(_)));
    let id_key = || sql::<Text>("COALESCE(resources.id, resources.id)");
    for (key, desc) in &q.sort {
        match key {
            SortKey::Id if by_name => {
                query = if *desc {
                    query.then_order_by(id_key().desc())
                } else {
                    query.then_order_by(id_key().asc())
                }
            }
            SortKey::Id => {
                query = if *desc {
                    query.then_order_by(resources::id.desc())
                } else {
                    query.then_order_by(resources::id.asc())
                }
            }
            SortKey::LastUpdated if pinned(q) => {
                // The same order, through an expression no index provides: SQLite would
                // otherwise walk the whole type newest first (the `(res_type, last_updated)`
                // index) testing each row against the criteria, 3 ms for one referral's
                // appointments among a few hundred, seconds among a million.
                let key = diesel::dsl::sql::<diesel::sql_types::Timestamp>(
                    "COALESCE(resources.last_updated, resources.last_updated)",
                );
                query = if *desc {
                    query.then_order_by(key.desc())
                } else {
                    query.then_order_by(key.asc())
                }
            }
            SortKey::LastUpdated => {
                query = if *desc {
                    query.then_order_by(resources::last_updated.desc())
                } else {
                    query.then_order_by(resources::last_updated.asc())
                }
            }
            SortKey::EarliestFreeSlot { after } => {
                // A timestamp Rust formats: no client text reaches this SQL.
                let sub = format!(
                    "(SELECT MIN(fs.start) FROM report_slots fs WHERE fs.service_id = resources.id AND {FREE_SLOT} AND fs.start >= '{}')",
                    after.format("%Y-%m-%d %H:%M:%S")
                );
                query = query.then_order_by(nulls_last(&sub, *desc));
            }
            SortKey::Distance {
                param,
                via,
                latitude,
                longitude,
            } => {
                let param = safe_param(param)?;
                let k = latitude.to_radians().cos();
                // Numbers formatted by Rust from f64s, and registry parameter names: no client
                // text reaches this SQL.
                let d2 = format!(
                    "((g.longitude - ({longitude:.8})) * {k:.8}) * ((g.longitude - ({longitude:.8})) * {k:.8}) + (g.latitude - ({latitude:.8})) * (g.latitude - ({latitude:.8}))"
                );
                let sub = match via {
                    _ if directory_distance(q, param, via.as_deref()) => format!(
                        "(SELECT MIN({d2}) FROM directory_positions g WHERE g.service_id = resources.id)"
                    ),
                    None => format!("(SELECT MIN({d2}) FROM search_geo g WHERE g.res_type = resources.res_type AND g.res_id = resources.id AND g.param = '{param}')"),
                    Some(via) => {
                        let via = safe_param(via)?;
                        format!(
                            "(SELECT MIN({d2}) FROM search_refs r, search_geo g WHERE r.res_type = resources.res_type AND r.res_id = resources.id AND r.param = '{via}' AND g.res_type = r.target_type AND g.res_id = r.target_id AND g.param = '{param}')"
                        )
                    }
                };
                query = query.then_order_by(nulls_last(&sub, *desc));
            }
            SortKey::Param { param, kind } => {
                // A correlated scalar subquery in portable SQL (diesel cannot express the
                // correlation); resources without a value sort last in either direction.
                let param = safe_param(param)?;
                let (table, col_asc, col_desc) = match kind {
                    IndexKind::Token => ("search_tokens", "MIN(s.code)", "MAX(s.code)"),
                    IndexKind::String => {
                        ("search_strings", "MIN(s.value_norm)", "MAX(s.value_norm)")
                    }
                    IndexKind::Date => ("search_dates", "MIN(s.low)", "MAX(s.high)"),
                    IndexKind::Reference => ("search_refs", "MIN(s.target_id)", "MAX(s.target_id)"),
                };
                let agg = if *desc { col_desc } else { col_asc };
                let sub = format!(
                    "(SELECT {agg} FROM {table} s WHERE s.res_type = resources.res_type AND s.res_id = resources.id AND s.param = '{param}')"
                );
                query = query.then_order_by(nulls_last(&sub, *desc));
            }
        }
    }
    // A total order, so that offset paging is stable.
    query = if by_name {
        query.then_order_by(id_key().asc())
    } else {
        query.then_order_by(resources::id.asc())
    };
    let rows = query
        .offset(q.offset)
        .limit(q.limit)
        .select(ResourceRow::as_select())
        .load(conn)?;
    // A first page that is not full holds every match: its total costs nothing, and is given
    // even when not asked for. Otherwise count as far as asked.
    let total = count.total(
        conn,
        (q.offset, q.limit, rows.len()),
        |c| filtered(q, None).count().get_result::<i64>(c),
        |c, n| {
            Ok(filtered(q, None)
                .select(resources::id)
                .limit(n)
                .load::<String>(c)?
                .len())
        },
    )?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::rows::{IndexEntries, TokenEntry};
    use crate::store::{insert_resource, NewVersion};

    /// A search by ids with other criteria finds exactly the named resources that meet them, in
    /// id order, and on PostgreSQL reads only the candidates' own index rows however stale the
    /// statistics. Here the tables were analysed when no referral was active; then 1,000
    /// active ones arrived (a day's referrals between two autovacuum passes, or a benchmark's
    /// made just before it runs). With the tests in the index scan, PostgreSQL read every
    /// active token for each candidate.
    #[test]
    fn named_resources_are_checked_by_their_own_rows_whatever_the_statistics() {
        let mut conn = crate::testing::fresh();
        let author = crate::testing::author();
        let now = chrono::Utc::now().naive_utc();
        let token = crate::testing::token;
        let add = |c: &mut DbConnection, id: &str, tokens: Vec<TokenEntry>| {
            let v = NewVersion {
                res_type: "ServiceRequest",
                id,
                version_id: 1,
                last_updated: now,
                content: "{}",
                author: &author,
            };
            let index = IndexEntries {
                tokens,
                ..IndexEntries::default()
            };
            insert_resource(c, &v, &index, &Default::default()).expect("a referral");
        };
        for i in 0..10 {
            add(
                &mut conn,
                &format!("r.old{i:04}"),
                vec![token("status", "draft"), token("_access", "X")],
            );
        }
        conn.batch_execute("ANALYZE").expect("analyze");
        let pg = matches!(&*conn, DbConnection::Postgresql(_));
        let n = if pg { 1000 } else { 150 };
        conn.transaction::<_, diesel::result::Error, _>(|c| {
            for i in 0..n {
                let mut tokens = vec![token("status", "active"), token("_access", "X")];
                if i % 10 == 0 {
                    tokens.push(token("tag", "hold"));
                }
                add(c, &format!("r.new{i:04}"), tokens);
            }
            Ok(())
        })
        .expect("referrals");
        // The newest hundred (last in id order) and two drafts.
        let mut named: Vec<String> = (n - 100..n).map(|i| format!("r.new{i:04}")).collect();
        named.extend(["r.old0002".to_owned(), "r.old0007".to_owned()]);
        let code = |c: &str| TokenMatch {
            system: None,
            code: Some(c.into()),
        };
        let query = SearchQuery {
            res_type: "ServiceRequest".into(),
            criteria: vec![
                Criterion::Id(named),
                Criterion::Token {
                    param: "status".into(),
                    any_of: vec![code("active")],
                    negate: false,
                },
                Criterion::Token {
                    param: "_access".into(),
                    any_of: vec![code("X")],
                    negate: false,
                },
                Criterion::Token {
                    param: "tag".into(),
                    any_of: vec![code("hold")],
                    negate: true,
                },
            ],
            sort: vec![],
            offset: 0,
            limit: 102,
        };
        let fetched = |c: &mut DbConnection| crate::testing::rows_fetched(c, "search_tokens");
        let (rows, read) = conn
            .transaction::<_, diesel::result::Error, _>(|c| {
                let before = pg.then(|| fetched(c));
                let rows = search(c, &query, false).expect("search").0;
                Ok((rows, before.map(|b| fetched(c) - b)))
            })
            .expect("transaction");
        let found: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let expected: Vec<String> = (n - 100..n)
            .filter(|i| i % 10 != 0)
            .map(|i| format!("r.new{i:04}"))
            .collect();
        assert_eq!(found, expected);
        if let Some(tokens) = read {
            assert!(tokens <= 1000, "{tokens} index rows read for 102 named");
        }
    }
}

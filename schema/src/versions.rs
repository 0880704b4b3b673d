//! Searches of the version table itself: each stored version is the record of its own making
//! (who, when, how, for whom), which the API serves as that version's Provenance. No index rows
//! are written for it; a search filters the versions' own columns.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::conn::MultiBackend;
use crate::schema::resource_versions;
use crate::search::{date_predicate, Count, DateMatch, SqlPredicate};
use crate::{DbConnection, StorageError, VersionRow};

/// Who made a version, as a search asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Maker {
    /// An application (by client id; any application when None).
    Application(Option<String>),
    /// A user acting for no application (by user id; any such user when None).
    User(Option<String>),
    /// An application or a user with this id.
    Either(String),
    /// Nobody (a system no version is made under).
    Nobody,
}

/// One ANDed condition on versions; the values within one are ORed.
#[derive(Debug, Clone)]
pub enum VersionCriterion {
    /// Versions of these resources (`(type, id)`; any type when None), any version.
    Of(Vec<(Option<String>, String)>),
    /// These exact versions (`(type, id, version)`).
    Exactly(Vec<(String, String, i64)>),
    /// Made by one of these (`negate`: by none of them).
    MadeBy { any_of: Vec<Maker>, negate: bool },
    /// Made in one of these business functions; None matches any.
    Role {
        any_of: Vec<Option<String>>,
        negate: bool,
    },
    /// Made at a time matching one of these.
    Recorded(Vec<DateMatch>),
    /// After this version in `VersionOrder::Recorded` ascending order (a page's cursor).
    After {
        at: NaiveDateTime,
        res_type: String,
        id: String,
        version: i64,
    },
}

/// Which versions a caller may see: those of the `everyone` types, and those whose resource
/// holds a `(param, code)` token with one of `codes` (organisation scoping).
#[derive(Debug, Clone)]
pub struct Visible {
    pub everyone: Vec<String>,
    pub param: String,
    pub codes: Vec<String>,
}

/// The order of a page of versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOrder {
    /// By when they were made (then by resource and version).
    Recorded { desc: bool },
    /// By resource type, id and version.
    Key { desc: bool },
}

#[derive(Debug, Clone)]
pub struct VersionSearch {
    pub criteria: Vec<VersionCriterion>,
    pub visible: Option<Visible>,
    pub order: VersionOrder,
    pub offset: i64,
    pub limit: i64,
    pub count: Count,
}

const COLS: &str = "resource_versions";

fn in_list(column: &str, values: &[String]) -> SqlPredicate {
    if values.is_empty() {
        return SqlPredicate::default().sql("1 = 0");
    }
    let mut p = SqlPredicate::default().sql(&format!("{column} IN ("));
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            p = p.sql(", ");
        }
        p = p.text(v);
    }
    p.sql(")")
}

/// Who made a version as its Provenance names the agent: the application, else the user. The
/// expression of the index `resource_versions_maker` (migration 000022), written the same way
/// so that both databases use it.
const MAKER: &str = "COALESCE(resource_versions.client_id, resource_versions.author_user)";

fn maker(m: &Maker) -> SqlPredicate {
    let p = SqlPredicate::default();
    match m {
        Maker::Application(None) => p.sql(&format!("{COLS}.client_id IS NOT NULL")),
        Maker::Application(Some(app)) => p
            .sql(&format!("{MAKER} = "))
            .text(app)
            .sql(&format!(" AND {COLS}.client_id IS NOT NULL")),
        Maker::User(None) => p.sql(&format!(
            "{COLS}.client_id IS NULL AND {COLS}.author_user IS NOT NULL"
        )),
        Maker::User(Some(user)) => p
            .sql(&format!("{MAKER} = "))
            .text(user)
            .sql(&format!(" AND {COLS}.client_id IS NULL")),
        Maker::Either(who) => p.sql(&format!("{MAKER} = ")).text(who),
        Maker::Nobody => p.sql("1 = 0"),
    }
}

fn negated(p: SqlPredicate, negate: bool) -> SqlPredicate {
    if negate {
        SqlPredicate::default().sql("NOT (").append(p).sql(")")
    } else {
        p
    }
}

fn criterion(c: &VersionCriterion) -> SqlPredicate {
    match c {
        VersionCriterion::Of(of) => SqlPredicate::any(
            of.iter()
                .map(|(t, id)| {
                    let p = SqlPredicate::default()
                        .sql(&format!("{COLS}.id = "))
                        .text(id);
                    match t {
                        Some(t) => p.sql(&format!(" AND {COLS}.res_type = ")).text(t),
                        None => p,
                    }
                })
                .collect(),
        ),
        VersionCriterion::Exactly(keys) if keys.is_empty() => SqlPredicate::default().sql("1 = 0"),
        VersionCriterion::Exactly(keys) => SqlPredicate::any(
            keys.iter()
                .map(|(t, id, v)| {
                    SqlPredicate::default()
                        .sql(&format!("{COLS}.res_type = "))
                        .text(t)
                        .sql(&format!(" AND {COLS}.id = "))
                        .text(id)
                        // A number Rust formats: no client text.
                        .sql(&format!(" AND {COLS}.version_id = {v}"))
                })
                .collect(),
        ),
        VersionCriterion::MadeBy { any_of, negate } => negated(
            SqlPredicate::any(any_of.iter().map(maker).collect()),
            *negate,
        ),
        VersionCriterion::Role { any_of, negate } => {
            let p = if any_of.iter().any(Option::is_none) {
                SqlPredicate::default().sql("1 = 1")
            } else {
                let codes: Vec<String> = any_of.iter().flatten().cloned().collect();
                in_list(&format!("{COLS}.author_role"), &codes)
            };
            negated(p, *negate)
        }
        VersionCriterion::After {
            at,
            res_type,
            id,
            version,
        } => SqlPredicate::default()
            .sql(&format!("{COLS}.last_updated >= "))
            .ts(*at)
            .sql(&format!(" AND ({COLS}.last_updated > "))
            .ts(*at)
            .sql(&format!(" OR {COLS}.res_type > "))
            .text(res_type)
            .sql(&format!(" OR ({COLS}.res_type = "))
            .text(res_type)
            .sql(&format!(" AND ({COLS}.id > "))
            .text(id)
            .sql(&format!(" OR ({COLS}.id = "))
            .text(id)
            // A number Rust formats: no client text.
            .sql(&format!(" AND {COLS}.version_id > {version}))))")),
        VersionCriterion::Recorded(any_of) => SqlPredicate::any(
            any_of
                .iter()
                .map(|m| {
                    date_predicate(
                        &format!("{COLS}.last_updated"),
                        &format!("{COLS}.last_updated"),
                        m,
                    )
                })
                .collect(),
        ),
    }
}

fn visible(v: &Visible) -> SqlPredicate {
    let holds = SqlPredicate::default()
        .sql(&format!(
            "EXISTS (SELECT 1 FROM search_tokens a WHERE a.res_type = {COLS}.res_type AND a.res_id = {COLS}.id AND a.param = "
        ))
        .text(&v.param)
        .sql(" AND ")
        .append(in_list("a.code", &v.codes))
        .sql(")");
    if v.everyone.is_empty() {
        holds
    } else {
        SqlPredicate::any(vec![
            in_list(&format!("{COLS}.res_type"), &v.everyone),
            holds,
        ])
    }
}

fn filtered(q: &VersionSearch) -> resource_versions::BoxedQuery<'static, MultiBackend> {
    let mut query = resource_versions::table.into_boxed();
    for c in &q.criteria {
        query = query.filter(criterion(c));
    }
    if let Some(v) = &q.visible {
        query = query.filter(visible(v));
    }
    query
}

/// A page of the versions matching `q`, and how many match as far as `q.count` asks.
pub fn search(
    conn: &mut DbConnection,
    q: &VersionSearch,
) -> Result<(Vec<VersionRow>, Option<i64>), StorageError> {
    let query = filtered(q);
    let query = match q.order {
        VersionOrder::Recorded { desc: true } => query.order((
            resource_versions::last_updated.desc(),
            resource_versions::res_type.desc(),
            resource_versions::id.desc(),
            resource_versions::version_id.desc(),
        )),
        VersionOrder::Recorded { desc: false } => query.order((
            resource_versions::last_updated.asc(),
            resource_versions::res_type.asc(),
            resource_versions::id.asc(),
            resource_versions::version_id.asc(),
        )),
        VersionOrder::Key { desc: true } => query.order((
            resource_versions::res_type.desc(),
            resource_versions::id.desc(),
            resource_versions::version_id.desc(),
        )),
        VersionOrder::Key { desc: false } => query.order((
            resource_versions::res_type.asc(),
            resource_versions::id.asc(),
            resource_versions::version_id.asc(),
        )),
    };
    let rows = query
        .offset(q.offset)
        .limit(q.limit)
        .select(VersionRow::as_select())
        .load(conn)?;
    let total = total(conn, q.count, (q.offset, q.limit, rows.len()), || {
        filtered(q)
    })?;
    Ok((rows, total))
}

/// How many versions `matching` finds, as far as `count` asks, for a page of `page.2` rows at
/// `page.0` of at most `page.1` (`Count::total`).
pub(crate) fn total(
    conn: &mut DbConnection,
    count: Count,
    page: (i64, i64, usize),
    matching: impl Fn() -> resource_versions::BoxedQuery<'static, MultiBackend>,
) -> diesel::QueryResult<Option<i64>> {
    count.total(
        conn,
        page,
        |c| matching().count().get_result(c),
        |c, n| {
            Ok(matching()
                .select(resource_versions::version_id)
                .limit(n)
                .load::<i64>(c)?
                .len())
        },
    )
}

#[cfg(test)]
mod tests {
    /// A search by agent walks the maker index, not every version.
    #[test]
    fn versions_are_found_by_their_maker_through_its_index() {
        let mut conn = crate::testing::fresh();
        let query = format!(
            "SELECT version_id FROM resource_versions WHERE {} = '555000000001' ORDER BY last_updated DESC LIMIT 20",
            super::MAKER
        );
        let plan = crate::testing::index_plan(&mut conn, &query);
        assert!(
            plan.iter().any(|l| l.contains("resource_versions_maker")),
            "{plan:?}"
        );
    }
}

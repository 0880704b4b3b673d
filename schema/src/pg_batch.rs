//! PostgreSQL: the row writes of one storage call sent as one statement. Each INSERT or DELETE
//! is a data-modifying `WITH` part (PostgreSQL runs every such part to completion, once, and
//! checks foreign keys at the end of the whole statement), so a resource created with its
//! version and index rows costs one round trip instead of one per table. SQLite runs
//! in-process, where statements cost no round trips; it keeps the query builder's statements.

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::BoxedSqlQuery;
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text, Timestamp};
use diesel::{PgConnection, RunQueryDsl};

use crate::rows::{IndexEntries, VersionRow};

/// A bound value.
pub(crate) enum Bind {
    Text(String),
    OptText(Option<String>),
    BigInt(i64),
    Int(i32),
    Time(NaiveDateTime),
    Float(f64),
    Texts(Vec<String>),
}

/// PostgreSQL accepts at most 65,535 parameters in a statement; a batch past this many sends
/// what it has and starts again.
const MAX_BINDS: usize = 30_000;

/// Writes gathered into as few statements as the parameter limit allows.
pub(crate) struct Batch<'c> {
    conn: &'c mut PgConnection,
    parts: Vec<String>,
    binds: Vec<Bind>,
}

impl<'c> Batch<'c> {
    pub(crate) fn new(conn: &'c mut PgConnection) -> Self {
        Batch {
            conn,
            parts: Vec::new(),
            binds: Vec::new(),
        }
    }

    /// Room for `n` more parameters, sending what is gathered when there is not.
    fn room(&mut self, n: usize) -> diesel::QueryResult<()> {
        if !self.binds.is_empty() && self.binds.len() + n > MAX_BINDS {
            self.send()?;
        }
        Ok(())
    }

    fn placeholder(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    /// `INSERT INTO table (columns) VALUES …` of these rows (each as many values as columns).
    pub(crate) fn insert(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: impl IntoIterator<Item = Vec<Bind>>,
    ) -> diesel::QueryResult<()> {
        let rows: Vec<Vec<Bind>> = rows.into_iter().collect();
        let per_statement = (MAX_BINDS / columns.len().max(1)).max(1);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Bind>> = rows.by_ref().take(per_statement).collect();
            self.room(chunk.len() * columns.len())?;
            let mut values = Vec::with_capacity(chunk.len());
            for row in chunk {
                debug_assert_eq!(row.len(), columns.len(), "{table}: a row of another width");
                let marks: Vec<String> = row.into_iter().map(|b| self.placeholder(b)).collect();
                values.push(format!("({})", marks.join(", ")));
            }
            self.parts.push(format!(
                "INSERT INTO {table} ({}) VALUES {}",
                columns.join(", "),
                values.join(", ")
            ));
        }
        Ok(())
    }

    /// `DELETE FROM table` of one resource's rows of these parameters.
    pub(crate) fn delete_params(
        &mut self,
        table: &str,
        res_type: &str,
        id: &str,
        params: &[String],
    ) -> diesel::QueryResult<()> {
        if params.is_empty() {
            return Ok(());
        }
        self.room(3)?;
        let t = self.placeholder(Bind::Text(res_type.to_owned()));
        let i = self.placeholder(Bind::Text(id.to_owned()));
        let p = self.placeholder(Bind::Texts(params.to_vec()));
        self.parts.push(format!(
            "DELETE FROM {table} WHERE res_type = {t} AND res_id = {i} AND param = ANY({p})"
        ));
        Ok(())
    }

    /// `DELETE FROM table` of all one resource's rows.
    pub(crate) fn delete_owned(
        &mut self,
        table: &str,
        res_type: &str,
        id: &str,
    ) -> diesel::QueryResult<()> {
        self.room(2)?;
        let t = self.placeholder(Bind::Text(res_type.to_owned()));
        let i = self.placeholder(Bind::Text(id.to_owned()));
        self.parts.push(format!(
            "DELETE FROM {table} WHERE res_type = {t} AND res_id = {i}"
        ));
        Ok(())
    }

    /// A version row.
    pub(crate) fn version(&mut self, v: VersionRow) -> diesel::QueryResult<()> {
        self.versions(std::iter::once(v))
    }

    pub(crate) fn versions(
        &mut self,
        rows: impl IntoIterator<Item = VersionRow>,
    ) -> diesel::QueryResult<()> {
        self.insert(
            "resource_versions",
            &[
                "res_type",
                "id",
                "version_id",
                "last_updated",
                "method",
                "deleted",
                "content",
                "author_user",
                "author_role",
                "author_org",
                "request_id",
            ],
            rows.into_iter().map(|v| {
                vec![
                    Bind::Text(v.res_type),
                    Bind::Text(v.id),
                    Bind::BigInt(v.version_id),
                    Bind::Time(v.last_updated),
                    Bind::Text(v.method),
                    Bind::Int(v.deleted),
                    Bind::Text(v.content),
                    Bind::OptText(v.author_user),
                    Bind::Text(v.author_role),
                    Bind::Text(v.author_org),
                    Bind::Text(v.request_id),
                ]
            }),
        )
    }

    /// The index rows of these resources (type, id, entries), a part per table with rows.
    pub(crate) fn index(
        &mut self,
        items: &[(&str, &str, &IndexEntries)],
    ) -> diesel::QueryResult<()> {
        let text = |v: &str| Bind::Text(v.to_owned());
        self.insert(
            "search_tokens",
            &["res_type", "res_id", "param", "system", "code"],
            rows(
                items,
                |ix| &ix.tokens,
                |t, i, e| {
                    vec![
                        text(t),
                        text(i),
                        text(&e.param),
                        text(&e.system),
                        text(&e.code),
                    ]
                },
            ),
        )?;
        self.insert(
            "search_strings",
            &["res_type", "res_id", "param", "value_norm", "value_exact"],
            rows(
                items,
                |ix| &ix.strings,
                |t, i, e| {
                    vec![
                        text(t),
                        text(i),
                        text(&e.param),
                        text(&e.norm),
                        text(&e.exact),
                    ]
                },
            ),
        )?;
        self.insert(
            "search_dates",
            &["res_type", "res_id", "param", "low", "high"],
            rows(
                items,
                |ix| &ix.dates,
                |t, i, e| {
                    vec![
                        text(t),
                        text(i),
                        text(&e.param),
                        Bind::Time(e.low),
                        Bind::Time(e.high),
                    ]
                },
            ),
        )?;
        self.insert(
            "search_refs",
            &["res_type", "res_id", "param", "target_type", "target_id"],
            rows(
                items,
                |ix| &ix.refs,
                |t, i, e| {
                    vec![
                        text(t),
                        text(i),
                        text(&e.param),
                        text(&e.target_type),
                        text(&e.target_id),
                    ]
                },
            ),
        )?;
        self.insert(
            "search_geo",
            &["res_type", "res_id", "param", "latitude", "longitude"],
            rows(
                items,
                |ix| &ix.geo,
                |t, i, e| {
                    vec![
                        text(t),
                        text(i),
                        text(&e.param),
                        Bind::Float(e.latitude),
                        Bind::Float(e.longitude),
                    ]
                },
            ),
        )?;
        self.insert(
            "unique_identifiers",
            &["res_type", "system", "value", "res_id"],
            rows(
                items,
                |ix| &ix.unique,
                |t, i, e| vec![text(t), text(&e.system), text(&e.value), text(i)],
            ),
        )
    }

    /// Sends what is gathered (nothing when empty).
    pub(crate) fn send(&mut self) -> diesel::QueryResult<()> {
        if self.parts.is_empty() {
            return Ok(());
        }
        let parts = std::mem::take(&mut self.parts);
        let last = parts.len() - 1;
        let mut sql = String::new();
        for (n, part) in parts.iter().enumerate() {
            if n == last {
                sql.push_str(part);
            } else {
                sql.push_str(if n == 0 { "WITH " } else { ", " });
                sql.push_str(&format!("w{n} AS ({part})"));
                if n + 1 == last {
                    sql.push(' ');
                }
            }
        }
        let mut q: BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> =
            diesel::sql_query(sql).into_boxed();
        for b in std::mem::take(&mut self.binds) {
            q = match b {
                Bind::Text(v) => q.bind::<Text, _>(v),
                Bind::OptText(v) => q.bind::<Nullable<Text>, _>(v),
                Bind::BigInt(v) => q.bind::<BigInt, _>(v),
                Bind::Int(v) => q.bind::<Integer, _>(v),
                Bind::Time(v) => q.bind::<Timestamp, _>(v),
                Bind::Float(v) => q.bind::<Double, _>(v),
                Bind::Texts(v) => q.bind::<Array<Text>, _>(v),
            };
        }
        q.execute(self.conn)?;
        Ok(())
    }
}

/// One table's rows of these resources' entries.
fn rows<E>(
    items: &[(&str, &str, &IndexEntries)],
    entries: impl Fn(&IndexEntries) -> &Vec<E>,
    row: impl Fn(&str, &str, &E) -> Vec<Bind>,
) -> Vec<Vec<Bind>> {
    items
        .iter()
        .flat_map(|&(t, i, ix)| entries(ix).iter().map(move |e| (t, i, e)))
        .map(|(t, i, e)| row(t, i, e))
        .collect()
}

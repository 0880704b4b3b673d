//! PostgreSQL: a write's new rows — resources, versions, the index tables, and one resource's
//! reporting row and worklist entries — in one statement. Each table's rows travel as one
//! array per column and are expanded by `unnest`, each table a data-modifying `WITH` part
//! (PostgreSQL runs every part to completion and checks foreign keys at the end of the whole
//! statement). The text names only the tables with rows, and never changes with the row
//! counts: a handful of texts, each prepared once per connection by diesel (cached by text),
//! that PostgreSQL neither parses nor plans again: one round trip instead of one per table,
//! without the per-call parsing and planning that multi-row `VALUES` lists cost (measured in
//! docs/BENCHMARKS.md, Booking). A part costs its executor set-up on every call even with no
//! rows, so empty ones are left out. Audit events and their entities go the same way
//! (`AuditRows`). SQLite runs in-process, where statements cost no round trips; it keeps the
//! query builder's statements.

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text, Timestamp};
use diesel::{PgConnection, QueryResult, RunQueryDsl};

use crate::audit::{AuditEntityRow, AuditRow};
use crate::rows::{IndexEntries, VersionRow};

/// One `WITH` part (`name`), or the statement's final INSERT (name ""): `name AS (INSERT INTO
/// table (columns) SELECT * FROM unnest($1::type[], …))`, each column's values one array.
macro_rules! unnest_insert {
    ($out:ident, $self:ident, $lead:expr, $name:expr, $table:literal, $columns:literal, [$(($col:ident, $ty:ty, $cast:literal)),+]) => {
        $out.push_sql($lead);
        let name: &str = $name;
        if !name.is_empty() {
            $out.push_sql(name);
            $out.push_sql(" AS (");
        }
        $out.push_sql(concat!("INSERT INTO ", $table, " (", $columns, ") SELECT * FROM unnest("));
        let mut sep = "";
        $(
            $out.push_sql(sep);
            $out.push_bind_param::<Array<$ty>, _>(&$self.$col)?;
            $out.push_sql($cast);
            sep = ", ";
        )+
        let _ = sep;
        $out.push_sql(if name.is_empty() { ")" } else { "))" });
    };
}

/// The rows, column by column.
#[derive(Default)]
pub(crate) struct Rows {
    r_type: Vec<String>,
    r_id: Vec<String>,
    r_version: Vec<i64>,
    r_updated: Vec<NaiveDateTime>,
    r_deleted: Vec<i32>,
    r_content: Vec<String>,

    v_type: Vec<String>,
    v_id: Vec<String>,
    v_version: Vec<i64>,
    v_updated: Vec<NaiveDateTime>,
    v_method: Vec<String>,
    v_deleted: Vec<i32>,
    v_content: Vec<String>,
    v_user: Vec<Option<String>>,
    v_role: Vec<String>,
    v_org: Vec<String>,
    v_request: Vec<String>,
    v_client: Vec<Option<String>>,
    v_obo: Vec<Option<String>>,

    t_type: Vec<String>,
    t_id: Vec<String>,
    t_param: Vec<String>,
    t_system: Vec<String>,
    t_code: Vec<String>,

    s_type: Vec<String>,
    s_id: Vec<String>,
    s_param: Vec<String>,
    s_norm: Vec<String>,
    s_exact: Vec<String>,

    d_type: Vec<String>,
    d_id: Vec<String>,
    d_param: Vec<String>,
    d_low: Vec<NaiveDateTime>,
    d_high: Vec<NaiveDateTime>,

    f_type: Vec<String>,
    f_id: Vec<String>,
    f_param: Vec<String>,
    f_target_type: Vec<String>,
    f_target_id: Vec<String>,

    g_type: Vec<String>,
    g_id: Vec<String>,
    g_param: Vec<String>,
    g_latitude: Vec<f64>,
    g_longitude: Vec<f64>,

    u_type: Vec<String>,
    u_system: Vec<String>,
    u_value: Vec<String>,
    u_id: Vec<String>,

    /// One resource's reporting row and worklist entries (`store::insert_resource`).
    projection: Option<ProjectionParts>,
}

impl Rows {
    /// A new live resource row (its content as stored).
    pub(crate) fn resource(&mut self, v: &VersionRow) {
        self.r_type.push(v.res_type.clone());
        self.r_id.push(v.id.clone());
        self.r_version.push(v.version_id);
        self.r_updated.push(v.last_updated);
        self.r_deleted.push(0);
        self.r_content.push(v.content.clone());
    }

    pub(crate) fn version(&mut self, v: VersionRow) {
        self.v_type.push(v.res_type);
        self.v_id.push(v.id);
        self.v_version.push(v.version_id);
        self.v_updated.push(v.last_updated);
        self.v_method.push(v.method);
        self.v_deleted.push(v.deleted);
        self.v_content.push(v.content);
        self.v_user.push(v.author_user);
        self.v_role.push(v.author_role);
        self.v_org.push(v.author_org);
        self.v_request.push(v.request_id);
        self.v_client.push(v.client_id);
        self.v_obo.push(v.on_behalf_of);
    }

    /// A resource's index entries.
    pub(crate) fn index(&mut self, res_type: &str, id: &str, ix: &IndexEntries) {
        for e in &ix.tokens {
            self.t_type.push(res_type.to_owned());
            self.t_id.push(id.to_owned());
            self.t_param.push(e.param.clone());
            self.t_system.push(e.system.clone());
            self.t_code.push(e.code.clone());
        }
        for e in &ix.strings {
            self.s_type.push(res_type.to_owned());
            self.s_id.push(id.to_owned());
            self.s_param.push(e.param.clone());
            self.s_norm.push(e.norm.clone());
            self.s_exact.push(e.exact.clone());
        }
        for e in &ix.dates {
            self.d_type.push(res_type.to_owned());
            self.d_id.push(id.to_owned());
            self.d_param.push(e.param.clone());
            self.d_low.push(e.low);
            self.d_high.push(e.high);
        }
        for e in &ix.refs {
            self.f_type.push(res_type.to_owned());
            self.f_id.push(id.to_owned());
            self.f_param.push(e.param.clone());
            self.f_target_type.push(e.target_type.clone());
            self.f_target_id.push(e.target_id.clone());
        }
        for e in &ix.geo {
            self.g_type.push(res_type.to_owned());
            self.g_id.push(id.to_owned());
            self.g_param.push(e.param.clone());
            self.g_latitude.push(e.latitude);
            self.g_longitude.push(e.longitude);
        }
        for e in &ix.unique {
            self.u_type.push(res_type.to_owned());
            self.u_system.push(e.system.clone());
            self.u_value.push(e.value.clone());
            self.u_id.push(id.to_owned());
        }
    }

    /// The reporting row and worklist entries of the (one) resource, written with it.
    pub(crate) fn project(&mut self, p: ProjectionParts) {
        self.projection = Some(p);
    }

    /// Writes them all.
    pub(crate) fn write(self, conn: &mut PgConnection) -> QueryResult<()> {
        self.execute(conn).map(|_| ())
    }
}

impl QueryId for Rows {
    // The text names only the tables with rows: cached by its text.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl RunQueryDsl<PgConnection> for Rows {}

impl QueryFragment<Pg> for Rows {
    /// The versions, each index table with rows (one left out costs nothing; a part, even
    /// with no rows, costs PostgreSQL its executor set-up on every call), then the resources
    /// as the final INSERT.
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.parts(&mut out, "", "WITH ", true)
    }
}

impl Rows {
    /// Its parts, each name prefixed with `p` (several writes in one statement: `Flush`), the
    /// first led by `lead`; the resources are the final INSERT when `last`, else a part too.
    fn parts<'b>(
        &'b self,
        out: &mut AstPass<'_, 'b, Pg>,
        p: &str,
        lead: &str,
        last: bool,
    ) -> QueryResult<()> {
        let name = |n: &str| format!("{p}{n}");
        unnest_insert!(out, self, lead, &name("v"), "resource_versions",
            "res_type, id, version_id, last_updated, method, deleted, content, author_user, author_role, author_org, request_id, client_id, on_behalf_of", [
            (v_type, Text, "::text[]"),
            (v_id, Text, "::text[]"),
            (v_version, BigInt, "::int8[]"),
            (v_updated, Timestamp, "::timestamp[]"),
            (v_method, Text, "::text[]"),
            (v_deleted, Integer, "::int4[]"),
            (v_content, Text, "::text[]"),
            (v_user, Nullable<Text>, "::text[]"),
            (v_role, Text, "::text[]"),
            (v_org, Text, "::text[]"),
            (v_request, Text, "::text[]"),
            (v_client, Nullable<Text>, "::text[]"),
            (v_obo, Nullable<Text>, "::text[]")
        ]);
        if !self.t_type.is_empty() {
            unnest_insert!(
                out,
                self,
                ", ",
                &name("t"),
                "search_tokens",
                "res_type, res_id, param, system, code",
                [
                    (t_type, Text, "::text[]"),
                    (t_id, Text, "::text[]"),
                    (t_param, Text, "::text[]"),
                    (t_system, Text, "::text[]"),
                    (t_code, Text, "::text[]")
                ]
            );
        }
        if !self.s_type.is_empty() {
            unnest_insert!(
                out,
                self,
                ", ",
                &name("s"),
                "search_strings",
                "res_type, res_id, param, value_norm, value_exact",
                [
                    (s_type, Text, "::text[]"),
                    (s_id, Text, "::text[]"),
                    (s_param, Text, "::text[]"),
                    (s_norm, Text, "::text[]"),
                    (s_exact, Text, "::text[]")
                ]
            );
        }
        if !self.d_type.is_empty() {
            unnest_insert!(
                out,
                self,
                ", ",
                &name("d"),
                "search_dates",
                "res_type, res_id, param, low, high",
                [
                    (d_type, Text, "::text[]"),
                    (d_id, Text, "::text[]"),
                    (d_param, Text, "::text[]"),
                    (d_low, Timestamp, "::timestamp[]"),
                    (d_high, Timestamp, "::timestamp[]")
                ]
            );
        }
        if !self.f_type.is_empty() {
            unnest_insert!(
                out,
                self,
                ", ",
                &name("f"),
                "search_refs",
                "res_type, res_id, param, target_type, target_id",
                [
                    (f_type, Text, "::text[]"),
                    (f_id, Text, "::text[]"),
                    (f_param, Text, "::text[]"),
                    (f_target_type, Text, "::text[]"),
                    (f_target_id, Text, "::text[]")
                ]
            );
        }
        if !self.g_type.is_empty() {
            unnest_insert!(
                out,
                self,
                ", ",
                &name("g"),
                "search_geo",
                "res_type, res_id, param, latitude, longitude",
                [
                    (g_type, Text, "::text[]"),
                    (g_id, Text, "::text[]"),
                    (g_param, Text, "::text[]"),
                    (g_latitude, Double, "::float8[]"),
                    (g_longitude, Double, "::float8[]")
                ]
            );
        }
        if !self.u_type.is_empty() {
            unnest_insert!(
                out,
                self,
                ", ",
                &name("u"),
                "unique_identifiers",
                "res_type, system, value, res_id",
                [
                    (u_type, Text, "::text[]"),
                    (u_system, Text, "::text[]"),
                    (u_value, Text, "::text[]"),
                    (u_id, Text, "::text[]")
                ]
            );
        }
        if let Some(pr) = &self.projection {
            pr.push(out, p)?;
        }
        let resources = if last { String::new() } else { name("r") };
        unnest_insert!(
            out,
            self,
            if last { " " } else { ", " },
            &resources,
            "resources",
            "res_type, id, version_id, last_updated, deleted, content",
            [
                (r_type, Text, "::text[]"),
                (r_id, Text, "::text[]"),
                (r_version, BigInt, "::int8[]"),
                (r_updated, Timestamp, "::timestamp[]"),
                (r_deleted, Integer, "::int4[]"),
                (r_content, Text, "::text[]")
            ]
        );
        Ok(())
    }
}

/// Audit events and their entities, column by column: one statement for both tables.
#[derive(Default)]
pub(crate) struct AuditRows {
    id: Vec<String>,
    recorded: Vec<NaiveDateTime>,
    action: Vec<String>,
    subtype: Vec<String>,
    outcome: Vec<String>,
    outcome_desc: Vec<Option<String>>,
    user_id: Vec<Option<String>>,
    client_id: Vec<Option<String>>,
    role: Vec<Option<String>>,
    org: Vec<Option<String>>,
    on_behalf_of: Vec<Option<String>>,
    method: Vec<String>,
    path: Vec<String>,
    query: Vec<Option<String>>,
    status: Vec<i32>,
    source_address: Vec<Option<String>>,
    request_id: Vec<String>,
    correlation_id: Vec<Option<String>>,

    e_audit: Vec<String>,
    e_position: Vec<i32>,
    e_type: Vec<String>,
    e_id: Vec<String>,
    e_nhs: Vec<Option<String>>,
    e_ubrn: Vec<Option<String>>,
}

impl AuditRows {
    pub(crate) fn event(&mut self, e: &AuditRow, entities: &[AuditEntityRow]) {
        self.id.push(e.id.clone());
        self.recorded.push(e.recorded);
        self.action.push(e.action.clone());
        self.subtype.push(e.subtype.clone());
        self.outcome.push(e.outcome.clone());
        self.outcome_desc.push(e.outcome_desc.clone());
        self.user_id.push(e.user_id.clone());
        self.client_id.push(e.client_id.clone());
        self.role.push(e.role.clone());
        self.org.push(e.org.clone());
        self.on_behalf_of.push(e.on_behalf_of.clone());
        self.method.push(e.method.clone());
        self.path.push(e.path.clone());
        self.query.push(e.query.clone());
        self.status.push(e.status);
        self.source_address.push(e.source_address.clone());
        self.request_id.push(e.request_id.clone());
        self.correlation_id.push(e.correlation_id.clone());
        for x in entities {
            self.e_audit.push(x.audit_id.clone());
            self.e_position.push(x.position);
            self.e_type.push(x.entity_type.clone());
            self.e_id.push(x.entity_id.clone());
            self.e_nhs.push(x.nhs_number.clone());
            self.e_ubrn.push(x.ubrn.clone());
        }
    }

    pub(crate) fn write(self, conn: &mut PgConnection) -> QueryResult<()> {
        self.execute(conn).map(|_| ())
    }
}

impl QueryId for AuditRows {
    type QueryId = AuditRows;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl RunQueryDsl<PgConnection> for AuditRows {}

impl QueryFragment<Pg> for AuditRows {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.parts(&mut out, "WITH ", true)
    }
}

impl AuditRows {
    /// Like `Rows::parts`: events, then entities (the final INSERT when `last`).
    fn parts<'b>(
        &'b self,
        out: &mut AstPass<'_, 'b, Pg>,
        lead: &str,
        last: bool,
    ) -> QueryResult<()> {
        unnest_insert!(out, self, lead, "e", "audit_events",
            "id, recorded, action, subtype, outcome, outcome_desc, user_id, client_id, role, org, on_behalf_of, method, path, query, status, source_address, request_id, correlation_id", [
            (id, Text, "::text[]"),
            (recorded, Timestamp, "::timestamp[]"),
            (action, Text, "::text[]"),
            (subtype, Text, "::text[]"),
            (outcome, Text, "::text[]"),
            (outcome_desc, Nullable<Text>, "::text[]"),
            (user_id, Nullable<Text>, "::text[]"),
            (client_id, Nullable<Text>, "::text[]"),
            (role, Nullable<Text>, "::text[]"),
            (org, Nullable<Text>, "::text[]"),
            (on_behalf_of, Nullable<Text>, "::text[]"),
            (method, Text, "::text[]"),
            (path, Text, "::text[]"),
            (query, Nullable<Text>, "::text[]"),
            (status, Integer, "::int4[]"),
            (source_address, Nullable<Text>, "::text[]"),
            (request_id, Text, "::text[]"),
            (correlation_id, Nullable<Text>, "::text[]")
        ]);
        unnest_insert!(out, self, if last { " " } else { ", " }, if last { "" } else { "x" }, "audit_entities",
            "audit_id, position, entity_type, entity_id, nhs_number, ubrn", [
            (e_audit, Text, "::text[]"),
            (e_position, Integer, "::int4[]"),
            (e_type, Text, "::text[]"),
            (e_id, Text, "::text[]"),
            (e_nhs, Nullable<Text>, "::text[]"),
            (e_ubrn, Nullable<Text>, "::text[]")
        ]);
        Ok(())
    }
}

/// The index tables an update compares with their stored rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tables {
    pub(crate) tokens: bool,
    pub(crate) strings: bool,
    pub(crate) dates: bool,
    pub(crate) refs: bool,
    pub(crate) geo: bool,
    pub(crate) unique: bool,
}

impl Tables {
    pub(crate) const ALL: Tables = Tables {
        tokens: true,
        strings: true,
        dates: true,
        refs: true,
        geo: true,
        unique: true,
    };
}

/// An update of one resource in one statement: the row replaced if it is still at the
/// expected version, its version row added, its reporting row and worklist entries
/// (`ProjectionParts`), and, in each of the `tables` named, its index
/// rows brought to the new version's (rows no longer indexed deleted, new ones inserted, a
/// string's or a position's other columns updated in place), every part gated on the
/// replacement having happened. Each table's deletions, updates and insertions are disjoint
/// by primary key, so the order in which PostgreSQL runs the parts does not matter, and each
/// part sees the rows as they were before the statement. Answers how many rows were replaced
/// (0: another writer got there first, and nothing changed).
///
/// Tables known to be unchanged are left out of the text: every part costs PostgreSQL its
/// executor set-up on each call, changed or not (a slot booked changes only its tokens).
/// The text is one of at most 64, each prepared once per connection.
pub(crate) struct Rewrite<'a> {
    version: &'a VersionRow,
    expected: i64,
    tables: Tables,
    projection: ProjectionParts,
    t_param: Vec<&'a str>,
    t_system: Vec<&'a str>,
    t_code: Vec<&'a str>,
    s_param: Vec<&'a str>,
    s_norm: Vec<&'a str>,
    s_exact: Vec<&'a str>,
    d_param: Vec<&'a str>,
    d_low: Vec<NaiveDateTime>,
    d_high: Vec<NaiveDateTime>,
    f_param: Vec<&'a str>,
    f_target_type: Vec<&'a str>,
    f_target_id: Vec<&'a str>,
    g_param: Vec<&'a str>,
    g_latitude: Vec<f64>,
    g_longitude: Vec<f64>,
    u_system: Vec<&'a str>,
    u_value: Vec<&'a str>,
}

impl<'a> Rewrite<'a> {
    pub(crate) fn new(
        version: &'a VersionRow,
        expected: i64,
        ix: &'a IndexEntries,
        tables: Tables,
        projection: ProjectionParts,
    ) -> Self {
        Rewrite {
            version,
            expected,
            tables,
            projection,
            t_param: ix.tokens.iter().map(|e| e.param.as_str()).collect(),
            t_system: ix.tokens.iter().map(|e| e.system.as_str()).collect(),
            t_code: ix.tokens.iter().map(|e| e.code.as_str()).collect(),
            s_param: ix.strings.iter().map(|e| e.param.as_str()).collect(),
            s_norm: ix.strings.iter().map(|e| e.norm.as_str()).collect(),
            s_exact: ix.strings.iter().map(|e| e.exact.as_str()).collect(),
            d_param: ix.dates.iter().map(|e| e.param.as_str()).collect(),
            d_low: ix.dates.iter().map(|e| e.low).collect(),
            d_high: ix.dates.iter().map(|e| e.high).collect(),
            f_param: ix.refs.iter().map(|e| e.param.as_str()).collect(),
            f_target_type: ix.refs.iter().map(|e| e.target_type.as_str()).collect(),
            f_target_id: ix.refs.iter().map(|e| e.target_id.as_str()).collect(),
            g_param: ix.geo.iter().map(|e| e.param.as_str()).collect(),
            g_latitude: ix.geo.iter().map(|e| e.latitude).collect(),
            g_longitude: ix.geo.iter().map(|e| e.longitude).collect(),
            u_system: ix.unique.iter().map(|e| e.system.as_str()).collect(),
            u_value: ix.unique.iter().map(|e| e.value.as_str()).collect(),
        }
    }

    /// Runs it: true when the resource was at the expected version and is now replaced.
    pub(crate) fn apply(self, conn: &mut PgConnection) -> QueryResult<bool> {
        Ok(self.get_result::<i64>(conn)? > 0)
    }
}

impl QueryId for Rewrite<'_> {
    // The text depends on the tables: cached by its text.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Rewrite<'_> {
    type SqlType = BigInt;
}

impl RunQueryDsl<PgConnection> for Rewrite<'_> {}

impl QueryFragment<Pg> for Rewrite<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.parts(&mut out, "", "WITH ")?;
        out.push_sql(" SELECT count(*) FROM u");
        Ok(())
    }
}

impl Rewrite<'_> {
    /// Its `WITH` parts, each name prefixed with `p` (several writes in one statement:
    /// `Flush`), the first led by `lead`. `{p}u` answers one row when the row was replaced.
    fn parts<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>, p: &str, lead: &str) -> QueryResult<()> {
        let v = self.version;
        // `res_type = $ AND res_id = $` of the resource (`alias.` before each column).
        macro_rules! owner {
            ($alias:literal) => {
                out.push_sql(concat!($alias, "res_type = "));
                out.push_bind_param::<Text, _>(&v.res_type)?;
                out.push_sql(concat!(" AND ", $alias, "res_id = "));
                out.push_bind_param::<Text, _>(&v.id)?;
            };
        }
        // `EXISTS (SELECT 1 FROM {p}u)`: the row was replaced.
        macro_rules! replaced {
            () => {
                out.push_sql("EXISTS (SELECT 1 FROM ");
                out.push_sql(p);
                out.push_sql("u)");
            };
        }
        // `{p}alias AS (SELECT * FROM unnest($::type[], …) AS alias(columns))`: the new rows.
        let t = self.tables;
        macro_rules! new_rows {
            ($on:expr, $alias:literal, $columns:literal, [$(($col:ident, $ty:ty, $cast:literal)),+]) => {
                if $on {
                out.push_sql(", ");
                out.push_sql(p);
                out.push_sql(concat!($alias, " AS (SELECT * FROM unnest("));
                let mut sep = "";
                $(
                    out.push_sql(sep);
                    out.push_bind_param::<Array<$ty>, _>(&self.$col)?;
                    out.push_sql($cast);
                    sep = ", ";
                )+
                let _ = sep;
                out.push_sql(concat!(") AS ", $alias, "(", $columns, "))"));
                }
            };
        }
        // Old rows with no new row of the same primary key go; new rows with no old row of
        // the same key come. `$same` compares an old row `o` with a new row `n` by key.
        macro_rules! diff {
            ($on:expr, $table:literal, $new:literal, $same:literal, $columns:literal, $values:literal) => {
                if $on {
                    out.push_sql(", ");
                    out.push_sql(p);
                    out.push_sql(concat!($new, "_del AS (DELETE FROM ", $table, " o WHERE "));
                    replaced!();
                    out.push_sql(" AND ");
                    owner!("o.");
                    out.push_sql(" AND NOT EXISTS (SELECT 1 FROM ");
                    out.push_sql(p);
                    out.push_sql(concat!($new, " n WHERE ", $same, "))"));
                    out.push_sql(", ");
                    out.push_sql(p);
                    out.push_sql(concat!(
                        $new,
                        "_ins AS (INSERT INTO ",
                        $table,
                        " (",
                        $columns,
                        ") SELECT "
                    ));
                    out.push_bind_param::<Text, _>(&v.res_type)?;
                    out.push_sql(", ");
                    out.push_bind_param::<Text, _>(&v.id)?;
                    out.push_sql(concat!(", ", $values, " FROM "));
                    out.push_sql(p);
                    out.push_sql(concat!($new, " n WHERE "));
                    replaced!();
                    out.push_sql(concat!(
                        " AND NOT EXISTS (SELECT 1 FROM ",
                        $table,
                        " o WHERE "
                    ));
                    owner!("o.");
                    out.push_sql(concat!(" AND ", $same, "))"));
                }
            };
        }
        out.push_sql(lead);
        out.push_sql(p);
        out.push_sql("u AS (UPDATE resources SET version_id = ");
        out.push_bind_param::<BigInt, _>(&v.version_id)?;
        out.push_sql(", last_updated = ");
        out.push_bind_param::<Timestamp, _>(&v.last_updated)?;
        out.push_sql(", deleted = 0, content = ");
        out.push_bind_param::<Text, _>(&v.content)?;
        out.push_sql(" WHERE res_type = ");
        out.push_bind_param::<Text, _>(&v.res_type)?;
        out.push_sql(" AND id = ");
        out.push_bind_param::<Text, _>(&v.id)?;
        out.push_sql(" AND version_id = ");
        out.push_bind_param::<BigInt, _>(&self.expected)?;
        out.push_sql(" RETURNING 1), ");
        out.push_sql(p);
        out.push_sql("v AS (INSERT INTO resource_versions (res_type, id, version_id, last_updated, method, deleted, content, author_user, author_role, author_org, request_id, client_id, on_behalf_of) SELECT ");
        out.push_bind_param::<Text, _>(&v.res_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.version_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&v.last_updated)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.method)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&v.deleted)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.content)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&v.author_user)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.author_role)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.author_org)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.request_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&v.client_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&v.on_behalf_of)?;
        out.push_sql(" FROM ");
        out.push_sql(p);
        out.push_sql("u)");
        new_rows!(
            t.tokens,
            "nt",
            "param, system, code",
            [
                (t_param, Text, "::text[]"),
                (t_system, Text, "::text[]"),
                (t_code, Text, "::text[]")
            ]
        );
        new_rows!(
            t.strings,
            "ns",
            "param, norm, exact",
            [
                (s_param, Text, "::text[]"),
                (s_norm, Text, "::text[]"),
                (s_exact, Text, "::text[]")
            ]
        );
        new_rows!(
            t.dates,
            "nd",
            "param, low, high",
            [
                (d_param, Text, "::text[]"),
                (d_low, Timestamp, "::timestamp[]"),
                (d_high, Timestamp, "::timestamp[]")
            ]
        );
        new_rows!(
            t.refs,
            "nf",
            "param, target_type, target_id",
            [
                (f_param, Text, "::text[]"),
                (f_target_type, Text, "::text[]"),
                (f_target_id, Text, "::text[]")
            ]
        );
        new_rows!(
            t.geo,
            "ng",
            "param, latitude, longitude",
            [
                (g_param, Text, "::text[]"),
                (g_latitude, Double, "::float8[]"),
                (g_longitude, Double, "::float8[]")
            ]
        );
        new_rows!(
            t.unique,
            "nu",
            "system, value",
            [(u_system, Text, "::text[]"), (u_value, Text, "::text[]")]
        );
        diff!(
            t.tokens,
            "search_tokens",
            "nt",
            "n.param = o.param AND n.system = o.system AND n.code = o.code",
            "res_type, res_id, param, system, code",
            "n.param, n.system, n.code"
        );
        diff!(
            t.strings,
            "search_strings",
            "ns",
            "n.param = o.param AND n.exact = o.value_exact",
            "res_type, res_id, param, value_norm, value_exact",
            "n.param, n.norm, n.exact"
        );
        diff!(
            t.dates,
            "search_dates",
            "nd",
            "n.param = o.param AND n.low = o.low AND n.high = o.high",
            "res_type, res_id, param, low, high",
            "n.param, n.low, n.high"
        );
        diff!(
            t.refs,
            "search_refs",
            "nf",
            "n.param = o.param AND n.target_type = o.target_type AND n.target_id = o.target_id",
            "res_type, res_id, param, target_type, target_id",
            "n.param, n.target_type, n.target_id"
        );
        diff!(
            t.geo,
            "search_geo",
            "ng",
            "n.param = o.param",
            "res_type, res_id, param, latitude, longitude",
            "n.param, n.latitude, n.longitude"
        );
        diff!(
            t.unique,
            "unique_identifiers",
            "nu",
            "n.system = o.system AND n.value = o.value",
            "res_type, res_id, system, value",
            "n.system, n.value"
        );
        // A string's normal form and a position are not part of their keys: kept rows take
        // the new version's.
        if t.strings {
            out.push_sql(", ");
            out.push_sql(p);
            out.push_sql("ns_upd AS (UPDATE search_strings o SET value_norm = n.norm FROM ");
            out.push_sql(p);
            out.push_sql("ns n WHERE ");
            replaced!();
            out.push_sql(" AND ");
            owner!("o.");
            out.push_sql(
                " AND n.param = o.param AND n.exact = o.value_exact AND n.norm <> o.value_norm)",
            );
        }
        if t.geo {
            out.push_sql(", ");
            out.push_sql(p);
            out.push_sql("ng_upd AS (UPDATE search_geo o SET latitude = n.latitude, longitude = n.longitude FROM ");
            out.push_sql(p);
            out.push_sql("ng n WHERE ");
            replaced!();
            out.push_sql(" AND ");
            owner!("o.");
            out.push_sql(
                " AND n.param = o.param AND (n.latitude <> o.latitude OR n.longitude <> o.longitude))",
            );
        }
        // Not gated on the replacement: without it the write fails and its transaction with it.
        self.projection.push(out, p)?;
        Ok(())
    }
}

/// What a write transaction adds beside its resources at its end — audit events with their
/// entities, change events for subscribers — in one statement: one round trip before the
/// commit instead of two.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) audit: AuditRows,
    o_type: Vec<String>,
    o_id: Vec<String>,
    o_version: Vec<i64>,
    o_method: Vec<String>,
    o_occurred: Vec<NaiveDateTime>,
}

impl Batch {
    /// A change event (numbered by the outbox's sequence in the order added).
    pub(crate) fn event(
        &mut self,
        res_type: &str,
        id: &str,
        version: i64,
        method: &str,
        at: NaiveDateTime,
    ) {
        self.o_type.push(res_type.to_owned());
        self.o_id.push(id.to_owned());
        self.o_version.push(version);
        self.o_method.push(method.to_owned());
        self.o_occurred.push(at);
    }

    pub(crate) fn write(self, conn: &mut PgConnection) -> QueryResult<()> {
        self.execute(conn).map(|_| ())
    }
}

impl QueryId for Batch {
    type QueryId = Batch;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl RunQueryDsl<PgConnection> for Batch {}

impl QueryFragment<Pg> for Batch {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.parts(&mut out, "WITH ", true)
    }
}

impl Batch {
    /// The audit parts (the first led by `lead`), then the outbox rows: the final INSERT when
    /// `last`, else the part `ob`.
    fn parts<'b>(
        &'b self,
        out: &mut AstPass<'_, 'b, Pg>,
        lead: &str,
        last: bool,
    ) -> QueryResult<()> {
        self.audit.parts(out, lead, false)?;
        out.push_sql(if last { " " } else { ", ob AS (" });
        out.push_sql(
            "INSERT INTO outbox (res_type, res_id, version_id, method, occurred) \
             SELECT t, i, v, m, o FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.o_type)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.o_id)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.o_version)?;
        out.push_sql("::int8[], ");
        out.push_bind_param::<Array<Text>, _>(&self.o_method)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Timestamp>, _>(&self.o_occurred)?;
        out.push_sql("::timestamp[]) WITH ORDINALITY AS n(t, i, v, m, o, k) ORDER BY k");
        if !last {
            out.push_sql(")");
        }
        Ok(())
    }
}

/// A write transaction's deferred resource writes (new resources, `Rows`; replacements,
/// `Rewrite`) and its `Batch`, in one statement before the commit: one round trip instead of
/// one per write and one for the batch. Each write's parts are named apart (`w0_`, `w1_`,
/// …); they touch different resources, so no two parts write the same row. Bit `k` of its
/// answer is set when write `k` happened: a replacement's row was at its expected version
/// (a new resource's bit is always set; one that could not be written fails the statement).
/// One replacement that did not happen fails it too (`apply`), so that a `Flush` run outside
/// a transaction writes all or nothing.
pub(crate) struct Flush<'a> {
    pub(crate) writes: Vec<FlushWrite<'a>>,
    pub(crate) batch: Batch,
}

// A transaction holds a handful, briefly: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum FlushWrite<'a> {
    New(Rows),
    Replace(Rewrite<'a>),
}

/// Writes in one `Flush` at most (one bit each in its answer).
pub(crate) const FLUSH_WRITES: usize = 32;

/// The text of the value a failed `Flush` could not read as a number, before its bits.
const STALE_MARK: &str = "ers-held-writes-done:";

impl Flush<'_> {
    /// Runs it: all bits set (every write happened), or, when a replacement found its
    /// resource moved on, the statement failed (nothing written) and `Err` holds the bits
    /// of the writes that would have happened.
    pub(crate) fn apply(self, conn: &mut PgConnection) -> QueryResult<Result<i64, i64>> {
        debug_assert!(self.writes.len() <= FLUSH_WRITES);
        match self.get_result::<i64>(conn) {
            Ok(bits) => Ok(Ok(bits)),
            Err(diesel::result::Error::DatabaseError(kind, info)) => {
                // The message quotes the value (`invalid input syntax for type bigint:
                // "…"`), in whatever language the server speaks.
                let m = info.message();
                let bits = m.find(STALE_MARK).and_then(|at| {
                    let rest = &m[at + STALE_MARK.len()..];
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                });
                match bits {
                    Some(bits) => Ok(Err(bits)),
                    None => Err(diesel::result::Error::DatabaseError(kind, info)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl QueryId for Flush<'_> {
    // The text depends on the writes: cached by its text.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Flush<'_> {
    type SqlType = BigInt;
}

impl RunQueryDsl<PgConnection> for Flush<'_> {}

impl QueryFragment<Pg> for Flush<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut lead = "WITH ";
        for (k, w) in self.writes.iter().enumerate() {
            let p = format!("w{k}_");
            match w {
                FlushWrite::New(rows) => rows.parts(&mut out, &p, lead, false)?,
                FlushWrite::Replace(r) => r.parts(&mut out, &p, lead)?,
            }
            lead = ", ";
        }
        self.batch.parts(&mut out, lead, false)?;
        // A replacement that did not happen fails the whole statement, naming which: nothing
        // of it is then written, inside a transaction or not.
        out.push_sql(" SELECT CASE WHEN b = ");
        let all = (1_i64 << self.writes.len()) - 1;
        out.push_sql(&all.to_string());
        out.push_sql(" THEN b ELSE ('");
        out.push_sql(STALE_MARK);
        out.push_sql("' || b)::int8 END FROM (SELECT 0::int8");
        for (k, w) in self.writes.iter().enumerate() {
            match w {
                FlushWrite::New(_) => out.push_sql(&format!(" + {}", 1_i64 << k)),
                FlushWrite::Replace(_) => out.push_sql(&format!(
                    " + (SELECT count(*) FROM w{k}_u) * {}",
                    1_i64 << k
                )),
            }
        }
        out.push_sql(" AS b) AS done");
        Ok(())
    }
}

/// A reporting row written or replaced (`INSERT … ON CONFLICT (id) DO UPDATE`), every column
/// bound: fixed text, so diesel prepares it once per connection (its query builder's upsert is
/// parsed and planned by PostgreSQL on every call, three times a booking).
macro_rules! upsert {
    ($name:ident, $facts:ty, $table:literal, [$(($field:ident, $ty:ty)),+]) => {
        pub(crate) struct $name<'a>(pub(crate) &'a $facts);

        impl QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl RunQueryDsl<PgConnection> for $name<'_> {}

        impl QueryFragment<Pg> for $name<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                Self::push(self.0, &mut out)
            }
        }

        impl $name<'_> {
            /// The statement's text and values, also as a part of a larger statement.
            fn push<'b>(facts: &'b $facts, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                out.push_sql(concat!("INSERT INTO ", $table, " ("));
                let mut sep = "";
                $(
                    out.push_sql(sep);
                    out.push_sql(stringify!($field));
                    sep = ", ";
                )+
                out.push_sql(") VALUES (");
                sep = "";
                $(
                    out.push_sql(sep);
                    out.push_bind_param::<$ty, _>(&facts.$field)?;
                    sep = ", ";
                )+
                out.push_sql(") ON CONFLICT (id) DO UPDATE SET ");
                sep = "";
                $(
                    out.push_sql(sep);
                    out.push_sql(concat!(stringify!($field), " = EXCLUDED.", stringify!($field)));
                    sep = ", ";
                )+
                let _ = sep;
                Ok(())
            }
        }
    };
}

upsert!(ReferralUpsert, crate::reports::ReferralFacts, "report_referrals", [
    (id, Text), (kind, Text), (ubrn, Text), (state, Text), (active, Integer),
    (priority, Text), (specialty, Text), (clinic_type, Nullable<Text>),
    (referrer_org, Nullable<Text>), (provider_org, Nullable<Text>),
    (service_id, Nullable<Text>), (patient_id, Nullable<Text>), (created, Timestamp),
    (updated, Timestamp), (week, Text), (converted, Integer), (deleted, Integer)
]);

upsert!(AppointmentUpsert, crate::reports::AppointmentFacts, "report_appointments", [
    (id, Text), (referral_id, Nullable<Text>), (service_id, Nullable<Text>),
    (provider_org, Nullable<Text>), (referrer_org, Nullable<Text>), (specialty, Text),
    (priority, Text), (status, Text), (booked, Integer), (start, Nullable<Timestamp>),
    (created, Timestamp), (week, Text), (deleted, Integer)
]);

upsert!(SlotUpsert, crate::reports::SlotFacts, "report_slots", [
    (id, Text), (service_id, Text), (provider_org, Nullable<Text>),
    (specialty, Nullable<Text>), (priority, Text), (status, Text), (start, Timestamp),
    (week, Text), (deleted, Integer), (schedule_id, Text), (live, Integer),
    (search_priority, Nullable<Text>), (start_high, Nullable<Timestamp>)
]);

/// Worklist entries, column by column (`worklists::insert_many`): one prepared statement.
#[derive(Default)]
pub(crate) struct WorklistRows {
    list: Vec<String>,
    org: Vec<String>,
    authored: Vec<NaiveDateTime>,
    referral_id: Vec<String>,
    service_id: Vec<Option<String>>,
    specialty: Vec<String>,
}

impl WorklistRows {
    pub(crate) fn entry(&mut self, e: &crate::worklists::Entry) {
        self.list.push(e.list.clone());
        self.org.push(e.org.clone());
        self.authored.push(e.authored);
        self.referral_id.push(e.referral_id.clone());
        self.service_id.push(e.service_id.clone());
        self.specialty.push(e.specialty.clone());
    }

    pub(crate) fn write(self, conn: &mut PgConnection) -> QueryResult<()> {
        self.execute(conn).map(|_| ())
    }
}

impl QueryId for WorklistRows {
    type QueryId = WorklistRows;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl RunQueryDsl<PgConnection> for WorklistRows {}

impl QueryFragment<Pg> for WorklistRows {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        unnest_insert!(out, self, "", "", "worklist_entries",
            "list, org, authored, referral_id, service_id, specialty", [
            (list, Text, "::text[]"),
            (org, Text, "::text[]"),
            (authored, Timestamp, "::timestamp[]"),
            (referral_id, Text, "::text[]"),
            (service_id, Nullable<Text>, "::text[]"),
            (specialty, Text, "::text[]")
        ]);
        Ok(())
    }
}

/// A resource version's reporting row and worklist entries (`reports::Projection`) as parts
/// of the statement that writes the version: no round trips of their own.
#[derive(Default)]
pub(crate) struct ProjectionParts {
    facts: Option<crate::reports::Facts>,
    /// The referral whose lists are replaced, and its entries now.
    listing: Option<(String, WorklistRows)>,
    /// The version is the resource's first: no stored rows to compare with.
    fresh: bool,
}

impl ProjectionParts {
    pub(crate) fn new(p: &crate::reports::Projection, fresh: bool) -> Self {
        ProjectionParts {
            facts: p.facts.clone(),
            listing: p.worklist.as_ref().map(|l| {
                let mut rows = WorklistRows::default();
                for e in &l.entries {
                    rows.entry(e);
                }
                (l.referral_id.clone(), rows)
            }),
            fresh,
        }
    }

    /// `, name AS (…)` parts (each name prefixed with `p`): the reporting row upserted; the
    /// referral's worklist entries inserted (a first version) or brought to the new ones
    /// (stored entries not among them deleted, new ones not stored inserted, kept ones given
    /// the new service and specialty; disjoint by primary key, as `Rewrite`'s index parts).
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>, p: &str) -> QueryResult<()> {
        use crate::reports::Facts;
        let part = |out: &mut AstPass<'_, 'b, Pg>, name: &str| {
            out.push_sql(", ");
            out.push_sql(p);
            out.push_sql(name);
            out.push_sql(" AS (");
        };
        match &self.facts {
            Some(Facts::Referral(f)) => {
                part(out, "rp");
                ReferralUpsert::push(f, out)?;
                out.push_sql(")");
            }
            Some(Facts::Appointment(f)) => {
                part(out, "rp");
                AppointmentUpsert::push(f, out)?;
                out.push_sql(")");
            }
            Some(Facts::Slot(f)) => {
                part(out, "rp");
                SlotUpsert::push(f, out)?;
                out.push_sql(")");
            }
            None => {}
        }
        let Some((referral, rows)) = &self.listing else {
            return Ok(());
        };
        let entries = !rows.list.is_empty();
        if entries {
            part(out, "wl");
            out.push_sql("SELECT * FROM unnest(");
            out.push_bind_param::<Array<Text>, _>(&rows.list)?;
            out.push_sql("::text[], ");
            out.push_bind_param::<Array<Text>, _>(&rows.org)?;
            out.push_sql("::text[], ");
            out.push_bind_param::<Array<Timestamp>, _>(&rows.authored)?;
            out.push_sql("::timestamp[], ");
            out.push_bind_param::<Array<Text>, _>(&rows.referral_id)?;
            out.push_sql("::text[], ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&rows.service_id)?;
            out.push_sql("::text[], ");
            out.push_bind_param::<Array<Text>, _>(&rows.specialty)?;
            out.push_sql(
                "::text[]) AS wl(list, org, authored, referral_id, service_id, specialty))",
            );
            part(out, "wl_ins");
            out.push_sql(
                "INSERT INTO worklist_entries (list, org, authored, referral_id, service_id, specialty) \
                 SELECT n.list, n.org, n.authored, n.referral_id, n.service_id, n.specialty FROM ",
            );
            out.push_sql(p);
            out.push_sql("wl n");
            if !self.fresh {
                out.push_sql(
                    " WHERE NOT EXISTS (SELECT 1 FROM worklist_entries o WHERE o.list = n.list \
                     AND o.org = n.org AND o.authored = n.authored AND o.referral_id = n.referral_id))",
                );
                part(out, "wl_upd");
                out.push_sql(
                    "UPDATE worklist_entries o SET service_id = n.service_id, specialty = n.specialty FROM ",
                );
                out.push_sql(p);
                out.push_sql(
                    "wl n WHERE o.list = n.list AND o.org = n.org AND o.authored = n.authored \
                     AND o.referral_id = n.referral_id \
                     AND (o.service_id IS DISTINCT FROM n.service_id OR o.specialty <> n.specialty)",
                );
            }
            out.push_sql(")");
        }
        if !self.fresh {
            part(out, "wl_del");
            out.push_sql("DELETE FROM worklist_entries o WHERE o.referral_id = ");
            out.push_bind_param::<Text, _>(referral)?;
            if entries {
                out.push_sql(" AND NOT EXISTS (SELECT 1 FROM ");
                out.push_sql(p);
                out.push_sql(
                    "wl n WHERE n.list = o.list AND n.org = o.org \
                     AND n.authored = o.authored AND n.referral_id = o.referral_id)",
                );
            }
            out.push_sql(")");
        }
        Ok(())
    }
}

/// The next `n` UBRN numbers from their sequence, as a prepared statement (one number, the
/// API's case, without parameters: PostgreSQL plans it once; `generate_series` over a bound
/// count was planned on every call).
pub(crate) struct NextUbrns(pub(crate) i64);

impl QueryId for NextUbrns {
    type QueryId = ();
    // Two texts (one number, or many): cached by text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for NextUbrns {
    type SqlType = BigInt;
}

impl RunQueryDsl<PgConnection> for NextUbrns {}

impl QueryFragment<Pg> for NextUbrns {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if self.0 == 1 {
            out.push_sql("SELECT nextval('ubrn_numbers')");
            return Ok(());
        }
        out.push_sql("SELECT nextval('ubrn_numbers') FROM generate_series(1, ");
        out.push_bind_param::<BigInt, _>(&self.0)?;
        out.push_sql(")");
        Ok(())
    }
}

/// The current rows of resources named by (type, id) pairs, deleted ones included: one
/// prepared statement whatever their number or types (`store::get_pairs`); also the roots
/// of a read-ahead (`Ahead`).
pub(crate) struct Pairs {
    types: Vec<String>,
    ids: Vec<String>,
}

/// How many elements PostgreSQL assumes an array parameter has when it plans a prepared
/// statement without its values (a generic plan).
const GENERIC_ARRAY_LENGTH: usize = 10;

impl Pairs {
    /// The pairs, padded with ('', '') — a key no resource has — to at least the length a
    /// generic plan assumes. PostgreSQL keeps planning a prepared statement with its values
    /// (a custom plan) while that looks cheaper than the generic plan; with fewer elements
    /// than it assumes, a custom plan always did, and planning took twice as long as running
    /// (0.07 against 0.035 ms a call, `pg_stat_statements`, when a booking made three calls).
    pub(crate) fn new(pairs: &[(&str, &str)]) -> Self {
        let mut types: Vec<String> = pairs.iter().map(|(t, _)| (*t).to_owned()).collect();
        let mut ids: Vec<String> = pairs.iter().map(|(_, id)| (*id).to_owned()).collect();
        while types.len() < GENERIC_ARRAY_LENGTH {
            types.push(String::new());
            ids.push(String::new());
        }
        Pairs { types, ids }
    }
}

impl QueryId for Pairs {
    type QueryId = Pairs;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for Pairs {
    type SqlType = (Text, Text, BigInt, Timestamp, Integer, Text);
}

impl RunQueryDsl<PgConnection> for Pairs {}

impl QueryFragment<Pg> for Pairs {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT r.res_type, r.id, r.version_id, r.last_updated, r.deleted, r.content \
             FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.types)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.ids)?;
        out.push_sql("::text[]) AS k(t, i) JOIN resources r ON r.res_type = k.t AND r.id = k.i");
        Ok(())
    }
}

/// Each named service's earliest free slot from a moment at one of some priorities
/// (`reports::earliest_free_slots`): one text whatever the numbers of services and priorities,
/// kept prepared, so PostgreSQL does not plan it on every search. Each is a correlated `MIN`
/// that reads the partial index of free slots (service, start) from the moment on, whatever
/// plan is chosen; both lists are padded (with '', which no service or priority is) to the
/// length a generic plan assumes, so that the generic plan is taken.
pub(crate) struct EarliestFree {
    services: Vec<String>,
    priorities: Vec<String>,
    from: NaiveDateTime,
}

impl EarliestFree {
    pub(crate) fn new(services: &[&str], priorities: &[&str], from: NaiveDateTime) -> Self {
        let padded = |v: &[&str]| {
            let mut out: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
            out.resize(out.len().max(GENERIC_ARRAY_LENGTH), String::new());
            out
        };
        EarliestFree {
            services: padded(services),
            priorities: padded(priorities),
            from,
        }
    }
}

impl QueryId for EarliestFree {
    type QueryId = EarliestFree;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for EarliestFree {
    type SqlType = (Text, Nullable<Timestamp>);
}

impl RunQueryDsl<PgConnection> for EarliestFree {}

impl QueryFragment<Pg> for EarliestFree {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT k.i, (SELECT MIN(fs.start) FROM report_slots fs WHERE fs.service_id = k.i AND ",
        );
        out.push_sql(crate::search::FREE_SLOT);
        out.push_sql(" AND fs.start >= ");
        out.push_bind_param::<Timestamp, _>(&self.from)?;
        out.push_sql(" AND fs.priority = ANY(");
        out.push_bind_param::<Array<Text>, _>(&self.priorities)?;
        out.push_sql("::text[])) FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.services)?;
        out.push_sql("::text[]) AS k(i) WHERE k.i <> ''");
        Ok(())
    }
}

/// What a use case reads before it decides anything, in one statement (`store::read_ahead`):
/// the resources named by (type, id) and, `depth` levels on, those they refer to through the
/// reference index (a part per level: one round trip instead of one per level), each named
/// key with its row or none (kind 0); one resource's token codes of one parameter (kind 1, the
/// code as `id`); and the live resources of one type referring to one target through one
/// parameter (kind 2); and, when asked, the next UBRN number (kind 3, as the version). The
/// text varies with the depth and the UBRN part: a few texts, cached by text. Parts not asked
/// for are given keys no row has.
pub(crate) struct Ahead {
    pub(crate) pairs: Pairs,
    pub(crate) depth: usize,
    pub(crate) token: [String; 3],
    pub(crate) referring: [String; 4],
    pub(crate) ubrn: bool,
}

/// Most resources a read-ahead returns (a shortlist of twenty services, their providers and
/// sites stay well under it).
pub(crate) const AHEAD_LIMIT: i64 = 500;

/// How the read-ahead's text begins (a read: `conn::reads_only` tells it from writes).
pub(crate) const AHEAD_START: &str = "WITH l0";

impl QueryId for Ahead {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Ahead {
    type SqlType = (
        diesel::sql_types::SmallInt,
        Text,
        Text,
        Nullable<BigInt>,
        Nullable<Timestamp>,
        Nullable<Integer>,
        Nullable<Text>,
    );
}

impl RunQueryDsl<PgConnection> for Ahead {}

impl QueryFragment<Pg> for Ahead {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Each level its own part, each lookup a `LATERAL … LIMIT` subquery, which PostgreSQL
        // cannot turn into a join: it probes the index per row. A generic plan made while the
        // tables were small (a new database) otherwise hashed whole-table scans, and kept
        // them as the tables grew (3.7 ms a referral create, and rising, against 0.3).
        out.push_sql(AHEAD_START);
        out.push_sql("(t, i) AS (SELECT u.t, u.i FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.pairs.types)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.pairs.ids)?;
        out.push_sql("::text[]) AS u(t, i) WHERE u.t <> '')");
        for level in 1..=self.depth {
            out.push_sql(&format!(
                ", l{level}(t, i) AS (SELECT x.target_type, x.target_id FROM l{} p \
                 CROSS JOIN LATERAL (SELECT s.target_type, s.target_id FROM search_refs s \
                 WHERE s.res_type = p.t AND s.res_id = p.i LIMIT {AHEAD_LIMIT}) AS x)",
                level - 1
            ));
        }
        out.push_sql(", w AS (SELECT DISTINCT t, i FROM (SELECT t, i FROM l0");
        for level in 1..=self.depth {
            out.push_sql(&format!(" UNION ALL SELECT t, i FROM l{level}"));
        }
        out.push_sql(") AS a LIMIT ");
        out.push_sql(&AHEAD_LIMIT.to_string());
        out.push_sql(
            ") SELECT 0::smallint, w.t, w.i, r.version_id, r.last_updated, r.deleted, r.content \
             FROM w LEFT JOIN LATERAL (SELECT r.version_id, r.last_updated, r.deleted, r.content \
             FROM resources r WHERE r.res_type = w.t AND r.id = w.i LIMIT 1) AS r ON true \
             UNION ALL SELECT 1::smallint, '', code, NULL, NULL, NULL, NULL FROM search_tokens \
             WHERE res_type = ",
        );
        out.push_bind_param::<Text, _>(&self.token[0])?;
        out.push_sql(" AND res_id = ");
        out.push_bind_param::<Text, _>(&self.token[1])?;
        out.push_sql(" AND param = ");
        out.push_bind_param::<Text, _>(&self.token[2])?;
        out.push_sql(
            " UNION ALL SELECT 2::smallint, s.res_type, s.res_id, r.version_id, r.last_updated, \
             r.deleted, r.content FROM search_refs s \
             CROSS JOIN LATERAL (SELECT r.version_id, r.last_updated, r.deleted, r.content \
             FROM resources r WHERE r.res_type = s.res_type AND r.id = s.res_id AND r.deleted = 0 \
             LIMIT 1) AS r WHERE s.res_type = ",
        );
        out.push_bind_param::<Text, _>(&self.referring[0])?;
        out.push_sql(" AND s.param = ");
        out.push_bind_param::<Text, _>(&self.referring[1])?;
        out.push_sql(" AND s.target_type = ");
        out.push_bind_param::<Text, _>(&self.referring[2])?;
        out.push_sql(" AND s.target_id = ");
        out.push_bind_param::<Text, _>(&self.referring[3])?;
        if self.ubrn {
            out.push_sql(
                " UNION ALL SELECT 3::smallint, '', '', nextval('ubrn_numbers'), NULL, NULL, NULL",
            );
        }
        Ok(())
    }
}

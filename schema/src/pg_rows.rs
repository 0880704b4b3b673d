//! PostgreSQL: a write's new rows — resources, versions and the six index tables — in one
//! statement of fixed text. Each table's rows travel as one array per column and are expanded
//! by `unnest`, each table a data-modifying `WITH` part (PostgreSQL runs every part to
//! completion and checks foreign keys at the end of the whole statement). Because the text
//! never changes with the row counts, diesel prepares it once per connection and PostgreSQL
//! neither parses nor plans it again: one round trip instead of one per table, without the
//! per-call parsing and planning that multi-row `VALUES` lists cost (measured in
//! docs/BENCHMARKS.md, Booking). Audit events and their entities go the same way
//! (`AuditRows`). SQLite runs in-process, where statements cost no round trips; it keeps the
//! query builder's statements.

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text, Timestamp};
use diesel::{PgConnection, QueryResult, RunQueryDsl};

use crate::audit::{AuditEntityRow, AuditRow};
use crate::rows::{IndexEntries, VersionRow};

/// One `WITH` part (named), or the statement's final INSERT (name ""): `name AS (INSERT INTO
/// table (columns) SELECT * FROM unnest($1::type[], …))`, each column's values one array.
macro_rules! unnest_insert {
    ($out:ident, $self:ident, $lead:expr, $name:literal, $table:literal, $columns:literal, [$(($col:ident, $ty:ty, $cast:literal)),+]) => {
        $out.push_sql($lead);
        if !$name.is_empty() {
            $out.push_sql(concat!($name, " AS ("));
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
        $out.push_sql(if $name.is_empty() { ")" } else { "))" });
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

    /// Writes them all.
    pub(crate) fn write(self, conn: &mut PgConnection) -> QueryResult<()> {
        self.execute(conn).map(|_| ())
    }
}

impl QueryId for Rows {
    type QueryId = Rows;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl RunQueryDsl<PgConnection> for Rows {}

impl QueryFragment<Pg> for Rows {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        unnest_insert!(
            out,
            self,
            "WITH ",
            "r",
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
        unnest_insert!(out, self, ", ", "v", "resource_versions",
            "res_type, id, version_id, last_updated, method, deleted, content, author_user, author_role, author_org, request_id", [
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
            (v_request, Text, "::text[]")
        ]);
        unnest_insert!(
            out,
            self,
            ", ",
            "t",
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
        unnest_insert!(
            out,
            self,
            ", ",
            "s",
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
        unnest_insert!(
            out,
            self,
            ", ",
            "d",
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
        unnest_insert!(
            out,
            self,
            ", ",
            "f",
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
        unnest_insert!(
            out,
            self,
            ", ",
            "g",
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
        unnest_insert!(
            out,
            self,
            " ",
            "",
            "unique_identifiers",
            "res_type, system, value, res_id",
            [
                (u_type, Text, "::text[]"),
                (u_system, Text, "::text[]"),
                (u_value, Text, "::text[]"),
                (u_id, Text, "::text[]")
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
        unnest_insert!(out, self, "WITH ", "e", "audit_events",
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
        unnest_insert!(out, self, " ", "", "audit_entities",
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

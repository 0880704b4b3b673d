//! The audit trail: insert (the only write) and search. There is no update or delete.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::{audit_entities, audit_events};
use crate::{DbConnection, StorageError};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events, treat_none_as_default_value = false)]
pub struct AuditRow {
    pub id: String,
    pub recorded: NaiveDateTime,
    pub action: String,
    pub subtype: String,
    pub outcome: String,
    pub outcome_desc: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub role: Option<String>,
    pub org: Option<String>,
    pub on_behalf_of: Option<String>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: i32,
    pub source_address: Option<String>,
    pub request_id: String,
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_entities, treat_none_as_default_value = false)]
pub struct AuditEntityRow {
    pub audit_id: String,
    pub position: i32,
    pub entity_type: String,
    pub entity_id: String,
    pub nhs_number: Option<String>,
    pub ubrn: Option<String>,
}

/// Appends events and their entities (in the caller's transaction): one multi-row INSERT per
/// table and chunk (a search touches up to a page of resources and their includes), on each
/// backend's own connection. The rows' `None`s are NULLs, not DEFAULTs: SQLite has no DEFAULT
/// in a multi-row VALUES list, and diesel would otherwise insert them one row at a time.
pub fn insert_many(
    conn: &mut DbConnection,
    events: &[(AuditRow, Vec<AuditEntityRow>)],
) -> Result<(), StorageError> {
    if let DbConnection::Postgresql(pg) = conn {
        // One prepared statement for both tables (`pg_rows`).
        let mut rows = crate::pg_rows::AuditRows::default();
        for (e, entities) in events {
            rows.event(e, entities);
        }
        return Ok(rows.write(pg)?);
    }
    for chunk in events.chunks(200) {
        let rows: Vec<&AuditRow> = chunk.iter().map(|(e, _)| e).collect();
        on_backend!(conn, |c| diesel::insert_into(audit_events::table)
            .values(rows.clone())
            .execute(c))?;
    }
    let entities: Vec<&AuditEntityRow> = events.iter().flat_map(|(_, es)| es).collect();
    for chunk in entities.chunks(500) {
        on_backend!(conn, |c| diesel::insert_into(audit_entities::table)
            .values(chunk.to_vec())
            .execute(c))?;
    }
    Ok(())
}

/// Filters of an audit search; all optional, ANDed.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub id: Option<String>,
    pub from: Option<NaiveDateTime>,
    pub to: Option<NaiveDateTime>,
    pub agent: Option<String>,
    pub action: Option<String>,
    pub subtype: Option<String>,
    pub outcome: Option<String>,
    pub entity: Option<(String, String)>,
    pub nhs_number: Option<String>,
    pub offset: i64,
    pub limit: i64,
}

fn filtered(q: &AuditQuery) -> audit_events::BoxedQuery<'static, crate::conn::MultiBackend> {
    let mut query = audit_events::table.into_boxed();
    if let Some(id) = &q.id {
        query = query.filter(audit_events::id.eq(id.clone()));
    }
    if let Some(t) = q.from {
        query = query.filter(audit_events::recorded.ge(t));
    }
    if let Some(t) = q.to {
        query = query.filter(audit_events::recorded.le(t));
    }
    if let Some(a) = &q.agent {
        query = query.filter(
            audit_events::user_id
                .eq(a.clone())
                .or(audit_events::client_id.eq(a.clone())),
        );
    }
    if let Some(a) = &q.action {
        query = query.filter(audit_events::action.eq(a.clone()));
    }
    if let Some(s) = &q.subtype {
        query = query.filter(audit_events::subtype.eq(s.clone()));
    }
    if let Some(o) = &q.outcome {
        query = query.filter(audit_events::outcome.eq(o.clone()));
    }
    if let Some((t, id)) = &q.entity {
        query = query.filter(
            audit_events::id.eq_any(
                audit_entities::table
                    .select(audit_entities::audit_id)
                    .filter(audit_entities::entity_type.eq(t.clone()))
                    .filter(audit_entities::entity_id.eq(id.clone())),
            ),
        );
    }
    if let Some(n) = &q.nhs_number {
        query = query.filter(
            audit_events::id.eq_any(
                audit_entities::table
                    .select(audit_entities::audit_id)
                    .filter(audit_entities::nhs_number.eq(n.clone())),
            ),
        );
    }
    query
}

/// An event with the entities it touched.
pub type AuditRecord = (AuditRow, Vec<AuditEntityRow>);

/// Events newest first with their entities, and the total.
pub fn search(
    conn: &mut DbConnection,
    q: &AuditQuery,
) -> Result<(Vec<AuditRecord>, i64), StorageError> {
    let total: i64 = filtered(q).count().get_result(conn)?;
    let rows: Vec<AuditRow> = filtered(q)
        .order((audit_events::recorded.desc(), audit_events::id.asc()))
        .offset(q.offset)
        .limit(q.limit)
        .select(AuditRow::as_select())
        .load(conn)?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut entities: Vec<AuditEntityRow> = Vec::new();
    for chunk in ids.chunks(500) {
        entities.extend(
            audit_entities::table
                .filter(audit_entities::audit_id.eq_any(chunk))
                .order((audit_entities::audit_id, audit_entities::position))
                .select(AuditEntityRow::as_select())
                .load(conn)?,
        );
    }
    let out = rows
        .into_iter()
        .map(|r| {
            let mine = entities
                .iter()
                .filter(|e| e.audit_id == r.id)
                .cloned()
                .collect();
            (r, mine)
        })
        .collect();
    Ok((out, total))
}

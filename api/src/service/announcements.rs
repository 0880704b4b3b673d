//! System announcements: operational users publish them for an audience (organisations and
//! business functions, or everyone) and a validity window; users read those that apply to
//! them, newest first, and mark them read.

use chrono::Utc;
use ers_schema::search as store_search;
use ers_schema::{store, write_tx, DbConnection, ResourceRow};
use serde_json::{json, Value};

use super::referral::{invalid, ods_behind, Acting};
use super::resource::{self, IfMatch, Writer};
use super::{scope, Result, ServiceError};
use crate::domain::Caller;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::resources::announcement as an;
use crate::fhir::{datetime, search as fsearch};

fn def() -> Result<&'static ResourceDef> {
    registry::find("CommunicationRequest")
        .ok_or_else(|| ServiceError::Internal("CommunicationRequest is not registered".into()))
}

/// Who may see it: the audience organisations' ODS codes, or everyone.
fn audience(c: &mut DbConnection, body: &Value) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, r) in an::organisations(body).into_iter().enumerate() {
        match ods_behind(c, r)? {
            Some(ods) => out.push(ods),
            None => {
                return Err(invalid(
                    &format!("CommunicationRequest.recipient[{i}]"),
                    "REFERENCE_NOT_FOUND",
                    "not-found",
                    format!("'recipient' ({r}) is not an organisation on this server"),
                ))
            }
        }
    }
    if out.is_empty() {
        out.push(an::ALL.to_owned());
    }
    Ok(out)
}

/// Publishes an announcement (status active, authored now).
pub fn publish(conn: &mut DbConnection, mut body: Value, who: &Acting<'_>) -> Result<ResourceRow> {
    body["status"] = json!("active");
    body["authoredOn"] = json!(datetime::instant(Utc::now().naive_utc()));
    write_tx(conn, |c| {
        let access = audience(c, &body)?;
        match resource::create(
            c,
            def()?,
            body,
            &Writer::new(who.author, who.audit).visible_to(&access),
            None,
            None,
        )? {
            resource::Created::New(r) | resource::Created::Existing(r) => Ok(r),
        }
    })
}

/// Changes an announcement (its audience may change with it).
pub fn revise(
    conn: &mut DbConnection,
    id: &str,
    body: Value,
    if_match: Option<i64>,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    write_tx(conn, |c| {
        let access = audience(c, &body)?;
        resource::update(
            c,
            def()?,
            id,
            body,
            IfMatch {
                version: if_match,
                required: false,
            },
            &Writer::new(who.author, who.audit).visible_to(&access),
        )
    })
}

/// Who is reading: the user, or the application.
fn reader(caller: &Caller) -> String {
    caller
        .user_id
        .clone()
        .or_else(|| caller.client_id.clone())
        .unwrap_or_default()
}

/// An announcement, and when the caller read it (None: not yet).
pub type Listed = (ResourceRow, Option<String>);

/// The announcements for the caller (their organisation and role), newest first: those in
/// their window now (or, with `all`, expired ones too), with when the caller read each.
pub fn for_caller(
    conn: &mut DbConnection,
    caller: &Caller,
    all: bool,
    unread_only: bool,
    count: i64,
    offset: i64,
) -> Result<(Vec<Listed>, i64)> {
    let d = def()?;
    let now = datetime::instant(Utc::now().naive_utc());
    let mut params = vec![
        ("status".to_owned(), "active".to_owned()),
        ("_sort".to_owned(), "-authored".to_owned()),
    ];
    if !all {
        params.push(("occurrence".to_owned(), format!("le{now}")));
        params.push(("occurrence".to_owned(), format!("ge{now}")));
    }
    let who = reader(caller);
    let mut req = fsearch::parse(d, &params, true).map_err(ServiceError::Invalid)?;
    scope::restrict(d, &mut req.query.criteria, caller);
    // Announcements are few: the caller's whole list, then read state and the page.
    req.query.offset = 0;
    req.query.limit = 1000;
    let (rows, _) = store_search::search(conn, &req.query, false)?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let times = store::read_times(conn, &ids, &who)?;
    let listed: Vec<Listed> = rows
        .into_iter()
        .map(|r| {
            let at = times
                .iter()
                .find(|(id, _)| *id == r.id)
                .map(|(_, t)| datetime::instant(*t));
            (r, at)
        })
        .filter(|(_, at)| !unread_only || at.is_none())
        .collect();
    let total = i64::try_from(listed.len()).unwrap_or(i64::MAX);
    let page = listed
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(0))
        .take(usize::try_from(count).unwrap_or(0))
        .collect();
    Ok((page, total))
}

/// Marks an announcement the caller may see as read by them.
pub fn mark_read(conn: &mut DbConnection, id: &str, caller: &Caller) -> Result<()> {
    let d = def()?;
    resource::read(conn, d, id)?;
    scope::check(conn, d, id, caller)?;
    store::mark_read(conn, id, &reader(caller), Utc::now().naive_utc())?;
    Ok(())
}

//! `GET /Task?focus=ServiceRequest/{id}[/_history/{version}]` (and `POST /Task/_search`): the
//! actions the caller may take now on a referral or an A&G request as Tasks, the form e-RS A029
//! gives them (`&intent=proposal&status=ready`), and a deferred referral's Task for its
//! provider, the form the e-RS Patient Care API gives it (`intent` order, `status` requested,
//! a `Workflow-Code`, the contact-by date). The actions follow the rule of
//! `$ers.availableActions` (`referrals::offered`); the Tasks are made for each search and never
//! stored, so a Task is not read by id.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::handlers::{
    authorise, base_url, draft, ok_outcome, on_read, parse_query, prefer, search_form,
};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::bundle::{self, Entry, EntryResource, Links};
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::task::{self, Focus};
use crate::security::permissions::Action;
use crate::service::audit;
use crate::service::referral as svc;
use crate::service::ServiceError;
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

/// Parameters that only shape the response's format.
const FORMAT_PARAMS: &[&str] = &["_format", "_pretty"];

pub async fn search_get(req: HttpRequest, caller: Caller, state: web::Data<AppState>) -> Reply {
    let params = parse_query(req.query_string())?;
    search(req, params, caller, state).await
}

pub async fn search_post(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let params = search_form(&req, &body)?;
    search(req, params, caller, state).await
}

/// `Task/{id}`: the Tasks are made for each search, so there is nothing to read.
pub async fn not_kept(path: web::Path<String>) -> Reply {
    Err(ApiError::NotFound(format!(
        "Task/{} is not kept: the Tasks of the actions you may take are made for each search (GET Task?focus=ServiceRequest/{{id}}), not stored",
        path.into_inner()
    )))
}

/// The Tasks of a referral or A&G request `row` (its current version): the provider's
/// deferral, if `pending`, then each action `now` offers. For the Task search, and for a
/// referral search's `_revinclude=Task:focus`.
pub(super) fn of(
    base: &str,
    row: &ers_schema::ResourceRow,
    now: &svc::Available,
    pending: Option<&svc::Pending>,
) -> Result<Vec<Value>, ApiError> {
    let stored: Value = serde_json::from_str(&row.content)
        .map_err(|e| ApiError::Internal(format!("stored JSON unreadable: {e}")))?;
    let patient = stored.get("subject");
    let mut tasks = Vec::new();
    if let Some(p) = pending {
        tasks.push(task::deferral(
            &uuid::Uuid::new_v4().to_string(),
            &format!("ServiceRequest/{}", row.id),
            patient,
            p.deferral.code(),
            p.service.as_deref(),
            &crate::fhir::datetime::instant(p.since),
            &p.contact_by.to_string(),
        ));
    }
    let focus = format!("ServiceRequest/{}/_history/{}", row.id, row.version_id);
    let authored = crate::fhir::datetime::instant(chrono::Utc::now().naive_utc());
    let (_, actions) = super::referrals::offered(base, &row.id, now);
    tasks.extend(actions.into_iter().map(|(code, url)| {
        task::available_action(
            &uuid::Uuid::new_v4().to_string(),
            &focus,
            patient,
            code,
            &url,
            &authored,
        )
    }));
    Ok(tasks)
}

/// A Task's entry: not kept, so not at a URL of this server.
pub(super) fn entry(task: Value, include: bool) -> Entry<'static> {
    Entry {
        full_url: format!("urn:uuid:{}", task["id"].as_str().unwrap_or_default()),
        resource: EntryResource::Value(task),
        include,
        distance_km: None,
        wait: None,
    }
}

/// What the search asks: the focus, the filters, what it ignored.
struct Asked {
    focus: Focus,
    /// `(parameter, value)` of intent, status and code.
    filters: Vec<(String, String)>,
    /// What goes into the `self` link.
    accepted: Vec<(String, String)>,
    ignored: Vec<String>,
}

fn asked(params: Vec<(String, String)>, base: &str, strict: bool) -> Result<Asked, ApiError> {
    let bad = |name: &str, code: &'static str, message: String| {
        ApiError::Search(vec![
            Issue::error("invalid", code, message).with_expression(name.to_owned())
        ])
    };
    let mut focus = None;
    let mut filters = Vec::new();
    let mut accepted = Vec::new();
    let mut ignored = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "focus" => {
                if focus.is_some() {
                    return Err(bad(
                        "focus",
                        "TOO_MANY_ITEMS",
                        "'focus' is given twice: a Task search asks about one referral".into(),
                    ));
                }
                focus = Some(Focus::parse(&value, base).ok_or_else(|| {
                    bad(
                        "focus",
                        "INVALID_VALUE",
                        format!("'focus' ({value}) is not a referral or A&G request: name it as ServiceRequest/{{id}}, optionally /_history/{{version}}"),
                    )
                })?);
                accepted.push((name, value));
            }
            "intent" | "status" | "code" => {
                filters.push((name.clone(), value.clone()));
                accepted.push((name, value));
            }
            n if FORMAT_PARAMS.contains(&n) => {}
            n if n.contains(':')
                && ["focus", "intent", "status", "code"]
                    .contains(&n.split(':').next().unwrap_or_default()) =>
            {
                return Err(bad(
                    n,
                    "INVALID_VALUE",
                    format!("'{n}': the Task search takes no modifiers"),
                ));
            }
            _ if strict => {
                return Err(ApiError::Search(vec![Issue::error(
                    "not-supported",
                    "INVALID_VALUE",
                    format!("Unknown search parameter '{name}' for Task: it takes focus, intent, status and code (Prefer: handling=strict)"),
                )
                .with_expression(name)]));
            }
            _ => ignored.push(name),
        }
    }
    let focus = focus.ok_or_else(|| {
        bad(
            "focus",
            "MISSING_VALUE",
            "'focus' is missing: a Task search asks what you may do to one referral or A&G request, focus=ServiceRequest/{id}".into(),
        )
    })?;
    Ok(Asked {
        focus,
        filters,
        accepted,
        ignored,
    })
}

async fn search(
    req: HttpRequest,
    params: Vec<(String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("Task", Action::Search, &caller)?;
    negotiate::response_format(&req)?;
    let base = base_url(&req, &state);
    let asked = asked(params, &base, prefer(&req).strict)?;
    let d = draft(&req, Some(&caller));
    let id = asked.focus.id.clone();
    let calendar = state.settings.working_days.clone();
    // One the caller may not see is as one that does not exist: no Tasks.
    let found = on_read(&state, move |c| -> Result<_, ApiError> {
        match svc::available_actions(c, &id, &caller) {
            Ok((row, now)) => {
                let pending = svc::pending(c, &row, &calendar)?;
                Ok(Some((row, now, pending)))
            }
            Err(ServiceError::NotFound { .. } | ServiceError::NotVisible { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    let mut notes = Vec::new();
    let mut tasks = Vec::new();
    let mut touched = Vec::new();
    match &found {
        None => notes.push(Issue::information(format!(
            "No ServiceRequest/{} that you may see: no actions",
            asked.focus.id
        ))),
        Some((row, _, _)) if asked.focus.version.is_some_and(|v| v != row.version_id) => {
            touched.push(audit::touched(row));
            notes.push(Issue::warning(format!(
                "ServiceRequest/{} is at version {}, not {}: nothing can be done to an older version (ask about ServiceRequest/{}/_history/{})",
                row.id,
                row.version_id,
                asked.focus.version.unwrap_or_default(),
                row.id,
                row.version_id
            )));
        }
        Some((row, now, pending)) => {
            touched.push(audit::touched(row));
            tasks = of(&base, row, now, pending.as_ref())?;
            tasks.retain(|t| {
                asked
                    .filters
                    .iter()
                    .all(|(name, value)| task::matches(t, name, value))
            });
        }
    }
    if !asked.ignored.is_empty() {
        notes.push(Issue::warning(format!(
            "Unknown search parameters ignored: {} (the Task search takes focus, intent, status and code)",
            asked.ignored.join(", ")
        )));
    }
    state
        .audit
        .record(&d, &ok_outcome("E", "search-type"), &touched)
        .await?;
    let query = serde_urlencoded::to_string(&asked.accepted).unwrap_or_default();
    let links = Links {
        self_url: format!("{base}/Task?{query}"),
        next: None,
        previous: None,
    };
    let total = i64::try_from(tasks.len()).unwrap_or(i64::MAX);
    let entries = tasks.into_iter().map(|t| entry(t, false)).collect();
    let outcome = (!notes.is_empty()).then(|| operation_outcome(&notes));
    let bundle = bundle::searchset(Some(total), &links, entries, outcome)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut res = negotiate::respond(&req, actix_web::http::StatusCode::OK, Body::Text(bundle))?;
    // What may be done changes with the next change to the referral.
    res.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

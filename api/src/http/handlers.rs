//! One short handler per FHIR interaction. Each: resolve the type, parse, run the use case in
//! `web::block`, write the response. No rules here.

use crate::domain::calendar::WorkingDays;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use ers_schema::search::Count;
use ers_schema::store::HistoryQuery;
use serde_json::Value;

use super::caller::author;
use super::middleware::RequestId;
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::referral::OpParam;
use crate::domain::Caller;
use crate::fhir::bundle::{self, Entry, EntryResource, HistoryEntry, Links};
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::parameters;
use crate::fhir::registry::{self, ResourceDef, RESOURCES};
use crate::fhir::search::{self as fsearch, SearchRequest};
use crate::fhir::{apply_elements, apply_summary, datetime, is_valid_id};
use crate::security::permissions::{self, Action};
use crate::service::audit::{self as audit, AuditDraft, Outcome, Touched};
use crate::service::resource::{self as svc, Created};
use crate::service::scope;
use crate::service::ServiceError;
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

fn resource_def(name: &str) -> Result<&'static ResourceDef, ApiError> {
    registry::find(name).ok_or_else(|| {
        ApiError::UnknownType(
            name.to_owned(),
            RESOURCES
                .iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
                .join(", "),
        )
    })
}

/// The permission table's answer for this caller (403 naming role, action and type).
pub fn authorise(resource: &str, action: Action, caller: &Caller) -> Result<(), ApiError> {
    if permissions::permits(resource, action, caller.business_function) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "Business function {} may not {} {resource} resources",
            caller.business_function,
            action.code()
        )))
    }
}

/// The audit context of a request, before its outcome.
pub fn draft(req: &HttpRequest, caller: Option<&Caller>) -> AuditDraft {
    let d = AuditDraft {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query: (!req.query_string().is_empty()).then(|| req.query_string().to_owned()),
        source_address: req
            .connection_info()
            .realip_remote_addr()
            .map(str::to_owned),
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        correlation_id: req
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        idempotency: req
            .extensions()
            .get::<crate::service::audit::IdempotencyKey>()
            .cloned(),
        ..Default::default()
    };
    match caller {
        Some(c) => d.with_caller(c),
        None => d,
    }
}

pub(super) fn ok_outcome(action: &'static str, subtype: &str) -> Outcome {
    Outcome {
        action,
        subtype: subtype.to_owned(),
        status: 200,
        description: None,
    }
}

/// What a version touched, for the audit.
pub(super) fn touched_version(v: &ers_schema::VersionRow) -> Touched {
    let nhs_number = (v.res_type == "Patient")
        .then(|| serde_json::from_str::<Value>(&v.content).ok())
        .flatten()
        .as_ref()
        .and_then(audit::nhs_number_of);
    Touched {
        entity_type: v.res_type.clone(),
        entity_id: v.id.clone(),
        nhs_number,
        ubrn: None,
    }
}

pub(super) fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "'{id}' is not a valid resource id (1-64 of A-Z, a-z, 0-9, '-', '.')"
        )))
    }
}

/// The FHIR base URL as the client sees it.
pub fn base_url(req: &HttpRequest, state: &AppState) -> String {
    format!("{}/FHIR/R4", public_root(req, state))
}

/// The server root as the client sees it (`ERS_BASE_URL` without `/FHIR/R4`, or the request's).
pub fn public_root(req: &HttpRequest, state: &AppState) -> String {
    match &state.settings.base_url {
        Some(b) => b
            .trim_end_matches('/')
            .trim_end_matches("/FHIR/R4")
            .to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// `Prefer` header values.
pub(super) struct Prefer {
    ret: Option<String>,
    pub(super) strict: bool,
}

pub(super) fn prefer(req: &HttpRequest) -> Prefer {
    let mut p = Prefer {
        ret: None,
        strict: false,
    };
    for v in req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
    {
        for item in v.split([',', ';']) {
            match item.trim().split_once('=') {
                Some(("return", r)) => p.ret = Some(r.trim().trim_matches('"').to_owned()),
                Some(("handling", h)) => p.strict = h.trim() == "strict",
                _ => {}
            }
        }
    }
    p
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// `If-Match: W/"n"` (or `"n"`), if present.
pub(super) fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = v.to_str().unwrap_or_default().trim();
    let inner = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    inner
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::BadHeader {
            header: "If-Match",
            message: format!("'{raw}' is not a version ETag of the form W/\"n\""),
        })
}

/// Runs `work` on a pooled connection in one blocking task: the checkout and the work share a
/// thread (one hand-off from the HTTP worker per request instead of two).
pub(super) async fn on_conn<T, E>(
    state: &AppState,
    work: impl FnOnce(&mut ers_schema::PooledConn) -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    in_turn(state, move |pool| {
        let mut c = pool.get()?;
        let done = work(&mut c);
        Ok((done, c))
    })
    .await
}

/// `on_conn` for work that only reads (and so may run twice): when the database had dropped
/// the connection it was given (one handed out unproved, within `conn::TRUSTED_FOR` of its
/// last answer), the work runs once more on another, which the pool proves first, instead of
/// the request failing with a 503.
pub(super) async fn on_read<T, E>(
    state: &AppState,
    work: impl Fn(&mut ers_schema::PooledConn) -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    in_turn(state, move |pool| {
        let mut c = pool.get()?;
        let done = work(&mut c);
        if done.is_err() && ers_schema::conn::was_lost(&mut c) {
            drop(c);
            let mut again = pool.get()?;
            let done = work(&mut again);
            return Ok((done, again));
        }
        Ok((done, c))
    })
    .await
}

/// Waits for a turn at the pool, then runs `checkout_and_work` in one blocking task; the
/// connection it hands back returns to the pool before the turn passes on, so the next waiter
/// finds it free.
async fn in_turn<T, E>(
    state: &AppState,
    checkout_and_work: impl FnOnce(&ers_schema::DbPool) -> Result<(Result<T, E>, ers_schema::PooledConn), ApiError>
        + Send
        + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    let turn = state.gate.turn().await?;
    let pool = state.pool.clone();
    let done = web::block(move || -> Result<Result<T, E>, ApiError> {
        let (done, c) = checkout_and_work(&pool)?;
        drop(c);
        drop(turn);
        Ok(done)
    })
    .await??;
    Ok(done?)
}

/// A write's response: status, ETag, Last-Modified, Location, body per `Prefer: return`.
pub(super) fn write_reply(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    row: &ers_schema::ResourceRow,
) -> Reply {
    let location = format!(
        "{}/{}/{}/_history/{}",
        base_url(req, state),
        row.res_type,
        row.id,
        row.version_id
    );
    let body = match prefer(req).ret.as_deref() {
        Some("minimal") => None,
        Some("OperationOutcome") => Some(Body::Value(operation_outcome(&[Issue::information(
            format!(
                "{}/{} version {} stored",
                row.res_type, row.id, row.version_id
            ),
        )]))),
        _ => Some(Body::Text(row.content.clone())),
    };
    let mut res = match body {
        Some(b) => negotiate::respond(req, status, b)?,
        None => HttpResponse::build(status).finish(),
    };
    let h = res.headers_mut();
    h.insert(
        header::ETAG,
        header::HeaderValue::from_str(&etag(row.version_id))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(
        header::LAST_MODIFIED,
        header::HeaderValue::from_str(&datetime::http_date(row.last_updated))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(
        header::LOCATION,
        header::HeaderValue::from_str(&location).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(res)
}

/// Whether the client's copy of a version is current (a conditional read: FHIR
/// `conditionalRead` full-support, RFC 9110 §13.1.2–3): an `If-None-Match` tag matches the
/// version (weakly: `W/"3"` and `"3"` alike) or is `*`; without `If-None-Match`, the version is
/// no newer than `If-Modified-Since` (HTTP dates have whole seconds). A precondition that does
/// not parse is ignored, as RFC 9110 has it, and the version is sent.
pub(super) fn not_modified(
    req: &HttpRequest,
    version: i64,
    last_updated: chrono::NaiveDateTime,
) -> bool {
    use actix_web::http::header::{EntityTag, Header, IfModifiedSince};
    if req.headers().contains_key(header::IF_NONE_MATCH) {
        return if_none_match(req)
            .is_some_and(|c| holds(&c, &EntityTag::new_weak(version.to_string())));
    }
    if !req.headers().contains_key(header::IF_MODIFIED_SINCE) {
        return false;
    }
    let Ok(IfModifiedSince(since)) = IfModifiedSince::parse(req) else {
        return false;
    };
    let since = std::time::SystemTime::from(since)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    last_updated.and_utc().timestamp() <= since
}

/// The request's `If-None-Match`, if it has one that parses (one that does not is ignored).
pub(super) fn if_none_match(req: &HttpRequest) -> Option<header::IfNoneMatch> {
    use actix_web::http::header::Header;
    if !req.headers().contains_key(header::IF_NONE_MATCH) {
        return None;
    }
    header::IfNoneMatch::parse(req).ok()
}

/// Whether `If-None-Match` names `tag` (weakly, as RFC 9110 §13.1.2 compares) or is `*`: the
/// client holds this representation.
pub(super) fn holds(condition: &header::IfNoneMatch, tag: &header::EntityTag) -> bool {
    match condition {
        header::IfNoneMatch::Any => true,
        header::IfNoneMatch::Items(tags) => tags.iter().any(|t| t.weak_eq(tag)),
    }
}

/// The subset a read asks for with `_summary` or `_elements` (FHIR's general parameters, which
/// apply to a read as to a search), if any: checked before anything is read.
pub(super) fn read_subset(
    query: &str,
    def: &'static ResourceDef,
) -> Result<Option<SearchRequest>, ApiError> {
    let asked: Vec<(String, String)> = parse_query(query)?
        .into_iter()
        .filter(|(k, _)| matches!(k.as_str(), "_summary" | "_elements"))
        .collect();
    if asked.is_empty() {
        return Ok(None);
    }
    let parsed = fsearch::parse(def, &asked, true).map_err(ApiError::Search)?;
    if parsed.summary == fsearch::Summary::Count {
        return Err(ApiError::bad_param(
            "_summary",
            "'count' counts a search's matches; a read takes true, text, data or false",
        ));
    }
    Ok(Some(parsed))
}

/// A version's content as a read with `subset` answers it: `None` when it is the stored
/// content as it is.
pub(super) fn read_shape(
    content: &str,
    subset: Option<&SearchRequest>,
    def: &ResourceDef,
) -> Result<Option<Value>, ApiError> {
    Ok(
        match subset
            .map(|s| shape_entry(content, s, Some(def)))
            .transpose()?
        {
            Some(EntryResource::Value(v)) => Some(v),
            _ => None,
        },
    )
}

/// A read's answer: the version, or its 304 when the client holds it; the resource as stored,
/// or the `subset` asked for.
fn read_reply(
    req: &HttpRequest,
    def: &ResourceDef,
    subset: Option<&SearchRequest>,
    content: String,
    version: i64,
    last_updated: chrono::NaiveDateTime,
) -> Reply {
    let body = match read_shape(&content, subset, def)? {
        Some(v) => Body::Value(v),
        None => Body::Text(content),
    };
    let mut res = if not_modified(req, version, last_updated) {
        HttpResponse::NotModified().finish()
    } else {
        negotiate::respond(req, StatusCode::OK, body)?
    };
    let h = res.headers_mut();
    h.insert(
        header::ETAG,
        header::HeaderValue::from_str(&etag(version))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(
        header::LAST_MODIFIED,
        header::HeaderValue::from_str(&datetime::http_date(last_updated))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(res)
}

pub(super) fn parse_query(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(s)
        .map_err(|e| ApiError::BadRequest(format!("the query string cannot be decoded: {e}")))
}

/// An operation's inputs: its query parameters and, when it was POSTed with a body, its
/// `Parameters` body's, read alike (FHIR lets every operation be invoked with POST, and one
/// that only reads with GET too), each checked against the operation's `declared` inputs.
pub(super) fn operation_inputs(
    req: &HttpRequest,
    body: &[u8],
    operation: &str,
    declared: &[OpParam],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = parse_query(req.query_string())?;
    if req.method() == Method::POST && !body.is_empty() {
        let given = negotiate::parse_body(req, body)?;
        pairs.extend(parameters::read(&given, operation, declared).map_err(ApiError::Search)?);
    }
    parameters::query(&pairs, operation, declared).map_err(ApiError::Search)?;
    Ok(pairs)
}

pub async fn create(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let def = resource_def(&path)?;
    authorise(def.name, Action::Create, &caller)?;
    let resource = negotiate::parse_body(&req, &body)?;
    let conditional = match req.headers().get("if-none-exist") {
        None => None,
        Some(v) => {
            let raw = v.to_str().map_err(|_| ApiError::BadHeader {
                header: "If-None-Exist",
                message: "is not visible ASCII".into(),
            })?;
            let query = raw.split_once('?').map(|(_, q)| q).unwrap_or(raw);
            Some(conditional_criteria(def, query, "If-None-Exist", &caller)?)
        }
    };
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let created = on_conn(&state, move |c| {
        let mut resource = resource;
        svc::resolve_logical_references(c, &mut resource)?;
        svc::create(
            c,
            def,
            resource,
            &svc::Writer::new(&who, &d),
            conditional,
            None,
        )
    })
    .await?;
    created_reply(&req, &state, created)
}

pub async fn read(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (t, id) = path.into_inner();
    let def = resource_def(&t)?;
    authorise(def.name, Action::Read, &caller)?;
    check_id(&id)?;
    negotiate::response_format(&req)?;
    let subset = read_subset(req.query_string(), def)?;
    let d = draft(&req, Some(&caller));
    let row = on_read(&state, move |c| -> Result<_, ApiError> {
        let row = svc::read(c, def, &id)?;
        scope::check(c, def, &id, &caller)?;
        Ok(row)
    })
    .await?;
    state
        .audit
        .record(&d, &ok_outcome("R", "read"), &[audit::touched(&row)])
        .await?;
    read_reply(
        &req,
        def,
        subset.as_ref(),
        row.content,
        row.version_id,
        row.last_updated,
    )
}

pub async fn vread(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (t, id, vid) = path.into_inner();
    let def = resource_def(&t)?;
    authorise(def.name, Action::Read, &caller)?;
    check_id(&id)?;
    let version: i64 = vid.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::NotFound(format!(
            "'{vid}' is not a version id of {t}/{id} (versions are 1, 2, 3...)"
        ))
    })?;
    negotiate::response_format(&req)?;
    let subset = read_subset(req.query_string(), def)?;
    let d = draft(&req, Some(&caller));
    let row = on_read(&state, move |c| -> Result<_, ApiError> {
        scope::check(c, def, &id, &caller)?;
        Ok(svc::vread(c, def, &id, version)?)
    })
    .await?;
    state
        .audit
        .record(&d, &ok_outcome("R", "vread"), &[touched_version(&row)])
        .await?;
    read_reply(
        &req,
        def,
        subset.as_ref(),
        row.content,
        row.version_id,
        row.last_updated,
    )
}

pub async fn update(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (t, id) = path.into_inner();
    let def = resource_def(&t)?;
    authorise(def.name, Action::Update, &caller)?;
    check_id(&id)?;
    let resource = negotiate::parse_body(&req, &body)?;
    let expected = if_match(&req)?;
    let require = state.settings.require_if_match;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        let mut resource = resource;
        svc::resolve_logical_references(c, &mut resource)?;
        svc::update(
            c,
            def,
            &id,
            resource,
            svc::IfMatch {
                version: expected,
                required: require,
            },
            &svc::Writer::new(&who, &d),
        )
    })
    .await?;
    write_reply(&req, &state, StatusCode::OK, &row)
}

/// A type whose writes are its use cases' own (a referral's operations, say) is not written
/// plainly (`how`: by PATCH, in a Bundle): 405.
pub(super) fn plain_writes(def: &ResourceDef, how: &str) -> Result<(), ApiError> {
    if def.plain_writes {
        return Ok(());
    }
    Err(ApiError::Service(ServiceError::MethodNotAllowed(format!(
        "{0} is created with POST {0} and changed only through its operations (see the CapabilityStatement), not {how}",
        def.name
    ))))
}

/// `PATCH /{type}/{id}` with a JSON Patch document.
pub async fn patch(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (t, id) = path.into_inner();
    let def = resource_def(&t)?;
    plain_writes(def, "by PATCH")?;
    authorise(def.name, Action::Update, &caller)?;
    check_id(&id)?;
    let operations = negotiate::json_patch(&req, &body)?;
    let precondition = svc::IfMatch {
        version: if_match(&req)?,
        required: state.settings.require_if_match,
    };
    let base = base_url(&req, &state);
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| -> Result<_, ApiError> {
        scope::check(c, def, &id, &caller)?;
        Ok(svc::patch(
            c,
            def,
            &id,
            &operations,
            precondition,
            &svc::Writer::new(&who, &d),
            &|patched| negotiate::as_parsed(patched, &base),
        )?)
    })
    .await?;
    write_reply(&req, &state, StatusCode::OK, &row)
}

pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (t, id) = path.into_inner();
    let def = resource_def(&t)?;
    authorise(def.name, Action::Delete, &caller)?;
    check_id(&id)?;
    let precondition = svc::IfMatch {
        version: if_match(&req)?,
        required: false,
    };
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    on_conn(&state, move |c| {
        svc::delete(c, def, &id, precondition, &who, &d)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The search criteria of a conditional interaction (`If-None-Exist`, a conditional update, a
/// Bundle entry's), named `field` in errors: parsed strictly (one not understood would
/// otherwise match everything), at least one, and scoped to what the caller may see.
pub(super) fn conditional_criteria(
    def: &'static ResourceDef,
    raw: &str,
    field: &str,
    caller: &Caller,
) -> Result<(ers_schema::search::SearchQuery, String), ApiError> {
    let mut parsed = fsearch::parse(def, &parse_query(raw)?, true).map_err(ApiError::Search)?;
    if parsed.query.criteria.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{field} '{raw}' has no search criteria (e.g. identifier=system|value)"
        )));
    }
    scope::restrict(def, &mut parsed.query.criteria, caller);
    Ok((parsed.query, raw.to_owned()))
}

/// `PUT /{type}?criteria`: conditional update (FHIR http.html#cond-update).
pub async fn conditional_update(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let def = resource_def(&path)?;
    // It may create as well as change, so it takes both permissions.
    authorise(def.name, Action::Update, &caller)?;
    authorise(def.name, Action::Create, &caller)?;
    let condition = conditional_criteria(
        def,
        req.query_string(),
        "PUT with no id: a conditional update, whose query string",
        &caller,
    )?;
    let resource = negotiate::parse_body(&req, &body)?;
    let precondition = svc::IfMatch {
        version: if_match(&req)?,
        required: state.settings.require_if_match,
    };
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let done = on_conn(&state, move |c| {
        svc::conditional_update(
            c,
            def,
            condition,
            resource,
            precondition,
            &svc::Writer::new(&who, &d),
        )
    })
    .await?;
    created_reply(&req, &state, done)
}

/// 201 for a resource made, 200 for one found (`If-None-Exist`) or changed (a conditional
/// update).
fn created_reply(req: &HttpRequest, state: &AppState, done: Created) -> Reply {
    match done {
        Created::New(row) => write_reply(req, state, StatusCode::CREATED, &row),
        Created::Existing(row) => write_reply(req, state, StatusCode::OK, &row),
    }
}

/// `self`, `next` and `previous` links of one page.
fn page_links(
    base: &str,
    path: &str,
    accepted: &[(String, String)],
    count: i64,
    offset: i64,
    has_more: bool,
) -> Links {
    Links {
        self_url: page_url(base, path, accepted, count, offset),
        next: has_more.then(|| page_url(base, path, accepted, count, offset + count)),
        previous: (offset > 0)
            .then(|| page_url(base, path, accepted, count, (offset - count).max(0))),
    }
}

fn page_url(base: &str, t: &str, accepted: &[(String, String)], count: i64, offset: i64) -> String {
    let mut params: Vec<(String, String)> = accepted.to_vec();
    params.push(("_count".into(), count.to_string()));
    if offset > 0 {
        params.push(("_offset".into(), offset.to_string()));
    }
    let qs = serde_urlencoded::to_string(&params).unwrap_or_default();
    format!("{base}/{t}?{qs}")
}

/// A search over one worklist (`$ers.worklist`) instead of the type's index: the operation's
/// path and parameters (for the page links) and the list.
pub(super) struct ListSearch {
    pub path: String,
    pub params: Vec<(String, String)>,
    /// Search parameters the operation adds itself (not repeated in its links).
    pub implied: Vec<(String, String)>,
    pub list: ers_schema::worklists::ListFilter,
}

/// A search request (`GET Type?…` or `POST Type/_search`), with what its headers add
/// (`NHSD-eRS-Comm-Rule-Org` on a slot search).
pub(super) async fn run_search(
    req: HttpRequest,
    def: &'static ResourceDef,
    mut params: Vec<(String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    params.extend(super::caller::commissioning_criterion(&req, def.name)?);
    run_search_on(req, def, params, None, Vec::new(), caller, state).await
}

/// A search of a type, or of one of its worklists (`list`): the same parameters, paging,
/// includes, audit and Bundle, with `notes` (warnings of the caller's) in its outcome.
pub(super) async fn run_search_on(
    req: HttpRequest,
    def: &'static ResourceDef,
    params: Vec<(String, String)>,
    list: Option<ListSearch>,
    notes: Vec<Issue>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let d = draft(&req, Some(&caller));
    let search = Search::prepare(
        def,
        params,
        list.as_ref(),
        prefer(&req).strict,
        &caller,
        &state,
    )?;
    negotiate::response_format(&req)?;
    let list = list.map(|l| l.list);
    let run = search.clone();
    let result = on_read(&state, move |c| run.execute(c, list.as_ref(), &caller)).await?;
    answer_search(&req, &state, &d, &search, result, notes).await
}

/// A search's answer: the Bundle of what it found, its showing audited.
async fn answer_search(
    req: &HttpRequest,
    state: &AppState,
    d: &AuditDraft,
    search: &Search,
    found: Found,
    notes: Vec<Issue>,
) -> Reply {
    let (bundle, touched) = search.bundle(&base_url(req, state), found, notes)?;
    state
        .audit
        .record(d, &ok_outcome("E", "search-type"), &touched)
        .await?;
    negotiate::respond(req, StatusCode::OK, Body::Text(bundle))
}

/// A search worked out on its own connection before it runs (`run_planned_search`): its
/// parameters, the notes its Bundle's outcome carries, and what was read to work them out
/// (audited as read).
pub(super) struct Plan {
    pub params: Vec<(String, String)>,
    pub notes: Vec<Issue>,
    pub read: Vec<Touched>,
    /// What to add to each match's search entry, worked out from the page's matches on the same
    /// connection (an extension, by id).
    pub annotate: Option<Annotate>,
}

/// A plan's `annotate`.
pub(super) type Annotate = Box<
    dyn FnOnce(
            &mut ers_schema::PooledConn,
            &[ers_schema::ResourceRow],
        ) -> Result<std::collections::HashMap<String, Value>, ApiError>
        + Send,
>;

/// A type search whose parameters `plan` works out from what it reads, on the connection the
/// search then runs on: one turn at the pool. What `plan` read is audited as read even when
/// the search it planned then fails.
pub(super) async fn run_planned_search(
    req: HttpRequest,
    def: &'static ResourceDef,
    plan: impl Fn(&mut ers_schema::PooledConn) -> Result<Plan, ApiError> + Send + 'static,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let d = draft(&req, Some(&caller));
    negotiate::response_format(&req)?;
    let strict = prefer(&req).strict;
    let (who, settings) = (caller.clone(), state.clone());
    let (read, searched) = on_read(&state, move |c| -> Result<_, ApiError> {
        let Plan {
            params,
            notes,
            read,
            annotate,
        } = plan(c)?;
        let searched =
            Search::prepare(def, params, None, strict, &who, &settings).and_then(|search| {
                let mut found = search.execute(c, None, &who)?;
                if let Some(annotate) = annotate {
                    found.annotations = annotate(c, &found.result.matches)?;
                }
                Ok((found, search, notes))
            });
        Ok((read, searched))
    })
    .await?;
    if !read.is_empty() {
        state
            .audit
            .record(&d, &ok_outcome("R", "read"), &read)
            .await?;
    }
    let (result, search, notes) = searched?;
    answer_search(&req, &state, &d, &search, result, notes).await
}

/// What a search found: its result, and for `_revinclude=Task:focus` the actions available on
/// the first matches and what their providers are to do, in their order (as many as the Tasks'
/// bound allowed).
pub(super) struct Found {
    result: svc::SearchResult,
    actions: Vec<(
        crate::service::referral::Available,
        Option<crate::service::referral::Pending>,
    )>,
    /// Whether some matches' actions were left out (`svc::MAX_INCLUDED`).
    capped: bool,
    /// Each match's search entry extension made by its plan (`Plan::annotate`), by id.
    annotations: std::collections::HashMap<String, Value>,
}

impl Found {
    pub(super) fn result(&self) -> &svc::SearchResult {
        &self.result
    }
}

/// A search parsed, authorised and scoped to its caller: run by a search request, a worklist
/// operation, or a batch or transaction entry (`GET Type?criteria`).
#[derive(Clone)]
pub(super) struct Search {
    def: &'static ResourceDef,
    /// As asked, for the links and the shaping of entries.
    parsed: SearchRequest,
    /// As run: limited to what the caller may see.
    request: SearchRequest,
    /// The links' path: the type, or the worklist operation.
    path: String,
    of_list: bool,
    /// Whose working days the provider's contact-by dates count (`_revinclude=Task:focus`).
    calendar: WorkingDays,
}

impl Search {
    pub(super) fn prepare(
        def: &'static ResourceDef,
        params: Vec<(String, String)>,
        list: Option<&ListSearch>,
        strict: bool,
        caller: &Caller,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        authorise(def.name, Action::Search, caller)?;
        let mut params = params;
        if let Some(l) = list {
            params.extend(l.implied.iter().cloned());
        }
        let mut parsed: SearchRequest =
            fsearch::parse(def, &params, strict).map_err(ApiError::Search)?;
        parsed.count_up_to = state.settings.search_total_up_to;
        let mut request = parsed.clone();
        scope::restrict(def, &mut request.query.criteria, caller);
        let path = match list {
            Some(l) => {
                let mut accepted = l.params.clone();
                accepted.extend(parsed.accepted.drain(..).filter(|p| !l.implied.contains(p)));
                parsed.accepted = accepted;
                l.path.clone()
            }
            None => def.name.to_owned(),
        };
        Ok(Search {
            def,
            parsed,
            request,
            path,
            of_list: list.is_some(),
            calendar: state.settings.working_days.clone(),
        })
    }

    /// The matches and includes the caller may see, and with `_revinclude=Task:focus` what
    /// the caller may do to each match (as many as `svc::MAX_INCLUDED` Tasks allow).
    pub(super) fn execute(
        &self,
        c: &mut ers_schema::DbConnection,
        list: Option<&ers_schema::worklists::ListFilter>,
        caller: &Caller,
    ) -> Result<Found, ApiError> {
        let result = match list {
            // A list holds only what its organisation may see; checked all the same.
            Some(l) => {
                let mut r = svc::search_list(c, &self.request, l, caller)?;
                scope::retain_visible(c, &mut r.matches, caller)?;
                r
            }
            None => svc::search(c, &self.request, caller)?,
        };
        let mut actions = Vec::new();
        let mut capped = false;
        if self.request.action_tasks && self.request.summary != fsearch::Summary::Count {
            let mut tasks = 0;
            for row in &result.matches {
                let now = crate::service::referral::actions_on(c, row, caller)?;
                let pending = crate::service::referral::pending(c, row, &self.calendar)?;
                let n = super::referrals::offered("", &row.id, &now).1.len()
                    + usize::from(pending.is_some());
                if tasks + n > svc::MAX_INCLUDED {
                    capped = true;
                    break;
                }
                tasks += n;
                actions.push((now, pending));
            }
        }
        Ok(Found {
            result,
            actions,
            capped,
            annotations: Default::default(),
        })
    }

    /// The searchset Bundle of one page of `result`, and what it shows (for the audit).
    pub(super) fn bundle(
        &self,
        base: &str,
        found: Found,
        notes: Vec<Issue>,
    ) -> Result<(String, Vec<Touched>), ApiError> {
        let Found {
            result,
            actions,
            capped,
            mut annotations,
        } = found;
        let parsed = &self.parsed;
        let touched: Vec<Touched> = result
            .matches
            .iter()
            .chain(&result.included)
            .map(audit::touched)
            .collect();
        let (count, offset) = (parsed.query.limit, parsed.query.offset);
        // e-RS A015: a page past the last is refused, not answered empty.
        if let (Some(page), Some(total)) = (parsed.page, result.total) {
            if page > 1 && offset >= total {
                let pages = (total + count - 1) / count.max(1);
                return Err(ApiError::Search(vec![Issue::error(
                    "invalid",
                    "INVALID_VALUE",
                    format!("'page' ({page}) is past the last page ({pages} of {count})"),
                )
                .with_expression("page".to_owned())]));
            }
        }
        let has_more = match result.total {
            Some(t) => offset + count < t,
            None => i64::try_from(result.matches.len()).unwrap_or(0) >= count && count > 0,
        };
        let links = page_links(
            base,
            &self.path,
            &parsed.accepted,
            count,
            offset,
            has_more && parsed.summary != fsearch::Summary::Count,
        );
        let shape = |content, rdef| shape_entry(content, parsed, rdef);
        let mut entries = Vec::with_capacity(result.matches.len() + result.included.len());
        for row in &result.matches {
            entries.push(Entry {
                full_url: format!("{base}/{}/{}", row.res_type, row.id),
                resource: shape(&row.content, Some(self.def))?,
                include: false,
                distance_km: result
                    .distances
                    .as_ref()
                    .and_then(|d| d.get(&row.id).copied()),
                wait: annotations.remove(&row.id),
            });
        }
        for row in &result.included {
            entries.push(Entry {
                full_url: format!("{base}/{}/{}", row.res_type, row.id),
                resource: shape(&row.content, registry::find(&row.res_type))?,
                include: true,
                distance_km: None,
                wait: None,
            });
        }
        for (row, (now, pending)) in result.matches.iter().zip(&actions) {
            entries.extend(
                super::tasks::of(base, row, now, pending.as_ref())?
                    .into_iter()
                    .map(|t| super::tasks::entry(t, true)),
            );
        }
        let mut notes = notes;
        notes.extend(result.notes);
        if capped {
            notes.push(Issue::information(format!(
                "The Tasks of {} of the {} referrals on this page are included: at most {} Tasks are (ask for a smaller _count)",
                actions.len(),
                result.matches.len(),
                svc::MAX_INCLUDED
            )));
        }
        if !parsed.ignored.is_empty() {
            notes.push(Issue::warning(format!(
                "Unknown search parameters ignored: {}",
                parsed.ignored.join(", ")
            )));
        }
        if !self.of_list && parsed.total == fsearch::TotalMode::UpTo && result.total.is_none() {
            notes.push(Issue::information(format!(
                "More than {} resources match: Bundle.total is left out (ask _total=accurate to count them all)",
                parsed.count_up_to
            )));
        }
        let outcome = (!notes.is_empty()).then(|| operation_outcome(&notes));
        let bundle = bundle::searchset(result.total, &links, entries, outcome)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok((bundle, touched))
    }
}

/// A search entry's resource: whole resources go into the Bundle as stored; only a summary or
/// elements are shaped.
fn shape_entry<'a>(
    content: &'a str,
    parsed: &SearchRequest,
    rdef: Option<&ResourceDef>,
) -> Result<EntryResource<'a>, ApiError> {
    if parsed.elements.is_none() && parsed.summary == fsearch::Summary::False {
        return Ok(EntryResource::Stored(content));
    }
    let v: Value = serde_json::from_str(content)
        .map_err(|e| ApiError::Internal(format!("stored JSON unreadable: {e}")))?;
    Ok(EntryResource::Value(
        match (&parsed.elements, parsed.summary) {
            (Some(els), _) => apply_elements(&v, els),
            (None, s) => apply_summary(&v, s, rdef.map(|d| d.summary).unwrap_or(&[])),
        },
    ))
}

pub async fn search_get(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let def = resource_def(&path)?;
    let params = parse_query(req.query_string())?;
    run_search(req, def, params, caller, state).await
}

pub async fn search_post(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let def = resource_def(&path)?;
    let params = search_form(&req, &body)?;
    run_search(req, def, params, caller, state).await
}

/// A `POST …/_search`'s parameters: the query string's and the form body's.
pub(super) fn search_form(
    req: &HttpRequest,
    body: &[u8],
) -> Result<Vec<(String, String)>, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "POST _search takes application/x-www-form-urlencoded parameters, not '{ct}'"
        )));
    }
    let form = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the form body is not UTF-8".into()))?;
    let mut params = parse_query(req.query_string())?;
    params.extend(parse_query(form)?);
    Ok(params)
}

fn history_query(req: &HttpRequest) -> Result<(HistoryQuery, Vec<(String, String)>), ApiError> {
    let mut q = HistoryQuery {
        limit: fsearch::DEFAULT_COUNT,
        count: Count::UpTo(fsearch::COUNT_UP_TO),
        ..Default::default()
    };
    let mut accepted = Vec::new();
    for (k, v) in parse_query(req.query_string())? {
        let bad = |m: String| {
            ApiError::Search(vec![Issue::error(
                "invalid",
                "INVALID_VALUE",
                format!("History parameter '{k}': {m}"),
            )
            .with_expression(k.clone())])
        };
        match k.as_str() {
            "_count" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (0..=fsearch::MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "'{v}' is not a number in 0..{}",
                            fsearch::MAX_COUNT
                        ))
                    })?;
            }
            "_offset" => {
                q.offset = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad(format!("'{v}' is not a non-negative number")))?
            }
            // As a search's (`fsearch::TotalMode`); the bound is set by the caller.
            "_total" => {
                q.count = match v.as_str() {
                    "none" => Count::No,
                    "estimate" => Count::UpTo(fsearch::COUNT_UP_TO),
                    "accurate" => Count::All,
                    _ => return Err(bad(format!("'{v}' is not one of none, estimate, accurate"))),
                };
                accepted.push((k.clone(), v.clone()));
            }
            "_since" | "_at" => {
                let (lo, hi) = datetime::range(&v)
                    .filter(|_| datetime::is_datetime(&v))
                    .ok_or_else(|| {
                        bad(format!(
                            "'{v}' is not an instant (e.g. 2026-11-23T10:00:00Z)"
                        ))
                    })?;
                if k == "_since" {
                    q.since = Some(lo);
                } else {
                    q.at_or_before = Some(hi);
                }
                accepted.push((k.clone(), v.clone()));
            }
            _ => {}
        }
    }
    Ok((q, accepted))
}

async fn run_history(
    req: HttpRequest,
    def: &'static ResourceDef,
    id: Option<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise(def.name, Action::History, &caller)?;
    let d = draft(&req, Some(&caller));
    let subtype = if id.is_some() {
        "history-instance"
    } else {
        "history-type"
    };
    let (mut q, accepted) = history_query(&req)?;
    if let Count::UpTo(_) = q.count {
        q.count = Count::UpTo(state.settings.search_total_up_to);
    }
    negotiate::response_format(&req)?;
    q.res_type = Some(def.name.to_owned());
    q.id = id.clone();
    q.holding = scope::codes_for(def, &caller).map(|codes| (scope::PARAM.to_owned(), codes));
    let (count, offset) = (q.limit, q.offset);
    let (rows, total) = on_read(&state, move |c| -> Result<_, ApiError> {
        if let Some(id) = q.id.as_deref() {
            scope::check(c, def, id, &caller)?;
        }
        Ok(svc::history(c, def, q.clone())?)
    })
    .await?;
    let touched: Vec<Touched> = rows.iter().map(touched_version).collect();
    state
        .audit
        .record(&d, &ok_outcome("R", subtype), &touched)
        .await?;
    let base = base_url(&req, &state);
    let path = match &id {
        Some(id) => format!("{}/{id}/_history", def.name),
        None => format!("{}/_history", def.name),
    };
    let links = page_links(
        &base,
        &path,
        &accepted,
        count,
        offset,
        match total {
            Some(t) => offset + count < t,
            None => i64::try_from(rows.len()).unwrap_or(0) >= count && count > 0,
        },
    );
    let mut entries = Vec::with_capacity(rows.len());
    for v in rows {
        let resource = if v.is_deleted() {
            None
        } else {
            Some(
                serde_json::from_str::<Value>(&v.content)
                    .map_err(|e| ApiError::Internal(format!("stored JSON unreadable: {e}")))?,
            )
        };
        let (url, status) = match v.method.as_str() {
            "POST" => (v.res_type.clone(), "201 Created"),
            "DELETE" => (format!("{}/{}", v.res_type, v.id), "204 No Content"),
            _ => (format!("{}/{}", v.res_type, v.id), "200 OK"),
        };
        entries.push(HistoryEntry {
            full_url: format!("{base}/{}/{}", v.res_type, v.id),
            resource,
            method: v.method.clone(),
            url,
            status,
            etag: etag(v.version_id),
            last_modified: datetime::instant(v.last_updated),
        });
    }
    negotiate::respond(
        &req,
        StatusCode::OK,
        Body::Value(bundle::history(total, &links, entries)),
    )
}

pub async fn history_type(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let def = resource_def(&path)?;
    run_history(req, def, None, caller, state).await
}

pub async fn history_instance(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (t, id) = path.into_inner();
    let def = resource_def(&t)?;
    check_id(&id)?;
    run_history(req, def, Some(id), caller, state).await
}

/// An operation asked for where this server has none of that name (`Patient/$everything`,
/// `[base]/$meta`): 404 naming it and the operations there are at that level. Reached only
/// by what the routes of real operations did not take.
pub async fn no_operation(req: HttpRequest) -> Reply {
    let info = req.match_info();
    Err(unknown_operation(
        info.get("type"),
        info.get("id").is_some(),
        info.get("op").unwrap_or_default(),
    ))
}

/// The answer to operation `op` asked for where there is none of that name.
fn unknown_operation(res_type: Option<&str>, instance: bool, op: &str) -> ApiError {
    if let Some(t) = res_type {
        let served =
            crate::fhir::conformance::TYPES.contains(&t) || matches!(t, "AuditEvent" | "Binary");
        if let (false, Err(e)) = (served, resource_def(t)) {
            return e;
        }
    }
    let at = match (res_type, instance) {
        (None, _) => "The server".to_owned(),
        (Some(t), false) => t.to_owned(),
        (Some(t), true) => format!("A {t}"),
    };
    let ops = crate::fhir::conformance::operations_at(res_type, instance);
    ApiError::NotFound(if ops.is_empty() {
        format!("{at} has no operation '{op}', nor any other here")
    } else {
        format!("{at} has no operation '{op}'; it has {}", ops.join(", "))
    })
}

/// `POST /{type}/$validate[?profile=…]`: the full OperationOutcome, nothing stored. The body is
/// the resource, or a Parameters with a `resource` parameter.
pub async fn validate(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    use crate::service::resource::ValidateAgainst;
    // A type served but written only by the server (AuditEvent, the conformance resources)
    // has no $validate: said so, not called unknown.
    let def =
        resource_def(&path).map_err(|_| unknown_operation(Some(&path), false, "$validate"))?;
    authorise(def.name, Action::Validate, &caller)?;
    let (parsed, structure) = negotiate::parse_body_for_validation(&req, &body)?;
    let resource = if parsed.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
        parsed
            .get("parameter")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some("resource"))
            })
            .and_then(|p| p.get("resource"))
            .cloned()
            .ok_or_else(|| {
                ApiError::BadRequest("Parameters has no 'resource' parameter to validate".into())
            })?
    } else {
        parsed
    };
    let body_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if body_type != def.name {
        return Err(ApiError::BadRequest(format!(
            "the resource is a {body_type} but the URL is for {}",
            def.name
        )));
    }
    let profile = parse_query(req.query_string())?
        .into_iter()
        .find(|(k, _)| k == "profile")
        .map(|(_, v)| v);
    use ers_fhir::validate as v;
    let against = match profile.as_deref().map(|p| p.split('|').next().unwrap_or(p)) {
        None => ValidateAgainst::Server,
        Some(p) if p == v::base_url(def.name) => ValidateAgainst::Base,
        Some(p) => match v::profile(p).filter(|found| found.resource_type == def.name) {
            Some(found) => ValidateAgainst::Profile(found),
            None => {
                let known: Vec<String> = v::profiles_for(def.name)
                    .into_iter()
                    .map(|k| k.url.clone())
                    .chain([v::base_url(def.name)])
                    .collect();
                return Err(ApiError::BadRequest(format!(
                    "'profile' ({p}) is not a profile of {} loaded here; known: {}",
                    def.name,
                    known.join(", ")
                )));
            }
        },
    };
    // References by identifier are resolved as a write would resolve them; one whose
    // identifier is not its target's is an issue of the outcome, as a write would refuse it.
    let sent = resource;
    let (resource, mismatched) = on_read(&state, move |c| {
        let mut r = sent.clone();
        let found = match svc::resolve_logical_references(c, &mut r) {
            Ok(()) => Vec::new(),
            Err(ServiceError::Invalid(found)) => found,
            Err(e) => return Err(e),
        };
        Ok((r, found))
    })
    .await?;
    let mut issues = svc::validate_only(def, &resource, against);
    issues.extend(mismatched);
    // The validator reports structure with locations; should it have missed what the R4 parser
    // refused, the parser's own words are the error.
    if let Some(m) = structure {
        if !issues
            .iter()
            .any(|i| i.severity == crate::fhir::outcome::Severity::Error)
        {
            issues.push(crate::fhir::outcome::Issue::error(
                "structure",
                "INVALID_FHIR_STRUCTURE",
                format!("not a valid FHIR R4 {}: {m}", def.name),
            ));
        }
    }
    let d = draft(&req, Some(&caller));
    let errors = issues
        .iter()
        .filter(|i| i.severity == crate::fhir::outcome::Severity::Error)
        .count();
    on_conn(&state, move |c| -> Result<(), ApiError> {
        let outcome = Outcome {
            action: "E",
            subtype: "validate".into(),
            status: 200,
            description: Some(format!("{errors} error(s)")),
        };
        Ok(audit::record(c, &d, &outcome, &[])?)
    })
    .await?;
    let issues = if issues.is_empty() {
        vec![Issue::information(format!(
            "No issues: the {} is valid",
            def.name
        ))]
    } else {
        issues
    };
    negotiate::respond(
        &req,
        StatusCode::OK,
        Body::Value(operation_outcome(&issues)),
    )
}

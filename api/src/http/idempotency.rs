//! Safe retries of writes: the `Idempotency-Key` request header (IETF
//! draft-ietf-httpapi-idempotency-key-header). A client that sends a write again after a lost
//! answer (a timeout, a dropped connection, a failover) with the same key gets the first
//! answer, marked `Idempotent-Replayed: true`, instead of a second referral or booking.
//!
//! - The key belongs to the caller (user or application, organisation, business function).
//! - It is claimed in the transaction of the write it names (`service::deferred::claim`), so
//!   it is held exactly when the write happened: a request that wrote nothing (refused, or
//!   failed) leaves the key free for a corrected request.
//! - The answer (status below 500, its body and the headers that describe it) is stored just
//!   after, and replayed for `ERS_IDEMPOTENCY_KEY_HOURS`.
//! - The same key with another request (method, path, query or body): 422. A key whose write
//!   is still running, or whose answer was lost with its server: 409, naming the resources the
//!   write created, updated or deleted (kept with the key in its transaction). A malformed key: 400, when
//!   the write it names comes to be written (so 401, 404, 405 and the body's 422 come first).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, FromRequest, HttpMessage, HttpResponse, ResponseError};
use chrono::{Duration, Utc};
use ers_schema::idempotency::{self, Answer, Claim, KeyRow};
use futures_util::StreamExt;

use super::handlers::{draft, on_read};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::outcome::Issue;
use crate::service::audit::{IdempotencyKey, Outcome};
use crate::service::ServiceError;
use crate::startup::AppState;

pub const HEADER: &str = "Idempotency-Key";
pub const REPLAYED: &str = "idempotent-replayed";
/// The headers of an answer that are stored and replayed with its body.
const KEPT: &[&str] = &[
    "content-type",
    "location",
    "content-location",
    "etag",
    "last-modified",
];

/// The key of a request: the header's value (a structured-field string, quotes optional), 1 to
/// 255 visible ASCII characters; or what is wrong with it.
fn key_of(value: &HeaderValue) -> Result<String, String> {
    let raw = value
        .to_str()
        .map_err(|_| "must be visible ASCII".to_owned())?
        .trim();
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    if key.is_empty() || key.len() > 255 {
        return Err(format!("({key}) must be 1 to 255 characters, e.g. a UUID"));
    }
    if !key.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"') {
        return Err(format!(
            "({key}) must be visible ASCII characters without spaces or quotes, e.g. a UUID"
        ));
    }
    Ok(key.to_owned())
}

/// Whose keys: one caller's keys never meet another's.
fn owner_of(caller: &Caller) -> String {
    format!(
        "{}|{}|{}",
        caller
            .client_id
            .as_deref()
            .or(caller.user_id.as_deref())
            .unwrap_or_default(),
        caller.organisation.as_str(),
        caller.business_function.code()
    )
}

/// What the key names: the method, path, query and body.
fn fingerprint(method: &Method, path: &str, query: &str, body: &[u8]) -> String {
    let mut all = Vec::with_capacity(body.len() + path.len() + query.len() + 16);
    for part in [
        method.as_str().as_bytes(),
        path.as_bytes(),
        query.as_bytes(),
    ] {
        all.extend_from_slice(part);
        all.push(b'\n');
    }
    all.extend_from_slice(body);
    crate::domain::sha256_hex(&all)
}

fn refuse(req: ServiceRequest, e: ApiError) -> ServiceResponse<BoxBody> {
    let resp = e.error_response();
    req.into_response(resp)
}

/// The stored answer, again.
fn replay(row: &KeyRow, status: i32) -> HttpResponse {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut res = HttpResponse::build(status);
    let headers: serde_json::Map<String, serde_json::Value> = row
        .headers
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    for (name, value) in headers {
        if let Some(v) = value.as_str() {
            res.insert_header((name.as_str(), v));
        }
    }
    res.insert_header((REPLAYED, "true"));
    res.body(row.body.clone().unwrap_or_default())
}

/// Wraps every route: writes with an `Idempotency-Key` are done once per key.
pub async fn idempotent(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let write = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(value) = req.headers().get(HEADER).cloned().filter(|_| write) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // Who asks (the handler's own extractor finds it again); someone not let in is refused
    // by the handler, as without a key, whatever the key.
    let caller = {
        let (http, payload) = req.parts_mut();
        Caller::from_request(http, payload).await
    };
    let Ok(caller) = caller else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // A malformed key refuses the write it would name, when it comes to be written (400, in
    // its transaction); anything refused before that (401, 403, 404, 405, a 422 of the body)
    // is told first, and a read ignores it.
    let key = match key_of(&value) {
        Ok(k) => k,
        Err(message) => {
            req.extensions_mut()
                .insert(IdempotencyKey::new(Err(message)));
            return Ok(next.call(req).await?.map_into_boxed_body());
        }
    };
    // Read whole to be fingerprinted, then handed on; the handler judges its size as usual
    // (the largest any route takes, an attachment, is read here).
    let limit = state
        .settings
        .max_body_bytes
        .max(crate::fhir::resources::document_reference::MAX_BYTES + 1);
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(c) if body.len() + c.len() <= limit => body.extend_from_slice(&c),
            Ok(_) => return Ok(req.error_response(actix_web::error::PayloadError::Overflow)),
            Err(e) => return Ok(req.error_response(e)),
        }
    }
    let body = body.freeze();
    req.set_payload(Payload::from(body.clone()));
    let now = Utc::now().naive_utc();
    let forgotten_before = now - Duration::hours(state.settings.idempotency_key_hours);
    let claim = Claim {
        owner: owner_of(&caller),
        key,
        fingerprint: fingerprint(req.method(), req.path(), req.query_string(), &body),
        request_id: req
            .extensions()
            .get::<super::middleware::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        forgotten_before,
    };
    let found = {
        let claim = claim.clone();
        on_read(&state, move |c| idempotency::find(c, &claim)).await
    };
    match found {
        Err(e) => return Ok(refuse(req, e)),
        Ok(Some(row)) => return Ok(answer_again(req, &state, &caller, &claim, &row).await),
        Ok(None) => {}
    }
    let key = IdempotencyKey::new(Ok(claim.clone()));
    req.extensions_mut().insert(key.clone());
    let res = next.call(req).await?.map_into_boxed_body();
    if !key.was_claimed() {
        // Nothing was written under the key (a search, a refusal): nothing to keep.
        return Ok(res);
    }
    Ok(keep_answer(res, &state, claim).await)
}

/// A key seen before: the first answer, or why there is none.
async fn answer_again(
    req: ServiceRequest,
    state: &AppState,
    caller: &Caller,
    claim: &Claim,
    row: &KeyRow,
) -> ServiceResponse<BoxBody> {
    if row.fingerprint != claim.fingerprint {
        let e = ApiError::Service(ServiceError::Invalid(vec![Issue::error(
            "business-rule",
            "INVALID_VALUE",
            format!(
                "'{HEADER}' ({}) was used for another request (request {}): a key names one request (method, path, query and body); use a new key for a new request",
                claim.key, row.request_id
            ),
        )
        .with_expression(HEADER.to_owned())]));
        return refuse(req, e);
    }
    let Some(status) = row.status else {
        let message = match &row.written {
            Some(written) => format!(
                "'{HEADER}' ({}): request {} made with this key {written}, but its answer is not stored (it is still being sent, or its server stopped); read those resources for the result, or retry in a moment",
                claim.key, row.request_id
            ),
            None => format!(
                "'{HEADER}' ({}): request {} made with this key has written its changes, but its answer is not stored (it is still being sent, or its server stopped); retry in a moment, or find the result by searching",
                claim.key, row.request_id
            ),
        };
        let e = ApiError::Service(ServiceError::Conflict {
            ers_code: "IDEMPOTENCY_KEY_IN_USE",
            message,
            expression: HEADER.into(),
        });
        return refuse(req, e);
    };
    let d = draft(req.request(), Some(caller));
    let outcome = Outcome {
        action: "R",
        subtype: "idempotent-replay".into(),
        status: u16::try_from(status).unwrap_or(200),
        description: Some(format!(
            "the answer of request {} replayed for {HEADER} {}",
            row.request_id, claim.key
        )),
    };
    if let Err(e) = state.audit.record(&d, &outcome, &[]).await {
        return refuse(req, ApiError::Service(ServiceError::Storage(e)));
    }
    req.into_response(replay(row, status))
}

/// Stores the answer of a request that claimed its key (a write happened); other answers leave
/// nothing behind. Answers of 500 and over are not stored: the key then says the write
/// happened without giving an answer (409), rather than repeat a failure that may not be one.
async fn keep_answer(
    res: ServiceResponse<BoxBody>,
    state: &AppState,
    claim: Claim,
) -> ServiceResponse<BoxBody> {
    if res.status().is_server_error() {
        return res;
    }
    let (http, res) = res.into_parts();
    let status = res.status();
    let headers: serde_json::Map<String, serde_json::Value> = KEPT
        .iter()
        .filter_map(|name| {
            let v = res.headers().get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), serde_json::Value::from(v)))
        })
        .collect();
    let (head, body) = res.into_parts();
    let bytes = match actix_web::body::to_bytes(body).await {
        Ok(b) => b,
        Err(e) => {
            log::error!(
                "request {}: the answer could not be read to keep for its {HEADER}: {e}",
                claim.request_id
            );
            let resp = ApiError::Internal("the answer could not be read".into()).error_response();
            return ServiceResponse::new(http, resp);
        }
    };
    let request_id = claim.request_id.clone();
    let answer = Answer {
        owner: claim.owner,
        key: claim.key,
        request_id: claim.request_id,
        status: i32::from(status.as_u16()),
        headers: serde_json::Value::Object(headers).to_string(),
        body: bytes.to_vec(),
    };
    if let Err(e) = state.audit.keep_answer(answer).await {
        // The write is done and answered; a retry with the key is told so (409).
        log::error!("request {request_id}: the answer for its {HEADER} was not stored: {e}");
    }
    ServiceResponse::new(http, head.set_body(BoxBody::new(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_quoted_or_not() {
        let key = |s: &str| key_of(&HeaderValue::from_str(s).expect("header"));
        assert_eq!(
            key("\"8e03978e-40d5\"").ok().as_deref(),
            Some("8e03978e-40d5")
        );
        assert_eq!(key("abc.DEF_1").ok().as_deref(), Some("abc.DEF_1"));
        assert!(key("\"\"").is_err());
        assert!(key("two words").is_err());
        assert!(key(&"k".repeat(256)).is_err());
        assert!(key(&"k".repeat(255)).is_ok());
    }

    #[test]
    fn the_fingerprint_covers_method_path_query_and_body() {
        let f = fingerprint(&Method::POST, "/FHIR/R4/ServiceRequest", "", b"{}");
        assert_ne!(
            f,
            fingerprint(&Method::PUT, "/FHIR/R4/ServiceRequest", "", b"{}")
        );
        assert_ne!(
            f,
            fingerprint(&Method::POST, "/FHIR/R4/Appointment", "", b"{}")
        );
        assert_ne!(
            f,
            fingerprint(&Method::POST, "/FHIR/R4/ServiceRequest", "a=1", b"{}")
        );
        assert_ne!(
            f,
            fingerprint(&Method::POST, "/FHIR/R4/ServiceRequest", "", b"{ }")
        );
        assert_eq!(
            f,
            fingerprint(&Method::POST, "/FHIR/R4/ServiceRequest", "", b"{}")
        );
    }
}

//! Cross-cutting request handling: request and correlation ids, security headers, panics, and
//! the guarantee that every error leaves as an OperationOutcome in the negotiated format.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpResponse};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;

use super::error::{outcome_response, OutcomeBody};
use super::negotiate::{self, Format};
use crate::fhir::outcome::Issue;

/// A handler panicked: a 500 OperationOutcome that still carries the request id.
#[derive(Debug, thiserror::Error)]
#[error("internal server error (request {request_id})")]
struct Panicked {
    request_id: String,
}

impl actix_web::ResponseError for Panicked {
    fn error_response(&self) -> HttpResponse {
        let mut res = outcome_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &[Issue::error(
                "exception",
                "SERVICE_ERROR",
                "Internal server error",
            )],
        );
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            res.headers_mut()
                .insert(HeaderName::from_static(REQUEST_ID), v);
        }
        res
    }
}

/// The id of this request (`X-Request-ID`), in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives the request body a deadline: a sender that has not finished by then (slow-loris) gets
/// its stream cut with an error, and the flag says so.
fn deadline_on_body(
    req: ServiceRequest,
    limit: std::time::Duration,
) -> (ServiceRequest, std::rc::Rc<std::cell::Cell<bool>>) {
    use actix_web::dev::Payload;
    use actix_web::error::PayloadError;
    use futures_util::StreamExt;
    let flag = std::rc::Rc::new(std::cell::Cell::new(false));
    let (http, payload) = req.into_parts();
    let deadline = actix_web::rt::time::Instant::now() + limit;
    let seen = flag.clone();
    let stream = futures_util::stream::unfold(Some(payload), move |state| {
        let seen = seen.clone();
        async move {
            let mut p = state?;
            let left = deadline.saturating_duration_since(actix_web::rt::time::Instant::now());
            match actix_web::rt::time::timeout(left, p.next()).await {
                Ok(Some(item)) => Some((item, Some(p))),
                Ok(None) => None,
                Err(_) => {
                    seen.set(true);
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    );
                    Some((Err(PayloadError::Io(e)), None))
                }
            }
        }
    });
    let boxed: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<actix_web::web::Bytes, PayloadError>>>,
    > = Box::pin(stream);
    (ServiceRequest::from_parts(http, Payload::from(boxed)), flag)
}

pub const REQUEST_ID: &str = "x-request-id";
pub const CORRELATION_ID: &str = "x-correlation-id";

fn fallback_issue(status: StatusCode, message: &str) -> Issue {
    let (code, ers, text) = match status {
        StatusCode::NOT_FOUND => (
            "not-found",
            "INVALID_VALUE",
            "No such endpoint: the FHIR base is /FHIR/R4".to_owned(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "not-supported",
            "INVALID_REQUEST_TYPE",
            "This HTTP method is not allowed on this URL".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too-costly",
            "FILE_SIZE_ERROR",
            format!("The request body is too large: {message}"),
        ),
        s if s.is_server_error() => (
            "exception",
            "SERVICE_ERROR",
            "Internal server error".to_owned(),
        ),
        _ => ("invalid", "INVALID_VALUE", message.to_owned()),
    };
    Issue::error(
        code,
        ers,
        if text.is_empty() {
            status.to_string()
        } else {
            text
        },
    )
}

/// The outermost middleware.
pub async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let request_id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let correlation = req.headers().get(CORRELATION_ID).cloned();
    let state = req
        .app_data::<actix_web::web::Data<crate::startup::AppState>>()
        .cloned();
    // Read now: the request cannot be cloned before routing.
    let wants_xml = negotiate::response_format(req.request()).ok() == Some(Format::Xml);
    let method = req.method().clone();
    let path = req.path().to_owned();

    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let max_header_bytes = state
        .as_ref()
        .map(|s| s.settings.max_header_bytes)
        .unwrap_or(usize::MAX);
    let body_timeout = state
        .as_ref()
        .map_or(std::time::Duration::from_secs(30), |s| {
            std::time::Duration::from_secs(s.settings.body_timeout_secs)
        });
    let (req, timed_out) = deadline_on_body(req, body_timeout);
    let res: ServiceResponse<BoxBody> = if header_bytes > max_header_bytes {
        let e = super::ApiError::HeadersTooLarge(header_bytes, max_header_bytes);
        let resp = actix_web::ResponseError::error_response(&e);
        req.into_response(resp)
    } else {
        match AssertUnwindSafe(next.call(req)).catch_unwind().await {
            Ok(Ok(res)) => res.map_into_boxed_body(),
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!("request {request_id}: {method} {path} panicked: {what}");
                return Err(Panicked { request_id }.into());
            }
        }
    };

    // A body that did not arrive in time (a slow or stalled sender): 408, whatever the
    // extractor made of the cut-off stream.
    let res = if timed_out.get() {
        let e = super::ApiError::BodyTimeout(body_timeout.as_secs());
        let (http, _) = res.into_parts();
        let mut resp = actix_web::ResponseError::error_response(&e);
        resp.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        ServiceResponse::new(http, resp)
    } else {
        res
    };
    let status = res.status();
    if (status.is_client_error() || status.is_server_error()) && audited_path(&path) {
        if let Some(state) = state {
            audit_failure(&res, state).await;
        }
    }
    let mut res = if status.is_client_error() || status.is_server_error() {
        finish_error(
            res,
            wants_xml,
            &format!("request {request_id}: {method} {path}"),
        )
    } else {
        res
    };

    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static(REQUEST_ID), v);
    }
    if let Some(c) = correlation {
        headers.insert(HeaderName::from_static(CORRELATION_ID), c);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The docs page needs its own scripts and styles, the dashboard its inline styles (no
    // scripts at all); everything else is data.
    let csp = if path.starts_with("/docs") {
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'"
    } else if path == "/dashboard" {
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(res)
}

/// Logs an error response and makes sure its body is an OperationOutcome in the negotiated
/// format.
fn finish_error(
    res: ServiceResponse<BoxBody>,
    wants_xml: bool,
    what: &str,
) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let error_text = res
        .response()
        .error()
        .map(|e| e.to_string())
        .unwrap_or_default();
    if status.is_server_error() {
        log::error!("{what} -> {status}: {error_text}");
    } else {
        log::warn!("{what} -> {status}: {error_text}");
    }
    let existing = res.response().extensions().get::<OutcomeBody>().cloned();
    let (r, resp) = res.into_parts();
    let (resp, outcome) = match existing {
        Some(o) => (resp, o.0),
        None => {
            let resp = outcome_response(status, &[fallback_issue(status, &error_text)]);
            let o = resp
                .extensions()
                .get::<OutcomeBody>()
                .map(|o| o.0.clone())
                .unwrap_or_default();
            (resp, o)
        }
    };
    if !wants_xml {
        return ServiceResponse::new(r, resp);
    }
    match ers_fhir::to_xml(&outcome) {
        Ok(xml) => {
            let mut out = HttpResponse::build(status).body(xml);
            for (k, v) in resp.headers().iter() {
                if k != header::CONTENT_LENGTH && k != header::CONTENT_ENCODING {
                    out.headers_mut().insert(k.clone(), v.clone());
                }
            }
            out.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/fhir+xml; charset=utf-8"),
            );
            ServiceResponse::new(r, out)
        }
        Err(_) => ServiceResponse::new(r, resp),
    }
}

/// Failures worth an audit record: everything under the FHIR base but the CapabilityStatement,
/// and the token endpoints.
fn audited_path(path: &str) -> bool {
    (path.starts_with("/FHIR/R4/") && path != "/FHIR/R4/metadata") || path.starts_with("/oauth2/")
}

/// Records a refused or failed request (who, if known; what; why) before the response leaves.
async fn audit_failure(
    res: &ServiceResponse<BoxBody>,
    state: actix_web::web::Data<crate::startup::AppState>,
) {
    use crate::domain::Caller;
    use crate::service::audit::{Outcome, Touched};
    let req = res.request();
    let caller = req.extensions().get::<Caller>().cloned();
    let mut draft = super::handlers::draft(req, caller.as_ref());
    if caller.is_none() {
        match req
            .extensions()
            .get::<super::caller::Authenticated>()
            .map(|a| a.0.clone())
        {
            Some(crate::security::Identity::User { sub, .. }) => draft.user_id = Some(sub),
            Some(crate::security::Identity::Application { client_id, org }) => {
                draft.client_id = Some(client_id);
                draft.org = Some(org);
            }
            None => {}
        }
    }
    let status = res.status().as_u16();
    let hidden = res
        .response()
        .error()
        .and_then(|e| match e.as_error::<super::ApiError>() {
            Some(super::ApiError::Service(crate::service::ServiceError::NotVisible {
                res_type,
                id,
                organisation,
            })) => Some(format!(
            "{res_type}/{id} is not visible to organisation {organisation} (answered 404 Not Found)"
        )),
            _ => None,
        });
    let subtype = match status {
        _ if hidden.is_some() => "access-denied",
        401 | 403 | 429 => "access-denied",
        _ => "failed",
    };
    let action = match req.method().as_str() {
        "POST" if req.path().ends_with("/_search") => "E",
        "POST" => "C",
        "PUT" => "U",
        "DELETE" => "D",
        _ => "R",
    };
    let description = hidden.or_else(|| res.response().error().map(|e| e.to_string()));
    let segments: Vec<&str> = req
        .path()
        .trim_start_matches("/FHIR/R4/")
        .split('/')
        .collect();
    let entities: Vec<Touched> = match segments.as_slice() {
        [t, id, ..]
            if crate::fhir::registry::find(t).is_some()
                && crate::fhir::is_valid_id(id)
                && !id.starts_with('_') =>
        {
            vec![Touched {
                entity_type: (*t).to_owned(),
                entity_id: (*id).to_owned(),
                nhs_number: None,
                ubrn: None,
            }]
        }
        _ => Vec::new(),
    };
    let outcome = Outcome {
        action,
        subtype: subtype.to_owned(),
        status,
        description,
    };
    if let Err(e) = state.audit.record(&draft, &outcome, &entities).await {
        log::error!("could not audit a failed request: {e}");
    }
}

/// CORS for browser pages served from `origins` (`*`: any): requests with the FHIR and e-RS
/// headers, and the response headers a client reads (ETag, Location, Last-Modified,
/// Content-Location for bulk jobs, Retry-After, the request and correlation ids). No cookies:
/// the API authenticates with bearer tokens, which a page sends itself.
pub fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::Method;
    let mut c = actix_cors::Cors::default()
        .allowed_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_any_header()
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::LAST_MODIFIED,
            header::CONTENT_LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-correlation-id"),
            HeaderName::from_static(super::idempotency::REPLAYED),
        ])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        c = c.allow_any_origin().send_wildcard();
    } else {
        for o in origins {
            c = c.allowed_origin(o);
        }
    }
    c
}

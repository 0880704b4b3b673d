//! The one place that picks an HTTP status and FHIR issue code for every error.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use ers_fhir::FormatError;
use ers_schema::StorageError;

use crate::fhir::outcome::{operation_outcome, Issue};
use crate::service::ServiceError;

/// An error as the HTTP layer sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("invalid search")]
    Search(Vec<Issue>),
    #[error("Unknown resource type '{0}': this server hosts {1}")]
    UnknownType(String, String),
    #[error("Missing or empty {0} header.")]
    MissingHeader(&'static str),
    #[error("{header} header: {message}")]
    BadHeader {
        header: &'static str,
        message: String,
    },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Bundle.entry[{0}]: {1}")]
    InEntry(usize, Box<ApiError>),
    #[error("The request headers are too large: {0} bytes, at most {1} are accepted")]
    HeadersTooLarge(usize, usize),
    #[error("The request body did not arrive within {0} s; send it whole, faster")]
    BodyTimeout(u64),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("Too many requests: slow down and retry after {0} s")]
    TooManyRequests(u64),
    #[error("The server is busy: {0}")]
    Unavailable(String),
    #[error("Internal server error: {0}")]
    Internal(String),
}

impl ApiError {
    /// 400 for a bad query parameter, naming it: `Search parameter 'x': what was wrong`.
    pub fn bad_param(param: &str, msg: impl std::fmt::Display) -> ApiError {
        ApiError::Search(vec![Issue::error(
            "invalid",
            "INVALID_VALUE",
            format!("Search parameter '{param}': {msg}"),
        )
        .with_expression(param.to_owned())])
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(format!("a worker failed: {e}"))
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::Service(ServiceError::from(e))
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::Service(ServiceError::Storage(e))
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> Self {
        ApiError::Unavailable(format!("no database connection: {e}"))
    }
}

/// The OperationOutcome JSON of an error response, kept so the outcome middleware can write it
/// in the negotiated format.
#[derive(Debug, Clone)]
pub struct OutcomeBody(pub serde_json::Value);

impl ApiError {
    /// Status and issues.
    pub fn parts(&self) -> (StatusCode, Vec<Issue>) {
        use ServiceError as S;
        let msg = self.to_string();
        let one =
            |code: &'static str, ers: &'static str| vec![Issue::error(code, ers, msg.clone())];
        // An error of the If-Match header names it.
        let at_if_match = |code: &'static str, ers: &'static str| {
            vec![Issue::error(code, ers, msg.clone()).with_expression("If-Match")]
        };
        match self {
            ApiError::Service(s) => match s {
                S::NotFound { .. } | S::NotVisible { .. } => (
                    StatusCode::NOT_FOUND,
                    one("not-found", "REFERENCE_NOT_FOUND"),
                ),
                S::VersionNotFound { .. } => (
                    StatusCode::NOT_FOUND,
                    one("not-found", "REFERENCE_NOT_FOUND"),
                ),
                S::Gone { .. } => (StatusCode::GONE, one("deleted", "REFERENCE_NOT_FOUND")),
                S::Expired { .. } => (StatusCode::GONE, one("deleted", "UBRN_EXPIRED")),
                S::VersionMismatch { .. } => (
                    StatusCode::PRECONDITION_FAILED,
                    at_if_match("conflict", "INVALID_VALUE"),
                ),
                S::ConcurrentUpdate { .. } => (
                    StatusCode::CONFLICT,
                    one("conflict", "INVALID_REQUEST_STATE"),
                ),
                S::StaleVersion { .. } => (
                    StatusCode::CONFLICT,
                    at_if_match("conflict", "INVALID_REQUEST_STATE"),
                ),
                S::RequestState(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    one("business-rule", "INVALID_REQUEST_STATE"),
                ),
                S::IfMatchRequired { .. } => (
                    StatusCode::PRECONDITION_REQUIRED,
                    at_if_match("required", "MISSING_HEADER"),
                ),
                S::BadRequest(_) => (StatusCode::BAD_REQUEST, one("invalid", "INVALID_VALUE")),
                S::BadSearch { param, .. } => (
                    StatusCode::BAD_REQUEST,
                    vec![Issue::error("invalid", "INVALID_VALUE", msg.clone())
                        .with_expression(param.clone())],
                ),
                S::BadHeader { header, .. } => bad_header(header, msg.clone()),
                S::Invalid(issues) => (StatusCode::UNPROCESSABLE_ENTITY, issues.clone()),
                S::Duplicate { res_type, .. } | S::DuplicateConcurrent { res_type, .. } => (
                    StatusCode::CONFLICT,
                    vec![
                        Issue::error("duplicate", "INAPPROPRIATE_VALUE", msg.clone())
                            .with_expression(format!("{res_type}.identifier")),
                    ],
                ),
                S::ReferenceNotFound { path, .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    vec![
                        Issue::error("not-found", "REFERENCE_NOT_FOUND", msg.clone())
                            .with_expression(path.clone()),
                    ],
                ),
                S::SubjectNotFound { path, .. } => (
                    StatusCode::NOT_FOUND,
                    vec![
                        Issue::error("not-found", "REFERENCE_NOT_FOUND", msg.clone())
                            .with_expression(path.clone()),
                    ],
                ),
                S::StillReferenced { .. } => (
                    StatusCode::CONFLICT,
                    one("conflict", "INVALID_REQUEST_STATE"),
                ),
                S::Forbidden(_) => (StatusCode::FORBIDDEN, one("forbidden", "NO_RELATIONSHIP")),
                S::MethodNotAllowed(_) => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    one("not-supported", "INVALID_REQUEST_TYPE"),
                ),
                S::ConditionalMultiple { .. } => (
                    StatusCode::PRECONDITION_FAILED,
                    one("multiple-matches", "INVALID_VALUE"),
                ),
                S::Conflict {
                    ers_code,
                    expression,
                    ..
                } => (
                    StatusCode::CONFLICT,
                    vec![Issue::error("conflict", ers_code, msg.clone())
                        .with_expression(expression.clone())],
                ),
                S::UnsupportedType(_) => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    vec![Issue::error("not-supported", "INVALID_VALUE", msg.clone())
                        .with_expression("Content-Type")],
                ),
                S::TooLarge(_) => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    one("too-costly", "FILE_SIZE_ERROR"),
                ),
                S::Unavailable(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    one("transient", "SYSTEM_UNAVAILABLE"),
                ),
                S::Internal(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    vec![Issue::error(
                        "exception",
                        "SERVICE_ERROR",
                        "Internal server error; the request was not applied",
                    )],
                ),
                S::Storage(e) if e.is_transient() => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    one("transient", "SYSTEM_UNAVAILABLE"),
                ),
                S::Storage(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    vec![Issue::error(
                        "exception",
                        "SERVICE_ERROR",
                        "Internal server error: the database failed; the request was not applied",
                    )],
                ),
            },
            ApiError::Format(FormatError::Syntax(_)) => (
                StatusCode::BAD_REQUEST,
                one("structure", "INVALID_FHIR_STRUCTURE"),
            ),
            ApiError::Format(FormatError::Structure(m)) => {
                let ers = if m.contains("unknown field") {
                    "UNEXPECTED_FIELD"
                } else {
                    "INVALID_FHIR_STRUCTURE"
                };
                (StatusCode::BAD_REQUEST, one("structure", ers))
            }
            ApiError::Format(FormatError::Doctype) => (
                StatusCode::BAD_REQUEST,
                one("security", "INVALID_FHIR_STRUCTURE"),
            ),
            ApiError::Format(FormatError::Serialise(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                one("exception", "SERVICE_ERROR"),
            ),
            ApiError::Search(issues) => (StatusCode::BAD_REQUEST, issues.clone()),
            ApiError::UnknownType(..) => {
                (StatusCode::NOT_FOUND, one("not-supported", "INVALID_VALUE"))
            }
            ApiError::MissingHeader(h) => (
                StatusCode::BAD_REQUEST,
                vec![Issue::error("required", "MISSING_HEADER", msg.clone())
                    .with_expression(h.to_string())],
            ),
            ApiError::BadHeader { header, .. } => bad_header(header, msg.clone()),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                one("not-supported", "INVALID_VALUE"),
            ),
            ApiError::NotAcceptable(_) => (
                StatusCode::NOT_ACCEPTABLE,
                one("not-supported", "INVALID_VALUE"),
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, one("invalid", "INVALID_VALUE")),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, one("not-found", "INVALID_VALUE")),
            ApiError::InEntry(i, inner) => {
                let (status, issues) = inner.parts();
                let issues = issues
                    .into_iter()
                    .map(|mut issue| {
                        issue.diagnostics = format!("Bundle.entry[{i}]: {}", issue.diagnostics);
                        issue.expression = Some(match issue.expression {
                            // The entry's request (a search entry's parameters), not its resource.
                            Some(e) if e.starts_with("request.") => {
                                format!("Bundle.entry[{i}].{e}")
                            }
                            Some(e) => format!(
                                "Bundle.entry[{i}].resource.{}",
                                e.split_once('.').map(|(_, rest)| rest).unwrap_or(&e)
                            ),
                            None => format!("Bundle.entry[{i}]"),
                        });
                        issue
                    })
                    .collect();
                (status, issues)
            }
            ApiError::HeadersTooLarge(..) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                one("too-costly", "INVALID_VALUE"),
            ),
            ApiError::BodyTimeout(_) => {
                (StatusCode::REQUEST_TIMEOUT, one("timeout", "INVALID_VALUE"))
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, one("login", "NO_ACCESS")),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, one("forbidden", "FORBIDDEN")),
            ApiError::TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                one("throttled", "TOO_MANY_REQUESTS"),
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                one("transient", "SYSTEM_UNAVAILABLE"),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                vec![Issue::error(
                    "exception",
                    "SERVICE_ERROR",
                    "Internal server error",
                )],
            ),
        }
    }
}

/// A request header that is not as it must be (from the HTTP layer or a use case alike).
fn bad_header(header: &str, message: String) -> (StatusCode, Vec<Issue>) {
    (
        StatusCode::BAD_REQUEST,
        vec![Issue::error("value", "INVALID_VALUE", message).with_expression(header.to_owned())],
    )
}

/// An OperationOutcome response (JSON; the outcome middleware re-encodes it when XML was asked).
pub fn outcome_response(status: StatusCode, issues: &[Issue]) -> HttpResponse {
    let oo = operation_outcome(issues);
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CONTENT_TYPE, "application/fhir+json; charset=utf-8"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        res.insert_header((header::RETRY_AFTER, "5"));
    }
    let mut res = res.body(oo.to_string());
    res.extensions_mut().insert(OutcomeBody(oo));
    res
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        // Logged with the request id by the outcome middleware.
        let (status, issues) = self.parts();
        let mut res = outcome_response(status, &issues);
        match self {
            ApiError::Unauthorized(m) => {
                let v = format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    m.replace('"', "'")
                );
                if let Ok(v) = header::HeaderValue::from_str(&v) {
                    res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::TooManyRequests(secs) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(*secs));
            }
            _ => {}
        }
        res
    }
}

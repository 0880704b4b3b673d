//! Content negotiation in one place: the body's format from `Content-Type`, the response's
//! from `_format`, then `Accept`, else FHIR JSON.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::ApiError;
use crate::startup::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/fhir+json; charset=utf-8",
            Format::Xml => "application/fhir+xml; charset=utf-8",
        }
    }
}

/// The FHIR version this server speaks, as the `fhirVersion` MIME-type parameter and
/// `$versions` name it (major.minor).
pub const FHIR_VERSION: &str = "4.0";

/// The `fhirVersion` a media type (or media range) names, unless it is R4's: `4.0`, or a patch
/// release of it such as `4.0.1`.
fn other_fhir_version(media: &str) -> Option<&str> {
    let v = media.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("fhirVersion")
            .then(|| v.trim().trim_matches('"'))
    })?;
    let r4 = v == FHIR_VERSION
        || v.strip_prefix("4.0.")
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (!r4).then_some(v)
}

fn format_of_mime(mime: &str) -> Option<Format> {
    let m = mime
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match m.as_str() {
        "application/fhir+json"
        | "application/json"
        | "application/json+fhir"
        | "json"
        | "text/json" => Some(Format::Json),
        "application/fhir+xml"
        | "application/xml"
        | "application/xml+fhir"
        | "xml"
        | "text/xml" => Some(Format::Xml),
        _ => None,
    }
}

pub(super) fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The format to answer in, or 406 when the client accepts none we write.
pub fn response_format(req: &HttpRequest) -> Result<Format, ApiError> {
    if let Some(f) = query_param(req, "_format") {
        if let Some(v) = other_fhir_version(&f) {
            return Err(not_this_version("_format", &f, v));
        }
        return format_of_mime(&f).ok_or_else(|| {
            ApiError::NotAcceptable(format!("_format '{f}' is not supported: use json, xml, application/fhir+json or application/fhir+xml"))
        });
    }
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Format::Json);
    };
    // Highest q first; ties keep the client's order.
    let mut ranges: Vec<(f32, usize, &str, &str)> = accept
        .split(',')
        .enumerate()
        .map(|(i, r)| {
            let mut parts = r.split(';');
            let mime = parts.next().unwrap_or_default().trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q, i, mime, r)
        })
        .filter(|(q, ..)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    // A range for another FHIR version is one this server cannot answer.
    let mut other_version = None;
    for (_, _, mime, range) in &ranges {
        if let Some(v) = other_fhir_version(range) {
            other_version.get_or_insert(v);
            continue;
        }
        if let Some(f) = format_of_mime(mime) {
            return Ok(f);
        }
        if matches!(*mime, "*/*" | "application/*" | "") {
            return Ok(Format::Json);
        }
    }
    Err(match other_version {
        Some(v) => not_this_version("Accept", accept, v),
        None => ApiError::NotAcceptable(format!(
            "Accept '{accept}' names no format this server writes: use application/fhir+json or application/fhir+xml"
        )),
    })
}

/// 406 for an answer asked for in another FHIR version.
fn not_this_version(what: &str, value: &str, version: &str) -> ApiError {
    ApiError::NotAcceptable(format!(
        "{what} '{value}' asks for FHIR {version}: this server speaks FHIR R4 only (fhirVersion={FHIR_VERSION}, or none; GET [base]/$versions)"
    ))
}

/// The format of a request body, or 415.
pub fn request_format(req: &HttpRequest) -> Result<Format, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct.is_empty() {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type is missing: send application/fhir+json or application/fhir+xml".into(),
        ));
    }
    if let Some(v) = other_fhir_version(ct) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{ct}' is FHIR {v}: this server takes FHIR R4 only (fhirVersion={FHIR_VERSION}, or none)"
        )));
    }
    format_of_mime(ct).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "Content-Type '{ct}' is not supported: send application/fhir+json or application/fhir+xml"
        ))
    })
}

/// Parses a FHIR request body in its declared format.
pub fn parse_body(req: &HttpRequest, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the request body is empty: a FHIR resource is required".into(),
        ));
    }
    let mut value = match request_format(req)? {
        Format::Json => ers_fhir::parse_json(body)?,
        Format::Xml => ers_fhir::parse_xml(body)?,
    };
    localise(req, &mut value);
    Ok(value)
}

/// A `PATCH` body: a JSON Patch document (RFC 6902, `application/json-patch+json`), or 415.
pub fn json_patch(req: &HttpRequest, body: &[u8]) -> Result<json_patch::Patch, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json-patch+json") {
        return Err(ApiError::UnsupportedMediaType(
            if format_of_mime(ct).is_some() {
                format!("Content-Type '{ct}': PATCH takes a JSON Patch document (application/json-patch+json); FHIRPath Patch (a Parameters resource) is not supported")
            } else {
                format!("Content-Type '{ct}' is not supported: PATCH takes a JSON Patch document (application/json-patch+json)")
            },
        ));
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the request body is empty: a JSON Patch document (an array of operations) is required"
                .into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not a JSON Patch document (an array of operations, each with 'op' and 'path'): {e}"
        ))
    })
}

/// A resource a request made (a patched one) in the form a parsed body has: checked against
/// R4's structure, and references to this server's own `base` made relative.
pub fn as_parsed(resource: &Value, base: &str) -> Result<Value, String> {
    let bytes = serde_json::to_vec(resource).map_err(|e| e.to_string())?;
    let mut value = ers_fhir::parse_json(&bytes).map_err(|e| e.to_string())?;
    crate::fhir::index::localise_references(&mut value, base);
    Ok(value)
}

/// References to this server's own base URL, as the client sees it, become relative: what is
/// stored, checked and compared is the same whichever form the client sent.
fn localise(req: &HttpRequest, value: &mut Value) {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        crate::fhir::index::localise_references(value, &super::handlers::base_url(req, state));
    }
}

/// A body to `$validate`: as `parse_body`, except that well-formed JSON that is not a valid R4
/// structure is returned as sent, with the structural problem, for the validator to report.
pub fn parse_body_for_validation(
    req: &HttpRequest,
    body: &[u8],
) -> Result<(Value, Option<String>), ApiError> {
    match request_format(req)? {
        Format::Json if !body.is_empty() => {
            let (mut value, structure) = ers_fhir::parse_json_for_validation(body)?;
            localise(req, &mut value);
            Ok((value, structure))
        }
        _ => Ok((parse_body(req, body)?, None)),
    }
}

/// A resource body: stored JSON text (sent as is when JSON was asked) or a value.
pub enum Body {
    Text(String),
    Value(Value),
}

/// Whether `_pretty=true` was asked.
pub fn pretty(req: &HttpRequest) -> bool {
    query_param(req, "_pretty").as_deref() == Some("true")
}

/// Encodes a resource in the negotiated format.
pub fn encode(body: Body, format: Format, pretty: bool) -> Result<Vec<u8>, ApiError> {
    match (format, body) {
        (Format::Json, Body::Text(t)) if !pretty => Ok(t.into_bytes()),
        (Format::Json, Body::Text(t)) => {
            let v: Value = serde_json::from_str(&t)
                .map_err(|e| ApiError::Internal(format!("stored JSON unreadable: {e}")))?;
            serde_json::to_vec_pretty(&v).map_err(|e| ApiError::Internal(e.to_string()))
        }
        (Format::Json, Body::Value(v)) => {
            if pretty {
                serde_json::to_vec_pretty(&v).map_err(|e| ApiError::Internal(e.to_string()))
            } else {
                serde_json::to_vec(&v).map_err(|e| ApiError::Internal(e.to_string()))
            }
        }
        (Format::Xml, Body::Text(t)) => {
            let v: Value = serde_json::from_str(&t)
                .map_err(|e| ApiError::Internal(format!("stored JSON unreadable: {e}")))?;
            Ok(ers_fhir::to_xml(&v)?)
        }
        (Format::Xml, Body::Value(v)) => Ok(ers_fhir::to_xml(&v)?),
    }
}

/// A FHIR response in the negotiated format.
pub fn respond(
    req: &HttpRequest,
    status: StatusCode,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let format = response_format(req)?;
    let bytes = encode(body, format, pretty(req))?;
    Ok(HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, format.content_type()))
        .body(bytes))
}

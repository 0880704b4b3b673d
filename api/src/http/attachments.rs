//! Attachments over HTTP: `POST /Binary` takes the file's bytes as they are (its Content-Type,
//! and a file name in `Content-Disposition`), or a FHIR Binary resource (`application/fhir+json`
//! or `+xml`: its `contentType` and base64 `data`); `GET /Binary/{id}` streams them back, or
//! gives the FHIR Binary resource (base64) to a client that asks for FHIR JSON or XML.

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};

use super::handlers::{authorise, base_url, draft, holds, if_none_match, on_conn};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::datetime;
use crate::fhir::outcome::Issue;
use crate::security::permissions::Action;
use crate::service::attachments::{self, Upload};
use crate::service::ServiceError;
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

/// Chunks of a streamed download.
const CHUNK: usize = 64 * 1024;

/// e-RS A020's header for the file's name.
const ERS_FILE_NAME: &str = "NHSD-eRS-File-Name";

/// The upload's file name: e-RS's `NHSD-eRS-File-Name`, or `Content-Disposition`'s.
fn filename(req: &HttpRequest) -> Option<String> {
    if let Some(name) = req
        .headers()
        .get(ERS_FILE_NAME)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .filter(|n| !n.is_empty())
    {
        return Some(name);
    }
    let raw = req.headers().get(header::CONTENT_DISPOSITION)?;
    let cd = ContentDisposition::from_raw(raw).ok()?;
    cd.get_filename().map(str::to_owned).or_else(|| {
        cd.get_filename_ext()
            .map(|v| String::from_utf8_lossy(&v.value).into_owned())
    })
}

fn metadata(meta: &ers_schema::BinaryMeta) -> serde_json::Value {
    json!({
        "resourceType": "Binary",
        "id": meta.id,
        "meta": {"lastUpdated": datetime::instant(meta.uploaded_at)},
        "contentType": meta.content_type,
    })
}

pub async fn upload(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("Binary", Action::Create, &caller)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (body, content_type) = if is_fhir(&content_type) {
        binary_resource(&req, &body)?
    } else {
        (body, content_type)
    };
    let name = filename(&req);
    let d = draft(&req, Some(&caller));
    let scanner = state.settings.scan_command.clone();
    let meta = on_conn(&state, move |c| {
        attachments::upload(
            c,
            Upload {
                bytes: &body,
                content_type: &content_type,
                filename: name.as_deref(),
                scan_command: scanner.as_deref(),
            },
            &caller,
            &d,
        )
    })
    .await?;
    let location = format!("{}/Binary/{}", base_url(&req, &state), meta.id);
    let mut res = negotiate::respond(&req, StatusCode::CREATED, Body::Value(metadata(&meta)))?;
    res.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(&location)
            .map_err(|e| ApiError::Internal(format!("location header: {e}")))?,
    );
    Ok(res)
}

/// Whether an upload's Content-Type is a FHIR format (none of the attachment types is).
fn is_fhir(content_type: &str) -> bool {
    content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/fhir+")
}

/// The file a FHIR Binary resource carries: its decoded `data` and its `contentType`.
fn binary_resource(req: &HttpRequest, body: &[u8]) -> Result<(web::Bytes, String), ApiError> {
    let v = negotiate::parse_body(req, body)?;
    let invalid = |issue: Issue| ApiError::Service(ServiceError::Invalid(vec![issue]));
    let res_type = v
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if res_type != "Binary" {
        return Err(invalid(Issue::invalid_at(
            "resourceType",
            format!("({res_type}) must be Binary: POST /Binary takes a file, or a Binary resource carrying one"),
        )));
    }
    // (The parser refuses a Binary without its contentType.)
    let content_type = v
        .get("contentType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let data = v.get("data").and_then(Value::as_str).ok_or_else(|| {
        invalid(Issue::required_at(
            "Binary.data",
            "is missing: the file, base64-encoded",
        ))
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| {
            invalid(Issue::invalid_at(
                "Binary.data",
                format!("is not base64: {e}"),
            ))
        })?;
    Ok((web::Bytes::from(bytes), content_type.to_owned()))
}

pub async fn no_document_writes() -> Reply {
    Err(ApiError::Service(crate::service::ServiceError::MethodNotAllowed(
        "Documents are attached to a referral by its operations: POST ServiceRequest/{id}/$ers.maintainReferralLetter (the referrer's letter) or $ers.addProviderAttachment (the provider's)".into(),
    )))
}

/// Whether the client asked for the FHIR Binary resource rather than the file.
fn wants_fhir(req: &HttpRequest) -> bool {
    req.query_string().contains("_format=")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("fhir"))
}

pub async fn download(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("Binary", Action::Read, &caller)?;
    let id = path.into_inner();
    let d = draft(&req, Some(&caller));
    // The file itself is tagged with its SHA-256; a client holding it gets 304 and the bytes
    // are not read (the FHIR form carries no tag).
    let fhir = wants_fhir(&req);
    let condition = if_none_match(&req).filter(|_| !fhir);
    let (meta, data) = on_conn(&state, move |c| {
        attachments::download(c, &id, &caller, &d, |m| {
            condition.is_some_and(|c| holds(&c, &header::EntityTag::new_strong(m.sha256.clone())))
        })
    })
    .await?;
    let tag = (header::ETAG, format!("\"{}\"", meta.sha256));
    let Some(data) = data else {
        return Ok(HttpResponse::NotModified().insert_header(tag).finish());
    };
    if fhir {
        let mut v = metadata(&meta);
        v["data"] = json!(base64::engine::general_purpose::STANDARD.encode(&data));
        return negotiate::respond(&req, StatusCode::OK, Body::Value(v));
    }
    let mut res = HttpResponse::Ok();
    res.content_type(meta.content_type.as_str())
        .insert_header(tag)
        .insert_header((header::CONTENT_LENGTH, data.len()));
    if let Some(name) = &meta.filename {
        res.insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(name.clone())],
        });
    }
    // Streamed in chunks: the response never holds a second copy of the file.
    let chunks = futures_util::stream::iter(
        (0..data.len())
            .step_by(CHUNK)
            .map(move |i| {
                Ok::<_, actix_web::Error>(web::Bytes::copy_from_slice(
                    &data[i..(i + CHUNK).min(data.len())],
                ))
            })
            .collect::<Vec<_>>(),
    );
    Ok(res.streaming(chunks))
}

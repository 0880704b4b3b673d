//! Attachments of a referral as DocumentReference: type REFERRER (the referral letter is the
//! set of current REFERRER documents, listed in the referral's `supportingInfo`) or PROVIDER,
//! `context.related` the referral, and `content.attachment.url` the uploaded `Binary/{id}`
//! (never the bytes: a referral or document read stays small; the download streams).

use crate::fhir::At;
use serde_json::{json, Value};

pub const ATTACHMENT_TYPE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-AttachmentType";

/// The largest attachment (e-RS: 5 MB).
pub const MAX_BYTES: usize = 5 * 1024 * 1024;

/// The attachment kinds e-RS accepts: MIME type and the file name extensions that go with it.
pub const ALLOWED: &[(&str, &[&str])] = &[
    ("text/plain", &["txt"]),
    ("application/pdf", &["pdf"]),
    ("text/xml", &["xml"]),
    ("application/xml", &["xml"]),
    ("application/rtf", &["rtf"]),
    ("text/rtf", &["rtf"]),
    ("text/richtext", &["rtx"]),
    ("audio/basic", &["au"]),
    ("audio/mpeg", &["mp3"]),
    ("image/png", &["png"]),
    ("image/gif", &["gif"]),
    ("image/jpeg", &["jpg", "jpe", "jpeg"]),
    ("image/tiff", &["tif", "tiff"]),
    ("video/mpeg", &["mpg", "mpeg", "mpe"]),
    ("application/msword", &["doc"]),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        &["docx"],
    ),
    ("application/dicom", &["dcm"]),
];

/// The Binary id an attachment points at (`Binary/{id}` or a full URL ending so).
pub fn binary_id(url: &str) -> Option<&str> {
    let rest = url.rsplit_once("Binary/").map(|(_, id)| id)?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// Search index values for the `binary` parameter.
pub fn extract_binary(d: &Value) -> Vec<Value> {
    d.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.at("/attachment/url").and_then(Value::as_str))
        .filter_map(binary_id)
        .map(|id| json!(id))
        .collect()
}

/// The attachment type code (REFERRER or PROVIDER) of a document.
pub fn kind(d: &Value) -> Option<&str> {
    d.at("/type/coding")?
        .as_array()?
        .iter()
        .find(|c| c.get("system").and_then(Value::as_str) == Some(ATTACHMENT_TYPE_SYSTEM))?
        .get("code")?
        .as_str()
}

//! Attachments: upload (an allowed type, at most 5 MB, content that is what its Content-Type
//! says, a file name that matches), download (by the uploading organisation, or by anyone who
//! may see a document pointing at it), and the referral operations that attach them as
//! DocumentReferences — the referral letter as an explicit set, and provider documents.

use crate::fhir::At;
use chrono::{NaiveDateTime, Utc};
use ers_schema::search as store_search;
use ers_schema::{store, BinaryMeta, DbConnection, NewBinary, ResourceRow};
use serde_json::{json, Value};

use super::audit::{self, AuditDraft, Outcome, Touched};
use super::referral::{self as referral_svc, invalid, Acting, Expected};
use super::resource::{self, Writer};
use super::stored_value;
use super::{scope, Result, ServiceError};
use crate::domain::referral::ReferralAction;
use crate::domain::Caller;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::resources::document_reference::{self as docs, ALLOWED, ATTACHMENT_TYPE_SYSTEM};
use crate::fhir::{datetime, search as fsearch};

fn def(name: &str) -> Result<&'static ResourceDef> {
    registry::find(name).ok_or_else(|| ServiceError::Internal(format!("{name} is not registered")))
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// An upload as received.
pub struct Upload<'a> {
    pub bytes: &'a [u8],
    /// The request's Content-Type (parameters such as charset are ignored).
    pub content_type: &'a str,
    /// From `Content-Disposition: attachment; filename=…`, if given.
    pub filename: Option<&'a str>,
    /// The malware scanner's command (`ERS_SCAN_COMMAND`), if one is configured.
    pub scan_command: Option<&'a str>,
}

/// Whether the bytes are what the declared type says. Binary formats are recognised by their
/// signatures (the `infer` crate); text formats must be text.
fn content_matches(content_type: &str, bytes: &[u8]) -> bool {
    let text = || std::str::from_utf8(bytes).is_ok_and(|t| !t.contains('\0'));
    match content_type {
        "text/plain" | "text/richtext" => text(),
        "text/xml" | "application/xml" => {
            text()
                && String::from_utf8_lossy(bytes)
                    .trim_start_matches('\u{feff}')
                    .trim_start()
                    .starts_with('<')
        }
        "application/rtf" | "text/rtf" => bytes.starts_with(b"{\\rtf"),
        "audio/basic" => bytes.starts_with(b".snd"),
        "application/msword" => matches!(
            infer::get(bytes).map(|t| t.mime_type()),
            Some("application/msword" | "application/x-ole-storage")
        ),
        declared => infer::get(bytes).is_some_and(|t| t.mime_type() == declared),
    }
}

/// Checks and stores an upload; only the uploading organisation can read it until a referral
/// document points at it.
pub fn upload(
    conn: &mut DbConnection,
    up: Upload<'_>,
    caller: &Caller,
    audit_draft: &AuditDraft,
) -> Result<BinaryMeta> {
    let content_type = up
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((_, extensions)) = ALLOWED.iter().find(|(t, _)| *t == content_type) else {
        return Err(ServiceError::UnsupportedType(format!(
            "Content-Type '{content_type}' is not an attachment type e-RS accepts; send one of: {}",
            ALLOWED
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if up.bytes.is_empty() {
        return Err(invalid(
            "Binary.data",
            "MISSING_VALUE",
            "required",
            "the body is empty: send the file's bytes".into(),
        ));
    }
    if up.bytes.len() > docs::MAX_BYTES {
        return Err(ServiceError::TooLarge(format!(
            "the attachment is {} bytes; the limit is {} bytes (5 MB)",
            up.bytes.len(),
            docs::MAX_BYTES
        )));
    }
    if let Some(name) = up.filename {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        if name.is_empty() || name.len() > 255 || name.contains(['/', '\\', '\0']) {
            return Err(invalid(
                "Content-Disposition",
                "INVALID_VALUE",
                "value",
                format!("the file name '{name}' must be 1-255 characters without path separators"),
            ));
        }
        if !ext.as_deref().is_some_and(|e| extensions.contains(&e)) {
            return Err(invalid(
                "Content-Disposition",
                "INVALID_VALUE",
                "value",
                format!(
                    "the file name '{name}' does not match Content-Type {content_type} (expected .{})",
                    extensions.join(" or .")
                ),
            ));
        }
    }
    if !content_matches(&content_type, up.bytes) {
        return Err(invalid(
            "Binary.data",
            "INVALID_VALUE",
            "value",
            format!("the content is not {content_type}, as the Content-Type says"),
        ));
    }
    // Scanned last, once everything cheaper has passed; nothing is stored if it finds a threat.
    if let super::scan::Verdict::Threat(name) = super::scan::scan(up.scan_command, up.bytes)? {
        return Err(invalid(
            "Binary.data",
            "THREATS_FOUND",
            "security",
            format!("the malware scanner found a threat in the file ({name}); it was not stored"),
        ));
    }
    let id = crate::fhir::new_id();
    let sha256 = crate::domain::sha256_hex(up.bytes);
    let row = NewBinary {
        id: &id,
        content_type: &content_type,
        size: i64::try_from(up.bytes.len()).unwrap_or(i64::MAX),
        sha256: &sha256,
        filename: up.filename,
        uploaded_by: caller.organisation.as_str(),
        uploaded_at: now(),
        data: up.bytes,
    };
    ers_schema::write_tx(conn, |c| {
        store::insert_binary(c, &row)?;
        audit::record(
            c,
            audit_draft,
            &Outcome {
                action: "C",
                subtype: "create".into(),
                status: 201,
                description: Some(format!("upload of {} bytes of {content_type}", row.size)),
            },
            &[touched(&id)],
        )?;
        store::binary_meta(c, &id)?
            .ok_or_else(|| ServiceError::Internal("the upload was not stored".into()))
    })
}

fn touched(id: &str) -> Touched {
    Touched {
        entity_type: "Binary".into(),
        entity_id: id.to_owned(),
        nhs_number: None,
        ubrn: None,
    }
}

/// Whether a document the caller may see points at the upload.
fn attached_where_visible(c: &mut DbConnection, id: &str, caller: &Caller) -> Result<bool> {
    let d = def("DocumentReference")?;
    let params = vec![("binary".to_owned(), id.to_owned())];
    let mut req = fsearch::parse(d, &params, true).map_err(ServiceError::Invalid)?;
    scope::restrict(d, &mut req.query.criteria, caller);
    req.query.offset = 0;
    req.query.limit = 1;
    Ok(!store_search::search(c, &req.query, false)?.0.is_empty())
}

/// The metadata of an upload the caller may read (404 otherwise, as if it did not exist).
fn visible_meta(c: &mut DbConnection, id: &str, caller: &Caller) -> Result<BinaryMeta> {
    let Some(meta) = store::binary_meta(c, id)? else {
        return Err(ServiceError::NotFound {
            res_type: "Binary".into(),
            id: id.to_owned(),
        });
    };
    if meta.uploaded_by != caller.organisation.as_str() && !attached_where_visible(c, id, caller)? {
        return Err(ServiceError::NotVisible {
            res_type: "Binary".into(),
            id: id.to_owned(),
            organisation: caller.organisation.as_str().to_owned(),
        });
    }
    Ok(meta)
}

/// An upload's metadata and bytes, for the caller's organisation, audited as a read. When
/// `held` says the caller already has these bytes (its copy's SHA-256), they are not read
/// (None): the answer is 304.
pub fn download(
    conn: &mut DbConnection,
    id: &str,
    caller: &Caller,
    audit_draft: &AuditDraft,
    held: impl FnOnce(&BinaryMeta) -> bool,
) -> Result<(BinaryMeta, Option<Vec<u8>>)> {
    let meta = visible_meta(conn, id, caller)?;
    let data = if held(&meta) {
        None
    } else {
        Some(
            store::binary_data(conn, id)?.ok_or_else(|| ServiceError::NotFound {
                res_type: "Binary".into(),
                id: id.to_owned(),
            })?,
        )
    };
    audit::record(
        conn,
        audit_draft,
        &Outcome {
            action: "R",
            subtype: "read".into(),
            status: if data.is_some() { 200 } else { 304 },
            description: None,
        },
        &[touched(id)],
    )?;
    Ok((meta, data))
}

/// One document to attach: the upload (`Binary/{id}` or its id) and an optional title.
#[derive(Debug, Clone)]
pub struct Attaching {
    pub binary: String,
    pub title: Option<String>,
}

impl Attaching {
    fn id(&self) -> &str {
        docs::binary_id(&self.binary).unwrap_or(&self.binary)
    }
}

/// The referral's current documents of one kind.
fn current_documents(
    c: &mut DbConnection,
    referral_id: &str,
    kind: &str,
) -> Result<Vec<ResourceRow>> {
    let d = def("DocumentReference")?;
    let params = vec![
        (
            "related".to_owned(),
            format!("ServiceRequest/{referral_id}"),
        ),
        (
            "type".to_owned(),
            format!("{ATTACHMENT_TYPE_SYSTEM}|{kind}"),
        ),
        ("status".to_owned(), "current".to_owned()),
        ("_sort".to_owned(), "_lastUpdated".to_owned()),
    ];
    let req = fsearch::parse(d, &params, true).map_err(ServiceError::Invalid)?;
    let mut q = req.query;
    q.offset = 0;
    q.limit = 1000;
    Ok(store_search::search(c, &q, false)?.0)
}

/// Checks an upload may be attached by the caller: it exists and their organisation sent it.
fn own_upload(
    c: &mut DbConnection,
    a: &Attaching,
    at: &str,
    caller: &Caller,
) -> Result<BinaryMeta> {
    match store::binary_meta(c, a.id())? {
        Some(m) if m.uploaded_by == caller.organisation.as_str() => Ok(m),
        Some(_) => Err(invalid(
            at,
            "INAPPROPRIATE_VALUE",
            "business-rule",
            format!("'attachment' (Binary/{}) was uploaded by another organisation; attach your own uploads", a.id()),
        )),
        None => Err(invalid(
            at,
            "REFERENCE_NOT_FOUND",
            "not-found",
            format!("'attachment' (Binary/{}) does not exist: upload it first with POST Binary", a.id()),
        )),
    }
}

/// A new DocumentReference for an upload, attached to the referral.
fn create_document(
    c: &mut DbConnection,
    referral: &Value,
    meta: &BinaryMeta,
    title: Option<&str>,
    kind: &str,
    access: &[String],
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    let referral_id = referral
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut attachment = json!({
        "contentType": meta.content_type,
        "url": format!("Binary/{}", meta.id),
        "size": meta.size,
        "creation": datetime::instant(meta.uploaded_at),
    });
    if let Some(t) = title.map(str::to_owned).or_else(|| meta.filename.clone()) {
        attachment["title"] = json!(t);
    }
    let mut d = json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": ATTACHMENT_TYPE_SYSTEM, "code": kind}]},
        "date": datetime::instant(now()),
        "content": [{"attachment": attachment}],
        "context": {"related": [{"reference": format!("ServiceRequest/{referral_id}")}]},
    });
    if let Some(p) = referral.at("/subject/reference") {
        d["subject"] = json!({"reference": p});
    }
    if let Some(org) = referral_svc::organisation_id(c, who.caller.organisation.as_str())? {
        d["author"] = json!([{"reference": format!("Organization/{org}")}]);
    }
    match resource::create(
        c,
        def("DocumentReference")?,
        d,
        &Writer::new(who.author, who.audit).visible_to(access),
        None,
        Some(crate::fhir::new_id()),
    )? {
        resource::Created::New(r) | resource::Created::Existing(r) => Ok(r),
    }
}

/// A document taken out of the referral letter: `superseded`.
fn supersede(
    c: &mut DbConnection,
    row: &ResourceRow,
    access: &[String],
    who: &Acting<'_>,
) -> Result<()> {
    let mut d = stored_value(row)?;
    d["status"] = json!("superseded");
    resource::rewrite(
        c,
        def("DocumentReference")?,
        &row.id,
        row.version_id,
        d,
        &Writer::new(who.author, who.audit).visible_to(access),
    )?;
    Ok(())
}

/// `$ers.maintainReferralLetter`: the referral letter becomes exactly these documents (e-RS
/// A012): uploads not yet in it are attached, documents left out are superseded, and the
/// referral's `supportingInfo` lists the letter's documents — what the letter is, explicitly.
pub fn maintain_letter(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    letter: Vec<Attaching>,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    if letter.is_empty() {
        return Err(invalid(
            "Parameters.parameter[attachment]",
            "MISSING_VALUE",
            "required",
            "'attachment' is missing: the referral letter is at least one uploaded document".into(),
        ));
    }
    for (i, a) in letter.iter().enumerate() {
        if letter[..i].iter().any(|b| b.id() == a.id()) {
            return Err(invalid(
                "Parameters.parameter[attachment]",
                "DUPLICATE_FILENAME",
                "duplicate",
                format!("'attachment' (Binary/{}) is given twice", a.id()),
            ));
        }
    }
    referral_svc::transition(
        conn,
        id,
        Expected::IfMatch(if_match),
        ReferralAction::MaintainReferralLetter,
        who,
        |c, body, _| {
            let access = referral_svc::organisations(c, body)?;
            let current = current_documents(c, id, "REFERRER")?;
            let mut kept: Vec<(String, String)> = Vec::new(); // (binary id, document id)
            for row in &current {
                let d = stored_value(row)?;
                let binary = d
                    .at("/content/0/attachment/url")
                    .and_then(Value::as_str)
                    .and_then(docs::binary_id)
                    .unwrap_or_default()
                    .to_owned();
                if letter.iter().any(|a| a.id() == binary) {
                    kept.push((binary, row.id.clone()));
                } else {
                    supersede(c, row, &access, who)?;
                }
            }
            let mut names: Vec<String> = Vec::new();
            let mut letter_docs = Vec::new();
            for a in &letter {
                if let Some((_, doc)) = kept.iter().find(|(b, _)| b == a.id()) {
                    letter_docs.push(doc.clone());
                    continue;
                }
                let meta = own_upload(c, a, "Parameters.parameter[attachment]", who.caller)?;
                let name = a.title.clone().or_else(|| meta.filename.clone());
                if let Some(n) = &name {
                    if names.contains(n) {
                        return Err(invalid(
                            "Parameters.parameter[attachment]",
                            "DUPLICATE_FILENAME",
                            "duplicate",
                            format!("two documents of the referral letter are named '{n}'"),
                        ));
                    }
                    names.push(n.clone());
                }
                let row =
                    create_document(c, body, &meta, name.as_deref(), "REFERRER", &access, who)?;
                letter_docs.push(row.id);
            }
            // supportingInfo: other references kept, then the letter's documents in order.
            let mut info: Vec<Value> = body
                .get("supportingInfo")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            info.retain(|r| {
                !r.get("reference")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.starts_with("DocumentReference/"))
            });
            info.extend(
                letter_docs
                    .iter()
                    .map(|d| json!({"reference": format!("DocumentReference/{d}"), "display": "Referral letter"})),
            );
            body["supportingInfo"] = Value::Array(info);
            Ok(())
        },
    )
}

/// `$ers.addProviderAttachment`: the provider adds a document of its own to the referral.
pub fn add_provider_document(
    conn: &mut DbConnection,
    id: &str,
    if_match: Option<i64>,
    doc: Attaching,
    who: &Acting<'_>,
) -> Result<ResourceRow> {
    referral_svc::transition(
        conn,
        id,
        Expected::IfMatch(if_match),
        ReferralAction::AddProviderAttachment,
        who,
        |c, body, _| {
            let access = referral_svc::organisations(c, body)?;
            let meta = own_upload(c, &doc, "Parameters.parameter[attachment]", who.caller)?;
            create_document(
                c,
                body,
                &meta,
                doc.title.as_deref(),
                "PROVIDER",
                &access,
                who,
            )?;
            Ok(())
        },
    )
}

/// Attaches uploads of the caller's organisation to a request as documents of `kind` (a
/// message's attachments): each upload once, each checked like a letter's. Returns the new
/// DocumentReference ids, in order.
pub(super) fn attach(
    c: &mut DbConnection,
    request: &Value,
    uploads: &[Attaching],
    kind: &str,
    access: &[String],
    who: &Acting<'_>,
) -> Result<Vec<String>> {
    let at = "Parameters.parameter[attachment]";
    let mut out = Vec::new();
    for (i, a) in uploads.iter().enumerate() {
        if uploads[..i].iter().any(|b| b.id() == a.id()) {
            return Err(invalid(
                at,
                "DUPLICATE_FILENAME",
                "duplicate",
                format!("'attachment' (Binary/{}) is given twice", a.id()),
            ));
        }
        let meta = own_upload(c, a, at, who.caller)?;
        let name = a.title.clone().or_else(|| meta.filename.clone());
        out.push(create_document(c, request, &meta, name.as_deref(), kind, access, who)?.id);
    }
    Ok(out)
}

//! The audit trail over FHIR: `AuditEvent` read, search and `$export` (NDJSON), for auditors.
//! Append-only: every write method is refused.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use ers_schema::audit::{self as store, AuditQuery};
use serde_json::Value;

use super::handlers::{authorise, base_url, draft, on_conn};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::{Caller, NhsNumber};
use crate::fhir::audit::audit_event;
use crate::fhir::bundle::{self, Entry, EntryResource, Links};
use crate::fhir::index::split_reference;
use crate::fhir::{datetime, search as fsearch};
use crate::security::permissions::Action;
use crate::service::audit::{self as audit, Outcome};
use crate::startup::AppState;

fn bad(param: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::bad_param(param, msg)
}

/// AuditEvent search parameters: date (with prefixes), agent, entity, patient (Patient/id or
/// `patient:identifier=https://fhir.nhs.uk/Id/nhs-number|n`), action, outcome, subtype, _id.
fn parse(
    params: &[(String, String)],
    strict: bool,
) -> Result<(AuditQuery, Vec<(String, String)>), ApiError> {
    let mut q = AuditQuery {
        limit: fsearch::DEFAULT_COUNT,
        ..Default::default()
    };
    let mut accepted = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "date" => {
                let (prefix, rest) = ["ge", "gt", "le", "lt", "eq"]
                    .iter()
                    .find_map(|p| v.strip_prefix(p).map(|r| (*p, r)))
                    .unwrap_or(("eq", v.as_str()));
                let (lo, hi) = datetime::range(rest).ok_or_else(|| {
                    bad(
                        k,
                        format!("'{v}' is not a date (ge2026-11-01, le2026-11-23T10:00Z...)"),
                    )
                })?;
                match prefix {
                    "ge" | "gt" => q.from = Some(if prefix == "gt" { hi } else { lo }),
                    "le" | "lt" => q.to = Some(if prefix == "lt" { lo } else { hi }),
                    _ => {
                        q.from = Some(lo);
                        q.to = Some(hi);
                    }
                }
            }
            "agent" => q.agent = Some(v.rsplit('|').next().unwrap_or(v).to_owned()),
            "entity" => {
                let (t, id) =
                    split_reference(v).ok_or_else(|| bad(k, format!("'{v}' is not Type/id")))?;
                q.entity = Some((t.to_owned(), id.to_owned()));
            }
            "patient" => {
                let (t, id) = split_reference(v)
                    .filter(|(t, _)| *t == "Patient")
                    .ok_or_else(|| bad(k, format!("'{v}' is not Patient/id")))?;
                q.entity = Some((t.to_owned(), id.to_owned()));
            }
            "patient:identifier" => {
                let nhs = v
                    .strip_prefix(&format!("{}|", NhsNumber::SYSTEM))
                    .unwrap_or(v);
                q.nhs_number = Some(
                    NhsNumber::parse(nhs)
                        .map_err(|e| bad(k, e.0))?
                        .as_str()
                        .to_owned(),
                );
            }
            "action" => {
                if !["C", "R", "U", "D", "E"].contains(&v.as_str()) {
                    return Err(bad(k, "expects one of C, R, U, D, E"));
                }
                q.action = Some(v.clone());
            }
            "outcome" => q.outcome = Some(v.clone()),
            "subtype" => q.subtype = Some(v.rsplit('|').next().unwrap_or(v).to_owned()),
            "_id" => q.id = Some(v.clone()),
            "_count" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (0..=fsearch::MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        bad(
                            k,
                            format!("'{v}' is not a number in 0..{}", fsearch::MAX_COUNT),
                        )
                    })?;
                continue;
            }
            "_offset" => {
                q.offset = v
                    .parse()
                    .ok()
                    .filter(|n: &i64| *n >= 0)
                    .ok_or_else(|| bad(k, format!("'{v}' is not a non-negative number")))?;
                continue;
            }
            "_format" | "_pretty" => continue,
            other if strict => {
                return Err(bad(
                    other,
                    "is not a search parameter of AuditEvent (Prefer: handling=strict)",
                ))
            }
            _ => continue,
        }
        accepted.push((k.clone(), v.clone()));
    }
    Ok((q, accepted))
}

fn strict(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("handling=strict"))
}

pub async fn search(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorise("AuditEvent", Action::Search, &caller)?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("the query string cannot be decoded: {e}")))?;
    let (q, accepted) = parse(&params, strict(&req))?;
    negotiate::response_format(&req)?;
    let d = draft(&req, Some(&caller));
    let query = q.clone();
    let (rows, total) = on_conn(&state, move |c| -> Result<_, ApiError> {
        let found = store::search(c, &query)?;
        audit::record(
            c,
            &d,
            &Outcome {
                action: "E",
                subtype: "search-type".into(),
                status: 200,
                description: Some("audit trail search".into()),
            },
            &[],
        )?;
        Ok(found)
    })
    .await?;
    let base = base_url(&req, &state);
    let page = |offset: i64| {
        let mut p = accepted.clone();
        p.push(("_count".into(), q.limit.to_string()));
        p.push(("_offset".into(), offset.to_string()));
        format!(
            "{base}/AuditEvent?{}",
            serde_urlencoded::to_string(&p).unwrap_or_default()
        )
    };
    let links = Links {
        self_url: page(q.offset),
        next: (q.offset + q.limit < total).then(|| page(q.offset + q.limit)),
        previous: (q.offset > 0).then(|| page((q.offset - q.limit).max(0))),
    };
    let entries = rows
        .iter()
        .map(|(r, e)| Entry {
            full_url: format!("{base}/AuditEvent/{}", r.id),
            resource: EntryResource::Value(audit_event(r, e)),
            include: false,
            distance_km: None,
            wait: None,
        })
        .collect();
    negotiate::respond(
        &req,
        StatusCode::OK,
        Body::Text(
            bundle::searchset(Some(total), &links, entries, None)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        ),
    )
}

pub async fn read(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorise("AuditEvent", Action::Read, &caller)?;
    let id = path.into_inner();
    negotiate::response_format(&req)?;
    let d = draft(&req, Some(&caller));
    let wanted = id.clone();
    let (rows, _) = on_conn(&state, move |c| -> Result<_, ApiError> {
        let found = store::search(
            c,
            &AuditQuery {
                id: Some(wanted),
                limit: 1,
                ..Default::default()
            },
        )?;
        audit::record(
            c,
            &d,
            &Outcome {
                action: "R",
                subtype: "read".into(),
                status: 200,
                description: Some("audit trail read".into()),
            },
            &[],
        )?;
        Ok(found)
    })
    .await?;
    let (row, entities) = rows
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("AuditEvent/{id} is not known")))?;
    negotiate::respond(
        &req,
        StatusCode::OK,
        Body::Value(audit_event(&row, &entities)),
    )
}

/// `GET /AuditEvent/$export?…`: every matching event, oldest pages first, as FHIR NDJSON.
pub async fn export(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorise("AuditEvent", Action::Export, &caller)?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("the query string cannot be decoded: {e}")))?;
    let (mut q, _) = parse(&params, strict(&req))?;
    let d = draft(&req, Some(&caller));
    let body = on_conn(&state, move |c| -> Result<String, ApiError> {
        let mut out = String::new();
        q.offset = 0;
        q.limit = 1000;
        loop {
            let (rows, total) = store::search(c, &q)?;
            for (r, e) in &rows {
                out.push_str(&Value::to_string(&audit_event(r, e)));
                out.push('\n');
            }
            q.offset += q.limit;
            if rows.is_empty() || q.offset >= total {
                break;
            }
        }
        audit::record(
            c,
            &d,
            &Outcome {
                action: "E",
                subtype: "export".into(),
                status: 200,
                description: Some("audit trail export".into()),
            },
            &[],
        )?;
        Ok(out)
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/fhir+ndjson")
        .body(body))
}

pub async fn append_only() -> Result<HttpResponse, ApiError> {
    Err(ApiError::Service(crate::service::ServiceError::MethodNotAllowed(
        "AuditEvents are append-only: they cannot be created, changed or deleted through the API".into(),
    )))
}

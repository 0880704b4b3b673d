//! FHIR Bulk Data Access over HTTP: `GET [base]/$export` and `GET [base]/Patient/$export`
//! (kick-off, 202 + Content-Location; or `POST` with the inputs in a `Parameters` body), `GET [base]/$export-status/{job}` (202 with X-Progress
//! while it runs, then 200 with the manifest), `DELETE` of the same URL (cancel), and
//! `GET [base]/$export-file/{job}/{part}` (NDJSON).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::handlers::{base_url, draft, on_conn, operation_inputs};
use super::ApiError;
use crate::domain::referral::OpParam;
use crate::domain::Caller;
use crate::fhir::datetime;
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::service::exports::{self, Kickoff, Level};
use crate::startup::AppState;

const NDJSON: &str = "application/fhir+ndjson";

/// The kick-off's inputs (Bulk Data's `_typeFilter`, `_elements`, `patient` and
/// `includeAssociatedData` are not offered).
pub const EXPORT_PARAMETERS: &[OpParam] = &[
    OpParam::new(
        "_outputFormat",
        0,
        "1",
        "string",
        "application/fhir+ndjson (the only one; application/ndjson and ndjson name it too)",
    ),
    OpParam::new(
        "_since",
        0,
        "1",
        "instant",
        "only resources changed after this instant",
    ),
    OpParam::new(
        "_type",
        0,
        "*",
        "string",
        "resource types, comma-separated or repeated (default: every type the caller may search)",
    ),
];

fn kickoff_params(params: &[(String, String)], level: Level) -> Result<Kickoff, ApiError> {
    let mut k = Kickoff {
        level,
        types: None,
        since: None,
        request: String::new(),
    };
    for (name, v) in params {
        match name.as_str() {
            "_outputFormat"
                if !["application/fhir+ndjson", "application/ndjson", "ndjson"]
                    .contains(&v.as_str()) =>
            {
                return Err(ApiError::bad_param(
                    name,
                    format!("'{v}' is not supported: this server writes application/fhir+ndjson"),
                ));
            }
            "_type" => {
                let list: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
                if list.is_empty() {
                    return Err(ApiError::bad_param(
                        name,
                        "needs one or more resource types, comma-separated",
                    ));
                }
                k.types.get_or_insert_with(Vec::new).extend(list);
            }
            "_since" => {
                if !datetime::is_datetime(v) || !v.contains('T') {
                    return Err(ApiError::bad_param(
                        name,
                        format!("'{v}' is not a FHIR instant (2026-11-30T09:00:00Z)"),
                    ));
                }
                k.since = datetime::range(v).map(|(low, _)| low);
            }
            // The general `_format` and `_pretty` (operation_inputs took only these besides).
            _ => {}
        }
    }
    Ok(k)
}

async fn kick_off(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
    level: Level,
) -> Result<HttpResponse, ApiError> {
    let prefer = req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split([',', ';']).any(|p| p.trim() == "respond-async"));
    if !prefer {
        return Err(ApiError::BadHeader {
            header: "Prefer",
            message: "a bulk export runs asynchronously: send 'Prefer: respond-async'".into(),
        });
    }
    let inputs = operation_inputs(&req, &body, "$export", EXPORT_PARAMETERS)?;
    let mut k = kickoff_params(&inputs, level)?;
    let base = base_url(&req, &state);
    k.request = format!(
        "{base}{}{}",
        req.path().trim_start_matches("/FHIR/R4"),
        if req.query_string().is_empty() {
            String::new()
        } else {
            format!("?{}", req.query_string())
        }
    );
    let d = draft(&req, Some(&caller));
    let ttl = state.settings.export_ttl_secs;
    let job = on_conn(&state, move |c| -> Result<_, ApiError> {
        Ok(exports::kick_off(c, &k, &caller, &d, ttl)?)
    })
    .await?;
    let body = operation_outcome(&[Issue::information(format!(
        "Export {} accepted ({}): poll the Content-Location for its progress",
        job.id, job.types
    ))]);
    Ok(HttpResponse::Accepted()
        .insert_header((
            "Content-Location",
            format!("{base}/$export-status/{}", job.id),
        ))
        .content_type("application/fhir+json")
        .body(body.to_string()))
}

/// `GET [base]/$export` (or `POST` with a Parameters body).
pub async fn system(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    kick_off(req, body, caller, state, Level::System).await
}

/// `GET [base]/Patient/$export` (or `POST` with a Parameters body).
pub async fn patient(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    kick_off(req, body, caller, state, Level::Patient).await
}

/// `GET [base]/$export-status/{job}`.
pub async fn status(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (job, files) = on_conn(&state, move |c| -> Result<_, ApiError> {
        Ok(exports::status(c, &id, &caller)?)
    })
    .await?;
    let base = base_url(&req, &state);
    match job.status.as_str() {
        "complete" => {
            let manifest = serde_json::json!({
                "transactionTime": datetime::instant(job.transaction_time),
                "request": job.request,
                "requiresAccessToken": true,
                "output": files.iter().map(|f| serde_json::json!({
                    "type": f.res_type,
                    "url": format!("{base}/$export-file/{}/{}", job.id, f.part),
                    "count": f.count,
                })).collect::<Vec<_>>(),
                "error": [],
                "extension": {"expires": datetime::instant(job.expires)},
            });
            Ok(HttpResponse::Ok()
                .insert_header(("Expires", datetime::http_date(job.expires)))
                .content_type("application/json")
                .body(manifest.to_string()))
        }
        "failed" => Err(ApiError::Internal(format!(
            "export {} failed: {}",
            job.id,
            job.error.unwrap_or_default()
        ))),
        _ => {
            let progress = exports::progress(&job);
            Ok(HttpResponse::build(StatusCode::ACCEPTED)
                .insert_header(("X-Progress", progress))
                .insert_header(("Retry-After", "2"))
                .finish())
        }
    }
}

/// `DELETE [base]/$export-status/{job}`: cancels the export and deletes its files.
pub async fn cancel(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let d = draft(&req, Some(&caller));
    let wanted = id.clone();
    on_conn(&state, move |c| -> Result<_, ApiError> {
        Ok(exports::cancel(c, &wanted, &caller, &d)?)
    })
    .await?;
    let body = operation_outcome(&[Issue::information(format!(
        "Export {id} cancelled; its files are deleted"
    ))]);
    Ok(HttpResponse::Accepted()
        .content_type("application/fhir+json")
        .body(body.to_string()))
}

/// `GET [base]/$export-file/{job}/{part}`.
pub async fn file(
    req: HttpRequest,
    path: web::Path<(String, i32)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, part) = path.into_inner();
    let d = draft(&req, Some(&caller));
    let gzip_ok = accepts_gzip(&req);
    let (encoding, data) = on_conn(&state, move |c| -> Result<_, ApiError> {
        let f = exports::file(c, &id, part, &caller, &d)?;
        Ok(if f.encoding == exports::GZIP && gzip_ok {
            (Some(exports::GZIP), f.data)
        } else {
            (None, exports::plain(f)?)
        })
    })
    .await?;
    let mut r = HttpResponse::Ok();
    r.content_type(NDJSON);
    if let Some(e) = encoding {
        // Sent as stored; the compression middleware leaves an encoded body alone.
        r.insert_header((actix_web::http::header::CONTENT_ENCODING, e));
    }
    Ok(r.body(data))
}

/// Whether the request's `Accept-Encoding` takes gzip (named, or `*`, without `q=0`).
fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(actix_web::http::header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Runs export jobs on the server's runtime: looks for work every second, and drops expired
/// exports every minute. The work itself runs on the blocking pool.
pub fn run_jobs(pool: ers_schema::DbPool, file_resources: usize, ttl_secs: i64) {
    let worker = format!("exports-{}", uuid::Uuid::new_v4().simple());
    actix_web::rt::spawn(async move {
        let mut ticks = actix_web::rt::time::interval(std::time::Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            ticks.tick().await;
            n += 1;
            let (pool, worker) = (pool.clone(), worker.clone());
            let purge = n % 60 == 1;
            let r = web::block(move || -> Result<(), crate::service::ServiceError> {
                let mut c = pool
                    .get()
                    .map_err(|e| crate::service::ServiceError::Internal(e.to_string()))?;
                if purge {
                    exports::purge_expired(&mut c)?;
                }
                while exports::work(&mut c, &worker, file_resources, ttl_secs)? {}
                Ok(())
            })
            .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::warn!("export worker: {e}"),
                Err(e) => log::warn!("export worker: {e}"),
            }
        }
    });
}

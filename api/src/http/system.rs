//! `metadata`, `$versions`, `/_ping`, `/_status`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::handlers::base_url;
use super::negotiate::{self, Body};
use super::ApiError;
use crate::fhir::capability::capability_statement;
use crate::startup::AppState;

pub async fn metadata(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    match negotiate::query_param(&req, "mode").as_deref() {
        None | Some("full") => {}
        Some("terminology") => {
            let tc = crate::fhir::capability::terminology_capabilities(
                &base_url(&req, &state),
                env!("CARGO_PKG_VERSION"),
                &state.started,
            );
            return negotiate::respond(&req, StatusCode::OK, Body::Value(tc));
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "mode '{other}': metadata is the CapabilityStatement (mode full, the default) or, with mode=terminology, the TerminologyCapabilities"
            )))
        }
    }
    let mut cs = capability_statement(
        &base_url(&req, &state),
        env!("CARGO_PKG_VERSION"),
        &state.started,
    );
    cs["rest"][0]["security"]["cors"] = json!(!state.settings.cors_origins.is_empty());
    negotiate::respond(&req, StatusCode::OK, Body::Value(cs))
}

/// `GET [base]/$versions`: the FHIR versions served, as the `fhirVersion` MIME-type parameter
/// names them, and the one used when a request names none: R4's `4.0` both (no token needed,
/// as for `metadata`).
pub async fn versions(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let v = negotiate::FHIR_VERSION;
    let p = json!({"resourceType": "Parameters", "parameter": [
        {"name": "version", "valueCode": v},
        {"name": "default", "valueCode": v},
    ]});
    negotiate::respond(&req, StatusCode::OK, Body::Value(p))
}

pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "pass", "version": env!("CARGO_PKG_VERSION")}))
}

pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    // Straight to the pool, not through the request gate: a load balancer's probe should not
    // queue behind the requests it is deciding whether to send.
    let pool = state.pool.clone();
    let backend = state.backend;
    let checked = web::block(move || -> Result<Vec<&'static str>, String> {
        let mut c = pool.get().map_err(|e| e.to_string())?;
        ers_schema::store::ready(&mut c).map_err(|e| e.to_string())?;
        crate::service::reindex::behind(&mut c).map_err(|e| e.to_string())
    })
    .await;
    match checked {
        // Ready while the search index is brought to its definition (`reindex::in_background`):
        // a warning that names the types not there yet.
        Ok(Ok(behind)) if !behind.is_empty() => HttpResponse::Ok().json(json!({"status": "warn", "checks": {"database": {"status": "pass", "backend": backend}, "searchIndex": {"status": "warn", "reindexing": behind}}})),
        Ok(Ok(_)) => HttpResponse::Ok().json(json!({"status": "pass", "checks": {"database": {"status": "pass", "backend": backend}, "searchIndex": {"status": "pass"}}})),
        Ok(Err(e)) => {
            log::error!("status check: database failed: {e}");
            HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "5"))
                .json(json!({"status": "fail", "checks": {"database": {"status": "fail", "backend": backend, "error": "database unreachable"}}}))
        }
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"status": "fail"})),
    }
}

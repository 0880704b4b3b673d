//! `GET /CodeSystem` and `GET /CodeSystem/{id}`: the e-RS reference data, read-only.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::handlers::{authorise, base_url};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::bundle::{self, Entry, Links};
use crate::fhir::terminology;
use crate::security::permissions::Action;
use crate::startup::AppState;

pub async fn search(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorise("CodeSystem", Action::Search, &caller)?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("the query string cannot be decoded: {e}")))?;
    let mut found: Vec<&Value> = terminology::code_systems().iter().collect();
    let mut accepted = Vec::new();
    for (k, v) in &params {
        let field = match k.as_str() {
            "url" => "url",
            "name" => "name",
            "_id" => "id",
            "status" => "status",
            _ => continue,
        };
        found.retain(|cs| {
            let have = cs.get(field).and_then(Value::as_str).unwrap_or_default();
            if field == "name" {
                have.to_lowercase().starts_with(&v.to_lowercase())
            } else {
                v.split(',').any(|x| x == have)
            }
        });
        accepted.push((k.clone(), v.clone()));
    }
    negotiate::response_format(&req)?;
    let base = base_url(&req, &state);
    let self_url = format!(
        "{base}/CodeSystem?{}",
        serde_urlencoded::to_string(&accepted).unwrap_or_default()
    );
    let total = i64::try_from(found.len()).unwrap_or(i64::MAX);
    let entries = found
        .into_iter()
        .map(|cs| Entry {
            full_url: format!(
                "{base}/CodeSystem/{}",
                cs["id"].as_str().unwrap_or_default()
            ),
            resource: cs.clone(),
            include: false,
            distance_km: None,
        })
        .collect();
    let b = bundle::searchset(
        Some(total),
        &Links {
            self_url,
            next: None,
            previous: None,
        },
        entries,
        None,
    );
    negotiate::respond(&req, StatusCode::OK, Body::Value(b))
}

pub async fn read(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    authorise("CodeSystem", Action::Read, &caller)?;
    let id = path.into_inner();
    let cs = terminology::by_id(&id).ok_or_else(|| {
        let known: Vec<&str> = terminology::code_systems()
            .iter()
            .filter_map(|c| c["id"].as_str())
            .collect();
        ApiError::NotFound(format!(
            "CodeSystem/{id} is not known; this server serves {}",
            known.join(", ")
        ))
    })?;
    negotiate::respond(&req, StatusCode::OK, Body::Value(cs.clone()))
}

pub async fn read_only() -> Result<HttpResponse, ApiError> {
    Err(ApiError::Service(crate::service::ServiceError::MethodNotAllowed(
        "CodeSystems are reference data, read-only here: they change with a release of the server".into(),
    )))
}

//! The conformance resources (`fhir::conformance`: CodeSystem, ValueSet, SearchParameter,
//! OperationDefinition, StructureDefinition), read and searched, read-only.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::handlers::{authorise, base_url};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::bundle::{self, Entry, EntryResource, Links};
use crate::fhir::conformance;
use crate::security::permissions::Action;
use crate::startup::AppState;

pub async fn search(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let t = path.into_inner();
    authorise(&t, Action::Search, &caller)?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("the query string cannot be decoded: {e}")))?;
    let mut found: Vec<&Value> = conformance::all(&t).iter().collect();
    let mut accepted = Vec::new();
    for (k, v) in &params {
        let field = match k.as_str() {
            "url" => "url",
            "name" => "name",
            "_id" => "id",
            "status" => "status",
            "code" => "code",
            "base" => "base",
            "resource" => "resource",
            "type" => "type",
            _ => continue,
        };
        found.retain(|r| {
            let have: Vec<&str> = match r.get(field) {
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                Some(v) => v.as_str().into_iter().collect(),
                None => Vec::new(),
            };
            if field == "name" {
                have.iter()
                    .any(|h| h.to_lowercase().starts_with(&v.to_lowercase()))
            } else {
                v.split(',').any(|x| have.contains(&x))
            }
        });
        accepted.push((k.clone(), v.clone()));
    }
    negotiate::response_format(&req)?;
    let base = base_url(&req, &state);
    let self_url = format!(
        "{base}/{t}?{}",
        serde_urlencoded::to_string(&accepted).unwrap_or_default()
    );
    let total = i64::try_from(found.len()).unwrap_or(i64::MAX);
    let entries = found
        .into_iter()
        .map(|cs| Entry {
            full_url: format!("{base}/{t}/{}", cs["id"].as_str().unwrap_or_default()),
            resource: EntryResource::Value(cs.clone()),
            include: false,
            distance_km: None,
            wait: None,
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
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    negotiate::respond(&req, StatusCode::OK, Body::Text(b))
}

pub async fn read(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let (t, id) = path.into_inner();
    authorise(&t, Action::Read, &caller)?;
    let found = conformance::by_id(&t, &id).ok_or_else(|| {
        // e-RS A004 reads its code systems by type (`CodeSystem/SPECIALTY`): say which is ours.
        let ours = format!("ers-{}", id.to_ascii_lowercase());
        match conformance::by_id(&t, &ours) {
            Some(_) => ApiError::NotFound(format!(
                "{t}/{id} is not known: e-RS's {id} is {t}/{ours} here"
            )),
            None => ApiError::NotFound(format!(
                "{t}/{id} is not known; search GET {t} for the {} this server defines",
                conformance::all(&t).len()
            )),
        }
    })?;
    negotiate::respond(&req, StatusCode::OK, Body::Value(found.clone()))
}

pub async fn read_only() -> Result<HttpResponse, ApiError> {
    Err(ApiError::Service(crate::service::ServiceError::MethodNotAllowed(
        "Conformance resources (CodeSystem, ValueSet, SearchParameter, OperationDefinition, StructureDefinition) are read-only here: they change with a release of the server".into(),
    )))
}

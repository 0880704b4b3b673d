//! System announcements over HTTP: operational users publish (`POST CommunicationRequest`) and
//! revise (`PUT`) them; everyone reads those for their organisation and role
//! (`GET CommunicationRequest/$ers.announcements`, newest first, current ones unless `all=true`,
//! unread ones with `unread=true`) and marks them read (`POST …/{id}/$ers.markRead`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::caller::author;
use super::handlers::{authorise, base_url, draft, if_match, on_conn, write_reply};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::outcome::Issue;
use crate::fhir::resources::announcement::READ_EXTENSION;
use crate::security::permissions::Action;
use crate::service::announcements as svc;
use crate::service::referral::Acting;
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

pub async fn publish(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("CommunicationRequest", Action::Create, &caller)?;
    let resource = negotiate::parse_body(&req, &body)?;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        svc::publish(
            c,
            resource,
            &Acting {
                caller: &caller,
                author: &who,
                audit: &d,
            },
        )
    })
    .await?;
    write_reply(&req, &state, StatusCode::CREATED, &row)
}

pub async fn revise(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (_, id) = path.into_inner();
    authorise("CommunicationRequest", Action::Update, &caller)?;
    let resource = negotiate::parse_body(&req, &body)?;
    let version = if_match(&req)?;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        svc::revise(
            c,
            &id,
            resource,
            version,
            &Acting {
                caller: &caller,
                author: &who,
                audit: &d,
            },
        )
    })
    .await?;
    write_reply(&req, &state, StatusCode::OK, &row)
}

/// `GET|POST CommunicationRequest/$ers.announcements`.
pub async fn list(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("CommunicationRequest", Action::Search, &caller)?;
    let query = super::handlers::operation_inputs(
        &req,
        &body,
        "$ers.announcements",
        crate::fhir::resources::announcement::LIST_PARAMETERS,
    )?;
    let (mut all, mut unread, mut count, mut offset) = (false, false, 20i64, 0i64);
    let bad = |name: &str, msg: &str| {
        ApiError::Search(vec![Issue::invalid_at(name.to_owned(), msg.to_owned())])
    };
    let flag = |name: &str, v: &str| {
        crate::fhir::parameters::boolean(name, v).map_err(|i| ApiError::Search(vec![i]))
    };
    for (k, v) in &query {
        match k.as_str() {
            "all" => all = flag(k, v)?,
            "unread" => unread = flag(k, v)?,
            "_count" => {
                count = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad(k, "must be 1 to 100"))?
            }
            "_offset" => {
                offset = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad(k, "must be 0 or more"))?
            }
            // The general `_format` and `_pretty` (operation_inputs took only these besides).
            _ => {}
        }
    }
    let base = base_url(&req, &state);
    let (rows, total) = on_conn(&state, move |c| {
        svc::for_caller(c, &caller, all, unread, count, offset)
    })
    .await?;
    let entries: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(row, read)| {
            let resource: serde_json::Value =
                serde_json::from_str(&row.content).unwrap_or_default();
            let mut search = json!({"mode": "match"});
            if let Some(at) = read {
                search["extension"] = json!([{"url": READ_EXTENSION, "valueDateTime": at}]);
            }
            json!({"fullUrl": format!("{base}/CommunicationRequest/{}", row.id), "resource": resource, "search": search})
        })
        .collect();
    negotiate::respond(
        &req,
        StatusCode::OK,
        Body::Value(json!({
            "resourceType": "Bundle",
            "meta": {"profile": [crate::fhir::bundle::PROFILE]},
            "type": "searchset",
            "total": total,
            "entry": entries,
        })),
    )
}

/// `POST CommunicationRequest/{id}/$ers.markRead`.
pub async fn mark_read(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let id = path.into_inner();
    authorise("CommunicationRequest", Action::Read, &caller)?;
    on_conn(&state, move |c| svc::mark_read(c, &id, &caller)).await?;
    Ok(HttpResponse::NoContent().finish())
}

//! Subscriptions over HTTP: create, change and remove (`Subscription`), the missed events
//! (`GET Subscription/{id}/$events`), and the delivery loop that POSTs notifications to the
//! endpoints (each server instance runs one; a lease keeps two from sending the same).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::caller::author;
use super::handlers::{authorise, base_url, draft, if_match, on_conn, write_reply};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::config::Mode;
use crate::domain::Caller;
use crate::fhir::outcome::Issue;
use crate::security::permissions::Action;
use crate::service::referral::Acting;
use crate::service::subscriptions as svc;
use crate::service::ServiceError;
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("Subscription", Action::Create, &caller)?;
    let resource = negotiate::parse_body(&req, &body)?;
    let production = state.settings.mode == Mode::Production;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        svc::create(
            c,
            resource,
            &Acting {
                caller: &caller,
                author: &who,
                audit: &d,
            },
            production,
        )
    })
    .await?;
    write_reply(&req, &state, StatusCode::CREATED, &row)
}

pub async fn update(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (_, id) = path.into_inner();
    authorise("Subscription", Action::Update, &caller)?;
    let resource = negotiate::parse_body(&req, &body)?;
    let version = if_match(&req)?;
    let production = state.settings.mode == Mode::Production;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        svc::update(
            c,
            &id,
            resource,
            version,
            &Acting {
                caller: &caller,
                author: &who,
                audit: &d,
            },
            production,
        )
    })
    .await?;
    write_reply(&req, &state, StatusCode::OK, &row)
}

pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (_, id) = path.into_inner();
    authorise("Subscription", Action::Delete, &caller)?;
    let precondition = crate::service::resource::IfMatch {
        version: if_match(&req)?,
        required: false,
    };
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    on_conn(&state, move |c| {
        svc::delete(
            c,
            &id,
            precondition,
            &Acting {
                caller: &caller,
                author: &who,
                audit: &d,
            },
        )
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET Subscription/{id}/$events?eventsSinceNumber=N[&eventsUntilNumber=M]`.
pub async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let id = path.into_inner();
    authorise("Subscription", Action::Read, &caller)?;
    let query = super::handlers::operation_inputs(
        &req,
        &body,
        "$events",
        crate::fhir::resources::subscription::EVENTS_PARAMETERS,
    )?;
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        match query.iter().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, v)) => v.parse().map(Some).map_err(|_| {
                ApiError::Search(vec![Issue::invalid_at(
                    name.to_owned(),
                    format!("({v}) must be an event number"),
                )])
            }),
        }
    };
    let since = number("eventsSinceNumber")?.unwrap_or(0);
    let until = number("eventsUntilNumber")?;
    let base = base_url(&req, &state);
    let bundle = on_conn(&state, move |c| {
        svc::events(c, &id, &caller, since, until, &base)
    })
    .await?;
    negotiate::respond(&req, StatusCode::OK, Body::Value(bundle))
}

/// Subscriptions are changed through their own use case (their endpoint headers are kept out
/// of the resource).
pub async fn not_allowed() -> Reply {
    Err(ApiError::Service(ServiceError::MethodNotAllowed(
        "Subscription: POST to create, PUT to change, DELETE to remove; GET Subscription/{id}/$events for missed events".into(),
    )))
}

/// Notifications one instance sends at once.
const CONCURRENT: usize = 64;

/// Delivery rounds, every quarter second, until the server stops: each round takes the leases
/// of the subscriptions with something to send (one write), sends their notifications (a few
/// at a time; one per subscription, so each one's stay in order), then records the outcomes
/// (one write). A failure backs off that subscription only.
pub fn deliver(pool: ers_schema::DbPool, base: String) {
    actix_web::rt::spawn(async move {
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .finish();
        let mut ticks = actix_web::rt::time::interval(std::time::Duration::from_millis(250));
        loop {
            ticks.tick().await;
            if let Err(e) = round(&client, &pool, &base).await {
                log::error!("subscriptions: {e}");
            }
        }
    });
}

async fn round(client: &awc::Client, pool: &ers_schema::DbPool, base: &str) -> Result<(), String> {
    let started = std::time::Instant::now();
    let (p, b) = (pool.clone(), base.to_owned());
    let (sends, mut outcomes) = web::block(move || {
        let mut c = p.get().map_err(|e| ServiceError::Internal(e.to_string()))?;
        svc::begin_round(&mut c, &b)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if sends.is_empty() && outcomes.is_empty() {
        return Ok(());
    }
    let planned = started.elapsed();
    let (notifications, events) = (sends.len(), sends.iter().map(|d| d.events).sum::<i64>());
    let sent: Vec<svc::Outcome> = futures_util::stream::iter(sends)
        .map(|due| send(client, due))
        .buffer_unordered(CONCURRENT)
        .collect()
        .await;
    outcomes.extend(sent);
    let sending = started.elapsed() - planned;
    let p = pool.clone();
    web::block(move || {
        let mut c = p.get().map_err(|e| ServiceError::Internal(e.to_string()))?;
        svc::end_round(&mut c, &outcomes)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    log::debug!(
        "subscriptions: round of {notifications} notifications ({events} events): planned in {} ms, sent in {} ms, recorded in {} ms",
        planned.as_millis(),
        sending.as_millis(),
        (started.elapsed() - planned - sending).as_millis()
    );
    Ok(())
}

async fn send(client: &awc::Client, mut due: svc::Due) -> svc::Outcome {
    let mut request = client
        .post(&due.endpoint)
        .insert_header(("Content-Type", "application/fhir+json"));
    for (name, value) in &due.headers {
        request = request.insert_header((name.as_str(), value.as_str()));
    }
    match request.send_body(std::mem::take(&mut due.body)).await {
        Ok(r) if r.status().is_success() => svc::Outcome::Delivered(due),
        Ok(r) => {
            let why = format!("{} answered {}", due.endpoint, r.status());
            svc::Outcome::Failed(due, why)
        }
        Err(e) => {
            let why = format!("{}: {e}", due.endpoint);
            svc::Outcome::Failed(due, why)
        }
    }
}

//! The caller of every patient-data handler: a valid bearer token (401 otherwise), then the
//! acting role and organisation from the e-RS headers, which must be one the user holds (403).

use std::collections::HashMap;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::handlers::on_conn;
use super::middleware::RequestId;
use super::ApiError;
use crate::domain::{BusinessFunction, Caller, OdsCode, SdsUserId};
use crate::security::Identity;
use crate::startup::AppState;

pub const BUSINESS_FUNCTION: &str = "NHSD-eRS-Business-Function";
pub const ORGANISATION: &str = "NHSD-End-User-Organisation-ODS";
pub const ON_BEHALF_OF: &str = "NHSD-eRS-On-Behalf-Of-User-ID";

/// e-RS A015's slot search header: the referral's commissioning rule organisation.
pub const COMM_RULE_ORG: &str = "NHSD-eRS-Comm-Rule-Org";

/// A slot search with `NHSD-eRS-Comm-Rule-Org` finds only the slots of services commissioned
/// for that organisation (e-RS A015): the header becomes the chained criterion
/// `schedule.actor:HealthcareService.commissioned-for`, which its Bundle's links then carry.
pub fn commissioning_criterion(
    req: &HttpRequest,
    res_type: &str,
) -> Result<Option<(String, String)>, ApiError> {
    if res_type != "Slot" {
        return Ok(None);
    }
    let Some(raw) = header(req, COMM_RULE_ORG)? else {
        return Ok(None);
    };
    let ods = OdsCode::parse(raw).map_err(|e| ApiError::BadHeader {
        header: COMM_RULE_ORG,
        message: e.0,
    })?;
    Ok(Some((
        "schedule.actor:HealthcareService.commissioned-for".to_owned(),
        format!("{}|{}", OdsCode::ORGANIZATION_SYSTEM, ods.as_str()),
    )))
}

fn header<'a>(req: &'a HttpRequest, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::BadHeader {
                    header: name,
                    message: "is not visible ASCII".into(),
                })?
                .trim();
            Ok((!s.is_empty()).then_some(s))
        }
    }
}

/// The identity the token established, kept on the request for the audit of failures.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Identity);

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let raw = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    if raw.is_empty() {
        return Err(ApiError::Unauthorized(
            crate::security::AuthError::Missing.to_string(),
        ));
    }
    match raw.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(ApiError::Unauthorized(
            "The Authorization header must be 'Bearer <token>'".into(),
        )),
    }
}

/// Business function and organisation from the headers (user-restricted access).
fn acting_as(req: &HttpRequest) -> Result<(BusinessFunction, OdsCode, Option<String>), ApiError> {
    let bf_raw =
        header(req, BUSINESS_FUNCTION)?.ok_or(ApiError::MissingHeader(BUSINESS_FUNCTION))?;
    let business_function = BusinessFunction::parse(bf_raw).ok_or_else(|| ApiError::BadHeader {
        header: BUSINESS_FUNCTION,
        message: format!(
            "'{bf_raw}' is not an e-RS business function; allowed values: {}",
            BusinessFunction::ALL
                .iter()
                .map(|b| b.code())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let ods_raw = header(req, ORGANISATION)?.ok_or(ApiError::MissingHeader(ORGANISATION))?;
    let organisation = OdsCode::parse(ods_raw).map_err(|e| ApiError::BadHeader {
        header: ORGANISATION,
        message: e.0,
    })?;
    let obo = header(req, ON_BEHALF_OF)?;
    let may_omit = req.extensions().get::<ForOwnDelegates>().is_some();
    let on_behalf_of = match (business_function.acts_on_behalf(), obo) {
        (true, None) if may_omit => None,
        (true, None) => return Err(ApiError::MissingHeader(ON_BEHALF_OF)),
        (true, Some(u)) => Some(SdsUserId::parse(u).map_err(|e| ApiError::BadHeader { header: ON_BEHALF_OF, message: e.0 })?.as_str().to_owned()),
        (false, Some(_)) => {
            return Err(ApiError::BadHeader {
                header: ON_BEHALF_OF,
                message: format!("is only allowed with business function SERVICE_PROVIDER_CLINICIAN_ADMIN, not {business_function}"),
            })
        }
        (false, None) => None,
    };
    Ok((business_function, organisation, on_behalf_of))
}

/// Marks a request whose caller, a SERVICE_PROVIDER_CLINICIAN_ADMIN, may leave out
/// `NHSD-eRS-On-Behalf-Of-User-ID`: the one asking whom they may act for (e-RS A040), which
/// is where the header's value comes from.
pub struct ForOwnDelegates;

/// Whether the request names no acting role at all (neither business function nor
/// organisation header): a user asking which roles they hold (e-RS A030).
pub fn names_no_role(req: &HttpRequest) -> bool {
    [BUSINESS_FUNCTION, ORGANISATION, ON_BEHALF_OF]
        .iter()
        .all(|h| !req.headers().contains_key(*h))
}

/// Who the bearer token says is calling (401 otherwise), within the rate limit (429).
pub async fn identify(req: &HttpRequest) -> Result<Identity, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("no application state".into()))?;
    let token = bearer(req)?;
    let identity = state
        .auth
        .authenticate(&token)
        .await
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    req.extensions_mut().insert(Authenticated(identity.clone()));
    if let Some(limiter) = &state.limiter {
        let key = match &identity {
            Identity::User { sub, .. } => format!("user:{sub}"),
            Identity::Application { client_id, .. } => format!("app:{client_id}"),
        };
        limiter.check(&key).map_err(ApiError::TooManyRequests)?;
    }
    Ok(identity)
}

async fn caller_from(req: HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("no application state".into()))?;
    // Identified once a request (`identify` may have been asked first, as by A030's handler):
    // its rate limit is counted once.
    let known = req.extensions().get::<Authenticated>().map(|a| a.0.clone());
    let identity = match known {
        Some(identity) => identity,
        None => identify(&req).await?,
    };
    match identity {
        Identity::Application { client_id, org } => {
            for h in [BUSINESS_FUNCTION, ORGANISATION, ON_BEHALF_OF] {
                if req.headers().contains_key(h) {
                    return Err(ApiError::Forbidden(format!(
                        "{h} must not be sent with application-restricted access: the role and organisation come from the application's registration"
                    )));
                }
            }
            let organisation = OdsCode::parse(&org).map_err(|e| ApiError::Internal(e.0))?;
            Ok(Caller {
                user_id: None,
                client_id: Some(client_id),
                business_function: BusinessFunction::ProviderAuthorisedApplication,
                organisation,
                on_behalf_of: None,
            })
        }
        Identity::User { sub, roles } => {
            let (business_function, organisation, on_behalf_of) = acting_as(&req)?;
            if business_function == BusinessFunction::ProviderAuthorisedApplication {
                return Err(ApiError::Forbidden(format!(
                    "{business_function} is only for application-restricted access, not for a user's token"
                )));
            }
            let holds = |roles: &[(BusinessFunction, String)]| {
                roles
                    .iter()
                    .any(|(bf, org)| *bf == business_function && org == organisation.as_str())
            };
            let roles = match roles {
                Some(r) => r,
                // Known to hold it a moment ago; otherwise (not known, or not holding it
                // then) looked up now.
                None => match state.roles.get(&sub).filter(|r| holds(r)) {
                    Some(r) => r,
                    None => {
                        let found = roles_of(&state, &sub).await?;
                        state.roles.put(&sub, &found);
                        found
                    }
                },
            };
            if !holds(&roles) {
                return Err(ApiError::Forbidden(format!(
                    "User {sub} does not hold business function {business_function} at organisation {organisation}"
                )));
            }
            if let Some(obo) = &on_behalf_of {
                let theirs = roles_of(&state, obo).await?;
                if !theirs.iter().any(|(bf, org)| {
                    *bf == BusinessFunction::ServiceProviderClinician
                        && org == organisation.as_str()
                }) {
                    return Err(ApiError::Forbidden(format!(
                        "{ON_BEHALF_OF} {obo} is not a SERVICE_PROVIDER_CLINICIAN at organisation {organisation}"
                    )));
                }
            }
            Ok(Caller {
                user_id: Some(sub),
                client_id: None,
                business_function,
                organisation,
                on_behalf_of,
            })
        }
    }
}

/// Every (business function, ODS code) the user with this SDS id holds, from the directory.
pub(super) async fn roles_of(state: &AppState, user: &str) -> Result<Roles, ApiError> {
    let who = user.to_owned();
    on_conn(state, move |c| crate::service::roles::roles_of(c, &who)).await
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Found once per request (`http::idempotency` may have asked first).
        if let Some(known) = req.extensions().get::<Caller>().cloned() {
            return Box::pin(async move { Ok(known) });
        }
        let req = req.clone();
        Box::pin(async move {
            let caller = caller_from(req.clone()).await?;
            req.extensions_mut().insert(caller.clone());
            Ok(caller)
        })
    }
}

/// Who made a change, for the version table.
pub fn author(req: &HttpRequest, caller: &Caller) -> ers_schema::Author {
    ers_schema::Author {
        user: caller.user_id.clone().or_else(|| caller.client_id.clone()),
        role: caller.business_function.code().to_owned(),
        org: caller.organisation.as_str().to_owned(),
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        client_id: caller.client_id.clone(),
        on_behalf_of: caller.on_behalf_of.clone(),
    }
}

/// The roles each user was found to hold, kept for a short while by this instance (every
/// request of a token without roles would otherwise look them up). Bounded: when full, it
/// starts again empty.
pub struct RoleCache {
    ttl: std::time::Duration,
    held: std::sync::Mutex<HashMap<String, (std::time::Instant, Roles)>>,
}

pub(super) type Roles = Vec<(BusinessFunction, String)>;

impl RoleCache {
    const MAX_USERS: usize = 10_000;

    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            held: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, user: &str) -> Option<Roles> {
        let held = self.held.lock().ok()?;
        held.get(user)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, r)| r.clone())
    }

    fn put(&self, user: &str, roles: &Roles) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut held) = self.held.lock() {
            if held.len() >= Self::MAX_USERS {
                held.clear();
            }
            held.insert(user.to_owned(), (std::time::Instant::now(), roles.clone()));
        }
    }
}

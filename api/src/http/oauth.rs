//! Token endpoints run by this server: the sandbox user-token endpoint (sandbox mode only) and
//! the application-restricted client-credentials exchange (signed client assertion → access
//! token), with the public keys of both.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::handlers::{on_conn, public_root};
use super::ApiError;
use crate::security::jwt::{self, Expect, VerifyKey};
use crate::startup::AppState;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn form(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::BadRequest(format!("the form body cannot be decoded: {e}")))
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn token_response(token: String, ttl: i64) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl}))
}

/// `POST /oauth2/sandbox/token` with `user_id=<SDS user id>`: a token for a seeded sandbox user
/// (IAL3/AAL3; their roles are their PractitionerRoles).
pub async fn sandbox_token(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let issuer = state.auth.sandbox.as_ref().ok_or_else(|| {
        ApiError::NotFound("the sandbox token endpoint is off (production mode)".into())
    })?;
    let f = form(&body)?;
    let user = field(&f, "user_id")
        .ok_or(ApiError::BadRequest(
            "'user_id' is required: the SDS user id of a sandbox user, e.g. 021600556514".into(),
        ))?
        .to_owned();
    let roles = super::caller::roles_of(&state, &user).await?;
    if roles.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "'user_id' ({user}) is not a sandbox user with an e-RS role"
        )));
    }
    let claims = json!({
        "sub": user,
        "id_assurance_level": "3",
        "authentication_assurance_level": "3",
        "amr": ["sandbox"],
    });
    let token = issuer
        .issue(claims, state.auth.token_ttl)
        .map_err(ApiError::Internal)?;
    Ok(token_response(token, state.auth.token_ttl))
}

pub async fn sandbox_jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let issuer =
        state.auth.sandbox.as_ref().ok_or_else(|| {
            ApiError::NotFound("the sandbox issuer is off (production mode)".into())
        })?;
    Ok(HttpResponse::Ok().json(issuer.jwks()))
}

/// `POST /oauth2/token`: `grant_type=client_credentials`, `client_assertion_type=…jwt-bearer`,
/// `client_assertion=<JWT signed with the application's registered key>`.
pub async fn client_credentials(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let f = form(&body)?;
    if field(&f, "grant_type") != Some("client_credentials") {
        return Err(ApiError::BadRequest(
            "'grant_type' must be client_credentials".into(),
        ));
    }
    if field(&f, "client_assertion_type") != Some(ASSERTION_TYPE) {
        return Err(ApiError::BadRequest(format!(
            "'client_assertion_type' must be {ASSERTION_TYPE}"
        )));
    }
    let assertion = field(&f, "client_assertion").ok_or(ApiError::BadRequest(
        "'client_assertion' is required".into(),
    ))?;
    let unverified = jwt::decode(assertion)
        .map_err(|e| ApiError::Unauthorized(format!("client assertion: {e}")))?;
    let client_id = unverified
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if unverified.claims.get("sub").and_then(Value::as_str) != Some(client_id.as_str()) {
        return Err(ApiError::Unauthorized(
            "client assertion: 'iss' and 'sub' must both be the client id".into(),
        ));
    }
    let app = state
        .settings
        .apps
        .iter()
        .find(|a| a.client_id == client_id)
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "client assertion: '{client_id}' is not a registered application"
            ))
        })?;
    let keys: Vec<VerifyKey> = app
        .jwks
        .keys
        .iter()
        .filter_map(|k| VerifyKey::from_jwk(k).ok().flatten())
        .collect();
    let audience = format!("{}/oauth2/token", public_root(&req, &state));
    let now = chrono::Utc::now().timestamp();
    let claims = unverified
        .verify(
            &keys,
            &Expect {
                issuer: &client_id,
                audience: &audience,
                now,
                leeway: state.settings.clock_skew_secs,
            },
        )
        .map_err(|e| ApiError::Unauthorized(format!("client assertion: {e}")))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if exp > now + 300 + state.settings.clock_skew_secs {
        return Err(ApiError::Unauthorized(
            "client assertion: 'exp' must be at most 5 minutes ahead".into(),
        ));
    }
    // Each assertion is good for one token: its jti is recorded until it expires, in the
    // shared database, so a replay fails on every instance.
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 200)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "client assertion: 'jti' (a unique id, at most 200 characters) is required".into(),
            )
        })?
        .to_owned();
    let expires = chrono::DateTime::from_timestamp(exp + state.settings.clock_skew_secs, 0)
        .map(|t| t.naive_utc())
        .unwrap_or_default();
    let (cid, j) = (client_id.clone(), jti.clone());
    let fresh = on_conn(&state, move |c| -> Result<bool, ApiError> {
        Ok(ers_schema::write_tx(c, |c| {
            ers_schema::store::record_assertion(
                c,
                &cid,
                &j,
                expires,
                chrono::Utc::now().naive_utc(),
            )
        })?)
    })
    .await?;
    if !fresh {
        return Err(ApiError::Unauthorized(format!(
            "client assertion: 'jti' ({jti}) has been used already; sign a new assertion for each token request"
        )));
    }
    let token = state
        .auth
        .apps
        .issue(
            json!({"sub": app.client_id, "ers_org": app.ods, "ers_app": true}),
            state.auth.token_ttl,
        )
        .map_err(ApiError::Internal)?;
    Ok(token_response(token, state.auth.token_ttl))
}

pub async fn app_jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.auth.apps.jwks())
}

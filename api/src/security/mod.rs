//! Authentication: bearer JWTs from trusted issuers (CIS2-style OIDC, the sandbox issuer, and
//! this server's own issuer for application-restricted access tokens).

pub mod jwt;
pub mod permissions;
pub mod rate;

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use jwt::{Expect, Jwks, JwtError, SigningKey, VerifyKey};

use crate::config::{Mode, Settings};
use crate::domain::BusinessFunction;

/// Who a valid token says the caller is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A person (CIS2 user); roles from the token's `ers_roles` claim when present, else from
    /// their PractitionerRoles.
    User {
        sub: String,
        roles: Option<Vec<(BusinessFunction, String)>>,
    },
    /// An application with an access token from this server's token endpoint.
    Application { client_id: String, org: String },
}

/// Why authentication failed (always 401).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("No bearer token: send 'Authorization: Bearer <token>'")]
    Missing,
    #[error("{0}")]
    Token(#[from] JwtError),
    #[error("Identity assurance is too low: the token says {claim} = {found}, this service needs at least {needed}")]
    Assurance {
        claim: &'static str,
        found: String,
        needed: u8,
    },
    #[error("The token's 'ers_roles' claim is not valid: {0}")]
    Roles(String),
}

enum KeySource {
    Static,
    File(PathBuf),
    Url(String),
}

/// One trusted issuer with its keys.
struct Issuer {
    issuer: String,
    audience: String,
    source: KeySource,
    keys: RwLock<Vec<VerifyKey>>,
    last_refresh: Mutex<Option<Instant>>,
    /// Whether tokens from it must carry identity and authentication assurance claims.
    check_assurance: bool,
}

fn keys_of(jwks: &Jwks) -> Vec<VerifyKey> {
    jwks.keys
        .iter()
        .filter_map(|k| VerifyKey::from_jwk(k).ok().flatten())
        .collect()
}

impl Issuer {
    async fn load(&self) -> Result<(), String> {
        let jwks: Jwks = match &self.source {
            KeySource::Static => return Ok(()),
            KeySource::File(p) => {
                let text = std::fs::read(p)
                    .map_err(|e| format!("cannot read JWKS {}: {e}", p.display()))?;
                serde_json::from_slice(&text)
                    .map_err(|e| format!("JWKS {} is not valid: {e}", p.display()))?
            }
            KeySource::Url(u) => {
                let client = awc::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .finish();
                let mut res = client
                    .get(u)
                    .send()
                    .await
                    .map_err(|e| format!("cannot fetch JWKS {u}: {e}"))?;
                if !res.status().is_success() {
                    return Err(format!("JWKS {u} answered {}", res.status()));
                }
                res.json::<Jwks>()
                    .limit(1 << 20)
                    .await
                    .map_err(|e| format!("JWKS {u} is not valid: {e}"))?
            }
        };
        let keys = keys_of(&jwks);
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(())
    }

    /// Reloads the keys when a token names an unknown `kid` (key rotation), at most every 5 s.
    async fn refresh(&self) -> bool {
        {
            let Ok(mut last) = self.last_refresh.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.load().await {
            Ok(()) => true,
            Err(e) => {
                log::warn!("issuer {}: {e}", self.issuer);
                false
            }
        }
    }

    fn current_keys(&self) -> Vec<VerifyKey> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }
}

/// The token validator and the token issuers this server runs itself.
pub struct Authenticator {
    issuers: Vec<Issuer>,
    min_ial: u8,
    min_aal: u8,
    leeway: i64,
    /// Issues tokens for sandbox users (sandbox mode only).
    pub sandbox: Option<TokenIssuer>,
    /// Issues access tokens to registered applications.
    pub apps: TokenIssuer,
    pub token_ttl: i64,
    /// Tokens verified lately (`VerifiedTokens`).
    verified: VerifiedTokens,
}

/// How long a verified token is taken on trust without checking its signature again: a key
/// withdrawn from an issuer's key set stops working within this (or at the token's expiry,
/// if sooner).
const VERIFIED_TTL_SECS: i64 = 60;
/// Most tokens remembered at once (a few MB at most).
const VERIFIED_MAX: usize = 20_000;

/// Bearer tokens whose signature and claims were checked lately, by their SHA-256, with what
/// they identify and until when that holds. A client sends the same token with every request;
/// checking its RSA signature each time was about a sixth of the server's CPU for a read. Only
/// tokens that passed every check are kept; a refused one is checked (and audited) each time.
#[derive(Default)]
struct VerifiedTokens {
    map: Mutex<std::collections::HashMap<[u8; 32], (Identity, i64)>>,
}

impl VerifiedTokens {
    fn get(&self, key: &[u8; 32], now: i64) -> Option<Identity> {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(_, until)| now <= *until)
            .map(|(identity, _)| identity.clone())
    }

    fn put(&self, key: [u8; 32], identity: Identity, until: i64, now: i64) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= VERIFIED_MAX {
                map.retain(|_, (_, u)| *u >= now);
                if map.len() >= VERIFIED_MAX {
                    map.clear();
                }
            }
            map.insert(key, (identity, until));
        }
    }
}

/// A token issuer run by this server.
pub struct TokenIssuer {
    pub issuer: String,
    pub audience: String,
    pub key: SigningKey,
}

impl TokenIssuer {
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.key.public_jwk()]})
    }

    pub fn issue(&self, mut claims: Value, ttl: i64) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        claims["iss"] = json!(self.issuer);
        claims["aud"] = json!(self.audience);
        claims["iat"] = json!(now);
        claims["nbf"] = json!(now);
        claims["exp"] = json!(now + ttl);
        claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
        self.key.sign(&claims)
    }
}

pub const SANDBOX_ISSUER: &str = "urn:ers:sandbox-issuer";
pub const APP_ISSUER: &str = "urn:ers:application-token-issuer";

fn assurance(claims: &Value, claim: &'static str) -> Option<u8> {
    match claims.get(claim)? {
        Value::Number(n) => n.as_u64().and_then(|v| u8::try_from(v).ok()),
        Value::String(s) => s
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok(),
        _ => None,
    }
}

impl Authenticator {
    pub async fn from_settings(s: &Settings) -> Result<Self, String> {
        let mut issuers = Vec::new();
        if let Some(oidc) = &s.oidc {
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| oidc.jwks.starts_with(p));
            let source = if oidc.jwks.starts_with("https://") || loopback {
                KeySource::Url(oidc.jwks.clone())
            } else if oidc.jwks.starts_with("http://") {
                return Err(format!("ERS_OIDC_JWKS {}: keys are fetched over https:// only (plain http only from this machine)", oidc.jwks));
            } else {
                KeySource::File(PathBuf::from(oidc.jwks.trim_start_matches("file://")))
            };
            let issuer = Issuer {
                issuer: oidc.issuer.clone(),
                audience: oidc.audience.clone(),
                source,
                keys: RwLock::new(Vec::new()),
                last_refresh: Mutex::new(None),
                check_assurance: true,
            };
            // A file must be readable at start; a URL may be down and is fetched on demand.
            match (&issuer.source, issuer.load().await) {
                (KeySource::Url(_), Err(e)) => log::warn!("{e}; will retry when a token arrives"),
                (_, Err(e)) => return Err(e),
                _ => {}
            }
            issuers.push(issuer);
        }
        let sandbox = if s.sandbox_issuer {
            if s.mode == Mode::Production {
                return Err("the sandbox token issuer cannot run in production mode (set ERS_SANDBOX_ISSUER=false)".into());
            }
            let key = SigningKey::generate("sandbox-1")?;
            let iss = TokenIssuer {
                issuer: SANDBOX_ISSUER.into(),
                audience: s.audience.clone(),
                key,
            };
            issuers.push(Issuer {
                issuer: iss.issuer.clone(),
                audience: iss.audience.clone(),
                source: KeySource::Static,
                keys: RwLock::new(keys_of(
                    &serde_json::from_value(iss.jwks()).map_err(|e| e.to_string())?,
                )),
                last_refresh: Mutex::new(None),
                check_assurance: true,
            });
            Some(iss)
        } else {
            None
        };
        let app_key = match &s.token_signing_key {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("cannot read ERS_TOKEN_SIGNING_KEY {path}: {e}"))?;
                SigningKey::from_pem("app-1", &pem)?
            }
            None if s.mode == Mode::Production => {
                return Err("production mode needs ERS_TOKEN_SIGNING_KEY (an RSA private key, PEM) so that every instance signs application tokens alike".into())
            }
            None => SigningKey::generate("app-1")?,
        };
        let apps = TokenIssuer {
            issuer: APP_ISSUER.into(),
            audience: s.audience.clone(),
            key: app_key,
        };
        issuers.push(Issuer {
            issuer: apps.issuer.clone(),
            audience: apps.audience.clone(),
            source: KeySource::Static,
            keys: RwLock::new(keys_of(
                &serde_json::from_value(apps.jwks()).map_err(|e| e.to_string())?,
            )),
            last_refresh: Mutex::new(None),
            check_assurance: false,
        });
        if s.mode == Mode::Production && s.oidc.is_none() {
            return Err("production mode needs an identity provider: set ERS_OIDC_ISSUER, ERS_OIDC_AUDIENCE and ERS_OIDC_JWKS".into());
        }
        Ok(Authenticator {
            issuers,
            min_ial: s.min_ial,
            min_aal: s.min_aal,
            leeway: s.clock_skew_secs,
            sandbox,
            apps,
            token_ttl: s.token_ttl_secs,
            verified: VerifiedTokens::default(),
        })
    }

    /// Validates a bearer token and says who it identifies: from `verified` when the same
    /// token passed lately and has not expired, else by checking it.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let key = openssl::sha::sha256(token.as_bytes());
        let now = chrono::Utc::now().timestamp();
        if let Some(identity) = self.verified.get(&key, now) {
            return Ok(identity);
        }
        let (identity, exp) = self.check_token(token).await?;
        let until = (exp + self.leeway).min(now + VERIFIED_TTL_SECS);
        self.verified.put(key, identity.clone(), until, now);
        Ok(identity)
    }

    /// Checks a bearer token (signature, issuer, audience, times, assurance, roles): who it
    /// identifies and its expiry.
    async fn check_token(&self, token: &str) -> Result<(Identity, i64), AuthError> {
        let unverified = jwt::decode(token)?;
        let iss = unverified
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(JwtError::MissingClaim("iss"))?
            .to_owned();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| JwtError::Issuer(iss.clone()))?;
        let expect = Expect {
            issuer: &issuer.issuer,
            audience: &issuer.audience,
            now: chrono::Utc::now().timestamp(),
            leeway: self.leeway,
        };
        let kid_known = |keys: &[VerifyKey]| {
            unverified
                .kid
                .as_ref()
                .is_none_or(|k| keys.iter().any(|x| x.kid.as_deref() == Some(k)))
        };
        let mut keys = issuer.current_keys();
        if !kid_known(&keys) && issuer.refresh().await {
            keys = issuer.current_keys();
        }
        let claims = unverified.verify(&keys, &expect)?;
        // Present: `verify` refuses a token without it.
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(JwtError::MissingClaim("exp"))?;
        if issuer.issuer == APP_ISSUER {
            let client_id = claims
                .get("sub")
                .and_then(Value::as_str)
                .ok_or(JwtError::MissingClaim("sub"))?
                .to_owned();
            let org = claims
                .get("ers_org")
                .and_then(Value::as_str)
                .ok_or(JwtError::MissingClaim("ers_org"))?
                .to_owned();
            return Ok((Identity::Application { client_id, org }, exp));
        }
        if issuer.check_assurance {
            for (claim, needed) in [
                ("id_assurance_level", self.min_ial),
                ("authentication_assurance_level", self.min_aal),
            ] {
                let found = assurance(&claims, claim);
                if found.is_none_or(|f| f < needed) {
                    let found = claims
                        .get(claim)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "(missing)".into());
                    return Err(AuthError::Assurance {
                        claim,
                        found,
                        needed,
                    });
                }
            }
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(JwtError::MissingClaim("sub"))?
            .to_owned();
        let roles = match claims.get("ers_roles") {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|r| {
                        let bf = r.get("business_function").and_then(Value::as_str).and_then(BusinessFunction::parse);
                        let org = r.get("org").and_then(Value::as_str);
                        match (bf, org) {
                            (Some(bf), Some(org)) => Ok((bf, org.to_owned())),
                            _ => Err(AuthError::Roles(format!("{r} needs 'business_function' (an e-RS business function) and 'org'"))),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(other) => return Err(AuthError::Roles(format!("{other} is not an array"))),
        };
        Ok((Identity::User { sub, roles }, exp))
    }
}

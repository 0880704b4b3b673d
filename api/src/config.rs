//! Typed settings: defaults, then environment variables (documented in README and
//! `.env.example`).

use std::net::SocketAddr;

use crate::domain::calendar::WorkingDays;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedMode {
    Sandbox,
    None,
}

/// `ERS_MODE`: sandbox (developer conveniences on) or production (they refuse to start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sandbox,
    Production,
}

/// The trusted OIDC identity provider (CIS2 or a test double).
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `ERS_OIDC_ISSUER`: the exact `iss` of its tokens.
    pub issuer: String,
    /// `ERS_OIDC_AUDIENCE`: the `aud` its tokens must carry.
    pub audience: String,
    /// `ERS_OIDC_JWKS`: its JWKS, a file path or an https:// URL.
    pub jwks: String,
}

/// A registered application (application-restricted access).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AppRegistration {
    pub client_id: String,
    /// ODS code of the organisation the application acts for.
    pub ods: String,
    /// Public keys that verify its client assertions.
    pub jwks: crate::security::jwt::Jwks,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `ERS_DATABASE_URL`: `sqlite://path` or `postgres://…`.
    pub database_url: String,
    /// `ERS_BIND`: address to listen on.
    pub bind: String,
    /// `ERS_SEED`: `sandbox` or `none`.
    pub seed: SeedMode,
    /// `ERS_DB_POOL_SIZE`: connections per server instance.
    pub pool_size: u32,
    /// `ERS_DB_TIMEOUT_SECS`: the longest a request waits on the database (a pooled
    /// connection, a new PostgreSQL connection, SQLite's write lock) before it fails with 503.
    pub db_timeout_secs: u64,
    /// `ERS_BODY_TIMEOUT_SECS`: how long a client may take to send a request body (408 after).
    pub body_timeout_secs: u64,
    /// `ERS_SHUTDOWN_TIMEOUT_SECS`: on SIGTERM or SIGINT, how long in-flight requests may take
    /// to finish after the server stops accepting.
    pub shutdown_timeout_secs: u64,
    /// `ERS_BASE_URL`: the public FHIR base (for links), when behind a proxy.
    pub base_url: Option<String>,
    /// `ERS_SEARCH_TOTAL_UP_TO`: how many matches a search counts for its total unless asked
    /// for `_total=accurate` (past it, no total).
    pub search_total_up_to: i64,
    /// `ERS_MAX_BODY_BYTES`: request body limit.
    pub max_body_bytes: usize,
    /// `ERS_WORKERS`: HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// `ERS_MAX_HEADER_BYTES`: total size of the request headers (431 above it).
    pub max_header_bytes: usize,
    /// `ERS_REQUIRE_IF_MATCH`: every update must carry `If-Match` (428 without), as e-RS does.
    pub require_if_match: bool,
    /// `ERS_MODE`.
    pub mode: Mode,
    pub oidc: Option<OidcSettings>,
    /// `ERS_AUDIENCE`: the audience of tokens this server issues itself.
    pub audience: String,
    /// `ERS_SANDBOX_ISSUER`: run the sandbox token endpoint (default: on in sandbox mode).
    pub sandbox_issuer: bool,
    /// `ERS_MIN_IAL` / `ERS_MIN_AAL`: identity and authentication assurance minimums.
    pub min_ial: u8,
    pub min_aal: u8,
    /// `ERS_CLOCK_SKEW_SECS`: leeway for `exp` and `nbf`.
    pub clock_skew_secs: i64,
    /// `ERS_TOKEN_TTL_SECS`: lifetime of tokens this server issues.
    pub token_ttl_secs: i64,
    /// `ERS_TOKEN_SIGNING_KEY`: RSA private key (PEM file) for application access tokens.
    pub token_signing_key: Option<String>,
    /// `ERS_APPS_FILE`: JSON list of registered applications.
    pub apps: Vec<AppRegistration>,
    /// `ERS_RATE_LIMIT_PER_SEC` / `ERS_RATE_LIMIT_BURST`: requests per caller (0 = off).
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// `ERS_TLS_CERT` / `ERS_TLS_KEY`: PEM files; HTTPS (TLS 1.2+) when both are set.
    pub tls: Option<(String, String)>,
    /// `ERS_UBRN_EXPIRY_DAYS`: an A&G UBRN with no activity for this long expires (default
    /// 548, the published 18-month e-RS inactivity rule).
    pub ubrn_expiry_days: i64,
    /// `ERS_IDEMPOTENCY_KEY_HOURS`: how long a write's `Idempotency-Key` holds its answer
    /// (default 24; forgotten on the expiry schedule).
    pub idempotency_key_hours: i64,
    /// `ERS_EXPIRY_INTERVAL_SECS`: how often the server runs UBRN expiry (0: never; run
    /// `ers-server expire` instead).
    pub expiry_interval_secs: u64,
    /// `ERS_DELIVERY`: this instance delivers subscription notifications (default true; any
    /// number of instances may, one at a time per subscription).
    pub delivery: bool,
    /// `ERS_EXPORTS`: this instance runs FHIR Bulk Data export jobs (default true; a job runs
    /// on one instance at a time and resumes elsewhere if that instance stops).
    pub exports: bool,
    /// `ERS_EXPORT_TTL_SECS`: how long an export's files stay downloadable after it completes
    /// (default 3600).
    pub export_ttl_secs: i64,
    /// `ERS_EXPORT_FILE_RESOURCES`: resources per NDJSON output file (default 10,000).
    pub export_file_resources: usize,
    /// `ERS_SCAN_COMMAND`: the malware scanner every upload goes through before it is stored,
    /// a shell command line given the file on its standard input and answering as
    /// `clamdscan -` does (exit 0 clean, 1 a threat, else a failure: 503). None by default:
    /// then only the EICAR test file is refused.
    pub scan_command: Option<String>,
    /// `ERS_CORS_ORIGINS`: the browser origins (`https://app.example.nhs.uk`, comma-separated,
    /// or `*` for any) whose pages may call the API (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// `ERS_ROLE_CACHE_SECS`: how long an instance keeps the roles a user was found to hold
    /// (default 30; 0: looked up on every request). A role added is seen at once (a miss looks
    /// again); a role removed stops working within this time.
    pub role_cache_secs: u64,
    /// `ERS_BANK_HOLIDAYS`: days off beyond the bank holidays of England and Wales this
    /// release knows (ISO dates, comma-separated: a special bank holiday announced later). A
    /// deferred referral's contact-by date counts working days without them.
    pub working_days: WorkingDays,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: "sqlite://ers.db".into(),
            bind: "127.0.0.1:8080".into(),
            seed: SeedMode::Sandbox,
            pool_size: 8,
            db_timeout_secs: 5,
            shutdown_timeout_secs: 30,
            body_timeout_secs: 30,
            base_url: None,
            max_body_bytes: 5 * 1024 * 1024,
            workers: None,
            max_header_bytes: 16 * 1024,
            search_total_up_to: crate::fhir::search::COUNT_UP_TO,
            cors_origins: Vec::new(),
            scan_command: None,
            require_if_match: false,
            mode: Mode::Sandbox,
            oidc: None,
            audience: "ers-fhir".into(),
            sandbox_issuer: true,
            min_ial: 3,
            min_aal: 2,
            clock_skew_secs: 60,
            token_ttl_secs: 3600,
            token_signing_key: None,
            apps: Vec::new(),
            rate_limit_per_sec: 50,
            rate_limit_burst: 100,
            tls: None,
            ubrn_expiry_days: 548,
            idempotency_key_hours: 24,
            expiry_interval_secs: 3600,
            delivery: true,
            exports: true,
            export_ttl_secs: 3600,
            export_file_resources: 10_000,
            role_cache_secs: 30,
            working_days: WorkingDays::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut s = Settings::default();
        if let Some(v) = get("ERS_DATABASE_URL").filter(|v| !v.is_empty()) {
            s.database_url = v;
        }
        if let Some(v) = get("ERS_BIND").filter(|v| !v.is_empty()) {
            v.parse::<SocketAddr>()
                .map_err(|e| ConfigError(format!("ERS_BIND '{v}' is not host:port: {e}")))?;
            s.bind = v;
        }
        if let Some(v) = get("ERS_SEED").filter(|v| !v.is_empty()) {
            s.seed = match v.as_str() {
                "sandbox" => SeedMode::Sandbox,
                "none" => SeedMode::None,
                _ => {
                    return Err(ConfigError(format!(
                        "ERS_SEED '{v}' must be 'sandbox' or 'none'"
                    )))
                }
            };
        }
        if let Some(v) = get("ERS_DB_POOL_SIZE").filter(|v| !v.is_empty()) {
            s.pool_size = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!("ERS_DB_POOL_SIZE '{v}' must be a positive number"))
            })?;
        }
        if let Some(v) = get("ERS_SCAN_COMMAND").filter(|v| !v.trim().is_empty()) {
            s.scan_command = Some(v);
        }
        if let Some(v) = get("ERS_CORS_ORIGINS").filter(|v| !v.trim().is_empty()) {
            s.cors_origins = v.split(',').map(|o| o.trim().to_owned()).collect();
            if let Some(bad) = s.cors_origins.iter().find(|o| !is_origin(o)) {
                return Err(ConfigError(format!(
                    "ERS_CORS_ORIGINS: '{bad}' is not an origin (scheme://host[:port], no path) or *"
                )));
            }
        }
        if let Some(v) = get("ERS_SEARCH_TOTAL_UP_TO").filter(|v| !v.is_empty()) {
            s.search_total_up_to = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "ERS_SEARCH_TOTAL_UP_TO '{v}' must be a positive number of matches"
                ))
            })?;
        }
        if let Some(v) = get("ERS_DB_TIMEOUT_SECS").filter(|v| !v.is_empty()) {
            s.db_timeout_secs = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "ERS_DB_TIMEOUT_SECS '{v}' must be a positive number of seconds"
                ))
            })?;
        }
        if let Some(v) = get("ERS_BODY_TIMEOUT_SECS").filter(|v| !v.is_empty()) {
            s.body_timeout_secs = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "ERS_BODY_TIMEOUT_SECS '{v}' must be a positive number of seconds"
                ))
            })?;
        }
        if let Some(v) = get("ERS_SHUTDOWN_TIMEOUT_SECS").filter(|v| !v.is_empty()) {
            s.shutdown_timeout_secs = v.parse().map_err(|_| {
                ConfigError(format!(
                    "ERS_SHUTDOWN_TIMEOUT_SECS '{v}' must be a number of seconds"
                ))
            })?;
        }
        if let Some(v) = get("ERS_BASE_URL").filter(|v| !v.is_empty()) {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "ERS_BASE_URL '{v}' must start with http:// or https://"
                )));
            }
            s.base_url = Some(v);
        }
        if let Some(v) = get("ERS_MAX_BODY_BYTES").filter(|v| !v.is_empty()) {
            s.max_body_bytes = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "ERS_MAX_BODY_BYTES '{v}' must be a positive number"
                ))
            })?;
        }
        if let Some(v) = get("ERS_WORKERS").filter(|v| !v.is_empty()) {
            s.workers = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!("ERS_WORKERS '{v}' must be a positive number"))
            })?);
        }
        let flag = |name: &str| -> Result<Option<bool>, ConfigError> {
            match get(name).filter(|v| !v.is_empty()).as_deref() {
                None => Ok(None),
                Some("true" | "1") => Ok(Some(true)),
                Some("false" | "0") => Ok(Some(false)),
                Some(v) => Err(ConfigError(format!("{name} '{v}' must be true or false"))),
            }
        };
        let number = |name: &str| -> Result<Option<i64>, ConfigError> {
            match get(name).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(Some)
                    .ok_or_else(|| {
                        ConfigError(format!("{name} '{v}' must be a non-negative number"))
                    }),
            }
        };
        if let Some(v) = flag("ERS_REQUIRE_IF_MATCH")? {
            s.require_if_match = v;
        }
        if let Some(v) = number("ERS_MAX_HEADER_BYTES")? {
            s.max_header_bytes = usize::try_from(v)
                .map_err(|_| ConfigError("ERS_MAX_HEADER_BYTES is too large".into()))?
                .max(1024);
        }
        if let Some(v) = get("ERS_MODE").filter(|v| !v.is_empty()) {
            s.mode = match v.as_str() {
                "sandbox" => Mode::Sandbox,
                "production" => Mode::Production,
                _ => {
                    return Err(ConfigError(format!(
                        "ERS_MODE '{v}' must be 'sandbox' or 'production'"
                    )))
                }
            };
            if s.mode == Mode::Production {
                s.sandbox_issuer = false;
            }
        }
        if let Some(v) = flag("ERS_SANDBOX_ISSUER")? {
            s.sandbox_issuer = v;
        }
        if let Some(v) = get("ERS_AUDIENCE").filter(|v| !v.is_empty()) {
            s.audience = v;
        }
        let oidc = (
            get("ERS_OIDC_ISSUER").filter(|v| !v.is_empty()),
            get("ERS_OIDC_AUDIENCE").filter(|v| !v.is_empty()),
            get("ERS_OIDC_JWKS").filter(|v| !v.is_empty()),
        );
        match oidc {
            (Some(issuer), Some(audience), Some(jwks)) => {
                s.oidc = Some(OidcSettings {
                    issuer,
                    audience,
                    jwks,
                })
            }
            (None, None, None) => {}
            _ => return Err(ConfigError(
                "ERS_OIDC_ISSUER, ERS_OIDC_AUDIENCE and ERS_OIDC_JWKS go together: set all three"
                    .into(),
            )),
        }
        let small = |name: &str, v: i64| {
            u8::try_from(v).map_err(|_| ConfigError(format!("{name} '{v}' is out of range")))
        };
        if let Some(v) = number("ERS_MIN_IAL")? {
            s.min_ial = small("ERS_MIN_IAL", v)?;
        }
        if let Some(v) = number("ERS_MIN_AAL")? {
            s.min_aal = small("ERS_MIN_AAL", v)?;
        }
        if let Some(v) = number("ERS_CLOCK_SKEW_SECS")? {
            s.clock_skew_secs = v;
        }
        if let Some(v) = number("ERS_TOKEN_TTL_SECS")? {
            s.token_ttl_secs = v.max(1);
        }
        s.token_signing_key = get("ERS_TOKEN_SIGNING_KEY").filter(|v| !v.is_empty());
        if let Some(path) = get("ERS_APPS_FILE").filter(|v| !v.is_empty()) {
            let text = std::fs::read(&path)
                .map_err(|e| ConfigError(format!("ERS_APPS_FILE {path}: {e}")))?;
            s.apps = serde_json::from_slice(&text).map_err(|e| {
                ConfigError(format!(
                    "ERS_APPS_FILE {path} is not a JSON list of {{client_id, ods, jwks}}: {e}"
                ))
            })?;
        }
        if let Some(v) = number("ERS_RATE_LIMIT_PER_SEC")? {
            s.rate_limit_per_sec = u32::try_from(v)
                .map_err(|_| ConfigError("ERS_RATE_LIMIT_PER_SEC is too large".into()))?;
        }
        if let Some(v) = number("ERS_RATE_LIMIT_BURST")? {
            s.rate_limit_burst = u32::try_from(v)
                .map_err(|_| ConfigError("ERS_RATE_LIMIT_BURST is too large".into()))?;
        }
        if let Some(v) = get("ERS_UBRN_EXPIRY_DAYS").filter(|v| !v.is_empty()) {
            s.ubrn_expiry_days = v.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ConfigError(format!(
                    "ERS_UBRN_EXPIRY_DAYS '{v}' must be a whole number of days (0 or more)"
                ))
            })?;
        }
        if let Some(v) = get("ERS_BANK_HOLIDAYS").filter(|v| !v.trim().is_empty()) {
            let days = v
                .split(',')
                .map(|d| {
                    chrono::NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|_| {
                        ConfigError(format!(
                            "ERS_BANK_HOLIDAYS: '{}' is not a date (YYYY-MM-DD, comma-separated)",
                            d.trim()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            s.working_days = WorkingDays::with_days_off(days);
        }
        if let Some(v) = get("ERS_IDEMPOTENCY_KEY_HOURS").filter(|v| !v.is_empty()) {
            s.idempotency_key_hours = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError(format!(
                    "ERS_IDEMPOTENCY_KEY_HOURS '{v}' must be a whole number of hours (1 or more)"
                ))
            })?;
        }
        if let Some(v) = get("ERS_EXPIRY_INTERVAL_SECS").filter(|v| !v.is_empty()) {
            s.expiry_interval_secs = v.parse().map_err(|_| {
                ConfigError(format!(
                    "ERS_EXPIRY_INTERVAL_SECS '{v}' must be a number of seconds (0: off)"
                ))
            })?;
        }
        if let Some(v) = flag("ERS_DELIVERY")? {
            s.delivery = v;
        }
        if let Some(v) = flag("ERS_EXPORTS")? {
            s.exports = v;
        }
        if let Some(v) = number("ERS_EXPORT_TTL_SECS")? {
            s.export_ttl_secs = Some(v).filter(|n| *n > 0).ok_or_else(|| {
                ConfigError("ERS_EXPORT_TTL_SECS must be a positive number of seconds".into())
            })?;
        }
        if let Some(v) = number("ERS_EXPORT_FILE_RESOURCES")? {
            s.export_file_resources =
                usize::try_from(v).ok().filter(|n| *n > 0).ok_or_else(|| {
                    ConfigError("ERS_EXPORT_FILE_RESOURCES must be a positive number".into())
                })?;
        }
        if let Some(v) = number("ERS_ROLE_CACHE_SECS")? {
            s.role_cache_secs = u64::try_from(v).map_err(|_| {
                ConfigError("ERS_ROLE_CACHE_SECS must be a number of seconds (0: off)".into())
            })?;
        }
        match (
            get("ERS_TLS_CERT").filter(|v| !v.is_empty()),
            get("ERS_TLS_KEY").filter(|v| !v.is_empty()),
        ) {
            (Some(c), Some(k)) => s.tls = Some((c, k)),
            (None, None) => {}
            _ => {
                return Err(ConfigError(
                    "ERS_TLS_CERT and ERS_TLS_KEY go together: set both or neither".into(),
                ))
            }
        }
        Ok(s)
    }
}

/// `*`, or a browser origin: `http://` or `https://`, a host, an optional port, nothing after.
fn is_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && port.chars().all(|c| c.is_ascii_digit())
        && port.is_empty() != rest.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_errors_name_the_variable() {
        let s = Settings::from_lookup(|k| (k == "ERS_SEED").then(|| "none".to_string()))
            .expect("valid");
        assert_eq!(s.seed, SeedMode::None);
        assert_eq!(s.bind, "127.0.0.1:8080");
        let e = Settings::from_lookup(|k| (k == "ERS_BIND").then(|| "nonsense".to_string()))
            .expect_err("invalid");
        assert!(e.to_string().contains("ERS_BIND"));
        let prod = Settings::from_lookup(|k| (k == "ERS_MODE").then(|| "production".to_string()))
            .expect("valid");
        assert!(
            !prod.sandbox_issuer,
            "production turns the sandbox issuer off"
        );
        let e =
            Settings::from_lookup(|k| (k == "ERS_OIDC_ISSUER").then(|| "https://x".to_string()))
                .expect_err("incomplete");
        assert!(e.to_string().contains("ERS_OIDC_JWKS"));
        let e = Settings::from_lookup(|k| (k == "ERS_MIN_IAL").then(|| "-1".to_string()))
            .expect_err("negative");
        assert!(e.to_string().contains("ERS_MIN_IAL"));
        let s = Settings::from_lookup(|k| {
            (k == "ERS_CORS_ORIGINS").then(|| "https://a.example, http://localhost:3000".into())
        })
        .expect("origins");
        assert_eq!(
            s.cors_origins,
            ["https://a.example", "http://localhost:3000"]
        );
        for bad in [
            "a.example",
            "https://a.example/page",
            "https://a.example:",
            "ftp://a",
        ] {
            let e = Settings::from_lookup(|k| (k == "ERS_CORS_ORIGINS").then(|| bad.into()))
                .expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = Settings::from_lookup(|k| (k == "ERS_SEARCH_TOTAL_UP_TO").then(|| "0".into()))
            .expect_err("zero");
        assert!(e.to_string().contains("ERS_SEARCH_TOTAL_UP_TO"));
        let s = Settings::from_lookup(|k| {
            (k == "ERS_BANK_HOLIDAYS").then(|| "2027-06-07, 2026-12-31".into())
        })
        .expect("days off");
        assert_eq!(
            s.working_days
                .days_off()
                .map(|d| d.to_string())
                .collect::<Vec<_>>(),
            ["2026-12-31", "2027-06-07"]
        );
        let e = Settings::from_lookup(|k| {
            (k == "ERS_BANK_HOLIDAYS").then(|| "2027-06-07,7 June".into())
        })
        .expect_err("not a date");
        assert!(e.to_string().contains("'7 June'"), "{e}");
    }
}

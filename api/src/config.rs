//! Typed settings: defaults, then environment variables (documented in README and
//! `.env.example`).

use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedMode {
    Sandbox,
    None,
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
    /// `ERS_BASE_URL`: the public FHIR base (for links), when behind a proxy.
    pub base_url: Option<String>,
    /// `ERS_MAX_BODY_BYTES`: request body limit.
    pub max_body_bytes: usize,
    /// `ERS_WORKERS`: HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// `ERS_REQUIRE_IF_MATCH`: every update must carry `If-Match` (428 without), as e-RS does.
    pub require_if_match: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: "sqlite://ers.db".into(),
            bind: "127.0.0.1:8080".into(),
            seed: SeedMode::Sandbox,
            pool_size: 8,
            base_url: None,
            max_body_bytes: 5 * 1024 * 1024,
            workers: None,
            require_if_match: false,
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
        if let Some(v) = get("ERS_REQUIRE_IF_MATCH").filter(|v| !v.is_empty()) {
            s.require_if_match = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError(format!(
                        "ERS_REQUIRE_IF_MATCH '{v}' must be true or false"
                    )))
                }
            };
        }
        Ok(s)
    }
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
    }
}

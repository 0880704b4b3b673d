//! Builds the application: pool, migrations, seed, HTTP server. Tests bind port 0.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Compress, Condition, Logger};
use actix_web::{web, App, HttpServer};
use ers_schema::DbPool;

use crate::config::{SeedMode, Settings};
use crate::http::{routes, ApiError};

/// Shared, read-only state of every worker.
pub struct AppState {
    pub pool: DbPool,
    /// Requests take their turn at `pool` in arrival order (see [`crate::http::gate`]).
    pub gate: crate::http::gate::Gate,
    pub auth: crate::security::Authenticator,
    /// Per-caller request limiter (None when off).
    pub limiter: Option<crate::security::rate::Limiter>,
    pub settings: Settings,
    pub backend: &'static str,
    /// When this process started (the CapabilityStatement date).
    pub started: String,
    /// The roles users were found to hold, for a short while.
    pub roles: crate::http::caller::RoleCache,
    /// Where reads and searches record their audit events (committed in groups).
    pub audit: crate::service::audit::AuditLog,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Storage(#[from] ers_schema::StorageError),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("seeding failed: {0}")]
    Seed(#[from] crate::service::ServiceError),
    #[error("security: {0}")]
    Security(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("cannot start {0}: {1}")]
    Start(&'static str, std::io::Error),
}

/// Pool + migrations; returns the pool and the backend name.
pub fn prepare_database(settings: &Settings) -> Result<(DbPool, &'static str), StartupError> {
    let pool = ers_schema::build_pool_with(
        &settings.database_url,
        settings.pool_size,
        std::time::Duration::from_secs(settings.db_timeout_secs),
    )?;
    let mut conn = pool.get()?;
    let applied = ers_schema::run_migrations(&mut conn)?;
    let backend = conn.backend_name();
    log::info!("database: {backend}, {applied} migration(s) applied");
    let listed = crate::service::reporting::backfill_worklists(&mut conn)?;
    if listed > 0 {
        log::info!("worklists: {listed} existing referrals and A&G requests listed");
    }
    let slots = crate::service::reporting::backfill_slot_rows(&mut conn)?;
    if slots > 0 {
        log::info!("slot projection: {slots} slots of schedules without a service added");
    }
    Ok((pool, backend))
}

/// Seeds sandbox data when configured.
pub fn seed(pool: &DbPool, settings: &Settings) -> Result<(), StartupError> {
    if settings.seed == SeedMode::Sandbox {
        let mut conn = pool.get()?;
        let report = crate::service::seed::sandbox(&mut conn)?;
        log::info!(
            "sandbox data: {} created, {} already present",
            report.created,
            report.existing
        );
    }
    Ok(())
}

/// TLS 1.2 and 1.3 only, with the Mozilla "intermediate" cipher list.
fn tls_acceptor(cert: &str, key: &str) -> Result<openssl::ssl::SslAcceptorBuilder, String> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVersion};
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| e.to_string())?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| format!("ERS_TLS_KEY {key}: {e}"))?;
    b.set_certificate_chain_file(cert)
        .map_err(|e| format!("ERS_TLS_CERT {cert}: {e}"))?;
    b.check_private_key()
        .map_err(|e| format!("ERS_TLS_KEY does not match ERS_TLS_CERT: {e}"))?;
    Ok(b)
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let auth = crate::security::Authenticator::from_settings(&settings)
            .await
            .map_err(StartupError::Security)?;
        let tls = match &settings.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key).map_err(StartupError::Security)?),
            None => None,
        };
        let (pool, backend) = prepare_database(&settings)?;
        seed(&pool, &settings)?;
        let listener = TcpListener::bind(&settings.bind)
            .map_err(|e| StartupError::Bind(settings.bind.clone(), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartupError::Bind(settings.bind.clone(), e))?
            .port();
        let workers = settings.workers;
        let shutdown_timeout = settings.shutdown_timeout_secs;
        let max_body = settings.max_body_bytes;
        // Background work (notification delivery, export jobs, UBRN expiry) has connections of
        // its own: under load the request pool is always busy, and a delivery round that
        // queued for it behind every request fell seconds behind.
        let background = ers_schema::build_pool_with(
            &settings.database_url,
            3,
            std::time::Duration::from_secs(settings.db_timeout_secs),
        )?;
        if settings.delivery {
            crate::http::subscriptions::deliver(
                background.clone(),
                match &settings.base_url {
                    Some(b) => format!(
                        "{}/FHIR/R4",
                        b.trim_end_matches('/').trim_end_matches("/FHIR/R4")
                    ),
                    None => format!("http://127.0.0.1:{port}/FHIR/R4"),
                },
            );
        }
        // Index rows made before their definition changed are brought to it (once, by one
        // instance) while the server answers.
        crate::service::reindex::in_background(
            settings.database_url.clone(),
            std::time::Duration::from_secs(settings.db_timeout_secs),
        );
        if settings.exports {
            crate::http::bulk::run_jobs(
                background.clone(),
                settings.export_file_resources,
                settings.export_ttl_secs,
            );
        }
        if settings.expiry_interval_secs > 0 {
            schedule_expiry(
                background.clone(),
                settings.ubrn_expiry_days,
                settings.idempotency_key_hours,
                settings.expiry_interval_secs,
            );
        }
        if settings.scan_command.is_none() && settings.mode == crate::config::Mode::Production {
            log::warn!("ERS_SCAN_COMMAND is not set: uploads are not scanned for malware (only the EICAR test file is refused)");
        }
        let audit = crate::service::audit::AuditLog::start(ers_schema::build_pool_with(
            &settings.database_url,
            1,
            std::time::Duration::from_secs(settings.db_timeout_secs),
        )?)
        .map_err(|e| StartupError::Start("the audit writer", e))?;
        let state = web::Data::new(AppState {
            audit,
            // One turn per connection the pool can open.
            gate: crate::http::gate::Gate::new(
                pool.max_size(),
                std::time::Duration::from_secs(settings.db_timeout_secs),
            ),
            pool,
            auth,
            limiter: crate::security::rate::Limiter::new(
                settings.rate_limit_per_sec,
                settings.rate_limit_burst,
            ),
            roles: crate::http::caller::RoleCache::new(std::time::Duration::from_secs(
                settings.role_cache_secs,
            )),
            settings,
            backend,
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        let cors_origins = state.settings.cors_origins.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::BadRequest(format!("invalid path: {e}")).into()))
                // Innermost first: the envelope sees uncompressed bodies; compression is applied
                // to the final response.
                // Inside the envelope: a replayed or refused write is answered like any other.
                .wrap(from_fn(crate::http::idempotency::idempotent))
                .wrap(from_fn(crate::http::middleware::envelope))
                .wrap(Compress::default())
                // Outside the envelope: a browser may read errors too; a preflight is answered
                // here, before routing and authentication.
                .wrap(Condition::new(!cors_origins.is_empty(), crate::http::middleware::cors(&cors_origins)))
                .wrap(Logger::new("%a \"%r\" %s %b %Dms request_id=%{x-request-id}o correlation_id=%{x-correlation-id}i"))
                .configure(routes::configure)
        });
        let mut server = match tls {
            Some(acceptor) => server.listen_openssl(listener, acceptor),
            None => server.listen(listener),
        }
        .map_err(|e| StartupError::Bind(format!("port {port}"), e))?;
        if let Some(w) = workers {
            server = server.workers(w);
        }
        // SIGTERM / SIGINT: stop accepting, let in-flight requests finish, then stop (the
        // pool closes when the last worker drops it).
        server = server.shutdown_timeout(shutdown_timeout);
        Ok(Application {
            port,
            server: server.run(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// One UBRN expiry run (`ers-server expire`, and the scheduled task).
pub fn expire(pool: &DbPool, days: i64) -> Result<crate::service::advice::ExpiryReport, String> {
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    crate::service::advice::expire(&mut conn, chrono::Utc::now().naive_utc(), days)
        .map_err(|e| e.to_string())
}

/// Forgets the idempotency keys older than `hours` (`ers-server expire`, and the scheduled
/// task).
pub fn forget_idempotency_keys(pool: &DbPool, hours: i64) -> Result<usize, String> {
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let before = chrono::Utc::now().naive_utc() - chrono::Duration::hours(hours);
    ers_schema::idempotency::forget(&mut conn, before).map_err(|e| e.to_string())
}

/// Runs UBRN expiry every `interval` seconds (the first run after one interval) on the
/// server's runtime, so it stops with the server; the work runs on the blocking pool. Each
/// request expires in its own transaction, so instances running it together never expire one
/// twice. Idempotency keys past `key_hours` are forgotten on the same schedule.
fn schedule_expiry(pool: DbPool, days: i64, key_hours: i64, interval: u64) {
    actix_web::rt::spawn(async move {
        let period = std::time::Duration::from_secs(interval);
        let mut ticks =
            actix_web::rt::time::interval_at(actix_web::rt::time::Instant::now() + period, period);
        loop {
            ticks.tick().await;
            let p = pool.clone();
            match web::block(move || expire(&p, days)).await {
                Ok(Ok(r)) if r.requests > 0 => log::info!(
                    "UBRN expiry: {} advice requests expired ({} messages, {} documents, {} uploads deleted)",
                    r.requests, r.messages, r.documents, r.binaries
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => log::error!("UBRN expiry failed: {e}"),
                Err(e) => log::error!("UBRN expiry failed: {e}"),
            }
            let p = pool.clone();
            match web::block(move || forget_idempotency_keys(&p, key_hours)).await {
                Ok(Ok(n)) if n > 0 => log::info!("{n} idempotency keys forgotten"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => log::error!("forgetting idempotency keys failed: {e}"),
                Err(e) => log::error!("forgetting idempotency keys failed: {e}"),
            }
        }
    });
}

//! One connection type for both databases, an r2d2 pool, SQLite pragmas and embedded
//! migrations. The backend is chosen from the URL scheme, never by trial and error.

use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, Pool, PooledConnection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::time::Duration;

use crate::StorageError;

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    // Last: SQLite accepts any string as a path.
    Sqlite(SqliteConnection),
}

pub type DbPool = Pool<Manager>;
pub type PooledConn = PooledConnection<Manager>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A file path (`sqlite://path`, `sqlite:path` or a bare path).
    Sqlite(String),
    /// A libpq URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, StorageError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(without_tls_on_loopback(url)));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path == ":memory:" {
            return Err(StorageError::Config(format!(
                "database URL '{url}' names no SQLite file (an in-memory database would be empty on every pooled connection)"
            )));
        }
        if path.contains("://") {
            return Err(StorageError::Config(format!(
                "database URL '{url}': unknown scheme (use sqlite://path or postgres://...)"
            )));
        }
        Ok(Self::Sqlite(path.to_owned()))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// A PostgreSQL URL to this machine (a loopback address, `localhost`, or a Unix socket) that
/// does not choose an `sslmode` gets `sslmode=disable`: libpq's default (`prefer`) would
/// encrypt every round trip to a server on the same host, which protects nothing and cost a
/// tenth of a booking's throughput (docs/BENCHMARKS.md, Booking). A URL that names an
/// `sslmode`, or another host, is kept as it is.
fn without_tls_on_loopback(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let mut socket = false;
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "sslmode" => return url.to_owned(),
            "host" | "hostaddr" => {
                if value.starts_with('/') || matches!(&*value, "127.0.0.1" | "::1" | "localhost") {
                    socket = true;
                } else {
                    return url.to_owned();
                }
            }
            _ => {}
        }
    }
    let local = socket
        || match parsed.host() {
            None => true,
            // `postgres:` is not a scheme the URL standard knows: its IPv4 hosts stay text.
            Some(url::Host::Domain(d)) => {
                d.is_empty()
                    || d.eq_ignore_ascii_case("localhost")
                    || d.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
            }
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
        };
    if !local {
        return url.to_owned();
    }
    let sep = if parsed.query().is_some() { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
}

/// What diesel says when PostgreSQL answers an empty query (`EmptyQueryResponse`).
const EMPTY_QUERY_ANSWER: &str = "Received an empty query";

/// r2d2 manager that builds the right `DbConnection` variant for the configured URL and
/// reports the real connection error (the derive's own `establish` loses it).
#[derive(Debug, Clone)]
pub struct Manager {
    url: DatabaseUrl,
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        let conn = match &self.url {
            DatabaseUrl::Postgres(u) => PgConnection::establish(u).map(DbConnection::Postgresql),
            DatabaseUrl::Sqlite(p) => SqliteConnection::establish(p).map(DbConnection::Sqlite),
        };
        conn.map_err(diesel::r2d2::Error::ConnectionError)
    }

    /// Each checkout proves the connection still works with one round trip. On PostgreSQL an
    /// empty query: the server answers it without parsing or planning anything (a `SELECT 1`
    /// is planned on every checkout), and diesel reports its empty answer as an error of its
    /// own, which here means success.
    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        match conn {
            DbConnection::Postgresql(c) => match c.batch_execute("") {
                Ok(()) => Ok(()),
                Err(diesel::result::Error::DatabaseError(_, info))
                    if info.message() == EMPTY_QUERY_ANSWER =>
                {
                    Ok(())
                }
                Err(e) => Err(diesel::r2d2::Error::QueryError(e)),
            },
            DbConnection::Sqlite(c) => c
                .batch_execute("SELECT 1")
                .map_err(diesel::r2d2::Error::QueryError),
        }
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

/// Logs statements slower than the threshold (target `ers_schema::slow_query`, at warn), and
/// every statement with its time at trace: the SQL as sent, with its binds.
struct SlowQueryLog {
    started: Option<std::time::Instant>,
    threshold: Duration,
}

impl diesel::connection::Instrumentation for SlowQueryLog {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        use diesel::connection::InstrumentationEvent as E;
        match event {
            E::StartQuery { .. } => self.started = Some(std::time::Instant::now()),
            E::FinishQuery { query, .. } => {
                let Some(t) = self.started.take() else { return };
                let elapsed = t.elapsed();
                if elapsed >= self.threshold {
                    log::warn!(target: "ers_schema::slow_query", "{elapsed:?}: {query}");
                } else {
                    log::trace!(target: "ers_schema::slow_query", "{elapsed:?}: {query}");
                }
            }
            _ => {}
        }
    }
}

/// SQLite: WAL, foreign keys, a busy timeout. Nothing to do for PostgreSQL.
#[derive(Debug)]
struct Pragmas {
    busy_timeout: Duration,
}

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        let log = SlowQueryLog {
            started: None,
            threshold: Duration::from_millis(500),
        };
        match conn {
            DbConnection::Postgresql(c) => c.set_instrumentation(log),
            DbConnection::Sqlite(c) => c.set_instrumentation(log),
        }
        if let DbConnection::Sqlite(c) = conn {
            // The busy timeout first: switching a new file to WAL takes a lock, and the pool
            // opens its connections at once ("database is locked" otherwise).
            // A 32 MB page cache per connection: the default 2 MB made the first search of an
            // area cost 100-250 ms on a national-scale directory. No memory map: in WAL mode a
            // connection drops its map (and its page cache) whenever it starts reading after
            // another connection's commit, which under constant audit commits meant an munmap
            // of the mapped file per request; reads through the OS page cache cost less and
            // keep scans out of the server's resident memory (docs/BENCHMARKS.md).
            c.batch_execute(&format!(
                "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                 PRAGMA cache_size = -32768; PRAGMA mmap_size = 0; \
                 PRAGMA temp_store = MEMORY;",
                self.busy_timeout.as_millis()
            ))
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// Builds the pool (connecting eagerly, so a bad URL fails at start-up), with a 10 s timeout.
pub fn build_pool(url: &str, max_size: u32) -> Result<DbPool, StorageError> {
    build_pool_with(url, max_size, Duration::from_secs(10))
}

/// Builds the pool. `timeout` bounds every wait on the database: for a pooled connection
/// (r2d2), for a new PostgreSQL connection (libpq `connect_timeout`), for SQLite's write lock
/// (`busy_timeout`). Past it a request fails as unavailable (503) instead of hanging.
pub fn build_pool_with(
    url: &str,
    max_size: u32,
    timeout: Duration,
) -> Result<DbPool, StorageError> {
    let url = match DatabaseUrl::parse(url)? {
        DatabaseUrl::Postgres(u) if !u.contains("connect_timeout=") => {
            let sep = if u.contains('?') { '&' } else { '?' };
            DatabaseUrl::Postgres(format!(
                "{u}{sep}connect_timeout={}",
                timeout.as_secs().max(1)
            ))
        }
        other => other,
    };
    if let DatabaseUrl::Sqlite(path) = &url {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StorageError::Config(format!("cannot create directory {}: {e}", dir.display()))
                })?;
            }
        }
    }
    Pool::builder()
        .max_size(max_size)
        .connection_timeout(timeout)
        .connection_customizer(Box::new(Pragmas {
            busy_timeout: timeout,
        }))
        .build(Manager { url })
        .map_err(|e| StorageError::Unavailable(e.to_string()))
}

/// Applies every pending migration for the connection's backend; returns how many ran.
pub fn run_migrations(conn: &mut DbConnection) -> Result<usize, StorageError> {
    let applied = match conn {
        DbConnection::Postgresql(c) => {
            // Instances starting together take turns: the first applies what is pending, the
            // others then find nothing to do (a session-level advisory lock, released below
            // or when the connection closes).
            c.batch_execute("SELECT pg_advisory_lock(7243110001)")?;
            let applied = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            c.batch_execute("SELECT pg_advisory_unlock(7243110001)")?;
            applied
        }
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
    };
    applied.map_err(|e| StorageError::Migration(e.to_string()))
}

impl DbConnection {
    pub fn backend_name(&self) -> &'static str {
        match self {
            DbConnection::Postgresql(_) => "postgres",
            DbConnection::Sqlite(_) => "sqlite",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{without_tls_on_loopback as local, DatabaseUrl};

    #[test]
    fn loopback_postgresql_urls_skip_tls_unless_they_choose() {
        for (given, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/ers",
                "postgres://postgres@127.0.0.1:5432/ers?sslmode=disable",
            ),
            (
                "postgresql://u@localhost/ers?application_name=x",
                "postgresql://u@localhost/ers?application_name=x&sslmode=disable",
            ),
            (
                "postgres://u@[::1]:5433/ers",
                "postgres://u@[::1]:5433/ers?sslmode=disable",
            ),
            (
                "postgres:///ers?host=/var/run/postgresql",
                "postgres:///ers?host=/var/run/postgresql&sslmode=disable",
            ),
            // Chosen by the URL, or another machine: kept.
            (
                "postgres://u@127.0.0.1/ers?sslmode=require",
                "postgres://u@127.0.0.1/ers?sslmode=require",
            ),
            (
                "postgres://u@db.example.org/ers",
                "postgres://u@db.example.org/ers",
            ),
            ("postgres://u@10.0.0.5/ers", "postgres://u@10.0.0.5/ers"),
            (
                "postgres://u@127.0.0.1/ers?host=db.example.org",
                "postgres://u@127.0.0.1/ers?host=db.example.org",
            ),
        ] {
            assert_eq!(local(given), expected, "{given}");
        }
        assert_eq!(
            DatabaseUrl::parse("postgres://postgres@127.0.0.1:5432/ers").ok(),
            Some(DatabaseUrl::Postgres(
                "postgres://postgres@127.0.0.1:5432/ers?sslmode=disable".into()
            ))
        );
    }
}

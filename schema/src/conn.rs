//! One connection type for both databases, an r2d2 pool, SQLite pragmas and embedded
//! migrations. The backend is chosen from the URL scheme, never by trial and error.

use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, Pool, PooledConnection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

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

    /// A checkout proves the connection still works with one round trip, unless the
    /// connection answered a statement within the last [`TRUSTED_FOR`] and no connection has
    /// found itself closed since it last proved itself (see [`Health`]). On PostgreSQL the
    /// proof is an empty query: the server answers it without parsing or planning anything (a
    /// `SELECT 1` is planned on every checkout), and diesel reports its empty answer as an
    /// error of its own, which here means success.
    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        let losses = LOSSES.load(Ordering::Acquire);
        if Health::of(conn).is_some_and(|h| h.lock().trusted(losses)) {
            return Ok(());
        }
        // The proof's answer is recorded like any statement's (`SlowQueryLog`).
        prove(conn)
    }

    /// A connection that found itself closed is dropped, not pooled again; so is one handed
    /// back inside a transaction (its user panicked, e.g. at a statement
    /// `reads_only` stopped): the next user must not work in it.
    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        was_lost(conn) || crate::in_transaction(conn)
    }
}

/// Whether a statement found this connection closed (the database dropped it, most likely
/// while it sat in the pool trusted without proof): work that only reads may run again on
/// another connection, which the pool proves before handing out.
pub fn was_lost(conn: &mut DbConnection) -> bool {
    Health::of(conn).is_some_and(|h| h.lock().closed)
}

/// One round trip that proves a connection works.
fn prove(conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
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

/// How long after its last answer a pooled connection is handed out without proving it works
/// (HikariCP's bypass window is the same). Under load every connection is back in use within
/// milliseconds, so checkouts cost no round trip (reads by id 5,106 and 5,138 → 5,700 and
/// 5,619/s, creates 765 and 777 → 823 and 824/s, on 2 cores: docs/BENCHMARKS.md). A connection idle longer,
/// one the database may have dropped meanwhile, is proved first, as every one was before.
pub const TRUSTED_FOR: Duration = Duration::from_millis(500);

/// How many times a statement has found its connection closed, in this process. A loss makes
/// every connection prove itself before its next use (the database restarted, most likely),
/// so at most the request that found it fails (and a read runs again: `was_lost`), not one
/// per pooled connection.
static LOSSES: AtomicU64 = AtomicU64::new(0);

/// What a pooled connection's statements have shown of it, kept by its [`SlowQueryLog`] (which
/// sees every statement) and read at checkout and check-in. r2d2 hands the manager the
/// connection alone, so a connection's record is found by the address of its instrumentation,
/// which lives on the heap for as long as the connection does.
#[derive(Debug, Default)]
struct Health {
    /// When the database last answered one of its statements (an error is an answer too).
    last_answer: Option<Instant>,
    /// [`LOSSES`] when it last answered or proved itself.
    losses_seen: u64,
    /// A statement found the connection closed.
    closed: bool,
}

type SharedHealth = Arc<parking_lot::Mutex<Health>>;

static HEALTH: LazyLock<parking_lot::Mutex<HashMap<usize, SharedHealth>>> =
    LazyLock::new(Default::default);

impl Health {
    fn trusted(&self, losses: u64) -> bool {
        !self.closed
            && self.losses_seen == losses
            && self.last_answer.is_some_and(|t| t.elapsed() < TRUSTED_FOR)
    }

    fn key(conn: &mut DbConnection) -> usize {
        let log: &mut dyn diesel::connection::Instrumentation = match conn {
            DbConnection::Postgresql(c) => c.instrumentation(),
            DbConnection::Sqlite(c) => c.instrumentation(),
        };
        log as *mut dyn diesel::connection::Instrumentation as *mut u8 as usize
    }

    fn of(conn: &mut DbConnection) -> Option<SharedHealth> {
        let key = Self::key(conn);
        HEALTH.lock().get(&key).cloned()
    }
}

/// Logs statements slower than the threshold (target `ers_schema::slow_query`, at warn), and
/// every statement with its time at trace: the SQL as sent, with its binds.
/// It also keeps the connection's [`Health`].
struct SlowQueryLog {
    started: Option<Instant>,
    threshold: Duration,
    health: SharedHealth,
}

impl Drop for SlowQueryLog {
    fn drop(&mut self) {
        // Its connection is closing: its record goes with it (the key is this value's address).
        HEALTH
            .lock()
            .remove(&(self as *mut Self as *mut u8 as usize));
    }
}

/// Whether this thread holds resource writes back (`store::PendingWrite`), and whether a
/// statement ran meanwhile: it would not have seen them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Nothing,
    Writes,
    Read,
}

thread_local! {
    static HELD: std::cell::Cell<Held> = const { std::cell::Cell::new(Held::Nothing) };
    static READS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the start (`true`) or end of a stretch in which this thread's statements run outside
/// any transaction and must only read: a use case that writes everything in one statement at
/// its end needs no transaction (`ers_api`'s `deferred::unit_tx`), and opens one before any
/// other write. A statement that is not a plain read during the stretch is a fault of the
/// code that ran it and is stopped before it runs (a panic, in every build: run outside a
/// transaction, it would commit on its own).
pub fn reads_only(on: bool) {
    READS_ONLY.with(|r| r.set(on));
}

/// Whether a statement's text is a plain read: a `SELECT` (or the read-ahead) that locks
/// nothing.
fn is_plain_read(sql: &str) -> bool {
    let sql = sql.trim_start();
    (sql.starts_with("SELECT") || sql.starts_with(crate::pg_rows::AHEAD_START))
        && !sql.contains(" FOR UPDATE")
        && !sql.contains(" FOR SHARE")
        && !sql.contains(" FOR NO KEY UPDATE")
        && !sql.contains(" FOR KEY SHARE")
}

/// Marks the start (`true`) or end of a stretch in which this thread holds resource writes
/// back. Until the end, no statement may run on any connection of the thread: one that does
/// is an error of the code that held the writes (in debug builds a panic naming the
/// statement; otherwise `writes_held` says so, and the transaction must not commit).
pub fn hold_writes(on: bool) {
    HELD.with(|h| h.set(if on { Held::Writes } else { Held::Nothing }));
}

/// Ends the stretch (`hold_writes(false)`): false when a statement ran during it.
pub fn writes_held() -> bool {
    HELD.with(|h| h.replace(Held::Nothing)) != Held::Read
}

fn statement_starts(query: &dyn diesel::connection::DebugQuery) {
    if READS_ONLY.with(|r| r.get()) {
        // The text as shown ends with its values (` -- binds: […]`), which say nothing of it.
        let shown = query.to_string();
        let sql = shown
            .split_once(" -- binds: ")
            .map_or(shown.as_str(), |(t, _)| t);
        if !is_plain_read(sql) {
            READS_ONLY.with(|r| r.set(false));
            panic!("a statement that is not a plain read ran outside a transaction where only reads may: {sql}");
        }
    }
    // A transaction's start reads nothing (a use case that holds writes may open one before
    // it writes them: `deferred::begin_writing`).
    if HELD.with(|h| h.get()) == Held::Writes && query.to_string() != "BEGIN" {
        HELD.with(|h| h.set(Held::Read));
        log::error!("a statement ran while this transaction held its writes back: {query}");
        if cfg!(debug_assertions) {
            panic!("a statement ran while this transaction held its writes back: {query}");
        }
    }
}

impl diesel::connection::Instrumentation for SlowQueryLog {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        use diesel::connection::InstrumentationEvent as E;
        use diesel::result::{DatabaseErrorKind, Error};
        match event {
            E::StartQuery { query, .. } => {
                statement_starts(query);
                self.started = Some(Instant::now());
            }
            E::FinishQuery { query, error, .. } => {
                let now = Instant::now();
                {
                    let mut h = self.health.lock();
                    if let Some(Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)) =
                        error
                    {
                        h.closed = true;
                        LOSSES.fetch_add(1, Ordering::AcqRel);
                    } else {
                        h.last_answer = Some(now);
                        h.losses_seen = LOSSES.load(Ordering::Acquire);
                    }
                }
                let Some(t) = self.started.take() else { return };
                let elapsed = now - t;
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
        let health = SharedHealth::default();
        let log = SlowQueryLog {
            started: None,
            threshold: Duration::from_millis(500),
            health: health.clone(),
        };
        match conn {
            DbConnection::Postgresql(c) => c.set_instrumentation(log),
            DbConnection::Sqlite(c) => c.set_instrumentation(log),
        }
        HEALTH.lock().insert(Health::key(conn), health);
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
            c.batch_execute(START_UP_LOCK)?;
            let applied = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            c.batch_execute(START_UP_UNLOCK)?;
            applied
        }
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
    };
    applied.map_err(|e| StorageError::Migration(e.to_string()))
}

/// The lock instances take turns under for their migrations on one database.
const START_UP_LOCK: &str = "SELECT pg_advisory_lock(7243110001)";
const START_UP_UNLOCK: &str = "SELECT pg_advisory_unlock(7243110001)";

/// The lock one instance at a time reindexes under (`reindexing`).
const REINDEX_LOCK_KEY: i64 = 7243110002;

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// Runs `f` while no other instance reindexes the same database: on PostgreSQL under an
/// advisory lock of its own (not the start-up one, so instances start meanwhile), waited for
/// when `wait`, else `None` at once when another instance holds it; SQLite's database belongs
/// to one process.
pub fn reindexing<T, E: From<StorageError>>(
    conn: &mut DbConnection,
    wait: bool,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<Option<T>, E> {
    use diesel::RunQueryDsl;
    if let DbConnection::Postgresql(c) = conn {
        if wait {
            c.batch_execute(&format!("SELECT pg_advisory_lock({REINDEX_LOCK_KEY})"))
                .map_err(StorageError::from)?;
        } else {
            let got: Locked = diesel::sql_query(format!(
                "SELECT pg_try_advisory_lock({REINDEX_LOCK_KEY}) AS locked"
            ))
            .get_result(c)
            .map_err(StorageError::from)?;
            if !got.locked {
                return Ok(None);
            }
        }
    }
    let out = f(conn);
    if let DbConnection::Postgresql(c) = conn {
        // Closing the connection releases it too, should this fail.
        c.batch_execute(&format!("SELECT pg_advisory_unlock({REINDEX_LOCK_KEY})"))
            .map_err(StorageError::from)?;
    }
    out.map(Some)
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
    use super::{DbConnection, TRUSTED_FOR};
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    #[derive(diesel::QueryableByName)]
    struct Text {
        #[diesel(sql_type = diesel::sql_types::Text)]
        text: String,
    }

    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }

    /// The tests that lose connections count losses for the whole process: one at a time.
    static LOSING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn backend_pid(c: &mut PgConnection) -> i32 {
        diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(c)
            .expect("pid")
            .pid
    }

    /// On PostgreSQL (ERS_TEST_POSTGRES_URL): a pool of `size` on a fresh database, and an
    /// admin connection. None on SQLite: a file opened in-process has no connection to lose
    /// (its proof is `SELECT 1`).
    fn on_postgres(size: u32) -> Option<(super::DbPool, PgConnection)> {
        let admin_url = std::env::var("ERS_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let pool = super::build_pool(&crate::testing::database_url(), size).expect("pool");
        Some((pool, PgConnection::establish(&admin_url).expect("admin")))
    }

    fn pg(c: &mut super::PooledConn) -> &mut PgConnection {
        match &mut **c {
            DbConnection::Postgresql(inner) => inner,
            DbConnection::Sqlite(_) => panic!("a PostgreSQL connection"),
        }
    }

    /// Has the database drop backend `pid`, and waits until it is gone.
    fn terminate(admin: &mut PgConnection, pid: i32) {
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid}, 5000)"))
            .execute(admin)
            .expect("terminate");
    }

    /// The next checkout is a dropped connection, handed out without proof: its first
    /// statement fails.
    fn handed_out_unproved_and_lost(pool: &super::DbPool) {
        let mut c = pool.get().expect("a dropped connection, unproved");
        assert!(pg(&mut c).batch_execute("SELECT 'lost'").is_err());
    }

    /// The last statement a backend ran, as PostgreSQL reports it.
    fn last_statement(admin: &mut PgConnection, pid: i32) -> String {
        diesel::sql_query(format!(
            "SELECT query AS text FROM pg_stat_activity WHERE pid = {pid}"
        ))
        .get_result::<Text>(admin)
        .expect("pg_stat_activity")
        .text
    }

    #[test]
    fn a_connection_is_proved_at_checkout_only_when_idle_or_after_a_loss() {
        let _one_at_a_time = LOSING.lock().unwrap_or_else(|e| e.into_inner());
        let Some((pool, mut admin)) = on_postgres(1) else {
            return;
        };
        let mut c = pool.get().expect("a connection");
        let inner = pg(&mut c);
        let pid = backend_pid(inner);
        inner.batch_execute("SELECT 'marker'").expect("a statement");
        drop(c);
        // Just used: handed out again with no round trip.
        let c = pool.get().expect("the same connection");
        assert_eq!(last_statement(&mut admin, pid), "SELECT 'marker'");
        drop(c);
        // Idle for longer than it is trusted: proved with an empty query.
        std::thread::sleep(TRUSTED_FOR + std::time::Duration::from_millis(100));
        let c = pool.get().expect("the same connection, proved");
        assert_eq!(last_statement(&mut admin, pid), "");
        drop(c);
        // Dropped by the database right after its proof: handed out unproved, its statement
        // fails, and it is not pooled again; the next checkout is a new connection that works.
        terminate(&mut admin, pid);
        handed_out_unproved_and_lost(&pool);
        let mut c = pool.get().expect("a new connection");
        let inner = pg(&mut c);
        assert_ne!(backend_pid(inner), pid);
    }

    #[test]
    fn one_lost_connection_has_every_other_proved_before_use() {
        let _one_at_a_time = LOSING.lock().unwrap_or_else(|e| e.into_inner());
        let Some((pool, mut admin)) = on_postgres(2) else {
            return;
        };
        // Both connections just used, then both dropped by the database (a restart).
        let (mut a, mut b) = (pool.get().expect("a"), pool.get().expect("b"));
        let mut pids = Vec::new();
        for c in [&mut a, &mut b] {
            pids.push(backend_pid(pg(c)));
        }
        drop((a, b));
        for pid in &pids {
            terminate(&mut admin, *pid);
        }
        // The first one handed out is trusted and fails...
        handed_out_unproved_and_lost(&pool);
        // ... after which the other is proved (and replaced) before it is used.
        let mut c = pool.get().expect("a working connection");
        let inner = pg(&mut c);
        let pid = backend_pid(inner);
        assert!(!pids.contains(&pid), "{pid} was dropped: {pids:?}");
    }

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

#[cfg(test)]
mod migration_tests {
    use diesel::prelude::*;
    use diesel_migrations::MigrationHarness;

    use super::{DbConnection, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
    use crate::schema::{resource_versions, resources, search_refs, search_tokens};

    /// Applies the pending migrations before the first whose name holds `stop`.
    fn migrate_until(conn: &mut DbConnection, stop: &str) {
        macro_rules! until {
            ($c:expr, $source:expr) => {
                for m in $c.pending_migrations($source).expect("pending") {
                    if m.name().to_string().contains(stop) {
                        break;
                    }
                    $c.run_migration(&m).expect("migration");
                }
            };
        }
        match conn {
            DbConnection::Postgresql(c) => until!(c, POSTGRES_MIGRATIONS),
            DbConnection::Sqlite(c) => until!(c, SQLITE_MIGRATIONS),
        }
    }

    #[test]
    fn stored_provenance_leaves_its_application_and_delegation_on_the_versions() {
        let pool = super::build_pool(&crate::testing::database_url(), 1).expect("pool");
        let mut conn = pool.get().expect("connection");
        migrate_until(&mut conn, "derived_provenance");
        let provenance = |version: i64, who: &str, for_whom: &str| {
            format!(
                r#"{{"resourceType":"Provenance","target":[{{"reference":"Patient/p1/_history/{version}"}}],"agent":[{{"who":{who},"onBehalfOf":{for_whom}}}]}}"#
            )
        };
        let app =
            r#"{"identifier":{"system":"https://fhir.nhs.uk/Id/ers-application","value":"app-9"}}"#;
        let user = r#"{"identifier":{"system":"https://fhir.nhs.uk/Id/sds-user-id","value":"555000000001"}}"#;
        let org = r#"{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"R69"}}"#;
        let delegate = r#"{"identifier":{"system":"https://fhir.nhs.uk/Id/sds-user-id","value":"555000000002"}}"#;
        let mut sql = String::from(
            "INSERT INTO resources (res_type, id, version_id, last_updated, deleted, content) VALUES ('Patient', 'p1', 3, '2026-12-01 10:00:00', 0, '{}');",
        );
        for v in 1..=3 {
            sql.push_str(&format!("INSERT INTO resource_versions (res_type, id, version_id, last_updated, method, deleted, content, author_user, author_role, author_org, request_id) VALUES ('Patient', 'p1', {v}, '2026-12-01 10:00:00', 'PUT', 0, '{{}}', 'u', 'R', 'R69', 'q{v}');"));
        }
        for (n, (v, who, for_whom)) in [(1, app, org), (2, user, delegate), (3, user, org)]
            .into_iter()
            .enumerate()
        {
            sql.push_str(&format!("INSERT INTO resources (res_type, id, version_id, last_updated, deleted, content) VALUES ('Provenance', 'pv{n}', 1, '2026-12-01 10:00:00', 0, '{}');", provenance(v, who, for_whom)));
            sql.push_str(&format!("INSERT INTO resource_versions (res_type, id, version_id, last_updated, method, deleted, content, author_user, author_role, author_org, request_id) VALUES ('Provenance', 'pv{n}', 1, '2026-12-01 10:00:00', 'POST', 0, '{{}}', 'u', 'R', 'R69', 'q{v}');"));
            sql.push_str(&format!("INSERT INTO search_tokens (res_type, res_id, param, system, code) VALUES ('Provenance', 'pv{n}', '_access', '', 'R69');"));
            sql.push_str(&format!("INSERT INTO search_refs (res_type, res_id, param, target_type, target_id) VALUES ('Provenance', 'pv{n}', 'target', 'Patient', 'p1');"));
        }
        match &mut *conn {
            DbConnection::Postgresql(c) => {
                diesel::connection::SimpleConnection::batch_execute(c, &sql)
            }
            DbConnection::Sqlite(c) => diesel::connection::SimpleConnection::batch_execute(c, &sql),
        }
        .expect("rows of the schema before");
        super::run_migrations(&mut conn).expect("the rest");

        let carried: Vec<(i64, Option<String>, Option<String>)> = resource_versions::table
            .filter(resource_versions::res_type.eq("Patient"))
            .order(resource_versions::version_id)
            .select((
                resource_versions::version_id,
                resource_versions::client_id,
                resource_versions::on_behalf_of,
            ))
            .load(&mut *conn)
            .expect("versions");
        assert_eq!(
            carried,
            vec![
                (1, Some("app-9".to_owned()), None),
                (2, None, Some("555000000002".to_owned())),
                (3, None, None),
            ]
        );
        let left = |c: &mut DbConnection| -> (i64, i64, i64, i64) {
            (
                resources::table
                    .filter(resources::res_type.eq("Provenance"))
                    .count()
                    .get_result(c)
                    .expect("count"),
                resource_versions::table
                    .filter(resource_versions::res_type.eq("Provenance"))
                    .count()
                    .get_result(c)
                    .expect("count"),
                search_tokens::table
                    .filter(search_tokens::res_type.eq("Provenance"))
                    .count()
                    .get_result(c)
                    .expect("count"),
                search_refs::table
                    .filter(search_refs::res_type.eq("Provenance"))
                    .count()
                    .get_result(c)
                    .expect("count"),
            )
        };
        assert_eq!(left(&mut conn), (0, 0, 0, 0));
    }
}

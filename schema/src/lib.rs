//! Storage for the e-RS FHIR server: the diesel schema, row types and query functions.
//!
//! Everything here is backend-neutral: one code path serves SQLite and PostgreSQL through
//! [`DbConnection`] (a `diesel::MultiConnection`). Per-backend branches exist only in `conn.rs`
//! (pragmas, migrations), [`write_tx`] and `on_backend!`, each with a comment saying why.

/// Runs one statement, written once, on the concrete backend's connection: multi-row INSERTs
/// and `ON CONFLICT DO NOTHING` do not compile through diesel's `MultiBackend`, but do on each
/// backend's own connection.
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::DbConnection::Postgresql($c) => $body,
            $crate::DbConnection::Sqlite($c) => $body,
        }
    };
}

pub mod audit;
pub mod backup;
pub mod conn;
pub mod exports;
pub mod reports;
pub mod rows;
pub mod schema;
pub mod search;
pub mod store;
pub mod worklists;

pub use conn::{
    build_pool, build_pool_with, run_migrations, scanning, DatabaseUrl, DbConnection, DbPool,
    PooledConn,
};
pub use rows::*;

/// Errors of the storage layer. The HTTP layer maps them to status codes.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StorageError {
    /// True when the database could not be reached or was busy, rather than refusing the
    /// statement: worth a retry (503), never a server fault. Pool timeouts, a lost PostgreSQL
    /// connection, SQLite's write lock held past the busy timeout.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StorageError::Unavailable(_) => true,
            StorageError::Query(Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)) => {
                true
            }
            StorageError::Query(Error::DatabaseError(_, info)) => {
                let m = info.message();
                [
                    "database is locked",
                    "database is busy",
                    "terminating connection",
                    "server closed the connection",
                    "connection to server",
                    "could not connect",
                    "the database system is",
                    "no connection to the server",
                ]
                .iter()
                .any(|needle| m.contains(needle))
            }
            _ => false,
        }
    }

    /// True when the error is a unique-constraint violation (a concurrent writer won).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StorageError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

/// Runs `f` in a write transaction. On SQLite the first statement takes the database write
/// lock (see the `write_lock` table), so concurrent writers wait on `busy_timeout` instead of
/// failing with SQLITE_BUSY; PostgreSQL needs no such step.
pub fn write_tx<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::Connection;
    if in_transaction(conn) {
        // Part of the caller's transaction: its lock, and its commit or rollback (no
        // savepoint: an error here ends the whole transaction, which every caller returns).
        return f(conn);
    }
    let queued = match conn {
        DbConnection::Sqlite(_) => Some(sqlite_writers::enter()?),
        DbConnection::Postgresql(_) => None,
    };
    let out = conn.transaction(|c| {
        if matches!(c, DbConnection::Sqlite(_)) {
            store::take_sqlite_write_lock(c)?;
        }
        f(c)
    });
    if let Some(turn) = queued {
        sqlite_writers::leave(turn);
    }
    out
}

/// SQLite writers of this process wait their turn here, first come first served, before they
/// take the database's one write lock. Without the queue they all poll the lock, and SQLite's
/// busy handler sleeps up to 100 ms between tries: 32 concurrent writers saw p99 waits of 1.5 s
/// and an occasional 503 after the busy timeout, however short each transaction was. Other
/// processes writing the same file still meet the lock's busy timeout. One queue serves every
/// SQLite database of the process (a server has one; tests have many, and their writes take
/// turns).
mod sqlite_writers {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    static QUEUE: parking_lot::Mutex<()> = parking_lot::const_mutex(());
    /// The longest wait for a turn: the pools' busy timeout (`set_wait`).
    static WAIT_MS: AtomicU64 = AtomicU64::new(5_000);

    pub(crate) fn set_wait(wait: Duration) {
        WAIT_MS.store(
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn enter() -> Result<parking_lot::MutexGuard<'static, ()>, diesel::result::Error> {
        let wait = Duration::from_millis(WAIT_MS.load(Ordering::Relaxed));
        QUEUE.try_lock_for(wait).ok_or_else(|| {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new(format!(
                    "database is locked: no turn to write within {} ms",
                    wait.as_millis()
                )),
            )
        })
    }

    /// Hands the turn to the writer that has waited longest.
    pub(crate) fn leave(turn: parking_lot::MutexGuard<'static, ()>) {
        parking_lot::MutexGuard::unlock_fair(turn);
    }
}

pub(crate) use sqlite_writers::set_wait as set_sqlite_writer_wait;

/// Runs `f` in a read transaction, so multi-statement reads see one snapshot.
pub fn read_tx<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::Connection;
    if in_transaction(conn) {
        return f(conn);
    }
    conn.transaction(f)
}

/// Whether a transaction is open on the connection.
fn in_transaction(conn: &mut DbConnection) -> bool {
    use diesel::connection::{Connection, TransactionManager};
    <DbConnection as Connection>::TransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .ok()
        .flatten()
        .is_some()
}

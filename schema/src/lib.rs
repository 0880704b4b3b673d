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
pub mod directory;
pub mod exports;
pub mod idempotency;
mod pg_rows;
pub mod reports;
pub mod rows;
pub mod schema;
pub mod search;
pub mod store;
#[cfg(test)]
mod testing;
pub mod versions;
pub mod worklists;

pub use conn::{
    build_pool, build_pool_with, reindexing, run_migrations, DatabaseUrl, DbConnection, DbPool,
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
    let queue = match conn {
        DbConnection::Sqlite(c) => Some(sqlite_writers::queue_of(c)?),
        DbConnection::Postgresql(_) => None,
    };
    let turn = match (&queue, &mut *conn) {
        (Some((q, busy)), DbConnection::Sqlite(c)) => Some(sqlite_writers::enter(q, *busy, c)?),
        _ => None,
    };
    let out = conn.transaction(|c| {
        if matches!(c, DbConnection::Sqlite(_)) {
            store::take_sqlite_write_lock(c)?;
        }
        f(c)
    });
    if let (Some(turn), DbConnection::Sqlite(c)) = (turn, conn) {
        sqlite_writers::leave(turn, c);
    }
    out
}

/// SQLite writers of this process wait their turn here, first come first served, before they
/// take the database's one write lock. Without the queue they all poll the lock, and SQLite's
/// busy handler sleeps up to 100 ms between tries: 32 concurrent writers saw p99 waits of 1.5 s
/// and an occasional 503 after the busy timeout, however short each transaction was. Other
/// processes writing the same file still meet the lock's busy timeout. One queue per database
/// file (a server has one; tests have many).
mod sqlite_writers {
    use std::collections::HashMap;
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use diesel::prelude::*;

    type Queue = parking_lot::Mutex<()>;

    static QUEUES: OnceLock<parking_lot::Mutex<HashMap<String, Arc<Queue>>>> = OnceLock::new();

    /// The queue of the connection's database file, and the connection's busy timeout (ms:
    /// its pool's wait for the database, set when it was opened).
    pub(crate) fn queue_of(
        c: &mut diesel::SqliteConnection,
    ) -> Result<(Arc<Queue>, i64), diesel::result::Error> {
        use diesel::sql_types::{BigInt, Text};
        let (file, busy): (String, i64) = diesel::select((
            diesel::dsl::sql::<Text>("(SELECT file FROM pragma_database_list WHERE name = 'main')"),
            diesel::dsl::sql::<BigInt>("(SELECT timeout FROM pragma_busy_timeout)"),
        ))
        .get_result(c)?;
        let mut queues = QUEUES.get_or_init(Default::default).lock();
        Ok((queues.entry(file).or_default().clone(), busy))
    }

    /// A writer's turn; `shortened` holds the busy timeout to put back when the wait for the
    /// turn left the connection less of it.
    pub(crate) struct Turn<'q> {
        guard: parking_lot::MutexGuard<'q, ()>,
        shortened: Option<i64>,
    }

    /// Waits for the turn, then leaves the connection only what is left of its busy timeout to
    /// take the lock (another process may hold it): queue and lock together never take longer
    /// than the busy timeout, so a database locked from outside gives every waiter its 503 in
    /// time. A turn that came at once changes nothing on the connection.
    pub(crate) fn enter<'q>(
        queue: &'q Queue,
        busy_ms: i64,
        c: &mut diesel::SqliteConnection,
    ) -> Result<Turn<'q>, diesel::result::Error> {
        use diesel::connection::SimpleConnection;
        let wait = Duration::from_millis(u64::try_from(busy_ms).unwrap_or(0));
        let deadline = std::time::Instant::now() + wait;
        let locked = |what: &str| {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new(format!(
                    "database is locked: {what} within {} ms",
                    wait.as_millis()
                )),
            )
        };
        let guard = queue
            .try_lock_until(deadline)
            .ok_or_else(|| locked("no turn to write"))?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            parking_lot::MutexGuard::unlock_fair(guard);
            return Err(locked("no time left to take the lock"));
        }
        // Waited a millisecond or more: the lock gets only what is left.
        let shortened = if wait - left >= Duration::from_millis(1) {
            c.batch_execute(&format!("PRAGMA busy_timeout = {}", left.as_millis()))?;
            Some(busy_ms)
        } else {
            None
        };
        Ok(Turn { guard, shortened })
    }

    /// Puts the connection's busy timeout back (if the turn shortened it) and hands the turn to
    /// the writer that has waited longest.
    pub(crate) fn leave(turn: Turn<'_>, c: &mut diesel::SqliteConnection) {
        use diesel::connection::SimpleConnection;
        if let Some(busy_ms) = turn.shortened {
            if let Err(e) = c.batch_execute(&format!("PRAGMA busy_timeout = {busy_ms}")) {
                log::warn!("could not restore the SQLite busy timeout: {e}");
            }
        }
        parking_lot::MutexGuard::unlock_fair(turn.guard);
    }
}

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

/// Opens a transaction on a connection that is in none, for a use case that reads before it
/// knows it must write more than one statement (`commit` or `rollback` ends it): PostgreSQL
/// only (SQLite writers go through `write_tx` and its queue).
pub fn begin(conn: &mut DbConnection) -> Result<(), StorageError> {
    use diesel::connection::{Connection, TransactionManager};
    Ok(<DbConnection as Connection>::TransactionManager::begin_transaction(conn)?)
}

/// Commits the transaction `begin` opened.
pub fn commit(conn: &mut DbConnection) -> Result<(), StorageError> {
    use diesel::connection::{Connection, TransactionManager};
    Ok(<DbConnection as Connection>::TransactionManager::commit_transaction(conn)?)
}

/// Rolls back the transaction `begin` opened.
pub fn rollback(conn: &mut DbConnection) -> Result<(), StorageError> {
    use diesel::connection::{Connection, TransactionManager};
    Ok(<DbConnection as Connection>::TransactionManager::rollback_transaction(conn)?)
}

/// Whether a transaction is open on the connection.
pub fn in_transaction(conn: &mut DbConnection) -> bool {
    use diesel::connection::{Connection, TransactionManager};
    <DbConnection as Connection>::TransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .ok()
        .flatten()
        .is_some()
}

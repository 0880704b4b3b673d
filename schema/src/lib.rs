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
    conn.transaction(|c| {
        if matches!(c, DbConnection::Sqlite(_)) {
            store::take_sqlite_write_lock(c)?;
        }
        f(c)
    })
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

/// Whether a transaction is open on the connection.
fn in_transaction(conn: &mut DbConnection) -> bool {
    use diesel::connection::{Connection, TransactionManager};
    <DbConnection as Connection>::TransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .ok()
        .flatten()
        .is_some()
}

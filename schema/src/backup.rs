//! Backup and restore of the whole database.
//!
//! - SQLite: `VACUUM INTO` writes a consistent copy while the server runs (an online backup: it
//!   reads one snapshot; writers carry on). Restoring replaces the database file (and drops its
//!   WAL) with a copy that passed `PRAGMA integrity_check`; the servers using it must be
//!   stopped first.
//! - PostgreSQL: `pg_dump --format=custom` (a consistent snapshot, online) and `pg_restore
//!   --clean` into the configured database, with the client tools of the server's major
//!   version on the PATH. Point-in-time recovery (WAL archiving) is the production procedure:
//!   see docs/OPERATIONS.md.

use std::path::Path;
use std::process::Command;

use diesel::connection::SimpleConnection;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};

use crate::conn::DatabaseUrl;
use crate::StorageError;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub backend: &'static str,
}

fn fail(m: impl Into<String>) -> StorageError {
    StorageError::Config(m.into())
}

#[derive(QueryableByName)]
struct Check {
    #[diesel(sql_type = diesel::sql_types::Text)]
    integrity_check: String,
}

/// `PRAGMA integrity_check` of a SQLite file: Ok when it says `ok`.
pub fn sqlite_integrity(path: &str) -> Result<(), StorageError> {
    let mut c =
        SqliteConnection::establish(path).map_err(|e| fail(format!("{path}: cannot open: {e}")))?;
    let rows: Vec<Check> = diesel::sql_query("PRAGMA integrity_check").load(&mut c)?;
    match rows.first().map(|r| r.integrity_check.as_str()) {
        Some("ok") => Ok(()),
        other => Err(fail(format!(
            "{path} fails PRAGMA integrity_check: {}",
            other.unwrap_or("no answer")
        ))),
    }
}

/// Writes a backup of the database at `url` to `out` (which must not exist).
pub fn backup(url: &str, out: &Path) -> Result<Written, StorageError> {
    if out.exists() {
        return Err(fail(format!(
            "{} exists: a backup never overwrites a file",
            out.display()
        )));
    }
    let out_text = out
        .to_str()
        .ok_or_else(|| fail(format!("{} is not a UTF-8 path", out.display())))?;
    let backend = match DatabaseUrl::parse(url)? {
        DatabaseUrl::Sqlite(path) => {
            if !Path::new(&path).exists() {
                return Err(fail(format!("{path}: no such database file")));
            }
            let mut c = SqliteConnection::establish(&path)
                .map_err(|e| fail(format!("{path}: cannot open: {e}")))?;
            c.batch_execute("PRAGMA busy_timeout = 10000;")?;
            diesel::sql_query(format!("VACUUM INTO '{}'", out_text.replace('\'', "''")))
                .execute(&mut c)?;
            sqlite_integrity(out_text)?;
            "sqlite"
        }
        DatabaseUrl::Postgres(u) => {
            run(Command::new("pg_dump")
                .arg("--format=custom")
                .arg("--no-owner")
                .arg("--no-privileges")
                .arg(format!("--file={out_text}"))
                .arg(format!("--dbname={u}")))?;
            "postgres"
        }
    };
    let bytes = std::fs::metadata(out)
        .map_err(|e| fail(format!("{}: {e}", out.display())))?
        .len();
    Ok(Written { bytes, backend })
}

/// Restores a backup written by [`backup`] into the database at `url`, replacing what is
/// there. Stop the servers that use it first.
pub fn restore(url: &str, from: &Path) -> Result<(), StorageError> {
    let from_text = from
        .to_str()
        .ok_or_else(|| fail(format!("{} is not a UTF-8 path", from.display())))?;
    if !from.is_file() {
        return Err(fail(format!("{from_text}: no such backup file")));
    }
    match DatabaseUrl::parse(url)? {
        DatabaseUrl::Sqlite(path) => {
            sqlite_integrity(from_text)?;
            // Copy beside the target, then rename over it: the database file is either the old
            // one or the whole backup, never half of it.
            let staged = format!("{path}.restoring");
            std::fs::copy(from, &staged).map_err(|e| fail(format!("{staged}: {e}")))?;
            std::fs::File::open(&staged)
                .and_then(|f| f.sync_all())
                .map_err(|e| fail(format!("{staged}: {e}")))?;
            for stale in [format!("{path}-wal"), format!("{path}-shm")] {
                if Path::new(&stale).exists() {
                    std::fs::remove_file(&stale).map_err(|e| fail(format!("{stale}: {e}")))?;
                }
            }
            std::fs::rename(&staged, &path).map_err(|e| fail(format!("{path}: {e}")))?;
            sqlite_integrity(&path)
        }
        DatabaseUrl::Postgres(u) => run(Command::new("pg_restore")
            .arg("--clean")
            .arg("--if-exists")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--single-transaction")
            .arg("--exit-on-error")
            .arg(format!("--dbname={u}"))
            .arg(from_text)),
    }
}

fn run(cmd: &mut Command) -> Result<(), StorageError> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| {
        fail(format!(
            "{name} could not be run ({e}): install the PostgreSQL client tools of the server's version"
        ))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

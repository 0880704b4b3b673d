//! The search index kept in step with its definition. Each stored type's index rows are made
//! by `fhir::index::entries` from the type's search parameters when a version is written. When
//! a release changes what they make (a new parameter, another path, a fix), the rows stored
//! before are brought to it here, by that same code, instead of by a migration restating it
//! in SQL for each database.
//!
//! Each type's index definition has a fingerprint (`fingerprint`), kept in `counters` as
//! `index:{Type}`. Once a server has started, a thread of its own (`in_background`, under a
//! lock one instance holds at a time) reindexes every type whose stored fingerprint differs
//! and records its fingerprint; the next instance finds nothing to do. A database that has no
//! fingerprint at all was indexed by a release before this mechanism, whose migrations brought
//! its rows up to date: its fingerprints are recorded as they are. `ers-server reindex
//! [TYPE...]` reindexes on demand.

use std::fmt::Write as _;

use ers_schema::{store, DbConnection};

use super::{Result, ServiceError};
use crate::fhir::registry::{self, ResourceDef};

/// Raised when `fhir::index::entries`, a parameter's `extract` function or a type's check of
/// its unique identifiers changes what it makes from a resource without a change the
/// parameters' definitions show: every type is then reindexed once. 2: a reference's
/// `identifier` is indexed (`index::identifier_param`).
pub const REVISION: u32 = 2;

/// The order of index definitions across releases, raised with every change of any stored
/// type's fingerprint (a test pins the fingerprints to it: `tests::DEFINITION_DIGEST`). A database
/// records the generation that last brought its index up to date (`index:generation`); an
/// instance of an older generation leaves an index of a newer one as it is, instead of
/// bringing it back to its own definition (a rollback, or an older instance restarting during
/// a rolling deploy). Databases indexed before generations were recorded count as 0.
pub const GENERATION: i64 = 2;

const GENERATION_MARKER: &str = "index:generation";

/// Resources read and reindexed at a time, each page in one transaction.
const PAGE: i64 = 500;

const MARKER_PREFIX: &str = "index:";

fn marker(def: &ResourceDef) -> String {
    format!("{MARKER_PREFIX}{}", def.name)
}

/// The stored types (not those derived from others' rows).
fn stored_types() -> impl Iterator<Item = &'static ResourceDef> {
    registry::RESOURCES
        .iter()
        .filter(|d| !registry::is_derived(d))
}

/// What a type's index rows are made from: its parameters (name, kind, paths, targets, and
/// whether code extracts more) and `REVISION`, hashed (SHA-256, so the same across builds).
pub fn fingerprint(def: &ResourceDef) -> i64 {
    let mut text = format!("revision {REVISION}\n");
    for p in def.all_params() {
        let _ = writeln!(
            text,
            "{}|{:?}|{}|{}|{}",
            p.name,
            p.kind,
            p.paths.join(","),
            p.targets.join(","),
            p.extract.is_some()
        );
    }
    first_eight(&openssl::sha::sha256(text.as_bytes()))
}

/// A digest's first eight bytes, as a number a counter keeps.
fn first_eight(digest: &[u8; 32]) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// What a reindex did to one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reindexed {
    pub res_type: &'static str,
    /// Live resources read.
    pub resources: usize,
    /// Those whose index rows changed.
    pub changed: usize,
}

/// Brings every type whose index definition changed since its rows were made to it, and
/// records each type's fingerprint (on a database that had none yet, as they are), under the
/// reindex lock: `wait` waits for an instance that holds it; otherwise `None` at once (that
/// instance is doing it). A server runs it in the background once it has started
/// (`in_background`); `ers-server migrate` runs it before it exits.
pub fn catch_up(conn: &mut DbConnection, wait: bool) -> Result<Option<Vec<Reindexed>>> {
    ers_schema::reindexing(conn, wait, |c| {
        let now = recorded(c)?;
        if now.generation > GENERATION {
            log::warn!(
                "index: made by a newer release (generation {}; this one is {GENERATION}): left as it is",
                now.generation
            );
            return Ok(Vec::new());
        }
        let mut done = Vec::new();
        for def in now.differ {
            if !now.first {
                log::info!("index of {}: its definition changed; reindexing", def.name);
                done.push(reindex_type(c, def, &mut |_| {})?);
            }
            record(c, &marker(def), fingerprint(def))?;
        }
        if now.generation != GENERATION {
            record(c, GENERATION_MARKER, GENERATION)?;
        }
        Ok(done)
    })
}

/// The stored types whose index rows were made by an older definition than this build's and
/// are not yet brought to it (`catch_up`), for the readiness check.
pub fn behind(c: &mut DbConnection) -> Result<Vec<&'static str>> {
    let now = recorded(c)?;
    Ok(if now.first || now.generation > GENERATION {
        Vec::new()
    } else {
        now.differ.into_iter().map(|def| def.name).collect()
    })
}

/// What a database records of its index.
struct Recorded {
    /// No type has a fingerprint yet: a database indexed before they were recorded, by
    /// migrations that brought its rows up to date.
    first: bool,
    /// The generation that last brought it up to date (0 when none is recorded).
    generation: i64,
    /// Each stored type whose recorded fingerprint (if any) is not this build's.
    differ: Vec<&'static ResourceDef>,
}

fn recorded(c: &mut DbConnection) -> Result<Recorded> {
    let counters: std::collections::HashMap<String, i64> = store::counters_named(c, MARKER_PREFIX)?
        .into_iter()
        .collect();
    let mut first = true;
    let mut differ = Vec::new();
    for def in stored_types() {
        let had = counters.get(&marker(def)).copied();
        first &= had.is_none();
        if had != Some(fingerprint(def)) {
            differ.push(def);
        }
    }
    Ok(Recorded {
        first,
        generation: counters.get(GENERATION_MARKER).copied().unwrap_or(0),
        differ,
    })
}

/// `catch_up` on a thread of its own with a connection of its own, while the server answers:
/// until it is done, a search by a changed parameter finds what the rows made before show (as
/// the release before answered) for the resources it has not reached. Another instance at it
/// already is left to it; a failure is logged, and the next instance to start tries again.
pub fn in_background(database_url: String, timeout: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("reindex".into())
        .spawn(move || {
            let outcome = ers_schema::build_pool_with(&database_url, 1, timeout)
                .map_err(ServiceError::from)
                .and_then(|pool| {
                    pool.get()
                        .map_err(|e| ServiceError::Unavailable(e.to_string()))
                })
                .and_then(|mut conn| catch_up(&mut conn, false));
            match outcome {
                Ok(None) => log::info!("index: another instance is bringing it up to date"),
                Ok(Some(_)) => {}
                Err(e) => log::error!("index: bringing it up to date failed: {e}"),
            }
        });
    if let Err(e) = spawned {
        log::error!("index: cannot start the reindex thread: {e}");
    }
}

/// Reindexes the types named (every stored type when none is), recording their fingerprints;
/// `progress` hears how many resources of the current type have been read.
pub fn run(
    conn: &mut DbConnection,
    types: &[String],
    progress: &mut dyn FnMut(&'static str, usize),
) -> Result<Vec<Reindexed>> {
    let mut defs = Vec::new();
    for t in types {
        let def = stored_types().find(|d| d.name == t).ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "'{t}' is not a stored resource type; reindex takes {}",
                stored_types()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        defs.push(def);
    }
    if defs.is_empty() {
        defs.extend(stored_types());
    }
    let done = ers_schema::reindexing(conn, true, |c| -> Result<Vec<Reindexed>> {
        let mut done = Vec::new();
        for def in defs {
            done.push(reindex_type(c, def, &mut |n| progress(def.name, n))?);
            record(c, &marker(def), fingerprint(def))?;
        }
        Ok(done)
    })?;
    Ok(done.unwrap_or_default())
}

/// Records a marker's value, in a write transaction that reads it first (on SQLite, where
/// there is no reindex lock, a server and an `ers-server migrate` may both record it).
fn record(c: &mut DbConnection, name: &str, value: i64) -> Result<()> {
    ers_schema::write_tx(c, |c| -> Result<()> {
        match store::counter_value(c, name)? {
            Some(_) => store::set_counter(c, name, value)?,
            None => store::add_counter(c, name, value)?,
        }
        Ok(())
    })
}

/// Brings every live resource of a type to the index rows its content makes now, a page at a
/// time: each page read and rewritten in one transaction with its rows locked, so a writer of
/// one of them waits for it, and then indexes its own version.
fn reindex_type(
    c: &mut DbConnection,
    def: &'static ResourceDef,
    progress: &mut dyn FnMut(usize),
) -> Result<Reindexed> {
    let mut done = Reindexed {
        res_type: def.name,
        resources: 0,
        changed: 0,
    };
    let mut after = String::new();
    loop {
        let (read, changed) = ers_schema::write_tx(c, |c| -> Result<(usize, usize)> {
            let page = store::page_of_type_locked(c, def.name, &after, PAGE)?;
            let Some(last) = page.last() else {
                return Ok((0, 0));
            };
            after = last.id.clone();
            let mut items = Vec::with_capacity(page.len());
            let mut unique_unknown = Vec::new();
            for row in &page {
                let body = super::stored_value(row)?;
                let (index, unique_known) = super::resource::index_of_stored(def, &body);
                if unique_known {
                    items.push((row.id.clone(), index));
                } else {
                    unique_unknown.push((row.id.clone(), index));
                }
            }
            let kept = |unique| store::Kept {
                tokens_of: super::scope::PARAM,
                unique,
            };
            let changed = store::replace_indexes(c, def.name, items, kept(false))?
                + store::replace_indexes(c, def.name, unique_unknown, kept(true))?;
            Ok((page.len(), changed))
        })?;
        if read == 0 {
            break;
        }
        done.resources += read;
        done.changed += changed;
        progress(done.resources);
    }
    if done.changed > 0 {
        log::info!(
            "index of {}: {} of {} resources reindexed",
            def.name,
            done.changed,
            done.resources
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprints of every stored type (`definition_digest`) at `GENERATION`.
    const DEFINITION_DIGEST: i64 = -3_239_471_354_401_392_648;

    /// Every stored type's fingerprint, hashed together: what `GENERATION` is pinned to.
    fn definition_digest() -> i64 {
        let mut text = String::new();
        for def in stored_types() {
            let _ = writeln!(text, "{} {}", def.name, fingerprint(def));
        }
        first_eight(&openssl::sha::sha256(text.as_bytes()))
    }

    /// A change of any stored type's index definition (a parameter added, a path changed,
    /// `REVISION` raised) must raise `GENERATION`, so that an older release never takes the
    /// index back to its own definition: this fails until it is raised and the digest set.
    #[test]
    fn the_index_definition_is_pinned_to_its_generation() {
        let digest = definition_digest();
        assert_eq!(
            digest, DEFINITION_DIGEST,
            "the search index definition changed: raise reindex::GENERATION (now {GENERATION}) by one and set DEFINITION_DIGEST to {digest}"
        );
    }
}

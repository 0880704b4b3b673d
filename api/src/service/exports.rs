//! FHIR Bulk Data export (`$export`): a kick-off records a job; a worker on any instance takes
//! it (a lease in the database), reads each type in id order as of the kick-off, and writes
//! NDJSON files into the database, recording after each file where it got to, so a job whose
//! instance stops resumes elsewhere without losing or repeating a resource. The caller's
//! permissions and organisation scoping are the same as a search's.

use chrono::{Duration, NaiveDateTime, Utc};
use ers_schema::exports::{self as store, Cursor, ExportJob, FileMeta, PageQuery, StoredFile};
use ers_schema::{read_tx, write_tx, DbConnection};

use super::audit::{self, AuditDraft, Outcome};
use super::{scope, Result, ServiceError};
use crate::domain::referral::OpParam;
use crate::domain::{BusinessFunction, Caller, OdsCode};
use crate::fhir::registry::{self, ResourceDef};
use crate::security::permissions::{self, Action};

/// How long a worker holds a job between files before another instance may take it over.
pub const LEASE_SECS: i64 = 60;
/// Resources read per query.
const PAGE: i64 = 2000;

/// The types of the Patient compartment this server holds (Patient-level export).
pub const PATIENT_COMPARTMENT: &[&str] = &[
    "Patient",
    "ServiceRequest",
    "Appointment",
    "DocumentReference",
    "Communication",
];

/// Each type of the compartment but Patient: the search parameter by which it names its patient
/// (a document, through the referral it is attached to), and the date parameter of the care it
/// records, which `$everything`'s `start` and `end` bound: when a referral or request was made,
/// when an appointment is, when a document was attached, when a message was sent.
pub const PATIENT_LINKS: &[(&str, &str, &str)] = &[
    ("ServiceRequest", "patient", "authored"),
    ("Appointment", "patient", "date"),
    ("DocumentReference", "related.patient", "date"),
    ("Communication", "patient", "sent"),
];

/// `Patient/{id}/$everything` (`http::everything`): the compartment of one patient, as a searchset.
pub const EVERYTHING: &str = "$everything";

/// Its inputs (its OperationDefinition's, and what a request is checked against).
pub const EVERYTHING_INPUTS: &[OpParam] = &[
    OpParam::new(
        "start",
        0,
        "1",
        "date",
        "only care from this date on (a referral's authoredOn, an appointment's start, a document's date, a message's sent); the patient is always there",
    ),
    OpParam::new(
        "end",
        0,
        "1",
        "date",
        "only care up to this date (inclusive: 2026-12 is up to the end of December)",
    ),
    OpParam::new(
        "_since",
        0,
        "1",
        "instant",
        "only resources changed at or after this instant (and the patient, if it was)",
    ),
    OpParam::new(
        "_type",
        0,
        "*",
        "string",
        "only these types of the compartment (comma-separated or repeated): Patient, ServiceRequest, Appointment, DocumentReference, Communication",
    ),
    OpParam::new(
        "_count",
        0,
        "1",
        "integer",
        "at most this many matches a page (1-1000, the default 1000): the patient, then each type in turn; a page that is not the last has a next link",
    ),
    OpParam::new(
        "_cursor",
        0,
        "1",
        "string",
        "where a page after the first starts (Type:offset), as the page before's next link gives it",
    ),
];

/// System-level or Patient-level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    System,
    Patient,
}

impl Level {
    pub fn code(self) -> &'static str {
        match self {
            Level::System => "system",
            Level::Patient => "patient",
        }
    }
}

/// What a kick-off asks for.
#[derive(Debug, Clone)]
pub struct Kickoff {
    pub level: Level,
    /// `_type`, when given.
    pub types: Option<Vec<String>>,
    /// `_since`.
    pub since: Option<NaiveDateTime>,
    /// The kick-off URL, for the manifest.
    pub request: String,
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// Who the job is for: the user (or application) with the role and organisation it acted in.
fn owner_of(caller: &Caller) -> String {
    caller
        .user_id
        .clone()
        .or_else(|| caller.client_id.clone())
        .unwrap_or_default()
}

/// The types the caller may export at this level, in registry order.
pub fn exportable(level: Level, caller: &Caller) -> Vec<&'static ResourceDef> {
    registry::RESOURCES
        .iter()
        .filter(|d| level == Level::System || PATIENT_COMPARTMENT.contains(&d.name))
        .filter(|d| permissions::permits(d.name, Action::Export, caller.business_function))
        .collect()
}

/// Records a job (queued) and audits the kick-off.
pub fn kick_off(
    c: &mut DbConnection,
    k: &Kickoff,
    caller: &Caller,
    draft: &AuditDraft,
    ttl_secs: i64,
) -> Result<ExportJob> {
    let allowed = exportable(k.level, caller);
    let types: Vec<&'static ResourceDef> = match &k.types {
        None => allowed.clone(),
        Some(list) => {
            let mut out = Vec::new();
            for t in list {
                let Some(def) = registry::find(t) else {
                    return Err(ServiceError::BadRequest(format!(
                        "'_type' ({t}) is not a resource type this server exports: it exports {}",
                        registry::RESOURCES
                            .iter()
                            .map(|d| d.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                if k.level == Level::Patient && !PATIENT_COMPARTMENT.contains(&def.name) {
                    return Err(ServiceError::BadRequest(format!(
                        "'_type' ({t}) is not in the Patient compartment: a Patient-level export takes {}",
                        PATIENT_COMPARTMENT.join(", ")
                    )));
                }
                if !allowed.iter().any(|a| a.name == def.name) {
                    return Err(ServiceError::Forbidden(format!(
                        "Business function {} may not export {t} ({})",
                        caller.business_function,
                        permissions::describe(def.name, Action::Export)
                    )));
                }
                if !out.iter().any(|d: &&ResourceDef| d.name == def.name) {
                    out.push(def);
                }
            }
            out
        }
    };
    if types.is_empty() {
        return Err(ServiceError::Forbidden(format!(
            "Business function {} may not export any resource type",
            caller.business_function
        )));
    }
    let at = now();
    let job = ExportJob {
        id: uuid::Uuid::new_v4().to_string(),
        owner: owner_of(caller),
        owner_org: caller.organisation.as_str().to_owned(),
        owner_role: caller.business_function.code().to_owned(),
        request: k.request.clone(),
        level: k.level.code().to_owned(),
        types: types.iter().map(|d| d.name).collect::<Vec<_>>().join(","),
        since: k.since,
        status: "queued".into(),
        position: "0|".into(),
        exported: 0,
        error: None,
        transaction_time: at,
        created: at,
        completed: None,
        expires: at + Duration::seconds(ttl_secs.max(1)) + Duration::days(1),
        lease_until: None,
        lease_owner: None,
    };
    write_tx(c, |c| {
        store::insert_job(c, &job)?;
        audit::record(
            c,
            draft,
            &Outcome {
                action: "E",
                subtype: "export".into(),
                status: 202,
                description: Some(format!("bulk export {} of {}", job.id, job.types)),
            },
            &[],
        )?;
        Ok::<_, ServiceError>(())
    })?;
    Ok(job)
}

/// The caller's job (404 for anyone else's: a job's existence is not disclosed; and once its
/// files have expired, even if the clean-up has not run yet).
fn own_job(c: &mut DbConnection, id: &str, caller: &Caller) -> Result<ExportJob> {
    match store::job(c, id)? {
        Some(j)
            if j.owner == owner_of(caller)
                && j.owner_org == caller.organisation.as_str()
                && j.owner_role == caller.business_function.code()
                && j.expires >= now() =>
        {
            Ok(j)
        }
        _ => Err(ServiceError::NotFound {
            res_type: "$export job".into(),
            id: id.to_owned(),
        }),
    }
}

/// A job's state and files, for its owner.
pub fn status(
    c: &mut DbConnection,
    id: &str,
    caller: &Caller,
) -> Result<(ExportJob, Vec<FileMeta>)> {
    read_tx(c, |c| {
        let job = own_job(c, id, caller)?;
        let files = store::files(c, id)?;
        Ok((job, files))
    })
}

/// Cancels a job (running or done): it and its files are deleted.
pub fn cancel(c: &mut DbConnection, id: &str, caller: &Caller, draft: &AuditDraft) -> Result<()> {
    write_tx(c, |c| {
        own_job(c, id, caller)?;
        store::delete_job(c, id)?;
        audit::record(
            c,
            draft,
            &Outcome {
                action: "D",
                subtype: "export".into(),
                status: 202,
                description: Some(format!("bulk export {id} cancelled")),
            },
            &[],
        )?;
        Ok(())
    })
}

/// One output file of a completed job, audited (it is patient data).
pub fn file(
    c: &mut DbConnection,
    id: &str,
    part: i32,
    caller: &Caller,
    draft: &AuditDraft,
) -> Result<StoredFile> {
    let job = own_job(c, id, caller)?;
    if job.status != "complete" {
        return Err(ServiceError::NotFound {
            res_type: "$export file".into(),
            id: format!("{id}/{part} (the export is {})", job.status),
        });
    }
    let found: StoredFile = store::file(c, id, part)?.ok_or_else(|| ServiceError::NotFound {
        res_type: "$export file".into(),
        id: format!("{id}/{part}"),
    })?;
    audit::record(
        c,
        draft,
        &Outcome {
            action: "R",
            subtype: "export".into(),
            status: 200,
            description: Some(format!("bulk export {id} file {part} ({})", found.res_type)),
        },
        &[],
    )?;
    Ok(found)
}

/// The caller a job runs for.
fn job_caller(job: &ExportJob) -> Result<Caller> {
    let bf = BusinessFunction::parse(&job.owner_role).ok_or_else(|| {
        ServiceError::Internal(format!("export job {}: role {}", job.id, job.owner_role))
    })?;
    let organisation = OdsCode::parse(&job.owner_org)
        .map_err(|e| ServiceError::Internal(format!("export job {}: {}", job.id, e.0)))?;
    Ok(Caller {
        user_id: Some(job.owner.clone()),
        client_id: None,
        business_function: bf,
        organisation,
        on_behalf_of: None,
    })
}

fn page_query(job: &ExportJob, def: &ResourceDef, caller: &Caller) -> PageQuery {
    PageQuery {
        res_type: def.name.to_owned(),
        since: job.since,
        until: Some(job.transaction_time),
        required: scope::required_tokens(def, caller),
    }
}

/// How far a job has got, for `X-Progress`.
pub fn progress(job: &ExportJob) -> String {
    if job.status == "queued" {
        return "queued".into();
    }
    let types: Vec<&str> = job.types.split(',').collect();
    let (i, _) = position(job);
    match types.get(i) {
        Some(t) => format!(
            "{} resources written; now {t} (type {} of {})",
            job.exported,
            i + 1,
            types.len()
        ),
        None => format!("{} resources written; finishing", job.exported),
    }
}

/// `{type index}|{cursor}` (see `Cursor::encode`). A position this version cannot read
/// restarts its type.
fn position(job: &ExportJob) -> (usize, Cursor) {
    let (i, at) = job.position.split_once('|').unwrap_or(("0", ""));
    let cursor = Cursor::decode(at).unwrap_or_else(|| {
        log::warn!(
            "export {}: unreadable position '{at}'; its type starts again",
            job.id
        );
        Cursor::default()
    });
    (i.parse().unwrap_or(0), cursor)
}

/// Takes one job that needs a worker and runs it to the end (or until it is cancelled or its
/// lease is lost). Returns whether there was one.
pub fn work(
    c: &mut DbConnection,
    worker: &str,
    file_resources: usize,
    ttl_secs: i64,
) -> Result<bool> {
    let at = now();
    let claimed = write_tx(c, |c| {
        store::claim_job(c, worker, at, at + Duration::seconds(LEASE_SECS))
    })?;
    let Some(mut job) = claimed else {
        return Ok(false);
    };
    let ran = run(c, &mut job, worker, file_resources, ttl_secs);
    if let Err(e) = ran {
        log::error!("export {} failed: {e}", job.id);
        write_tx(c, |c| {
            if let Some(mut j) = store::job(c, &job.id)? {
                j.status = "failed".into();
                j.error = Some(e.to_string());
                j.completed = Some(now());
                j.expires = now() + Duration::seconds(ttl_secs);
                j.lease_until = None;
                j.lease_owner = None;
                store::save_job(c, &j)?;
            }
            Ok::<_, ServiceError>(())
        })?;
    }
    Ok(true)
}

/// A file read and being compressed (on a thread of its own), to be stored with the position
/// the job reaches with it.
struct Pending {
    meta: Option<FileMeta>,
    position: String,
    count: i64,
    gzipped: std::thread::JoinHandle<Result<Vec<u8>>>,
}

fn run(
    c: &mut DbConnection,
    job: &mut ExportJob,
    worker: &str,
    file_resources: usize,
    ttl_secs: i64,
) -> Result<()> {
    let caller = job_caller(job)?;
    let types: Vec<&'static ResourceDef> =
        job.types.split(',').filter_map(registry::find).collect();
    // No count up front: on a large type it costs as much as a third of the export itself.
    let (mut ti, mut after) = position(job);
    let mut part = read_tx(c, |c| store::files(c, &job.id))?
        .last()
        .map_or(0, |f| f.part + 1);
    let want = file_resources.max(1);
    // One file in hand: while it is compressed, the next one is read (they took turns, and
    // compressing was a third of an export's time).
    let mut pending: Option<Pending> = None;
    while ti < types.len() {
        let def = types[ti];
        let q = page_query(job, def, &caller);
        let mut buf: Vec<u8> = Vec::new();
        let mut count = 0usize;
        let mut type_done = false;
        while count < want {
            let limit = PAGE.min((want - count) as i64);
            let rows = super::provenance::page(c, &q, &after, limit)?;
            let short = (rows.len() as i64) < limit;
            for row in rows {
                buf.extend_from_slice(row.content.as_bytes());
                buf.push(b'\n');
                count += 1;
                after = Cursor::after(&row);
            }
            if short {
                type_done = true;
                break;
            }
        }
        let meta = (count > 0).then(|| FileMeta {
            part,
            res_type: def.name.to_owned(),
            count: count as i64,
        });
        let position = if type_done {
            format!("{}|", ti + 1)
        } else {
            format!("{ti}|{}", after.encode())
        };
        let next = Pending {
            meta,
            position,
            count: count as i64,
            gzipped: std::thread::spawn(move || gzip(&buf)),
        };
        if let Some(done) = pending.replace(next) {
            if !store_file(c, job, worker, done)? {
                return Ok(());
            }
        }
        if count > 0 {
            part += 1;
        }
        if type_done {
            ti += 1;
            after = Cursor::default();
        }
    }
    if let Some(done) = pending.take() {
        if !store_file(c, job, worker, done)? {
            return Ok(());
        }
    }
    write_tx(c, |c| {
        let Some(current) = store::job(c, &job.id)? else {
            return Ok::<_, ServiceError>(());
        };
        if current.lease_owner.as_deref() != Some(worker) {
            return Ok(());
        }
        let done = now();
        job.status = "complete".into();
        job.completed = Some(done);
        job.expires = done + Duration::seconds(ttl_secs);
        job.lease_owner = None;
        job.lease_until = None;
        store::save_job(c, job)?;
        Ok(())
    })
}

/// Stores a file and the position the job reaches with it, together, only while the job is
/// still this worker's; false when it is not (cancelled or taken over).
fn store_file(c: &mut DbConnection, job: &mut ExportJob, worker: &str, f: Pending) -> Result<bool> {
    let data = f
        .gzipped
        .join()
        .map_err(|_| ServiceError::Internal("compressing an export file panicked".into()))??;
    let still_ours = write_tx(c, |c| {
        let Some(current) = store::job(c, &job.id)? else {
            return Ok::<_, ServiceError>(false);
        };
        if current.lease_owner.as_deref() != Some(worker) || current.status != "running" {
            return Ok(false);
        }
        if let Some(meta) = &f.meta {
            store::add_file(c, &job.id, meta, GZIP, &data)?;
        }
        job.position = f.position.clone();
        job.exported += f.count;
        job.status = "running".into();
        job.lease_owner = Some(worker.to_owned());
        job.lease_until = Some(now() + Duration::seconds(LEASE_SECS));
        store::save_job(c, job)?;
        Ok(true)
    })?;
    if !still_ours {
        log::info!("export {}: cancelled or taken over; stopping", job.id);
    }
    Ok(still_ours)
}

/// How export files are stored: gzip, fastest level (NDJSON of FHIR resources shrinks about
/// eight times, so the database writes and the downloads carry an eighth of the bytes).
pub const GZIP: &str = "gzip";

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 6),
        flate2::Compression::fast(),
    );
    e.write_all(data)
        .and_then(|()| e.finish())
        .map_err(|e| ServiceError::Internal(format!("compressing an export file: {e}")))
}

/// A stored file's NDJSON, uncompressed (for a client that does not accept gzip).
pub fn plain(file: StoredFile) -> Result<Vec<u8>> {
    use std::io::Read;
    if file.encoding != GZIP {
        return Ok(file.data);
    }
    let mut out = Vec::with_capacity(file.data.len() * 8);
    flate2::read::GzDecoder::new(file.data.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| ServiceError::Internal(format!("stored export file unreadable: {e}")))?;
    Ok(out)
}

/// Deletes jobs whose files have expired; returns how many.
pub fn purge_expired(c: &mut DbConnection) -> Result<usize> {
    let ids = store::expired_jobs(c, now())?;
    for id in &ids {
        write_tx(c, |c| store::delete_job(c, id))?;
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$everything` searches each compartment type by the parameter that names its patient:
    /// every type has one, and it is a parameter its searches take.
    #[test]
    fn every_compartment_type_names_its_patient() {
        for t in PATIENT_COMPARTMENT.iter().filter(|t| **t != "Patient") {
            let (_, param, care) = PATIENT_LINKS
                .iter()
                .find(|(lt, _, _)| lt == t)
                .unwrap_or_else(|| panic!("{t} has no entry in PATIENT_LINKS"));
            let def = registry::find(t).expect("registered");
            let params = vec![
                ((*param).to_owned(), "Patient/p1".to_owned()),
                ((*care).to_owned(), "ge2026-01-01".to_owned()),
            ];
            let parsed = crate::fhir::search::parse(def, &params, true);
            assert!(parsed.is_ok(), "{t}?{param}&{care}: {parsed:?}");
            let kind = def.all_params().find(|p| p.name == *care).map(|p| p.kind);
            assert_eq!(
                kind,
                Some(crate::fhir::registry::ParamKind::Date),
                "{t}'s {care} is not a date parameter"
            );
        }
        for (t, _, _) in PATIENT_LINKS {
            assert!(
                PATIENT_COMPARTMENT.contains(t),
                "{t} names its patient but is not in PATIENT_COMPARTMENT"
            );
        }
    }
}

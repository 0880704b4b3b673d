//! FHIR Bulk Data exports: jobs (so a restart resumes them), their NDJSON files, and the
//! keyset pages of current resources they read.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::{export_files, export_jobs, resources, search_tokens};
use crate::DbConnection;

type QResult<T> = Result<T, diesel::result::Error>;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = export_jobs, treat_none_as_null = true)]
pub struct ExportJob {
    pub id: String,
    /// Who may poll and download: the user or client id.
    pub owner: String,
    pub owner_org: String,
    pub owner_role: String,
    /// The kick-off request URL, for the manifest.
    pub request: String,
    /// `system` or `patient`.
    pub level: String,
    /// Types in export order, comma-separated.
    pub types: String,
    pub since: Option<NaiveDateTime>,
    /// queued | running | complete | failed | cancelled
    pub status: String,
    /// Where the job has got: `{type index}|{cursor}` (`Cursor::encode`).
    pub position: String,
    pub exported: i64,
    pub error: Option<String>,
    pub transaction_time: NaiveDateTime,
    pub created: NaiveDateTime,
    pub completed: Option<NaiveDateTime>,
    pub expires: NaiveDateTime,
    pub lease_until: Option<NaiveDateTime>,
    pub lease_owner: Option<String>,
}

/// An output file without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub part: i32,
    pub res_type: String,
    pub count: i64,
}

pub fn insert_job(conn: &mut DbConnection, job: &ExportJob) -> QResult<()> {
    diesel::insert_into(export_jobs::table)
        .values(job)
        .execute(conn)
        .map(|_| ())
}

pub fn job(conn: &mut DbConnection, id: &str) -> QResult<Option<ExportJob>> {
    export_jobs::table
        .find(id)
        .select(ExportJob::as_select())
        .first(conn)
        .optional()
}

pub fn save_job(conn: &mut DbConnection, job: &ExportJob) -> QResult<()> {
    diesel::update(export_jobs::table.find(&job.id))
        .set(job)
        .execute(conn)
        .map(|_| ())
}

/// Takes the lease of one job that is queued, or running with a lapsed lease (its instance
/// stopped): the job the caller should work on now.
pub fn claim_job(
    conn: &mut DbConnection,
    owner: &str,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> QResult<Option<ExportJob>> {
    let candidates: Vec<String> = export_jobs::table
        .filter(export_jobs::status.eq_any(["queued", "running"]))
        .filter(
            export_jobs::lease_until
                .is_null()
                .or(export_jobs::lease_until.lt(now)),
        )
        .order(export_jobs::created.asc())
        .select(export_jobs::id)
        .limit(5)
        .load(conn)?;
    for id in candidates {
        // Conditional on the lease still being free: two instances never both win.
        let n = diesel::update(
            export_jobs::table
                .find(&id)
                .filter(export_jobs::status.eq_any(["queued", "running"]))
                .filter(
                    export_jobs::lease_until
                        .is_null()
                        .or(export_jobs::lease_until.lt(now)),
                ),
        )
        .set((
            export_jobs::lease_until.eq(Some(until)),
            export_jobs::lease_owner.eq(Some(owner)),
            export_jobs::status.eq("running"),
        ))
        .execute(conn)?;
        if n == 1 {
            return job(conn, &id);
        }
    }
    Ok(None)
}

/// The job's files so far, in order.
pub fn files(conn: &mut DbConnection, job_id: &str) -> QResult<Vec<FileMeta>> {
    let rows: Vec<(i32, String, i64)> = export_files::table
        .filter(export_files::job_id.eq(job_id))
        .order(export_files::part.asc())
        .select((
            export_files::part,
            export_files::res_type,
            export_files::count,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(part, res_type, count)| FileMeta {
            part,
            res_type,
            count,
        })
        .collect())
}

/// Stores one file's bytes, in `encoding` (`gzip` or `identity`).
pub fn add_file(
    conn: &mut DbConnection,
    job_id: &str,
    file: &FileMeta,
    encoding: &str,
    data: &[u8],
) -> QResult<()> {
    diesel::insert_into(export_files::table)
        .values((
            export_files::job_id.eq(job_id),
            export_files::part.eq(file.part),
            export_files::res_type.eq(&file.res_type),
            export_files::count.eq(file.count),
            export_files::data.eq(data),
            export_files::encoding.eq(encoding),
        ))
        .execute(conn)
        .map(|_| ())
}

/// One stored file: its type, the encoding of its bytes, and the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct StoredFile {
    pub res_type: String,
    pub encoding: String,
    pub data: Vec<u8>,
}

/// One file as stored.
pub fn file(conn: &mut DbConnection, job_id: &str, part: i32) -> QResult<Option<StoredFile>> {
    export_files::table
        .find((job_id, part))
        .select((
            export_files::res_type,
            export_files::encoding,
            export_files::data,
        ))
        .first(conn)
        .optional()
}

/// Deletes a job and its files.
pub fn delete_job(conn: &mut DbConnection, job_id: &str) -> QResult<()> {
    diesel::delete(export_files::table.filter(export_files::job_id.eq(job_id))).execute(conn)?;
    diesel::delete(export_jobs::table.find(job_id)).execute(conn)?;
    Ok(())
}

/// Jobs whose files have expired.
pub fn expired_jobs(conn: &mut DbConnection, now: NaiveDateTime) -> QResult<Vec<String>> {
    export_jobs::table
        .filter(export_jobs::expires.lt(now))
        .select(export_jobs::id)
        .load(conn)
}

/// What an export page reads: live resources of one type changed in (`since`, `until`], each
/// holding one of the codes of every required token parameter (the organisation scoping).
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    pub res_type: String,
    pub since: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
    pub required: Vec<(String, Vec<String>)>,
}

type Backend = crate::conn::MultiBackend;

/// Where a scan of a type has got to: the change time and id of the last row read (none
/// from the start). Pages follow the order rows were last written, which is nearly the order
/// they lie on disk: reading a million referrals in id order instead visits a different page
/// of the table for every row (docs/BENCHMARKS.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(Option<(NaiveDateTime, String)>);

const CURSOR_TIME: &str = "%Y-%m-%dT%H:%M:%S%.6f";

impl Cursor {
    /// Just after this row.
    pub fn after(row: &PageRow) -> Cursor {
        Cursor::at(row.last_updated, &row.id)
    }

    /// Just after the row with this change time and id.
    pub fn at(last_updated: NaiveDateTime, id: &str) -> Cursor {
        Cursor(Some((last_updated, id.to_owned())))
    }

    /// The change time and id of the row it is just after (none from the start).
    pub fn position(&self) -> Option<(NaiveDateTime, &str)> {
        self.0.as_ref().map(|(t, id)| (*t, id.as_str()))
    }

    /// `""` from the start, else `{time}|{id}` (ids never hold `|`).
    pub fn encode(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some((t, id)) => format!("{}|{id}", t.format(CURSOR_TIME)),
        }
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        if text.is_empty() {
            return Some(Cursor(None));
        }
        let (t, id) = text.split_once('|')?;
        let t = NaiveDateTime::parse_from_str(t, CURSOR_TIME).ok()?;
        Some(Cursor(Some((t, id.to_owned()))))
    }
}

/// One row of a page.
#[derive(Debug, Clone, Queryable)]
pub struct PageRow {
    pub id: String,
    pub last_updated: NaiveDateTime,
    pub content: String,
}

fn page_filtered(q: &PageQuery) -> resources::BoxedQuery<'static, Backend> {
    let mut query = resources::table
        .into_boxed()
        // Each page planned with its values.
        .filter(crate::search::planned_with_values())
        .filter(resources::res_type.eq(q.res_type.clone()))
        .filter(resources::deleted.eq(0));
    if let Some(t) = q.since {
        query = query.filter(resources::last_updated.gt(t));
    }
    if let Some(t) = q.until {
        query = query.filter(resources::last_updated.le(t));
    }
    // One probe per row (EXISTS) into the `_access` index, not a set of every holder built
    // for each page.
    for (param, codes) in &q.required {
        query = query.filter(diesel::dsl::exists(
            search_tokens::table
                .filter(search_tokens::res_type.eq(resources::res_type))
                .filter(search_tokens::res_id.eq(resources::id))
                .filter(search_tokens::param.eq(param.clone()))
                .filter(search_tokens::code.eq_any(codes.clone())),
        ));
    }
    query
}

/// Up to `limit` rows after `after`, in (last changed, id) order.
pub fn page(
    conn: &mut DbConnection,
    q: &PageQuery,
    after: &Cursor,
    limit: i64,
) -> QResult<Vec<PageRow>> {
    let mut query = page_filtered(q);
    if let Some((t, id)) = &after.0 {
        // (last_updated, id) > (t, id), written so the index range starts at `t`.
        query = query.filter(resources::last_updated.ge(*t)).filter(
            resources::last_updated
                .gt(*t)
                .or(resources::id.gt(id.clone())),
        );
    }
    query
        .order((resources::last_updated.asc(), resources::id.asc()))
        .limit(limit)
        .select((resources::id, resources::last_updated, resources::content))
        .load(conn)
}

/// How many resources a page query covers in all (for a progress bar).
pub fn count(conn: &mut DbConnection, q: &PageQuery) -> QResult<i64> {
    page_filtered(q).count().get_result(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_its_text_form() {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 11, 30)
            .and_then(|d| d.and_hms_micro_opt(21, 40, 18, 123_456))
            .expect("time");
        let c = Cursor(Some((t, "r.5a1-b".into())));
        assert_eq!(c.encode(), "2026-11-30T21:40:18.123456|r.5a1-b");
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode(""), Some(Cursor::default()));
        // The id-only positions of earlier versions are not read as a time.
        assert_eq!(Cursor::decode("r.5a1-b"), None);
    }
}

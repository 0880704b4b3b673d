//! The reporting tables: one row per referral or A&G request, appointment and slot, kept in
//! step with the resources (written in the same transaction), and the aggregates reports run
//! over them. Nothing here loads a whole table: row reports page by key, the rest group in SQL.

use chrono::NaiveDateTime;
use diesel::dsl::count_star;
use diesel::prelude::*;

use crate::schema::{
    report_appointments, report_referrals, report_slots, resources, search_tokens,
};
use crate::DbConnection;

type QResult<T> = Result<T, diesel::result::Error>;

/// A referral or A&G request as reports see it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = report_referrals, treat_none_as_null = true)]
pub struct ReferralFacts {
    pub id: String,
    /// `referral` or `advice`.
    pub kind: String,
    pub ubrn: String,
    pub state: String,
    pub active: i32,
    pub priority: String,
    pub specialty: String,
    pub clinic_type: Option<String>,
    pub referrer_org: Option<String>,
    pub provider_org: Option<String>,
    pub service_id: Option<String>,
    pub patient_id: Option<String>,
    pub created: NaiveDateTime,
    pub updated: NaiveDateTime,
    /// ISO week of `created` (`2026-W49`).
    pub week: String,
    pub converted: i32,
    pub deleted: i32,
}

/// An appointment as reports see it (with its referral's specialty and organisations).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = report_appointments, treat_none_as_null = true)]
pub struct AppointmentFacts {
    pub id: String,
    pub referral_id: Option<String>,
    pub service_id: Option<String>,
    pub provider_org: Option<String>,
    pub referrer_org: Option<String>,
    pub specialty: String,
    pub priority: String,
    pub status: String,
    pub booked: i32,
    pub start: Option<NaiveDateTime>,
    pub created: NaiveDateTime,
    pub week: String,
    pub deleted: i32,
}

/// A slot as reports see it (with its service, provider and specialty).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = report_slots, treat_none_as_null = true)]
pub struct SlotFacts {
    pub id: String,
    pub service_id: String,
    pub provider_org: Option<String>,
    pub specialty: Option<String>,
    pub priority: String,
    pub status: String,
    pub start: NaiveDateTime,
    pub week: String,
    pub deleted: i32,
    /// The schedule the slot is in.
    pub schedule_id: String,
    /// 1 while the schedule is the service's and not inactive: the slot counts as availability.
    pub live: i32,
    /// The code of the slot's only `appointmentType` coding (what the `priority` and
    /// `appointment-type` searches match), if it has one.
    pub search_priority: Option<String>,
    /// The last instant `start` covers (what the `start` search compares, with `start`).
    pub start_high: Option<NaiveDateTime>,
}

/// One resource's reporting row.
#[derive(Debug, Clone, PartialEq)]
pub enum Facts {
    Referral(ReferralFacts),
    Appointment(AppointmentFacts),
    Slot(SlotFacts),
}

/// What is kept in step with a live resource version beside its index rows, and written with
/// it (on PostgreSQL in the version's own statement): its reporting row, and a referral's
/// worklist entries.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    pub facts: Option<Facts>,
    /// A referral's (or A&G request's) lists now: `None` for other types.
    pub worklist: Option<Listing>,
}

/// The lists one referral is on.
#[derive(Debug, Clone)]
pub struct Listing {
    pub referral_id: String,
    pub entries: Vec<crate::worklists::Entry>,
}

impl Projection {
    /// Writes it with statements of its own (SQLite). A `fresh` resource (its first version)
    /// has no rows to replace.
    pub(crate) fn write(&self, conn: &mut DbConnection, fresh: bool) -> QResult<()> {
        if let Some(f) = &self.facts {
            save(conn, f)?;
        }
        if let Some(l) = &self.worklist {
            crate::worklists::replace(conn, &l.referral_id, &l.entries, fresh)?;
        }
        Ok(())
    }
}

/// Of these services, each one's earliest free slot (live, not deleted) starting from `from`
/// at one of `priorities` (e-RS priority codes): one statement, a correlated `MIN` per service
/// that each database answers from the partial index of free slots (`report_slots_free`:
/// service, start) by reading from `from` until a slot of one of the priorities; on
/// PostgreSQL kept prepared (`pg_rows::EarliestFree`). A service with none is left out.
pub fn earliest_free_slots(
    conn: &mut DbConnection,
    services: &[&str],
    priorities: &[&str],
    from: NaiveDateTime,
) -> QResult<Vec<(String, NaiveDateTime)>> {
    if services.is_empty() || priorities.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, Option<NaiveDateTime>)> = match conn {
        DbConnection::Postgresql(pg) => {
            crate::pg_rows::EarliestFree::new(services, priorities, from).load(pg)?
        }
        _ => earliest_free_slots_as_text(conn, services, priorities, from)?,
    };
    Ok(rows
        .into_iter()
        .filter_map(|(service, start)| Some((service, start?)))
        .collect())
}

/// `earliest_free_slots` with the moment and the priority codes written into its text: SQLite
/// plans in-process, cheaply, each time.
fn earliest_free_slots_as_text(
    conn: &mut DbConnection,
    services: &[&str],
    priorities: &[&str],
    from: NaiveDateTime,
) -> QResult<Vec<(String, Option<NaiveDateTime>)>> {
    let codes: Vec<String> = priorities
        .iter()
        .filter(|p| p.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(|p| format!("'{p}'"))
        .collect();
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    // Priority codes checked above and a timestamp Rust formats: no client text reaches this
    // SQL; the services are bound.
    let earliest = format!(
        "(SELECT MIN(fs.start) FROM report_slots fs WHERE fs.service_id = resources.id \
         AND {} AND fs.start >= '{}' AND fs.priority IN ({}))",
        crate::search::FREE_SLOT,
        from.format("%Y-%m-%d %H:%M:%S%.6f"),
        codes.join(", ")
    );
    resources::table
        .filter(resources::res_type.eq("HealthcareService"))
        .filter(resources::id.eq_any(services))
        .select((
            resources::id,
            diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Timestamp>>(
                &earliest,
            ),
        ))
        .load(conn)
}

/// The slots of `schedule` now belong to `service_id` (of `provider_org`, in `specialty`):
/// rows of another service are rewritten, the rest left alone.
pub fn move_slots(
    conn: &mut DbConnection,
    schedule: &str,
    service_id: &str,
    provider_org: Option<&str>,
    specialty: Option<&str>,
) -> QResult<usize> {
    diesel::update(
        report_slots::table
            .filter(report_slots::schedule_id.eq(schedule))
            .filter(report_slots::service_id.ne(service_id)),
    )
    .set((
        report_slots::service_id.eq(service_id),
        report_slots::provider_org.eq(provider_org),
        report_slots::specialty.eq(specialty),
    ))
    .execute(conn)
}

/// The slots of `schedule` count as availability (`live`) or not: the schedule was made
/// active or inactive, lost its service, or was deleted.
pub fn set_slots_live(conn: &mut DbConnection, schedule: &str, live: bool) -> QResult<usize> {
    let live = i32::from(live);
    diesel::update(
        report_slots::table
            .filter(report_slots::schedule_id.eq(schedule))
            .filter(report_slots::live.ne(live)),
    )
    .set(report_slots::live.eq(live))
    .execute(conn)
}

/// Writes (or replaces) a resource's reporting row.
pub fn save(conn: &mut DbConnection, facts: &Facts) -> QResult<()> {
    // One upsert each (the row's id is its resource's); on PostgreSQL of fixed text, prepared.
    if let DbConnection::Postgresql(pg) = conn {
        match facts {
            Facts::Referral(f) => crate::pg_rows::ReferralUpsert(f).execute(pg)?,
            Facts::Appointment(f) => crate::pg_rows::AppointmentUpsert(f).execute(pg)?,
            Facts::Slot(f) => crate::pg_rows::SlotUpsert(f).execute(pg)?,
        };
        return Ok(());
    }
    match facts {
        Facts::Referral(f) => on_backend!(conn, |c| diesel::insert_into(report_referrals::table)
            .values(f)
            .on_conflict(report_referrals::id)
            .do_update()
            .set(f)
            .execute(c))?,
        Facts::Appointment(f) => {
            on_backend!(conn, |c| diesel::insert_into(report_appointments::table)
                .values(f)
                .on_conflict(report_appointments::id)
                .do_update()
                .set(f)
                .execute(c))?
        }
        Facts::Slot(f) => on_backend!(conn, |c| diesel::insert_into(report_slots::table)
            .values(f)
            .on_conflict(report_slots::id)
            .do_update()
            .set(f)
            .execute(c))?,
    };
    Ok(())
}

/// Rows per multi-row INSERT in a bulk load.
const CHUNK: usize = 500;

/// Inserts the reporting rows of brand-new resources (the bulk-load path).
pub fn insert_many(conn: &mut DbConnection, facts: &[Facts]) -> QResult<()> {
    let mut referrals = Vec::new();
    let mut appointments = Vec::new();
    let mut slots = Vec::new();
    for f in facts {
        match f {
            Facts::Referral(r) => referrals.push(r),
            Facts::Appointment(a) => appointments.push(a),
            Facts::Slot(s) => slots.push(s),
        }
    }
    for c in referrals.chunks(CHUNK) {
        let rows: Vec<ReferralFacts> = c.iter().map(|r| (*r).clone()).collect();
        on_backend!(conn, |conn| diesel::insert_into(report_referrals::table)
            .values(&rows)
            .execute(conn))?;
    }
    for c in appointments.chunks(CHUNK) {
        let rows: Vec<AppointmentFacts> = c.iter().map(|r| (*r).clone()).collect();
        on_backend!(conn, |conn| diesel::insert_into(report_appointments::table)
            .values(&rows)
            .execute(conn))?;
    }
    for c in slots.chunks(CHUNK) {
        let rows: Vec<SlotFacts> = c.iter().map(|r| (*r).clone()).collect();
        on_backend!(conn, |conn| diesel::insert_into(report_slots::table)
            .values(&rows)
            .execute(conn))?;
    }
    Ok(())
}

/// Up to `limit` live slots, in id order after `after`, that have no projection row (stored
/// before slots of a schedule without a service were given one).
pub fn slots_without_row(
    conn: &mut DbConnection,
    after: &str,
    limit: i64,
) -> QResult<Vec<crate::ResourceRow>> {
    use crate::schema::resources;
    resources::table
        .filter(resources::res_type.eq("Slot"))
        .filter(resources::deleted.eq(0))
        .filter(resources::id.gt(after))
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "NOT EXISTS (SELECT 1 FROM report_slots rs WHERE rs.id = resources.id)",
        ))
        .order_by(resources::id.asc())
        .limit(limit)
        .select(crate::ResourceRow::as_select())
        .load(conn)
}

/// The referral (or A&G request) row of one resource.
pub fn referral(conn: &mut DbConnection, id: &str) -> QResult<Option<ReferralFacts>> {
    report_referrals::table
        .find(id)
        .select(ReferralFacts::as_select())
        .first(conn)
        .optional()
}

/// Marks a deleted (or expired) resource's row: it stays counted in usage, and leaves the
/// lists of live things.
pub fn mark_deleted(conn: &mut DbConnection, res_type: &str, id: &str) -> QResult<()> {
    match res_type {
        "ServiceRequest" => {
            diesel::update(report_referrals::table.find(id))
                .set((
                    report_referrals::deleted.eq(1),
                    report_referrals::active.eq(0),
                ))
                .execute(conn)?;
        }
        "Appointment" => {
            diesel::update(report_appointments::table.find(id))
                .set(report_appointments::deleted.eq(1))
                .execute(conn)?;
        }
        "Slot" => {
            diesel::update(report_slots::table.find(id))
                .set(report_slots::deleted.eq(1))
                .execute(conn)?;
        }
        _ => {}
    }
    Ok(())
}

/// What a report is narrowed to; every filter is optional and they are ANDed. `org` matches
/// either side (referrer or provider) where a row has two.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFilter {
    pub org: Option<String>,
    pub from: Option<NaiveDateTime>,
    pub to: Option<NaiveDateTime>,
    pub specialty: Option<String>,
    pub service: Option<String>,
    pub priority: Option<String>,
}

type Backend = crate::conn::MultiBackend;
/// A WHERE condition on one table, built from the filters a report was given.
type Cond<T> = Box<dyn BoxableExpression<T, Backend, SqlType = diesel::sql_types::Bool>>;

/// All the conditions ANDed (TRUE when there are none).
fn all_of<T: 'static>(conds: Vec<Cond<T>>) -> Cond<T> {
    // Each page and aggregate planned with its values.
    let always: Cond<T> = Box::new(crate::search::planned_with_values());
    conds.into_iter().fold(always, |a, b| Box::new(a.and(b)))
}

/// The filter's conditions on one reporting table, given its columns: `$org` lists the
/// organisation columns (either matches), `$when` the date column.
macro_rules! conditions {
    ($f:expr, $t:ident, [$($org:ident),+], $when:ident, $specialty:expr, $service:expr, $priority:ident) => {{
        let f: &ReportFilter = $f;
        let mut c: Vec<Cond<$t::table>> = Vec::new();
        if let Some(o) = &f.org {
            c.push(all_or(vec![$(Box::new($t::$org.assume_not_null().eq(o.clone())) as Cond<$t::table>),+]));
        }
        if let Some(t) = f.from {
            c.push(Box::new($t::$when.assume_not_null().ge(t)));
        }
        if let Some(t) = f.to {
            c.push(Box::new($t::$when.assume_not_null().le(t)));
        }
        if let Some(s) = &f.specialty {
            c.push(Box::new($specialty.eq(s.clone())));
        }
        if let Some(s) = &f.service {
            c.push(Box::new($service.eq(s.clone())));
        }
        if let Some(p) = &f.priority {
            c.push(Box::new($t::$priority.eq(p.clone())));
        }
        all_of(c)
    }};
}

/// Any of the conditions.
fn all_or<T: 'static>(conds: Vec<Cond<T>>) -> Cond<T> {
    conds
        .into_iter()
        .reduce(|a, b| Box::new(a.or(b)))
        .unwrap_or_else(|| Box::new(diesel::dsl::sql::<diesel::sql_types::Bool>("1 = 0")))
}

fn referral_conditions(f: &ReportFilter) -> Cond<report_referrals::table> {
    conditions!(
        f,
        report_referrals,
        [referrer_org, provider_org],
        created,
        report_referrals::specialty,
        report_referrals::service_id.assume_not_null(),
        priority
    )
}

/// Active referrals (not A&G requests), oldest first, `limit` after the key (`created`, `id`)
/// of the last row of the previous page. The key is two plain range queries (the rest of the
/// last row's `created`, then later ones), each an index range on both databases: an `OR` of
/// the two lets SQLite's planner scan from the start of the index on every page.
pub fn active_referrals(
    conn: &mut DbConnection,
    f: &ReportFilter,
    after: Option<&(NaiveDateTime, String)>,
    limit: i64,
) -> QResult<Vec<ReferralFacts>> {
    let base = || {
        report_referrals::table
            .into_boxed()
            .filter(referral_conditions(f))
            .filter(report_referrals::kind.eq("referral"))
            .filter(report_referrals::active.eq(1))
    };
    let Some((created, id)) = after else {
        return base()
            .order((report_referrals::created.asc(), report_referrals::id.asc()))
            .limit(limit)
            .select(ReferralFacts::as_select())
            .load(conn);
    };
    let mut rows: Vec<ReferralFacts> = base()
        .filter(report_referrals::created.eq(*created))
        .filter(report_referrals::id.gt(id.clone()))
        .order(report_referrals::id.asc())
        .limit(limit)
        .select(ReferralFacts::as_select())
        .load(conn)?;
    let more = limit - rows.len() as i64;
    if more > 0 {
        rows.extend(
            base()
                .filter(report_referrals::created.gt(*created))
                .order((report_referrals::created.asc(), report_referrals::id.asc()))
                .limit(more)
                .select(ReferralFacts::as_select())
                .load(conn)?,
        );
    }
    Ok(rows)
}

/// The NHS numbers of these patients (`Patient` ids), from the search index.
pub fn nhs_numbers(
    conn: &mut DbConnection,
    system: &str,
    patient_ids: &[String],
) -> QResult<Vec<(String, String)>> {
    search_tokens::table
        .filter(search_tokens::res_type.eq("Patient"))
        .filter(search_tokens::param.eq("identifier"))
        .filter(search_tokens::system.eq(system))
        .filter(search_tokens::res_id.eq_any(patient_ids))
        .select((search_tokens::res_id, search_tokens::code))
        .load(conn)
}

/// How the usage report groups: by specialty or by (referring or providing) organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKey {
    Specialty,
    Organisation,
}

/// One usage count: week, group key, what was counted, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub week: String,
    pub key: String,
    pub measure: &'static str,
    pub count: i64,
}

/// Initial referrals, A&G requests, conversions (by the referring organisation or
/// specialty) and bookings (by the providing organisation or specialty), per ISO week.
pub fn usage(conn: &mut DbConnection, f: &ReportFilter, by: UsageKey) -> QResult<Vec<UsageCount>> {
    let mut out = Vec::new();
    let rows: Vec<(String, Option<String>, String, i32, i64)> = match by {
        UsageKey::Specialty => report_referrals::table
            .filter(referral_conditions(f))
            .group_by((
                report_referrals::week,
                report_referrals::specialty,
                report_referrals::kind,
                report_referrals::converted,
            ))
            .select((
                report_referrals::week,
                report_referrals::specialty.nullable(),
                report_referrals::kind,
                report_referrals::converted,
                count_star(),
            ))
            .load(conn)?,
        UsageKey::Organisation => report_referrals::table
            .filter(referral_conditions(f))
            .group_by((
                report_referrals::week,
                report_referrals::referrer_org,
                report_referrals::kind,
                report_referrals::converted,
            ))
            .select((
                report_referrals::week,
                report_referrals::referrer_org,
                report_referrals::kind,
                report_referrals::converted,
                count_star(),
            ))
            .load(conn)?,
    };
    for (week, key, kind, converted, count) in rows {
        let measure = match (kind.as_str(), converted) {
            ("advice", _) => "advice_requests",
            (_, 0) => "initial_referrals",
            _ => "conversions",
        };
        out.push(UsageCount {
            week,
            key: key.unwrap_or_default(),
            measure,
            count,
        });
    }
    let cond = || -> Cond<report_appointments::table> {
        all_of(vec![
            Box::new(report_appointments::booked.eq(1)),
            conditions!(
                f,
                report_appointments,
                [referrer_org, provider_org],
                created,
                report_appointments::specialty,
                report_appointments::service_id.assume_not_null(),
                priority
            ),
        ])
    };
    let bookings: Vec<(String, Option<String>, i64)> = match by {
        UsageKey::Specialty => report_appointments::table
            .filter(cond())
            .group_by((report_appointments::week, report_appointments::specialty))
            .select((
                report_appointments::week,
                report_appointments::specialty.nullable(),
                count_star(),
            ))
            .load(conn)?,
        UsageKey::Organisation => report_appointments::table
            .filter(cond())
            .group_by((report_appointments::week, report_appointments::provider_org))
            .select((
                report_appointments::week,
                report_appointments::provider_org,
                count_star(),
            ))
            .load(conn)?,
    };
    out.extend(bookings.into_iter().map(|(week, key, count)| UsageCount {
        week,
        key: key.unwrap_or_default(),
        measure: "bookings",
        count,
    }));
    out.sort_by(|a, b| (&a.week, &a.key, a.measure).cmp(&(&b.week, &b.key, b.measure)));
    Ok(out)
}

/// Slots of one service in one week with one status (`deleted` ones apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCount {
    pub service_id: String,
    pub provider_org: Option<String>,
    pub week: String,
    pub status: String,
    pub deleted: bool,
    pub count: i64,
}

/// Slot counts per service, ISO week of the slot's start, status.
pub fn slot_counts(conn: &mut DbConnection, f: &ReportFilter) -> QResult<Vec<SlotCount>> {
    let cond = conditions!(
        f,
        report_slots,
        [provider_org],
        start,
        report_slots::specialty.assume_not_null(),
        report_slots::service_id,
        priority
    );
    let rows: Vec<(String, Option<String>, String, String, i32, i64)> = report_slots::table
        .filter(cond)
        // Slots of a schedule that has no service are no service's.
        .filter(report_slots::service_id.ne(""))
        .group_by((
            report_slots::service_id,
            report_slots::provider_org,
            report_slots::week,
            report_slots::status,
            report_slots::deleted,
        ))
        .select((
            report_slots::service_id,
            report_slots::provider_org,
            report_slots::week,
            report_slots::status,
            report_slots::deleted,
            count_star(),
        ))
        .order((report_slots::week, report_slots::service_id))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(service_id, provider_org, week, status, deleted, count)| SlotCount {
                service_id,
                provider_org,
                week,
                status,
                deleted: deleted != 0,
                count,
            },
        )
        .collect())
}

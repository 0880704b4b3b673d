//! Keeps the reporting tables in step with the resources: every stored version of a referral,
//! A&G request, appointment or slot rewrites its one reporting row with the version itself,
//! with the organisations resolved and the ISO week computed, so reports are aggregates over
//! one table (`ers_schema::reports`).

use crate::fhir::At;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime, Utc};
use ers_schema::reports::{
    self, AppointmentFacts, Facts, Listing, Projection, ReferralFacts, SlotFacts,
};
use ers_schema::{worklists, DbConnection, ResourceRow};
use serde_json::Value;

use super::referral::{load_json, ods_behind};
use super::Result;
use crate::fhir::datetime;
use crate::fhir::resources::healthcare_service::{CLINIC_TYPE_SYSTEM, SPECIALTY_SYSTEM};
use crate::fhir::resources::{advice, appointment as ap, service_request as sr};

/// ISO week of a moment: `2026-W49`.
pub fn iso_week(t: NaiveDateTime) -> String {
    let w = t.date().iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

fn instant(v: Option<&Value>) -> Option<NaiveDateTime> {
    v.and_then(Value::as_str)
        .and_then(datetime::range)
        .map(|(low, _)| low)
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// The first code of `system` at `field`.
fn code_in<'a>(r: &'a Value, field: &str, system: &str) -> Option<&'a str> {
    crate::fhir::resources::codes(r, field, system)
        .first()
        .copied()
}

/// What the rows of one write look up, remembered for the write (a bulk load of many slots
/// of one schedule reads the schedule once).
#[derive(Default)]
pub struct Lookups {
    ods: HashMap<String, Option<String>>,
    json: HashMap<String, Option<Arc<Value>>>,
    /// Referral rows made in this write, not stored yet (a bulk load's appointments).
    referrals: HashMap<String, ReferralFacts>,
}

impl Lookups {
    fn ods(&mut self, c: &mut DbConnection, reference: &str) -> Result<Option<String>> {
        if let Some(v) = self.ods.get(reference) {
            return Ok(v.clone());
        }
        let v = ods_behind(c, reference)?;
        self.ods.insert(reference.to_owned(), v.clone());
        Ok(v)
    }

    fn json(&mut self, c: &mut DbConnection, reference: &str) -> Result<Option<Arc<Value>>> {
        if let Some(v) = self.json.get(reference) {
            return Ok(v.clone());
        }
        let v = load_json(c, reference)?;
        self.json.insert(reference.to_owned(), v.clone());
        Ok(v)
    }
}

/// What a resource version brings: its reporting row, if its type has one, and for referrals
/// and A&G requests the worklist entries they are on.
pub fn facts(
    c: &mut DbConnection,
    res_type: &str,
    id: &str,
    content: &Value,
    look: &mut Lookups,
) -> Result<(Option<Facts>, Vec<worklists::Entry>)> {
    Ok(match res_type {
        "ServiceRequest" => {
            let f = referral(c, id, content, look)?;
            let entries = worklist_entries(c, &f, content, look)?;
            look.referrals.insert(id.to_owned(), f.clone());
            (Some(Facts::Referral(f)), entries)
        }
        "Appointment" => (
            Some(Facts::Appointment(appointment(c, id, content, look)?)),
            Vec::new(),
        ),
        "Slot" => (slot(c, id, content, look)?.map(Facts::Slot), Vec::new()),
        _ => (None, Vec::new()),
    })
}

/// The types with a reporting row of their own.
const REPORTED: &[&str] = &["ServiceRequest", "Appointment", "Slot"];

/// The reporting row and worklist entries of a live version about to be stored: the store
/// writes them with it (`reports::Projection`; on PostgreSQL in the version's statement).
pub fn projection(
    c: &mut DbConnection,
    res_type: &str,
    id: &str,
    content: &Value,
) -> Result<Projection> {
    if !REPORTED.contains(&res_type) {
        return Ok(Projection::default());
    }
    let (facts, entries) = facts(c, res_type, id, content, &mut Lookups::default())?;
    Ok(Projection {
        facts,
        worklist: (res_type == "ServiceRequest").then(|| Listing {
            referral_id: id.to_owned(),
            entries,
        }),
    })
}

/// Whether storing a version of `res_type` changes rows beyond its own (`record`), with
/// statements of their own after the write: a schedule's slots' rows; a deleted resource's
/// reporting row and worklist entries.
pub fn changes_more(res_type: &str, deleted: bool) -> bool {
    res_type == "Schedule" || (deleted && REPORTED.contains(&res_type))
}

/// What a stored version changes beyond its own rows (`projection`): a schedule's slots'
/// rows; a deleted resource's reporting row marked deleted, a deleted referral taken off its
/// lists.
pub fn record(
    c: &mut DbConnection,
    res_type: &str,
    id: &str,
    content: &Value,
    deleted: bool,
) -> Result<()> {
    if !changes_more(res_type, deleted) {
        return Ok(());
    }
    if res_type == "Schedule" {
        if deleted {
            reports::set_slots_live(c, id, false)?;
            return Ok(());
        }
        return schedule(c, id, content);
    }
    reports::mark_deleted(c, res_type, id)?;
    if res_type == "ServiceRequest" {
        worklists::remove(c, id)?;
    }
    Ok(())
}

/// The worklists a referral or A&G request is on: each list of its referrer's organisation,
/// and of the organisation of the service it is with now (`service` search parameter).
fn worklist_entries(
    c: &mut DbConnection,
    f: &ReferralFacts,
    r: &Value,
    look: &mut Lookups,
) -> Result<Vec<worklists::Entry>> {
    use crate::domain::referral::{Listable, Worklist};
    let item = if f.kind == "advice" {
        advice::status_of(r).map(Listable::Advice)
    } else {
        sr::state_of(r).map(|s| Listable::Referral {
            state: s.state,
            letter_outstanding: sr::letter_outstanding(r),
        })
    };
    let Some(item) = item else {
        return Ok(Vec::new());
    };
    let service = sr::extract_service(r).into_iter().find_map(|v| {
        v.get("reference")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let provider_org = match &service {
        Some(s) => look.ods(c, s)?,
        None => None,
    };
    let service_id = service.and_then(|s| s.strip_prefix("HealthcareService/").map(str::to_owned));
    Ok(Worklist::holding(item)
        .filter_map(|w| {
            let (org, service_id) = if w.for_referrers() {
                (f.referrer_org.clone(), None)
            } else {
                (provider_org.clone(), service_id.clone())
            };
            Some(worklists::Entry {
                list: w.code().to_owned(),
                org: org?,
                authored: f.created,
                referral_id: f.id.clone(),
                service_id,
                specialty: f.specialty.clone(),
            })
        })
        .collect())
}

/// Runs `each` over every resource `page` gives (up to 1,000 after an id, in id order), once:
/// while the counter `mark` a migration left at 0 says it has not run. Returns how many.
fn backfill(
    c: &mut DbConnection,
    mark: &str,
    page: impl Fn(&mut DbConnection, &str) -> Result<Vec<ResourceRow>>,
    mut each: impl FnMut(&mut DbConnection, &ResourceRow, &Value, &mut Lookups) -> Result<()>,
) -> Result<u64> {
    if ers_schema::store::counter_value(c, mark)? != Some(0) {
        return Ok(0);
    }
    let mut done = 0u64;
    let mut after = String::new();
    loop {
        let rows = page(c, &after)?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        ers_schema::write_tx(c, |c| {
            let mut look = Lookups::default();
            for row in &rows {
                let content: Value = super::parse_stored(row)?;
                each(c, row, &content, &mut look)?;
            }
            Ok::<_, super::ServiceError>(())
        })?;
        done += rows.len() as u64;
    }
    ers_schema::store::set_counter(c, mark, 1)?;
    Ok(done)
}

/// Lists every stored referral and A&G request, once, after the worklist table was added to a
/// database that already held some.
pub fn backfill_worklists(c: &mut DbConnection) -> Result<u64> {
    backfill(
        c,
        "worklists_backfilled",
        |c, after| {
            Ok(ers_schema::store::page_of_type(
                c,
                "ServiceRequest",
                after,
                1000,
            )?)
        },
        |c, row, content, look| {
            let (_, entries) = facts(c, "ServiceRequest", &row.id, content, look)?;
            Ok(worklists::replace(c, &row.id, &entries, false)?)
        },
    )
}

/// Gives every stored slot its projection row, once, after the migration that made slots of a
/// schedule without a service have one too.
pub fn backfill_slot_rows(c: &mut DbConnection) -> Result<u64> {
    backfill(
        c,
        "slot_rows_backfilled",
        |c, after| Ok(reports::slots_without_row(c, after, 1000)?),
        |c, row, content, look| {
            if let Some(f) = slot(c, &row.id, content, look)? {
                reports::save(c, &Facts::Slot(f))?;
            }
            Ok(())
        },
    )
}

fn referral(
    c: &mut DbConnection,
    id: &str,
    r: &Value,
    look: &mut Lookups,
) -> Result<ReferralFacts> {
    let is_advice = advice::is_advice(r);
    let (state, active) = if is_advice {
        let s = advice::status_of(r);
        (
            s.map(|s| s.code().to_owned()).unwrap_or_default(),
            s.is_some_and(|s| !s.ended()),
        )
    } else {
        (
            sr::state_of(r)
                .map(|s| s.state.code().to_owned())
                .unwrap_or_default(),
            r.get("status").and_then(Value::as_str) == Some("active"),
        )
    };
    // The service it is with now; before that, the first on the shortlist.
    let service = sr::extract_service(r)
        .into_iter()
        .find_map(|v| {
            v.get("reference")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .or_else(|| sr::shortlist(r).into_iter().next());
    let referrer_org = match r.at("/requester/reference").and_then(Value::as_str) {
        Some(req) => look.ods(c, req)?,
        None => None,
    };
    let provider_org = match &service {
        Some(s) => look.ods(c, s)?,
        None => None,
    };
    // The referral's own specialty; when it names none, its service's.
    let specialty = match code_in(r, "performerType", SPECIALTY_SYSTEM) {
        Some(s) => s.to_owned(),
        None => match &service {
            Some(s) => look
                .json(c, s)?
                .as_ref()
                .and_then(|v| code_in(v, "specialty", SPECIALTY_SYSTEM))
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        },
    };
    let created = instant(r.get("authoredOn")).unwrap_or_else(now);
    let converted = r
        .get("basedOn")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("reference").and_then(Value::as_str))
        .any(|b| b.starts_with("ServiceRequest/"));
    Ok(ReferralFacts {
        id: id.to_owned(),
        kind: if is_advice { "advice" } else { "referral" }.to_owned(),
        ubrn: sr::ubrn_of(r).unwrap_or_default().to_owned(),
        state,
        active: i32::from(active),
        priority: sr::ers_priority(r).unwrap_or_default().to_owned(),
        specialty,
        clinic_type: code_in(r, "code", CLINIC_TYPE_SYSTEM).map(str::to_owned),
        referrer_org,
        provider_org,
        service_id: service.and_then(|s| s.strip_prefix("HealthcareService/").map(str::to_owned)),
        patient_id: r
            .at("/subject/reference")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix("Patient/"))
            .map(str::to_owned),
        created,
        updated: instant(r.at("/meta/lastUpdated")).unwrap_or_else(now),
        week: iso_week(created),
        converted: i32::from(converted),
        deleted: 0,
    })
}

fn appointment(
    c: &mut DbConnection,
    id: &str,
    a: &Value,
    look: &mut Lookups,
) -> Result<AppointmentFacts> {
    let referral_id = ap::based_on(a).map(|(id, _)| id);
    let referral = match &referral_id {
        Some(r) => match look.referrals.get(r) {
            Some(f) => Some(f.clone()),
            // Read already by this use case (a booking's referral): its facts from the same
            // stored version its reporting row was made from, without reading that row.
            None => match super::memo::known("ServiceRequest", r) {
                Some(row) => {
                    let stored = super::memo::parsed(&row)?;
                    Some(referral(c, r, &stored, look)?)
                }
                None => reports::referral(c, r)?,
            },
        },
        None => None,
    };
    let service = ap::actors(a, "HealthcareService").into_iter().next();
    let provider_org = match &service {
        Some(s) => look.ods(c, s)?,
        None => referral.as_ref().and_then(|r| r.provider_org.clone()),
    };
    let status = a
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let start = instant(a.get("start"));
    // A booking (direct or indirect) has a time; a deferral to the provider has none.
    let booked = start.is_some() && !matches!(status.as_str(), "proposed" | "entered-in-error");
    let created = instant(a.get("created")).unwrap_or_else(now);
    Ok(AppointmentFacts {
        id: id.to_owned(),
        referral_id,
        service_id: service.and_then(|s| s.strip_prefix("HealthcareService/").map(str::to_owned)),
        provider_org,
        referrer_org: referral.as_ref().and_then(|r| r.referrer_org.clone()),
        specialty: referral
            .as_ref()
            .map(|r| r.specialty.clone())
            .unwrap_or_default(),
        priority: referral
            .as_ref()
            .map(|r| r.priority.clone())
            .unwrap_or_default(),
        status,
        booked: i32::from(booked),
        start,
        created,
        week: iso_week(created),
        deleted: 0,
    })
}

/// The HealthcareService a schedule is for (`HealthcareService/{id}`).
fn service_of(schedule: &Value) -> Option<&str> {
    crate::fhir::resources::schedule::actor(schedule, "HealthcareService")
}

/// A schedule given to another service takes its slots' rows with it; one without a service
/// leaves them with no service (''), and one without a service or inactive takes them out of
/// the availability search. (The slot search by service reads these rows: they must say
/// exactly which service each slot's schedule is for.)
fn schedule(c: &mut DbConnection, id: &str, content: &Value) -> Result<()> {
    let Some(service) = service_of(content) else {
        reports::set_slots_live(c, id, false)?;
        reports::move_slots(c, id, "", None, None)?;
        return Ok(());
    };
    reports::set_slots_live(c, id, crate::fhir::resources::schedule::is_active(content))?;
    let mut look = Lookups::default();
    let specialty = look
        .json(c, service)?
        .as_ref()
        .and_then(|v| code_in(v, "specialty", SPECIALTY_SYSTEM))
        .map(str::to_owned);
    let provider_org = look.ods(c, service)?;
    reports::move_slots(
        c,
        id,
        service
            .strip_prefix("HealthcareService/")
            .unwrap_or_default(),
        provider_org.as_deref(),
        specialty.as_deref(),
    )?;
    Ok(())
}

fn slot(
    c: &mut DbConnection,
    id: &str,
    s: &Value,
    look: &mut Lookups,
) -> Result<Option<SlotFacts>> {
    let Some(start) = instant(s.get("start")) else {
        return Ok(None);
    };
    let schedule_ref = s
        .at("/schedule/reference")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let schedule = match schedule_ref {
        "" => None,
        r => look.json(c, r)?,
    };
    let Some(schedule) = schedule else {
        return Ok(None);
    };
    // A schedule without a service: a row all the same (no service, not live), so that the
    // slot is found by its service once the schedule is given one (`schedule`).
    let service = service_of(&schedule).map(str::to_owned);
    let service_json = match &service {
        Some(s) => look.json(c, s)?,
        None => None,
    };
    Ok(Some(SlotFacts {
        id: id.to_owned(),
        service_id: service
            .as_deref()
            .and_then(|s| s.strip_prefix("HealthcareService/"))
            .unwrap_or_default()
            .to_owned(),
        provider_org: match &service {
            Some(s) => look.ods(c, s)?,
            None => None,
        },
        specialty: service_json
            .as_ref()
            .and_then(|v| code_in(v, "specialty", SPECIALTY_SYSTEM))
            .map(str::to_owned),
        priority: code_in(
            s,
            "appointmentType",
            crate::fhir::resources::healthcare_service::PRIORITY_SYSTEM,
        )
        .or_else(|| {
            s.at("/appointmentType/coding/0/code")
                .and_then(Value::as_str)
        })
        .unwrap_or("ROUTINE")
        .to_owned(),
        status: s
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        start,
        week: iso_week(start),
        deleted: 0,
        schedule_id: schedule_ref
            .strip_prefix("Schedule/")
            .unwrap_or(schedule_ref)
            .to_owned(),
        live: i32::from(
            service.is_some() && crate::fhir::resources::schedule::is_active(&schedule),
        ),
        search_priority: crate::fhir::resources::slot::priority_code(s).map(str::to_owned),
        start_high: s
            .get("start")
            .and_then(Value::as_str)
            .and_then(datetime::range)
            .map(|(_, high)| high),
    }))
}

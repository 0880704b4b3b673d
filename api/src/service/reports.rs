//! Reports and extracts for operational users: active referrals, appointment slots, user roles
//! and weekly usage. Each runs over the reporting tables (`ers_schema::reports`) as SQL
//! aggregates or key-paged lists, and hands its rows one at a time to a sink (the HTTP layer
//! streams them out as CSV or JSON), so memory stays flat however big the report.

use crate::fhir::At;
use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDateTime, Utc};
use ers_schema::exports::{self, PageQuery};
use ers_schema::reports::{self as store, ReportFilter, UsageKey};
use ers_schema::DbConnection;
use serde_json::Value;

use super::audit::{self, AuditDraft, Outcome};
use super::seed::BUSINESS_FUNCTION_SYSTEM;
use super::{Result, ServiceError};
use crate::domain::{Caller, NhsNumber, OdsCode, SdsUserId};
use crate::security::permissions::{self, Action};

/// The reports there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    ActiveReferrals,
    Slots,
    UserRoles,
    Usage,
}

/// A report's cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// A proportion, 0 to 1.
    Ratio(f64),
    Empty,
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }
    fn opt(s: Option<impl Into<String>>) -> Cell {
        s.map_or(Cell::Empty, |s| Cell::Text(s.into()))
    }
}

/// The filters every report may be given; each report takes some of them.
pub const FILTERS: &[&str] = &[
    "organization",
    "from",
    "to",
    "specialty",
    "service",
    "priority",
];

impl Report {
    pub const ALL: [Report; 4] = [
        Report::ActiveReferrals,
        Report::Slots,
        Report::UserRoles,
        Report::Usage,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Report::ActiveReferrals => "active-referrals",
            Report::Slots => "appointment-slots",
            Report::UserRoles => "user-roles",
            Report::Usage => "usage",
        }
    }

    pub fn parse(code: &str) -> Option<Report> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    pub fn title(self) -> &'static str {
        match self {
            Report::ActiveReferrals => "Active referrals: one row per referral not yet ended, oldest first, with the days it has waited",
            Report::Slots => "Appointment slots: per service and ISO week of the slot's start, slots published, booked, free and cancelled, and utilisation (booked / (booked + free))",
            Report::UserRoles => "User roles: each user's business functions and organisations",
            Report::Usage => "Usage: initial referrals, bookings, A&G requests and conversions per ISO week, by specialty (group=specialty, the open-data dashboard) or organisation (group=organisation)",
        }
    }

    /// The resource type whose `Report` permission governs the report.
    pub fn res_type(self) -> &'static str {
        match self {
            Report::ActiveReferrals | Report::Usage => "ServiceRequest",
            Report::Slots => "Slot",
            Report::UserRoles => "PractitionerRole",
        }
    }

    /// The filters the report takes (of `FILTERS`); `from`/`to` bound the referral's creation,
    /// the slot's start, or the week of the usage counted.
    pub fn filters(self) -> &'static [&'static str] {
        match self {
            Report::UserRoles => &["organization"],
            _ => FILTERS,
        }
    }

    pub fn columns(self, group: UsageKey) -> &'static [&'static str] {
        match self {
            Report::ActiveReferrals => &[
                "ubrn",
                "state",
                "priority",
                "specialty",
                "clinic_type",
                "referrer_organisation",
                "provider_organisation",
                "service",
                "created",
                "last_updated",
                "days_waiting",
                "nhs_number",
            ],
            Report::Slots => &[
                "service",
                "service_name",
                "provider_organisation",
                "week",
                "published",
                "booked",
                "free",
                "cancelled",
                "utilisation",
            ],
            Report::UserRoles => &[
                "sds_user_id",
                "name",
                "business_function",
                "organisation",
                "active",
                "role",
            ],
            Report::Usage => match group {
                UsageKey::Specialty => &[
                    "week",
                    "specialty",
                    "initial_referrals",
                    "bookings",
                    "advice_requests",
                    "conversions",
                ],
                UsageKey::Organisation => &[
                    "week",
                    "organisation",
                    "initial_referrals",
                    "bookings",
                    "advice_requests",
                    "conversions",
                ],
            },
        }
    }
}

/// What a report was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub report: Report,
    pub filter: ReportFilter,
    pub group: UsageKey,
}

/// Where rows go; false stops the report (the client went away).
pub type Sink<'a> = dyn FnMut(Vec<Cell>) -> bool + 'a;

/// 403 unless the caller's business function may run the report.
pub fn authorise(report: Report, caller: &Caller) -> Result<()> {
    let bf = caller.business_function;
    if permissions::permits(report.res_type(), Action::Report, bf) {
        return Ok(());
    }
    Err(ServiceError::Forbidden(format!(
        "Business function {bf} may not run the {} report (it may be run by {})",
        report.code(),
        permissions::allowed(report.res_type(), Action::Report)
            .iter()
            .map(|b| b.code())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Checks the caller may run the report and records the run, before any row leaves.
pub fn start(
    c: &mut DbConnection,
    req: &Request,
    caller: &Caller,
    draft: &AuditDraft,
) -> Result<()> {
    authorise(req.report, caller)?;
    audit::record(
        c,
        draft,
        &Outcome {
            action: "E",
            subtype: "report".into(),
            status: 200,
            description: Some(format!("report {}", req.report.code())),
        },
        &[],
    )?;
    Ok(())
}

/// Produces the rows of a started report into the sink; returns how many.
pub fn rows(
    c: &mut DbConnection,
    req: &Request,
    caller: &Caller,
    sink: &mut Sink<'_>,
) -> Result<u64> {
    authorise(req.report, caller)?;
    match req.report {
        Report::ActiveReferrals => active_referrals(c, &req.filter, caller, sink),
        Report::Slots => slots(c, &req.filter, sink),
        Report::UserRoles => user_roles(c, &req.filter, sink),
        Report::Usage => usage(c, &req.filter, req.group, sink),
    }
}

/// Rows per page of a list report.
const PAGE: i64 = 2000;

fn active_referrals(
    c: &mut DbConnection,
    f: &ReportFilter,
    caller: &Caller,
    sink: &mut Sink<'_>,
) -> Result<u64> {
    let identifiers = permissions::permits("Patient", Action::Report, caller.business_function);
    let me = caller.organisation.as_str();
    let today = Utc::now().naive_utc();
    let mut after: Option<(NaiveDateTime, String)> = None;
    let mut n = 0;
    loop {
        let rows = store::active_referrals(c, f, after.as_ref(), PAGE)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = Some((last.created, last.id.clone()));
        // NHS numbers only of the referrals the analyst's organisation is party to.
        let ours: Vec<String> = rows
            .iter()
            .filter(|r| {
                identifiers
                    && (r.referrer_org.as_deref() == Some(me)
                        || r.provider_org.as_deref() == Some(me))
            })
            .filter_map(|r| r.patient_id.clone())
            .collect();
        let numbers: HashMap<String, String> = if ours.is_empty() {
            HashMap::new()
        } else {
            store::nhs_numbers(c, NhsNumber::SYSTEM, &ours)?
                .into_iter()
                .collect()
        };
        let full = rows.len() as i64 == PAGE;
        for r in rows {
            let nhs = r
                .patient_id
                .as_ref()
                .filter(|_| {
                    r.referrer_org.as_deref() == Some(me) || r.provider_org.as_deref() == Some(me)
                })
                .and_then(|p| numbers.get(p).cloned());
            let row = vec![
                Cell::text(r.ubrn),
                Cell::text(r.state),
                Cell::text(r.priority),
                Cell::text(r.specialty),
                Cell::opt(r.clinic_type),
                Cell::opt(r.referrer_org),
                Cell::opt(r.provider_org),
                Cell::opt(r.service_id),
                Cell::text(crate::fhir::datetime::instant(r.created)),
                Cell::text(crate::fhir::datetime::instant(r.updated)),
                Cell::Int((today - r.created).num_days().max(0)),
                Cell::opt(nhs),
            ];
            if !sink(row) {
                return Ok(n);
            }
            n += 1;
        }
        if !full {
            break;
        }
    }
    Ok(n)
}

/// Slots of one service (or all) in one week.
#[derive(Default, Clone)]
pub struct SlotWeek {
    pub provider: Option<String>,
    pub published: i64,
    pub booked: i64,
    pub free: i64,
    pub cancelled: i64,
}

impl SlotWeek {
    fn add(&mut self, o: &SlotWeek) {
        self.published += o.published;
        self.booked += o.booked;
        self.free += o.free;
        self.cancelled += o.cancelled;
    }

    /// Booked over bookable (booked + free), when there were any.
    pub fn utilisation(&self) -> Option<f64> {
        let capacity = self.booked + self.free;
        (capacity > 0).then(|| self.booked as f64 / capacity as f64)
    }
}

/// Slots per (week, service): published is every slot; cancelled ones (deleted, or made
/// unavailable) are counted apart from booked and free.
fn slot_weeks(
    c: &mut DbConnection,
    f: &ReportFilter,
) -> Result<BTreeMap<(String, String), SlotWeek>> {
    let mut weeks: BTreeMap<(String, String), SlotWeek> = BTreeMap::new();
    for s in store::slot_counts(c, f)? {
        let w = weeks
            .entry((s.week.clone(), s.service_id.clone()))
            .or_default();
        w.provider = w.provider.take().or(s.provider_org);
        w.published += s.count;
        match (s.deleted, s.status.as_str()) {
            (true, _) | (_, "busy-unavailable" | "entered-in-error") => w.cancelled += s.count,
            (_, "free") => w.free += s.count,
            (_, "busy" | "busy-tentative") => w.booked += s.count,
            _ => {}
        }
    }
    Ok(weeks)
}

fn slots(c: &mut DbConnection, f: &ReportFilter, sink: &mut Sink<'_>) -> Result<u64> {
    let weeks = slot_weeks(c, f)?;
    let ids: Vec<String> = {
        let mut v: Vec<String> = weeks.keys().map(|(_, s)| s.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let names: HashMap<String, String> = ers_schema::store::get_many(c, "HealthcareService", &ids)?
        .into_iter()
        .filter_map(|r| {
            let v: Value = serde_json::from_str(&r.content).ok()?;
            Some((r.id, v.get("name")?.as_str()?.to_owned()))
        })
        .collect();
    let mut n = 0;
    for ((week, service), w) in weeks {
        let row = vec![
            Cell::text(service.clone()),
            Cell::opt(names.get(&service).cloned()),
            Cell::opt(w.provider.clone()),
            Cell::text(week),
            Cell::Int(w.published),
            Cell::Int(w.booked),
            Cell::Int(w.free),
            Cell::Int(w.cancelled),
            w.utilisation().map_or(Cell::Empty, Cell::Ratio),
        ];
        if !sink(row) {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// One ISO week of usage for one specialty or organisation.
#[derive(Default, Clone, Copy)]
pub struct UsageWeek {
    pub initial_referrals: i64,
    pub bookings: i64,
    pub advice_requests: i64,
    pub conversions: i64,
}

/// Usage per (week, specialty or organisation), in week order.
pub fn usage_table(
    c: &mut DbConnection,
    f: &ReportFilter,
    group: UsageKey,
) -> Result<BTreeMap<(String, String), UsageWeek>> {
    let mut table: BTreeMap<(String, String), UsageWeek> = BTreeMap::new();
    for u in store::usage(c, f, group)? {
        let w = table.entry((u.week, u.key)).or_default();
        match u.measure {
            "initial_referrals" => w.initial_referrals += u.count,
            "bookings" => w.bookings += u.count,
            "advice_requests" => w.advice_requests += u.count,
            "conversions" => w.conversions += u.count,
            _ => {}
        }
    }
    Ok(table)
}

fn usage(
    c: &mut DbConnection,
    f: &ReportFilter,
    group: UsageKey,
    sink: &mut Sink<'_>,
) -> Result<u64> {
    let mut n = 0;
    for ((week, key), w) in usage_table(c, f, group)? {
        let row = vec![
            Cell::text(week),
            Cell::text(key),
            Cell::Int(w.initial_referrals),
            Cell::Int(w.bookings),
            Cell::Int(w.advice_requests),
            Cell::Int(w.conversions),
        ];
        if !sink(row) {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// What the usage dashboard shows.
pub struct Dashboard {
    /// Usage per (week, specialty).
    pub usage: BTreeMap<(String, String), UsageWeek>,
    /// Slots per week, all services together.
    pub slots: BTreeMap<String, SlotWeek>,
}

/// The dashboard's figures (the usage and slots reports, summed), audited like a report.
pub fn dashboard(
    c: &mut DbConnection,
    f: &ReportFilter,
    caller: &Caller,
    draft: &AuditDraft,
) -> Result<Dashboard> {
    authorise(Report::Usage, caller)?;
    authorise(Report::Slots, caller)?;
    audit::record(
        c,
        draft,
        &Outcome {
            action: "E",
            subtype: "report".into(),
            status: 200,
            description: Some("usage dashboard".into()),
        },
        &[],
    )?;
    let usage = usage_table(c, f, UsageKey::Specialty)?;
    let mut slots: BTreeMap<String, SlotWeek> = BTreeMap::new();
    for ((week, _), w) in slot_weeks(c, f)? {
        slots.entry(week).or_default().add(&w);
    }
    Ok(Dashboard { usage, slots })
}

fn human_name(v: &Value) -> Option<String> {
    let n = v.get("name")?.as_array()?.first()?;
    let given: Vec<&str> = n
        .get("given")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let family = n.get("family").and_then(Value::as_str).unwrap_or_default();
    Some(format!("{} {family}", given.join(" ")).trim().to_owned())
}

fn user_roles(c: &mut DbConnection, f: &ReportFilter, sink: &mut Sink<'_>) -> Result<u64> {
    let q = PageQuery {
        res_type: "PractitionerRole".into(),
        ..Default::default()
    };
    let mut after = exports::Cursor::default();
    let mut n = 0;
    loop {
        let page = exports::page(c, &q, &after, PAGE)?;
        let Some(last) = page.last() else {
            break;
        };
        after = exports::Cursor::after(last);
        let full = page.len() as i64 == PAGE;
        let roles: Vec<(String, Value)> = page
            .into_iter()
            .filter_map(|r| Some((r.id, serde_json::from_str(&r.content).ok()?)))
            .collect();
        let ids_of = |field: &str, prefix: &str| -> Vec<String> {
            let mut v: Vec<String> = roles
                .iter()
                .filter_map(|(_, r)| r.at(&format!("/{field}/reference"))?.as_str())
                .filter_map(|r| r.strip_prefix(prefix).map(str::to_owned))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let people: HashMap<String, Value> = ers_schema::store::get_many(
            c,
            "Practitioner",
            &ids_of("practitioner", "Practitioner/"),
        )?
        .into_iter()
        .filter_map(|r| Some((r.id, serde_json::from_str(&r.content).ok()?)))
        .collect();
        let orgs: HashMap<String, String> = ers_schema::store::get_many(
            c,
            "Organization",
            &ids_of("organization", "Organization/"),
        )?
        .into_iter()
        .filter_map(|r| {
            let v: Value = serde_json::from_str(&r.content).ok()?;
            Some((
                r.id,
                crate::fhir::resources::identifier(&v, OdsCode::ORGANIZATION_SYSTEM)?.to_owned(),
            ))
        })
        .collect();
        for (id, role) in roles {
            let person = role
                .at("/practitioner/reference")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("Practitioner/"))
                .and_then(|p| people.get(p));
            let ods = role
                .at("/organization/reference")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("Organization/"))
                .and_then(|o| orgs.get(o))
                .cloned();
            if f.org.is_some() && f.org != ods {
                continue;
            }
            let active = role.get("active").and_then(Value::as_bool).unwrap_or(true);
            let functions = crate::fhir::resources::codes(&role, "code", BUSINESS_FUNCTION_SYSTEM);
            for bf in functions {
                let row = vec![
                    Cell::opt(
                        person
                            .and_then(|p| crate::fhir::resources::identifier(p, SdsUserId::SYSTEM))
                            .map(str::to_owned),
                    ),
                    Cell::opt(person.and_then(human_name)),
                    Cell::text(bf),
                    Cell::opt(ods.clone()),
                    Cell::text(if active { "true" } else { "false" }),
                    Cell::text(format!("PractitionerRole/{id}")),
                ];
                if !sink(row) {
                    return Ok(n);
                }
                n += 1;
            }
        }
        if !full {
            break;
        }
    }
    Ok(n)
}

//! `Patient/{id}/$everything` (FHIR R4's Patient-everything): the patient and what this server
//! holds about them that the caller may see — the Patient compartment's types
//! (`exports::PATIENT_COMPARTMENT`: referrals and A&G requests, appointments, documents, advice
//! messages) with what they refer to — as one searchset Bundle. Each type's part is a search of
//! it by `patient` with `_include=*`, through the same `handlers::Search` as `GET Type?…`
//! (permissions, organisation scope, visibility of what is included), all in one read
//! transaction.
//!
//! The answer is paged: `_count` matches a page (the patient, then each type in turn), and a
//! page that is not the last has a `next` link whose `_cursor` says where the next one starts
//! (a type and how many of its matches came before). `total` counts every page's matches.

use std::collections::HashSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::handlers::{
    authorise, base_url, check_id, draft, ok_outcome, on_read, operation_inputs, Found, Search,
};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::bundle::{self, Entry, EntryResource, Links};
use crate::fhir::datetime;
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::registry::{self, ResourceDef};
use crate::security::permissions::{self, Action};
use crate::service::audit;
use crate::service::exports::{
    EVERYTHING as OPERATION, EVERYTHING_INPUTS as INPUTS, PATIENT_COMPARTMENT, PATIENT_LINKS,
};
use crate::service::{resource as svc, scope};
use crate::startup::AppState;

/// What the request asks, read and checked.
struct Asked {
    since: Option<String>,
    /// The care dates' bounds, `start` and `end` (dates).
    start: Option<String>,
    end: Option<String>,
    types: Vec<&'static str>,
    count: i64,
    cursor: Option<Cursor>,
}

/// Where a page after the first starts: a type of the compartment, and how many of its matches
/// the pages before held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    type_name: &'static str,
    offset: i64,
}

impl Cursor {
    const INPUT: &'static str = "_cursor";

    fn parse(value: &str) -> Option<(&str, i64)> {
        let (t, n) = value.split_once(':')?;
        let n: i64 = n.parse().ok().filter(|n| *n >= 0)?;
        Some((t, n))
    }

    fn format(&self) -> String {
        format!("{}:{}", self.type_name, self.offset)
    }
}

fn asked(inputs: Vec<(String, String)>) -> Result<Asked, ApiError> {
    let bad = |name: &str, message: String| {
        ApiError::Search(vec![
            Issue::error("invalid", "INVALID_VALUE", message).with_expression(name.to_owned())
        ])
    };
    let mut since = None;
    let (mut start, mut end) = (None, None);
    let mut types: Vec<&'static str> = Vec::new();
    let mut count = svc::MAX_INCLUDED as i64;
    let mut cursor = None;
    for (name, value) in inputs {
        match name.as_str() {
            Cursor::INPUT => {
                cursor = Some(
                    Cursor::parse(&value)
                        .map(|(t, n)| (t.to_owned(), n))
                        .ok_or_else(|| {
                            bad(
                                Cursor::INPUT,
                                format!(
                                    "'{}' ({value}) is not Type:offset, as a next link gives it",
                                    Cursor::INPUT
                                ),
                            )
                        })?,
                );
            }
            "start" | "end" => {
                if !datetime::is_date(&value) {
                    return Err(bad(
                        &name,
                        format!("'{name}' ({value}) is not a date (2026, 2026-11 or 2026-11-23)"),
                    ));
                }
                if name == "start" {
                    start = Some(value);
                } else {
                    end = Some(value);
                }
            }
            "_since" => {
                if !datetime::is_datetime(&value) || datetime::range(&value).is_none() {
                    return Err(bad(
                        "_since",
                        format!("'_since' ({value}) is not an instant (e.g. 2026-11-23T10:00:00Z)"),
                    ));
                }
                since = Some(value);
            }
            "_type" => {
                for t in value.split(',').map(str::trim) {
                    let Some(known) = PATIENT_COMPARTMENT.iter().find(|c| **c == t) else {
                        return Err(bad(
                            "_type",
                            format!(
                                "'_type' ({t}) is not in the Patient compartment: it takes {}",
                                PATIENT_COMPARTMENT.join(", ")
                            ),
                        ));
                    };
                    if !types.contains(known) {
                        types.push(known);
                    }
                }
            }
            "_count" => {
                count = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=svc::MAX_INCLUDED as i64).contains(n))
                    .ok_or_else(|| {
                        bad(
                            "_count",
                            format!(
                                "'_count' ({value}) is not a whole number from 1 to {}",
                                svc::MAX_INCLUDED
                            ),
                        )
                    })?;
            }
            _ => {}
        }
    }
    if types.is_empty() {
        types = PATIENT_COMPARTMENT.to_vec();
    }
    if let (Some(start), Some(end)) = (&start, &end) {
        let first = |v: &str| datetime::range(v).map(|(lo, _)| lo);
        let last = |v: &str| datetime::range(v).map(|(_, hi)| hi);
        if first(start) > last(end) {
            return Err(bad(
                "start",
                format!("'start' ({start}) is after 'end' ({end})"),
            ));
        }
    }
    let cursor = match cursor {
        None => None,
        Some((t, offset)) => {
            let Some(type_name) = types.iter().find(|k| **k == t && **k != "Patient") else {
                return Err(bad(
                    Cursor::INPUT,
                    format!(
                        "'{}' ({t}:{offset}) names no type this request searches",
                        Cursor::INPUT
                    ),
                ));
            };
            Some(Cursor { type_name, offset })
        }
    };
    Ok(Asked {
        since,
        start,
        end,
        types,
        count,
        cursor,
    })
}

/// One type of the compartment as this request searches it: by the parameter naming the
/// patient, its care date within `start` and `end`, changed since `_since`.
fn criteria(part: &Part, id: &str, asked: &Asked) -> Vec<(String, String)> {
    let mut params = vec![
        (part.link.to_owned(), format!("Patient/{id}")),
        ("_total".to_owned(), "accurate".to_owned()),
    ];
    if let Some(s) = &asked.start {
        params.push((part.care.to_owned(), format!("ge{s}")));
    }
    if let Some(e) = &asked.end {
        params.push((part.care.to_owned(), format!("le{e}")));
    }
    if let Some(s) = &asked.since {
        params.push(("_lastUpdated".to_owned(), format!("ge{s}")));
    }
    params
}

/// A type of the compartment the caller may search: its definition, the parameter naming the
/// patient and the date parameter of the care it records (`exports::PATIENT_LINKS`).
struct Part {
    def: &'static ResourceDef,
    link: &'static str,
    care: &'static str,
}

/// One page: each type's search that fetched matches for it, every page's matches counted,
/// and where the next page starts.
struct Paged {
    found: Vec<Found>,
    total: i64,
    next: Option<Cursor>,
    /// Whether the patient is on this page (the first, when it matches `_since`).
    patient_shown: bool,
}

pub async fn run(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    authorise("Patient", Action::Read, &caller)?;
    check_id(&id)?;
    negotiate::response_format(&req)?;
    let inputs = operation_inputs(&req, &body, OPERATION, INPUTS)?;
    let accepted = inputs.clone();
    let asked = asked(inputs)?;
    let mut notes = Vec::new();
    // The types the caller may search, in order; those it may not are said, not searched.
    let mut parts: Vec<Part> = Vec::new();
    for t in asked.types.iter().filter(|t| **t != "Patient") {
        if !permissions::permits(t, Action::Search, caller.business_function) {
            notes.push(Issue::information(format!(
                "{t} is left out: your role ({}) may not search it",
                caller.business_function.code()
            )));
            continue;
        }
        let def = registry::find(t)
            .ok_or_else(|| ApiError::Internal(format!("{t} is not registered")))?;
        let (_, link, care) = PATIENT_LINKS
            .iter()
            .find(|(lt, _, _)| lt == t)
            .ok_or_else(|| ApiError::Internal(format!("{t} names no patient")))?;
        parts.push(Part { def, link, care });
    }
    // Where this page starts: the patient (on the first page), then the cursor's type.
    let start = match asked.cursor {
        None => (0, 0),
        Some(c) => (
            parts
                .iter()
                .position(|part| part.def.name == c.type_name)
                .ok_or_else(|| {
                    ApiError::Search(vec![Issue::error(
                        "invalid",
                        "INVALID_VALUE",
                        format!(
                            "'{}' ({}) names a type your role may not search",
                            Cursor::INPUT,
                            c.format()
                        ),
                    )
                    .with_expression(Cursor::INPUT.to_owned())])
                })?,
            c.offset,
        ),
    };
    let with_patient = asked.types.contains(&"Patient");
    let since = asked
        .since
        .as_deref()
        .and_then(datetime::range)
        .map(|(lo, _)| lo);
    let d = draft(&req, Some(&caller));
    let who = caller.clone();
    let searching = state.clone();
    let first_page = asked.cursor.is_none();
    let (patient, paged) = on_read(&state, move |c| -> Result<_, ApiError> {
        let def = registry::find("Patient")
            .ok_or_else(|| ApiError::Internal("Patient is not registered".into()))?;
        let patient = svc::read(c, def, &id)?;
        scope::check(c, def, &id, &who)?;
        let patient_shown = with_patient && since.is_none_or(|s| patient.last_updated >= s);
        let mut paged = Paged {
            found: Vec::new(),
            total: i64::from(patient_shown),
            next: None,
            patient_shown: patient_shown && first_page,
        };
        let mut room = asked.count - i64::from(paged.patient_shown);
        for (i, part) in parts.iter().enumerate() {
            let def = part.def;
            let mut params = criteria(part, &id, &asked);
            let offset = if i == start.0 { start.1 } else { 0 };
            // A type before the page, or after it once it is full, is only counted.
            let fetch = i >= start.0 && room > 0;
            if fetch {
                params.extend([
                    ("_include".to_owned(), "*".to_owned()),
                    ("_count".to_owned(), room.to_string()),
                    ("_offset".to_owned(), offset.to_string()),
                ]);
            } else {
                params.push(("_summary".to_owned(), "count".to_owned()));
            }
            let search = Search::prepare(def, params, None, true, &who, &searching)?;
            let found = search.execute(c, None, &who)?;
            let got = found.result().matches.len() as i64;
            let of_type = found.result().total.unwrap_or(offset + got);
            paged.total += of_type;
            if fetch {
                room -= got;
                if offset + got < of_type {
                    paged.next = Some(Cursor {
                        type_name: def.name,
                        offset: offset + got,
                    });
                    room = 0;
                }
                paged.found.push(found);
            } else if i >= start.0 && paged.next.is_none() && of_type > 0 {
                paged.next = Some(Cursor {
                    type_name: def.name,
                    offset: 0,
                });
            }
        }
        Ok((patient, paged))
    })
    .await?;
    let base = base_url(&req, &state);
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut entries = Vec::new();
    let mut touched = vec![audit::touched(&patient)];
    if paged.patient_shown {
        seen.insert((patient.res_type.clone(), patient.id.clone()));
        entries.push(Entry {
            full_url: format!("{base}/Patient/{}", patient.id),
            resource: EntryResource::Stored(&patient.content),
            include: false,
            distance_km: None,
            wait: None,
        });
    }
    for f in &paged.found {
        let result = f.result();
        for (row, include) in result
            .matches
            .iter()
            .map(|r| (r, false))
            .chain(result.included.iter().map(|r| (r, true)))
        {
            if !seen.insert((row.res_type.clone(), row.id.clone())) {
                continue;
            }
            touched.push(audit::touched(row));
            entries.push(Entry {
                full_url: format!("{base}/{}/{}", row.res_type, row.id),
                resource: EntryResource::Stored(&row.content),
                include,
                distance_km: None,
                wait: None,
            });
        }
        notes.extend(result.notes.iter().cloned());
    }
    state
        .audit
        .record(&d, &ok_outcome("E", "search-type"), &touched)
        .await?;
    let url = |pairs: &[(String, String)]| {
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        format!(
            "{base}/Patient/{}/{OPERATION}{}{query}",
            patient.id,
            if query.is_empty() { "" } else { "?" }
        )
    };
    let next = paged.next.map(|c| {
        let mut pairs: Vec<(String, String)> = accepted
            .iter()
            .filter(|(k, _)| k != Cursor::INPUT)
            .cloned()
            .collect();
        pairs.push((Cursor::INPUT.to_owned(), c.format()));
        url(&pairs)
    });
    let links = Links {
        self_url: url(&accepted),
        next,
        previous: None,
    };
    let outcome = (!notes.is_empty()).then(|| operation_outcome(&notes));
    let bundle = bundle::searchset(Some(paged.total), &links, entries, outcome)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    negotiate::respond(&req, StatusCode::OK, Body::Text(bundle))
}

//! `Patient/{id}/$everything` (FHIR R4's Patient-everything): the patient and what this server
//! holds about them that the caller may see — the Patient compartment's types
//! (`exports::PATIENT_COMPARTMENT`: referrals and A&G requests, appointments, documents, advice
//! messages) with what they refer to — as one searchset Bundle. Each type's part is a search of
//! it by `patient` with `_include=*`, through the same `handlers::Search` as `GET Type?…`
//! (permissions, organisation scope, visibility of what is included), all in one read
//! transaction.

use std::collections::HashSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::handlers::{
    authorise, base_url, check_id, draft, ok_outcome, on_read, operation_inputs, Search,
};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::bundle::{self, Entry, EntryResource, Links};
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::{datetime, registry};
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
    types: Vec<&'static str>,
    count: i64,
}

fn asked(inputs: Vec<(String, String)>) -> Result<Asked, ApiError> {
    let bad = |name: &str, message: String| {
        ApiError::Search(vec![
            Issue::error("invalid", "INVALID_VALUE", message).with_expression(name.to_owned())
        ])
    };
    let mut since = None;
    let mut types: Vec<&'static str> = Vec::new();
    let mut count = svc::MAX_INCLUDED as i64;
    for (name, value) in inputs {
        match name.as_str() {
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
    Ok(Asked {
        since,
        types,
        count,
    })
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
    // One search a type the caller may search; the types it may not are said, not searched.
    let mut searches: Vec<Search> = Vec::new();
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
        let link = PATIENT_LINKS
            .iter()
            .find(|(lt, _)| lt == t)
            .map(|(_, p)| *p)
            .ok_or_else(|| ApiError::Internal(format!("{t} names no patient")))?;
        let mut params = vec![
            (link.to_owned(), format!("Patient/{id}")),
            ("_include".to_owned(), "*".to_owned()),
            ("_count".to_owned(), asked.count.to_string()),
            ("_total".to_owned(), "accurate".to_owned()),
        ];
        if let Some(s) = &asked.since {
            params.push(("_lastUpdated".to_owned(), format!("ge{s}")));
        }
        searches.push(Search::prepare(def, params, None, true, &caller, &state)?);
    }
    let with_patient = asked.types.contains(&"Patient");
    let since = asked
        .since
        .as_deref()
        .and_then(datetime::range)
        .map(|(lo, _)| lo);
    let d = draft(&req, Some(&caller));
    let who = caller.clone();
    let (patient, found) = on_read(&state, move |c| -> Result<_, ApiError> {
        let def = registry::find("Patient")
            .ok_or_else(|| ApiError::Internal("Patient is not registered".into()))?;
        let patient = svc::read(c, def, &id)?;
        scope::check(c, def, &id, &who)?;
        let found = searches
            .iter()
            .map(|s| s.execute(c, None, &who).map(|f| (s.type_name(), f)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((patient, found))
    })
    .await?;
    let base = base_url(&req, &state);
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut entries = Vec::new();
    let mut touched = vec![audit::touched(&patient)];
    let mut matches = 0i64;
    if with_patient && since.is_none_or(|s| patient.last_updated >= s) {
        seen.insert((patient.res_type.clone(), patient.id.clone()));
        entries.push(Entry {
            full_url: format!("{base}/Patient/{}", patient.id),
            resource: EntryResource::Stored(&patient.content),
            include: false,
            distance_km: None,
        });
        matches += 1;
    }
    for (t, f) in &found {
        let result = f.result();
        if let Some(total) = result.total {
            if total > result.matches.len() as i64 {
                notes.push(Issue::warning(format!(
                    "{t}: {} of {total} are included (_count); Patient/$export gives all",
                    result.matches.len()
                )));
            }
        }
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
            if !include {
                matches += 1;
            }
            entries.push(Entry {
                full_url: format!("{base}/{}/{}", row.res_type, row.id),
                resource: EntryResource::Stored(&row.content),
                include,
                distance_km: None,
            });
        }
        notes.extend(result.notes.iter().cloned());
    }
    state
        .audit
        .record(&d, &ok_outcome("E", "search-type"), &touched)
        .await?;
    let query = serde_urlencoded::to_string(&accepted).unwrap_or_default();
    let self_url = format!(
        "{base}/Patient/{}/{OPERATION}{}{query}",
        patient.id,
        if query.is_empty() { "" } else { "?" }
    );
    let links = Links {
        self_url,
        next: None,
        previous: None,
    };
    let outcome = (!notes.is_empty()).then(|| operation_outcome(&notes));
    let bundle = bundle::searchset(Some(matches), &links, entries, outcome)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    negotiate::respond(&req, StatusCode::OK, Body::Text(bundle))
}

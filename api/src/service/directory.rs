//! Directory of Services use cases beyond the generic resource interactions.

use ers_schema::{read_tx, store, DbConnection, ResourceRow, UniqueKey};
use serde_json::Value;

use super::ServiceError;
use crate::domain::directory::Wait;
use crate::domain::referral::Commissioning;
use crate::domain::NhsNumber;
use crate::fhir::outcome::Issue;
use crate::fhir::resources::healthcare_service;
use crate::fhir::service_search::{self, PatientFacts, PatientRef};
use crate::fhir::At;

use super::Result;

/// A patient a patient-centred service search is for: the stored row, its content, and what
/// the search uses of them.
pub type SearchedPatient = (ResourceRow, Value, PatientFacts);

/// The patient a patient-centred service search is for, and what the search uses of them.
pub fn patient_for_search(conn: &mut DbConnection, who: &PatientRef) -> Result<SearchedPatient> {
    // One read transaction for the patient and where they live.
    let found = read_tx(conn, |c| -> Result<Option<SearchedPatient>> {
        let id = match who {
            PatientRef::Id(id) => Some(id.clone()),
            PatientRef::NhsNumber(n) => store::unique_owner(
                c,
                "Patient",
                &UniqueKey {
                    system: NhsNumber::SYSTEM.to_owned(),
                    value: n.as_str().to_owned(),
                },
                None,
            )?,
        };
        let row = match id {
            Some(id) => store::get_current(c, "Patient", &id)?.filter(|r| !r.is_deleted()),
            None => None,
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let content: Value = super::parse_stored(&row)?;
        let mut facts = service_search::patient_facts(&content, chrono::Utc::now().date_naive());
        // A home postcode the server cannot place (ZZ99 3VZ, no fixed abode, or one not in its
        // table) measures nothing: the search goes on without it and says so.
        if let Some(pc) = &facts.postcode {
            if !matches!(
                super::postcodes::place(c, pc)?,
                super::postcodes::Placed::At(..)
            ) {
                facts.unplaced_postcode = facts.postcode.take();
            }
        }
        Ok(Some((row, content, facts)))
    })?;
    found.ok_or_else(|| {
        let what = match who {
            PatientRef::Id(id) => format!("(Patient/{id}) is not a patient on this server"),
            PatientRef::NhsNumber(n) => {
                format!(
                    "({}) is not the NHS number of a patient on this server",
                    n.as_str()
                )
            }
        };
        ServiceError::Invalid(vec![Issue::invalid_at(
            "Parameters.parameter[patient]",
            what,
        )])
    })
}

/// The commissioner of an organisation (`Organization/{id}`): its `partOf`, by ODS code.
fn commissioner_of(c: &mut DbConnection, organisation: &str) -> Result<Option<String>> {
    let Some(org) = super::referral::load_json(c, organisation)? else {
        return Ok(None);
    };
    let Some(part_of) = org.get("partOf") else {
        return Ok(None);
    };
    if let Some(ods) = part_of
        .at("/identifier/value")
        .and_then(Value::as_str)
        .filter(|_| {
            part_of.at("/identifier/system").and_then(Value::as_str)
                == Some(crate::domain::OdsCode::ORGANIZATION_SYSTEM)
        })
    {
        return Ok(Some(ods.to_owned()));
    }
    match part_of.at("/reference").and_then(Value::as_str) {
        Some(r) if r.starts_with("Organization/") => super::referral::ods_behind(c, r),
        _ => Ok(None),
    }
}

/// The commissioning rule organisation a referral follows when its referrer names none: the
/// commissioner (`Organization.partOf`) of the patient's registered GP practice
/// (`Patient.generalPractitioner`), else of the referring organisation (ODS `referrer`); none
/// when neither has one (the referral may then use any service).
pub fn default_commissioning(
    c: &mut DbConnection,
    patient: Option<&Value>,
    referrer: &str,
) -> Result<Option<Commissioning>> {
    // Each organisation and its commissioner are read in one statement (`prefetch`, through
    // the `partof` reference index), and kept for the rest of the use case.
    let _memo = super::memo::scope();
    let ahead = |c: &mut DbConnection, orgs: Vec<String>| {
        super::memo::prefetch(
            c,
            store::Ahead {
                roots: orgs
                    .into_iter()
                    .filter_map(|r| {
                        r.split_once('/')
                            .map(|(t, id)| (t.to_owned(), id.to_owned()))
                    })
                    .collect(),
                depth: 1,
                ..Default::default()
            },
        )
    };
    let practices: Vec<String> = patient
        .and_then(|p| p.get("generalPractitioner"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("reference").and_then(Value::as_str))
        .filter(|r| r.starts_with("Organization/"))
        .map(str::to_owned)
        .collect();
    if !practices.is_empty() {
        ahead(c, practices.clone())?;
    }
    for practice in practices {
        if let Some(commissioner) = commissioner_of(c, &practice)? {
            let practice = super::referral::ods_behind(c, &practice)?.unwrap_or(practice);
            return Ok(Some(Commissioning::PatientsPractice {
                commissioner,
                practice,
            }));
        }
    }
    let Some(id) = super::referral::organisation_id(c, referrer)? else {
        return Ok(None);
    };
    let organisation = format!("Organization/{id}");
    ahead(c, vec![organisation.clone()])?;
    Ok(
        commissioner_of(c, &organisation)?.map(|commissioner| Commissioning::Referrer {
            commissioner,
            referrer: referrer.to_owned(),
        }),
    )
}

/// The commissioning rule organisation of a patient-centred service search: the one named, else
/// the default for the patient and the caller's organisation.
pub fn commissioning_for_search(
    conn: &mut DbConnection,
    named: Option<&crate::domain::OdsCode>,
    patient: Option<&Value>,
    referrer: &str,
) -> Result<Option<Commissioning>> {
    match named {
        Some(n) => Ok(Some(Commissioning::Named(n.as_str().to_owned()))),
        None => default_commissioning(conn, patient, referrer),
    }
}

/// The wait at `priority` (and the lower priorities its referrals may book) of each service on
/// a search page, by id, from `now`: one statement for the directly bookable ones' slots.
pub fn waits(
    conn: &mut DbConnection,
    services: &[ResourceRow],
    priority: &str,
    now: chrono::NaiveDateTime,
) -> Result<std::collections::HashMap<String, Wait>> {
    let mut bookable = Vec::new();
    for row in services {
        let direct =
            healthcare_service::is_directly_bookable_stored(&row.content).map_err(|e| {
                ServiceError::Internal(format!("HealthcareService/{} as stored: {e}", row.id))
            })?;
        if direct {
            bookable.push(row.id.as_str());
        }
    }
    let earliest: std::collections::HashMap<String, chrono::NaiveDateTime> =
        ers_schema::reports::earliest_free_slots(
            conn,
            &bookable,
            &crate::fhir::registry::priorities_at_or_below(priority),
            now,
        )?
        .into_iter()
        .collect();
    Ok(services
        .iter()
        .map(|row| {
            let wait = match earliest.get(&row.id) {
                Some(start) => Wait::Slot(*start),
                None if bookable.contains(&row.id.as_str()) => Wait::Limited,
                None => Wait::NotApplicable,
            };
            (row.id.clone(), wait)
        })
        .collect())
}

/// A free slot a service definer writes must start in the future: one that has begun could
/// never be booked (`booking` refuses it) and would only crowd the slot lists. A slot stored
/// free with the same start may still be edited as it is, and any slot may be made busy.
pub fn check_slot_ahead(slot: &Value, before: Option<&Value>) -> Result<()> {
    if slot.get("status").and_then(Value::as_str) != Some("free") {
        return Ok(());
    }
    let Some(start) = slot.get("start").and_then(Value::as_str) else {
        return Ok(());
    };
    let unchanged = before.is_some_and(|b| {
        b.get("status").and_then(Value::as_str) == Some("free")
            && b.get("start").and_then(Value::as_str) == Some(start)
    });
    let begun = crate::fhir::datetime::range(start)
        .is_some_and(|(low, _)| low <= chrono::Utc::now().naive_utc());
    if !begun || unchanged {
        return Ok(());
    }
    Err(ServiceError::Invalid(vec![Issue::error(
        "business-rule",
        "INAPPROPRIATE_VALUE",
        format!(
            "'Slot.start' ({start}) is in the past: a free slot must start in the future, where a referral could book it (give a later start, or a status other than free)"
        ),
    )
    .with_expression("Slot.start")]))
}

/// A slot a service definer writes must be bookable by a referral its service takes: its
/// priority at or below one the service takes (a two-week-wait referral may take an urgent
/// or routine slot, `registry::priorities_at_or_below`, the booking's own rule). Another
/// slot could never be booked (e-RS `UNSUPPORTED_PRIORITY`). The schedule and service are
/// the ones the owner check has just read.
pub fn check_slot_priority(c: &mut DbConnection, slot: &Value) -> Result<()> {
    let Some(priority) = crate::fhir::resources::slot::priority_code(slot) else {
        return Ok(());
    };
    let Some(schedule) = slot.at("/schedule/reference").and_then(Value::as_str) else {
        return Ok(());
    };
    let Some(schedule) = super::referral::load_json(c, schedule)? else {
        return Ok(());
    };
    let Some(service) = crate::fhir::resources::schedule::actor(&schedule, "HealthcareService")
    else {
        return Ok(());
    };
    let Some(facts) = super::referral::service_facts(c, service)? else {
        return Ok(());
    };
    if facts
        .priorities
        .iter()
        .any(|p| crate::fhir::registry::priorities_at_or_below(p).contains(&priority))
    {
        return Ok(());
    }
    Err(ServiceError::Invalid(vec![Issue::error(
        "business-rule",
        "UNSUPPORTED_PRIORITY",
        format!(
            "'Slot.appointmentType' ({priority}) is above every priority {service} takes (it takes {}): no referral it takes could book the slot",
            facts.priorities.join(", ")
        ),
    )
    .with_expression("Slot.appointmentType.coding[0].code")]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_free_slot_must_lie_ahead_unless_stored_so() {
        let slot = |status: &str, start: &str| json!({"status": status, "start": start});
        let past = "2020-03-02T10:00:00Z";
        assert!(check_slot_ahead(&slot("free", past), None).is_err());
        assert!(check_slot_ahead(&slot("free", "2999-01-01T10:00:00Z"), None).is_ok());
        assert!(check_slot_ahead(&slot("busy", past), None).is_ok());
        // A stored free slot whose start has passed may be edited as it is (its comment, say),
        // not moved to another past start, nor freed from busy.
        let stored = slot("free", past);
        assert!(check_slot_ahead(&slot("free", past), Some(&stored)).is_ok());
        assert!(check_slot_ahead(&slot("free", "2020-03-03T10:00:00Z"), Some(&stored)).is_err());
        assert!(check_slot_ahead(&slot("free", past), Some(&slot("busy", past))).is_err());
    }
}

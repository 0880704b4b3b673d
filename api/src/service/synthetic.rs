//! Synthetic national-scale data for benchmarks: a Directory of Services of any size (provider
//! organisations at real outward-code centroids, services across every specialty and request
//! flow, schedules, and free and booked slots over the coming weeks). Deterministic for a given
//! size; validated and indexed exactly as API writes are.

use chrono::{Datelike, Duration, NaiveTime, Utc, Weekday};
use ers_schema::{store, Author, DbConnection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::audit::AuditDraft;
use super::resource::load_generated;
use super::ServiceError;
use crate::domain::OdsCode;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::resources::healthcare_service::{
    APPOINTMENT_TYPE_SYSTEM, CLINIC_TYPE_SYSTEM, ELIGIBILITY_SYSTEM, PRIORITY_SYSTEM,
    SPECIALTY_SYSTEM,
};
use crate::fhir::terminology;

/// Identifier system and first value of generated services (sandbox ids have five digits).
const SERVICE_SYSTEM: &str = "https://fhir.nhs.uk/Id/ers-service";
const FIRST_SERVICE: usize = 8_000_000;
/// Resources per transaction.
const BATCH: usize = 5_000;
/// Services per provider organisation.
const SERVICES_PER_PROVIDER: usize = 25;

#[derive(Debug, Default, Clone, Copy)]
pub struct DirectoryReport {
    pub organizations: usize,
    pub locations: usize,
    pub services: usize,
    pub schedules: usize,
    pub slots: usize,
}

struct Loader<'a> {
    conn: &'a mut DbConnection,
    pending: Vec<(&'static ResourceDef, String, Value)>,
    author: Author,
    audit: AuditDraft,
    written: usize,
    progress: &'a mut dyn FnMut(usize),
}

impl Loader<'_> {
    fn add(&mut self, res_type: &str, body: Value) -> Result<String, ServiceError> {
        let def = registry::find(res_type)
            .ok_or_else(|| ServiceError::BadRequest(format!("{res_type} is not hosted")))?;
        let id = uuid::Uuid::new_v4().to_string();
        self.pending.push((def, id.clone(), body));
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(id)
    }

    fn flush(&mut self) -> Result<(), ServiceError> {
        let batch = std::mem::take(&mut self.pending);
        self.written += load_generated(self.conn, batch, &self.author, &self.audit)?;
        (self.progress)(self.written);
        Ok(())
    }
}

/// Generates `services` services and `slots` slots (spread over the bookable services).
/// Needs outward-code coordinates in the postcode table (`ers-server import-postcodes`).
pub fn directory(
    conn: &mut DbConnection,
    services: usize,
    slots: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<DirectoryReport, ServiceError> {
    let places = store::outward_codes(conn, 10_000)?;
    if places.len() < 10 {
        return Err(ServiceError::BadRequest(
            "the postcode table has fewer than 10 outward codes: load some first, e.g. ers-server import-postcodes ../shared/geo/uk-outcodes.csv".into(),
        ));
    }
    let first = format!("{FIRST_SERVICE}");
    if store::unique_owner(
        conn,
        "HealthcareService",
        &ers_schema::UniqueKey {
            system: SERVICE_SYSTEM.into(),
            value: first.clone(),
        },
        None,
    )?
    .is_some()
    {
        return Err(ServiceError::BadRequest(format!(
            "this database already holds a generated directory (service {first}); use a fresh database"
        )));
    }
    let request_id = format!("generate-{}", uuid::Uuid::new_v4());
    let mut loader = Loader {
        conn,
        pending: Vec::new(),
        author: Author {
            user: None,
            role: "SYSTEM".into(),
            org: "ERS".into(),
            request_id: request_id.clone(),
        },
        audit: AuditDraft {
            user_id: Some("ers-generate".into()),
            role: Some("SYSTEM".into()),
            method: "GENERATE".into(),
            path: "directory".into(),
            request_id,
            ..Default::default()
        },
        written: 0,
        progress,
    };
    let mut rng = StdRng::seed_from_u64(services as u64 * 1_000_003 + slots as u64);
    let mut report = DirectoryReport::default();
    let specialties = terminology::codes(SPECIALTY_SYSTEM);

    // Providers: an organisation and a main site each, at an outward-code centroid.
    let providers = services.div_ceil(SERVICES_PER_PROVIDER).max(1);
    let mut sites = Vec::with_capacity(providers);
    for p in 0..providers {
        let (outward, lat, long) = &places[(p * 7919) % places.len()];
        // A well-formed postcode in that outward code (searches fall back to the outward code).
        let outcode = format!("{outward} {}AB", p % 10);
        let ods = OdsCode::parse(&format!("Y{p:05}")).map_err(|e| ServiceError::BadRequest(e.0))?;
        let org = loader.add(
            "Organization",
            json!({
                "resourceType": "Organization",
                "identifier": [{"system": OdsCode::ORGANIZATION_SYSTEM, "value": ods.as_str()}],
                "active": true,
                "name": format!("Synthetic NHS Trust {p}"),
                "address": [{"line": ["1 Hospital Road"], "postalCode": outcode, "country": "GB"}],
            }),
        )?;
        let site = loader.add(
            "Location",
            json!({
                "resourceType": "Location",
                "identifier": [{"system": OdsCode::SITE_SYSTEM, "value": format!("{}01", ods.as_str())}],
                "status": "active",
                "name": format!("Synthetic NHS Trust {p}, main site"),
                "mode": "instance",
                "address": {"line": ["1 Hospital Road"], "postalCode": outcode, "country": "GB"},
                "position": {
                    "latitude": lat + rng.gen_range(-0.02..0.02),
                    "longitude": long + rng.gen_range(-0.02..0.02),
                },
                "managingOrganization": {"reference": format!("Organization/{org}")},
            }),
        )?;
        sites.push((org, site));
        report.organizations += 1;
        report.locations += 1;
    }

    // Services: 60% bookable, 25% triage, 15% A&G.
    let bookable_count = (0..services).filter(|i| i % 20 < 12).count().max(1);
    let per_service = slots / bookable_count;
    let mut extra = slots % bookable_count;
    let today = Utc::now().date_naive();
    for i in 0..services {
        let (org, site) = &sites[i / SERVICES_PER_PROVIDER % providers];
        let specialty = specialties[i % specialties.len()];
        let flow = match i % 20 {
            0..=11 => "BOOKABLE",
            12..=16 => "REVIEW",
            _ => "ADVICE_AND_GUIDANCE",
        };
        let priorities: &[&str] = match i % 3 {
            0 => &["ROUTINE", "URGENT", "TWO_WEEK_WAIT"],
            1 => &["ROUTINE", "URGENT"],
            _ => &["ROUTINE"],
        };
        let characteristic =
            crate::fhir::resources::healthcare_service::characteristics(&[flow], priorities);
        let mut types = vec![
            json!({"coding": [{"system": APPOINTMENT_TYPE_SYSTEM, "code": if flow == "REVIEW" { "ASSESSMENT_SERVICE" } else { "FIRST_OUTPATIENT" }}]}),
        ];
        let clinic_types = terminology::clinic_types_of(specialty);
        if !clinic_types.is_empty() {
            types.push(json!({"coding": [{"system": CLINIC_TYPE_SYSTEM, "code": clinic_types[i % clinic_types.len()]}]}));
        }
        let mut body = json!({
            "resourceType": "HealthcareService",
            "identifier": [{"system": SERVICE_SYSTEM, "value": format!("{}", FIRST_SERVICE + i)}],
            "active": true,
            "providedBy": {"reference": format!("Organization/{org}")},
            "location": [{"reference": format!("Location/{site}")}],
            "type": types,
            "specialty": [{"coding": [{"system": SPECIALTY_SYSTEM, "code": specialty}]}],
            "name": format!("Synthetic {specialty} service {}", FIRST_SERVICE + i),
            "characteristic": characteristic,
        });
        let eligibility = match (specialty, i % 11) {
            ("GYNAECOLOGY", _) => Some("FEMALE_ONLY"),
            ("UROLOGY", _) => Some("MALE_ONLY"),
            (_, 3) => Some("ADULTS_ONLY"),
            (_, 7) => Some("CHILDREN_ONLY"),
            _ => None,
        };
        if let Some(e) = eligibility {
            body["eligibility"] =
                json!([{"code": {"coding": [{"system": ELIGIBILITY_SYSTEM, "code": e}]}}]);
        }
        let service = loader.add("HealthcareService", body)?;
        report.services += 1;
        if flow != "BOOKABLE" {
            continue;
        }
        let schedule = loader.add(
            "Schedule",
            json!({
                "resourceType": "Schedule",
                "active": true,
                "actor": [{"reference": format!("HealthcareService/{service}")}],
            }),
        )?;
        report.schedules += 1;
        let mut n = per_service;
        if extra > 0 {
            n += 1;
            extra -= 1;
        }
        // Weekdays from tomorrow, 09:00 to 16:40 every 20 minutes; a random start day per
        // service so services differ in their earliest free slot.
        let mut day = today + Duration::days(rng.gen_range(1..30));
        let mut minute = 0;
        for _ in 0..n {
            while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
                day += Duration::days(1);
            }
            let start = day.and_time(NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default())
                + Duration::minutes(minute);
            minute += 20;
            if minute >= 8 * 60 {
                minute = 0;
                day += Duration::days(1);
            }
            let status = if rng.gen_bool(0.85) { "free" } else { "busy" };
            let priority = priorities[rng.gen_range(0..priorities.len())];
            loader.add(
                "Slot",
                json!({
                    "resourceType": "Slot",
                    "schedule": {"reference": format!("Schedule/{schedule}")},
                    "status": status,
                    "start": crate::fhir::datetime::instant(start),
                    "end": crate::fhir::datetime::instant(start + Duration::minutes(20)),
                    "appointmentType": {"coding": [{"system": PRIORITY_SYSTEM, "code": priority}]},
                }),
            )?;
            report.slots += 1;
        }
    }
    loader.flush()?;
    store::analyze(loader.conn)?;
    Ok(report)
}

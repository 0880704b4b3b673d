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
use crate::domain::advice::{GuidanceOutcome, SentBy};
use crate::domain::OdsCode;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::resources::advice as ag;
use crate::fhir::resources::codes;
use crate::fhir::resources::healthcare_service::{
    APPOINTMENT_TYPE_SYSTEM, CLINIC_TYPE_SYSTEM, ELIGIBILITY_SYSTEM, PRIORITY_SYSTEM,
    SERVICE_SYSTEM, SPECIALTY_SYSTEM,
};
use crate::fhir::terminology;

/// The first service id of generated services (sandbox ids have five digits).
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
    pending: Vec<(&'static ResourceDef, String, Value, Vec<String>)>,
    author: Author,
    audit: AuditDraft,
    written: usize,
    progress: &'a mut dyn FnMut(usize),
}

impl<'a> Loader<'a> {
    /// A loader writing as the generator (`path` names what it generates in the audit).
    fn new(conn: &'a mut DbConnection, path: &str, progress: &'a mut dyn FnMut(usize)) -> Self {
        let request_id = format!("generate-{}", uuid::Uuid::new_v4());
        Loader {
            conn,
            pending: Vec::new(),
            author: Author {
                user: None,
                role: "SYSTEM".into(),
                org: "ERS".into(),
                request_id: request_id.clone(),
                client_id: None,
                on_behalf_of: None,
            },
            audit: AuditDraft {
                user_id: Some("ers-generate".into()),
                role: Some("SYSTEM".into()),
                method: "GENERATE".into(),
                path: path.into(),
                request_id,
                ..Default::default()
            },
            written: 0,
            progress,
        }
    }

    fn add(&mut self, res_type: &str, body: Value) -> Result<String, ServiceError> {
        let id = crate::fhir::new_id();
        self.add_with_id(res_type, &id, body, Vec::new())?;
        Ok(id)
    }

    /// A resource with its id and the organisations that may see it (scoped types).
    fn add_with_id(
        &mut self,
        res_type: &str,
        id: &str,
        body: Value,
        access: Vec<String>,
    ) -> Result<(), ServiceError> {
        let def = registry::find(res_type)
            .ok_or_else(|| ServiceError::BadRequest(format!("{res_type} is not hosted")))?;
        self.pending.push((def, id.to_owned(), body, access));
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
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
    let mut loader = Loader::new(conn, "directory", progress);
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
    store::settle_after_load(loader.conn)?;
    Ok(report)
}

/// A generated A&G conversation: its status and its messages (who sent each, the text, a
/// provider reply's outcome), as the rules of `domain::advice` would have left them.
struct Conversation {
    status: crate::domain::advice::AdviceStatus,
    turns: Vec<(SentBy, &'static str, Option<GuidanceOutcome>)>,
}

fn advice_conversation(rng: &mut StdRng) -> Conversation {
    use crate::domain::advice::AdviceStatus as A;
    const ASK: &str = "Synthetic request for advice: is a referral needed?";
    const MORE: &str = "Please send the latest blood results.";
    const RESULTS: &str = "Results attached to the record; HbA1c 48 mmol/mol.";
    const ADVICE: &str = "Manage in primary care; refer if symptoms persist beyond 6 weeks.";
    let ask = (SentBy::Requester, ASK, None);
    let more = (
        SentBy::Responder,
        MORE,
        Some(GuidanceOutcome::RequireFurtherInformation),
    );
    let advise = (
        SentBy::Responder,
        ADVICE,
        Some(GuidanceOutcome::ReturnToReferrerWithAdvice),
    );
    let (status, turns) = match rng.gen_range(0..100) {
        0..=39 => (A::ProviderResponseRequired, vec![ask]),
        40..=49 => (A::ReferrerToSubmitFurtherInformation, vec![ask, more]),
        50..=54 => (
            A::ProviderResponseRequired,
            vec![ask, more, (SentBy::Requester, RESULTS, None)],
        ),
        55..=79 => (A::ReferrerToReviewResponse, vec![ask, advise]),
        80..=94 => (A::ConversationEndedClosed, vec![ask, advise]),
        _ => (A::ConversationEndedCancelled, vec![ask]),
    };
    Conversation { status, turns }
}

/// What `referrals` wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferralReport {
    pub patients: usize,
    pub referrals: usize,
    pub appointments: usize,
    /// A&G requests, and the messages of their conversations.
    pub advice: usize,
    pub messages: usize,
}

/// A service as the generator uses it.
struct Bookable {
    reference: String,
    ods: String,
    specialty: Option<String>,
    priorities: Vec<String>,
    /// The providing organisation (`HealthcareService.providedBy`), a provider's replies'
    /// sender.
    provider: Value,
}

/// How generated referrals are spread over the e-RS states (shares out of 100), following the
/// sandbox's hand-made examples (`seed`): the reason recorded with the state, whether the
/// referral went to a triage service, whether it is still with its service, and the status of
/// its appointment.
struct StatePlan {
    state: crate::domain::referral::ReferralState,
    share: u32,
    reason: Option<(&'static str, &'static str)>,
    comment: Option<&'static str>,
    triage: bool,
    with_service: bool,
    appointment: Option<&'static str>,
}

const REVIEW: &str = crate::fhir::resources::service_request::REVIEW_OUTCOME_SYSTEM;
const REFERRAL_CANCEL: &str = super::referral::REFERRAL_CANCELLATION_SYSTEM;
const APPT_CANCEL: &str = crate::fhir::resources::appointment::CANCELLATION_SYSTEM;

const STATE_PLAN: [StatePlan; 12] = {
    use crate::domain::referral::ReferralState as S;
    const fn plan(state: S, share: u32) -> StatePlan {
        StatePlan {
            state,
            share,
            reason: None,
            comment: None,
            triage: false,
            with_service: false,
            appointment: None,
        }
    }
    [
        plan(S::NotBooked, 20),
        StatePlan {
            with_service: true,
            appointment: Some("booked"),
            ..plan(S::Booked, 34)
        },
        StatePlan {
            with_service: true,
            appointment: Some("proposed"),
            ..plan(S::DeferredToProvider, 8)
        },
        StatePlan {
            triage: true,
            with_service: true,
            ..plan(S::AwaitingTriage, 6)
        },
        StatePlan {
            triage: true,
            reason: Some((REVIEW, "RETURN_TO_REFERRER_WITH_ADVICE")),
            comment: Some("Please arrange an echocardiogram first"),
            ..plan(S::TriageResponse, 3)
        },
        StatePlan {
            triage: true,
            with_service: true,
            reason: Some((REVIEW, "ACCEPT_REFER_BOOK_LATER")),
            comment: Some("Will book into next clinic"),
            ..plan(S::TriagedProviderToAction, 3)
        },
        StatePlan {
            triage: true,
            comment: Some("Assessment submitted"),
            ..plan(S::AssessmentResult, 3)
        },
        StatePlan {
            reason: Some((APPT_CANCEL, "SERVICE_INAPPROPRIATE")),
            comment: Some("Not seen in this clinic"),
            appointment: Some("cancelled"),
            ..plan(S::Rejected, 4)
        },
        StatePlan {
            reason: Some((APPT_CANCEL, "PATIENT_ILL")),
            appointment: Some("cancelled"),
            ..plan(S::ApptCancelledByPatient, 5)
        },
        StatePlan {
            reason: Some((APPT_CANCEL, "CLINIC_CANCELLED")),
            appointment: Some("cancelled"),
            ..plan(S::ApptCancelledByProvider, 4)
        },
        StatePlan {
            appointment: Some("noshow"),
            ..plan(S::DidNotAttend, 4)
        },
        StatePlan {
            reason: Some((REFERRAL_CANCEL, "TREATMENT_NO_LONGER_REQUIRED")),
            ..plan(S::CancelledReferral, 6)
        },
    ]
};

/// One A&G request for every this many referrals (e-RS: 1.8 M A&G requests a year beside
/// 18.3 M referrals).
const REFERRALS_PER_ADVICE: usize = 10;

/// Every live resource of a type, page by page.
fn each_resource(
    conn: &mut DbConnection,
    res_type: &str,
    mut f: impl FnMut(&mut DbConnection, String, Value) -> Result<(), ServiceError>,
) -> Result<(), ServiceError> {
    let q = ers_schema::exports::PageQuery {
        res_type: res_type.to_owned(),
        ..Default::default()
    };
    let mut after = ers_schema::exports::Cursor::default();
    loop {
        let page = ers_schema::exports::page(conn, &q, &after, 2000)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = ers_schema::exports::Cursor::after(last);
        for row in page {
            if let Ok(v) = serde_json::from_str(&row.content) {
                f(conn, row.id, v)?;
            }
        }
    }
}

/// Generates `n` referrals in every e-RS state (`STATE_PLAN`: a patient for every four,
/// appointments for the booked, deferred, cancelled, rejected and unattended ones, triage states
/// at triage services) and an A&G request with its conversation for every tenth, from the
/// referring clinicians and the services already held (the sandbox or a generated directory),
/// authored over the last 26 weeks: for the reports, worklist and bulk export benchmarks.
/// Deterministic for a given `n` and directory.
pub fn referrals(
    conn: &mut DbConnection,
    n: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<ReferralReport, ServiceError> {
    use crate::domain::NhsNumber;
    use crate::fhir::resources::service_request::{self as sr, StateRecord};
    // Who refers: every PractitionerRole of a referring clinician.
    let mut requesters: Vec<(String, String)> = Vec::new();
    each_resource(conn, "PractitionerRole", |c, id, v| {
        let is_rc = codes(&v, "code", super::seed::BUSINESS_FUNCTION_SYSTEM)
            .contains(&"REFERRING_CLINICIAN");
        if is_rc {
            let r = format!("PractitionerRole/{id}");
            if let Some(ods) = super::referral::ods_behind(c, &r)? {
                requesters.push((r, ods));
            }
        }
        Ok(())
    })?;
    // Where to: every active directly bookable service; triage (Referral Assessment) and A&G
    // services for the referrals and requests that go to them.
    let (mut services, mut triage, mut advice) = (Vec::new(), Vec::new(), Vec::new());
    each_resource(conn, "HealthcareService", |c, id, v| {
        use crate::fhir::resources::healthcare_service as hs;
        if !hs::is_active(&v) {
            return Ok(());
        }
        let flows = hs::characteristic_codes(&v, hs::REQUEST_FLOW_SYSTEM);
        let has = |flow: &str| flows.iter().any(|x| x == flow);
        let list: &mut Vec<Bookable> = if has("BOOKABLE") {
            &mut services
        } else if has("REVIEW") {
            &mut triage
        } else if has("ADVICE_AND_GUIDANCE") {
            &mut advice
        } else {
            return Ok(());
        };
        let r = format!("HealthcareService/{id}");
        if let Some(ods) = super::referral::ods_behind(c, &r)? {
            let priorities = hs::characteristic_codes(&v, PRIORITY_SYSTEM);
            list.push(Bookable {
                reference: r,
                ods: ods.clone(),
                specialty: codes(&v, "specialty", SPECIALTY_SYSTEM)
                    .first()
                    .map(|c| (*c).to_owned()),
                priorities,
                provider: v
                    .get("providedBy")
                    .cloned()
                    .unwrap_or_else(|| json!({"display": ods})),
            });
        }
        Ok(())
    })?;
    if requesters.is_empty() || services.is_empty() {
        return Err(ServiceError::BadRequest(format!(
            "found {} referring clinicians and {} bookable services: seed the sandbox (and generate a directory) first",
            requesters.len(),
            services.len()
        )));
    }
    let mut loader = Loader::new(conn, "referrals", progress);
    let mut rng = StdRng::seed_from_u64(n as u64 * 7_919 + 17);
    let mut report = ReferralReport::default();
    // Patients: test NHS numbers after the first 100,000 (the sandbox uses the first few).
    let patients = n.div_ceil(4).max(1);
    let mut numbers = NhsNumber::test_numbers().skip(100_000);
    let first_number = NhsNumber::test_numbers().nth(100_000);
    if let Some(first) = first_number {
        if !store::holders_of(loader.conn, "Patient", "identifier", first.as_str())?.is_empty() {
            return Err(ServiceError::BadRequest(format!(
                "this database already holds generated referrals (patient {first}); use a fresh database"
            )));
        }
    }
    let places = store::outward_codes(loader.conn, 10_000)?;
    let mut patient_ids = Vec::with_capacity(patients);
    for i in 0..patients {
        let nhs = numbers
            .next()
            .ok_or_else(|| ServiceError::BadRequest("out of test NHS numbers".into()))?;
        let outward = places
            .get(i % places.len().max(1))
            .map_or("LS1", |p| p.0.as_str())
            .to_owned();
        let female = i % 2 == 0;
        let born = format!(
            "{}-{:02}-{:02}",
            1935 + (i * 7) % 85,
            1 + (i % 12),
            1 + (i % 28)
        );
        let id = loader.add(
            "Patient",
            json!({
                "resourceType": "Patient",
                "identifier": [{"system": NhsNumber::SYSTEM, "value": nhs.as_str()}],
                "name": [{"use": "official", "family": format!("Synthetic{}", i % 5000), "given": [if female { "Alex" } else { "Sam" }]}],
                "gender": if female { "female" } else { "male" },
                "birthDate": born,
                "address": [{"postalCode": format!("{outward} {}AB", i % 10)}],
            }),
        )?;
        patient_ids.push(id);
    }
    report.patients = patients;
    let advice_requests = if advice.is_empty() {
        0
    } else {
        n / REFERRALS_PER_ADVICE
    };
    let ubrns = store::take_ubrns(loader.conn, (n + advice_requests) as i64)?;
    let now = Utc::now().naive_utc();
    for i in 0..n {
        let (requester, referrer_ods) = &requesters[i % requesters.len()];
        let mut roll = rng.gen_range(0..100);
        let plan = STATE_PLAN
            .iter()
            .find(|p| {
                let inside = roll < p.share;
                roll = roll.saturating_sub(p.share);
                inside
            })
            .unwrap_or(&STATE_PLAN[0]);
        // A referral for triage goes to one triage service (when the directory has any).
        let triaged = plan.triage && !triage.is_empty();
        let pool = if triaged { &triage } else { &services };
        let first = &pool[rng.gen_range(0..pool.len())];
        let mut shortlist = vec![first];
        for _ in 0..if triaged { 0 } else { rng.gen_range(0..3) } {
            let s = &services[rng.gen_range(0..services.len())];
            if !shortlist.iter().any(|x| x.reference == s.reference) {
                shortlist.push(s);
            }
        }
        let priority = first
            .priorities
            .get(rng.gen_range(0..first.priorities.len().max(1)))
            .cloned()
            .unwrap_or_else(|| "ROUTINE".into());
        let authored = now - Duration::minutes(rng.gen_range(0..26 * 7 * 24 * 60));
        let (state, appointment) = (plan.state, plan.appointment);
        let ubrn = format!("{:012}", ubrns[i]);
        let mut body = json!({
            "resourceType": "ServiceRequest",
            "identifier": [{"system": sr::UBRN_SYSTEM, "value": ubrn}],
            "extension": [{"url": sr::PRIORITY_EXTENSION, "valueCoding": {"system": PRIORITY_SYSTEM, "code": priority}}],
            "status": "active",
            "intent": "order",
            "category": [{"coding": [{"system": sr::REFERRAL_CATEGORY.0, "code": sr::REFERRAL_CATEGORY.1, "display": sr::REFERRAL_CATEGORY.2}]}],
            "priority": sr::fhir_priority(&priority).unwrap_or("routine"),
            "subject": {"reference": format!("Patient/{}", patient_ids[i % patient_ids.len()])},
            "authoredOn": crate::fhir::datetime::instant(authored),
            "requester": {"reference": requester},
            "performer": shortlist.iter().map(|s| json!({"reference": s.reference})).collect::<Vec<_>>(),
            "reasonCode": [{"text": "Synthetic referral"}],
        });
        if let Some(sp) = &first.specialty {
            body["performerType"] = json!({"coding": [{"system": SPECIALTY_SYSTEM, "code": sp}]});
        }
        sr::set_state(
            &mut body,
            &StateRecord {
                state,
                reason: plan.reason.map(|(s, c)| (s.to_owned(), c.to_owned())),
                comment: plan.comment.map(str::to_owned),
                service: plan.with_service.then(|| first.reference.clone()),
            },
        );
        let mut access = vec![referrer_ods.clone()];
        for s in &shortlist {
            if !access.contains(&s.ods) {
                access.push(s.ods.clone());
            }
        }
        let id = format!("r.{}", crate::fhir::new_id());
        loader.add_with_id("ServiceRequest", &id, body, access.clone())?;
        report.referrals += 1;
        if let Some(status) = appointment {
            let start = if status == "noshow" {
                // Missed: a time between the referral and now.
                authored + (now - authored) / 2
            } else {
                authored + Duration::days(rng.gen_range(7..60))
            };
            let mut a = json!({
                "resourceType": "Appointment",
                "status": status,
                "description": "e-Referral Appointment",
                "basedOn": [{"reference": format!("ServiceRequest/{id}")}],
                "created": crate::fhir::datetime::instant(authored + Duration::hours(rng.gen_range(1..72))),
                "participant": [
                    {"actor": {"reference": format!("Patient/{}", patient_ids[i % patient_ids.len()])}, "required": "required", "status": "accepted"},
                    {"actor": {"reference": first.reference}, "required": "required", "status": "accepted"},
                ],
            });
            if status == "proposed" {
                a["reasonCode"] = json!([{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReviewReason", "code": "NO_SLOTS_AT_SERVICE"}]}]);
            } else {
                a["start"] = json!(crate::fhir::datetime::instant(start));
                a["end"] = json!(crate::fhir::datetime::instant(
                    start + Duration::minutes(20)
                ));
            }
            match (status, plan.reason) {
                ("cancelled", Some((system, code))) => {
                    a["cancelationReason"] = json!({"coding": [{"system": system, "code": code}]});
                }
                ("noshow", _) => {
                    let system = crate::fhir::resources::appointment::NON_ATTENDANCE_SYSTEM;
                    let code = terminology::codes(system)
                        .first()
                        .copied()
                        .unwrap_or_default();
                    a["cancelationReason"] = json!({"coding": [{"system": system, "code": code}]});
                }
                _ => {}
            }
            loader.add_with_id("Appointment", &crate::fhir::new_id(), a, access)?;
            report.appointments += 1;
        }
    }
    for k in 0..advice_requests {
        let (requester, referrer_ods) = &requesters[k % requesters.len()];
        let service = &advice[rng.gen_range(0..advice.len())];
        let patient = &patient_ids[rng.gen_range(0..patient_ids.len())];
        let authored = now - Duration::minutes(rng.gen_range(0..26 * 7 * 24 * 60));
        let messages = advice_conversation(&mut rng);
        let access = if referrer_ods == &service.ods {
            vec![referrer_ods.clone()]
        } else {
            vec![referrer_ods.clone(), service.ods.clone()]
        };
        let id = format!("a.{}", crate::fhir::new_id());
        let conversion = terminology::codes(ag::CONVERSION_SYSTEM);
        let mut body = json!({
            "resourceType": "ServiceRequest",
            "id": id,
            "identifier": [{"system": sr::UBRN_SYSTEM, "value": format!("{:012}", ubrns[n + k])}],
            "extension": [
                {"url": sr::PRIORITY_EXTENSION, "valueCoding": {"system": PRIORITY_SYSTEM, "code": "ROUTINE"}},
                {"url": ag::CONVERSION_EXTENSION, "valueCoding": {"system": ag::CONVERSION_SYSTEM, "code": conversion.get(k % conversion.len().max(1)).copied().unwrap_or_default()}},
            ],
            "intent": "order",
            "priority": "routine",
            "subject": {"reference": format!("Patient/{patient}")},
            "authoredOn": crate::fhir::datetime::instant(authored),
            "requester": {"reference": requester},
            "performer": [{"reference": service.reference}],
        });
        ag::mark(&mut body);
        ag::set_status(&mut body, messages.status, None);
        let mut sent = authored;
        let mut conversation = Vec::new();
        for (sent_by, text, outcome) in messages.turns {
            // Hours apart, never later than now.
            sent = (sent + Duration::hours(rng.gen_range(2..96))).min(now);
            let (sender, recipient) = match sent_by {
                SentBy::Requester => (
                    json!({"reference": requester}),
                    json!({"reference": service.reference}),
                ),
                SentBy::Responder => (service.provider.clone(), json!({"reference": requester})),
            };
            conversation.push(ag::communication(&ag::Message {
                request: &body,
                sent_by,
                sender,
                recipient,
                sent: crate::fhir::datetime::instant(sent),
                text,
                documents: &[],
                outcome: outcome.map(|o| ag::ReplyOutcome {
                    outcome: o.code(),
                    recommendation: None,
                }),
            }));
        }
        loader.add_with_id("ServiceRequest", &id, body, access.clone())?;
        report.advice += 1;
        for c in conversation {
            loader.add_with_id("Communication", &crate::fhir::new_id(), c, access.clone())?;
            report.messages += 1;
        }
    }
    loader.flush()?;
    store::settle_after_load(loader.conn)?;
    Ok(report)
}

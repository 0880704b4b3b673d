//! The national day: a day of England's e-RS traffic replayed as fast as the server takes it.
//!
//! Journeys, shuffled together and run by `--clients` concurrent clients until all are done:
//! - a referral that is booked (`bookings` of them): a patient-centred DoS search near a
//!   postcode, the referral with a shortlist (a bookable service with free slots, plus what the
//!   search found), a slot search of that service (its first ten free routine slots, without a
//!   total: `_total=none`), and the booking — a slot another client took first (409) is a
//!   conflict, and the next free slot is tried;
//! - a referral that is not booked today (`referrals - bookings`): the DoS search and the
//!   referral;
//! - an advice and guidance conversation (`advice`): the referrer's request, the provider
//!   clinician's advice (with `If-Match`), and the referrer reading the conversation.
//!
//! Every answer is checked (status and key fields). A slot booked twice is a double booking:
//! the client sees it when two bookings of one slot both succeed, and a sample of the booked
//! slots is asked afterwards for more than one booked appointment.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    call, call_if_match, matches, percentile, referral_body, search_ids, As, Fixtures, PRIORITIES,
    SPECIALTIES,
};

/// How many journeys of each kind (the national day: 70,000 referrals, 50,000 of them booked,
/// 5,000 A&G conversations), scaled by `--scale`.
#[derive(Debug, Clone, Copy)]
pub struct Day {
    pub referrals: usize,
    pub bookings: usize,
    pub advice: usize,
}

impl Day {
    pub fn scaled(scale: f64) -> Day {
        let n = |x: f64| ((x * scale).round() as usize).max(1);
        Day {
            referrals: n(70_000.0),
            bookings: n(50_000.0),
            advice: n(5_000.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Journey {
    Booked,
    Referred,
    Advice,
}

/// Free routine slots a bookable service needs to take part.
const MIN_FREE_SLOTS: u64 = 50;

/// Who acts, and what the journeys pick from (looked up before the clock starts).
pub struct Cast {
    pub referrer: As,
    pub provider: As,
    pub fx: Fixtures,
    /// Active bookable services taking routine referrals, with free routine slots.
    pub bookable: Vec<String>,
    /// The provider clinician's organisation's A&G services.
    pub advice_services: Vec<String>,
    pub postcodes: Vec<String>,
}

/// Looks up what the journeys need: the sandbox's patients and referring role (in `fx`),
/// up to 2,000 bookable services, and the A&G services of the provider's organisation.
pub async fn cast(
    http: &awc::Client,
    base: &str,
    referrer: As,
    provider: As,
    fx: Fixtures,
    postcodes: Vec<String>,
) -> Result<Cast, String> {
    let mut bookable = Vec::new();
    while bookable.len() < 2000 {
        let page = search_ids(
            http,
            base,
            &referrer,
            &format!(
                "HealthcareService?characteristic=BOOKABLE&priority=ROUTINE&active=true&_count=100&_offset={}",
                bookable.len()
            ),
        )
        .await?;
        if page.is_empty() {
            break;
        }
        bookable.extend(page);
    }
    // Only services with free routine slots to spare (a sandbox service may have a handful).
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let mut with_slots = Vec::new();
    for s in bookable {
        let (status, v) = call(
            http,
            &referrer,
            "GET",
            &format!("{base}/Slot?schedule.actor=HealthcareService/{s}&status=free&priority=ROUTINE&start=gt{now}&_summary=count"),
            None,
        )
        .await?;
        if status == 200 && v["total"].as_u64().unwrap_or(0) >= MIN_FREE_SLOTS {
            with_slots.push(s);
        }
    }
    let bookable = with_slots;
    let advice_services = search_ids(
        http,
        base,
        &referrer,
        &format!(
            "HealthcareService?characteristic=ADVICE_AND_GUIDANCE&priority=ROUTINE&active=true&organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|{}&_count=100",
            provider.ods
        ),
    )
    .await?;
    if bookable.is_empty() || advice_services.is_empty() || postcodes.is_empty() {
        return Err(format!(
            "the national day needs bookable services ({} found), A&G services at {} ({} found) and --postcodes ({} read)",
            bookable.len(),
            provider.ods,
            advice_services.len(),
            postcodes.len()
        ));
    }
    Ok(Cast {
        referrer,
        provider,
        fx,
        bookable,
        advice_services,
        postcodes,
    })
}

#[derive(Default)]
struct Tally {
    steps: BTreeMap<&'static str, Vec<Duration>>,
    errors: u64,
    first_error: Option<String>,
    conflicts: u64,
    booked_slots: HashSet<String>,
    double_bookings: u64,
    unbooked: u64,
}

impl Tally {
    fn fail(&mut self, step: &str, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(format!("{step}: {e}"));
    }
}

/// One client's view: the shared tally, the HTTP client, the base URL.
struct Ctx {
    http: awc::Client,
    base: String,
    tally: Rc<RefCell<Tally>>,
    cast: Rc<Cast>,
}

/// What a step's answer must be.
type Check = fn(u16, &Value) -> bool;

impl Ctx {
    /// Sends one request, times it, checks it; `None` (and an error) when it is wrong.
    async fn step(
        &self,
        name: &'static str,
        who: &As,
        (method, path): (&str, &str),
        body: Option<&Value>,
        if_match: Option<&str>,
        check: Check,
    ) -> Option<(u16, Value)> {
        let url = format!("{}/{path}", self.base);
        let sent = Instant::now();
        let answer = call_if_match(&self.http, who, method, &url, body, if_match).await;
        let took = sent.elapsed();
        let mut t = self.tally.borrow_mut();
        match answer {
            Ok((status, v)) if check(status, &v) => {
                t.steps.entry(name).or_default().push(took);
                Some((status, v))
            }
            Ok((status, v)) => {
                let text = v.to_string();
                t.fail(
                    name,
                    format!("{method} {path}: {status} {}", &text[..text.len().min(400)]),
                );
                None
            }
            Err(e) => {
                t.fail(name, e);
                None
            }
        }
    }

    /// Patient-centred DoS search near the k-th postcode; the ids it found.
    async fn dos_search(&self, k: usize) -> Option<Vec<Value>> {
        let c = &self.cast;
        let body = json!({
            "resourceType": "Parameters",
            "parameter": [
                {"name": "postcode", "valueString": c.postcodes[(k * 7919) % c.postcodes.len()]},
                {"name": "priority", "valueCode": PRIORITIES[0]},
                {"name": "specialty", "valueCode": SPECIALTIES[k % SPECIALTIES.len()]},
                {"name": "requestType", "valueCode": "APPOINTMENT_REQUEST"},
                {"name": "distanceLimit", "valueInteger": 25},
                {"name": "_count", "valueInteger": 20},
            ]
        });
        let (_, v) = self
            .step(
                "dos-search",
                &c.referrer,
                (
                    "POST",
                    "HealthcareService/$ers.searchHealthcareServicesForPatient",
                ),
                Some(&body),
                None,
                |s, v| {
                    s == 200
                        && v["type"] == "searchset"
                        && matches(v)
                            .iter()
                            .all(|r| r["resourceType"] == "HealthcareService")
                },
            )
            .await?;
        Some(matches(&v).into_iter().cloned().collect())
    }

    /// A routine referral shortlisting `first` and up to two services the search found that
    /// take routine referrals; its id.
    async fn refer(&self, k: usize, first: &str, found: &[Value]) -> Option<String> {
        let mut shortlist = vec![first.to_owned()];
        for s in found {
            let flows = s["characteristic"].to_string();
            let routine = flows.contains("\"ROUTINE\"");
            let takes = flows.contains("\"BOOKABLE\"") || flows.contains("\"REVIEW\"");
            if let Some(id) = s["id"].as_str() {
                if routine && takes && !shortlist.iter().any(|x| x == id) && shortlist.len() < 3 {
                    shortlist.push(id.to_owned());
                }
            }
        }
        let refs: Vec<&String> = shortlist.iter().collect();
        let body = referral_body(&self.cast.fx, k, &refs);
        let (_, v) = self
            .step(
                "create-referral",
                &self.cast.referrer,
                ("POST", "ServiceRequest"),
                Some(&body),
                None,
                |s, v| {
                    s == 201
                        && v["resourceType"] == "ServiceRequest"
                        && v["identifier"][0]["value"]
                            .as_str()
                            .is_some_and(|u| u.len() == 12)
                },
            )
            .await?;
        v["id"].as_str().map(str::to_owned)
    }

    /// Finds free routine slots of the service and books one for the referral, trying the
    /// next slot when another client took it first.
    async fn book(&self, referral: &str, service: &str, now: &str) -> Option<()> {
        let c = &self.cast;
        for _round in 0..3 {
            let (_, v) = self
                .step(
                    "slot-search",
                    &c.referrer,
                    ("GET", &format!("Slot?schedule.actor=HealthcareService/{service}&status=free&priority=ROUTINE&start=gt{now}&_count=10&_total=none")),
                    None,
                    None,
                    |s, v| {
                        s == 200
                            && matches(v)
                                .iter()
                                .all(|r| r["resourceType"] == "Slot" && r["status"] == "free")
                    },
                )
                .await?;
            let slots: Vec<String> = matches(&v)
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect();
            if slots.is_empty() {
                break;
            }
            // Start at a slot of this referral's own choosing, as a patient would.
            let offset = referral.bytes().map(usize::from).sum::<usize>() % slots.len();
            for i in 0..slots.len() {
                let slot = &slots[(offset + i) % slots.len()];
                let body = json!({
                    "resourceType": "Appointment",
                    "status": "booked",
                    "basedOn": [{"reference": format!("ServiceRequest/{referral}")}],
                    "slot": [{"reference": format!("Slot/{slot}")}],
                });
                let (status, _) = self
                    .step(
                        "book",
                        &c.referrer,
                        ("POST", "Appointment"),
                        Some(&body),
                        None,
                        |s, v| {
                            s == 409
                                || (s == 201
                                    && v["resourceType"] == "Appointment"
                                    && v["status"] == "booked")
                        },
                    )
                    .await?;
                let mut t = self.tally.borrow_mut();
                if status == 409 {
                    t.conflicts += 1;
                    continue;
                }
                if !t.booked_slots.insert(slot.clone()) {
                    t.double_bookings += 1;
                }
                return Some(());
            }
        }
        self.tally.borrow_mut().unbooked += 1;
        None
    }

    /// An A&G request, the provider's advice, and the referrer reading the conversation.
    async fn advise(&self, k: usize) -> Option<()> {
        let c = &self.cast;
        let service = &c.advice_services[k % c.advice_services.len()];
        let body = json!({
            "resourceType": "ServiceRequest",
            "extension": [
                {"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority",
                 "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}},
                {"url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ProviderConversionAuthorisation",
                 "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-ProviderConversionAuthorisation", "code": "AUTHORISED_TO_CONVERT"}},
            ],
            "status": "active",
            "intent": "order",
            "category": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ServiceRequestCategory", "code": "request"}]}],
            "subject": {"reference": format!("Patient/{}", c.fx.patients[k % c.fx.patients.len()])},
            "requester": {"reference": format!("PractitionerRole/{}", c.fx.role)},
            "performer": [{"reference": format!("HealthcareService/{service}")}],
            "note": [{"text": "Raised ALT on two occasions three months apart; refer or manage in primary care?"}],
        });
        let (_, v) = self
            .step(
                "advice-request",
                &c.referrer,
                ("POST", "ServiceRequest"),
                Some(&body),
                None,
                |s, v| s == 201 && v["id"].as_str().is_some_and(|i| i.starts_with("a.")),
            )
            .await?;
        let id = v["id"].as_str()?.to_owned();
        let version = v["meta"]["versionId"].as_str()?.to_owned();
        let advice = json!({"resourceType": "Parameters", "parameter": [
            {"name": "outcome", "valueString": "RETURN_TO_REFERRER_WITH_ADVICE"},
            {"name": "recommendation", "valueString": "ADVICE_ONLY_NO_REFERRAL_RECOMMENDED"},
            {"name": "text", "valueString": "Repeat LFTs with a liver screen; refer if ALT stays above three times normal."},
        ]});
        self.step(
            "advice-response",
            &c.provider,
            (
                "POST",
                &format!("ServiceRequest/{id}/$ers.respondToAdviceRequest"),
            ),
            Some(&advice),
            Some(&format!("W/\"{version}\"")),
            |s, v| s == 200 && v["resourceType"] == "ServiceRequest",
        )
        .await?;
        self.step(
            "advice-read",
            &c.referrer,
            (
                "GET",
                &format!("Communication?based-on=ServiceRequest/{id}"),
            ),
            None,
            None,
            |s, v| s == 200 && matches(v).len() == 2,
        )
        .await?;
        Some(())
    }
}

/// The day's journeys, shuffled together (deterministically).
fn journeys(day: Day) -> Vec<Journey> {
    let mut all = Vec::with_capacity(day.referrals + day.advice);
    all.extend(std::iter::repeat_n(Journey::Booked, day.bookings));
    all.extend(std::iter::repeat_n(
        Journey::Referred,
        day.referrals.saturating_sub(day.bookings),
    ));
    all.extend(std::iter::repeat_n(Journey::Advice, day.advice));
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..all.len()).rev() {
        // xorshift64: enough to interleave the kinds.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        all.swap(i, (state % (i as u64 + 1)) as usize);
    }
    all
}

/// Runs the day with `clients` concurrent clients; the summary as one JSON object.
pub async fn run(
    http: &awc::Client,
    base: &str,
    cast: Cast,
    day: Day,
    clients: usize,
) -> Result<Value, String> {
    let plan = Rc::new(journeys(day));
    eprintln!(
        "ers-load: national day of {} referrals ({} booked) and {} A&G conversations over {} bookable services, {} clients",
        day.referrals,
        day.bookings,
        day.advice,
        cast.bookable.len(),
        clients
    );
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cast = Rc::new(cast);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let next = Rc::new(RefCell::new(0usize));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let ctx = Ctx {
            http: http.clone(),
            base: base.to_owned(),
            tally: tally.clone(),
            cast: cast.clone(),
        };
        let (plan, next, now) = (plan.clone(), next.clone(), now.clone());
        tasks.push(actix_rt::spawn(async move {
            loop {
                let k = {
                    let mut n = next.borrow_mut();
                    *n += 1;
                    *n - 1
                };
                let Some(kind) = plan.get(k) else { break };
                match kind {
                    Journey::Booked | Journey::Referred => {
                        let Some(found) = ctx.dos_search(k).await else {
                            continue;
                        };
                        let service = &ctx.cast.bookable[k % ctx.cast.bookable.len()];
                        let Some(referral) = ctx.refer(k, service, &found).await else {
                            continue;
                        };
                        if *kind == Journey::Booked {
                            ctx.book(&referral, service, &now).await;
                        }
                    }
                    Journey::Advice => {
                        ctx.advise(k).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The server's own answer for a sample of the booked slots.
    let booked: Vec<String> = tally.borrow().booked_slots.iter().cloned().collect();
    let sample: Vec<&String> = booked.iter().collect();
    let server_doubles = crate::count_double_bookings(http, base, &cast.referrer, &sample).await?;
    let mut t = tally.borrow_mut();
    let mut steps = serde_json::Map::new();
    let mut requests = t.errors;
    for (name, lat) in t.steps.iter_mut() {
        lat.sort();
        requests += lat.len() as u64;
        let ms = |p: f64| (percentile(lat, p) * 10.0).round() / 10.0;
        steps.insert(
            (*name).to_owned(),
            json!({"count": lat.len(), "p50_ms": ms(50.0), "p95_ms": ms(95.0), "p99_ms": ms(99.0), "max_ms": ms(100.0)}),
        );
    }
    let doubles = t.double_bookings + server_doubles;
    Ok(json!({
        "scenario": "national-day",
        "clients": clients,
        "referrals": day.referrals,
        "bookings_planned": day.bookings,
        "bookings": t.booked_slots.len(),
        "unbooked": t.unbooked,
        "advice": day.advice,
        "elapsed_s": (elapsed * 10.0).round() / 10.0,
        "requests": requests,
        "throughput_per_s": ((requests as f64 / elapsed) * 10.0).round() / 10.0,
        "errors": t.errors,
        "conflicts": t.conflicts,
        "double_bookings": doubles,
        "first_error": t.first_error,
        "steps": steps,
        "target_met": elapsed <= 60.0 && t.errors == 0 && doubles == 0 && t.unbooked == 0,
    }))
}

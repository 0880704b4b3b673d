//! `ers-load --base-url URL --scenario NAME [--clients N] [--seconds S] [--warmup S]
//!  [--sandbox-user SDS | --token T --business-function BF --ods ODS] [--postcodes FILE]
//!  [--label TEXT] [--json FILE]`
//!
//! A closed-loop HTTP load generator for e-RS-like FHIR servers: N clients each send the
//! scenario's requests back to back for S seconds (after a warm-up that is not counted), then
//! it prints throughput and latency percentiles, and appends them as one JSON line to --json.
//! Any non-2xx answer counts as an error and its first example is printed.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod national;

const SPECIALTIES: &[&str] = &[
    "CARDIOLOGY",
    "DERMATOLOGY",
    "ENT",
    "GASTROENTEROLOGY",
    "GYNAECOLOGY",
    "NEUROLOGY",
    "OPHTHALMOLOGY",
    "ORTHOPAEDICS",
    "RESPIRATORY",
    "UROLOGY",
];
const PRIORITIES: &[&str] = &["ROUTINE", "URGENT", "TWO_WEEK_WAIT"];

struct Args {
    base_url: String,
    scenario: String,
    clients: usize,
    seconds: u64,
    warmup: u64,
    token: Option<String>,
    sandbox_user: Option<String>,
    business_function: String,
    ods: String,
    postcodes: Option<String>,
    label: String,
    json: Option<String>,
    /// Booking scenarios: how many (referral, slot) pairs to prepare.
    pairs: usize,
    /// Rest-hook subscriptions to every referral change, active during the run.
    subscriptions: usize,
    /// `read`: the resource to read (`Patient/{id}`).
    path: Option<String>,
    /// `national-day`: the share of a national day to replay (1.0: 70,000 referrals).
    scale: f64,
    /// `national-day`: the sandbox provider clinician who answers A&G requests.
    provider_user: String,
    provider_ods: String,
    /// Every write carries an `Idempotency-Key` of its own (what a client that retries safely
    /// sends).
    idempotency_keys: bool,
    /// Each measured answer's send time (ms after the measured window opened) and latency
    /// (ms), one line each, written to this file: shows whether slow answers come together.
    trace: Option<String>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: ers-load --base-url URL --scenario NAME [--clients N] [--seconds S] [--warmup S]\n\
         \x20      [--sandbox-user SDS | --token T --business-function BF --ods ODS]\n\
         \x20      [--postcodes FILE] [--pairs N] [--path TYPE/ID] [--label TEXT] [--json FILE]\n\
         \x20      [--scale F] [--provider-user SDS --provider-ods ODS] [--idempotency-keys]\n\
         \x20      [--trace FILE (closed-loop scenarios)]\n\
         scenarios:\n\
         \x20 dos-patient-search  POST HealthcareService/$ers.searchHealthcareServicesForPatient:\n\
         \x20                     a postcode (from --postcodes, an outcode,latitude,longitude CSV),\n\
         \x20                     a specialty and a priority, within 25 miles, with free slots\n\
         \x20 create-referral     POST ServiceRequest: a routine referral with two shortlisted\n\
         \x20                     services, as the sandbox referring clinician (sandbox data)\n\
         \x20 worklist            GET ServiceRequest/$ers.worklist (referrer lists, 20 a page)\n\
         \x20 book                POST Appointment: each request books its own free routine slot\n\
         \x20                     for its own new referral (--pairs made first, not measured)\n\
         \x20 read                GET --path (Type/id) again and again (plain FHIR)\n\
         \x20 create-patient      POST Patient with a new test-range NHS number (plain FHIR)\n\
         \x20 search-patient      GET Patient?family=…&birthdate=… (plain FHIR)\n\
         \x20 book-contended      POST Appointment: --pairs referrals race for 100 slots; a 409\n\
         \x20                     SLOT_NOT_AVAILABLE counts as a conflict; afterwards each slot\n\
         \x20                     is checked to hold at most one booked appointment\n\
         \x20 national-day        a day of England traffic (x --scale): 70,000 referrals with\n\
         \x20                     their DoS searches, 50,000 of them booked after a slot search,\n\
         \x20                     5,000 A&G conversations; runs until done (--seconds unused);\n\
         \x20                     needs --sandbox-user, --postcodes and a generated directory"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        base_url: String::new(),
        scenario: String::new(),
        clients: 8,
        seconds: 30,
        warmup: 5,
        token: None,
        sandbox_user: None,
        business_function: "REFERRING_CLINICIAN".into(),
        ods: "R69".into(),
        postcodes: None,
        label: String::new(),
        json: None,
        pairs: 6000,
        subscriptions: 0,
        path: None,
        scale: 1.0,
        provider_user: "555032006106".into(),
        provider_ods: "RCD".into(),
        idempotency_keys: false,
        trace: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next();
        match flag.as_str() {
            "--base-url" => a.base_url = value()?.trim_end_matches('/').to_owned(),
            "--scenario" => a.scenario = value()?,
            "--clients" => a.clients = value()?.parse().ok().filter(|n| *n > 0)?,
            "--seconds" => a.seconds = value()?.parse().ok().filter(|n| *n > 0)?,
            "--warmup" => a.warmup = value()?.parse().ok()?,
            "--token" => a.token = Some(value()?),
            "--sandbox-user" => a.sandbox_user = Some(value()?),
            "--business-function" => a.business_function = value()?,
            "--ods" => a.ods = value()?,
            "--postcodes" => a.postcodes = Some(value()?),
            "--label" => a.label = value()?,
            "--json" => a.json = Some(value()?),
            "--pairs" => a.pairs = value()?.parse().ok().filter(|n| *n > 0)?,
            "--subscriptions" => a.subscriptions = value()?.parse().ok()?,
            "--path" => a.path = Some(value()?),
            "--scale" => a.scale = value()?.parse().ok().filter(|f: &f64| *f > 0.0)?,
            "--provider-user" => a.provider_user = value()?,
            "--provider-ods" => a.provider_ods = value()?,
            "--idempotency-keys" => a.idempotency_keys = true,
            "--trace" => a.trace = Some(value()?),
            _ => return None,
        }
    }
    (!a.base_url.is_empty() && !a.scenario.is_empty()).then_some(a)
}

/// One request of a scenario: method, path under the base, body.
type Request = (&'static str, String, Option<Value>);

/// Ids a scenario needs, looked up once over HTTP (sandbox data).
#[derive(Default, Clone)]
struct Fixtures {
    patients: Vec<String>,
    role: String,
    services: Vec<String>,
    /// Booking scenarios: (referral id, slot id), one referral per pair.
    pairs: Vec<(String, String)>,
    /// `read`: the resource read.
    path: String,
    /// `create-patient`: where this run's NHS numbers start (runs do not collide).
    nhs_base: u64,
}

/// A synthetic NHS number of the reserved test range 999 000 0000–999 999 9999 that passes the
/// Modulus 11 check: the `n`th stem from 999000000 on, skipping stems with no valid check digit.
fn test_nhs_number(n: u64) -> String {
    let mut stem = 999_000_000 + n % 999_999;
    loop {
        let digits: Vec<u64> = stem
            .to_string()
            .bytes()
            .map(|b| u64::from(b - b'0'))
            .collect();
        let sum: u64 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = (11 - sum % 11) % 11;
        if check != 10 {
            return format!("{stem}{check}");
        }
        stem = if stem >= 999_999_999 {
            999_000_000
        } else {
            stem + 1
        };
    }
}

/// Who the load generator acts as.
#[derive(Clone)]
struct As {
    token: String,
    bf: String,
    ods: String,
}

impl As {
    fn request(&self, http: &awc::Client, method: &str, url: &str) -> awc::ClientRequest {
        let m = awc::http::Method::from_bytes(method.as_bytes()).unwrap_or_default();
        http.request(m, url)
            .insert_header(("Authorization", format!("Bearer {}", self.token)))
            .insert_header(("NHSD-eRS-Business-Function", self.bf.as_str()))
            .insert_header(("NHSD-End-User-Organisation-ODS", self.ods.as_str()))
            .insert_header(("Content-Type", "application/fhir+json"))
    }
}

/// A JSON answer (any status) or why there was none.
async fn call(
    http: &awc::Client,
    who: &As,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    call_if_match(http, who, method, url, body, None).await
}

/// `call` with an `If-Match` header when a version tag is given.
async fn call_if_match(
    http: &awc::Client,
    who: &As,
    method: &str,
    url: &str,
    body: Option<&Value>,
    if_match: Option<&str>,
) -> Result<(u16, Value), String> {
    let mut req = who.request(http, method, url);
    if let Some(tag) = if_match {
        req = req.insert_header(("If-Match", tag));
    }
    let mut res = match body {
        Some(b) => req.send_body(b.to_string()).await,
        None => req.send().await,
    }
    .map_err(|e| format!("{url}: {e}"))?;
    let bytes = res
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((res.status().as_u16(), v))
}

/// The matches' ids of a search (possibly none).
async fn search_ids(
    http: &awc::Client,
    base: &str,
    who: &As,
    query: &str,
) -> Result<Vec<String>, String> {
    let (status, v) = call(http, who, "GET", &format!("{base}/{query}"), None).await?;
    if status != 200 {
        return Err(format!("{query}: {status} {v}"));
    }
    Ok(matches(&v)
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect())
}

/// The resources a search Bundle matched (not its includes or outcomes).
fn matches(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| &e["resource"])
        .collect()
}

/// Booking scenarios: free routine slots of bookable services, and one new referral per
/// pair shortlisting its slot's service (made with 16 concurrent requests; not measured).
async fn booking_pairs(
    http: &awc::Client,
    base: &str,
    who: &As,
    fx: &Fixtures,
    slots_wanted: usize,
    pairs: usize,
) -> Result<Vec<(String, String)>, String> {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let mut slots: Vec<(String, String)> = Vec::new();
    let mut offset = 0;
    while slots.len() < slots_wanted {
        let services = search_ids(
            http,
            base,
            who,
            &format!("HealthcareService?characteristic=BOOKABLE&priority=ROUTINE&active=true&_count=100&_offset={offset}"),
        )
        .await?;
        if services.is_empty() {
            break;
        }
        offset += services.len();
        for s in services {
            let free = search_ids(
                http,
                base,
                who,
                &format!("Slot?schedule.actor=HealthcareService/{s}&status=free&priority=ROUTINE&start=gt{now}&_count=100"),
            )
            .await?;
            slots.extend(free.into_iter().map(|slot| (s.clone(), slot)));
            if slots.len() >= slots_wanted {
                break;
            }
        }
    }
    slots.truncate(slots_wanted);
    if slots.is_empty() {
        return Err("no free routine slots found (load a directory first)".into());
    }
    eprintln!(
        "ers-load: {} free slots; making {pairs} referrals",
        slots.len()
    );
    let made: Rc<RefCell<Vec<Option<String>>>> = Rc::new(RefCell::new(vec![None; pairs]));
    let next = Rc::new(RefCell::new(0usize));
    let slots = Rc::new(slots);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, who, made, next, slots, fx) = (
            http.clone(),
            who.clone(),
            made.clone(),
            next.clone(),
            slots.clone(),
            fx.clone(),
        );
        let url = format!("{base}/ServiceRequest");
        tasks.push(actix_rt::spawn(async move {
            loop {
                let i = {
                    let mut n = next.borrow_mut();
                    *n += 1;
                    *n - 1
                };
                if i >= pairs {
                    break;
                }
                let service = &slots[i % slots.len()].0;
                let body = referral_body(&fx, i, &[service]);
                if let Ok((201, v)) = call(&http, &who, "POST", &url, Some(&body)).await {
                    made.borrow_mut()[i] = v["id"].as_str().map(str::to_owned);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let made = made.borrow();
    Ok(made
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.clone().map(|r| (r, slots[i % slots.len()].1.clone())))
        .collect())
}

/// Slots (of those given; the first 2,000) holding more than one booked appointment.
async fn count_double_bookings(
    http: &awc::Client,
    base: &str,
    who: &As,
    slots: &[&String],
) -> Result<u64, String> {
    let mut slots = slots.to_vec();
    slots.sort();
    slots.dedup();
    let mut doubles = 0;
    for s in slots.into_iter().take(2000) {
        let (_, v) = call(
            http,
            who,
            "GET",
            &format!("{base}/Appointment?slot=Slot/{s}&status=booked&_summary=count"),
            None,
        )
        .await?;
        if v["total"].as_u64().unwrap_or(0) > 1 {
            doubles += 1;
        }
    }
    Ok(doubles)
}

async fn fetch_ids(
    http: &awc::Client,
    base: &str,
    token: &str,
    bf: &str,
    ods: &str,
    query: &str,
) -> Result<Vec<String>, String> {
    let who = As {
        token: token.to_owned(),
        bf: bf.to_owned(),
        ods: ods.to_owned(),
    };
    let ids = search_ids(http, base, &who, query).await?;
    if ids.is_empty() {
        Err(format!(
            "{base}/{query} found nothing (is this the sandbox?)"
        ))
    } else {
        Ok(ids)
    }
}

/// A routine referral of the k-th sandbox patient by the sandbox clinician's role.
fn referral_body(fx: &Fixtures, k: usize, services: &[&String]) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "extension": [{"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority",
                       "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": format!("Patient/{}", fx.patients[k % fx.patients.len()])},
        "requester": {"reference": format!("PractitionerRole/{}", fx.role)},
        "performer": services.iter().map(|s| json!({"reference": format!("HealthcareService/{s}")})).collect::<Vec<_>>(),
        "reasonCode": [{"text": "Load test referral"}],
    })
}

fn scenario(
    name: &str,
    postcodes: &[String],
    fx: &Fixtures,
) -> Result<Box<dyn Fn(u64) -> Request>, String> {
    match name {
        "create-referral" => {
            let fx = fx.clone();
            Ok(Box::new(move |k| {
                let k = k as usize;
                let shortlist = [
                    &fx.services[k % fx.services.len()],
                    &fx.services[(k + 1) % fx.services.len()],
                ];
                let body = referral_body(&fx, k, &shortlist);
                ("POST", "ServiceRequest".to_owned(), Some(body))
            }))
        }
        "worklist" => Ok(Box::new(|k| {
            let list = ["AWAITING_BOOKING", "REJECTED_TRIAGE_RESPONSE"][(k % 2) as usize];
            (
                "GET",
                format!("ServiceRequest/$ers.worklist?listType={list}&_count=20"),
                None,
            )
        })),
        "dos-patient-search" => {
            if postcodes.is_empty() {
                return Err("dos-patient-search needs --postcodes FILE".into());
            }
            let postcodes = postcodes.to_vec();
            Ok(Box::new(move |k| {
                let k = k as usize;
                let body = json!({
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "postcode", "valueString": postcodes[(k * 7919) % postcodes.len()]},
                        {"name": "priority", "valueCode": PRIORITIES[k % PRIORITIES.len()]},
                        {"name": "specialty", "valueCode": SPECIALTIES[(k / 3) % SPECIALTIES.len()]},
                        {"name": "distanceLimit", "valueInteger": 25},
                        {"name": "withFreeSlots", "valueBoolean": true},
                        {"name": "_count", "valueInteger": 20},
                    ]
                });
                (
                    "POST",
                    "HealthcareService/$ers.searchHealthcareServicesForPatient".to_owned(),
                    Some(body),
                )
            }))
        }
        // Plain FHIR, for the side-by-side with another server.
        "read" => {
            let path = fx.path.clone();
            if path.is_empty() {
                return Err("read needs --path Type/id".into());
            }
            Ok(Box::new(move |_| ("GET", path.clone(), None)))
        }
        "create-patient" => {
            let base = fx.nhs_base;
            Ok(Box::new(move |k| {
                let body = json!({
                    "resourceType": "Patient",
                    "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": test_nhs_number(base + k)}],
                    "name": [{"use": "official", "family": "Loadtest", "given": ["Sam"]}],
                    "gender": if k % 2 == 0 { "female" } else { "male" },
                    "birthDate": format!("19{:02}-0{}-1{}", 40 + k % 60, 1 + k % 9, k % 10),
                    "address": [{"postalCode": "LS1 4AP"}],
                });
                ("POST", "Patient".to_owned(), Some(body))
            }))
        }
        "search-patient" => Ok(Box::new(|k| {
            (
                "GET",
                format!("Patient?family=Loadtest&birthdate=19{:02}&_count=20", 40 + k % 60),
                None,
            )
        })),
        "book" | "book-contended" => {
            let pairs = fx.pairs.clone();
            Ok(Box::new(move |k| {
                let (referral, slot) = &pairs[(k as usize - 1) % pairs.len()];
                // The server adds the patient, service, location and times from the referral
                // and the slot.
                let body = json!({
                    "resourceType": "Appointment",
                    "status": "booked",
                    "basedOn": [{"reference": format!("ServiceRequest/{referral}")}],
                    "slot": [{"reference": format!("Slot/{slot}")}],
                });
                ("POST", "Appointment".to_owned(), Some(body))
            }))
        }
        other => Err(format!(
            "unknown scenario '{other}' (dos-patient-search, create-referral, worklist, book, book-contended, read, create-patient, search-patient, national-day)"
        )),
    }
}

/// Whether a successful answer is the right one for the scenario (a fast wrong answer is a
/// failure): its resource type and the fields the scenario is about.
fn check_answer(scenario: &str, body: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    // A client's check, not the server's path (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    let field = |ptr: &str| v.pointer(ptr).and_then(Value::as_str).unwrap_or_default();
    let entries = || matches(&v);
    let ok = match scenario {
        "create-referral" => {
            field("/resourceType") == "ServiceRequest"
                && v["identifier"].as_array().is_some_and(|ids| {
                    ids.iter().any(|i| {
                        i["system"] == "https://fhir.nhs.uk/Id/UBRN"
                            && i["value"].as_str().is_some_and(|u| u.len() == 12)
                    })
                })
        }
        "worklist" => {
            field("/type") == "searchset"
                && entries()
                    .iter()
                    .all(|r| r["resourceType"] == "ServiceRequest")
        }
        "dos-patient-search" => {
            field("/type") == "searchset"
                && entries()
                    .iter()
                    .all(|r| r["resourceType"] == "HealthcareService")
        }
        "book" | "book-contended" => {
            field("/resourceType") == "Appointment" && field("/status") == "booked"
        }
        "create-patient" => field("/resourceType") == "Patient" && !field("/id").is_empty(),
        "search-patient" => {
            field("/type") == "searchset"
                && entries().iter().all(|r| r["resourceType"] == "Patient")
        }
        "read" => field("/resourceType") != "OperationOutcome" && !field("/id").is_empty(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
        Err(format!("a wrong answer for {scenario}: {text}"))
    }
}

fn read_postcodes(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect())
}

/// A token for a sandbox user from the server's sandbox token endpoint.
async fn sandbox_token(base_url: &str, user: &str) -> Result<String, String> {
    let url = format!(
        "{}/oauth2/sandbox/token",
        base_url.trim_end_matches("/FHIR/R4")
    );
    let mut res = awc::Client::default()
        .post(&url)
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(format!("user_id={user}"))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let body = res.body().await.map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            format!(
                "{url} gave no access_token: {}",
                String::from_utf8_lossy(&body)
            )
        })
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// With --trace: each answer's send time after the window opened, and its latency.
    trace: Vec<(Duration, Duration)>,
    errors: u64,
    /// 409s: the slot was taken by another booking (expected when clients race).
    conflicts: u64,
    first_error: Option<String>,
}

/// How a 409 is recorded in the tally.
const CONFLICT: &str = "409 conflict";

/// One line per answer, in send order: "sent_ms latency_ms".
fn write_trace(path: &str, trace: &mut [(Duration, Duration)]) -> std::io::Result<()> {
    use std::io::Write;
    trace.sort();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (sent, latency) in trace.iter() {
        writeln!(
            out,
            "{:.1} {:.2}",
            sent.as_secs_f64() * 1e3,
            latency.as_secs_f64() * 1e3
        )?;
    }
    out.flush()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn run(args: &Args) -> Result<Value, String> {
    if args.trace.is_some() && args.scenario == "national-day" {
        return Err(
            "--trace is for the closed-loop scenarios; national-day reports each step's percentiles".into(),
        );
    }
    let postcodes = match &args.postcodes {
        Some(p) => read_postcodes(p)?,
        None => Vec::new(),
    };

    let token = match (&args.token, &args.sandbox_user) {
        (Some(t), _) => t.clone(),
        (None, Some(user)) => sandbox_token(&args.base_url, user).await?,
        (None, None) => return Err("give --token or --sandbox-user".into()),
    };
    let http = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut fx = Fixtures {
        path: args.path.clone().unwrap_or_default(),
        nhs_base: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 1000 * 997)
            .unwrap_or_default(),
        ..Fixtures::default()
    };
    let booking = args.scenario.starts_with("book");
    let national = args.scenario == "national-day";
    if args.scenario == "create-referral" || booking || national {
        let (bf, ods) = (args.business_function.as_str(), args.ods.as_str());
        fx.patients =
            fetch_ids(&http, &args.base_url, &token, bf, ods, "Patient?_count=40").await?;
        fx.role = fetch_ids(
            &http,
            &args.base_url,
            &token,
            bf,
            ods,
            "PractitionerRole?identifier=https://fhir.nhs.uk/Id/sds-role-profile-id|100000000001",
        )
        .await?
        .remove(0);
        fx.services = fetch_ids(
            &http,
            &args.base_url,
            &token,
            bf,
            ods,
            "HealthcareService?characteristic=BOOKABLE&priority=ROUTINE&active=true&_count=20",
        )
        .await?;
    }
    let who = As {
        token: token.clone(),
        bf: args.business_function.clone(),
        ods: args.ods.clone(),
    };
    if national {
        let Some(user) = &args.sandbox_user else {
            return Err(
                "national-day needs --sandbox-user (and the sandbox provider clinician)".into(),
            );
        };
        let provider = As {
            token: sandbox_token(&args.base_url, &args.provider_user).await?,
            bf: "SERVICE_PROVIDER_CLINICIAN".into(),
            ods: args.provider_ods.clone(),
        };
        eprintln!(
            "ers-load: national day as {user} (referrer) and {} (provider)",
            args.provider_user
        );
        let cast = national::cast(&http, &args.base_url, who, provider, fx, postcodes).await?;
        let mut result = national::run(
            &http,
            &args.base_url,
            cast,
            national::Day::scaled(args.scale),
            args.clients,
        )
        .await?;
        result["label"] = json!(args.label);
        result["base_url"] = json!(args.base_url);
        result["scale"] = json!(args.scale);
        // The target is for the whole day.
        if args.scale < 1.0 {
            result["target_met"] = json!(false);
        }
        return Ok(result);
    }
    if booking {
        let slots = if args.scenario == "book-contended" {
            100
        } else {
            args.pairs
        };
        fx.pairs = booking_pairs(&http, &args.base_url, &who, &fx, slots, args.pairs).await?;
        eprintln!("ers-load: {} referral/slot pairs ready", fx.pairs.len());
    }
    // Subscriptions last, so they start at events to come.
    let hook = if args.subscriptions > 0 {
        Some(subscribe(&http, &args.base_url, &who, args.subscriptions).await?)
    } else {
        None
    };
    let make = Rc::new(scenario(&args.scenario, &postcodes, &fx)?);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let counter = Rc::new(RefCell::new(0u64));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let stop = measure_from + Duration::from_secs(args.seconds);
    // A booking scenario ends when each of its referrals has had its turn (a referral that
    // is booked cannot book again).
    let limit = booking.then_some(fx.pairs.len() as u64);
    let last_done = Rc::new(RefCell::new(measure_from));
    // Keys unique to this run (a key is its caller's for a day).
    let run_id = format!(
        "load-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let last_done = last_done.clone();
        let (http, make, tally, counter, token) = (
            http.clone(),
            make.clone(),
            tally.clone(),
            counter.clone(),
            token.clone(),
        );
        let base = args.base_url.clone();
        let (bf, ods) = (args.business_function.clone(), args.ods.clone());
        let scenario = args.scenario.clone();
        let (keyed, run) = (args.idempotency_keys, run_id.clone());
        let tracing = args.trace.is_some();
        tasks.push(actix_rt::spawn(async move {
            loop {
                let k = {
                    let mut c = counter.borrow_mut();
                    *c += 1;
                    *c
                };
                if limit.is_some_and(|n| k > n) {
                    break;
                }
                let (method, path, body) = make(k);
                let m = awc::http::Method::from_bytes(method.as_bytes()).unwrap_or_default();
                let mut req = http
                    .request(m, format!("{base}/{path}"))
                    .insert_header(("Authorization", format!("Bearer {token}")))
                    .insert_header(("NHSD-eRS-Business-Function", bf.as_str()))
                    .insert_header(("NHSD-End-User-Organisation-ODS", ods.as_str()))
                    .insert_header(("Content-Type", "application/fhir+json"));
                if keyed && method != "GET" {
                    req = req.insert_header(("Idempotency-Key", format!("{run}-{k}")));
                }
                let sent = Instant::now();
                let result = match body {
                    Some(b) => req.send_body(b.to_string()).await,
                    None => req.send().await,
                };
                let outcome = match result {
                    Ok(mut res) => {
                        let status = res.status();
                        match res.body().limit(64 * 1024 * 1024).await {
                            Ok(b) if status.is_success() => check_answer(&scenario, &b),
                            Ok(_) if status.as_u16() == 409 => Err(CONFLICT.to_owned()),
                            Ok(b) => Err(format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&b[..b.len().min(400)])
                            )),
                            Err(e) => Err(format!("{status}: body: {e}")),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                let done = Instant::now();
                if done >= stop {
                    break;
                }
                if sent >= measure_from {
                    let mut last = last_done.borrow_mut();
                    *last = (*last).max(done);
                    let mut t = tally.borrow_mut();
                    match outcome {
                        Ok(()) => {
                            t.latencies.push(done - sent);
                            if tracing {
                                t.trace.push((sent - measure_from, done - sent));
                            }
                        }
                        Err(e) if e == CONFLICT => t.conflicts += 1,
                        Err(e) => {
                            t.errors += 1;
                            t.first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let double_bookings = if booking {
        let slots: Vec<&String> = fx.pairs.iter().map(|(_, s)| s).collect();
        Some(count_double_bookings(&http, &args.base_url, &who, &slots).await?)
    } else {
        None
    };
    let delivery = match &hook {
        Some(h) => Some(h.finish(&http, &args.base_url, &who).await),
        None => None,
    };
    let mut t = tally.borrow_mut();
    if let Some(path) = &args.trace {
        write_trace(path, &mut t.trace).map_err(|e| format!("--trace {path}: {e}"))?;
    }
    t.latencies.sort();
    let ok = t.latencies.len() as f64;
    // The measured window: to the end, or to the last answer when the work ran out first.
    let window = (*last_done.borrow())
        .min(stop)
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(0.001);
    let result = json!({
        "label": args.label,
        "scenario": args.scenario,
        "base_url": args.base_url,
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": t.latencies.len() as u64 + t.errors,
        "errors": t.errors,
        "conflicts": t.conflicts,
        "double_bookings": double_bookings,
        "throughput_per_s": (ok / window * 10.0).round() / 10.0,
        "window_s": (window * 10.0).round() / 10.0,
        "p50_ms": (percentile(&t.latencies, 50.0) * 10.0).round() / 10.0,
        "p95_ms": (percentile(&t.latencies, 95.0) * 10.0).round() / 10.0,
        "p99_ms": (percentile(&t.latencies, 99.0) * 10.0).round() / 10.0,
        "max_ms": (percentile(&t.latencies, 100.0) * 10.0).round() / 10.0,
        "first_error": t.first_error,
        "subscriptions": args.subscriptions,
        "idempotency_keys": args.idempotency_keys,
        "delivery": delivery,
    });
    Ok(result)
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        return usage();
    };
    match actix_rt::System::new().block_on(run(&args)) {
        Ok(result) if result["scenario"] == "national-day" => {
            println!(
                "{} national-day clients={} referrals={} bookings={} unbooked={} advice={} elapsed={}s requests={} throughput={}/s errors={} conflicts={} double_bookings={} target_met={}",
                args.label,
                args.clients,
                result["referrals"],
                result["bookings"],
                result["unbooked"],
                result["advice"],
                result["elapsed_s"],
                result["requests"],
                result["throughput_per_s"],
                result["errors"],
                result["conflicts"],
                result["double_bookings"],
                result["target_met"]
            );
            for (step, s) in result["steps"].as_object().into_iter().flatten() {
                println!(
                    "  {step:16} n={} p50={}ms p95={}ms p99={}ms max={}ms",
                    s["count"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]
                );
            }
            finish(&args, &result)
        }
        Ok(result) => {
            println!(
                "{} {} clients={} requests={} errors={} throughput={}/s p50={}ms p95={}ms p99={}ms max={}ms",
                args.label,
                args.scenario,
                args.clients,
                result["requests"],
                result["errors"],
                result["throughput_per_s"],
                result["p50_ms"],
                result["p95_ms"],
                result["p99_ms"],
                result["max_ms"]
            );
            finish(&args, &result)
        }
        Err(e) => {
            eprintln!("ers-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the first error, appends the result to `--json`, and fails the run on errors.
fn finish(args: &Args, result: &Value) -> ExitCode {
    if let Some(e) = result["first_error"].as_str() {
        eprintln!("first error: {e}");
    }
    if let Some(path) = &args.json {
        use std::io::Write;
        let line = format!("{result}\n");
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
        {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if result["errors"].as_u64().unwrap_or(0) > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The subscriptions of a run and what their receiver got: each event's lag (ms) from its
/// timestamp to its arrival.
struct Hook {
    ids: Vec<String>,
    lags: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
}

/// Starts a receiver in this process and subscribes it `n` times to every referral change.
async fn subscribe(http: &awc::Client, base: &str, who: &As, n: usize) -> Result<Hook, String> {
    use std::sync::{Arc, Mutex};
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let l = lags.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let server = actix_web::HttpServer::new(move || {
        let l = l.clone();
        actix_web::App::new()
            .app_data(actix_web::web::PayloadConfig::new(64 * 1024 * 1024))
            .default_service(actix_web::web::to(move |body: actix_web::web::Bytes| {
                let l = l.clone();
                async move {
                    let now = chrono::Utc::now();
                    // Only the status entry's event timestamps are read (a subscriber on
                    // another machine would do the parsing there).
                    let b: Notification = serde_json::from_slice(&body).unwrap_or_default();
                    let got: Vec<f64> = b
                        .entry
                        .first()
                        .into_iter()
                        .flat_map(|e| e.resource.parameter.iter())
                        .filter(|p| p.name == "notification-event")
                        .filter_map(|p| p.part.iter().find(|x| x.name == "timestamp"))
                        .filter_map(|x| x.value_instant.as_deref())
                        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|at| {
                            (now - at.with_timezone(&chrono::Utc))
                                .num_microseconds()
                                .unwrap_or(0) as f64
                                / 1000.0
                        })
                        .collect();
                    if let Ok(mut v) = l.lock() {
                        v.extend(got);
                    }
                    actix_web::HttpResponse::Ok().finish()
                }
            }))
    })
    .workers(2)
    .listen(listener)
    .map_err(|e| e.to_string())?
    .run();
    actix_rt::spawn(server);
    let mut ids = Vec::new();
    for _ in 0..n {
        let body = json!({
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "ers-load",
            "criteria": "ServiceRequest?status=active",
            "channel": {"type": "rest-hook", "endpoint": format!("http://127.0.0.1:{port}/hook")},
        });
        let (status, v) = call(
            http,
            who,
            "POST",
            &format!("{base}/Subscription"),
            Some(&body),
        )
        .await?;
        if status != 201 {
            return Err(format!("POST Subscription: {status} {v}"));
        }
        ids.push(v["id"].as_str().unwrap_or_default().to_owned());
    }
    eprintln!("ers-load: {n} subscriptions to referral changes, receiver on port {port}");
    Ok(Hook { ids, lags })
}

/// What the receiver reads of a notification Bundle.
#[derive(serde::Deserialize, Default)]
struct Notification {
    #[serde(default)]
    entry: Vec<NotificationEntry>,
}

#[derive(serde::Deserialize, Default)]
struct NotificationEntry {
    #[serde(default)]
    resource: NotificationStatus,
}

#[derive(serde::Deserialize, Default)]
struct NotificationStatus {
    #[serde(default)]
    parameter: Vec<NotificationParameter>,
}

#[derive(serde::Deserialize, Default)]
struct NotificationParameter {
    #[serde(default)]
    name: String,
    #[serde(default)]
    part: Vec<NotificationParameter>,
    #[serde(default, rename = "valueInstant")]
    value_instant: Option<String>,
}

impl Hook {
    /// Waits for deliveries to drain (nothing new for 15 s — longer than the server waits on a
    /// gap in event numbers — at most 180 s), removes the subscriptions, and summarises the
    /// lags.
    async fn finish(&self, http: &awc::Client, base: &str, who: &As) -> Value {
        let count = || self.lags.lock().map(|v| v.len()).unwrap_or(0);
        let mut last = count();
        let mut quiet = 0;
        for _ in 0..360 {
            actix_rt::time::sleep(Duration::from_millis(500)).await;
            let now = count();
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
            if quiet >= 30 {
                break;
            }
        }
        for id in &self.ids {
            let _ = call(
                http,
                who,
                "DELETE",
                &format!("{base}/Subscription/{id}"),
                None,
            )
            .await;
        }
        let mut lags: Vec<Duration> = self
            .lags
            .lock()
            .map(|v| {
                v.iter()
                    .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
                    .collect()
            })
            .unwrap_or_default();
        lags.sort();
        json!({
            "events_delivered": lags.len(),
            "lag_p50_ms": (percentile(&lags, 50.0) * 10.0).round() / 10.0,
            "lag_p95_ms": (percentile(&lags, 95.0) * 10.0).round() / 10.0,
            "lag_max_ms": (percentile(&lags, 100.0) * 10.0).round() / 10.0,
        })
    }
}

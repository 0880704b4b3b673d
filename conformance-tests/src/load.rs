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
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: ers-load --base-url URL --scenario NAME [--clients N] [--seconds S] [--warmup S]\n\
         \x20      [--sandbox-user SDS | --token T --business-function BF --ods ODS]\n\
         \x20      [--postcodes FILE] [--label TEXT] [--json FILE]\n\
         scenarios:\n\
         \x20 dos-patient-search  POST HealthcareService/$ers.searchHealthcareServicesForPatient:\n\
         \x20                     a postcode (from --postcodes, an outcode,latitude,longitude CSV),\n\
         \x20                     a specialty and a priority, within 25 miles, with free slots\n\
         \x20 create-referral     POST ServiceRequest: a routine referral with two shortlisted\n\
         \x20                     services, as the sandbox referring clinician (sandbox data)\n\
         \x20 worklist            GET ServiceRequest/$ers.worklist (referrer lists, 20 a page)"
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
}

async fn fetch_ids(
    http: &awc::Client,
    base: &str,
    token: &str,
    bf: &str,
    ods: &str,
    query: &str,
) -> Result<Vec<String>, String> {
    let url = format!("{base}/{query}");
    let mut res = http
        .get(&url)
        .insert_header(("Authorization", format!("Bearer {token}")))
        .insert_header(("NHSD-eRS-Business-Function", bf))
        .insert_header(("NHSD-End-User-Organisation-ODS", ods))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let body = res
        .body()
        .limit(64 * 1024 * 1024)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    let ids: Vec<String> = v["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] != "include")
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
        .collect();
    if ids.is_empty() {
        Err(format!("{url} found nothing (is this the sandbox?)"))
    } else {
        Ok(ids)
    }
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
                let body = json!({
                    "resourceType": "ServiceRequest",
                    "extension": [{"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority",
                                   "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}}],
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": format!("Patient/{}", fx.patients[k % fx.patients.len()])},
                    "requester": {"reference": format!("PractitionerRole/{}", fx.role)},
                    "performer": [
                        {"reference": format!("HealthcareService/{}", fx.services[k % fx.services.len()])},
                        {"reference": format!("HealthcareService/{}", fx.services[(k + 1) % fx.services.len()])},
                    ],
                    "reasonCode": [{"text": "Load test referral"}],
                });
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
        other => Err(format!(
            "unknown scenario '{other}' (dos-patient-search, create-referral, worklist)"
        )),
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
    errors: u64,
    first_error: Option<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn run(args: &Args) -> Result<Value, String> {
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
    let mut fx = Fixtures::default();
    if args.scenario == "create-referral" {
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
    let make = Rc::new(scenario(&args.scenario, &postcodes, &fx)?);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let counter = Rc::new(RefCell::new(0u64));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let stop = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (http, make, tally, counter, token) = (
            http.clone(),
            make.clone(),
            tally.clone(),
            counter.clone(),
            token.clone(),
        );
        let base = args.base_url.clone();
        let (bf, ods) = (args.business_function.clone(), args.ods.clone());
        tasks.push(actix_rt::spawn(async move {
            loop {
                let k = {
                    let mut c = counter.borrow_mut();
                    *c += 1;
                    *c
                };
                let (method, path, body) = make(k);
                let m = awc::http::Method::from_bytes(method.as_bytes()).unwrap_or_default();
                let req = http
                    .request(m, format!("{base}/{path}"))
                    .insert_header(("Authorization", format!("Bearer {token}")))
                    .insert_header(("NHSD-eRS-Business-Function", bf.as_str()))
                    .insert_header(("NHSD-End-User-Organisation-ODS", ods.as_str()))
                    .insert_header(("Content-Type", "application/fhir+json"));
                let sent = Instant::now();
                let result = match body {
                    Some(b) => req.send_body(b.to_string()).await,
                    None => req.send().await,
                };
                let outcome = match result {
                    Ok(mut res) => {
                        let status = res.status();
                        match res.body().limit(64 * 1024 * 1024).await {
                            Ok(_) if status.is_success() => Ok(()),
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
                    let mut t = tally.borrow_mut();
                    match outcome {
                        Ok(()) => t.latencies.push(done - sent),
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
    let mut t = tally.borrow_mut();
    t.latencies.sort();
    let ok = t.latencies.len() as f64;
    let result = json!({
        "label": args.label,
        "scenario": args.scenario,
        "base_url": args.base_url,
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": t.latencies.len() as u64 + t.errors,
        "errors": t.errors,
        "throughput_per_s": (ok / args.seconds as f64 * 10.0).round() / 10.0,
        "p50_ms": (percentile(&t.latencies, 50.0) * 10.0).round() / 10.0,
        "p95_ms": (percentile(&t.latencies, 95.0) * 10.0).round() / 10.0,
        "p99_ms": (percentile(&t.latencies, 99.0) * 10.0).round() / 10.0,
        "max_ms": (percentile(&t.latencies, 100.0) * 10.0).round() / 10.0,
        "first_error": t.first_error,
    });
    Ok(result)
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        return usage();
    };
    match actix_rt::System::new().block_on(run(&args)) {
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
        Err(e) => {
            eprintln!("ers-load: {e}");
            ExitCode::FAILURE
        }
    }
}

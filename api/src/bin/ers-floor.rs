//! `ers-floor --scenario create-referral|read [--clients N] [--seconds S] [--warmup S]
//!  [--label TEXT] [--json FILE]` (database: `ERS_DATABASE_URL`, as for the server)
//!
//! The raw floor under ers-load's scenarios: the same rows written or read through the storage
//! layer (diesel) directly, with the same indexes, and no HTTP, JSON parsing, validation,
//! permission checks or business rules. The server's result divided by the floor's is how much
//! of the database's speed the server keeps.
//!
//! - `create-referral` copies what the server wrote for its latest created ServiceRequest (run
//!   it on a database where `ers-load --scenario create-referral` ran): every resource version
//!   that request wrote (the referral) with all of their stored index rows,
//!   under new ids and a new UBRN, plus an audit event and an outbox event, in one write
//!   transaction per referral. The server also writes reporting and worklist rows, checks the
//!   shortlist and the requester, and takes a UBRN; the floor does not.
//! - `read` reads the latest created Patient by id in a read transaction (the server also
//!   writes an audit event for each read).
//!
//! Each client is a thread with its own pooled connection, closed-loop like ers-load; the
//! result is one JSON line in ers-load's shape.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ers_api::service::audit::{self, AuditDraft, Outcome};
use ers_schema::store::{self, NewEvent, NewVersion};
use ers_schema::{Author, DbConnection, IndexEntries, StorageError, VersionRow};
use serde_json::json;

struct Args {
    scenario: String,
    clients: usize,
    seconds: u64,
    warmup: u64,
    label: String,
    json: Option<String>,
}

fn parse_args() -> Option<Args> {
    let mut a = Args {
        scenario: String::new(),
        clients: 8,
        seconds: 20,
        warmup: 2,
        label: String::new(),
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next();
        match flag.as_str() {
            "--scenario" => a.scenario = value()?,
            "--clients" => a.clients = value()?.parse().ok().filter(|n| *n > 0)?,
            "--seconds" => a.seconds = value()?.parse().ok().filter(|n| *n > 0)?,
            "--warmup" => a.warmup = value()?.parse().ok()?,
            "--label" => a.label = value()?,
            "--json" => a.json = Some(value()?),
            _ => return None,
        }
    }
    matches!(a.scenario.as_str(), "create-referral" | "read").then_some(a)
}

/// A resource version the server wrote, with its stored index rows.
struct Written {
    version: VersionRow,
    index: IndexEntries,
}

/// What one operation of a scenario does, given its connection and its sequence number.
enum Plan {
    /// The rows of one referral create, and the strings to renumber in each copy.
    Create {
        rows: Vec<Written>,
        ubrn: String,
        base: u64,
    },
    Read {
        id: String,
    },
}

fn template(conn: &mut DbConnection, scenario: &str) -> Result<Plan, String> {
    let e = |e: StorageError| e.to_string();
    let res_type = if scenario == "read" {
        "Patient"
    } else {
        "ServiceRequest"
    };
    let latest = store::latest_created(conn, res_type)
        .map_err(e)?
        .ok_or_else(|| format!("the database holds no created {res_type}: run ers-load's create-referral first (sandbox data)"))?;
    if scenario == "read" {
        return Ok(Plan::Read { id: latest.id });
    }
    let mut rows = Vec::new();
    for version in store::versions_of_request(conn, &latest.request_id).map_err(e)? {
        let index = store::stored_index(conn, &version.res_type, &version.id).map_err(e)?;
        rows.push(Written { version, index });
    }
    let ubrn = rows
        .iter()
        .flat_map(|w| &w.index.unique)
        .find(|u| u.system == "https://fhir.nhs.uk/Id/UBRN")
        .map(|u| u.value.clone())
        .ok_or_else(|| format!("ServiceRequest/{} has no UBRN", latest.id))?;
    // UBRNs 9xx… of this run (the server's count up from 0000000…).
    let base = 900_000_000_000 + (chrono::Utc::now().timestamp() as u64 % 1_000) * 10_000_000;
    eprintln!(
        "ers-floor: copying request {} ({} versions: {})",
        latest.request_id,
        rows.len(),
        rows.iter()
            .map(|w| format!(
                "{} with {} index rows",
                w.version.res_type,
                w.index.tokens.len()
                    + w.index.strings.len()
                    + w.index.dates.len()
                    + w.index.refs.len()
                    + w.index.unique.len()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Plan::Create { rows, ubrn, base })
}

impl Plan {
    fn run(&self, conn: &mut DbConnection, n: u64) -> Result<(), StorageError> {
        match self {
            Plan::Read { id } => ers_schema::read_tx(conn, |c| {
                store::get_current(c, "Patient", id)?
                    .map(|_| ())
                    .ok_or(StorageError::Query(diesel::result::Error::NotFound))
            }),
            Plan::Create { rows, ubrn, base } => {
                // New ids and UBRN for this copy, the same everywhere they appear.
                let new_ubrn = format!("{:012}", base + n);
                let renames: Vec<(String, String)> = rows
                    .iter()
                    .map(|w| (w.version.id.clone(), ers_api::fhir::new_id()))
                    .chain([(ubrn.clone(), new_ubrn)])
                    .collect();
                let rename = |s: &str| {
                    renames
                        .iter()
                        .fold(s.to_owned(), |acc, (old, new)| acc.replace(old, new))
                };
                let now = chrono::Utc::now().naive_utc();
                // Each copy is its own request, as each create is.
                let request_id = uuid::Uuid::new_v4().to_string();
                let copies: Vec<(VersionRow, IndexEntries)> = rows
                    .iter()
                    .map(|w| {
                        let mut ix = w.index.clone();
                        ix.tokens.iter_mut().for_each(|t| t.code = rename(&t.code));
                        ix.refs
                            .iter_mut()
                            .for_each(|r| r.target_id = rename(&r.target_id));
                        ix.strings.iter_mut().for_each(|s| {
                            s.exact = rename(&s.exact);
                            s.norm = rename(&s.norm);
                        });
                        ix.unique
                            .iter_mut()
                            .for_each(|u| u.value = rename(&u.value));
                        let mut v = w.version.clone();
                        v.id = rename(&v.id);
                        v.content = rename(&v.content);
                        v.request_id.clone_from(&request_id);
                        (v, ix)
                    })
                    .collect();
                ers_schema::write_tx(conn, |c| {
                    for (v, ix) in &copies {
                        let author = Author {
                            user: v.author_user.clone(),
                            role: v.author_role.clone(),
                            org: v.author_org.clone(),
                            request_id: v.request_id.clone(),
                            client_id: v.client_id.clone(),
                            on_behalf_of: v.on_behalf_of.clone(),
                        };
                        store::insert_resource(
                            c,
                            &NewVersion {
                                res_type: &v.res_type,
                                id: &v.id,
                                version_id: 1,
                                last_updated: now,
                                content: &v.content,
                                author: &author,
                            },
                            ix,
                            &Default::default(),
                        )?;
                    }
                    let first = &copies[0].0;
                    store::record_events(
                        c,
                        &[NewEvent {
                            res_type: first.res_type.clone(),
                            res_id: first.id.clone(),
                            version_id: 1,
                            method: "create".into(),
                            occurred: now,
                        }],
                    )?;
                    let draft = AuditDraft {
                        user_id: first.author_user.clone(),
                        role: Some(first.author_role.clone()),
                        org: Some(first.author_org.clone()),
                        method: "POST".into(),
                        path: "/FHIR/R4/ServiceRequest".into(),
                        request_id: request_id.clone(),
                        ..Default::default()
                    };
                    let outcome = Outcome {
                        action: "C",
                        subtype: "create".into(),
                        status: 201,
                        description: None,
                    };
                    audit::record(
                        c,
                        &draft,
                        &outcome,
                        &[audit::Touched {
                            entity_type: first.res_type.clone(),
                            entity_id: first.id.clone(),
                            nhs_number: None,
                            ubrn: None,
                        }],
                    )
                    .map_err(|e| match e {
                        ers_api::service::ServiceError::Storage(s) => s,
                        other => StorageError::Config(other.to_string()),
                    })
                })
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    let ms = sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0;
    (ms * 10.0).round() / 10.0
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let url = std::env::var("ERS_DATABASE_URL")
        .map_err(|_| "set ERS_DATABASE_URL to the benchmark database".to_string())?;
    let pool = ers_schema::build_pool(&url, args.clients as u32 + 1).map_err(|e| e.to_string())?;
    let plan = {
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        Arc::new(template(&mut conn, &args.scenario)?)
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let stop = measure_from + Duration::from_secs(args.seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new((0u64, None::<String>)));
    let threads: Vec<_> = (0..args.clients)
        .map(|_| {
            let (pool, plan, counter, latencies, errors) = (
                pool.clone(),
                plan.clone(),
                counter.clone(),
                latencies.clone(),
                errors.clone(),
            );
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut conn = match pool.get() {
                    Ok(c) => c,
                    Err(e) => {
                        if let Ok(mut e2) = errors.lock() {
                            e2.0 += 1;
                            e2.1.get_or_insert(e.to_string());
                        }
                        return;
                    }
                };
                loop {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let outcome = plan.run(&mut conn, n);
                    let done = Instant::now();
                    if done >= stop {
                        break;
                    }
                    if sent < measure_from {
                        continue;
                    }
                    match outcome {
                        Ok(()) => mine.push(done - sent),
                        Err(e) => {
                            if let Ok(mut e2) = errors.lock() {
                                e2.0 += 1;
                                e2.1.get_or_insert(e.to_string());
                            }
                        }
                    }
                }
                if let Ok(mut all) = latencies.lock() {
                    all.extend(mine);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let mut lat = latencies.lock().map(|v| v.clone()).unwrap_or_default();
    lat.sort();
    let (errors, first_error) = errors.lock().map(|e| e.clone()).unwrap_or_default();
    let backend = ers_schema::DatabaseUrl::parse(&url)
        .map(|u| u.backend_name())
        .unwrap_or("unknown");
    Ok(json!({
        "label": args.label,
        "scenario": format!("floor:{}", args.scenario),
        "backend": backend,
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": lat.len() as u64 + errors,
        "errors": errors,
        "throughput_per_s": ((lat.len() as f64 / args.seconds as f64) * 10.0).round() / 10.0,
        "p50_ms": percentile(&lat, 50.0),
        "p95_ms": percentile(&lat, 95.0),
        "p99_ms": percentile(&lat, 99.0),
        "max_ms": percentile(&lat, 100.0),
        "first_error": first_error,
    }))
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!("usage: ers-floor --scenario create-referral|read [--clients N] [--seconds S] [--warmup S] [--label TEXT] [--json FILE]\n  (ERS_DATABASE_URL names the database, as for ers-server)");
        return ExitCode::from(2);
    };
    match run(&args) {
        Ok(result) => {
            println!(
                "{} floor:{} clients={} requests={} errors={} throughput={}/s p50={}ms p95={}ms p99={}ms max={}ms",
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
                if let Err(e) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| writeln!(f, "{result}"))
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
            eprintln!("ers-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

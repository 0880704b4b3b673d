//! `ers-server [serve | migrate | seed | expire | export | import | import-postcodes |
//! generate-directory | openapi]`.

use ers_api::config::Settings;
use ers_api::startup::{prepare_database, seed, Application};

/// mimalloc instead of glibc malloc: the server allocates and frees many small JSON values per
/// request from many threads, where glibc's arenas spent a quarter of a directory search's CPU
/// (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ! {
    eprintln!("usage: ers-server [serve | migrate | seed | expire | reindex [TYPE…] | export … | import … | import-postcodes FILE | generate-directory SERVICES SLOTS | generate-referrals N | backup --out FILE | restore FILE | openapi]\n  serve    run migrations, seed (ERS_SEED), serve HTTP (default)\n  migrate  apply database migrations, bring the search index to its definition, and exit\n  seed     apply migrations, create sandbox data and exit\n  expire   run UBRN expiry once: A&G requests without activity for ERS_UBRN_EXPIRY_DAYS lose their messages and attachments; idempotency keys older than ERS_IDEMPOTENCY_KEY_HOURS are forgotten\n  reindex [TYPE...]  rebuild the search index rows of every live resource of the types (all stored types if none), from their content (a server does it by itself, in the background, for a type whose index definition changed; migrate too, before it exits)\n  export [--type A,B] [--since INSTANT] --out DIR  every live resource of the types, one DIR/{{Type}}.ndjson each\n  import FILE|DIR ...  NDJSON resources (as export writes them), idempotent, referred-to types first\n  import-postcodes FILE  load postcode coordinates (ONS Postcode Directory CSV, or postcode,latitude,longitude)\n  generate-directory SERVICES SLOTS  add a synthetic Directory of Services of that size (benchmarks; needs outward codes imported)\n  generate-referrals N  add N synthetic referrals in every state (patients, appointments, an A&G conversation for every tenth; referring clinicians and bookable services must exist) for the report and export benchmarks\n  backup --out FILE  a consistent copy of the database, taken while it runs (SQLite VACUUM INTO; PostgreSQL pg_dump custom format)\n  restore FILE  replace the database with a backup (stop the servers first; SQLite: checked with PRAGMA integrity_check; PostgreSQL: pg_restore --clean)\n  openapi  print the OpenAPI document (as committed in openapi/openapi.json)");
    std::process::exit(2)
}

fn import_postcodes(settings: &Settings, path: &str) -> Result<(), String> {
    let (pool, _) = prepare_database(settings).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let report = ers_api::service::postcodes::import(&mut conn, std::io::BufReader::new(file))
        .map_err(|e| e.to_string())?;
    log::info!(
        "{path}: {} postcodes imported, {} rows skipped (no usable code or coordinates)",
        report.imported,
        report.skipped
    );
    Ok(())
}

fn generate_directory(settings: &Settings, services: usize, slots: usize) -> Result<(), String> {
    let (pool, _) = prepare_database(settings).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let total = services + slots;
    let mut progress = |written: usize| {
        log::info!(
            "{written} resources written (of about {total}), {:.0} s",
            started.elapsed().as_secs_f64()
        )
    };
    let r = ers_api::service::synthetic::directory(&mut conn, services, slots, &mut progress)
        .map_err(|e| match e {
            ers_api::service::ServiceError::Invalid(issues) => format!(
                "a generated resource is invalid: {}",
                issues
                    .iter()
                    .map(|i| i.diagnostics.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            other => other.to_string(),
        })?;
    log::info!(
        "generated {} organisations, {} locations, {} services, {} schedules, {} slots in {:.0} s",
        r.organizations,
        r.locations,
        r.services,
        r.schedules,
        r.slots,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn generate_referrals(settings: &Settings, n: usize) -> Result<(), String> {
    let (pool, _) = prepare_database(settings).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    // Patients (n/4), referrals, appointments for about 62 % of them, and an A&G request with
    // about two messages for every tenth.
    let pb = bar((n + n / 4 + n * 62 / 100 + n * 3 / 10) as u64, "generating");
    let mut progress = |written: usize| pb.set_position(written as u64);
    let r = ers_api::service::synthetic::referrals(&mut conn, n, &mut progress)
        .map_err(|e| e.to_string())?;
    pb.finish_and_clear();
    println!(
        "generated {} patients, {} referrals, {} appointments, {} A&G requests with {} messages in {:.0} s",
        r.patients,
        r.referrals,
        r.appointments,
        r.advice,
        r.messages,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// `reindex [TYPE...]`: every live resource of the types (every stored type when none is
/// named) gets the index rows its content makes now.
fn reindex(settings: &Settings, types: &[String]) -> Result<(), String> {
    let (pool, _) = prepare_database(settings).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let pb = indicatif::ProgressBar::new_spinner();
    let mut progress = |t: &str, n: usize| pb.set_message(format!("{t}: {n} resources read"));
    let done = ers_api::service::reindex::run(&mut conn, types, &mut progress)
        .map_err(|e| e.to_string())?;
    pb.finish_and_clear();
    print_reindexed(&done);
    Ok(())
}

fn print_reindexed(done: &[ers_api::service::reindex::Reindexed]) {
    for r in done {
        println!(
            "{}: {} resources read, {} reindexed",
            r.res_type, r.resources, r.changed
        );
    }
}

/// `migrate`: the migrations, then the index brought to its definition (which a server does
/// in the background once it has started), waiting for an instance at it already.
fn migrate(settings: &Settings) -> Result<(), String> {
    let (pool, _) = prepare_database(settings).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let done = ers_api::service::reindex::catch_up(&mut conn, true)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    print_reindexed(&done);
    Ok(())
}

/// `export --type A,B --since INSTANT --out DIR`: one `{Type}.ndjson` per type.
fn export(settings: &Settings, args: &[String]) -> Result<(), String> {
    use ers_api::fhir::registry;
    use std::io::Write;
    let usage =
        "usage: ers-server export [--type Type,Type] [--since 2026-11-01T00:00:00Z] --out DIR";
    let mut types: Option<String> = None;
    let mut since = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value; {usage}"))
        };
        match a.as_str() {
            "--type" => types = Some(value()?),
            "--since" => {
                let v = value()?;
                since = Some(
                    ers_api::fhir::datetime::range(&v)
                        .map(|(low, _)| low)
                        .ok_or_else(|| {
                            format!("--since '{v}' is not a date-time (2026-11-01T00:00:00Z)")
                        })?,
                )
            }
            "--out" => out = Some(value()?),
            other => return Err(format!("unknown option '{other}'; {usage}")),
        }
    }
    let out = std::path::PathBuf::from(out.ok_or(usage)?);
    let defs: Vec<&'static registry::ResourceDef> = match types {
        None => registry::RESOURCES.iter().collect(),
        Some(list) => list
            .split(',')
            .map(|t| {
                registry::find(t.trim()).ok_or_else(|| {
                    format!("--type: '{t}' is not a resource type this server holds")
                })
            })
            .collect::<Result<_, _>>()?,
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (pool, _) = prepare_database(settings).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let until = ers_api::service::transfer::now();
    let counts = ers_api::service::transfer::count(&mut conn, &defs, since, until)
        .map_err(|e| e.to_string())?;
    let pb = bar(counts.iter().sum(), "exporting");
    let mut files: std::collections::HashMap<String, std::io::BufWriter<std::fs::File>> =
        std::collections::HashMap::new();
    let mut write = |t: &str, content: &str| -> std::io::Result<()> {
        if !files.contains_key(t) {
            let f = std::fs::File::create(out.join(format!("{t}.ndjson")))?;
            files.insert(t.to_owned(), std::io::BufWriter::new(f));
        }
        if let Some(f) = files.get_mut(t) {
            f.write_all(content.as_bytes())?;
            f.write_all(b"\n")?;
        }
        pb.inc(1);
        Ok(())
    };
    let n = ers_api::service::transfer::dump(&mut conn, &defs, since, until, &mut write)
        .map_err(|e| e.to_string())?;
    for (_, mut f) in files {
        f.flush().map_err(|e| e.to_string())?;
    }
    pb.finish_and_clear();
    println!("exported {n} resources to {}", out.display());
    Ok(())
}

/// `import PATH...`: NDJSON files (or directories of them), in dependency order.
fn import(settings: &Settings, args: &[String]) -> Result<(), String> {
    use std::io::BufRead;
    if args.is_empty() {
        return Err("usage: ers-server import FILE.ndjson|DIR ...".into());
    }
    let mut files = Vec::new();
    for a in args {
        let p = std::path::PathBuf::from(a);
        if p.is_dir() {
            for e in std::fs::read_dir(&p).map_err(|e| format!("{a}: {e}"))? {
                let path = e.map_err(|e| format!("{a}: {e}"))?.path();
                if path.extension().is_some_and(|x| x == "ndjson") {
                    files.push(path);
                }
            }
        } else {
            files.push(p);
        }
    }
    // Each file in the order of the type of its first resource (referred-to types first);
    // what the server derives itself (Provenance) or keeps apart (subscriptions) is skipped.
    let mut ranked = Vec::new();
    let mut total = 0u64;
    for f in files {
        let file = std::fs::File::open(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let mut first = None;
        let mut lines_in_file = 0u64;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{}: {e}", f.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            lines_in_file += 1;
            if first.is_none() {
                first = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("resourceType")?.as_str().map(str::to_owned));
            }
        }
        let kind = first.unwrap_or_default();
        let rank = ers_api::service::transfer::import_rank(&kind);
        if rank == ers_api::service::transfer::IMPORT_ORDER.len() {
            println!(
                "skipping {}: {kind} resources are not imported (importable: {})",
                f.display(),
                ers_api::service::transfer::IMPORT_ORDER.join(", ")
            );
            continue;
        }
        total += lines_in_file;
        ranked.push((rank, f));
    }
    ranked.sort();
    let (pool, _) = prepare_database(settings).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let pb = bar(total, "importing");
    let mut sum = ers_api::service::transfer::Imported::default();
    let mut deferred: Vec<serde_json::Value> = Vec::new();
    for (_, f) in ranked {
        let name = f.display().to_string();
        let file = std::fs::File::open(&f).map_err(|e| format!("{name}: {e}"))?;
        let mut batch = Vec::new();
        let mut first_line = 1;
        let lines: Vec<String> = std::io::BufReader::new(file)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{name}: {e}"))?;
        let n = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            if !line.trim().is_empty() {
                let v: serde_json::Value = serde_json::from_str(&line)
                    .map_err(|e| format!("{name}:{}: not JSON: {e}", i + 1))?;
                batch.push(v);
            }
            if batch.len() == 500 || (i + 1 == n && !batch.is_empty()) {
                let size = batch.len() as u64;
                let (done, later) =
                    ers_api::service::transfer::import_batch(&mut conn, std::mem::take(&mut batch))
                        .map_err(|e| format!("{name}:{first_line}-{}: {e}", i + 1))?;
                deferred.extend(later);
                sum.created += done.created;
                sum.updated += done.updated;
                sum.unchanged += done.unchanged;
                pb.inc(size);
                first_line = i + 2;
            }
        }
    }
    // The references that had to wait (to resources imported later), now everything is in.
    for chunk in deferred.chunks(500) {
        let (done, still) = ers_api::service::transfer::import_batch(&mut conn, chunk.to_vec())
            .map_err(|e| format!("second pass: {e}"))?;
        if let Some(v) = still.first() {
            return Err(format!(
                "{}/{} refers to resources that are in none of the files",
                v["resourceType"].as_str().unwrap_or_default(),
                v["id"].as_str().unwrap_or_default()
            ));
        }
        // A second pass turns a created resource into an updated one: counted once.
        sum.updated += done.updated;
        sum.created -= done.updated.min(sum.created);
    }
    pb.finish_and_clear();
    println!(
        "imported {} resources: {} created, {} updated, {} unchanged",
        sum.total(),
        sum.created,
        sum.updated,
        sum.unchanged
    );
    Ok(())
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // ERS_LOG_FORMAT=json: one JSON object a line (time, level, target, message), for a log
    // collector; access lines carry request_id and correlation_id in the message.
    if std::env::var("ERS_LOG_FORMAT").as_deref() == Ok("json") {
        logger.format(|buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "{}",
                serde_json::json!({
                    "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "level": record.level().as_str(),
                    "target": record.target(),
                    "message": record.args().to_string(),
                })
            )
        });
    }
    logger.init();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    let result = match command.as_str() {
        "serve" => match Application::build(settings.clone()).await {
            Ok(app) => {
                log::info!(
                    "listening on http://{}/FHIR/R4 (port {})",
                    settings.bind,
                    app.port()
                );
                app.run_until_stopped().await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
        "migrate" => migrate(&settings),
        "seed" => prepare_database(&settings)
            .and_then(|(pool, _)| {
                seed(
                    &pool,
                    &Settings {
                        seed: ers_api::config::SeedMode::Sandbox,
                        ..settings.clone()
                    },
                )
            })
            .map_err(|e| e.to_string()),
        "expire" => prepare_database(&settings)
            .map_err(|e| e.to_string())
            .and_then(|(pool, _)| {
                let r = ers_api::startup::expire(&pool, settings.ubrn_expiry_days)?;
                let keys = ers_api::startup::forget_idempotency_keys(
                    &pool,
                    settings.idempotency_key_hours,
                )?;
                Ok((r, keys))
            })
            .map(|(r, keys)| {
                println!(
                    "UBRN expiry ({} days): {} advice requests expired; {} messages, {} documents and {} uploads deleted; {keys} idempotency keys older than {} hours forgotten",
                    settings.ubrn_expiry_days, r.requests, r.messages, r.documents, r.binaries, settings.idempotency_key_hours
                );
            }),
        "import-postcodes" => match std::env::args().nth(2) {
            None => Err("usage: ers-server import-postcodes FILE (ONS Postcode Directory CSV, or postcode,latitude,longitude)".to_string()),
            Some(path) => import_postcodes(&settings, &path),
        },
        "generate-directory" => {
            let n = |i: usize| std::env::args().nth(i).and_then(|v| v.replace('_', "").parse::<usize>().ok());
            match (n(2), n(3)) {
                (Some(services), Some(slots)) => generate_directory(&settings, services, slots),
                _ => Err("usage: ers-server generate-directory SERVICES SLOTS (e.g. 10000 1000000)".to_string()),
            }
        }
        "reindex" => reindex(&settings, &std::env::args().skip(2).collect::<Vec<_>>()),
        "export" => export(&settings, &std::env::args().skip(2).collect::<Vec<_>>()),
        "import" => import(&settings, &std::env::args().skip(2).collect::<Vec<_>>()),
        "generate-referrals" => match std::env::args()
            .nth(2)
            .and_then(|v| v.replace('_', "").parse::<usize>().ok())
        {
            Some(n) => generate_referrals(&settings, n),
            None => Err("usage: ers-server generate-referrals N (e.g. 1000000)".to_string()),
        },
        "openapi" => {
            print!("{}", ers_api::http::openapi::document_json());
            Ok(())
        }
        "backup" => match std::env::args().skip(2).collect::<Vec<_>>().as_slice() {
            [flag, out] if flag == "--out" => {
                ers_schema::backup::backup(&settings.database_url, std::path::Path::new(out))
                    .map(|w| println!("{} backup written to {out}: {} bytes", w.backend, w.bytes))
                    .map_err(|e| e.to_string())
            }
            _ => Err("usage: ers-server backup --out FILE".to_string()),
        },
        "restore" => match std::env::args().nth(2) {
            Some(from) => {
                ers_schema::backup::restore(&settings.database_url, std::path::Path::new(&from))
                    .map(|()| println!("restored {from} into the configured database"))
                    .map_err(|e| e.to_string())
            }
            None => Err("usage: ers-server restore FILE (stop the servers using the database first)".to_string()),
        },
        "-h" | "--help" | "help" => usage(),
        other => {
            eprintln!("unknown command '{other}'");
            usage()
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

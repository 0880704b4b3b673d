//! `ers-server [serve | migrate | seed | expire | import-postcodes | generate-directory | openapi]`.

use ers_api::config::Settings;
use ers_api::startup::{prepare_database, seed, Application};

fn usage() -> ! {
    eprintln!("usage: ers-server [serve | migrate | seed | expire | import-postcodes FILE | generate-directory SERVICES SLOTS | openapi]\n  serve    run migrations, seed (ERS_SEED), serve HTTP (default)\n  migrate  apply database migrations and exit\n  seed     apply migrations, create sandbox data and exit\n  expire   run UBRN expiry once: A&G requests without activity for ERS_UBRN_EXPIRY_DAYS lose their messages and attachments\n  import-postcodes FILE  load postcode coordinates (ONS Postcode Directory CSV, or postcode,latitude,longitude)\n  generate-directory SERVICES SLOTS  add a synthetic Directory of Services of that size (benchmarks; needs outward codes imported)\n  openapi  print the OpenAPI document (as committed in openapi/openapi.json)");
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

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
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
        "migrate" => prepare_database(&settings)
            .map(|_| ())
            .map_err(|e| e.to_string()),
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
                ers_api::startup::expire(&pool, settings.ubrn_expiry_days)
            })
            .map(|r| {
                println!(
                    "UBRN expiry ({} days): {} advice requests expired; {} messages, {} documents and {} uploads deleted",
                    settings.ubrn_expiry_days, r.requests, r.messages, r.documents, r.binaries
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
        "openapi" => {
            print!("{}", ers_api::http::openapi::document_json());
            Ok(())
        }
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

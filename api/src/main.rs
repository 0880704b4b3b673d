//! `ers-server [serve | migrate | seed]`.

use ers_api::config::Settings;
use ers_api::startup::{prepare_database, seed, Application};

fn usage() -> ! {
    eprintln!("usage: ers-server [serve | migrate | seed | import-postcodes FILE | openapi]\n  serve    run migrations, seed (ERS_SEED), serve HTTP (default)\n  migrate  apply database migrations and exit\n  seed     apply migrations, create sandbox data and exit\n  import-postcodes FILE  load postcode coordinates (ONS Postcode Directory CSV, or postcode,latitude,longitude)\n  openapi  print the OpenAPI document (as committed in openapi/openapi.json)");
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
        "import-postcodes" => match std::env::args().nth(2) {
            None => Err("usage: ers-server import-postcodes FILE (ONS Postcode Directory CSV, or postcode,latitude,longitude)".to_string()),
            Some(path) => import_postcodes(&settings, &path),
        },
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

//! `ers-conformance --base-url URL [--token T --business-function BF --ods ODS | --sandbox-user SDS]
//!  [--junit FILE] [--html FILE]`
//!
//! Black-box checks of an e-RS-like FHIR R4 server over HTTP: the CapabilityStatement, the
//! RESTful interactions and versioning, search, error shapes and security. Every FHIR resource
//! in every response is validated against UK Core; a validation error fails the check.

mod checks;
mod client;
mod report;

use std::process::ExitCode;

struct Args {
    base_url: String,
    token: Option<String>,
    business_function: String,
    ods: String,
    sandbox_user: Option<String>,
    junit: Option<String>,
    html: Option<String>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: ers-conformance --base-url URL [--token T] [--business-function BF] [--ods ODS] [--sandbox-user SDS_ID] [--junit FILE] [--html FILE]\n\
         \n  --base-url          the FHIR base, e.g. http://127.0.0.1:8080/FHIR/R4\n\
         \n  --token             a bearer token for a user who may create, read, update and delete Patients\n\
         \n  --business-function the role the token acts in (default REFERRING_CLINICIAN)\n\
         \n  --ods               the organisation it acts for (default R69)\n\
         \n  --sandbox-user      instead of --token: get one from <root>/oauth2/sandbox/token\n\
         \n  --junit / --html    write the reports there"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        base_url: String::new(),
        token: None,
        business_function: "REFERRING_CLINICIAN".into(),
        ods: "R69".into(),
        sandbox_user: None,
        junit: None,
        html: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next();
        match flag.as_str() {
            "--base-url" => a.base_url = value()?.trim_end_matches('/').to_owned(),
            "--token" => a.token = Some(value()?),
            "--business-function" => a.business_function = value()?,
            "--ods" => a.ods = value()?,
            "--sandbox-user" => a.sandbox_user = Some(value()?),
            "--junit" => a.junit = Some(value()?),
            "--html" => a.html = Some(value()?),
            _ => return None,
        }
    }
    (!a.base_url.is_empty()).then_some(a)
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        return usage();
    };
    let results = actix_rt::System::new().block_on(async {
        let mut client = client::Client::new(&args.base_url, &args.business_function, &args.ods);
        let token = match (&args.token, &args.sandbox_user) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(user)) => client.sandbox_token(user).await,
            (None, None) => Err("give --token or --sandbox-user".to_string()),
        };
        match token {
            Ok(t) => {
                client.token = t;
                let referrer = (args.business_function == "REFERRING_CLINICIAN")
                    .then_some(args.sandbox_user.as_deref())
                    .flatten();
                Ok(checks::run_all(&client, referrer).await)
            }
            Err(e) => Err(e),
        }
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ers-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report::summary(&results));
    for (path, text) in [
        (args.junit.as_ref(), report::junit(&results)),
        (args.html.as_ref(), report::html(&results, &args.base_url)),
    ] {
        if let Some(p) = path {
            if let Err(e) = std::fs::write(p, text) {
                eprintln!("ers-conformance: cannot write {p}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if results.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! FHIR Bulk Data `$export`: a bulk client's round trip (kick-off, polling, manifest, NDJSON
//! files) sees exactly what its searches see, a job survives the instance that took it, and
//! cancelling, expiry and bad requests behave as the specification says.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::helpers::*;
use crate::referrals::{world_with, World};
use ers_api::config::{SeedMode, Settings};
use serde_json::{json, Value};

fn settings(exports: bool, file_resources: usize, ttl: i64) -> Settings {
    Settings {
        seed: SeedMode::Sandbox,
        rate_limit_per_sec: 0,
        exports,
        export_file_resources: file_resources,
        export_ttl_secs: ttl,
        ..Settings::default()
    }
}

async fn as_rc(app: &TestApp, w: &World, method: &str, path: &str, prefer: bool) -> Reply {
    let mut r = app.as_user(&w.rc, method, path, "REFERRING_CLINICIAN", "R69");
    if prefer {
        r = r.insert_header(("Prefer", "respond-async"));
    }
    app.send(r, None).await
}

/// Kicks off and returns the status URL.
async fn kick_off(app: &TestApp, w: &World, path: &str) -> String {
    let r = as_rc(app, w, "GET", path, true).await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.header("content-location").expect("Content-Location")
}

/// Polls until the export is done; returns the manifest and the progress headers seen.
async fn poll(app: &TestApp, w: &World, url: &str) -> (Value, Vec<String>) {
    let mut progress = Vec::new();
    for _ in 0..200 {
        let r = as_rc(app, w, "GET", url, false).await;
        match r.status.as_u16() {
            200 => return (r.json(), progress),
            202 => {
                progress.push(r.header("x-progress").expect("X-Progress"));
                assert!(r.header("retry-after").is_some());
            }
            s => panic!("status {s}: {}", r.text()),
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the export did not finish in 20 s");
}

/// Every resource of the manifest's files, by type.
async fn download(app: &TestApp, w: &World, manifest: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for f in manifest["output"].as_array().expect("output") {
        let r = as_rc(app, w, "GET", f["url"].as_str().expect("url"), false).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/fhir+ndjson")
        );
        let lines: Vec<Value> = r
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line one resource"))
            .collect();
        assert_eq!(lines.len() as i64, f["count"].as_i64().expect("count"));
        assert!(lines.iter().all(|x| x["resourceType"] == f["type"]));
        out.extend(lines);
    }
    out
}

fn ids_in_order(resources: &[Value]) -> Vec<String> {
    resources
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

fn ids_of(resources: &[Value], t: &str) -> BTreeSet<String> {
    resources
        .iter()
        .filter(|r| r["resourceType"] == t)
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The ids a search by the referrer finds, all pages.
async fn searched(app: &TestApp, w: &World, query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut next = Some(format!("{query}&_count=200"));
    while let Some(q) = next.take() {
        let b = as_rc(app, w, "GET", &q, false).await.json();
        for e in b["entry"].as_array().cloned().unwrap_or_default() {
            if e["search"]["mode"] == "match" {
                out.insert(e["resource"]["id"].as_str().expect("id").to_owned());
            }
        }
        next = link(&b, "next");
    }
    out
}

#[actix_web::test]
async fn a_bulk_client_exports_what_it_may_see_in_files_and_since_a_time() {
    let w = world_with(settings(true, 5, 3600)).await;
    let app = &w.app;
    // Without Prefer: respond-async, nothing starts.
    let r = as_rc(app, &w, "GET", "$export?_type=ServiceRequest", false).await;
    let d = r.assert_outcome(400, "value");
    assert!(d.contains("respond-async"), "{d}");

    let url = kick_off(app, &w, "$export?_type=ServiceRequest,Appointment,Patient").await;
    assert!(url.contains("/$export-status/"), "{url}");
    let (manifest, _) = poll(app, &w, &url).await;
    assert!(manifest["transactionTime"].as_str().is_some());
    assert_eq!(manifest["requiresAccessToken"], true);
    assert!(manifest["request"]
        .as_str()
        .expect("request")
        .ends_with("$export?_type=ServiceRequest,Appointment,Patient"));
    let files = manifest["output"].as_array().expect("output");
    assert!(files.len() > 3, "5 resources per file: {manifest}");
    let all = download(app, &w, &manifest).await;
    // No resource twice, and exactly what the caller's searches find (organisation scoping).
    let mut keys: Vec<(String, String)> = all
        .iter()
        .map(|r| (r["resourceType"].to_string(), r["id"].to_string()))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a resource exported twice");
    for t in ["ServiceRequest", "Appointment", "Patient"] {
        assert_eq!(
            ids_of(&all, t),
            searched(app, &w, &format!("{t}?_sort=_id")).await,
            "{t}"
        );
    }
    assert!(!ids_of(&all, "ServiceRequest").is_empty());

    // Files are stored gzip-compressed: sent so to a client that accepts gzip, the same
    // NDJSON uncompressed to one that does not (above) or refuses it.
    let file = files[0]["url"].as_str().expect("url");
    let plain = as_rc(app, &w, "GET", file, false).await;
    assert_eq!(plain.header("content-encoding"), None);
    for (accept, gzipped) in [
        ("gzip", true),
        ("br;q=1.0, gzip;q=0.5", true),
        ("*", true),
        ("gzip;q=0, identity", false),
        ("identity", false),
    ] {
        let r = app
            .send(
                app.as_user(&w.rc, "GET", file, "REFERRING_CLINICIAN", "R69")
                    .insert_header(("Accept-Encoding", accept)),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
        let body = if gzipped {
            assert_eq!(
                r.header("content-encoding").as_deref(),
                Some("gzip"),
                "{accept}"
            );
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut out)
                .expect("a gzip body");
            assert!(out.len() > r.body.len(), "{accept}: compressed");
            out
        } else {
            assert_eq!(r.header("content-encoding"), None, "{accept}");
            r.body.clone()
        };
        assert_eq!(body, plain.body, "{accept}");
    }

    // Another organisation's user cannot poll or download it.
    let other = app
        .send(
            app.as_user(&w.spc, "GET", &url, "SERVICE_PROVIDER_CLINICIAN", "RCD"),
            None,
        )
        .await;
    other.assert_outcome(404, "not-found");
    let file = files[0]["url"].as_str().expect("url");
    app.send(
        app.as_user(&w.spc, "GET", file, "SERVICE_PROVIDER_CLINICIAN", "RCD"),
        None,
    )
    .await
    .assert_outcome(404, "not-found");

    // _since: only what changed after it.
    let since = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    let id = w.new_referral(&[&w.bookable], "URGENT").await;
    let url = kick_off(
        app,
        &w,
        &format!(
            "$export?_type=ServiceRequest,Provenance&_since={}",
            since.replace(':', "%3A")
        ),
    )
    .await;
    let (manifest, _) = poll(app, &w, &url).await;
    let changed = download(app, &w, &manifest).await;
    // Its Provenance too: one for each version written since.
    let provenance = searched(app, &w, &format!("Provenance?target=ServiceRequest/{id}")).await;
    assert!(provenance.contains(&format!("ServiceRequest.1.{id}")));
    assert_eq!(ids_of(&changed, "Provenance"), provenance);
    assert_eq!(ids_of(&changed, "ServiceRequest"), BTreeSet::from([id]));

    // Patient level: the compartment's types only.
    let url = kick_off(app, &w, "Patient/$export").await;
    let (manifest, _) = poll(app, &w, &url).await;
    let types: BTreeSet<&str> = manifest["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter_map(|f| f["type"].as_str())
        .collect();
    assert!(types.contains("Patient") && types.contains("ServiceRequest"));
    assert!(!types.contains("HealthcareService") && !types.contains("Slot"));

    // Cancel: 202, then the job and its files are gone.
    let r = as_rc(app, &w, "DELETE", &url, false).await;
    assert_eq!(r.status, 202, "{}", r.text());
    as_rc(app, &w, "GET", &url, false)
        .await
        .assert_outcome(404, "not-found");

    // Every kick-off and download is audited.
    let auditor = sign(&claims("555031998112", &[("AUDITOR", "RR8")]));
    let audit = app
        .send(
            app.as_user(
                &auditor,
                "GET",
                "AuditEvent?subtype=export&_count=100",
                "AUDITOR",
                "RR8",
            ),
            None,
        )
        .await
        .json();
    assert!(
        audit["total"].as_i64().expect("total") as usize >= 3 + files.len(),
        "{audit}"
    );
}

#[actix_web::test]
async fn an_export_outlives_its_instance_and_its_files_expire() {
    // Instance A takes kick-offs but runs no jobs (it could have stopped): the job waits in
    // the database, and instance B, started later on the same database, runs it.
    let w = world_with(settings(false, 7, 2)).await;
    let url = kick_off(&w.app, &w, "$export?_type=ServiceRequest,Slot").await;
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    let r = as_rc(&w.app, &w, "GET", &url, false).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("x-progress").as_deref(), Some("queued"));
    let b = spawn_on(&w.app.database_url, settings(true, 7, 2)).await;
    let path = url.split("/FHIR/R4/").nth(1).expect("path").to_owned();
    let (manifest, _) = poll(&b, &w, &path).await;
    let all = download(&b, &w, &manifest).await;
    assert_eq!(
        ids_of(&all, "Slot").len() as i64,
        w.app.search("Slot?_summary=count").await["total"]
            .as_i64()
            .expect("total")
    );
    // The first instance answers for it too: the state is in the database.
    let r = as_rc(&w.app, &w, "GET", &url, false).await;
    assert_eq!(r.status, 200);
    // Two seconds after completion the files have expired.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    as_rc(&b, &w, "GET", &path, false)
        .await
        .assert_outcome(404, "not-found");
    let file = manifest["output"][0]["url"].as_str().expect("url");
    as_rc(&b, &w, "GET", file, false)
        .await
        .assert_outcome(404, "not-found");
}

#[actix_web::test]
async fn a_job_whose_worker_stopped_resumes_after_its_last_file() {
    // Instance A runs no jobs. Two identical exports: the first is the whole answer; the
    // second is made to look like a worker wrote its first files and stopped (running, its
    // position after the fourth resource, its lease lapsed). Instance B takes it over and
    // writes exactly the resources after that position, in the same order.
    let w = world_with(settings(false, 3, 3600)).await;
    let whole = kick_off(&w.app, &w, "$export?_type=ServiceRequest").await;
    let resumed = kick_off(&w.app, &w, "$export?_type=ServiceRequest").await;
    let job_id = |url: &str| url.rsplit('/').next().expect("job id").to_owned();
    let pool = ers_schema::build_pool(&w.app.database_url, 1).expect("pool");
    let mut conn = pool.get().expect("connection");
    let far = chrono::Utc::now().naive_utc() + chrono::Duration::hours(1);
    // Leased by a worker that is not there, so B leaves it until the lease is given up.
    let mut job = ers_schema::exports::job(&mut conn, &job_id(&resumed))
        .expect("read")
        .expect("job");
    job.status = "running".into();
    job.lease_owner = Some("stopped-instance".into());
    job.lease_until = Some(far);
    ers_schema::exports::save_job(&mut conn, &job).expect("save");
    let b = spawn_on(&w.app.database_url, settings(true, 3, 3600)).await;
    let path = |url: &str| url.split("/FHIR/R4/").nth(1).expect("path").to_owned();
    let (manifest, _) = poll(&b, &w, &path(&whole)).await;
    let all = ids_in_order(&download(&b, &w, &manifest).await);
    assert!(all.len() > 6, "{all:?}");
    let fourth = ers_schema::store::get_current(&mut conn, "ServiceRequest", &all[3])
        .expect("read")
        .expect("row");
    let cursor = ers_schema::exports::Cursor::at(fourth.last_updated, &fourth.id);
    job.position = format!("0|{}", cursor.encode());
    job.exported = 4;
    job.lease_until = Some(far - chrono::Duration::hours(2));
    ers_schema::exports::save_job(&mut conn, &job).expect("save");
    let (manifest, _) = poll(&b, &w, &path(&resumed)).await;
    let rest = ids_in_order(&download(&b, &w, &manifest).await);
    assert_eq!(rest, all[4..].to_vec());
}

#[actix_web::test]
async fn bad_kick_offs_are_refused_naming_the_problem() {
    let w = world_with(settings(true, 100, 3600)).await;
    let app = &w.app;
    for (path, code, what) in [
        ("$export?_type=Foo", "invalid", "Foo"),
        ("$export?_type=", "invalid", "_type"),
        ("$export?_outputFormat=text/csv", "invalid", "_outputFormat"),
        (
            "$export?_typeFilter=Patient%3Factive%3Dtrue",
            "structure",
            "'_typeFilter' is not a parameter of $export; it takes: _outputFormat, _since, _type",
        ),
        ("$export?_since=yesterday", "invalid", "_since"),
        (
            "$export?_since=2026-01-01T00:00:00Z&_since=2026-02-01T00:00:00Z",
            "structure",
            "given 2 times",
        ),
        ("$export?colour=blue", "structure", "colour"),
        (
            "Patient/$export?_type=Slot",
            "invalid",
            "Patient compartment",
        ),
    ] {
        let r = as_rc(app, &w, "GET", path, true).await;
        let d = r.assert_outcome(400, code);
        assert!(d.contains(what), "{path}: {d}");
    }
    // A POSTed kick-off's inputs are typed as Bulk Data defines them.
    let posted = |parameter: Value| {
        let req = app
            .as_user(&w.rc, "POST", "$export", "REFERRING_CLINICIAN", "R69")
            .insert_header(("Prefer", "respond-async"))
            .insert_header(("Content-Type", "application/fhir+json"));
        let body = json!({"resourceType": "Parameters", "parameter": parameter});
        app.send(req, Some(body.to_string().into_bytes()))
    };
    let r = posted(json!([{"name": "_since", "valueString": "2026-01-01T00:00:00Z"}])).await;
    r.assert_outcome(400, "value");
    r.assert_issue("INVALID_VALUE", "Parameters.parameter[_since].valueString");
    // A type the role may not search may not be exported either.
    let analyst = sign(&claims("555031998111", &[("INFORMATION_ANALYST", "RR8")]));
    let r = app
        .send(
            app.as_user(
                &analyst,
                "GET",
                "$export?_type=ServiceRequest",
                "INFORMATION_ANALYST",
                "RR8",
            )
            .insert_header(("Prefer", "respond-async")),
            None,
        )
        .await;
    let d = r.assert_outcome(403, "forbidden");
    assert!(d.contains("ServiceRequest"), "{d}");
    // Unknown jobs and files.
    as_rc(app, &w, "GET", "$export-status/nope", false)
        .await
        .assert_outcome(404, "not-found");
    as_rc(app, &w, "GET", "$export-file/nope/0", false)
        .await
        .assert_outcome(404, "not-found");
}

/// Runs the `ers-server` binary against a database, off the test's runtime (the servers under
/// test share it); returns its standard output.
async fn cli(database_url: &str, args: &[&str]) -> String {
    let (url, args): (String, Vec<String>) = (
        database_url.to_owned(),
        args.iter().map(|a| (*a).to_owned()).collect(),
    );
    actix_web::rt::task::spawn_blocking(move || run_cli(&url, &args))
        .await
        .expect("the CLI ran")
}

fn run_cli(database_url: &str, args: &[String]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ers-server"))
        .args(args)
        .env("ERS_DATABASE_URL", database_url)
        .env("ERS_SEED", "none")
        .env("RUST_LOG", "warn")
        .output()
        .expect("ers-server runs");
    assert!(
        out.status.success(),
        "ers-server {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value with every object's keys in sorted order (so equal content prints the same).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<(String, Value)> = o.into_iter().collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(keys.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The resources of an export directory by type, without what each server sets per version.
fn exported(dir: &std::path::Path) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("dir") {
        let path = e.expect("entry").path();
        let t = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let lines: BTreeSet<String> = std::fs::read_to_string(&path)
            .expect("file")
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).expect("json");
                if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
                    m.shift_remove("versionId");
                    m.shift_remove("lastUpdated");
                }
                sorted(v).to_string()
            })
            .collect();
        out.insert(t, lines);
    }
    out
}

#[actix_web::test]
async fn the_cli_exports_and_imports_ndjson_idempotently() {
    let w = world_with(settings(false, 100, 3600)).await;
    let dir = std::env::temp_dir().join(format!("ers-export-{}", uuid::Uuid::new_v4().simple()));
    let d = dir.to_str().expect("path");
    let said = cli(&w.app.database_url, &["export", "--out", d]).await;
    assert!(said.starts_with("exported "), "{said}");
    let before = exported(&dir);
    assert!(before["ServiceRequest"].len() > 10 && before.contains_key("Slot"));

    // Into an empty database, twice: the second import changes nothing.
    let fresh = database_url();
    let first = cli(&fresh, &["import", d]).await;
    assert!(
        first.contains("skipping") && first.contains("Provenance"),
        "{first}"
    );
    let n: usize = before
        .iter()
        .filter(|(t, _)| t.as_str() != "Provenance")
        .map(|(_, v)| v.len())
        .sum();
    assert!(
        first.contains(&format!("imported {n} resources")) && first.contains(" 0 unchanged"),
        "{first}"
    );
    let again = cli(&fresh, &["import", d]).await;
    assert!(
        again.contains(&format!("0 created, 0 updated, {n} unchanged")),
        "{again}"
    );

    // What the copy holds exports the same (Provenance apart: each server writes its own).
    let dir2 = std::env::temp_dir().join(format!("ers-export-{}", uuid::Uuid::new_v4().simple()));
    cli(&fresh, &["export", "--type", "ServiceRequest,Appointment,Patient,Slot,HealthcareService,DocumentReference,Communication", "--out", dir2.to_str().expect("path")]).await;
    let after = exported(&dir2);
    for (t, lines) in &after {
        assert_eq!(lines, &before[t], "{t} differs after the round trip");
    }
    assert_eq!(after.len(), 7);

    // The copy's reports agree too (its reporting rows were rebuilt by the import).
    let copy = spawn_on(&fresh, settings(false, 100, 3600)).await;
    let analyst = sign(&claims("555031998111", &[("INFORMATION_ANALYST", "R69")]));
    let mut usage = Vec::new();
    let original = w.app.reconnected();
    for app in [&original, &copy] {
        let r = app
            .send(
                app.as_user(
                    &analyst,
                    "GET",
                    "/reports/usage?group=organisation",
                    "INFORMATION_ANALYST",
                    "R69",
                ),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        usage.push(r.text());
    }
    assert_eq!(usage[0], usage[1]);
    assert!(usage[0].lines().count() > 2, "{}", usage[0]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

#[actix_web::test]
async fn an_export_may_be_kicked_off_with_a_parameters_body() {
    let w = world_with(settings(true, 100, 3600)).await;
    let app = &w.app;
    let since = "2000-01-01T00:00:00Z";
    let req = app
        .as_user(&w.rc, "POST", "$export", "REFERRING_CLINICIAN", "R69")
        .insert_header(("Prefer", "respond-async"))
        .insert_header(("Content-Type", "application/fhir+json"));
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"},
        {"name": "_type", "valueString": "ServiceRequest"},
        {"name": "_since", "valueInstant": since},
        {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
    ]});
    let r = app.send(req, Some(body.to_string().into_bytes())).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let url = r.header("content-location").expect("Content-Location");
    let (manifest, _) = poll(app, &w, &url).await;
    let all = download(app, &w, &manifest).await;
    let types: BTreeSet<String> = all
        .iter()
        .filter_map(|r| r["resourceType"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        types,
        BTreeSet::from(["Patient".to_owned(), "ServiceRequest".to_owned()]),
        "{manifest}"
    );
    // The same export as its GET form.
    let r = as_rc(
        app,
        &w,
        "GET",
        &format!("$export?_type=Patient,ServiceRequest&_since={since}"),
        true,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let (again, _) = poll(app, &w, &r.header("content-location").expect("url")).await;
    let other = download(app, &w, &again).await;
    for t in ["Patient", "ServiceRequest"] {
        assert!(!ids_of(&all, t).is_empty(), "{t}");
        assert_eq!(ids_of(&all, t), ids_of(&other, t), "{t}");
    }
}

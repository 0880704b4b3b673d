//! Reliability: a server killed mid-write loses no acknowledged write and leaves nothing
//! half-written; the database going away gives quick 503s and the server recovers by itself;
//! backups restore to the same contents.

use std::time::{Duration, Instant};

use crate::booking::{appointment, clinic, define, free_slots, routine_slot};
use crate::helpers::*;
use crate::referrals::{referral, state, world};
use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{json, Value};

const RC: (&str, &str) = ("REFERRING_CLINICIAN", "R69");

/// What the clients were told succeeded.
#[derive(Default)]
struct Acknowledged {
    /// The server died under this client (it did not run out of work first).
    cut: bool,
    referrals: Vec<String>,
    /// (appointment, referral, slot)
    bookings: Vec<(String, String, String)>,
}

#[actix_web::test]
async fn a_killed_server_loses_no_acknowledged_write() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    // A schedule of 60 routine slots at the service, one a day.
    let schedule = define(
        &w,
        &c,
        "Schedule",
        json!({"resourceType": "Schedule", "active": true, "actor": [{"reference": format!("HealthcareService/{}", c.service)}]}),
    )
    .await;
    for day in 1..=60 {
        define(&w, &c, "Slot", routine_slot(&schedule, day)).await;
    }
    let slots: Vec<String> = free_slots(&w, &c.service, "ROUTINE")
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(slots.len() >= 60, "{} free slots", slots.len());
    let mut server = ServerProcess::start(&w.app.database_url).await;
    let clients = 4;
    let started = Instant::now();
    // Each client creates referrals, booking each into its own share of the slots while there
    // are any, until the server dies under it (the loop is far longer than the time to the kill).
    let client = |n: usize| {
        let app = &server.app;
        let w = &w;
        let c = &c;
        let mine: Vec<String> = slots.iter().skip(n).step_by(clients).cloned().collect();
        async move {
            let mut ack = Acknowledged::default();
            let mut mine = mine.into_iter();
            for _ in 0..20_000 {
                let req = app
                    .as_user(&w.rc, "POST", "ServiceRequest", RC.0, RC.1)
                    .insert_header(("Content-Type", "application/fhir+json"));
                let body = referral(w, &[&c.service], "ROUTINE").to_string();
                let Some(r) = app.try_send(req, Some(body.into_bytes())).await else {
                    ack.cut = true;
                    break;
                };
                assert_eq!(r.status, 201, "{}", r.text());
                let id = r.json()["id"].as_str().expect("id").to_owned();
                ack.referrals.push(id.clone());
                let Some(slot) = mine.next() else {
                    continue;
                };
                let mut a = appointment(&id, &slot);
                a["participant"] = json!([{"actor": {"reference": format!("Patient/{}", w.patient)}, "status": "accepted"}]);
                let req = app
                    .as_user(&w.rc, "POST", "Appointment", RC.0, RC.1)
                    .insert_header(("Content-Type", "application/fhir+json"));
                let Some(r) = app.try_send(req, Some(a.to_string().into_bytes())).await else {
                    ack.cut = true;
                    break;
                };
                assert_eq!(r.status, 201, "{}", r.text());
                let appt = r.json()["id"].as_str().expect("id").to_owned();
                ack.bookings.push((appt, id, slot));
            }
            ack
        }
    };
    let killer = async {
        // Let the writes get going, then SIGKILL the server in the middle of them.
        actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
        server.signal("KILL");
    };
    let (acks, ()) = futures_util::future::join(
        futures_util::future::join_all((0..clients).map(client)),
        killer,
    )
    .await;
    server.kill();
    let referrals: Vec<&String> = acks.iter().flat_map(|a| &a.referrals).collect();
    let bookings: Vec<&(String, String, String)> = acks.iter().flat_map(|a| &a.bookings).collect();
    assert!(
        !bookings.is_empty() && acks.iter().all(|a| a.cut),
        "the kill came mid-run: {} referrals and {} bookings acknowledged in {:?}",
        referrals.len(),
        bookings.len(),
        started.elapsed()
    );
    if let Some(path) = w.app.database_url.strip_prefix("sqlite://") {
        ers_schema::backup::sqlite_integrity(path).expect("PRAGMA integrity_check is ok");
    }

    // Restarted on the same database: every acknowledged write is there, whole.
    let again = ServerProcess::start(&w.app.database_url).await;
    let get = |path: String| {
        let app = &again.app;
        let w = &w;
        async move {
            app.send(app.as_user(&w.rc, "GET", &path, RC.0, RC.1), None)
                .await
        }
    };
    for id in &referrals {
        let r = get(format!("ServiceRequest/{id}")).await;
        assert_eq!(
            r.status,
            200,
            "acknowledged referral {id} lost: {}",
            r.text()
        );
    }
    for (appt, id, slot) in &bookings {
        let a = get(format!("Appointment/{appt}")).await;
        assert_eq!(
            a.status,
            200,
            "acknowledged booking {appt} lost: {}",
            a.text()
        );
        assert_eq!(a.json()["status"], "booked");
        assert_eq!(
            state(&get(format!("ServiceRequest/{id}")).await.json()),
            "BOOKED"
        );
        let s = get(format!("Slot/{slot}")).await.json();
        assert_eq!(s["status"], "busy", "{s}");
        let p = get(format!(
            "Provenance?target=Appointment/{appt}&_summary=count"
        ))
        .await;
        assert_eq!(p.json()["total"], 1, "{}", p.text());
        let audit = again
            .app
            .send(
                again.app.as_user(
                    &again.app.token,
                    "GET",
                    &format!("AuditEvent?entity=Appointment/{appt}&subtype=create&_summary=count"),
                    "AUDITOR",
                    "R69",
                ),
                None,
            )
            .await;
        assert_eq!(audit.json()["total"], 1, "{}", audit.text());
    }
    // Never half-present: whatever was written, acknowledged or not, is consistent. Each slot
    // has at most one booked appointment, its slot is busy and its referral BOOKED.
    for slot in &slots {
        let b = get(format!("Appointment?slot=Slot/{slot}&status=booked"))
            .await
            .json();
        let n = b["total"].as_i64().expect("total");
        assert!(n <= 1, "slot {slot} booked {n} times");
        let status = get(format!("Slot/{slot}")).await.json()["status"].clone();
        if n == 1 {
            assert_eq!(status, "busy", "slot {slot}");
            let based_on = b["entry"][0]["resource"]["basedOn"][0]["reference"]
                .as_str()
                .expect("basedOn")
                .to_owned();
            assert_eq!(state(&get(based_on).await.json()), "BOOKED");
        } else {
            assert_eq!(status, "free", "slot {slot} is busy with no appointment");
        }
    }
}

/// Times a request, for the outage checks: (status, elapsed).
async fn timed(app: &TestApp, method: &str, path: &str, body: Option<&Value>) -> (u16, Duration) {
    let t = Instant::now();
    let mut req = app.req(method, path);
    if body.is_some() {
        req = req.insert_header(("Content-Type", "application/fhir+json"));
    }
    let r = app
        .send(req, body.map(|b| b.to_string().into_bytes()))
        .await;
    if r.status == 503 {
        assert!(r.header("retry-after").is_some(), "503 without Retry-After");
        r.assert_outcome(503, "transient");
    }
    (r.status.as_u16(), t.elapsed())
}

async fn root_status(app: &TestApp, path: &str) -> u16 {
    app.send(app.client.get(format!("{}{path}", app.root)), None)
        .await
        .status
        .as_u16()
}

#[actix_web::test]
async fn an_unreachable_database_gives_quick_503s_and_the_server_recovers() {
    let app = spawn_configured(ers_api::config::Settings {
        seed: ers_api::config::SeedMode::None,
        rate_limit_per_sec: 0,
        db_timeout_secs: 2,
        ..ers_api::config::Settings::default()
    })
    .await;
    let id = app
        .create(&patient(NHS[0], "Out", "Age", "1980-01-01", "female"))
        .await;
    assert_eq!(root_status(&app, "/_ready").await, 200);
    let limit = Duration::from_secs(8);
    match app.database_url.strip_prefix("sqlite://") {
        Some(path) => {
            // Another process holds SQLite's write lock: writes give up after the timeout.
            let mut holder = diesel::SqliteConnection::establish(path).expect("open");
            diesel::sql_query("BEGIN EXCLUSIVE")
                .execute(&mut holder)
                .expect("lock");
            let (status, took) = timed(
                &app,
                "POST",
                "Patient",
                Some(&patient(NHS[1], "Locked", "Out", "1980-01-01", "male")),
            )
            .await;
            assert_eq!(status, 503);
            assert!(took < limit, "{took:?}");
            // (Reads are audited, so they need the lock too.) Not ready, and it says so.
            let (status, took) = timed(&app, "GET", &format!("Patient/{id}"), None).await;
            assert_eq!(status, 503);
            assert!(took < limit, "{took:?}");
            assert_eq!(root_status(&app, "/_ready").await, 503);
            assert_eq!(root_status(&app, "/_live").await, 200);
            diesel::sql_query("ROLLBACK")
                .execute(&mut holder)
                .expect("unlock");
        }
        None => {
            // PostgreSQL refuses connections and drops the server's.
            let admin_url = std::env::var("ERS_TEST_POSTGRES_URL").expect("admin URL");
            let name = url::Url::parse(&app.database_url)
                .expect("url")
                .path()
                .trim_start_matches('/')
                .to_owned();
            let mut admin = PgConnection::establish(&admin_url).expect("admin");
            diesel::sql_query(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
                .execute(&mut admin)
                .expect("close the database");
            diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .execute(&mut admin)
            .expect("drop its connections");
            let (status, took) = timed(&app, "GET", &format!("Patient/{id}"), None).await;
            assert_eq!(status, 503);
            assert!(took < limit, "{took:?}");
            let (status, took) = timed(
                &app,
                "POST",
                "Patient",
                Some(&patient(NHS[1], "Down", "Stairs", "1980-01-01", "male")),
            )
            .await;
            assert_eq!(status, 503);
            assert!(took < limit, "{took:?}");
            // Ready says no; live still says the process is up.
            assert_eq!(root_status(&app, "/_ready").await, 503);
            assert_eq!(root_status(&app, "/_status").await, 503);
            assert_eq!(root_status(&app, "/_live").await, 200);
            diesel::sql_query(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
                .execute(&mut admin)
                .expect("reopen the database");
            // A restart between two requests (every connection dropped, none refused, once
            // reads work again): the next read is answered, its audit event included.
            let mut answered = false;
            for _ in 0..40 {
                if timed(&app, "GET", &format!("Patient/{id}"), None).await.0 == 200 {
                    answered = true;
                    break;
                }
                actix_web::rt::time::sleep(Duration::from_millis(250)).await;
            }
            assert!(answered, "the server did not recover");
            let drop_connections = |admin: &mut PgConnection| {
                diesel::sql_query(format!(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ))
                .execute(admin)
                .expect("drop its connections");
            };
            // Dropped while the server was idle (longer than a pooled connection is trusted
            // without proof): the first read is answered.
            drop_connections(&mut admin);
            actix_web::rt::time::sleep(ers_schema::conn::TRUSTED_FOR + Duration::from_millis(200))
                .await;
            let (status, _) = timed(&app, "GET", &format!("Patient/{id}"), None).await;
            assert_eq!(status, 200, "the first read after the connections dropped");
            // Dropped right after use: the read handed a dropped connection unproved runs
            // again on one the pool proves first, so it is answered too, and so is every read
            // after it. (A write is not run twice: it may get one 503 with Retry-After.) One
            // read first, so that the losses of the drop above are behind every connection.
            let (status, _) = timed(&app, "GET", &format!("Patient/{id}"), None).await;
            assert_eq!(status, 200);
            drop_connections(&mut admin);
            for n in 0..4 {
                let (status, _) = timed(&app, "GET", &format!("Patient/{id}"), None).await;
                assert_eq!(
                    status, 200,
                    "read {n} after the connections dropped right after use"
                );
            }
        }
    }
    // Back by itself: no restart. Once ready again, the first read is answered: no connection
    // the outage broke (the audit writer's included) is used again.
    let mut ok = false;
    for _ in 0..40 {
        if root_status(&app, "/_ready").await == 200 {
            ok = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "the server did not recover");
    let (status, _) = timed(&app, "GET", &format!("Patient/{id}"), None).await;
    assert_eq!(status, 200, "the first read after the outage");
    let r = app
        .post_json(
            "Patient",
            &patient(NHS[1], "Back", "Again", "1980-01-01", "male"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(root_status(&app, "/_ready").await, 200);
    assert_eq!(
        app.search("Patient?_summary=count").await["total"],
        2,
        "the refused write left nothing behind"
    );
}

/// Every resource of these types, by id, as the server returns it.
async fn contents(app: &TestApp, types: &[&str]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for t in types {
        let mut url = format!("{t}?_count=100&_sort=_id");
        loop {
            let b = app.search(&url).await;
            for e in b["entry"].as_array().into_iter().flatten() {
                let r = &e["resource"];
                out.push((
                    format!("{t}/{}", r["id"].as_str().unwrap_or_default()),
                    r.clone(),
                ));
            }
            let next = b["link"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["relation"] == "next")
                .and_then(|l| l["url"].as_str())
                .map(str::to_owned);
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[actix_web::test]
async fn a_backup_restores_to_the_same_contents() {
    let app = spawn_with(ers_api::config::SeedMode::Sandbox).await;
    // A change after seeding, with history.
    let id = app
        .create(&patient(NHS[0], "Back", "Up", "1980-01-01", "female"))
        .await;
    let mut p = app.get(&format!("Patient/{id}")).await.json();
    p["name"][0]["family"] = json!("Upper");
    let r = app
        .send(
            app.req("PUT", &format!("Patient/{id}"))
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(p.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let dir = tempdir();
    let file = dir.join("ers.backup");
    // Taken while the server runs.
    let written = ers_schema::backup::backup(&app.database_url, &file).expect("backup");
    assert!(written.bytes > 0);
    // Never over an existing file.
    assert!(ers_schema::backup::backup(&app.database_url, &file).is_err());
    // Into a fresh, empty database; then a server on it.
    let target = database_url();
    ers_schema::backup::restore(&target, &file).expect("restore");
    let restored = spawn_on(
        &target,
        ers_api::config::Settings {
            seed: ers_api::config::SeedMode::None,
            rate_limit_per_sec: 0,
            ..ers_api::config::Settings::default()
        },
    )
    .await;
    let types = [
        "Patient",
        "Organization",
        "PractitionerRole",
        "HealthcareService",
        "Slot",
        "ServiceRequest",
        "Appointment",
        "DocumentReference",
    ];
    let before = contents(&app, &types).await;
    let after = contents(&restored, &types).await;
    assert!(before.len() > 100, "{} resources", before.len());
    assert_eq!(before.len(), after.len());
    assert!(before == after, "the restored contents differ");
    assert_eq!(
        history_of(&app, &id).await,
        history_of(&restored, &id).await
    );
    assert_eq!(
        history_of(&restored, &id).await.map(|h| h.len()),
        Some(2),
        "both versions"
    );
    // The audit trail came too.
    let n = audit_count(&app).await;
    assert!(n.as_i64().is_some_and(|n| n > 0), "{n}");
    // (The restored server's own searches above were audited too: at least as many.)
    assert!(audit_count(&restored).await.as_i64() >= n.as_i64());
    // A file that is not a backup is refused, and the database is left as it was.
    let junk = dir.join("junk");
    std::fs::write(&junk, b"not a database").expect("write");
    assert!(ers_schema::backup::restore(&target, &junk).is_err());
    assert_eq!(
        restored.search("Patient?_summary=count").await["total"],
        app.search("Patient?_summary=count").await["total"]
    );
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ers-backup-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

async fn history_of(a: &TestApp, id: &str) -> Option<Vec<Value>> {
    a.search(&format!("Patient/{id}/_history")).await["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| x["resource"].clone()).collect())
}

async fn audit_count(a: &TestApp) -> Value {
    a.send(
        a.as_user(
            &a.token,
            "GET",
            "AuditEvent?_summary=count",
            "AUDITOR",
            "R69",
        ),
        None,
    )
    .await
    .json()["total"]
        .clone()
}

/// Sends raw bytes on a new connection, `pace` apart when given, and returns what the server
/// answered (its status line) and when.
fn raw_exchange(addr: &str, head: &str, body: &[u8], pace: Option<Duration>) -> (String, Duration) {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("head");
    match pace {
        None => {
            let _ = s.write_all(body);
        }
        Some(gap) => {
            for b in body {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(gap);
            }
        }
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    (
        text.lines().next().unwrap_or_default().to_owned(),
        t.elapsed(),
    )
}

#[actix_web::test]
async fn hostile_payloads_are_refused_cleanly_and_the_server_stays_responsive() {
    let app = spawn_configured(ers_api::config::Settings {
        seed: ers_api::config::SeedMode::None,
        rate_limit_per_sec: 0,
        body_timeout_secs: 2,
        ..ers_api::config::Settings::default()
    })
    .await;
    let post = |body: Vec<u8>, ct: &'static str| {
        let app = &app;
        async move {
            app.send(
                app.req("POST", "Patient")
                    .insert_header(("Content-Type", ct)),
                Some(body),
            )
            .await
        }
    };
    const JSON: &str = "application/fhir+json";
    // Deeply nested JSON.
    let deep = format!(
        r#"{{"resourceType":"Patient","extension":{}1{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let d = post(deep.into_bytes(), JSON)
        .await
        .assert_outcome(400, "structure");
    assert!(d.contains("recursion limit"), "{d}");
    // A key given twice.
    let d = post(
        br#"{"resourceType":"Patient","gender":"male","gender":"female"}"#.to_vec(),
        JSON,
    )
    .await
    .assert_outcome(400, "structure");
    assert!(d.contains("'gender' appears twice"), "{d}");
    // Invalid UTF-8.
    let mut bad = br#"{"resourceType":"Patient","name":[{"family":""#.to_vec();
    bad.extend_from_slice(&[0xff, 0xfe, 0x80]);
    bad.extend_from_slice(br#""}]}"#);
    post(bad.clone(), JSON)
        .await
        .assert_outcome(400, "structure");
    post(bad, "application/fhir+xml")
        .await
        .assert_outcome(400, "structure");
    // Numbers out of range.
    for n in ["1e400", "99999999999999999999999", "-3000000000"] {
        let r = post(
            format!(r#"{{"resourceType":"Patient","multipleBirthInteger":{n}}}"#).into_bytes(),
            JSON,
        )
        .await;
        assert!(
            r.status == 400 || r.status == 422,
            "{n}: {} {}",
            r.status,
            r.text()
        );
    }
    // A dateTime with a short clock (cargo-fuzz found the validator panicking on it: a 500).
    for body in [
        json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01T1Z"}),
        json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01T12:3+01:00"}),
    ] {
        let r = post(body.to_string().into_bytes(), JSON).await;
        assert!(
            r.status == 400 || r.status == 422,
            "{} {}",
            r.status,
            r.text()
        );
        let r = app
            .send(
                app.req("POST", "Patient/$validate")
                    .insert_header(("Content-Type", JSON)),
                Some(body.to_string().into_bytes()),
            )
            .await;
        assert!(
            r.status == 200 || r.status == 400,
            "{} {}",
            r.status,
            r.text()
        );
    }
    // Wrong content types.
    post(br#"{"resourceType":"Patient"}"#.to_vec(), "text/plain")
        .await
        .assert_outcome(415, "not-supported");
    post(
        br#"{"resourceType":"Patient"}"#.to_vec(),
        "application/x-www-form-urlencoded",
    )
    .await
    .assert_outcome(415, "not-supported");
    // A huge array and a huge string, inside the body limit: answered, never a server error.
    let many: Vec<Value> = (0..20_000)
        .map(|i| json!({"system": "https://example.org/ids", "value": format!("id-{i}")}))
        .collect();
    let r = post(
        json!({"resourceType": "Patient", "identifier": many})
            .to_string()
            .into_bytes(),
        JSON,
    )
    .await;
    assert!(r.status.as_u16() < 500, "{} {}", r.status, r.text());
    // A string past FHIR's 1 MB limit is refused with its location.
    let r = post(
        json!({"resourceType": "Patient", "name": [{"family": "x".repeat(4_000_000)}]})
            .to_string()
            .into_bytes(),
        JSON,
    )
    .await;
    let d = r.assert_outcome(422, "value");
    assert!(
        d.contains("Patient.name[0].family") && d.contains("1 MB"),
        "{d}"
    );
    // Long values within it are stored and found by what the index keeps of them (on
    // PostgreSQL a B-tree entry cannot hold them whole).
    let long_family = format!("Longfamily{}", "y".repeat(900_000));
    let long_id = format!("id-{}", "9".repeat(5_000));
    let r = post(
        json!({"resourceType": "Patient", "name": [{"family": long_family}],
            "identifier": [{"system": "https://example.org/long", "value": long_id}]})
        .to_string()
        .into_bytes(),
        JSON,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        app.search("Patient?family=longfamilyyyy&_summary=count")
            .await["total"],
        1
    );
    assert_eq!(
        app.search(&format!(
            "Patient?identifier=https://example.org/long|{long_id}&_summary=count"
        ))
        .await["total"],
        1
    );

    // Slow-loris: a body trickling in is cut off with 408, while others are served at once.
    let addr = app.root.trim_start_matches("http://").to_owned();
    let head = format!(
        "POST /FHIR/R4/Patient HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{BF}: REFERRING_CLINICIAN\r\n{ODS}: R69\r\nContent-Type: application/fhir+json\r\nContent-Length: 200\r\n\r\n",
        app.token
    );
    let body = format!(
        "{{\"resourceType\":\"Patient\",\"gender\":\"male\"{}}}",
        " ".repeat(160)
    );
    let slow = {
        let (addr, head) = (addr.clone(), head.clone());
        std::thread::spawn(move || {
            raw_exchange(
                &addr,
                &head,
                body.as_bytes(),
                Some(Duration::from_millis(200)),
            )
        })
    };
    // Many idle connections at once.
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert_eq!(idle.len(), 300);
    let t = Instant::now();
    let r = app.get("metadata").await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let (status, took) = actix_web::rt::task::spawn_blocking(move || slow.join().expect("join"))
        .await
        .expect("slow sender");
    assert!(status.contains("408"), "{status}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    drop(idle);
    // Still answering, and nothing was stored by the slow sender.
    let r = app.get("metadata").await;
    assert_eq!(r.status, 200);
    let n = app.search("Patient?gender=male&_summary=count").await["total"].clone();
    assert_eq!(n, 0);
}

#[actix_web::test]
async fn sigterm_finishes_in_flight_requests_then_stops() {
    let app = spawn_with(ers_api::config::SeedMode::None).await;
    let mut server = ServerProcess::start(&app.database_url).await;
    let addr = server.app.root.trim_start_matches("http://").to_owned();
    // A create whose body takes about two seconds to arrive: in flight when SIGTERM comes.
    let body = patient(NHS[2], "Term", "Inal", "1980-01-01", "female").to_string();
    let head = format!(
        "POST /FHIR/R4/Patient HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{BF}: REFERRING_CLINICIAN\r\n{ODS}: R69\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
        server.app.token,
        body.len()
    );
    let gap = Duration::from_millis(2000 / body.len() as u64 + 1);
    let in_flight = {
        let addr = addr.clone();
        std::thread::spawn(move || raw_exchange(&addr, &head, body.as_bytes(), Some(gap)))
    };
    actix_web::rt::time::sleep(Duration::from_millis(600)).await;
    server.signal("TERM");
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    // No new connections once it is stopping.
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still accepting after SIGTERM"
    );
    let (status, _) = actix_web::rt::task::spawn_blocking(move || in_flight.join().expect("join"))
        .await
        .expect("in flight");
    assert!(status.contains("201"), "the in-flight create: {status}");
    let exit = server.wait_for_exit(Duration::from_secs(20));
    assert!(exit.is_some_and(|s| s.success()), "exit: {exit:?}");
    // The write it finished is there.
    assert_eq!(
        app.search(&format!(
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}&_summary=count",
            NHS[2]
        ))
        .await["total"],
        1
    );
}

#[actix_web::test]
async fn a_pooled_connection_that_still_works_is_used_again() {
    // A checkout proves its connection works (on PostgreSQL with an empty query) unless it
    // answered within the last moments; one that passes is handed out again, not replaced.
    let app = spawn_app().await;
    let pool = ers_schema::build_pool(&app.database_url, 1).expect("pool");
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let mut pids = Vec::new();
    for _ in 0..3 {
        let mut c = pool.get().expect("a pooled connection");
        match &mut *c {
            ers_schema::DbConnection::Postgresql(pg) => {
                let p: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
                    .get_result(pg)
                    .expect("pid");
                pids.push(p.pid);
            }
            // SQLite runs in-process: one connection of the pool, checked with `SELECT 1`.
            ers_schema::DbConnection::Sqlite(_) => return,
        }
    }
    assert!(pids.windows(2).all(|w| w[0] == w[1]), "{pids:?}");
}

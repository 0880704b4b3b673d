//! Safe retries: a write sent again with its `Idempotency-Key` is answered with the first
//! answer and done once; the key belongs to its caller, names one request, and is held only by
//! a write that happened.

use crate::helpers::*;
use crate::referrals::{referral, world, world_with, World, UBRN};
use serde_json::{json, Value};

const KEY: &str = "Idempotency-Key";

async fn create_with_key(w: &World, key: &str, body: &Value) -> Reply {
    let req = w.as_rc("POST", "ServiceRequest").insert_header((KEY, key));
    w.app.send(req, Some(body.to_string().into_bytes())).await
}

/// How many referrals the patient has.
async fn referrals_of(w: &World) -> i64 {
    let b = w
        .app
        .search(&format!(
            "ServiceRequest?subject=Patient/{}&_summary=count",
            w.patient
        ))
        .await;
    b["total"].as_i64().expect("total")
}

/// What a server stopped just after a keyed write committed leaves behind: the key claimed and
/// what the write did recorded, the answer never stored.
fn lose_answer(app: &TestApp, key: &str) {
    app.execute_sql(&format!(
        "UPDATE idempotency_keys SET status = NULL, headers = NULL, body = NULL \
         WHERE key = '{key}'"
    ));
}

/// A Bundle posted to the base with an `Idempotency-Key`.
async fn post_bundle(app: &TestApp, key: &str, bundle: &Value) -> Reply {
    let req = app
        .req("POST", "/FHIR/R4")
        .insert_header(("Content-Type", "application/fhir+json"))
        .insert_header((KEY, key));
    app.send(req, Some(bundle.to_string().into_bytes())).await
}

fn ubrn(r: &Reply) -> String {
    r.json()["identifier"]
        .as_array()
        .expect("identifiers")
        .iter()
        .find(|i| i["system"] == UBRN)
        .and_then(|i| i["value"].as_str())
        .expect("UBRN")
        .to_owned()
}

#[actix_web::test]
async fn a_referral_sent_again_with_its_key_is_made_once_and_answered_the_same() {
    let w = world().await;
    let body = referral(&w, &[&w.bookable], "URGENT");
    let before = referrals_of(&w).await;

    let first = create_with_key(&w, "\"retry-1\"", &body).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    // The same request again (the answer was lost): the same referral, the same answer.
    let again = create_with_key(&w, "\"retry-1\"", &body).await;
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(ubrn(&again), ubrn(&first));
    assert_ne!(again.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(referrals_of(&w).await, before + 1);

    // Unquoted, the same key.
    let bare = create_with_key(&w, "retry-1", &body).await;
    assert_eq!(bare.status, 201);
    assert_eq!(bare.json()["id"], first.json()["id"]);

    // The same key for another request: refused, naming the key and the first request.
    let mut other = body.clone();
    other["reasonCode"] = json!([{"text": "Palpitations"}]);
    let refused = create_with_key(&w, "retry-1", &other).await;
    let diag = refused.assert_outcome(422, "business-rule");
    assert!(diag.contains("'Idempotency-Key' (retry-1)"), "{diag}");
    assert!(
        diag.contains(&first.header("x-request-id").expect("request id")),
        "{diag}"
    );
    assert_eq!(
        refused.json()["issue"][0]["expression"][0],
        "Idempotency-Key"
    );
    // Another key: another referral.
    let second = create_with_key(&w, "retry-2", &other).await;
    assert_eq!(second.status, 201, "{}", second.text());
    assert_ne!(ubrn(&second), ubrn(&first));
    assert_eq!(referrals_of(&w).await, before + 2);

    // The replay is audited, naming the request whose answer it gave.
    let audits = w
        .app
        .send(
            w.app.as_user(
                &w.app.token,
                "GET",
                "AuditEvent?subtype=idempotent-replay&_count=50",
                "AUDITOR",
                "R69",
            ),
            None,
        )
        .await;
    assert_eq!(audits.status, 200, "{}", audits.text());
    let first_id = first.header("x-request-id").expect("request id");
    let named = audits.json()["entry"]
        .as_array()
        .expect("replays audited")
        .iter()
        .filter(|e| {
            e["resource"]["outcomeDesc"]
                .as_str()
                .is_some_and(|d| d.contains(&first_id))
        })
        .count();
    assert_eq!(named, 2, "{}", audits.text());
}

#[actix_web::test]
async fn a_refused_write_leaves_its_key_free_and_bad_keys_are_refused() {
    let w = world().await;
    let before = referrals_of(&w).await;
    // Refused (no patient): nothing written, so the key is not taken.
    let mut bad = referral(&w, &[&w.bookable], "URGENT");
    bad.as_object_mut().expect("object").shift_remove("subject");
    let refused = create_with_key(&w, "fix-and-resend", &bad).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let good = referral(&w, &[&w.bookable], "URGENT");
    let fixed = create_with_key(&w, "fix-and-resend", &good).await;
    assert_eq!(fixed.status, 201, "{}", fixed.text());
    assert_eq!(fixed.header("idempotent-replayed"), None);
    assert_eq!(referrals_of(&w).await, before + 1);

    for key in ["two words", "\"\"", &"k".repeat(256)] {
        let r = create_with_key(&w, key, &good).await;
        let diag = r.assert_outcome(400, "value");
        assert!(diag.contains("Idempotency-Key"), "{diag}");
        assert_eq!(r.json()["issue"][0]["expression"][0], "Idempotency-Key");
    }
    // Who may not ask is told that first.
    let unknown = w
        .app
        .send(
            w.app
                .bare("POST", "ServiceRequest")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header((KEY, "two words")),
            Some(good.to_string().into_bytes()),
        )
        .await;
    assert_eq!(unknown.status, 401, "{}", unknown.text());
    // And a method the endpoint does not serve is told that first.
    let unserved = w
        .app
        .send(
            w.as_rc("PATCH", "ServiceRequest")
                .insert_header((KEY, "two words")),
            Some(good.to_string().into_bytes()),
        )
        .await;
    assert_eq!(unserved.status, 405, "{}", unserved.text());
    // Reads ignore it.
    let read = w
        .app
        .send(
            w.as_rc("GET", &format!("Patient/{}", w.patient))
                .insert_header((KEY, "two words")),
            None,
        )
        .await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(referrals_of(&w).await, before + 1);
}

#[actix_web::test]
async fn keys_belong_to_their_caller() {
    let app = spawn_app().await;
    let patient = |nhs: &str| patient(nhs, "Keyholder", "Sam", "1970-01-01", "female");
    let mine = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header((KEY, "shared-key")),
            Some(patient(NHS[0]).to_string().into_bytes()),
        )
        .await;
    assert_eq!(mine.status, 201, "{}", mine.text());
    // Another user's request under the same key is theirs: done, not refused or replayed.
    let other = sign(&claims("021600556514", &[("REFERRING_CLINICIAN", "R69")]));
    let theirs = app
        .send(
            app.as_user(&other, "POST", "Patient", "REFERRING_CLINICIAN", "R69")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header((KEY, "shared-key")),
            Some(patient(NHS[1]).to_string().into_bytes()),
        )
        .await;
    assert_eq!(theirs.status, 201, "{}", theirs.text());
    assert_eq!(theirs.header("idempotent-replayed"), None);
    assert_ne!(theirs.json()["id"], mine.json()["id"]);
}

#[actix_web::test]
async fn requests_racing_with_one_key_write_once() {
    let w = world().await;
    let before = referrals_of(&w).await;
    let body = referral(&w, &[&w.bookable], "URGENT");
    let answers =
        futures_util::future::join_all((0..6).map(|_| create_with_key(&w, "raced", &body))).await;
    let mut done = Vec::new();
    for a in &answers {
        match a.status.as_u16() {
            201 => done.push(a.json()["id"].as_str().expect("id").to_owned()),
            409 => {
                let diag = a.assert_outcome(409, "conflict");
                assert!(
                    diag.contains("Idempotency-Key (raced)")
                        || diag.contains("'Idempotency-Key' (raced)"),
                    "{diag}"
                );
            }
            _ => panic!("{}: {}", a.status, a.text()),
        }
    }
    assert!(!done.is_empty());
    assert!(done.iter().all(|id| *id == done[0]), "{done:?}");
    assert_eq!(referrals_of(&w).await, before + 1);
    // Once the first has answered, every retry gets its answer.
    let late = create_with_key(&w, "raced", &body).await;
    assert_eq!(late.status, 201, "{}", late.text());
    assert_eq!(late.json()["id"].as_str(), Some(done[0].as_str()));
}

#[actix_web::test]
async fn a_key_is_forgotten_after_its_lifetime() {
    let w = world_with(ers_api::config::Settings {
        seed: ers_api::config::SeedMode::Sandbox,
        rate_limit_per_sec: 0,
        idempotency_key_hours: 0,
        ..ers_api::config::Settings::default()
    })
    .await;
    let before = referrals_of(&w).await;
    let body = referral(&w, &[&w.bookable], "URGENT");
    let first = create_with_key(&w, "short-lived", &body).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = create_with_key(&w, "short-lived", &body).await;
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), None);
    assert_ne!(again.json()["id"], first.json()["id"]);
    assert_eq!(referrals_of(&w).await, before + 2);
    // The expiry schedule deletes keys past their lifetime, and only those.
    let pool = ers_schema::build_pool(&w.app.database_url, 1).expect("pool");
    assert_eq!(ers_api::startup::forget_idempotency_keys(&pool, 1), Ok(0));
    assert_eq!(ers_api::startup::forget_idempotency_keys(&pool, 0), Ok(1));
    assert_eq!(ers_api::startup::forget_idempotency_keys(&pool, 0), Ok(0));
}

#[actix_web::test]
async fn a_booking_sent_again_with_its_key_books_once() {
    let w = world().await;
    let c = crate::booking::clinic(&w, "11000").await;
    let referral = w.new_referral(&[&c.service], "ROUTINE").await;
    let slots = crate::booking::free_slots(&w, &c.service, "ROUTINE").await;
    let body = crate::booking::appointment(&referral, &slots[0].0);
    let send = || {
        w.app.send(
            w.as_rc("POST", "Appointment")
                .insert_header((KEY, "book-once")),
            Some(body.to_string().into_bytes()),
        )
    };
    let first = send().await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = send().await;
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.json()["id"], first.json()["id"]);
    // Without the key the same request is a second booking attempt, refused by the state.
    let plain = w
        .app
        .send(
            w.as_rc("POST", "Appointment"),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(plain.status, 422, "{}", plain.text());
    // Its server stopped after the commit, before the answer was stored: a retry is told
    // what the booking wrote, to read it there.
    lose_answer(&w.app, "book-once");
    let lost = send().await;
    let diag = lost.assert_outcome(409, "conflict");
    let appointment = first.json()["id"].as_str().expect("id").to_owned();
    let written = format!(
        "created Appointment/{appointment}; updated Slot/{}, ServiceRequest/{referral}",
        slots[0].0
    );
    assert!(diag.contains(&written), "{diag}");
    assert!(diag.contains("answer is not stored"), "{diag}");
}

#[actix_web::test]
async fn a_transaction_sent_again_with_its_key_is_done_once() {
    let app = spawn_app().await;
    let entry = |nhs: &str, family: &str| {
        json!({"resource": patient(nhs, family, "Sam", "1970-01-01", "female"),
               "request": {"method": "POST", "url": "Patient"}})
    };
    let bundle = json!({"resourceType": "Bundle", "type": "transaction",
                        "entry": [entry(NHS[2], "Bundled"), entry(NHS[3], "Bundled")]});
    let send = || post_bundle(&app, "one-transaction", &bundle);
    let first = send().await;
    assert_eq!(first.status, 200, "{}", first.text());
    // Without the key, the same Bundle again is refused (the NHS numbers are taken); with it,
    // the first answer comes back.
    let again = send().await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.json(), first.json());
    let found = app.search("Patient?family=Bundled&_summary=count").await;
    assert_eq!(found["total"], 2, "{found}");
}

/// A batch's entries are written one transaction each under the batch's key: a retry whose
/// answer was lost is told what every entry wrote, not just the first.
#[actix_web::test]
async fn a_batch_whose_answer_was_lost_names_what_each_entry_wrote() {
    let app = spawn_app().await;
    let entry = |nhs: &str| {
        json!({"resource": patient(nhs, "Batched", "Sam", "1970-01-01", "female"),
               "request": {"method": "POST", "url": "Patient"}})
    };
    let bundle = json!({"resourceType": "Bundle", "type": "batch",
                        "entry": [entry(NHS[2]), entry(NHS[3])]});
    let send = || post_bundle(&app, "one-batch", &bundle);
    let first = send().await;
    assert_eq!(first.status, 200, "{}", first.text());
    let made: Vec<String> = first.json()["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let location = e["response"]["location"].as_str().expect("location");
            location.split("/_history").next().expect("path").to_owned()
        })
        .collect();
    assert_eq!(made.len(), 2, "{}", first.text());
    lose_answer(&app, "one-batch");
    let lost = send().await;
    let diag = lost.assert_outcome(409, "conflict");
    for m in &made {
        let path = m.rsplit("/FHIR/R4/").next().unwrap_or(m);
        assert!(diag.contains(&format!("created {path}")), "{path}: {diag}");
    }
}

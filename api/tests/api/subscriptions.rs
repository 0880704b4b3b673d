//! Event subscriptions: a provider's system learns of every change it may see — new referrals
//! to its service, their bookings and cancellations, A&G messages — in order, at least once,
//! also after being down; nothing for a change that was rolled back or that it may not see.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::booking::{clinic, free_slots};
use crate::helpers::*;
use crate::referrals::{world, world_with, World};
use serde_json::{json, Value};

/// A subscriber's endpoint: an HTTP server in the test that keeps what it is sent, and can be
/// "down" (503).
struct Subscriber {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
}

async fn subscriber() -> Subscriber {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let down: Arc<AtomicBool> = Arc::default();
    let (g, d) = (got.clone(), down.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("address").port();
    let server = actix_web::HttpServer::new(move || {
        let (g, d) = (g.clone(), d.clone());
        actix_web::App::new().default_service(actix_web::web::to(
            move |body: actix_web::web::Bytes| {
                let (g, d) = (g.clone(), d.clone());
                async move {
                    if d.load(Ordering::SeqCst) {
                        return actix_web::HttpResponse::ServiceUnavailable().finish();
                    }
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        g.lock().expect("lock").push(v);
                    }
                    actix_web::HttpResponse::Ok().finish()
                }
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    actix_web::rt::spawn(server);
    Subscriber {
        url: format!("http://127.0.0.1:{port}/hook"),
        got,
        down,
    }
}

/// The notification-event parts a subscriber got for one subscription: (number, focus).
fn events(got: &[Value], subscription: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for b in got {
        let params = &b["entry"][0]["resource"]["parameter"];
        let Some(params) = params.as_array() else {
            continue;
        };
        let of = params.iter().any(|p| {
            p["name"] == "subscription"
                && p["valueReference"]["reference"] == format!("Subscription/{subscription}")
        });
        if !of {
            continue;
        }
        for p in params.iter().filter(|p| p["name"] == "notification-event") {
            let part = |n: &str| {
                p["part"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|x| x["name"] == n))
                    .cloned()
                    .unwrap_or_default()
            };
            out.push((
                part("event-number")["valueString"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1),
                part("focus")["valueReference"]["reference"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
    }
    out
}

fn kinds(got: &[Value]) -> Vec<String> {
    got.iter()
        .filter_map(|b| {
            b["entry"][0]["resource"]["parameter"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "type")?["valueCode"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

impl World {
    async fn subscribe(&self, who: (&str, &str, &str), criteria: &str, url: &str) -> Value {
        let body = json!({
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "Test system",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": url, "payload": "application/fhir+json",
                "header": ["Authorization: Bearer hook-secret"]},
        });
        let r = self
            .send_as(who, "POST", "Subscription", None, Some(&body))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }
}

impl World {
    /// Waits (up to 15 s) until the subscription shows `status` (and, for active, no error);
    /// returns it as it then is.
    async fn subscription_becomes(&self, who: (&str, &str, &str), id: &str, status: &str) -> Value {
        let mut s = Value::Null;
        for _ in 0..60 {
            s = self
                .send_as(who, "GET", &format!("Subscription/{id}"), None, None)
                .await
                .json();
            if s["status"] == status && (status != "active" || s.get("error").is_none()) {
                return s;
            }
            actix_web::rt::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("Subscription/{id} did not become {status}: {s}");
    }
}

/// Waits (up to 20 s) until `done` holds for what the subscriber got.
async fn until(s: &Subscriber, what: &str, done: impl Fn(&[Value]) -> bool) {
    for _ in 0..80 {
        if done(&s.got.lock().expect("lock")) {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{what}: not delivered within 20 s; got {:?}",
        s.got.lock().expect("lock")
    );
}

#[actix_web::test]
async fn a_system_learns_of_every_change_it_may_see_in_order() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    let hook = subscriber().await;
    let referrals = w
        .subscribe(
            provider,
            &format!("ServiceRequest?performer=HealthcareService/{}", c.service),
            &hook.url,
        )
        .await;
    let appointments = w
        .subscribe(
            provider,
            &format!("Appointment?service=HealthcareService/{}", c.service),
            &hook.url,
        )
        .await;
    let advice = w
        .app
        .search(&format!("HealthcareService?characteristic=ADVICE_AND_GUIDANCE&priority=ROUTINE&organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|{}", c.ods))
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("an A&G service of the provider")
        .to_owned();
    let messages = w
        .subscribe(
            provider,
            &format!("Communication?recipient=HealthcareService/{advice}"),
            &hook.url,
        )
        .await;
    let mid = messages["id"].as_str().expect("id").to_owned();
    let (rid, aid) = (
        referrals["id"].as_str().expect("id").to_owned(),
        appointments["id"].as_str().expect("id").to_owned(),
    );
    // Headers are kept, but never shown.
    assert_eq!(
        referrals["channel"]["header"][0], "Authorization: ***",
        "{referrals}"
    );
    assert_eq!(referrals["status"], "requested");
    // The handshake, then active.
    until(&hook, "handshakes", |g| {
        kinds(g).iter().filter(|k| *k == "handshake").count() == 3
    })
    .await;
    w.subscription_becomes(provider, &rid, "active").await;

    // A referral to the service, and one elsewhere (not to be told).
    let referral = w.new_referral(&[&c.service], "ROUTINE").await;
    let other = w.new_referral(&[&w.bookable.clone()], "URGENT").await;
    // Book it; a second booking of the same slot fails and is rolled back.
    let slots = free_slots(&w, &c.service, "ROUTINE").await;
    let r = w.book(&referral, &slots[0].0).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let appointment = r.json()["id"].as_str().expect("id").to_owned();
    let loser = w.new_referral(&[&c.service], "ROUTINE").await;
    assert_eq!(w.book(&loser, &slots[0].0).await.status, 409);
    // Cancel it.
    let r = w
        .send_as(
            (&w.rc, "REFERRING_CLINICIAN", "R69"),
            "POST",
            &format!("Appointment/{appointment}/$ers.cancelAppointment"),
            Some(1),
            Some(&json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "PATIENT_ILL"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // An A&G request to the provider's advice service: its first message.
    let r = w
        .create(&json!({
            "resourceType": "ServiceRequest",
            "extension": [
                {"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}},
                {"url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ProviderConversionAuthorisation", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-ProviderConversionAuthorisation", "code": "NOT_AUTHORISED_TO_CONVERT"}},
            ],
            "status": "active",
            "intent": "order",
            "category": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ServiceRequestCategory", "code": "request"}]}],
            "subject": {"reference": format!("Patient/{}", w.patient)},
            "requester": {"reference": format!("PractitionerRole/{}", w.role)},
            "performer": [{"reference": format!("HealthcareService/{advice}")}],
            "note": [{"text": "Advice please"}],
        }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    until(&hook, "the A&G message", |g| events(g, &mid).len() == 1).await;
    assert!(events(&hook.got.lock().expect("lock"), &mid)[0]
        .1
        .starts_with("Communication/"));

    // The referral: created, booked, cancelled (versions 1-3), nothing else.
    let referral_focus = |v: i64| format!("ServiceRequest/{referral}/_history/{v}");
    until(&hook, "referral events", |g| events(g, &rid).len() >= 4).await;
    until(&hook, "appointment events", |g| events(g, &aid).len() >= 2).await;
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    let got = hook.got.lock().expect("lock").clone();
    let seen = events(&got, &rid);
    // (The losing booking's referral only as created: its booking was rolled back.)
    assert_eq!(
        seen.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
        [
            referral_focus(1),
            referral_focus(2),
            format!("ServiceRequest/{loser}/_history/1"),
            referral_focus(3)
        ],
        "{seen:?} (referral {referral}, elsewhere {other}, loser {loser}; all notifications: {got:?})"
    );
    assert!(seen.windows(2).all(|p| p[0].0 < p[1].0), "{seen:?}");
    let seen = events(&got, &aid);
    assert_eq!(
        seen.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
        [
            format!("Appointment/{appointment}/_history/1"),
            format!("Appointment/{appointment}/_history/2")
        ],
        "{seen:?}"
    );
    let text = serde_json::to_string(&got).expect("json");
    assert!(!text.contains(&other), "{text}");
    // Full-resource payloads carry the resource itself.
    assert!(got
        .iter()
        .any(|b| b["entry"][1]["resource"]["id"] == referral.as_str()));
    // Missed events can be listed from any point.
    let since = events(&got, &rid)[0].0 - 1;
    let r = w
        .send_as(
            provider,
            "GET",
            &format!("Subscription/{rid}/$events?eventsSinceNumber={since}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(events(&[r.json()], &rid).len(), 4, "{}", r.text());
    // Another organisation cannot see or change the subscription.
    let stranger = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    w.send_as(
        (&stranger, "REFERRING_CLINICIAN", "R68"),
        "GET",
        &format!("Subscription/{rid}"),
        None,
        None,
    )
    .await
    .assert_outcome(404, "not-found");
}

#[actix_web::test]
async fn a_subscriber_that_was_down_gets_everything_when_it_is_back() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    let hook = subscriber().await;
    let s = w
        .subscribe(
            provider,
            &format!("ServiceRequest?performer=HealthcareService/{}", c.service),
            &hook.url,
        )
        .await;
    let sid = s["id"].as_str().expect("id").to_owned();
    until(&hook, "handshake", |g| {
        kinds(g).contains(&"handshake".to_owned())
    })
    .await;
    hook.down.store(true, Ordering::SeqCst);
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(w.new_referral(&[&c.service], "ROUTINE").await);
    }
    // It keeps failing: the subscription says so, with the reason.
    let error = w.subscription_becomes(provider, &sid, "error").await;
    assert!(
        error["error"].as_str().unwrap_or_default().contains("503"),
        "{error}"
    );
    // Back: everything arrives, once each, in order, and it is active again.
    hook.down.store(false, Ordering::SeqCst);
    until(&hook, "the missed events", |g| events(g, &sid).len() >= 3).await;
    let got = events(&hook.got.lock().expect("lock"), &sid);
    assert_eq!(
        got.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>(),
        made.iter()
            .map(|id| format!("ServiceRequest/{id}/_history/1"))
            .collect::<Vec<_>>()
    );
    w.subscription_becomes(provider, &sid, "active").await;
}

#[actix_web::test]
async fn bad_subscriptions_are_refused_precisely() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    for (criteria, endpoint, channel, expect) in [
        (
            "Patient?name=x",
            "http://127.0.0.1:1/x",
            "rest-hook",
            "Subscription.criteria",
        ),
        (
            "ServiceRequest?colour=red",
            "http://127.0.0.1:1/x",
            "rest-hook",
            "Subscription.criteria",
        ),
        (
            "ServiceRequest?state=NOT_BOOKED",
            "ftp://x",
            "rest-hook",
            "Subscription.channel.endpoint",
        ),
        (
            "ServiceRequest?state=NOT_BOOKED",
            "http://127.0.0.1:1/x",
            "websocket",
            "Subscription.channel.type",
        ),
    ] {
        let body = json!({"resourceType": "Subscription", "status": "requested", "reason": "x",
            "criteria": criteria, "channel": {"type": channel, "endpoint": endpoint}});
        let r = w
            .send_as(provider, "POST", "Subscription", None, Some(&body))
            .await;
        assert_eq!(r.status, 422, "{criteria} {endpoint}: {}", r.text());
        assert!(
            r.text().contains(expect),
            "{criteria} {endpoint}: {}",
            r.text()
        );
    }
}

#[actix_web::test]
async fn a_quiet_subscription_gets_heartbeats() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    let hook = subscriber().await;
    let body = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Heartbeat",
        "criteria": format!("ServiceRequest?performer=HealthcareService/{}", c.service),
        "channel": {"type": "rest-hook", "endpoint": hook.url,
            "extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period", "valueUnsignedInt": 1}]},
    });
    let r = w
        .send_as(provider, "POST", "Subscription", None, Some(&body))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    until(&hook, "two heartbeats", |g| {
        kinds(g).iter().filter(|k| *k == "heartbeat").count() >= 2
    })
    .await;
    // Switched off: nothing more.
    let mut s = r.json();
    s["status"] = json!("off");
    let id = s["id"].as_str().expect("id").to_owned();
    let r = w
        .send_as(
            provider,
            "PUT",
            &format!("Subscription/{id}"),
            None,
            Some(&s),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let before = hook.got.lock().expect("lock").len();
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(hook.got.lock().expect("lock").len(), before);
}

#[actix_web::test]
async fn events_written_while_no_server_delivers_arrive_after_a_restart() {
    // The test's own server only takes requests; delivery is a separate ers-server process.
    let w = world_with(ers_api::config::Settings {
        seed: ers_api::config::SeedMode::Sandbox,
        rate_limit_per_sec: 0,
        delivery: false,
        ..ers_api::config::Settings::default()
    })
    .await;
    let c = clinic(&w, "11000").await;
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    let hook = subscriber().await;
    let first = ServerProcess::start(&w.app.database_url).await;
    let s = w
        .subscribe(
            provider,
            &format!("ServiceRequest?performer=HealthcareService/{}", c.service),
            &hook.url,
        )
        .await;
    let sid = s["id"].as_str().expect("id").to_owned();
    until(&hook, "handshake", |g| {
        kinds(g).contains(&"handshake".to_owned())
    })
    .await;
    // (Once the handshake is recorded: a server stopped mid-round holds its lease a while.)
    w.subscription_becomes(provider, &sid, "active").await;
    // The delivering server stops; changes go on being made.
    drop(first);
    let made = w.new_referral(&[&c.service], "ROUTINE").await;
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    assert!(events(&hook.got.lock().expect("lock"), &sid).is_empty());
    // A server comes back: what was missed arrives.
    let _second = ServerProcess::start(&w.app.database_url).await;
    until(&hook, "the event written while down", |g| {
        events(g, &sid)
            .iter()
            .any(|(_, f)| *f == format!("ServiceRequest/{made}/_history/1"))
    })
    .await;
}

/// PostgreSQL: a change whose transaction commits after a later-written one is numbered after
/// it, so a subscriber that has passed the later one's number still gets it (numbers are given
/// once changes commit). SQLite writers are serialised: the case cannot arise there.
#[actix_web::test]
async fn a_change_that_commits_late_is_numbered_after_those_before_it() {
    use diesel::connection::SimpleConnection;
    let w = world().await;
    if !w.app.database_url.starts_with("postgres") {
        return;
    }
    let c = clinic(&w, "11000").await;
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    let s = w
        .subscribe(
            provider,
            &format!("ServiceRequest?performer=HealthcareService/{}", c.service),
            "https://127.0.0.1:9/unused",
        )
        .await;
    let sid = s["id"].as_str().expect("id").to_owned();
    let first = w.new_referral(&[&c.service], "ROUTINE").await;
    // A writer's transaction that records a change of the first referral, and stays open.
    let pool = ers_schema::build_pool(&w.app.database_url, 1).expect("pool");
    let mut raw = pool.get().expect("connection");
    raw.batch_execute("BEGIN").expect("begin");
    ers_schema::store::record_events(
        &mut raw,
        &[ers_schema::store::NewEvent {
            res_type: "ServiceRequest".into(),
            res_id: first.clone(),
            version_id: 99,
            method: "UPDATE".into(),
            occurred: chrono::Utc::now().naive_utc(),
        }],
    )
    .expect("an event in flight");
    // Meanwhile another referral is made and committed.
    let second = w.new_referral(&[&c.service], "ROUTINE").await;
    let path = format!("Subscription/{sid}/$events?eventsSinceNumber=0");
    let r = w.send_as(provider, "GET", &path, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = events(&[r.json()], &sid);
    let number_of = |seen: &[(i64, String)], focus: &str| {
        seen.iter()
            .find(|(_, f)| f == focus)
            .map(|(n, _)| *n)
            .unwrap_or_else(|| panic!("{focus} not in {seen:?}"))
    };
    let second_number = number_of(&before, &format!("ServiceRequest/{second}/_history/1"));
    let late = format!("ServiceRequest/{first}/_history/99");
    assert!(before.iter().all(|(_, f)| *f != late), "{before:?}");
    raw.batch_execute("COMMIT").expect("commit");
    let r = w.send_as(provider, "GET", &path, None, None).await;
    let after = events(&[r.json()], &sid);
    assert!(
        number_of(&after, &late) > second_number,
        "the late change must come after what was numbered before it: {after:?}"
    );
}

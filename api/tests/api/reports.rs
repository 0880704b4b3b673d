//! Reports and extracts, and the usage dashboard: what an analyst downloads agrees with the
//! data, follows writes at once, shows patient identifiers only where allowed, and is refused
//! to everyone but operational analysts.

use crate::booking::{clinic, free_slots};
use crate::helpers::*;
use crate::referrals::world;
use serde_json::Value;

const ANALYST: &str = "555031998111";
const COMMISSIONER: &str = "555031998113";

fn analyst_token() -> String {
    sign(&claims(
        ANALYST,
        &[
            ("INFORMATION_ANALYST", "R69"),
            ("INFORMATION_ANALYST", "RCD"),
            ("INFORMATION_ANALYST", "RR8"),
        ],
    ))
}

async fn report(app: &TestApp, token: &str, bf: &str, org: &str, path: &str) -> Reply {
    app.send(app.as_user(token, "GET", path, bf, org), None)
        .await
}

/// The CSV as header and rows (RFC 4180 parsing, so quoted commas stay in their field).
fn csv_rows(r: &Reply) -> (Vec<String>, Vec<Vec<String>>) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/csv"),
        "{:?}",
        r.header("content-type")
    );
    assert!(r.text().contains("\r\n"), "RFC 4180 lines end in CRLF");
    let mut rd = csv::Reader::from_reader(r.body.as_slice());
    let head: Vec<String> = rd
        .headers()
        .expect("header row")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows: Vec<Vec<String>> = rd
        .records()
        .map(|x| x.expect("record").iter().map(str::to_owned).collect())
        .collect();
    for row in &rows {
        assert_eq!(row.len(), head.len(), "{row:?}");
    }
    (head, rows)
}

fn col(head: &[String], name: &str) -> usize {
    head.iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {head:?}"))
}

/// The usage row of a week and key (zeros when there is none).
fn usage_of(json: &Value, week: &str, key: &str) -> [i64; 4] {
    let rows = json["rows"].as_array().expect("rows");
    let row = rows
        .iter()
        .find(|r| r["week"] == week && (r["specialty"] == key || r["organisation"] == key));
    let n = |k: &str| row.map_or(0, |r| r[k].as_i64().expect("count"));
    [
        n("initial_referrals"),
        n("bookings"),
        n("advice_requests"),
        n("conversions"),
    ]
}

fn iso_week(t: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

#[actix_web::test]
async fn an_analyst_downloads_each_report_that_follows_the_data_and_sees_the_dashboard() {
    let w = world().await;
    let app = &w.app;
    let analyst = analyst_token();
    let this_week = iso_week(chrono::Utc::now().date_naive());
    let c = clinic(&w, "11000").await;
    assert_ne!(c.ods, "RCD", "the test needs a provider other than RCD");

    // What there is, for an analyst.
    let list = report(app, &analyst, "INFORMATION_ANALYST", "R69", "/reports").await;
    assert_eq!(list.status, 200, "{}", list.text());
    let names: Vec<String> = list.json()["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        names,
        [
            "active-referrals",
            "appointment-slots",
            "user-roles",
            "usage"
        ]
    );

    // Before: usage this week, and the service's slots.
    let usage_before = report(
        app,
        &analyst,
        "INFORMATION_ANALYST",
        "R69",
        "/reports/usage?_format=json",
    )
    .await
    .json();
    let before = usage_of(&usage_before, &this_week, "CARDIOLOGY");
    let slots = free_slots(&w, &c.service, "ROUTINE").await;
    let (slot, start) = slots.first().expect("a free slot").clone();
    let slot_week = iso_week(
        chrono::DateTime::parse_from_rfc3339(&start)
            .expect("start")
            .date_naive(),
    );
    let slot_path = format!(
        "/reports/appointment-slots?service={}&_format=json",
        c.service
    );
    let slots_before = report(app, &analyst, "INFORMATION_ANALYST", "RR8", &slot_path)
        .await
        .json();
    let week_row = |j: &Value| -> Value {
        j["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["week"] == slot_week.as_str())
            .cloned()
            .expect("the slot's week")
    };
    let sb = week_row(&slots_before);

    // A referral, booked.
    let id = w.new_referral(&[&c.service], "ROUTINE").await;
    let booked = w.book(&id, &slot).await;
    assert_eq!(booked.status, 201, "{}", booked.text());
    let ubrn = {
        let r = w
            .app
            .send(w.as_rc("GET", &format!("ServiceRequest/{id}")), None)
            .await
            .json();
        r["identifier"][0]["value"]
            .as_str()
            .expect("ubrn")
            .to_owned()
    };

    // Usage counts it at once: one more initial referral and one more booking.
    let after = usage_of(
        &report(
            app,
            &analyst,
            "INFORMATION_ANALYST",
            "R69",
            "/reports/usage?_format=json",
        )
        .await
        .json(),
        &this_week,
        "CARDIOLOGY",
    );
    assert_eq!(
        after[0],
        before[0] + 1,
        "initial referrals {before:?} -> {after:?}"
    );
    assert_eq!(after[1], before[1] + 1, "bookings {before:?} -> {after:?}");
    assert_eq!(after[2..], before[2..]);
    // By organisation: the referrer counts the referral, the provider the booking.
    let by_org = report(
        app,
        &analyst,
        "INFORMATION_ANALYST",
        "R69",
        "/reports/usage?group=organisation&_format=json",
    )
    .await
    .json();
    assert!(usage_of(&by_org, &this_week, "R69")[0] >= 1);
    assert!(usage_of(&by_org, &this_week, &c.ods)[1] >= 1);

    // The slot report: one more booked and one fewer free in the slot's week.
    let sa = week_row(
        &report(app, &analyst, "INFORMATION_ANALYST", "RR8", &slot_path)
            .await
            .json(),
    );
    assert_eq!(sa["booked"], sb["booked"].as_i64().expect("n") + 1);
    assert_eq!(sa["free"], sb["free"].as_i64().expect("n") - 1);
    assert_eq!(sa["published"], sb["published"]);
    let util = sa["utilisation"].as_f64().expect("utilisation");
    let expected = sa["booked"].as_f64().expect("b")
        / (sa["booked"].as_f64().expect("b") + sa["free"].as_f64().expect("f"));
    assert!((util - expected).abs() < 0.001, "{util} vs {expected}");

    // Active referrals, CSV: the referral is there with its facts; the NHS number only for an
    // analyst of an organisation party to it.
    let (head, rows) = csv_rows(
        &report(
            app,
            &analyst,
            "INFORMATION_ANALYST",
            "R69",
            "/reports/active-referrals?organization=R69",
        )
        .await,
    );
    assert_eq!(
        head,
        [
            "ubrn",
            "state",
            "priority",
            "specialty",
            "clinic_type",
            "referrer_organisation",
            "provider_organisation",
            "service",
            "created",
            "last_updated",
            "days_waiting",
            "nhs_number"
        ]
    );
    let mine = rows
        .iter()
        .find(|r| r[0] == ubrn)
        .unwrap_or_else(|| panic!("{ubrn} in the report"));
    assert_eq!(mine[col(&head, "state")], "BOOKED");
    assert_eq!(mine[col(&head, "priority")], "ROUTINE");
    assert_eq!(mine[col(&head, "specialty")], "CARDIOLOGY");
    assert_eq!(mine[col(&head, "referrer_organisation")], "R69");
    assert_eq!(mine[col(&head, "provider_organisation")], c.ods);
    assert_eq!(mine[col(&head, "service")], c.service);
    assert_eq!(mine[col(&head, "days_waiting")], "0");
    assert_eq!(mine[col(&head, "nhs_number")], "9912003888");
    // The report's referrals for R69 are exactly the active referrals R69 finds over FHIR.
    let fhir = app
        .send(
            w.as_rc(
                "GET",
                "ServiceRequest?category=http://snomed.info/sct|3457005&status=active&_count=100",
            ),
            None,
        )
        .await
        .json();
    let mut from_fhir: Vec<String> = fhir["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            e["resource"]["identifier"][0]["value"]
                .as_str()
                .expect("ubrn")
                .to_owned()
        })
        .collect();
    let mut from_report: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    from_fhir.sort();
    from_report.sort();
    assert_eq!(from_report, from_fhir);
    // An analyst at an organisation not party to it, and a commissioner even at the provider,
    // get the row without the NHS number.
    for (token, bf, org) in [
        (analyst.clone(), "INFORMATION_ANALYST", "RCD"),
        (
            sign(&claims(COMMISSIONER, &[("COMMISSIONER", c.ods.as_str())])),
            "COMMISSIONER",
            c.ods.as_str(),
        ),
    ] {
        let (head, rows) = csv_rows(
            &report(
                app,
                &token,
                bf,
                org,
                &format!("/reports/active-referrals?service={}", c.service),
            )
            .await,
        );
        let row = rows.iter().find(|r| r[0] == ubrn).expect("row");
        assert_eq!(row[col(&head, "nhs_number")], "", "{bf} at {org}");
    }
    // Filters narrow: another priority, a date range before it existed.
    let (_, urgent) = csv_rows(
        &report(
            app,
            &analyst,
            "INFORMATION_ANALYST",
            "R69",
            "/reports/active-referrals?priority=URGENT",
        )
        .await,
    );
    assert!(urgent.iter().all(|r| r[2] == "URGENT") && !urgent.is_empty());
    assert!(!urgent.iter().any(|r| r[0] == ubrn));
    let (_, old) = csv_rows(
        &report(
            app,
            &analyst,
            "INFORMATION_ANALYST",
            "R69",
            "/reports/active-referrals?to=2020-01-01",
        )
        .await,
    );
    assert!(old.is_empty());
    // JSON has the same rows.
    let json = report(
        app,
        &analyst,
        "INFORMATION_ANALYST",
        "R69",
        "/reports/active-referrals?organization=R69&_format=json",
    )
    .await;
    assert_eq!(
        json.header("content-type").as_deref(),
        Some("application/json")
    );
    let j = json.json();
    assert_eq!(j["count"], rows.len());
    assert_eq!(j["rows"].as_array().expect("rows").len(), rows.len());
    assert!(j["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .any(|r| r["ubrn"] == ubrn.as_str() && r["days_waiting"] == 0));

    // The slot report as CSV: names with commas stay one field.
    let (head, rows) = csv_rows(
        &report(
            app,
            &analyst,
            "INFORMATION_ANALYST",
            "RR8",
            "/reports/appointment-slots",
        )
        .await,
    );
    assert_eq!(head[0], "service");
    assert!(rows
        .iter()
        .any(|r| r[col(&head, "service_name")].contains(", ")));

    // User roles, for one organisation.
    let (head, rows) = csv_rows(
        &report(
            app,
            &analyst,
            "INFORMATION_ANALYST",
            "R69",
            "/reports/user-roles?organization=RR8",
        )
        .await,
    );
    assert!(rows.iter().all(|r| r[col(&head, "organisation")] == "RR8"));
    for (user, bf) in [
        (ANALYST, "INFORMATION_ANALYST"),
        (COMMISSIONER, "COMMISSIONER"),
    ] {
        assert!(
            rows.iter()
                .any(|r| r[0] == user && r[col(&head, "business_function")] == bf),
            "{user} {bf} in {rows:?}"
        );
    }

    // The dashboard: one HTML page with its charts inline, no scripts.
    let d = report(app, &analyst, "INFORMATION_ANALYST", "R69", "/dashboard").await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert!(d
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    let page = d.text();
    assert_eq!(page.matches("<svg").count(), 3, "three charts");
    assert!(page.contains("Cardiology") && !page.contains("<script"));
    assert!(page.contains(&this_week));
    let csp = d.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'") && csp.contains("style-src 'unsafe-inline'"));

    // Every run is audited as a report, with who ran it.
    let auditor = sign(&claims("555031998112", &[("AUDITOR", "RR8")]));
    let audit = report(
        app,
        &auditor,
        "AUDITOR",
        "RR8",
        &format!("AuditEvent?subtype=report&agent={ANALYST}&_count=100"),
    )
    .await
    .json();
    assert!(audit["total"].as_i64().expect("total") >= 12, "{audit}");
}

#[actix_web::test]
async fn reports_are_refused_to_other_roles_and_bad_filters_are_named() {
    let app = spawn_app().await;
    let analyst = analyst_token();
    // Clinical, administrative, definer and auditor roles: 403, naming who may.
    for (bf, org) in [
        ("REFERRING_CLINICIAN", "R69"),
        ("SERVICE_PROVIDER_ADMIN", "RCD"),
        ("SERVICE_DEFINER", "R69"),
        ("AUDITOR", "R69"),
    ] {
        for path in [
            "/reports",
            "/reports/usage",
            "/reports/active-referrals",
            "/dashboard",
        ] {
            let r = report(&app, &app.token, bf, org, path).await;
            let d = r.assert_outcome(403, "forbidden");
            assert!(d.contains("INFORMATION_ANALYST"), "{path} {bf}: {d}");
        }
    }
    let r = app.send(app.bare("GET", "/reports/usage"), None).await;
    assert_eq!(r.status, 401);
    // Bad requests name the parameter.
    for (path, param) in [
        ("/reports/active-referrals?priority=SOON", "priority"),
        ("/reports/user-roles?specialty=CARDIOLOGY", "specialty"),
        ("/reports/usage?colour=blue", "colour"),
        ("/reports/usage?group=region", "group"),
        ("/reports/usage?from=2026-12-01&to=2026-11-01", "from"),
        ("/reports/usage?from=yesterday", "from"),
        ("/reports/usage?specialty=JUGGLING", "specialty"),
        ("/reports/usage?organization=not%20ods!", "organization"),
        ("/reports/usage?_format=pdf", "_format"),
        ("/dashboard?group=specialty", "group"),
    ] {
        let r = report(&app, &analyst, "INFORMATION_ANALYST", "R69", path).await;
        let d = r.assert_outcome(400, "invalid");
        assert!(d.contains(&format!("'{param}'")), "{path}: {d}");
        assert_eq!(r.json()["issue"][0]["expression"][0], param, "{path}");
    }
    let r = report(
        &app,
        &analyst,
        "INFORMATION_ANALYST",
        "R69",
        "/reports/nope",
    )
    .await;
    let d = r.assert_outcome(404, "not-found");
    assert!(d.contains("active-referrals"), "{d}");
    // An empty report still has its header row.
    let (head, rows) = csv_rows(
        &report(
            &app,
            &analyst,
            "INFORMATION_ANALYST",
            "R69",
            "/reports/usage?to=2000-01-01",
        )
        .await,
    );
    assert_eq!(head[0], "week");
    assert!(rows.is_empty());
}

#[actix_web::test]
async fn generated_referrals_cover_every_state_and_come_with_advice_conversations() {
    // `ers-server generate-referrals` (the report, worklist and export benchmarks' data):
    // referrals in every e-RS state, the triage ones at triage services, appointments as
    // their states say, and an A&G request with its conversation for every tenth referral,
    // all served as the API serves what it wrote itself.
    let app = spawn_with(ers_api::config::SeedMode::Sandbox).await;
    let category = "https://fhir.nhs.uk/CodeSystem/eRS-ServiceRequestCategory";
    let advice_query = format!("ServiceRequest?category={category}|request&_count=100");
    let sandbox_advice = match_ids(&app.search(&advice_query).await);
    let pool = ers_schema::build_pool(&app.database_url, 1).expect("pool");
    let mut conn = pool.get().expect("connection");
    let r = ers_api::service::synthetic::referrals(&mut conn, 400, &mut |_| {}).expect("generate");
    drop(conn);
    assert_eq!((r.referrals, r.advice), (400, 40));
    assert!(r.messages >= r.advice, "{} messages", r.messages);
    let count = |query: String| {
        let app = &app;
        async move {
            app.search(&format!("{query}&_summary=count")).await["total"]
                .as_u64()
                .unwrap_or_default()
        }
    };
    for state in [
        "NOT_BOOKED",
        "BOOKED",
        "DEFERRED_TO_PROVIDER",
        "AWAITING_TRIAGE",
        "TRIAGE_RESPONSE",
        "TRIAGED_PROVIDER_TO_ACTION",
        "ASSESSMENT_RESULT",
        "REJECTED",
        "APPT_CANCELLED_BY_PATIENT",
        "APPT_CANCELLED_BY_PROVIDER",
        "DID_NOT_ATTEND",
        "CANCELLED_REFERRAL",
    ] {
        let n = count(format!("ServiceRequest?state={state}")).await;
        assert!(n > 0, "no generated referral is {state}");
    }
    for status in ["booked", "proposed", "cancelled", "noshow"] {
        let n = count(format!("Appointment?status={status}")).await;
        assert!(n > 0, "no generated appointment is {status}");
    }
    // Nothing has happened yet that is dated later than now.
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    assert_eq!(
        count(format!("Appointment?status=noshow&date=gt{now}")).await,
        0
    );
    assert_eq!(count(format!("Communication?sent=gt{now}")).await, 0);
    // A referral awaiting triage is at a triage service.
    let b = app
        .search("ServiceRequest?state=AWAITING_TRIAGE&_count=5")
        .await;
    for e in b["entry"].as_array().expect("entries") {
        let service = e["resource"]["performer"][0]["reference"]
            .as_str()
            .expect("a service");
        let s = app.search(service).await;
        let flows: Vec<&str> = s["characteristic"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["coding"][0]["code"].as_str())
            .collect();
        assert!(flows.contains(&"REVIEW"), "{service}: {flows:?}");
    }
    // A&G requests, in the statuses their conversations leave them.
    let advice = app.search(&advice_query).await;
    let requests: Vec<&Value> = advice["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["resource"]["id"]
                .as_str()
                .is_some_and(|id| !sandbox_advice.iter().any(|s| s == id))
        })
        .collect();
    assert_eq!(requests.len(), 40);
    for e in requests {
        let id = e["resource"]["id"].as_str().expect("id");
        let status = e["resource"]["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| {
                x["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("AdviceAndGuidance-Status"))
            })
            .and_then(|x| x["extension"][0]["valueCoding"]["code"].as_str())
            .expect("an A&G status")
            .to_owned();
        let messages = app
            .search(&format!(
                "Communication?based-on=ServiceRequest/{id}&_sort=sent"
            ))
            .await;
        let sent_by: Vec<&str> = messages["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["resource"]["category"][0]["coding"][0]["code"].as_str())
            .collect();
        assert_eq!(sent_by.first(), Some(&"REQUESTER"), "{id}: {sent_by:?}");
        let last = sent_by.last().copied();
        match status.as_str() {
            "REFERRER_TO_REVIEW_RESPONSE"
            | "CONVERSATION_ENDED_CLOSED"
            | "REFERRER_TO_SUBMIT_FURTHER_INFORMATION" => {
                assert_eq!(last, Some("RESPONDER"), "{id} {status}: {sent_by:?}")
            }
            "PROVIDER_RESPONSE_REQUIRED" | "CONVERSATION_ENDED_CANCELLED" => {
                assert_eq!(last, Some("REQUESTER"), "{id} {status}: {sent_by:?}")
            }
            other => panic!("{id}: status {other}"),
        }
    }
    // Found by their status, as the referrer's lists find them.
    let n = count(format!(
        "ServiceRequest?category={category}|request&advice-status=REFERRER_TO_REVIEW_RESPONSE"
    ))
    .await;
    assert!(
        n > 0,
        "no generated A&G request awaits the referrer's review"
    );
}

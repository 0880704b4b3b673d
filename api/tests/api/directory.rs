//! The Directory of Services: HealthcareService, Schedule and Slot, maintained by service
//! definers for their own organisation and searched by everyone.

use crate::helpers::*;
use serde_json::{json, Value};

const FLOW: &str = "https://fhir.nhs.uk/CodeSystem/eRS-RequestFlowType";
const PRIORITY: &str = "https://fhir.nhs.uk/CodeSystem/eRS-Priority";
const SPECIALTY: &str = "https://fhir.nhs.uk/CodeSystem/eRS-Specialty";

fn service(
    id: &str,
    name: &str,
    org: &str,
    specialty: &str,
    flows: &[&str],
    priorities: &[&str],
) -> Value {
    let mut characteristic: Vec<Value> = flows
        .iter()
        .map(|f| json!({"coding": [{"system": FLOW, "code": f}]}))
        .collect();
    characteristic.extend(
        priorities
            .iter()
            .map(|p| json!({"coding": [{"system": PRIORITY, "code": p}]})),
    );
    json!({
        "resourceType": "HealthcareService",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/ers-service", "value": id}],
        "active": true,
        "providedBy": {"reference": format!("Organization/{org}")},
        "type": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-AppointmentType", "code": "FIRST_OUTPATIENT"}]}],
        "specialty": [{"coding": [{"system": SPECIALTY, "code": specialty}]}],
        "name": name,
        "characteristic": characteristic,
    })
}

/// An active Location of the organisation at a position.
fn located(org: &str, name: &str, lat: f64, lon: f64) -> Value {
    json!({"resourceType": "Location", "name": name, "status": "active",
        "managingOrganization": {"reference": format!("Organization/{org}")},
        "position": {"latitude": lat, "longitude": lon}})
}

fn definer(app: &TestApp, method: &str, path: &str, org: &str) -> awc::ClientRequest {
    app.as_user(&app.token, method, path, "SERVICE_DEFINER", org)
        .insert_header(("Content-Type", "application/fhir+json"))
}

/// Sends `body` as R69's service definer.
async fn define(app: &TestApp, method: &str, path: String, body: Value) -> Reply {
    let r = definer(app, method, &path, "R69");
    app.send(r, Some(body.to_string().into_bytes())).await
}

#[actix_web::test]
async fn service_definers_maintain_their_own_organisations_services() {
    let app = spawn_app().await;
    let r69 = app.create(&organization("R69", "North")).await;
    let rcd = app.create(&organization("RCD", "Acute")).await;
    let body = service(
        "11000",
        "Cardiology clinic",
        &r69,
        "CARDIOLOGY",
        &["BOOKABLE"],
        &["ROUTINE", "URGENT"],
    );
    // A referrer may not define services.
    app.send(
        app.req("POST", "HealthcareService")
            .insert_header(("Content-Type", "application/fhir+json")),
        Some(body.to_string().into_bytes()),
    )
    .await
    .assert_outcome(403, "forbidden");
    // A definer at RCD may not define R69's services.
    let d = app
        .send(
            definer(&app, "POST", "HealthcareService", "RCD"),
            Some(body.to_string().into_bytes()),
        )
        .await
        .assert_outcome(403, "forbidden");
    assert!(d.contains("RCD") && d.contains("R69"), "{d}");
    // At R69 they may.
    let r = app
        .send(
            definer(&app, "POST", "HealthcareService", "R69"),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        r.json()["meta"]["profile"][0],
        "https://fhir.nhs.uk/StructureDefinition/eRS-HealthcareService"
    );
    // Nor may RCD move it to themselves, or retire it.
    let mut moved = r.json();
    moved["providedBy"] = json!({"reference": format!("Organization/{rcd}")});
    app.send(
        definer(&app, "PUT", &format!("HealthcareService/{id}"), "RCD"),
        Some(moved.to_string().into_bytes()),
    )
    .await
    .assert_outcome(403, "forbidden");
    // Nor patch it: refused before the patch is tried, so its test operations cannot probe what
    // the service holds (a failed test would be 422).
    let probe = json!([{"op": "test", "path": "/name", "value": "a guess"}]);
    app.send(
        app.as_user(
            &app.token,
            "PATCH",
            &format!("HealthcareService/{id}"),
            "SERVICE_DEFINER",
            "RCD",
        )
        .insert_header(("Content-Type", "application/json-patch+json")),
        Some(probe.to_string().into_bytes()),
    )
    .await
    .assert_outcome(403, "forbidden");
    // Retiring keeps history.
    let mut retired = r.json();
    retired["active"] = json!(false);
    assert_eq!(
        app.send(
            definer(&app, "PUT", &format!("HealthcareService/{id}"), "R69"),
            Some(retired.to_string().into_bytes())
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.search(&format!("HealthcareService/{id}/_history"))
            .await["total"],
        2
    );
    assert_eq!(
        app.search("HealthcareService?active=true").await["total"],
        0
    );
    // Unknown e-RS codes and a missing provider are refused.
    let mut bad = service(
        "11001",
        "Bad",
        &r69,
        "CARDIOLOGY",
        &["TELEPATHY"],
        &["SOON"],
    );
    bad.as_object_mut().expect("obj").shift_remove("providedBy");
    let r = app
        .send(
            definer(&app, "POST", "HealthcareService", "R69"),
            Some(bad.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let text = r.text();
    for part in ["TELEPATHY", "SOON", "HealthcareService.providedBy"] {
        assert!(text.contains(part), "{part}: {text}");
    }
    // An active service says its specialty, what it takes and at which priorities: without
    // them no search finds it and no referral could go to it. A draft may wait for them.
    let mut bare = service("11002", "Bare", &r69, "CARDIOLOGY", &[], &[]);
    for element in ["specialty", "characteristic"] {
        bare.as_object_mut().expect("obj").shift_remove(element);
    }
    let r = define(&app, "POST", "HealthcareService".into(), bare.clone()).await;
    r.assert_outcome(422, "required");
    let issues = r.json()["issue"].clone();
    let said: Vec<(&str, &str)> = issues
        .as_array()
        .expect("issues")
        .iter()
        .map(|i| {
            (
                i["expression"][0].as_str().unwrap_or_default(),
                i["diagnostics"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(said.len(), 3, "{issues}");
    assert_eq!(said[0].0, "HealthcareService.specialty", "{issues}");
    assert!(said[1].1.contains("BOOKABLE, REVIEW"), "{issues}");
    assert!(said[2].1.contains("ROUTINE"), "{issues}");
    assert!(said[1..]
        .iter()
        .all(|(at, _)| *at == "HealthcareService.characteristic"));
    bare["active"] = json!(false);
    let r = define(&app, "POST", "HealthcareService".into(), bare).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // An e-RS service id is one service's.
    let again = service(
        "11000",
        "Another clinic",
        &r69,
        "CARDIOLOGY",
        &["BOOKABLE"],
        &["ROUTINE"],
    );
    let r = define(&app, "POST", "HealthcareService".into(), again).await;
    let d = r.assert_outcome(409, "duplicate");
    assert!(d.contains("ers-service|11000"), "{d}");
}

#[actix_web::test]
async fn referrers_filter_services_and_find_slots_by_priority() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let mk = |body: Value| {
        let r = definer(
            &app,
            "POST",
            body["resourceType"].as_str().unwrap_or_default(),
            "R69",
        );
        app.send(r, Some(body.to_string().into_bytes()))
    };
    let mut ids = Vec::new();
    for (sid, name, spec, flows, prios) in [
        (
            "11000",
            "Cardiology bookable",
            "CARDIOLOGY",
            vec!["BOOKABLE"],
            vec!["ROUTINE", "URGENT"],
        ),
        (
            "50001",
            "Cardiology triage",
            "CARDIOLOGY",
            vec!["REVIEW"],
            vec!["ROUTINE"],
        ),
        (
            "11014",
            "Cardiology advice",
            "CARDIOLOGY",
            vec!["ADVICE_AND_GUIDANCE"],
            vec!["ROUTINE"],
        ),
        (
            "50110",
            "Breast 2WW",
            "2WW",
            vec!["REVIEW", "BOOKABLE"],
            vec!["TWO_WEEK_WAIT"],
        ),
    ] {
        let r = mk(service(sid, name, &org, spec, &flows, &prios)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(
        app.search("HealthcareService?specialty=CARDIOLOGY").await["total"],
        3
    );
    assert_eq!(
        app.search("HealthcareService?specialty=CARDIOLOGY&characteristic=BOOKABLE")
            .await["total"],
        1
    );
    assert_eq!(
        app.search(&format!("HealthcareService?characteristic={FLOW}|REVIEW"))
            .await["total"],
        2
    );
    assert_eq!(
        app.search("HealthcareService?priority=TWO_WEEK_WAIT").await["total"],
        1
    );
    assert_eq!(
        app.search("HealthcareService?organization.identifier=R69&_count=0")
            .await["total"],
        4
    );
    assert_eq!(
        app.search("HealthcareService?identifier=11000,50001").await["total"],
        2
    );
    assert_eq!(
        app.search("HealthcareService?name:contains=advice").await["total"],
        1
    );

    // A schedule for the bookable service (ROUTINE and URGENT), with slots at each.
    let sched = mk(json!({"resourceType": "Schedule", "active": true, "actor": [{"reference": format!("HealthcareService/{}", ids[0])}], "planningHorizon": {"start": "2099-12-01T00:00:00Z", "end": "2099-12-31T00:00:00Z"}})).await;
    assert_eq!(sched.status, 201, "{}", sched.text());
    let sched = sched.json()["id"].as_str().expect("id").to_owned();
    for (day, prio, status) in [
        ("01", "ROUTINE", "free"),
        ("02", "URGENT", "free"),
        ("03", "URGENT", "free"),
        ("04", "ROUTINE", "busy"),
    ] {
        let slot = json!({
            "resourceType": "Slot",
            "schedule": {"reference": format!("Schedule/{sched}")},
            "status": status,
            "start": format!("2099-12-{day}T09:00:00Z"),
            "end": format!("2099-12-{day}T09:15:00Z"),
            "appointmentType": {"coding": [{"system": PRIORITY, "code": prio}]},
        });
        let r = mk(slot).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let q = format!("Slot?schedule={sched}&status=free");
    assert_eq!(
        app.search(&format!("{q}&priority=ROUTINE")).await["total"],
        1
    );
    assert_eq!(
        app.search(&format!("{q}&priority=URGENT")).await["total"],
        3,
        "URGENT also finds ROUTINE"
    );
    assert_eq!(
        app.search(&format!("{q}&priority=TWO_WEEK_WAIT")).await["total"],
        3
    );
    assert_eq!(
        app.search(&format!("{q}&priority=TWO_WEEK_WAIT&start=ge2099-12-02"))
            .await["total"],
        2
    );
    let b = app
        .search(&format!(
            "{q}&priority=URGENT&_include=Slot:schedule&_sort=start"
        ))
        .await;
    assert_eq!(
        b["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .count(),
        1
    );
    assert_eq!(b["entry"][0]["resource"]["start"], "2099-12-01T09:00:00Z");
    app.get(&format!("{q}&priority=SOON"))
        .await
        .assert_outcome(400, "invalid");
    // e-RS A015's form: the priority as appointmentType, pages counted from 1 (page 2 of
    // _count=2 is _offset=2).
    let page_ids = |b: Value| match_ids(&b);
    let by_offset = page_ids(
        app.search(&format!(
            "{q}&priority=URGENT&_sort=start&_count=2&_offset=2"
        ))
        .await,
    );
    assert_eq!(by_offset.len(), 1);
    assert_eq!(
        page_ids(
            app.search(&format!(
                "{q}&appointmentType=URGENT&_sort=start&_count=2&page=2"
            ))
            .await
        ),
        by_offset
    );
    assert_eq!(
        page_ids(
            app.search(&format!("{q}&appointmentType=URGENT&_sort=start&page=1"))
                .await
        ),
        page_ids(
            app.search(&format!("{q}&priority=URGENT&_sort=start"))
                .await
        )
    );
    for bad in ["page=0", "page=two", "page=2&_offset=2", "page=3&_count=2"] {
        let r = app.get(&format!("{q}&{bad}")).await;
        r.assert_outcome(400, "invalid");
        assert_eq!(r.issue_at().1, "page", "{bad}");
    }
    // A slot that ends before it starts, or with an unknown priority, is refused.
    let bad = json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sched}")}, "status": "free", "start": "2099-12-05T10:00:00Z", "end": "2099-12-05T09:00:00Z", "appointmentType": {"coding": [{"system": PRIORITY, "code": "SOON"}]}});
    let r = mk(bad).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("Slot.end") && r.text().contains("SOON"),
        "{}",
        r.text()
    );
    // A slot of a priority the service does not take could never be booked: refused.
    let r = mk(json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sched}")}, "status": "free", "start": "2099-12-05T10:00:00Z", "end": "2099-12-05T10:15:00Z", "appointmentType": {"coding": [{"system": PRIORITY, "code": "TWO_WEEK_WAIT"}]}})).await;
    let d = r.assert_outcome(422, "business-rule");
    assert!(
        d.contains("TWO_WEEK_WAIT") && d.contains("ROUTINE, URGENT"),
        "{d}"
    );
    r.assert_issue(
        "UNSUPPORTED_PRIORITY",
        "Slot.appointmentType.coding[0].code",
    );
    // A priority below one the service takes is bookable (a two-week-wait referral may take an
    // urgent slot): the 2WW-only service may offer one.
    let r = mk(json!({"resourceType": "Schedule", "active": true, "actor": [{"reference": format!("HealthcareService/{}", ids[3])}]})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = mk(json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{}", r.json()["id"].as_str().expect("id"))}, "status": "free", "start": "2099-12-05T10:00:00Z", "end": "2099-12-05T10:15:00Z", "appointmentType": {"coding": [{"system": PRIORITY, "code": "URGENT"}]}})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // A free slot must lie ahead: one that has begun could never be booked. A past slot may
    // be recorded busy, but not then made free.
    let past = |status: &str| json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sched}")}, "status": status, "start": "2020-03-02T10:00:00Z", "end": "2020-03-02T10:15:00Z", "appointmentType": {"coding": [{"system": PRIORITY, "code": "ROUTINE"}]}});
    let r = mk(past("free")).await;
    let d = r.assert_outcome(422, "business-rule");
    assert!(d.contains("2020-03-02T10:00:00Z"), "{d}");
    r.assert_issue("INAPPROPRIATE_VALUE", "Slot.start");
    let r = mk(past("busy-unavailable")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let mut freed = past("free");
    freed["id"] = json!(id);
    let r = define(&app, "PUT", format!("Slot/{id}"), freed).await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue("INAPPROPRIATE_VALUE", "Slot.start");
    // A definer elsewhere may not add slots to this schedule.
    let other = json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sched}")}, "status": "free", "start": "2099-12-06T09:00:00Z", "end": "2099-12-06T09:15:00Z"});
    app.send(
        definer(&app, "POST", "Slot", "RCD"),
        Some(other.to_string().into_bytes()),
    )
    .await
    .assert_outcome(403, "forbidden");
}

#[actix_web::test]
async fn reference_data_is_served_as_code_systems_and_enforced() {
    let app = spawn_app().await;
    let r = app.get("CodeSystem/ers-priority").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cs = r.json();
    assert_eq!(cs["url"], PRIORITY);
    let codes: Vec<&str> = cs["concept"]
        .as_array()
        .expect("concepts")
        .iter()
        .filter_map(|c| c["code"].as_str())
        .collect();
    assert_eq!(codes, ["ROUTINE", "URGENT", "TWO_WEEK_WAIT"]);
    assert_eq!(cs["concept"][1]["property"][1]["code"], "triageContactDays");
    assert_eq!(cs["concept"][1]["property"][1]["valueInteger"], 5);
    let b = app.search(&format!("CodeSystem?url={SPECIALTY}")).await;
    assert_eq!(b["total"], 1);
    assert!(
        app.search("CodeSystem").await["total"]
            .as_i64()
            .unwrap_or(0)
            >= 10
    );
    let clinic = app.get("CodeSystem/ers-clinic-type").await.json();
    assert!(clinic["concept"]
        .as_array()
        .expect("concepts")
        .iter()
        .all(|c| c["property"][0]["code"] == "specialty"));
    app.get("CodeSystem/nope")
        .await
        .assert_outcome(404, "not-found");
    // e-RS A004 reads a code system by its type: the answer names ours.
    for (ers, ours) in [
        ("SPECIALTY", "ers-specialty"),
        ("CLINIC-TYPE", "ers-clinic-type"),
        (
            "APPOINTMENT-CANCELLATION-REASON",
            "ers-appointment-cancellation-reason",
        ),
        (
            "REFERRAL-CANCELLATION-REASON",
            "ers-referral-cancellation-reason",
        ),
        (
            "APPOINTMENT-NON-ATTENDANCE-REASON",
            "ers-appointment-non-attendance-reason",
        ),
        ("PRIORITY", "ers-priority"),
    ] {
        let d = app
            .get(&format!("CodeSystem/{ers}"))
            .await
            .assert_outcome(404, "not-found");
        assert!(d.contains(&format!("is CodeSystem/{ours} here")), "{d}");
    }
    app.send(
        app.req("PUT", "CodeSystem/ers-priority")
            .insert_header(("Content-Type", "application/fhir+json")),
        Some(b"{}".to_vec()),
    )
    .await
    .assert_outcome(405, "not-supported");
    // A service with a specialty e-RS does not know is refused, naming the known ones.
    let org = app.create(&organization("R69", "North")).await;
    let body = service(
        "11000",
        "Bad specialty",
        &org,
        "ASTROLOGY",
        &["BOOKABLE"],
        &["ROUTINE"],
    );
    let r = app
        .send(
            definer(&app, "POST", "HealthcareService", "R69"),
            Some(body.to_string().into_bytes()),
        )
        .await;
    let d = r.assert_outcome(422, "value");
    assert!(d.contains("ASTROLOGY") && d.contains("CARDIOLOGY"), "{d}");
}

fn distance_of(entry: &Value) -> f64 {
    entry["search"]["extension"][0]["valueDistance"]["value"]
        .as_f64()
        .expect("distance")
}

#[actix_web::test]
async fn services_and_locations_near_a_point_or_a_postcode_nearest_first() {
    let app = spawn_with(ers_api::config::SeedMode::Sandbox).await;
    // Leeds city centre: the two Leeds sites within 10 km, Harrogate (~21 km) beyond.
    let b = app.search("Location?near=53.7974|-1.5438|10|km").await;
    let names: Vec<&str> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Sandbox General Infirmary",
            "Sandbox Chapel Allerton Clinic"
        ],
        "{b}"
    );
    let d: Vec<f64> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(distance_of)
        .collect();
    assert!(d[0] < 1.0 && d[1] > 3.0 && d[1] < 5.0, "{d:?}");
    assert_eq!(
        app.search("Location?near=53.7974|-1.5438|30|km").await["total"],
        3
    );
    assert_eq!(
        app.search("Location?near=53.7974|-1.5438|15|mi").await["total"],
        3,
        "15 miles is 24 km"
    );
    // Services: cardiology services delivered within 10 km of the patient's postcode, nearest first.
    let b = app.search("HealthcareService?near-postcode=LS1%204AP|10|km&specialty=CARDIOLOGY&characteristic=BOOKABLE").await;
    let total = b["total"].as_i64().expect("total");
    assert!(total >= 1, "{b}");
    let all = app
        .search("HealthcareService?specialty=CARDIOLOGY&characteristic=BOOKABLE")
        .await["total"]
        .as_i64()
        .expect("total");
    assert!(
        total < all,
        "the radius excludes Harrogate's services ({total} of {all})"
    );
    let d: Vec<f64> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(distance_of)
        .collect();
    assert!(
        d.windows(2).all(|w| w[0] <= w[1]) && d.iter().all(|x| *x <= 10.0),
        "{d:?}"
    );
    // The outward code is enough when the full postcode is unknown.
    assert!(
        app.search("HealthcareService?near-postcode=LS6%209ZZ|10|km")
            .await["total"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    );
    // Bad input.
    for q in [
        "Location?near=91|0|5|km",
        "Location?near=53|-1|1000|km",
        "Location?near=53|-1|5|furlongs",
        "Location?near=abc",
        "Location?near:missing=true",
    ] {
        app.get(q).await.assert_outcome(400, "invalid");
    }
    let r = app
        .get("HealthcareService?near-postcode=ZE1%200AA|10|km")
        .await;
    let d = r.assert_outcome(400, "invalid");
    assert!(
        d.contains("ZE1 0AA") && d.contains("import-postcodes"),
        "{d}"
    );
    assert_eq!(r.issue_at().1, "near-postcode");
    let r = app
        .get("HealthcareService?near-postcode=not-a-postcode|10")
        .await;
    r.assert_outcome(400, "invalid");
    assert_eq!(r.issue_at().1, "near-postcode");
}

#[actix_web::test]
async fn services_with_free_slots_at_a_priority_in_a_window() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let mk = |body: Value| {
        let r = definer(
            &app,
            "POST",
            body["resourceType"].as_str().unwrap_or_default(),
            "R69",
        );
        app.send(r, Some(body.to_string().into_bytes()))
    };
    // Three bookable services: A has a free URGENT slot, B only a busy one, C none.
    let mut ids = Vec::new();
    for sid in ["21000", "21001", "21002"] {
        let r = mk(service(
            sid,
            &format!("Service {sid}"),
            &org,
            "CARDIOLOGY",
            &["BOOKABLE"],
            &["ROUTINE", "URGENT"],
        ))
        .await;
        ids.push(r.json()["id"].as_str().expect("id").to_owned());
    }
    // Dates relative to today: an URGENT slot in 40 days, a ROUTINE one in 70.
    let day = |n: i64| {
        (chrono::Utc::now() + chrono::Duration::days(n))
            .format("%Y-%m-%d")
            .to_string()
    };
    let (d40, d70) = (day(40), day(70));
    let mut made = Vec::new();
    for (svc, status, prio, day) in [
        (&ids[0], "free", "URGENT", d40.as_str()),
        (&ids[0], "free", "ROUTINE", d70.as_str()),
        (&ids[1], "busy", "URGENT", d40.as_str()),
    ] {
        let sched = mk(json!({"resourceType": "Schedule", "actor": [{"reference": format!("HealthcareService/{svc}")}]})).await.json()["id"].as_str().expect("id").to_owned();
        let r = mk(json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sched}")}, "status": status, "start": format!("{day}T09:00:00Z"), "end": format!("{day}T09:15:00Z"), "appointmentType": {"coding": [{"system": PRIORITY, "code": prio}]}})).await;
        assert_eq!(r.status, 201, "{}", r.text());
        made.push((sched, r.json()));
    }
    let found = |q: &str| {
        let q = q.to_owned();
        let app = &app;
        async move { match_ids(&app.search(&q).await) }
    };
    assert_eq!(
        found("HealthcareService?available=URGENT").await,
        vec![ids[0].clone()]
    );
    assert_eq!(
        found("HealthcareService?available=ROUTINE").await,
        vec![ids[0].clone()],
        "a ROUTINE search finds the ROUTINE slot"
    );
    let (from, to) = (day(30), day(50));
    assert_eq!(
        found(&format!("HealthcareService?available=ROUTINE|{from}|{to}")).await,
        Vec::<String>::new(),
        "only an URGENT slot in that window"
    );
    assert_eq!(
        found(&format!(
            "HealthcareService?available=TWO_WEEK_WAIT|{from}|{to}"
        ))
        .await,
        vec![ids[0].clone()],
        "2WW also takes URGENT slots"
    );
    assert_eq!(
        found(&format!("HealthcareService?available=URGENT|{}", day(100))).await,
        Vec::<String>::new()
    );
    // Sorted by earliest free slot: D (in 20 days), then A (in 40), then those with none.
    let d_id = mk(service(
        "21003",
        "Service 21003",
        &org,
        "CARDIOLOGY",
        &["BOOKABLE"],
        &["ROUTINE"],
    ))
    .await
    .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let d_sched = mk(json!({"resourceType": "Schedule", "actor": [{"reference": format!("HealthcareService/{d_id}")}]})).await.json()["id"].as_str().expect("id").to_owned();
    let d20 = day(20);
    let r = mk(json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{d_sched}")}, "status": "free", "start": format!("{d20}T09:00:00Z"), "end": format!("{d20}T09:15:00Z"), "appointmentType": {"coding": [{"system": PRIORITY, "code": "ROUTINE"}]}})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sorted = found("HealthcareService?_sort=earliest-slot").await;
    assert_eq!(&sorted[..2], &[d_id.clone(), ids[0].clone()], "{sorted:?}");
    assert_eq!(sorted.len(), 4);
    let reversed = found("HealthcareService?identifier=21000,21001&_sort=-earliest-slot").await;
    assert_eq!(reversed.len(), 2);
    // A slot no longer free, or a schedule made inactive or moved to another service, takes
    // its service out of the availability search and the earliest-slot order at once.
    let put = |path: String, body: Value| {
        let r = definer(&app, "PUT", &path, "R69");
        app.send(r, Some(body.to_string().into_bytes()))
    };
    let (urgent_schedule, _) = &made[0];
    let r = put(
        format!("Schedule/{urgent_schedule}"),
        json!({"resourceType": "Schedule", "id": urgent_schedule, "active": false, "actor": [{"reference": format!("HealthcareService/{}", ids[0])}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        found(&format!("HealthcareService?available=URGENT|{from}|{to}")).await,
        Vec::<String>::new(),
        "the URGENT slot's schedule is inactive"
    );
    let mut both = found("HealthcareService?available=ROUTINE").await;
    both.sort();
    let mut expected = vec![ids[0].clone(), d_id.clone()];
    expected.sort();
    assert_eq!(both, expected, "A's ROUTINE slot and D's are still free");
    let (_, mut routine_slot) = made[1].clone();
    routine_slot["status"] = json!("busy");
    let slot_id = routine_slot["id"].as_str().expect("id").to_owned();
    let r = put(format!("Slot/{slot_id}"), routine_slot).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        found("HealthcareService?available=ROUTINE").await,
        vec![d_id.clone()],
        "service A's last free slot is busy"
    );
    let r = put(
        format!("Schedule/{d_sched}"),
        json!({"resourceType": "Schedule", "id": d_sched, "actor": [{"reference": format!("HealthcareService/{}", ids[2])}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sorted = found("HealthcareService?_sort=earliest-slot").await;
    assert_eq!(sorted.len(), 4);
    assert_eq!(
        sorted[0], ids[2],
        "D's schedule is now service C's, with its slot in 20 days ({sorted:?})"
    );
    assert_eq!(
        found("HealthcareService?available=ROUTINE").await,
        vec![ids[2].clone()]
    );
    // Inactive, then active again: its slots leave the availability search and come back.
    for (active, expected) in [(false, vec![]), (true, vec![ids[2].clone()])] {
        let r = put(
            format!("Schedule/{d_sched}"),
            json!({"resourceType": "Schedule", "id": d_sched, "active": active, "actor": [{"reference": format!("HealthcareService/{}", ids[2])}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            found("HealthcareService?available=ROUTINE").await,
            expected,
            "D's schedule active: {active}"
        );
    }
    // A schedule with slots cannot be deleted (they refer to it), so it never leaves them behind.
    let r = app
        .send(
            definer(&app, "DELETE", &format!("Schedule/{d_sched}"), "R69"),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    app.get("Slot?_sort=earliest-slot")
        .await
        .assert_outcome(400, "invalid");
    app.get("HealthcareService?available=SOON")
        .await
        .assert_outcome(400, "invalid");
    // e-RS limits: at most 20 services by id, slot pages of 1 to 100.
    let many: Vec<String> = (0..21).map(|i| format!("s{i}")).collect();
    let d = app
        .get(&format!("HealthcareService?_id={}", many.join(",")))
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("at most 20"), "{d}");
    assert_eq!(
        app.get(&format!("HealthcareService?_id={}", many[..20].join(",")))
            .await
            .status,
        200
    );
    app.get("Slot?_count=101")
        .await
        .assert_outcome(400, "invalid");
    assert_eq!(app.get("Slot?_count=100").await.status, 200);
    app.get("HealthcareService?available=URGENT|tomorrow")
        .await
        .assert_outcome(400, "invalid");
}

#[actix_web::test]
async fn a_services_slots_are_found_as_their_schedules_and_statuses_change() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let id_of = |r: Reply| {
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
        r.json()["id"].as_str().expect("id").to_owned()
    };
    let mut services = Vec::new();
    for sid in ["22000", "22001"] {
        let body = service(
            sid,
            "Clinic",
            &org,
            "CARDIOLOGY",
            &["BOOKABLE"],
            &["ROUTINE", "URGENT"],
        );
        services.push(id_of(
            define(&app, "POST", "HealthcareService".into(), body).await,
        ));
    }
    let (a, b) = (services[0].clone(), services[1].clone());
    let site = id_of(
        define(
            &app,
            "POST",
            "Location".into(),
            located(&org, "Site", 53.8, -1.5),
        )
        .await,
    );
    let schedule = |actor: &str, active: bool| json!({"resourceType": "Schedule", "active": active, "actor": [{"reference": actor}]});
    let sched = id_of(
        define(
            &app,
            "POST",
            "Schedule".into(),
            schedule(&format!("HealthcareService/{a}"), true),
        )
        .await,
    );
    let day = (chrono::Utc::now() + chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let slot = |status: &str, priority: &str, hour: u32| {
        json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{sched}")}, "status": status,
            "start": format!("{day}T{hour:02}:00:00Z"), "end": format!("{day}T{hour:02}:15:00Z"),
            "appointmentType": {"coding": [{"system": PRIORITY, "code": priority}]}})
    };
    let x = id_of(define(&app, "POST", "Slot".into(), slot("free", "ROUTINE", 9)).await);
    let y = id_of(define(&app, "POST", "Slot".into(), slot("busy", "ROUTINE", 10)).await);
    let z = id_of(define(&app, "POST", "Slot".into(), slot("free", "URGENT", 11)).await);
    let found = |q: String| {
        let app = &app;
        async move {
            let mut ids = match_ids(&app.search(&q).await);
            ids.sort();
            ids
        }
    };
    let sorted = |ids: &[&String]| {
        let mut v: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
        v.sort();
        v
    };
    let of = |service: &str, rest: &str| {
        format!("Slot?schedule.actor=HealthcareService/{service}{rest}")
    };
    assert_eq!(found(of(&a, "&status=free")).await, sorted(&[&x, &z]));
    assert_eq!(
        found(of(&a, "&status=free&priority=ROUTINE")).await,
        sorted(&[&x])
    );
    assert_eq!(found(of(&a, "")).await, sorted(&[&x, &y, &z]));
    assert_eq!(
        found(of(&a, "&status=free,busy")).await,
        sorted(&[&x, &y, &z])
    );
    assert_eq!(found(of(&a, "&status:not=free")).await, sorted(&[&y]));
    assert_eq!(
        found(format!("Slot?schedule.actor={a}&status=free")).await,
        sorted(&[&x, &z])
    );
    assert_eq!(found(of(&b, "&status=free")).await, Vec::<String>::new());
    // Paged in id order, as without the projection.
    let first = app
        .search(&format!("{}&_count=1", of(&a, "&status=free")))
        .await;
    assert_eq!(match_ids(&first), vec![sorted(&[&x, &z])[0].clone()]);
    let next = link(&first, "next").expect("a next page");
    let second = app
        .get(next.split("/FHIR/R4/").nth(1).expect("relative"))
        .await
        .json();
    assert_eq!(match_ids(&second), vec![sorted(&[&x, &z])[1].clone()]);
    let counted = app
        .search(&format!("{}&_count=1&_total=accurate", of(&a, "")))
        .await;
    assert_eq!(counted["total"], 3, "{counted}");
    // Priority as the search index has it (URGENT also takes ROUTINE slots), and start by
    // the range it covers: a slot at 09:00:00 covers the whole second.
    assert_eq!(
        found(of(&a, "&status=free&priority=URGENT")).await,
        sorted(&[&x, &z])
    );
    assert_eq!(
        found(of(&a, "&appointment-type=URGENT")).await,
        sorted(&[&z])
    );
    assert_eq!(
        found(of(&a, &format!("&start=gt{day}T09:30:00Z"))).await,
        sorted(&[&y, &z])
    );
    assert_eq!(
        found(of(
            &a,
            &format!("&start=gt{day}T09:00:00.5Z&start=lt{day}T10:30:00Z")
        ))
        .await,
        sorted(&[&x, &y])
    );
    assert_eq!(
        found(of(&a, &format!("&start={day}"))).await,
        sorted(&[&x, &y, &z])
    );
    let by_start = app
        .search(&format!("{}&_sort=-start", of(&a, "&status=free")))
        .await;
    assert_eq!(match_ids(&by_start), vec![z.clone(), x.clone()]);
    // A slot is for one priority.
    let mut two = slot("free", "ROUTINE", 13);
    two["appointmentType"]["coding"]
        .as_array_mut()
        .expect("codings")
        .push(json!({"system": PRIORITY, "code": "URGENT"}));
    let r = define(&app, "POST", "Slot".into(), two).await;
    let d = r.assert_outcome(422, "value");
    assert!(d.contains("a slot is for one priority"), "{d}");

    // A slot that is booked is no longer free, at once.
    let mut taken = app.get(&format!("Slot/{x}")).await.json();
    taken["status"] = json!("busy");
    assert_eq!(
        define(&app, "PUT", format!("Slot/{x}"), taken).await.status,
        200
    );
    assert_eq!(found(of(&a, "&status=free")).await, sorted(&[&z]));
    // An inactive schedule's slots are still the service's slots (not its availability).
    let r = define(&app, "PUT", format!("Schedule/{sched}"), {
        let mut s = schedule(&format!("HealthcareService/{a}"), false);
        s["id"] = json!(sched);
        s
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(found(of(&a, "&status=free")).await, sorted(&[&z]));
    // Given to service B, then to no service (a site's schedule), then back to A: the slots
    // follow, including one added while the schedule had no service.
    let mut moved = schedule(&format!("HealthcareService/{b}"), true);
    moved["id"] = json!(sched);
    assert_eq!(
        define(&app, "PUT", format!("Schedule/{sched}"), moved)
            .await
            .status,
        200
    );
    assert_eq!(found(of(&a, "")).await, Vec::<String>::new());
    assert_eq!(found(of(&b, "")).await, sorted(&[&x, &y, &z]));
    let mut sited = schedule(&format!("Location/{site}"), true);
    sited["id"] = json!(sched);
    assert_eq!(
        define(&app, "PUT", format!("Schedule/{sched}"), sited)
            .await
            .status,
        200
    );
    assert_eq!(found(of(&b, "")).await, Vec::<String>::new());
    let w = id_of(define(&app, "POST", "Slot".into(), slot("free", "ROUTINE", 12)).await);
    assert_eq!(
        found(format!("Slot?schedule=Schedule/{sched}&status=free")).await,
        sorted(&[&z, &w])
    );
    let mut back = schedule(&format!("HealthcareService/{a}"), true);
    back["id"] = json!(sched);
    assert_eq!(
        define(&app, "PUT", format!("Schedule/{sched}"), back)
            .await
            .status,
        200
    );
    assert_eq!(found(of(&a, "&status=free")).await, sorted(&[&z, &w]));
    // A deleted slot is gone from the search.
    assert_eq!(
        app.send(definer(&app, "DELETE", &format!("Slot/{z}"), "R69"), None)
            .await
            .status,
        204
    );
    assert_eq!(found(of(&a, "&status=free")).await, sorted(&[&w]));
    // A schedule is one service's.
    let r = define(&app, "POST", "Schedule".into(), json!({"resourceType": "Schedule",
        "actor": [{"reference": format!("HealthcareService/{a}")}, {"reference": format!("Location/{site}")}, {"reference": format!("HealthcareService/{b}")}]})).await;
    let d = r.assert_outcome(422, "value");
    assert!(
        d.contains(&format!("(HealthcareService/{b}) is a second service")),
        "{d}"
    );
    assert_eq!(
        r.json()["issue"][0]["expression"][0],
        "Schedule.actor[2]",
        "{}",
        r.text()
    );
    // A slot stored without a projection row (before slots of a schedule with no service had
    // one) gets it at the next start, once.
    app.execute_sql(&format!(
        "DELETE FROM report_slots WHERE id = '{w}'; \
         UPDATE counters SET value = 0 WHERE name = 'slot_rows_backfilled'"
    ));
    assert_eq!(found(of(&a, "&status=free")).await, Vec::<String>::new());
    let next = spawn_on(
        &app.database_url,
        ers_api::config::Settings {
            rate_limit_per_sec: 0,
            ..ers_api::config::Settings::default()
        },
    )
    .await;
    let mut again = match_ids(&next.search(&of(&a, "&status=free")).await);
    again.sort();
    assert_eq!(again, sorted(&[&w]));
}

#[actix_web::test]
async fn slots_in_bulk_by_transaction_all_or_nothing_or_by_batch() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let svc = app
        .send(
            definer(&app, "POST", "HealthcareService", "R69"),
            Some(
                service(
                    "11000",
                    "Bulk",
                    &org,
                    "CARDIOLOGY",
                    &["BOOKABLE"],
                    &["ROUTINE"],
                )
                .to_string()
                .into_bytes(),
            ),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let sched = app.send(definer(&app, "POST", "Schedule", "R69"), Some(json!({"resourceType": "Schedule", "actor": [{"reference": format!("HealthcareService/{svc}")}]}).to_string().into_bytes())).await.json()["id"].as_str().expect("id").to_owned();
    let slot = |day: u32, ok: bool| {
        json!({"resource": {
            "resourceType": "Slot",
            "schedule": {"reference": format!("Schedule/{sched}")},
            "status": if ok { "free" } else { "nonsense" },
            "start": format!("2099-12-{day:02}T09:00:00Z"),
            "end": format!("2099-12-{day:02}T09:20:00Z"),
            "appointmentType": {"coding": [{"system": PRIORITY, "code": "ROUTINE"}]},
        }, "request": {"method": "POST", "url": "Slot"}})
    };
    let post = |b: Value| {
        app.send(
            definer(&app, "POST", "/FHIR/R4", "R69"),
            Some(b.to_string().into_bytes()),
        )
    };
    let count_query = format!("Slot?schedule={sched}&_summary=count");
    let count = || app.search(&count_query);
    // A transaction with one bad entry writes nothing and names the entry.
    let r = post(json!({"resourceType": "Bundle", "type": "transaction", "entry": [slot(1, true), slot(2, false), slot(3, true)]})).await;
    let d = r.assert_outcome(422, "code-invalid");
    assert!(d.contains("Bundle.entry[1]"), "{d}");
    assert_eq!(
        r.json()["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.status"
    );
    assert_eq!(count().await["total"], 0, "nothing half-written");
    // A good transaction writes them all.
    let r = post(json!({"resourceType": "Bundle", "type": "transaction", "entry": [slot(1, true), slot(2, true), slot(3, true)]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "transaction-response");
    assert!(
        b["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["response"]["status"] == "201 Created"
                && e["response"]["location"].is_string())
    );
    assert_eq!(count().await["total"], 3);
    // A batch answers each entry on its own.
    let r = post(json!({"resourceType": "Bundle", "type": "batch", "entry": [slot(4, true), slot(5, false)]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["entry"][0]["response"]["status"], "201 Created");
    assert!(
        b["entry"][1]["response"]["status"]
            .as_str()
            .unwrap_or_default()
            .starts_with("422"),
        "{b}"
    );
    assert_eq!(
        b["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(count().await["total"], 4);
    // Role and ownership apply per entry: a referrer may not load slots.
    let r = app
        .send(
            app.req("POST", "/FHIR/R4")
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [slot(6, true)]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    r.assert_outcome(403, "forbidden");
    let r = post(json!({"resourceType": "Bundle", "type": "collection"})).await;
    r.assert_outcome(400, "invalid");
}

fn parameters(params: &[(&str, Value)]) -> Value {
    json!({
        "resourceType": "Parameters",
        "parameter": params.iter().map(|(name, v)| {
            let mut p = json!({"name": name});
            let key = match v {
                Value::Bool(_) => "valueBoolean",
                Value::Number(_) => "valueInteger",
                Value::Object(o) if o.contains_key("system") => "valueIdentifier",
                _ => "valueCode",
            };
            p[key] = v.clone();
            p
        }).collect::<Vec<_>>(),
    })
}

const PATIENT_SEARCH: &str = "HealthcareService/$ers.searchHealthcareServicesForPatient";

fn matches(b: &Value) -> Vec<&Value> {
    b["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| &e["resource"])
                .collect()
        })
        .unwrap_or_default()
}

fn eligibility(service: &Value) -> Vec<String> {
    service["eligibility"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["code"]["coding"][0]["code"].as_str().map(str::to_owned))
        .collect()
}

#[actix_web::test]
async fn patient_centred_service_search_operation() {
    let app = spawn_with(ers_api::config::SeedMode::Sandbox).await;
    // A sandbox patient in Leeds (female, born 1958): urgent cardiology with free slots within
    // 100 miles, nearest first, each with its distance and its Location included.
    let nhs = json!({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9912003888"});
    let r = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                ("patient", nhs.clone()),
                ("priority", json!("URGENT")),
                ("specialty", json!("CARDIOLOGY")),
                ("distanceLimit", json!(100)),
                ("withFreeSlots", json!(true)),
                ("_total", json!("accurate")),
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let found = matches(&b);
    assert!(!found.is_empty(), "{b}");
    for s in &found {
        assert_eq!(s["specialty"][0]["coding"][0]["code"], "CARDIOLOGY", "{s}");
        assert!(
            s["characteristic"].to_string().contains("\"URGENT\""),
            "{s}"
        );
    }
    let d: Vec<f64> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(distance_of)
        .collect();
    assert!(
        d.windows(2).all(|w| w[0] <= w[1]) && d.iter().all(|x| *x <= 161.0),
        "{d:?}"
    );
    assert!(
        b["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["resource"]["resourceType"] == "Location"),
        "locations are included"
    );
    // Reading the patient to search for them is audited as a read of that patient, and the
    // search as a search.
    let id = app.search("Patient?identifier=9912003888").await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("the sandbox patient")
        .to_owned();
    let read = auditor_search(&app, &format!("entity=Patient/{id}&subtype=read")).await;
    assert_eq!(read["total"], 1, "{read}");
    let searched = auditor_search(&app, "subtype=search-type&_count=100").await;
    assert!(
        searched
            .to_string()
            .contains("searchHealthcareServicesForPatient"),
        "{searched}"
    );
    // The same search as plain search parameters finds the same services.
    let plain = app.search("HealthcareService?active=true&priority=URGENT&specialty=CARDIOLOGY&available=URGENT&near-postcode=LS1%204AP|100|mi&eligibility:not=MALE_ONLY&eligibility:not=CHILDREN_ONLY").await;
    assert_eq!(plain["total"], b["total"]);
    // Without free slots required, more services qualify (triage and A&G have no slots).
    let all = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                ("patient", nhs.clone()),
                ("priority", json!("URGENT")),
                ("specialty", json!("CARDIOLOGY")),
                ("distanceLimit", json!(100)),
                ("_total", json!("accurate")),
            ]),
        )
        .await
        .json();
    assert!(
        all["total"].as_i64() > b["total"].as_i64(),
        "{} vs {}",
        all["total"],
        b["total"]
    );
    // Each service found says how soon it could see the patient at the priority
    // (Extension-eRS-IndicativeWaitTime on its search entry): the earliest free slot usable at
    // it and the days to it, LIMITED_AVAILABILITY when a directly bookable service has none,
    // NOT_APPLICABLE when the service is not directly bookable.
    let wait = |e: &Value| -> (String, Option<String>, Option<i64>) {
        let ext = e["search"]["extension"]
            .as_array()
            .and_then(|x| {
                x.iter().find(|x| {
                    x["url"]
                        == "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-IndicativeWaitTime"
                })
            })
            .unwrap_or_else(|| panic!("no wait: {e}"));
        let part = |name: &str| {
            ext["extension"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["url"] == name))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let code = part("code")["valueCoding"].clone();
        assert_eq!(
            code["system"], "https://fhir.nhs.uk/CodeSystem/eRS-IndicativeWaitTime",
            "{ext}"
        );
        (
            code["code"].as_str().expect("code").to_owned(),
            part("earliestSlot")["valueDateTime"]
                .as_str()
                .map(str::to_owned),
            part("days")["valueInteger"].as_i64(),
        )
    };
    let match_entries = |b: &Value| -> Vec<Value> {
        b["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .cloned()
            .collect()
    };
    let now = chrono::Utc::now();
    let uk_day = |t: chrono::DateTime<chrono::Utc>| ers_api::fhir::datetime::uk_date(t.naive_utc());
    let today = uk_day(now);
    let with_slots: Vec<String> = found
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    let earliest_slots = async |b: &Value, priority: &str| {
        for e in match_entries(b) {
            let id = e["resource"]["id"].as_str().expect("id");
            let (code, earliest, days) = wait(&e);
            assert_eq!(code, "SLOTS_AVAILABLE", "{e}");
            let earliest = earliest.expect("earliestSlot");
            // The first free slot a referral at URGENT may book, found with a plain Slot search.
            let first = app
            .search(&format!(
                "Slot?schedule.actor:HealthcareService={id}&status=free&priority={priority}&start=ge{}&_sort=start&_count=1",
                now.format("%Y-%m-%dT%H:%M:%SZ")
            ))
            .await;
            let first_start = first["entry"][0]["resource"]["start"].clone();
            let at = |v: &Value| {
                chrono::DateTime::parse_from_rfc3339(v.as_str().expect("an instant"))
                    .expect("instant")
            };
            assert_eq!(at(&json!(earliest)), at(&first_start), "{id}: {first}");
            let day = uk_day(at(&first_start).to_utc());
            assert_eq!(days, Some((day - today).num_days()), "{e}");
        }
    };
    earliest_slots(&b, "URGENT").await;
    // At ROUTINE, a routine referral may book only routine slots: the earliest is its own.
    let routine = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                ("patient", nhs.clone()),
                ("priority", json!("ROUTINE")),
                ("withFreeSlots", json!(true)),
                ("_count", json!(100)),
            ]),
        )
        .await;
    assert_eq!(routine.status, 200, "{}", routine.text());
    earliest_slots(&routine.json(), "ROUTINE").await;
    // An urgent slot sooner than any other of a service: its urgent wait is that slot at once;
    // a routine referral may not book it, so its routine wait is not.
    let first = match_entries(&b)[0]["resource"].clone();
    let id = first["id"].as_str().expect("id").to_owned();
    let provider = app
        .get(
            first["providedBy"]["reference"]
                .as_str()
                .expect("providedBy"),
        )
        .await
        .json();
    let ods = provider["identifier"][0]["value"]
        .as_str()
        .expect("ODS code");
    let schedule = app
        .search(&format!("Schedule?actor=HealthcareService/{id}"))
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("a schedule")
        .to_owned();
    let soon = (now + chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M:00Z");
    let until = (now + chrono::Duration::minutes(45)).format("%Y-%m-%dT%H:%M:00Z");
    let r = app
        .send(
            app.as_user(
                &sign(&claims(TEST_USER, &[("SERVICE_DEFINER", ods)])),
                "POST",
                "Slot",
                "SERVICE_DEFINER",
                ods,
            )
            .insert_header(("Content-Type", "application/fhir+json")),
            Some(
                json!({
                    "resourceType": "Slot",
                    "schedule": {"reference": format!("Schedule/{schedule}")},
                    "status": "free",
                    "start": soon.to_string(),
                    "end": until.to_string(),
                    "appointmentType": {"coding": [{"system": PRIORITY, "code": "URGENT"}]},
                })
                .to_string()
                .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let wait_at = async |priority: &str| {
        let b = app
            .post_json(
                PATIENT_SEARCH,
                &parameters(&[
                    ("patient", nhs.clone()),
                    ("priority", json!(priority)),
                    ("specialty", json!("CARDIOLOGY")),
                    ("_count", json!(100)),
                ]),
            )
            .await
            .json();
        let e = match_entries(&b)
            .into_iter()
            .find(|e| e["resource"]["id"] == json!(id))
            .unwrap_or_else(|| panic!("{id} at {priority}: {b}"));
        wait(&e)
    };
    let at = |v: &str| chrono::DateTime::parse_from_rfc3339(v).expect("instant");
    let urgent = wait_at("URGENT").await;
    assert_eq!(urgent.0, "SLOTS_AVAILABLE");
    assert_eq!(
        urgent.1.as_deref().map(at),
        Some(at(&soon.to_string())),
        "{urgent:?}"
    );
    let routine = wait_at("ROUTINE").await;
    assert_ne!(
        routine.1.as_deref().map(at),
        Some(at(&soon.to_string())),
        "{routine:?}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for e in match_entries(&all) {
        let s = &e["resource"];
        let characteristic = s["characteristic"].to_string();
        let direct = characteristic.contains("\"BOOKABLE\"")
            && !characteristic.contains("INDIRECTLY_BOOKABLE");
        let id = s["id"].as_str().expect("id").to_owned();
        let (code, earliest, days) = wait(&e);
        let expected = match (direct, with_slots.contains(&id)) {
            (false, _) => "NOT_APPLICABLE",
            (true, true) => "SLOTS_AVAILABLE",
            (true, false) => "LIMITED_AVAILABILITY",
        };
        assert_eq!(code, expected, "{e}");
        assert_eq!(earliest.is_some(), code == "SLOTS_AVAILABLE", "{e}");
        assert_eq!(days.is_some(), code == "SLOTS_AVAILABLE", "{e}");
        seen.insert(code);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["LIMITED_AVAILABILITY", "NOT_APPLICABLE", "SLOTS_AVAILABLE"]
    );
    // Its codes are served with the rest of the e-RS vocabulary.
    let cs = app.get("CodeSystem/ers-indicative-wait-time").await;
    assert_eq!(cs.status, 200, "{}", cs.text());
    assert_eq!(cs.json()["concept"].as_array().map(Vec::len), Some(3));
    // Request type: A&G services only.
    let ag = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                ("patient", nhs.clone()),
                ("priority", json!("ROUTINE")),
                ("requestType", json!("ADVICE_AND_GUIDANCE_REQUEST")),
                ("_count", json!(100)),
            ]),
        )
        .await
        .json();
    let ag = matches(&ag);
    assert!(!ag.is_empty());
    assert!(ag.iter().all(|s| s["characteristic"]
        .to_string()
        .contains("ADVICE_AND_GUIDANCE")));

    // Age and gender: a man is offered no women-only services, a child no adults-only ones.
    let man = app
        .create(&patient(NHS[0], "Male", "Adult", "1970-01-01", "male"))
        .await;
    let child = app
        .create(&patient(NHS[1], "Young", "Child", "2018-06-01", "female"))
        .await;
    let search_for = |who: String, extra: Vec<(&'static str, Value)>| {
        let mut p = vec![
            ("patient", json!(who)),
            ("priority", json!("ROUTINE")),
            ("_count", json!(100)),
        ];
        p.extend(extra);
        parameters(&p)
    };
    let gyn = app
        .post_json(
            PATIENT_SEARCH,
            &search_for(
                format!("Patient/{man}"),
                vec![("specialty", json!("GYNAECOLOGY"))],
            ),
        )
        .await
        .json();
    assert!(
        matches(&gyn)
            .iter()
            .all(|s| !eligibility(s).contains(&"FEMALE_ONLY".to_owned())),
        "{gyn}"
    );
    let gyn_any = app
        .post_json(
            PATIENT_SEARCH,
            &search_for(
                format!("Patient/{man}"),
                vec![
                    ("specialty", json!("GYNAECOLOGY")),
                    ("ageAndGenderAppropriate", json!(false)),
                ],
            ),
        )
        .await
        .json();
    assert!(
        gyn_any["total"].as_i64() > gyn["total"].as_i64(),
        "women-only services come back when asked: {} vs {}",
        gyn_any["total"],
        gyn["total"]
    );
    let for_child = app
        .post_json(
            PATIENT_SEARCH,
            &search_for(format!("Patient/{child}"), vec![]),
        )
        .await
        .json();
    let codes: Vec<String> = matches(&for_child)
        .iter()
        .flat_map(|s| eligibility(s))
        .collect();
    assert!(!codes.contains(&"ADULTS_ONLY".to_owned()), "{codes:?}");
    assert!(codes.contains(&"CHILDREN_ONLY".to_owned()), "{codes:?}");

    // GET form with a postcode, sorted by earliest free slot.
    let r = app
        .get(&format!("{PATIENT_SEARCH}?postcode=LS1%204AP&distanceLimit=50&priority=ROUTINE&withFreeSlots=true&sort=EARLIEST_AVAILABLE_SLOT&_count=3"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(matches(&b).len(), 3, "{b}");
    assert!(link(&b, "next")
        .expect("next page")
        .contains("_sort=earliest-slot"));
    // An outward code is enough; a clinic type narrows to the services of that clinic type.
    let b = app
        .get(&format!("{PATIENT_SEARCH}?postcode=LS1&distanceLimit=100&priority=ROUTINE&specialty=CARDIOLOGY&clinicType=HEART_FAILURE&_count=100"))
        .await
        .json();
    let found = matches(&b);
    assert!(!found.is_empty(), "{b}");
    for s in &found {
        assert!(s["type"].to_string().contains("\"HEART_FAILURE\""), "{s}");
    }
    let all_cardiology = app
        .get(&format!("{PATIENT_SEARCH}?postcode=LS1&distanceLimit=100&priority=ROUTINE&specialty=CARDIOLOGY&_count=100"))
        .await
        .json();
    assert!(matches(&all_cardiology).len() > found.len());

    // Named clinician: only services with a schedule for that clinician.
    let org = app.search("Organization?identifier=R69").await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("R69")
        .to_owned();
    let site = app.search("Location?near=53.7974|-1.5438|5|km").await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("a Leeds site")
        .to_owned();
    let practitioner = app
        .search("Practitioner?identifier=https://fhir.nhs.uk/Id/sds-user-id|021600556514")
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("sandbox clinician")
        .to_owned();
    let mut svc = service(
        "99001",
        "Named clinician clinic",
        &org,
        "NEUROLOGY",
        &["BOOKABLE"],
        &["ROUTINE"],
    );
    svc["location"] = json!([{"reference": format!("Location/{site}")}]);
    let r = app
        .send(
            definer(&app, "POST", "HealthcareService", "R69"),
            Some(svc.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let svc_id = r.json()["id"].as_str().expect("id").to_owned();
    let schedule = json!({
        "resourceType": "Schedule",
        "active": true,
        "actor": [{"reference": format!("HealthcareService/{svc_id}")}, {"reference": format!("Practitioner/{practitioner}")}],
    });
    let r = app
        .send(
            definer(&app, "POST", "Schedule", "R69"),
            Some(schedule.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let named = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                ("priority", json!("ROUTINE")),
                ("namedClinician", json!("021600556514")),
            ]),
        )
        .await
        .json();
    let ids: Vec<&str> = matches(&named)
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, [svc_id.as_str()], "{named}");

    // Bad input: each problem named.
    let r = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                ("specialty", json!("ASTROLOGY")),
                ("distanceLimit", json!(5000)),
            ]),
        )
        .await;
    let d = r.assert_outcome(400, "value");
    assert!(d.contains("ASTROLOGY"), "{d}");
    assert!(
        r.text().contains("Parameters.parameter[distanceLimit]"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("Parameters.parameter[priority]"),
        "{}",
        r.text()
    );
    let d = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                (
                    "patient",
                    json!({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS[5]}),
                ),
                ("priority", json!("ROUTINE")),
            ]),
        )
        .await
        .assert_outcome(422, "value");
    assert!(d.contains(NHS[5]), "{d}");
    app.post_json(
        PATIENT_SEARCH,
        &parameters(&[("patient", json!("123")), ("priority", json!("ROUTINE"))]),
    )
    .await
    .assert_outcome(400, "value");
    let d = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[("priority", json!("ROUTINE")), ("sort", json!("DISTANCE"))]),
        )
        .await
        .assert_outcome(400, "required");
    assert!(d.contains("postcode"), "{d}");
    app.post_json(PATIENT_SEARCH, &json!({"resourceType": "Patient"}))
        .await
        .assert_outcome(400, "value");
    // Only roles that may read patients may search for one.
    let r = app
        .send(
            app.as_user(&app.token, "POST", PATIENT_SEARCH, "SERVICE_DEFINER", "R69")
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(
                parameters(&[("patient", nhs), ("priority", json!("ROUTINE"))])
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
}

/// A patient whose home postcode the server cannot place (ZZ99 3VZ: no fixed abode) is
/// searched for without distance, with a warning saying so; distance asked for needs a postcode,
/// and a postcode given that cannot be placed is named as the operation's input.
#[actix_web::test]
async fn a_patient_search_without_a_placeable_home_postcode() {
    let app = spawn_with(ers_api::config::SeedMode::Sandbox).await;
    let mut p = patient(NHS[1], "Abode", "None", "1970-01-01", "male");
    p["address"] = json!([{"use": "home", "postalCode": "ZZ99 3VZ"}]);
    app.create(&p).await;
    let who = json!({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS[1]});
    let r = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[("patient", who.clone()), ("priority", json!("ROUTINE"))]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert!(!matches(&b).is_empty(), "{b}");
    let outcome = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .map(|e| e["resource"]["issue"][0].clone())
        .expect("an outcome");
    assert_eq!(outcome["severity"], "warning", "{outcome}");
    assert_eq!(
        outcome["expression"][0], "Parameters.parameter[postcode]",
        "{outcome}"
    );
    assert!(
        outcome["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("ZZ99 3VZ")),
        "{outcome}"
    );
    // Given a postcode, the search measures from it and has nothing to warn of (its outcome
    // only says whose commissioning rules chose the services).
    let b = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                ("patient", who.clone()),
                ("priority", json!("ROUTINE")),
                ("postcode", json!("LS1 4AP")),
                ("distanceLimit", json!(100)),
            ]),
        )
        .await
        .json();
    let entries = b["entry"].as_array().expect("entries");
    assert!(!matches(&b).is_empty(), "{b}");
    assert!(
        entries
            .iter()
            .filter(|e| e["search"]["mode"] == "outcome")
            .flat_map(|e| e["resource"]["issue"]
                .as_array()
                .cloned()
                .unwrap_or_default())
            .all(|i| i["severity"] == "information"),
        "{b}"
    );
    assert!(
        entries
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .all(|e| distance_of(e) >= 0.0),
        "{b}"
    );
    // Distance asked for needs a place to measure from.
    let r = app
        .post_json(
            PATIENT_SEARCH,
            &parameters(&[
                ("patient", who),
                ("priority", json!("ROUTINE")),
                ("distanceLimit", json!(50)),
            ]),
        )
        .await;
    let d = r.assert_outcome(400, "required");
    assert!(d.contains("ZZ99 3VZ"), "{d}");
    assert_eq!(r.issue_at().1, "Parameters.parameter[postcode]");
    // A postcode given that the server cannot place is named as the operation's input.
    let r = app
        .get(&format!(
            "{PATIENT_SEARCH}?postcode=ZZ99%203VZ&priority=ROUTINE"
        ))
        .await;
    let d = r.assert_outcome(400, "value");
    assert!(d.contains("ZZ99 3VZ"), "{d}");
    assert_eq!(r.issue_at().1, "Parameters.parameter[postcode]");
}

#[actix_web::test]
async fn transactions_link_entries_by_urn_uuid_and_find_existing_resources_by_search() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let svc = service(
        "70001",
        "Linked clinic",
        "PLACEHOLDER",
        "CARDIOLOGY",
        &["BOOKABLE"],
        &["ROUTINE"],
    );
    let bundle = |provided_by: &str| {
        let mut s = svc.clone();
        s["providedBy"] = json!({"reference": provided_by});
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001", "resource": s, "request": {"method": "POST", "url": "HealthcareService"}},
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000002", "resource": {"resourceType": "Schedule", "active": true, "actor": [{"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}]}, "request": {"method": "POST", "url": "Schedule"}},
            {"resource": {"resourceType": "Slot", "schedule": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000002"}, "status": "free", "start": "2030-01-07T09:00:00Z", "end": "2030-01-07T09:20:00Z"}, "request": {"method": "POST", "url": "Slot"}},
        ]})
    };
    let post = |b: Value| {
        let app = &app;
        async move {
            app.send(
                definer(app, "POST", "/FHIR/R4", "R69"),
                Some(b.to_string().into_bytes()),
            )
            .await
        }
    };
    // A conditional reference that matches nothing fails the whole transaction, naming it.
    let r = post(bundle(
        "Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|ZZ999",
    ))
    .await;
    let d = r.assert_outcome(422, "value");
    assert!(
        d.contains("ZZ999") && d.contains("matches no resource"),
        "{d}"
    );
    assert_eq!(
        app.search("HealthcareService").await["total"],
        0,
        "nothing written"
    );
    // Resolved: the service's organisation by search, the schedule and slot by fullUrl.
    let r = post(bundle(
        "Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|R69",
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let locations: Vec<String> = r.json()["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            e["response"]["location"]
                .as_str()
                .expect("location")
                .to_owned()
        })
        .collect();
    let id_of = |i: usize| locations[i].split('/').rev().nth(2).expect("id").to_owned();
    let service = app
        .get(&format!("HealthcareService/{}", id_of(0)))
        .await
        .json();
    assert_eq!(
        service["providedBy"]["reference"],
        format!("Organization/{org}")
    );
    let schedule = app.get(&format!("Schedule/{}", id_of(1))).await.json();
    assert_eq!(
        schedule["actor"][0]["reference"],
        format!("HealthcareService/{}", id_of(0))
    );
    let slot = app.get(&format!("Slot/{}", id_of(2))).await.json();
    assert_eq!(
        slot["schedule"]["reference"],
        format!("Schedule/{}", id_of(1))
    );
    // Two organisations match a broader search: ambiguous, refused.
    app.create(&organization("R68", "South")).await;
    let mut b = bundle("Organization?active=true");
    b["entry"][0]["resource"]["identifier"][0]["value"] = json!("70002");
    let d = post(b).await.assert_outcome(422, "value");
    assert!(d.contains("more than one"), "{d}");
    // Two entries writing one identifier: the Bundle contradicts itself, and says which entry
    // wrote it first (not a resource "already" stored: the failed transaction wrote nothing).
    let mut s = svc.clone();
    s["providedBy"] = json!({"reference": format!("Organization/{org}")});
    s["identifier"][0]["value"] = json!("70009");
    let entry = json!({"resource": s, "request": {"method": "POST", "url": "HealthcareService"}});
    let r = post(json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry, entry]}))
        .await;
    let d = r.assert_outcome(422, "duplicate");
    assert!(d.contains("also written by Bundle.entry[0]"), "{d}");
    assert_eq!(r.issue_at().1, "Bundle.entry[1].resource.identifier");
    assert_eq!(
        app.search("HealthcareService?identifier=https://fhir.nhs.uk/Id/ers-service|70009")
            .await["total"],
        0
    );
    // An entry of a method FHIR Bundles do not carry is named as such.
    let options = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "OPTIONS", "url": "HealthcareService/x"}}]});
    let d = post(options).await.assert_outcome(400, "invalid");
    assert!(d.contains("request.method 'OPTIONS'"), "{d}");
}

#[actix_web::test]
async fn a_specialty_near_a_point_follows_services_and_locations_as_they_change() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let send = |method: &'static str, path: String, body: Value| define(&app, method, path, body);
    let location = |name: &str, lat: f64, lon: f64| located(&org, name, lat, lon);
    let mut ids = Vec::new();
    for (name, lat, lon) in [("Leeds", 53.7974, -1.5438), ("Bristol", 51.4545, -2.5879)] {
        let r = send("POST", "Location".into(), location(name, lat, lon)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().expect("id").to_owned());
    }
    let (leeds, bristol) = (ids[0].clone(), ids[1].clone());
    // A dermatology service in Leeds; a cardiology one there too.
    let mut derm = service(
        "31000",
        "Skin clinic",
        &org,
        "DERMATOLOGY",
        &["BOOKABLE"],
        &["ROUTINE"],
    );
    derm["location"] = json!([{"reference": format!("Location/{leeds}")}]);
    let r = send("POST", "HealthcareService".into(), derm.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let derm_id = r.json()["id"].as_str().expect("id").to_owned();
    derm["id"] = json!(derm_id);
    let mut card = service(
        "31001",
        "Heart clinic",
        &org,
        "CARDIOLOGY",
        &["BOOKABLE"],
        &["ROUTINE"],
    );
    card["location"] = json!([{"reference": format!("Location/{leeds}")}]);
    assert_eq!(
        send("POST", "HealthcareService".into(), card).await.status,
        201
    );
    let near = |lat: f64, lon: f64, specialty: &str| {
        let q = format!("HealthcareService?near={lat}|{lon}|20|km&specialty={specialty}");
        let app = &app;
        async move { match_ids(&app.search(&q).await) }
    };
    let by_system = format!("{SPECIALTY}|DERMATOLOGY");
    assert_eq!(
        near(53.80, -1.55, "DERMATOLOGY").await,
        vec![derm_id.clone()]
    );
    assert_eq!(near(53.80, -1.55, &by_system).await, vec![derm_id.clone()]);
    assert_eq!(
        near(53.80, -1.55, "DERMATOLOGY,ORTHOPAEDICS").await,
        vec![derm_id.clone()]
    );
    assert!(
        near(51.45, -2.59, "DERMATOLOGY").await.is_empty(),
        "not in Bristol"
    );
    assert!(near(53.80, -1.55, "ORTHOPAEDICS").await.is_empty());
    assert!(
        near(53.80, -1.55, "https://example.org/other|DERMATOLOGY")
            .await
            .is_empty(),
        "another system's code"
    );
    // Active and priority filters beside it (answered from the same projection when code-only)
    // follow the service's writes.
    let filtered = |filters: String| {
        let q = format!("HealthcareService?near=53.80|-1.55|20|km&specialty=DERMATOLOGY&{filters}");
        let app = &app;
        async move { match_ids(&app.search(&q).await) }
    };
    let with_system = format!("priority={PRIORITY}|ROUTINE");
    let found = vec![derm_id.clone()];
    assert_eq!(filtered("active=true&priority=ROUTINE".into()).await, found);
    assert_eq!(filtered("priority=URGENT,ROUTINE".into()).await, found);
    assert_eq!(filtered(with_system.clone()).await, found);
    assert!(filtered("priority=URGENT".into()).await.is_empty());
    assert!(filtered("active=false".into()).await.is_empty());
    derm["active"] = json!(false);
    derm["characteristic"] = json!([
        {"coding": [{"system": FLOW, "code": "BOOKABLE"}]},
        {"coding": [{"system": PRIORITY, "code": "URGENT"}]},
        {"coding": [{"system": PRIORITY, "code": "TWO_WEEK_WAIT"}]},
    ]);
    let r = send("PUT", format!("HealthcareService/{derm_id}"), derm.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(filtered("active=true".into()).await.is_empty());
    assert_eq!(filtered("active=false&priority=URGENT".into()).await, found);
    assert_eq!(filtered("priority=TWO_WEEK_WAIT".into()).await, found);
    assert!(filtered("priority=ROUTINE".into()).await.is_empty());
    assert!(filtered(with_system).await.is_empty());
    derm["active"] = json!(true);
    let r = send("PUT", format!("HealthcareService/{derm_id}"), derm.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(filtered("active=true&priority=URGENT".into()).await, found);
    // The service moves to Bristol and changes specialty.
    derm["location"] = json!([{"reference": format!("Location/{bristol}")}]);
    derm["specialty"] = json!([{"coding": [{"system": SPECIALTY, "code": "ORTHOPAEDICS"}]}]);
    let r = send("PUT", format!("HealthcareService/{derm_id}"), derm.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(near(53.80, -1.55, "DERMATOLOGY").await.is_empty());
    assert!(near(51.45, -2.59, "DERMATOLOGY").await.is_empty());
    assert_eq!(
        near(51.45, -2.59, "ORTHOPAEDICS").await,
        vec![derm_id.clone()]
    );
    // The Bristol site itself moves to Leeds: its services come with it.
    let mut moved = location("Bristol", 53.79, -1.54);
    moved["id"] = json!(bristol);
    let r = send("PUT", format!("Location/{bristol}"), moved).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(near(51.45, -2.59, "ORTHOPAEDICS").await.is_empty());
    assert_eq!(
        near(53.80, -1.55, "ORTHOPAEDICS").await,
        vec![derm_id.clone()]
    );
    // The site's own position moved in the index (kept row, new coordinates).
    let sites = |q: &'static str| {
        let app = &app;
        async move { match_ids(&app.search(q).await) }
    };
    assert!(!sites("Location?near=51.4545|-2.5879|20|km")
        .await
        .contains(&bristol));
    assert!(sites("Location?near=53.79|-1.54|1|km")
        .await
        .contains(&bristol));
    // Deleted, it is found nowhere.
    let r = definer(
        &app,
        "DELETE",
        &format!("HealthcareService/{derm_id}"),
        "R69",
    );
    let r = app.send(r, None).await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    assert!(near(53.80, -1.55, "ORTHOPAEDICS").await.is_empty());
}

#[actix_web::test]
async fn a_specialty_search_near_a_point_sorts_by_each_services_nearest_location() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let send = |method: &'static str, path: String, body: Value| define(&app, method, path, body);
    let mut sites = Vec::new();
    for (name, lat, lon) in [
        ("Leeds", 53.7974, -1.5438),
        ("Leeds North", 53.85, -1.55),
        ("Bristol", 51.4545, -2.5879),
    ] {
        let r = send("POST", "Location".into(), located(&org, name, lat, lon)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        sites.push(format!("Location/{}", r.json()["id"].as_str().expect("id")));
    }
    let mut ids = Vec::new();
    // One service in central Leeds; one in Bristol and in north Leeds.
    for (n, at) in [("31010", vec![0]), ("31011", vec![2, 1])] {
        let mut body = service(n, n, &org, "DERMATOLOGY", &["BOOKABLE"], &["ROUTINE"]);
        body["location"] = json!(at
            .iter()
            .map(|i| json!({"reference": sites[*i]}))
            .collect::<Vec<_>>());
        let r = send("POST", "HealthcareService".into(), body).await;
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().expect("id").to_owned());
    }
    let order = |lat: f64, lon: f64| {
        let q = format!(
            "HealthcareService?near={lat}|{lon}|20|km&specialty=DERMATOLOGY&priority=ROUTINE&active=true"
        );
        let app = &app;
        async move {
            let b = app.search(&q).await;
            let d: Vec<f64> = b["entry"]
                .as_array()
                .expect("entries")
                .iter()
                .map(distance_of)
                .collect();
            (match_ids(&b), d)
        }
    };
    let (central, d) = order(53.7974, -1.5438).await;
    assert_eq!(central, vec![ids[0].clone(), ids[1].clone()], "{d:?}");
    assert!(d[0] < 0.1 && (5.0..7.0).contains(&d[1]), "{d:?}");
    let (north, d) = order(53.86, -1.55).await;
    assert_eq!(north, vec![ids[1].clone(), ids[0].clone()], "{d:?}");
    assert!(d[0] < 1.5 && d[1] > 6.0, "{d:?}");
}

#[actix_web::test]
async fn a_generated_directory_is_found_by_specialty_near_its_locations() {
    // The bulk-load path (`ers-server generate-directory`) keeps directory_positions as the
    // one-by-one writes do: each generated service is found near its own location.
    let app = spawn_with(ers_api::config::SeedMode::Sandbox).await;
    let pool = ers_schema::build_pool(&app.database_url, 1).expect("pool");
    let mut conn = pool.get().expect("connection");
    ers_api::service::synthetic::directory(&mut conn, 12, 24, &mut |_| {}).expect("generate");
    drop(conn);
    for n in 8_000_000..8_000_012 {
        let b = app
            .search(&format!(
                "HealthcareService?identifier=https://fhir.nhs.uk/Id/ers-service|{n}"
            ))
            .await;
        let service = &b["entry"][0]["resource"];
        let id = service["id"]
            .as_str()
            .expect("a generated service")
            .to_owned();
        let location = service["location"][0]["reference"]
            .as_str()
            .expect("a location");
        let place = app.search(location).await;
        let (lat, lon) = (
            place["position"]["latitude"].as_f64().expect("latitude"),
            place["position"]["longitude"].as_f64().expect("longitude"),
        );
        let code = service["specialty"][0]["coding"][0]["code"]
            .as_str()
            .expect("specialty");
        let found = match_ids(
            &app.search(&format!(
                "HealthcareService?near={lat}|{lon}|1|km&specialty={code}&_count=100"
            ))
            .await,
        );
        assert!(
            found.contains(&id),
            "{id} ({code}) near {location}: {found:?}"
        );
    }
}

/// A directory kept in step by Bundles: conditional creates (`request.ifNoneExist`) and
/// conditional updates (`PUT Type?criteria`) make the same Bundle safe to send again.
#[actix_web::test]
async fn bundles_with_conditional_entries_can_be_sent_again() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let by_id = "HealthcareService?identifier=https://fhir.nhs.uk/Id/ers-service|70101";
    let bundle = |name: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": organization("R69", "North"),
             "request": {"method": "POST", "url": "Organization",
                         "ifNoneExist": "identifier=https://fhir.nhs.uk/Id/ods-organization-code|R69"}},
            {"resource": service("70101", name, &org, "CARDIOLOGY", &["BOOKABLE"], &["ROUTINE"]),
             "request": {"method": "PUT", "url": by_id}},
        ]})
    };
    let statuses = |r: &Reply| -> Vec<String> {
        r.json()["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                e["response"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let r = define(&app, "POST", "/FHIR/R4".into(), bundle("Cardiology clinic")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(statuses(&r), ["200 OK", "201 Created"], "{}", r.text());
    let r = define(
        &app,
        "POST",
        "/FHIR/R4".into(),
        bundle("Cardiology clinic (renamed)"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(statuses(&r), ["200 OK", "200 OK"], "{}", r.text());
    let found = app.search(by_id).await;
    assert_eq!(found["total"], 1, "one service, changed in place: {found}");
    assert_eq!(
        found["entry"][0]["resource"]["name"],
        "Cardiology clinic (renamed)"
    );
    assert_eq!(found["entry"][0]["resource"]["meta"]["versionId"], "2");
    assert_eq!(
        app.search("Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|R69")
            .await["total"],
        1
    );
    // A conditional entry's fullUrl is not given an id (it may create nothing): another entry
    // refers to what it writes by search, and finds the existing organisation; a reference to
    // the fullUrl itself is refused, not stored.
    let bundle_linking = |name: &str, reference: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000aa",
             "resource": organization("R69", "North"),
             "request": {"method": "POST", "url": "Organization",
                         "ifNoneExist": "identifier=https://fhir.nhs.uk/Id/ods-organization-code|R69"}},
            {"resource": {"resourceType": "Location", "name": name, "status": "active",
                          "managingOrganization": {"reference": reference}},
             "request": {"method": "POST", "url": "Location"}},
        ]})
    };
    let linked = bundle_linking(
        "Annex",
        "Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|R69",
    );
    let r = define(&app, "POST", "/FHIR/R4".into(), linked).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(statuses(&r), ["200 OK", "201 Created"], "{}", r.text());
    let annex = app.search("Location?name=Annex").await;
    assert_eq!(
        annex["entry"][0]["resource"]["managingOrganization"]["reference"],
        format!("Organization/{org}"),
        "{annex}"
    );
    let probe = bundle_linking("Outpost", "urn:uuid:00000000-0000-4000-8000-0000000000aa");
    let d = define(&app, "POST", "/FHIR/R4".into(), probe)
        .await
        .assert_outcome(400, "invalid");
    assert!(
        d.contains("urn:uuid:00000000-0000-4000-8000-0000000000aa")
            && d.contains("managingOrganization"),
        "{d}"
    );
    assert_eq!(app.search("Location?name=Outpost").await["total"], 0);
    // Criteria not understood refuse the whole transaction, naming the entry.
    let mut bad = bundle("Never");
    bad["entry"][1]["request"]["url"] = json!("HealthcareService?nonsense=1");
    let d = define(&app, "POST", "/FHIR/R4".into(), bad)
        .await
        .assert_outcome(400, "not-supported");
    assert!(d.contains("nonsense"), "{d}");
    let mut bare = bundle("Never");
    bare["entry"][1]["request"]["url"] = json!("HealthcareService?");
    define(&app, "POST", "/FHIR/R4".into(), bare)
        .await
        .assert_outcome(400, "invalid");
}

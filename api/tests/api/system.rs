//! metadata, _ping, _status, headers, sandbox seed.

use crate::helpers::*;
use ers_api::config::SeedMode;

#[actix_web::test]
async fn metadata_is_a_capability_statement_from_the_registry() {
    let app = spawn_app().await;
    // No caller headers needed for metadata.
    let r = app.send(app.bare("GET", "metadata"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/fhir+json"));
    let cs = r.json();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["kind"], "instance");
    assert_eq!(cs["status"], "active");
    let resources = cs["rest"][0]["resource"].as_array().expect("resources");
    let types: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "Patient",
            "Practitioner",
            "Organization",
            "PractitionerRole",
            "Location",
            "HealthcareService",
            "Schedule",
            "Slot",
            "ServiceRequest",
            "Appointment",
            "DocumentReference",
            "Communication",
            "Subscription",
            "CommunicationRequest",
            "Provenance",
            "Binary",
            "Task",
            "CodeSystem",
            "ValueSet",
            "SearchParameter",
            "OperationDefinition",
            "StructureDefinition",
            "AuditEvent"
        ]
    );
    // Interactions come from the permission table, each naming who may use it.
    let codes = |r: &serde_json::Value| -> Vec<String> {
        r["interaction"]
            .as_array()
            .expect("interactions")
            .iter()
            .filter_map(|i| i["code"].as_str().map(str::to_owned))
            .collect()
    };
    let of = |t: &str| {
        resources
            .iter()
            .find(|r| r["type"] == t)
            .expect("type listed")
    };
    let provenance = of("Provenance");
    assert!(
        !codes(provenance).contains(&"create".to_string()),
        "Provenance is server-written"
    );
    assert_eq!(codes(of("AuditEvent")), ["read", "search-type"]);
    // The actions a user may take (e-RS A029): searched, never stored.
    assert_eq!(codes(of("Task")), ["search-type"]);
    // Appointments are never deleted; changes are PUT or operations.
    assert!(!codes(of("Appointment")).contains(&"delete".to_string()));
    let create_doc = resources[0]["interaction"]
        .as_array()
        .expect("i")
        .iter()
        .find(|i| i["code"] == "create")
        .expect("create")["documentation"]
        .as_str()
        .expect("doc")
        .to_owned();
    assert!(
        create_doc.contains("REFERRING_CLINICIAN") && !create_doc.contains("INFORMATION_ANALYST"),
        "{create_doc}"
    );
    assert_eq!(
        cs["rest"][0]["security"]["service"][0]["coding"][0]["code"],
        "OAuth"
    );
    let patient = &resources[0];
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in [
        "_id",
        "_lastUpdated",
        "identifier",
        "family",
        "birthdate",
        "general-practitioner",
        "address-postalcode",
    ] {
        assert!(params.contains(&p), "{p} missing from {params:?}");
    }
    let interactions: Vec<&str> = patient["interaction"]
        .as_array()
        .expect("interactions")
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    for i in [
        "read",
        "vread",
        "update",
        "create",
        "search-type",
        "history-instance",
        "history-type",
    ] {
        assert!(interactions.contains(&i), "{i} missing");
    }
    assert!(patient["searchInclude"]
        .as_array()
        .expect("includes")
        .iter()
        .any(|i| i == "Patient:general-practitioner"));
    assert!(resources[1]["searchRevInclude"]
        .as_array()
        .expect("revincludes")
        .iter()
        .any(|i| i == "PractitionerRole:practitioner"));

    // The same document as XML.
    let r = app
        .send(app.bare("GET", "metadata?_format=xml"), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/fhir+xml"));
    assert!(
        r.text()
            .contains("<CapabilityStatement xmlns=\"http://hl7.org/fhir\">"),
        "{}",
        r.text()
    );
}

#[actix_web::test]
async fn metadata_in_terminology_mode_lists_the_code_systems() {
    let app = spawn_app().await;
    let r = app
        .send(app.bare("GET", "metadata?mode=terminology"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tc = r.json();
    assert_eq!(tc["resourceType"], "TerminologyCapabilities");
    assert_eq!(tc["kind"], "instance");
    let uris: Vec<&str> = tc["codeSystem"]
        .as_array()
        .expect("code systems")
        .iter()
        .filter_map(|c| c["uri"].as_str())
        .collect();
    assert!(
        uris.contains(&"https://fhir.nhs.uk/CodeSystem/eRS-Priority")
            && uris.contains(&"https://fhir.nhs.uk/CodeSystem/ers-error-codes"),
        "{uris:?}"
    );
    // Each is served where it says.
    let served = app.search("CodeSystem?_count=100").await["total"]
        .as_i64()
        .expect("total");
    assert_eq!(i64::try_from(uris.len()).expect("n"), served);
    // As XML too; full is the CapabilityStatement; another mode is refused by name.
    let r = app
        .send(
            app.bare("GET", "metadata?mode=terminology&_format=xml"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("<TerminologyCapabilities"),
        "{}",
        r.text()
    );
    let r = app.send(app.bare("GET", "metadata?mode=full"), None).await;
    assert_eq!(r.json()["resourceType"], "CapabilityStatement");
    let d = app
        .send(app.bare("GET", "metadata?mode=everything"), None)
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("everything"), "{d}");
}

#[actix_web::test]
async fn ping_and_status_check_the_database() {
    let app = spawn_app().await;
    let r = app.send(app.bare("GET", "/_ping"), None).await;
    assert_eq!(r.status, 200);
    let r = app.send(app.bare("GET", "/_status"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json();
    assert_eq!(s["checks"]["database"]["status"], "pass");
    let expected = if std::env::var("ERS_TEST_POSTGRES_URL")
        .map(|u| !u.is_empty())
        .unwrap_or(false)
    {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(s["checks"]["database"]["backend"], expected);
}

#[actix_web::test]
async fn request_and_correlation_ids_and_security_headers() {
    let app = spawn_app().await;
    let r = app
        .send(
            app.req("GET", "Patient")
                .insert_header(("X-Correlation-ID", "corr-123")),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-correlation-id").as_deref(), Some("corr-123"));
    let id1 = r.header("x-request-id").expect("request id");
    let r2 = app.get("Patient").await;
    let id2 = r2.header("x-request-id").expect("request id");
    assert_ne!(id1, id2);
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    // Errors carry them too.
    let r = app
        .send(
            app.authed("GET", "Patient")
                .insert_header(("X-Correlation-ID", "corr-err")),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-correlation-id").as_deref(), Some("corr-err"));
    assert!(r.header("x-request-id").is_some());
}

#[actix_web::test]
async fn sandbox_seed_creates_the_nhs_test_patients_and_the_directory() {
    let app = spawn_with(SeedMode::Sandbox).await;
    for nhs in ["9912003888", "9462979626"] {
        let b = app
            .search(&format!(
                "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}"
            ))
            .await;
        assert_eq!(b["total"], 1, "{nhs}: {b}");
    }
    let orgs = app
        .search("Organization?identifier=R69,R68&_summary=count")
        .await;
    assert_eq!(orgs["total"], 2);
    let roles = app.search("PractitionerRole?practitioner.identifier=000000000101&_include=PractitionerRole:organization").await;
    assert_eq!(match_ids(&roles).len(), 2, "{roles}");
    let total = app.search("Patient?_summary=count").await["total"]
        .as_i64()
        .expect("total");
    assert!(total >= 42, "{total}");
    // The Directory of Services, with the NHS sandbox service ids and free slots.
    let services = app
        .search(
            "HealthcareService?identifier=10000,11000,11002,12000,11014,50001,50110&_summary=count",
        )
        .await;
    assert_eq!(services["total"], 7);
    let all = app.search("HealthcareService?_summary=count").await["total"]
        .as_i64()
        .expect("total");
    assert!(all >= 250, "a few hundred services: {all}");
    assert_eq!(
        app.search("Location?_summary=count").await["total"],
        11,
        "sites across England"
    );
    assert_eq!(app.search("HealthcareService?characteristic=ADVICE_AND_GUIDANCE&specialty=CARDIOLOGY&_summary=count").await["total"], 9);
    let schedules = app
        .search("Schedule?actor:HealthcareService.identifier=11000")
        .await;
    let schedule = schedules["entry"][0]["resource"]["id"]
        .as_str()
        .expect("schedule of 11000")
        .to_owned();
    let slots = app
        .search(&format!(
            "Slot?schedule={schedule}&status=free&_summary=count"
        ))
        .await;
    assert_eq!(slots["total"], 12);
    // A service's e-RS id is its logical id, as e-RS reads it (A033) and searches its slots
    // (A015).
    let r = app.get("HealthcareService/11000").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["identifier"][0]["value"], "11000");
    // The NHS sandbox's A033 and A035 examples: services 1 to 4, and none 5 or 6.
    for id in ["1", "2"] {
        let r = app.get(&format!("HealthcareService/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["identifier"][0]["value"], id);
    }
    for (ids, found) in [("1,2", 2), ("3,4", 2), ("5,6", 0)] {
        let b = app.search(&format!("HealthcareService?_id={ids}")).await;
        assert_eq!(b["total"], found, "{ids}: {b}");
    }
    let a015 = app
        .search("Slot?schedule.actor:HealthcareService=11000&appointmentType=ROUTINE&status=free&_count=5&page=2&_include=Slot:schedule")
        .await;
    // Its six routine slots in two pages of five (as in the NHS sandbox); a third is 400.
    assert_eq!(a015["total"], 6, "{a015}");
    assert_eq!(match_ids(&a015).len(), 1, "{a015}");
    app.get("Slot?schedule.actor:HealthcareService=11000&appointmentType=ROUTINE&status=free&_count=5&page=3")
        .await
        .assert_outcome(400, "invalid");
    // Every generated NHS number is in the reserved test range (or a sandbox test patient).
    let all = app.search("Patient?_count=1000").await;
    for e in all["entry"].as_array().expect("entries") {
        let nhs = e["resource"]["identifier"][0]["value"]
            .as_str()
            .expect("nhs");
        assert!(
            nhs.starts_with("999") || nhs == "9912003888" || nhs == "9462979626",
            "{nhs}"
        );
    }
}

#[actix_web::test]
async fn seeding_twice_creates_nothing_the_second_time() {
    // A fresh database of the backend under test.
    let pool = ers_schema::build_pool(&database_url(), 2).expect("pool");
    let mut conn = pool.get().expect("connection");
    ers_schema::run_migrations(&mut conn).expect("migrations");
    let first = ers_api::service::seed::sandbox(&mut conn).expect("first seed");
    assert!(first.created > 500, "{first:?}");
    let second = ers_api::service::seed::sandbox(&mut conn).expect("second seed");
    assert_eq!(second.created, 0, "{second:?}");
    assert_eq!(second.existing, first.created);
}

/// PostgreSQL plans every page of a search or an export with its values: a generic plan of a
/// kept statement (after five runs) turned each page of an organisation's export into a join
/// of all its rows.
#[actix_web::test]
async fn postgresql_plans_each_page_with_its_values() {
    let url = database_url();
    if !url.starts_with("postgres") {
        return;
    }
    let pool = ers_schema::build_pool(&url, 1).expect("pool");
    let mut conn = pool.get().expect("connection");
    ers_schema::run_migrations(&mut conn).expect("migrations");
    let q = ers_schema::exports::PageQuery {
        res_type: "ServiceRequest".into(),
        required: vec![("_access".into(), vec!["R69".into()])],
        ..Default::default()
    };
    let search = ers_schema::search::SearchQuery {
        res_type: "ServiceRequest".into(),
        criteria: vec![ers_schema::search::Criterion::Token {
            param: "_access".into(),
            any_of: vec![ers_schema::search::TokenMatch {
                system: None,
                code: Some("R69".into()),
            }],
            negate: false,
        }],
        sort: vec![],
        offset: 0,
        limit: 20,
    };
    for _ in 0..8 {
        ers_schema::exports::page(&mut conn, &q, &Default::default(), 100).expect("page");
        ers_schema::search::search(&mut conn, &search, false).expect("search");
    }
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName, Debug)]
    struct Kept {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    // Neither is kept as a prepared statement (one that is may be given a generic plan).
    let kept: Kept = diesel::sql_query(
        "SELECT COUNT(*)::int8 AS n FROM pg_prepared_statements \
         WHERE statement LIKE '%search_tokens%'",
    )
    .get_result(&mut conn)
    .expect("prepared statements");
    assert_eq!(kept.n, 0, "{kept:?}");
}

#[actix_web::test]
async fn the_servers_own_conformance_resources_are_served() {
    let app = spawn_app().await;
    // A SearchParameter for each registry parameter, found by base and code.
    let b = app
        .search("SearchParameter?base=ServiceRequest&code=state")
        .await;
    assert_eq!(b["total"], 1, "{b}");
    assert_eq!(b["entry"][0]["resource"]["type"], "token");
    // Each operation, with its parameters as the operation takes them.
    let r = app.get("OperationDefinition/ers.cancelAppointment").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let od = r.json();
    assert_eq!(od["resource"][0], "Appointment");
    let reason = od["parameter"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "reason")
        .expect("reason");
    assert_eq!(reason["min"], 1);
    let b = app
        .search("OperationDefinition?resource=ServiceRequest")
        .await;
    assert!(b["total"].as_i64().expect("total") >= 10, "{b}");
    // The CapabilityStatement points at them.
    let cs = app.get("metadata").await.json();
    assert!(cs
        .to_string()
        .contains("https://fhir.nhs.uk/OperationDefinition/ers.cancelAppointment"));
    // A ValueSet of each CodeSystem, expanded; the extensions' definitions.
    let vs = app.get("ValueSet/ers-priority").await.json();
    assert!(vs.to_string().contains("TWO_WEEK_WAIT"), "{vs}");
    let b = app.search("StructureDefinition?type=Extension").await;
    assert!(
        b.to_string()
            .contains("Extension-eRS-AdditionalRequirements"),
        "{b}"
    );
    app.get("StructureDefinition/nope")
        .await
        .assert_outcome(404, "not-found");
    app.post_json(
        "ValueSet",
        &serde_json::json!({"resourceType": "ValueSet", "status": "draft"}),
    )
    .await
    .assert_outcome(405, "not-supported");
}

/// CORS for the origins configured (`ERS_CORS_ORIGINS`): a browser's preflight is answered
/// before authentication, answers (errors too) name the origin and expose the headers a
/// client reads, other origins get no grant; without the setting there is no CORS at all.
#[actix_web::test]
async fn browser_pages_from_configured_origins_may_call_the_api() {
    const PAGE: &str = "https://app.example.nhs.uk";
    let app = spawn_configured(ers_api::config::Settings {
        cors_origins: vec![PAGE.to_owned()],
        seed: ers_api::config::SeedMode::None,
        rate_limit_per_sec: 0,
        ..Default::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        app.send(
            app.bare("OPTIONS", "Patient")
                .insert_header(("Origin", origin))
                .insert_header(("Access-Control-Request-Method", "POST"))
                .insert_header((
                    "Access-Control-Request-Headers",
                    "authorization, content-type, nhsd-ers-business-function",
                )),
            None,
        )
    };
    let r = preflight(PAGE).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    let methods = r.header("access-control-allow-methods").unwrap_or_default();
    assert!(
        methods.contains("POST") && methods.contains("PUT"),
        "{methods}"
    );
    // The call itself, and an error, carry the grant and the headers a client reads.
    let id = app
        .create(&patient(NHS[0], "Cross", "Origin", "1980-01-01", "female"))
        .await;
    let r = app
        .send(
            app.req("GET", &format!("Patient/{id}"))
                .insert_header(("Origin", PAGE)),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_lowercase();
    for h in ["etag", "location", "x-request-id"] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    let r = app
        .send(
            app.bare("GET", "Patient").insert_header(("Origin", PAGE)),
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    // Another origin is granted nothing.
    let r = preflight("https://elsewhere.example").await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
    let r = app
        .send(
            app.req("GET", &format!("Patient/{id}"))
                .insert_header(("Origin", "https://elsewhere.example")),
            None,
        )
        .await;
    // (A server-side client that happens to send an Origin is answered as ever.)
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    // The CapabilityStatement says CORS is on.
    assert_eq!(
        app.get("metadata").await.json()["rest"][0]["security"]["cors"],
        true
    );

    // Without the setting: no grant, and an OPTIONS is a method the endpoint does not serve.
    let plain = spawn_app().await;
    let r = plain
        .send(
            plain
                .bare("OPTIONS", "Patient")
                .insert_header(("Origin", PAGE))
                .insert_header(("Access-Control-Request-Method", "POST")),
            None,
        )
        .await;
    assert_eq!(r.status, 405);
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(
        plain.get("metadata").await.json()["rest"][0]["security"]["cors"],
        false
    );
}

//! Every access to patient data leaves an AuditEvent an auditor can find; every version says
//! who made it; the trail is append-only.

use crate::helpers::*;
use serde_json::{json, Value};

#[actix_web::test]
async fn every_patient_access_is_audited_and_searchable_by_auditors() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Audit", "Me", "1980-01-01", "female"))
        .await;
    app.get(&format!("Patient/{id}")).await;
    app.search(&format!("Patient?identifier={}", NHS[0])).await;
    let mut body = app.get(&format!("Patient/{id}")).await.json();
    body["name"][0]["given"] = json!(["Changed"]);
    assert_eq!(
        app.put_json(&format!("Patient/{id}"), &body, Some("W/\"1\""))
            .await
            .status,
        200
    );
    app.get(&format!("Patient/{id}/_history/1")).await;
    // A refused access (an operational role may not read patients) is audited too.
    let d = app
        .send(
            app.as_user(
                &app.token,
                "GET",
                &format!("Patient/{id}"),
                "INFORMATION_ANALYST",
                "R69",
            ),
            None,
        )
        .await
        .assert_outcome(403, "forbidden");
    assert!(
        d.contains("INFORMATION_ANALYST") && d.contains("Patient"),
        "{d}"
    );

    let b = auditor_search(&app, &format!("patient=Patient/{id}&_count=100")).await;
    let mut found = subtypes(&b);
    found.sort();
    assert_eq!(
        found,
        [
            "access-denied",
            "create",
            "read",
            "read",
            "search-type",
            "update",
            "vread"
        ],
        "{b}"
    );
    // The same by NHS number, and each event says who, in which role, where, and the outcome.
    let by_nhs = auditor_search(
        &app,
        &format!(
            "patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{}&subtype=update",
            NHS[0]
        ),
    )
    .await;
    assert_eq!(by_nhs["total"], 1);
    let ev = &by_nhs["entry"][0]["resource"];
    assert_eq!(ev["resourceType"], "AuditEvent");
    assert_eq!(ev["action"], "U");
    assert_eq!(ev["outcome"], "0");
    assert_eq!(ev["agent"][0]["who"]["identifier"]["value"], TEST_USER);
    assert_eq!(
        ev["agent"][0]["role"][0]["coding"][0]["code"],
        "REFERRING_CLINICIAN"
    );
    assert_eq!(ev["agent"][1]["who"]["identifier"]["value"], "R69");
    assert_eq!(
        ev["entity"][0]["what"]["reference"],
        format!("Patient/{id}")
    );
    assert_eq!(ev["entity"][0]["what"]["identifier"]["value"], NHS[0]);
    let denied = auditor_search(&app, "subtype=access-denied").await;
    assert_eq!(denied["entry"][0]["resource"]["outcome"], "4");
    assert_eq!(
        denied["entry"][0]["resource"]["agent"][0]["role"][0]["coding"][0]["code"],
        "INFORMATION_ANALYST"
    );
    // Filters: agent, action, date.
    assert!(
        auditor_search(&app, &format!("agent={TEST_USER}&action=C")).await["total"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    );
    assert_eq!(auditor_search(&app, "date=lt2000-01-01").await["total"], 0);
    assert!(
        auditor_search(&app, "date=ge2020-01-01").await["total"]
            .as_i64()
            .unwrap_or(0)
            >= 7
    );
    // Read one event; it is valid FHIR (XML goes through the R4 model).
    let ev_id = ev["id"].as_str().expect("id");
    let r = app
        .send(
            app.as_user(
                &app.token,
                "GET",
                &format!("AuditEvent/{ev_id}?_format=xml"),
                "AUDITOR",
                "R69",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<AuditEvent"), "{}", r.text());
}

/// The correlation ids in the entity details of an event.
fn correlation_ids(ev: &Value) -> Vec<String> {
    ev["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["detail"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d["valueString"].as_str().map(str::to_owned))
        .collect()
}

#[actix_web::test]
async fn concurrent_reads_each_have_their_own_event_stored_before_the_answer() {
    // Reads record their events through one writer that commits them in groups; each answer
    // waits for its own event's commit.
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Group", "Commit", "1980-01-01", "female"))
        .await;
    let reads = (0..24).map(|i| {
        app.send(
            app.req("GET", &format!("Patient/{id}"))
                .insert_header(("X-Correlation-ID", format!("group-read-{i}"))),
            None,
        )
    });
    for r in futures_util::future::join_all(reads).await {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Asked as soon as the last answer arrived: every event is there, once.
    let b = auditor_search(
        &app,
        &format!("entity=Patient/{id}&subtype=read&_count=100"),
    )
    .await;
    let mut seen: Vec<String> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .flat_map(|e| correlation_ids(&e["resource"]))
        .filter(|c| c.starts_with("group-read-"))
        .collect();
    seen.sort();
    let mut expected: Vec<String> = (0..24).map(|i| format!("group-read-{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "{b}");
}

#[actix_web::test]
async fn failed_authentication_is_audited() {
    let app = spawn_app().await;
    let r = app
        .send(
            app.bare("GET", "Patient/abc")
                .insert_header(("X-Correlation-ID", "who-was-that")),
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    let b = auditor_search(&app, "subtype=access-denied&entity=Patient/abc").await;
    assert_eq!(b["total"], 1, "{b}");
    let ev = &b["entry"][0]["resource"];
    assert_eq!(ev["outcome"], "4");
    assert!(
        ev["outcomeDesc"]
            .as_str()
            .unwrap_or_default()
            .contains("bearer"),
        "{ev}"
    );
    let details = ev["entity"]
        .as_array()
        .expect("entities")
        .iter()
        .flat_map(|e| e["detail"].as_array().cloned().unwrap_or_default())
        .collect::<Vec<_>>();
    assert!(
        details.iter().any(|d| d["valueString"] == "who-was-that"),
        "{ev}"
    );
}

#[actix_web::test]
async fn the_trail_is_for_auditors_append_only_and_exportable() {
    let app = spawn_app().await;
    app.create(&patient(NHS[1], "Export", "Me", "1980-01-01", "male"))
        .await;
    // Only auditors.
    app.send(
        app.as_user(
            &app.token,
            "GET",
            "AuditEvent",
            "REFERRING_CLINICIAN",
            "R69",
        ),
        None,
    )
    .await
    .assert_outcome(403, "forbidden");
    // No writes through any interface.
    for (method, path) in [
        ("POST", "AuditEvent"),
        ("PUT", "AuditEvent/x"),
        ("DELETE", "AuditEvent/x"),
        ("PATCH", "AuditEvent/x"),
    ] {
        let r = app
            .send(
                app.as_user(&app.token, method, path, "AUDITOR", "R69")
                    .insert_header(("Content-Type", "application/fhir+json")),
                Some(b"{}".to_vec()),
            )
            .await;
        let d = r.assert_outcome(405, "not-supported");
        assert!(d.contains("append-only"), "{method} {path}: {d}");
    }
    // Export: NDJSON, one AuditEvent per line, as many as the search total.
    let total = auditor_search(&app, "_count=0").await["total"]
        .as_i64()
        .expect("total");
    let r = app
        .send(
            app.as_user(&app.token, "GET", "AuditEvent/$export", "AUDITOR", "R69"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/fhir+ndjson"));
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(lines.len() as i64 >= total, "{} < {total}", lines.len());
    assert!(lines.iter().all(|l| l["resourceType"] == "AuditEvent"));
}

#[actix_web::test]
async fn provenance_says_who_made_each_version() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[2], "Prov", "Enance", "1980-01-01", "female"))
        .await;
    let mut body = app.get(&format!("Patient/{id}")).await.json();
    body["gender"] = json!("unknown");
    app.put_json(&format!("Patient/{id}"), &body, None).await;
    let b = app
        .search(&format!("Provenance?target=Patient/{id}&_sort=recorded"))
        .await;
    assert_eq!(b["total"], 2, "{b}");
    let first = &b["entry"][0]["resource"];
    assert_eq!(
        first["target"][0]["reference"],
        format!("Patient/{id}/_history/1")
    );
    assert_eq!(first["activity"]["coding"][0]["code"], "CREATE");
    assert_eq!(first["agent"][0]["who"]["identifier"]["value"], TEST_USER);
    assert_eq!(
        first["agent"][0]["role"][0]["coding"][0]["code"],
        "REFERRING_CLINICIAN"
    );
    assert_eq!(
        first["agent"][0]["onBehalfOf"]["identifier"]["value"],
        "R69"
    );
    assert_eq!(
        b["entry"][1]["resource"]["target"][0]["reference"],
        format!("Patient/{id}/_history/2")
    );
    // Clients cannot write Provenance.
    app.post_json("Provenance", &json!({"resourceType": "Provenance", "target": [{"reference": format!("Patient/{id}")}], "recorded": "2026-01-01T00:00:00Z", "agent": [{"who": {"display": "me"}}]}))
        .await
        .assert_outcome(403, "forbidden");
    // Provenance does not stop the patient being deleted.
    assert_eq!(
        app.send(app.req("DELETE", &format!("Patient/{id}")), None)
            .await
            .status,
        204
    );
    assert_eq!(
        app.search(&format!("Provenance?target=Patient/{id}")).await["total"],
        3
    );
}

#[actix_web::test]
async fn a_provenance_is_its_version_read_searched_and_included() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[3], "Deriv", "Ed", "1970-02-02", "male"))
        .await;
    let mut body = app.get(&format!("Patient/{id}")).await.json();
    body["gender"] = json!("unknown");
    app.put_json(&format!("Patient/{id}"), &body, None).await;
    let (first, second) = (format!("Patient.1.{id}"), format!("Patient.2.{id}"));

    // Its id names the version; it reads, vreads and has a history of one version.
    let b = app
        .search(&format!("Provenance?target=Patient/{id}&_sort=recorded"))
        .await;
    assert_eq!(match_ids(&b), vec![first.clone(), second.clone()], "{b}");
    assert!(b["entry"][0]["fullUrl"]
        .as_str()
        .is_some_and(|u| u.ends_with(&format!("/Provenance/{first}"))));
    let r = app.get(&format!("Provenance/{first}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), b["entry"][0]["resource"]);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    assert_eq!(r.json()["meta"]["versionId"], "1");
    let r = app.get(&format!("Provenance/{second}/_history/1")).await;
    assert_eq!(
        r.json()["target"][0]["reference"],
        format!("Patient/{id}/_history/2")
    );
    assert_eq!(r.json()["activity"]["coding"][0]["code"], "UPDATE");
    app.get(&format!("Provenance/{second}/_history/2"))
        .await
        .assert_outcome(404, "not-found");
    let h = app.search(&format!("Provenance/{first}/_history")).await;
    assert_eq!(h["total"], 1, "{h}");
    assert_eq!(h["entry"][0]["resource"]["id"], first.as_str());
    // The type's history: every version's, newest first.
    let h = app.search("Provenance/_history?_count=2").await;
    assert_eq!(h["entry"][0]["resource"]["id"], second.as_str(), "{h}");
    assert_eq!(h["entry"][1]["resource"]["id"], first.as_str(), "{h}");
    // Ids naming no version are unknown.
    for bad in [
        format!("Patient.3.{id}"),
        format!("Patient.01.{id}"),
        format!("Patient.0.{id}"),
        format!("Nothing.1.{id}"),
        format!("Provenance.1.{id}"),
        id.clone(),
    ] {
        app.get(&format!("Provenance/{bad}"))
            .await
            .assert_outcome(404, "not-found");
    }

    // Its search parameters, on the versions' own columns.
    let total = |b: Value| b["total"].as_i64().unwrap_or(-1);
    let sds = "https://fhir.nhs.uk/Id/sds-user-id";
    let apps = "https://fhir.nhs.uk/Id/ers-application";
    let recorded = b["entry"][0]["resource"]["recorded"]
        .as_str()
        .expect("recorded")
        .replace(':', "%3A")
        .replace('+', "%2B");
    let target = format!("target=Patient/{id}");
    for (query, expected) in [
        (format!("_id={second}"), 1),
        (format!("target={id}"), 2),
        (format!("_id={first},{second},Patient.9.{id}"), 2),
        (format!("{target}&agent={sds}|{TEST_USER}"), 2),
        (format!("{target}&agent={TEST_USER}"), 2),
        (format!("{target}&agent={apps}|"), 0),
        (format!("{target}&agent={sds}|999000000002"), 0),
        (format!("{target}&agent:not={sds}|{TEST_USER}"), 0),
        (format!("{target}&agent-role=REFERRING_CLINICIAN"), 2),
        (format!("{target}&agent-role=SERVICE_DEFINER"), 0),
        (format!("{target}&recorded=gt{recorded}"), 1),
        (format!("{target}&recorded=le{recorded}"), 1),
        (format!("{target}&_lastUpdated=gt{recorded}"), 1),
        (
            format!(
                "target:Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
                NHS[3]
            ),
            2,
        ),
        (format!("{target}&_summary=count"), 2),
    ] {
        assert_eq!(
            total(app.search(&format!("Provenance?{query}")).await),
            expected,
            "{query}"
        );
    }
    let newest = app
        .search(&format!("Provenance?{target}&_sort=-recorded&_count=1"))
        .await;
    assert_eq!(match_ids(&newest), vec![second.clone()], "{newest}");
    let next = link(&newest, "next").expect("a next page");
    let next = &next[next.find("Provenance?").expect("relative")..];
    assert_eq!(match_ids(&app.search(next).await), vec![first.clone()]);

    // Included with its target, and its target with it.
    let b = app
        .search(&format!(
            "Provenance?_id={first}&_include=Provenance:target"
        ))
        .await;
    let included: Vec<&Value> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(included.len(), 1, "{b}");
    assert_eq!(included[0]["resource"]["id"], id.as_str());
    let b = app
        .search(&format!("Patient?_id={id}&_revinclude=Provenance:target"))
        .await;
    let mut included: Vec<String> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
        .collect();
    included.sort();
    assert_eq!(included, vec![first.clone(), second.clone()], "{b}");

    // What it cannot answer is refused, naming it.
    for (query, named) in [
        (
            format!("Patient?_has:Provenance:target:agent-role=REFERRING_CLINICIAN&_id={id}"),
            "_has:Provenance",
        ),
        (
            "Provenance?target:missing=true".to_owned(),
            "target:missing",
        ),
    ] {
        let d = app.get(&query).await.assert_outcome(400, "invalid");
        assert!(d.contains(named), "{query}: {d}");
    }
}

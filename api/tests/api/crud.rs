//! FHIR RESTful interactions: create, read, vread, update, delete, history, conditional create
//! (http.html in the R4 specification).

use crate::helpers::*;
use serde_json::{json, Value};

/// Conditional read (http.html#cread): a client holding the current version gets 304 and no
/// body; anything else gets the resource.
#[actix_web::test]
async fn a_read_of_a_version_the_client_holds_is_304_without_a_body() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Con", "Ditional", "1970-03-04", "female"))
        .await;
    let path = format!("Patient/{id}");
    let first = app.get(&path).await;
    let modified = first.header("last-modified").expect("Last-Modified");
    let read = |headers: Vec<(&'static str, String)>| {
        let mut req = app.req("GET", &path);
        for h in headers {
            req = req.insert_header(h);
        }
        app.send(req, None)
    };
    for held in ["W/\"1\"", "\"1\"", "*", "W/\"7\", W/\"1\""] {
        let r = read(vec![("If-None-Match", held.to_owned())]).await;
        assert_eq!(r.status, 304, "If-None-Match: {held}: {}", r.text());
        assert!(r.body.is_empty(), "a 304 has no body: {}", r.text());
        assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
        assert_eq!(
            r.header("last-modified").as_deref(),
            Some(modified.as_str())
        );
    }
    let r = read(vec![("If-Modified-Since", modified.clone())]).await;
    assert_eq!(r.status, 304, "{}", r.text());
    // An older copy, an earlier date, or a tag that does not match (which decides even with a
    // later date beside it): the resource.
    let earlier = "Mon, 01 Jan 2001 00:00:00 GMT".to_owned();
    for headers in [
        vec![("If-None-Match", "W/\"0\"".to_owned())],
        vec![("If-Modified-Since", earlier)],
        vec![
            ("If-None-Match", "W/\"0\"".to_owned()),
            (
                "If-Modified-Since",
                "Fri, 01 Jan 2100 00:00:00 GMT".to_owned(),
            ),
        ],
        vec![("If-None-Match", "not a tag".to_owned())],
    ] {
        let r = read(headers.clone()).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.text());
        assert_eq!(r.json()["id"], id.as_str());
    }
    // Once it changes, the held version is stale.
    let mut changed = first.json();
    changed["name"][0]["family"] = json!("Changed");
    let r = app.put_json(&path, &changed, Some("W/\"1\"")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = read(vec![("If-None-Match", "W/\"1\"".to_owned())]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"][0]["family"], "Changed");
    // A version read by its id is the same version for ever.
    let r = app
        .send(
            app.req("GET", &format!("{path}/_history/1"))
                .insert_header(("If-None-Match", "W/\"1\"")),
            None,
        )
        .await;
    assert_eq!(r.status, 304, "{}", r.text());
    // The CapabilityStatement says so.
    let cs = app.get("metadata").await.json();
    let patient = cs["rest"][0]["resource"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["type"] == "Patient"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(patient["conditionalRead"], "full-support");
}

#[actix_web::test]
async fn patient_create_read_update_vread_history_search() {
    let app = spawn_app().await;
    // create: 201 + Location + ETag + Last-Modified
    let r = app
        .post_json(
            "Patient",
            &patient(NHS[0], "Smith", "Ann", "1970-03-04", "female"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["meta"]["versionId"], "1");
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    assert!(r
        .header("last-modified")
        .expect("last-modified")
        .ends_with("GMT"));
    assert_eq!(
        r.header("location").expect("location"),
        format!("{}/Patient/{id}/_history/1", app.base)
    );

    // read
    let r = app.get(&format!("Patient/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    assert_eq!(r.json()["name"][0]["family"], "Smith");

    // update with the right If-Match → version 2
    let mut changed = r.json();
    changed["name"][0]["family"] = json!("Smythe");
    let r = app
        .put_json(&format!("Patient/{id}"), &changed, Some("W/\"1\""))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));
    assert_eq!(r.json()["meta"]["versionId"], "2");

    // update with a stale If-Match → 412, nothing changed
    changed["name"][0]["family"] = json!("Lost");
    let r = app
        .put_json(&format!("Patient/{id}"), &changed, Some("W/\"1\""))
        .await;
    let diag = r.assert_outcome(412, "conflict");
    assert!(
        diag.contains("version 1") && diag.contains("is 2"),
        "{diag}"
    );
    assert_eq!(r.issue_at().1, "If-Match");
    assert_eq!(
        app.get(&format!("Patient/{id}")).await.json()["name"][0]["family"],
        "Smythe"
    );

    // vread both versions
    let v1 = app.get(&format!("Patient/{id}/_history/1")).await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.json()["name"][0]["family"], "Smith");
    assert_eq!(v1.header("etag").as_deref(), Some("W/\"1\""));
    let v2 = app.get(&format!("Patient/{id}/_history/2")).await;
    assert_eq!(v2.json()["name"][0]["family"], "Smythe");
    app.get(&format!("Patient/{id}/_history/3"))
        .await
        .assert_outcome(404, "not-found");

    // instance history: newest first, with request/response
    let h = app.search(&format!("Patient/{id}/_history")).await;
    assert_eq!(h["type"], "history");
    assert_eq!(h["total"], 2);
    assert_eq!(h["entry"][0]["resource"]["meta"]["versionId"], "2");
    assert_eq!(h["entry"][0]["request"]["method"], "PUT");
    assert_eq!(h["entry"][1]["request"]["method"], "POST");
    assert_eq!(h["entry"][1]["response"]["etag"], "W/\"1\"");

    // type history includes it
    let th = app.search("Patient/_history").await;
    assert_eq!(th["total"], 2);

    // search by NHS number
    let b = app
        .search(&format!(
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
            NHS[0]
        ))
        .await;
    assert_eq!(b["type"], "searchset");
    assert_eq!(b["total"], 1);
    assert_eq!(match_ids(&b), vec![id.clone()]);
    assert_eq!(
        b["entry"][0]["fullUrl"],
        format!("{}/Patient/{id}", app.base)
    );
    let none = app
        .search(&format!(
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
            NHS[1]
        ))
        .await;
    assert_eq!(none["total"], 0);
}

#[actix_web::test]
async fn xml_round_trips() {
    let app = spawn_app().await;
    let xml = format!(
        r#"<Patient xmlns="http://hl7.org/fhir">
  <identifier><system value="https://fhir.nhs.uk/Id/nhs-number"/><value value="{}"/></identifier>
  <name><family value="Jones"/><given value="Bob"/></name>
  <gender value="male"/>
  <birthDate value="1981-02-03"/>
</Patient>"#,
        NHS[1]
    );
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+xml"))
                .insert_header(("Accept", "application/fhir+xml")),
            Some(xml.into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/fhir+xml"));
    assert!(
        r.text().contains("<family value=\"Jones\"/>"),
        "{}",
        r.text()
    );
    let location = r.header("location").expect("location");
    let id = location.split('/').rev().nth(2).expect("id").to_owned();

    // read back as JSON and as XML; the XML parses to the same resource
    let as_json = app.get(&format!("Patient/{id}")).await.json();
    assert_eq!(as_json["name"][0]["given"][0], "Bob");
    let as_xml = app
        .send(
            app.req("GET", &format!("Patient/{id}"))
                .insert_header(("Accept", "application/fhir+xml")),
            None,
        )
        .await;
    assert_eq!(as_xml.status, 200);
    let via_format = app.get(&format!("Patient/{id}?_format=xml")).await;
    assert_eq!(via_format.text(), as_xml.text());
    // update with the XML we got back: same content, new version
    let r = app
        .send(
            app.req("PUT", &format!("Patient/{id}"))
                .insert_header(("Content-Type", "application/fhir+xml")),
            Some(as_xml.body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v2 = r.json();
    assert_eq!(v2["meta"]["versionId"], "2");
    let strip = |mut v: Value| {
        v["meta"] = Value::Null;
        v
    };
    assert_eq!(strip(v2), strip(as_json));

    // searchsets and errors come back as XML too
    let b = app.get("Patient?_format=xml").await;
    assert!(
        b.text().contains("<Bundle xmlns=\"http://hl7.org/fhir\">"),
        "{}",
        b.text()
    );
    let e = app.get("Patient/nope?_format=xml").await;
    assert_eq!(e.status, 404);
    assert!(e.text().contains("<OperationOutcome"), "{}", e.text());
}

#[actix_web::test]
async fn conditional_create_with_if_none_exist() {
    let app = spawn_app().await;
    let body = patient(NHS[2], "Taylor", "Cat", "1990-01-01", "female");
    let ine = format!("identifier=https://fhir.nhs.uk/Id/nhs-number|{}", NHS[2]);
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header(("If-None-Exist", ine.as_str())),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    // Again: 200 with the existing resource, nothing created.
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header(("If-None-Exist", ine.as_str())),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(app.search("Patient?_summary=count").await["total"], 1);
    // Criteria matching several → 412.
    app.create(&patient(NHS[3], "Taylor", "Dan", "1991-01-01", "male"))
        .await;
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header(("If-None-Exist", "family=Taylor")),
            Some(
                patient(NHS[4], "Taylor", "Eve", "1992-01-01", "female")
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    r.assert_outcome(412, "multiple-matches");
    // Unknown criteria are refused rather than ignored (which would match everything).
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header(("If-None-Exist", "nonsense=1")),
            Some(body.to_string().into_bytes()),
        )
        .await;
    r.assert_outcome(400, "not-supported");
}

/// A DELETE that names a version (`If-Match`) removes only that version: a stale one is 412 and
/// nothing is removed; a retried DELETE after it succeeded is answered as done.
#[actix_web::test]
async fn a_delete_with_if_match_removes_only_the_version_it_names() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Del", "Ete", "1970-01-01", "male"))
        .await;
    let path = format!("Patient/{id}");
    let mut body = app.get(&path).await.json();
    body["gender"] = json!("unknown");
    let r = app.put_json(&path, &body, Some("W/\"1\"")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let delete = |version: &'static str| {
        app.send(
            app.req("DELETE", &path)
                .insert_header(("If-Match", version)),
            None,
        )
    };
    let d = delete("W/\"1\"").await.assert_outcome(412, "conflict");
    assert!(d.contains('2'), "the current version is named: {d}");
    assert_eq!(app.get(&path).await.status, 200, "nothing was removed");
    let r = delete("W/\"2\"").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(app.get(&path).await.status, 410);
    let r = delete("W/\"2\"").await;
    assert_eq!(r.status, 204, "a retry is answered as done: {}", r.text());
    delete("nonsense").await.assert_outcome(400, "value");
}

/// Conditional update (http.html#cond-update): `PUT Patient?identifier=…` changes the one
/// patient the criteria find, or creates it when none matches; several is 412.
#[actix_web::test]
async fn a_conditional_update_changes_the_one_match_or_creates_it() {
    let app = spawn_app().await;
    let by_nhs = format!(
        "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
        NHS[0]
    );
    let put = |path: String, body: Value, if_match: Option<&'static str>| {
        let mut req = app
            .req("PUT", &path)
            .insert_header(("Content-Type", "application/fhir+json"));
        if let Some(v) = if_match {
            req = req.insert_header(("If-Match", v));
        }
        app.send(req, Some(body.to_string().into_bytes()))
    };
    // None matches: created, with an id the server assigns.
    let body = patient(NHS[0], "Upsert", "Ann", "1970-01-01", "female");
    let r = put(by_nhs.clone(), body.clone(), None).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert!(r.header("location").expect("Location").contains(&id));
    // One matches: that one is changed (the body needs no id), with If-Match when given.
    let mut changed = body.clone();
    changed["name"][0]["family"] = json!("Upserted");
    let r = put(by_nhs.clone(), changed.clone(), Some("W/\"7\"")).await;
    r.assert_outcome(412, "conflict");
    let r = put(by_nhs.clone(), changed.clone(), Some("W/\"1\"")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["meta"]["versionId"], "2");
    assert_eq!(
        app.get(&format!("Patient/{id}")).await.json()["name"][0]["family"],
        "Upserted"
    );
    // A body naming another id than the match's, or an id when it would create: refused.
    changed["id"] = json!("someone-else");
    put(by_nhs.clone(), changed, None)
        .await
        .assert_outcome(400, "invalid");
    let mut named = patient(NHS[1], "New", "Named", "1970-01-01", "male");
    named["id"] = json!("chosen");
    put(
        format!(
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
            NHS[1]
        ),
        named,
        None,
    )
    .await
    .assert_outcome(400, "invalid");
    // Several match: 412, nothing changed.
    app.create(&patient(NHS[2], "Upserted", "Bob", "1971-01-01", "male"))
        .await;
    put(
        "Patient?family=Upserted".to_owned(),
        patient(NHS[3], "Many", "Matches", "1970-01-01", "male"),
        None,
    )
    .await
    .assert_outcome(412, "multiple-matches");
    // No criteria, or criteria not understood: refused rather than matching everything.
    put("Patient".to_owned(), body.clone(), None)
        .await
        .assert_outcome(400, "invalid");
    put("Patient?nonsense=1".to_owned(), body, None)
        .await
        .assert_outcome(400, "not-supported");
    let cs = app.get("metadata").await.json();
    let cap = |t: &str| {
        cs["rest"][0]["resource"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["type"] == t))
            .map(|r| r["conditionalUpdate"].clone())
    };
    assert_eq!(cap("Patient"), Some(json!(true)));
    assert_eq!(cap("ServiceRequest"), Some(json!(false)));
}

#[actix_web::test]
async fn business_identifiers_are_unique() {
    let app = spawn_app().await;
    app.create(&patient(NHS[0], "A", "B", "1970-01-01", "male"))
        .await;
    let r = app
        .post_json(
            "Patient",
            &patient(NHS[0], "C", "D", "1971-01-01", "female"),
        )
        .await;
    let diag = r.assert_outcome(409, "duplicate");
    assert!(diag.contains(NHS[0]), "{diag}");
    assert_eq!(r.json()["issue"][0]["expression"][0], "Patient.identifier");
    // An update may not take another patient's NHS number either.
    let other = app
        .create(&patient(NHS[1], "E", "F", "1972-01-01", "female"))
        .await;
    let mut body = patient(NHS[0], "E", "F", "1972-01-01", "female");
    body["id"] = json!(other);
    app.put_json(&format!("Patient/{other}"), &body, None)
        .await
        .assert_outcome(409, "duplicate");
    // But keeping its own is fine.
    let mut own = patient(NHS[1], "E2", "F", "1972-01-01", "female");
    own["id"] = json!(other);
    assert_eq!(
        app.put_json(&format!("Patient/{other}"), &own, None)
            .await
            .status,
        200
    );
    app.post_json("Organization", &organization("R69", "One"))
        .await;
    app.post_json("Organization", &organization("R69", "Two"))
        .await
        .assert_outcome(409, "duplicate");
    // An SDS role profile id is one role's.
    let org = app.search("Organization?identifier=R69").await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("R69")
        .to_owned();
    let role = json!({"resourceType": "PractitionerRole", "active": true,
        "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": "100000000099"}],
        "organization": {"reference": format!("Organization/{org}")},
        "code": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-BusinessFunction", "code": "REFERRING_CLINICIAN"}]}]});
    let r = app.post_json("PractitionerRole", &role).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = app.post_json("PractitionerRole", &role).await;
    let diag = r.assert_outcome(409, "duplicate");
    assert!(diag.contains("100000000099"), "{diag}");
}

/// Creates racing for one NHS number: exactly one is stored, and every other is 409 naming
/// the number, whether it lost at the look for an owner or at the store's unique index (two
/// creates that both looked before either wrote).
#[actix_web::test]
async fn concurrent_creates_of_one_identifier_store_one_and_name_it_to_the_others() {
    let app = spawn_app().await;
    let bodies: Vec<Value> = (0..8)
        .map(|i| patient(NHS[2], &format!("Racer{i}"), "X", "1980-01-01", "male"))
        .collect();
    let results =
        futures_util::future::join_all(bodies.iter().map(|b| app.post_json("Patient", b))).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        created,
        1,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != 201) {
        let diag = r.assert_outcome(409, "duplicate");
        assert!(diag.contains(NHS[2]), "{diag}");
        assert!(diag.contains("https://fhir.nhs.uk/Id/nhs-number"), "{diag}");
        assert_eq!(
            r.json()["issue"][0]["expression"][0],
            "Patient.identifier",
            "{diag}"
        );
    }
    let found = app
        .search(&format!(
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
            NHS[2]
        ))
        .await;
    assert_eq!(found["total"], 1, "{found}");
}

#[actix_web::test]
async fn references_must_resolve_and_referenced_resources_cannot_be_deleted() {
    let app = spawn_app().await;
    let mut p = patient(NHS[0], "Ref", "Erence", "1980-01-01", "male");
    p["generalPractitioner"] = json!([{"reference": "Organization/does-not-exist"}]);
    let r = app.post_json("Patient", &p).await;
    let diag = r.assert_outcome(422, "not-found");
    assert!(
        diag.contains("Patient.generalPractitioner[0].reference"),
        "{diag}"
    );
    assert_eq!(
        r.json()["issue"][0]["expression"][0],
        "Patient.generalPractitioner[0].reference"
    );

    let org = app.create(&organization("R68", "Practice")).await;
    p["generalPractitioner"] = json!([{"reference": format!("Organization/{org}")}]);
    let pid = app.create(&p).await;
    let r = app
        .send(app.req("DELETE", &format!("Organization/{org}")), None)
        .await;
    let diag = r.assert_outcome(409, "conflict");
    assert!(diag.contains(&pid), "{diag}");

    // Delete the patient: 204, then 410 on read, history keeps every version.
    let r = app
        .send(app.req("DELETE", &format!("Patient/{pid}")), None)
        .await;
    assert_eq!(r.status, 204);
    app.get(&format!("Patient/{pid}"))
        .await
        .assert_outcome(410, "deleted");
    assert_eq!(
        app.get(&format!("Patient/{pid}/_history/1")).await.status,
        200
    );
    let h = app.search(&format!("Patient/{pid}/_history")).await;
    assert_eq!(h["total"], 2);
    assert_eq!(h["entry"][0]["request"]["method"], "DELETE");
    assert!(h["entry"][0].get("resource").is_none());
    // A deleted patient is not found by search, and no longer pins the organisation.
    assert_eq!(app.search("Patient?family=Ref").await["total"], 0);
    assert_eq!(
        app.send(app.req("DELETE", &format!("Organization/{org}")), None)
            .await
            .status,
        204
    );
    // Deleting again is idempotent; deleting what never existed is 404.
    assert_eq!(
        app.send(app.req("DELETE", &format!("Patient/{pid}")), None)
            .await
            .status,
        204
    );
    app.send(app.req("DELETE", "Patient/never"), None)
        .await
        .assert_outcome(404, "not-found");
}

/// A reference in this server's absolute form (`{base}/Type/id`) is the local reference: stored
/// relative and checked as one. References to other servers are kept as sent.
#[actix_web::test]
async fn absolute_references_to_this_server_are_local_references() {
    let app = spawn_app().await;
    let org = app.create(&organization("R68", "Practice")).await;
    let mut p = patient(NHS[0], "Abs", "Olute", "1980-01-01", "male");
    p["generalPractitioner"] = json!([
        {"reference": format!("{}/Organization/{org}", app.base)},
        {"reference": "https://elsewhere.example/FHIR/R4/Organization/x"}
    ]);
    let r = app.post_json("Patient", &p).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = app
        .get(&r.header("location").expect("location"))
        .await
        .json();
    assert_eq!(
        stored["generalPractitioner"][0]["reference"],
        format!("Organization/{org}")
    );
    assert_eq!(
        stored["generalPractitioner"][1]["reference"],
        "https://elsewhere.example/FHIR/R4/Organization/x"
    );
    // It pins its target as a relative one does, and is found by a search for it.
    app.send(app.req("DELETE", &format!("Organization/{org}")), None)
        .await
        .assert_outcome(409, "conflict");
    let found = app
        .search(&format!("Patient?general-practitioner=Organization/{org}"))
        .await;
    assert_eq!(found["total"], 1);
    // An absolute reference to nothing here is refused, as a relative one is.
    let mut q = patient(NHS[1], "Abs", "Ent", "1980-01-01", "female");
    q["generalPractitioner"] = json!([{"reference": format!("{}/Organization/nowhere", app.base)}]);
    let r = app.post_json("Patient", &q).await;
    r.assert_outcome(422, "not-found");
    assert_eq!(
        r.json()["issue"][0]["expression"][0],
        "Patient.generalPractitioner[0].reference"
    );
}

/// An update checks the references it adds, and an unchanged reference only where the stored
/// version's index does not keep its target from being deleted.
#[actix_web::test]
async fn an_update_checks_the_references_that_may_have_lost_their_target() {
    let app = spawn_app().await;
    let gp = app.create(&organization("R68", "Practice")).await;
    let employer = app.create(&organization("R67", "Employer")).await;
    let mut p = patient(NHS[1], "Kept", "Reference", "1980-01-01", "female");
    // generalPractitioner is a search parameter's reference (indexed: its target cannot be
    // deleted); a contact's organisation is indexed by none.
    p["generalPractitioner"] = json!([{"reference": format!("Organization/{gp}")}]);
    p["contact"] = json!([{"name": {"family": "Next"}, "organization": {"reference": format!("Organization/{employer}")}}]);
    let pid = app.create(&p).await;
    p["id"] = json!(pid);

    // Unchanged references of a live resource: the update goes through.
    p["birthDate"] = json!("1980-01-02");
    assert_eq!(
        app.put_json(&format!("Patient/{pid}"), &p, None)
            .await
            .status,
        200
    );

    // The unindexed target can be deleted; the next update that keeps the reference is
    // refused at its place, and one that drops it goes through.
    assert_eq!(
        app.send(app.req("DELETE", &format!("Organization/{employer}")), None)
            .await
            .status,
        204
    );
    let r = app.put_json(&format!("Patient/{pid}"), &p, None).await;
    r.assert_outcome(422, "not-found");
    assert_eq!(
        r.json()["issue"][0]["expression"][0],
        "Patient.contact[0].organization.reference"
    );
    p["contact"] = json!([{"name": {"family": "Next"}}]);
    assert_eq!(
        app.put_json(&format!("Patient/{pid}"), &p, None)
            .await
            .status,
        200
    );

    // A new reference is checked as on create.
    p["generalPractitioner"] = json!([{"reference": "Organization/gone"}]);
    app.put_json(&format!("Patient/{pid}"), &p, None)
        .await
        .assert_outcome(422, "not-found");
}

#[actix_web::test]
async fn prefer_return_minimal_and_operation_outcome() {
    let app = spawn_app().await;
    let body = patient(NHS[0], "Min", "Imal", "1980-01-01", "male");
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header(("Prefer", "return=minimal")),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r.body.is_empty());
    assert!(r.header("location").is_some());
    let body = patient(NHS[1], "Oper", "Ation", "1980-01-01", "male");
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header(("Prefer", "return=OperationOutcome")),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    assert_eq!(r.json()["issue"][0]["severity"], "information");
}

#[actix_web::test]
async fn concurrent_updates_of_one_version_let_exactly_one_win() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Race", "Condition", "1980-01-01", "male"))
        .await;
    let mut futures = Vec::new();
    for i in 0..6 {
        let mut body = patient(NHS[0], &format!("Writer{i}"), "X", "1980-01-01", "male");
        body["id"] = json!(id);
        futures.push(async move { body });
    }
    let bodies: Vec<Value> = futures_util::future::join_all(futures).await;
    let path = format!("Patient/{id}");
    let sends = bodies
        .iter()
        .map(|b| app.put_json(&path, b, Some("W/\"1\"")));
    let results = futures_util::future::join_all(sends).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let refused = results
        .iter()
        .filter(|r| r.status == 412 || r.status == 409)
        .count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(refused, 5);
    let h = app.search(&format!("Patient/{id}/_history")).await;
    assert_eq!(h["total"], 2);
}

#[actix_web::test]
async fn if_match_can_be_required_for_every_update() {
    let app = spawn_configured(ers_api::config::Settings {
        require_if_match: true,
        seed: ers_api::config::SeedMode::None,
        ..Default::default()
    })
    .await;
    let id = app
        .create(&patient(NHS[0], "Lock", "Step", "1980-01-01", "male"))
        .await;
    let mut body = patient(NHS[0], "Lock", "Changed", "1980-01-01", "male");
    body["id"] = json!(id);
    let d = app
        .put_json(&format!("Patient/{id}"), &body, None)
        .await
        .assert_outcome(428, "required");
    assert!(d.contains("If-Match"), "{d}");
    assert_eq!(
        app.get(&format!("Patient/{id}")).await.json()["meta"]["versionId"],
        "1"
    );
    assert_eq!(
        app.put_json(&format!("Patient/{id}"), &body, Some("W/\"1\""))
            .await
            .status,
        200
    );
}

/// A stored version that no longer parses is the server's fault: an update or delete of it is
/// refused (500) and changes nothing, rather than going ahead without the checks that read it
/// (who owns it, which references it already made). (Its write time changes too, as an
/// instance that never parsed it would see it: this process keeps the versions of reference
/// data it wrote parsed, by number and write time.)
#[actix_web::test]
async fn a_stored_version_that_does_not_parse_is_never_written_over() {
    let app = spawn_app().await;
    let body = patient(NHS[0], "Un", "Readable", "1970-03-04", "female");
    let id = app.create(&body).await;
    app.execute_sql(&format!(
        "UPDATE resources SET content = '{{', last_updated = '2020-01-01 00:00:00' \
         WHERE res_type = 'Patient' AND id = '{id}'"
    ));
    let mut changed = body.clone();
    changed["id"] = json!(id);
    changed["gender"] = json!("male");
    let path = format!("Patient/{id}");
    let put = app.put_json(&path, &changed, Some("W/\"1\"")).await;
    put.assert_outcome(500, "exception");
    let delete = app.send(app.req("DELETE", &path), None).await;
    delete.assert_outcome(500, "exception");
    let versions = app.get(&format!("{path}/_history")).await;
    assert_eq!(versions.status, 200, "{}", versions.text());
    assert_eq!(versions.json()["total"], 1, "{}", versions.text());
}

/// Batch and transaction Bundles read, search and delete as well as write (http.html#transaction):
/// a batch answers each entry on its own, in order; a transaction runs its deletes first and its
/// reads last (which see what it wrote), all or nothing.
#[actix_web::test]
async fn bundles_read_search_and_delete_as_well_as_write() {
    let app = spawn_app().await;
    let a = app
        .create(&patient(NHS[0], "Alpha", "Ann", "1970-01-01", "female"))
        .await;
    let b = app
        .create(&patient(NHS[1], "Beta", "Bob", "1971-01-01", "male"))
        .await;
    let post = |entries: Value, kind: &str| {
        let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": entries});
        app.send(
            app.req("POST", "/FHIR/R4")
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(bundle.to_string().into_bytes()),
        )
    };
    let get = |url: String| json!({"request": {"method": "GET", "url": url}});
    let mut held = get(format!("Patient/{a}"));
    held["request"]["ifNoneMatch"] = json!("W/\"1\"");
    let r = post(
        json!([
            get(format!("Patient/{a}")),
            get("Patient?family=Beta".into()),
            get(format!("Patient/{a}/_history/1")),
            held,
            {"request": {"method": "DELETE", "url": format!("Patient/{b}")}},
            get("Patient/missing".into()),
            get("Patient?birthdate=yesterday".into()),
            get("AuditEvent/x".into()),
            {"request": {"method": "PATCH", "url": format!("Patient/{a}")}},
            get(format!("Patient/{a}?_elements=gender")),
            {"request": {"method": "HEAD", "url": format!("Patient/{a}")}},
        ]),
        "batch",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["type"], "batch-response");
    let e = |i: usize| out["entry"][i].clone();
    let status = |i: usize| {
        e(i)["response"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(status(0), "200 OK");
    assert_eq!(e(0)["resource"]["id"], a.as_str());
    assert_eq!(e(0)["response"]["etag"], "W/\"1\"");
    assert!(e(0)["fullUrl"]
        .as_str()
        .unwrap_or_default()
        .ends_with(&format!("/Patient/{a}")));
    assert_eq!(status(1), "200 OK");
    assert_eq!(e(1)["resource"]["type"], "searchset");
    assert_eq!(match_ids(&e(1)["resource"]), vec![b.clone()]);
    assert_eq!(e(2)["resource"]["meta"]["versionId"], "1");
    assert_eq!(status(3), "304 Not Modified", "{}", e(3));
    assert!(e(3).get("resource").is_none());
    assert_eq!(status(4), "204 No Content", "{}", e(4));
    assert!(status(5).starts_with("404"), "{}", e(5));
    assert!(status(6).starts_with("400"), "{}", e(6));
    assert_eq!(
        e(6)["response"]["outcome"]["issue"][0]["expression"][0],
        "request.url"
    );
    assert!(status(7).starts_with("400"), "{}", e(7));
    assert!(
        e(7)["response"]["outcome"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("its own request"),
        "{}",
        e(7)
    );
    assert!(status(8).starts_with("400"), "{}", e(8));
    assert_eq!(e(9)["resource"]["gender"], "female");
    assert!(e(9)["resource"].get("name").is_none(), "{}", e(9));
    assert_eq!(e(9)["resource"]["meta"]["tag"][0]["code"], "SUBSETTED");
    // HEAD: the read's answer without the resource.
    assert_eq!(status(10), "200 OK", "{}", e(10));
    assert!(e(10).get("resource").is_none(), "{}", e(10));
    assert_eq!(e(10)["response"]["etag"], "W/\"1\"");
    // Each read is audited as the plain read would be (a 304 too: the client learnt the version).
    let audit = auditor_search(&app, &format!("patient=Patient/{a}&_count=50")).await;
    let mut found = subtypes(&audit);
    found.sort();
    assert_eq!(
        found,
        ["create", "read", "read", "read", "read", "vread"],
        "{audit}"
    );
    assert_eq!(
        app.get(&format!("Patient/{b}")).await.status,
        410,
        "deleted"
    );

    // A transaction runs its reads last whatever the Bundle's order: its search, written first,
    // sees the patient it creates and the update it makes; the answers keep the Bundle's order.
    let mut alpha = app.get(&format!("Patient/{a}")).await.json();
    alpha["gender"] = json!("unknown");
    let eps = app
        .create(&patient(NHS[4], "Epsilon", "Eve", "1974-01-01", "female"))
        .await;
    let r = post(
        json!([
            get("Patient?family=Gamma,Alpha,Epsilon".into()),
            {"resource": alpha, "request": {"method": "PUT", "url": format!("Patient/{a}"), "ifMatch": "W/\"1\""}},
            {"resource": patient(NHS[2], "Gamma", "Gil", "1972-01-01", "male"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "DELETE", "url": format!("Patient/{eps}")}},
        ]),
        "transaction",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["type"], "transaction-response");
    let found = &out["entry"][0]["resource"];
    assert_eq!(found["total"], 2, "{found}");
    let resources: Vec<&Value> = found["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert!(
        resources
            .iter()
            .any(|p| p["id"] == a.as_str() && p["gender"] == "unknown"),
        "{found}"
    );
    assert!(
        resources.iter().any(|p| p["name"][0]["family"] == "Gamma"),
        "{found}"
    );
    assert_eq!(out["entry"][1]["response"]["status"], "200 OK");
    assert_eq!(out["entry"][2]["response"]["status"], "201 Created");
    assert_eq!(out["entry"][3]["response"]["status"], "204 No Content");
    assert_eq!(app.get(&format!("Patient/{eps}")).await.status, 410);

    // One resource deleted and updated by one transaction: refused, naming both entries.
    let current = app.get(&format!("Patient/{a}")).await.json();
    let r = post(
        json!([
            {"resource": current, "request": {"method": "PUT", "url": format!("Patient/{a}")}},
            {"request": {"method": "DELETE", "url": format!("Patient/{a}")}},
        ]),
        "transaction",
    )
    .await;
    let d = r.assert_outcome(400, "invalid");
    assert!(
        d.contains("Bundle.entry[1]") && d.contains("Bundle.entry[0]"),
        "{d}"
    );
    // A search entry's bad parameter is named where it is, in the entry's request.
    let r = post(
        json!([get("Patient?birthdate=yesterday".into())]),
        "transaction",
    )
    .await;
    r.assert_outcome(400, "invalid");
    assert_eq!(r.issue_at().1, "Bundle.entry[0].request.url");
    // A transaction that only reads.
    let r = post(json!([get(format!("Patient/{a}"))]), "transaction").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["entry"][0]["resource"]["id"], a.as_str());
    // A read that fails fails the transaction: the create before it is undone.
    let r = post(
        json!([
            {"resource": patient(NHS[3], "Delta", "Dee", "1973-01-01", "female"), "request": {"method": "POST", "url": "Patient"}},
            get("Patient/missing".into()),
        ]),
        "transaction",
    )
    .await;
    let d = r.assert_outcome(404, "not-found");
    assert!(d.contains("Bundle.entry[1]"), "{d}");
    assert_eq!(app.search("Patient?family=Delta").await["total"], 0);

    // A PATCH entry carries its JSON Patch in a Binary; anything else is named.
    use base64::Engine;
    let ops = json!([{"op": "replace", "path": "/gender", "value": "other"}]).to_string();
    let binary = json!({"resourceType": "Binary", "contentType": "application/json-patch+json",
        "data": base64::engine::general_purpose::STANDARD.encode(ops)});
    let r = post(
        json!([
            {"resource": binary, "request": {"method": "PATCH", "url": format!("Patient/{a}")}},
            {"resource": {"resourceType": "Parameters"}, "request": {"method": "PATCH", "url": format!("Patient/{a}")}},
        ]),
        "batch",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["entry"][0]["response"]["status"], "200 OK", "{out}");
    assert_eq!(out["entry"][0]["response"]["etag"], "W/\"3\"", "{out}");
    assert!(
        out["entry"][1]["response"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("400")),
        "{out}"
    );
    assert_eq!(
        app.get(&format!("Patient/{a}")).await.json()["gender"],
        "other"
    );
}

/// JSON Patch (http.html#patch, RFC 6902): the patched resource is checked and stored as an
/// update of the version patched would be; a patch that does not apply changes nothing.
#[actix_web::test]
async fn a_json_patch_changes_what_it_names_and_is_checked_as_an_update() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Patch", "Pat", "1970-01-01", "female"))
        .await;
    let path = format!("Patient/{id}");
    const JSON_PATCH: &str = "application/json-patch+json";
    let patch = |ops: Value, if_match: Option<&'static str>, content_type: &'static str| {
        let mut r = app
            .req("PATCH", &path)
            .insert_header(("Content-Type", content_type));
        if let Some(v) = if_match {
            r = r.insert_header(("If-Match", v));
        }
        app.send(r, Some(ops.to_string().into_bytes()))
    };
    let r = patch(
        json!([
            {"op": "test", "path": "/gender", "value": "female"},
            {"op": "replace", "path": "/gender", "value": "unknown"},
            {"op": "add", "path": "/name/0/given/-", "value": "Middle"},
        ]),
        Some("W/\"1\""),
        JSON_PATCH,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));
    let stored = app.get(&path).await.json();
    assert_eq!(stored["gender"], "unknown");
    assert_eq!(stored["name"][0]["given"], json!(["Pat", "Middle"]));
    assert_eq!(stored["name"][0]["family"], "Patch", "the rest is kept");
    assert_eq!(stored["meta"]["versionId"], "2");

    // A stale If-Match: 412.
    let replace_gender = json!([{"op": "replace", "path": "/gender", "value": "male"}]);
    patch(replace_gender.clone(), Some("W/\"1\""), JSON_PATCH)
        .await
        .assert_outcome(412, "conflict");
    // A test that fails names the operation and its path.
    let d = patch(
        json!([{"op": "replace", "path": "/gender", "value": "male"}, {"op": "test", "path": "/birthDate", "value": "1999-01-01"}]),
        None,
        JSON_PATCH,
    )
    .await
    .assert_outcome(422, "processing");
    assert!(
        d.contains("operation 1 (test)") && d.contains("/birthDate"),
        "{d}"
    );
    // It is located where a FHIRPath would name it.
    let r = patch(
        json!([{"op": "remove", "path": "/name/0/suffix"}]),
        None,
        JSON_PATCH,
    )
    .await;
    r.assert_outcome(422, "processing");
    assert_eq!(r.issue_at().1, "Patient.name[0].suffix");
    // A result that is not an R4 Patient, or breaks a Patient rule, is refused as a PUT would be.
    patch(
        json!([{"op": "replace", "path": "/birthDate", "value": 42}]),
        None,
        JSON_PATCH,
    )
    .await
    .assert_outcome(422, "structure");
    let d = patch(
        json!([{"op": "replace", "path": "/birthDate", "value": "2999-01-01"}]),
        None,
        JSON_PATCH,
    )
    .await
    .assert_outcome(422, "value");
    assert!(d.contains("birthDate"), "{d}");
    patch(
        json!([{"op": "replace", "path": "/id", "value": "another"}]),
        None,
        JSON_PATCH,
    )
    .await
    .assert_outcome(400, "invalid");
    // Not a JSON Patch: FHIRPath Patch is 415, a malformed document 400.
    let d = patch(
        json!({"resourceType": "Parameters"}),
        None,
        "application/fhir+json",
    )
    .await
    .assert_outcome(415, "not-supported");
    assert!(d.contains("application/json-patch+json"), "{d}");
    patch(json!({"op": "replace"}), None, JSON_PATCH)
        .await
        .assert_outcome(400, "invalid");
    assert_eq!(
        app.get(&path).await.json()["meta"]["versionId"],
        "2",
        "nothing that failed was written"
    );
    // Without If-Match: the current version.
    let r = patch(replace_gender, None, JSON_PATCH).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.get(&path).await.json()["gender"], "male");
    // Each patch is audited as one, an interaction of FHIR's own.
    let events = auditor_search(&app, &format!("patient=Patient/{id}&subtype=patch")).await;
    assert_eq!(events["total"], 2, "{events}");
    assert_eq!(
        events["entry"][0]["resource"]["subtype"][0]["system"],
        "http://hl7.org/fhir/restful-interaction"
    );
    // A referral changes only through its operations.
    let r = app
        .send(
            app.req("PATCH", "ServiceRequest/some-id")
                .insert_header(("Content-Type", JSON_PATCH)),
            Some(b"[]".to_vec()),
        )
        .await;
    assert_eq!(r.status, 405, "{}", r.text());
}

/// `_summary` and `_elements` are FHIR's general parameters: a read and a vread take them as a
/// search does, marking the subset SUBSETTED.
#[actix_web::test]
async fn a_read_returns_the_subset_summary_or_elements_ask_for() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Sub", "Set", "1970-01-01", "female"))
        .await;
    let subsetted = |r: &Value| {
        r["meta"]["tag"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["code"] == "SUBSETTED"))
    };
    let r = app.get(&format!("Patient/{id}?_elements=name")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    let p = r.json();
    assert_eq!(p["name"][0]["family"], "Sub");
    assert!(
        p.get("gender").is_none() && p.get("birthDate").is_none(),
        "{p}"
    );
    assert!(subsetted(&p), "{p}");
    let p = app
        .get(&format!("Patient/{id}/_history/1?_elements=gender"))
        .await
        .json();
    assert_eq!(p["gender"], "female");
    assert!(p.get("name").is_none() && subsetted(&p), "{p}");
    // A whole read is as stored, unmarked.
    let p = app
        .get(&format!("Patient/{id}?_summary=false"))
        .await
        .json();
    assert_eq!(p["gender"], "female");
    assert!(!subsetted(&p), "{p}");
    app.get(&format!("Patient/{id}?_summary=count"))
        .await
        .assert_outcome(400, "invalid");
    app.get(&format!("Patient/{id}?_elements=name.family"))
        .await
        .assert_outcome(400, "invalid");
}

#[actix_web::test]
async fn a_transaction_entry_may_refer_to_a_later_one_by_its_full_url() {
    let app = spawn_app().await;
    let post_as = |bf: &'static str, entries: Value| {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        app.send(
            app.as_user(&app.token, "POST", "/FHIR/R4", bf, "R69")
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(bundle.to_string().into_bytes()),
        )
    };
    let post = |entries: Value| post_as("SERVICE_DEFINER", entries);
    let urn = |n: u8| format!("urn:uuid:0b7f4f6e-0000-4000-8000-0000000000{n:02}");
    let create = |n: u8, resource: Value| {
        let t = resource["resourceType"].clone();
        json!({"fullUrl": urn(n), "resource": resource, "request": {"method": "POST", "url": t}})
    };
    // The location comes first and names the organisation after it; a search reads both.
    let r = post(json!([
        create(1, json!({"resourceType": "Location", "name": "Forward clinic", "status": "active",
            "managingOrganization": {"reference": urn(2)}})),
        create(2, organization("RZZ01", "Forward trust")),
        {"request": {"method": "GET", "url": "Location?name=Forward&_include=Location:organization"}},
    ]))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    let status = |i: usize| out["entry"][i]["response"]["status"].clone();
    assert_eq!(
        (status(0), status(1), status(2)),
        (json!("201 Created"), json!("201 Created"), json!("200 OK")),
        "{out}"
    );
    let org = out["entry"][1]["response"]["location"]
        .as_str()
        .and_then(|l| l.split("/_history").next())
        .and_then(|l| l.rsplit_once("Organization/"))
        .map(|(_, id)| format!("Organization/{id}"))
        .expect("the organisation's location");
    let found = &out["entry"][2]["resource"];
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(
        found["entry"][0]["resource"]["managingOrganization"]["reference"],
        json!(org),
        "{found}"
    );
    // Two that name each other (two records of one patient, each linking the other): the
    // first is written taking the second as there, which the transaction then writes.
    let linked = |nhs: &str, to: u8| {
        let mut p = patient(nhs, "Linked", "Twin", "1970-01-01", "female");
        p["link"] = json!([{"other": {"reference": urn(to)}, "type": "seealso"}]);
        p
    };
    let r = post_as(
        "REFERRING_CLINICIAN",
        json!([create(3, linked(NHS[2], 4)), create(4, linked(NHS[3], 3))]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    let id_of = |i: usize| {
        out["entry"][i]["response"]["location"]
            .as_str()
            .and_then(|l| l.split("/_history").next())
            .and_then(|l| l.rsplit_once("Patient/"))
            .map(|(_, id)| id.to_owned())
            .expect("a patient's location")
    };
    let (a, b) = (id_of(0), id_of(1));
    for (this, other) in [(&a, &b), (&b, &a)] {
        let p = app.get(&format!("Patient/{this}")).await.json();
        assert_eq!(
            p["link"][0]["other"]["reference"],
            format!("Patient/{other}"),
            "{p}"
        );
    }
    // A cycle whose entry fails writes nothing: not even the entry that ran first.
    let mut bad = linked(NHS[4], 6);
    bad["birthDate"] = json!("not a date");
    let r = post_as(
        "REFERRING_CLINICIAN",
        json!([create(5, linked(NHS[5], 6)), create(6, bad)]),
    )
    .await;
    assert!(r.status == 400 || r.status == 422, "{}", r.text());
    assert_eq!(
        app.search(&format!("Patient?identifier={}", NHS[5])).await["total"],
        0
    );
}

//! Every error is an OperationOutcome with the right status, issue code and a diagnostic that
//! names what was wrong.

use crate::helpers::*;
use serde_json::json;

#[actix_web::test]
async fn malformed_bodies_are_400() {
    let app = spawn_app().await;
    let send = |body: &'static str, ct: &'static str| {
        let r = app
            .req("POST", "Patient")
            .insert_header(("Content-Type", ct));
        app.send(r, Some(body.as_bytes().to_vec()))
    };
    let d = send("{\"resourceType\": \"Patient\",", "application/fhir+json")
        .await
        .assert_outcome(400, "structure");
    assert!(d.contains("JSON"), "{d}");
    let r = send(
        r#"{"resourceType":"Patient","nickname":"Bob"}"#,
        "application/fhir+json",
    )
    .await;
    let d = r.assert_outcome(400, "structure");
    assert!(d.contains("nickname"), "{d}");
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "UNEXPECTED_FIELD"
    );
    let d = send(
        r#"{"resourceType":"Patient","gender":5}"#,
        "application/fhir+json",
    )
    .await
    .assert_outcome(400, "structure");
    assert!(!d.is_empty());
    send(
        "<Patient xmlns=\"http://hl7.org/fhir\"><bogus/></Patient>",
        "application/fhir+xml",
    )
    .await
    .assert_outcome(400, "structure");
    send("<Patient", "application/fhir+xml")
        .await
        .assert_outcome(400, "structure");
    send("", "application/fhir+json")
        .await
        .assert_outcome(400, "invalid");
    // A body of another type than the URL.
    let d = app
        .post_json("Patient", &organization("R69", "x"))
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("Organization"), "{d}");
}

#[actix_web::test]
async fn xml_external_entities_are_refused_never_resolved() {
    let app = spawn_app().await;
    let xml = r#"<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><name><family value="&xxe;"/></name></Patient>"#;
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+xml")),
            Some(xml.as_bytes().to_vec()),
        )
        .await;
    let d = r.assert_outcome(400, "security");
    assert!(d.contains("DOCTYPE"), "{d}");
    assert!(!r.text().contains("root:"), "entity was resolved");
}

#[actix_web::test]
async fn invalid_resources_are_422_with_locations() {
    let app = spawn_app().await;
    let mut p = patient("9912003889", "Bad", "Check", "1980-13-01", "bloke");
    p["address"][0]["postalCode"] = json!("NOT A CODE");
    let r = app.post_json("Patient", &p).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let oo = r.json();
    let issues = oo["issue"].as_array().expect("issues");
    let exprs: Vec<&str> = issues
        .iter()
        .filter_map(|i| i["expression"][0].as_str())
        .collect();
    for e in [
        "Patient.identifier[0].value",
        "Patient.gender",
        "Patient.birthDate",
        "Patient.address[0].postalCode",
    ] {
        assert!(exprs.contains(&e), "{e} not in {exprs:?}");
    }
    let nhs = issues
        .iter()
        .find(|i| i["expression"][0] == "Patient.identifier[0].value")
        .expect("nhs issue");
    assert!(
        nhs["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("Modulus 11"),
        "{nhs}"
    );
    // Nothing was stored.
    assert_eq!(app.search("Patient?_summary=count").await["total"], 0);
}

#[actix_web::test]
async fn unknown_type_missing_and_gone_are_404_and_410() {
    let app = spawn_app().await;
    let d = app
        .get("Spaceship/1")
        .await
        .assert_outcome(404, "not-supported");
    assert!(d.contains("Spaceship") && d.contains("Patient"), "{d}");
    app.get("Spaceship")
        .await
        .assert_outcome(404, "not-supported");
    let d = app
        .get("Patient/unknown-id")
        .await
        .assert_outcome(404, "not-found");
    assert!(d.contains("Patient/unknown-id"), "{d}");
    app.get("Patient/bad!id")
        .await
        .assert_outcome(400, "invalid");
    app.send(app.bare("GET", "/nowhere"), None)
        .await
        .assert_outcome(404, "not-found");
    let id = app
        .create(&patient(NHS[0], "Gone", "Soon", "1980-01-01", "male"))
        .await;
    app.send(app.req("DELETE", &format!("Patient/{id}")), None)
        .await;
    let d = app
        .get(&format!("Patient/{id}"))
        .await
        .assert_outcome(410, "deleted");
    assert!(d.contains("deleted"), "{d}");
}

/// Every 405 carries `Allow` (RFC 9110 §15.5.6) with the methods served there, less any the
/// answer itself refuses for the resource at hand.
#[actix_web::test]
async fn every_405_says_which_methods_are_allowed() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Al", "Low", "1980-01-01", "male"))
        .await;
    let allow = |r: &Reply| {
        assert_eq!(r.status, 405, "{}", r.text());
        r.header("allow").expect("a 405 without Allow")
    };
    let cases = [
        // Methods the endpoint never serves.
        (
            "TRACE",
            format!("Patient/{id}"),
            "GET, HEAD, PUT, PATCH, DELETE",
        ),
        ("TRACE", "Patient".to_owned(), "GET, HEAD, POST, PUT"),
        ("POST", "metadata".to_owned(), "GET, HEAD"),
        ("DELETE", "AuditEvent".to_owned(), "GET, HEAD"),
        // Nobody may change or delete Provenance, so only GET is offered.
        ("TRACE", format!("Provenance/{id}"), "GET, HEAD"),
        // Refused here for this resource: the refused method is not offered again.
        (
            "PUT",
            "Patient/client-chosen".to_owned(),
            "GET, HEAD, PATCH, DELETE",
        ),
        ("PUT", "ServiceRequest/any".to_owned(), "GET, HEAD"),
        ("PATCH", "ServiceRequest/any".to_owned(), "GET, HEAD"),
        ("DELETE", "Appointment/any".to_owned(), "GET, HEAD, PUT"),
        (
            "PUT",
            "ServiceRequest/any/$ers.availableActions".to_owned(),
            "GET, HEAD, POST",
        ),
        (
            "GET",
            "ServiceRequest/any/$ers.cancelReferral".to_owned(),
            "POST",
        ),
        // An operation that changes state takes POST; one that only reads, GET too.
        (
            "OPTIONS",
            "ServiceRequest/any/$ers.cancelReferral".to_owned(),
            "POST",
        ),
        (
            "OPTIONS",
            "ServiceRequest/any/$ers.availableActions".to_owned(),
            "GET, HEAD, POST",
        ),
        (
            "PUT",
            "ServiceRequest/$ers.worklist".to_owned(),
            "GET, HEAD, POST",
        ),
    ];
    for (method, path, expected) in cases {
        let body = match method {
            "PUT" => {
                let mut p = patient(NHS[1], "New", "Id", "1980-01-01", "male");
                p["id"] = json!("client-chosen");
                Some(p.to_string().into_bytes())
            }
            "POST" => Some(b"{}".to_vec()),
            _ => None,
        };
        let req = app
            .req(method, &path)
            .insert_header(("Content-Type", "application/fhir+json"));
        let r = app.send(req, body).await;
        assert_eq!(allow(&r), expected, "{method} {path}");
    }
    // What Allow offers is served: HEAD is GET's answer without its body.
    assert_eq!(app.get(&format!("Patient/{id}")).await.status, 200);
    let r = app
        .send(app.req("HEAD", &format!("Patient/{id}")), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "{}", r.text());
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    let r = app
        .send(
            app.req("HEAD", "ServiceRequest/any/$ers.availableActions"),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "HEAD of an operation read with GET");
    // A bulk export's kick-off is a GET that starts work: a HEAD, which promises to be safe,
    // does not start it.
    let r = app
        .send(
            app.req("HEAD", "$export")
                .insert_header(("Prefer", "respond-async")),
            None,
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, POST"));
    assert!(r.header("content-location").is_none(), "no job was started");
    let r = app
        .send(app.req("DELETE", &format!("Patient/{id}")), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
}

#[actix_web::test]
async fn wrong_method_media_type_and_accept() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Meth", "Od", "1980-01-01", "male"))
        .await;
    app.send(app.req("TRACE", &format!("Patient/{id}")), None)
        .await
        .assert_outcome(405, "not-supported");
    // PATCH takes a JSON Patch document and nothing else.
    app.send(app.req("PATCH", &format!("Patient/{id}")), None)
        .await
        .assert_outcome(415, "not-supported");
    app.send(
        app.req("POST", &format!("Patient/{id}")),
        Some(b"{}".to_vec()),
    )
    .await
    .assert_outcome(405, "not-supported");
    app.send(app.bare("POST", "metadata"), None)
        .await
        .assert_outcome(405, "not-supported");
    // Update-as-create is not supported: the server assigns ids.
    let mut body = patient(NHS[1], "New", "Id", "1980-01-01", "male");
    body["id"] = json!("client-chosen");
    app.put_json("Patient/client-chosen", &body, None)
        .await
        .assert_outcome(405, "not-supported");

    let body = patient(NHS[1], "Media", "Type", "1980-01-01", "male")
        .to_string()
        .into_bytes();
    let d = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "text/plain")),
            Some(body.clone()),
        )
        .await
        .assert_outcome(415, "not-supported");
    assert!(d.contains("text/plain"), "{d}");
    app.send(app.req("POST", "Patient"), Some(body))
        .await
        .assert_outcome(415, "not-supported");
    let d = app
        .send(
            app.req("GET", &format!("Patient/{id}"))
                .insert_header(("Accept", "text/html")),
            None,
        )
        .await
        .assert_outcome(406, "not-supported");
    assert!(d.contains("text/html"), "{d}");
    app.get(&format!("Patient/{id}?_format=yaml"))
        .await
        .assert_outcome(406, "not-supported");
    // Accept with q-values picks the preferred FHIR format.
    let r = app
        .send(
            app.req("GET", &format!("Patient/{id}")).insert_header((
                "Accept",
                "application/fhir+json;q=0.5, application/fhir+xml",
            )),
            None,
        )
        .await;
    assert!(r
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/fhir+xml"));
}

#[actix_web::test]
async fn other_fhir_versions_and_unknown_operations_are_refused_by_name() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Ver", "Sion", "1980-01-01", "male"))
        .await;
    let read = |accept: &'static str| {
        app.send(
            app.req("GET", &format!("Patient/{id}"))
                .insert_header(("Accept", accept)),
            None,
        )
    };
    // R4 by the MIME-type parameter, as major.minor or a patch release: answered.
    for accept in [
        "application/fhir+json; fhirVersion=4.0",
        "application/fhir+json;fhirVersion=4.0.1",
        "application/fhir+json; fhirVersion=3.0, application/fhir+xml; fhirVersion=4.0",
    ] {
        let r = read(accept).await;
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
    }
    // Another version only: 406 naming it; a body of another: 415.
    let d = read("application/fhir+json; fhirVersion=3.0")
        .await
        .assert_outcome(406, "not-supported");
    assert!(
        d.contains("FHIR 3.0") && d.contains("fhirVersion=4.0"),
        "{d}"
    );
    let body = patient(NHS[1], "Stu", "Three", "1980-01-01", "male");
    let d = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json; fhirVersion=3.0")),
            Some(body.to_string().into_bytes()),
        )
        .await
        .assert_outcome(415, "not-supported");
    assert!(d.contains("FHIR 3.0"), "{d}");
    let r = app
        .send(
            app.req("POST", "Patient")
                .insert_header(("Content-Type", "application/fhir+json; fhirVersion=4.0")),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // $versions, with no token, as metadata.
    let r = app.send(app.bare("GET", "$versions"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["parameter"],
        json!([{"name": "version", "valueCode": "4.0"}, {"name": "default", "valueCode": "4.0"}])
    );
    // An operation the server, the type or the resource does not have: 404 naming it and
    // those there are (not a bad id, not a wrong method).
    for (path, named) in [
        (
            "$meta".to_owned(),
            "The server has no operation '$meta'; it has $export, $versions",
        ),
        (
            "Patient/$everything".to_owned(),
            "Patient has no operation '$everything'; it has $validate, $export",
        ),
        (
            format!("Patient/{id}/$foo"),
            "A Patient has no operation '$foo'; it has $everything",
        ),
        (
            "ServiceRequest/$foo".to_owned(),
            "ServiceRequest has no operation '$foo'; it has $validate, $ers.worklist",
        ),
        (
            "Subscription/s1/$foo".to_owned(),
            "A Subscription has no operation '$foo'; it has $events",
        ),
    ] {
        let d = app.get(&path).await.assert_outcome(404, "not-found");
        assert!(d.contains(named), "{path}: {d}");
    }
    // Operations that exist are still reached.
    let r = app.get("ServiceRequest/$ers.worklist").await;
    assert!(r.text().contains("listType"), "{}", r.text());
    app.get("Foo/$bar")
        .await
        .assert_outcome(404, "not-supported");
    // $validate is for the types clients write: one the server alone writes has none.
    let validate = |t: &'static str| {
        app.send(
            app.req("POST", &format!("{t}/$validate"))
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(format!(r#"{{"resourceType": "{t}"}}"#).into_bytes()),
        )
    };
    let d = validate("AuditEvent")
        .await
        .assert_outcome(404, "not-found");
    assert!(d.contains("AuditEvent has no operation '$validate'"), "{d}");
    validate("Foo").await.assert_outcome(404, "not-supported");
}

#[actix_web::test]
async fn oversized_bodies_are_413() {
    let app = spawn_app().await;
    let mut p = patient(NHS[0], "Big", "Body", "1980-01-01", "male");
    p["name"][0]["text"] = json!("x".repeat(6 * 1024 * 1024));
    let r = app.post_json("Patient", &p).await;
    let d = r.assert_outcome(413, "too-costly");
    assert!(d.contains("too large"), "{d}");
}

#[actix_web::test]
async fn update_id_rules() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Id", "Rules", "1980-01-01", "male"))
        .await;
    let mut body = patient(NHS[0], "Id", "Rules", "1980-01-01", "male");
    app.put_json(&format!("Patient/{id}"), &body, None)
        .await
        .assert_outcome(400, "invalid");
    body["id"] = json!("another");
    let d = app
        .put_json(&format!("Patient/{id}"), &body, None)
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("another"), "{d}");
    body["id"] = json!(id);
    let d = app
        .put_json(&format!("Patient/{id}"), &body, Some("banana"))
        .await
        .assert_outcome(400, "value");
    assert!(d.contains("If-Match"), "{d}");
}

#[actix_web::test]
async fn caller_headers_are_required_and_checked() {
    let app = spawn_app().await;
    let d = app
        .send(app.authed("GET", "Patient"), None)
        .await
        .assert_outcome(400, "required");
    assert!(d.contains("NHSD-eRS-Business-Function"), "{d}");
    let d = app
        .send(
            app.authed("GET", "Patient")
                .insert_header((BF, "REFERRING_CLINICIAN")),
            None,
        )
        .await
        .assert_outcome(400, "required");
    assert!(d.contains("NHSD-End-User-Organisation-ODS"), "{d}");
    let d = app
        .send(
            app.authed("GET", "Patient")
                .insert_header((BF, "DOCTOR"))
                .insert_header((ODS, "R69")),
            None,
        )
        .await
        .assert_outcome(400, "value");
    assert!(
        d.contains("DOCTOR") && d.contains("REFERRING_CLINICIAN"),
        "{d}"
    );
    app.send(
        app.authed("GET", "Patient")
            .insert_header((BF, "REFERRING_CLINICIAN"))
            .insert_header((ODS, "r 69")),
        None,
    )
    .await
    .assert_outcome(400, "value");
    // SPCA must say on whose behalf; others must not.
    let spca = app
        .authed("GET", "Patient")
        .insert_header((BF, "SERVICE_PROVIDER_CLINICIAN_ADMIN"))
        .insert_header((ODS, "RCD"));
    let d = app.send(spca, None).await.assert_outcome(400, "required");
    assert!(d.contains("NHSD-eRS-On-Behalf-Of-User-ID"), "{d}");
    // The user acted for must be a SERVICE_PROVIDER_CLINICIAN at the same organisation.
    let obo = app
        .authed("GET", "Patient")
        .insert_header((BF, "SERVICE_PROVIDER_CLINICIAN_ADMIN"))
        .insert_header((ODS, "RCD"))
        .insert_header(("NHSD-eRS-On-Behalf-Of-User-ID", "555032006106"));
    let d = app.send(obo, None).await.assert_outcome(403, "forbidden");
    assert!(
        d.contains("555032006106") && d.contains("SERVICE_PROVIDER_CLINICIAN"),
        "{d}"
    );
    let extra = app
        .req("GET", "Patient")
        .insert_header(("NHSD-eRS-On-Behalf-Of-User-ID", "555032006106"));
    app.send(extra, None).await.assert_outcome(400, "value");
}

#[actix_web::test]
async fn sql_injection_strings_are_just_values() {
    let app = spawn_app().await;
    app.create(&patient(NHS[0], "O'Brien", "Sean", "1980-01-01", "male"))
        .await;
    for q in [
        "Patient?family=x'%20OR%20'1'='1",
        "Patient?identifier=x'%3B%20DROP%20TABLE%20resources%3B--",
        "Patient?name:contains=%25",
        "Patient?name:contains=_",
        "Patient?_id=1%20OR%201%3D1",
        "Patient?general-practitioner=Organization/x'--",
    ] {
        let r = app.get(q).await;
        assert!(r.status == 200 || r.status == 400, "{q}: {}", r.text());
        if r.status == 200 {
            assert_eq!(r.json()["total"], 0, "{q}");
        }
    }
    let b = app.search("Patient?family=O'Brien").await;
    assert_eq!(b["total"], 1);
    assert_eq!(app.search("Patient?_summary=count").await["total"], 1);
}

//! The OpenAPI document: generated from the code, committed, served, and shown offline.

use crate::helpers::*;

#[actix_web::test]
async fn the_committed_openapi_document_matches_the_code() {
    let committed = std::fs::read_to_string(manifest_dir().join("../openapi/openapi.json"))
        .expect("openapi/openapi.json");
    let generated = ers_api::http::openapi::document_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run `cargo run -p ers-api --bin ers-server -- openapi > openapi/openapi.json`"
    );
    let app = spawn_app().await;
    let r = app.send(app.bare("GET", "openapi.json"), None).await;
    assert_eq!(r.status, 200);
    let served = r.json();
    assert_eq!(
        served,
        serde_json::from_str::<serde_json::Value>(&generated).expect("json")
    );
    assert_eq!(served["openapi"], "3.1.0");
    // Every registered interaction is there, with who may use it.
    let create = &served["paths"]["/FHIR/R4/Patient"]["post"];
    assert!(
        create["description"]
            .as_str()
            .unwrap_or_default()
            .contains("REFERRING_CLINICIAN"),
        "{create}"
    );
    assert!(
        served["paths"]["/FHIR/R4/Provenance"].get("post").is_none(),
        "Provenance is server-written"
    );
    assert!(served["paths"]["/FHIR/R4/AuditEvent/$export"]["get"].is_object());
    let params: Vec<&str> = served["paths"]["/FHIR/R4/Patient"]["get"]["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in [
        "NHSD-eRS-Business-Function",
        "identifier",
        "birthdate",
        "_count",
        "_include",
    ] {
        assert!(params.contains(&p), "{p} missing");
    }
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[actix_web::test]
async fn interactive_docs_are_served_from_the_binary() {
    let app = spawn_app().await;
    // `/docs` redirects to `/docs/` (the client follows it).
    let r = app.send(app.bare("GET", "/docs"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("swagger-ui"), "{}", r.text());
    let r = app.send(app.bare("GET", "/docs/"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("swagger-ui"), "{}", r.text());
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("http"),
        "{csp}"
    );
    let js = app
        .send(app.bare("GET", "/docs/swagger-ui-bundle.js"), None)
        .await;
    assert_eq!(js.status, 200);
    assert!(
        js.body.len() > 500_000,
        "the Swagger UI bundle comes from the binary"
    );
    let init = app
        .send(app.bare("GET", "/docs/swagger-initializer.js"), None)
        .await;
    assert_eq!(init.status, 200);
    assert!(
        init.text().contains("/FHIR/R4/openapi.json"),
        "{}",
        init.text()
    );
}

/// Whether a JSON value has the JSON type a schema property names (an array's items too).
fn fits(schema: &serde_json::Value, value: &serde_json::Value) -> bool {
    match schema["type"].as_str() {
        Some("array") => value
            .as_array()
            .is_some_and(|items| items.iter().all(|i| fits(&schema["items"], i))),
        Some("object") => value.is_object(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        // A reference to another schema (a contained Resource): an object.
        _ => value.is_object(),
    }
}

#[actix_web::test]
async fn what_the_server_answers_is_what_the_document_describes() {
    let app = spawn_with(ers_api::config::SeedMode::Sandbox).await;
    let doc = ers_api::http::openapi::document();
    let doc = serde_json::to_value(&doc).expect("json");
    for query in [
        "Patient?identifier=9912003888",
        "ServiceRequest?identifier=https://fhir.nhs.uk/Id/UBRN|000000070001",
        "Appointment?_count=1",
        "HealthcareService?_count=1",
        "Slot?_count=1",
        "PractitionerRole?_count=1",
    ] {
        let found = app.search(query).await;
        let resource = &found["entry"][0]["resource"];
        let t = resource["resourceType"].as_str().expect("a resource");
        // The read's documented answer is the type's schema.
        let answer = &doc["paths"][format!("/FHIR/R4/{t}/{{id}}")]["get"]["responses"]["200"]
            ["content"]["application/fhir+json"]["schema"]["$ref"];
        assert_eq!(answer, &format!("#/components/schemas/fhir.{t}"), "{query}");
        let schema = &doc["components"]["schemas"][format!("fhir.{t}")]["properties"];
        for (name, value) in resource.as_object().expect("object") {
            if name.starts_with('_') {
                continue;
            }
            let declared = &schema[name];
            assert!(declared.is_object(), "{t}.{name} is not in the document");
            assert!(
                fits(declared, value),
                "{t}.{name}: {value} is not {declared}"
            );
        }
    }
}

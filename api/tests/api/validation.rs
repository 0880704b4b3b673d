//! UK Core validation on every write, `$validate`, and `meta.profile`.

use crate::helpers::*;
use serde_json::{json, Value};

fn issues(oo: &Value) -> Vec<(String, String, String)> {
    oo["issue"]
        .as_array()
        .expect("issues")
        .iter()
        .map(|i| {
            (
                i["severity"].as_str().unwrap_or_default().to_owned(),
                i["code"].as_str().unwrap_or_default().to_owned(),
                i["expression"][0].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn broken_resources_are_refused_with_one_issue_per_problem() {
    let app = spawn_app().await;
    let mut p = patient(NHS[0], "Broken", "Bones", "1980-01-01", "female");
    p["identifier"] = json!([{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS[0]}, {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS[1]}]);
    p["deceasedDateTime"] = json!("2020-01-01T10:00");
    p["birthDate"] = json!("2099-01-01");
    p["contact"] = json!([{"gender": "female"}]);
    p["name"][0]["use"] = json!("nickname-ish");
    let r = app.post_json("Patient", &p).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let found = issues(&r.json());
    for (code, at) in [
        ("structure", "Patient.identifier"),
        ("value", "Patient.deceasedDateTime"),
        ("value", "Patient.birthDate"),
        ("invariant", "Patient.contact[0]"),
        ("code-invalid", "Patient.name[0].use"),
    ] {
        assert!(
            found
                .iter()
                .any(|(s, c, e)| s == "error" && c == code && e == at),
            "{code} at {at} missing: {found:?}"
        );
    }
    assert_eq!(
        app.search("Patient?_summary=count").await["total"],
        0,
        "nothing stored"
    );
}

const ERS: &str = "https://fhir.nhs.uk/StructureDefinition/";
const UK: &str = "https://fhir.hl7.org.uk/StructureDefinition/";

#[actix_web::test]
async fn the_profiles_are_served_with_snapshots_and_each_can_be_validated_against() {
    let app = spawn_app().await;
    // The e-RS referral profile derives from UK Core's, and its snapshot holds both.
    let sd = app
        .get("StructureDefinition/eRS-ServiceRequest-Referral")
        .await
        .json();
    assert_eq!(sd["baseDefinition"], format!("{UK}UKCore-ServiceRequest"));
    assert_eq!(sd["derivation"], "constraint");
    let element = |sd: &Value, id: &str| {
        sd["snapshot"]["element"]
            .as_array()
            .expect("snapshot")
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing from the snapshot"))
    };
    assert_eq!(element(&sd, "ServiceRequest.performer")["max"], "20");
    assert_eq!(
        element(&sd, "ServiceRequest.identifier:ubrn.system")["fixedUri"],
        "https://fhir.nhs.uk/Id/UBRN"
    );
    // UK Core's own slice, inherited.
    assert!(
        element(&sd, "ServiceRequest.category:genomicsWholeCaseSequencing")["sliceName"]
            .is_string()
    );
    // UK Core profiles are served with their generated snapshots; no prose.
    let uk = app.get("StructureDefinition/UKCore-Patient").await.json();
    assert_eq!(
        element(&uk, "Patient.identifier:nhsNumber.system")["fixedUri"],
        "https://fhir.nhs.uk/Id/nhs-number"
    );
    assert!(element(&uk, "Patient.gender").get("definition").is_none());
    // A profile that reaches into a data type has that type's elements in its snapshot.
    let d = app
        .get("StructureDefinition/eRS-DocumentReference")
        .await
        .json();
    assert_eq!(
        element(&d, "DocumentReference.content.attachment.url")["min"],
        1
    );
    // Every profile the CapabilityStatement lists can be validated against.
    let cs = app.get("metadata").await.json();
    let mut checked = 0;
    for r in cs["rest"][0]["resource"].as_array().expect("resources") {
        let t = r["type"].as_str().expect("type");
        for p in r["supportedProfile"].as_array().into_iter().flatten() {
            let p = p.as_str().expect("url");
            let reply = app
                .send(
                    app.req("POST", &format!("{t}/$validate?profile={p}"))
                        .insert_header(("Content-Type", "application/fhir+json")),
                    Some(json!({"resourceType": t}).to_string().into_bytes()),
                )
                .await;
            assert_eq!(reply.status, 200, "{t} {p}: {}", reply.text());
            assert_eq!(reply.json()["resourceType"], "OperationOutcome");
            if t == "Slot" {
                // Not an R4 structure (no schedule): reported with its location, not refused.
                assert!(
                    issues(&reply.json())
                        .iter()
                        .any(|(s, c, e)| s == "error" && c == "required" && e == "Slot.schedule"),
                    "{}",
                    reply.text()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} profiles");
    let b = app.search("StructureDefinition?type=ServiceRequest").await;
    assert_eq!(b["total"], 3, "UK Core and the two e-RS profiles: {b}");
    // The CapabilityStatement names the profile enforced and the ones supported.
    let cs = app.get("metadata").await.json();
    let sr = cs["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "ServiceRequest")
        .cloned()
        .expect("ServiceRequest");
    assert_eq!(sr["profile"], format!("{ERS}eRS-ServiceRequest-Referral"));
    assert!(sr["supportedProfile"]
        .to_string()
        .contains("eRS-ServiceRequest-AdviceAndGuidance"));

    // $validate against each profile: the e-RS one requires what UK Core leaves optional.
    let doc = json!({"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {"title": "letter.pdf"}}]});
    let validate = |profile: String| {
        let app = &app;
        let doc = doc.clone();
        async move {
            let r = app
                .send(
                    app.req(
                        "POST",
                        &format!("DocumentReference/$validate?profile={profile}"),
                    )
                    .insert_header(("Content-Type", "application/fhir+json")),
                    Some(doc.to_string().into_bytes()),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            issues(&r.json())
        }
    };
    let ers = validate(format!("{ERS}eRS-DocumentReference")).await;
    for at in [
        "DocumentReference.content[0].attachment.url",
        "DocumentReference.content[0].attachment.contentType",
    ] {
        assert!(
            ers.iter()
                .any(|(s, c, e)| s == "error" && c == "required" && e == at),
            "{at}: {ers:?}"
        );
    }
    let uk = validate(format!("{UK}UKCore-DocumentReference|2.2.0")).await;
    assert!(!uk.iter().any(|(s, _, _)| s == "error"), "{uk:?}");
    // A profile of another type is not one to validate a DocumentReference against.
    let r = app
        .send(
            app.req(
                "POST",
                &format!("DocumentReference/$validate?profile={ERS}eRS-Appointment"),
            )
            .insert_header(("Content-Type", "application/fhir+json")),
            Some(doc.to_string().into_bytes()),
        )
        .await
        .assert_outcome(400, "invalid");
    assert!(
        r.contains("eRS-DocumentReference"),
        "the known ones are listed: {r}"
    );
    // An extension used where its definition does not allow it is refused on a write.
    let mut p = patient(NHS[0], "Out", "Ofplace", "1980-01-01", "female");
    p["address"] = json!([{"line": ["1 Road"], "extension": [{"url": format!("{UK}Extension-UKCore-EthnicCategory"), "valueCodeableConcept": {"text": "x"}}]}]);
    let r = app.post_json("Patient", &p).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        issues(&r.json())
            .iter()
            .any(|(s, _, e)| s == "error" && e == "Patient.address[0].extension[0]"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("allows it on Patient"), "{}", r.text());
}

#[actix_web::test]
async fn stored_resources_claim_their_profile() {
    let app = spawn_app().await;
    let id = app
        .create(&patient(NHS[0], "Prof", "Ile", "1980-01-01", "male"))
        .await;
    let p = app.get(&format!("Patient/{id}")).await.json();
    assert_eq!(
        p["meta"]["profile"],
        json!(["https://fhir.nhs.uk/StructureDefinition/eRS-Patient"])
    );
    let cs = app.send(app.bare("GET", "metadata"), None).await.json();
    assert_eq!(
        cs["rest"][0]["resource"][0]["profile"],
        "https://fhir.nhs.uk/StructureDefinition/eRS-Patient"
    );
    assert_eq!(
        cs["rest"][0]["resource"][0]["operation"][0]["name"],
        "validate"
    );
}

#[actix_web::test]
async fn validate_operation_reports_everything_and_stores_nothing() {
    let app = spawn_app().await;
    let send = |query: &'static str, body: Value| {
        let r = app
            .req("POST", &format!("Patient/$validate{query}"))
            .insert_header(("Content-Type", "application/fhir+json"));
        app.send(r, Some(body.to_string().into_bytes()))
    };
    // Valid: one information issue.
    let r = send("", patient(NHS[0], "Ok", "Fine", "1980-01-01", "male")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["issue"][0]["severity"], "information");
    // An NHS number failing Modulus 11: an error for this server, a warning under plain UK Core.
    let bad_nhs = patient("9912003889", "Mod", "Eleven", "1980-01-01", "male");
    let strict = issues(&send("", bad_nhs.clone()).await.json());
    assert!(
        strict
            .iter()
            .any(|(s, _, e)| s == "error" && e == "Patient.identifier[0].value"),
        "{strict:?}"
    );
    let uk = issues(
        &send(
            "?profile=https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient",
            bad_nhs.clone(),
        )
        .await
        .json(),
    );
    assert!(
        uk.iter()
            .any(|(s, _, e)| s == "warning" && e == "Patient.identifier[0].value"),
        "{uk:?}"
    );
    assert!(!uk.iter().any(|(s, _, _)| s == "error"), "{uk:?}");
    let ers = issues(
        &send(
            "?profile=https://fhir.nhs.uk/StructureDefinition/eRS-Patient",
            bad_nhs.clone(),
        )
        .await
        .json(),
    );
    assert!(
        ers.iter()
            .any(|(s, _, e)| s == "error" && e == "Patient.identifier[0].value"),
        "under the e-RS profile it is an error: {ers:?}"
    );
    // Two NHS numbers break the UK Core slice, but not base R4.
    let mut two = patient(NHS[0], "Two", "Numbers", "1980-01-01", "male");
    two["identifier"] = json!([{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS[0]}, {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS[1]}]);
    let uk = issues(
        &send(
            "?profile=https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient",
            two.clone(),
        )
        .await
        .json(),
    );
    assert!(
        uk.iter()
            .any(|(s, _, e)| s == "error" && e == "Patient.identifier"),
        "{uk:?}"
    );
    let base = issues(
        &send(
            "?profile=http://hl7.org/fhir/StructureDefinition/Patient",
            two.clone(),
        )
        .await
        .json(),
    );
    assert!(
        !base
            .iter()
            .any(|(s, _, e)| s == "error" && e == "Patient.identifier"),
        "{base:?}"
    );
    // Wrapped in Parameters.
    let r = send(
        "",
        json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": two}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(issues(&r.json()).iter().any(|(s, _, _)| s == "error"));
    // Unknown profiles are refused.
    send(
        "?profile=https://example.org/StructureDefinition/Other",
        patient(NHS[0], "A", "B", "1980-01-01", "male"),
    )
    .await
    .assert_outcome(400, "invalid");
    // Nothing stored.
    assert_eq!(app.search("Patient?_summary=count").await["total"], 0);
}

//! The bodies in `examples/` are valid and accepted as they are, against the sandbox data
//! (resources by their type, a referral as the sandbox's referring clinician; transaction
//! Bundles at the base as the sandbox service definer; operation Parameters at their
//! operation).

use crate::helpers::*;

#[actix_web::test]
async fn every_example_body_is_accepted() {
    let app = spawn_with(ers_api::config::SeedMode::Sandbox).await;
    let definer = sign(&claims("555031998110", &[("SERVICE_DEFINER", "RR8")]));
    let clinician = sign(&claims("021600556514", &[("REFERRING_CLINICIAN", "R69")]));
    let mut later = Vec::new();
    let dir = manifest_dir().join("../examples");
    let mut count = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let ct = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => "application/fhir+json",
            Some("xml") => "application/fhir+xml",
            _ => continue,
        };
        let body = std::fs::read(&path).expect("read example");
        let text = String::from_utf8_lossy(&body).into_owned();
        let res_type = if ct.ends_with("json") {
            serde_json::from_slice::<serde_json::Value>(&body).expect("json")["resourceType"]
                .as_str()
                .expect("type")
                .to_owned()
        } else {
            text.trim_start()
                .trim_start_matches('<')
                .split([' ', '>'])
                .next()
                .expect("root")
                .to_owned()
        };
        if res_type == "Bundle" || res_type == "Parameters" {
            later.push((path, res_type, body));
            continue;
        }
        // A referral is made by the sandbox's referring clinician, whose role it names.
        let req = if res_type == "ServiceRequest" {
            app.as_user(&clinician, "POST", &res_type, "REFERRING_CLINICIAN", "R69")
        } else {
            app.req("POST", &res_type)
        };
        let r = app
            .send(req.insert_header(("Content-Type", ct)), Some(body))
            .await;
        assert_eq!(r.status, 201, "{}: {}", path.display(), r.text());
        count += 1;
    }
    // Bundles first (they load what the operations then find).
    later.sort_by_key(|(_, t, _)| t != "Bundle");
    for (path, res_type, body) in later {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let r = if res_type == "Bundle" {
            let r = app
                .send(
                    app.as_user(&definer, "POST", "/FHIR/R4", "SERVICE_DEFINER", "RR8")
                        .insert_header(("Content-Type", "application/fhir+json")),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            let entries = r.json()["entry"].as_array().cloned().unwrap_or_default();
            assert!(
                !entries.is_empty()
                    && entries
                        .iter()
                        .all(|e| e["response"]["status"] == "201 Created"),
                "{name}: {}",
                r.text()
            );
            r
        } else {
            let op = match name.as_str() {
                "dos-search-for-patient.json" => {
                    "HealthcareService/$ers.searchHealthcareServicesForPatient"
                }
                other => panic!("{other}: no operation is known for this example"),
            };
            app.post_json(op, &serde_json::from_slice(&body).expect("json"))
                .await
        };
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        if name == "dos-search-for-patient.json" {
            // The service the transaction example loaded is found for the sandbox patient.
            assert!(
                r.text().contains("Cataract Clinic, Wharfedale (example)"),
                "{}",
                r.text()
            );
        }
        count += 1;
    }
    assert!(count >= 7, "found {count} examples");
}

//! The bodies in `examples/` are valid and accepted as they are.

use crate::helpers::*;

#[actix_web::test]
async fn every_example_body_is_accepted() {
    let app = spawn_app().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
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
        let r = app
            .send(
                app.req("POST", &res_type)
                    .insert_header(("Content-Type", ct)),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201, "{}: {}", path.display(), r.text());
        count += 1;
    }
    assert!(count >= 5, "found {count} examples");
}

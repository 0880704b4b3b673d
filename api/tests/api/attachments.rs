//! Attachments: uploads checked (type, size, content, file name), downloads streamed to the
//! organisations that may see them, the referral letter as an explicit set of documents, and
//! provider documents.

use crate::helpers::*;
use crate::referrals::{referral, world, World};
use serde_json::{json, Value};

const PDF: &[u8] =
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

type User<'a> = (&'a str, &'a str, &'a str);

impl World {
    async fn upload(
        &self,
        who: User<'_>,
        content_type: &str,
        name: Option<&str>,
        bytes: &[u8],
    ) -> Reply {
        let mut r = self
            .app
            .as_user(who.0, "POST", "Binary", who.1, who.2)
            .insert_header(("Content-Type", content_type));
        if let Some(n) = name {
            r = r.insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"{n}\""),
            ));
        }
        self.app.send(r, Some(bytes.to_vec())).await
    }
    async fn get_as(&self, who: User<'_>, path: &str, accept: Option<&str>) -> Reply {
        let mut r = self.app.as_user(who.0, "GET", path, who.1, who.2);
        if let Some(a) = accept {
            r = r.insert_header(("Accept", a));
        }
        self.app.send(r, None).await
    }
    async fn op_as(
        &self,
        who: User<'_>,
        path: &str,
        version: i64,
        params: &[(&str, &str)],
    ) -> Reply {
        let mut body = json!({"resourceType": "Parameters"});
        if !params.is_empty() {
            body["parameter"] = params
                .iter()
                .map(|(n, v)| json!({"name": n, "valueString": v}))
                .collect();
        }
        let r = self
            .app
            .as_user(who.0, "POST", path, who.1, who.2)
            .insert_header(("Content-Type", "application/fhir+json"))
            .insert_header(("If-Match", format!("W/\"{version}\"")));
        self.app.send(r, Some(body.to_string().into_bytes())).await
    }
}

fn version(v: &Value) -> i64 {
    v["meta"]["versionId"]
        .as_str()
        .expect("version")
        .parse()
        .expect("number")
}

#[actix_web::test]
async fn uploads_are_checked_and_only_their_organisations_download_them() {
    let w = world().await;
    let rc: User<'_> = (&w.rc, "REFERRING_CLINICIAN", "R69");
    let other_gp = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    let stranger: User<'_> = (&other_gp, "REFERRING_CLINICIAN", "R68");

    let r = w
        .upload(rc, "application/pdf", Some("letter.pdf"), PDF)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert!(r
        .header("location")
        .expect("location")
        .ends_with(&format!("/Binary/{id}")));
    assert_eq!(r.json()["contentType"], "application/pdf");
    // The file back as it was, with its type and name; or the FHIR Binary on request.
    let r = w.get_as(rc, &format!("Binary/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, PDF);
    assert_eq!(r.header("content-type").as_deref(), Some("application/pdf"));
    assert!(r
        .header("content-disposition")
        .expect("disposition")
        .contains("letter.pdf"));
    let r = w
        .get_as(rc, &format!("Binary/{id}"), Some("application/fhir+json"))
        .await;
    assert_eq!(r.json()["resourceType"], "Binary");
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD
        .decode(r.json()["data"].as_str().expect("data"))
        .expect("base64");
    assert_eq!(data, PDF);
    // The same file sent as a FHIR Binary resource is the same upload.
    let encoded = base64::engine::general_purpose::STANDARD.encode(PDF);
    let binary = |v: Value| v.to_string().into_bytes();
    let r = w
        .upload(
            rc,
            "application/fhir+json",
            Some("letter.pdf"),
            &binary(json!({"resourceType": "Binary", "contentType": "application/pdf", "data": encoded})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["contentType"], "application/pdf");
    let again = r.json()["id"].as_str().expect("id").to_owned();
    let r = w.get_as(rc, &format!("Binary/{again}"), None).await;
    assert_eq!(r.body, PDF);
    assert!(r
        .header("content-disposition")
        .expect("disposition")
        .contains("letter.pdf"));
    // ...checked as the file is, and refused where the resource is wrong.
    for (v, status, at) in [
        (
            json!({"resourceType": "Binary", "contentType": "image/png", "data": encoded}),
            422,
            "Binary.data",
        ),
        (
            json!({"resourceType": "Binary", "contentType": "application/pdf"}),
            422,
            "Binary.data",
        ),
        (
            json!({"resourceType": "Basic", "code": {"text": "x"}}),
            422,
            "resourceType",
        ),
    ] {
        let r = w
            .upload(rc, "application/fhir+json", None, &binary(v))
            .await;
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.issue_at().1, at, "{}", r.text());
    }
    w.upload(
        rc,
        "application/fhir+json",
        None,
        &binary(json!({"resourceType": "Binary", "data": encoded})),
    )
    .await
    .assert_outcome(400, "structure");
    // Another organisation cannot tell it exists.
    w.get_as(stranger, &format!("Binary/{id}"), None)
        .await
        .assert_outcome(404, "not-found");
    // A client holding the file (its SHA-256 tag) gets 304 and no bytes; a stranger holding the
    // tag still learns nothing; the FHIR form is always sent.
    let tag = w
        .get_as(rc, &format!("Binary/{id}"), None)
        .await
        .header("etag")
        .expect("ETag");
    let conditional = |who: User<'_>, held: &str, accept: Option<&str>| {
        let mut r = w
            .app
            .as_user(who.0, "GET", &format!("Binary/{id}"), who.1, who.2)
            .insert_header(("If-None-Match", held.to_owned()));
        if let Some(a) = accept {
            r = r.insert_header(("Accept", a.to_owned()));
        }
        w.app.send(r, None)
    };
    for held in [tag.clone(), format!("W/{tag}"), "*".to_owned()] {
        let r = conditional(rc, &held, None).await;
        assert_eq!(r.status, 304, "{held}: {}", r.text());
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag").as_deref(), Some(tag.as_str()));
    }
    let r = conditional(rc, "\"another\"", None).await;
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (200, PDF));
    let r = conditional(rc, &tag, Some("application/fhir+json")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["resourceType"], "Binary");
    conditional(stranger, &tag, None)
        .await
        .assert_outcome(404, "not-found");

    // Refused uploads: a type e-RS does not take, content that is not the declared type, a
    // file name that does not match, nothing, and too much.
    w.upload(rc, "application/zip", Some("x.zip"), b"PK\x03\x04")
        .await
        .assert_outcome(415, "not-supported");
    let d = w
        .upload(rc, "image/png", Some("scan.png"), PDF)
        .await
        .assert_outcome(422, "value");
    assert!(d.contains("not image/png"), "{d}");
    let d = w
        .upload(rc, "application/pdf", Some("letter.png"), PDF)
        .await
        .assert_outcome(422, "value");
    assert!(d.contains("letter.png"), "{d}");
    w.upload(rc, "text/plain", None, b"")
        .await
        .assert_outcome(422, "required");
    let mut big = PDF.to_vec();
    big.resize(5 * 1024 * 1024 + 1, b' ');
    let r = w.upload(rc, "application/pdf", Some("big.pdf"), &big).await;
    r.assert_outcome(413, "too-costly");
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "FILE_SIZE_ERROR"
    );
    // e-RS A020 names the file in NHSD-eRS-File-Name: taken as Content-Disposition's, and
    // checked alike.
    let named = |name: &str| {
        w.app
            .as_user(rc.0, "POST", "Binary", rc.1, rc.2)
            .insert_header(("Content-Type", "application/pdf"))
            .insert_header(("NHSD-eRS-File-Name", name.to_owned()))
    };
    let r = w
        .app
        .send(named("referral-letter.pdf"), Some(PDF.to_vec()))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let r = w.get_as(rc, &format!("Binary/{id}"), None).await;
    assert!(r
        .header("content-disposition")
        .expect("disposition")
        .contains("referral-letter.pdf"));
    let d = w
        .app
        .send(named("referral-letter.png"), Some(PDF.to_vec()))
        .await
        .assert_outcome(422, "value");
    assert!(d.contains("referral-letter.png"), "{d}");
    // Text is text.
    let r = w
        .upload(rc, "text/plain", Some("notes.txt"), b"Seen in clinic.\n")
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    w.upload(rc, "text/plain", Some("notes.txt"), b"\0\x01binary")
        .await
        .assert_outcome(422, "value");
}

#[actix_web::test]
async fn the_referral_letter_is_an_explicit_set_and_providers_add_documents() {
    let w = world().await;
    let rc: User<'_> = (&w.rc, "REFERRING_CLINICIAN", "R69");
    let spc: User<'_> = (&w.spc, "SERVICE_PROVIDER_CLINICIAN", "RCD");
    let other_gp = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    let stranger: User<'_> = (&other_gp, "REFERRING_CLINICIAN", "R68");
    // The referrer means to add the letter later: the referral is on LETTERS_OUTSTANDING.
    let mut body = referral(&w, &[&w.triage], "URGENT");
    body["extension"].as_array_mut().expect("extensions").push(json!({
        "url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ReferralLetterIntention",
        "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReferralLetterIntention", "code": "NEED_TO_ADD_LATER"}}));
    let r = w.create(&body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sr = r.json();
    let id = sr["id"].as_str().expect("id").to_owned();
    let outstanding = "ServiceRequest/$ers.worklist?listType=LETTERS_OUTSTANDING&_count=100";
    let r = w.get_as(rc, outstanding, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&id), "{}", r.text());
    let uploaded = |r: Reply| {
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().expect("id").to_owned()
    };
    let letter = uploaded(
        w.upload(rc, "application/pdf", Some("letter.pdf"), PDF)
            .await,
    );
    let notes = uploaded(
        w.upload(rc, "text/plain", Some("notes.txt"), b"History.\n")
            .await,
    );
    let theirs = uploaded(
        w.upload(stranger, "text/plain", Some("x.txt"), b"x\n")
            .await,
    );
    // The provider cannot read the letter before it is attached.
    w.get_as(spc, &format!("Binary/{letter}"), None)
        .await
        .assert_outcome(404, "not-found");

    let op = format!("ServiceRequest/{id}/$ers.maintainReferralLetter");
    w.op_as(rc, &op, 1, &[])
        .await
        .assert_outcome(422, "required");
    let r = w
        .op_as(rc, &op, 1, &[("attachment", &format!("Binary/{theirs}"))])
        .await;
    r.assert_outcome(422, "business-rule");
    w.op_as(rc, &op, 1, &[("attachment", "Binary/no-such-upload")])
        .await
        .assert_outcome(422, "not-found");
    let r = w
        .op_as(
            rc,
            &op,
            1,
            &[
                ("attachment", &format!("Binary/{letter}")),
                ("attachment", &format!("Binary/{notes}")),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sr = r.json();
    let info: Vec<&str> = sr["supportingInfo"]
        .as_array()
        .expect("supportingInfo")
        .iter()
        .filter_map(|i| i["reference"].as_str())
        .collect();
    assert_eq!(info.len(), 2, "{sr}");
    // With its letter attached it leaves LETTERS_OUTSTANDING.
    assert!(!w.get_as(rc, outstanding, None).await.text().contains(&id));
    // The referral itself stays small: it points at documents, which point at the files.
    assert!(!r.text().contains("JVBER"), "no file content inline");
    let docs = w
        .get_as(
            rc,
            &format!("DocumentReference?related=ServiceRequest/{id}&type=REFERRER&status=current"),
            None,
        )
        .await
        .json();
    assert_eq!(docs["total"], 2, "{docs}");
    assert!(docs.to_string().contains(&format!("Binary/{letter}")));

    // Send it for triage: the triage provider now sees the referral, its letter and the files.
    let r = w
        .op_as(
            rc,
            &format!("ServiceRequest/{id}/$ers.sendForTriage"),
            version(&sr),
            &[("service", &w.triage)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = version(&r.json());
    let r = w.get_as(spc, &format!("Binary/{letter}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, PDF);
    let r = w.get_as(spc, info[0], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Nobody else does.
    w.get_as(stranger, &format!("Binary/{letter}"), None)
        .await
        .assert_outcome(404, "not-found");
    w.get_as(stranger, info[0], None)
        .await
        .assert_outcome(404, "not-found");

    // The letter replaced by one document: the other is superseded, not deleted.
    let r = w
        .op_as(rc, &op, v, &[("attachment", &format!("Binary/{notes}"))])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = version(&r.json());
    let current = w
        .get_as(
            rc,
            &format!("DocumentReference?related=ServiceRequest/{id}&type=REFERRER&status=current"),
            None,
        )
        .await
        .json();
    assert_eq!(current["total"], 1, "{current}");
    assert!(current.to_string().contains(&format!("Binary/{notes}")));
    let superseded = w
        .get_as(
            rc,
            &format!("DocumentReference?related=ServiceRequest/{id}&status=superseded"),
            None,
        )
        .await
        .json();
    assert_eq!(superseded["total"], 1, "{superseded}");

    // The provider adds a document of its own; the referrer reads it.
    let scan = uploaded(w.upload(spc, "image/png", Some("scan.png"), PNG).await);
    let add = format!("ServiceRequest/{id}/$ers.addProviderAttachment");
    w.op_as(rc, &add, v, &[("attachment", &format!("Binary/{notes}"))])
        .await
        .assert_outcome(403, "forbidden");
    let r = w
        .op_as(
            spc,
            &add,
            v,
            &[
                ("attachment", &format!("Binary/{scan}")),
                ("title", "Echo image"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let provider_docs = w
        .get_as(
            rc,
            &format!("DocumentReference?related=ServiceRequest/{id}&type=PROVIDER"),
            None,
        )
        .await
        .json();
    assert_eq!(provider_docs["total"], 1, "{provider_docs}");
    assert!(provider_docs.to_string().contains("Echo image"));
    let r = w.get_as(rc, &format!("Binary/{scan}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, PNG);
    // Documents are never written directly.
    let r = w
        .app
        .send(
            w.app
                .as_user(
                    &w.rc,
                    "POST",
                    "DocumentReference",
                    "REFERRING_CLINICIAN",
                    "R69",
                )
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(b"{\"resourceType\":\"DocumentReference\"}".to_vec()),
        )
        .await;
    r.assert_outcome(405, "not-supported");
}

#[actix_web::test]
async fn documents_follow_the_referrals_organisations_when_the_shortlist_changes() {
    let w = world().await;
    let rc: User<'_> = (&w.rc, "REFERRING_CLINICIAN", "R69");
    let rcd: User<'_> = (&w.spc, "SERVICE_PROVIDER_CLINICIAN", "RCD");
    // A service of another trust (the sandbox service 11000 is RR8's).
    let other = w
        .app
        .search("HealthcareService?identifier=https://fhir.nhs.uk/Id/ers-service|11000")
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("service")
        .to_owned();
    let rr8_token = sign(&claims(
        "555032006107",
        &[("SERVICE_PROVIDER_CLINICIAN", "RR8")],
    ));
    let rr8: User<'_> = (&rr8_token, "SERVICE_PROVIDER_CLINICIAN", "RR8");
    let r = w.create(&referral(&w, &[&w.triage], "ROUTINE")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let r = w
        .upload(rc, "application/pdf", Some("letter.pdf"), PDF)
        .await;
    let binary = r.json()["id"].as_str().expect("id").to_owned();
    let r = w
        .op_as(
            rc,
            &format!("ServiceRequest/{id}/$ers.maintainReferralLetter"),
            1,
            &[("attachment", &format!("Binary/{binary}"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json()["supportingInfo"][0]["reference"]
        .as_str()
        .expect("document")
        .to_owned();
    w.get_as(rr8, &doc, None)
        .await
        .assert_outcome(404, "not-found");
    // Shortlisting RR8's service: RR8 now sees the letter already attached.
    let shortlist = format!("ServiceRequest/{id}/$ers.changeShortlist");
    let r = w
        .op_as(
            rc,
            &shortlist,
            2,
            &[("service", &w.triage), ("service", &other)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.get_as(rr8, &doc, None).await.status, 200);
    assert_eq!(
        w.get_as(rr8, &format!("Binary/{binary}"), None)
            .await
            .status,
        200
    );
    // Taking RCD's service off: RCD no longer does.
    let r = w.op_as(rc, &shortlist, 3, &[("service", &other)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    w.get_as(rcd, &doc, None)
        .await
        .assert_outcome(404, "not-found");
    w.get_as(rcd, &format!("Binary/{binary}"), None)
        .await
        .assert_outcome(404, "not-found");
    assert_eq!(w.get_as(rr8, &doc, None).await.status, 200);
}

#[actix_web::test]
async fn uploads_go_through_the_malware_scanner_before_they_are_stored() {
    // The EICAR anti-malware test file (built here from two halves, so that no scanner run
    // over this source trips on it).
    let eicar = [
        &br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-"[..],
        &br"ANTIVIRUS-TEST-FILE!$H+H*"[..],
    ]
    .concat();
    // No scanner configured: the EICAR test file alone is refused.
    let w = world().await;
    let rc: User<'_> = (&w.rc, "REFERRING_CLINICIAN", "R69");
    let r = w.upload(rc, "text/plain", Some("eicar.txt"), &eicar).await;
    let d = r.assert_outcome(422, "security");
    r.assert_issue("THREATS_FOUND", "Binary.data");
    assert!(d.contains("EICAR"), "{d}");
    let r = w
        .upload(rc, "text/plain", Some("note.txt"), b"Seen today.")
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // A scanner: its verdict decides, named in the refusal; a scanner that fails is 503.
    let scanned = |command: &str| ers_api::config::Settings {
        seed: ers_api::config::SeedMode::Sandbox,
        rate_limit_per_sec: 0,
        scan_command: Some(command.to_owned()),
        ..ers_api::config::Settings::default()
    };
    let w = crate::referrals::world_with(scanned(
        "if grep -q MALWARE; then echo 'stream: Test.Sig FOUND'; exit 1; fi",
    ))
    .await;
    let rc: User<'_> = (&w.rc, "REFERRING_CLINICIAN", "R69");
    let r = w
        .upload(rc, "text/plain", Some("x.txt"), b"some MALWARE inside")
        .await;
    let d = r.assert_outcome(422, "security");
    r.assert_issue("THREATS_FOUND", "Binary.data");
    assert!(d.contains("stream: Test.Sig FOUND"), "{d}");
    let r = w
        .upload(rc, "application/pdf", Some("letter.pdf"), PDF)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(w.get_as(rc, &format!("Binary/{id}"), None).await.body, PDF);
    let w = crate::referrals::world_with(scanned("echo 'cannot reach clamd' >&2; exit 2")).await;
    let rc: User<'_> = (&w.rc, "REFERRING_CLINICIAN", "R69");
    let r = w
        .upload(rc, "application/pdf", Some("letter.pdf"), PDF)
        .await;
    let d = r.assert_outcome(503, "transient");
    assert!(d.contains("cannot reach clamd"), "{d}");
    assert!(r.text().contains("SYSTEM_UNAVAILABLE"), "{}", r.text());
}

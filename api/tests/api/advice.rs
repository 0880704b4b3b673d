//! Advice and guidance: a request with its own UBRN and first message, conversations that
//! alternate between referrer and provider, conversion into a referral with the same UBRN,
//! who may read A&G content, the advice summary (PDF and Bundle), bad input, and UBRN expiry.

use crate::helpers::*;
use crate::referrals::{world, World, UBRN};
use serde_json::{json, Value};

const CATEGORY: &str = "https://fhir.nhs.uk/CodeSystem/eRS-ServiceRequestCategory";
const CONVERSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ProviderConversionAuthorisation";
const STATUS: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AdviceAndGuidance-Status";
const PDF: &[u8] =
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

pub(crate) fn request(w: &World, services: &[&str], conversion: Option<&str>, text: &str) -> Value {
    let mut extension = vec![
        json!({"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}}),
    ];
    if let Some(c) = conversion {
        extension.push(json!({"url": CONVERSION, "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-ProviderConversionAuthorisation", "code": c}}));
    }
    json!({
        "resourceType": "ServiceRequest",
        "extension": extension,
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": CATEGORY, "code": "request"}]}],
        "subject": {"reference": format!("Patient/{}", w.patient)},
        "requester": {"reference": format!("PractitionerRole/{}", w.role)},
        "performer": services.iter().map(|s| json!({"reference": format!("HealthcareService/{s}")})).collect::<Vec<_>>(),
        "note": [{"text": text}],
    })
}

/// A service of RCD (where the test provider clinician works) with this request flow.
async fn service_at_rcd(w: &World, flow: &str) -> String {
    let b = w
        .app
        .search(&format!("HealthcareService?characteristic={flow}&priority=ROUTINE&organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|RCD"))
        .await;
    b["entry"][0]["resource"]["id"]
        .as_str()
        .expect("an RCD service")
        .to_owned()
}

fn version(v: &Value) -> i64 {
    v["meta"]["versionId"]
        .as_str()
        .expect("version")
        .parse()
        .expect("number")
}

fn status(v: &Value) -> String {
    v["extension"]
        .as_array()
        .expect("extensions")
        .iter()
        .find(|e| e["url"] == STATUS)
        .and_then(|e| e["extension"][0]["valueCoding"]["code"].as_str())
        .expect("an A&G status")
        .to_owned()
}

impl World {
    async fn read_as(&self, provider: bool, path: &str) -> Reply {
        let r = if provider {
            self.as_spc("GET", path)
        } else {
            self.as_rc("GET", path)
        };
        self.app.send(r, None).await
    }
    async fn upload_as_rc(&self) -> String {
        let r = self
            .app
            .as_user(&self.rc, "POST", "Binary", "REFERRING_CLINICIAN", "R69")
            .insert_header(("Content-Type", "application/pdf"))
            .insert_header(("Content-Disposition", "attachment; filename=\"bloods.pdf\""));
        let r = self.app.send(r, Some(PDF.to_vec())).await;
        assert_eq!(r.status, 201, "{}", r.text());
        format!("Binary/{}", r.json()["id"].as_str().expect("id"))
    }
    /// The referrer's new advice request to `service` (answered 201), as stored.
    async fn ask(&self, service: &str, conversion: &str, text: &str) -> Value {
        let r = self
            .create(&request(self, &[service], Some(conversion), text))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }
    async fn messages(&self, id: &str, query: &str) -> Value {
        let r = self
            .read_as(
                false,
                &format!("Communication?based-on=ServiceRequest/{id}{query}"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

fn texts(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["resource"]["payload"][0]["contentString"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[actix_web::test]
async fn a_conversation_of_two_rounds_ends_in_a_referral_with_the_same_ubrn() {
    let w = world().await;
    let advice = service_at_rcd(&w, "ADVICE_AND_GUIDANCE").await;
    let bookable = service_at_rcd(&w, "BOOKABLE").await;

    // The referrer asks; the server gives it a UBRN and an a.{uuid} id, and the note becomes
    // the first message.
    let a = w
        .ask(
            &advice,
            "AUTHORISED_TO_CONVERT",
            "Persistent microcytic anaemia despite oral iron; should I refer?",
        )
        .await;
    let id = a["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("a."), "{id}");
    let ubrn = a["identifier"][0]["value"]
        .as_str()
        .expect("UBRN")
        .to_owned();
    assert_eq!(a["identifier"][0]["system"], UBRN);
    assert_eq!(ubrn.len(), 12);
    assert_eq!(status(&a), "PROVIDER_RESPONSE_REQUIRED");
    assert_eq!(a["code"]["coding"][0]["code"], "advice-and-guidance");
    assert_eq!(
        a["meta"]["profile"],
        json!(["https://fhir.nhs.uk/StructureDefinition/eRS-ServiceRequest-AdviceAndGuidance"])
    );
    assert!(
        a.get("note").is_none(),
        "the message lives in a Communication"
    );
    let first = w.messages(&id, "").await;
    assert_eq!(first["total"], 1, "{first}");
    // R4's `subject` is `patient` (a message's subject is always a Patient).
    assert_eq!(
        w.messages(&id, &format!("&subject=Patient/{}", w.patient))
            .await["total"],
        1
    );
    assert_eq!(
        w.messages(&id, "&subject=Patient/no-such-patient").await["total"],
        0
    );
    assert_eq!(
        first["entry"][0]["resource"]["category"][0]["coding"][0]["code"],
        "REQUESTER"
    );

    // The provider sees it on its A&G worklist, and the referrer's organisation only.
    let r = w
        .read_as(
            true,
            "ServiceRequest/$ers.worklist?listType=ADVICE_AND_GUIDANCE_REQUESTS",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(match_ids(&r.json()).contains(&id), "{}", r.text());
    let other_gp = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    let r = w
        .app
        .send(
            w.app.as_user(
                &other_gp,
                "GET",
                &format!("ServiceRequest/{id}"),
                "REFERRING_CLINICIAN",
                "R68",
            ),
            None,
        )
        .await;
    r.assert_outcome(404, "not-found");

    // Whose turn it is, as the operations see it.
    assert_eq!(
        w.actions(true, &id).await,
        ["RESPOND_TO_ADVICE_REQUEST", "CONVERT_TO_REFERRAL"]
    );
    assert_eq!(w.actions(false, &id).await, ["CANCEL_ADVICE_REQUEST"]);
    // The same, as e-RS A029's Tasks.
    let r = w
        .app
        .send(
            w.as_spc("GET", &format!("Task?focus=ServiceRequest/{id}")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mode_refs(&r.json(), "match").len(), 2, "{}", r.text());
    for code in ["RESPOND_TO_ADVICE_REQUEST", "CONVERT_TO_REFERRAL"] {
        assert!(r.text().contains(&format!("\"code\":\"{code}\"")), "{code}");
    }

    // Round one: the provider needs more; If-Match is required; it cannot reply twice.
    w.op(
        true,
        &id,
        "$ers.respondToAdviceRequest",
        None,
        &[
            ("outcome", "REQUIRE_FURTHER_INFORMATION"),
            ("text", "Ferritin?"),
        ],
    )
    .await
    .assert_outcome(428, "required");
    let r = w
        .op(
            true,
            &id,
            "$ers.respondToAdviceRequest",
            Some(version(&a)),
            &[
                ("outcome", "REQUIRE_FURTHER_INFORMATION"),
                ("text", "Please send ferritin and coeliac serology."),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(status(&a), "REFERRER_TO_SUBMIT_FURTHER_INFORMATION");
    let d = w
        .op(
            true,
            &id,
            "$ers.respondToAdviceRequest",
            Some(version(&a)),
            &[("outcome", "REQUIRE_FURTHER_INFORMATION"), ("text", "And?")],
        )
        .await
        .assert_outcome(422, "business-rule");
    assert!(d.contains("the referrer is to act"), "{d}");
    let r = w
        .read_as(
            false,
            "ServiceRequest/$ers.worklist?listType=ADVICE_AND_GUIDANCE_RESPONSES",
        )
        .await;
    assert!(match_ids(&r.json()).contains(&id), "{}", r.text());

    // The referrer answers with a result attached.
    let upload = w.upload_as_rc().await;
    let r = w
        .op(
            false,
            &id,
            "$ers.sendFurtherInformation",
            Some(version(&a)),
            &[
                ("text", "Ferritin 6; tTG negative."),
                ("attachment", &upload),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(status(&a), "PROVIDER_RESPONSE_REQUIRED");

    // Round two: advice needs an intended recommendation.
    w.op(
        true,
        &id,
        "$ers.respondToAdviceRequest",
        Some(version(&a)),
        &[("outcome", "RETURN_TO_REFERRER_WITH_ADVICE"), ("text", "x")],
    )
    .await
    .assert_outcome(422, "required");
    let r = w
        .op(
            true,
            &id,
            "$ers.respondToAdviceRequest",
            Some(version(&a)),
            &[
                ("outcome", "RETURN_TO_REFERRER_WITH_ADVICE"),
                ("recommendation", "DIAGNOSTIC_TEST_BEFORE_REFERRAL"),
                ("text", "Arrange upper and lower GI endoscopy first."),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(status(&a), "REFERRER_TO_REVIEW_RESPONSE");
    let r = w
        .op(
            false,
            &id,
            "$ers.sendFurtherInformation",
            Some(version(&a)),
            &[("text", "Endoscopy shows angiodysplasia; please see her.")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();

    // The conversation reads newest first (unless sorted otherwise), in pages.
    let page = w.messages(&id, "&_count=2").await;
    assert_eq!(page["total"], 5, "{page}");
    assert_eq!(
        texts(&page),
        [
            "Endoscopy shows angiodysplasia; please see her.",
            "Arrange upper and lower GI endoscopy first."
        ]
    );
    assert!(link(&page, "next").is_some());
    let replies = w.messages(&id, "&category=RESPONDER&_sort=sent").await;
    assert_eq!(
        replies["entry"][1]["resource"]["extension"][0]["extension"][1]["valueCoding"]["code"],
        "DIAGNOSTIC_TEST_BEFORE_REFERRAL"
    );

    // Conversion: the provider's service of its own, a referral with the same UBRN.
    let r = w
        .op(
            true,
            &id,
            "$ers.convertToReferral",
            Some(version(&a)),
            &[
                ("text", "Converted: we will see her in clinic."),
                ("priority", "ROUTINE"),
                ("comment", "Needs review in the GI bleed clinic"),
                ("service", &bookable),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let referral = r.json();
    let rid = referral["id"].as_str().expect("id").to_owned();
    assert_eq!(rid, format!("r.{}", id.trim_start_matches("a.")));
    assert_eq!(referral["identifier"][0]["value"], ubrn.as_str());
    assert_eq!(
        referral["basedOn"][0]["reference"],
        format!("ServiceRequest/{id}")
    );
    let state = referral["extension"]
        .as_array()
        .expect("extensions")
        .iter()
        .find(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("ServiceRequest-State"))
        })
        .expect("state")
        .clone();
    assert_eq!(
        state["extension"][0]["valueCoding"]["code"],
        "TRIAGED_PROVIDER_TO_ACTION"
    );
    let a = w
        .read_as(false, &format!("ServiceRequest/{id}"))
        .await
        .json();
    assert_eq!(status(&a), "ADVICE_CONVERTED");
    assert_eq!(a["status"], "completed");
    // The provider can now book it; the referral is found from the request.
    assert!(w
        .actions(true, &rid)
        .await
        .contains(&"CREATE_APPOINTMENT".to_owned()));
    let r = w
        .read_as(
            false,
            &format!("ServiceRequest?based-on=ServiceRequest/{id}"),
        )
        .await;
    assert_eq!(match_ids(&r.json()), vec![rid.clone()]);
    // Nothing more can be said.
    w.op(
        false,
        &id,
        "$ers.sendFurtherInformation",
        Some(version(&a)),
        &[("text", "Thanks")],
    )
    .await
    .assert_outcome(422, "business-rule");

    // The advice summary: a PDF with the UBRN and NHS number on every page, and a Bundle.
    let r = w
        .app
        .send(
            w.as_rc("GET", &format!("ServiceRequest/{id}/$ers.generateCRI"))
                .insert_header(("Accept", "application/pdf")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("application/pdf"));
    let doc = lopdf::Document::load_mem(&r.body).expect("a readable PDF");
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    assert!(!pages.is_empty());
    let mut all = String::new();
    for p in &pages {
        let text = doc.extract_text(&[*p]).expect("page text");
        assert!(text.contains(&ubrn), "page {p}: {text}");
        assert!(text.contains("991 200 3888"), "page {p}: {text}");
        all.push_str(&text);
    }
    let flat = all.split_whitespace().collect::<Vec<_>>().join(" ");
    for said in [
        "Persistent microcytic anaemia",
        "Ferritin 6; tTG negative.",
        "DIAGNOSTIC_TEST_BEFORE_REFERRAL",
        "Converted: we will see her in clinic.",
        "bloods.pdf",
        &rid,
    ] {
        assert!(flat.contains(said), "{said} missing from: {flat}");
    }
    let r = w
        .read_as(false, &format!("ServiceRequest/{id}/$ers.generateCRI"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "collection");
    let kinds: Vec<&str> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Communication").count(), 6);
    assert!(kinds.contains(&"Patient") && kinds.contains(&"DocumentReference"));
    // The referral it became prints the conversation it came from in its clinical information.
    let r = w
        .read_as(false, &format!("ServiceRequest/{rid}/$ers.generateCRI"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let shown = entry_refs(&r.json());
    assert_eq!(shown[0], format!("ServiceRequest/{rid}"));
    assert!(shown.contains(&format!("ServiceRequest/{id}")), "{shown:?}");
    assert_eq!(
        shown
            .iter()
            .filter(|s| s.starts_with("Communication/"))
            .count(),
        6,
        "{shown:?}"
    );
}

#[actix_web::test]
async fn operational_roles_never_read_advice_and_are_audited() {
    let w = world().await;
    let advice = service_at_rcd(&w, "ADVICE_AND_GUIDANCE").await;
    let id = w.ask(&advice, "NOT_AUTHORISED_TO_CONVERT", "Rash?").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let message = w.messages(&id, "").await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("message")
        .to_owned();
    // The provider's clinician reads it; its service definer and an analyst may not.
    assert_eq!(
        w.read_as(true, &format!("Communication/{message}"))
            .await
            .status,
        200
    );
    for role in ["SERVICE_DEFINER", "INFORMATION_ANALYST"] {
        let token = sign(&claims("555032006106", &[(role, "RCD")]));
        for path in [
            format!("Communication/{message}"),
            format!("Communication?based-on=ServiceRequest/{id}"),
            format!("ServiceRequest/{id}"),
            format!("ServiceRequest/{id}/$ers.generateCRI"),
        ] {
            let r = w
                .app
                .send(w.app.as_user(&token, "GET", &path, role, "RCD"), None)
                .await;
            r.assert_outcome(403, "forbidden");
        }
    }
    // Messages are only ever written by the operations.
    let r = w
        .app
        .send(
            w.as_rc("POST", "Communication"),
            Some(
                json!({"resourceType": "Communication", "status": "completed"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    r.assert_outcome(405, "not-supported");
    let auditor = sign(&claims("021600556514", &[("AUDITOR", "R69")]));
    let r = w
        .app
        .send(
            w.app.as_user(
                &auditor,
                "GET",
                &format!("AuditEvent?subtype=access-denied&entity=Communication/{message}"),
                "AUDITOR",
                "R69",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 2, "{}", r.text());
}

#[actix_web::test]
async fn bad_advice_requests_and_replies_are_refused_precisely() {
    let w = world().await;
    let advice = service_at_rcd(&w, "ADVICE_AND_GUIDANCE").await;
    let bookable = service_at_rcd(&w, "BOOKABLE").await;
    let expect = |r: Reply, status: u16, ers: &str, at: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let issue = &r.json()["issue"][0];
        assert_eq!(issue["details"]["coding"][0]["code"], ers, "{}", r.text());
        assert!(
            issue["expression"][0]
                .as_str()
                .unwrap_or_default()
                .starts_with(at),
            "{}",
            r.text()
        );
    };
    // An advice request is an active order, as a referral is.
    let mut draft = request(&w, &[&advice], Some("AUTHORISED_TO_CONVERT"), "Advice?");
    draft["status"] = json!("draft");
    expect(
        w.create(&draft).await,
        422,
        "INAPPROPRIATE_VALUE",
        "ServiceRequest.status",
    );
    expect(
        w.create(&request(
            &w,
            &[&advice],
            Some("AUTHORISED_TO_CONVERT"),
            "  ",
        ))
        .await,
        422,
        "MISSING_VALUE",
        "ServiceRequest.note[0].text",
    );
    expect(
        w.create(&request(
            &w,
            &[&advice],
            Some("AUTHORISED_TO_CONVERT"),
            &"x".repeat(8001),
        ))
        .await,
        422,
        "INVALID_VALUE",
        "ServiceRequest.note[0].text",
    );
    expect(
        w.create(&request(
            &w,
            &[&advice, &bookable],
            Some("AUTHORISED_TO_CONVERT"),
            "Two?",
        ))
        .await,
        422,
        "TOO_MANY_ITEMS",
        "ServiceRequest.performer",
    );
    expect(
        w.create(&request(
            &w,
            &[&bookable],
            Some("AUTHORISED_TO_CONVERT"),
            "Wrong service",
        ))
        .await,
        422,
        "INAPPROPRIATE_VALUE",
        "ServiceRequest.performer[0]",
    );
    let r = w
        .create(&request(&w, &[&advice], None, "No authorisation"))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("conversion authorisation"),
        "{}",
        r.text()
    );

    // Converting what the referrer did not authorise.
    let a = w
        .ask(&advice, "NOT_AUTHORISED_TO_CONVERT", "Advice only")
        .await;
    let id = a["id"].as_str().expect("id").to_owned();
    expect(
        w.op(
            true,
            &id,
            "$ers.convertToReferral",
            Some(version(&a)),
            &[
                ("text", "Converting"),
                ("priority", "ROUTINE"),
                ("comment", "Seen"),
            ],
        )
        .await,
        422,
        "CONVERSION_NOT_AUTHORISED",
        "ServiceRequest.extension",
    );
    // An empty reply, and a reply from the wrong side.
    expect(
        w.op(
            true,
            &id,
            "$ers.respondToAdviceRequest",
            Some(version(&a)),
            &[("outcome", "REQUIRE_FURTHER_INFORMATION"), ("text", "")],
        )
        .await,
        422,
        "MISSING_VALUE",
        "Parameters.parameter[text]",
    );
    w.op(
        false,
        &id,
        "$ers.respondToAdviceRequest",
        Some(version(&a)),
        &[("outcome", "REQUIRE_FURTHER_INFORMATION"), ("text", "Me?")],
    )
    .await
    .assert_outcome(403, "forbidden");
    // A referral is not an advice request.
    let r = w
        .create(&crate::referrals::referral(
            &w,
            &[&w.bookable.clone()],
            "URGENT",
        ))
        .await;
    let rid = r.json()["id"].as_str().expect("id").to_owned();
    expect(
        w.op(false, &rid, "$ers.closeAdviceRequest", Some(1), &[])
            .await,
        422,
        "INVALID_REQUEST_TYPE",
        "ServiceRequest",
    );
    // The referrer cancels; then nothing more.
    let r = w
        .op(
            false,
            &id,
            "$ers.cancelAdviceRequest",
            Some(version(&a)),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(status(&a), "CONVERSATION_ENDED_CANCELLED");
    assert_eq!(a["status"], "revoked");
    expect(
        w.op(
            false,
            &id,
            "$ers.closeAdviceRequest",
            Some(version(&a)),
            &[],
        )
        .await,
        422,
        "INVALID_REQUEST_STATE",
        "",
    );
}

#[actix_web::test]
async fn expiry_deletes_the_conversation_of_an_inactive_ubrn_but_not_a_converted_one() {
    let w = world().await;
    let advice = service_at_rcd(&w, "ADVICE_AND_GUIDANCE").await;
    let bookable = service_at_rcd(&w, "BOOKABLE").await;
    let upload = w.upload_as_rc().await;
    let mut body = request(
        &w,
        &[&advice],
        Some("AUTHORISED_TO_CONVERT"),
        "Old question",
    );
    body["supportingInfo"] = json!([{"reference": upload, "display": "Bloods"}]);
    let r = w.create(&body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let old = r.json()["id"].as_str().expect("id").to_owned();
    let messages = w.messages(&old, "").await;
    let message = messages["entry"][0]["resource"]["id"]
        .as_str()
        .expect("message")
        .to_owned();
    let document = messages["entry"][0]["resource"]["payload"][1]["contentReference"]["reference"]
        .as_str()
        .expect("the attachment")
        .to_owned();
    assert_eq!(w.read_as(false, &upload).await.status, 200);
    // A second request, converted: its UBRN lives on in the referral.
    let kept = w.ask(&advice, "AUTHORISED_TO_CONVERT", "Kept").await;
    let kept_id = kept["id"].as_str().expect("id").to_owned();
    let r = w
        .op(
            true,
            &kept_id,
            "$ers.convertToReferral",
            Some(version(&kept)),
            &[
                ("text", "Converted"),
                ("priority", "ROUTINE"),
                ("comment", "Clinic"),
                ("service", &bookable),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // Everything is "inactive" with a 0-day policy: run the CLI. It expires every open or
    // ended request (the sandbox's too), never a converted one.
    let expiring = w
        .app
        .search(&format!("ServiceRequest?category={CATEGORY}|request&advice-status:not=ADVICE_CONVERTED&_summary=count"))
        .await["total"]
        .as_i64()
        .expect("a count");
    assert!(expiring >= 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ers-server"))
        .arg("expire")
        .env("ERS_DATABASE_URL", &w.app.database_url)
        .env("ERS_UBRN_EXPIRY_DAYS", "0")
        .env("ERS_SEED", "none")
        .env("RUST_LOG", "warn")
        .output()
        .expect("ers-server expire runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("{expiring} advice requests expired")),
        "{said}"
    );
    assert!(said.contains("1 documents and 1 uploads deleted"), "{said}");

    let r = w.read_as(false, &format!("ServiceRequest/{old}")).await;
    let d = r.assert_outcome(410, "deleted");
    assert!(d.contains("expired"), "{d}");
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "UBRN_EXPIRED"
    );
    w.read_as(false, &format!("Communication/{message}"))
        .await
        .assert_outcome(404, "not-found");
    w.read_as(false, &document)
        .await
        .assert_outcome(404, "not-found");
    w.read_as(false, &upload)
        .await
        .assert_outcome(404, "not-found");
    assert_eq!(w.messages(&old, "").await["total"], 0);
    // History of the request stays (it never held the messages).
    let h = w
        .read_as(false, &format!("ServiceRequest/{old}/_history"))
        .await;
    assert_eq!(h.status, 200, "{}", h.text());
    // The converted request and its referral are untouched.
    assert_eq!(
        w.read_as(false, &format!("ServiceRequest/{kept_id}"))
            .await
            .status,
        200
    );
    assert_eq!(w.messages(&kept_id, "").await["total"], 2);
    // Each deletion is in the audit trail.
    let auditor = sign(&claims("021600556514", &[("AUDITOR", "R69")]));
    let r = w
        .app
        .send(
            w.app.as_user(
                &auditor,
                "GET",
                &format!("AuditEvent?action=D&entity=Communication/{message}"),
                "AUDITOR",
                "R69",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 1, "{}", r.text());
    assert!(r.text().contains("expired"), "{}", r.text());
    // A second run finds nothing more.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ers-server"))
        .arg("expire")
        .env("ERS_DATABASE_URL", &w.app.database_url)
        .env("ERS_UBRN_EXPIRY_DAYS", "0")
        .env("ERS_SEED", "none")
        .output()
        .expect("ers-server expire runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 advice requests expired"));
}

#[actix_web::test]
async fn the_sandbox_holds_an_advice_request_in_each_status() {
    let w = world().await;
    let all = w
        .app
        .search(&format!(
            "ServiceRequest?category={CATEGORY}|request&_count=50"
        ))
        .await;
    let mut statuses: Vec<String> = all["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| status(&e["resource"]))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "ADVICE_CONVERTED",
            "CONVERSATION_ENDED_CANCELLED",
            "CONVERSATION_ENDED_CLOSED",
            "PROVIDER_RESPONSE_REQUIRED",
            "REFERRER_TO_REVIEW_RESPONSE",
            "REFERRER_TO_SUBMIT_FURTHER_INFORMATION"
        ]
    );
    // Each has its conversation; the converted one its referral.
    let converted = all["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| status(&e["resource"]) == "ADVICE_CONVERTED")
        .and_then(|e| e["resource"]["id"].as_str())
        .expect("converted")
        .to_owned();
    assert_eq!(w.messages(&converted, "").await["total"], 2);
    let r = w
        .app
        .search(&format!(
            "ServiceRequest?based-on=ServiceRequest/{converted}"
        ))
        .await;
    assert_eq!(r["total"], 1, "{r}");
}

#[actix_web::test]
async fn the_server_expires_inactive_ubrns_on_its_schedule() {
    // Every second, with a 0-day policy: the sandbox's open requests expire without a command.
    let app = spawn_configured(ers_api::config::Settings {
        seed: ers_api::config::SeedMode::Sandbox,
        rate_limit_per_sec: 0,
        expiry_interval_secs: 1,
        ubrn_expiry_days: 0,
        ..ers_api::config::Settings::default()
    })
    .await;
    let mut retired = None;
    for _ in 0..60 {
        let h = app.search("ServiceRequest/_history?_count=200").await;
        retired = h["entry"].as_array().into_iter().flatten().find_map(|e| {
            let url = e["request"]["url"].as_str().unwrap_or_default();
            (e["request"]["method"] == "DELETE" && url.contains("ServiceRequest/a."))
                .then(|| url.trim_start_matches("ServiceRequest/").to_owned())
        });
        if retired.is_some() {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let id = retired.expect("an A&G request retired by the scheduled expiry within 15 s");
    let id = id.split('/').next().unwrap_or_default().to_owned();
    let r = app.get(&format!("ServiceRequest/{id}")).await;
    r.assert_outcome(410, "deleted");
}

/// A chained search tells nothing of a resource the searcher may not see: a provider the
/// converted referral went to sees the referral, but not the advice request it came from, and
/// no `based-on.…` criterion finds the referral through that request's content.
#[actix_web::test]
async fn a_chain_tells_nothing_of_the_advice_behind_a_referral_to_another_provider() {
    let w = world().await;
    let advice = service_at_rcd(&w, "ADVICE_AND_GUIDANCE").await;
    let asked = w.ask(&advice, "AUTHORISED_TO_CONVERT", "Chained").await;
    let asked_id = asked["id"].as_str().expect("id").to_owned();
    // Converted by the advice's provider to one of its services, booked, rejected, and sent
    // by the referrer to a service of another organisation.
    let bookable = w
        .app
        .search("HealthcareService?characteristic=BOOKABLE&available=ROUTINE&organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|RCD")
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("an RCD service with a free routine slot")
        .to_owned();
    let r = w
        .op(
            true,
            &asked_id,
            "$ers.convertToReferral",
            Some(version(&asked)),
            &[
                ("text", "Converted"),
                ("priority", "ROUTINE"),
                ("comment", "Clinic"),
                ("service", &bookable),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let referral = r.json()["id"].as_str().expect("id").to_owned();
    let (slot, _) = crate::booking::free_slots(&w, &bookable, "ROUTINE").await[0].clone();
    let mut a = crate::booking::appointment(&referral, &slot);
    a["participant"] =
        json!([{"actor": {"reference": format!("Patient/{}", w.patient)}, "status": "accepted"}]);
    let r = w
        .app
        .send(
            w.as_spc("POST", "Appointment"),
            Some(a.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let now = w
        .read_as(false, &format!("ServiceRequest/{referral}"))
        .await
        .json();
    let r = w
        .op(
            true,
            &referral,
            "$ers.rejectReferral",
            Some(version(&now)),
            &[
                ("reason", "SERVICE_INAPPROPRIATE"),
                ("comment", "Elsewhere"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let elsewhere = crate::booking::clinic(&w, "11000").await;
    assert_ne!(elsewhere.ods, "RCD");
    let r = w
        .op(
            false,
            &referral,
            "$ers.changeShortlist",
            Some(version(&r.json())),
            &[("service", &elsewhere.service)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let as_provider = |q: String| {
        let (w, token, ods) = (&w, elsewhere.provider.clone(), elsewhere.ods.clone());
        async move {
            let r = w
                .app
                .send(
                    w.app
                        .as_user(&token, "GET", &q, "SERVICE_PROVIDER_CLINICIAN", &ods),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{q}: {}", r.text());
            match_ids(&r.json())
        }
    };
    // The provider sees the referral, and its link to the request, but not the request.
    assert_eq!(
        as_provider(format!("ServiceRequest?_id={referral}")).await,
        vec![referral.clone()]
    );
    assert_eq!(
        as_provider(format!("ServiceRequest?based-on=ServiceRequest/{asked_id}")).await,
        vec![referral.clone()]
    );
    assert!(as_provider(format!("ServiceRequest?_id={asked_id}"))
        .await
        .is_empty());
    // So a chain through the request finds nothing, whatever it asks of it, nor `:identifier`
    // by the request's UBRN (the reference carries none of its own).
    let ubrn = asked["identifier"][0]["value"].as_str().expect("UBRN");
    let by_ubrn = format!("ServiceRequest?based-on:identifier=https://fhir.nhs.uk/Id/UBRN|{ubrn}");
    for q in [
        "ServiceRequest?based-on.advice-status=ADVICE_CONVERTED".to_owned(),
        format!("ServiceRequest?based-on.performer=HealthcareService/{advice}"),
        format!("ServiceRequest?based-on.performer:missing=false&_id={referral}"),
        by_ubrn.clone(),
    ] {
        assert!(as_provider(q.clone()).await.is_empty(), "{q}");
    }
    // The referrer, who may see the request, finds the referral through it.
    for q in [
        format!("ServiceRequest?based-on.performer=HealthcareService/{advice}"),
        by_ubrn,
    ] {
        let r = w.app.send(w.as_rc("GET", &q), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            match_ids(&r.json()).contains(&referral),
            "{q}: {}",
            r.text()
        );
    }
}

//! Referrals: create with a UBRN, the e-RS state machine through operations, available
//! actions, and every illegal step refused precisely. Against the sandbox data (patients,
//! clinicians, services).

use crate::helpers::*;
use serde_json::{json, Value};

pub(crate) const UBRN: &str = "https://fhir.nhs.uk/Id/UBRN";
const PRIORITY_EXT: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority";

pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) rc: String,
    pub(crate) spc: String,
    pub(crate) patient: String,
    pub(crate) role: String,
    pub(crate) triage: String,
    pub(crate) bookable: String,
}

pub(crate) async fn world() -> World {
    world_with(ers_api::config::Settings {
        seed: ers_api::config::SeedMode::Sandbox,
        rate_limit_per_sec: 0,
        ..ers_api::config::Settings::default()
    })
    .await
}

/// The sandbox world on a server with these settings.
pub(crate) async fn world_with(settings: ers_api::config::Settings) -> World {
    let app = spawn_configured(settings).await;
    let first = |b: Value| {
        b["entry"][0]["resource"]["id"]
            .as_str()
            .expect("found")
            .to_owned()
    };
    let patient = first(app.search("Patient?identifier=9912003888").await);
    let role = first(
        app.search(
            "PractitionerRole?identifier=https://fhir.nhs.uk/Id/sds-role-profile-id|100000000001",
        )
        .await,
    );
    let triage = first(
        app.search("HealthcareService?characteristic=REVIEW&priority=URGENT&priority:not=TWO_WEEK_WAIT&organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|RCD")
            .await,
    );
    let bookable = first(
        app.search("HealthcareService?characteristic=BOOKABLE&priority=URGENT")
            .await,
    );
    World {
        rc: sign(&claims("021600556514", &[("REFERRING_CLINICIAN", "R69")])),
        spc: sign(&claims(
            "555032006106",
            &[("SERVICE_PROVIDER_CLINICIAN", "RCD")],
        )),
        app,
        patient,
        role,
        triage,
        bookable,
    }
}

pub(crate) fn referral(w: &World, services: &[&str], priority: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "extension": [{"url": PRIORITY_EXT, "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": priority}}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": format!("Patient/{}", w.patient)},
        "requester": {"reference": format!("PractitionerRole/{}", w.role)},
        "performerType": {"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-Specialty", "code": "CARDIOLOGY"}]},
        "performer": services.iter().map(|s| json!({"reference": format!("HealthcareService/{s}")})).collect::<Vec<_>>(),
        "reasonCode": [{"text": "Exertional chest pain"}],
        "note": [{"text": "Symptoms for 3 weeks; ECG attached later."}],
    })
}

impl World {
    pub(crate) fn as_rc(&self, method: &str, path: &str) -> awc::ClientRequest {
        self.app
            .as_user(&self.rc, method, path, "REFERRING_CLINICIAN", "R69")
            .insert_header(("Content-Type", "application/fhir+json"))
    }
    pub(crate) fn as_spc(&self, method: &str, path: &str) -> awc::ClientRequest {
        self.app
            .as_user(&self.spc, method, path, "SERVICE_PROVIDER_CLINICIAN", "RCD")
            .insert_header(("Content-Type", "application/fhir+json"))
    }
    pub(crate) async fn create(&self, body: &Value) -> Reply {
        self.app
            .send(
                self.as_rc("POST", "ServiceRequest"),
                Some(body.to_string().into_bytes()),
            )
            .await
    }
    pub(crate) async fn op(
        &self,
        as_provider: bool,
        id: &str,
        op: &str,
        version: Option<i64>,
        params: &[(&str, &str)],
    ) -> Reply {
        let path = format!("ServiceRequest/{id}/{op}");
        let mut req = if as_provider {
            self.as_spc("POST", &path)
        } else {
            self.as_rc("POST", &path)
        };
        if let Some(v) = version {
            req = req.insert_header(("If-Match", format!("W/\"{v}\"")));
        }
        let mut body = json!({"resourceType": "Parameters"});
        if !params.is_empty() {
            body["parameter"] = params
                .iter()
                .map(|(n, v)| json!({"name": n, "valueString": v}))
                .collect();
        }
        self.app
            .send(req, Some(body.to_string().into_bytes()))
            .await
    }
    pub(crate) async fn actions(&self, as_provider: bool, id: &str) -> Vec<String> {
        let path = format!("ServiceRequest/{id}/$ers.availableActions");
        let req = if as_provider {
            self.as_spc("GET", &path)
        } else {
            self.as_rc("GET", &path)
        };
        let r = self.app.send(req, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["parameter"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["name"] == "action")
            .map(|p| p["part"][0]["valueCode"].as_str().expect("code").to_owned())
            .collect()
    }
}

/// The referral's state extension's part `name`.
fn state_part<'a>(sr: &'a Value, name: &str) -> Option<&'a Value> {
    sr["extension"]
        .as_array()
        .expect("extensions")
        .iter()
        .find(|e| {
            e["url"] == "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ServiceRequest-State"
        })
        .and_then(|e| e["extension"].as_array())
        .into_iter()
        .flatten()
        .find(|p| p["url"] == name)
}

pub(crate) fn state(sr: &Value) -> String {
    state_part(sr, "state")
        .and_then(|p| p["valueCoding"]["code"].as_str())
        .expect("state")
        .to_owned()
}

/// When the referral entered its state, as it records it ("" when it does not).
fn state_since(sr: &Value) -> String {
    state_part(sr, "since")
        .map(|p| p["valueDateTime"].as_str().expect("a dateTime").to_owned())
        .unwrap_or_default()
}

pub(crate) fn version(r: &Reply) -> i64 {
    r.json()["meta"]["versionId"]
        .as_str()
        .expect("version")
        .parse()
        .expect("number")
}

#[actix_web::test]
async fn a_referral_goes_from_create_through_triage_to_cancel() {
    let w = world().await;
    // Create: the server assigns the UBRN and id, state NOT_BOOKED.
    let r = w
        .create(&referral(&w, &[&w.triage, &w.bookable], "URGENT"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sr = r.json();
    let id = sr["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("r."), "{id}");
    let ubrn = sr["identifier"][0]["value"]
        .as_str()
        .expect("ubrn")
        .to_owned();
    assert!(
        ubrn.len() == 12
            && ubrn.chars().all(|c| c.is_ascii_digit())
            && ubrn.as_str() >= "000000100000",
        "{ubrn}"
    );
    assert_eq!(state(&sr), "NOT_BOOKED");
    assert_eq!(sr["status"], "active");
    assert_eq!(sr["priority"], "urgent");
    assert!(r
        .header("location")
        .expect("location")
        .contains(&format!("ServiceRequest/{id}/_history/1")));
    // A second referral gets the next UBRN.
    let r2 = w
        .create(&referral(&w, &[&w.bookable], "ROUTINE"))
        .await
        .json();
    let ubrn2 = r2["identifier"][0]["value"]
        .as_str()
        .expect("ubrn")
        .to_owned();
    assert_ne!(ubrn, ubrn2);
    // Found by UBRN (e-RS A041), by patient NHS number and state.
    let b = w
        .app
        .search(&format!("ServiceRequest?identifier={UBRN}|{ubrn}"))
        .await;
    assert_eq!(match_ids(&b), vec![id.clone()]);
    let b = w.app.search("ServiceRequest?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9912003888&state=NOT_BOOKED&priority=URGENT&_include=ServiceRequest:patient").await;
    assert_eq!(match_ids(&b), vec![id.clone()], "{b}");
    assert!(b.to_string().contains("\"resourceType\":\"Patient\""));
    // R4's `subject` is `patient` here (a referral's subject is always a Patient): the same
    // referrals, and none for a patient who has none (not every referral, as an ignored
    // parameter would give).
    let by = |p: &str, who: &str| format!("ServiceRequest?{p}=Patient/{who}&_count=100");
    let subject = w.app.search(&by("subject", &w.patient)).await;
    assert!(match_ids(&subject).contains(&id), "{subject}");
    assert_eq!(
        match_ids(&subject),
        match_ids(&w.app.search(&by("patient", &w.patient)).await)
    );
    assert!(!subject.to_string().contains("ignored"), "{subject}");
    assert_eq!(
        w.app.search(&by("subject", "no-such-patient")).await["total"],
        0
    );
    // By requester organisation, shortlisted service (with the services included) and
    // authored date.
    let r69 = w.app.search("Organization?identifier=R69").await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("R69")
        .to_owned();
    let mine = |b: &Value| match_ids(b).contains(&id);
    let b = w
        .app
        .search(&format!(
            "ServiceRequest?requester.organization=Organization/{r69}&_count=100"
        ))
        .await;
    assert!(mine(&b), "{b}");
    let b = w
        .app
        .search(&format!(
            "ServiceRequest?performer=HealthcareService/{}&_include=ServiceRequest:performer&_count=100",
            w.triage
        ))
        .await;
    assert!(mine(&b), "{b}");
    assert!(b
        .to_string()
        .contains("\"resourceType\":\"HealthcareService\""));
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(mine(
        &w.app
            .search(&format!("ServiceRequest?authored=ge{today}&_count=100"))
            .await
    ));
    assert!(!mine(
        &w.app
            .search(&format!("ServiceRequest?authored=lt{today}&_count=100"))
            .await
    ));

    // What each side may do now: the referrer shortlists, sends, cancels or books; the
    // provider nothing.
    assert_eq!(
        w.actions(false, &id).await,
        [
            "CHANGE_SHORTLIST",
            "SEND_FOR_TRIAGE",
            "CANCEL_REFERRAL",
            "UPDATE_ADDITIONAL_REQUIREMENTS",
            "MAINTAIN_REFERRAL_LETTER",
            "CREATE_APPOINTMENT"
        ]
    );
    assert!(w.actions(true, &id).await.is_empty());

    // If-Match is required, and a stale one loses.
    w.op(
        false,
        &id,
        "$ers.changeShortlist",
        None,
        &[("service", &w.triage)],
    )
    .await
    .assert_outcome(428, "required");
    w.op(
        false,
        &id,
        "$ers.changeShortlist",
        Some(7),
        &[("service", &w.triage)],
    )
    .await
    .assert_outcome(409, "conflict");
    let r = w
        .op(
            false,
            &id,
            "$ers.changeShortlist",
            Some(1),
            &[
                ("service", &w.triage),
                ("service", &w.bookable),
                ("service", &w.triage),
            ],
        )
        .await;
    r.assert_outcome(422, "duplicate");
    let r = w
        .op(
            false,
            &id,
            "$ers.changeShortlist",
            Some(1),
            &[("service", &w.triage)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(version(&r), 2);
    assert_eq!(r.json()["performer"].as_array().map(Vec::len), Some(1));

    // Send for triage: only to a shortlisted triage service.
    let d = w
        .op(
            false,
            &id,
            "$ers.sendForTriage",
            Some(2),
            &[("service", &w.bookable)],
        )
        .await
        .assert_outcome(422, "business-rule");
    assert!(
        d.contains("does not relate to a Service on the Shortlist"),
        "{d}"
    );
    let r = w
        .op(
            false,
            &id,
            "$ers.sendForTriage",
            Some(2),
            &[("service", &w.triage)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state(&r.json()), "AWAITING_TRIAGE");
    // Now the referrer may only cancel; the shortlist is fixed while triage is pending.
    assert_eq!(
        w.actions(false, &id).await,
        [
            "CANCEL_REFERRAL",
            "UPDATE_ADDITIONAL_REQUIREMENTS",
            "MAINTAIN_REFERRAL_LETTER"
        ]
    );
    let refused = w
        .op(
            false,
            &id,
            "$ers.changeShortlist",
            Some(3),
            &[("service", &w.bookable)],
        )
        .await;
    let d = refused.assert_outcome(422, "business-rule");
    assert!(
        d.contains("'state' (AWAITING_TRIAGE) does not allow CHANGE_SHORTLIST"),
        "{d}"
    );
    assert_eq!(
        refused.json()["issue"][0]["details"]["coding"][0]["code"],
        "INVALID_REQUEST_STATE"
    );

    // Triage outcome: the provider clinician of the triage service only, with a comment.
    assert_eq!(
        w.actions(true, &id).await,
        [
            "RECORD_REVIEW_OUTCOME",
            "CANCEL_REFERRAL",
            "UPDATE_ADDITIONAL_REQUIREMENTS",
            "ADD_PROVIDER_ATTACHMENT"
        ]
    );
    // The provider's triage reason is for a referral it has triaged to action, not yet.
    let r = w
        .op(
            true,
            &id,
            "$ers.cancelReferral",
            Some(3),
            &[
                ("reason", "TRIAGE_ENDED"),
                ("comment", "Not for this service"),
            ],
        )
        .await;
    let d = r.assert_outcome(422, "business-rule");
    r.assert_issue("INAPPROPRIATE_VALUE", "Parameters.parameter[reason]");
    assert!(d.contains("this one is AWAITING_TRIAGE"), "{d}");
    let d = w
        .op(
            false,
            &id,
            "$ers.recordReviewOutcome",
            Some(3),
            &[("outcome", "ACCEPT_REFER_BOOK_LATER"), ("comment", "ok")],
        )
        .await
        .assert_outcome(403, "forbidden");
    assert!(d.contains("SERVICE_PROVIDER_CLINICIAN"), "{d}");
    w.op(
        true,
        &id,
        "$ers.recordReviewOutcome",
        Some(3),
        &[("outcome", "RETURN_TO_REFERRER_WITH_ADVICE")],
    )
    .await
    .assert_outcome(422, "required");
    let r = w
        .op(
            true,
            &id,
            "$ers.recordReviewOutcome",
            Some(3),
            &[
                ("outcome", "RETURN_TO_REFERRER_WITH_ADVICE"),
                ("comment", "Please arrange an echo first"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state(&r.json()), "TRIAGE_RESPONSE");
    assert!(r.text().contains("Please arrange an echo first"));
    // Back with the referrer, who sends it again; the provider accepts to book later.
    assert!(w.actions(true, &id).await.is_empty());
    let r = w
        .op(
            false,
            &id,
            "$ers.sendForTriage",
            Some(4),
            &[("service", &w.triage)],
        )
        .await;
    assert_eq!(state(&r.json()), "AWAITING_TRIAGE", "{}", r.text());
    let r = w
        .op(
            true,
            &id,
            "$ers.recordReviewOutcome",
            Some(5),
            &[
                ("outcome", "ACCEPT_REFER_BOOK_LATER"),
                ("comment", "Will book into next clinic"),
            ],
        )
        .await;
    assert_eq!(
        state(&r.json()),
        "TRIAGED_PROVIDER_TO_ACTION",
        "{}",
        r.text()
    );
    let b = w
        .app
        .search(&format!(
            "ServiceRequest?service=HealthcareService/{}&state=TRIAGED_PROVIDER_TO_ACTION",
            w.triage
        ))
        .await;
    assert_eq!(match_ids(&b), vec![id.clone()]);

    // Cancel: a reason of the referrer's, with its comment rule, then terminal.
    let r = w
        .op(
            false,
            &id,
            "$ers.cancelReferral",
            Some(6),
            &[("reason", "TRIAGE_ENDED"), ("comment", "Ended")],
        )
        .await;
    let d = r.assert_outcome(422, "business-rule");
    r.assert_issue("INAPPROPRIATE_VALUE", "Parameters.parameter[reason]");
    assert!(d.contains("the referrer's are: RAISED_IN_ERROR"), "{d}");
    let oo = w
        .op(
            false,
            &id,
            "$ers.cancelReferral",
            Some(6),
            &[("reason", "RAISED_IN_ERROR")],
        )
        .await;
    oo.assert_outcome(422, "required");
    assert!(oo.text().contains("VALUE_IS_REQUIRED"));
    w.op(
        false,
        &id,
        "$ers.cancelReferral",
        Some(6),
        &[("reason", "BORED")],
    )
    .await
    .assert_outcome(422, "code-invalid");
    let r = w
        .op(
            false,
            &id,
            "$ers.cancelReferral",
            Some(6),
            &[
                ("reason", "RAISED_IN_ERROR"),
                ("comment", "Wrong patient selected"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sr = r.json();
    assert_eq!(state(&sr), "CANCELLED_REFERRAL");
    assert_eq!(sr["status"], "revoked");
    assert!(w.actions(false, &id).await.is_empty());
    w.op(
        false,
        &id,
        "$ers.cancelReferral",
        Some(7),
        &[("reason", "REFERRER_CANCELLATION")],
    )
    .await
    .assert_outcome(422, "business-rule");
    // Every version is kept.
    assert_eq!(
        w.app.search(&format!("ServiceRequest/{id}/_history")).await["total"],
        7
    );
}

#[actix_web::test]
async fn bad_referrals_and_plain_writes_are_refused_precisely() {
    let w = world().await;
    let too_many: Vec<String> = w
        .app
        .search("HealthcareService?characteristic=BOOKABLE&priority=URGENT&_count=21")
        .await["entry"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(too_many.len(), 21);
    let before = w.app.search("ServiceRequest").await["total"].clone();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let oo = w.create(&referral(&w, &refs, "URGENT")).await;
    oo.assert_outcome(422, "too-costly");
    assert!(oo.text().contains("TOO_MANY_ITEMS"));
    w.create(&referral(&w, &[&w.bookable, &w.bookable], "URGENT"))
        .await
        .assert_outcome(422, "duplicate");
    // No shortlist at all, or an empty one (FHIR JSON has no empty arrays).
    let mut none = referral(&w, &[&w.bookable], "URGENT");
    none.as_object_mut()
        .expect("object")
        .shift_remove("performer");
    w.create(&none).await.assert_outcome(422, "required");
    let d = w
        .create(&referral(&w, &[], "URGENT"))
        .await
        .assert_outcome(400, "structure");
    assert!(d.contains("'performer' is an empty array"), "{d}");
    // The triage service does not take two-week-wait referrals.
    let oo = w.create(&referral(&w, &[&w.triage], "TWO_WEEK_WAIT")).await;
    oo.assert_outcome(422, "business-rule");
    assert!(oo.text().contains("UNSUPPORTED_PRIORITY"), "{}", oo.text());
    // The server assigns the UBRN.
    let mut body = referral(&w, &[&w.bookable], "URGENT");
    body["identifier"] = json!([{"system": UBRN, "value": "000000070000"}]);
    w.create(&body).await.assert_outcome(422, "business-rule");
    // A new referral is an active order: another status or intent is refused, not corrected.
    for (field, value) in [("status", "draft"), ("intent", "plan")] {
        let mut body = referral(&w, &[&w.bookable], "URGENT");
        body[field] = json!(value);
        let r = w.create(&body).await;
        let d = r.assert_outcome(422, "business-rule");
        assert!(d.contains(value), "{d}");
        r.assert_issue("INAPPROPRIATE_VALUE", &format!("ServiceRequest.{field}"));
    }
    // A priority that is not an e-RS one names where it is.
    let mut body = referral(&w, &[&w.bookable], "URGENT");
    body["extension"][0]["valueCoding"]["code"] = json!("SOON");
    let r = w.create(&body).await;
    r.assert_outcome(422, "code-invalid");
    r.assert_issue(
        "INVALID_CODE",
        "ServiceRequest.extension[0].valueCoding.code",
    );
    // A referring clinician refers as themself, at their own organisation.
    let other = sign(&claims("021600556514", &[("REFERRING_CLINICIAN", "R68")]));
    let r = w
        .app
        .send(
            w.app
                .as_user(
                    &other,
                    "POST",
                    "ServiceRequest",
                    "REFERRING_CLINICIAN",
                    "R68",
                )
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(
                referral(&w, &[&w.bookable], "URGENT")
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    r.assert_outcome(403, "forbidden");
    // Providers do not create referrals.
    let r = w
        .app
        .send(
            w.as_spc("POST", "ServiceRequest"),
            Some(
                referral(&w, &[&w.bookable], "URGENT")
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        w.app.search("ServiceRequest").await["total"],
        before,
        "nothing was written"
    );

    // A body to create validates as it is (UBRN and state are the server's to add).
    let r = w
        .app
        .send(
            w.as_rc("POST", "ServiceRequest/$validate"),
            Some(
                referral(&w, &[&w.bookable], "URGENT")
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("\"severity\":\"error\""), "{}", r.text());
    // Referrals are not created in Bundles (that would skip the UBRN and state).
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": referral(&w, &[&w.bookable], "URGENT"), "request": {"method": "POST", "url": "ServiceRequest"}}
    ]});
    let d = w
        .app
        .send(
            w.as_rc("POST", "/FHIR/R4"),
            Some(bundle.to_string().into_bytes()),
        )
        .await
        .assert_outcome(405, "not-supported");
    assert!(d.contains("POST ServiceRequest"), "{d}");
    // A referral changes only through its operations.
    let id = w
        .create(&referral(&w, &[&w.bookable], "URGENT"))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = w
        .app
        .send(
            w.as_rc("PUT", &format!("ServiceRequest/{id}"))
                .insert_header(("If-Match", "W/\"1\"")),
            Some(
                referral(&w, &[&w.bookable], "URGENT")
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    let d = r.assert_outcome(405, "not-supported");
    assert!(d.contains("$ers.changeShortlist"), "{d}");
    w.app
        .send(w.as_rc("DELETE", &format!("ServiceRequest/{id}")), None)
        .await
        .assert_outcome(405, "not-supported");
    w.op(false, &id, "$ers.teleport", Some(1), &[])
        .await
        .assert_outcome(404, "not-found");
    w.op(
        false,
        &id,
        "$ers.changeShortlist",
        Some(1),
        &[("colour", "blue")],
    )
    .await
    .assert_outcome(400, "structure");

    // Two concurrent changes from the same version: one wins, the other is told it is stale.
    let (pa, pb) = (
        [("service", w.triage.as_str())],
        [
            ("service", w.triage.as_str()),
            ("service", w.bookable.as_str()),
        ],
    );
    let a = w.op(false, &id, "$ers.changeShortlist", Some(1), &pa);
    let b = w.op(false, &id, "$ers.changeShortlist", Some(1), &pb);
    let (a, b) = futures_util::future::join(a, b).await;
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", a.text(), b.text());
    assert_eq!(
        w.app.search(&format!("ServiceRequest/{id}/_history")).await["total"],
        2
    );
}

/// R69's AWAITING_BOOKING list as `app` serves it.
async fn awaiting_booking(app: &TestApp, token: &str) -> Vec<String> {
    let r = app
        .send(
            app.as_user(
                token,
                "GET",
                "ServiceRequest/$ers.worklist?listType=AWAITING_BOOKING&_count=100",
                "REFERRING_CLINICIAN",
                "R69",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    match_ids(&r.json())
}

/// A database whose referrals were stored before the worklist table existed: the next server
/// to start on it puts them on their lists, once.
#[actix_web::test]
async fn referrals_stored_before_worklists_are_listed_at_the_next_start() {
    let w = world().await;
    let id = w.new_referral(&[&w.bookable.clone()], "ROUTINE").await;
    assert!(awaiting_booking(&w.app, &w.rc).await.contains(&id));
    // As the migration leaves such a database: no entries, the backfill not done.
    w.app.execute_sql(
        "DELETE FROM worklist_entries; \
         UPDATE counters SET value = 0 WHERE name = 'worklists_backfilled'",
    );
    assert!(!awaiting_booking(&w.app, &w.rc).await.contains(&id));
    let next = spawn_on(
        &w.app.database_url,
        ers_api::config::Settings {
            rate_limit_per_sec: 0,
            ..ers_api::config::Settings::default()
        },
    )
    .await;
    assert!(awaiting_booking(&next, &w.rc).await.contains(&id));
    assert!(
        awaiting_booking(&w.app, &w.rc).await.contains(&id),
        "one list for all"
    );
}

#[actix_web::test]
async fn worklists_show_each_side_its_referrals_and_refuse_the_other_side() {
    let w = world().await;
    let mk = |services: Vec<String>| {
        let w = &w;
        async move {
            let refs: Vec<&str> = services.iter().map(String::as_str).collect();
            w.create(&referral(w, &refs, "URGENT")).await.json()["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let waiting = mk(vec![w.bookable.clone()]).await;
    let waiting2 = mk(vec![w.bookable.clone(), w.triage.clone()]).await;
    let triage = mk(vec![w.triage.clone()]).await;
    let r = w
        .op(
            false,
            &triage,
            "$ers.sendForTriage",
            Some(1),
            &[("service", &w.triage)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = |token: &str, bf: &str, org: &str, q: &str| {
        let req = w.app.as_user(
            token,
            "GET",
            &format!("ServiceRequest/$ers.worklist?{q}"),
            bf,
            org,
        );
        w.app.send(req, None)
    };
    let b = list(
        &w.rc,
        "REFERRING_CLINICIAN",
        "R69",
        "listType=AWAITING_BOOKING&_count=100",
    )
    .await;
    assert_eq!(b.status, 200, "{}", b.text());
    assert!(
        b.text().contains("\"resourceType\":\"Patient\""),
        "patients included"
    );
    let b = b.json();
    let ids = match_ids(&b);
    assert!(
        ids.contains(&waiting) && ids.contains(&waiting2) && !ids.contains(&triage),
        "{ids:?}"
    );
    // Only referrals in the list's states (the sandbox's own referrals among them).
    for e in b["entry"].as_array().expect("entries") {
        if e["search"]["mode"] == "match" {
            let st = state(&e["resource"]);
            assert!(
                [
                    "NOT_BOOKED",
                    "DEFERRED_TO_PROVIDER",
                    "APPT_CANCELLED_BY_PATIENT",
                    "APPT_CANCELLED_BY_PROVIDER"
                ]
                .contains(&st.as_str()),
                "{st}"
            );
        }
    }
    // Paged like any search.
    let b = list(
        &w.rc,
        "REFERRING_CLINICIAN",
        "R69",
        "listType=AWAITING_BOOKING&_count=1",
    )
    .await
    .json();
    assert_eq!(match_ids(&b).len(), 1);
    // Pages follow the list's order (oldest first), and their links stay on the operation.
    let next = link(&b, "next").expect("next");
    assert!(
        next.contains("ServiceRequest/$ers.worklist?listType=AWAITING_BOOKING&")
            && next.contains("_count=1")
            && next.contains("_offset=1"),
        "{next}"
    );
    let whole = list(
        &w.rc,
        "REFERRING_CLINICIAN",
        "R69",
        "listType=AWAITING_BOOKING&_count=100&_total=accurate",
    )
    .await
    .json();
    let all = match_ids(&whole);
    assert_eq!(whole["total"], all.len(), "{whole}");
    assert_eq!(match_ids(&b), all[..1].to_vec());
    // A page that is not the whole list is not counted unless asked; a count alone can be.
    assert!(b.get("total").is_none(), "{b}");
    let counted = list(
        &w.rc,
        "REFERRING_CLINICIAN",
        "R69",
        "listType=AWAITING_BOOKING&_summary=count",
    )
    .await
    .json();
    assert_eq!(counted["total"], all.len(), "{counted}");
    assert!(match_ids(&counted).is_empty(), "{counted}");
    let path = next.split_once("/FHIR/R4/").expect("base").1;
    let second = w
        .app
        .send(
            w.app
                .as_user(&w.rc, "GET", path, "REFERRING_CLINICIAN", "R69"),
            None,
        )
        .await
        .json();
    assert_eq!(match_ids(&second), all[1..2].to_vec(), "{second}");
    let authored: Vec<chrono::DateTime<chrono::FixedOffset>> = whole["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            let t = e["resource"]["authoredOn"].as_str().expect("authoredOn");
            chrono::DateTime::parse_from_rfc3339(t).expect("an instant")
        })
        .collect();
    let mut sorted = authored.clone();
    sorted.sort();
    assert_eq!(authored, sorted, "oldest first");
    assert!(
        all.ends_with(&[waiting.clone(), waiting2.clone()]),
        "{all:?}"
    );
    // A change that leaves a referral on its list keeps it there.
    let r = w
        .op(
            false,
            &waiting2,
            "$ers.changeShortlist",
            Some(1),
            &[("service", &w.bookable)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let still = list(
        &w.rc,
        "REFERRING_CLINICIAN",
        "R69",
        "listType=AWAITING_BOOKING&_count=100",
    )
    .await
    .json();
    assert_eq!(match_ids(&still), all, "{still}");
    // Filters of provider lists are refused on referrer lists, and bad ones are named.
    for q in ["service=HealthcareService/x", "specialty=CARDIOLOGY"] {
        let d = list(
            &w.rc,
            "REFERRING_CLINICIAN",
            "R69",
            &format!("listType=AWAITING_BOOKING&{q}"),
        )
        .await
        .assert_outcome(400, "value");
        assert!(d.contains("only provider worklists"), "{d}");
    }
    let d = list(
        &w.spc,
        "SERVICE_PROVIDER_CLINICIAN",
        "RCD",
        "listType=REFERRALS_FOR_REVIEW&specialty=http://example.org|CARDIOLOGY",
    )
    .await
    .assert_outcome(400, "value");
    assert!(d.contains("eRS-Specialty"), "{d}");
    // The provider of the triage service sees the referral awaiting its review.
    let b = list(
        &w.spc,
        "SERVICE_PROVIDER_CLINICIAN",
        "RCD",
        &format!("listType=REFERRALS_FOR_REVIEW&service={}", w.triage),
    )
    .await
    .json();
    assert!(match_ids(&b).contains(&triage), "{b}");
    for e in b["entry"].as_array().expect("entries") {
        if e["search"]["mode"] == "match" {
            assert_eq!(state(&e["resource"]), "AWAITING_TRIAGE");
        }
    }
    // By the referral's specialty: its own, with or without the system, and not another.
    for (q, listed) in [
        ("CARDIOLOGY", true),
        (
            "https://fhir.nhs.uk/CodeSystem/eRS-Specialty|CARDIOLOGY",
            true,
        ),
        ("DERMATOLOGY,CARDIOLOGY", true),
        ("DERMATOLOGY", false),
    ] {
        let b = list(
            &w.spc,
            "SERVICE_PROVIDER_CLINICIAN",
            "RCD",
            &format!(
                "listType=REFERRALS_FOR_REVIEW&specialty={}",
                q.replace('|', "%7C")
            ),
        )
        .await
        .json();
        assert_eq!(match_ids(&b).contains(&triage), listed, "{q}: {b}");
    }
    // Another provider's service: not on this provider's list.
    let b = list(
        &w.spc,
        "SERVICE_PROVIDER_CLINICIAN",
        "RCD",
        &format!("listType=REFERRALS_FOR_REVIEW&service={}", w.bookable),
    )
    .await
    .json();
    assert!(!match_ids(&b).contains(&triage), "{b}");
    // Another referring organisation sees none of them.
    let other = sign(&claims("021600556514", &[("REFERRING_CLINICIAN", "R68")]));
    let b = list(
        &other,
        "REFERRING_CLINICIAN",
        "R68",
        "listType=AWAITING_BOOKING",
    )
    .await
    .json();
    assert_eq!(b["total"], 0, "{b}");
    // The wrong side's list: 422 naming who may ask for it.
    let d = list(
        &w.spc,
        "SERVICE_PROVIDER_CLINICIAN",
        "RCD",
        "listType=AWAITING_BOOKING",
    )
    .await
    .assert_outcome(422, "business-rule");
    assert!(
        d.contains("REFERRING_CLINICIAN") && d.contains("referrer worklist"),
        "{d}"
    );
    list(&w.rc, "REFERRING_CLINICIAN", "R69", "listType=EVERYTHING")
        .await
        .assert_outcome(400, "value");
    list(&w.rc, "REFERRING_CLINICIAN", "R69", "")
        .await
        .assert_outcome(400, "required");
}

#[actix_web::test]
async fn the_sandbox_holds_the_nhs_sandbox_ubrns_and_a_referral_in_every_state() {
    let w = world().await;
    let by_ubrn = |ubrn: &'static str| {
        let app = &w.app;
        async move {
            let b = app
                .search(&format!("ServiceRequest?identifier={UBRN}|{ubrn}"))
                .await;
            assert_eq!(b["total"], 1, "{ubrn}: {b}");
            b["entry"][0]["resource"].clone()
        }
    };
    assert_eq!(state(&by_ubrn("000000070000").await), "NOT_BOOKED");
    assert_eq!(state(&by_ubrn("000000070001").await), "BOOKED");
    assert_eq!(
        state(&by_ubrn("000000070003").await),
        "DEFERRED_TO_PROVIDER"
    );
    let related = by_ubrn("000000070005").await;
    assert!(related["supportingInfo"][0]["reference"]
        .as_str()
        .expect("related")
        .starts_with("ServiceRequest/r."));
    assert_eq!(state(&by_ubrn("000000070006").await), "AWAITING_TRIAGE");
    assert_eq!(by_ubrn("000000070009").await["status"], "revoked");
    let all = w
        .app
        .search("ServiceRequest?category=http://snomed.info/sct|3457005&_count=100")
        .await;
    let mut states: Vec<String> = all["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| state(&e["resource"]))
        .collect();
    states.sort();
    states.dedup();
    assert_eq!(states.len(), 12, "every e-RS state: {states:?}");
    // The sandbox referral awaiting triage is on its provider's review list and can be triaged.
    let id = by_ubrn("000000070006").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let sandbox_spc = sign(&claims(
        "555032006106",
        &[("SERVICE_PROVIDER_CLINICIAN", "RCD")],
    ));
    let service_org = w
        .app
        .search(&format!(
            "ServiceRequest?identifier={UBRN}|000000070006&_include=ServiceRequest:performer"
        ))
        .await;
    let provider = service_org["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["resource"]["resourceType"] == "HealthcareService")
        .expect("service")["resource"]["providedBy"]["reference"]
        .as_str()
        .expect("org")
        .to_owned();
    let ods = w.app.get(&provider).await.json()["identifier"][0]["value"]
        .as_str()
        .expect("ods")
        .to_owned();
    let token = if ods == "RCD" {
        sandbox_spc
    } else {
        sign(&claims(
            "555032006106",
            &[("SERVICE_PROVIDER_CLINICIAN", ods.as_str())],
        ))
    };
    let r = w
        .app
        .send(
            w.app.as_user(
                &token,
                "GET",
                &format!("ServiceRequest/{id}/$ers.availableActions"),
                "SERVICE_PROVIDER_CLINICIAN",
                &ods,
            ),
            None,
        )
        .await;
    assert!(r.text().contains("RECORD_REVIEW_OUTCOME"), "{}", r.text());
}

#[actix_web::test]
async fn only_the_referrer_and_shortlisted_providers_see_a_referral() {
    let w = world().await;
    let r = w.create(&referral(&w, &[&w.triage], "URGENT")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sr = r.json();
    let id = sr["id"].as_str().expect("id").to_owned();
    let ubrn = sr["identifier"][0]["value"]
        .as_str()
        .expect("ubrn")
        .to_owned();
    // A referrer at another practice, and a provider that is not shortlisted.
    let other_gp = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    let other_trust = sign(&claims(
        "555032006107",
        &[("SERVICE_PROVIDER_CLINICIAN", "RR8")],
    ));
    let outsiders = [
        (other_gp.as_str(), "REFERRING_CLINICIAN", "R68"),
        (other_trust.as_str(), "SERVICE_PROVIDER_CLINICIAN", "RR8"),
    ];
    let insiders = [
        (w.rc.as_str(), "REFERRING_CLINICIAN", "R69"),
        (w.spc.as_str(), "SERVICE_PROVIDER_CLINICIAN", "RCD"),
    ];
    let get = |token: &str, bf: &str, org: &str, path: &str| {
        w.app.send(w.app.as_user(token, "GET", path, bf, org), None)
    };
    let by_ubrn = format!("ServiceRequest?identifier={UBRN}|{ubrn}");
    let revinclude = format!(
        "Patient?_id={}&_revinclude=ServiceRequest:patient&_count=100",
        w.patient
    );
    let has = format!(
        "Patient?_id={}&_has:ServiceRequest:patient:identifier={UBRN}|{ubrn}",
        w.patient
    );
    let provenance = format!("Provenance?target=ServiceRequest/{id}");
    for (token, bf, org) in insiders {
        let r = get(token, bf, org, &format!("ServiceRequest/{id}")).await;
        assert_eq!(r.status, 200, "{org}: {}", r.text());
        assert_eq!(
            get(token, bf, org, &by_ubrn).await.json()["total"],
            1,
            "{org}"
        );
        let b = get(token, bf, org, &revinclude).await.json();
        assert!(
            b.to_string().contains(&format!("\"id\":\"{id}\"")),
            "{org}: {b}"
        );
        assert_eq!(get(token, bf, org, &has).await.json()["total"], 1, "{org}");
        let r = get(token, bf, org, &format!("ServiceRequest/{id}/_history")).await;
        assert_eq!(r.json()["total"], 1, "{org}: {}", r.text());
        if bf != "SERVICE_PROVIDER_CLINICIAN" {
            let r = get(token, bf, org, &provenance).await;
            assert_eq!(r.json()["total"], 1, "{org}: {}", r.text());
            let r = get(token, bf, org, &format!("Provenance/ServiceRequest.1.{id}")).await;
            assert_eq!(r.status, 200, "{org}: {}", r.text());
        }
    }
    for (token, bf, org) in outsiders {
        // Reads of every kind: 404 as if it did not exist (the same answer as a made-up id).
        for path in [
            format!("ServiceRequest/{id}"),
            format!("ServiceRequest/{id}/_history/1"),
            format!("ServiceRequest/{id}/_history"),
            format!("ServiceRequest/{id}/$ers.availableActions"),
        ] {
            let r = get(token, bf, org, &path).await;
            r.assert_outcome(404, "not-found");
            // Holding its version tag tells an outsider nothing either.
            let r = w
                .app
                .send(
                    w.app
                        .as_user(token, "GET", &path, bf, org)
                        .insert_header(("If-None-Match", "W/\"1\"")),
                    None,
                )
                .await;
            r.assert_outcome(404, "not-found");
            let unknown = get(token, bf, org, &path.replace(&id, "r.unknown")).await;
            assert_eq!(
                r.json()["issue"][0]["diagnostics"]
                    .as_str()
                    .map(|d| d.replace(&id, "r.unknown")),
                unknown.json()["issue"][0]["diagnostics"]
                    .as_str()
                    .map(str::to_owned),
                "{path}"
            );
        }
        // Searches, includes, reverse chains and history leave it out.
        assert_eq!(
            get(token, bf, org, &by_ubrn).await.json()["total"],
            0,
            "{org}"
        );
        let b = get(token, bf, org, &revinclude).await.json();
        assert!(!b.to_string().contains(&id), "{org}: {b}");
        assert_eq!(get(token, bf, org, &has).await.json()["total"], 0, "{org}");
        let b = get(token, bf, org, "ServiceRequest/_history?_count=1000")
            .await
            .json();
        assert!(!b.to_string().contains(&id), "{org}: {b}");
        if bf == "REFERRING_CLINICIAN" {
            let r = get(token, bf, org, &provenance).await;
            assert_eq!(r.json()["total"], 0, "{org}: {}", r.text());
            for path in [
                format!("Provenance/ServiceRequest.1.{id}"),
                format!("Provenance/ServiceRequest.1.{id}/_history/1"),
                format!("Provenance/ServiceRequest.1.{id}/_history"),
            ] {
                get(token, bf, org, &path)
                    .await
                    .assert_outcome(404, "not-found");
            }
            let b = get(token, bf, org, "Provenance?_count=1000&_sort=-recorded")
                .await
                .json();
            assert!(!b.to_string().contains(&id), "{org}: {b}");
        }
    }
    // A change by an outsider is refused (403).
    let cancel = json!({"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "RAISED_IN_ERROR"},
        {"name": "comment", "valueString": "Entered for the wrong patient"}]});
    let r = w
        .app
        .send(
            w.app
                .as_user(
                    &other_gp,
                    "POST",
                    &format!("ServiceRequest/{id}/$ers.cancelReferral"),
                    "REFERRING_CLINICIAN",
                    "R68",
                )
                .insert_header(("Content-Type", "application/fhir+json"))
                .insert_header(("If-Match", "W/\"1\"")),
            Some(cancel.to_string().into_bytes()),
        )
        .await;
    r.assert_outcome(403, "forbidden");
    assert_eq!(
        get(
            w.rc.as_str(),
            "REFERRING_CLINICIAN",
            "R69",
            &format!("ServiceRequest/{id}")
        )
        .await
        .json()["meta"]["versionId"],
        "1"
    );
    // Each hidden read is an access denial in the audit trail, naming the organisation.
    let auditor = sign(&claims("021600556514", &[("AUDITOR", "R69")]));
    let r = get(
        &auditor,
        "AUDITOR",
        "R69",
        &format!("AuditEvent?subtype=access-denied&entity=ServiceRequest/{id}&_count=100"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.contains("not visible to organisation R68"), "{text}");
    assert!(text.contains("not visible to organisation RR8"), "{text}");
}

/// FHIR lets every operation be invoked with POST: those that only read answer a POST as they
/// answer a GET, taking their inputs from a `Parameters` body.
#[actix_web::test]
async fn read_only_operations_may_be_posted() {
    let w = world().await;
    let id = w.new_referral(&[&w.bookable], "ROUTINE").await;
    let posted = |path: String, body: Option<Value>| {
        let req = w
            .as_rc("POST", &path)
            .insert_header(("Content-Type", "application/fhir+json"));
        w.app.send(req, body.map(|b| b.to_string().into_bytes()))
    };
    // $ers.availableActions: the same answer; it takes no parameters.
    let path = format!("ServiceRequest/{id}/$ers.availableActions");
    let got = w.app.send(w.as_rc("GET", &path), None).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let r = posted(path.clone(), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), got.json());
    let colour = json!({"resourceType": "Parameters", "parameter": [{"name": "colour", "valueString": "red"}]});
    let r = posted(path, Some(colour)).await;
    r.assert_outcome(400, "structure");
    r.assert_issue("UNEXPECTED_FIELD", "Parameters.parameter[colour]");
    // The worklist, from a Parameters body; one list at a time.
    let lists = |types: &[&str]| {
        let mut parameter: Vec<Value> = types
            .iter()
            .map(|t| json!({"name": "listType", "valueCode": t}))
            .collect();
        parameter.push(json!({"name": "_count", "valueInteger": 100}));
        json!({"resourceType": "Parameters", "parameter": parameter})
    };
    let wl = "ServiceRequest/$ers.worklist".to_owned();
    let r = posted(wl.clone(), Some(lists(&["AWAITING_BOOKING"]))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids = match_ids(&r.json());
    assert!(ids.contains(&id), "{ids:?}");
    assert_eq!(ids, awaiting_booking(&w.app, &w.rc).await);
    let r = posted(wl, Some(lists(&["AWAITING_BOOKING", "AWAITING_BOOKING"]))).await;
    r.assert_outcome(400, "structure");
    r.assert_issue("TOO_MANY_ITEMS", "Parameters.parameter[listType]");
}

#[actix_web::test]
async fn operation_inputs_are_read_as_their_definitions_type_them() {
    let w = world().await;
    let id = w.new_referral(&[&w.bookable], "ROUTINE").await;
    let cancel = format!("ServiceRequest/{id}/$ers.cancelReferral");
    let send = |path: String, parameter: Value| {
        let req = w
            .as_rc("POST", &path)
            .insert_header(("If-Match", "W/\"1\""));
        let body = json!({"resourceType": "Parameters", "parameter": parameter});
        w.app.send(req, Some(body.to_string().into_bytes()))
    };
    // A code sent as a number is refused, naming the element and the types it takes; the
    // referral is untouched.
    let r = send(
        cancel.clone(),
        json!([{"name": "reason", "valueInteger": 5}, {"name": "comment", "valueString": "x"}]),
    )
    .await;
    let d = r.assert_outcome(400, "value");
    r.assert_issue("INVALID_VALUE", "Parameters.parameter[reason].valueInteger");
    assert!(
        d.contains(
            "is a code: give it as valueCode or valueString or valueCoding, not valueInteger"
        ),
        "{d}"
    );
    // Free text sent as a boolean, and a parameter with two values: each named, all at once.
    let r = send(
        cancel.clone(),
        json!([
            {"name": "reason", "valueCode": "RAISED_IN_ERROR"},
            {"name": "comment", "valueBoolean": true},
            {"name": "comment", "valueString": "a"},
        ]),
    )
    .await;
    r.assert_outcome(400, "value");
    let at: Vec<String> = r.json()["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["expression"][0].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        at,
        [
            "Parameters.parameter[comment].valueBoolean",
            "Parameters.parameter[comment]"
        ],
        "{}",
        r.text()
    );
    let sr = w.app.search(&format!("ServiceRequest?_id={id}")).await;
    assert_eq!(state(&sr["entry"][0]["resource"]), "NOT_BOOKED");
    assert_eq!(sr["entry"][0]["resource"]["meta"]["versionId"], "1");
    // A code as the code of a Coding is read.
    let r = send(
        cancel,
        json!([{"name": "reason", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReferralCancellationReason", "code": "RAISED_IN_ERROR"}}, {"name": "comment", "valueString": "Entered for the wrong patient"}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state(&r.json()), "CANCELLED_REFERRAL");
    // The worklist's page size is an integer.
    let r = send(
        "ServiceRequest/$ers.worklist".into(),
        json!([{"name": "listType", "valueCode": "AWAITING_BOOKING"}, {"name": "_count", "valueString": "10"}]),
    )
    .await;
    r.assert_outcome(400, "value");
    r.assert_issue("INVALID_VALUE", "Parameters.parameter[_count].valueString");
    // The definitions say so: a slot is a Reference, or its text.
    let od = w
        .app
        .get("OperationDefinition/ers.changeAppointment")
        .await
        .json();
    let slot = od["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "slot")
        .cloned()
        .unwrap_or_default();
    assert_eq!(slot["type"], "Reference", "{od}");
    assert_eq!(slot["extension"][0]["valueUri"], "string", "{od}");
    let od = w
        .app
        .get("OperationDefinition/ers.announcements")
        .await
        .json();
    assert_eq!(od["parameter"][0]["name"], "all", "{od}");
    assert_eq!(od["parameter"][0]["type"], "boolean", "{od}");
}

/// A new patient (with this NHS number) and a routine referral of theirs to `service`, made by
/// the world's referrer: (patient id, referral id).
async fn new_patients_referral(w: &World, nhs: &str, service: &str) -> (String, String) {
    let p = w
        .app
        .create(&patient(nhs, "Newly", "Referred", "1966-06-06", "female"))
        .await;
    let mut sr = referral(w, &[service], "ROUTINE");
    sr["subject"] = json!({"reference": format!("Patient/{p}")});
    let r = w.create(&sr).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    (p, id)
}

/// An `:iterate` include never follows from what the caller may not see: another organisation
/// searching the patient is shown neither the referral nor, through it, its services.
#[actix_web::test]
async fn iterated_includes_follow_only_what_the_caller_may_see() {
    let w = world().await;
    let (p, id) = new_patients_referral(&w, NHS[5], &w.bookable).await;
    let q = format!(
        "Patient?_id={p}&_revinclude=ServiceRequest:patient&_include:iterate=ServiceRequest:performer"
    );
    let referrer = w.app.send(w.as_rc("GET", &q), None).await;
    assert_eq!(referrer.status, 200, "{}", referrer.text());
    assert_entries(
        &referrer.json(),
        &[
            format!("Patient/{p}"),
            format!("ServiceRequest/{id}"),
            format!("HealthcareService/{}", w.bookable),
        ],
    );
    let stranger = sign(&claims("021600556599", &[("REFERRING_CLINICIAN", "R68")]));
    let other = w
        .app
        .send(
            w.app
                .as_user(&stranger, "GET", &q, "REFERRING_CLINICIAN", "R68"),
            None,
        )
        .await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(entry_refs(&other.json()), vec![format!("Patient/{p}")]);
    // From a Provenance search's targets too (Provenance is served from the versions, not
    // indexed like the rest).
    let q = format!(
        "Provenance?target=ServiceRequest/{id}&_include=Provenance:target&_include:iterate=ServiceRequest:performer"
    );
    let r = w.app.send(w.as_rc("GET", &q), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_entries(
        &r.json(),
        &[
            format!("ServiceRequest/{id}"),
            format!("HealthcareService/{}", w.bookable),
        ],
    );
}

/// `:identifier` on a reference finds what points to a resource with that business identifier:
/// a patient's referrals by NHS number, a referral's appointments by UBRN.
#[actix_web::test]
async fn references_are_searched_by_the_identifier_of_what_they_point_to() {
    let w = world().await;
    let nhs = NHS[5];
    let c = crate::booking::clinic(&w, "11000").await;
    let (_, id) = new_patients_referral(&w, nhs, &c.service).await;
    let get = |q: String| {
        let w = &w;
        async move {
            let r = w.app.send(w.as_rc("GET", &q), None).await;
            assert_eq!(r.status, 200, "{q}: {}", r.text());
            match_ids(&r.json())
        }
    };
    assert_eq!(
        get(format!(
            "ServiceRequest?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}"
        ))
        .await,
        vec![id.clone()]
    );
    assert_eq!(
        get(format!("ServiceRequest?patient:identifier={nhs}")).await,
        vec![id.clone()]
    );
    assert!(get(
        "ServiceRequest?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|9990000999".into()
    )
    .await
    .is_empty());
    // A referral's appointments by its UBRN.
    let (slot, _) = crate::booking::free_slots(&w, &c.service, "ROUTINE").await[0].clone();
    let booking = w.new_referral(&[&c.service], "ROUTINE").await;
    let ubrn = w.referral_now(&booking).await["identifier"][0]["value"]
        .as_str()
        .expect("ubrn")
        .to_owned();
    let booked = w.book(&booking, &slot).await;
    assert_eq!(booked.status, 201, "{}", booked.text());
    let appointment = booked.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        get(format!("Appointment?based-on:identifier={ubrn}")).await,
        vec![appointment]
    );
    // A reference by identifier alone, to what this server does not hold (a practice
    // elsewhere), is found by the identifier it carries; one that points to a resource here is
    // found by that resource's, whichever of its types it points to.
    let ods = "https://fhir.nhs.uk/Id/ods-organization-code";
    let mut elsewhere = patient("9995550008", "Logical", "Lara", "1971-01-01", "female");
    elsewhere["generalPractitioner"] =
        json!([{"type": "Organization", "identifier": {"system": ods, "value": "Y99999"}}]);
    let elsewhere = w.app.create(&elsewhere).await;
    let practice = w
        .app
        .search(&format!("Organization?identifier={ods}|R69"))
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("R69")
        .to_owned();
    let mut here = patient("9995550016", "Literal", "Lee", "1972-02-02", "male");
    here["generalPractitioner"] = json!([{"reference": format!("Organization/{practice}")}]);
    let here = w.app.create(&here).await;
    let of_both =
        |q: &str| format!("Patient?_id={here},{elsewhere}&general-practitioner:identifier={q}");
    for (q, found) in [
        (format!("{ods}|Y99999"), &elsewhere),
        ("Y99999".to_owned(), &elsewhere),
        (format!("{ods}|R69"), &here),
        ("R69".to_owned(), &here),
    ] {
        assert_eq!(get(of_both(&q)).await, vec![found.clone()], "{q}");
    }
    assert!(get(of_both(&format!("{ods}|Y00000"))).await.is_empty());
    let mut both = get(of_both(&format!("{ods}|Y99999,{ods}|R69"))).await;
    both.sort();
    let mut expected = vec![here.clone(), elsewhere.clone()];
    expected.sort();
    assert_eq!(both, expected);
    // Beside other criteria, and at the end of a chain.
    assert_eq!(
        get(format!(
            "Patient?general-practitioner:identifier={ods}|Y99999&family=Logical"
        ))
        .await,
        vec![elsewhere.clone()]
    );
    let mut body = referral(&w, &[&c.service], "ROUTINE");
    body["subject"] = json!({"reference": format!("Patient/{here}")});
    let r = w.create(&body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let rid = r.json()["id"].as_str().expect("id").to_owned();
    let chained =
        |q: &str| format!("ServiceRequest?_id={rid}&patient.general-practitioner:identifier={q}");
    assert_eq!(get(chained(&format!("{ods}|R69"))).await, vec![rid.clone()]);
    assert!(get(chained(&format!("{ods}|Y99999"))).await.is_empty());
}

/// A new request may not say what it was converted from: `basedOn` is set by the advice's
/// `$ers.convertToReferral` alone (its search and the advice's expiry rely on it).
#[actix_web::test]
async fn a_new_request_names_no_based_on() {
    let w = world().await;
    let existing = w.new_referral(&[&w.bookable], "ROUTINE").await;
    let mut body = referral(&w, &[&w.bookable], "ROUTINE");
    body["basedOn"] = json!([{"reference": format!("ServiceRequest/{existing}")}]);
    let r = w.create(&body).await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue("FIELD_NOT_PERMITTED", "ServiceRequest.basedOn");
    assert!(r.text().contains("$ers.convertToReferral"), "{}", r.text());
    // Nothing was made.
    let b = w
        .app
        .send(
            w.as_rc(
                "GET",
                &format!("ServiceRequest?based-on=ServiceRequest/{existing}"),
            ),
            None,
        )
        .await;
    assert_eq!(b.json()["total"], 0, "{}", b.text());
}

/// e-RS A029 asks what may be done as a Task search: one Task per action, by the rule
/// `$ers.availableActions` answers with, for the current version only.
#[actix_web::test]
async fn available_actions_are_searched_as_tasks() {
    let w = world().await;
    let id = w.new_referral(&[&w.bookable], "ROUTINE").await;
    let tasks = |req: awc::ClientRequest| w.app.send(req, None);
    let codes = |bundle: &Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| {
                e["resource"]["code"]["coding"][0]["code"]
                    .as_str()
                    .expect("code")
                    .to_owned()
            })
            .collect()
    };
    let focus = format!("ServiceRequest/{id}/_history/1");
    let r = tasks(w.as_rc(
        "GET",
        &format!("Task?focus={focus}&intent=proposal&status=ready"),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let b = r.json();
    assert_eq!(b["type"], "searchset");
    let offered = w.actions(false, &id).await;
    assert!(
        offered.contains(&"CANCEL_REFERRAL".to_owned()),
        "{offered:?}"
    );
    assert_eq!(codes(&b), offered);
    assert_eq!(b["total"], offered.len());
    let sr = w
        .app
        .send(w.as_rc("GET", &format!("ServiceRequest/{id}")), None)
        .await
        .json();
    for e in b["entry"].as_array().expect("entries") {
        let t = &e["resource"];
        assert_eq!(t["resourceType"], "Task");
        assert_eq!(
            (&t["status"], &t["intent"]),
            (&json!("ready"), &json!("proposal"))
        );
        assert_eq!(t["focus"]["reference"], focus);
        assert_eq!(t["for"], sr["subject"]);
        assert_eq!(
            t["code"]["coding"][0]["system"],
            "https://fhir.nhs.uk/CodeSystem/eRS-AvailableActionsForUser"
        );
        assert!(t["code"]["coding"][0]["display"].is_string(), "{t}");
        let url = t["input"][0]["valueUrl"].as_str().expect("operation");
        match t["code"]["coding"][0]["code"].as_str() {
            Some("CANCEL_REFERRAL") => {
                assert!(
                    url.ends_with(&format!("/ServiceRequest/{id}/$ers.cancelReferral")),
                    "{url}"
                )
            }
            Some("CREATE_APPOINTMENT") => assert!(url.ends_with("/FHIR/R4/Appointment"), "{url}"),
            _ => {}
        }
        // Made for the search, not kept.
        assert!(
            e["fullUrl"]
                .as_str()
                .is_some_and(|u| u.starts_with("urn:uuid:")),
            "{e}"
        );
    }
    // The provider, who has nothing to do yet, has no Tasks; the same by POST.
    let r = tasks(w.as_spc("GET", &format!("Task?focus={focus}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(codes(&r.json()), w.actions(true, &id).await);
    assert_eq!(r.json()["total"], 0);
    let r = w
        .app
        .send(
            w.as_rc("POST", "Task/_search")
                .insert_header(("Content-Type", "application/x-www-form-urlencoded")),
            Some(format!("focus=ServiceRequest/{id}").into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(codes(&r.json()), offered);
    // Filters: an action by its code; a status no such Task has.
    let r = tasks(w.as_rc(
        "GET",
        &format!("Task?focus={focus}&code=https://fhir.nhs.uk/CodeSystem/eRS-AvailableActionsForUser|CANCEL_REFERRAL"),
    ))
    .await;
    assert_eq!(codes(&r.json()), vec!["CANCEL_REFERRAL".to_owned()]);
    let r = tasks(w.as_rc("GET", &format!("Task?focus={focus}&status=requested"))).await;
    assert_eq!(r.json()["total"], 0);
    // A version that is no longer current has none, and the outcome says which is.
    let r = w
        .op(
            false,
            &id,
            "$ers.changeShortlist",
            Some(1),
            &[("service", &w.triage)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = tasks(w.as_rc("GET", &format!("Task?focus={focus}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 0);
    assert!(r.text().contains("is at version 2, not 1"), "{}", r.text());
    let r = tasks(w.as_rc("GET", &format!("Task?focus=ServiceRequest/{id}"))).await;
    assert_eq!(codes(&r.json()), w.actions(false, &id).await);
    assert!(r.json()["entry"][0]["resource"]["focus"]["reference"]
        .as_str()
        .is_some_and(|f| f.ends_with("/_history/2")));
    // A referral another practice's referrer may not see is as one that does not exist.
    let other_gp = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    for (token, org, target) in [
        (other_gp.as_str(), "R68", id.as_str()),
        (w.rc.as_str(), "R69", "r.unknown"),
    ] {
        let r = tasks(w.app.as_user(
            token,
            "GET",
            &format!("Task?focus=ServiceRequest/{target}"),
            "REFERRING_CLINICIAN",
            org,
        ))
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["total"], 0);
        assert!(r
            .text()
            .contains(&format!("No ServiceRequest/{target} that you may see")));
    }
    // Bad searches, each named.
    let r = tasks(w.as_rc("GET", "Task?status=ready")).await;
    r.assert_outcome(400, "invalid");
    r.assert_issue("MISSING_VALUE", "focus");
    let r = tasks(w.as_rc("GET", "Task?focus=Appointment/1")).await;
    r.assert_issue("INVALID_VALUE", "focus");
    let r = tasks(w.as_rc(
        "GET",
        &format!("Task?focus=ServiceRequest/{id}&focus=ServiceRequest/{id}"),
    ))
    .await;
    r.assert_issue("TOO_MANY_ITEMS", "focus");
    let r = tasks(w.as_rc("GET", &format!("Task?focus=ServiceRequest/{id}&colour=red"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .text()
        .contains("Unknown search parameters ignored: colour"));
    let r = tasks(
        w.as_rc("GET", &format!("Task?focus=ServiceRequest/{id}&colour=red"))
            .insert_header(("Prefer", "handling=strict")),
    )
    .await;
    r.assert_outcome(400, "not-supported");
    // Nothing to read by id.
    let r = tasks(w.as_rc("GET", "Task/anything")).await;
    r.assert_outcome(404, "not-found");
    // A referral search brings each match's Tasks with _revinclude=Task:focus, beside its
    // appointments (the e-RS Patient Care API's A001 asks so).
    let r = tasks(w.as_rc(
        "GET",
        &format!("ServiceRequest?_id={id}&_revinclude=Appointment:based-on&_revinclude=Task:focus"),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let included: Vec<String> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| {
            assert_eq!(
                e["resource"]["focus"]["reference"],
                format!("ServiceRequest/{id}/_history/2")
            );
            e["resource"]["code"]["coding"][0]["code"]
                .as_str()
                .expect("a Task")
                .to_owned()
        })
        .collect();
    assert_eq!(included, w.actions(false, &id).await);
    assert_eq!(b["total"], 1);
    // A worklist brings its referrals' Tasks the same way: the list and what may be done to
    // each, in one call.
    let r = tasks(w.as_rc(
        "GET",
        "ServiceRequest/$ers.worklist?listType=AWAITING_BOOKING&_count=100&_revinclude=Task:focus",
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let listed = match_ids(&b);
    assert!(listed.contains(&id), "{listed:?}");
    let focused: std::collections::BTreeSet<String> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "include" && e["resource"]["resourceType"] == "Task")
        .filter_map(|e| e["resource"]["focus"]["reference"].as_str())
        .map(|f| {
            f.split("/_history")
                .next()
                .unwrap_or(f)
                .trim_start_matches("ServiceRequest/")
                .to_owned()
        })
        .collect();
    assert!(focused.contains(&id), "{focused:?}");
    assert!(
        focused.iter().all(|f| listed.contains(f)),
        "{focused:?} {listed:?}"
    );
    for (query, what) in [
        (
            "ServiceRequest?_revinclude:iterate=Task:focus",
            "not followed with :iterate",
        ),
        (
            "Patient?_revinclude=Task:focus",
            "only a ServiceRequest search",
        ),
        ("ServiceRequest?_revinclude=Task:owner", "by its focus"),
    ] {
        let r = tasks(w.as_rc("GET", query)).await;
        let d = r.assert_outcome(400, "invalid");
        assert!(d.contains(what), "{query}: {d}");
    }
}

/// The day in the UK at an instant, as a patient counts it.
fn uk_day(instant: &str) -> chrono::NaiveDate {
    let at: jiff::Timestamp = instant.parse().expect("an instant");
    let day = at
        .to_zoned(jiff::tz::TimeZone::get("Europe/London").expect("the UK's time zone"))
        .date();
    chrono::NaiveDate::from_ymd_opt(
        day.year().into(),
        u32::try_from(day.month()).expect("month"),
        u32::try_from(day.day()).expect("day"),
    )
    .expect("a date")
}

/// A page's `_revinclude=Task:focus` includes at most 1,000 Tasks (`MAX_INCLUDED`): all the
/// Tasks of as many of its matches, in page order, as fit, and a note saying so.
#[actix_web::test]
async fn a_page_includes_at_most_a_thousand_tasks() {
    let w = world().await;
    // A patient of their own, with nothing but these referrals.
    let (p, first) = new_patients_referral(&w, NHS[5], &w.bookable).await;
    let each = w.actions(false, &first).await.len();
    assert!(each > 1, "{each}");
    let fit = 1000 / each;
    let mut body = referral(&w, &[&w.bookable], "ROUTINE");
    body["subject"] = json!({"reference": format!("Patient/{p}")});
    for _ in 0..fit + 1 {
        let r = w.create(&body).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let query = format!("ServiceRequest?subject=Patient/{p}&_count=1000&_revinclude=Task:focus");
    let r = w.app.send(w.as_rc("GET", &query), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let entries = b["entry"].as_array().expect("entries");
    let of_mode = |mode: &str| -> Vec<&Value> {
        entries
            .iter()
            .filter(|e| e["search"]["mode"] == mode)
            .map(|e| &e["resource"])
            .collect()
    };
    let matches: Vec<String> = of_mode("match")
        .iter()
        .map(|m| format!("ServiceRequest/{}", m["id"].as_str().expect("id")))
        .collect();
    assert_eq!(matches.len(), fit + 2);
    let tasks = of_mode("include");
    assert!(tasks.iter().all(|t| t["resourceType"] == "Task"));
    assert_eq!(tasks.len(), fit * each);
    for (n, focus) in matches.iter().enumerate() {
        let its = tasks
            .iter()
            .filter(|t| {
                t["focus"]["reference"]
                    .as_str()
                    .is_some_and(|r| r == focus || r.starts_with(&format!("{focus}/_history/")))
            })
            .count();
        assert_eq!(its, if n < fit { each } else { 0 }, "{focus}, match {n}");
    }
    let note = of_mode("outcome")
        .iter()
        .flat_map(|o| o["issue"].as_array().into_iter().flatten())
        .filter_map(|i| i["diagnostics"].as_str())
        .find(|d| d.contains("Tasks"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        note.contains(&format!("The Tasks of {fit} of the {} referrals", fit + 2))
            && note.contains("at most 1000 Tasks"),
        "{note}"
    );
}

/// The bank holidays of England and Wales, 2026 to 2030 (gov.uk's list, and the same rules
/// after it), and the day off the deferral test's server is given (`ERS_BANK_HOLIDAYS`).
const DAYS_OFF: [&str; 41] = [
    "2026-01-01",
    "2026-04-03",
    "2026-04-06",
    "2026-05-04",
    "2026-05-25",
    "2026-08-31",
    "2026-12-25",
    "2026-12-28",
    "2027-01-01",
    "2027-03-26",
    "2027-03-29",
    "2027-05-03",
    "2027-05-31",
    "2027-08-30",
    "2027-12-27",
    "2027-12-28",
    "2028-01-03",
    "2028-04-14",
    "2028-04-17",
    "2028-05-01",
    "2028-05-29",
    "2028-08-28",
    "2028-12-25",
    "2028-12-26",
    "2029-01-01",
    "2029-03-30",
    "2029-04-02",
    "2029-05-07",
    "2029-05-28",
    "2029-08-27",
    "2029-12-25",
    "2029-12-26",
    "2030-01-01",
    "2030-04-19",
    "2030-04-22",
    "2030-05-06",
    "2030-05-27",
    "2030-08-26",
    "2030-12-25",
    "2030-12-26",
    EXTRA_DAY_OFF,
];
const EXTRA_DAY_OFF: &str = "2027-01-08";

/// How many working days come after `from`, up to and including `to`: weekdays not in
/// `DAYS_OFF`.
fn working_days_after(from: chrono::NaiveDate, to: chrono::NaiveDate) -> usize {
    use chrono::Datelike;
    from.iter_days()
        .skip(1)
        .take_while(|d| *d <= to)
        .filter(|d| d.weekday().num_days_from_monday() < 5)
        .filter(|d| !DAYS_OFF.contains(&d.to_string().as_str()))
        .count()
}

/// The e-RS Patient Care API shows a deferred referral with a Task for its provider: a
/// `Workflow-Code`, the service that owns it, and the date the patient is to be contacted by
/// (the priority's working days from the deferral). It lasts as long as the state does.
#[actix_web::test]
async fn a_deferred_referral_is_a_task_for_its_provider_until_it_is_booked() {
    // A day off beyond the bank holidays, as an operator adds one announced after a release.
    let extra = chrono::NaiveDate::parse_from_str(EXTRA_DAY_OFF, "%Y-%m-%d").expect("date");
    let w = world_with(ers_api::config::Settings {
        seed: ers_api::config::SeedMode::Sandbox,
        rate_limit_per_sec: 0,
        working_days: ers_api::domain::calendar::WorkingDays::with_days_off([extra]),
        ..ers_api::config::Settings::default()
    })
    .await;
    let c = crate::booking::clinic(&w, "11000").await;
    let id = w.new_referral(&[&c.service], "URGENT").await;
    let deferral = json!({
        "resourceType": "Appointment",
        "status": "proposed",
        "basedOn": [{"reference": format!("ServiceRequest/{id}")}],
        "reasonCode": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReviewReason", "code": "BOOKING_ATTEMPT_PROBLEM"}]}],
        "participant": [{"actor": {"reference": format!("HealthcareService/{}", c.service)}, "status": "needs-action"}],
    });
    let r = w.rc("POST", "Appointment", None, Some(&deferral)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let sr = w.referral_now(&id).await;
    assert_eq!(state(&sr), "DEFERRED_TO_PROVIDER");
    let deferred_at = sr["meta"]["lastUpdated"]
        .as_str()
        .expect("lastUpdated")
        .to_owned();
    // The state records when it began.
    assert_eq!(state_since(&sr), deferred_at, "{sr}");
    let instant = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("an instant")).expect("instant")
    };
    let tasks = async |query: String| {
        let r = w.app.send(w.as_rc("GET", &query), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let deferrals = |b: &Value, mode: &str| -> Vec<Value> {
        b["entry"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|e| e["search"]["mode"] == mode)
            .map(|e| e["resource"].clone())
            .filter(|t| {
                t["code"]["coding"][0]["system"] == "https://fhir.nhs.uk/CodeSystem/Workflow-Code"
            })
            .collect()
    };
    // The provider's Task beside the caller's actions.
    let b = tasks(format!("Task?focus=ServiceRequest/{id}")).await;
    let found = deferrals(&b, "match");
    assert_eq!(found.len(), 1, "{b}");
    let t = &found[0];
    assert_eq!(
        t["code"]["coding"][0]["code"], "APPOINTMENT_DEFERRAL",
        "{t}"
    );
    assert!(t["code"]["coding"][0]["display"].is_string(), "{t}");
    assert_eq!(
        (&t["status"], &t["intent"]),
        (&json!("requested"), &json!("order"))
    );
    assert_eq!(t["focus"]["reference"], format!("ServiceRequest/{id}"));
    assert_eq!(t["for"], sr["subject"]);
    assert_eq!(
        t["owner"]["reference"],
        format!("HealthcareService/{}", c.service)
    );
    assert_eq!(instant(&t["authoredOn"]), instant(&json!(deferred_at)));
    // URGENT: contacted within 10 working days (ROUTINE 40, TWO_WEEK_WAIT 5).
    let by = |t: &Value| {
        chrono::NaiveDate::parse_from_str(
            t["restriction"]["period"]["end"]
                .as_str()
                .expect("contact-by date"),
            "%Y-%m-%d",
        )
        .expect("a date")
    };
    let contact_by = by(t);
    assert_eq!(
        working_days_after(uk_day(&deferred_at), contact_by),
        10,
        "{t}"
    );
    assert_eq!(
        working_days_after(contact_by.pred_opt().expect("day"), contact_by),
        1,
        "a working day: {t}"
    );
    // A029's filters leave it out; its own find it alone.
    let b = tasks(format!(
        "Task?focus=ServiceRequest/{id}&intent=proposal&status=ready"
    ))
    .await;
    assert!(deferrals(&b, "match").is_empty(), "{b}");
    assert!(b["total"].as_u64().is_some_and(|n| n > 0), "{b}");
    for filter in [
        "code=APPOINTMENT_DEFERRAL",
        "code=https://fhir.nhs.uk/CodeSystem/Workflow-Code|",
        "intent=order&status=requested",
    ] {
        let b = tasks(format!("Task?focus=ServiceRequest/{id}&{filter}")).await;
        assert_eq!(b["total"], 1, "{filter}: {b}");
        assert_eq!(deferrals(&b, "match").len(), 1, "{filter}: {b}");
    }
    // A later version in the same state keeps the date it was deferred on.
    let v: i64 = sr["meta"]["versionId"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("version");
    let r = w
        .op(
            false,
            &id,
            "$ers.updateAdditionalRequirements",
            Some(v),
            &[("transport", "Patient transport service")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let later = w.referral_now(&id).await;
    assert_ne!(later["meta"]["lastUpdated"], json!(deferred_at));
    assert_eq!(state_since(&later), deferred_at, "{later}");
    // The referral search of the Patient Care API (A001) includes it.
    let b = tasks(format!(
        "ServiceRequest?_id={id}&_revinclude=Appointment:based-on&_revinclude=Task:focus"
    ))
    .await;
    let included = deferrals(&b, "include");
    assert_eq!(included.len(), 1, "{b}");
    assert_eq!(
        instant(&included[0]["authoredOn"]),
        instant(&json!(deferred_at))
    );
    assert_eq!(by(&included[0]), contact_by);
    // The Task reads the start the referral records (an earlier one written behind the
    // server's back shows through)...
    let stored_since = |at: &str| format!(r#",{{"url":"since","valueDateTime":"{at}"}}"#);
    let earlier = "2026-01-05T09:30:00Z";
    let authored = async |expected: &str| {
        let b = tasks(format!("Task?focus=ServiceRequest/{id}")).await;
        let found = deferrals(&b, "match");
        assert_eq!(found.len(), 1, "{b}");
        assert_eq!(instant(&found[0]["authoredOn"]), instant(&json!(expected)));
    };
    let in_current = |from: &str, to: &str| {
        format!(
            "UPDATE resources SET content = REPLACE(content, '{from}', '{to}') \
             WHERE res_type = 'ServiceRequest' AND id = '{id}'"
        )
    };
    w.app.execute_sql(&in_current(
        &stored_since(&deferred_at),
        &stored_since(earlier),
    ));
    authored(earlier).await;
    // The contact-by date skips bank holidays and the server's days off: 10 working days from
    // Wednesday 23 December 2026 pass Christmas, Boxing Day's substitute (Monday 28), New
    // Year's Day and the extra Friday 8 January, to Tuesday 12 January (Wednesday 6 January
    // counting weekends only).
    let christmas = "2026-12-23T10:00:00Z";
    w.app.execute_sql(&in_current(
        &stored_since(earlier),
        &stored_since(christmas),
    ));
    let b = tasks(format!("Task?focus=ServiceRequest/{id}")).await;
    let found = deferrals(&b, "match");
    assert_eq!(found.len(), 1, "{b}");
    assert_eq!(by(&found[0]).to_string(), "2027-01-12", "{b}");
    w.app.execute_sql(&in_current(
        &stored_since(christmas),
        &stored_since(earlier),
    ));
    // ...and one stored before it was recorded finds it in the referral's history.
    w.app.execute_sql(&in_current(&stored_since(earlier), ""));
    authored(&deferred_at).await;
    // A later version of such a referral in the same state does not make one up.
    let legacy = w.referral_now(&id).await;
    assert_eq!(state_since(&legacy), "");
    let r = w
        .op(
            false,
            &id,
            "$ers.updateAdditionalRequirements",
            legacy["meta"]["versionId"]
                .as_str()
                .and_then(|v| v.parse().ok()),
            &[("transport", "None needed")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state_since(&w.referral_now(&id).await), "");
    authored(&deferred_at).await;
    // Booked by the provider: nothing left to do for it, and the new state's own start.
    let slot = crate::booking::free_slots(&w, &c.service, "URGENT").await[0]
        .0
        .clone();
    let r = w.provider_books(&c, &id, &slot).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let booked = w.referral_now(&id).await;
    assert_eq!(state(&booked), "BOOKED");
    assert_eq!(
        json!(state_since(&booked)),
        booked["meta"]["lastUpdated"],
        "{booked}"
    );
    let b = tasks(format!("Task?focus=ServiceRequest/{id}")).await;
    assert!(deferrals(&b, "match").is_empty(), "{b}");

    // With a triage service: its review, ROUTINE's 40 working days.
    let id = w.new_referral(&[&w.triage], "ROUTINE").await;
    let r = w
        .op(
            false,
            &id,
            "$ers.sendForTriage",
            Some(1),
            &[("service", &w.triage)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent_at = r.json()["meta"]["lastUpdated"]
        .as_str()
        .expect("lastUpdated")
        .to_owned();
    let b = tasks(format!(
        "Task?focus=ServiceRequest/{id}&code=TRIAGE_DEFERRAL"
    ))
    .await;
    let found = deferrals(&b, "match");
    assert_eq!(found.len(), 1, "{b}");
    assert_eq!(
        found[0]["owner"]["reference"],
        format!("HealthcareService/{}", w.triage)
    );
    assert_eq!(
        working_days_after(uk_day(&sent_at), by(&found[0])),
        40,
        "{b}"
    );
}

/// `Patient/{id}/$everything`: the patient and the compartment the caller may see, with what it
/// refers to; another practice sees the patient but not the referral.
#[actix_web::test]
async fn everything_about_a_patient_is_what_the_caller_may_see() {
    let w = world().await;
    // A service with free slots (the sandbox's 11000).
    let clinic = crate::booking::clinic(&w, "11000").await.service;
    let (p, first) = new_patients_referral(&w, NHS[5], &clinic).await;
    let mut sr = referral(&w, &[&w.triage], "ROUTINE");
    sr["subject"] = json!({"reference": format!("Patient/{p}")});
    let r = w.create(&sr).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let second = r.json()["id"].as_str().expect("id").to_owned();
    // The first is booked: an appointment of the patient's too.
    let (slot, slot_start) = crate::booking::free_slots(&w, &clinic, "ROUTINE").await[0].clone();
    let mut a = crate::booking::appointment(&first, &slot);
    a["participant"] =
        json!([{"actor": {"reference": format!("Patient/{p}")}, "status": "accepted"}]);
    let r = w.rc("POST", "Appointment", None, Some(&a)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let booked = r.json()["id"].as_str().expect("id").to_owned();
    let everything = |req: awc::ClientRequest| w.app.send(req, None);
    let entries = mode_refs;
    let path = format!("Patient/{p}/$everything");
    let r = everything(w.as_rc("GET", &path)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "searchset");
    let matches = entries(&b, "match");
    // The patient first, then the compartment.
    assert_eq!(matches[0], format!("Patient/{p}"));
    let mut rest = matches[1..].to_vec();
    rest.sort();
    let mut wanted = vec![
        format!("ServiceRequest/{first}"),
        format!("ServiceRequest/{second}"),
        format!("Appointment/{booked}"),
    ];
    wanted.sort();
    assert_eq!(rest, wanted);
    assert_eq!(b["total"], 4);
    let included = entries(&b, "include");
    for wanted in [
        format!("HealthcareService/{clinic}"),
        format!("HealthcareService/{}", w.triage),
        format!("PractitionerRole/{}", w.role),
    ] {
        assert!(included.contains(&wanted), "{wanted} not in {included:?}");
    }
    // Each resource once, though both referrals name the requester.
    let mut all = matches.clone();
    all.extend(included);
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "{all:?}");
    // Another practice sees the patient, not the referrals.
    let other_gp = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    let r = everything(
        w.app
            .as_user(&other_gp, "GET", &path, "REFERRING_CLINICIAN", "R68"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(entries(&r.json(), "match"), [format!("Patient/{p}")]);
    // Pages of `_count` matches: the patient, then each referral, then the appointment (a page
    // starting at a later type), each page with what its match names; `total` counts them all,
    // and the last page has no next link.
    let mut pages = Vec::new();
    let mut next = Some(format!("{path}?_count=1"));
    while let Some(q) = next.take() {
        let r = everything(w.as_rc("GET", &q)).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let b = r.json();
        assert_eq!(b["total"], 4, "{b}");
        assert_eq!(entries(&b, "match").len(), 1, "{b}");
        if entries(&b, "match")[0].starts_with("ServiceRequest/") {
            assert!(
                entries(&b, "include").contains(&format!("PractitionerRole/{}", w.role)),
                "{b}"
            );
        }
        pages.push(entries(&b, "match")[0].clone());
        next = link(&b, "next").map(|l| {
            assert!(l.contains("_cursor=") && l.contains("_count=1"), "{l}");
            l.split("/FHIR/R4/").nth(1).expect("relative").to_owned()
        });
        assert!(pages.len() <= 4, "{pages:?}");
    }
    assert_eq!(pages[0], format!("Patient/{p}"));
    assert_eq!(pages[3], format!("Appointment/{booked}"));
    let mut compartment = pages[1..].to_vec();
    compartment.sort();
    assert_eq!(compartment, wanted);
    // _type, _count and a cursor, then _since, also by POST.
    let r = everything(w.as_rc("GET", &format!("{path}?_type=ServiceRequest&_count=1"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(
        (b["total"].clone(), entries(&b, "match").len()),
        (json!(2), 1),
        "{b}"
    );
    let first_page = entries(&b, "match")[0].clone();
    let next = link(&b, "next").expect("a next page");
    assert!(next.contains("_cursor=ServiceRequest%3A1"), "{next}");
    let r = everything(w.as_rc(
        "GET",
        &format!("{path}?_type=ServiceRequest&_count=1&_cursor=ServiceRequest:1"),
    ))
    .await;
    let b = r.json();
    assert_eq!(entries(&b, "match").len(), 1, "{b}");
    assert_ne!(entries(&b, "match")[0], first_page);
    assert_eq!(link(&b, "next"), None, "{b}");
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"},
        {"name": "_since", "valueInstant": "2999-01-01T00:00:00Z"}]});
    let r = w
        .app
        .send(
            w.as_rc("POST", &path)
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(body.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 0);
    // `start` and `end` bound the care dates: the appointment's day (a weekday after today)
    // holds the appointment, not the referrals made today; the patient is always there.
    let day = &slot_start[..10];
    let r = everything(w.as_rc("GET", &format!("{path}?start={day}&end={day}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(
        entries(&b, "match"),
        [format!("Patient/{p}"), format!("Appointment/{booked}")],
        "{b}"
    );
    assert_eq!(b["total"], 2);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let r = everything(w.as_rc(
        "GET",
        &format!("{path}?_type=ServiceRequest,Appointment&end={today}"),
    ))
    .await;
    let mut found = entries(&r.json(), "match");
    found.sort();
    assert_eq!(
        found,
        {
            let mut v = vec![
                format!("ServiceRequest/{first}"),
                format!("ServiceRequest/{second}"),
            ];
            v.sort();
            v
        },
        "{}",
        r.text()
    );
    // Bad inputs, each named; an unknown patient is 404.
    let r = everything(w.as_rc("GET", &format!("{path}?_type=Slot"))).await;
    r.assert_outcome(400, "invalid");
    r.assert_issue("INVALID_VALUE", "_type");
    for (query, wrong) in [
        ("start=2026-13", "start"),
        ("end=tomorrow", "end"),
        ("start=2027&end=2026-12", "start"),
        ("from=2020", "from"),
    ] {
        let r = everything(w.as_rc("GET", &format!("{path}?{query}"))).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        let (_, expression) = r.issue_at();
        assert_eq!(expression, wrong, "{query}: {}", r.text());
    }
    let r = everything(w.as_rc("GET", &format!("{path}?_since=yesterday"))).await;
    r.assert_issue("INVALID_VALUE", "_since");
    let r = everything(w.as_rc("GET", &format!("{path}?_count=0"))).await;
    r.assert_issue("INVALID_VALUE", "_count");
    for cursor in [
        "_cursor=Slot:0",
        "_cursor=ServiceRequest:-1",
        "_cursor=ServiceRequest",
        "_type=Patient&_cursor=ServiceRequest:0",
    ] {
        let r = everything(w.as_rc("GET", &format!("{path}?{cursor}"))).await;
        r.assert_outcome(400, "invalid");
        r.assert_issue("INVALID_VALUE", "_cursor");
    }
    everything(w.as_rc("GET", "Patient/no-such-patient/$everything"))
        .await
        .assert_outcome(404, "not-found");
}

/// Reverse chains nest: patients with a referral that has a booked appointment. Every level is
/// narrowed to what the caller may see.
#[actix_web::test]
async fn reverse_chains_nest_and_stay_within_what_the_caller_may_see() {
    let w = world().await;
    let q = |status: &str| {
        format!(
            "Patient?_id={}&_has:ServiceRequest:patient:_has:Appointment:based-on:status={status}&_summary=count",
            w.patient
        )
    };
    let total = |req: awc::ClientRequest| {
        let app = &w.app;
        async move {
            let r = app.send(req, None).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["total"].clone()
        }
    };
    assert_eq!(total(w.as_rc("GET", &q("booked"))).await, 1);
    assert_eq!(total(w.as_rc("GET", &q("entered-in-error"))).await, 0);
    // Another practice sees the patient, but none of the referrals behind the match.
    let other_gp = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    assert_eq!(
        total(
            w.app
                .as_user(&other_gp, "GET", &q("booked"), "REFERRING_CLINICIAN", "R68")
        )
        .await,
        0
    );
    // Four levels are more than are followed.
    let deep = "Patient?_has:ServiceRequest:patient:_has:Appointment:based-on:_has:ServiceRequest:based-on:_has:Appointment:based-on:status=booked";
    let d = w
        .app
        .send(w.as_rc("GET", deep), None)
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("at most 3 levels of _has"), "{d}");
}

/// e-RS A016 also sends a referral to triage; here that is `$ers.sendForTriage`, which an
/// appointment request naming a triage service is pointed to.
#[actix_web::test]
async fn an_appointment_for_a_triage_service_points_to_send_for_triage() {
    let w = world().await;
    let id = w.new_referral(&[&w.triage, &w.bookable], "URGENT").await;
    let body = json!({
        "resourceType": "Appointment",
        "status": "proposed",
        "basedOn": [{"reference": format!("ServiceRequest/{id}")}],
        "reasonCode": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReviewReason", "code": "NO_SLOTS_AT_SERVICE"}]}],
        "participant": [{"actor": {"reference": format!("HealthcareService/{}", w.triage)}, "status": "accepted"}],
    });
    let r = w
        .app
        .send(
            w.as_rc("POST", "Appointment")
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(body.to_string().into_bytes()),
        )
        .await;
    let d = r.assert_outcome(422, "business-rule");
    r.assert_issue("INAPPROPRIATE_VALUE", "Appointment.participant");
    assert!(
        d.contains(&format!("POST ServiceRequest/{id}/$ers.sendForTriage")),
        "{d}"
    );
}

/// A reference that names its target only by a business identifier it holds (an NHS number, an
/// SDS role profile id, an e-RS service id), as e-RS clients send them, is made literal on
/// write, keeping the identifier; one that names nothing here stays logical, and where the
/// referral needs a patient the answer says which identifier was not found.
#[actix_web::test]
async fn logical_references_are_resolved_to_what_holds_their_identifier() {
    let w = world().await;
    let by_id =
        |system: &str, value: &str| json!({"identifier": {"system": system, "value": value}});
    let mut sr = referral(&w, &[], "ROUTINE");
    sr["subject"] = by_id("https://fhir.nhs.uk/Id/nhs-number", "9912003888");
    sr["subject"]["type"] = json!("http://hl7.org/fhir/StructureDefinition/Patient");
    sr["requester"] = by_id("https://fhir.nhs.uk/Id/sds-role-profile-id", "100000000001");
    sr["performer"] = json!([by_id("https://fhir.nhs.uk/Id/ers-service", "11000")]);
    // `$validate` resolves them as a write does: no error.
    let r = w
        .app
        .send(
            w.as_rc("POST", "ServiceRequest/$validate"),
            Some(sr.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("\"severity\":\"error\""), "{}", r.text());
    let r = w.create(&sr).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json();
    assert_eq!(
        made["subject"]["reference"],
        format!("Patient/{}", w.patient)
    );
    assert_eq!(made["subject"]["identifier"]["value"], "9912003888");
    assert_eq!(
        made["requester"]["reference"],
        format!("PractitionerRole/{}", w.role)
    );
    assert_eq!(made["performer"][0]["reference"], "HealthcareService/11000");
    // Found by its patient like any other referral.
    let id = made["id"].as_str().expect("id");
    let found = w
        .app
        .search(&format!(
            "ServiceRequest?patient=Patient/{}&_id={id}",
            w.patient
        ))
        .await;
    assert_eq!(found["total"], 1, "{found}");
    // Booked as e-RS A016 names its participants, the service and the patient by identifier:
    // the booking sets them from the referral and the slot.
    let (slot, _) = crate::booking::free_slots(&w, "11000", "ROUTINE").await[0].clone();
    let mut a = crate::booking::appointment(id, &slot);
    a["participant"] = json!([
        {"actor": by_id("https://fhir.nhs.uk/Id/ers-service", "11000"), "status": "accepted"},
        {"actor": by_id("https://fhir.nhs.uk/Id/nhs-number", "9912003888"), "status": "accepted"}
    ]);
    let r = w.rc("POST", "Appointment", None, Some(&a)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let booked = r.json();
    let actors: Vec<&str> = booked["participant"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["actor"]["reference"].as_str())
        .collect();
    assert!(
        actors.contains(&"HealthcareService/11000")
            && actors.contains(&format!("Patient/{}", w.patient).as_str()),
        "{booked}"
    );

    // A `type` that is not the identifier's owner resolves nothing.
    let mut typed = sr.clone();
    typed["subject"]["type"] = json!("Practitioner");
    let r = w.create(&typed).await;
    assert_eq!(r.status, 422, "{}", r.text());
    // An NHS number no patient here has: 422 naming the subject and the number.
    let mut unknown = sr.clone();
    unknown["subject"] = by_id("https://fhir.nhs.uk/Id/nhs-number", NHS[4]);
    let r = w.create(&unknown).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let (_, at) = r.issue_at();
    assert_eq!(at, "ServiceRequest.subject");
    assert!(r.text().contains(NHS[4]), "{}", r.text());
    // A service id no service here has, likewise.
    let mut unknown = sr.clone();
    unknown["performer"] = json!([by_id("https://fhir.nhs.uk/Id/ers-service", "99999")]);
    let r = w.create(&unknown).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.issue_at().1, "ServiceRequest.performer[0]");
    assert!(r.text().contains("ers-service|99999"), "{}", r.text());

    // A patient's link to a record here becomes literal (and protects it); one to a record
    // elsewhere stays logical.
    let mut linked = patient(NHS[5], "Logical", "Lou", "1975-05-05", "male");
    linked["link"] = json!([
        {"other": by_id("https://fhir.nhs.uk/Id/nhs-number", "9912003888"), "type": "seealso"},
        {"other": by_id("https://fhir.nhs.uk/Id/nhs-number", NHS[4]), "type": "seealso"}
    ]);
    let r = w.app.post_json("Patient", &linked).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json();
    assert_eq!(
        p["link"][0]["other"]["reference"],
        format!("Patient/{}", w.patient)
    );
    assert!(p["link"][1]["other"].get("reference").is_none(), "{p}");
    let b = w
        .app
        .search(&format!("Patient?link=Patient/{}", w.patient))
        .await;
    assert_eq!(
        match_ids(&b),
        vec![p["id"].as_str().expect("id").to_owned()]
    );

    // A reference with both must agree: the sandbox patient with this new patient's NHS number
    // is 422 naming both; with their own, it is written as sent.
    let mut both = referral(&w, &["11000"], "ROUTINE");
    both["subject"]["identifier"] =
        json!({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS[5]});
    // `$validate` says so in its outcome.
    let r = w
        .app
        .send(
            w.as_rc("POST", "ServiceRequest/$validate"),
            Some(both.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["issue"]
            .as_array()
            .expect("issues")
            .iter()
            .any(|i| i["severity"] == "error"
                && i["expression"][0] == "ServiceRequest.subject.identifier"),
        "{}",
        r.text()
    );
    let r = w.create(&both).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.issue_at().1, "ServiceRequest.subject.identifier");
    let d = r.text();
    assert!(
        d.contains(NHS[5])
            && d.contains(&format!("Patient/{}", w.patient))
            && d.contains(p["id"].as_str().expect("id")),
        "{d}"
    );
    both["subject"]["identifier"]["value"] = json!("9912003888");
    let r = w.create(&both).await;
    assert_eq!(r.status, 201, "{}", r.text());

    // In a transaction too: a patient whose practice is named by its ODS code.
    let practice = w
        .app
        .search("Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|R69")
        .await;
    let practice = practice["entry"][0]["resource"]["id"]
        .as_str()
        .expect("R69")
        .to_owned();
    let mut registered = patient(NHS[4], "Bundled", "Bea", "1982-02-02", "female");
    registered["generalPractitioner"] =
        json!([by_id("https://fhir.nhs.uk/Id/ods-organization-code", "R69")]);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5d7c8a55-0000-4000-8000-000000000001", "resource": registered,
         "request": {"method": "POST", "url": "Patient"}}
    ]});
    let r = w
        .app
        .send(
            w.app
                .as_user(&w.rc, "POST", "/FHIR/R4", "REFERRING_CLINICIAN", "R69")
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(bundle.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = w
        .app
        .search(&format!("Patient?identifier={}", NHS[4]))
        .await;
    assert_eq!(
        b["entry"][0]["resource"]["generalPractitioner"][0]["reference"],
        format!("Organization/{practice}"),
        "{b}"
    );
}

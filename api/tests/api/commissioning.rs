//! Commissioning rules: a referral follows the rules of one commissioner (the patient's GP
//! practice's, else the referrer's, unless the referrer names one), and may use only the
//! services commissioned for it: in the Directory of Services search, on the shortlist, in an
//! A&G request and in the slot search (`NHSD-eRS-Comm-Rule-Org`). Against the sandbox data:
//! R69 is part of QZN, R68 of QZS, and service 60000 is commissioned by QZS alone.

use crate::booking::clinic;
use crate::helpers::*;
use crate::referrals::{referral, world, World, UBRN};
use serde_json::{json, Value};

const COMMISSIONING: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-CommissioningRuleOrganisation";
const COMMISSIONED_BY: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-CommissionedBy";
const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const SEARCH: &str = "HealthcareService/$ers.searchHealthcareServicesForPatient";
/// The sandbox patients: Hannah (GP R69, so QZN) and Terry (GP R68, so QZS).
const HANNAH: &str = "9912003888";
const TERRY: &str = "9462979626";

fn commissioning_of(r: &Value) -> Option<String> {
    r["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == COMMISSIONING)
        .map(|e| {
            assert_eq!(e["valueIdentifier"]["system"], ODS_SYSTEM, "{e}");
            e["valueIdentifier"]["value"]
                .as_str()
                .expect("an ODS code")
                .to_owned()
        })
}

fn named(ods: &str) -> Value {
    json!({"url": COMMISSIONING, "valueIdentifier": {"system": ODS_SYSTEM, "value": ods}})
}

/// The service ids a patient-centred search finds (routine, the specialty given), and what
/// its outcome says.
async fn offered(
    w: &World,
    nhs: &str,
    specialty: &str,
    extra: &[(&str, &str)],
) -> (Vec<String>, String) {
    let mut q = format!(
        "{SEARCH}?patient={nhs}&priority=ROUTINE&specialty={specialty}&ageAndGenderAppropriate=false&_count=100"
    );
    for (k, v) in extra {
        q.push_str(&format!("&{k}={v}"));
    }
    let b = w.app.search(&q).await;
    let outcome = b["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "outcome")
        .map(|e| e["resource"].to_string())
        .collect();
    (match_ids(&b), outcome)
}

async fn slots_seen(w: &World, service: &str, header: Option<&str>) -> Reply {
    let mut r = w.as_rc(
        "GET",
        &format!("Slot?schedule.actor:HealthcareService={service}&status=free"),
    );
    if let Some(h) = header {
        r = r.insert_header(("NHSD-eRS-Comm-Rule-Org", h));
    }
    w.app.send(r, None).await
}

#[actix_web::test]
async fn a_referral_may_use_only_the_services_commissioned_for_it() {
    let w = world().await;
    let south = clinic(&w, "60000").await;
    let service = w
        .app
        .get(&format!("HealthcareService/{}", south.service))
        .await
        .json();
    let specialty = service["specialty"][0]["coding"][0]["code"]
        .as_str()
        .expect("specialty")
        .to_owned();

    // The Directory of Services search: Hannah's GP practice is part of QZN, so the QZS-only
    // service is not offered to her, and the outcome says whose rules chose the services.
    let (found, said) = offered(&w, HANNAH, &specialty, &[]).await;
    assert!(!found.is_empty(), "open services are offered");
    assert!(!found.contains(&south.service), "{found:?}");
    assert!(said.contains("QZN") && said.contains("R69"), "{said}");
    assert!(said.contains("NHSD-eRS-Comm-Rule-Org"), "{said}");
    // Terry's practice (R68) is part of QZS: offered to him.
    let (found, said) = offered(&w, TERRY, &specialty, &[]).await;
    assert!(found.contains(&south.service), "{found:?}");
    assert!(said.contains("QZS") && said.contains("R68"), "{said}");
    // Named, the commissioner decides, and the outcome has nothing to say of it.
    let (found, said) = offered(
        &w,
        HANNAH,
        &specialty,
        &[("commissioningRuleOrganisation", "QZS")],
    )
    .await;
    assert!(found.contains(&south.service), "{found:?}");
    assert!(!said.contains("commissioned for"), "{said}");
    let r = w
        .app
        .get(&format!(
            "{SEARCH}?patient={HANNAH}&priority=ROUTINE&commissioningRuleOrganisation=qz%21"
        ))
        .await;
    r.assert_outcome(400, "value");
    r.assert_issue(
        "INVALID_VALUE",
        "Parameters.parameter[commissioningRuleOrganisation]",
    );
    // The same rule as a plain search parameter.
    let plain = w
        .app
        .search(&format!(
            "HealthcareService?_id={}&commissioned-for=QZN",
            south.service
        ))
        .await;
    assert_eq!(plain["total"], 0, "{plain}");
    let plain = w
        .app
        .search(&format!(
            "HealthcareService?_id={},{}&commissioned-for={ODS_SYSTEM}|QZS",
            south.service, w.bookable
        ))
        .await;
    assert_eq!(plain["total"], 2, "a listed and an open service: {plain}");
    let open_only = w
        .app
        .search(&format!(
            "HealthcareService?_id={},{}&commissioned-for=https://fhir.nhs.uk/CodeSystem/eRS-Commissioning|ANY_COMMISSIONER",
            south.service, w.bookable
        ))
        .await;
    assert_eq!(
        match_ids(&open_only),
        vec![w.bookable.clone()],
        "{open_only}"
    );

    // The sandbox referrals carry theirs: 000000070000 is Hannah's (QZN), 000000070001 Terry's.
    for (ubrn, commissioner) in [("000000070000", "QZN"), ("000000070001", "QZS")] {
        let b = w
            .app
            .search(&format!("ServiceRequest?identifier={UBRN}|{ubrn}"))
            .await;
        let r = &b["entry"][0]["resource"];
        assert_eq!(commissioning_of(r).as_deref(), Some(commissioner), "{b}");
    }
    // A referral records the commissioner it follows: Hannah's practice's.
    let r = w.create(&referral(&w, &[&w.bookable], "ROUTINE")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let open = r.json();
    assert_eq!(commissioning_of(&open).as_deref(), Some("QZN"), "{open}");
    let open_id = open["id"].as_str().expect("id").to_owned();
    let by = w
        .app
        .search(&format!(
            "ServiceRequest?_id={open_id}&commissioning-organisation={ODS_SYSTEM}|QZN"
        ))
        .await;
    assert_eq!(by["total"], 1, "{by}");
    // It may not shortlist a service not commissioned for it, named by where it is.
    let r = w
        .create(&referral(&w, &[&w.bookable, &south.service], "ROUTINE"))
        .await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue(
        "SHORTLISTED_SERVICE_NOT_IN_RESULTS",
        "ServiceRequest.performer[1]",
    );
    let text = r.text();
    assert!(text.contains("QZN") && text.contains("QZS"), "{text}");
    // Nor change its shortlist to one.
    let change_shortlist = async |services: &[&str]| {
        let named: Vec<(&str, &str)> = services.iter().map(|s| ("service", *s)).collect();
        w.op(false, &open_id, "$ers.changeShortlist", Some(1), &named)
            .await
    };
    let r = change_shortlist(&[&south.service]).await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue(
        "SHORTLISTED_SERVICE_NOT_IN_RESULTS",
        "ServiceRequest.performer[0]",
    );
    // A referral stored before commissioning rules were kept has none: a change of its
    // shortlist follows (and records) its default.
    w.app.execute_sql(&format!(
        "UPDATE resources SET content = REPLACE(content, '{COMMISSIONING}', 'https://example.org/legacy') \
         WHERE res_type = 'ServiceRequest' AND id = '{open_id}'"
    ));
    let legacy = w.app.get(&format!("ServiceRequest/{open_id}")).await.json();
    assert_eq!(commissioning_of(&legacy), None, "{legacy}");
    let r = change_shortlist(&[&south.service]).await;
    r.assert_issue(
        "SHORTLISTED_SERVICE_NOT_IN_RESULTS",
        "ServiceRequest.performer[0]",
    );
    let r = change_shortlist(&[&w.bookable, &w.triage]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(commissioning_of(&r.json()).as_deref(), Some("QZN"));
    // A referrer who names QZS may shortlist it; the referral keeps the one named.
    let mut body = referral(&w, &[&south.service], "ROUTINE");
    body["extension"]
        .as_array_mut()
        .expect("extensions")
        .push(named("QZS"));
    let r = w.create(&body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(commissioning_of(&r.json()).as_deref(), Some("QZS"));
    // A named commissioner must be an ODS code, and there is one.
    let mut bad = referral(&w, &[&w.bookable], "ROUTINE");
    bad["extension"]
        .as_array_mut()
        .expect("extensions")
        .extend([named("QZS"), named("qz!")]);
    let r = w.create(&bad).await;
    r.assert_outcome(422, "value");
    let text = r.text();
    assert!(
        text.contains("ServiceRequest.extension[2].valueIdentifier.value")
            && text.contains("second commissioning rule organisation"),
        "{text}"
    );

    // The slot search (e-RS A015): with NHSD-eRS-Comm-Rule-Org, only slots of services
    // commissioned for it; without, every slot.
    let all = slots_seen(&w, &south.service, None).await.json();
    assert_eq!(all["total"], 2, "{all}");
    let north = slots_seen(&w, &south.service, Some("QZN")).await.json();
    assert_eq!(north["total"], 0, "{north}");
    let seen = slots_seen(&w, &south.service, Some("QZS")).await.json();
    assert_eq!(seen["total"], 2, "{seen}");
    assert!(
        link(&seen, "self").is_some_and(|l| l.contains("commissioned-for")),
        "the links carry the filter: {seen}"
    );
    let open = clinic(&w, "11000").await;
    let open_slots = slots_seen(&w, &open.service, Some("QZN")).await.json();
    assert!(
        open_slots["total"].as_i64() > Some(0),
        "an open service's slots are found: {open_slots}"
    );
    let r = slots_seen(&w, &south.service, Some("not an ods code")).await;
    r.assert_outcome(400, "value");
    r.assert_issue("INVALID_VALUE", "NHSD-eRS-Comm-Rule-Org");
    // The same search as a batch entry: the request's header narrows it as it does on its own,
    // and only the Slot search (the Patient read beside it is answered whatever the header).
    let world = &w;
    let batch = |header: &'static str| {
        let body = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("Slot?schedule.actor:HealthcareService={}&status=free", south.service)}},
            {"request": {"method": "GET", "url": format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{HANNAH}")}},
        ]});
        let r = world
            .as_rc("POST", "/FHIR/R4")
            .insert_header(("NHSD-eRS-Comm-Rule-Org", header));
        let body = body.to_string().into_bytes();
        async move { world.app.send(r, Some(body)).await }
    };
    for (header, total) in [("QZN", 0), ("QZS", 2)] {
        let r = batch(header).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let out = r.json();
        assert_eq!(
            out["entry"][0]["resource"]["total"], total,
            "{header}: {out}"
        );
        assert_eq!(out["entry"][1]["resource"]["total"], 1, "{header}: {out}");
    }
    let r = batch("not an ods code").await.json();
    assert!(
        r["entry"][0]["response"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("400")),
        "{r}"
    );
    let said = r["entry"][0]["response"]["outcome"].to_string();
    assert!(said.contains("NHSD-eRS-Comm-Rule-Org"), "{said}");
    assert_eq!(r["entry"][1]["resource"]["total"], 1, "{r}");

    // A service definer names commissioners by ODS code; adding QZN opens the service to
    // Hannah's referrals, found at once.
    let definer = sign(&claims(
        TEST_USER,
        &[("SERVICE_DEFINER", south.ods.as_str())],
    ));
    let put = |body: &Value| {
        let r = w
            .app
            .as_user(
                &definer,
                "PUT",
                &format!("HealthcareService/{}", south.service),
                "SERVICE_DEFINER",
                &south.ods,
            )
            .insert_header(("Content-Type", "application/fhir+json"));
        w.app.send(r, Some(body.to_string().into_bytes()))
    };
    let mut wrong = service.clone();
    wrong["extension"] = json!([
        {"url": COMMISSIONED_BY, "valueIdentifier": {"system": "https://example.org/ods", "value": "QZN"}},
        {"url": COMMISSIONED_BY, "valueIdentifier": {"system": ODS_SYSTEM, "value": "qzn"}}
    ]);
    let r = put(&wrong).await;
    r.assert_outcome(422, "value");
    let text = r.text();
    assert!(
        text.contains("HealthcareService.extension[0].valueIdentifier.system")
            && text.contains("HealthcareService.extension[1].valueIdentifier.value"),
        "{text}"
    );
    let mut both = service.clone();
    both["extension"].as_array_mut().expect("extensions").push(
        json!({"url": COMMISSIONED_BY, "valueIdentifier": {"system": ODS_SYSTEM, "value": "QZN"}}),
    );
    let r = put(&both).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (found, _) = offered(&w, HANNAH, &specialty, &[]).await;
    assert!(found.contains(&south.service), "{found:?}");
    let r = w
        .create(&referral(&w, &[&w.bookable, &south.service], "ROUTINE"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[actix_web::test]
async fn an_advice_request_follows_commissioning_rules_into_its_referral() {
    let w = world().await;
    let b = w
        .app
        .search("HealthcareService?characteristic=ADVICE_AND_GUIDANCE&priority=ROUTINE&organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|RCD")
        .await;
    let advice = b["entry"][0]["resource"].clone();
    let id = advice["id"].as_str().expect("id").to_owned();
    // Restricted to QZS by its definer at RCD, it is refused to Hannah's (QZN) request.
    let mut south = advice.clone();
    south["extension"] = json!([{"url": COMMISSIONED_BY, "valueIdentifier": {"system": ODS_SYSTEM, "value": "QZS"}}]);
    let r = w
        .app
        .as_user(
            &w.app.token,
            "PUT",
            &format!("HealthcareService/{id}"),
            "SERVICE_DEFINER",
            "RCD",
        )
        .insert_header(("Content-Type", "application/fhir+json"));
    let r = w.app.send(r, Some(south.to_string().into_bytes())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ask = crate::advice::request(&w, &[&id], Some("AUTHORISED_TO_CONVERT"), "Should I refer?");
    let r = w.create(&ask).await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue(
        "SHORTLISTED_SERVICE_NOT_IN_RESULTS",
        "ServiceRequest.performer[0]",
    );
    // Naming QZS, it is accepted; the request keeps it, and so does its referral.
    let mut ask = ask;
    ask["extension"]
        .as_array_mut()
        .expect("extensions")
        .push(named("QZS"));
    let r = w.create(&ask).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let request = r.json();
    assert_eq!(commissioning_of(&request).as_deref(), Some("QZS"));
    let request_id = request["id"].as_str().expect("id").to_owned();
    let version: i64 = request["meta"]["versionId"]
        .as_str()
        .expect("version")
        .parse()
        .expect("a number");
    let bookable = w
        .app
        .search("HealthcareService?characteristic=BOOKABLE&priority=ROUTINE&organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|RCD")
        .await;
    let bookable = bookable["entry"][0]["resource"]["id"]
        .as_str()
        .expect("an RCD service")
        .to_owned();
    let r = w
        .op(
            true,
            &request_id,
            "$ers.convertToReferral",
            Some(version),
            &[
                ("text", "Converted"),
                ("priority", "ROUTINE"),
                ("comment", "Clinic"),
                ("service", &bookable),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let referral = r.json();
    assert_eq!(
        commissioning_of(&referral).as_deref(),
        Some("QZS"),
        "{referral}"
    );
}

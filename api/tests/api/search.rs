//! The search framework (search.html in the R4 specification), exercised on Patient,
//! Practitioner, PractitionerRole and Organization.

use crate::helpers::*;
use serde_json::json;

struct Fixture {
    org_a: String,
    org_b: String,
    p: Vec<String>,
}

async fn fixture(app: &TestApp) -> Fixture {
    let org_a = app.create(&organization("R69", "North Practice")).await;
    let org_b = app.create(&organization("R68", "South Practice")).await;
    let people = [
        (NHS[0], "Smith", "Anna", "1950-06-15", "female", &org_a),
        (NHS[1], "Smithson", "Bill", "1960-01-20", "male", &org_a),
        (NHS[2], "Jonés", "Cara", "1970-12-31", "female", &org_b),
        (NHS[3], "Brown", "Dev", "1980-03-03", "male", &org_b),
        (NHS[4], "Black-Smith", "Eli", "1990-07-07", "other", &org_a),
    ];
    let mut p = Vec::new();
    for (nhs, family, given, birth, gender, org) in people {
        let mut body = patient(nhs, family, given, birth, gender);
        body["generalPractitioner"] = json!([{"reference": format!("Organization/{org}")}]);
        p.push(app.create(&body).await);
    }
    Fixture { org_a, org_b, p }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[actix_web::test]
async fn string_token_date_and_reference_parameters() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let ids = |b: &serde_json::Value| sorted(match_ids(b));
    // string: starts-with, case- and accent-insensitive; :exact; :contains
    assert_eq!(
        ids(&app.search("Patient?family=smith").await),
        sorted(vec![f.p[0].clone(), f.p[1].clone()])
    );
    assert_eq!(
        ids(&app.search("Patient?family=jones").await),
        vec![f.p[2].clone()]
    );
    assert_eq!(
        ids(&app.search("Patient?family:exact=Smith").await),
        vec![f.p[0].clone()]
    );
    assert_eq!(app.search("Patient?family:exact=smith").await["total"], 0);
    assert_eq!(
        ids(&app.search("Patient?family:contains=smith").await).len(),
        3
    );
    assert_eq!(
        ids(&app.search("Patient?name=cara").await),
        vec![f.p[2].clone()]
    );
    assert_eq!(
        app.search("Patient?address-postalcode=LS1").await["total"],
        5
    );
    // OR within a parameter, AND across parameters
    assert_eq!(app.search("Patient?family=Brown,Jones").await["total"], 2);
    assert_eq!(
        ids(&app.search("Patient?family=smith&gender=male").await),
        vec![f.p[1].clone()]
    );
    // token: system|code, |code (no system), code, system|, :not
    let nhs = "https://fhir.nhs.uk/Id/nhs-number";
    assert_eq!(
        ids(&app
            .search(&format!("Patient?identifier={nhs}|{}", NHS[3]))
            .await),
        vec![f.p[3].clone()]
    );
    assert_eq!(
        ids(&app.search(&format!("Patient?identifier={}", NHS[3])).await),
        vec![f.p[3].clone()]
    );
    assert_eq!(
        app.search(&format!("Patient?identifier=|{}", NHS[3])).await["total"],
        0
    );
    assert_eq!(
        app.search(&format!("Patient?identifier=http://other|{}", NHS[3]))
            .await["total"],
        0
    );
    assert_eq!(
        app.search(&format!("Patient?identifier={nhs}|")).await["total"],
        5
    );
    assert_eq!(app.search("Patient?gender=female").await["total"], 2);
    assert_eq!(app.search("Patient?gender:not=female").await["total"], 3);
    // date prefixes
    assert_eq!(
        ids(&app.search("Patient?birthdate=1970-12-31").await),
        vec![f.p[2].clone()]
    );
    assert_eq!(
        ids(&app.search("Patient?birthdate=1970-12").await),
        vec![f.p[2].clone()]
    );
    assert_eq!(app.search("Patient?birthdate=1970").await["total"], 1);
    assert_eq!(app.search("Patient?birthdate=lt1970").await["total"], 2);
    assert_eq!(
        app.search("Patient?birthdate=le1970-12-31").await["total"],
        3
    );
    assert_eq!(
        app.search("Patient?birthdate=gt1970-12-31").await["total"],
        2
    );
    assert_eq!(
        app.search("Patient?birthdate=ge1970-12-31").await["total"],
        3
    );
    assert_eq!(
        app.search("Patient?birthdate=ne1970-12-31").await["total"],
        4
    );
    assert_eq!(
        app.search("Patient?birthdate=ge1960&birthdate=lt1980")
            .await["total"],
        2
    );
    assert_eq!(
        app.search("Patient?birthdate=sa1980-01-01").await["total"],
        2
    );
    assert_eq!(
        app.search("Patient?birthdate=eb1960-01-20").await["total"],
        1
    );
    // reference: Type/id, bare id, :Type modifier; chained on identifier and name
    assert_eq!(
        app.search(&format!(
            "Patient?general-practitioner=Organization/{}",
            f.org_a
        ))
        .await["total"],
        3
    );
    assert_eq!(
        app.search(&format!("Patient?general-practitioner={}", f.org_b))
            .await["total"],
        2
    );
    assert_eq!(
        app.search(&format!(
            "Patient?general-practitioner:Organization={}",
            f.org_b
        ))
        .await["total"],
        2
    );
    assert_eq!(
        app.search("Patient?general-practitioner:Organization.identifier=R68")
            .await["total"],
        2
    );
    assert_eq!(
        app.search("Patient?general-practitioner:Organization.name=north")
            .await["total"],
        3
    );
    let d = app
        .get("Patient?general-practitioner.identifier=R68")
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("general-practitioner:Type"), "{d}");
    // :missing
    assert_eq!(
        app.search("Patient?general-practitioner:missing=false")
            .await["total"],
        5
    );
    assert_eq!(app.search("Patient?telecom:missing=true").await["total"], 5);
    // _id and _lastUpdated
    assert_eq!(
        app.search(&format!("Patient?_id={},{}", f.p[0], f.p[4]))
            .await["total"],
        2
    );
    assert_eq!(
        app.search("Patient?_lastUpdated=gt2000-01-01").await["total"],
        5
    );
    assert_eq!(
        app.search("Patient?_lastUpdated=lt2000-01-01").await["total"],
        0
    );
}

#[actix_web::test]
async fn paging_is_stable_with_self_next_previous_links() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let first = app.search("Patient?_count=2&gender:not=nonsense").await;
    assert_eq!(first["total"], 5);
    assert_eq!(match_ids(&first).len(), 2);
    assert!(link(&first, "previous").is_none());
    let self_link = link(&first, "self").expect("self");
    assert!(
        self_link.contains("gender%3Anot=nonsense") && self_link.contains("_count=2"),
        "{self_link}"
    );
    let mut seen = match_ids(&first);
    let mut next = link(&first, "next");
    let mut pages = 1;
    while let Some(url) = next {
        let page = app.search(&url).await;
        assert!(link(&page, "previous").is_some());
        seen.extend(match_ids(&page));
        next = link(&page, "next");
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        sorted(seen),
        sorted(f.p.clone()),
        "every resource exactly once"
    );
    // _count=0 gives only the total
    let b = app.search("Patient?_count=0").await;
    assert_eq!(b["total"], 5);
    assert!(b.get("entry").is_none());
}

#[actix_web::test]
async fn sort_include_revinclude_summary_total_elements() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    // _sort ascending and descending, by string and date
    let b = app.search("Patient?_sort=birthdate").await;
    assert_eq!(match_ids(&b), f.p.clone());
    let b = app.search("Patient?_sort=-birthdate").await;
    let mut rev = f.p.clone();
    rev.reverse();
    assert_eq!(match_ids(&b), rev);
    let b = app.search("Patient?_sort=family").await;
    let families: Vec<String> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            e["resource"]["name"][0]["family"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        families,
        ["Black-Smith", "Brown", "Jonés", "Smith", "Smithson"]
    );
    app.get("Patient?_sort=colour")
        .await
        .assert_outcome(400, "invalid");

    // _include the GP organisations (each once)
    let b = app
        .search("Patient?_include=Patient:general-practitioner")
        .await;
    let included: Vec<String> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        sorted(included),
        sorted(vec![f.org_a.clone(), f.org_b.clone()])
    );
    assert_eq!(b["total"], 5, "total counts matches only");
    // _revinclude: organisations with their patients
    let b = app
        .search(&format!(
            "Organization?_id={}&_revinclude=Patient:general-practitioner",
            f.org_b
        ))
        .await;
    assert_eq!(b["entry"].as_array().expect("entries").len(), 3);
    app.get("Patient?_include=Organization:partof")
        .await
        .assert_outcome(400, "invalid");

    // _summary=count, _total=none, _elements, _summary=true
    let b = app.search("Patient?gender=female&_summary=count").await;
    assert_eq!(b["total"], 2);
    assert!(b.get("entry").is_none());
    let b = app.search("Patient?_total=none&_count=1").await;
    assert!(b.get("total").is_none());
    assert!(
        link(&b, "next").is_some(),
        "a full page without a total still offers next"
    );
    let b = app.search("Patient?_elements=birthDate&_count=1").await;
    let r = &b["entry"][0]["resource"];
    assert!(
        r.get("birthDate").is_some() && r.get("name").is_none() && r.get("id").is_some(),
        "{r}"
    );
    assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED");
    let b = app.search("Patient?_summary=true&_count=1").await;
    let r = &b["entry"][0]["resource"];
    assert!(
        r.get("name").is_some() && r.get("generalPractitioner").is_none(),
        "{r}"
    );
}

#[actix_web::test]
async fn unknown_parameters_are_ignored_or_refused_when_strict() {
    let app = spawn_app().await;
    fixture(&app).await;
    let b = app.search("Patient?colour=blue&family=smith").await;
    assert_eq!(b["total"], 2, "the unknown parameter is ignored");
    let self_link = link(&b, "self").expect("self");
    assert!(
        !self_link.contains("colour") && self_link.contains("family=smith"),
        "{self_link}"
    );
    let outcome = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("outcome entry");
    assert!(outcome["resource"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .contains("colour"));
    let r = app
        .send(
            app.req("GET", "Patient?colour=blue")
                .insert_header(("Prefer", "handling=strict")),
            None,
        )
        .await;
    let d = r.assert_outcome(400, "not-supported");
    assert!(d.contains("colour"), "{d}");
    // Bad values name the parameter.
    let d = app
        .get("Patient?birthdate=yesterday")
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("birthdate"), "{d}");
    let d = app
        .get("Patient?_count=abc")
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("_count"), "{d}");
    let d = app
        .get("Patient?family:phonetic=smith")
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains(":phonetic"), "{d}");
}

#[actix_web::test]
async fn post_search_and_other_types() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let r = app
        .send(
            app.req("POST", "Patient/_search?gender=male")
                .insert_header(("Content-Type", "application/x-www-form-urlencoded")),
            Some(b"family=smith".to_vec()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(match_ids(&r.json()), vec![f.p[1].clone()]);
    app.send(
        app.req("POST", "Patient/_search")
            .insert_header(("Content-Type", "application/fhir+json")),
        Some(b"{}".to_vec()),
    )
    .await
    .assert_outcome(415, "not-supported");

    // Practitioner + PractitionerRole + Location, with _revinclude and chains
    let pr = app.create(&json!({"resourceType": "Practitioner", "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "021600556514"}], "name": [{"family": "Referrer", "given": ["Rachel"]}]})).await;
    let loc = app.create(&json!({"resourceType": "Location", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-site-code", "value": "R6901"}], "name": "Main Site", "status": "active", "position": {"latitude": 53.8, "longitude": -1.55}, "managingOrganization": {"reference": format!("Organization/{}", f.org_a)}})).await;
    let role = app.create(&json!({"resourceType": "PractitionerRole", "active": true, "practitioner": {"reference": format!("Practitioner/{pr}")}, "organization": {"reference": format!("Organization/{}", f.org_a)}, "location": [{"reference": format!("Location/{loc}")}], "code": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-BusinessFunction", "code": "REFERRING_CLINICIAN"}]}]})).await;
    let b = app
        .search("Practitioner?identifier=021600556514&_revinclude=PractitionerRole:practitioner")
        .await;
    assert_eq!(b["entry"].as_array().expect("entries").len(), 2);
    assert_eq!(
        match_ids(
            &app.search("PractitionerRole?organization.identifier=R69&role=REFERRING_CLINICIAN")
                .await
        ),
        vec![role]
    );
    assert_eq!(
        app.search("Location?organization.identifier=R69").await["total"],
        1
    );
    assert_eq!(
        app.search("Location?identifier=https://fhir.nhs.uk/Id/ods-site-code|R6901")
            .await["total"],
        1
    );
    // Location rules: position in range.
    let r = app.post_json("Location", &json!({"resourceType": "Location", "name": "Nowhere", "position": {"latitude": 123, "longitude": 0}})).await;
    let d = r.assert_outcome(422, "value");
    assert!(d.contains("latitude"), "{d}");
    // SDS user ids are 12 digits.
    let r = app.post_json("Practitioner", &json!({"resourceType": "Practitioner", "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "123"}]})).await;
    r.assert_outcome(422, "value");
}

#[actix_web::test]
async fn search_entries_are_the_stored_resources_or_their_requested_subsets() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let id = &f.p[0];
    let read = app.get(&format!("Patient/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let query = format!("Patient?_id={id}");
    // Whole: each entry is the resource exactly as a read returns it.
    let whole = app.get(&query).await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    let bundle = whole.json();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 1);
    assert_eq!(bundle["entry"][0]["resource"], read.json(), "{bundle}");
    assert_eq!(bundle["entry"][0]["search"]["mode"], "match");
    // Pretty: the same Bundle, indented.
    let pretty = app.get(&format!("{query}&_pretty=true")).await;
    assert!(
        pretty.text().contains("\n  \"resourceType\""),
        "{}",
        pretty.text()
    );
    let mut p = pretty.json();
    p["id"] = bundle["id"].clone();
    p["meta"] = bundle["meta"].clone();
    assert_eq!(p["entry"], bundle["entry"]);
    // _summary=true and _elements: a marked subset.
    let summary = app.search(&format!("{query}&_summary=true")).await;
    let s = &summary["entry"][0]["resource"];
    assert_eq!(s["id"], id.as_str());
    assert!(s.get("name").is_some(), "{s}");
    assert!(s.get("text").is_none(), "{s}");
    assert!(s["meta"]["tag"].to_string().contains("SUBSETTED"), "{s}");
    let elements = app.search(&format!("{query}&_elements=birthDate")).await;
    let e = &elements["entry"][0]["resource"];
    assert_eq!(e["birthDate"], "1950-06-15", "{e}");
    assert!(e.get("name").is_none(), "{e}");
    assert!(e["meta"]["tag"].to_string().contains("SUBSETTED"), "{e}");
}

#[actix_web::test]
async fn an_update_is_found_by_its_new_values_and_no_longer_by_its_old_ones() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let total = |b: serde_json::Value| b["total"].as_i64().unwrap_or(-1);
    let mut body = patient(NHS[5], "Before", "Kept", "1955-05-05", "male");
    body["generalPractitioner"] = json!([{"reference": format!("Organization/{}", f.org_a)}]);
    let id = app.create(&body).await;
    // Changed: family (string), birth date (date), practitioner (reference) and the NHS number
    // (token and unique identifier); kept: given name, gender, postcode.
    body["id"] = json!(id);
    body["name"][0]["family"] = json!("After");
    body["birthDate"] = json!("1966-06-06");
    body["generalPractitioner"] = json!([{"reference": format!("Organization/{}", f.org_b)}]);
    body["identifier"][0]["value"] = json!(NHS[4]);
    // NHS[4] belongs to the fixture's fifth patient: free it first.
    let mut fifth = app.get(&format!("Patient/{}", f.p[4])).await.json();
    fifth.as_object_mut().map(|o| o.shift_remove("identifier"));
    assert_eq!(
        app.put_json(&format!("Patient/{}", f.p[4]), &fifth, None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.put_json(&format!("Patient/{id}"), &body, None)
            .await
            .status,
        200
    );
    for (query, expected) in [
        ("family=before", 0),
        ("family=after", 1),
        ("given=kept&gender=male", 1),
        ("birthdate=1955-05-05", 0),
        ("birthdate=1966-06-06", 1),
        (
            &*format!("general-practitioner=Organization/{}", f.org_a),
            3,
        ),
        (
            &*format!("general-practitioner=Organization/{}", f.org_b),
            3,
        ),
        (&*format!("identifier={}", NHS[5]), 0),
        (&*format!("identifier={}", NHS[4]), 1),
    ] {
        let found = app.search(&format!("Patient?{query}")).await;
        assert_eq!(total(found.clone()), expected, "Patient?{query}: {found}");
        if expected == 1 && !query.starts_with("general") {
            assert_eq!(match_ids(&found), vec![id.clone()], "Patient?{query}");
        }
    }
    // The old NHS number is free again; the new one is taken.
    app.create(&patient(NHS[5], "Other", "One", "1980-01-01", "female"))
        .await;
    app.post_json(
        "Patient",
        &patient(NHS[4], "Other", "Two", "1980-01-01", "female"),
    )
    .await
    .assert_outcome(409, "duplicate");
    // A parameter the new version no longer has is gone from the index.
    body.as_object_mut()
        .map(|o| o.shift_remove("generalPractitioner"));
    assert_eq!(
        app.put_json(&format!("Patient/{id}"), &body, None)
            .await
            .status,
        200
    );
    assert_eq!(
        total(
            app.search(&format!(
                "Patient?general-practitioner=Organization/{}",
                f.org_b
            ))
            .await
        ),
        2
    );
    assert_eq!(total(app.search("Patient?family=after").await), 1);
}

/// A search counts its matches for `Bundle.total` only up to a bound unless asked for
/// `_total=accurate`; past the bound the Bundle says so instead of giving a total.
#[actix_web::test]
async fn totals_are_counted_up_to_a_bound_unless_asked_for() {
    let app = spawn_configured(ers_api::config::Settings {
        search_total_up_to: 3,
        seed: ers_api::config::SeedMode::None,
        rate_limit_per_sec: 0,
        ..Default::default()
    })
    .await;
    for (i, nhs) in NHS.iter().take(5).enumerate() {
        let family = if i < 3 { "Bounded" } else { "Boundless" };
        app.create(&patient(nhs, family, "Count", "1980-01-01", "male"))
            .await;
    }
    let outcome = |b: &serde_json::Value| -> String {
        b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "outcome")
            .map(|e| e["resource"]["issue"][0]["diagnostics"].to_string())
            .collect()
    };
    // Five match, the bound is three: pages come without a total, and the Bundle says why.
    let b = app.search("Patient?given=Count&_count=2").await;
    assert!(b.get("total").is_none(), "{b}");
    assert!(outcome(&b).contains("More than 3"), "{b}");
    assert_eq!(b["link"][1]["relation"], "next", "{b}");
    let b = app
        .search("Patient?given=Count&_count=2&_total=estimate")
        .await;
    assert!(b.get("total").is_none(), "{b}");
    // Asked for, every match is counted; a first page that holds them all counts itself.
    for q in [
        "Patient?given=Count&_count=2&_total=accurate",
        "Patient?given=Count&_count=10",
        "Patient?given=Count&_summary=count",
    ] {
        let b = app.search(q).await;
        assert_eq!(b["total"], 5, "{q}: {b}");
        assert_eq!(outcome(&b), "", "{q}: {b}");
    }
    // Up to the bound, the total is exact.
    let b = app.search("Patient?family=Bounded&_count=2").await;
    assert_eq!(b["total"], 3, "{b}");
    assert_eq!(outcome(&b), "", "{b}");
    // Not asked for at all: neither total nor note.
    let b = app.search("Patient?given=Count&_count=2&_total=none").await;
    assert!(b.get("total").is_none(), "{b}");
    assert_eq!(outcome(&b), "", "{b}");
    // A type's history alike: five versions, counted up to three; all on request; a page that
    // holds them all counts itself.
    let b = app.search("Patient/_history?_count=2").await;
    assert!(b.get("total").is_none(), "{b}");
    assert_eq!(b["entry"].as_array().map(Vec::len), Some(2), "{b}");
    assert!(
        b["link"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["relation"] == "next"),
        "{b}"
    );
    let b = app
        .search("Patient/_history?_count=2&_total=accurate")
        .await;
    assert_eq!(b["total"], 5, "{b}");
    let b = app.search("Patient/_history?_count=10").await;
    assert_eq!(b["total"], 5, "{b}");
    app.send(app.req("GET", "Patient/_history?_total=some"), None)
        .await
        .assert_outcome(400, "invalid");
}

/// `_tag`, `_security` and `_profile` (R4's parameters of every resource, over `meta`) find
/// what a resource carries, follow its updates, and are made for resources stored before they
/// were indexed by the migration that added them, exactly as a write makes them.
#[actix_web::test]
async fn tags_security_labels_and_profiles_are_searched() {
    const TAGS: &str = "https://example.org/tags";
    const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
    const PROFILE: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
    let app = spawn_app().await;
    let with_meta = |i: usize, meta: serde_json::Value| {
        let mut body = patient(NHS[i], "Meta", "Tess", "1980-01-01", "female");
        body["meta"] = meta;
        body
    };
    let tagged = app
        .create(&with_meta(
            0,
            json!({"tag": [{"system": TAGS, "code": "review"}]}),
        ))
        .await;
    let plain_tag = app
        .create(&with_meta(
            1,
            json!({"tag": [{"code": "review"}, {"system": TAGS, "code": "pilot"}]}),
        ))
        .await;
    let restricted = app
        .create(&with_meta(
            2,
            json!({"security": [{"system": CONFIDENTIALITY, "code": "R"}],
                   "profile": [format!("{PROFILE}|2.5.0")]}),
        ))
        .await;
    let bare = app
        .create(&patient(NHS[3], "Meta", "Tess", "1980-01-01", "female"))
        .await;
    let ids = |b: &serde_json::Value| sorted(match_ids(b));

    assert_eq!(
        ids(&app.search(&format!("Patient?_tag={TAGS}|review")).await),
        vec![tagged.clone()]
    );
    assert_eq!(
        ids(&app.search("Patient?_tag=review").await),
        sorted(vec![tagged.clone(), plain_tag.clone()])
    );
    assert_eq!(
        ids(&app.search("Patient?_tag=|review").await),
        vec![plain_tag.clone()]
    );
    assert_eq!(
        ids(&app.search(&format!("Patient?_tag={TAGS}|")).await),
        sorted(vec![tagged.clone(), plain_tag.clone()])
    );
    assert_eq!(
        ids(&app.search("Patient?_tag:missing=true").await),
        sorted(vec![restricted.clone(), bare.clone()])
    );
    assert_eq!(
        ids(&app
            .search(&format!("Patient?_security={CONFIDENTIALITY}|R"))
            .await),
        vec![restricted.clone()]
    );
    assert_eq!(app.search("Patient?_security=N").await["total"], 0);
    // Every stored resource claims the profile it was validated against; a versioned claim is
    // found by its URL alone too, and by its version.
    let claimed = app.get(&format!("Patient/{bare}")).await.json()["meta"]["profile"][0]
        .as_str()
        .expect("the profile the server claims")
        .to_owned();
    assert_eq!(
        ids(&app.search(&format!("Patient?_profile={claimed}")).await),
        sorted(vec![
            tagged.clone(),
            plain_tag.clone(),
            restricted.clone(),
            bare.clone()
        ])
    );
    assert_eq!(
        ids(&app.search(&format!("Patient?_profile={PROFILE}")).await),
        if claimed == PROFILE {
            sorted(vec![
                tagged.clone(),
                plain_tag.clone(),
                restricted.clone(),
                bare.clone(),
            ])
        } else {
            vec![restricted.clone()]
        }
    );
    assert_eq!(
        ids(&app
            .search(&format!("Patient?_profile={PROFILE}|2.5.0"))
            .await),
        vec![restricted.clone()]
    );
    assert_eq!(
        app.search(&format!("Patient?_profile={PROFILE}|9.9.9"))
            .await["total"],
        0
    );
    let d = app
        .get(&format!("Patient?_profile:below={PROFILE}"))
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("_profile:below") && d.contains(":below"), "{d}");

    // An update is found by its new tags and no longer by its old ones.
    let mut changed = with_meta(0, json!({"tag": [{"system": TAGS, "code": "done"}]}));
    changed["id"] = json!(tagged);
    let put = app
        .put_json(&format!("Patient/{tagged}"), &changed, Some("W/\"1\""))
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        ids(&app.search("Patient?_tag=review").await),
        vec![plain_tag.clone()]
    );
    assert_eq!(
        ids(&app.search(&format!("Patient?_tag={TAGS}|done")).await),
        vec![tagged.clone()]
    );

    // The CapabilityStatement names them with their HL7 definitions.
    let cs = app.get("metadata").await.json();
    let patient_params = cs["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "Patient")
        .expect("Patient")["searchParam"]
        .clone();
    let tag = patient_params
        .as_array()
        .expect("params")
        .iter()
        .find(|p| p["name"] == "_tag")
        .expect("_tag listed");
    assert_eq!(
        tag["definition"],
        "http://hl7.org/fhir/SearchParameter/Resource-tag"
    );

    // The migration's rows for resources stored before are those a write makes.
    use diesel::prelude::*;
    use ers_schema::schema::search_tokens as t;
    let pool = ers_schema::build_pool(&app.database_url, 1).expect("pool");
    let mut conn = pool.get().expect("connection");
    let rows = |c: &mut ers_schema::DbConnection| -> Vec<(String, String, String, String)> {
        t::table
            .filter(t::param.eq_any(["_tag", "_security", "_profile"]))
            .order((t::res_id, t::param, t::system, t::code))
            .select((t::res_id, t::param, t::system, t::code))
            .load(c)
            .expect("index rows")
    };
    let written = rows(&mut conn);
    assert_eq!(
        written.iter().filter(|r| r.1 == "_profile").count(),
        if claimed == PROFILE { 5 } else { 6 },
        "the claimed profile of each of four patients, and the versioned one with its URL: {written:?}"
    );
    rerun_migration(&mut conn, "2026-12-18-000030_meta_search", rows, &written);
}

/// Runs a migration's `down.sql`, then its `up.sql`, on the test's database: the rows it
/// backfills are gone in between, and after it they are `written`, what the writes made.
fn rerun_migration<T: PartialEq + std::fmt::Debug>(
    conn: &mut ers_schema::DbConnection,
    migration: &str,
    rows: impl Fn(&mut ers_schema::DbConnection) -> Vec<T>,
    written: &[T],
) {
    use diesel::connection::SimpleConnection;
    let folder = manifest_dir().join(format!(
        "../schema/migrations/{}/{migration}",
        conn.backend_name()
    ));
    let sql = |f: &str| std::fs::read_to_string(folder.join(f)).expect("migration file");
    conn.batch_execute(&sql("down.sql")).expect("down");
    assert!(rows(conn).is_empty(), "{migration}: down left rows");
    conn.batch_execute(&sql("up.sql")).expect("up");
    assert_eq!(rows(conn), written, "{migration}: up");
}

/// `Patient?link=` finds the records that link to a patient (R4's Patient-link), `_include` and
/// `_revinclude` follow the link, and a patient another record links to is not deleted while it
/// does; the migration gives the patients stored before the same index rows.
#[actix_web::test]
async fn linked_patients_are_searched_and_kept() {
    let app = spawn_app().await;
    let first = app
        .create(&patient(NHS[0], "Linked", "Lena", "1971-04-04", "female"))
        .await;
    let mut second = patient(NHS[1], "Linked", "Lena", "1971-04-04", "female");
    second["link"] =
        json!([{"other": {"reference": format!("Patient/{first}")}, "type": "replaces"}]);
    let second = app.create(&second).await;
    // A versioned reference links to the record too.
    let mut third = patient(NHS[2], "Linked", "Lena", "1971-04-04", "female");
    third["link"] =
        json!([{"other": {"reference": format!("Patient/{first}/_history/1")}, "type": "seealso"}]);
    let third = app.create(&third).await;
    let unrelated = app
        .create(&patient(NHS[3], "Other", "Olly", "1980-01-01", "male"))
        .await;
    // A version the record has never had is a reference to nothing.
    let mut ahead = patient(NHS[4], "Linked", "Lena", "1971-04-04", "female");
    ahead["link"] =
        json!([{"other": {"reference": format!("Patient/{first}/_history/2")}, "type": "seealso"}]);
    let r = app.post_json("Patient", &ahead).await;
    r.assert_outcome(422, "not-found");
    assert_eq!(
        r.issue_at().1,
        "Patient.link[0].other.reference",
        "{}",
        r.text()
    );

    let found = |b: &serde_json::Value| sorted(match_ids(b));
    assert_eq!(
        found(&app.search(&format!("Patient?link=Patient/{first}")).await),
        sorted(vec![second.clone(), third.clone()])
    );
    assert_eq!(
        found(&app.search(&format!("Patient?link={first}")).await),
        sorted(vec![second.clone(), third.clone()])
    );
    assert!(found(
        &app.search(&format!("Patient?link=Patient/{unrelated}"))
            .await
    )
    .is_empty());
    // Chained through the linked record's NHS number, and `:missing`.
    assert_eq!(
        found(
            &app.search(&format!(
                "Patient?link.identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
                NHS[0]
            ))
            .await
        ),
        sorted(vec![second.clone(), third.clone()])
    );
    assert_eq!(
        found(&app.search("Patient?family=Other&link:missing=true").await),
        vec![unrelated.clone()]
    );
    // `_include` brings the linked record, `_revinclude` the records linking to one.
    let b = app
        .search(&format!("Patient?_id={second}&_include=Patient:link"))
        .await;
    assert_eq!(mode_refs(&b, "include"), vec![format!("Patient/{first}")]);
    let b = app
        .search(&format!("Patient?_id={first}&_revinclude=Patient:link"))
        .await;
    let mut linking = mode_refs(&b, "include");
    linking.sort();
    assert_eq!(
        linking,
        sorted(vec![
            format!("Patient/{second}"),
            format!("Patient/{third}")
        ])
    );

    // The linked record is kept while others link to it, and the answer names them.
    let delete = |id: &str| app.send(app.req("DELETE", &format!("Patient/{id}")), None);
    let diag = delete(&first).await.assert_outcome(409, "conflict");
    assert!(diag.contains(&second) && diag.contains(&third), "{diag}");
    assert_eq!(app.get(&format!("Patient/{first}")).await.status, 200);
    // Once neither links to it any more, it can go.
    for (id, nhs) in [(&second, NHS[1]), (&third, NHS[2])] {
        let mut unlinked = patient(nhs, "Linked", "Lena", "1971-04-04", "female");
        unlinked["id"] = json!(id);
        let put = app
            .put_json(&format!("Patient/{id}"), &unlinked, None)
            .await;
        assert_eq!(put.status, 200, "{}", put.text());
    }
    assert!(found(&app.search(&format!("Patient?link=Patient/{first}")).await).is_empty());

    // The migration's rows for patients stored before are those a write makes.
    let mut relinked = patient(NHS[1], "Linked", "Lena", "1971-04-04", "female");
    relinked["id"] = json!(second);
    relinked["link"] = json!([
        {"other": {"reference": format!("Patient/{first}/_history/1")}, "type": "replaces"},
        {"other": {"reference": format!("Patient/{unrelated}")}, "type": "seealso"}
    ]);
    let put = app
        .put_json(&format!("Patient/{second}"), &relinked, None)
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    use diesel::prelude::*;
    use ers_schema::schema::search_refs as r;
    let pool = ers_schema::build_pool(&app.database_url, 1).expect("pool");
    let mut conn = pool.get().expect("connection");
    let rows = |c: &mut ers_schema::DbConnection| -> Vec<(String, String, String)> {
        r::table
            .filter(r::res_type.eq("Patient").and(r::param.eq("link")))
            .order((r::res_id, r::target_id))
            .select((r::res_id, r::target_type, r::target_id))
            .load(c)
            .expect("index rows")
    };
    let written = rows(&mut conn);
    assert_eq!(
        written,
        {
            let mut w = vec![
                (second.clone(), "Patient".to_owned(), first.clone()),
                (second.clone(), "Patient".to_owned(), unrelated.clone()),
            ];
            w.sort();
            w
        },
        "the relinked record's two links"
    );
    rerun_migration(&mut conn, "2026-12-19-000031_patient_link", rows, &written);
    // And what it wrote keeps the linked record as the write's rows did.
    delete(&unrelated).await.assert_outcome(409, "conflict");
}

/// `n` organisations, each part of the one before (ODS codes `{prefix}00`, `{prefix}10`, …):
/// their ids, the top first.
async fn organisation_chain(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for i in 0..n {
        let mut org = organization(&format!("{prefix}{i}0"), &format!("Level {i}"));
        if let Some(parent) = chain.last() {
            org["partOf"] = json!({"reference": format!("Organization/{parent}")});
        }
        chain.push(app.create(&org).await);
    }
    chain
}

/// `_include:iterate` and `_revinclude:iterate` follow from what was included too, up to the
/// server's bound (which a note names); `*` stands for every reference parameter.
#[actix_web::test]
async fn iterated_and_wildcard_includes() {
    let app = spawn_app().await;
    // The patient's practice is the last of the chain.
    let chain = organisation_chain(&app, "X", 6).await;
    let leaf = chain[5].clone();
    let mut body = patient(NHS[0], "Iter", "Ida", "1960-02-02", "female");
    body["generalPractitioner"] = json!([{"reference": format!("Organization/{leaf}")}]);
    let p = app.create(&body).await;
    let orgs = |b: &serde_json::Value| {
        let mut v: Vec<String> = entry_refs(b)
            .into_iter()
            .filter(|r| r.starts_with("Organization/"))
            .collect();
        v.sort();
        v
    };
    let refs = |ids: &[String]| {
        let mut v: Vec<String> = ids.iter().map(|i| format!("Organization/{i}")).collect();
        v.sort();
        v
    };
    let notes = |b: &serde_json::Value| {
        b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "outcome")
            .map(|e| e["resource"].to_string())
            .collect::<String>()
    };

    // Without :iterate the include stops at the practice.
    let b = app
        .search(&format!(
            "Patient?_id={p}&_include=Patient:general-practitioner"
        ))
        .await;
    assert_eq!(orgs(&b), refs(&chain[5..]));
    // With it: the practice, then three levels above it; the bound is said.
    let q = format!(
        "Patient?_id={p}&_include=Patient:general-practitioner&_include:iterate=Organization:partof"
    );
    let b = app.search(&q).await;
    assert_eq!(orgs(&b), refs(&chain[2..]), "{b}");
    assert!(notes(&b).contains("3 levels"), "{b}");
    assert!(
        link(&b, "self").is_some_and(|s| s
            .replace("%3A", ":")
            .contains("_include:iterate=Organization:partof")),
        "{b}"
    );
    // STU3's :recurse is the same.
    let b = app
        .search(&format!(
            "Patient?_id={p}&_include=Patient:general-practitioner&_include:recurse=Organization:partof"
        ))
        .await;
    assert_eq!(orgs(&b), refs(&chain[2..]));
    // A chain within the bound is complete.
    let b = app
        .search(&format!(
            "Organization?_id={}&_include:iterate=Organization:partof",
            chain[3]
        ))
        .await;
    assert_eq!(orgs(&b), refs(&chain[..4]));

    // Reverse: the organisations below the top, level by level, and the patients of those found.
    let b = app
        .search(&format!(
            "Organization?_id={}&_revinclude:iterate=Organization:partof&_revinclude:iterate=Patient:general-practitioner",
            chain[2]
        ))
        .await;
    assert_eq!(orgs(&b), refs(&chain[2..]));
    assert!(
        entry_refs(&b).contains(&format!("Patient/{p}")),
        "the practice's patient: {b}"
    );
    let b = app
        .search(&format!(
            "Organization?_id={}&_revinclude=Organization:partof",
            chain[2]
        ))
        .await;
    assert_eq!(orgs(&b), refs(&chain[2..4]));

    // `*`: every reference parameter of the searched type, or pointing to it.
    let b = app.search(&format!("Patient?_id={p}&_include=*")).await;
    assert_eq!(orgs(&b), refs(&chain[5..]));
    let b = app
        .search(&format!("Organization?_id={leaf}&_revinclude=*"))
        .await;
    assert!(
        entry_refs(&b).contains(&format!("Patient/{p}")),
        "the practice's patient: {b}"
    );
    let b = app
        .search(&format!(
            "Organization?_id={}&_revinclude=Organization:*",
            chain[4]
        ))
        .await;
    assert_eq!(orgs(&b), refs(&chain[4..]));

    // Without :iterate an _include starts from the searched type.
    let d = app
        .get(&format!("Patient?_id={p}&_include=Organization:partof"))
        .await
        .assert_outcome(400, "invalid");
    assert!(
        d.contains("must start with the searched type Patient"),
        "{d}"
    );
    let d = app
        .get(&format!("Patient?_id={p}&_revinclude=Slot:*"))
        .await
        .assert_outcome(400, "invalid");
    assert!(
        d.contains("Slot has no reference parameter that points to Patient"),
        "{d}"
    );
    // The CapabilityStatement offers `*`.
    let cs = app.get("metadata").await.json();
    let org = cs["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "Organization")
        .expect("Organization")
        .clone();
    for list in ["searchInclude", "searchRevInclude"] {
        assert!(
            org[list]
                .as_array()
                .is_some_and(|l| l.contains(&json!("*"))),
            "{list}: {org}"
        );
    }
}

/// Chained parameters follow up to three references (`a.b.c.d=…`), each level naming its type
/// when the reference may point to several; a fourth is refused, naming the limit.
#[actix_web::test]
async fn chains_follow_up_to_three_references() {
    let app = spawn_app().await;
    let chain = organisation_chain(&app, "Y", 4).await;
    let mut body = patient(NHS[0], "Chain", "Cleo", "1970-07-07", "female");
    body["generalPractitioner"] = json!([{"reference": format!("Organization/{}", chain[3])}]);
    let p = app.create(&body).await;
    let other = app
        .create(&patient(NHS[1], "Chain", "Otto", "1971-07-07", "male"))
        .await;
    let ods = "https://fhir.nhs.uk/Id/ods-organization-code";
    let found = |q: String| {
        let app = &app;
        async move { sorted(match_ids(&app.search(&q).await)) }
    };
    // Two and three references: the practice's parent's (and grandparent's) code.
    assert_eq!(
        found(format!(
            "Patient?general-practitioner:Organization.partof.identifier={ods}|Y20"
        ))
        .await,
        vec![p.clone()]
    );
    assert_eq!(
        found(format!(
            "Patient?general-practitioner:Organization.partof.partof.identifier={ods}|Y10"
        ))
        .await,
        vec![p.clone()]
    );
    assert!(found(format!(
        "Patient?general-practitioner:Organization.partof.partof.identifier={ods}|Y20"
    ))
    .await
    .is_empty());
    // With :missing and _id at the end of a chain.
    assert_eq!(
        found(format!(
            "Patient?general-practitioner:Organization.partof.partof._id={}",
            chain[1]
        ))
        .await,
        vec![p.clone()]
    );
    assert_eq!(
        found("Patient?general-practitioner:Organization.partof.partof:missing=false".into()).await,
        vec![p.clone()]
    );
    assert!(
        found("Patient?general-practitioner:Organization.partof.partof:missing=true".into())
            .await
            .is_empty()
    );
    // Both patients are there to be found.
    assert_eq!(
        found("Patient?family=chain".into()).await,
        sorted(vec![p.clone(), other.clone()])
    );
    // A fourth reference is refused, naming the limit.
    let d = app
        .get(&format!(
            "Patient?general-practitioner:Organization.partof.partof.partof.identifier={ods}|Y00"
        ))
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("at most 3 levels of chaining"), "{d}");
}

/// NHS numbers in the test range 999 000 0000–999 999 9999 that pass Modulus 11, from `from`.
fn test_nhs_numbers(from: u32, n: usize) -> Vec<String> {
    (from..)
        .filter_map(|k| {
            let body = format!("999{k:06}");
            let sum: u32 = body
                .chars()
                .zip((2..=10).rev())
                .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
                .sum();
            match 11 - sum % 11 {
                10 => None,
                11 => Some(format!("{body}0")),
                check => Some(format!("{body}{check}")),
            }
        })
        .take(n)
        .collect()
}

/// A page includes at most `MAX_INCLUDED` (1,000) resources, and says when it left some out.
#[actix_web::test]
async fn a_page_includes_at_most_a_thousand_resources() {
    let app = spawn_app().await;
    let practice = app.create(&organization("Z10", "Busy Practice")).await;
    let numbers = test_nhs_numbers(100, 1001);
    for chunk in numbers.chunks(1000) {
        let entries: Vec<serde_json::Value> = chunk
            .iter()
            .map(|nhs| {
                let mut p = patient(nhs, "Many", "Pat", "1980-01-01", "female");
                p["generalPractitioner"] =
                    json!([{"reference": format!("Organization/{practice}")}]);
                json!({"resource": p, "request": {"method": "POST", "url": "Patient"}})
            })
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let r = app
            .send(
                app.req("POST", "/FHIR/R4")
                    .insert_header(("Content-Type", "application/fhir+json")),
                Some(bundle.to_string().into_bytes()),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let b = app
        .search(&format!(
            "Organization?_id={practice}&_revinclude=Patient:general-practitioner"
        ))
        .await;
    let entries = b["entry"].as_array().expect("entries");
    let included = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .count();
    assert_eq!(included, 1000);
    assert!(
        entries.iter().any(|e| e["search"]["mode"] == "outcome"
            && e["resource"]
                .to_string()
                .contains("At most 1000 resources are included")),
        "no note of what was left out"
    );
    // Within the bound, no note.
    let b = app
        .search(&format!(
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}&_include=Patient:general-practitioner",
            numbers[0]
        ))
        .await;
    assert_eq!(entry_refs(&b).len(), 2, "{b}");
}

/// Index rows made under an older definition are rebuilt from the resources' content: at
/// start-up for a type whose definition's fingerprint is not the one recorded (only that
/// type), and by `ers-server reindex TYPE`. Rows another definition made go, missing ones come
/// back, and the `_access` rows (who may see a referral) stay.
#[actix_web::test]
async fn the_search_index_is_rebuilt_from_content_when_its_definition_changes() {
    let w = crate::referrals::world().await;
    let pid = w
        .app
        .create(&patient(NHS[0], "Reindexa", "Rhea", "1975-05-05", "female"))
        .await;
    let rid = w.new_referral(&[&w.bookable], "ROUTINE").await;
    let pool = ers_schema::build_pool(&w.app.database_url, 1).expect("pool");
    let sql = |q: &str| w.app.execute_sql(q);
    let count = |q: &str| -> i64 {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(q)
            .get_result::<N>(&mut pool.get().expect("connection"))
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .n
    };
    // As an older definition would have left them: the family name and the referral's state
    // not indexed, and a parameter that no longer exists.
    sql(&format!(
        "DELETE FROM search_strings WHERE res_type = 'Patient' AND res_id = '{pid}' AND param = 'family'; \
         INSERT INTO search_tokens (res_type, res_id, param, system, code) VALUES ('Patient', '{pid}', 'obsolete', '', 'x'); \
         DELETE FROM search_tokens WHERE res_type = 'ServiceRequest' AND res_id = '{rid}' AND param = 'state'"
    ));
    let stray = format!(
        "SELECT count(*) AS n FROM search_tokens WHERE res_id = '{pid}' AND param = 'obsolete'"
    );
    let found = async |app: &TestApp| {
        app.search("Patient?family=Reindexa").await["total"]
            .as_i64()
            .expect("total")
    };
    let referral_found = async |token: &str, org: &str| {
        let r = w
            .app
            .send(
                w.app.as_user(
                    token,
                    "GET",
                    &format!("ServiceRequest?_id={rid}&state=NOT_BOOKED"),
                    "REFERRING_CLINICIAN",
                    org,
                ),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["total"].as_i64().expect("total")
    };
    assert_eq!(found(&w.app).await, 0);
    assert_eq!(referral_found(&w.rc, "R69").await, 0);
    let server = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ers-server"))
            .args(args)
            .env("ERS_DATABASE_URL", &w.app.database_url)
            .env("ERS_SEED", "none")
            .env("RUST_LOG", "warn")
            .output()
            .expect("ers-server runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let reindex = |args: &[&str]| server(&[&["reindex"], args].concat());
    let index_check = async |app: &TestApp| {
        let r = app.get("/_ready").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["checks"]["searchIndex"].clone()
    };
    // With every definition as recorded, `migrate` (as a starting server) changes nothing.
    let (ok, out, err) = server(&["migrate"]);
    assert!(ok && !out.contains("reindexed"), "{out}{err}");
    assert_eq!(count(&stray), 1);
    assert_eq!(index_check(&w.app).await, json!({"status": "pass"}));
    // Patient's definition recorded otherwise: the instances say so when asked if they are
    // ready, and are; the next to start reindexes Patient alone, in the background.
    sql("UPDATE counters SET value = 0 WHERE name = 'index:Patient'");
    assert_eq!(
        index_check(&w.app).await,
        json!({"status": "warn", "reindexing": ["Patient"]})
    );
    let after = spawn_on(&w.app.database_url, ers_api::config::Settings::default()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while index_check(&after).await["status"] != "pass" {
        assert!(
            std::time::Instant::now() < deadline,
            "the reindex never ended"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(found(&after).await, 1);
    assert_eq!(count(&stray), 0);
    assert_ne!(
        count("SELECT value AS n FROM counters WHERE name = 'index:Patient'"),
        0,
        "the new fingerprint is recorded"
    );
    assert_eq!(referral_found(&w.rc, "R69").await, 0);
    // `ers-server reindex ServiceRequest`: the referral's state again, seen by its referrer
    // only, as before; a second run finds nothing to change; a type not stored is refused.
    let (ok, out, err) = reindex(&["ServiceRequest"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("ServiceRequest: ") && out.contains(", 1 reindexed"),
        "{out}"
    );
    assert_eq!(referral_found(&w.rc, "R69").await, 1);
    let other_gp = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    assert_eq!(referral_found(&other_gp, "R68").await, 0);
    let (ok, out, err) = reindex(&["ServiceRequest"]);
    assert!(ok && out.contains(", 0 reindexed"), "{out}{err}");
    let (ok, _, err) = reindex(&["Nope"]);
    assert!(
        !ok && err.contains("'Nope' is not a stored resource type"),
        "{err}"
    );
    // An index a newer release brought up to date is left as it is by this one (a rollback,
    // or an older instance restarting during a rolling deploy), and nothing is said to be
    // behind; at this release's generation again, Patient is reindexed.
    let patient_mark = "SELECT value AS n FROM counters WHERE name = 'index:Patient'";
    sql(&format!(
        "DELETE FROM counters WHERE name = 'index:generation'; \
         INSERT INTO counters (name, value) VALUES ('index:generation', {}); \
         UPDATE counters SET value = 0 WHERE name = 'index:Patient'",
        ers_api::service::reindex::GENERATION + 1
    ));
    let (ok, out, err) = server(&["migrate"]);
    assert!(ok && !out.contains("reindexed"), "{out}{err}");
    assert_eq!(count(patient_mark), 0);
    assert_eq!(index_check(&w.app).await, json!({"status": "pass"}));
    sql(&format!(
        "UPDATE counters SET value = {} WHERE name = 'index:generation'",
        ers_api::service::reindex::GENERATION - 1
    ));
    assert_eq!(
        index_check(&w.app).await,
        json!({"status": "warn", "reindexing": ["Patient"]})
    );
    let (ok, out, err) = server(&["migrate"]);
    assert!(ok && out.contains("Patient: "), "{out}{err}");
    assert_ne!(count(patient_mark), 0);
    assert_eq!(
        count("SELECT value AS n FROM counters WHERE name = 'index:generation'"),
        ers_api::service::reindex::GENERATION
    );
}

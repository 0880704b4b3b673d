//! System announcements: published by operational users for an audience and a window; each
//! user sees those for their organisation and role, newest first, and marks them read.

use crate::helpers::*;
use crate::referrals::world;
use serde_json::{json, Value};

fn announcement(title: &str, from_days: i64, to_days: i64, orgs: &[&str], roles: &[&str]) -> Value {
    let at = |d: i64| {
        (chrono::Utc::now() + chrono::Duration::days(d))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut a = json!({
        "resourceType": "CommunicationRequest",
        "status": "active",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "notification"}]}],
        "priority": "urgent",
        "payload": [{"contentString": title}, {"contentString": format!("{title}: details")}],
        "occurrencePeriod": {"start": at(from_days), "end": at(to_days)},
        "recipient": orgs.iter().map(|o| json!({"reference": format!("Organization/{o}")})).collect::<Vec<_>>(),
        "extension": roles.iter().map(|r| json!({"url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AnnouncementAudienceRole", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-BusinessFunction", "code": r}})).collect::<Vec<_>>(),
    });
    // (No audience: everyone; FHIR has no empty arrays.)
    let o = a.as_object_mut().expect("object");
    o.retain(|_, v| v.as_array().is_none_or(|x| !x.is_empty()));
    a
}

fn titles(b: &Value) -> Vec<String> {
    b["entry"]
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
async fn announcements_reach_their_audience_newest_first_and_can_be_marked_read() {
    let w = world().await;
    let org = |ods: &str| {
        let app = &w.app;
        let ods = ods.to_owned();
        async move {
            app.search(&format!(
                "Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|{ods}"
            ))
            .await["entry"][0]["resource"]["id"]
                .as_str()
                .expect("organisation")
                .to_owned()
        }
    };
    let (r69, rr8) = (org("R69").await, org("RR8").await);
    let definer = sign(&claims("555031998110", &[("SERVICE_DEFINER", "RCD")]));
    let publish = |body: Value| {
        let (app, definer) = (&w.app, definer.clone());
        async move {
            app.send(
                app.as_user(
                    &definer,
                    "POST",
                    "CommunicationRequest",
                    "SERVICE_DEFINER",
                    "RCD",
                )
                .insert_header(("Content-Type", "application/fhir+json")),
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    for body in [
        announcement("Everyone: maintenance on Sunday", -1, 2, &[], &[]),
        announcement("Expired: last week's release", -9, -2, &[], &[]),
        announcement("RR8 only: clinic moves", -1, 2, &[&rr8], &[]),
    ] {
        let r = publish(body).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // Published a moment later: newest first.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    let r = publish(announcement(
        "R69 referring clinicians: new form",
        -1,
        2,
        &[&r69],
        &["REFERRING_CLINICIAN"],
    ))
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let rr8_only = {
        let b = w.app.search("CommunicationRequest?_count=50").await;
        // (The default test user acts at R69: it does not see RR8's.)
        assert!(!titles(&b).iter().any(|t| t.starts_with("RR8")), "{b}");
        b
    };
    drop(rr8_only);

    let list = |token: String, bf: &'static str, ods: &'static str, query: &'static str| {
        let app = &w.app;
        async move {
            let r = app
                .send(
                    app.as_user(
                        &token,
                        "GET",
                        &format!("CommunicationRequest/$ers.announcements{query}"),
                        bf,
                        ods,
                    ),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
        }
    };
    let rc = w.rc.clone();
    let b = list(rc.clone(), "REFERRING_CLINICIAN", "R69", "").await;
    assert_eq!(
        titles(&b),
        [
            "R69 referring clinicians: new form",
            "Everyone: maintenance on Sunday"
        ]
    );
    let b = list(rc.clone(), "REFERRING_CLINICIAN", "R69", "?all=true").await;
    assert_eq!(titles(&b).len(), 3, "{b}");
    // The same POSTed with a Parameters body; a flag is true or false, nothing else.
    let path = "CommunicationRequest/$ers.announcements";
    let all =
        json!({"resourceType": "Parameters", "parameter": [{"name": "all", "valueBoolean": true}]});
    let r = w
        .app
        .send(
            w.app
                .as_user(&rc, "POST", path, "REFERRING_CLINICIAN", "R69")
                .insert_header(("Content-Type", "application/fhir+json")),
            Some(all.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(titles(&r.json()), titles(&b));
    let r = w
        .app
        .send(
            w.app.as_user(
                &rc,
                "GET",
                &format!("{path}?all=yes"),
                "REFERRING_CLINICIAN",
                "R69",
            ),
            None,
        )
        .await;
    r.assert_outcome(400, "value");
    assert_eq!(r.issue_at().1, "all");
    let spc = sign(&claims(
        "555032006106",
        &[("SERVICE_PROVIDER_CLINICIAN", "RCD")],
    ));
    let b = list(spc, "SERVICE_PROVIDER_CLINICIAN", "RCD", "").await;
    assert_eq!(titles(&b), ["Everyone: maintenance on Sunday"]);

    // Marked read: flagged, and gone from the unread view.
    let b = list(rc.clone(), "REFERRING_CLINICIAN", "R69", "").await;
    let everyone = b["entry"][1]["resource"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = w
        .app
        .send(
            w.as_rc(
                "POST",
                &format!("CommunicationRequest/{everyone}/$ers.markRead"),
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let b = list(rc.clone(), "REFERRING_CLINICIAN", "R69", "").await;
    assert!(
        b["entry"][1]["search"]["extension"][0]["valueDateTime"].is_string(),
        "{b}"
    );
    assert!(b["entry"][0]["search"].get("extension").is_none(), "{b}");
    let b = list(rc.clone(), "REFERRING_CLINICIAN", "R69", "?unread=true").await;
    assert_eq!(titles(&b), ["R69 referring clinicians: new form"]);

    // Only operational users publish; an announcement needs its window.
    let r = w
        .app
        .send(
            w.as_rc("POST", "CommunicationRequest"),
            Some(announcement("x", -1, 1, &[], &[]).to_string().into_bytes()),
        )
        .await;
    r.assert_outcome(403, "forbidden");
    let mut bad = announcement("No window", -1, 1, &[], &[]);
    bad.as_object_mut()
        .expect("object")
        .shift_remove("occurrencePeriod");
    let r = publish(bad).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("CommunicationRequest.occurrencePeriod"),
        "{}",
        r.text()
    );
}

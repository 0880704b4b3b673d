//! Authentication and authorisation at the gate: every failure is a 401 or 403
//! OperationOutcome that says what was wrong.

use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ers_api::config::{AppRegistration, Mode, OidcSettings, SeedMode, Settings};
use ers_api::security::jwt::{Jwks, SigningKey};
use serde_json::{json, Value};

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

async fn get_with(app: &TestApp, token: &str) -> Reply {
    app.send(
        app.as_user(token, "GET", "Patient", "REFERRING_CLINICIAN", "R69"),
        None,
    )
    .await
}

fn rc_r69(mut c: Value) -> String {
    c["ers_roles"] = json!([{"business_function": "REFERRING_CLINICIAN", "org": "R69"}]);
    sign(&c)
}

#[actix_web::test]
async fn tokens_are_required_and_checked() {
    let app = spawn_app().await;
    // No token: 401 with a Bearer challenge.
    let r = app
        .send(
            app.bare("GET", "Patient")
                .insert_header((BF, "REFERRING_CLINICIAN"))
                .insert_header((ODS, "R69")),
            None,
        )
        .await;
    let d = r.assert_outcome(401, "login");
    assert!(d.contains("Authorization"), "{d}");
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("Bearer"));
    let base = claims(TEST_USER, &[]);
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "not-a-jwt".into(), "well-formed"),
        (
            "expired",
            rc_r69({
                let mut c = base.clone();
                c["exp"] = json!(now - 600);
                c
            }),
            "expired",
        ),
        (
            "not yet valid",
            rc_r69({
                let mut c = base.clone();
                c["nbf"] = json!(now + 600);
                c
            }),
            "not valid before",
        ),
        (
            "wrong issuer",
            rc_r69({
                let mut c = base.clone();
                c["iss"] = json!("https://evil.example");
                c
            }),
            "issuer",
        ),
        (
            "wrong audience",
            rc_r69({
                let mut c = base.clone();
                c["aud"] = json!("someone-else");
                c
            }),
            "audience",
        ),
        (
            "too-low IAL",
            rc_r69({
                let mut c = base.clone();
                c["id_assurance_level"] = json!("2");
                c
            }),
            "id_assurance_level",
        ),
        (
            "too-low AAL",
            rc_r69({
                let mut c = base.clone();
                c["authentication_assurance_level"] = json!("1");
                c
            }),
            "authentication_assurance_level",
        ),
        (
            "no assurance",
            rc_r69({
                let mut c = base.clone();
                c.as_object_mut()
                    .expect("obj")
                    .shift_remove("id_assurance_level");
                c
            }),
            "id_assurance_level",
        ),
    ];
    for (what, token, expect) in cases {
        let d = get_with(&app, &token).await.assert_outcome(401, "login");
        assert!(d.contains(expect), "{what}: {d}");
    }
    // alg none, and HS256 "signed" with the public key as the HMAC secret.
    let payload = b64(rc_r69(base.clone())
        .split('.')
        .nth(1)
        .map(|p| URL_SAFE_NO_PAD.decode(p).expect("claims"))
        .expect("payload")
        .as_slice());
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    assert!(get_with(&app, &none)
        .await
        .assert_outcome(401, "login")
        .contains("'none'"));
    let header = b64(br#"{"alg":"HS256","typ":"JWT","kid":"test-key-1"}"#);
    let public_pem = std::fs::read_to_string(&idp().1).expect("jwks");
    let mac = openssl::sign::Signer::new(
        openssl::hash::MessageDigest::sha256(),
        &openssl::pkey::PKey::hmac(public_pem.as_bytes()).expect("hmac key"),
    )
    .and_then(|mut s| {
        s.update(format!("{header}.{payload}").as_bytes())?;
        s.sign_to_vec()
    })
    .expect("mac");
    let hs = format!("{header}.{payload}.{}", b64(&mac));
    assert!(get_with(&app, &hs)
        .await
        .assert_outcome(401, "login")
        .contains("HS256"));
    // Forged: signed by another key that claims the same kid.
    let forged = SigningKey::generate("test-key-1").expect("key").sign(&json!({"iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "sub": TEST_USER, "exp": now + 600, "id_assurance_level": "3", "authentication_assurance_level": "3", "ers_roles": [{"business_function": "REFERRING_CLINICIAN", "org": "R69"}]})).expect("sign");
    assert!(get_with(&app, &forged)
        .await
        .assert_outcome(401, "login")
        .contains("signature"));
    // Unknown kid.
    let stranger = SigningKey::generate("unknown-kid")
        .expect("key")
        .sign(&claims(TEST_USER, &[("REFERRING_CLINICIAN", "R69")]))
        .expect("sign");
    assert!(get_with(&app, &stranger)
        .await
        .assert_outcome(401, "login")
        .contains("unknown-kid"));
    // And a good one.
    assert_eq!(get_with(&app, &rc_r69(base)).await.status, 200);
}

#[actix_web::test]
async fn key_rotation_reloads_the_jwks_on_an_unknown_kid() {
    let path = std::env::temp_dir().join(format!(
        "ers-rotation-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    let old = SigningKey::generate("old").expect("key");
    std::fs::write(
        &path,
        serde_json::to_vec(&Jwks {
            keys: vec![old.public_jwk()],
        })
        .expect("jwks"),
    )
    .expect("write");
    let app = spawn_configured(Settings {
        oidc: Some(OidcSettings {
            issuer: TEST_ISSUER.into(),
            audience: TEST_AUDIENCE.into(),
            jwks: path.display().to_string(),
        }),
        seed: SeedMode::None,
        ..Settings::default()
    })
    .await;
    let c = claims(TEST_USER, &[("REFERRING_CLINICIAN", "R69")]);
    assert_eq!(
        get_with(&app, &old.sign(&c).expect("sign")).await.status,
        200
    );
    let new = SigningKey::generate("new").expect("key");
    std::fs::write(
        &path,
        serde_json::to_vec(&Jwks {
            keys: vec![new.public_jwk()],
        })
        .expect("jwks"),
    )
    .expect("write");
    assert_eq!(
        get_with(&app, &new.sign(&c).expect("sign")).await.status,
        200,
        "new key picked up"
    );
}

#[actix_web::test]
async fn the_acting_role_and_organisation_must_be_held() {
    let app = spawn_app().await;
    let token = sign(&claims("999000000002", &[("REFERRING_CLINICIAN", "R69")]));
    assert_eq!(
        app.send(
            app.as_user(&token, "GET", "Patient", "REFERRING_CLINICIAN", "R69"),
            None
        )
        .await
        .status,
        200
    );
    let d = app
        .send(
            app.as_user(
                &token,
                "GET",
                "Patient",
                "SERVICE_PROVIDER_CLINICIAN",
                "R69",
            ),
            None,
        )
        .await
        .assert_outcome(403, "forbidden");
    assert!(
        d.contains("SERVICE_PROVIDER_CLINICIAN") && d.contains("R69") && d.contains("999000000002"),
        "{d}"
    );
    let d = app
        .send(
            app.as_user(&token, "GET", "Patient", "REFERRING_CLINICIAN", "R68"),
            None,
        )
        .await
        .assert_outcome(403, "forbidden");
    assert!(d.contains("R68"), "{d}");
    // A user token may not claim the application role.
    let d = app
        .send(
            app.as_user(
                &token,
                "GET",
                "Patient",
                "PROVIDER_AUTHORISED_APPLICATION",
                "R69",
            ),
            None,
        )
        .await
        .assert_outcome(403, "forbidden");
    assert!(d.contains("application"), "{d}");
}

#[actix_web::test]
async fn roles_come_from_practitioner_roles_when_the_token_has_none() {
    let app = spawn_app().await;
    let org = app.create(&organization("R69", "North")).await;
    let pr = app.create(&json!({"resourceType": "Practitioner", "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "123456789012"}]})).await;
    app.create(&json!({"resourceType": "PractitionerRole", "practitioner": {"reference": format!("Practitioner/{pr}")}, "organization": {"reference": format!("Organization/{org}")}, "code": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-BusinessFunction", "code": "REFERRING_ADMIN"}]}]})).await;
    let mut c = claims("123456789012", &[]);
    c.as_object_mut().expect("obj").shift_remove("ers_roles");
    let token = sign(&c);
    assert_eq!(
        app.send(
            app.as_user(&token, "GET", "Patient", "REFERRING_ADMIN", "R69"),
            None
        )
        .await
        .status,
        200
    );
    app.send(
        app.as_user(&token, "GET", "Patient", "REFERRING_CLINICIAN", "R69"),
        None,
    )
    .await
    .assert_outcome(403, "forbidden");
}

/// A GET with the bearer token alone: no role headers.
fn bearer_get(app: &TestApp, path: &str, token: &str) -> awc::ClientRequest {
    app.bare("GET", path)
        .insert_header(("Authorization", format!("Bearer {token}")))
}

/// A user token whose roles come from the directory (no `ers_roles` claim).
fn directory_user(sds: &str) -> String {
    let mut c = claims(sds, &[]);
    c.as_object_mut().expect("obj").shift_remove("ers_roles");
    sign(&c)
}

#[actix_web::test]
async fn a_user_lists_their_roles_and_an_admin_whom_they_act_for() {
    let app = spawn_app().await;
    let north = app.create(&organization("R69", "North")).await;
    let acute = app.create(&organization("RCD", "Acute")).await;
    let elsewhere = app.create(&organization("RR8", "Elsewhere")).await;
    let practitioner = |sds: &str, active: bool| json!({"resourceType": "Practitioner", "active": active, "identifier": [{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": sds}]});
    let role = |who: &str, org: &str, bf: &str, active: bool| json!({"resourceType": "PractitionerRole", "active": active, "practitioner": {"reference": format!("Practitioner/{who}")}, "organization": {"reference": format!("Organization/{org}")}, "code": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-BusinessFunction", "code": bf}]}]});
    // e-RS A030: a user holds one role at R69, one no longer (inactive), and one at RCD.
    let me = app.create(&practitioner("200000000001", true)).await;
    let held = app
        .create(&role(&me, &north, "REFERRING_ADMIN", true))
        .await;
    app.create(&role(&me, &north, "REFERRING_CLINICIAN", false))
        .await;
    let also = app
        .create(&role(&me, &acute, "SERVICE_PROVIDER_ADMIN", true))
        .await;
    let token = directory_user("200000000001");
    let r = app
        .send(bearer_get(&app, "PractitionerRole", &token), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let shown = |mode: &str| -> Vec<String> {
        let mut ids: Vec<String> = b["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["search"]["mode"] == mode)
            .map(|e| e["resource"]["id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(b["total"], 2);
    let mut roles = vec![held, also];
    roles.sort();
    assert_eq!(shown("match"), roles);
    let mut orgs = vec![north.clone(), acute.clone()];
    orgs.sort();
    assert_eq!(
        shown("include"),
        orgs,
        "each role's organisation, for its ODS code"
    );
    // Search parameters without the headers are refused; with them it is the search.
    let d = app
        .send(
            bearer_get(&app, "PractitionerRole?active=true", &token),
            None,
        )
        .await
        .assert_outcome(400, "invalid");
    assert!(d.contains("A030") && d.contains("active"), "{d}");
    let all = app
        .send(
            app.as_user(&token, "GET", "PractitionerRole", "REFERRING_ADMIN", "R69"),
            None,
        )
        .await;
    assert_eq!(all.json()["total"], 3, "{}", all.text());
    // e-RS A040: the clinicians an SPCA at RCD may act for: active SERVICE_PROVIDER_CLINICIANs
    // there, not an inactive one, nor one at another organisation.
    let spc = app.create(&practitioner("200000000002", true)).await;
    app.create(&role(&spc, &acute, "SERVICE_PROVIDER_CLINICIAN", true))
        .await;
    let retired = app.create(&practitioner("200000000003", false)).await;
    app.create(&role(&retired, &acute, "SERVICE_PROVIDER_CLINICIAN", true))
        .await;
    let away = app.create(&practitioner("200000000004", true)).await;
    app.create(&role(&away, &elsewhere, "SERVICE_PROVIDER_CLINICIAN", true))
        .await;
    let admin = app.create(&practitioner("200000000005", true)).await;
    app.create(&role(
        &admin,
        &acute,
        "SERVICE_PROVIDER_CLINICIAN_ADMIN",
        true,
    ))
    .await;
    let spca = directory_user("200000000005");
    let as_spca = |path: &str| {
        app.as_user(
            &spca,
            "GET",
            path,
            "SERVICE_PROVIDER_CLINICIAN_ADMIN",
            "RCD",
        )
    };
    // Without NHSD-eRS-On-Behalf-Of-User-ID: its value is what this finds.
    let r = app
        .send(as_spca("Practitioner?_query=onBehalfOf"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["total"], 1, "{}", r.text());
    assert_eq!(b["entry"][0]["resource"]["id"], spc.as_str());
    assert_eq!(
        b["entry"][0]["resource"]["identifier"][0]["value"],
        "200000000002"
    );
    // ... and which the SPCA then names to act.
    let r = app
        .send(
            as_spca("Patient").insert_header(("NHSD-eRS-On-Behalf-Of-User-ID", "200000000002")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.send(as_spca("Patient"), None)
        .await
        .assert_outcome(400, "required");
    // Nobody else acts for another; another named query is not ignored.
    let d = app
        .get("Practitioner?_query=onBehalfOf")
        .await
        .assert_outcome(403, "forbidden");
    assert!(d.contains("SERVICE_PROVIDER_CLINICIAN_ADMIN"), "{d}");
    for q in ["Practitioner?_query=everyone", "Patient?_query=onBehalfOf"] {
        let d = app.get(q).await.assert_outcome(400, "invalid");
        assert!(d.contains("not a named query"), "{q}: {d}");
    }
    app.send(as_spca("Practitioner?_query=onBehalfOf&name=x"), None)
        .await
        .assert_outcome(400, "invalid");
}

#[actix_web::test]
async fn sandbox_tokens_in_one_call_and_never_in_production() {
    let app = spawn_with(SeedMode::Sandbox).await;
    let r = app
        .send(
            app.bare("POST", "/oauth2/sandbox/token")
                .insert_header(("Content-Type", "application/x-www-form-urlencoded")),
            Some(b"user_id=021600556514".to_vec()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().expect("token").to_owned();
    assert_eq!(r.json()["token_type"], "Bearer");
    assert_eq!(
        app.send(
            app.as_user(&token, "GET", "Patient", "REFERRING_CLINICIAN", "R69"),
            None
        )
        .await
        .status,
        200
    );
    app.send(
        app.as_user(
            &token,
            "GET",
            "Patient",
            "SERVICE_PROVIDER_CLINICIAN",
            "RCD",
        ),
        None,
    )
    .await
    .assert_outcome(403, "forbidden");
    // A role given to the user works at once, though the instance keeps the roles it found.
    let practitioner = app
        .search("Practitioner?identifier=https://fhir.nhs.uk/Id/sds-user-id|021600556514")
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("the sandbox clinician")
        .to_owned();
    let rcd = app
        .search("Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|RCD")
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("RCD")
        .to_owned();
    app.create(&serde_json::json!({
        "resourceType": "PractitionerRole",
        "active": true,
        "practitioner": {"reference": format!("Practitioner/{practitioner}")},
        "organization": {"reference": format!("Organization/{rcd}")},
        "code": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-BusinessFunction", "code": "SERVICE_PROVIDER_CLINICIAN"}]}],
    }))
    .await;
    let r = app
        .send(
            app.as_user(
                &token,
                "GET",
                "Patient",
                "SERVICE_PROVIDER_CLINICIAN",
                "RCD",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .send(
            app.bare("POST", "/oauth2/sandbox/token")
                .insert_header(("Content-Type", "application/x-www-form-urlencoded")),
            Some(b"user_id=999999999999".to_vec()),
        )
        .await;
    r.assert_outcome(400, "invalid");

    // Production mode refuses to start with the sandbox issuer on, or without an identity provider.
    let prod = Settings {
        mode: Mode::Production,
        sandbox_issuer: true,
        ..Settings::default()
    };
    let e = ers_api::security::Authenticator::from_settings(&prod)
        .await
        .err()
        .expect("refused");
    assert!(e.contains("sandbox"), "{e}");
    let prod = Settings {
        mode: Mode::Production,
        sandbox_issuer: false,
        ..Settings::default()
    };
    let e = ers_api::security::Authenticator::from_settings(&prod)
        .await
        .err()
        .expect("refused");
    assert!(
        e.contains("ERS_OIDC_ISSUER") || e.contains("ERS_TOKEN_SIGNING_KEY"),
        "{e}"
    );
}

/// A server with `settings` on which the application `test-app` (at RCD) is registered with
/// `key`.
async fn with_application(key: &SigningKey, settings: Settings) -> TestApp {
    spawn_configured(Settings {
        apps: vec![AppRegistration {
            client_id: "test-app".into(),
            ods: "RCD".into(),
            jwks: Jwks {
                keys: vec![key.public_jwk()],
            },
        }],
        seed: SeedMode::None,
        ..settings
    })
    .await
}

/// A client assertion of `test-app` signed with `key`, expiring at `exp`.
fn client_assertion(app: &TestApp, key: &SigningKey, exp: i64) -> String {
    key.sign(&json!({"iss": "test-app", "sub": "test-app", "aud": format!("{}/oauth2/token", app.root), "jti": uuid::Uuid::new_v4().to_string(), "exp": exp})).expect("sign")
}

/// `POST /oauth2/token` with a client assertion.
async fn exchange_assertion(app: &TestApp, assertion: String) -> Reply {
    let body = format!("grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}");
    app.send(
        app.bare("POST", "/oauth2/token")
            .insert_header(("Content-Type", "application/x-www-form-urlencoded")),
        Some(body.into_bytes()),
    )
    .await
}

#[actix_web::test]
async fn application_restricted_access_with_a_signed_client_assertion() {
    let app_key = SigningKey::generate("app-key").expect("key");
    let app = with_application(&app_key, Settings::default()).await;
    let now = chrono::Utc::now().timestamp();
    let assertion = |key: &SigningKey, exp: i64| client_assertion(&app, key, exp);
    let exchange = |a: String| exchange_assertion(&app, a);
    let first = assertion(&app_key, now + 120);
    let r = exchange(first.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().expect("token").to_owned();
    // The same assertion again is a replay.
    let d = exchange(first).await.assert_outcome(401, "login");
    assert!(d.contains("'jti'") && d.contains("used already"), "{d}");
    // An assertion without a jti is refused.
    let no_jti = app_key
        .sign(&json!({"iss": "test-app", "sub": "test-app", "aud": format!("{}/oauth2/token", app.root), "exp": now + 120}))
        .expect("sign");
    let d = exchange(no_jti).await.assert_outcome(401, "login");
    assert!(d.contains("'jti'"), "{d}");
    // No role headers: the role is PROVIDER_AUTHORISED_APPLICATION at the registered org.
    let r = app.send(bearer_get(&app, "Patient", &token), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // An application holds no user's roles: GET PractitionerRole is its search (not A030).
    let r = app
        .send(bearer_get(&app, "PractitionerRole", &token), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "searchset");
    // Sending role headers with an application token is refused.
    let d = app
        .send(
            app.as_user(&token, "GET", "Patient", "REFERRING_CLINICIAN", "R69"),
            None,
        )
        .await
        .assert_outcome(403, "forbidden");
    assert!(d.contains("application-restricted"), "{d}");
    // Assertions signed by another key, or living too long, are refused.
    exchange(assertion(
        &SigningKey::generate("app-key").expect("key"),
        now + 120,
    ))
    .await
    .assert_outcome(401, "login");
    let d = exchange(assertion(&app_key, now + 3600))
        .await
        .assert_outcome(401, "login");
    assert!(d.contains("5 minutes"), "{d}");
}

#[actix_web::test]
async fn callers_are_rate_limited_with_retry_after() {
    let app = spawn_configured(Settings {
        rate_limit_per_sec: 1,
        rate_limit_burst: 2,
        seed: SeedMode::None,
        ..Settings::default()
    })
    .await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let r = app.get("Patient").await;
        statuses.push(r.status.as_u16());
        last = Some(r);
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
    let r = last.expect("reply");
    r.assert_outcome(429, "throttled");
    assert!(r
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));
    // Another user has a budget of their own.
    let other = sign(&claims("999000000003", &[("REFERRING_CLINICIAN", "R69")]));
    assert_eq!(
        app.send(
            app.as_user(&other, "GET", "Patient", "REFERRING_CLINICIAN", "R69"),
            None
        )
        .await
        .status,
        200
    );
}

#[actix_web::test]
async fn a_request_counts_once_against_the_rate_limit() {
    // An application's header-less GET PractitionerRole is first asked whether it is a user
    // listing their roles (A030), then searched: its token is looked at twice, its budget
    // spent once.
    let app_key = SigningKey::generate("app-key").expect("key");
    let app = with_application(
        &app_key,
        Settings {
            rate_limit_per_sec: 1,
            rate_limit_burst: 2,
            ..Settings::default()
        },
    )
    .await;
    let assertion = client_assertion(&app, &app_key, chrono::Utc::now().timestamp() + 120);
    let r = exchange_assertion(&app, assertion).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().expect("token").to_owned();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = app
            .send(bearer_get(&app, "PractitionerRole", &token), None)
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429], "a burst of 2 is two requests");
}

#[actix_web::test]
async fn https_with_tls_1_2_or_later_only() {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
    use openssl::x509::{X509NameBuilder, X509};
    // A self-signed certificate for 127.0.0.1.
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "127.0.0.1").expect("cn");
    let name = name.build();
    let mut cert = X509::builder().expect("cert");
    cert.set_version(2).expect("v3");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("pubkey");
    cert.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    cert.set_not_after(&Asn1Time::days_from_now(1).expect("t"))
        .expect("na");
    cert.sign(&key, MessageDigest::sha256()).expect("sign");
    let dir = std::env::temp_dir().join(format!("ers-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.build().to_pem().expect("pem")).expect("write cert");
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
    let app = spawn_configured(Settings {
        tls: Some((
            cert_path.display().to_string(),
            key_path.display().to_string(),
        )),
        seed: SeedMode::None,
        ..Settings::default()
    })
    .await;
    let client = |max: Option<SslVersion>| {
        let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
        b.set_verify(SslVerifyMode::NONE);
        if let Some(v) = max {
            // Let the client offer old protocols, so that any refusal is the server's.
            b.set_security_level(0);
            b.set_cipher_list("DEFAULT@SECLEVEL=0").expect("ciphers");
            b.set_min_proto_version(Some(SslVersion::TLS1))
                .expect("min");
            b.set_max_proto_version(Some(v)).expect("max");
        }
        awc::Client::builder()
            .connector(awc::Connector::new().openssl(b.build()))
            .finish()
    };
    let url = app.root.replace("http://", "https://") + "/_ping";
    let mut r = client(None).get(&url).send().await.expect("https works");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let _ = r.body().await;
    // TLS 1.1 and older are refused at the handshake.
    assert!(
        client(Some(SslVersion::TLS1_1))
            .get(&url)
            .send()
            .await
            .is_err(),
        "TLS 1.1 must be refused"
    );
}

#[actix_web::test]
async fn oversized_headers_are_431() {
    let app = spawn_app().await;
    let big = "a".repeat(20 * 1024);
    let r = app
        .send(
            app.req("GET", "Patient")
                .insert_header(("X-Padding", big.as_str())),
            None,
        )
        .await;
    let d = r.assert_outcome(431, "too-costly");
    assert!(d.contains("headers"), "{d}");
}

#[actix_web::test]
async fn injection_strings_in_every_search_parameter_are_harmless() {
    let app = spawn_app().await;
    app.create(&patient(NHS[0], "Safe", "Data", "1980-01-01", "female"))
        .await;
    let cs = app.send(app.bare("GET", "metadata"), None).await.json();
    let nasty = [
        "' OR '1'='1",
        "1; DROP TABLE resources; --",
        "%' --",
        "\\' UNION SELECT content FROM resources --",
        "Patient/x' OR 1=1 --",
    ];
    let mut checked = 0;
    for res in cs["rest"][0]["resource"].as_array().expect("resources") {
        let t = res["type"].as_str().expect("type");
        let bf = if t == "AuditEvent" {
            "AUDITOR"
        } else {
            "REFERRING_CLINICIAN"
        };
        // Every searchable type (Binary is not searched).
        for p in res["searchParam"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().expect("name");
            for v in nasty {
                let q = serde_urlencoded::to_string([(name, v)]).expect("query");
                let r = app
                    .send(
                        app.as_user(&app.token, "GET", &format!("{t}?{q}"), bf, "R69"),
                        None,
                    )
                    .await;
                assert!(
                    r.status == 200 || r.status == 400,
                    "{t}?{q}: {} {}",
                    r.status,
                    r.text()
                );
                if r.status == 200 {
                    assert_eq!(r.json()["total"], 0, "{t}?{q} matched something");
                } else {
                    r.assert_outcome(400, "invalid");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "{checked}");
    // Nothing was harmed.
    assert_eq!(app.search("Patient?_summary=count").await["total"], 1);
}

#[actix_web::test]
async fn every_refused_token_leaves_a_failed_access_audit_event() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims(TEST_USER, &[("REFERRING_CLINICIAN", "R69")]);
    expired["exp"] = json!(now - 3600);
    for token in ["garbage".to_string(), sign(&expired)] {
        get_with(&app, &token).await.assert_outcome(401, "login");
    }
    app.send(
        app.as_user(&app.token, "GET", "Patient", "REFERRING_CLINICIAN", "R68"),
        None,
    )
    .await
    .assert_outcome(403, "forbidden");
    let r = app
        .send(
            app.as_user(
                &app.token,
                "GET",
                "AuditEvent?subtype=access-denied",
                "AUDITOR",
                "R69",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["total"], 3, "{b}");
    let outcomes: Vec<String> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            e["resource"]["outcomeDesc"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        outcomes.iter().any(|o| o.contains("expired")),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().any(|o| o.contains("R68")), "{outcomes:?}");
}

#[actix_web::test]
async fn jwks_from_a_url_is_fetched_and_plain_http_elsewhere_is_refused() {
    // Server A (sandbox) issues tokens; server B trusts A's issuer through A's JWKS URL.
    let a = spawn_with(SeedMode::Sandbox).await;
    let b = spawn_configured(Settings {
        oidc: Some(OidcSettings {
            issuer: ers_api::security::SANDBOX_ISSUER.into(),
            audience: "ers-fhir".into(),
            jwks: format!("{}/oauth2/sandbox/jwks", a.root),
        }),
        sandbox_issuer: false,
        seed: SeedMode::Sandbox,
        ..Settings::default()
    })
    .await;
    let r = a
        .send(
            a.bare("POST", "/oauth2/sandbox/token")
                .insert_header(("Content-Type", "application/x-www-form-urlencoded")),
            Some(b"user_id=021600556514".to_vec()),
        )
        .await;
    let token = r.json()["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        b.send(
            b.as_user(&token, "GET", "Patient", "REFERRING_CLINICIAN", "R69"),
            None
        )
        .await
        .status,
        200
    );
    let insecure = Settings {
        oidc: Some(OidcSettings {
            issuer: "x".into(),
            audience: "y".into(),
            jwks: "http://idp.example/jwks".into(),
        }),
        ..Settings::default()
    };
    let e = ers_api::security::Authenticator::from_settings(&insecure)
        .await
        .err()
        .expect("refused");
    assert!(e.contains("https://"), "{e}");
}

#[actix_web::test]
async fn a_token_accepted_before_is_refused_once_it_expires() {
    // Tokens that pass are remembered so that their signature is not checked on every
    // request; that must never outlive the token.
    let app = spawn_configured(Settings {
        clock_skew_secs: 0,
        ..Settings::default()
    })
    .await;
    let mut c = claims(TEST_USER, &[]);
    c["exp"] = json!(chrono::Utc::now().timestamp() + 2);
    let token = rc_r69(c);
    let r = get_with(&app, &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get_with(&app, &token).await.status, 200, "accepted again");
    actix_web::rt::time::sleep(std::time::Duration::from_millis(3500)).await;
    let d = get_with(&app, &token).await.assert_outcome(401, "login");
    assert!(d.contains("expired"), "{d}");
}

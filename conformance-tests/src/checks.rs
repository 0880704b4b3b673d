//! The checks, in the order a client meets them. Each records its exchanges; a check fails on
//! a wrong answer or on any UK Core validation error in what the server returned.

use std::time::Instant;

use serde_json::{json, Value};

use crate::client::{Client, Reply};
use crate::report::{CheckResult, Exchange};

struct Check {
    group: &'static str,
    name: String,
    exchanges: Vec<Exchange>,
    validation: Vec<String>,
    failure: Option<String>,
    start: Instant,
}

impl Check {
    fn new(group: &'static str, name: &str) -> Self {
        Check {
            group,
            name: name.to_owned(),
            exchanges: Vec::new(),
            validation: Vec::new(),
            failure: None,
            start: Instant::now(),
        }
    }
    fn saw(&mut self, r: &Reply) {
        self.exchanges.push(r.exchange.clone());
        self.validation.extend(r.validation.iter().cloned());
    }
    fn expect(&mut self, ok: bool, message: impl Into<String>) -> bool {
        if !ok && self.failure.is_none() {
            self.failure = Some(message.into());
        }
        ok
    }
    /// The reply is a FHIR OperationOutcome error with this status and a diagnostic.
    fn outcome(&mut self, r: &Reply, status: u16) {
        self.expect(
            r.status == status,
            format!("expected {status}, got {}", r.status),
        );
        let oo = r.json();
        self.expect(
            oo["resourceType"] == "OperationOutcome",
            "the error body is not an OperationOutcome",
        );
        self.expect(
            oo["issue"][0]["code"].is_string(),
            "the OperationOutcome has no issue code",
        );
        self.expect(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "the OperationOutcome does not say what was wrong",
        );
    }
    fn done(self) -> CheckResult {
        let passed = self.failure.is_none() && self.validation.is_empty();
        let message = self.failure.clone().unwrap_or_else(|| {
            if self.validation.is_empty() {
                String::new()
            } else {
                "the server returned resources that do not validate".into()
            }
        });
        CheckResult {
            group: self.group,
            name: self.name,
            passed,
            message,
            exchanges: self.exchanges,
            validation: self.validation,
            millis: self.start.elapsed().as_millis(),
        }
    }
}

/// A synthetic NHS number from the reserved test range (999 000 0000–999 999 9999), Modulus 11.
fn test_nhs_number() -> String {
    loop {
        let mut bytes = [0u8; 4];
        let _ = openssl::rand::rand_bytes(&mut bytes);
        let n = u32::from_le_bytes(bytes) % 1_000_000;
        let nine = format!("999{n:06}");
        let sum: u32 = nine
            .chars()
            .filter_map(|c| c.to_digit(10))
            .zip((2..=10).rev())
            .map(|(d, w)| d * w)
            .sum();
        match 11 - sum % 11 {
            10 => continue,
            11 => return format!("{nine}0"),
            c => return format!("{nine}{c}"),
        }
    }
}

fn patient(nhs: &str, family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
        "name": [{"use": "official", "family": family, "given": ["Conformance"]}],
        "gender": "unknown",
        "birthDate": "1990-06-15",
        "address": [{"line": ["1 Conformance Way"], "city": "Leeds", "postalCode": "LS1 4AP"}],
    })
}

const JSON: (&str, &str) = ("Content-Type", "application/fhir+json");

/// Every profile the CapabilityStatement names (`profile`, `supportedProfile`) is served as a
/// StructureDefinition of that type, findable by its URL, with a snapshot, and (when it is a
/// constraint) a base that is itself served or is the base R4 definition.
async fn profiles_resolve(c: &Client, cs: &Value) -> CheckResult {
    let mut k = Check::new(
        "capabilities",
        "every profile the CapabilityStatement names is a served StructureDefinition with a snapshot",
    );
    let mut wanted: Vec<(String, String)> = Vec::new();
    for r in cs["rest"][0]["resource"].as_array().into_iter().flatten() {
        let t = r["type"].as_str().unwrap_or_default().to_owned();
        let named = r["profile"].as_str().into_iter().chain(
            r["supportedProfile"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
        for url in named {
            if !url.starts_with("http://hl7.org/fhir/StructureDefinition/") {
                wanted.push((t.clone(), url.to_owned()));
            }
        }
    }
    wanted.sort();
    wanted.dedup();
    k.expect(
        !wanted.is_empty(),
        "the CapabilityStatement names no profiles",
    );
    for (t, url) in &wanted {
        let r = c
            .send(
                "GET",
                &format!("StructureDefinition?url={url}"),
                &[],
                None,
                true,
            )
            .await;
        k.saw(&r);
        let b = r.json();
        let Some(sd) = b["entry"][0]["resource"].as_object().cloned() else {
            k.expect(
                false,
                format!("StructureDefinition?url={url} finds nothing"),
            );
            continue;
        };
        k.expect(
            sd["url"] == url.as_str(),
            format!("{url}: the url does not match"),
        );
        k.expect(
            sd["type"] == t.as_str(),
            format!("{url}: its type is not {t}"),
        );
        k.expect(
            sd["snapshot"]["element"]
                .as_array()
                .is_some_and(|e| !e.is_empty()),
            format!("{url}: no snapshot"),
        );
        if let Some(base) = sd["baseDefinition"].as_str() {
            if !base.starts_with("http://hl7.org/fhir/StructureDefinition/") {
                let r = c
                    .send(
                        "GET",
                        &format!("StructureDefinition?url={base}"),
                        &[],
                        None,
                        true,
                    )
                    .await;
                k.expect(
                    r.json()["total"].as_i64().unwrap_or(0) >= 1,
                    format!("{url}: its base {base} is not served"),
                );
            }
        }
    }
    k.done()
}

/// `referrer`: the caller's SDS user id when they act as a referring clinician (enables the
/// referral workflow checks).
pub async fn run_all(c: &Client, referrer: Option<&str>) -> Vec<CheckResult> {
    let mut out = Vec::new();

    // Capability.
    let mut k = Check::new(
        "capabilities",
        "GET metadata is an R4 CapabilityStatement that hosts Patient",
    );
    let r = c.send("GET", "metadata", &[], None, false).await;
    k.saw(&r);
    let cs = r.json();
    k.expect(r.status == 200, format!("status {}", r.status));
    k.expect(
        cs["resourceType"] == "CapabilityStatement",
        "not a CapabilityStatement",
    );
    k.expect(cs["fhirVersion"] == "4.0.1", "fhirVersion is not 4.0.1");
    let patient_cap = cs["rest"][0]["resource"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["type"] == "Patient"))
        .cloned()
        .unwrap_or(Value::Null);
    let interactions: Vec<String> = patient_cap["interaction"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|x| x["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for i in [
        "read",
        "vread",
        "create",
        "update",
        "search-type",
        "history-instance",
    ] {
        k.expect(
            interactions.iter().any(|x| x == i),
            format!("Patient does not support {i}"),
        );
    }
    out.push(k.done());
    let can_delete = interactions.iter().any(|x| x == "delete");
    out.push(profiles_resolve(c, &cs).await);

    // Create.
    let nhs = test_nhs_number();
    let body = patient(&nhs, "Conformance").to_string();
    let mut k = Check::new(
        "create",
        "POST Patient gives 201 with Location, ETag W/\"1\" and Last-Modified",
    );
    let r = c
        .send("POST", "Patient", &[JSON], Some(body.as_bytes()), true)
        .await;
    k.saw(&r);
    k.expect(
        r.status == 201,
        format!("status {} (expected 201)", r.status),
    );
    let id = r.json()["id"].as_str().unwrap_or_default().to_owned();
    k.expect(!id.is_empty(), "the created resource has no id");
    k.expect(
        r.header("location")
            .is_some_and(|l| l.contains(&format!("Patient/{id}/_history/1"))),
        "Location is not Patient/{id}/_history/1",
    );
    k.expect(
        r.header("etag").as_deref() == Some("W/\"1\""),
        "ETag is not W/\"1\"",
    );
    k.expect(r.header("last-modified").is_some(), "no Last-Modified");
    out.push(k.done());
    if id.is_empty() {
        return out;
    }

    let mut k = Check::new(
        "create",
        "POST with If-None-Exist on an existing identifier returns it with 200",
    );
    let ine = format!("identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}");
    let r = c
        .send(
            "POST",
            "Patient",
            &[JSON, ("If-None-Exist", ine.as_str())],
            Some(body.as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(
        r.status == 200,
        format!("status {} (expected 200)", r.status),
    );
    k.expect(
        r.json()["id"] == id.as_str(),
        "a different resource came back",
    );
    out.push(k.done());

    // Read.
    let mut k = Check::new(
        "read",
        "GET Patient/{id} returns the resource with its ETag",
    );
    let r = c
        .send("GET", &format!("Patient/{id}"), &[], None, true)
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("status {}", r.status));
    k.expect(
        r.header("etag").as_deref() == Some("W/\"1\""),
        "ETag is not W/\"1\"",
    );
    k.expect(
        r.json()["identifier"][0]["value"] == nhs.as_str(),
        "the NHS number did not survive",
    );
    let current = r.json();
    out.push(k.done());

    let mut k = Check::new(
        "read",
        "If-None-Match with the current ETag gives 304 without a body; HEAD gives GET's headers without one",
    );
    let path = format!("Patient/{id}");
    let r = c
        .send("GET", &path, &[("If-None-Match", "W/\"1\"")], None, true)
        .await;
    k.saw(&r);
    k.expect(
        r.status == 304,
        format!("status {} (expected 304)", r.status),
    );
    k.expect(r.body.is_empty(), "the 304 has a body");
    k.expect(
        r.header("etag").as_deref() == Some("W/\"1\""),
        "the 304's ETag is not W/\"1\"",
    );
    let r = c
        .send("GET", &path, &[("If-None-Match", "W/\"0\"")], None, true)
        .await;
    k.saw(&r);
    k.expect(
        r.status == 200,
        format!("a stale ETag: status {} (expected 200)", r.status),
    );
    let r = c.send("HEAD", &path, &[], None, true).await;
    k.saw(&r);
    k.expect(r.status == 200, format!("HEAD: status {}", r.status));
    k.expect(r.body.is_empty(), "HEAD answered with a body");
    k.expect(
        r.header("etag").as_deref() == Some("W/\"1\""),
        "HEAD: ETag is not W/\"1\"",
    );
    out.push(k.done());

    let mut k = Check::new(
        "http",
        "A method an endpoint does not serve gives 405 with Allow naming those it does",
    );
    for (method, at, expected) in [
        ("TRACE", path.as_str(), &["GET", "HEAD", "PUT", "PATCH"][..]),
        ("DELETE", "metadata", &["GET", "HEAD"][..]),
    ] {
        let r = c.send(method, at, &[], None, true).await;
        k.saw(&r);
        k.expect(
            r.status == 405,
            format!("{method} {at}: status {} (expected 405)", r.status),
        );
        let allow = r.header("allow").unwrap_or_default();
        let offered: Vec<&str> = allow.split(',').map(str::trim).collect();
        k.expect(
            expected.iter().all(|m| offered.contains(m)) && !offered.contains(&method),
            format!("{method} {at}: Allow is '{allow}'"),
        );
    }
    out.push(k.done());

    let mut k = Check::new("read", "Accept: application/fhir+xml gives FHIR XML");
    let r = c
        .send(
            "GET",
            &format!("Patient/{id}"),
            &[("Accept", "application/fhir+xml")],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("status {}", r.status));
    k.expect(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/fhir+xml")),
        "Content-Type is not application/fhir+xml",
    );
    k.expect(
        String::from_utf8_lossy(&r.body).contains("<Patient xmlns=\"http://hl7.org/fhir\">"),
        "not a FHIR XML Patient",
    );
    out.push(k.done());

    let mut k = Check::new(
        "read",
        "Accept naming FHIR 4.0 is answered, another FHIR version 406; $versions says 4.0 when offered",
    );
    let path = format!("Patient/{id}");
    let r = c
        .send(
            "GET",
            &path,
            &[("Accept", "application/fhir+json; fhirVersion=4.0")],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.expect(
        r.status == 200,
        format!("fhirVersion=4.0: status {}", r.status),
    );
    let r = c
        .send(
            "GET",
            &path,
            &[("Accept", "application/fhir+json; fhirVersion=3.0")],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 406);
    let offers_versions = cs["rest"][0]["operation"]
        .as_array()
        .is_some_and(|ops| ops.iter().any(|o| o["name"] == "versions"));
    if offers_versions {
        let r = c.send("GET", "$versions", &[], None, false).await;
        k.saw(&r);
        k.expect(r.status == 200, format!("$versions: status {}", r.status));
        let p = r.json();
        let named = |name: &str| {
            p["parameter"].as_array().is_some_and(|ps| {
                ps.iter().any(|x| {
                    x["name"] == name && (x["valueCode"] == "4.0" || x["valueString"] == "4.0")
                })
            })
        };
        k.expect(
            named("version") && named("default"),
            "$versions does not give version and default 4.0",
        );
    }
    out.push(k.done());

    // Update and versioning.
    let mut changed = current.clone();
    changed["name"][0]["given"] = json!(["Updated"]);
    let changed = changed.to_string();
    let mut k = Check::new("update", "PUT with the current If-Match gives version 2");
    let r = c
        .send(
            "PUT",
            &format!("Patient/{id}"),
            &[JSON, ("If-Match", "W/\"1\"")],
            Some(changed.as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("status {}", r.status));
    k.expect(
        r.header("etag").as_deref() == Some("W/\"2\""),
        "ETag is not W/\"2\"",
    );
    out.push(k.done());

    let mut k = Check::new(
        "update",
        "PUT with a stale If-Match is refused with 412 and changes nothing",
    );
    let r = c
        .send(
            "PUT",
            &format!("Patient/{id}"),
            &[JSON, ("If-Match", "W/\"1\"")],
            Some(changed.as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 412);
    let after = c
        .send("GET", &format!("Patient/{id}"), &[], None, true)
        .await;
    k.saw(&after);
    k.expect(
        after.header("etag").as_deref() == Some("W/\"2\""),
        "the stale update changed the resource",
    );
    out.push(k.done());

    let mut k = Check::new(
        "versioning",
        "vread returns each version; an unknown version is 404",
    );
    let r = c
        .send("GET", &format!("Patient/{id}/_history/1"), &[], None, true)
        .await;
    k.saw(&r);
    k.expect(
        r.status == 200 && r.json()["name"][0]["given"][0] == "Conformance",
        "version 1 is not the original",
    );
    let r = c
        .send("GET", &format!("Patient/{id}/_history/99"), &[], None, true)
        .await;
    k.saw(&r);
    k.outcome(&r, 404);
    out.push(k.done());

    let mut k = Check::new("versioning", "_history lists both versions, newest first");
    let r = c
        .send("GET", &format!("Patient/{id}/_history"), &[], None, true)
        .await;
    k.saw(&r);
    let b = r.json();
    k.expect(b["type"] == "history", "not a history Bundle");
    k.expect(
        b["entry"].as_array().map(|e| e.len()) == Some(2),
        "not 2 entries",
    );
    k.expect(
        b["entry"][0]["resource"]["meta"]["versionId"] == "2",
        "the newest version is not first",
    );
    out.push(k.done());

    let mut k = Check::new(
        "patch",
        "PATCH with a JSON Patch of the current version changes that element only",
    );
    let r = c
        .send(
            "PATCH",
            &format!("Patient/{id}"),
            &[
                ("Content-Type", "application/json-patch+json"),
                ("If-Match", "W/\"2\""),
            ],
            Some(br#"[{"op": "replace", "path": "/gender", "value": "unknown"}]"#),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("status {}", r.status));
    k.expect(
        r.header("etag").as_deref() == Some("W/\"3\""),
        "ETag is not W/\"3\"",
    );
    let patched = r.json();
    k.expect(
        patched["gender"] == "unknown" && patched["name"][0]["given"][0] == "Updated",
        "the patch did not change only gender",
    );
    out.push(k.done());

    // Search.
    let mut k = Check::new("search", "search by NHS number finds exactly the patient");
    let r = c
        .send(
            "GET",
            &format!("Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}"),
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    let b = r.json();
    k.expect(b["type"] == "searchset", "not a searchset Bundle");
    k.expect(
        b["total"] == 1,
        format!("total is {} (expected 1)", b["total"]),
    );
    k.expect(
        b["entry"][0]["resource"]["id"] == id.as_str(),
        "a different patient was found",
    );
    out.push(k.done());

    // Patient-everything, when the CapabilityStatement offers it.
    let offers_everything = cs["rest"][0]["resource"].as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            r["type"] == "Patient"
                && r["operation"]
                    .as_array()
                    .is_some_and(|ops| ops.iter().any(|o| o["name"] == "everything"))
        })
    });
    if offers_everything {
        let mut k = Check::new(
            "search",
            "Patient/{id}/$everything is a searchset that holds the patient",
        );
        let r = c
            .send("GET", &format!("Patient/{id}/$everything"), &[], None, true)
            .await;
        k.saw(&r);
        let b = r.json();
        k.expect(
            r.status == 200 && b["type"] == "searchset",
            format!("status {}, not a searchset Bundle", r.status),
        );
        k.expect(
            b["entry"].as_array().is_some_and(|es| {
                es.iter().any(|e| {
                    e["resource"]["resourceType"] == "Patient" && e["resource"]["id"] == id.as_str()
                })
            }),
            "the patient is not in it",
        );
        out.push(k.done());
    }

    let mut k = Check::new(
        "search",
        "_profile finds the patient by the profile it claims, and by no other; _tag:missing finds it untagged",
    );
    let r = c
        .send("GET", &format!("Patient/{id}"), &[], None, true)
        .await;
    k.saw(&r);
    let claimed = r.json()["meta"]["profile"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    k.expect(!claimed.is_empty(), "the stored patient claims no profile");
    for (query, expected) in [
        (format!("_profile={claimed}"), 1),
        (
            "_profile=https://example.org/StructureDefinition/none".into(),
            0,
        ),
        ("_tag:missing=true".into(), 1),
    ] {
        let r = c
            .send("GET", &format!("Patient?_id={id}&{query}"), &[], None, true)
            .await;
        k.saw(&r);
        k.expect(
            r.status == 200 && r.json()["total"] == expected,
            format!(
                "{query}: status {}, total {} (expected {expected})",
                r.status,
                r.json()["total"]
            ),
        );
    }
    out.push(k.done());

    let mut k = Check::new(
        "search",
        "paging: _count gives a self link and, when there is more, a next link that works",
    );
    let r = c.send("GET", "Patient?_count=1", &[], None, true).await;
    k.saw(&r);
    let b = r.json();
    let links: Vec<(String, String)> = b["link"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| {
                    (
                        x["relation"].as_str().unwrap_or_default().to_owned(),
                        x["url"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    k.expect(links.iter().any(|(r, _)| r == "self"), "no self link");
    if b["total"].as_i64().unwrap_or(0) > 1 {
        match links.iter().find(|(r, _)| r == "next") {
            Some((_, next)) => {
                let n = c.send("GET", next, &[], None, true).await;
                k.saw(&n);
                k.expect(
                    n.status == 200
                        && n.json()["entry"][0]["resource"]["id"]
                            != b["entry"][0]["resource"]["id"],
                    "the next page repeats the first",
                );
            }
            None => {
                k.expect(false, "more results than _count but no next link");
            }
        }
    }
    out.push(k.done());

    let mut k = Check::new(
        "search",
        "unknown parameters: ignored normally, 400 under Prefer: handling=strict",
    );
    let r = c
        .send(
            "GET",
            "Patient?no-such-parameter=1&_count=1",
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("lenient search gave {}", r.status));
    let r = c
        .send(
            "GET",
            "Patient?no-such-parameter=1",
            &[("Prefer", "handling=strict")],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 400);
    out.push(k.done());

    // Errors.
    let mut k = Check::new(
        "errors",
        "unknown id and unknown type are 404 OperationOutcomes",
    );
    let r = c
        .send("GET", "Patient/no-such-patient-0000", &[], None, true)
        .await;
    k.saw(&r);
    k.outcome(&r, 404);
    let r = c.send("GET", "NoSuchType/1", &[], None, true).await;
    k.saw(&r);
    k.outcome(&r, 404);
    out.push(k.done());

    let mut k = Check::new(
        "errors",
        "malformed JSON is 400; an unsupported Content-Type is 415",
    );
    let r = c
        .send(
            "POST",
            "Patient",
            &[JSON],
            Some(b"{\"resourceType\": \"Patient\","),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 400);
    let r = c
        .send(
            "POST",
            "Patient",
            &[("Content-Type", "text/plain")],
            Some(body.as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 415);
    out.push(k.done());

    let mut k = Check::new(
        "errors",
        "an invalid resource is 422 with the location of each problem",
    );
    let mut bad = patient(&test_nhs_number(), "Invalid");
    bad["gender"] = json!("not-a-gender");
    bad["birthDate"] = json!("1990-02-30");
    let r = c
        .send(
            "POST",
            "Patient",
            &[JSON],
            Some(bad.to_string().as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 422);
    let expressions: Vec<String> = r.json()["issue"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|x| x["expression"][0].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for e in ["Patient.gender", "Patient.birthDate"] {
        k.expect(
            expressions.iter().any(|x| x == e),
            format!("no issue at {e}"),
        );
    }
    out.push(k.done());

    let mut k = Check::new(
        "errors",
        "$validate reports problems without storing anything",
    );
    let r = c
        .send(
            "POST",
            "Patient/$validate",
            &[JSON],
            Some(bad.to_string().as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("status {}", r.status));
    k.expect(
        r.json()["issue"]
            .as_array()
            .is_some_and(|i| i.iter().any(|x| x["severity"] == "error")),
        "no error issue",
    );
    out.push(k.done());

    // Security.
    let mut k = Check::new("security", "no bearer token is 401; metadata needs none");
    let r = c.send("GET", "Patient", &[], None, false).await;
    k.saw(&r);
    k.outcome(&r, 401);
    out.push(k.done());

    // e-RS A030, for a sandbox user (whose roles the server holds): the roles to name.
    if referrer.is_some() {
        out.push(own_roles_check(c).await);
    }

    // e-RS referral workflow, when the server offers it and the caller is a known sandbox
    // referrer (the referral must name the caller's own role).
    let offers_referrals = cs["rest"][0]["resource"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["type"] == "ServiceRequest"))
        .is_some_and(|r| r.to_string().contains("ers.changeShortlist"));
    if let (true, Some(user)) = (offers_referrals, referrer) {
        out.extend(referral_checks(c, user).await);
    }

    // Delete.
    let bulk = cs["rest"][0]["operation"]
        .as_array()
        .is_some_and(|ops| ops.iter().any(|o| o["name"] == "export"));
    if bulk {
        out.push(bulk_check(c, &nhs).await);
    }
    if can_delete {
        let mut k = Check::new(
            "delete",
            "DELETE gives 204; the resource is then 410 Gone but its history remains",
        );
        let r = c
            .send("DELETE", &format!("Patient/{id}"), &[], None, true)
            .await;
        k.saw(&r);
        k.expect(
            r.status == 204 || r.status == 200,
            format!("status {}", r.status),
        );
        let r = c
            .send("GET", &format!("Patient/{id}"), &[], None, true)
            .await;
        k.saw(&r);
        k.outcome(&r, 410);
        let r = c
            .send("GET", &format!("Patient/{id}/_history/1"), &[], None, true)
            .await;
        k.saw(&r);
        k.expect(r.status == 200, "version 1 is gone too");
        out.push(k.done());
    }
    out
}

/// FHIR Bulk Data, when the CapabilityStatement declares `export`: a Patient export's
/// kick-off, status polling, manifest and first file.
async fn bulk_check(c: &Client, nhs: &str) -> CheckResult {
    let mut k = Check::new(
        "bulk data",
        "$export?_type=Patient with Prefer: respond-async: 202 + Content-Location, polled to a manifest whose NDJSON files hold the Patients",
    );
    let r = c
        .send(
            "GET",
            "$export?_type=Patient",
            &[
                ("Prefer", "respond-async"),
                ("Accept", "application/fhir+json"),
            ],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.expect(
        r.status == 202,
        format!("kick-off: status {} (expected 202)", r.status),
    );
    let Some(status_url) = r.header("content-location") else {
        k.expect(false, "kick-off: no Content-Location");
        return k.done();
    };
    let started = Instant::now();
    let manifest = loop {
        let r = c.send("GET", &status_url, &[], None, true).await;
        match r.status {
            200 => {
                k.saw(&r);
                break r.json();
            }
            202 if started.elapsed().as_secs() < 60 => {
                actix_web::rt::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            s => {
                k.saw(&r);
                k.expect(false, format!("status poll: {s} (expected 202, then 200)"));
                return k.done();
            }
        }
    };
    k.expect(
        manifest["transactionTime"].is_string(),
        "the manifest has no transactionTime",
    );
    k.expect(
        manifest["requiresAccessToken"].is_boolean(),
        "the manifest has no requiresAccessToken",
    );
    let files: Vec<Value> = manifest["output"].as_array().cloned().unwrap_or_default();
    k.expect(
        !files.is_empty()
            && files
                .iter()
                .all(|f| f["type"] == "Patient" && f["url"].is_string()),
        "the manifest's output is not a list of Patient files with urls",
    );
    let mut found = false;
    for f in &files {
        let url = f["url"].as_str().unwrap_or_default();
        let r = c
            .send(
                "GET",
                url,
                &[("Accept", "application/fhir+ndjson")],
                None,
                true,
            )
            .await;
        k.expect(r.status == 200, format!("file {url}: status {}", r.status));
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        k.expect(
            lines.len() == text.lines().filter(|l| !l.trim().is_empty()).count(),
            format!("file {url}: a line is not JSON"),
        );
        k.expect(
            lines.iter().all(|p| p["resourceType"] == "Patient"),
            format!("file {url}: not only Patients"),
        );
        found |= lines.iter().any(|p| {
            p["identifier"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i["value"] == nhs))
        });
    }
    k.expect(found, "the Patient created earlier is in none of the files");
    let r = c.send("DELETE", &status_url, &[], None, true).await;
    k.saw(&r);
    k.expect(
        r.status == 202 || r.status == 200,
        format!("DELETE of the status URL: {} (expected 202)", r.status),
    );
    k.done()
}

async fn own_roles_check(c: &Client) -> CheckResult {
    let mut k = Check::new(
        "security",
        "GET PractitionerRole with no role headers lists the user's roles with their organisations, the one in use among them (e-RS A030)",
    );
    let bearer = format!("Bearer {}", c.token);
    let r = c
        .send(
            "GET",
            "PractitionerRole",
            &[("Authorization", &bearer)],
            None,
            false,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("status {}", r.status));
    let b = r.json();
    let entries = b["entry"].as_array().cloned().unwrap_or_default();
    let org_ods = |reference: &str| {
        entries
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| &e["resource"])
            .find(|o| format!("Organization/{}", o["id"].as_str().unwrap_or_default()) == reference)
            .and_then(|o| o["identifier"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|i| i["value"].as_str())
            .any(|v| v == c.ods)
    };
    let in_use = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| &e["resource"])
        .any(|role| {
            role["code"]
                .to_string()
                .contains(&format!("\"{}\"", c.business_function))
                && org_ods(
                    role["organization"]["reference"]
                        .as_str()
                        .unwrap_or_default(),
                )
        });
    k.expect(
        in_use,
        format!(
            "no listed role is {} at an included organisation {}",
            c.business_function, c.ods
        ),
    );
    k.done()
}

fn first_id(r: &Reply) -> Option<String> {
    r.json()["entry"]
        .as_array()?
        .iter()
        .find(|e| e["search"]["mode"] != "include")?["resource"]["id"]
        .as_str()
        .map(str::to_owned)
}

fn referral_state(sr: &Value) -> String {
    sr["extension"]
        .as_array()
        .and_then(|x| {
            x.iter().find(|e| {
                e["url"] == "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ServiceRequest-State"
            })
        })
        .and_then(|e| e["extension"][0]["valueCoding"]["code"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A routine referral of `patient` by `role` shortlisting `services` (`HealthcareService/{id}`).
fn referral_body(patient: &str, role: &str, services: &[&str]) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "extension": [{"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": format!("Patient/{patient}")},
        "requester": {"reference": format!("PractitionerRole/{role}")},
        "performer": services.iter().map(|s| json!({"reference": s})).collect::<Vec<_>>(),
        "reasonCode": [{"text": "Conformance suite referral"}],
    })
}

fn parameters(params: &[(&str, &str)]) -> Vec<u8> {
    json!({"resourceType": "Parameters", "parameter": params.iter().map(|(n, v)| json!({"name": n, "valueString": v})).collect::<Vec<_>>()})
        .to_string()
        .into_bytes()
}

/// Create → send for triage → refused steps → cancel, through the e-RS operations.
async fn referral_checks(c: &Client, user: &str) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let mut k = Check::new(
        "referrals",
        "POST ServiceRequest assigns a 12-digit UBRN and state NOT_BOOKED; the UBRN finds it",
    );
    // A patient of its own (a referred patient cannot be deleted by the later checks).
    let r = c
        .send(
            "POST",
            "Patient",
            &[JSON],
            Some(
                patient(&test_nhs_number(), "Referred")
                    .to_string()
                    .as_bytes(),
            ),
            true,
        )
        .await;
    k.saw(&r);
    let patient = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let role = c
        .send("GET", &format!("PractitionerRole?practitioner.identifier=https://fhir.nhs.uk/Id/sds-user-id|{user}&organization.identifier=https://fhir.nhs.uk/Id/ods-organization-code|{}", c.ods), &[], None, true)
        .await;
    k.saw(&role);
    let triage = c
        .send(
            "GET",
            "HealthcareService?characteristic=REVIEW&priority=ROUTINE&active=true&_count=1",
            &[],
            None,
            true,
        )
        .await;
    k.saw(&triage);
    let bookable = c
        .send(
            "GET",
            "HealthcareService?characteristic=BOOKABLE&priority=ROUTINE&active=true&_count=1",
            &[],
            None,
            true,
        )
        .await;
    k.saw(&bookable);
    let (Some(role), Some(triage), Some(bookable)) =
        (first_id(&role), first_id(&triage), first_id(&bookable))
    else {
        k.expect(
            false,
            "no PractitionerRole for the referrer, or no triage and bookable services to shortlist",
        );
        out.push(k.done());
        return out;
    };
    let body = referral_body(
        &patient,
        &role,
        &[
            &format!("HealthcareService/{triage}"),
            &format!("HealthcareService/{bookable}"),
        ],
    );
    let r = c
        .send(
            "POST",
            "ServiceRequest",
            &[JSON],
            Some(body.to_string().as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 201, format!("create: status {}", r.status));
    let sr = r.json();
    let id = sr["id"].as_str().unwrap_or_default().to_owned();
    let ubrn = sr["identifier"]
        .as_array()
        .and_then(|ids| {
            ids.iter()
                .find(|i| i["system"] == "https://fhir.nhs.uk/Id/UBRN")
        })
        .and_then(|i| i["value"].as_str())
        .unwrap_or_default()
        .to_owned();
    k.expect(
        ubrn.len() == 12 && ubrn.chars().all(|ch| ch.is_ascii_digit()),
        format!("UBRN '{ubrn}' is not 12 digits"),
    );
    k.expect(
        referral_state(&sr) == "NOT_BOOKED",
        format!("state {}", referral_state(&sr)),
    );
    let r = c
        .send(
            "GET",
            &format!("ServiceRequest?identifier=https://fhir.nhs.uk/Id/UBRN|{ubrn}"),
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.expect(
        first_id(&r).as_deref() == Some(id.as_str()),
        "the UBRN search does not find the referral",
    );
    out.push(k.done());
    if id.is_empty() {
        return out;
    }

    let mut k = Check::new(
        "referrals",
        "a referral sent again with its Idempotency-Key is made once: the first answer again, Idempotent-Replayed: true",
    );
    let key = format!(
        "conformance-{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = c
            .send(
                "POST",
                "ServiceRequest",
                &[JSON, ("Idempotency-Key", key.as_str())],
                Some(body.to_string().as_bytes()),
                true,
            )
            .await;
        k.saw(&r);
        answers.push(r);
    }
    let ids: Vec<Value> = answers.iter().map(|r| r.json()["id"].clone()).collect();
    k.expect(
        answers.iter().all(|r| r.status == 201),
        format!("statuses {} and {}", answers[0].status, answers[1].status),
    );
    k.expect(
        ids[0].is_string() && ids[0] == ids[1] && ids[0] != id.as_str(),
        format!(
            "ids {} and {}: one new referral, answered twice",
            ids[0], ids[1]
        ),
    );
    k.expect(
        answers[0].header("idempotent-replayed").is_none()
            && answers[1].header("idempotent-replayed").as_deref() == Some("true"),
        "the second answer is not marked Idempotent-Replayed: true",
    );
    out.push(k.done());

    let mut k = Check::new(
        "referrals",
        "operations need If-Match (stale 409); a step the state does not allow is 422 INVALID_REQUEST_STATE",
    );
    let op = |name: &str| format!("ServiceRequest/{id}/{name}");
    let r = c
        .send(
            "POST",
            &op("$ers.sendForTriage"),
            &[JSON, ("If-Match", "W/\"9\"")],
            Some(&parameters(&[("service", &triage)])),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 409);
    let r = c
        .send(
            "POST",
            &op("$ers.sendForTriage"),
            &[JSON, ("If-Match", "W/\"1\"")],
            Some(&parameters(&[("service", &triage)])),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(
        r.status == 200,
        format!("send for triage: status {}", r.status),
    );
    k.expect(
        referral_state(&r.json()) == "AWAITING_TRIAGE",
        format!("state {}", referral_state(&r.json())),
    );
    let r = c
        .send(
            "POST",
            &op("$ers.changeShortlist"),
            &[JSON, ("If-Match", "W/\"2\"")],
            Some(&parameters(&[("service", &bookable)])),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 422);
    k.expect(
        r.json()["issue"][0]["details"]["coding"][0]["code"] == "INVALID_REQUEST_STATE",
        "the refusal does not carry INVALID_REQUEST_STATE",
    );
    out.push(k.done());

    let mut k = Check::new(
        "referrals",
        "an operation input of a type its OperationDefinition does not give it is 400, naming the element",
    );
    let r = c
        .send(
            "GET",
            "OperationDefinition/ers.cancelReferral",
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    let reason = r.json()["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "reason").cloned())
        .unwrap_or_default();
    k.expect(
        reason["type"] == "code",
        format!(
            "the OperationDefinition's 'reason' is {}, expected type code",
            reason
        ),
    );
    let wrong = json!({"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueInteger": 5},
        {"name": "comment", "valueString": "Conformance suite"}]})
    .to_string();
    let r = c
        .send(
            "POST",
            &op("$ers.cancelReferral"),
            &[JSON, ("If-Match", "W/\"2\"")],
            Some(wrong.as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 400);
    k.expect(
        r.json()["issue"][0]["expression"][0] == "Parameters.parameter[reason].valueInteger",
        "the issue does not name Parameters.parameter[reason].valueInteger",
    );
    out.push(k.done());

    let mut k = Check::new(
        "referrals",
        "$ers.availableActions and the Task search (e-RS A029) list what the operations allow; cancelling is terminal",
    );
    let r = c
        .send("GET", &op("$ers.availableActions"), &[], None, true)
        .await;
    k.saw(&r);
    let actions: Vec<String> = r.json()["parameter"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["name"] == "action")
                .filter_map(|p| p["part"][0]["valueCode"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    k.expect(
        actions
            == [
                "CANCEL_REFERRAL",
                "UPDATE_ADDITIONAL_REQUIREMENTS",
                "MAINTAIN_REFERRAL_LETTER",
            ],
        format!("available actions {actions:?}, expected [CANCEL_REFERRAL, UPDATE_ADDITIONAL_REQUIREMENTS, MAINTAIN_REFERRAL_LETTER]"),
    );
    let tasks = format!("Task?focus=ServiceRequest/{id}/_history/2&intent=proposal&status=ready");
    let r = c.send("GET", &tasks, &[], None, true).await;
    k.saw(&r);
    let b = r.json();
    let codes: Vec<String> = b["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["search"]["mode"] == "match")
                .filter_map(|e| {
                    e["resource"]["code"]["coding"][0]["code"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    k.expect(
        r.status == 200 && b["type"] == "searchset" && codes == actions,
        format!(
            "the Task search: status {}, actions {codes:?}, expected {actions:?}",
            r.status
        ),
    );
    let r = c
        .send(
            "POST",
            &op("$ers.cancelReferral"),
            &[JSON, ("If-Match", "W/\"2\"")],
            Some(&parameters(&[
                ("reason", "RAISED_IN_ERROR"),
                ("comment", "Conformance suite"),
            ])),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("cancel: status {}", r.status));
    let sr = r.json();
    k.expect(
        referral_state(&sr) == "CANCELLED_REFERRAL" && sr["status"] == "revoked",
        "not CANCELLED_REFERRAL / revoked",
    );
    let r = c
        .send("GET", &op("$ers.availableActions"), &[], None, true)
        .await;
    k.saw(&r);
    let offered = r.json()["parameter"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == "action"));
    k.expect(
        r.status == 200 && !offered,
        "actions are still offered on a cancelled referral",
    );
    let r = c
        .send(
            "GET",
            &format!("Task?focus=ServiceRequest/{id}"),
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.expect(
        r.status == 200 && r.json()["total"] == 0,
        "the Task search still offers actions on a cancelled referral",
    );
    out.push(k.done());
    out.push(booking_check(c, &patient, &role).await);
    out.push(advice_check(c, &patient, &role).await);
    out.push(everything_pages_check(c, &patient).await);
    out
}

/// `Patient/{id}/$everything` in pages of two, followed by their `next` links: the patient
/// first, each match once, as many as every page's `total` says.
async fn everything_pages_check(c: &Client, patient: &str) -> CheckResult {
    let mut k = Check::new(
        "search",
        "Patient/{id}/$everything?_count=2 pages through the patient's referrals, appointments and messages: each once, as many as total",
    );
    let mut next = Some(format!("Patient/{patient}/$everything?_count=2"));
    let mut matches: Vec<String> = Vec::new();
    let mut totals = Vec::new();
    while let Some(url) = next.take() {
        let r = c.send("GET", &url, &[], None, true).await;
        k.saw(&r);
        let b = r.json();
        if !k.expect(r.status == 200, format!("{url}: status {}", r.status)) {
            break;
        }
        let page: Vec<String> = b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap_or_default(),
                    e["resource"]["id"].as_str().unwrap_or_default()
                )
            })
            .collect();
        k.expect(
            page.len() <= 2,
            format!("{url}: {} matches on a page of 2", page.len()),
        );
        matches.extend(page);
        totals.push(b["total"].as_i64().unwrap_or(-1));
        next = b["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
        if matches.len() > 200 {
            k.expect(false, "more than 200 matches: the next links do not end");
            break;
        }
    }
    let distinct: std::collections::BTreeSet<&String> = matches.iter().collect();
    k.expect(
        matches.first() == Some(&format!("Patient/{patient}")),
        "the patient is not the first match",
    );
    k.expect(
        distinct.len() == matches.len(),
        format!("a match came twice: {matches:?}"),
    );
    k.expect(
        totals.iter().all(|t| *t == matches.len() as i64),
        format!("totals {totals:?} for {} matches", matches.len()),
    );
    k.expect(
        matches.len() >= 4,
        format!("{} matches: the patient, their referrals, appointment and advice request were expected", matches.len()),
    );
    k.done()
}

/// An advice and guidance request: its own UBRN and status, the first message as a
/// Communication, a message out of turn refused, the referrer's cancellation, the summary PDF.
async fn advice_check(c: &Client, patient: &str, role: &str) -> CheckResult {
    let mut k = Check::new(
        "advice",
        "POST ServiceRequest (category request) starts an A&G conversation; turns are enforced; the advice summary is a PDF",
    );
    let r = c
        .send(
            "GET",
            "HealthcareService?characteristic=ADVICE_AND_GUIDANCE&priority=ROUTINE&active=true&_count=1",
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    let Some(service) = first_id(&r) else {
        k.expect(false, "no advice and guidance service to ask");
        return k.done();
    };
    let mut body = referral_body(patient, role, &[&format!("HealthcareService/{service}")]);
    body["category"] = json!([{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ServiceRequestCategory", "code": "request"}]}]);
    if let Some(e) = body["extension"].as_array_mut() {
        e.push(json!({"url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ProviderConversionAuthorisation", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-ProviderConversionAuthorisation", "code": "NOT_AUTHORISED_TO_CONVERT"}}));
    }
    body["note"] = json!([{"text": "Conformance suite: is a referral needed?"}]);
    let r = c
        .send(
            "POST",
            "ServiceRequest",
            &[JSON],
            Some(body.to_string().as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 201, format!("create: status {}", r.status));
    let a = r.json();
    let id = a["id"].as_str().unwrap_or_default().to_owned();
    let status = |v: &Value| -> String {
        v["extension"]
            .as_array()
            .and_then(|x| {
                x.iter().find(|e| {
                    e["url"]
                        == "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AdviceAndGuidance-Status"
                })
            })
            .and_then(|e| e["extension"][0]["valueCoding"]["code"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    k.expect(
        a["identifier"][0]["value"]
            .as_str()
            .is_some_and(|u| u.len() == 12 && u.bytes().all(|b| b.is_ascii_digit())),
        "no 12-digit UBRN",
    );
    k.expect(
        status(&a) == "PROVIDER_RESPONSE_REQUIRED",
        format!("status {} after create", status(&a)),
    );
    let r = c
        .send(
            "GET",
            &format!("Communication?based-on=ServiceRequest/{id}"),
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.expect(
        r.json()["total"] == 1
            && r.json()["entry"][0]["resource"]["category"][0]["coding"][0]["code"] == "REQUESTER",
        "the first message is not one REQUESTER Communication",
    );
    let op = |name: &str| format!("ServiceRequest/{id}/{name}");
    let r = c
        .send(
            "POST",
            &op("$ers.sendFurtherInformation"),
            &[JSON, ("If-Match", "W/\"1\"")],
            Some(&parameters(&[("text", "Out of turn")])),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 422);
    k.expect(
        r.json()["issue"][0]["details"]["coding"][0]["code"] == "INVALID_REQUEST_STATE",
        "a message out of turn is not INVALID_REQUEST_STATE",
    );
    let r = c
        .send(
            "POST",
            &op("$ers.cancelAdviceRequest"),
            &[JSON, ("If-Match", "W/\"1\"")],
            Some(&parameters(&[("text", "Conformance suite")])),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("cancel: status {}", r.status));
    k.expect(
        status(&r.json()) == "CONVERSATION_ENDED_CANCELLED",
        "not CONVERSATION_ENDED_CANCELLED after cancel",
    );
    let r = c
        .send(
            "GET",
            &op("$ers.generateCRI"),
            &[("Accept", "application/pdf")],
            None,
            true,
        )
        .await;
    k.saw(&r);
    k.expect(
        r.status == 200 && r.body.starts_with(b"%PDF-"),
        format!("the advice summary is not a PDF (status {})", r.status),
    );
    k.done()
}

/// Find a service with free slots for the patient (A010), refer to it twice, find its free
/// slots for the referral's commissioning rule organisation (A015 with
/// `NHSD-eRS-Comm-Rule-Org`), book one, see it taken, see a second booking of it refused,
/// cancel, see it free.
async fn booking_check(c: &Client, patient: &str, role: &str) -> CheckResult {
    let mut k = Check::new(
        "booking",
        "A service with free slots from the patient search, two referrals to it, its free slots for their commissioning rule organisation (NHSD-eRS-Comm-Rule-Org); POST Appointment books one once (a second booking is 409 SLOT_NOT_AVAILABLE, and that referral is deferred to the provider, whose Task gives the date the patient is to be contacted by); cancelling frees the slot",
    );
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let r = c
        .send(
            "GET",
            &format!("HealthcareService/$ers.searchHealthcareServicesForPatient?patient=Patient/{patient}&priority=ROUTINE&requestFlow=BOOKABLE&withFreeSlots=true&ageAndGenderAppropriate=false&_count=1"),
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    let found = r.json();
    let Some(service) = found["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["search"]["mode"] == "match")
        .and_then(|e| e["resource"]["id"].as_str())
        .map(|id| format!("HealthcareService/{id}"))
    else {
        k.expect(
            false,
            format!(
                "the patient search found no bookable service with a free routine slot (status {})",
                r.status
            ),
        );
        return k.done();
    };
    let mut referrals = Vec::new();
    let mut commissioning = String::new();
    for _ in 0..2 {
        let body = referral_body(patient, role, &[&service]);
        let r = c
            .send(
                "POST",
                "ServiceRequest",
                &[JSON],
                Some(body.to_string().as_bytes()),
                true,
            )
            .await;
        k.saw(&r);
        let made = r.json();
        referrals.push(made["id"].as_str().unwrap_or_default().to_owned());
        commissioning = made["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| {
                e["url"]
                    == "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-CommissioningRuleOrganisation"
            })
            .and_then(|e| e["valueIdentifier"]["value"].as_str())
            .unwrap_or_default()
            .to_owned();
    }
    k.expect(
        !commissioning.is_empty(),
        "the referral records no commissioning rule organisation (Extension-eRS-CommissioningRuleOrganisation)",
    );
    let id = service.trim_start_matches("HealthcareService/");
    let r = c
        .send(
            "GET",
            &format!("Slot?schedule.actor:HealthcareService={id}&status=free&priority=ROUTINE&start=gt{now}&_count=1"),
            &[("NHSD-eRS-Comm-Rule-Org", &commissioning)],
            None,
            true,
        )
        .await;
    k.saw(&r);
    let Some(slot_id) = r.json()["entry"][0]["resource"]["id"]
        .as_str()
        .map(str::to_owned)
    else {
        k.expect(
            false,
            format!("no free routine slot of {service} for commissioner {commissioning}"),
        );
        return k.done();
    };
    let book = |referral: &str| {
        json!({"resourceType": "Appointment", "status": "booked",
            "basedOn": [{"reference": format!("ServiceRequest/{referral}")}],
            "slot": [{"reference": format!("Slot/{slot_id}")}],
            "participant": [{"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"}]})
        .to_string()
    };
    let r = c
        .send(
            "POST",
            "Appointment",
            &[JSON],
            Some(book(&referrals[0]).as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 201, format!("book: status {}", r.status));
    let appointment = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let slot_status = |r: &Reply| r.json()["status"].as_str().unwrap_or_default().to_owned();
    let r = c
        .send("GET", &format!("Slot/{slot_id}"), &[], None, true)
        .await;
    k.saw(&r);
    k.expect(slot_status(&r) == "busy", "the booked slot is not busy");
    let r = c
        .send(
            "POST",
            "Appointment",
            &[JSON],
            Some(book(&referrals[1]).as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.outcome(&r, 409);
    k.expect(
        r.json()["issue"][0]["details"]["coding"][0]["code"] == "SLOT_NOT_AVAILABLE",
        "a second booking of the slot is not SLOT_NOT_AVAILABLE",
    );
    // The referral that lost the slot is deferred to the provider (e-RS A016's deferral), and
    // the Patient Care API's Task says whose it is and by when the patient hears.
    let deferral = json!({"resourceType": "Appointment", "status": "proposed",
        "basedOn": [{"reference": format!("ServiceRequest/{}", referrals[1])}],
        "slot": [{"reference": format!("Slot/{slot_id}")}],
        "reasonCode": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReviewReason", "code": "SLOT_NOT_AVAILABLE"}]}],
        "participant": [{"actor": {"reference": service}, "status": "needs-action"}]});
    let r = c
        .send(
            "POST",
            "Appointment",
            &[JSON],
            Some(deferral.to_string().as_bytes()),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 201, format!("defer: status {}", r.status));
    let r = c
        .send(
            "GET",
            &format!(
                "Task?focus=ServiceRequest/{}&code=APPOINTMENT_DEFERRAL",
                referrals[1]
            ),
            &[],
            None,
            true,
        )
        .await;
    k.saw(&r);
    let task = &r.json()["entry"][0]["resource"];
    k.expect(
        r.json()["total"] == 1 && task["owner"]["reference"] == service.as_str(),
        "the deferred referral has no APPOINTMENT_DEFERRAL Task owned by its service",
    );
    let contact_by = task["restriction"]["period"]["end"]
        .as_str()
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    k.expect(
        contact_by.is_some_and(|d| d > chrono::Utc::now().date_naive()),
        "the deferral Task has no contact-by date after today (restriction.period.end)",
    );
    let r = c
        .send(
            "POST",
            &format!("Appointment/{appointment}/$ers.cancelAppointment"),
            &[JSON, ("If-Match", "W/\"1\"")],
            Some(&parameters(&[("reason", "PATIENT_ILL")])),
            true,
        )
        .await;
    k.saw(&r);
    k.expect(r.status == 200, format!("cancel: status {}", r.status));
    let r = c
        .send("GET", &format!("Slot/{slot_id}"), &[], None, true)
        .await;
    k.saw(&r);
    k.expect(
        slot_status(&r) == "free",
        "the cancelled appointment's slot is not free",
    );
    k.done()
}

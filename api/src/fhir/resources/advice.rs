//! Advice and guidance in R4: the request is a ServiceRequest (id `a.{uuid}`, its own UBRN,
//! category `request`, code `advice-and-guidance`, one A&G service as `performer`, the
//! referrer's conversion authorisation and the A&G status as extensions); each message is a
//! Communication `basedOn` it (direction as `category`, the text and attachments as `payload`,
//! a provider reply's outcome as an extension). The rules are `domain::advice`'s.

use crate::fhir::At;
use serde_json::{json, Value};

use super::service_request::{extension, sub};
use super::*;
use crate::domain::advice::{AdviceStatus, SentBy, MAX_TEXT};

pub const CATEGORY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-ServiceRequestCategory";
pub const CATEGORY: &str = "request";
pub const CODE: &str = "advice-and-guidance";
pub const STATUS_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AdviceAndGuidance-Status";
pub const STATUS_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-AdviceAndGuidanceStatus";
pub const CONVERSION_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ProviderConversionAuthorisation";
pub const CONVERSION_SYSTEM: &str =
    "https://fhir.nhs.uk/CodeSystem/eRS-ProviderConversionAuthorisation";
pub const SENT_BY_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-CommunicationSentBy";
pub const OUTCOME_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AdviceAndGuidance-Outcome";
pub const OUTCOME_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-GuidanceResponseOutcome";
pub const RECOMMENDATION_SYSTEM: &str =
    "https://fhir.nhs.uk/CodeSystem/eRS-GuidanceIntendedRecommendation";
/// The unique-key system of an A&G request's UBRN: a referral converted from it carries the
/// same UBRN under the plain UBRN key.
pub const UBRN_KEY: &str = "https://fhir.nhs.uk/Id/UBRN#advice-and-guidance";

/// The e-RS profile of an A&G request (`fhir-profiles/definitions`).
pub const PROFILE: &str =
    "https://fhir.nhs.uk/StructureDefinition/eRS-ServiceRequest-AdviceAndGuidance";

/// Whether a ServiceRequest is an A&G request (its category says so).
pub fn is_advice(r: &Value) -> bool {
    super::codes(r, "category", CATEGORY_SYSTEM).contains(&CATEGORY)
}

/// Sets the category and code of an A&G request.
pub fn mark(r: &mut Value) {
    r["category"] = json!([{"coding": [{"system": CATEGORY_SYSTEM, "code": CATEGORY, "display": "A request for advice and guidance"}]}]);
    r["code"] = json!({"coding": [{"system": CATEGORY_SYSTEM, "code": CODE, "display": "Advice and guidance"}]});
}

/// The request's A&G status.
pub fn status_of(r: &Value) -> Option<AdviceStatus> {
    sub(extension(r, STATUS_EXTENSION)?, "status")?
        .at("/valueCoding/code")?
        .as_str()
        .and_then(AdviceStatus::parse)
}

/// When the request's UBRN expired (its conversation deleted), if it has.
pub fn expired_on(r: &Value) -> Option<&str> {
    sub(extension(r, STATUS_EXTENSION)?, "expired")?
        .get("valueDateTime")?
        .as_str()
}

/// Why an expired request is gone, for the 410 a read gets.
pub fn expiry_explanation(r: &Value) -> Option<String> {
    let on = expired_on(r)?;
    let ubrn = super::service_request::ubrn_of(r).unwrap_or("(unknown)");
    Some(format!(
        "the advice and guidance request with UBRN {ubrn} expired on {on} after a period without activity (ERS_UBRN_EXPIRY_DAYS): its messages and attachments were deleted under the retention policy"
    ))
}

fn replace_extension(r: &mut Value, url: &str, ext: Value) {
    let Some(o) = r.as_object_mut() else {
        return;
    };
    let list = o.entry("extension").or_insert_with(|| json!([]));
    if let Some(a) = list.as_array_mut() {
        a.retain(|e| e.get("url").and_then(Value::as_str) != Some(url));
        a.push(ext);
    }
}

/// Records the status (and when the UBRN expired, once it has) and the R4 status.
pub fn set_status(r: &mut Value, status: AdviceStatus, expired: Option<&str>) {
    let mut parts = vec![
        json!({"url": "status", "valueCoding": {"system": STATUS_SYSTEM, "code": status.code()}}),
    ];
    if let Some(at) = expired {
        parts.push(json!({"url": "expired", "valueDateTime": at}));
    }
    replace_extension(
        r,
        STATUS_EXTENSION,
        json!({"url": STATUS_EXTENSION, "extension": parts}),
    );
    r["status"] = json!(status.fhir_status());
}

/// The referrer's conversion authorisation code.
pub fn conversion(r: &Value) -> Option<&str> {
    extension(r, CONVERSION_EXTENSION)?
        .at("/valueCoding/code")?
        .as_str()
}

/// Index values for the `advice-status` parameter.
pub fn extract_status(r: &Value) -> Vec<Value> {
    status_of(r)
        .map(|s| vec![json!({"system": STATUS_SYSTEM, "code": s.code()})])
        .unwrap_or_default()
}

/// The A&G-specific rules of a request (the shared ServiceRequest ones are checked too).
pub fn check_request(r: &Value, checked: &mut Checked, issues: &mut Vec<Issue>) {
    let performers = r.get("performer").and_then(Value::as_array);
    match performers.map_or(0, Vec::len) {
        0 => issues.push(Issue::required_at(
            "ServiceRequest.performer",
            "is required: the one advice and guidance service asked",
        )),
        1 => {}
        n => issues.push(
            Issue::error(
                "business-rule",
                "TOO_MANY_ITEMS",
                format!("'ServiceRequest.performer' names {n} services; an advice request goes to exactly one advice and guidance service"),
            )
            .with_expression("ServiceRequest.performer[1]"),
        ),
    }
    if let Some(p) = performers.and_then(|p| p.first()) {
        if !p
            .get("reference")
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with("HealthcareService/"))
        {
            issues.push(Issue::invalid_at(
                "ServiceRequest.performer[0]",
                "must refer to a HealthcareService (the advice and guidance service)",
            ));
        }
    }
    let codes = crate::fhir::terminology::codes(CONVERSION_SYSTEM);
    match conversion(r) {
        None => issues.push(Issue::required_at(
            "ServiceRequest.extension",
            format!("needs the provider conversion authorisation ({CONVERSION_EXTENSION}, valueCoding {})", codes.join(" or ")),
        )),
        Some(c) if !codes.contains(&c) => issues.push(
            Issue::error(
                "code-invalid",
                "INVALID_CODE",
                format!("'ServiceRequest.extension[conversionAuthorisation]' ({c}) is not one of {}", codes.join(", ")),
            )
            .with_expression("ServiceRequest.extension[conversionAuthorisation]"),
        ),
        Some(_) => {}
    }
    if let Some(u) = super::service_request::ubrn_of(r) {
        if super::service_request::is_ubrn(u) {
            checked.unique.push((UBRN_KEY.to_owned(), u.to_owned()));
        }
    }
}

/// A message's text: present, and at most 8,000 characters.
pub fn check_text(text: &str, required: bool, at: &str) -> Result<(), Issue> {
    let n = text.chars().count();
    if required && text.trim().is_empty() {
        return Err(Issue::error(
            "required",
            "MISSING_VALUE",
            format!("'{at}' is empty: a message needs text"),
        )
        .with_expression(at));
    }
    if n > MAX_TEXT {
        return Err(Issue::error(
            "too-long",
            "INVALID_VALUE",
            format!("'{at}' is {n} characters; a message has at most {MAX_TEXT}"),
        )
        .with_expression(at));
    }
    Ok(())
}

/// A provider reply's outcome and intended recommendation (codes).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyOutcome {
    pub outcome: &'static str,
    pub recommendation: Option<String>,
}

/// One message of a conversation, as written by the server.
pub struct Message<'a> {
    pub request: &'a Value,
    pub sent_by: SentBy,
    pub sender: Value,
    pub recipient: Value,
    pub sent: String,
    pub text: &'a str,
    pub documents: &'a [String],
    pub outcome: Option<ReplyOutcome>,
}

/// The Communication of a message.
pub fn communication(m: &Message<'_>) -> Value {
    let request_id = m
        .request
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut payload = Vec::new();
    if !m.text.is_empty() {
        payload.push(json!({"contentString": m.text}));
    }
    payload.extend(
        m.documents
            .iter()
            .map(|d| json!({"contentReference": {"reference": format!("DocumentReference/{d}")}})),
    );
    let mut c = json!({
        "resourceType": "Communication",
        "basedOn": [{"reference": format!("ServiceRequest/{request_id}")}],
        "status": "completed",
        "category": [{"coding": [{"system": SENT_BY_SYSTEM, "code": m.sent_by.code()}]}],
        "sent": m.sent,
        "sender": m.sender,
        "recipient": [m.recipient],
        "payload": payload,
    });
    if let Some(s) = m.request.get("subject") {
        c["subject"] = s.clone();
    }
    if let Some(u) = super::service_request::ubrn_of(m.request) {
        c["identifier"] = json!([{"system": super::service_request::UBRN_SYSTEM, "value": u}]);
    }
    if let Some(o) = &m.outcome {
        let mut parts = vec![
            json!({"url": "outcome", "valueCoding": {"system": OUTCOME_SYSTEM, "code": o.outcome}}),
        ];
        if let Some(r) = &o.recommendation {
            parts.push(json!({"url": "recommendation", "valueCoding": {"system": RECOMMENDATION_SYSTEM, "code": r}}));
        }
        c["extension"] = json!([{"url": OUTCOME_EXTENSION, "extension": parts}]);
    }
    c
}

/// Direction of a message.
pub fn sent_by(c: &Value) -> Option<&str> {
    c.at("/category/0/coding")?
        .as_array()?
        .iter()
        .find(|x| x.get("system").and_then(Value::as_str) == Some(SENT_BY_SYSTEM))?
        .get("code")?
        .as_str()
}

/// A message's text.
pub fn text(c: &Value) -> String {
    c.get("payload")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("contentString").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A reply's outcome and recommendation codes.
pub fn reply_outcome(c: &Value) -> (Option<&str>, Option<&str>) {
    let Some(ext) = extension(c, OUTCOME_EXTENSION) else {
        return (None, None);
    };
    let code = |name: &str| {
        sub(ext, name)
            .and_then(|e| e.at("/valueCoding/code"))
            .and_then(Value::as_str)
    };
    (code("outcome"), code("recommendation"))
}

/// The Communication rules (messages are written by the server; this guards the shape).
pub fn check_communication(c: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
    if !c
        .at("/basedOn/0/reference")
        .and_then(Value::as_str)
        .is_some_and(|r| r.starts_with("ServiceRequest/"))
    {
        issues.push(Issue::required_at(
            "Communication.basedOn",
            "is required: the advice request (ServiceRequest/{id})",
        ));
    }
    if sent_by(c).is_none() {
        issues.push(Issue::required_at(
            "Communication.category",
            format!("needs the direction ({SENT_BY_SYSTEM}: REQUESTER or RESPONDER)"),
        ));
    }
    if let Err(i) = check_text(&text(c), false, "Communication.payload.contentString") {
        issues.push(i);
    }
    finish(Checked::default(), issues)
}

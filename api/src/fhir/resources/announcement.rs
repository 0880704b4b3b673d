//! System announcements (planned maintenance, releases, service changes) as R4
//! CommunicationRequest: category `notification`, `payload` the title and body, `priority` the
//! severity (routine, urgent, asap, stat), `occurrencePeriod` the validity window, `recipient`
//! the audience organisations (none: every organisation) and the audience business functions
//! in an extension (none: every role).

use crate::fhir::At;
use serde_json::{json, Value};

use super::*;
use crate::domain::BusinessFunction;

pub const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/communication-category";
pub const CATEGORY: &str = "notification";
pub const AUDIENCE_ROLE_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AnnouncementAudienceRole";
pub const READ_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AnnouncementRead";
/// The inputs of `CommunicationRequest/$ers.announcements`.
pub const LIST_PARAMETERS: &[crate::domain::referral::OpParam] = &[
    crate::domain::referral::OpParam::new(
        "all",
        0,
        "1",
        "boolean",
        "true: expired announcements too",
    ),
    crate::domain::referral::OpParam::new(
        "unread",
        0,
        "1",
        "boolean",
        "true: only those the caller has not marked read",
    ),
    crate::domain::referral::OpParam::new(
        "_count",
        0,
        "1",
        "integer",
        "page size (1-100, default 20)",
    ),
    crate::domain::referral::OpParam::new("_offset", 0, "1", "integer", "results to skip"),
];
/// The audience code of "everyone" (roles or organisations).
pub const ALL: &str = "*";

/// The audience business functions (codes); empty for every role.
pub fn roles(r: &Value) -> Vec<&str> {
    r.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("url").and_then(Value::as_str) == Some(AUDIENCE_ROLE_EXTENSION))
        .filter_map(|e| e.at("/valueCoding/code").and_then(Value::as_str))
        .collect()
}

/// Index values for `audience-role`: each role, or `*` for everyone.
pub fn extract_roles(r: &Value) -> Vec<Value> {
    let roles = roles(r);
    if roles.is_empty() {
        vec![json!(ALL)]
    } else {
        roles.into_iter().map(|c| json!(c)).collect()
    }
}

/// The audience organisations (`Organization/{id}` references).
pub fn organisations(r: &Value) -> Vec<&str> {
    r.get("recipient")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.get("reference").and_then(Value::as_str))
        .collect()
}

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
    let at = |p: &str| format!("CommunicationRequest.{p}");
    let category_ok = r
        .at("/category/0/coding")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("system").and_then(Value::as_str) == Some(CATEGORY_SYSTEM)
                    && c.get("code").and_then(Value::as_str) == Some(CATEGORY)
            })
        });
    if !category_ok {
        issues.push(Issue::required_at(
            at("category"),
            format!("must be {CATEGORY_SYSTEM}|{CATEGORY}: an announcement"),
        ));
    }
    let texts: Vec<&str> = r
        .get("payload")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("contentString").and_then(Value::as_str))
        .collect();
    if texts.len() != 2 || texts.iter().any(|t| t.trim().is_empty()) {
        issues.push(Issue::required_at(
            at("payload"),
            "needs two contentString parts: the title, then the body",
        ));
    }
    let start = r.at("/occurrencePeriod/start").and_then(Value::as_str);
    let end = r.at("/occurrencePeriod/end").and_then(Value::as_str);
    match (start, end) {
        (Some(s), Some(e)) => {
            let parse = |v: &str| chrono::DateTime::parse_from_rfc3339(v).ok();
            if let (Some(s), Some(e)) = (parse(s), parse(e)) {
                if e <= s {
                    issues.push(Issue::invalid_at(
                        at("occurrencePeriod"),
                        "ends before it starts",
                    ));
                }
            }
        }
        _ => issues.push(Issue::required_at(
            at("occurrencePeriod"),
            "needs start and end (with time zones): when the announcement is shown",
        )),
    }
    if r.get("priority").is_none() {
        issues.push(Issue::required_at(
            at("priority"),
            "is the severity: routine, urgent, asap or stat",
        ));
    }
    for (i, code) in roles(r).iter().enumerate() {
        if BusinessFunction::parse(code).is_none() {
            issues.push(Issue::invalid_at(
                format!("CommunicationRequest.extension[audienceRole][{i}]"),
                format!("({code}) is not an e-RS business function"),
            ));
        }
    }
    for (i, o) in organisations(r).iter().enumerate() {
        if !o.starts_with("Organization/") {
            issues.push(Issue::invalid_at(
                format!("CommunicationRequest.recipient[{i}]"),
                format!("({o}) must be an Organization: the audience"),
            ));
        }
    }
    finish(Checked::default(), issues)
}

//! `Task`: what the caller may do now to a referral or an A&G request, as e-RS A029 asks for it
//! (`GET Task?focus=ServiceRequest/{id}/_history/{version}&intent=proposal&status=ready`): one
//! Task per action, made for each search from the rule `$ers.availableActions` answers with,
//! and never stored (so never read by id, and not to be cached: the next change of the referral
//! changes the answer).

use serde_json::{json, Value};

use super::At;

/// The code system of the actions (`fhir-profiles/codesystems/ers-available-actions-for-user.json`).
pub const ACTIONS_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-AvailableActionsForUser";
/// Every such Task is `ready` (it can be done now) ...
pub const STATUS: (&str, &str) = ("http://hl7.org/fhir/task-status", "ready");
/// ... and a `proposal` (the user may do it).
pub const INTENT: (&str, &str) = ("http://hl7.org/fhir/request-intent", "proposal");

/// The code system of what a provider is to do about a deferred referral
/// (`fhir-profiles/codesystems/workflow-code.json`).
pub const WORKFLOW_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/Workflow-Code";
/// A deferral's Task is `requested` (the provider is to do it) ...
pub const DEFERRAL_STATUS: (&str, &str) = ("http://hl7.org/fhir/task-status", "requested");
/// ... and an `order` (the referral asks for it).
pub const DEFERRAL_INTENT: (&str, &str) = ("http://hl7.org/fhir/request-intent", "order");

/// The search parameters: name, FHIR type, what it takes.
pub const PARAMS: &[(&str, &str, &str)] = &[
    ("focus", "reference", "Required, once: the referral or A&G request, ServiceRequest/{id} or ServiceRequest/{id}/_history/{version} (which must be the current version: nothing can be done to an older one)"),
    ("intent", "token", "proposal (an available action) or order (the provider's deferral)"),
    ("status", "token", "ready (an available action) or requested (the provider's deferral)"),
    ("code", "token", "An action, a code of https://fhir.nhs.uk/CodeSystem/eRS-AvailableActionsForUser (CANCEL_REFERRAL, CREATE_APPOINTMENT...), or a deferral, a code of https://fhir.nhs.uk/CodeSystem/Workflow-Code (APPOINTMENT_DEFERRAL, TRIAGE_DEFERRAL)"),
];

/// What a `focus` names: a ServiceRequest, at a version or the current one.
#[derive(Debug, PartialEq, Eq)]
pub struct Focus {
    pub id: String,
    pub version: Option<i64>,
}

impl Focus {
    /// `ServiceRequest/{id}` or `ServiceRequest/{id}/_history/{version}` (with or without this
    /// server's base before it, `base`), or None.
    pub fn parse(value: &str, base: &str) -> Option<Focus> {
        let local = value
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(value);
        let rest = local.strip_prefix("ServiceRequest/")?;
        let (id, version) = match rest.split_once("/_history/") {
            Some((id, v)) => (id, Some(v.parse::<i64>().ok().filter(|v| *v > 0)?)),
            None => (rest, None),
        };
        super::is_valid_id(id).then(|| Focus {
            id: id.to_owned(),
            version,
        })
    }
}

/// Whether a token search value (`code`, `system|code`, `|code`; comma for OR) matches a coding.
pub fn token_matches(value: &str, system: &str, code: &str) -> bool {
    // `|code` asks for a coding without a system, which these never are.
    value.split(',').any(|alt| match alt.split_once('|') {
        Some((s, "")) => s == system,
        Some((s, c)) => s == system && c == code,
        None => alt == code,
    })
}

/// Whether a Task has what a search's `intent`, `status` or `code` value asks for.
pub fn matches(task: &Value, name: &str, value: &str) -> bool {
    let own = |element: &str| {
        task.get(element)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    match name {
        "intent" => token_matches(value, INTENT.0, own("intent")),
        "status" => token_matches(value, STATUS.0, own("status")),
        "code" => task
            .at("/code/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                let part = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
                token_matches(value, part("system"), part("code"))
            }),
        _ => false,
    }
}

/// A coding of `system` with its display from the code system.
fn coding(system: &str, code: &str) -> Value {
    let mut coding = json!({"system": system, "code": code});
    if let Some(d) = super::terminology::concept(system, code).and_then(|c| c.get("display")) {
        coding["display"] = d.clone();
    }
    coding
}

/// What every Task here has: its status and intent, one code, the focus, the patient (`for`)
/// and when it was authored.
struct Common<'a> {
    id: &'a str,
    status_intent: (&'a str, &'a str),
    coding: Value,
    focus: &'a str,
    patient: Option<&'a Value>,
    authored: &'a str,
}

impl Common<'_> {
    fn task(self) -> Value {
        let mut task = json!({
            "resourceType": "Task",
            "id": self.id,
            "status": self.status_intent.0,
            "intent": self.status_intent.1,
            "code": {"coding": [self.coding]},
            "focus": {"reference": self.focus},
            "authoredOn": self.authored,
        });
        if let Some(p) = self.patient {
            task["for"] = p.clone();
        }
        task
    }
}

/// A deferred referral as the e-RS Patient Care API shows it: a Task its provider (`owner`, the
/// service) is to do, `focus` the referral, the patient to be contacted by `contact_by` (its
/// `restriction.period.end`).
pub fn deferral(
    id: &str,
    focus: &str,
    patient: Option<&Value>,
    code: &str,
    owner: Option<&str>,
    authored: &str,
    contact_by: &str,
) -> Value {
    let mut task = Common {
        id,
        status_intent: (DEFERRAL_STATUS.1, DEFERRAL_INTENT.1),
        coding: coding(WORKFLOW_SYSTEM, code),
        focus,
        patient,
        authored,
    }
    .task();
    task["restriction"] = json!({"period": {"end": contact_by}});
    if let Some(o) = owner {
        task["owner"] = json!({"reference": o});
    }
    task
}

/// One available action as a Task: `focus` the version it applies to (`ServiceRequest/{id}/_history/{v}`),
/// `for` the patient, and the URL that performs it as its input.
pub fn available_action(
    id: &str,
    focus: &str,
    patient: Option<&Value>,
    code: &str,
    operation_url: &str,
    authored: &str,
) -> Value {
    let mut task = Common {
        id,
        status_intent: (STATUS.1, INTENT.1),
        coding: coding(ACTIONS_SYSTEM, code),
        focus,
        patient,
        authored,
    }
    .task();
    task["input"] = json!([{
        "type": {"text": "operation"},
        "valueUrl": operation_url,
    }]);
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn focus_names_a_service_request_at_a_version_or_the_current_one() {
        let base = "http://h/FHIR/R4";
        assert_eq!(
            Focus::parse("ServiceRequest/r.1", base),
            Some(Focus {
                id: "r.1".into(),
                version: None
            })
        );
        assert_eq!(
            Focus::parse("http://h/FHIR/R4/ServiceRequest/r.1/_history/3", base),
            Some(Focus {
                id: "r.1".into(),
                version: Some(3)
            })
        );
        for bad in [
            "Appointment/1",
            "ServiceRequest/",
            "ServiceRequest/r.1/_history/x",
            "ServiceRequest/r.1/_history/0",
            "ServiceRequest/a/b",
            "r.1",
        ] {
            assert_eq!(Focus::parse(bad, base), None, "{bad}");
        }
    }

    #[test]
    fn tokens_match_by_code_system_or_both() {
        let (s, c) = STATUS;
        assert!(token_matches("ready", s, c));
        assert!(token_matches("http://hl7.org/fhir/task-status|ready", s, c));
        assert!(token_matches("draft,ready", s, c));
        assert!(token_matches("http://hl7.org/fhir/task-status|", s, c));
        assert!(!token_matches("requested", s, c));
        assert!(!token_matches("other|ready", s, c));
        assert!(!token_matches("|ready", s, c));
    }

    #[test]
    fn a_search_matches_a_task_by_its_own_intent_status_and_code() {
        let action = available_action(
            "t",
            "ServiceRequest/r/_history/1",
            None,
            "CANCEL_REFERRAL",
            "u",
            "x",
        );
        let deferred = deferral(
            "d",
            "ServiceRequest/r",
            None,
            "APPOINTMENT_DEFERRAL",
            Some("HealthcareService/s"),
            "x",
            "2026-12-14",
        );
        assert!(matches(&action, "intent", "proposal"));
        assert!(!matches(&deferred, "intent", "proposal"));
        assert!(matches(&deferred, "intent", "order"));
        assert!(matches(
            &deferred,
            "status",
            "http://hl7.org/fhir/task-status|requested"
        ));
        assert!(!matches(&deferred, "status", "ready"));
        assert!(matches(&deferred, "code", "APPOINTMENT_DEFERRAL"));
        assert!(matches(&deferred, "code", &format!("{WORKFLOW_SYSTEM}|")));
        assert!(!matches(
            &deferred,
            "code",
            &format!("{ACTIONS_SYSTEM}|APPOINTMENT_DEFERRAL")
        ));
        assert!(matches(&action, "code", "TRIAGE_DEFERRAL,CANCEL_REFERRAL"));
        assert!(!matches(&action, "code", "TRIAGE_DEFERRAL"));
        for code in ["APPOINTMENT_DEFERRAL", "TRIAGE_DEFERRAL"] {
            let task = deferral("d", "ServiceRequest/r", None, code, None, "x", "y");
            assert!(
                task["code"]["coding"][0]["display"].is_string(),
                "{code} is not in {WORKFLOW_SYSTEM}"
            );
        }
    }

    #[test]
    fn every_action_has_a_display_in_the_code_system() {
        let codes = crate::domain::referral::ReferralAction::ALL
            .iter()
            .map(|a| a.code())
            .chain(
                crate::domain::advice::AdviceAction::ALL
                    .iter()
                    .map(|a| a.code()),
            );
        for code in codes {
            let task = available_action("t", "ServiceRequest/r/_history/1", None, code, "u", "x");
            assert!(
                task["code"]["coding"][0]["display"].is_string(),
                "{code} is not in {ACTIONS_SYSTEM}"
            );
        }
    }
}

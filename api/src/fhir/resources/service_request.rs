//! e-RS referrals as R4 ServiceRequest: UBRN identifier, the e-RS priority and referral-state
//! extensions, the shortlist as `performer` (1-20 HealthcareServices). The state machine is in
//! `domain::referral`; this module only reads and writes its FHIR form.

use crate::fhir::At;
use serde_json::{json, Value};

use super::healthcare_service::{
    known_codes, CLINIC_TYPE_SYSTEM, PRIORITY_SYSTEM, SPECIALTY_SYSTEM,
};
use super::*;
use crate::domain::referral::ReferralState;

pub const UBRN_SYSTEM: &str = "https://fhir.nhs.uk/Id/UBRN";
pub const STATE_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ServiceRequest-State";
pub const STATE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-ReferralState";
/// Whether the referrer means to add a referral letter later (e-RS
/// `intentionToAddReferralLetter`): NEED_TO_ADD_LATER puts it on LETTERS_OUTSTANDING until the
/// letter is attached.
pub const LETTER_INTENTION_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ReferralLetterIntention";
pub const LETTER_INTENTION_SYSTEM: &str =
    "https://fhir.nhs.uk/CodeSystem/eRS-ReferralLetterIntention";
/// What a provider's review decided (triage outcome, acceptance, action later).
pub const REVIEW_OUTCOME_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-ReviewOutcome";
pub const PRIORITY_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority";
/// The organisation whose commissioning rules decide which services a referral may use
/// (valueIdentifier, an ODS organisation code; e-RS `Extension-eRS-Commissioning-Rule-Org-1`).
pub const COMMISSIONING_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-CommissioningRuleOrganisation";
/// SNOMED CT 3457005 |Patient referral|: the category of every referral.
pub const REFERRAL_CATEGORY: (&str, &str, &str) =
    ("http://snomed.info/sct", "3457005", "Patient referral");
pub const MAX_SHORTLIST: usize = 20;

/// R4 `ServiceRequest.priority` for an e-RS priority (as the NHS Patient Care API maps it).
pub fn fhir_priority(ers: &str) -> Option<&'static str> {
    match ers {
        "ROUTINE" => Some("routine"),
        "URGENT" => Some("urgent"),
        "TWO_WEEK_WAIT" => Some("asap"),
        _ => None,
    }
}

/// A 12-digit UBRN.
pub fn is_ubrn(v: &str) -> bool {
    v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit())
}

pub fn ubrn_of(r: &Value) -> Option<&str> {
    r.get("identifier")?
        .as_array()?
        .iter()
        .find(|i| i.get("system").and_then(Value::as_str) == Some(UBRN_SYSTEM))?
        .get("value")?
        .as_str()
}

/// The referral's commissioning rule organisation (ODS code), as given.
pub fn commissioning_org(r: &Value) -> Option<&str> {
    extension(r, COMMISSIONING_EXTENSION)?
        .at("/valueIdentifier/value")?
        .as_str()
}

/// Records the commissioning rule organisation on a referral that has none.
pub fn set_commissioning_org(r: &mut Value, ods: &str) {
    if commissioning_org(r).is_some() {
        return;
    }
    let ext = json!({
        "url": COMMISSIONING_EXTENSION,
        "valueIdentifier": {"system": crate::domain::OdsCode::ORGANIZATION_SYSTEM, "value": ods}
    });
    match r.get_mut("extension").and_then(Value::as_array_mut) {
        Some(list) => list.push(ext),
        None => r["extension"] = json!([ext]),
    }
}

/// Index values of the `commissioning-organisation` parameter.
pub fn extract_commissioning_org(r: &Value) -> Vec<Value> {
    commissioning_org(r)
        .map(|c| vec![json!({"system": crate::domain::OdsCode::ORGANIZATION_SYSTEM, "code": c})])
        .unwrap_or_default()
}

/// The extension of `r` with this URL.
pub(super) fn extension<'a>(r: &'a Value, url: &str) -> Option<&'a Value> {
    r.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url))
}

/// The sub-extension of a complex extension with this URL.
pub(super) fn sub<'a>(ext: &'a Value, url: &str) -> Option<&'a Value> {
    ext.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url))
}

/// The e-RS priority code of a referral.
pub fn ers_priority(r: &Value) -> Option<&str> {
    extension(r, PRIORITY_EXTENSION)?
        .at("/valueCoding/code")?
        .as_str()
}

/// The referral's state as recorded on it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    pub state: ReferralState,
    /// Reason coding (system, code) of the current state, if any.
    pub reason: Option<(String, String)>,
    pub comment: Option<String>,
    /// The service the referral is with now (a triage service while awaiting triage).
    pub service: Option<String>,
}

impl StateRecord {
    /// Whether `other` is the same state with the same service (one stretch of the referral's
    /// history, which `since` dates).
    pub fn same_stretch(&self, other: &StateRecord) -> bool {
        self.state == other.state && self.service == other.service
    }
}

pub fn state_of(r: &Value) -> Option<StateRecord> {
    let ext = extension(r, STATE_EXTENSION)?;
    let state = sub(ext, "state")?
        .at("/valueCoding/code")?
        .as_str()
        .and_then(ReferralState::parse)?;
    let reason = sub(ext, "reason").and_then(|e| {
        Some((
            e.at("/valueCoding/system")?.as_str()?.to_owned(),
            e.at("/valueCoding/code")?.as_str()?.to_owned(),
        ))
    });
    Some(StateRecord {
        state,
        reason,
        comment: sub(ext, "comment")
            .and_then(|e| e.get("valueString"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        service: sub(ext, "service")
            .and_then(|e| e.at("/valueReference/reference"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// When the referral entered the state it records (`since`, set as each version is stored:
/// `stamp_since`); none on versions stored before it was recorded.
pub fn state_since(r: &Value) -> Option<chrono::NaiveDateTime> {
    let raw = sub(extension(r, STATE_EXTENSION)?, "since")?
        .get("valueDateTime")?
        .as_str()?;
    crate::fhir::datetime::range(raw).map(|(low, _)| low)
}

/// Records in the version stored `at` when the referral entered its state, unless it says so
/// already (an edit in the same stretch of a version that recorded it, or an imported
/// referral): `at` when its state or service differs from those of the version it follows
/// (`before`: none for a new referral); otherwise nothing (that version was stored before this
/// was recorded, and `service::referral::pending` reads the history instead).
pub fn stamp_since(r: &mut Value, before: Option<&Value>, at: chrono::NaiveDateTime) {
    let Some(now) = state_of(r) else {
        return;
    };
    let carried = extension(r, STATE_EXTENSION).is_some_and(|e| sub(e, "since").is_some());
    let same_state = before
        .and_then(state_of)
        .is_some_and(|then| then.same_stretch(&now));
    if carried || same_state {
        return;
    }
    let parts = r
        .get_mut("extension")
        .and_then(Value::as_array_mut)
        .and_then(|a| {
            a.iter_mut()
                .find(|e| e.get("url").and_then(Value::as_str) == Some(STATE_EXTENSION))
        })
        .and_then(|e| e.get_mut("extension"))
        .and_then(Value::as_array_mut);
    if let Some(parts) = parts {
        parts.push(json!({"url": "since", "valueDateTime": crate::fhir::datetime::instant(at)}));
    }
}

/// Records a state (replacing the previous one, whose reason and comment go with it) and the
/// R4 status it maps to. When it began stays when the state and service do (`same_stretch`),
/// and is otherwise recorded as the version is stored (`stamp_since`).
pub fn set_state(r: &mut Value, rec: &StateRecord) {
    let since = state_of(r)
        .filter(|old| old.same_stretch(rec))
        .and_then(|_| sub(extension(r, STATE_EXTENSION)?, "since").cloned());
    let mut parts = vec![
        json!({"url": "state", "valueCoding": {"system": STATE_SYSTEM, "code": rec.state.code()}}),
    ];
    if let Some((system, code)) = &rec.reason {
        parts.push(json!({"url": "reason", "valueCoding": {"system": system, "code": code}}));
    }
    if let Some(c) = &rec.comment {
        parts.push(json!({"url": "comment", "valueString": c}));
    }
    if let Some(s) = &rec.service {
        parts.push(json!({"url": "service", "valueReference": {"reference": s}}));
    }
    parts.extend(since);
    let ext = json!({"url": STATE_EXTENSION, "extension": parts});
    let Some(o) = r.as_object_mut() else {
        return;
    };
    let list = o.entry("extension").or_insert_with(|| json!([]));
    if let Some(a) = list.as_array_mut() {
        a.retain(|e| e.get("url").and_then(Value::as_str) != Some(STATE_EXTENSION));
        a.push(ext);
    }
    o.insert("status".into(), json!(rec.state.fhir_status()));
}

/// The shortlisted services' references (`performer`), in order.
pub fn shortlist(r: &Value) -> Vec<String> {
    r.get("performer")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("reference").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// Index values for the `state` parameter.
pub fn extract_state(r: &Value) -> Vec<Value> {
    state_of(r)
        .map(|s| vec![json!({"system": STATE_SYSTEM, "code": s.state.code()})])
        .unwrap_or_default()
}

/// Index values for the `priority` parameter (the e-RS code).
pub fn extract_priority(r: &Value) -> Vec<Value> {
    ers_priority(r)
        .map(|p| vec![json!({"system": PRIORITY_SYSTEM, "code": p})])
        .unwrap_or_default()
}

/// Index values for the `service` parameter (the service the referral is with now; an A&G
/// request's advice service).
pub fn extract_service(r: &Value) -> Vec<Value> {
    if super::advice::is_advice(r) {
        return shortlist(r)
            .into_iter()
            .take(1)
            .map(|s| json!({"reference": s}))
            .collect();
    }
    state_of(r)
        .and_then(|s| s.service)
        .map(|s| vec![json!({"reference": s})])
        .unwrap_or_default()
}

/// Whether the referral letter is attached (`supportingInfo` lists its documents).
fn has_letter(r: &Value) -> bool {
    r.get("supportingInfo")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("reference").and_then(Value::as_str))
        .any(|s| s.starts_with("DocumentReference/"))
}

fn letter_intention(r: &Value) -> Option<&str> {
    extension(r, LETTER_INTENTION_EXTENSION)?
        .at("/valueCoding/code")?
        .as_str()
}

/// Search index values for `letter`: OUTSTANDING while the referrer means to add a letter and
/// has not, ATTACHED once one is.
pub fn extract_letter(r: &Value) -> Vec<Value> {
    if has_letter(r) {
        vec![json!("ATTACHED")]
    } else if letter_outstanding(r) {
        vec![json!("OUTSTANDING")]
    } else {
        Vec::new()
    }
}

/// Whether the referrer means to add a referral letter and has not yet.
pub fn letter_outstanding(r: &Value) -> bool {
    !has_letter(r) && letter_intention(r) == Some("NEED_TO_ADD_LATER")
}

/// Rules every stored referral follows (the server sets UBRN and state before this runs).
pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut checked = Checked::default();
    let at = |p: &str| format!("ServiceRequest.{p}");
    match r.at("/subject/reference").and_then(Value::as_str) {
        Some(s) if s.starts_with("Patient/") => {}
        Some(s) => issues.push(Issue::invalid_at(
            at("subject"),
            format!("({s}) must refer to a Patient"),
        )),
        None => issues.push(match r.get("subject").and_then(super::logical_only) {
            Some(named) => Issue::invalid_at(
                at("subject"),
                format!("names the patient by identifier ({named}), which no patient on this server holds: create the Patient first, or refer to it as Patient/{{id}}"),
            ),
            None => Issue::required_at(at("subject"), "is required: the patient referred"),
        }),
    }
    match r.at("/requester/reference").and_then(Value::as_str) {
        Some(s) if s.starts_with("PractitionerRole/") => {}
        Some(s) => issues.push(Issue::invalid_at(
            at("requester"),
            format!("({s}) must refer to the referring clinician's PractitionerRole"),
        )),
        None => issues.push(match r.get("requester").and_then(super::logical_only) {
            Some(named) => Issue::invalid_at(
                at("requester"),
                format!("names the referring clinician's role by identifier ({named}), which no PractitionerRole on this server holds: refer to it as PractitionerRole/{{id}}"),
            ),
            None => Issue::required_at(
                at("requester"),
                "is required: the referring clinician's PractitionerRole",
            ),
        }),
    }
    let advice = super::advice::is_advice(r);
    if advice {
        super::advice::check_request(r, &mut checked, &mut issues);
    }
    let performers = r
        .get("performer")
        .and_then(Value::as_array)
        .filter(|_| !advice);
    let n = performers.map_or(0, Vec::len);
    // (An A&G request's one service is checked above.)
    if !advice && n == 0 {
        issues.push(Issue::required_at(
            at("performer"),
            "is required: the shortlist of 1 to 20 HealthcareServices",
        ));
    } else if n > MAX_SHORTLIST {
        issues.push(Issue::error(
            "too-costly",
            "TOO_MANY_ITEMS",
            format!("'ServiceRequest.performer' ({n} services) exceeds the shortlist limit of {MAX_SHORTLIST}"),
        ).with_expression(at("performer")));
    }
    let mut seen = Vec::new();
    for (i, p) in performers.into_iter().flatten().enumerate() {
        match p.get("reference").and_then(Value::as_str) {
            Some(s) if s.starts_with("HealthcareService/") => {
                if seen.contains(&s) {
                    issues.push(
                        Issue::error(
                            "duplicate",
                            "DUPLICATE_SERVICE",
                            format!(
                                "'ServiceRequest.performer[{i}]' ({s}) is already on the shortlist"
                            ),
                        )
                        .with_expression(format!("ServiceRequest.performer[{i}]")),
                    );
                }
                seen.push(s);
            }
            _ => issues.push(Issue::invalid_at(
                format!("ServiceRequest.performer[{i}]"),
                match super::logical_only(p) {
                    Some(named) => format!("names a service by identifier ({named}), which no HealthcareService on this server holds: refer to it as HealthcareService/{{id}}"),
                    None => "must refer to a HealthcareService (a shortlisted service)".to_owned(),
                },
            )),
        }
    }
    match ers_priority(r) {
        None => issues.push(Issue::required_at(
            at("extension"),
            format!("needs the e-RS priority ({PRIORITY_EXTENSION}, valueCoding ROUTINE, URGENT or TWO_WEEK_WAIT)"),
        )),
        Some(p) => match fhir_priority(p) {
            None => {
                let i = r
                    .get("extension")
                    .and_then(Value::as_array)
                    .and_then(|e| {
                        e.iter().position(|x| {
                            x.get("url").and_then(Value::as_str) == Some(PRIORITY_EXTENSION)
                        })
                    })
                    .unwrap_or_default();
                issues.push(
                    Issue::error("code-invalid", "INVALID_CODE", format!("'ServiceRequest.extension[priority]' ({p}) is not an e-RS priority: ROUTINE, URGENT or TWO_WEEK_WAIT"))
                        .with_expression(format!("ServiceRequest.extension[{i}].valueCoding.code")),
                )
            }
            Some(expected) => match r.get("priority").and_then(Value::as_str) {
                Some(given) if given != expected => issues.push(Issue::error(
                    "business-rule",
                    "CONFLICTING_VALUES",
                    format!("'ServiceRequest.priority' ({given}) does not match the e-RS priority {p}, which is {expected}"),
                ).with_expression(at("priority"))),
                _ => {}
            },
        },
    }
    known_codes(
        r,
        "ServiceRequest",
        "performerType",
        &[SPECIALTY_SYSTEM],
        &mut issues,
    );
    known_codes(
        r,
        "ServiceRequest",
        "code",
        &[CLINIC_TYPE_SYSTEM],
        &mut issues,
    );
    super::requirements::check(r, "ServiceRequest", &mut issues);
    if let Some(ext) = extension(r, LETTER_INTENTION_EXTENSION) {
        let code = ext.at("/valueCoding/code").and_then(Value::as_str);
        let codes = crate::fhir::terminology::codes(LETTER_INTENTION_SYSTEM);
        if !code.is_some_and(|c| codes.contains(&c)) {
            issues.push(Issue::invalid_at(
                at("extension[letterIntention]"),
                format!(
                    "needs a valueCoding of {LETTER_INTENTION_SYSTEM}: {}",
                    codes.join(" or ")
                ),
            ));
        }
    }
    let commissioning: Vec<(usize, &Value)> = extensions_at(r, COMMISSIONING_EXTENSION).collect();
    for (i, e) in &commissioning {
        super::ods_identifier(e, &at(&format!("extension[{i}]")), &mut issues);
    }
    if let [_, (i, _), ..] = commissioning[..] {
        issues.push(Issue::invalid_at(
            at(&format!("extension[{i}]")),
            "is a second commissioning rule organisation: a referral has one",
        ));
    }
    // The UBRN and the state are the server's (set on create, changed by the operations); a
    // body to create or to `$validate` has neither.
    match ubrn_of(r) {
        // An A&G request's UBRN is unique among requests (`advice::check_request`).
        Some(_) if advice => {}
        Some(u) if is_ubrn(u) => checked.unique.push((UBRN_SYSTEM.to_owned(), u.to_owned())),
        Some(u) => issues.push(Issue::invalid_at(
            at("identifier"),
            format!("({u}) is not a UBRN: 12 digits"),
        )),
        None => {}
    }
    finish(checked, issues)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> chrono::NaiveDateTime {
        crate::fhir::datetime::range(s).expect("an instant").0
    }

    fn record(state: ReferralState, service: &str) -> StateRecord {
        StateRecord {
            state,
            reason: None,
            comment: None,
            service: Some(service.into()),
        }
    }

    #[test]
    fn a_state_records_when_its_stretch_began() {
        let mut v1 = json!({"resourceType": "ServiceRequest"});
        set_state(
            &mut v1,
            &record(ReferralState::NotBooked, "HealthcareService/1"),
        );
        stamp_since(&mut v1, None, at("2026-01-05T09:00:00Z"));
        assert_eq!(state_since(&v1), Some(at("2026-01-05T09:00:00Z")));
        // The same state and service again (another reason, say): the start stays.
        let mut v2 = v1.clone();
        let mut again = record(ReferralState::NotBooked, "HealthcareService/1");
        again.comment = Some("again".into());
        set_state(&mut v2, &again);
        stamp_since(&mut v2, Some(&v1), at("2026-01-06T09:00:00Z"));
        assert_eq!(state_since(&v2), Some(at("2026-01-05T09:00:00Z")));
        // Another service, or another state: a new start.
        for next in [
            record(ReferralState::NotBooked, "HealthcareService/2"),
            record(ReferralState::Booked, "HealthcareService/1"),
        ] {
            let mut v3 = v2.clone();
            set_state(&mut v3, &next);
            stamp_since(&mut v3, Some(&v2), at("2026-01-07T09:00:00Z"));
            assert_eq!(state_since(&v3), Some(at("2026-01-07T09:00:00Z")), "{v3}");
        }
        // A version stored before the start was recorded: none is made up in its stretch.
        let mut legacy = v1.clone();
        set_state(&mut legacy, &again);
        let parts = legacy["extension"][0]["extension"]
            .as_array_mut()
            .expect("parts");
        parts.retain(|p| p["url"] != "since");
        let mut v4 = legacy.clone();
        set_state(
            &mut v4,
            &record(ReferralState::NotBooked, "HealthcareService/1"),
        );
        stamp_since(&mut v4, Some(&legacy), at("2026-01-08T09:00:00Z"));
        assert_eq!(state_since(&v4), None, "{v4}");
    }
}

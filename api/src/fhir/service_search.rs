//! `$ers.searchHealthcareServicesForPatient` (e-RS A010 in R4): the Directory of Services search
//! for one patient. Its inputs (FHIR `Parameters`, or the same names as query parameters) become
//! ordinary HealthcareService search parameters, so the operation has no search logic of its own
//! and its paging links are plain searches.

use chrono::{Datelike, NaiveDate};
use serde_json::Value;

use super::outcome::Issue;
use super::resources::healthcare_service::{
    CLINIC_TYPE_SYSTEM, ELIGIBILITY_SYSTEM, PRIORITY_SYSTEM, REQUEST_FLOW_SYSTEM, SPECIALTY_SYSTEM,
};
use super::terminology;
use crate::domain::referral::{Commissioning, OpParam};
use crate::domain::{NhsNumber, OdsCode, PostcodeArea, SdsUserId};

pub const NAME: &str = "$ers.searchHealthcareServicesForPatient";

/// Radius used when a position is known but no `distanceLimit` is given: the search's limit.
const DEFAULT_MILES: f64 = 310.0;
const MAX_MILES: f64 = 310.0;

/// The patient the search is for: by NHS number or by logical id.
#[derive(Debug, Clone, PartialEq)]
pub enum PatientRef {
    NhsNumber(NhsNumber),
    Id(String),
}

/// What to sort the services by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Nearest first (needs a postcode).
    Distance,
    /// Earliest free slot first (e-RS "indicative wait time").
    EarliestSlot,
}

/// The operation's inputs, checked.
#[derive(Debug, Clone)]
pub struct PatientServiceSearch {
    pub patient: Option<PatientRef>,
    pub postcode: Option<PostcodeArea>,
    pub distance_miles: Option<f64>,
    pub priority: String,
    pub specialty: Option<String>,
    pub clinic_type: Option<String>,
    /// Request flows to match (any of): BOOKABLE, REVIEW, ADVICE_AND_GUIDANCE.
    pub request_flows: Vec<&'static str>,
    pub with_free_slots: bool,
    pub age_and_gender_appropriate: Option<bool>,
    pub named_clinician: Option<SdsUserId>,
    /// The commissioning rule organisation named; the patient's (or the caller's) otherwise.
    pub commissioning: Option<OdsCode>,
    pub sort: Option<SortBy>,
    pub count: Option<String>,
    pub offset: Option<String>,
    /// `_total`: none by default (e-RS A010 returns no total; counting costs a second query).
    pub total: Option<String>,
}

/// The search entry extension that says how soon a found service could see the patient.
pub const WAIT_EXTENSION: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-IndicativeWaitTime";
pub const WAIT_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-IndicativeWaitTime";

/// `wait` as the search entry's `Extension-eRS-IndicativeWaitTime`: its code, and for a free
/// slot its start and the days from `today` (in the UK) to its day there.
pub fn wait_extension(wait: &crate::domain::directory::Wait, today: NaiveDate) -> Value {
    use crate::domain::directory::Wait;
    let code = match wait {
        Wait::Slot(_) => "SLOTS_AVAILABLE",
        Wait::Limited => "LIMITED_AVAILABILITY",
        Wait::NotApplicable => "NOT_APPLICABLE",
    };
    let display = terminology::concept(WAIT_SYSTEM, code)
        .and_then(|c| c.get("display"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut parts = vec![serde_json::json!({
        "url": "code",
        "valueCoding": {"system": WAIT_SYSTEM, "code": code, "display": display},
    })];
    if let Wait::Slot(start) = wait {
        parts.push(serde_json::json!({"url": "earliestSlot", "valueDateTime": super::datetime::instant(*start)}));
        let days = (super::datetime::uk_date(*start) - today).num_days();
        parts.push(serde_json::json!({"url": "days", "valueInteger": days}));
    }
    serde_json::json!({"url": WAIT_EXTENSION, "extension": parts})
}

/// What the search needs to know of the patient.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientFacts {
    pub postcode: Option<String>,
    /// The home postcode when the server cannot place it (not a postcode, or one its postcode
    /// table does not hold, e.g. ZZ99 3VZ, no fixed abode); `postcode` is then None.
    pub unplaced_postcode: Option<String>,
    pub age_years: Option<i32>,
    pub gender: Option<String>,
}

const PARAMS: &[OpParam] = &[
    OpParam::new("patient", 0, "1", "Identifier|string|Reference", "NHS number (valueIdentifier, valueString) or Patient/{id} (valueReference)"),
    OpParam::new("postcode", 0, "1", "string", "postcode or outward code to measure distance from; the patient's home postcode by default"),
    OpParam::new("distanceLimit", 0, "1", "integer", "radius in miles (1-310)"),
    OpParam::new("priority", 1, "1", "code", "ROUTINE, URGENT or TWO_WEEK_WAIT (required)"),
    OpParam::new("specialty", 0, "1", "code", "e-RS specialty code"),
    OpParam::new("clinicType", 0, "1", "code", "e-RS clinic type code"),
    OpParam::new("requestType", 0, "1", "code", "APPOINTMENT_REQUEST (bookable and triage services) or ADVICE_AND_GUIDANCE_REQUEST"),
    OpParam::new("requestFlow", 0, "*", "code", "BOOKABLE, REVIEW or ADVICE_AND_GUIDANCE (may repeat)"),
    OpParam::new("withFreeSlots", 0, "1", "boolean", "true: only services with a free slot at the priority"),
    OpParam::new("ageAndGenderAppropriate", 0, "1", "boolean", "true (default with a patient): leave out services that do not treat the patient's age or gender"),
    OpParam::new("namedClinician", 0, "1", "string", "SDS user id of a clinician the service has a schedule for"),
    OpParam::new("commissioningRuleOrganisation", 0, "1", "Identifier|string", "ODS code of the commissioner whose rules apply (a referral's Extension-eRS-CommissioningRuleOrganisation, when reshortlisting it); by default the commissioner of the patient's registered GP practice, else of your organisation"),
    OpParam::new("sort", 0, "1", "code", "DISTANCE (default with a postcode) or EARLIEST_AVAILABLE_SLOT"),
    OpParam::new("_count", 0, "1", "integer", "page size (1-100)"),
    OpParam::new("_offset", 0, "1", "integer", "results to skip"),
    OpParam::new("_total", 0, "1", "code", "accurate to count every match (default none: a first page that is not full still gives its total)"),
];

/// The operation's inputs (for its OperationDefinition, its documentation and reading them).
pub fn parameters() -> &'static [OpParam] {
    PARAMS
}

fn at(name: &str) -> String {
    format!("Parameters.parameter[{name}]")
}

/// The search parameter a postcode becomes.
const NEAR_POSTCODE: &str = "near-postcode";

/// The operation's input a parameter of its search stands for, to name in an error about it
/// (the search's `near-postcode` is this operation's `postcode`).
pub fn input_of(param: &str) -> Option<String> {
    (param == NEAR_POSTCODE).then(|| at("postcode"))
}

fn flag(name: &str, v: &str, issues: &mut Vec<Issue>) -> Option<bool> {
    super::parameters::boolean(&at(name), v)
        .map_err(|i| issues.push(i))
        .ok()
}

/// The value of an identifier input (`[system|]value`) in `system`, or None with the issue of
/// another system (`what` names the identifier).
fn in_system<'a>(
    name: &str,
    v: &'a str,
    system: &str,
    what: &str,
    issues: &mut Vec<Issue>,
) -> Option<&'a str> {
    match v.split_once('|') {
        Some((sys, value)) if sys == system || sys.is_empty() => Some(value),
        Some((sys, _)) => {
            issues.push(Issue::invalid_at(
                at(name),
                format!("({sys}) is not the {what} system {system}"),
            ));
            None
        }
        None => Some(v),
    }
}

fn code_of(name: &str, v: &str, system: &str, issues: &mut Vec<Issue>) -> Option<String> {
    let code = v.rsplit('|').next().unwrap_or(v);
    let codes = terminology::codes(system);
    if codes.contains(&code) {
        Some(code.to_owned())
    } else {
        issues.push(Issue::invalid_at(
            at(name),
            format!(
                "({code}) is not a code of {system}; expected one of: {}",
                codes.join(", ")
            ),
        ));
        None
    }
}

impl PatientServiceSearch {
    /// Checks the inputs (given by name and count as declared: `operation_inputs` saw to that);
    /// every problem is reported at once, each naming its parameter.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let mut s = PatientServiceSearch {
            patient: None,
            postcode: None,
            distance_miles: None,
            priority: String::new(),
            specialty: None,
            clinic_type: None,
            request_flows: Vec::new(),
            with_free_slots: false,
            age_and_gender_appropriate: None,
            named_clinician: None,
            commissioning: None,
            sort: None,
            count: None,
            offset: None,
            total: None,
        };
        let mut priority = None;
        for (name, v) in pairs {
            let v = v.trim();
            match name.as_str() {
                "patient" => {
                    if let Some(id) = v.strip_prefix("Patient/") {
                        if super::is_valid_id(id) {
                            s.patient = Some(PatientRef::Id(id.to_owned()));
                        } else {
                            issues.push(Issue::invalid_at(
                                at(name),
                                format!("({v}) is not a valid Patient reference"),
                            ));
                        }
                        continue;
                    }
                    let Some(number) =
                        in_system(name, v, NhsNumber::SYSTEM, "NHS number", &mut issues)
                    else {
                        continue;
                    };
                    match NhsNumber::parse(number) {
                        Ok(n) => s.patient = Some(PatientRef::NhsNumber(n)),
                        Err(e) => issues.push(Issue::invalid_at(at(name), e.0)),
                    }
                }
                "postcode" => match PostcodeArea::parse(v) {
                    Ok(p) => s.postcode = Some(p),
                    Err(e) => issues.push(Issue::invalid_at(at(name), e.0)),
                },
                "distanceLimit" => match v.parse::<f64>() {
                    Ok(m) if m.is_finite() && m > 0.0 && m <= MAX_MILES => {
                        s.distance_miles = Some(m)
                    }
                    _ => issues.push(Issue::invalid_at(
                        at(name),
                        format!("({v}) must be a number of miles greater than 0 and at most {MAX_MILES}"),
                    )),
                },
                "priority" => priority = code_of(name, v, PRIORITY_SYSTEM, &mut issues),
                "specialty" => s.specialty = code_of(name, v, SPECIALTY_SYSTEM, &mut issues),
                "clinicType" => s.clinic_type = code_of(name, v, CLINIC_TYPE_SYSTEM, &mut issues),
                "requestType" => match v {
                    "APPOINTMENT_REQUEST" => s.request_flows.extend(["BOOKABLE", "REVIEW"]),
                    "ADVICE_AND_GUIDANCE_REQUEST" => {
                        s.request_flows.push("ADVICE_AND_GUIDANCE")
                    }
                    _ => issues.push(Issue::invalid_at(
                        at(name),
                        format!("({v}) must be APPOINTMENT_REQUEST or ADVICE_AND_GUIDANCE_REQUEST"),
                    )),
                },
                "requestFlow" => {
                    if let Some(code) = code_of(name, v, REQUEST_FLOW_SYSTEM, &mut issues) {
                        if let Some(c) = ["BOOKABLE", "REVIEW", "ADVICE_AND_GUIDANCE"]
                            .into_iter()
                            .find(|c| *c == code)
                        {
                            s.request_flows.push(c);
                        }
                    }
                }
                "withFreeSlots" => {
                    s.with_free_slots = flag(name, v, &mut issues).unwrap_or(false)
                }
                "ageAndGenderAppropriate" => {
                    s.age_and_gender_appropriate = flag(name, v, &mut issues)
                }
                "namedClinician" => {
                    let id = v.rsplit('|').next().unwrap_or(v);
                    match SdsUserId::parse(id) {
                        Ok(u) => s.named_clinician = Some(u),
                        Err(e) => issues.push(Issue::invalid_at(at(name), e.0)),
                    }
                }
                "commissioningRuleOrganisation" => {
                    let Some(code) = in_system(
                        name,
                        v,
                        OdsCode::ORGANIZATION_SYSTEM,
                        "ODS organisation code",
                        &mut issues,
                    ) else {
                        continue;
                    };
                    match OdsCode::parse(code) {
                        Ok(o) => s.commissioning = Some(o),
                        Err(e) => issues.push(Issue::invalid_at(at(name), e.0)),
                    }
                }
                "sort" => match v {
                    "DISTANCE" => s.sort = Some(SortBy::Distance),
                    "EARLIEST_AVAILABLE_SLOT" | "IWT" => s.sort = Some(SortBy::EarliestSlot),
                    _ => issues.push(Issue::invalid_at(
                        at(name),
                        format!("({v}) must be DISTANCE or EARLIEST_AVAILABLE_SLOT"),
                    )),
                },
                "_count" => s.count = Some(v.to_owned()),
                "_offset" => s.offset = Some(v.to_owned()),
                "_total" => s.total = Some(v.to_owned()),
                // The general `_format` and `_pretty`: operation_inputs took only the declared
                // parameters besides, each as often as it may be given.
                _ => {}
            }
        }
        match priority {
            Some(p) => s.priority = p,
            None if !issues
                .iter()
                .any(|i| i.expression.as_deref() == Some(&at("priority"))) =>
            {
                issues.push(Issue::required_at(
                    at("priority"),
                    "is required: ROUTINE, URGENT or TWO_WEEK_WAIT",
                ))
            }
            None => {}
        }
        if issues.is_empty() {
            Ok(s)
        } else {
            Err(issues)
        }
    }

    /// The patient's home postcode when it would have been used and cannot be placed.
    fn unplaced<'a>(&self, patient: Option<&'a PatientFacts>) -> Option<&'a str> {
        self.postcode
            .is_none()
            .then_some(patient?.unplaced_postcode.as_deref()?)
    }

    /// What the answer says beside its results: that the patient's home postcode could not be
    /// placed, so the services are neither limited to nor sorted by their distance from it;
    /// and which commissioner's rules chose the services, when the caller did not name one.
    pub fn notes(
        &self,
        patient: Option<&PatientFacts>,
        commissioning: Option<&Commissioning>,
    ) -> Vec<Issue> {
        let mut out: Vec<Issue> = self
            .unplaced(patient)
            .map(|pc| {
                Issue::warning(format!(
                    "the patient's home postcode ({pc}) is not one this server can place: services are not limited to or sorted by distance; give a postcode to have them"
                ))
                .with_expression(at("postcode"))
            })
            .into_iter()
            .collect();
        if let Some(c) = commissioning.filter(|c| !matches!(c, Commissioning::Named(_))) {
            out.push(
                Issue::information(format!(
                    "the services are those commissioned for {} ({}): a referral to them has that commissioning rule organisation; send it as NHSD-eRS-Comm-Rule-Org when searching their slots, or give commissioningRuleOrganisation to search for another",
                    c.code(),
                    c.origin()
                ))
                .with_expression(at("commissioningRuleOrganisation")),
            );
        }
        out
    }

    /// The HealthcareService search this operation runs, given what is known of the patient.
    pub fn search_params(
        &self,
        patient: Option<&PatientFacts>,
        commissioning: Option<&Commissioning>,
    ) -> Result<Vec<(String, String)>, Vec<Issue>> {
        // The narrowest filters first: among equally ranked criteria, the search checks them in
        // this order for each candidate service.
        let mut out: Vec<(String, String)> = Vec::new();
        let push = |out: &mut Vec<(String, String)>, k: &str, v: String| out.push((k.into(), v));
        if let Some(s) = &self.specialty {
            push(&mut out, "specialty", format!("{SPECIALTY_SYSTEM}|{s}"));
        }
        push(&mut out, "priority", self.priority.clone());
        push(&mut out, "active", "true".into());
        if let Some(c) = &self.clinic_type {
            push(
                &mut out,
                "service-type",
                format!("{CLINIC_TYPE_SYSTEM}|{c}"),
            );
        }
        if !self.request_flows.is_empty() {
            let mut flows = self.request_flows.clone();
            flows.sort_unstable();
            flows.dedup();
            let any: Vec<String> = flows
                .iter()
                .map(|f| format!("{REQUEST_FLOW_SYSTEM}|{f}"))
                .collect();
            push(&mut out, "characteristic", any.join(","));
        }
        if self.with_free_slots {
            push(&mut out, "available", self.priority.clone());
        }
        if let Some(u) = &self.named_clinician {
            push(
                &mut out,
                "_has:Schedule:actor:actor:Practitioner.identifier",
                format!("{}|{}", SdsUserId::SYSTEM, u.as_str()),
            );
        }
        // Most services are open to every commissioner: the widest filter, checked last.
        if let Some(c) = commissioning {
            push(
                &mut out,
                "commissioned-for",
                format!("{}|{}", OdsCode::ORGANIZATION_SYSTEM, c.code()),
            );
        }
        let postcode = self
            .postcode
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .or_else(|| patient.and_then(|f| f.postcode.clone()));
        let needed = |what: &str| {
            let why = match self.unplaced(patient) {
                Some(pc) => format!("the patient's home postcode ({pc}) is not one this server can place: give a postcode"),
                None => "give a postcode, or a patient whose home address has one".to_owned(),
            };
            Err(vec![Issue::required_at(
                at("postcode"),
                format!("is needed {what}: {why}"),
            )])
        };
        match (&postcode, self.sort) {
            (Some(pc), _) => push(
                &mut out,
                NEAR_POSTCODE,
                format!("{pc}|{}|mi", self.distance_miles.unwrap_or(DEFAULT_MILES)),
            ),
            (None, Some(SortBy::Distance)) | (None, None) if self.distance_miles.is_some() => {
                return needed("for distanceLimit")
            }
            (None, Some(SortBy::Distance)) => return needed("to sort by DISTANCE"),
            _ => {}
        }
        if self.sort == Some(SortBy::EarliestSlot) {
            push(&mut out, "_sort", "earliest-slot".into());
        }
        if self.age_and_gender_appropriate.unwrap_or(patient.is_some()) {
            let Some(facts) = patient else {
                return Err(vec![Issue::required_at(
                    at("patient"),
                    "is needed for ageAndGenderAppropriate=true",
                )]);
            };
            for code in ruled_out(facts) {
                push(
                    &mut out,
                    "eligibility:not",
                    format!("{ELIGIBILITY_SYSTEM}|{code}"),
                );
            }
        }
        push(&mut out, "_include", "HealthcareService:location".into());
        if let Some(c) = &self.count {
            push(&mut out, "_count", c.clone());
        }
        if let Some(o) = &self.offset {
            push(&mut out, "_offset", o.clone());
        }
        push(
            &mut out,
            "_total",
            self.total.clone().unwrap_or_else(|| "none".into()),
        );
        Ok(out)
    }
}

/// Eligibility codes whose CodeSystem properties (gender, minimumAge, maximumAge) rule the
/// patient out. Unknown age or gender rules nothing out on that count.
pub fn ruled_out(facts: &PatientFacts) -> Vec<&'static str> {
    let Some(cs) = terminology::by_url(ELIGIBILITY_SYSTEM) else {
        return Vec::new();
    };
    let prop = |c: &'static Value, code: &str| -> Option<&'static Value> {
        c.get("property")?
            .as_array()?
            .iter()
            .find(|p| p.get("code").and_then(Value::as_str) == Some(code))
    };
    cs.get("concept")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            let gender_out = prop(c, "gender")
                .and_then(|p| p.get("valueCode"))
                .and_then(Value::as_str)
                .zip(
                    facts
                        .gender
                        .as_deref()
                        .filter(|g| matches!(*g, "male" | "female")),
                )
                .is_some_and(|(only, g)| only != g);
            let age = facts.age_years;
            let too_young = prop(c, "minimumAge")
                .and_then(|p| p.get("valueInteger"))
                .and_then(Value::as_i64)
                .zip(age)
                .is_some_and(|(min, a)| i64::from(a) < min);
            let too_old = prop(c, "maximumAge")
                .and_then(|p| p.get("valueInteger"))
                .and_then(Value::as_i64)
                .zip(age)
                .is_some_and(|(max, a)| i64::from(a) > max);
            gender_out || too_young || too_old
        })
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect()
}

/// Home postcode (or the first postcode), age on `today` and gender of a Patient resource.
pub fn patient_facts(patient: &Value, today: NaiveDate) -> PatientFacts {
    let addresses: Vec<&Value> = patient
        .get("address")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let postcode = addresses
        .iter()
        .filter(|a| a.get("use").and_then(Value::as_str) == Some("home"))
        .chain(addresses.iter())
        .find_map(|a| a.get("postalCode").and_then(Value::as_str))
        .map(str::to_owned);
    let age_years = patient
        .get("birthDate")
        .and_then(Value::as_str)
        .and_then(|b| {
            // A partial date (YYYY or YYYY-MM) counts from its earliest day.
            let mut parts = b.split('-').map(|p| p.parse::<u32>().ok());
            let y = i32::try_from(parts.next()??).ok()?;
            let m = parts.next().flatten().unwrap_or(1);
            let d = parts.next().flatten().unwrap_or(1);
            NaiveDate::from_ymd_opt(y, m, d)
        })
        .map(|born| {
            let mut age = today.year() - born.year();
            if (today.month(), today.day()) < (born.month(), born.day()) {
                age -= 1;
            }
            age
        });
    PatientFacts {
        postcode,
        unplaced_postcode: None,
        age_years,
        gender: patient
            .get("gender")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
    }

    #[test]
    fn eligibility_follows_the_codesystem_properties() {
        let man = PatientFacts {
            age_years: Some(40),
            gender: Some("male".into()),
            ..Default::default()
        };
        assert_eq!(ruled_out(&man), vec!["FEMALE_ONLY", "CHILDREN_ONLY"]);
        let girl = PatientFacts {
            age_years: Some(17),
            gender: Some("female".into()),
            ..Default::default()
        };
        assert_eq!(ruled_out(&girl), vec!["MALE_ONLY", "ADULTS_ONLY"]);
        assert!(ruled_out(&PatientFacts::default()).is_empty());
    }

    #[test]
    fn patient_facts_take_the_home_postcode_and_age_on_the_day() {
        let p = json!({
            "birthDate": "2000-11-24",
            "gender": "female",
            "address": [{"use": "work", "postalCode": "M1 1AA"}, {"use": "home", "postalCode": "LS1 4AP"}]
        });
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap_or_default();
        let f = patient_facts(&p, day(23));
        assert_eq!(f.postcode.as_deref(), Some("LS1 4AP"));
        assert_eq!(f.age_years, Some(25));
        assert_eq!(patient_facts(&p, day(24)).age_years, Some(26));
    }

    #[test]
    fn inputs_become_one_search() {
        let s = PatientServiceSearch::from_pairs(&pairs(&[
            ("priority", "URGENT"),
            ("specialty", "CARDIOLOGY"),
            ("requestType", "APPOINTMENT_REQUEST"),
            ("postcode", "ls1 4ap"),
            ("distanceLimit", "25"),
            ("withFreeSlots", "true"),
            ("sort", "EARLIEST_AVAILABLE_SLOT"),
        ]))
        .expect("valid");
        let q = s
            .search_params(None, Some(&Commissioning::Named("QSA".into())))
            .expect("search");
        let has = |k: &str, v: &str| q.iter().any(|(a, b)| a == k && b == v);
        assert!(has("priority", "URGENT"));
        assert!(has("available", "URGENT"));
        assert!(has("near-postcode", "LS1 4AP|25|mi"));
        assert!(has("_sort", "earliest-slot"));
        assert!(has(
            "commissioned-for",
            "https://fhir.nhs.uk/Id/ods-organization-code|QSA"
        ));
        assert!(has(
            "characteristic",
            "https://fhir.nhs.uk/CodeSystem/eRS-RequestFlowType|BOOKABLE,https://fhir.nhs.uk/CodeSystem/eRS-RequestFlowType|REVIEW"
        ));
    }

    #[test]
    fn every_bad_input_is_named() {
        let err = PatientServiceSearch::from_pairs(&pairs(&[
            ("specialty", "ASTROLOGY"),
            ("distanceLimit", "9000"),
        ]))
        .expect_err("invalid");
        let at: Vec<&str> = err.iter().filter_map(|i| i.expression.as_deref()).collect();
        assert_eq!(
            at,
            vec![
                "Parameters.parameter[specialty]",
                "Parameters.parameter[distanceLimit]",
                "Parameters.parameter[priority]"
            ]
        );
    }
}

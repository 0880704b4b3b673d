//! The one registration of every resource type the server hosts: its interactions, search
//! parameters and rules. Routes, search, indexing and the CapabilityStatement all read it; the
//! profile of each type comes from the validator's data (`ers_fhir::validate::profile_of`).

use serde_json::Value;

use super::outcome::Issue;
use super::resources;
use ers_schema::search::TokenMatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Token,
    String,
    Date,
    Reference,
    /// A canonical URL (`meta.profile`): matched whole, or without its `|version`; indexed as a
    /// token without a system.
    Uri,
    /// A position (`near=lat|long|distance|units`); with `targets`, the position of the
    /// resource a reference parameter of the same name as `paths[0]` points to.
    Position,
    /// `PRIORITY[|from[|to]]`: services with a free slot usable at that priority (lower-priority
    /// slots included) starting in the window (from now when no `from`).
    Availability,
}

impl ParamKind {
    pub fn fhir_name(self) -> &'static str {
        match self {
            ParamKind::Token => "token",
            ParamKind::String => "string",
            ParamKind::Date => "date",
            ParamKind::Reference => "reference",
            ParamKind::Uri => "uri",
            ParamKind::Position | ParamKind::Availability => "special",
        }
    }
}

/// A search parameter: its name, type, the element paths it indexes (dot-separated, from the
/// resource root) and, for references, the types it may point to.
#[derive(Debug)]
pub struct SearchParamDef {
    pub name: &'static str,
    pub kind: ParamKind,
    pub paths: &'static [&'static str],
    pub targets: &'static [&'static str],
    pub doc: &'static str,
    /// For token parameters whose values imply others (a higher priority also matches lower):
    /// every value a search value stands for, none when it is not one the parameter takes.
    pub expand: Option<fn(&TokenMatch) -> Vec<TokenMatch>>,
    /// Values to index that no element path reaches (e.g. inside an extension), as FHIR
    /// elements of the parameter's type (a Coding for a token).
    pub extract: Option<fn(&Value) -> Vec<Value>>,
}

/// What a resource-specific check found: business identifiers that must stay unique.
#[derive(Debug, Default)]
pub struct Checked {
    pub unique: Vec<(String, String)>,
}

pub type CheckFn = fn(&Value) -> Result<Checked, Vec<Issue>>;

/// Who may see the resources of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Everyone the permission table lets read the type.
    Everyone,
    /// Only the organisations related to each resource (referrer, shortlisted or booked
    /// provider): its writer indexes their ODS codes (`service::scope`).
    Organisations,
    /// As the resource each one is about (Provenance: its target).
    AsTarget,
    /// An audience: organisations (or `*`, all) and business functions (or `*`, all), as its
    /// writer names them (announcements).
    Audience,
}

/// One hosted resource type.
#[derive(Debug)]
pub struct ResourceDef {
    pub name: &'static str,
    pub params: &'static [SearchParamDef],
    /// Top-level elements marked isSummary in the R4 StructureDefinition (for `_summary=true`).
    pub summary: &'static [&'static str],
    /// Whether DELETE is allowed (refused anyway while other resources refer to it).
    pub delete: bool,
    /// Whether PUT must carry `If-Match` (428 when it does not).
    pub if_match_required: bool,
    /// Whether the generic create, update and delete (and Bundle entries) write this type;
    /// false for types written only by their own use cases (referrals: UBRN, state machine).
    pub plain_writes: bool,
    /// Who may see resources of this type (organisation scoping of patient data).
    pub visibility: Visibility,
    pub check: CheckFn,
    /// Most ids one `_id` search may list, and the largest `_count` (e-RS: 20 services, 100 slots).
    pub max_ids: usize,
    pub max_count: i64,
    /// The order of a search that names none: (parameter, descending).
    pub default_sort: Option<(&'static str, bool)>,
    /// Changes are recorded for subscribers (`service::subscriptions`).
    pub events: bool,
}

/// R4's names for parameters served under another name: (type, R4 name, ours). A
/// referral's or a message's `subject` is always a Patient (the e-RS profiles), so R4's
/// `subject` is `patient`. Without this a standard client's `subject=Patient/…` would be an
/// unknown parameter, ignored (with a warning): every patient's referrals instead of one's.
/// e-RS A015 names a slot's priority `appointmentType`.
const ALIASES: &[(&str, &str, &str)] = &[
    ("ServiceRequest", "subject", "patient"),
    ("Communication", "subject", "patient"),
    ("Slot", "appointmentType", "priority"),
];

/// (target type, the parameter searching it) pairs.
pub type TargetParams = &'static [(&'static str, &'static str)];

/// Parameters FHIR defines over every participant of a type, which this server indexes one
/// target type apiece: `Appointment.actor` is searched as the type's `patient`, `service`,
/// `practitioner` or `location`, by the type its value (or `:Type` modifier) names.
pub const BY_TARGET: &[(&str, &str, TargetParams)] = &[(
    "Appointment",
    "actor",
    &[
        ("Patient", "patient"),
        ("HealthcareService", "service"),
        ("Practitioner", "practitioner"),
        ("Location", "location"),
    ],
)];

/// The parameters of `res_type` that `name` stands for by target type (`BY_TARGET`).
pub fn by_target(res_type: &str, name: &str) -> Option<TargetParams> {
    BY_TARGET
        .iter()
        .find(|(t, n, _)| *t == res_type && *n == name)
        .map(|(_, _, by)| *by)
}

impl ResourceDef {
    pub fn param(&self, name: &str) -> Option<&'static SearchParamDef> {
        let name = ALIASES
            .iter()
            .find(|(t, alias, _)| *t == self.name && *alias == name)
            .map_or(name, |(_, _, ours)| *ours);
        self.all_params().find(|p| p.name == name)
    }

    /// The type's own parameters, then those of every stored type (`COMMON_PARAMS`; not for a
    /// derived type, which has no index rows).
    pub fn all_params(&self) -> impl Iterator<Item = &'static SearchParamDef> + 'static {
        let common: &'static [SearchParamDef] = if is_derived(self) { &[] } else { COMMON_PARAMS };
        self.params.iter().chain(common)
    }
}

macro_rules! param {
    ($name:literal, $kind:ident, [$($path:literal),*], $doc:literal) => {
        SearchParamDef { name: $name, kind: ParamKind::$kind, paths: &[$($path),*], targets: &[], doc: $doc, expand: None, extract: None }
    };
    ($name:literal, Reference, [$($path:literal),*], targets [$($t:literal),*], $doc:literal) => {
        SearchParamDef { name: $name, kind: ParamKind::Reference, paths: &[$($path),*], targets: &[$($t),*], doc: $doc, expand: None, extract: None }
    };
}

/// R4's parameters of every resource over `meta`, indexed for every stored type (written with
/// each version like any other parameter), with the definitions they implement.
pub const COMMON_PARAMS: &[SearchParamDef] = &[
    param!(
        "_tag",
        Token,
        ["meta.tag"],
        "A tag of the resource (meta.tag): [system|]code"
    ),
    param!(
        "_security",
        Token,
        ["meta.security"],
        "A security label of the resource (meta.security): [system|]code"
    ),
    param!(
        "_profile",
        Uri,
        ["meta.profile"],
        "A profile the resource claims (meta.profile): its canonical URL, with or without |version"
    ),
];

/// The HL7 definition of a parameter of `COMMON_PARAMS`.
pub fn common_definition(name: &str) -> Option<&'static str> {
    match name {
        "_tag" => Some("http://hl7.org/fhir/SearchParameter/Resource-tag"),
        "_security" => Some("http://hl7.org/fhir/SearchParameter/Resource-security"),
        "_profile" => Some("http://hl7.org/fhir/SearchParameter/Resource-profile"),
        _ => None,
    }
}

const PATIENT_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "A patient identifier, e.g. https://fhir.nhs.uk/Id/nhs-number|9912003888"
    ),
    param!(
        "name",
        String,
        ["name"],
        "Any part of a name (family, given, prefix, suffix, text)"
    ),
    param!("family", String, ["name.family"], "Family name"),
    param!("given", String, ["name.given"], "Given name"),
    param!("birthdate", Date, ["birthDate"], "Date of birth"),
    param!(
        "gender",
        Token,
        ["gender"],
        "Administrative gender: male | female | other | unknown"
    ),
    param!("address", String, ["address"], "Any part of an address"),
    param!(
        "address-postalcode",
        String,
        ["address.postalCode"],
        "Postcode"
    ),
    param!("address-city", String, ["address.city"], "City or town"),
    param!(
        "telecom",
        Token,
        ["telecom"],
        "A phone number, email address or other contact point"
    ),
    param!("active", Token, ["active"], "Whether the record is active"),
    param!("general-practitioner", Reference, ["generalPractitioner"], targets ["Organization", "Practitioner", "PractitionerRole"], "The registered GP practice or GP"),
    param!(
        "organization",
        Reference,
        ["managingOrganization"],
        targets["Organization"],
        "The organisation that is the custodian of the record"
    ),
    param!(
        "link",
        Reference,
        ["link.other"],
        targets["Patient"],
        "Another record of the same person this one links to (Patient.link.other); a patient another links to cannot be deleted while it does"
    ),
];

const PRACTITIONER_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "An identifier, e.g. https://fhir.nhs.uk/Id/sds-user-id|021600556514"
    ),
    param!("name", String, ["name"], "Any part of a name"),
    param!("family", String, ["name.family"], "Family name"),
    param!("given", String, ["name.given"], "Given name"),
    param!("telecom", Token, ["telecom"], "A contact point"),
    param!("active", Token, ["active"], "Whether the record is active"),
];

const ORGANIZATION_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "An identifier, e.g. https://fhir.nhs.uk/Id/ods-organization-code|R69"
    ),
    param!("name", String, ["name", "alias"], "Name or alias"),
    param!(
        "active",
        Token,
        ["active"],
        "Whether the organisation is active"
    ),
    param!("type", Token, ["type"], "Organisation type"),
    param!("address", String, ["address"], "Any part of an address"),
    param!(
        "address-postalcode",
        String,
        ["address.postalCode"],
        "Postcode"
    ),
    param!(
        "partof",
        Reference,
        ["partOf"],
        targets["Organization"],
        "The parent organisation"
    ),
];

const PRACTITIONER_ROLE_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "A role identifier, e.g. https://fhir.nhs.uk/Id/sds-role-profile-id|..."
    ),
    param!(
        "practitioner",
        Reference,
        ["practitioner"],
        targets["Practitioner"],
        "The practitioner in the role"
    ),
    param!(
        "organization",
        Reference,
        ["organization"],
        targets["Organization"],
        "The organisation where the role is held"
    ),
    param!(
        "location",
        Reference,
        ["location"],
        targets["Location"],
        "Where the role is performed"
    ),
    param!(
        "role",
        Token,
        ["code"],
        "The role code (e-RS business function or SDS job role)"
    ),
    param!("specialty", Token, ["specialty"], "Specialty"),
    param!("active", Token, ["active"], "Whether the role is active"),
    param!("date", Date, ["period"], "The period the role is held"),
];

const LOCATION_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "An identifier, e.g. https://fhir.nhs.uk/Id/ods-site-code|R6901"
    ),
    param!("name", String, ["name", "alias"], "Name or alias"),
    param!("address", String, ["address"], "Any part of the address"),
    param!(
        "address-postalcode",
        String,
        ["address.postalCode"],
        "Postcode"
    ),
    param!("address-city", String, ["address.city"], "City or town"),
    param!("status", Token, ["status"], "active | suspended | inactive"),
    param!("type", Token, ["type"], "Location type"),
    param!(
        "organization",
        Reference,
        ["managingOrganization"],
        targets["Organization"],
        "The managing organisation"
    ),
    param!(
        "partof",
        Reference,
        ["partOf"],
        targets["Location"],
        "The location this one is part of"
    ),
    SearchParamDef {
        name: "near",
        kind: ParamKind::Position,
        paths: &["position"],
        targets: &[],
        doc: "lat|long|distance|units (km, mi or m; at most 500 km), nearest first; or near-postcode=POSTCODE|distance|units",
        expand: None,
        extract: None,
    },
];

const COMMUNICATION_PARAMS: &[SearchParamDef] = &[
    param!(
        "based-on",
        Reference,
        ["basedOn"],
        targets["ServiceRequest"],
        "The advice and guidance request the message belongs to"
    ),
    param!(
        "identifier",
        Token,
        ["identifier"],
        "The UBRN of its request: https://fhir.nhs.uk/Id/UBRN|…"
    ),
    param!(
        "patient",
        Reference,
        ["subject"],
        targets["Patient"],
        "The patient the advice is about (R4's `subject` too)"
    ),
    param!(
        "category",
        Token,
        ["category"],
        "Direction: REQUESTER (the referrer) or RESPONDER (the provider)"
    ),
    param!(
        "sent",
        Date,
        ["sent"],
        "When it was sent (_sort=-sent: newest first)"
    ),
    param!(
        "sender",
        Reference,
        ["sender"],
        targets["PractitionerRole", "Organization"],
        "Who sent it"
    ),
    param!(
        "recipient",
        Reference,
        ["recipient"],
        targets["PractitionerRole", "HealthcareService", "Organization"],
        "Who it was sent to"
    ),
];

const SUBSCRIPTION_PARAMS: &[SearchParamDef] = &[
    param!(
        "status",
        Token,
        ["status"],
        "requested | active | error | off"
    ),
    param!("url", String, ["channel.endpoint"], "The endpoint notified"),
    param!(
        "criteria",
        String,
        ["criteria"],
        "What it watches, e.g. ServiceRequest?performer=HealthcareService/11000"
    ),
];

const COMMUNICATION_REQUEST_PARAMS: &[SearchParamDef] = &[
    param!("status", Token, ["status"], "active | revoked | completed"),
    param!(
        "category",
        Token,
        ["category"],
        "notification (an announcement)"
    ),
    param!(
        "priority",
        Token,
        ["priority"],
        "Severity: routine | urgent | asap | stat"
    ),
    param!(
        "occurrence",
        Date,
        ["occurrencePeriod"],
        "When it is shown (its validity window)"
    ),
    param!("authored", Date, ["authoredOn"], "When it was published"),
    param!(
        "recipient",
        Reference,
        ["recipient"],
        targets["Organization"],
        "An audience organisation"
    ),
    SearchParamDef {
        name: "audience-role",
        kind: ParamKind::Token,
        paths: &[],
        targets: &[],
        doc: "An audience business function (* : every role)",
        expand: None,
        extract: Some(resources::announcement::extract_roles),
    },
];

const PROVENANCE_PARAMS: &[SearchParamDef] = &[
    param!("target", Reference, ["target"], targets ["Patient", "Practitioner", "Organization", "PractitionerRole", "Location", "HealthcareService", "Schedule", "Slot", "ServiceRequest", "Appointment", "DocumentReference", "Communication", "Subscription", "CommunicationRequest"], "The resource version this records the making of"),
    param!(
        "agent",
        Token,
        ["agent.who.identifier"],
        "Who made it: SDS user id or application id"
    ),
    param!(
        "agent-role",
        Token,
        ["agent.role"],
        "The e-RS business function they acted in"
    ),
    param!("recorded", Date, ["recorded"], "When the version was made"),
];

const HEALTHCARE_SERVICE_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "Service id, e.g. https://fhir.nhs.uk/Id/ers-service|11000"
    ),
    param!("name", String, ["name"], "Service name"),
    param!(
        "active",
        Token,
        ["active"],
        "Whether the service is active (retired services are not)"
    ),
    param!(
        "specialty",
        Token,
        ["specialty"],
        "Specialty (e-RS SPECIALTY, or UK Core practice setting)"
    ),
    param!(
        "service-type",
        Token,
        ["type"],
        "Clinic type / appointment type"
    ),
    param!("service-category", Token, ["category"], "Service category"),
    param!(
        "characteristic",
        Token,
        ["characteristic"],
        "Request flow (BOOKABLE, REVIEW, ADVICE_AND_GUIDANCE), bookable type, priorities supported"
    ),
    param!(
        "priority",
        Token,
        ["characteristic"],
        "A priority the service supports: ROUTINE, URGENT, TWO_WEEK_WAIT"
    ),
    param!(
        "eligibility",
        Token,
        ["eligibility.code"],
        "Patients treated: MALE_ONLY, FEMALE_ONLY, ADULTS_ONLY, CHILDREN_ONLY (e-RS age and gender); none means everyone"
    ),
    param!(
        "organization",
        Reference,
        ["providedBy"],
        targets["Organization"],
        "The provider organisation"
    ),
    param!(
        "location",
        Reference,
        ["location"],
        targets["Location"],
        "Where the service is delivered"
    ),
    SearchParamDef {
        name: "near",
        kind: ParamKind::Position,
        paths: &["location"],
        targets: &["Location"],
        doc: "Services delivered at a location within a distance: lat|long|distance|units, nearest first; or near-postcode=POSTCODE|distance|units",
        expand: None,
        extract: None,
    },
    SearchParamDef {
        name: "commissioned-for",
        kind: ParamKind::Token,
        paths: &[],
        targets: &[],
        doc: "Services a referral of this commissioning rule organisation may use (ODS code, e.g. https://fhir.nhs.uk/Id/ods-organization-code|QZN): those that list it in Extension-eRS-CommissionedBy, and those that list no commissioner (https://fhir.nhs.uk/CodeSystem/eRS-Commissioning|ANY_COMMISSIONER finds only these)",
        expand: Some(resources::healthcare_service::commissioned_for_any),
        extract: Some(resources::healthcare_service::extract_commissioned_for),
    },
    SearchParamDef {
        name: "available",
        kind: ParamKind::Availability,
        paths: &[],
        targets: &["Schedule", "Slot"],
        doc: "PRIORITY[|from[|to]]: has a free slot usable at that priority (TWO_WEEK_WAIT also finds URGENT and ROUTINE slots) starting in the window, from now by default",
        expand: None,
        extract: None,
    },
];

const SCHEDULE_PARAMS: &[SearchParamDef] = &[
    param!("identifier", Token, ["identifier"], "Schedule id"),
    param!("actor", Reference, ["actor"], targets ["HealthcareService", "Practitioner", "PractitionerRole", "Location"], "The service (and named clinician) the schedule is for"),
    param!(
        "active",
        Token,
        ["active"],
        "Whether the schedule is in use"
    ),
    param!(
        "date",
        Date,
        ["planningHorizon"],
        "The period the schedule covers"
    ),
    param!("specialty", Token, ["specialty"], "Specialty"),
    param!("service-type", Token, ["serviceType"], "Service type"),
];

const SERVICE_REQUEST_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "The UBRN: https://fhir.nhs.uk/Id/UBRN|000000070000"
    ),
    param!(
        "patient",
        Reference,
        ["subject"],
        targets["Patient"],
        "The patient referred (R4's `subject` too; chain: patient.identifier=https://fhir.nhs.uk/Id/nhs-number|…)"
    ),
    param!(
        "requester",
        Reference,
        ["requester"],
        targets["PractitionerRole"],
        "The referring clinician's role (chain: requester.organization=Organization/…)"
    ),
    param!(
        "performer",
        Reference,
        ["performer"],
        targets["HealthcareService"],
        "A shortlisted service"
    ),
    SearchParamDef {
        name: "service",
        kind: ParamKind::Reference,
        paths: &[],
        targets: &["HealthcareService"],
        doc: "The service the referral is with now (e.g. the triage service it awaits)",
        expand: None,
        extract: Some(resources::service_request::extract_service),
    },
    SearchParamDef {
        name: "commissioning-organisation",
        kind: ParamKind::Token,
        paths: &[],
        targets: &[],
        doc: "The referral's commissioning rule organisation (ODS code, Extension-eRS-CommissioningRuleOrganisation)",
        expand: None,
        extract: Some(resources::service_request::extract_commissioning_org),
    },
    SearchParamDef {
        name: "state",
        kind: ParamKind::Token,
        paths: &[],
        targets: &[],
        doc: "e-RS referral state: NOT_BOOKED, BOOKED, AWAITING_TRIAGE, TRIAGE_RESPONSE, TRIAGED_PROVIDER_TO_ACTION, REJECTED, CANCELLED_REFERRAL, …",
        expand: None,
        extract: Some(resources::service_request::extract_state),
    },
    SearchParamDef {
        name: "priority",
        kind: ParamKind::Token,
        paths: &[],
        targets: &[],
        doc: "e-RS priority: ROUTINE, URGENT, TWO_WEEK_WAIT",
        expand: None,
        extract: Some(resources::service_request::extract_priority),
    },
    SearchParamDef {
        name: "letter",
        kind: ParamKind::Token,
        paths: &[],
        targets: &[],
        doc: "OUTSTANDING: the referrer means to add a referral letter and has not; ATTACHED: it has one",
        expand: None,
        extract: Some(resources::service_request::extract_letter),
    },
    SearchParamDef {
        name: "advice-status",
        kind: ParamKind::Token,
        paths: &[],
        targets: &[],
        doc: "Advice and guidance status: PROVIDER_RESPONSE_REQUIRED, REFERRER_TO_SUBMIT_FURTHER_INFORMATION, REFERRER_TO_REVIEW_RESPONSE, CONVERSATION_ENDED_CANCELLED, CONVERSATION_ENDED_CLOSED, ADVICE_CONVERTED",
        expand: None,
        extract: Some(resources::advice::extract_status),
    },
    param!(
        "based-on",
        Reference,
        ["basedOn"],
        targets["ServiceRequest"],
        "The advice and guidance request a referral was converted from"
    ),
    param!("status", Token, ["status"], "active | revoked | completed"),
    param!(
        "category",
        Token,
        ["category"],
        "Referral (SNOMED CT 3457005) or advice and guidance request (eRS-ServiceRequestCategory|request)"
    ),
    param!(
        "specialty",
        Token,
        ["performerType"],
        "Specialty (e-RS SPECIALTY)"
    ),
    param!("authored", Date, ["authoredOn"], "When the referral was created"),
];

const SLOT_PARAMS: &[SearchParamDef] = &[
    param!("identifier", Token, ["identifier"], "Slot id"),
    param!(
        "schedule",
        Reference,
        ["schedule"],
        targets["Schedule"],
        "The schedule the slot belongs to"
    ),
    param!(
        "status",
        Token,
        ["status"],
        "free | busy | busy-unavailable | busy-tentative | entered-in-error"
    ),
    param!("start", Date, ["start"], "When the slot starts"),
    param!("service-type", Token, ["serviceType"], "Service type"),
    param!("specialty", Token, ["specialty"], "Specialty"),
    param!(
        "appointment-type",
        Token,
        ["appointmentType"],
        "The priority the slot is for: ROUTINE, URGENT, TWO_WEEK_WAIT"
    ),
    SearchParamDef {
        name: "priority",
        kind: ParamKind::Token,
        paths: &["appointmentType"],
        targets: &[],
        doc: "Slots usable at this priority: a higher priority also returns lower-priority slots (TWO_WEEK_WAIT > URGENT > ROUTINE)",
        expand: Some(priority_values),
        extract: None,
    },
];

const DOCUMENT_REFERENCE_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "Attachment identifier (e.g. the NHS sandbox's att-70000-70001)"
    ),
    param!(
        "related",
        Reference,
        ["context.related"],
        targets["ServiceRequest"],
        "The referral the document is attached to"
    ),
    param!(
        "type",
        Token,
        ["type"],
        "REFERRER (part of the referral letter) or PROVIDER"
    ),
    param!(
        "status",
        Token,
        ["status"],
        "current | superseded (replaced in the referral letter)"
    ),
    param!("date", Date, ["date"], "When it was attached"),
    SearchParamDef {
        name: "binary",
        kind: ParamKind::Token,
        paths: &[],
        targets: &[],
        doc: "The id of the uploaded Binary it points at",
        expand: None,
        extract: Some(resources::document_reference::extract_binary),
    },
];

const APPOINTMENT_PARAMS: &[SearchParamDef] = &[
    param!(
        "identifier",
        Token,
        ["identifier"],
        "Appointment identifier"
    ),
    param!(
        "based-on",
        Reference,
        ["basedOn"],
        targets["ServiceRequest"],
        "The referral the appointment is for"
    ),
    param!(
        "status",
        Token,
        ["status"],
        "booked | proposed (deferred to the provider) | cancelled | noshow"
    ),
    param!("date", Date, ["start"], "When the appointment starts"),
    param!(
        "slot",
        Reference,
        ["slot"],
        targets["Slot"],
        "The slot booked"
    ),
    SearchParamDef {
        name: "patient",
        kind: ParamKind::Reference,
        paths: &[],
        targets: &["Patient"],
        doc: "The patient (chain: patient.identifier=https://fhir.nhs.uk/Id/nhs-number|…)",
        expand: None,
        extract: Some(resources::appointment::extract_patient),
    },
    SearchParamDef {
        name: "service",
        kind: ParamKind::Reference,
        paths: &[],
        targets: &["HealthcareService"],
        doc: "The service the appointment is with",
        expand: None,
        extract: Some(resources::appointment::extract_service),
    },
    SearchParamDef {
        name: "practitioner",
        kind: ParamKind::Reference,
        paths: &[],
        targets: &["Practitioner"],
        doc: "The named clinician",
        expand: None,
        extract: Some(resources::appointment::extract_practitioner),
    },
    SearchParamDef {
        name: "location",
        kind: ParamKind::Reference,
        paths: &[],
        targets: &["Location"],
        doc: "Where the appointment is",
        expand: None,
        extract: Some(resources::appointment::extract_location),
    },
];

/// `priority` on Slot: the priorities at or below the one asked for, in its system.
fn priority_values(m: &TokenMatch) -> Vec<TokenMatch> {
    priorities_at_or_below(m.code.as_deref().unwrap_or_default())
        .into_iter()
        .map(|c| TokenMatch {
            system: m.system.clone(),
            code: Some(c.to_owned()),
        })
        .collect()
}

/// e-RS priority order: a search at one priority also finds slots of the lower ones.
pub fn priorities_at_or_below(code: &str) -> Vec<&'static str> {
    match code {
        "TWO_WEEK_WAIT" => vec!["TWO_WEEK_WAIT", "URGENT", "ROUTINE"],
        "URGENT" => vec!["URGENT", "ROUTINE"],
        "ROUTINE" => vec!["ROUTINE"],
        _ => Vec::new(),
    }
}

/// Every hosted type, in CapabilityStatement order.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        name: "Patient",
        params: PATIENT_PARAMS,
        summary: &[
            "identifier",
            "active",
            "name",
            "telecom",
            "gender",
            "birthDate",
            "deceasedBoolean",
            "deceasedDateTime",
            "address",
            "managingOrganization",
            "link",
        ],
        delete: true,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::Everyone,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::patient::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "Practitioner",
        params: PRACTITIONER_PARAMS,
        summary: &[
            "identifier",
            "active",
            "name",
            "telecom",
            "address",
            "gender",
            "birthDate",
        ],
        delete: true,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::Everyone,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::practitioner::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "Organization",
        params: ORGANIZATION_PARAMS,
        summary: &["identifier", "active", "type", "name", "partOf"],
        delete: true,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::Everyone,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::organization::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "PractitionerRole",
        params: PRACTITIONER_ROLE_PARAMS,
        summary: &[
            "identifier",
            "active",
            "period",
            "practitioner",
            "organization",
            "code",
            "specialty",
            "location",
            "telecom",
        ],
        delete: true,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::Everyone,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::practitioner_role::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "Location",
        params: LOCATION_PARAMS,
        summary: &[
            "identifier",
            "status",
            "operationalStatus",
            "name",
            "description",
            "mode",
            "type",
            "physicalType",
            "managingOrganization",
        ],
        delete: true,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::Everyone,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::location::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "HealthcareService",
        params: HEALTHCARE_SERVICE_PARAMS,
        summary: &[
            "identifier",
            "active",
            "providedBy",
            "category",
            "type",
            "specialty",
            "location",
            "name",
            "telecom",
            "characteristic",
        ],
        delete: true,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::Everyone,
        max_ids: 20,
        max_count: super::search::MAX_COUNT,
        check: resources::healthcare_service::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "Schedule",
        params: SCHEDULE_PARAMS,
        summary: &[
            "identifier",
            "active",
            "serviceCategory",
            "serviceType",
            "specialty",
            "actor",
            "planningHorizon",
        ],
        delete: true,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::Everyone,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::schedule::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "Slot",
        params: SLOT_PARAMS,
        summary: &[
            "identifier",
            "serviceCategory",
            "serviceType",
            "specialty",
            "appointmentType",
            "schedule",
            "status",
            "start",
            "end",
            "overbooked",
        ],
        delete: true,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::Everyone,
        max_ids: 100,
        max_count: 100,
        check: resources::slot::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "ServiceRequest",
        params: SERVICE_REQUEST_PARAMS,
        summary: &[
            "identifier",
            "basedOn",
            "status",
            "intent",
            "category",
            "priority",
            "code",
            "subject",
            "authoredOn",
            "requester",
            "performerType",
            "performer",
        ],
        delete: false,
        if_match_required: true,
        plain_writes: false,
        visibility: Visibility::Organisations,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::service_request::check,
        default_sort: None,
        events: true,
    },
    ResourceDef {
        name: "Appointment",
        params: APPOINTMENT_PARAMS,
        summary: &[
            "identifier",
            "status",
            "cancelationReason",
            "serviceType",
            "specialty",
            "appointmentType",
            "start",
            "end",
            "slot",
            "basedOn",
            "participant",
            "requestedPeriod",
        ],
        // Booked, deferred, changed, cancelled and marked did-not-attend by the booking use
        // cases (`service::booking`), each with its referral in one transaction.
        delete: false,
        if_match_required: true,
        plain_writes: false,
        visibility: Visibility::Organisations,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::appointment::check,
        default_sort: None,
        events: true,
    },
    ResourceDef {
        name: "DocumentReference",
        params: DOCUMENT_REFERENCE_PARAMS,
        summary: &[
            "masterIdentifier",
            "identifier",
            "status",
            "type",
            "category",
            "subject",
            "date",
            "author",
            "content",
            "context",
        ],
        // Attached and superseded by the referral operations (`service::attachments`).
        delete: false,
        if_match_required: true,
        plain_writes: false,
        visibility: Visibility::Organisations,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::no_rules,
        default_sort: None,
        events: true,
    },
    ResourceDef {
        name: "Communication",
        params: COMMUNICATION_PARAMS,
        summary: &[
            "identifier",
            "basedOn",
            "status",
            "category",
            "subject",
            "sent",
            "recipient",
            "sender",
        ],
        // The messages of an advice conversation, written by its operations
        // (`service::advice`); hard-deleted when the UBRN expires.
        delete: false,
        if_match_required: true,
        plain_writes: false,
        visibility: Visibility::Organisations,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::advice::check_communication,
        // A conversation reads newest first.
        default_sort: Some(("sent", true)),
        events: true,
    },
    ResourceDef {
        name: "Subscription",
        params: SUBSCRIPTION_PARAMS,
        summary: &["status", "criteria", "channel", "end", "reason"],
        // Created, changed and removed by its owner's system through `service::subscriptions`
        // (the endpoint's headers are kept out of the resource); status set by delivery.
        delete: true,
        if_match_required: false,
        plain_writes: false,
        visibility: Visibility::Organisations,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::subscription::check,
        default_sort: None,
        events: false,
    },
    ResourceDef {
        name: "CommunicationRequest",
        params: COMMUNICATION_REQUEST_PARAMS,
        summary: &[
            "status",
            "category",
            "priority",
            "occurrencePeriod",
            "authoredOn",
            "recipient",
        ],
        // System announcements, published by operational users (`service::announcements`).
        delete: true,
        if_match_required: false,
        plain_writes: false,
        visibility: Visibility::Audience,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::announcement::check,
        default_sort: Some(("authored", true)),
        events: false,
    },
    ResourceDef {
        name: "Provenance",
        params: PROVENANCE_PARAMS,
        summary: &[
            "target",
            "occurredPeriod",
            "occurredDateTime",
            "recorded",
            "agent",
        ],
        // Derived from each stored version (`service::provenance`); never written by clients.
        delete: false,
        if_match_required: false,
        plain_writes: true,
        visibility: Visibility::AsTarget,
        max_ids: 100,
        max_count: super::search::MAX_COUNT,
        check: resources::no_rules,
        default_sort: None,
        events: false,
    },
];

/// Whether a type is served from the version rows of what it describes (Provenance:
/// `service::provenance`) rather than stored with index rows of its own, so that no other
/// type's search can look through it.
pub fn is_derived(def: &ResourceDef) -> bool {
    def.name == "Provenance"
}

/// The registration of a hosted type.
pub fn find(name: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.name == name)
}

/// `(source type, parameter)` pairs whose references may point at `target` (for `_revinclude`).
pub fn referrers_of(target: &str) -> Vec<(&'static str, &'static SearchParamDef)> {
    RESOURCES
        .iter()
        .flat_map(|r| {
            r.params
                .iter()
                .filter(move |p| p.kind == ParamKind::Reference && p.targets.contains(&target))
                .map(move |p| (r.name, p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sorts_name_sortable_parameters() {
        for r in RESOURCES {
            if let Some((name, _)) = r.default_sort {
                let p = r.param(name).expect("a parameter of the type");
                assert!(
                    matches!(
                        p.kind,
                        ParamKind::Date | ParamKind::Token | ParamKind::String
                    ),
                    "{}",
                    r.name
                );
            }
        }
    }

    #[test]
    fn every_hosted_type_has_a_profile_to_validate_against() {
        for r in RESOURCES {
            assert!(
                ers_fhir::validate::default_profile(r.name).is_some()
                    || ["Subscription", "CommunicationRequest"].contains(&r.name),
                "{} has no profile: add it to HOSTED in fhir-profiles/tools/derive.py",
                r.name
            );
        }
    }
}

//! The one permission table: which business functions may do what to which resource type.
//! Handlers ask it; the CapabilityStatement shows it.

use crate::domain::BusinessFunction as B;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Search,
    History,
    Create,
    Update,
    Delete,
    Export,
    Validate,
    /// Run a report or extract over the type (`service::reports`).
    Report,
}

impl Action {
    pub fn code(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Search => "search",
            Action::History => "history",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Export => "export",
            Action::Validate => "validate",
            Action::Report => "report",
        }
    }
}

const CLINICAL: &[B] = &[
    B::ReferringClinician,
    B::ReferringClinicianAdmin,
    B::ReferringAdmin,
    B::ServiceProviderClinician,
    B::ServiceProviderClinicianAdmin,
    B::ServiceProviderAdmin,
];
const CLINICAL_AND_APPS: &[B] = &[
    B::ReferringClinician,
    B::ReferringClinicianAdmin,
    B::ReferringAdmin,
    B::ServiceProviderClinician,
    B::ServiceProviderClinicianAdmin,
    B::ServiceProviderAdmin,
    B::ProviderAuthorisedApplication,
];
const EVERYONE: &[B] = &B::ALL;
const PROVENANCE_READERS: &[B] = &[
    B::ReferringClinician,
    B::ReferringClinicianAdmin,
    B::ReferringAdmin,
    B::ServiceProviderClinician,
    B::ServiceProviderClinicianAdmin,
    B::ServiceProviderAdmin,
    B::Auditor,
];
const DEFINERS: &[B] = &[B::ServiceDefiner];
/// Who creates referrals: the referring clinician, or an admin naming the clinician.
const REFERRERS: &[B] = &[B::ReferringClinician, B::ReferringClinicianAdmin];
const AUDITORS: &[B] = &[B::Auditor];
const SLOT_MAINTAINERS: &[B] = &[B::ServiceDefiner, B::ProviderAuthorisedApplication];
/// The operational users who run reports and see the usage dashboard.
const ANALYSTS: &[B] = &[B::InformationAnalyst, B::Commissioner];

/// `(resource type, action, allowed business functions)`.
pub static PERMISSIONS: &[(&str, Action, &[B])] = &[
    // Patient data: clinical and administrative users; applications read only. Operational
    // roles (service definers, information analysts, auditors) never see patients.
    ("Patient", Action::Read, CLINICAL_AND_APPS),
    ("Patient", Action::Search, CLINICAL_AND_APPS),
    ("Patient", Action::History, CLINICAL_AND_APPS),
    ("Patient", Action::Create, CLINICAL),
    ("Patient", Action::Update, CLINICAL),
    (
        "Patient",
        Action::Delete,
        &[
            B::ReferringClinician,
            B::ReferringClinicianAdmin,
            B::ReferringAdmin,
        ],
    ),
    // Directory and user data: everyone reads; service definers maintain it.
    ("Organization", Action::Read, EVERYONE),
    ("Organization", Action::Search, EVERYONE),
    ("Organization", Action::History, EVERYONE),
    ("Organization", Action::Create, DEFINERS),
    ("Organization", Action::Update, DEFINERS),
    ("Organization", Action::Delete, DEFINERS),
    ("Location", Action::Read, EVERYONE),
    ("Location", Action::Search, EVERYONE),
    ("Location", Action::History, EVERYONE),
    ("Location", Action::Create, DEFINERS),
    ("Location", Action::Update, DEFINERS),
    ("Location", Action::Delete, DEFINERS),
    ("Practitioner", Action::Read, EVERYONE),
    ("Practitioner", Action::Search, EVERYONE),
    ("Practitioner", Action::History, EVERYONE),
    ("Practitioner", Action::Create, DEFINERS),
    ("Practitioner", Action::Update, DEFINERS),
    ("Practitioner", Action::Delete, DEFINERS),
    ("PractitionerRole", Action::Read, EVERYONE),
    ("PractitionerRole", Action::Search, EVERYONE),
    ("PractitionerRole", Action::History, EVERYONE),
    ("PractitionerRole", Action::Create, DEFINERS),
    ("PractitionerRole", Action::Update, DEFINERS),
    ("PractitionerRole", Action::Delete, DEFINERS),
    // The Directory of Services: everyone reads; service definers maintain their own
    // organisation's services (the service layer checks the organisation); the provider's
    // system may also maintain schedules and slots.
    ("HealthcareService", Action::Read, EVERYONE),
    ("HealthcareService", Action::Search, EVERYONE),
    ("HealthcareService", Action::History, EVERYONE),
    ("HealthcareService", Action::Create, DEFINERS),
    ("HealthcareService", Action::Update, DEFINERS),
    ("HealthcareService", Action::Delete, DEFINERS),
    ("Schedule", Action::Read, EVERYONE),
    ("Schedule", Action::Search, EVERYONE),
    ("Schedule", Action::History, EVERYONE),
    ("Schedule", Action::Create, SLOT_MAINTAINERS),
    ("Schedule", Action::Update, SLOT_MAINTAINERS),
    ("Schedule", Action::Delete, SLOT_MAINTAINERS),
    // Referrals: clinical and administrative users and applications read them; referrers
    // create them; every change of state is an operation with its own rule
    // (`domain::referral`), never a plain update or delete.
    ("ServiceRequest", Action::Read, CLINICAL_AND_APPS),
    ("ServiceRequest", Action::Search, CLINICAL_AND_APPS),
    ("ServiceRequest", Action::History, CLINICAL_AND_APPS),
    ("ServiceRequest", Action::Create, REFERRERS),
    ("ServiceRequest", Action::Validate, CLINICAL_AND_APPS),
    // The actions a user may take on a referral they may read (e-RS A029), as Tasks.
    ("Task", Action::Search, CLINICAL_AND_APPS),
    // Appointments: booked, changed and cancelled by referrers and providers (each change
    // has its own rule in `domain::referral`); read by the clinical users and applications.
    ("Appointment", Action::Read, CLINICAL_AND_APPS),
    ("Appointment", Action::Search, CLINICAL_AND_APPS),
    ("Appointment", Action::History, CLINICAL_AND_APPS),
    ("Appointment", Action::Create, CLINICAL_AND_APPS),
    ("Appointment", Action::Update, CLINICAL_AND_APPS),
    ("Appointment", Action::Validate, CLINICAL_AND_APPS),
    // Attachments: uploaded and read by the clinical users and applications (a download is
    // the uploader's, or of those who may see a document pointing at it); the documents that
    // attach them to a referral are written by its operations only.
    ("Binary", Action::Create, CLINICAL_AND_APPS),
    ("Binary", Action::Read, CLINICAL_AND_APPS),
    ("DocumentReference", Action::Read, CLINICAL_AND_APPS),
    ("DocumentReference", Action::Search, CLINICAL_AND_APPS),
    ("DocumentReference", Action::History, CLINICAL_AND_APPS),
    // Advice and guidance messages: only the clinical and administrative users of the
    // organisations in the conversation (organisation scoping) read them; operational roles
    // and applications never do. They are written by the A&G operations only.
    ("Communication", Action::Read, CLINICAL),
    ("Communication", Action::Search, CLINICAL),
    ("Communication", Action::History, CLINICAL),
    // System announcements: operational users publish; everyone reads those for their
    // organisation and role (audience scoping).
    ("CommunicationRequest", Action::Read, EVERYONE),
    ("CommunicationRequest", Action::Search, EVERYONE),
    ("CommunicationRequest", Action::History, EVERYONE),
    ("CommunicationRequest", Action::Create, DEFINERS),
    ("CommunicationRequest", Action::Update, DEFINERS),
    ("CommunicationRequest", Action::Delete, DEFINERS),
    // Event subscriptions: the clinical users' and providers' systems, each seeing its own
    // organisation's only (scoping).
    ("Subscription", Action::Read, CLINICAL_AND_APPS),
    ("Subscription", Action::Search, CLINICAL_AND_APPS),
    ("Subscription", Action::History, CLINICAL_AND_APPS),
    ("Subscription", Action::Create, CLINICAL_AND_APPS),
    ("Subscription", Action::Update, CLINICAL_AND_APPS),
    ("Subscription", Action::Delete, CLINICAL_AND_APPS),
    ("Slot", Action::Read, EVERYONE),
    ("Slot", Action::Search, EVERYONE),
    ("Slot", Action::History, EVERYONE),
    ("Slot", Action::Create, SLOT_MAINTAINERS),
    ("Slot", Action::Update, SLOT_MAINTAINERS),
    ("Slot", Action::Delete, SLOT_MAINTAINERS),
    // Reference data (the e-RS CodeSystems): everyone reads.
    ("CodeSystem", Action::Read, EVERYONE),
    ("CodeSystem", Action::Search, EVERYONE),
    // The server's own conformance resources: everyone reads.
    ("ValueSet", Action::Read, EVERYONE),
    ("ValueSet", Action::Search, EVERYONE),
    ("SearchParameter", Action::Read, EVERYONE),
    ("SearchParameter", Action::Search, EVERYONE),
    ("OperationDefinition", Action::Read, EVERYONE),
    ("OperationDefinition", Action::Search, EVERYONE),
    ("StructureDefinition", Action::Read, EVERYONE),
    ("StructureDefinition", Action::Search, EVERYONE),
    // Who made each version: the people who may see the data, and auditors. Server-written.
    ("Provenance", Action::Read, PROVENANCE_READERS),
    ("Provenance", Action::Search, PROVENANCE_READERS),
    ("Provenance", Action::History, PROVENANCE_READERS),
    // $validate stores nothing: every role may check a resource of any hosted type.
    ("*", Action::Validate, EVERYONE),
    // Reports and extracts (aggregates and lists, never resources): operational analysts and
    // commissioners. Patient identifiers appear in a report only for information analysts,
    // and only on the rows of referrals their organisation is party to.
    ("ServiceRequest", Action::Report, ANALYSTS),
    ("Slot", Action::Report, ANALYSTS),
    ("PractitionerRole", Action::Report, ANALYSTS),
    ("Patient", Action::Report, &[B::InformationAnalyst]),
    // FHIR Bulk Data ($export) is a search collected later: whoever may search a type may
    // export it, with the same organisation scoping.
    // The audit trail: auditors only, read and export; nobody writes it through the API.
    ("AuditEvent", Action::Read, AUDITORS),
    ("AuditEvent", Action::Search, AUDITORS),
    ("AuditEvent", Action::Export, AUDITORS),
];

/// The business functions allowed to do `action` on `resource` (none when not listed). Unless
/// the table says otherwise, a bulk export of a type is allowed to those who may search it.
pub fn allowed(resource: &str, action: Action) -> &'static [B] {
    let rule = |r: &str, a: Action| {
        PERMISSIONS
            .iter()
            .find(|(pr, pa, _)| *pr == r && *pa == a)
            .map(|(_, _, bf)| *bf)
    };
    let found = rule(resource, action).or_else(|| rule("*", action));
    match (found, action) {
        (Some(bf), _) => bf,
        (None, Action::Export) => allowed(resource, Action::Search),
        (None, _) => &[],
    }
}

/// "Business functions: A, B" for `action` on `resource`, as the CapabilityStatement and the
/// OpenAPI document show it.
pub fn describe(resource: &str, action: Action) -> String {
    let who: Vec<&str> = allowed(resource, action).iter().map(|b| b.code()).collect();
    format!("Business functions: {}", who.join(", "))
}

pub fn permits(resource: &str, action: Action, bf: B) -> bool {
    allowed(resource, action).contains(&bf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operational_roles_never_see_patients_and_nobody_writes_audit() {
        for a in [Action::Read, Action::Search, Action::History] {
            for bf in [B::ServiceDefiner, B::InformationAnalyst, B::Auditor] {
                assert!(!permits("Patient", a, bf), "{bf} {a:?}");
            }
        }
        for a in [Action::Create, Action::Update, Action::Delete] {
            assert!(allowed("AuditEvent", a).is_empty());
        }
        assert!(!permits(
            "Patient",
            Action::Create,
            B::ProviderAuthorisedApplication
        ));
    }
}

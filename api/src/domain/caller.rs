//! The calling user: who they are and in which role and organisation they act.

use super::OdsCode;
use std::fmt;

/// e-RS business functions (roles) a caller can act in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusinessFunction {
    ReferringClinician,
    ReferringClinicianAdmin,
    ReferringAdmin,
    ServiceProviderClinician,
    ServiceProviderClinicianAdmin,
    ServiceProviderAdmin,
    ProviderAuthorisedApplication,
    ServiceDefiner,
    InformationAnalyst,
    Commissioner,
    Auditor,
}

impl BusinessFunction {
    pub const ALL: [BusinessFunction; 11] = [
        Self::ReferringClinician,
        Self::ReferringClinicianAdmin,
        Self::ReferringAdmin,
        Self::ServiceProviderClinician,
        Self::ServiceProviderClinicianAdmin,
        Self::ServiceProviderAdmin,
        Self::ProviderAuthorisedApplication,
        Self::ServiceDefiner,
        Self::InformationAnalyst,
        Self::Commissioner,
        Self::Auditor,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::ReferringClinician => "REFERRING_CLINICIAN",
            Self::ReferringClinicianAdmin => "REFERRING_CLINICIAN_ADMIN",
            Self::ReferringAdmin => "REFERRING_ADMIN",
            Self::ServiceProviderClinician => "SERVICE_PROVIDER_CLINICIAN",
            Self::ServiceProviderClinicianAdmin => "SERVICE_PROVIDER_CLINICIAN_ADMIN",
            Self::ServiceProviderAdmin => "SERVICE_PROVIDER_ADMIN",
            Self::ProviderAuthorisedApplication => "PROVIDER_AUTHORISED_APPLICATION",
            Self::ServiceDefiner => "SERVICE_DEFINER",
            Self::InformationAnalyst => "INFORMATION_ANALYST",
            Self::Commissioner => "COMMISSIONER",
            Self::Auditor => "AUDITOR",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.code() == raw)
    }

    /// The referring side's roles (GP practices and other referrers).
    pub fn is_referrer(self) -> bool {
        matches!(
            self,
            Self::ReferringClinician | Self::ReferringClinicianAdmin | Self::ReferringAdmin
        )
    }

    /// Only a SERVICE_PROVIDER_CLINICIAN_ADMIN acts on behalf of another user.
    pub fn acts_on_behalf(self) -> bool {
        self == Self::ServiceProviderClinicianAdmin
    }
}

impl fmt::Display for BusinessFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The caller of one request, authenticated and acting in one role at one organisation.
#[derive(Debug, Clone)]
pub struct Caller {
    /// SDS user id (the token subject) of a person; None for an application.
    pub user_id: Option<String>,
    /// The registered application, for application-restricted access.
    pub client_id: Option<String>,
    pub business_function: BusinessFunction,
    pub organisation: OdsCode,
    pub on_behalf_of: Option<String>,
}

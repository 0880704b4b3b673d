//! Advice and guidance (A&G): a referrer asks a provider's advice service; the conversation
//! moves between the two sides until the referrer closes or cancels it, or the provider
//! converts it into a referral with the same UBRN (e-RS §3.6). `check` is the one rule: the
//! operations ask it before they change anything.

use super::referral::{OpParam, Relation};
use super::BusinessFunction as B;

/// e-RS A&G statuses (`eRS-AdviceAndGuidanceStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdviceStatus {
    ProviderResponseRequired,
    ReferrerToSubmitFurtherInformation,
    ReferrerToReviewResponse,
    ConversationEndedCancelled,
    ConversationEndedClosed,
    AdviceConverted,
}

const STATUSES: &[(AdviceStatus, &str)] = &[
    (
        AdviceStatus::ProviderResponseRequired,
        "PROVIDER_RESPONSE_REQUIRED",
    ),
    (
        AdviceStatus::ReferrerToSubmitFurtherInformation,
        "REFERRER_TO_SUBMIT_FURTHER_INFORMATION",
    ),
    (
        AdviceStatus::ReferrerToReviewResponse,
        "REFERRER_TO_REVIEW_RESPONSE",
    ),
    (
        AdviceStatus::ConversationEndedCancelled,
        "CONVERSATION_ENDED_CANCELLED",
    ),
    (
        AdviceStatus::ConversationEndedClosed,
        "CONVERSATION_ENDED_CLOSED",
    ),
    (AdviceStatus::AdviceConverted, "ADVICE_CONVERTED"),
];

impl AdviceStatus {
    pub fn code(self) -> &'static str {
        STATUSES
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, c)| *c)
            .unwrap_or("PROVIDER_RESPONSE_REQUIRED")
    }

    pub fn parse(code: &str) -> Option<Self> {
        STATUSES.iter().find(|(_, c)| *c == code).map(|(s, _)| *s)
    }

    pub fn all() -> impl Iterator<Item = (Self, &'static str)> {
        STATUSES.iter().copied()
    }

    /// The conversation is over: nothing more may be said.
    pub fn ended(self) -> bool {
        matches!(
            self,
            AdviceStatus::ConversationEndedCancelled
                | AdviceStatus::ConversationEndedClosed
                | AdviceStatus::AdviceConverted
        )
    }

    /// R4 `ServiceRequest.status` for the status.
    pub fn fhir_status(self) -> &'static str {
        match self {
            AdviceStatus::ConversationEndedCancelled => "revoked",
            AdviceStatus::ConversationEndedClosed | AdviceStatus::AdviceConverted => "completed",
            _ => "active",
        }
    }
}

/// What a provider's reply does (`eRS-GuidanceResponseOutcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuidanceOutcome {
    RequireFurtherInformation,
    ReturnToReferrerWithAdvice,
}

impl GuidanceOutcome {
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "REQUIRE_FURTHER_INFORMATION" => Some(Self::RequireFurtherInformation),
            "RETURN_TO_REFERRER_WITH_ADVICE" => Some(Self::ReturnToReferrerWithAdvice),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::RequireFurtherInformation => "REQUIRE_FURTHER_INFORMATION",
            Self::ReturnToReferrerWithAdvice => "RETURN_TO_REFERRER_WITH_ADVICE",
        }
    }

    pub fn next_status(self) -> AdviceStatus {
        match self {
            Self::RequireFurtherInformation => AdviceStatus::ReferrerToSubmitFurtherInformation,
            Self::ReturnToReferrerWithAdvice => AdviceStatus::ReferrerToReviewResponse,
        }
    }
}

/// Which side a message comes from (`eRS-CommunicationSentBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentBy {
    Requester,
    Responder,
}

impl SentBy {
    pub fn code(self) -> &'static str {
        match self {
            SentBy::Requester => "REQUESTER",
            SentBy::Responder => "RESPONDER",
        }
    }
}

/// What a user does to an A&G request after creating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdviceAction {
    /// The provider replies: asks for further information, or gives advice.
    Respond,
    /// The referrer sends further information (asked for, or after reading the advice).
    SendFurtherInformation,
    /// The referrer ends the conversation having read the advice.
    Close,
    /// The referrer withdraws the request.
    Cancel,
    /// The provider turns the request into a referral with the same UBRN.
    Convert,
}

/// The largest message (e-RS `guidance`: 8,000 characters).
pub const MAX_TEXT: usize = 8000;

impl AdviceAction {
    pub const ALL: [AdviceAction; 5] = [
        AdviceAction::Respond,
        AdviceAction::SendFurtherInformation,
        AdviceAction::Close,
        AdviceAction::Cancel,
        AdviceAction::Convert,
    ];

    pub fn code(self) -> &'static str {
        match self {
            AdviceAction::Respond => "RESPOND_TO_ADVICE_REQUEST",
            AdviceAction::SendFurtherInformation => "SEND_FURTHER_INFORMATION",
            AdviceAction::Close => "CLOSE_ADVICE_REQUEST",
            AdviceAction::Cancel => "CANCEL_ADVICE_REQUEST",
            AdviceAction::Convert => "CONVERT_TO_REFERRAL",
        }
    }

    /// The operation on `ServiceRequest/{id}` that performs it.
    pub fn operation(self) -> &'static str {
        match self {
            AdviceAction::Respond => "$ers.respondToAdviceRequest",
            AdviceAction::SendFurtherInformation => "$ers.sendFurtherInformation",
            AdviceAction::Close => "$ers.closeAdviceRequest",
            AdviceAction::Cancel => "$ers.cancelAdviceRequest",
            AdviceAction::Convert => "$ers.convertToReferral",
        }
    }

    pub fn from_operation(op: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.operation() == op)
    }

    /// Who speaks when the action is taken.
    pub fn sent_by(self) -> SentBy {
        match self {
            AdviceAction::Respond | AdviceAction::Convert => SentBy::Responder,
            _ => SentBy::Requester,
        }
    }

    pub fn parameters(self) -> &'static [OpParam] {
        const ATTACHMENT: OpParam = OpParam::new(
            "attachment",
            0,
            "*",
            "Reference|string",
            "Binary/{id} of an upload by your organisation, repeated",
        );
        const TITLE: OpParam = OpParam::new(
            "title",
            0,
            "*",
            "string",
            "a title for each attachment, in order",
        );
        match self {
            AdviceAction::Respond => {
                const {
                    &[
                        OpParam::new(
                            "outcome",
                            1,
                            "1",
                            "code",
                            "REQUIRE_FURTHER_INFORMATION or RETURN_TO_REFERRER_WITH_ADVICE",
                        ),
                        OpParam::new(
                            "recommendation",
                            0,
                            "1",
                            "code",
                            "with advice, required: an eRS-GuidanceIntendedRecommendation code",
                        ),
                        OpParam::new(
                            "text",
                            1,
                            "1",
                            "string",
                            "the question or the advice, at most 8000 characters",
                        ),
                        ATTACHMENT,
                        TITLE,
                    ]
                }
            }
            AdviceAction::SendFurtherInformation => {
                const {
                    &[
                        OpParam::new(
                            "text",
                            1,
                            "1",
                            "string",
                            "the further information, at most 8000 characters",
                        ),
                        ATTACHMENT,
                        TITLE,
                    ]
                }
            }
            AdviceAction::Close | AdviceAction::Cancel => {
                const {
                    &[OpParam::new(
                        "text",
                        0,
                        "1",
                        "string",
                        "a last message to the provider, at most 8000 characters",
                    )]
                }
            }
            AdviceAction::Convert => {
                const {
                    &[
                        OpParam::new("text", 1, "1", "string", "the guidance for the referrer, at most 8000 characters"),
                        OpParam::new("priority", 1, "1", "code", "the referral's priority: ROUTINE, URGENT or TWO_WEEK_WAIT"),
                        OpParam::new("comment", 1, "1", "string", "why it is converted (review comments), at most 2000 characters"),
                        OpParam::new("service", 0, "1", "Reference|string", "a bookable or triage service of your organisation (HealthcareService/{id}); the advice service when left out"),
                        ATTACHMENT,
                        TITLE,
                    ]
                }
            }
        }
    }

    /// The inputs in a line, for documentation.
    pub fn inputs(self) -> String {
        self.parameters()
            .iter()
            .map(|p| format!("{} ({}..{}): {}", p.name, p.min, p.max, p.doc))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Business functions that may take the action: clinicians (and clinician admins) only;
    /// advice is clinical.
    pub fn roles(self) -> &'static [B] {
        match self {
            AdviceAction::Respond | AdviceAction::Convert => &[
                B::ServiceProviderClinician,
                B::ServiceProviderClinicianAdmin,
            ],
            _ => &[B::ReferringClinician, B::ReferringClinicianAdmin],
        }
    }
}

/// Why an action is not available now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Status(AdviceStatus),
    Role(B),
    Organisation,
}

/// Whether `role`, acting with `relation`, may take `action` on a request in `status`.
pub fn check(
    status: AdviceStatus,
    action: AdviceAction,
    role: B,
    relation: Relation,
) -> Result<(), Refusal> {
    use AdviceStatus as S;
    if !action.roles().contains(&role) {
        return Err(Refusal::Role(role));
    }
    let status_ok = match action {
        AdviceAction::Respond | AdviceAction::Convert => status == S::ProviderResponseRequired,
        AdviceAction::SendFurtherInformation | AdviceAction::Close => matches!(
            status,
            S::ReferrerToSubmitFurtherInformation | S::ReferrerToReviewResponse
        ),
        AdviceAction::Cancel => !status.ended(),
    };
    if !status_ok {
        return Err(Refusal::Status(status));
    }
    let org_ok = match action.sent_by() {
        SentBy::Responder => relation.provider,
        SentBy::Requester => relation.referrer,
    };
    if org_ok {
        Ok(())
    } else {
        Err(Refusal::Organisation)
    }
}

/// Where the request goes after `action` (a reply goes where its outcome says).
pub fn next_status(action: AdviceAction, outcome: Option<GuidanceOutcome>) -> AdviceStatus {
    match action {
        AdviceAction::Respond => outcome
            .map(GuidanceOutcome::next_status)
            .unwrap_or(AdviceStatus::ProviderResponseRequired),
        AdviceAction::SendFurtherInformation => AdviceStatus::ProviderResponseRequired,
        AdviceAction::Close => AdviceStatus::ConversationEndedClosed,
        AdviceAction::Cancel => AdviceStatus::ConversationEndedCancelled,
        AdviceAction::Convert => AdviceStatus::AdviceConverted,
    }
}

/// Every action the caller may take now.
pub fn available_actions(status: AdviceStatus, role: B, relation: Relation) -> Vec<AdviceAction> {
    AdviceAction::ALL
        .into_iter()
        .filter(|a| check(status, *a, role, relation).is_ok())
        .collect()
}

/// Who may create a request: the referring clinician, or a clinician admin naming them.
pub const REQUESTERS: &[B] = &[B::ReferringClinician, B::ReferringClinicianAdmin];

#[cfg(test)]
mod tests {
    use super::*;

    const REFERRER: Relation = Relation {
        referrer: true,
        provider: false,
    };
    const PROVIDER: Relation = Relation {
        referrer: false,
        provider: true,
    };

    #[test]
    fn codes_round_trip() {
        for (s, c) in AdviceStatus::all() {
            assert_eq!(AdviceStatus::parse(c), Some(s));
            assert_eq!(s.code(), c);
        }
        for a in AdviceAction::ALL {
            assert_eq!(AdviceAction::from_operation(a.operation()), Some(a));
        }
    }

    #[test]
    fn turns_alternate() {
        use AdviceStatus as S;
        // A new request waits for the provider; the referrer can only withdraw it.
        assert_eq!(
            available_actions(
                S::ProviderResponseRequired,
                B::ServiceProviderClinician,
                PROVIDER
            ),
            vec![AdviceAction::Respond, AdviceAction::Convert]
        );
        assert_eq!(
            available_actions(S::ProviderResponseRequired, B::ReferringClinician, REFERRER),
            vec![AdviceAction::Cancel]
        );
        // Out of turn: the provider may not reply while the referrer must act.
        assert_eq!(
            check(
                S::ReferrerToSubmitFurtherInformation,
                AdviceAction::Respond,
                B::ServiceProviderClinician,
                PROVIDER
            ),
            Err(Refusal::Status(S::ReferrerToSubmitFurtherInformation))
        );
        assert_eq!(
            available_actions(S::ReferrerToReviewResponse, B::ReferringClinician, REFERRER),
            vec![
                AdviceAction::SendFurtherInformation,
                AdviceAction::Close,
                AdviceAction::Cancel
            ]
        );
        assert_eq!(
            next_status(
                AdviceAction::Respond,
                Some(GuidanceOutcome::RequireFurtherInformation)
            ),
            S::ReferrerToSubmitFurtherInformation
        );
        assert_eq!(
            next_status(AdviceAction::SendFurtherInformation, None),
            S::ProviderResponseRequired
        );
    }

    #[test]
    fn only_clinicians_of_the_right_side_act_and_ended_is_terminal() {
        use AdviceStatus as S;
        assert_eq!(
            check(
                S::ProviderResponseRequired,
                AdviceAction::Respond,
                B::ServiceProviderAdmin,
                PROVIDER
            ),
            Err(Refusal::Role(B::ServiceProviderAdmin))
        );
        assert_eq!(
            check(
                S::ProviderResponseRequired,
                AdviceAction::Respond,
                B::ServiceProviderClinician,
                REFERRER
            ),
            Err(Refusal::Organisation)
        );
        for (s, _) in AdviceStatus::all().filter(|(s, _)| s.ended()) {
            for role in B::ALL {
                for rel in [REFERRER, PROVIDER] {
                    assert!(available_actions(s, role, rel).is_empty());
                }
            }
        }
    }
}

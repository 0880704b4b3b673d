//! The e-RS referral state machine: states, the actions users take, who may take them, and
//! where each leads. `available_actions` is the single source of truth: the operations ask it
//! before they change anything, and the "available actions" endpoint shows it.

use super::advice::AdviceStatus;
use super::BusinessFunction as B;

/// e-RS referral states (`https://fhir.nhs.uk/CodeSystem/eRS-ReferralState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferralState {
    NotBooked,
    Booked,
    DeferredToProvider,
    AwaitingTriage,
    TriageResponse,
    TriagedProviderToAction,
    AssessmentResult,
    Rejected,
    ApptCancelledByPatient,
    ApptCancelledByProvider,
    DidNotAttend,
    CancelledReferral,
}

const STATES: &[(ReferralState, &str)] = &[
    (ReferralState::NotBooked, "NOT_BOOKED"),
    (ReferralState::Booked, "BOOKED"),
    (ReferralState::DeferredToProvider, "DEFERRED_TO_PROVIDER"),
    (ReferralState::AwaitingTriage, "AWAITING_TRIAGE"),
    (ReferralState::TriageResponse, "TRIAGE_RESPONSE"),
    (
        ReferralState::TriagedProviderToAction,
        "TRIAGED_PROVIDER_TO_ACTION",
    ),
    (ReferralState::AssessmentResult, "ASSESSMENT_RESULT"),
    (ReferralState::Rejected, "REJECTED"),
    (
        ReferralState::ApptCancelledByPatient,
        "APPT_CANCELLED_BY_PATIENT",
    ),
    (
        ReferralState::ApptCancelledByProvider,
        "APPT_CANCELLED_BY_PROVIDER",
    ),
    (ReferralState::DidNotAttend, "DID_NOT_ATTEND"),
    (ReferralState::CancelledReferral, "CANCELLED_REFERRAL"),
];

impl ReferralState {
    pub fn code(self) -> &'static str {
        STATES
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, c)| *c)
            .unwrap_or("NOT_BOOKED")
    }

    pub fn parse(code: &str) -> Option<Self> {
        STATES.iter().find(|(_, c)| *c == code).map(|(s, _)| *s)
    }

    pub fn all() -> impl Iterator<Item = (Self, &'static str)> {
        STATES.iter().copied()
    }

    /// R4 `ServiceRequest.status` for the state.
    pub fn fhir_status(self) -> &'static str {
        match self {
            ReferralState::CancelledReferral => "revoked",
            _ => "active",
        }
    }

    /// What the referral waits for when its provider, not the referrer, is to act next: the
    /// appointment (deferred to the provider, or accepted to book later) or a triage review.
    pub fn deferral(self) -> Option<Deferral> {
        match self {
            ReferralState::DeferredToProvider | ReferralState::TriagedProviderToAction => {
                Some(Deferral::Appointment)
            }
            ReferralState::AwaitingTriage => Some(Deferral::Triage),
            _ => None,
        }
    }

    /// States in which the referral needs the referrer to (re)book or (re)send it.
    fn referrer_to_act(self) -> bool {
        matches!(
            self,
            ReferralState::NotBooked
                | ReferralState::TriageResponse
                | ReferralState::Rejected
                | ReferralState::ApptCancelledByPatient
                | ReferralState::ApptCancelledByProvider
                | ReferralState::DidNotAttend
        )
    }
}

/// A referral its provider is to act on, as e-RS's Patient Care API shows it (a `Task` with a
/// `Workflow-Code`): the patient is to be contacted within the priority's working days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// The provider arranges the appointment.
    Appointment,
    /// A triage (referral assessment) service reviews the referral.
    Triage,
}

impl Deferral {
    /// Its code in `https://fhir.nhs.uk/CodeSystem/Workflow-Code`.
    pub fn code(self) -> &'static str {
        match self {
            Deferral::Appointment => "APPOINTMENT_DEFERRAL",
            Deferral::Triage => "TRIAGE_DEFERRAL",
        }
    }

    /// The e-RS priority property that gives its working days (`eRS-Priority`).
    pub fn contact_days_property(self) -> &'static str {
        match self {
            Deferral::Appointment => "deferToProviderContactDays",
            Deferral::Triage => "triageContactDays",
        }
    }
}

/// What a user can do to a referral (e-RS A029 codes where e-RS has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferralAction {
    ChangeShortlist,
    SendForTriage,
    RecordReviewOutcome,
    CancelReferral,
    RejectReferral,
    AcceptReferral,
    /// Cancel the booked appointment; the provider arranges another (CAAL).
    CancelAppointmentActionLater,
    /// Record or change the patient's additional requirements (interpreter, access...).
    UpdateRequirements,
    /// Replace the referral letter: the set of the referrer's attached documents.
    MaintainReferralLetter,
    /// The provider attaches a document.
    AddProviderAttachment,
    /// Book a slot, record an indirectly booked appointment, or defer to the provider.
    CreateAppointment,
    CancelAppointment,
    /// Move the current appointment to another slot.
    ChangeAppointment,
    RecordNonAttendance,
}

/// An input parameter of an operation: declared once, for its OperationDefinition and for
/// reading a `Parameters` body (names, value types and counts are checked against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpParam {
    pub name: &'static str,
    pub min: u32,
    /// A number or `*`.
    pub max: &'static str,
    /// The FHIR type of its `value[x]`; further types it may be given as follow a `|`
    /// (`Reference|string`: a reference, or its text `Slot/{id}`).
    pub kind: &'static str,
    pub doc: &'static str,
}

impl OpParam {
    pub const fn new(
        name: &'static str,
        min: u32,
        max: &'static str,
        kind: &'static str,
        doc: &'static str,
    ) -> Self {
        OpParam {
            name,
            min,
            max,
            kind,
            doc,
        }
    }

    /// The most values it takes (None: any number).
    pub fn most(&self) -> Option<usize> {
        self.max.parse().ok()
    }
}

/// Where an action is invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST ServiceRequest/{id}/{operation}`.
    Referral,
    /// `POST Appointment` (a new appointment based on the referral).
    NewAppointment,
    /// `POST Appointment/{current}/{operation}` on the referral's current appointment.
    CurrentAppointment,
}

impl ReferralAction {
    pub const ALL: [ReferralAction; 14] = [
        ReferralAction::ChangeShortlist,
        ReferralAction::SendForTriage,
        ReferralAction::RecordReviewOutcome,
        ReferralAction::CancelReferral,
        ReferralAction::RejectReferral,
        ReferralAction::AcceptReferral,
        ReferralAction::CancelAppointmentActionLater,
        ReferralAction::UpdateRequirements,
        ReferralAction::MaintainReferralLetter,
        ReferralAction::AddProviderAttachment,
        ReferralAction::CreateAppointment,
        ReferralAction::CancelAppointment,
        ReferralAction::ChangeAppointment,
        ReferralAction::RecordNonAttendance,
    ];

    pub fn code(self) -> &'static str {
        match self {
            ReferralAction::ChangeShortlist => "CHANGE_SHORTLIST",
            ReferralAction::SendForTriage => "SEND_FOR_TRIAGE",
            ReferralAction::RecordReviewOutcome => "RECORD_REVIEW_OUTCOME",
            ReferralAction::CancelReferral => "CANCEL_REFERRAL",
            ReferralAction::RejectReferral => "REJECT_REFERRAL",
            ReferralAction::AcceptReferral => "ACCEPT_REFERRAL",
            ReferralAction::CancelAppointmentActionLater => "CANCEL_APPOINTMENT_ACTION_LATER",
            ReferralAction::UpdateRequirements => "UPDATE_ADDITIONAL_REQUIREMENTS",
            ReferralAction::MaintainReferralLetter => "MAINTAIN_REFERRAL_LETTER",
            ReferralAction::AddProviderAttachment => "ADD_PROVIDER_ATTACHMENT",
            ReferralAction::CreateAppointment => "CREATE_APPOINTMENT",
            ReferralAction::CancelAppointment => "CANCEL_DIRECTLY_BOOKED_APPOINTMENT",
            ReferralAction::ChangeAppointment => "CHANGE_APPOINTMENT",
            ReferralAction::RecordNonAttendance => "RECORD_NON_ATTENDANCE",
        }
    }

    /// Where the action is invoked.
    pub fn endpoint(self) -> Endpoint {
        match self {
            ReferralAction::CreateAppointment => Endpoint::NewAppointment,
            ReferralAction::CancelAppointment
            | ReferralAction::ChangeAppointment
            | ReferralAction::RecordNonAttendance => Endpoint::CurrentAppointment,
            _ => Endpoint::Referral,
        }
    }

    /// The FHIR operation that performs the action (`POST Appointment` creates one).
    pub fn operation(self) -> &'static str {
        match self {
            ReferralAction::ChangeShortlist => "$ers.changeShortlist",
            ReferralAction::SendForTriage => "$ers.sendForTriage",
            ReferralAction::RecordReviewOutcome => "$ers.recordReviewOutcome",
            ReferralAction::CancelReferral => "$ers.cancelReferral",
            ReferralAction::RejectReferral => "$ers.rejectReferral",
            ReferralAction::AcceptReferral => "$ers.acceptReferral",
            ReferralAction::CancelAppointmentActionLater => "$ers.cancelAppointmentActionLater",
            ReferralAction::UpdateRequirements => "$ers.updateAdditionalRequirements",
            ReferralAction::MaintainReferralLetter => "$ers.maintainReferralLetter",
            ReferralAction::AddProviderAttachment => "$ers.addProviderAttachment",
            ReferralAction::CreateAppointment => "create",
            ReferralAction::CancelAppointment => "$ers.cancelAppointment",
            ReferralAction::ChangeAppointment => "$ers.changeAppointment",
            ReferralAction::RecordNonAttendance => "$ers.recordNonAttendance",
        }
    }

    /// The action a referral operation name (`ServiceRequest/{id}/$ers.…`) performs.
    pub fn from_operation(op: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.endpoint() == Endpoint::Referral && a.operation() == op)
    }

    /// The action an appointment operation name (`Appointment/{id}/$ers.…`) performs.
    pub fn from_appointment_operation(op: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.endpoint() == Endpoint::CurrentAppointment && a.operation() == op)
    }

    /// The operations invoked at `endpoint`.
    pub fn operations_at(endpoint: Endpoint) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|a| a.endpoint() == endpoint)
            .map(|a| a.operation())
            .collect()
    }

    /// The operation's input parameters (a `Parameters` body); none for `POST Appointment`.
    pub fn parameters(self) -> &'static [OpParam] {
        const COMMENT: OpParam = OpParam::new(
            "comment",
            0,
            "1",
            "string",
            "free text, at most 2000 characters (required by some reasons)",
        );
        match self {
            ReferralAction::ChangeShortlist => {
                const {
                    &[OpParam::new("service", 1, "20", "Reference|string", "a HealthcareService reference (HealthcareService/{id}) or id; the whole new shortlist, repeated")]
                }
            }
            ReferralAction::SendForTriage => {
                const {
                    &[OpParam::new(
                        "service",
                        1,
                        "1",
                        "Reference|string",
                        "the shortlisted triage (REVIEW) service",
                    )]
                }
            }
            ReferralAction::RecordReviewOutcome => {
                const {
                    &[
                        OpParam::new(
                            "outcome",
                            1,
                            "1",
                            "code",
                            "RETURN_TO_REFERRER_WITH_ADVICE or ACCEPT_REFER_BOOK_LATER",
                        ),
                        OpParam::new(
                            "comment",
                            1,
                            "1",
                            "string",
                            "the advice or decision, at most 2000 characters",
                        ),
                    ]
                }
            }
            ReferralAction::CancelReferral => {
                const {
                    &[
                        OpParam::new(
                            "reason",
                            1,
                            "1",
                            "code",
                            "a referral cancellation reason (eRS-ReferralCancellationReason)",
                        ),
                        COMMENT,
                    ]
                }
            }
            ReferralAction::RejectReferral => {
                const {
                    &[
                        OpParam::new(
                            "reason",
                            1,
                            "1",
                            "code",
                            "an appointment cancellation reason of usage REJECT",
                        ),
                        COMMENT,
                    ]
                }
            }
            ReferralAction::AcceptReferral => const { &[COMMENT] },
            ReferralAction::CancelAppointmentActionLater => {
                const {
                    &[OpParam::new(
                        "comment",
                        1,
                        "1",
                        "string",
                        "why, for the provider's booking team",
                    )]
                }
            }
            ReferralAction::MaintainReferralLetter => {
                const {
                    &[
                OpParam::new("attachment", 1, "*", "Reference|string", "Binary/{id} of an upload by your organisation, repeated: the whole letter"),
                OpParam::new("title", 0, "*", "string", "a title for each attachment, in order"),
            ]
                }
            }
            ReferralAction::AddProviderAttachment => {
                const {
                    &[
                        OpParam::new(
                            "attachment",
                            1,
                            "1",
                            "Reference|string",
                            "Binary/{id} of an upload by your organisation",
                        ),
                        OpParam::new("title", 0, "1", "string", "its title"),
                    ]
                }
            }
            ReferralAction::UpdateRequirements => {
                const {
                    &[
                        OpParam::new(
                            "interpreterLanguage",
                            0,
                            "1",
                            "code",
                            "an interpreter is needed, in this language (BCP-47)",
                        ),
                        OpParam::new("accessibility", 0, "1", "string", "access needs"),
                        OpParam::new("transport", 0, "1", "string", "transport needs"),
                        OpParam::new("carer", 0, "1", "string", "a carer or companion attends"),
                        OpParam::new(
                            "communication",
                            0,
                            "1",
                            "string",
                            "communication needs; the whole set is replaced (none clears it)",
                        ),
                    ]
                }
            }
            ReferralAction::CreateAppointment => const { &[] },
            ReferralAction::CancelAppointment => {
                const {
                    &[
                        OpParam::new(
                            "reason",
                            1,
                            "1",
                            "code",
                            "an appointment cancellation reason of usage CANCEL",
                        ),
                        COMMENT,
                    ]
                }
            }
            ReferralAction::ChangeAppointment => {
                const {
                    &[
                        OpParam::new(
                            "slot",
                            1,
                            "1",
                            "Reference|string",
                            "the free Slot to move to (Slot/{id} or id)",
                        ),
                        OpParam::new(
                            "clinician",
                            0,
                            "1",
                            "Reference|string",
                            "the slot's named clinician (Practitioner/{id}), when it has one",
                        ),
                    ]
                }
            }
            ReferralAction::RecordNonAttendance => {
                const {
                    &[
                        OpParam::new(
                            "reason",
                            1,
                            "1",
                            "code",
                            "an appointment non-attendance reason",
                        ),
                        COMMENT,
                    ]
                }
            }
        }
    }

    /// Whether the action may be taken now that the current appointment has (or has not) begun:
    /// what happened at it (a non-attendance) only once it has; a move only before; a
    /// cancellation by the referrer's side only before (once it has begun the provider records
    /// what happened, or cancels it: a clinic cancelled on the day), and so the referrer's
    /// cancellation of the referral, which would cancel the appointment with it.
    pub fn timely(self, begun: bool, by_referrer: bool) -> bool {
        match self {
            ReferralAction::RecordNonAttendance => begun,
            ReferralAction::ChangeAppointment => !begun,
            ReferralAction::CancelAppointment | ReferralAction::CancelReferral => {
                !(begun && by_referrer)
            }
            _ => true,
        }
    }

    /// Whether the current appointment's time decides if the action may be taken: `timely`
    /// answers differently before and after it has begun (for the referrer, whom it binds most).
    pub fn timed(self) -> bool {
        self.timely(true, true) != self.timely(false, true)
    }

    /// The inputs in a line, for documentation.
    pub fn inputs(self) -> String {
        if self == ReferralAction::CreateAppointment {
            return "an Appointment: booked with a slot (or start and end for an indirectly bookable service), or proposed with a deferral reason".into();
        }
        self.parameters()
            .iter()
            .map(|p| format!("{} ({}..{}): {}", p.name, p.min, p.max, p.doc))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Business functions that may take the action at all (before state and organisation).
    pub fn roles(self) -> &'static [B] {
        match self {
            ReferralAction::ChangeShortlist | ReferralAction::SendForTriage => {
                &[B::ReferringClinician, B::ReferringClinicianAdmin]
            }
            ReferralAction::MaintainReferralLetter => &[
                B::ReferringClinician,
                B::ReferringClinicianAdmin,
                B::ReferringAdmin,
            ],
            ReferralAction::AddProviderAttachment => &[
                B::ServiceProviderClinician,
                B::ServiceProviderClinicianAdmin,
                B::ServiceProviderAdmin,
                B::ProviderAuthorisedApplication,
            ],
            ReferralAction::RecordReviewOutcome => &[
                B::ServiceProviderClinician,
                B::ServiceProviderClinicianAdmin,
                B::ProviderAuthorisedApplication,
            ],
            ReferralAction::CancelReferral => &[
                B::ReferringClinician,
                B::ReferringClinicianAdmin,
                B::ServiceProviderClinician,
                B::ServiceProviderClinicianAdmin,
                B::ProviderAuthorisedApplication,
            ],
            ReferralAction::RejectReferral
            | ReferralAction::AcceptReferral
            | ReferralAction::CancelAppointmentActionLater => &[
                B::ServiceProviderClinician,
                B::ServiceProviderClinicianAdmin,
                B::ProviderAuthorisedApplication,
            ],
            ReferralAction::CreateAppointment
            | ReferralAction::CancelAppointment
            | ReferralAction::ChangeAppointment
            | ReferralAction::UpdateRequirements => &[
                B::ReferringClinician,
                B::ReferringClinicianAdmin,
                B::ReferringAdmin,
                B::ServiceProviderClinician,
                B::ServiceProviderClinicianAdmin,
                B::ServiceProviderAdmin,
                B::ProviderAuthorisedApplication,
            ],
            ReferralAction::RecordNonAttendance => &[
                B::ServiceProviderClinician,
                B::ServiceProviderClinicianAdmin,
                B::ServiceProviderAdmin,
                B::ProviderAuthorisedApplication,
            ],
        }
    }
}

/// How the caller's organisation relates to the referral.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relation {
    /// The caller acts for the referring organisation.
    pub referrer: bool,
    /// The caller acts for the organisation providing the service the referral is with now.
    pub provider: bool,
}

/// Outcomes a triage (Referral Assessment Service) review may record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewOutcome {
    ReturnToReferrerWithAdvice,
    AcceptReferBookLater,
}

impl ReviewOutcome {
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "RETURN_TO_REFERRER_WITH_ADVICE" => Some(Self::ReturnToReferrerWithAdvice),
            "ACCEPT_REFER_BOOK_LATER" => Some(Self::AcceptReferBookLater),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::ReturnToReferrerWithAdvice => "RETURN_TO_REFERRER_WITH_ADVICE",
            Self::AcceptReferBookLater => "ACCEPT_REFER_BOOK_LATER",
        }
    }

    pub fn next_state(self) -> ReferralState {
        match self {
            Self::ReturnToReferrerWithAdvice => ReferralState::TriageResponse,
            Self::AcceptReferBookLater => ReferralState::TriagedProviderToAction,
        }
    }
}

/// Why an action is not available now: the state, the role or the organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    State(ReferralState),
    Role(B),
    Organisation,
}

/// Whether `role` acting with `relation` may take `action` on a referral in `state`.
pub fn check(
    state: ReferralState,
    action: ReferralAction,
    role: B,
    relation: Relation,
) -> Result<(), Refusal> {
    if !action.roles().contains(&role) {
        return Err(Refusal::Role(role));
    }
    let state_ok = match action {
        ReferralAction::ChangeShortlist | ReferralAction::SendForTriage => state.referrer_to_act(),
        ReferralAction::RecordReviewOutcome => matches!(
            state,
            ReferralState::AwaitingTriage | ReferralState::DeferredToProvider
        ),
        ReferralAction::CancelReferral
        | ReferralAction::UpdateRequirements
        | ReferralAction::MaintainReferralLetter
        | ReferralAction::AddProviderAttachment => state != ReferralState::CancelledReferral,
        // The referrer books while it is theirs to act; the provider books what was deferred
        // to it or what it accepted to book later.
        ReferralAction::CreateAppointment => {
            if role.is_referrer() {
                state.referrer_to_act()
            } else {
                matches!(
                    state,
                    ReferralState::DeferredToProvider | ReferralState::TriagedProviderToAction
                )
            }
        }
        ReferralAction::RejectReferral
        | ReferralAction::AcceptReferral
        | ReferralAction::CancelAppointmentActionLater
        | ReferralAction::CancelAppointment
        | ReferralAction::ChangeAppointment
        | ReferralAction::RecordNonAttendance => state == ReferralState::Booked,
    };
    if !state_ok {
        return Err(Refusal::State(state));
    }
    let org_ok = match action {
        ReferralAction::ChangeShortlist
        | ReferralAction::SendForTriage
        | ReferralAction::MaintainReferralLetter => relation.referrer,
        ReferralAction::AddProviderAttachment => relation.provider,
        ReferralAction::RecordReviewOutcome
        | ReferralAction::RejectReferral
        | ReferralAction::AcceptReferral
        | ReferralAction::CancelAppointmentActionLater
        | ReferralAction::RecordNonAttendance => relation.provider,
        ReferralAction::UpdateRequirements => relation.referrer || relation.provider,
        // Either side; a provider only while the referral is with its service.
        ReferralAction::CancelReferral
        | ReferralAction::CreateAppointment
        | ReferralAction::CancelAppointment
        | ReferralAction::ChangeAppointment => {
            if role.is_referrer() {
                relation.referrer
            } else {
                relation.provider
            }
        }
    };
    if org_ok {
        Ok(())
    } else {
        Err(Refusal::Organisation)
    }
}

/// Every action the caller may take now.
pub fn available_actions(state: ReferralState, role: B, relation: Relation) -> Vec<ReferralAction> {
    ReferralAction::ALL
        .into_iter()
        .filter(|a| check(state, *a, role, relation).is_ok())
        .collect()
}

/// e-RS worklists (`eRS-ReferralListSelector`): which side's list, who may ask for it, and
/// which states put a referral on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worklist {
    AwaitingBooking,
    /// Referrals whose referrer means to add a letter and has not yet.
    LettersOutstanding,
    RejectedTriageResponse,
    AssessmentReturnedCancelledDna,
    ReferralsForReview,
    AppointmentSlotIssues,
    /// Referrals the provider is to book: triaged "accept, book later", or its appointment
    /// cancelled "action later" (e-RS's web-only "Appointments for Booking", which the real API
    /// lacks).
    AppointmentsForBooking,
    /// A&G requests awaiting the provider's response (e-RS ADVICE_AND_GUIDANCE_REQUESTS).
    AdviceRequests,
    /// A&G requests the referrer is to act on: advice to review, information to send.
    AdviceResponses,
}

/// What puts an item on a worklist: referral states or A&G statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Referrals(&'static [ReferralState]),
    Advice(&'static [AdviceStatus]),
}

const REFERRER_ROLES: &[B] = &[
    B::ReferringClinician,
    B::ReferringClinicianAdmin,
    B::ReferringAdmin,
];
const PROVIDER_ROLES: &[B] = &[
    B::ServiceProviderClinician,
    B::ServiceProviderClinicianAdmin,
    B::ServiceProviderAdmin,
    B::ProviderAuthorisedApplication,
];

impl Worklist {
    /// The inputs of `$ers.worklist`.
    pub const PARAMETERS: &'static [OpParam] = &[
        OpParam::new("listType", 1, "1", "code", "AWAITING_BOOKING, LETTERS_OUTSTANDING, REJECTED_TRIAGE_RESPONSE, ASSESSMENT_RETURNED_CANCELLED_DNA, ADVICE_AND_GUIDANCE_RESPONSES (referrers); REFERRALS_FOR_REVIEW, APPOINTMENT_SLOT_ISSUES, APPOINTMENTS_FOR_BOOKING, ADVICE_AND_GUIDANCE_REQUESTS (providers)"),
        OpParam::new("service", 0, "*", "string", "provider lists: the organisation's services (HealthcareService/{id} or ids, comma-separated, or repeated)"),
        OpParam::new("specialty", 0, "*", "string", "provider lists: e-RS specialties (comma-separated, or repeated)"),
        OpParam::new("_count", 0, "1", "integer", "page size"),
        OpParam::new("_offset", 0, "1", "integer", "results to skip"),
        OpParam::new("_total", 0, "1", "code", "accurate: count the whole list (not counted otherwise, unless the first page holds it all)"),
        OpParam::new("_summary", 0, "1", "code", "count: the list's total only"),
        OpParam::new("_revinclude", 0, "*", "string", "with the referrals, what refers to them: Appointment:based-on (their appointments), Task:focus (what you may do to each, as e-RS A029's Tasks)"),
    ];

    pub const ALL: [Worklist; 9] = [
        Worklist::AwaitingBooking,
        Worklist::LettersOutstanding,
        Worklist::RejectedTriageResponse,
        Worklist::AssessmentReturnedCancelledDna,
        Worklist::ReferralsForReview,
        Worklist::AppointmentSlotIssues,
        Worklist::AppointmentsForBooking,
        Worklist::AdviceRequests,
        Worklist::AdviceResponses,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Worklist::AwaitingBooking => "AWAITING_BOOKING",
            Worklist::LettersOutstanding => "LETTERS_OUTSTANDING",
            Worklist::RejectedTriageResponse => "REJECTED_TRIAGE_RESPONSE",
            Worklist::AssessmentReturnedCancelledDna => "ASSESSMENT_RETURNED_CANCELLED_DNA",
            Worklist::ReferralsForReview => "REFERRALS_FOR_REVIEW",
            Worklist::AppointmentSlotIssues => "APPOINTMENT_SLOT_ISSUES",
            Worklist::AppointmentsForBooking => "APPOINTMENTS_FOR_BOOKING",
            Worklist::AdviceRequests => "ADVICE_AND_GUIDANCE_REQUESTS",
            Worklist::AdviceResponses => "ADVICE_AND_GUIDANCE_RESPONSES",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.code() == code)
    }

    /// Referrer lists hold the caller organisation's referrals; provider lists the referrals
    /// with the caller organisation's services.
    pub fn for_referrers(self) -> bool {
        matches!(
            self,
            Worklist::AwaitingBooking
                | Worklist::LettersOutstanding
                | Worklist::RejectedTriageResponse
                | Worklist::AssessmentReturnedCancelledDna
                | Worklist::AdviceResponses
        )
    }

    pub fn roles(self) -> &'static [B] {
        match self {
            // Advice is clinical: clinicians and clinician admins.
            Worklist::AdviceRequests => &[
                B::ServiceProviderClinician,
                B::ServiceProviderClinicianAdmin,
            ],
            Worklist::AdviceResponses => super::advice::REQUESTERS,
            _ if self.for_referrers() => REFERRER_ROLES,
            _ => PROVIDER_ROLES,
        }
    }

    pub fn listed(self) -> Listed {
        use AdviceStatus as A;
        use ReferralState as S;
        Listed::Referrals(match self {
            Worklist::AdviceRequests => {
                return Listed::Advice(&[A::ProviderResponseRequired]);
            }
            Worklist::AdviceResponses => {
                return Listed::Advice(&[
                    A::ReferrerToSubmitFurtherInformation,
                    A::ReferrerToReviewResponse,
                ]);
            }
            Worklist::AwaitingBooking => &[
                S::NotBooked,
                S::DeferredToProvider,
                S::ApptCancelledByPatient,
                S::ApptCancelledByProvider,
            ],
            Worklist::LettersOutstanding => &[
                S::NotBooked,
                S::Booked,
                S::DeferredToProvider,
                S::AwaitingTriage,
                S::TriageResponse,
                S::TriagedProviderToAction,
                S::AssessmentResult,
                S::Rejected,
                S::ApptCancelledByPatient,
                S::ApptCancelledByProvider,
                S::DidNotAttend,
            ],
            Worklist::RejectedTriageResponse => &[S::Rejected, S::TriageResponse],
            Worklist::AssessmentReturnedCancelledDna => {
                &[S::AssessmentResult, S::DidNotAttend, S::CancelledReferral]
            }
            Worklist::ReferralsForReview => &[S::AwaitingTriage],
            Worklist::AppointmentSlotIssues => &[S::DeferredToProvider],
            Worklist::AppointmentsForBooking => &[S::TriagedProviderToAction],
        })
    }

    /// Whether the list holds only referrals whose letter is outstanding (in its states).
    pub fn letter_outstanding_only(self) -> bool {
        self == Worklist::LettersOutstanding
    }

    /// Whether an item is on this list (on its referrer's or its provider's side, as
    /// `for_referrers` says).
    pub fn holds(self, item: Listable) -> bool {
        match (self.listed(), item) {
            (
                Listed::Referrals(states),
                Listable::Referral {
                    state,
                    letter_outstanding,
                },
            ) => states.contains(&state) && (letter_outstanding || !self.letter_outstanding_only()),
            (Listed::Advice(statuses), Listable::Advice(status)) => statuses.contains(&status),
            _ => false,
        }
    }

    /// Every list an item is on.
    pub fn holding(item: Listable) -> impl Iterator<Item = Worklist> {
        Self::ALL.into_iter().filter(move |w| w.holds(item))
    }
}

/// What decides whether something is on a worklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listable {
    Referral {
        state: ReferralState,
        letter_outstanding: bool,
    },
    Advice(AdviceStatus),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_appointment_actions_and_cancelling_the_referral_wait_on_its_time() {
        let timed: Vec<&str> = ReferralAction::ALL
            .into_iter()
            .filter(|a| a.timed())
            .map(|a| a.code())
            .collect();
        assert_eq!(
            timed,
            [
                "CANCEL_REFERRAL",
                "CANCEL_DIRECTLY_BOOKED_APPOINTMENT",
                "CHANGE_APPOINTMENT",
                "RECORD_NON_ATTENDANCE"
            ]
        );
        // The provider may still cancel one that has begun; the referrer may not.
        assert!(ReferralAction::CancelAppointment.timely(true, false));
        assert!(!ReferralAction::CancelAppointment.timely(true, true));
    }

    const REFERRER: Relation = Relation {
        referrer: true,
        provider: false,
    };
    const PROVIDER: Relation = Relation {
        referrer: false,
        provider: true,
    };

    #[test]
    fn lists_hold_their_states_and_letters_outstanding_only_where_asked() {
        let item = |state, letter_outstanding| Listable::Referral {
            state,
            letter_outstanding,
        };
        let on = |i| Worklist::holding(i).collect::<Vec<_>>();
        assert_eq!(
            on(item(ReferralState::NotBooked, false)),
            vec![Worklist::AwaitingBooking]
        );
        assert_eq!(
            on(item(ReferralState::NotBooked, true)),
            vec![Worklist::AwaitingBooking, Worklist::LettersOutstanding]
        );
        assert_eq!(
            on(item(ReferralState::AwaitingTriage, false)),
            vec![Worklist::ReferralsForReview]
        );
        assert_eq!(
            on(item(ReferralState::TriagedProviderToAction, false)),
            vec![Worklist::AppointmentsForBooking]
        );
        assert!(on(item(ReferralState::CancelledReferral, true))
            .iter()
            .all(|w| *w == Worklist::AssessmentReturnedCancelledDna));
        assert_eq!(
            on(Listable::Advice(AdviceStatus::ProviderResponseRequired)),
            vec![Worklist::AdviceRequests]
        );
    }

    #[test]
    fn codes_round_trip() {
        for (s, c) in ReferralState::all() {
            assert_eq!(ReferralState::parse(c), Some(s));
            assert_eq!(s.code(), c);
        }
    }

    #[test]
    fn a_new_referral_is_the_referrers_to_send_book_or_cancel() {
        let a = available_actions(ReferralState::NotBooked, B::ReferringClinician, REFERRER);
        assert_eq!(
            a,
            vec![
                ReferralAction::ChangeShortlist,
                ReferralAction::SendForTriage,
                ReferralAction::CancelReferral,
                ReferralAction::UpdateRequirements,
                ReferralAction::MaintainReferralLetter,
                ReferralAction::CreateAppointment,
            ]
        );
        // A referring admin books but does not change the clinical shortlist.
        assert_eq!(
            available_actions(ReferralState::NotBooked, B::ReferringAdmin, REFERRER),
            vec![
                ReferralAction::UpdateRequirements,
                ReferralAction::MaintainReferralLetter,
                ReferralAction::CreateAppointment
            ]
        );
        // Another organisation's referrer: nothing.
        assert!(available_actions(
            ReferralState::NotBooked,
            B::ReferringClinician,
            Relation::default()
        )
        .is_empty());
    }

    #[test]
    fn a_booked_referral_is_changed_by_either_side_and_closed_by_the_provider() {
        assert_eq!(
            available_actions(ReferralState::Booked, B::ReferringClinician, REFERRER),
            vec![
                ReferralAction::CancelReferral,
                ReferralAction::UpdateRequirements,
                ReferralAction::MaintainReferralLetter,
                ReferralAction::CancelAppointment,
                ReferralAction::ChangeAppointment,
            ]
        );
        assert_eq!(
            available_actions(ReferralState::Booked, B::ServiceProviderClinician, PROVIDER),
            vec![
                ReferralAction::CancelReferral,
                ReferralAction::RejectReferral,
                ReferralAction::AcceptReferral,
                ReferralAction::CancelAppointmentActionLater,
                ReferralAction::UpdateRequirements,
                ReferralAction::AddProviderAttachment,
                ReferralAction::CancelAppointment,
                ReferralAction::ChangeAppointment,
                ReferralAction::RecordNonAttendance,
            ]
        );
        // The provider books only what was deferred to it; the referrer never books then.
        assert!(check(
            ReferralState::DeferredToProvider,
            ReferralAction::CreateAppointment,
            B::ServiceProviderAdmin,
            PROVIDER
        )
        .is_ok());
        assert_eq!(
            check(
                ReferralState::DeferredToProvider,
                ReferralAction::CreateAppointment,
                B::ReferringClinician,
                REFERRER
            ),
            Err(Refusal::State(ReferralState::DeferredToProvider))
        );
    }

    #[test]
    fn triage_is_the_providers() {
        assert_eq!(
            available_actions(
                ReferralState::AwaitingTriage,
                B::ServiceProviderClinician,
                PROVIDER
            ),
            vec![
                ReferralAction::RecordReviewOutcome,
                ReferralAction::CancelReferral,
                ReferralAction::UpdateRequirements,
                ReferralAction::AddProviderAttachment
            ]
        );
        assert_eq!(
            check(
                ReferralState::AwaitingTriage,
                ReferralAction::ChangeShortlist,
                B::ReferringClinician,
                REFERRER
            ),
            Err(Refusal::State(ReferralState::AwaitingTriage))
        );
        assert_eq!(
            check(
                ReferralState::AwaitingTriage,
                ReferralAction::RecordReviewOutcome,
                B::ServiceProviderAdmin,
                PROVIDER
            ),
            Err(Refusal::Role(B::ServiceProviderAdmin))
        );
    }

    #[test]
    fn cancelled_is_terminal() {
        for role in B::ALL {
            for rel in [REFERRER, PROVIDER] {
                assert!(available_actions(ReferralState::CancelledReferral, role, rel).is_empty());
            }
        }
    }
}

/// A referral's commissioning rule organisation (an ODS code): the commissioner whose rules
/// decide which services it may use, and where it came from, to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commissioning {
    /// Named by the caller (the search's input, or the referral's extension).
    Named(String),
    /// The commissioner of the patient's registered GP practice (ODS code `practice`).
    PatientsPractice {
        commissioner: String,
        practice: String,
    },
    /// The commissioner of the referring organisation (ODS code `referrer`).
    Referrer {
        commissioner: String,
        referrer: String,
    },
}

impl Commissioning {
    /// The commissioner's ODS code.
    pub fn code(&self) -> &str {
        match self {
            Commissioning::Named(c)
            | Commissioning::PatientsPractice {
                commissioner: c, ..
            }
            | Commissioning::Referrer {
                commissioner: c, ..
            } => c,
        }
    }

    /// Where it came from, for a message.
    pub fn origin(&self) -> String {
        match self {
            Commissioning::Named(_) => "as named".to_owned(),
            Commissioning::PatientsPractice { practice, .. } => {
                format!("the commissioner of the patient's registered GP practice {practice}")
            }
            Commissioning::Referrer { referrer, .. } => {
                format!("the commissioner of the referring organisation {referrer}")
            }
        }
    }
}

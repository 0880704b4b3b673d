//! The Directory of Services as a referrer sees it.

/// How soon a service could see a patient at a priority (e-RS's indicative wait time; the
/// patient-centred search's `Extension-eRS-IndicativeWaitTime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Its earliest free slot usable at the priority starts then.
    Slot(chrono::NaiveDateTime),
    /// Directly bookable, with no free slot usable at the priority.
    Limited,
    /// Not directly bookable: the provider arranges the appointment, or it triages or advises.
    NotApplicable,
}

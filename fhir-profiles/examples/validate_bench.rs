//! How long validation takes for the three resources a booking writes (a booked referral, its
//! appointment, the slot made busy), each against the profile the server validates it with:
//!
//!     cargo run --release -p ers-fhir --example validate_bench [ROUNDS]
//!
//! Prints microseconds per validation (docs/BENCHMARKS.md, Booking). Synthetic resources, as
//! the booking benchmark stores them.

use std::process::ExitCode;
use std::time::Instant;

use ers_fhir::validate::{default_profile, validate, Severity};
use serde_json::{json, Value};

fn resources() -> Vec<Value> {
    vec![
        json!({"resourceType": "ServiceRequest", "id": "r.01a24940-7576-752b-a88c-5868fce80856",
            "meta": {"versionId": "2", "lastUpdated": "2026-12-06T02:48:10.871649Z",
                "profile": ["https://fhir.nhs.uk/StructureDefinition/eRS-ServiceRequest-Referral"]},
            "reasonCode": [{"text": "Synthetic referral"}],
            "extension": [
                {"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority",
                    "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}},
                {"url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ServiceRequest-State",
                    "extension": [
                        {"url": "state", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReferralState", "code": "BOOKED"}},
                        {"url": "service", "valueReference": {"reference": "HealthcareService/01a24940-6c67-7728-a9df-dac54f28767a"}}]}],
            "identifier": [{"system": "https://fhir.nhs.uk/Id/UBRN", "value": "000000100001"}],
            "status": "active", "intent": "order",
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}]}],
            "priority": "routine",
            "subject": {"reference": "Patient/01a24940-6ace-72e8-a0f5-0e1f42d3041f"},
            "authoredOn": "2026-11-02T09:30:00Z",
            "requester": {"reference": "PractitionerRole/01a24940-6aa6-76ca-afa3-77a059d20a2e"},
            "performer": [{"reference": "HealthcareService/01a24940-6c67-7728-a9df-dac54f28767a"}]}),
        json!({"resourceType": "Appointment", "id": "a.01a2496b-4931-7257-a4d5-9c8c8d0a644a",
            "meta": {"versionId": "1", "lastUpdated": "2026-12-06T03:34:57.586048Z",
                "profile": ["https://fhir.nhs.uk/StructureDefinition/eRS-Appointment"]},
            "participant": [
                {"actor": {"reference": "Patient/01a2495b-948f-7178-8f81-6e050b797ca3"}, "required": "required", "status": "accepted"},
                {"actor": {"reference": "HealthcareService/01a2495b-a012-752b-bdae-466ba3af0879"}, "required": "required", "status": "accepted"}],
            "extension": [{"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-BookingOrganization",
                "valueReference": {"reference": "Organization/01a2495b-9460-74a9-850d-18b03ba02b44"}}],
            "status": "booked", "description": "e-Referral Appointment",
            "start": "2027-01-20T15:20:00.000000Z", "end": "2027-01-20T15:40:00.000000Z",
            "slot": [{"reference": "Slot/01a2495b-a013-75d7-89e2-04cd8107170f"}],
            "created": "2026-12-06T03:34:57.585943Z",
            "basedOn": [{"reference": "ServiceRequest/r.01a2496a-ff7a-73d9-95fb-1927b18d0ea1"}]}),
        json!({"resourceType": "Slot", "id": "01a2495b-a013-75d7-89e2-04ce495179e4",
            "meta": {"versionId": "2", "lastUpdated": "2026-12-06T03:34:57.583679Z",
                "profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Slot"]},
            "status": "busy", "schedule": {"reference": "Schedule/01a2495b-a012-752b-bdae-466cce97952b"},
            "start": "2027-01-20T15:40:00.000000Z", "end": "2027-01-20T16:00:00.000000Z",
            "appointmentType": {"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}]}}),
    ]
}

fn main() -> ExitCode {
    let rounds: u32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 20_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: validate_bench [ROUNDS]");
            return ExitCode::from(2);
        }
    };
    for r in resources() {
        let t = r["resourceType"].as_str().unwrap_or_default().to_owned();
        let profile = default_profile(&t);
        let errors: Vec<_> = validate(&r, profile)
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        if !errors.is_empty() {
            eprintln!("{t} does not validate: {errors:?}");
            return ExitCode::FAILURE;
        }
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(validate(std::hint::black_box(&r), profile));
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!("{t}: {us:.1} us a validation ({rounds} rounds)");
    }
    ExitCode::SUCCESS
}

//! Booking: book a free slot, change it, cancel, rebook, defer, reject, did-not-attend — each
//! with its referral's state and its slots in one transaction — and never a double booking,
//! also under concurrent clients and with two server processes against one database.

use crate::helpers::*;
use crate::referrals::{referral, state, version, world, World};
use serde_json::{json, Value};

const COMMISSIONED_BY: &str =
    "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-CommissionedBy";
const SERVICE_SYSTEM: &str = "https://fhir.nhs.uk/Id/ers-service";

/// The sandbox service 11000 (12 future slots, ROUTINE and URGENT alternating), and a provider
/// clinician at its organisation.
pub(crate) struct Clinic {
    pub(crate) service: String,
    pub(crate) ods: String,
    pub(crate) provider: String,
}

pub(crate) async fn clinic(w: &World, sid: &str) -> Clinic {
    let b = w
        .app
        .search(&format!(
            "HealthcareService?identifier={SERVICE_SYSTEM}|{sid}"
        ))
        .await;
    let svc = &b["entry"][0]["resource"];
    let org = w
        .app
        .get(svc["providedBy"]["reference"].as_str().expect("provider"))
        .await
        .json();
    let ods = org["identifier"][0]["value"]
        .as_str()
        .expect("ods")
        .to_owned();
    Clinic {
        service: svc["id"].as_str().expect("id").to_owned(),
        provider: sign(&claims(
            "555032006107",
            &[("SERVICE_PROVIDER_CLINICIAN", ods.as_str())],
        )),
        ods,
    }
}

/// Free future slots of a service usable at a priority, soonest first.
pub(crate) async fn free_slots(w: &World, service: &str, priority: &str) -> Vec<(String, String)> {
    let b = w
        .app
        .search(&format!(
            "Slot?schedule.actor=HealthcareService/{service}&status=free&priority={priority}&_sort=start&_count=100"
        ))
        .await;
    b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                r["id"].as_str().expect("id").to_owned(),
                r["start"].as_str().expect("start").to_owned(),
            )
        })
        .collect()
}

/// Creates a Directory of Services resource at the clinic's organisation, as its service definer;
/// returns its id.
pub(crate) async fn define(w: &World, c: &Clinic, res_type: &str, body: Value) -> String {
    let r = as_definer(w, c, "POST", res_type, &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().expect("id").to_owned()
}

/// A request as the clinic's service definer.
async fn as_definer(w: &World, c: &Clinic, method: &str, path: &str, body: &Value) -> Reply {
    let definer = sign(&claims(
        "555031998110",
        &[("SERVICE_DEFINER", c.ods.as_str())],
    ));
    w.send_as(
        (&definer, "SERVICE_DEFINER", &c.ods),
        method,
        path,
        None,
        Some(body),
    )
    .await
}

/// A free 30-minute ROUTINE slot of a schedule at 10:00 UTC, `days` from today.
pub(crate) fn routine_slot(schedule: &str, days: i64) -> Value {
    let start = (chrono::Utc::now() + chrono::Duration::days(days))
        .format("%Y-%m-%dT10:00:00Z")
        .to_string();
    json!({"resourceType": "Slot", "schedule": {"reference": format!("Schedule/{schedule}")}, "status": "free",
        "start": start, "end": start.replace("T10:00", "T10:30"),
        "appointmentType": {"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}]}})
}

pub(crate) fn appointment(referral_id: &str, slot: &str) -> Value {
    json!({
        "resourceType": "Appointment",
        "status": "booked",
        "basedOn": [{"reference": format!("ServiceRequest/{referral_id}")}],
        "slot": [{"reference": format!("Slot/{slot}")}],
    })
}

impl World {
    pub(crate) async fn send_as(
        &self,
        (token, bf, org): (&str, &str, &str),
        method: &str,
        path: &str,
        if_match: Option<i64>,
        body: Option<&Value>,
    ) -> Reply {
        let mut r = self
            .app
            .as_user(token, method, path, bf, org)
            .insert_header(("Content-Type", "application/fhir+json"));
        if let Some(v) = if_match {
            r = r.insert_header(("If-Match", format!("W/\"{v}\"")));
        }
        self.app
            .send(r, body.map(|b| b.to_string().into_bytes()))
            .await
    }
    /// A request as the referring clinician of the sandbox (`021600556514` at R69).
    pub(crate) async fn rc(
        &self,
        method: &str,
        path: &str,
        if_match: Option<i64>,
        body: Option<&Value>,
    ) -> Reply {
        self.send_as(
            (&self.rc, "REFERRING_CLINICIAN", "R69"),
            method,
            path,
            if_match,
            body,
        )
        .await
    }
    /// A booking of the slot for the referral's patient.
    fn patients_appointment(&self, referral_id: &str, slot: &str) -> Value {
        let mut a = appointment(referral_id, slot);
        a["participant"] = json!([{"actor": {"reference": format!("Patient/{}", self.patient)}, "status": "accepted"}]);
        a
    }
    pub(crate) async fn book(&self, referral_id: &str, slot: &str) -> Reply {
        let a = self.patients_appointment(referral_id, slot);
        self.rc("POST", "Appointment", None, Some(&a)).await
    }
    /// The clinic's provider books the slot (for a referral deferred to it).
    pub(crate) async fn provider_books(&self, c: &Clinic, referral_id: &str, slot: &str) -> Reply {
        let a = self.patients_appointment(referral_id, slot);
        self.send_as(
            (&c.provider, "SERVICE_PROVIDER_CLINICIAN", &c.ods),
            "POST",
            "Appointment",
            None,
            Some(&a),
        )
        .await
    }
    /// The provider's deferral Task of a referral (the Task search with `intent=order`).
    async fn deferral_task(&self, referral_id: &str) -> Value {
        let b = self
            .rc(
                "GET",
                &format!("Task?focus=ServiceRequest/{referral_id}&intent=order"),
                None,
                None,
            )
            .await
            .json();
        assert_eq!(b["total"], 1, "{b}");
        b["entry"][0]["resource"].clone()
    }
    pub(crate) async fn referral_now(&self, id: &str) -> Value {
        let r = self
            .rc("GET", &format!("ServiceRequest/{id}"), None, None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
    async fn slot_status(&self, id: &str) -> String {
        self.app.get(&format!("Slot/{id}")).await.json()["status"]
            .as_str()
            .expect("status")
            .to_owned()
    }
    pub(crate) async fn new_referral(&self, services: &[&str], priority: &str) -> String {
        let r = self.create(&referral(self, services, priority)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().expect("id").to_owned()
    }
}

fn params(pairs: &[(&str, &str)]) -> Value {
    let mut p = json!({"resourceType": "Parameters"});
    if !pairs.is_empty() {
        p["parameter"] = pairs
            .iter()
            .map(|(n, v)| json!({"name": n, "valueString": v}))
            .collect();
    }
    p
}

#[actix_web::test]
async fn book_change_cancel_rebook_and_did_not_attend() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let id = w.new_referral(&[&c.service], "ROUTINE").await;
    let slots = free_slots(&w, &c.service, "ROUTINE").await;
    assert!(slots.len() >= 3, "{slots:?}");
    let (a_slot, a_start) = slots[0].clone();
    let (b_slot, b_start) = slots[1].clone();

    // Book: a booked appointment on the slot, the slot busy, the referral BOOKED.
    let r = w.book(&id, &a_slot).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let appt = r.json();
    let appt_id = appt["id"].as_str().expect("id").to_owned();
    assert_eq!(appt["status"], "booked");
    assert_eq!(appt["start"], a_start);
    assert_eq!(appt["slot"][0]["reference"], format!("Slot/{a_slot}"));
    assert_eq!(
        appt["basedOn"][0]["reference"],
        format!("ServiceRequest/{id}")
    );
    let text = appt.to_string();
    assert!(text.contains(&format!("Patient/{}", w.patient)), "{text}");
    assert!(
        text.contains(&format!("HealthcareService/{}", c.service)),
        "{text}"
    );
    // The booking organisation is the caller's own (R69), whatever else the booking read.
    let r69 = w
        .app
        .search("Organization?identifier=https://fhir.nhs.uk/Id/ods-organization-code|R69")
        .await;
    let r69 = r69["entry"][0]["resource"]["id"].as_str().expect("R69");
    let booking_org = appt["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("Extension-UKCore-BookingOrganization"))
        })
        .map(|e| e["valueReference"]["reference"].clone());
    assert_eq!(
        booking_org,
        Some(json!(format!("Organization/{r69}"))),
        "{text}"
    );
    assert_eq!(w.slot_status(&a_slot).await, "busy");
    assert!(!free_slots(&w, &c.service, "ROUTINE")
        .await
        .iter()
        .any(|(s, _)| *s == a_slot));
    let sr = w.referral_now(&id).await;
    assert_eq!(state(&sr), "BOOKED");
    // Found by referral, patient, service, status and date.
    for q in [
        format!("Appointment?based-on=ServiceRequest/{id}"),
        format!(
            "Appointment?patient=Patient/{}&status=booked&based-on=ServiceRequest/{id}",
            w.patient
        ),
        format!(
            "Appointment?service=HealthcareService/{}&based-on=ServiceRequest/{id}",
            c.service
        ),
        format!(
            "Appointment?date={}&based-on=ServiceRequest/{id}",
            &a_start[..10]
        ),
        // FHIR's actor: any participant, by the type named.
        format!(
            "Appointment?actor=Patient/{}&based-on=ServiceRequest/{id}",
            w.patient
        ),
        format!(
            "Appointment?actor=HealthcareService/{}&based-on=ServiceRequest/{id}",
            c.service
        ),
        format!("Appointment?actor:Patient.identifier=https://fhir.nhs.uk/Id/nhs-number|9912003888&based-on=ServiceRequest/{id}"),
    ] {
        let r = w.rc("GET", &q, None, None).await;
        assert_eq!(r.json()["total"], 1, "{q}: {}", r.text());
    }
    let r = w
        .rc(
            "GET",
            &format!("Appointment?actor=Patient/elsewhere&based-on=ServiceRequest/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.json()["total"], 0, "{}", r.text());
    // An actor whose type cannot be told, or two types at once, or one no appointment has
    // indexed, is refused naming the parameter, not ignored.
    for (q, said) in [
        ("Appointment?actor=abc", "names no type"),
        (
            "Appointment?actor=Patient/a,Location/b",
            "Patient and Location",
        ),
        ("Appointment?actor=PractitionerRole/x", "'PractitionerRole'"),
        ("Appointment?actor.identifier=x", "names no type"),
    ] {
        let d = w
            .rc("GET", q, None, None)
            .await
            .assert_outcome(400, "invalid");
        assert!(d.contains("'actor") && d.contains(said), "{q}: {d}");
    }
    let r = w
        .rc(
            "GET",
            &format!("Appointment?based-on=ServiceRequest/{id}&status=cancelled"),
            None,
            None,
        )
        .await;
    assert_eq!(r.json()["total"], 0);
    // The referrer may now cancel or change the appointment, at the appointment's URL.
    let r = w
        .rc(
            "GET",
            &format!("ServiceRequest/{id}/$ers.availableActions"),
            None,
            None,
        )
        .await;
    let text = r.text();
    assert!(
        text.contains("CANCEL_DIRECTLY_BOOKED_APPOINTMENT"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Appointment/{appt_id}/$ers.cancelAppointment")),
        "{text}"
    );
    // A second booking for the booked referral is refused: one current appointment.
    w.book(&id, &slots[2].0)
        .await
        .assert_outcome(422, "business-rule");
    assert_eq!(w.slot_status(&slots[2].0).await, "free");

    // Moving to the slot it already has changes nothing.
    let r = w
        .rc(
            "PUT",
            &format!("Appointment/{appt_id}"),
            Some(1),
            Some(&appt),
        )
        .await;
    r.assert_outcome(422, "business-rule");
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "NO_CHANGES_DETECTED"
    );
    assert_eq!(w.slot_status(&a_slot).await, "busy");
    // Change (PUT with the new slot): the old slot is freed, the new one taken, atomically.
    let mut moved = appt.clone();
    moved["slot"] = json!([{"reference": format!("Slot/{b_slot}")}]);
    let r = w
        .rc(
            "PUT",
            &format!("Appointment/{appt_id}"),
            Some(1),
            Some(&moved),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["start"], b_start);
    assert_eq!(version(&r), 2);
    assert_eq!(w.slot_status(&a_slot).await, "free");
    assert_eq!(w.slot_status(&b_slot).await, "busy");
    // A stale version is refused and changes nothing.
    let r = w
        .rc(
            "PUT",
            &format!("Appointment/{appt_id}"),
            Some(1),
            Some(&moved),
        )
        .await;
    r.assert_outcome(409, "conflict");
    assert_eq!(r.issue_at().1, "If-Match");
    // Without If-Match: 428, naming the header.
    let r = w
        .rc(
            "POST",
            &format!("Appointment/{appt_id}/$ers.cancelAppointment"),
            None,
            Some(&params(&[("reason", "PATIENT_ILL")])),
        )
        .await;
    r.assert_outcome(428, "required");
    assert_eq!(r.issue_at().1, "If-Match");

    // Cancel (patient's reason): slot freed, referral APPT_CANCELLED_BY_PATIENT and back on
    // the referrer's awaiting-booking worklist.
    let r = w
        .rc(
            "POST",
            &format!("Appointment/{appt_id}/$ers.cancelAppointment"),
            Some(2),
            Some(&params(&[("reason", "PATIENT_ILL")])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(
        r.json()["cancelationReason"]["coding"][0]["code"],
        "PATIENT_ILL"
    );
    assert_eq!(w.slot_status(&b_slot).await, "free");
    assert_eq!(
        state(&w.referral_now(&id).await),
        "APPT_CANCELLED_BY_PATIENT"
    );
    let r = w
        .rc(
            "GET",
            "ServiceRequest/$ers.worklist?listType=AWAITING_BOOKING&_count=100",
            None,
            None,
        )
        .await;
    assert!(r.text().contains(&id), "{}", r.text());
    // The cancelled appointment is not current any more.
    let d = w
        .rc(
            "POST",
            &format!("Appointment/{appt_id}/$ers.cancelAppointment"),
            Some(3),
            Some(&params(&[("reason", "PATIENT_ILL")])),
        )
        .await
        .assert_outcome(422, "business-rule");
    assert!(d.contains("cancelled"), "{d}");

    // Rebook: a new appointment on the freed slot.
    let r = w.book(&id, &a_slot).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let again = r.json()["id"].as_str().expect("id").to_owned();
    assert_ne!(again, appt_id);
    assert_eq!(state(&w.referral_now(&id).await), "BOOKED");

    // Did not attend: the provider's to record, not the referrer's, and not before the
    // appointment has begun.
    let dna = params(&[("reason", "PATIENT_FORGOT")]);
    let path = format!("Appointment/{again}/$ers.recordNonAttendance");
    w.rc("POST", &path, Some(1), Some(&dna))
        .await
        .assert_outcome(403, "forbidden");
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    let r = w
        .send_as(provider, "POST", &path, Some(1), Some(&dna))
        .await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue("INVALID_STATE", "Appointment.start");
    assert_eq!(state(&w.referral_now(&id).await), "BOOKED");
    let actions = format!("ServiceRequest/{id}/$ers.availableActions");
    let offered = || async {
        let r = w.send_as(provider, "GET", &actions, None, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.text().contains("RECORD_NON_ATTENDANCE")
    };
    assert!(!offered().await, "offered before the appointment began");
    // Moved to a slot that begins in a few seconds, it can be once that time has come.
    let schedule = w
        .app
        .search(&format!("Schedule?actor=HealthcareService/{}", c.service))
        .await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("schedule")
        .to_owned();
    let begins = chrono::Utc::now() + chrono::Duration::seconds(8);
    let instant = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut soon = routine_slot(&schedule, 0);
    soon["start"] = json!(instant(begins));
    soon["end"] = json!(instant(begins + chrono::Duration::minutes(30)));
    let soon = define(&w, &c, "Slot", soon).await;
    let r = w
        .rc(
            "POST",
            &format!("Appointment/{again}/$ers.changeAppointment"),
            Some(1),
            // A slot as a Reference, as its definition types it (its text Slot/{id} is read too).
            Some(&json!({"resourceType": "Parameters", "parameter": [
                {"name": "slot", "valueReference": {"reference": format!("Slot/{soon}")}}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let referrer_offered = || async {
        let r = w.rc("GET", &actions, None, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.text();
        (
            t.contains("CANCEL_DIRECTLY_BOOKED_APPOINTMENT"),
            t.contains("CHANGE_APPOINTMENT"),
            t.contains("CANCEL_REFERRAL"),
        )
    };
    assert_eq!(referrer_offered().await, (true, true, true));
    let wait = begins - chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    actix_web::rt::time::sleep(wait.to_std().unwrap_or_default()).await;
    assert!(offered().await, "not offered once the appointment began");
    // Once it has begun, the referrer can no longer cancel it (nor the referral with it), and
    // nobody can move it: the provider records what happened. None of these is offered.
    assert_eq!(referrer_offered().await, (false, false, false));
    let v = w.referral_now(&id).await["meta"]["versionId"]
        .as_str()
        .and_then(|v| v.parse::<i64>().ok());
    let r = w
        .rc(
            "POST",
            &format!("ServiceRequest/{id}/$ers.cancelReferral"),
            v,
            Some(&params(&[("reason", "TREATMENT_NO_LONGER_REQUIRED")])),
        )
        .await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue("UNABLE_TO_CANCEL_APPOINTMENT", "Appointment.start");
    let r = w
        .rc(
            "POST",
            &format!("Appointment/{again}/$ers.cancelAppointment"),
            Some(2),
            Some(&params(&[("reason", "PATIENT_ILL")])),
        )
        .await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue("UNABLE_TO_CANCEL_APPOINTMENT", "Appointment.start");
    let r = w
        .send_as(
            provider,
            "POST",
            &format!("Appointment/{again}/$ers.changeAppointment"),
            Some(2),
            Some(&params(&[("slot", &format!("Slot/{a_slot}"))])),
        )
        .await;
    r.assert_outcome(422, "business-rule");
    r.assert_issue("INVALID_STATE", "Appointment.start");
    assert_eq!(w.slot_status(&a_slot).await, "free");
    let r = w
        .send_as(provider, "POST", &path, Some(2), Some(&dna))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "noshow");
    let sr = w.referral_now(&id).await;
    assert_eq!(state(&sr), "DID_NOT_ATTEND");
    // Every change was attributed: one Provenance per appointment version.
    let r = w
        .rc(
            "GET",
            &format!("Provenance?target=Appointment/{appt_id}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.json()["total"], 3, "{}", r.text());
}

#[actix_web::test]
async fn bad_bookings_are_refused_precisely_and_change_nothing() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let other = clinic(&w, "13000").await;
    let id = w.new_referral(&[&c.service], "ROUTINE").await;
    let urgent = free_slots(&w, &c.service, "URGENT").await;
    let urgent_only: Vec<&(String, String)> = {
        let routine = free_slots(&w, &c.service, "ROUTINE").await;
        urgent.iter().filter(|s| !routine.contains(s)).collect()
    };
    let routine = free_slots(&w, &c.service, "ROUTINE").await;

    // A routine referral in an urgent slot.
    let d = w
        .book(&id, &urgent_only[0].0)
        .await
        .assert_outcome(422, "business-rule");
    assert!(d.contains("URGENT") && d.contains("ROUTINE"), "{d}");
    // A slot of a service not on the shortlist.
    let elsewhere = free_slots(&w, &other.service, "ROUTINE").await;
    let r = w.book(&id, &elsewhere[0].0).await;
    let d = r.assert_outcome(422, "business-rule");
    assert!(
        d.contains("does not relate to a Service on the Shortlist"),
        "{d}"
    );
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "INAPPROPRIATE_VALUE"
    );
    // No referral, an unknown slot, a status that is neither booking nor deferral.
    let mut a = appointment(&id, &routine[0].0);
    a.as_object_mut().expect("object").shift_remove("basedOn");
    let r = w.rc("POST", "Appointment", None, Some(&a)).await;
    r.assert_outcome(422, "required");
    assert_eq!(r.json()["issue"][0]["expression"][0], "Appointment.basedOn");
    w.book(&id, "no-such-slot")
        .await
        .assert_outcome(422, "not-found");
    let mut a = appointment(&id, &routine[0].0);
    a["status"] = json!("fulfilled");
    w.rc("POST", "Appointment", None, Some(&a))
        .await
        .assert_outcome(422, "value");
    // A failure late in a booking (the appointment itself invalid, after the slot was taken
    // in the same transaction) leaves nothing behind.
    let mut a = appointment(&id, &routine[0].0);
    a["participant"] =
        json!([{"actor": {"reference": format!("Patient/{}", w.patient)}, "status": "accepted"}]);
    a["extension"] = json!([{"url": "https://example.org/no-value"}]);
    w.rc("POST", "Appointment", None, Some(&a))
        .await
        .assert_outcome(422, "invariant");
    // What the server takes from the referral and the slot may be left out, but what a
    // client says of it must agree: another patient, another time or another place is
    // refused, naming the field, not corrected.
    let said = |change: &dyn Fn(&mut Value)| {
        let mut a = appointment(&id, &routine[0].0);
        a["participant"] = json!([{"actor": {"reference": format!("Patient/{}", w.patient)}, "status": "accepted"}]);
        change(&mut a);
        a
    };
    // Status and issue type, then the e-RS code at the field; the diagnostics.
    let refused = |r: &Reply, (status, kind): (u16, &str), ers: &str, at: &str| {
        let d = r.assert_outcome(status, kind);
        r.assert_issue(ers, at);
        d
    };
    let other_patient = said(&|a| {
        a["participant"] =
            json!([{"actor": {"reference": "Patient/someone-else"}, "status": "accepted"}]);
    });
    let r = w
        .rc("POST", "Appointment", None, Some(&other_patient))
        .await;
    let d = refused(
        &r,
        (422, "business-rule"),
        "INAPPROPRIATE_VALUE",
        "Appointment.participant[0].actor",
    );
    assert!(
        d.contains("Patient/someone-else") && d.contains(&format!("Patient/{}", w.patient)),
        "{d}"
    );
    let other_time = said(&|a| a["start"] = json!("2031-01-01T10:00:00Z"));
    let r = w.rc("POST", "Appointment", None, Some(&other_time)).await;
    let d = refused(
        &r,
        (422, "business-rule"),
        "INAPPROPRIATE_VALUE",
        "Appointment.start",
    );
    assert!(
        d.contains("2031-01-01T10:00:00Z") && d.contains(&routine[0].1),
        "{d}"
    );
    let other_place = said(&|a| {
        a["participant"]
            .as_array_mut()
            .expect("participants")
            .push(json!({"actor": {"reference": "Location/elsewhere"}, "status": "accepted"}));
    });
    let r = w.rc("POST", "Appointment", None, Some(&other_place)).await;
    refused(
        &r,
        (422, "business-rule"),
        "INAPPROPRIATE_VALUE",
        "Appointment.participant[1].actor",
    );
    // One referral, named as one: two, or something else, are refused where they are.
    let two = said(&|a| {
        a["basedOn"] = json!([{"reference": format!("ServiceRequest/{id}")}, {"reference": format!("ServiceRequest/{id}")}]);
    });
    let r = w.rc("POST", "Appointment", None, Some(&two)).await;
    refused(
        &r,
        (422, "business-rule"),
        "TOO_MANY_ITEMS",
        "Appointment.basedOn",
    );
    let not_a_referral =
        said(&|a| a["basedOn"] = json!([{"reference": format!("Patient/{}", w.patient)}]));
    let r = w
        .rc("POST", "Appointment", None, Some(&not_a_referral))
        .await;
    refused(
        &r,
        (422, "value"),
        "INVALID_VALUE",
        "Appointment.basedOn[0]",
    );
    // A referral version that is not the current one: 409, naming basedOn (not If-Match).
    let stale = said(&|a| {
        a["basedOn"] = json!([{"reference": format!("ServiceRequest/{id}/_history/99")}])
    });
    let r = w.rc("POST", "Appointment", None, Some(&stale)).await;
    let d = refused(
        &r,
        (409, "conflict"),
        "INVALID_REQUEST_STATE",
        "Appointment.basedOn[0]",
    );
    assert!(
        d.contains("'basedOn' names version 99") && !d.contains("If-Match"),
        "{d}"
    );
    // Nothing was taken by any of those.
    for (s, _) in routine.iter().chain(urgent.iter()) {
        assert_eq!(w.slot_status(s).await, "free", "{s}");
    }
    assert_eq!(state(&w.referral_now(&id).await), "NOT_BOOKED");

    // Deferral: refused while the service has free slots; a free slot named as gone is
    // refused too; a booking attempt problem defers.
    let defer = |reason: &str, slot: Option<&str>| {
        let mut a = json!({
            "resourceType": "Appointment",
            "status": "proposed",
            "basedOn": [{"reference": format!("ServiceRequest/{id}")}],
            "reasonCode": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReviewReason", "code": reason}]}],
            "participant": [{"actor": {"reference": format!("HealthcareService/{}", c.service)}, "status": "needs-action"}],
        });
        if let Some(s) = slot {
            a["slot"] = json!([{"reference": format!("Slot/{s}")}]);
        }
        a
    };
    let r = w
        .rc(
            "POST",
            "Appointment",
            None,
            Some(&defer("NO_SLOTS_AT_SERVICE", None)),
        )
        .await;
    r.assert_outcome(422, "business-rule");
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "SLOTS_CURRENTLY_AVAILABLE"
    );
    let r = w
        .rc(
            "POST",
            "Appointment",
            None,
            Some(&defer("SLOT_NOT_AVAILABLE", Some(&routine[0].0))),
        )
        .await;
    r.assert_outcome(422, "business-rule");
    assert_eq!(
        r.json()["issue"][0]["details"]["coding"][0]["code"],
        "THIS_SLOT_IS_AVAILABLE"
    );
    let r = w
        .rc(
            "POST",
            "Appointment",
            None,
            Some(&defer("BOOKING_ATTEMPT_PROBLEM", None)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let proposed = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(r.json()["status"], "proposed");
    assert_eq!(state(&w.referral_now(&id).await), "DEFERRED_TO_PROVIDER");
    // The referrer may not book it now; the provider books it, and the deferral is closed.
    // (Saying the slot's start, in another notation of the same instant, is agreeing.)
    w.book(&id, &routine[0].0)
        .await
        .assert_outcome(422, "business-rule");
    let mut a = appointment(&id, &routine[0].0);
    a["participant"] =
        json!([{"actor": {"reference": format!("Patient/{}", w.patient)}, "status": "accepted"}]);
    a["start"] = json!(routine[0].1.replace('Z', "+00:00"));
    assert_ne!(a["start"], json!(routine[0].1));
    let r = w
        .send_as(
            (&c.provider, "SERVICE_PROVIDER_CLINICIAN", &c.ods),
            "POST",
            "Appointment",
            None,
            Some(&a),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let booked = r.json()["id"].as_str().expect("id").to_owned();
    let old = w
        .rc("GET", &format!("Appointment/{proposed}"), None, None)
        .await
        .json();
    assert_eq!(old["status"], "cancelled", "{old}");
    assert_eq!(state(&w.referral_now(&id).await), "BOOKED");

    // Cancelling with the other side's reason, or without a mandatory comment.
    let path = format!("Appointment/{booked}/$ers.cancelAppointment");
    let r = w
        .rc(
            "POST",
            &path,
            Some(1),
            Some(&params(&[("reason", "CLINIC_CANCELLED")])),
        )
        .await;
    let d = r.assert_outcome(422, "business-rule");
    assert!(d.contains("provider"), "{d}");
    let r = w
        .rc(
            "POST",
            &path,
            Some(1),
            Some(&params(&[("reason", "OTHER")])),
        )
        .await;
    r.assert_outcome(422, "required");
    assert_eq!(
        r.json()["issue"][0]["expression"][0],
        "Parameters.parameter[comment]"
    );
    // The same through PUT names the body's elements.
    let mut put = w
        .rc("GET", &format!("Appointment/{booked}"), None, None)
        .await
        .json();
    put["status"] = json!("cancelled");
    put["cancelationReason"] = json!({"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-AppointmentCancellationReason", "code": "OTHER"}]});
    let r = w
        .rc("PUT", &format!("Appointment/{booked}"), Some(1), Some(&put))
        .await;
    r.assert_outcome(422, "required");
    assert_eq!(r.json()["issue"][0]["expression"][0], "Appointment.comment");
    // An organisation with no relationship may not change it (403), nor see it (404).
    let stranger = sign(&claims("021600556515", &[("REFERRING_CLINICIAN", "R68")]));
    w.send_as(
        (&stranger, "REFERRING_CLINICIAN", "R68"),
        "POST",
        &path,
        Some(1),
        Some(&params(&[("reason", "PATIENT_ILL")])),
    )
    .await
    .assert_outcome(403, "forbidden");
    // Nor book for its referral: refused before anything about the referral is said (its
    // version, its state), even naming a version that is not the referral's.
    let mut stray = appointment(&format!("{id}/_history/99"), &routine[1].0);
    stray["participant"] = a["participant"].clone();
    let d = w
        .send_as(
            (&stranger, "REFERRING_CLINICIAN", "R68"),
            "POST",
            "Appointment",
            None,
            Some(&stray),
        )
        .await
        .assert_outcome(403, "forbidden");
    assert!(
        d.contains("has no relationship with your organisation (R68)"),
        "{d}"
    );
    // A referral that does not exist is not found, for anyone.
    let r = w
        .send_as(
            (&stranger, "REFERRING_CLINICIAN", "R68"),
            "POST",
            "Appointment",
            None,
            Some(&appointment("r.no-such-referral", &routine[1].0)),
        )
        .await;
    r.assert_outcome(404, "not-found");
    r.assert_issue("REFERENCE_NOT_FOUND", "Appointment.basedOn[0]");
    w.send_as(
        (&stranger, "REFERRING_CLINICIAN", "R68"),
        "GET",
        &format!("Appointment/{booked}"),
        None,
        None,
    )
    .await
    .assert_outcome(404, "not-found");
    // Appointments are never deleted.
    w.rc("DELETE", &format!("Appointment/{booked}"), None, None)
        .await
        .assert_outcome(405, "not-supported");
    assert_eq!(w.slot_status(&routine[0].0).await, "busy");

    // The provider rejects the booked referral: appointment cancelled, slot freed, REJECTED.
    let reject = format!("ServiceRequest/{id}/$ers.rejectReferral");
    let sr_version: i64 = w.referral_now(&id).await["meta"]["versionId"]
        .as_str()
        .expect("v")
        .parse()
        .expect("n");
    let provider: (&str, &str, &str) = (&c.provider, "SERVICE_PROVIDER_CLINICIAN", &c.ods);
    let reject_with = async |p: &[(&str, &str)]| {
        w.send_as(
            provider,
            "POST",
            &reject,
            Some(sr_version),
            Some(&params(p)),
        )
        .await
    };
    reject_with(&[("reason", "PATIENT_ILL")])
        .await
        .assert_outcome(422, "code-invalid");
    // Two reasons: which was meant? Refused, naming the parameter, and nothing changes.
    let d = reject_with(&[
        ("reason", "SERVICE_INAPPROPRIATE"),
        ("reason", "PATIENT_ILL"),
        ("comment", "Needs a paediatric service"),
    ])
    .await
    .assert_outcome(400, "structure");
    assert!(
        d.contains("'Parameters.parameter[reason]' is given 2 times"),
        "{d}"
    );
    let r = reject_with(&[
        ("reason", "SERVICE_INAPPROPRIATE"),
        ("comment", "Needs a paediatric service"),
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state(&r.json()), "REJECTED");
    let appt = w
        .rc("GET", &format!("Appointment/{booked}"), None, None)
        .await
        .json();
    assert_eq!(appt["status"], "cancelled");
    assert_eq!(w.slot_status(&routine[0].0).await, "free");
}

#[actix_web::test]
async fn named_clinician_past_slots_and_cancelled_referrals() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    // A clinician's schedule at the service with two slots: one tomorrow, one that starts in
    // three seconds (a definer may add no free slot in the past), and is booked once it has.
    let practitioner = w.app.search("Practitioner?_count=1").await["entry"][0]["resource"]["id"]
        .as_str()
        .expect("practitioner")
        .to_owned();
    let schedule = define(
        &w,
        &c,
        "Schedule",
        json!({"resourceType": "Schedule", "active": true, "actor": [
            {"reference": format!("HealthcareService/{}", c.service)},
            {"reference": format!("Practitioner/{practitioner}")}]}),
    )
    .await;
    let w = &w;
    let named = define(w, &c, "Slot", routine_slot(&schedule, 1)).await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(3);
    let mut slot = routine_slot(&schedule, 0);
    slot["start"] = json!(soon.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    slot["end"] = json!((soon + chrono::Duration::minutes(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string());
    let past = define(w, &c, "Slot", slot).await;
    let id = w.new_referral(&[&c.service], "ROUTINE").await;
    if let Ok(wait) = (soon - chrono::Utc::now() + chrono::Duration::milliseconds(100)).to_std() {
        actix_web::rt::time::sleep(wait).await;
    }

    let d = w
        .book(&id, &past)
        .await
        .assert_outcome(422, "business-rule");
    assert!(d.contains("past"), "{d}");
    // Without the clinician, and with the wrong one.
    let d = w
        .book(&id, &named)
        .await
        .assert_outcome(422, "business-rule");
    assert!(d.contains("named clinician"), "{d}");
    let with = |who: &str| {
        let mut a = appointment(&id, &named);
        a["participant"] = json!([
            {"actor": {"reference": format!("Patient/{}", w.patient)}, "status": "accepted"},
            {"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CON"}]}], "actor": {"reference": who}, "status": "accepted"}]);
        a
    };
    let d = w
        .rc(
            "POST",
            "Appointment",
            None,
            Some(&with("Practitioner/someone-else")),
        )
        .await
        .assert_outcome(422, "business-rule");
    assert!(
        d.contains("'clinician' (Practitioner/someone-else) does not match the slot"),
        "{d}"
    );
    let r = w
        .rc(
            "POST",
            "Appointment",
            None,
            Some(&with(&format!("Practitioner/{practitioner}"))),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let appt = r.json();
    assert!(appt.to_string().contains("\"CON\""), "{appt}");

    // Cancelling the referral cancels its appointment and frees the slot.
    let v: i64 = w.referral_now(&id).await["meta"]["versionId"]
        .as_str()
        .expect("v")
        .parse()
        .expect("n");
    // A reason that cannot cancel the appointment needs it cancelled first.
    let r = w
        .rc(
            "POST",
            &format!("ServiceRequest/{id}/$ers.cancelReferral"),
            Some(v),
            Some(&params(&[("reason", "BOOKED_OUTSIDE_CAB")])),
        )
        .await;
    let d = r.assert_outcome(422, "business-rule");
    r.assert_issue("INAPPROPRIATE_VALUE", "Parameters.parameter[reason]");
    assert!(
        d.contains(&format!(
            "cancel Appointment/{} first",
            appt["id"].as_str().unwrap_or_default()
        )),
        "{d}"
    );
    // The provider cancels it, with a reason of its own.
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    let r = w
        .send_as(
            provider,
            "POST",
            &format!("ServiceRequest/{id}/$ers.cancelReferral"),
            Some(v),
            Some(&params(&[
                ("reason", "OUTPATIENT_SERVICE_NA"),
                ("comment", "A community clinic suits better"),
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = w
        .rc(
            "GET",
            &format!("Appointment/{}", appt["id"].as_str().expect("id")),
            None,
            None,
        )
        .await
        .json();
    assert_eq!(a["status"], "cancelled");
    assert_eq!(w.slot_status(&named).await, "free");
}

/// Bookings for many referrals race for the same few slots.
async fn race(apps: &[&TestApp], w: &World, slots: &[String], referrals: &[String]) -> Vec<Reply> {
    let requests = referrals.iter().enumerate().map(|(i, id)| {
        let app = apps[i % apps.len()];
        let slot = &slots[i % slots.len()];
        let mut a = appointment(id, slot);
        a["participant"] = json!([{"actor": {"reference": format!("Patient/{}", w.patient)}, "status": "accepted"}]);
        let req = app
            .as_user(&w.rc, "POST", "Appointment", "REFERRING_CLINICIAN", "R69")
            .insert_header(("Content-Type", "application/fhir+json"));
        app.send(req, Some(a.to_string().into_bytes()))
    });
    futures_util::future::join_all(requests).await
}

/// Exactly one booking per slot: the winners are 201, everyone else 409 SLOT_NOT_AVAILABLE,
/// and each slot has exactly one booked appointment.
async fn assert_one_winner_per_slot(w: &World, slots: &[String], replies: &[Reply]) {
    let won = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        won,
        slots.len(),
        "{:?}",
        replies
            .iter()
            .map(|r| (r.status, r.text()))
            .collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert_outcome(409, "conflict");
        assert_eq!(
            r.json()["issue"][0]["details"]["coding"][0]["code"],
            "SLOT_NOT_AVAILABLE",
            "{}",
            r.text()
        );
    }
    for s in slots {
        let b = w
            .rc(
                "GET",
                &format!("Appointment?slot=Slot/{s}&status=booked"),
                None,
                None,
            )
            .await
            .json();
        assert_eq!(b["total"], 1, "slot {s}: {b}");
        assert_eq!(w.slot_status(s).await, "busy");
    }
}

#[actix_web::test]
async fn concurrent_bookings_never_double_book() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let slots: Vec<String> = free_slots(&w, &c.service, "ROUTINE")
        .await
        .into_iter()
        .take(2)
        .map(|(s, _)| s)
        .collect();
    let mut referrals = Vec::new();
    for _ in 0..12 {
        referrals.push(w.new_referral(&[&c.service], "ROUTINE").await);
    }
    let replies = race(&[&w.app], &w, &slots, &referrals).await;
    assert_one_winner_per_slot(&w, &slots, &replies).await;
}

/// Two server processes (the real binary) against one database: the slot is still taken once.
#[actix_web::test]
async fn two_server_processes_never_double_book() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let slots: Vec<String> = free_slots(&w, &c.service, "ROUTINE")
        .await
        .into_iter()
        .take(2)
        .map(|(s, _)| s)
        .collect();
    let mut referrals = Vec::new();
    for _ in 0..10 {
        referrals.push(w.new_referral(&[&c.service], "ROUTINE").await);
    }
    let one = ServerProcess::start(&w.app.database_url).await;
    let two = ServerProcess::start(&w.app.database_url).await;
    let replies = race(&[&one.app, &two.app], &w, &slots, &referrals).await;
    assert_one_winner_per_slot(&w, &slots, &replies).await;
}

#[actix_web::test]
async fn requirements_follow_the_appointment_and_the_provider_accepts_or_rebooks_later() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let requirements = json!({"url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AdditionalRequirements", "extension": [
        {"url": "interpreterLanguage", "valueCode": "pl"},
        {"url": "accessibility", "valueString": "Wheelchair access"}]});
    let mut body = referral(&w, &[&c.service], "ROUTINE");
    body["extension"]
        .as_array_mut()
        .expect("extensions")
        .push(requirements.clone());
    let r = w.create(&body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let slots = free_slots(&w, &c.service, "ROUTINE").await;
    let r = w.book(&id, &slots[0].0).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let appt_id = r.json()["id"].as_str().expect("id").to_owned();
    // Carried onto the appointment, and the provider sees them.
    let provider = (
        c.provider.as_str(),
        "SERVICE_PROVIDER_CLINICIAN",
        c.ods.as_str(),
    );
    let seen = w
        .send_as(
            provider,
            "GET",
            &format!("Appointment/{appt_id}"),
            None,
            None,
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert!(
        seen.text().contains("\"valueCode\":\"pl\""),
        "{}",
        seen.text()
    );
    // Changed through the API: the referral and its current appointment together.
    let v = |sr: &Value| -> i64 {
        sr["meta"]["versionId"]
            .as_str()
            .expect("v")
            .parse()
            .expect("n")
    };
    let sr_v = v(&w.referral_now(&id).await);
    let op = format!("ServiceRequest/{id}/$ers.updateAdditionalRequirements");
    let update_with =
        async |p: &[(&str, &str)]| w.rc("POST", &op, Some(sr_v), Some(&params(p))).await;
    update_with(&[("interpreterLanguage", "polish")])
        .await
        .assert_outcome(422, "code-invalid");
    // A requirement given twice: which was meant? Refused, naming it.
    let r = update_with(&[
        ("transport", "Patient transport service"),
        ("transport", "Own car"),
    ])
    .await;
    r.assert_outcome(400, "structure");
    r.assert_issue("TOO_MANY_ITEMS", "Parameters.parameter[transport]");
    let r = update_with(&[
        ("interpreterLanguage", "bfi"),
        ("transport", "Patient transport service"),
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let appt = w
        .rc("GET", &format!("Appointment/{appt_id}"), None, None)
        .await
        .json();
    let text = appt.to_string();
    assert!(
        text.contains("\"bfi\"") && text.contains("Patient transport service"),
        "{text}"
    );
    assert!(
        !text.contains("Wheelchair"),
        "the whole set is replaced: {text}"
    );
    assert_eq!(appt["meta"]["versionId"], "2");

    // The provider accepts the booked referral: still booked, review recorded.
    let sr_v = v(&w.referral_now(&id).await);
    let accept = format!("ServiceRequest/{id}/$ers.acceptReferral");
    w.rc("POST", &accept, Some(sr_v), Some(&params(&[])))
        .await
        .assert_outcome(403, "forbidden");
    let r = w
        .send_as(
            provider,
            "POST",
            &accept,
            Some(sr_v),
            Some(&params(&[("comment", "Seen the letter")])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state(&r.json()), "BOOKED");
    assert!(r.text().contains("ACCEPTED"), "{}", r.text());
    // Cancel appointment, action later: the comment is required; the slot is released and the
    // appointment goes back to proposed for the provider to book.
    let sr_v = v(&r.json());
    let caal = format!("ServiceRequest/{id}/$ers.cancelAppointmentActionLater");
    w.send_as(provider, "POST", &caal, Some(sr_v), Some(&params(&[])))
        .await
        .assert_outcome(422, "required");
    let r = w
        .send_as(
            provider,
            "POST",
            &caal,
            Some(sr_v),
            Some(&params(&[("comment", "Clinic moved; will rebook")])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state(&r.json()), "TRIAGED_PROVIDER_TO_ACTION");
    assert_eq!(w.slot_status(&slots[0].0).await, "free");
    let appt = w
        .rc("GET", &format!("Appointment/{appt_id}"), None, None)
        .await
        .json();
    assert_eq!(appt["status"], "proposed");
    assert!(appt.get("slot").is_none(), "{appt}");
    // It is on the provider's Appointments for Booking list (not the referrer's to ask for)
    // until it is booked again.
    let for_booking = "ServiceRequest/$ers.worklist?listType=APPOINTMENTS_FOR_BOOKING";
    let listed = w.send_as(provider, "GET", for_booking, None, None).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(match_ids(&listed.json()).contains(&id), "{}", listed.text());
    w.rc("GET", for_booking, None, None)
        .await
        .assert_outcome(422, "business-rule");
    // The provider's Task is the appointment's to arrange, from the moment it was put back.
    let t = &w.deferral_task(&id).await;
    assert_eq!(
        t["code"]["coding"][0]["code"], "APPOINTMENT_DEFERRAL",
        "{t}"
    );
    assert_eq!(t["authoredOn"], r.json()["meta"]["lastUpdated"], "{t}");
    // The provider books again; the referral holds both appointments, one current.
    let r = w.provider_books(&c, &id, &slots[1].0).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.text().contains("\"bfi\""),
        "requirements carried: {}",
        r.text()
    );
    let b = w
        .rc(
            "GET",
            &format!("ServiceRequest?_id={id}&_revinclude=Appointment:based-on"),
            None,
            None,
        )
        .await
        .json();
    let statuses: Vec<&str> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Appointment")
        .filter_map(|e| e["resource"]["status"].as_str())
        .collect();
    assert_eq!(statuses.len(), 2, "{b}");
    assert_eq!(
        statuses.iter().filter(|s| **s == "booked").count(),
        1,
        "{b}"
    );
    let listed = w.send_as(provider, "GET", for_booking, None, None).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(
        !match_ids(&listed.json()).contains(&id),
        "{}",
        listed.text()
    );
}

#[actix_web::test]
async fn an_indirectly_bookable_service_is_booked_with_its_times() {
    let w = world().await;
    let c = clinic(&w, "12000").await;
    // A copy of the service, indirectly bookable, made by its organisation's service definer.
    let mut svc = w
        .app
        .get(&format!("HealthcareService/{}", c.service))
        .await
        .json();
    let obj = svc.as_object_mut().expect("object");
    obj.shift_remove("id");
    obj.shift_remove("meta");
    svc["identifier"] = json!([{"system": SERVICE_SYSTEM, "value": "12999"}]);
    let text = svc
        .to_string()
        .replace("DIRECTLY_BOOKABLE", "INDIRECTLY_BOOKABLE");
    let svc: Value = serde_json::from_str(&text).expect("json");
    let ibs = define(&w, &c, "HealthcareService", svc).await;
    let id = w.new_referral(&[&ibs, &c.service], "ROUTINE").await;
    let at = |days: i64, h: u32| {
        (chrono::Utc::now() + chrono::Duration::days(days))
            .format(&format!("%Y-%m-%dT{h:02}:00:00Z"))
            .to_string()
    };
    let booking = |service: &str, start: String, end: String| {
        json!({
            "resourceType": "Appointment",
            "status": "booked",
            "basedOn": [{"reference": format!("ServiceRequest/{id}")}],
            "start": start,
            "end": end,
            "participant": [
                {"actor": {"reference": format!("Patient/{}", w.patient)}, "status": "accepted"},
                {"actor": {"reference": format!("HealthcareService/{service}")}, "status": "accepted"}],
        })
    };
    // A directly bookable service is booked through a slot.
    let r = w
        .rc(
            "POST",
            "Appointment",
            None,
            Some(&booking(&c.service, at(3, 9), at(3, 10))),
        )
        .await;
    r.assert_outcome(422, "required");
    assert!(r.text().contains("directly bookable"), "{}", r.text());
    // Times in the past, or the wrong way round.
    w.rc(
        "POST",
        "Appointment",
        None,
        Some(&booking(&ibs, at(-3, 9), at(-3, 10))),
    )
    .await
    .assert_outcome(422, "value");
    w.rc(
        "POST",
        "Appointment",
        None,
        Some(&booking(&ibs, at(3, 10), at(3, 9))),
    )
    .await
    .assert_outcome(422, "value");
    // A slot of it (a schedule its definer gave it) is not how it is booked.
    let schedule = define(
        &w,
        &c,
        "Schedule",
        json!({"resourceType": "Schedule", "active": true, "actor": [{"reference": format!("HealthcareService/{ibs}")}]}),
    )
    .await;
    let slot = define(&w, &c, "Slot", routine_slot(&schedule, 3)).await;
    let r = w.book(&id, &slot).await;
    let d = r.assert_outcome(422, "business-rule");
    r.assert_issue("INAPPROPRIATE_VALUE", "Appointment.slot[0]");
    assert!(d.contains("indirectly bookable"), "{d}");
    assert_eq!(w.slot_status(&slot).await, "free");
    let r = w
        .rc(
            "POST",
            "Appointment",
            None,
            Some(&booking(&ibs, at(3, 9), at(3, 10))),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let a = r.json();
    assert!(a.get("slot").is_none(), "{a}");
    assert_eq!(a["start"], at(3, 9));
    assert_eq!(state(&w.referral_now(&id).await), "BOOKED");
}

#[actix_web::test]
async fn the_sandbox_holds_the_nhs_sandbox_appointments() {
    let w = world().await;
    let expected = [
        ("70000", "booked", "000000070001"),
        ("70001", "booked", "000000070002"),
        ("70002", "proposed", "000000070003"),
        ("70003", "cancelled", "000000070013"),
        ("70004", "cancelled", "000000070014"),
        ("70005", "noshow", "000000070015"),
        ("70006", "cancelled", "000000070008"),
        ("70007", "cancelled", "000000070009"),
    ];
    for (id, status, ubrn) in expected {
        let r = w.rc("GET", &format!("Appointment/{id}"), None, None).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        let a = r.json();
        assert_eq!(a["status"], status, "{id}");
        // Its referral is the sandbox UBRN, and searching by it finds the appointment.
        let b = w
            .rc(
                "GET",
                &format!(
                    "Appointment?based-on:ServiceRequest.identifier=https://fhir.nhs.uk/Id/UBRN|{ubrn}"
                ),
                None,
                None,
            )
            .await
            .json();
        assert!(
            b.to_string().contains(&format!("\"id\":\"{id}\"")),
            "{ubrn}: {b}"
        );
    }
    // The directly booked one holds a busy slot; the referral is BOOKED.
    let a = w.rc("GET", "Appointment/70000", None, None).await.json();
    let slot = a["slot"][0]["reference"].as_str().expect("slot").to_owned();
    assert_eq!(w.app.get(&slot).await.json()["status"], "busy");
    let sr = w
        .rc(
            "GET",
            a["basedOn"][0]["reference"].as_str().expect("referral"),
            None,
            None,
        )
        .await
        .json();
    assert_eq!(state(&sr), "BOOKED");
    let a = w.rc("GET", "Appointment/70001", None, None).await.json();
    assert!(a.get("slot").is_none() && a.get("start").is_some(), "{a}");
    // Referrals 000000070000 and 000000070001 carry their referral letters.
    let b = w
        .rc(
            "GET",
            "ServiceRequest?identifier=https://fhir.nhs.uk/Id/UBRN|000000070000",
            None,
            None,
        )
        .await
        .json();
    let sr = &b["entry"][0]["resource"];
    assert!(
        sr["supportingInfo"]
            .to_string()
            .contains("DocumentReference/"),
        "{sr}"
    );
    let r = w.rc("GET", "Binary/att-70000-70001", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.starts_with(b"%PDF"));
}

/// The text of every page of a PDF answer, each page checked to carry `on_every_page`.
fn pdf_text(r: &Reply, on_every_page: &str) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("application/pdf"));
    let doc = lopdf::Document::load_mem(&r.body).expect("a readable PDF");
    let mut all = String::new();
    for p in doc.get_pages().keys() {
        let text = doc.extract_text(&[*p]).expect("page text");
        assert!(text.contains(on_every_page), "page {p}: {text}");
        all.push_str(&text);
    }
    all.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[actix_web::test]
async fn a_referral_prints_its_information_and_the_patients_letter() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let id = w.new_referral(&[&c.service], "ROUTINE").await;
    let referral = w.referral_now(&id).await;
    let ubrn = referral["identifier"][0]["value"]
        .as_str()
        .expect("ubrn")
        .to_owned();
    let spaced = format!("{} {} {}", &ubrn[..4], &ubrn[4..8], &ubrn[8..]);
    let service = w
        .app
        .get(&format!("HealthcareService/{}", c.service))
        .await
        .json();
    let service_name = service["name"].as_str().expect("name").to_owned();
    let family = w.app.get(&format!("Patient/{}", w.patient)).await.json()["name"][0]["family"]
        .as_str()
        .expect("family")
        .to_owned();
    let get = |path: String, accept: &'static str| {
        w.app.send(
            w.as_rc("GET", &path).insert_header(("Accept", accept)),
            None,
        )
    };
    let letter = format!("ServiceRequest/{id}/$ers.generatePatientLetter");
    let cri = format!("ServiceRequest/{id}/$ers.generateCRI");

    // Not yet booked: the letter gives the UBRN and the services to book with.
    let text = pdf_text(&get(letter.clone(), "application/pdf").await, &spaced);
    for said in [
        family.as_str(),
        "Book your appointment",
        service_name.as_str(),
    ] {
        assert!(text.contains(said), "{said} missing from: {text}");
    }
    // Booked: when and where.
    let (slot, start) = free_slots(&w, &c.service, "ROUTINE").await[0].clone();
    let r = w.book(&id, &slot).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let appointment = r.json()["id"].as_str().expect("id").to_owned();
    let text = pdf_text(&get(letter.clone(), "*/*").await, &spaced);
    // The day as a patient reads it (the slots are at 10:00 UTC: the same day in the UK).
    let day = chrono::DateTime::parse_from_rfc3339(&start)
        .expect("start")
        .format("%-d %B %Y")
        .to_string();
    for said in [
        "Your appointment is booked",
        day.as_str(),
        service_name.as_str(),
    ] {
        assert!(text.contains(said), "{said} missing from: {text}");
    }
    assert!(!text.contains("Book your appointment"), "{text}");

    // The clinical referral information: a PDF with the UBRN on every page and each state
    // change with who made it, or a Bundle of what it shows.
    let text = pdf_text(&get(cri.clone(), "application/pdf").await, &ubrn);
    for said in [
        "Clinical referral information",
        "(REFERRING_CLINICIAN)",
        "(R69)",
        "NOT_BOOKED by REFERRING_CLINICIAN@R69",
        "BOOKED by REFERRING_CLINICIAN@R69",
        appointment.as_str(),
        service_name.as_str(),
    ] {
        assert!(text.contains(said), "{said} missing from: {text}");
    }
    let r = get(cri.clone(), "application/fhir+json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["type"], "collection");
    assert_entries(
        &b,
        &[
            format!("ServiceRequest/{id}"),
            format!("Patient/{}", w.patient),
            format!("HealthcareService/{}", c.service),
            format!("Appointment/{appointment}"),
        ],
    );
    // The provider reads the information, but the letter is the referrer's to give; it is a
    // PDF or nothing; another organisation finds no referral.
    let as_provider = |path: &str| {
        w.app
            .as_user(
                &c.provider,
                "GET",
                path,
                "SERVICE_PROVIDER_CLINICIAN",
                &c.ods,
            )
            .insert_header(("Accept", "application/pdf"))
    };
    pdf_text(&w.app.send(as_provider(&cri), None).await, &ubrn);
    w.app
        .send(as_provider(&letter), None)
        .await
        .assert_outcome(403, "forbidden");
    get(letter.clone(), "application/fhir+json")
        .await
        .assert_outcome(406, "not-supported");
    let stranger = sign(&claims("021600556599", &[("REFERRING_CLINICIAN", "R68")]));
    w.app
        .send(
            w.app
                .as_user(&stranger, "GET", &letter, "REFERRING_CLINICIAN", "R68"),
            None,
        )
        .await
        .assert_outcome(404, "not-found");
    // Deferred to the provider: the service will be in touch; nothing to book.
    let deferred = w.new_referral(&[&c.service], "ROUTINE").await;
    let r = w
        .rc(
            "POST",
            "Appointment",
            None,
            Some(&json!({
                "resourceType": "Appointment",
                "status": "proposed",
                "basedOn": [{"reference": format!("ServiceRequest/{deferred}")}],
                "reasonCode": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReviewReason", "code": "BOOKING_ATTEMPT_PROBLEM"}]}],
                "participant": [{"actor": {"reference": format!("HealthcareService/{}", c.service)}, "status": "needs-action"}],
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let letter_of = |id: &str| format!("ServiceRequest/{id}/$ers.generatePatientLetter");
    let text = pdf_text(&get(letter_of(&deferred), "*/*").await, "UBRN");
    // By the date its provider's Task gives.
    let contact_by = async |id: &str| {
        let t = w.deferral_task(id).await;
        let day = t["restriction"]["period"]["end"]
            .as_str()
            .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .unwrap_or_else(|| panic!("no contact-by date: {t}"));
        format!("by {}", day.format("%A %-d %B %Y"))
    };
    let by = contact_by(&deferred).await;
    let arrange = format!("will contact you {by} to arrange");
    for said in [arrange.as_str(), service_name.as_str()] {
        assert!(text.contains(said), "{said} missing from: {text}");
    }
    assert!(!text.contains("Book your appointment"), "{text}");
    // Sent for triage: a clinician reviews it; then cancelled: nothing more to do.
    let triaged = w.new_referral(&[&w.triage], "ROUTINE").await;
    let r = w
        .op(
            false,
            &triaged,
            "$ers.sendForTriage",
            Some(1),
            &[("service", &w.triage)],
        )
        .await;
    assert_eq!(state(&r.json()), "AWAITING_TRIAGE", "{}", r.text());
    let text = pdf_text(&get(letter_of(&triaged), "*/*").await, "UBRN");
    assert!(text.contains("being reviewed by a clinician"), "{text}");
    let by = contact_by(&triaged).await;
    assert!(
        text.contains(&format!("contacted {by}")),
        "{by} missing from: {text}"
    );
    assert!(!text.contains("Book your appointment"), "{text}");
    let r = w
        .op(
            false,
            &triaged,
            "$ers.cancelReferral",
            Some(2),
            &[("reason", "RAISED_IN_ERROR"), ("comment", "Wrong patient")],
        )
        .await;
    assert_eq!(state(&r.json()), "CANCELLED_REFERRAL", "{}", r.text());
    let text = pdf_text(&get(letter_of(&triaged), "*/*").await, "UBRN");
    assert!(text.contains("This referral has been cancelled"), "{text}");
    assert!(!text.contains("being reviewed"), "{text}");

    // Both reads are audited.
    let events = auditor_search(&w.app, &format!("entity=ServiceRequest/{id}&_count=100")).await;
    let r = events.to_string();
    for what in ["patient letter", "clinical referral information"] {
        assert!(r.contains(what), "{what} not audited: {r}");
    }
}

/// As the clinic's service definer, changes a Directory of Services resource (`path`) by
/// `change`.
async fn redefine(w: &World, c: &Clinic, path: &str, change: impl Fn(&mut Value)) {
    let mut body = w.app.get(path).await.json();
    change(&mut body);
    let r = as_definer(w, c, "PUT", path, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[actix_web::test]
async fn a_slot_or_service_the_directory_no_longer_offers_is_not_booked() {
    let w = world().await;
    let c = clinic(&w, "11000").await;
    let service = format!("HealthcareService/{}", c.service);
    let schedule = define(
        &w,
        &c,
        "Schedule",
        json!({"resourceType": "Schedule", "active": true, "actor": [{"reference": service}]}),
    )
    .await;
    let slot = define(&w, &c, "Slot", routine_slot(&schedule, 3)).await;
    let id = w.new_referral(&[&c.service], "ROUTINE").await;
    let schedule_path = format!("Schedule/{schedule}");

    // Its schedule made inactive: the slot is no longer offered, and not booked. It keeps its
    // status; a slot search leaves it out with `schedule.active:not=false` (which keeps the
    // slots of schedules that do not say).
    let offered = format!(
        "Slot?schedule.actor=HealthcareService/{}&status=free&schedule.active:not=false&_count=100",
        c.service
    );
    let silent = define(
        &w,
        &c,
        "Schedule",
        json!({"resourceType": "Schedule", "actor": [{"reference": service}]}),
    )
    .await;
    let silent_slot = define(&w, &c, "Slot", routine_slot(&silent, 4)).await;
    let found = match_ids(&w.app.search(&offered).await);
    assert!(
        found.contains(&slot) && found.contains(&silent_slot),
        "{found:?}"
    );
    redefine(&w, &c, &schedule_path, |s| s["active"] = json!(false)).await;
    let found = match_ids(&w.app.search(&offered).await);
    assert!(
        !found.contains(&slot) && found.contains(&silent_slot),
        "{found:?}"
    );
    assert!(free_slots(&w, &c.service, "ROUTINE")
        .await
        .iter()
        .any(|(id, _)| *id == slot));
    let r = w.book(&id, &slot).await;
    let d = r.assert_outcome(409, "conflict");
    r.assert_issue("SLOT_NOT_AVAILABLE", "Appointment.slot[0]");
    assert!(d.contains(&schedule_path) && d.contains("inactive"), "{d}");
    assert_eq!(w.slot_status(&slot).await, "free");
    assert_eq!(state(&w.referral_now(&id).await), "NOT_BOOKED");

    // The service made inactive: neither its slots nor a deferral to it.
    redefine(&w, &c, &schedule_path, |s| s["active"] = json!(true)).await;
    redefine(&w, &c, &service, |s| s["active"] = json!(false)).await;
    let r = w.book(&id, &slot).await;
    let d = r.assert_outcome(422, "business-rule");
    r.assert_issue("INAPPROPRIATE_VALUE", "Appointment.slot[0]");
    assert!(d.contains(&service) && d.contains("not active"), "{d}");
    let deferral = json!({
        "resourceType": "Appointment",
        "status": "proposed",
        "basedOn": [{"reference": format!("ServiceRequest/{id}")}],
        "reasonCode": [{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ReviewReason", "code": "NO_SLOTS_AT_SERVICE"}]}],
        "participant": [{"actor": {"reference": service}, "status": "needs-action"}],
    });
    let r = w.rc("POST", "Appointment", None, Some(&deferral)).await;
    let d = r.assert_outcome(422, "business-rule");
    r.assert_issue("INAPPROPRIATE_VALUE", "Appointment.participant");
    assert!(d.contains("not active"), "{d}");

    // Active again, but commissioned by QZS alone: a referral of Hannah's practice (R69, part
    // of QZN) may no longer use it.
    redefine(&w, &c, &service, |s| {
        s["active"] = json!(true);
        let mut extensions = s["extension"].as_array().cloned().unwrap_or_default();
        extensions.push(json!({"url": COMMISSIONED_BY,
            "valueIdentifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "QZS"}}));
        s["extension"] = json!(extensions);
    })
    .await;
    let r = w.book(&id, &slot).await;
    let d = r.assert_outcome(422, "business-rule");
    r.assert_issue("SHORTLISTED_SERVICE_NOT_IN_RESULTS", "Appointment.slot[0]");
    assert!(d.contains("QZN") && d.contains("QZS"), "{d}");
    assert_eq!(w.slot_status(&slot).await, "free");

    // Open to every commissioner again: booked.
    redefine(&w, &c, &service, |s| {
        let extensions = s["extension"].as_array_mut().expect("extensions");
        extensions.retain(|e| e["url"] != COMMISSIONED_BY);
        if extensions.is_empty() {
            s.as_object_mut()
                .expect("service")
                .shift_remove("extension");
        }
    })
    .await;
    let r = w.book(&id, &slot).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(w.slot_status(&slot).await, "busy");

    // A change of slot reads the directory too: the other schedule made inactive, its slot is
    // not taken, and the appointment keeps its own.
    let appointment = r.json()["id"].as_str().expect("id").to_owned();
    redefine(&w, &c, &format!("Schedule/{silent}"), |s| {
        s["active"] = json!(false)
    })
    .await;
    let r = w
        .rc(
            "POST",
            &format!("Appointment/{appointment}/$ers.changeAppointment"),
            Some(1),
            Some(&json!({"resourceType": "Parameters", "parameter": [
                {"name": "slot", "valueReference": {"reference": format!("Slot/{silent_slot}")}}]})),
        )
        .await;
    let d = r.assert_outcome(409, "conflict");
    assert!(d.contains(&format!("Schedule/{silent}")), "{d}");
    assert_eq!(w.slot_status(&silent_slot).await, "free");
    assert_eq!(w.slot_status(&slot).await, "busy");
}

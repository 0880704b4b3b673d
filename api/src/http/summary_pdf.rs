//! The printed documents as PDFs (pdf-writer): the advice summary, a referral's clinical
//! referral information and the patient's letter. A4 pages of wrapped text in the standard
//! Courier fonts (no font files to ship), the UBRN (and NHS number) in every page's header,
//! page numbers in the footer. Text outside Latin-1 is shown as '?'.

use crate::fhir::At;
use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str, TextStr};
use serde_json::Value;

use crate::fhir::resources::advice as ag;
use crate::fhir::resources::document_reference as docs;
use crate::fhir::resources::service_request as sr;
use crate::service::advice::Summary;
use crate::service::letters::ReferralInformation;

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;
const MARGIN: f32 = 50.0;
const SIZE: f32 = 10.0;
const LEADING: f32 = 13.0;
/// Courier is 0.6 em wide.
const COLUMNS: usize = ((WIDTH - 2.0 * MARGIN) / (SIZE * 0.6)) as usize;
/// Body lines per page, below the two header lines.
const LINES: usize = ((HEIGHT - 2.0 * MARGIN - 3.0 * LEADING) / LEADING) as usize;

#[derive(Clone)]
struct Line {
    bold: bool,
    text: String,
}

/// Wraps a paragraph at word boundaries (long words are cut).
fn wrap(text: &str, indent: usize, out: &mut Vec<Line>, bold: bool) {
    let width = COLUMNS - indent;
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            let mut word: Vec<char> = word.chars().collect();
            while word.len() > width {
                if !line.is_empty() {
                    out.push(Line {
                        bold,
                        text: format!("{}{line}", " ".repeat(indent)),
                    });
                    line.clear();
                }
                let rest = word.split_off(width);
                out.push(Line {
                    bold,
                    text: format!("{}{}", " ".repeat(indent), word.iter().collect::<String>()),
                });
                word = rest;
            }
            let word: String = word.into_iter().collect();
            if line.chars().count() + word.chars().count() + usize::from(!line.is_empty()) > width {
                out.push(Line {
                    bold,
                    text: format!("{}{line}", " ".repeat(indent)),
                });
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        out.push(Line {
            bold,
            text: format!("{}{line}", " ".repeat(indent)),
        });
    }
}

/// WinAnsi bytes of the text: Latin-1 as is, anything else '?'.
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match u32::from(c) {
            n @ (0x20..=0x7e | 0xa0..=0xff) => u8::try_from(n).unwrap_or(b'?'),
            _ => b'?',
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.at(pointer).and_then(Value::as_str).unwrap_or("")
}

fn nhs_number(patient: Option<&Value>) -> String {
    patient
        .and_then(crate::service::audit::nhs_number_of)
        .map(|n| {
            if n.len() == 10 {
                format!("{} {} {}", &n[..3], &n[3..6], &n[6..])
            } else {
                n
            }
        })
        .unwrap_or_else(|| "unknown".into())
}

fn person_name(p: &Value) -> String {
    let name = p.at("/name/0");
    let given = name
        .and_then(|n| n.get("given"))
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let family = name
        .and_then(|n| n.get("family"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("{given} {family}").trim().to_owned()
}

/// A practitioner as a letter names them: prefix, given names and family name.
fn practitioner_name(p: &Value) -> String {
    let prefix = p
        .at("/name/0/prefix/0")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("{prefix} {}", person_name(p)).trim().to_owned()
}

fn body_lines(s: &Summary) -> Vec<Line> {
    let r = &s.request;
    let mut out = opening("Advice and guidance summary", s.patient.as_ref(), r);
    let mut say = |text: String, bold: bool, indent: usize| wrap(&text, indent, &mut out, bold);
    if let Some(service) = &s.service {
        say(
            format!(
                "Advice service: {} ({})",
                str_at(service, "/name"),
                str_at(r, "/performer/0/reference")
            ),
            false,
            0,
        );
    }
    say(
        format!(
            "Requested: {} by {}",
            str_at(r, "/authoredOn"),
            str_at(r, "/requester/reference")
        ),
        false,
        0,
    );
    say(
        format!(
            "Priority: {}    Conversion: {}",
            sr::ers_priority(r).unwrap_or_default(),
            ag::conversion(r).unwrap_or_default()
        ),
        false,
        0,
    );
    say(
        format!(
            "Status: {}",
            ag::status_of(r).map(|x| x.code()).unwrap_or_default()
        ),
        false,
        0,
    );
    if let Some(referral) = &s.referral {
        say(
            format!(
                "Converted into referral ServiceRequest/{} (same UBRN) on {}",
                str_at(referral, "/id"),
                str_at(referral, "/authoredOn")
            ),
            false,
            0,
        );
    }
    say(String::new(), false, 0);
    say(
        format!("Conversation ({} messages, oldest first)", s.messages.len()),
        true,
        0,
    );
    for (i, m) in s.messages.iter().enumerate() {
        say(String::new(), false, 0);
        let (outcome, recommendation) = ag::reply_outcome(m);
        let mut head = format!(
            "{}. {} {} (from {})",
            i + 1,
            str_at(m, "/sent"),
            ag::sent_by(m).unwrap_or_default(),
            str_at(m, "/sender/reference")
        );
        if let Some(o) = outcome {
            head.push_str(&format!(" - {o}"));
        }
        if let Some(rec) = recommendation {
            head.push_str(&format!(", recommendation {rec}"));
        }
        say(head, true, 0);
        say(ag::text(m), false, 3);
        let attached: Vec<&str> = m
            .get("payload")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.at("/contentReference/reference").and_then(Value::as_str))
            .collect();
        if !attached.is_empty() {
            say(format!("Attached: {}", attached.join(", ")), false, 3);
        }
    }
    say(String::new(), false, 0);
    attachments(&s.documents, &mut out);
    out
}

/// The attachments' titles, types, sizes and kinds (not the files).
fn attachments(documents: &[Value], out: &mut Vec<Line>) {
    wrap(&format!("Attachments ({})", documents.len()), 0, out, true);
    for d in documents {
        wrap(
            &format!(
                "- DocumentReference/{}: {} ({}, {} bytes, {})",
                str_at(d, "/id"),
                str_at(d, "/content/0/attachment/title"),
                str_at(d, "/content/0/attachment/contentType"),
                d.at("/content/0/attachment/size")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                docs::kind(d).unwrap_or_default()
            ),
            0,
            out,
            false,
        );
    }
}

/// A printed document's first lines: its title, the patient and the UBRN.
fn opening(title: &str, patient: Option<&Value>, request: &Value) -> Vec<Line> {
    let mut out = Vec::new();
    wrap(title, 0, &mut out, true);
    wrap("", 0, &mut out, false);
    if let Some(p) = patient {
        wrap(
            &format!(
                "Patient: {}, born {}, NHS number {}",
                person_name(p),
                str_at(p, "/birthDate"),
                nhs_number(Some(p))
            ),
            0,
            &mut out,
            false,
        );
    }
    wrap(
        &format!("UBRN: {}", sr::ubrn_of(request).unwrap_or_default()),
        0,
        &mut out,
        false,
    );
    out
}

/// Renders the advice summary.
pub fn render(s: &Summary) -> Vec<u8> {
    let ubrn = sr::ubrn_of(&s.request).unwrap_or_default();
    document(
        &format!("Advice and guidance summary, UBRN {ubrn}"),
        &format!(
            "e-RS advice and guidance - UBRN {ubrn} - NHS number {}",
            nhs_number(s.patient.as_ref())
        ),
        &body_lines(s),
    )
}

/// Renders a referral's clinical referral information (e-RS A007).
pub fn render_referral(info: &ReferralInformation) -> Vec<u8> {
    let ubrn = sr::ubrn_of(&info.referral).unwrap_or_default();
    document(
        &format!("Clinical referral information, UBRN {ubrn}"),
        &format!(
            "e-RS referral - UBRN {ubrn} - NHS number {}",
            nhs_number(info.patient.as_ref())
        ),
        &referral_lines(info),
    )
}

/// Renders the letter for the referral's patient (e-RS A019).
pub fn render_letter(info: &ReferralInformation) -> Vec<u8> {
    let ubrn = sr::ubrn_of(&info.referral).unwrap_or_default();
    document(
        &format!("Your NHS e-Referral, UBRN {ubrn}"),
        &format!(
            "NHS e-Referral Service - your booking reference {}",
            spaced_ubrn(ubrn)
        ),
        &letter_lines(info),
    )
}

/// An instant as a patient reads it: the day, date and time in the UK (`Friday 11 December
/// 2026 at 2:00pm GMT`), or as written if it is not one.
fn uk_time(instant: &str) -> String {
    let Some((utc, _)) = crate::fhir::datetime::range(instant) else {
        return instant.to_owned();
    };
    match crate::fhir::datetime::in_uk(utc) {
        Some(local) => {
            let hour = local.hour();
            let (h12, half) = match hour {
                0 => (12, "am"),
                1..=11 => (hour, "am"),
                12 => (12, "pm"),
                _ => (hour - 12, "pm"),
            };
            format!(
                "{} at {h12}:{:02}{half} {}",
                local.strftime("%A %-d %B %Y"),
                local.minute(),
                local.strftime("%Z")
            )
        }
        None => format!("{} UTC", utc.format("%A %-d %B %Y at %H:%M")),
    }
}

/// A UBRN in groups of four, as patients are given it.
fn spaced_ubrn(ubrn: &str) -> String {
    ubrn.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A4 pages of `lines` under `header`, numbered in the footer.
fn document(title: &str, header: &str, lines: &[Line]) -> Vec<u8> {
    let pages: Vec<&[Line]> = lines.chunks(LINES.max(1)).collect();
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let first = 6;
    let page_ref = |i: usize| Ref::new(first + 2 * i32::try_from(i).unwrap_or(0));
    let content_ref = |i: usize| Ref::new(first + 1 + 2 * i32::try_from(i).unwrap_or(0));
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..pages.len()).map(page_ref))
        .count(i32::try_from(pages.len()).unwrap_or(i32::MAX));
    pdf.type1_font(regular)
        .base_font(Name(b"Courier"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Courier-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr(title))
        .producer(TextStr("ers-fhir"));
    for (i, page_lines) in pages.iter().enumerate() {
        let mut page = pdf.page(page_ref(i));
        page.media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT))
            .parent(tree)
            .contents(content_ref(i));
        page.resources()
            .fonts()
            .pair(Name(b"F1"), regular)
            .pair(Name(b"F2"), bold);
        drop(page);
        let mut content = Content::new();
        content.begin_text();
        content.set_font(Name(b"F2"), SIZE);
        content.next_line(MARGIN, HEIGHT - MARGIN);
        content.show(Str(&latin1(header)));
        content.set_font(Name(b"F1"), SIZE);
        for line in page_lines.iter() {
            content.next_line(0.0, -LEADING);
            if line.bold {
                content.set_font(Name(b"F2"), SIZE);
            }
            content.show(Str(&latin1(&line.text)));
            if line.bold {
                content.set_font(Name(b"F1"), SIZE);
            }
        }
        content.end_text();
        content.begin_text();
        content.set_font(Name(b"F1"), SIZE - 2.0);
        content.next_line(MARGIN, MARGIN / 2.0);
        content.show(Str(&latin1(&format!(
            "{header} - page {} of {}",
            i + 1,
            pages.len()
        ))));
        content.end_text();
        pdf.stream(content_ref(i), &content.finish());
    }
    pdf.finish()
}

/// A service by name and id.
fn service_line(service: &Value) -> String {
    format!(
        "{} (HealthcareService/{})",
        str_at(service, "/name"),
        str_at(service, "/id")
    )
}

/// A Location's address (one), or a Patient's first (of several), after its name if it has one.
fn address(location: &Value) -> String {
    let a = location.get("address").map(|a| a.get(0).unwrap_or(a));
    let lines: Vec<&str> = a
        .and_then(|a| a.get("line"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .chain(
            ["/city", "/postalCode"]
                .iter()
                .filter_map(|p| a.and_then(|a| a.at(p)).and_then(Value::as_str)),
        )
        .filter(|s| !s.is_empty())
        .collect();
    let name = str_at(location, "/name");
    match (name.is_empty(), lines.is_empty()) {
        (false, false) => format!("{name}, {}", lines.join(", ")),
        (false, true) => name.to_owned(),
        _ => lines.join(", "),
    }
}

fn state_of(r: &Value) -> String {
    sr::state_of(r)
        .map(|s| s.state.code().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn referral_lines(info: &ReferralInformation) -> Vec<Line> {
    let r = &info.referral;
    let mut out = opening("Clinical referral information", info.patient.as_ref(), r);
    let mut say = |text: String, bold: bool, indent: usize| wrap(&text, indent, &mut out, bold);
    let role = info
        .requester
        .as_ref()
        .and_then(|q| q.at("/code/0/coding/0/code"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let who = match &info.referrer {
        Some(p) => format!("{} ({role})", practitioner_name(p)),
        None => str_at(r, "/requester/reference").to_owned(),
    };
    let at = info
        .referring_organisation
        .as_ref()
        .map(|o| {
            format!(
                ", {} ({})",
                str_at(o, "/name"),
                str_at(o, "/identifier/0/value")
            )
        })
        .unwrap_or_default();
    say(
        format!("Referred: {} by {who}{at}", str_at(r, "/authoredOn")),
        false,
        0,
    );
    say(
        format!(
            "Priority: {}    State: {}",
            sr::ers_priority(r).unwrap_or_default(),
            state_of(r)
        ),
        false,
        0,
    );
    let reasons: Vec<&str> = r
        .get("reasonCode")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.get("text")
                .and_then(Value::as_str)
                .or_else(|| c.at("/coding/0/display").and_then(Value::as_str))
        })
        .collect();
    if !reasons.is_empty() {
        say(format!("Reason: {}", reasons.join("; ")), false, 0);
    }
    for note in r
        .get("note")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        say(format!("Note: {}", str_at(note, "/text")), false, 0);
    }
    say(String::new(), false, 0);
    say(
        format!("Shortlist ({} services)", info.services.len()),
        true,
        0,
    );
    for s in &info.services {
        say(format!("- {}", service_line(s)), false, 0);
    }
    say(String::new(), false, 0);
    match &info.appointment {
        Some(a) => {
            say("Appointment".into(), true, 0);
            say(
                format!(
                    "Appointment/{}: {} {} to {}",
                    str_at(a, "/id"),
                    str_at(a, "/status"),
                    str_at(a, "/start"),
                    str_at(a, "/end")
                ),
                false,
                0,
            );
            if let Some(l) = &info.location {
                say(format!("At: {}", address(l)), false, 3);
            }
        }
        None => say("Appointment: none".into(), true, 0),
    }
    say(String::new(), false, 0);
    attachments(&info.documents, &mut out);
    wrap("", 0, &mut out, false);
    wrap("Activity (oldest first)", 0, &mut out, true);
    let mut say = |text: String, bold: bool, indent: usize| wrap(&text, indent, &mut out, bold);
    for h in &info.history {
        let mut line = format!("{} {} by {}", h.at, h.state, h.by);
        if let Some(reason) = &h.reason {
            line.push_str(&format!(", reason {reason}"));
        }
        say(line, false, 0);
        if let Some(c) = &h.comment {
            say(c.clone(), false, 3);
        }
    }
    if let Some(advice) = &info.advice {
        wrap("", 0, &mut out, false);
        wrap(
            "The advice and guidance this referral came from",
            0,
            &mut out,
            true,
        );
        out.extend(body_lines(advice));
    }
    out
}

/// ` by Monday 21 December 2026`: the day a deferred patient is to be contacted by, if any.
fn contact_by(info: &ReferralInformation) -> String {
    info.pending
        .as_ref()
        .map(|p| format!(" by {}", p.contact_by.format("%A %-d %B %Y")))
        .unwrap_or_default()
}

fn letter_lines(info: &ReferralInformation) -> Vec<Line> {
    let r = &info.referral;
    let ubrn = spaced_ubrn(sr::ubrn_of(r).unwrap_or_default());
    let mut out = Vec::new();
    let mut say = |text: String, bold: bool| wrap(&text, 0, &mut out, bold);
    if let Some(p) = &info.patient {
        say(person_name(p), true);
        say(address(p), false);
        say(format!("NHS number {}", nhs_number(Some(p))), false);
    }
    say(String::new(), false);
    say(
        format!(
            "Date: {}",
            chrono::Utc::now().date_naive().format("%-d %B %Y")
        ),
        false,
    );
    say(String::new(), false);
    say("Your NHS e-Referral".into(), true);
    say(String::new(), false);
    say(
        format!("Your booking reference number (UBRN) is {ubrn}. Keep it: you need it whenever you book, change or ask about this referral."),
        false,
    );
    say(String::new(), false);
    let state = sr::state_of(r).map(|s| s.state);
    use crate::domain::referral::ReferralState as S;
    match (state, &info.appointment) {
        (Some(S::Booked), Some(a)) => {
            say("Your appointment is booked.".into(), true);
            say(format!("When: {}", uk_time(str_at(a, "/start"))), false);
            let with = crate::fhir::resources::appointment::actors(a, "HealthcareService");
            if let Some(s) = info
                .services
                .iter()
                .find(|s| with.contains(&format!("HealthcareService/{}", str_at(s, "/id"))))
            {
                say(format!("Service: {}", str_at(s, "/name")), false);
            }
            if let Some(l) = &info.location {
                say(format!("Where: {}", address(l)), false);
            }
            say(String::new(), false);
            say("If you need to change or cancel it, contact the service or your GP practice, giving your booking reference number.".into(), false);
        }
        (Some(S::DeferredToProvider), _) => {
            say(
                format!(
                    "The service will contact you{} to arrange your appointment.",
                    contact_by(info)
                ),
                true,
            );
            for s in &info.services {
                say(format!("Service: {}", str_at(s, "/name")), false);
            }
        }
        (
            Some(
                S::AwaitingTriage
                | S::TriageResponse
                | S::TriagedProviderToAction
                | S::AssessmentResult,
            ),
            _,
        ) => {
            say(format!("Your referral is being reviewed by a clinician, who will decide the right service for you. You will be contacted{} about what happens next.", contact_by(info)), false);
        }
        (Some(S::CancelledReferral), _) => {
            say("This referral has been cancelled. Contact your GP practice if you have questions about it.".into(), false);
        }
        _ => {
            say("Book your appointment with one of these services, online or by phone, giving your booking reference number:".into(), false);
            say(String::new(), false);
            for s in &info.services {
                say(format!("- {}", str_at(s, "/name")), false);
                let phone: Vec<&str> = s
                    .get("telecom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|t| str_at(t, "/system") == "phone")
                    .filter_map(|t| t.get("value").and_then(Value::as_str))
                    .collect();
                if !phone.is_empty() {
                    say(format!("  Telephone: {}", phone.join(", ")), false);
                }
            }
        }
    }
    say(String::new(), false);
    say(
        format!(
            "Priority: {}",
            sr::ers_priority(r)
                .unwrap_or_default()
                .to_lowercase()
                .replace('_', " ")
        ),
        false,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::uk_time;

    #[test]
    fn letter_times_are_uk_local() {
        assert_eq!(
            uk_time("2026-12-11T14:00:00Z"),
            "Friday 11 December 2026 at 2:00pm GMT"
        );
        // British Summer Time: an hour ahead of UTC.
        assert_eq!(
            uk_time("2027-06-01T08:30:00.000000Z"),
            "Tuesday 1 June 2027 at 9:30am BST"
        );
        assert_eq!(
            uk_time("2027-06-01T00:05:00+01:00"),
            "Tuesday 1 June 2027 at 12:05am BST"
        );
        assert_eq!(uk_time("soon"), "soon");
    }
}

//! The advice summary as a PDF (pdf-writer): A4 pages of wrapped text in the standard Courier
//! fonts (no font files to ship), the NHS number and UBRN in every page's header, page
//! numbers in the footer. Text outside Latin-1 is shown as '?'.

use crate::fhir::At;
use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str, TextStr};
use serde_json::Value;

use crate::fhir::resources::advice as ag;
use crate::fhir::resources::document_reference as docs;
use crate::fhir::resources::service_request as sr;
use crate::service::advice::Summary;

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

fn patient_name(p: &Value) -> String {
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

fn body_lines(s: &Summary) -> Vec<Line> {
    let r = &s.request;
    let mut out = Vec::new();
    let mut say = |text: String, bold: bool, indent: usize| wrap(&text, indent, &mut out, bold);
    say("Advice and guidance summary".into(), true, 0);
    say(String::new(), false, 0);
    if let Some(p) = &s.patient {
        say(
            format!(
                "Patient: {}, born {}, NHS number {}",
                patient_name(p),
                str_at(p, "/birthDate"),
                nhs_number(Some(p))
            ),
            false,
            0,
        );
    }
    say(
        format!("UBRN: {}", sr::ubrn_of(r).unwrap_or_default()),
        false,
        0,
    );
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
    say(format!("Attachments ({})", s.documents.len()), true, 0);
    for d in &s.documents {
        say(
            format!(
                "- DocumentReference/{}: {} ({}, {} bytes, {})",
                str_at(d, "/id"),
                str_at(d, "/content/0/attachment/title"),
                str_at(d, "/content/0/attachment/contentType"),
                d.at("/content/0/attachment/size")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                docs::kind(d).unwrap_or_default()
            ),
            false,
            0,
        );
    }
    out
}

/// Renders the summary.
pub fn render(s: &Summary) -> Vec<u8> {
    let lines = body_lines(s);
    let pages: Vec<&[Line]> = lines.chunks(LINES.max(1)).collect();
    let header = format!(
        "e-RS advice and guidance - UBRN {} - NHS number {}",
        sr::ubrn_of(&s.request).unwrap_or_default(),
        nhs_number(s.patient.as_ref())
    );
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
        .title(TextStr(&format!(
            "Advice and guidance summary, UBRN {}",
            sr::ubrn_of(&s.request).unwrap_or_default()
        )))
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
        content.show(Str(&latin1(&header)));
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

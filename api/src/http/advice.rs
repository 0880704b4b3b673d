//! Advice and guidance over HTTP: the conversation operations on
//! `ServiceRequest/{id}/$ers.…` (each with `If-Match` and a `Parameters` body) and the advice
//! summary (`$ers.generateCRI`: a PDF for `Accept: application/pdf`, else a FHIR Bundle).
//! Requests are created with `POST ServiceRequest` (see `referrals::create`).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::caller::author;
use super::handlers::{authorise, base_url, draft, if_match, on_conn, write_reply};
use super::negotiate::{self, Body};
use super::referrals::Inputs;
use super::ApiError;
use crate::domain::advice::{AdviceAction, GuidanceOutcome};
use crate::domain::Caller;
use crate::fhir::outcome::Issue;
use crate::fhir::parameters;
use crate::security::permissions::Action;
use crate::service::advice::{self as svc, AdviceChange, Said};
use crate::service::attachments::Attaching;
use crate::service::referral::Acting;
use crate::service::ServiceError;
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

/// The summary operation (e-RS "clinical referral information", here of an A&G request).
pub const SUMMARY: &str = "$ers.generateCRI";
/// The patient's letter about a referral (e-RS A019).
pub const PATIENT_LETTER: &str = "$ers.generatePatientLetter";

fn said(inputs: &Inputs) -> Result<Said, ApiError> {
    let titles = inputs.all("title");
    Ok(Said {
        text: inputs.one("text").unwrap_or_default(),
        attachments: inputs
            .all("attachment")
            .into_iter()
            .enumerate()
            .map(|(i, binary)| Attaching {
                binary,
                title: titles.get(i).cloned(),
            })
            .collect(),
    })
}

/// `POST ServiceRequest/{id}/$ers.{respondToAdviceRequest|sendFurtherInformation|…}`.
pub async fn operation(
    req: HttpRequest,
    id: String,
    action: AdviceAction,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let op = action.operation();
    authorise("Communication", Action::Read, &caller)?;
    let version = if_match(&req)?;
    let parsed = if body.is_empty() {
        json!({"resourceType": "Parameters"})
    } else {
        negotiate::parse_body(&req, &body)?
    };
    let inputs =
        Inputs(parameters::read(&parsed, op, action.parameters()).map_err(ApiError::Search)?);
    let change = match action {
        AdviceAction::Respond => {
            let code = inputs.required(
                "outcome",
                "REQUIRE_FURTHER_INFORMATION or RETURN_TO_REFERRER_WITH_ADVICE",
            )?;
            let outcome = GuidanceOutcome::parse(&code).ok_or_else(|| {
                ApiError::Service(ServiceError::Invalid(vec![Issue::error(
                    "code-invalid",
                    "INVALID_CODE",
                    format!("'outcome' ({code}) must be REQUIRE_FURTHER_INFORMATION or RETURN_TO_REFERRER_WITH_ADVICE"),
                )
                .with_expression("Parameters.parameter[outcome]")]))
            })?;
            AdviceChange::Respond {
                outcome,
                recommendation: inputs.one("recommendation"),
                said: said(&inputs)?,
            }
        }
        AdviceAction::SendFurtherInformation => AdviceChange::FurtherInformation(said(&inputs)?),
        AdviceAction::Close => AdviceChange::Close(inputs.one("text")),
        AdviceAction::Cancel => AdviceChange::Cancel(inputs.one("text")),
        AdviceAction::Convert => AdviceChange::Convert {
            said: said(&inputs)?,
            priority: inputs.required("priority", "ROUTINE, URGENT or TWO_WEEK_WAIT")?,
            comment: inputs.one("comment").unwrap_or_default(),
            service: inputs.one("service"),
        },
    };
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let applied = on_conn(&state, move |c| {
        svc::apply(
            c,
            &id,
            version,
            change,
            &Acting {
                caller: &caller,
                author: &who,
                audit: &d,
            },
        )
    })
    .await?;
    // A conversion answers with the referral it created.
    match applied.referral {
        Some(referral) => write_reply(&req, &state, StatusCode::CREATED, &referral),
        None => write_reply(&req, &state, StatusCode::OK, &applied.request),
    }
}

/// Whether the client asked for the PDF (`Accept` or `_format`).
fn wants_pdf(req: &HttpRequest) -> bool {
    let format = negotiate::query_param(req, "_format");
    if let Some(f) = format {
        return f == "pdf" || f == "application/pdf";
    }
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/pdf"))
}

/// `GET ServiceRequest/{id}/$ers.generateCRI`: an A&G request's whole conversation (e-RS
/// A043), or a referral's clinical referral information (A007); a PDF for
/// `Accept: application/pdf`, else a FHIR collection Bundle.
pub async fn summary(
    req: HttpRequest,
    id: String,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    use crate::service::letters::{self, Information};
    authorise("ServiceRequest", Action::Read, &caller)?;
    let pdf = wants_pdf(&req);
    if !pdf {
        negotiate::response_format(&req)?;
    }
    let base = base_url(&req, &state);
    let d = draft(&req, Some(&caller));
    let conversations = authorise("Communication", Action::Read, &caller).is_ok();
    let calendar = state.settings.working_days.clone();
    let info = on_conn(&state, move |c| {
        letters::clinical_information(c, &id, &caller, &d, conversations, &calendar)
    })
    .await?;
    let (ubrn, name, bytes, bundle) = match &info {
        Information::Advice(s) => (
            crate::fhir::resources::service_request::ubrn_of(&s.request),
            "advice-summary",
            pdf.then(|| super::summary_pdf::render(s)),
            (!pdf).then(|| bundle(&base, &advice_entries(s))),
        ),
        Information::Referral(r) => (
            crate::fhir::resources::service_request::ubrn_of(&r.referral),
            "referral-information",
            pdf.then(|| super::summary_pdf::render_referral(r)),
            (!pdf).then(|| bundle(&base, &referral_entries(r))),
        ),
    };
    if let Some(bytes) = bytes {
        return Ok(pdf_reply(
            &format!("{name}-{}", ubrn.unwrap_or("unknown")),
            bytes,
        ));
    }
    negotiate::respond(
        &req,
        StatusCode::OK,
        Body::Value(bundle.unwrap_or_default()),
    )
}

/// `GET ServiceRequest/{id}/$ers.generatePatientLetter` (e-RS A019): the letter the referrer
/// gives the patient, a PDF: their booking reference (UBRN), and their appointment, or how to
/// book one, or what happens next.
pub async fn patient_letter(
    req: HttpRequest,
    id: String,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("ServiceRequest", Action::Read, &caller)?;
    if !accepts_pdf(&req) {
        return Err(ApiError::NotAcceptable(
            "$ers.generatePatientLetter answers a PDF: accept application/pdf".into(),
        ));
    }
    let d = draft(&req, Some(&caller));
    let calendar = state.settings.working_days.clone();
    let info = on_conn(&state, move |c| {
        crate::service::letters::patient_letter(c, &id, &caller, &d, &calendar)
    })
    .await?;
    let ubrn = crate::fhir::resources::service_request::ubrn_of(&info.referral)
        .unwrap_or("unknown")
        .to_owned();
    Ok(pdf_reply(
        &format!("patient-letter-{ubrn}"),
        super::summary_pdf::render_letter(&info),
    ))
}

/// Whether the client takes a PDF: it asks for one, or accepts anything (no `Accept`, `*/*`).
fn accepts_pdf(req: &HttpRequest) -> bool {
    if wants_pdf(req) {
        return true;
    }
    if negotiate::query_param(req, "_format").is_some() {
        return false;
    }
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|a| a.contains("*/*") || a.contains("application/*") || a.trim().is_empty())
}

fn pdf_reply(name: &str, bytes: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/pdf"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{name}.pdf\""),
        ))
        .body(bytes)
}

/// An A&G summary's resources: request, patient, service, messages (oldest first), attachment
/// documents and the referral it became.
fn advice_entries(s: &svc::Summary) -> Vec<&Value> {
    std::iter::once(&s.request)
        .chain(s.patient.iter())
        .chain(s.service.iter())
        .chain(s.messages.iter())
        .chain(s.documents.iter())
        .chain(s.referral.iter())
        .collect()
}

/// A referral's information: the referral, its patient, the referrer (role, practitioner,
/// organisation), shortlisted services,
/// current appointment and its location, documents, and the A&G conversation it came from.
fn referral_entries(r: &crate::service::letters::ReferralInformation) -> Vec<&Value> {
    let mut out: Vec<&Value> = std::iter::once(&r.referral)
        .chain(r.patient.iter())
        .chain(r.requester.iter())
        .chain(r.referrer.iter())
        .chain(r.referring_organisation.iter())
        .chain(r.services.iter())
        .chain(r.appointment.iter())
        .chain(r.location.iter())
        .chain(r.documents.iter())
        .collect();
    if let Some(a) = &r.advice {
        out.extend(advice_entries(a));
    }
    out
}

/// A collection Bundle of the resources a summary shows.
fn bundle(base: &str, resources: &[&Value]) -> Value {
    let entries: Vec<Value> = resources
        .iter()
        .map(|r| {
            json!({
                "fullUrl": format!("{base}/{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default()),
                "resource": r,
            })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "meta": {"profile": [crate::fhir::bundle::PROFILE]},
        "type": "collection",
        "timestamp": crate::fhir::datetime::instant(chrono::Utc::now().naive_utc()),
        "entry": entries,
    })
}

/// Messages are sent by the conversation's operations, never written directly.
pub async fn no_message_writes() -> Reply {
    Err(ApiError::Service(ServiceError::MethodNotAllowed(format!(
        "Advice messages are sent with the request's operations: POST ServiceRequest/{{id}}/{} (a new request: POST ServiceRequest with category request and the first message as its note)",
        AdviceAction::ALL
            .iter()
            .map(|a| a.operation())
            .collect::<Vec<_>>()
            .join(", ")
    ))))
}

//! Booking endpoints: `POST /Appointment` (book, record an indirect booking, or defer),
//! `PUT /Appointment/{id}` (cancel with `status=cancelled`, or move to another `slot`), and the
//! operations on the current appointment (`$ers.cancelAppointment`, `$ers.changeAppointment`,
//! `$ers.recordNonAttendance`). Reads and searches are the generic ones, scoped to the
//! organisations related to the referral. Appointments are never deleted.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::caller::author;
use super::handlers::{authorise, draft, if_match, on_conn, write_reply};
use super::negotiate;
use super::referrals::Inputs;
use super::ApiError;
use crate::domain::referral::{Endpoint, ReferralAction};
use crate::domain::Caller;
use crate::fhir::outcome::Issue;
use crate::fhir::parameters;
use crate::fhir::resources::appointment as ap;
use crate::security::permissions::Action;
use crate::service::booking::{self, AppointmentChange};
use crate::service::referral::Acting;
use crate::service::ServiceError;
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("Appointment", Action::Create, &caller)?;
    let resource = negotiate::parse_body(&req, &body)?;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        booking::create(
            c,
            resource,
            &Acting {
                caller: &caller,
                author: &who,
                audit: &d,
            },
        )
    })
    .await?;
    write_reply(&req, &state, StatusCode::CREATED, &row)
}

pub async fn no_delete() -> Reply {
    Err(ApiError::Service(ServiceError::MethodNotAllowed(format!(
        "Appointments are never deleted: cancel one with PUT (status=cancelled) or POST Appointment/{{id}}/{}",
        ReferralAction::CancelAppointment.operation()
    ))))
}

fn invalid(expression: &str, ers: &'static str, msg: String) -> ApiError {
    ApiError::Service(ServiceError::Invalid(vec![Issue::error(
        "invalid", ers, msg,
    )
    .with_expression(expression.to_owned())]))
}

/// The first coding's code of a CodeableConcept element.
fn code_of(v: &Value, element: &str) -> Option<String> {
    v.get(element)?
        .get("coding")?
        .as_array()?
        .iter()
        .find_map(|c| c.get("code").and_then(Value::as_str))
        .map(str::to_owned)
}

/// Where a PUT body carries each input.
fn put_location(name: &str) -> String {
    match name {
        "reason" => "Appointment.cancelationReason".into(),
        "comment" => "Appointment.comment".into(),
        "slot" => "Appointment.slot[0]".into(),
        other => format!("Appointment.{other}"),
    }
}

/// `PUT /Appointment/{id}`: the body says what changes — `status=cancelled` with a
/// `cancelationReason` cancels; a different `slot` moves the booking. Nothing else may change.
pub async fn update(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (_, id) = path.into_inner();
    authorise("Appointment", Action::Update, &caller)?;
    let resource = negotiate::parse_body(&req, &body)?;
    if resource.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(invalid(
            "Appointment.id",
            "INVALID_VALUE",
            format!("'Appointment.id' must be the id in the URL ({id})"),
        ));
    }
    let status = resource
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let change = match status {
        "cancelled" => AppointmentChange::Cancel {
            reason: code_of(&resource, "cancelationReason").ok_or_else(|| {
                invalid(
                    "Appointment.cancelationReason",
                    "MISSING_VALUE",
                    format!(
                        "'Appointment.cancelationReason' is missing: a cancellation gives a reason from {}",
                        ap::CANCELLATION_SYSTEM
                    ),
                )
            })?,
            comment: resource
                .get("comment")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        "booked" => {
            let slot = ap::slots(&resource).into_iter().next().ok_or_else(|| {
                invalid(
                    "Appointment.slot",
                    "MISSING_VALUE",
                    "'Appointment.slot' is missing: a change of booking names the new slot".into(),
                )
            })?;
            AppointmentChange::Move {
                slot,
                clinician: ap::clinician(&resource),
            }
        }
        other => {
            return Err(invalid(
                "Appointment.status",
                "INVALID_VALUE",
                format!("PUT Appointment cancels (status=cancelled with a cancelationReason) or moves the booking (status=booked with a new slot); '{other}' is neither"),
            ))
        }
    };
    run_change(req, id, change, put_location, caller, state).await
}

/// `POST /Appointment/{id}/$ers.…` with a Parameters body.
pub async fn operation(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (id, op) = path.into_inner();
    authorise("Appointment", Action::Update, &caller)?;
    let Some(action) = ReferralAction::from_appointment_operation(&op) else {
        return Err(ApiError::NotFound(format!(
            "Appointment has no operation '{op}'; it has {}",
            ReferralAction::operations_at(Endpoint::CurrentAppointment).join(", ")
        )));
    };
    let parsed = if body.is_empty() {
        json!({"resourceType": "Parameters"})
    } else {
        negotiate::parse_body(&req, &body)?
    };
    let inputs =
        Inputs(parameters::read(&parsed, &op, action.parameters()).map_err(ApiError::Search)?);
    let change = match action {
        ReferralAction::CancelAppointment => AppointmentChange::Cancel {
            reason: inputs.required("reason", "an appointment cancellation reason")?,
            comment: inputs.one("comment"),
        },
        ReferralAction::ChangeAppointment => {
            let slot = inputs.required("slot", "the free Slot to move to")?;
            AppointmentChange::Move {
                slot: if slot.contains('/') {
                    slot
                } else {
                    format!("Slot/{slot}")
                },
                clinician: inputs.one("clinician"),
            }
        }
        // The one appointment operation left: $ers.recordNonAttendance.
        _ => AppointmentChange::NonAttendance {
            reason: inputs.required("reason", "an appointment non-attendance reason")?,
            comment: inputs.one("comment"),
        },
    };
    run_change(
        req,
        id,
        change,
        |name| format!("Parameters.parameter[{name}]"),
        caller,
        state,
    )
    .await
}

async fn run_change(
    req: HttpRequest,
    id: String,
    change: AppointmentChange,
    at: booking::Locate,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let version = if_match(&req)?;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        booking::change(
            c,
            &id,
            version,
            change,
            &Acting {
                caller: &caller,
                author: &who,
                audit: &d,
            },
            at,
        )
    })
    .await?;
    write_reply(&req, &state, StatusCode::OK, &row)
}

//! Referral endpoints: create (`POST /ServiceRequest`), the state-changing operations
//! (`POST /ServiceRequest/{id}/$ers.…`, each with `If-Match` and a `Parameters` body), and the
//! actions available to the caller (`GET /ServiceRequest/{id}/$ers.availableActions`).
//! Plain updates and deletes of referrals are refused: a referral changes only through its
//! operations.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::caller::author;
use super::handlers::{authorise, base_url, draft, if_match, on_conn, write_reply};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::referral::{Endpoint, ReferralAction, ReviewOutcome};
use crate::domain::Caller;
use crate::fhir::outcome::Issue;
use crate::fhir::parameters;
use crate::security::permissions::Action;
use crate::service::referral::{self as svc, Change};
use crate::service::ServiceError;
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    authorise("ServiceRequest", Action::Create, &caller)?;
    let resource = negotiate::parse_body(&req, &body)?;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        let acting = svc::Acting {
            caller: &caller,
            author: &who,
            audit: &d,
        };
        // An advice and guidance request (category `request`) has its own use case.
        if crate::fhir::resources::advice::is_advice(&resource) {
            crate::service::advice::create(c, resource, &acting)
        } else {
            svc::create(c, resource, &acting)
        }
    })
    .await?;
    write_reply(&req, &state, StatusCode::CREATED, &row)
}

pub async fn no_plain_writes() -> Reply {
    Err(ApiError::Service(ServiceError::MethodNotAllowed(format!(
        "A referral changes only through its operations: POST ServiceRequest/{{id}}/{} (see $ers.availableActions for what you may do now)",
        ReferralAction::operations_at(Endpoint::Referral).join(", ")
    ))))
}

/// The operation's inputs: one value per name (repeats kept in order).
pub(super) struct Inputs(pub(super) Vec<(String, String)>);

impl Inputs {
    /// The value of a parameter declared to take one (`parameters::read` checked it is given
    /// at most once).
    pub(super) fn one(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub(super) fn required(&self, name: &str, what: &str) -> Result<String, ApiError> {
        self.one(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                ApiError::Service(ServiceError::Invalid(vec![Issue::required_at(
                    format!("Parameters.parameter[{name}]"),
                    format!("is missing: {what}"),
                )]))
            })
    }
}

/// A HealthcareService reference from an input: `HealthcareService/{id}` or a bare id.
fn service_ref(v: &str) -> String {
    if v.contains('/') {
        v.to_owned()
    } else {
        format!("HealthcareService/{v}")
    }
}

const AVAILABLE_ACTIONS: &str = "$ers.availableActions";

/// How a referral or A&G operation is invoked: GET for those that only read
/// (`$ers.availableActions`, the summary, the patient's letter; POST works too, as FHIR has it for every
/// operation), POST with a Parameters body for the rest. The handler refuses any other (405),
/// and the route's `Allow` offers these.
pub fn operation_method(op: &str) -> Method {
    if op == AVAILABLE_ACTIONS
        || op == super::advice::SUMMARY
        || op == super::advice::PATIENT_LETTER
    {
        Method::GET
    } else {
        Method::POST
    }
}

/// The state of a referral or an A&G request (a coding) and the actions the caller may take
/// now, each with the URL that performs it: what `$ers.availableActions` and the Task search
/// (e-RS A029) both answer with. An appointment action is offered only with a current
/// appointment to act on.
pub(super) fn offered(
    base: &str,
    id: &str,
    now: &svc::Available,
) -> (serde_json::Value, Vec<(&'static str, String)>) {
    match now {
        svc::Available::Referral {
            state,
            actions,
            appointment,
        } => (
            json!({"system": crate::fhir::resources::service_request::STATE_SYSTEM, "code": state.code()}),
            actions
                .iter()
                .filter_map(|a| {
                    let url = match (a.endpoint(), appointment) {
                        (Endpoint::Referral, _) => {
                            format!("{base}/ServiceRequest/{id}/{}", a.operation())
                        }
                        (Endpoint::NewAppointment, _) => format!("{base}/Appointment"),
                        (Endpoint::CurrentAppointment, Some(appt)) => {
                            format!("{base}/Appointment/{appt}/{}", a.operation())
                        }
                        (Endpoint::CurrentAppointment, None) => return None,
                    };
                    Some((a.code(), url))
                })
                .collect(),
        ),
        svc::Available::Advice { status, actions } => (
            json!({"system": crate::fhir::resources::advice::STATUS_SYSTEM, "code": status.code()}),
            actions
                .iter()
                .map(|a| {
                    (
                        a.code(),
                        format!("{base}/ServiceRequest/{id}/{}", a.operation()),
                    )
                })
                .collect(),
        ),
    }
}

pub async fn operation(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    let (id, op) = path.into_inner();
    authorise("ServiceRequest", Action::Read, &caller)?;
    let method = operation_method(&op);
    // HEAD asks for what GET would answer.
    let asked = match req.method() {
        m if *m == Method::HEAD => Method::GET,
        m => m.clone(),
    };
    // One that only reads may be POSTed too (FHIR: every operation may be).
    if asked != method && !(method == Method::GET && asked == Method::POST) {
        return Err(ApiError::Service(ServiceError::MethodNotAllowed(
            if method == Method::GET {
                format!("{op} is read with GET")
            } else {
                format!("{op} is invoked with POST and a Parameters body")
            },
        )));
    }
    if asked == Method::POST && method == Method::GET {
        // It takes no inputs: anything given is refused.
        super::handlers::operation_inputs(&req, &body, &op, &[])?;
    }
    if let Some(action) = crate::domain::advice::AdviceAction::from_operation(&op) {
        return super::advice::operation(req, id, action, body, caller, state).await;
    }
    if op == super::advice::SUMMARY {
        return super::advice::summary(req, id, caller, state).await;
    }
    if op == super::advice::PATIENT_LETTER {
        return super::advice::patient_letter(req, id, caller, state).await;
    }
    if op == AVAILABLE_ACTIONS {
        let base = base_url(&req, &state);
        let who = caller.clone();
        let (row, now) = on_conn(&state, move |c| svc::available_actions(c, &id, &who)).await?;
        let (state_now, actions) = offered(&base, &row.id, &now);
        let mut params = vec![
            json!({"name": "referral", "valueReference": {"reference": format!("ServiceRequest/{}/_history/{}", row.id, row.version_id)}}),
            json!({"name": "state", "valueCoding": state_now}),
        ];
        params.extend(actions.into_iter().map(|(code, url)| {
            json!({"name": "action", "part": [
                {"name": "code", "valueCode": code},
                {"name": "operation", "valueUri": url},
            ]})
        }));
        return negotiate::respond(
            &req,
            StatusCode::OK,
            Body::Value(json!({"resourceType": "Parameters", "parameter": params})),
        );
    }
    let Some(action) = ReferralAction::from_operation(&op) else {
        return Err(ApiError::NotFound(format!(
            "ServiceRequest has no operation '{op}'; it has {}, {}, {}, {} and $ers.availableActions",
            ReferralAction::operations_at(Endpoint::Referral).join(", "),
            crate::domain::advice::AdviceAction::ALL
                .iter()
                .map(|a| a.operation())
                .collect::<Vec<_>>()
                .join(", "),
            super::advice::SUMMARY,
            super::advice::PATIENT_LETTER
        )));
    };
    let version = if_match(&req)?;
    let parsed = if body.is_empty() {
        json!({"resourceType": "Parameters"})
    } else {
        negotiate::parse_body(&req, &body)?
    };
    let inputs =
        Inputs(parameters::read(&parsed, &op, action.parameters()).map_err(ApiError::Search)?);
    let change = match action {
        ReferralAction::ChangeShortlist => Change::Shortlist(
            inputs
                .all("service")
                .iter()
                .map(|s| service_ref(s))
                .collect(),
        ),
        ReferralAction::SendForTriage => Change::SendForTriage(service_ref(
            &inputs.required("service", "the shortlisted triage service")?,
        )),
        ReferralAction::RecordReviewOutcome => {
            let code = inputs.required(
                "outcome",
                "RETURN_TO_REFERRER_WITH_ADVICE or ACCEPT_REFER_BOOK_LATER",
            )?;
            let outcome = ReviewOutcome::parse(&code).ok_or_else(|| {
                ApiError::Service(ServiceError::Invalid(vec![Issue::error(
                    "code-invalid",
                    "INVALID_CODE",
                    format!("'outcome' ({code}) must be RETURN_TO_REFERRER_WITH_ADVICE or ACCEPT_REFER_BOOK_LATER"),
                )
                .with_expression("Parameters.parameter[outcome]")]))
            })?;
            Change::ReviewOutcome {
                outcome,
                comment: inputs.one("comment").unwrap_or_default(),
            }
        }
        ReferralAction::CancelReferral => Change::Cancel {
            reason: inputs.required("reason", "a referral cancellation reason")?,
            comment: inputs.one("comment"),
        },
        ReferralAction::RejectReferral => Change::Reject {
            reason: inputs.required(
                "reason",
                "an appointment cancellation reason of usage REJECT",
            )?,
            comment: inputs.one("comment"),
        },
        ReferralAction::AcceptReferral => Change::Accept {
            comment: inputs.one("comment"),
        },
        ReferralAction::CancelAppointmentActionLater => Change::ActionLater {
            comment: inputs.required("comment", "why, for the provider's booking team")?,
        },
        ReferralAction::MaintainReferralLetter | ReferralAction::AddProviderAttachment => {
            use crate::service::attachments::Attaching;
            let titles = inputs.all("title");
            let docs: Vec<Attaching> = inputs
                .all("attachment")
                .into_iter()
                .enumerate()
                .map(|(i, binary)| Attaching {
                    binary,
                    title: titles.get(i).cloned(),
                })
                .collect();
            if action == ReferralAction::MaintainReferralLetter {
                Change::Letter(docs)
            } else {
                let mut docs = docs.into_iter();
                match (docs.next(), docs.next()) {
                    (Some(doc), None) => Change::ProviderDocument(doc),
                    _ => {
                        return Err(ApiError::Service(ServiceError::Invalid(vec![
                            Issue::error(
                                "required",
                                "MISSING_VALUE",
                                format!("{op} takes exactly one 'attachment' (Binary/{{id}})"),
                            )
                            .with_expression("Parameters.parameter[attachment]"),
                        ])))
                    }
                }
            }
        }
        ReferralAction::UpdateRequirements => {
            use crate::fhir::resources::requirements;
            Change::Requirements(
                requirements::build(&inputs.0)
                    .map_err(|i| ApiError::Service(ServiceError::Invalid(i)))?,
            )
        }
        // Appointment actions are invoked on Appointment, never here (from_operation).
        ReferralAction::CreateAppointment
        | ReferralAction::CancelAppointment
        | ReferralAction::ChangeAppointment
        | ReferralAction::RecordNonAttendance => {
            return Err(ApiError::Internal(format!(
                "{op} is not a referral operation"
            )))
        }
    };
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let row = on_conn(&state, move |c| {
        let acting = svc::Acting {
            caller: &caller,
            author: &who,
            audit: &d,
        };
        svc::apply(c, &id, version, change, &acting)
    })
    .await?;
    write_reply(&req, &state, StatusCode::OK, &row)
}

/// `GET /ServiceRequest/$ers.worklist?listType=…`: a worklist as the referral search it stands
/// for (the caller organisation's referrals, or those with its services, in the list's
/// states), paged like any search; provider lists filter by `service` and `specialty`.
pub async fn worklist(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Reply {
    use crate::domain::referral::Worklist;
    use crate::fhir::resources::healthcare_service::SPECIALTY_SYSTEM;
    let def = crate::fhir::registry::find("ServiceRequest")
        .ok_or_else(|| ApiError::Internal("ServiceRequest is not registered".into()))?;
    authorise(def.name, Action::Search, &caller)?;
    let query =
        super::handlers::operation_inputs(&req, &body, "$ers.worklist", Worklist::PARAMETERS)?;
    let bad =
        |name: &str, msg: String| ApiError::Search(vec![Issue::invalid_at(name.to_owned(), msg)]);
    let mut list = None;
    let mut listed: Vec<(String, String)> = Vec::new();
    let mut params: Vec<(String, String)> = Vec::new();
    let (mut services, mut specialties) = (Vec::new(), Vec::new());
    for (k, v) in &query {
        match k.as_str() {
            "listType" => {
                list = Some(Worklist::parse(v).ok_or_else(|| {
                    bad(
                        "listType",
                        format!(
                            "({v}) is not a worklist; expected one of: {}",
                            Worklist::ALL
                                .iter()
                                .map(|w| w.code())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?)
            }
            "service" => {
                for s in v.split(',') {
                    services.push(list_service(s).ok_or_else(|| bad("service", format!("({s}) is not a HealthcareService reference (HealthcareService/{{id}} or an id)")))?);
                }
            }
            "specialty" => {
                for s in v.split(',') {
                    let code = match s.split_once('|') {
                        Some((system, code)) if system == SPECIALTY_SYSTEM || system.is_empty() => {
                            code
                        }
                        Some((system, _)) => {
                            return Err(bad(
                                "specialty",
                                format!(
                                    "({s}): the system must be {SPECIALTY_SYSTEM}, not {system}"
                                ),
                            ))
                        }
                        None => s,
                    };
                    if code.is_empty() {
                        return Err(bad("specialty", format!("({s}) names no specialty code")));
                    }
                    specialties.push(code.to_owned());
                }
            }
            "_count" | "_offset" | "_format" | "_total" | "_summary" | "_revinclude" => {
                params.push((k.clone(), v.clone()))
            }
            // The general `_format` and `_pretty` (operation_inputs took only these besides).
            _ => {}
        }
        if matches!(k.as_str(), "listType" | "service" | "specialty") {
            listed.push((k.clone(), v.clone()));
        }
    }
    let list = list.ok_or_else(|| {
        ApiError::Search(vec![Issue::error(
            "required",
            "MISSING_PARAMETER",
            "'listType' is required",
        )
        .with_expression("listType")])
    })?;
    if !list.roles().contains(&caller.business_function) {
        return Err(ApiError::Service(ServiceError::Invalid(vec![
            Issue::error(
                "business-rule",
                "INAPPROPRIATE_VALUE",
                format!(
                    "'listType' ({}) is a {} worklist: it may be asked for by {}, not {}",
                    list.code(),
                    if list.for_referrers() {
                        "referrer"
                    } else {
                        "provider"
                    },
                    list.roles()
                        .iter()
                        .map(|b| b.code())
                        .collect::<Vec<_>>()
                        .join(", "),
                    caller.business_function
                ),
            )
            .with_expression("listType"),
        ])));
    }
    if list.for_referrers() && !(services.is_empty() && specialties.is_empty()) {
        let name = if services.is_empty() {
            "specialty"
        } else {
            "service"
        };
        return Err(bad(name, "filters only provider worklists".into()));
    }
    let mut implied = vec![("_include".into(), "ServiceRequest:patient".into())];
    // A list's total is counted only when asked for (`_total=accurate`): the organisation's
    // longest lists hold hundreds of thousands of referrals, and paging needs no count.
    if !params.iter().any(|(k, _)| k == "_total") {
        implied.push(("_total".into(), "none".into()));
    }
    let list = super::handlers::ListSearch {
        path: "ServiceRequest/$ers.worklist".into(),
        params: listed,
        implied,
        list: ers_schema::worklists::ListFilter {
            list: list.code().to_owned(),
            org: caller.organisation.as_str().to_owned(),
            services,
            specialties,
        },
    };
    super::handlers::run_search_on(req, def, params, Some(list), Vec::new(), caller, state).await
}

/// A service named by a worklist's `service` filter: `HealthcareService/{id}`, a URL ending
/// so, or an id.
fn list_service(s: &str) -> Option<String> {
    let id = match s.rsplit_once("HealthcareService/") {
        Some((_, id)) => id,
        None => s,
    };
    crate::fhir::is_valid_id(id).then(|| id.to_owned())
}

//! `HealthcareService/$ers.searchHealthcareServicesForPatient`: the patient-centred Directory of
//! Services search, GET (query parameters) or POST (a `Parameters` body). It resolves the
//! patient, then runs the HealthcareService search its inputs stand for.

use actix_web::{web, HttpRequest, HttpResponse};

use super::handlers::{authorise, draft, ok_outcome, operation_inputs, run_search_on};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::outcome::Issue;
use crate::fhir::registry;
use crate::fhir::service_search::{self, PatientServiceSearch};
use crate::security::permissions::Action;
use crate::service::{audit, directory, ServiceError};
use crate::startup::AppState;

pub async fn search_for_patient(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let def = registry::find("HealthcareService")
        .ok_or_else(|| ApiError::Internal("HealthcareService is not registered".into()))?;
    authorise(def.name, Action::Search, &caller)?;
    let pairs = operation_inputs(
        &req,
        &body,
        service_search::NAME,
        service_search::parameters(),
    )?;
    let search = PatientServiceSearch::from_pairs(&pairs).map_err(ApiError::Search)?;
    if search.patient.is_some() {
        authorise("Patient", Action::Read, &caller)?;
    }
    let d = draft(&req, Some(&caller));
    let (who, named) = (search.patient.clone(), search.commissioning.clone());
    let referrer = caller.organisation.as_str().to_owned();
    // The patient (read and audited) and the commissioner whose rules choose the services.
    let (facts, commissioning) =
        super::handlers::on_conn(&state, move |c| -> Result<_, ApiError> {
            let found = match who {
                Some(who) => {
                    let (row, content, facts) = directory::patient_for_search(c, &who)?;
                    audit::record(c, &d, &ok_outcome("R", "read"), &[audit::touched(&row)])?;
                    Some((content, facts))
                }
                None => None,
            };
            let commissioning = directory::commissioning_for_search(
                c,
                named.as_ref(),
                found.as_ref().map(|(content, _)| content),
                &referrer,
            )?;
            Ok((found.map(|(_, facts)| facts), commissioning))
        })
        .await?;
    let params = search
        .search_params(facts.as_ref(), commissioning.as_ref())
        .map_err(ApiError::Search)?;
    let notes = search.notes(facts.as_ref(), commissioning.as_ref());
    // A postcode the server cannot place is named as the operation's input, not its search's.
    run_search_on(req, def, params, None, notes, caller, state)
        .await
        .map_err(|e| match e {
            ApiError::Service(ServiceError::BadSearch { param, message }) => {
                match service_search::input_of(&param) {
                    Some(input) => {
                        ApiError::Search(vec![
                            Issue::error("value", "INVALID_VALUE", message).with_expression(input)
                        ])
                    }
                    None => ApiError::Service(ServiceError::BadSearch { param, message }),
                }
            }
            other => other,
        })
}

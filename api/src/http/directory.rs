//! `HealthcareService/$ers.searchHealthcareServicesForPatient`: the patient-centred Directory of
//! Services search, GET (query parameters) or POST (a `Parameters` body). It resolves the
//! patient, then runs the HealthcareService search its inputs stand for.

use actix_web::{web, HttpRequest, HttpResponse};

use super::handlers::{authorise, operation_inputs, run_planned_search, Annotate, Plan};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::outcome::Issue;
use crate::fhir::registry;
use crate::fhir::service_search::{self, PatientServiceSearch};
use crate::security::permissions::Action;
use crate::service::{audit, directory, ServiceError};
use crate::startup::AppState;

/// Each found service's indicative wait at `priority`, from now, as its search entry's
/// extension.
fn waits(priority: String) -> Annotate {
    Box::new(move |c, services| {
        let now = chrono::Utc::now().naive_utc();
        let today = crate::fhir::datetime::uk_date(now);
        Ok(directory::waits(c, services, &priority, now)?
            .into_iter()
            .map(|(id, wait)| (id, service_search::wait_extension(&wait, today)))
            .collect())
    })
}

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
    let referrer = caller.organisation.as_str().to_owned();
    // The patient (read and audited), the commissioner whose rules choose the services, and
    // the search they make, on the connection the search runs on.
    let plan = move |c: &mut ers_schema::PooledConn| -> Result<Plan, ApiError> {
        let found = match &search.patient {
            Some(who) => Some(directory::patient_for_search(c, who)?),
            None => None,
        };
        let commissioning = directory::commissioning_for_search(
            c,
            search.commissioning.as_ref(),
            found.as_ref().map(|(_, content, _)| content),
            &referrer,
        )?;
        let facts = found.as_ref().map(|(_, _, facts)| facts);
        Ok(Plan {
            params: search
                .search_params(facts, commissioning.as_ref())
                .map_err(ApiError::Search)?,
            notes: search.notes(facts, commissioning.as_ref()),
            read: found
                .iter()
                .map(|(row, _, _)| audit::touched(row))
                .collect(),
            annotate: Some(waits(search.priority.clone())),
        })
    };
    // A postcode the server cannot place is named as the operation's input, not its search's.
    run_planned_search(req, def, plan, caller, state)
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

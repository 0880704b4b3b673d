//! Who a user is in e-RS: the roles they hold, to name in the caller headers (e-RS A030,
//! `GET PractitionerRole` with no role headers), and the clinicians a
//! SERVICE_PROVIDER_CLINICIAN_ADMIN may act for (e-RS A040,
//! `GET Practitioner?_query=onBehalfOf`). Any other `GET PractitionerRole` or
//! `GET Practitioner` is the type's search.

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use ers_schema::ResourceRow;

use super::caller::{self, ForOwnDelegates};
use super::handlers::{self as h, authorise, base_url, draft, ok_outcome, on_read, parse_query};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::{BusinessFunction, Caller};
use crate::fhir::bundle::{self, Entry, EntryResource, Links};
use crate::security::permissions::Action;
use crate::security::Identity;
use crate::service::audit::{self, AuditDraft};
use crate::startup::AppState;

type Reply = Result<HttpResponse, ApiError>;

/// `GET /PractitionerRole`: with no role headers and a user's token, that user's own active
/// roles with their organisations (each `organization`'s ODS code and the role's business
/// function are the values for `NHSD-End-User-Organisation-ODS` and
/// `NHSD-eRS-Business-Function`); otherwise the search.
pub async fn practitioner_roles(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Reply {
    if caller::names_no_role(&req) {
        if let Identity::User { sub, .. } = caller::identify(&req).await? {
            no_search_parameters(
                &req,
                &[],
                "without NHSD-eRS-Business-Function and NHSD-End-User-Organisation-ODS, GET PractitionerRole lists your own roles (e-RS A030) and takes no search parameters: send both headers to search",
            )?;
            let who = sub.clone();
            let (roles, orgs) =
                on_read(&state, move |c| crate::service::roles::own(c, &who)).await?;
            let mut d = draft(&req, None);
            d.user_id = Some(sub);
            return answer(&req, &state, "PractitionerRole", &d, &roles, &orgs).await;
        }
    }
    let caller = Caller::extract(&req).await?;
    h::search_get(req, path, caller, state).await
}

/// `GET /Practitioner`: with `_query=onBehalfOf`, the clinicians the calling
/// SERVICE_PROVIDER_CLINICIAN_ADMIN may act for at the organisation named in the headers
/// (`NHSD-eRS-On-Behalf-Of-User-ID` may be left out, as its value is what this finds);
/// otherwise the search (which refuses any other named query).
pub async fn practitioners(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Reply {
    let on_behalf = parse_query(req.query_string())?
        .iter()
        .any(|(k, v)| k == "_query" && v == "onBehalfOf");
    if !on_behalf {
        let caller = Caller::extract(&req).await?;
        return h::search_get(req, path, caller, state).await;
    }
    req.extensions_mut().insert(ForOwnDelegates);
    let caller = Caller::extract(&req).await?;
    let spca = BusinessFunction::ServiceProviderClinicianAdmin;
    if caller.business_function != spca {
        return Err(ApiError::Forbidden(format!(
            "_query=onBehalfOf lists the clinicians a {spca} may act for; {} acts for no one else",
            caller.business_function
        )));
    }
    authorise("Practitioner", Action::Search, &caller)?;
    no_search_parameters(
        &req,
        &["_query"],
        "Practitioner?_query=onBehalfOf (e-RS A040) takes no other search parameters",
    )?;
    let ods = caller.organisation.as_str().to_owned();
    let found = on_read(&state, move |c| {
        crate::service::roles::clinicians_at(c, &ods)
    })
    .await?;
    answer(
        &req,
        &state,
        "Practitioner",
        &draft(&req, Some(&caller)),
        &found,
        &[],
    )
    .await
}

/// 400 when the query names a parameter other than `allowed` and the format ones.
fn no_search_parameters(req: &HttpRequest, allowed: &[&str], why: &str) -> Result<(), ApiError> {
    let extra: Vec<String> = parse_query(req.query_string())?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !allowed.contains(&k.as_str()) && !matches!(k.as_str(), "_format" | "_pretty"))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "{why} (given: {})",
        extra.join(", ")
    )))
}

/// The searchset of `matches` (and `included`), audited as a search that showed them.
async fn answer(
    req: &HttpRequest,
    state: &AppState,
    res_type: &str,
    d: &AuditDraft,
    matches: &[ResourceRow],
    included: &[ResourceRow],
) -> Reply {
    negotiate::response_format(req)?;
    let base = base_url(req, state);
    let entries = matches
        .iter()
        .map(|r| (r, false))
        .chain(included.iter().map(|r| (r, true)))
        .map(|(row, include)| Entry {
            full_url: format!("{base}/{}/{}", row.res_type, row.id),
            resource: EntryResource::Stored(&row.content),
            include,
            distance_km: None,
            wait: None,
        })
        .collect();
    let query = req.query_string();
    let links = Links {
        self_url: match query {
            "" => format!("{base}/{res_type}"),
            q => format!("{base}/{res_type}?{q}"),
        },
        next: None,
        previous: None,
    };
    let total = i64::try_from(matches.len()).unwrap_or(i64::MAX);
    let text = bundle::searchset(Some(total), &links, entries, None)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let touched: Vec<audit::Touched> = matches.iter().chain(included).map(audit::touched).collect();
    state
        .audit
        .record(d, &ok_outcome("E", "search-type"), &touched)
        .await?;
    negotiate::respond(req, StatusCode::OK, Body::Text(text))
}

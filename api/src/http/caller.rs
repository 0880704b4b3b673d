//! The caller seam: every patient-data handler receives a [`Caller`]. Here it comes from the
//! e-RS headers; the security work replaces the source with a validated token.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use super::middleware::RequestId;
use super::ApiError;
use crate::domain::{BusinessFunction, Caller, OdsCode, SdsUserId};

pub const BUSINESS_FUNCTION: &str = "NHSD-eRS-Business-Function";
pub const ORGANISATION: &str = "NHSD-End-User-Organisation-ODS";
pub const ON_BEHALF_OF: &str = "NHSD-eRS-On-Behalf-Of-User-ID";
pub const USER_ID: &str = "NHSD-eRS-User-ID";

fn header<'a>(req: &'a HttpRequest, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::BadHeader {
                    header: name,
                    message: "is not visible ASCII".into(),
                })?
                .trim();
            Ok((!s.is_empty()).then_some(s))
        }
    }
}

fn caller_from(req: &HttpRequest) -> Result<Caller, ApiError> {
    let bf_raw =
        header(req, BUSINESS_FUNCTION)?.ok_or(ApiError::MissingHeader(BUSINESS_FUNCTION))?;
    let business_function = BusinessFunction::parse(bf_raw).ok_or_else(|| ApiError::BadHeader {
        header: BUSINESS_FUNCTION,
        message: format!(
            "'{bf_raw}' is not an e-RS business function; allowed values: {}",
            BusinessFunction::ALL
                .iter()
                .map(|b| b.code())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    let ods_raw = header(req, ORGANISATION)?.ok_or(ApiError::MissingHeader(ORGANISATION))?;
    let organisation = OdsCode::parse(ods_raw).map_err(|e| ApiError::BadHeader {
        header: ORGANISATION,
        message: e.0,
    })?;
    let user_id = header(req, USER_ID)?
        .map(|u| {
            SdsUserId::parse(u)
                .map(|s| s.as_str().to_owned())
                .map_err(|e| ApiError::BadHeader {
                    header: USER_ID,
                    message: e.0,
                })
        })
        .transpose()?;
    let obo = header(req, ON_BEHALF_OF)?;
    let on_behalf_of = match (business_function.acts_on_behalf(), obo) {
        (true, None) => return Err(ApiError::MissingHeader(ON_BEHALF_OF)),
        (true, Some(u)) => Some(SdsUserId::parse(u).map_err(|e| ApiError::BadHeader { header: ON_BEHALF_OF, message: e.0 })?.as_str().to_owned()),
        (false, Some(_)) => {
            return Err(ApiError::BadHeader {
                header: ON_BEHALF_OF,
                message: format!("is only allowed with business function SERVICE_PROVIDER_CLINICIAN_ADMIN, not {business_function}"),
            })
        }
        (false, None) => None,
    };
    Ok(Caller {
        user_id,
        business_function,
        organisation,
        on_behalf_of,
    })
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller_from(req))
    }
}

/// Who made a change, for the version table.
pub fn author(req: &HttpRequest, caller: &Caller) -> ers_schema::Author {
    ers_schema::Author {
        user: caller.user_id.clone(),
        role: caller.business_function.code().to_owned(),
        org: caller.organisation.as_str().to_owned(),
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
    }
}

//! The e-RS roles a user holds: their active PractitionerRoles, as (business function, ODS).

use crate::fhir::At;
use ers_schema::search::{self as store_search, Criterion, SearchQuery, TokenMatch};
use ers_schema::{read_tx, store, DbConnection, ResourceRow};
use serde_json::Value;

use super::seed::BUSINESS_FUNCTION_SYSTEM;
use super::ServiceError;
use crate::domain::{BusinessFunction, OdsCode, SdsUserId};
use crate::fhir::index::split_reference;

/// Every (business function, organisation ODS code) the user with this SDS id holds.
pub fn roles_of(
    conn: &mut DbConnection,
    sds_user_id: &str,
) -> Result<Vec<(BusinessFunction, String)>, ServiceError> {
    read_tx(conn, |c| {
        Ok(held(c, sds_user_id)?
            .into_iter()
            .map(|(_, bf, ods)| (bf, ods))
            .collect())
    })
}

/// The caller's own PractitionerRole (`PractitionerRole/{id}`): the user's role with the
/// business function at the organisation they act for (in the caller's transaction).
pub fn role_of(
    c: &mut DbConnection,
    caller: &crate::domain::Caller,
) -> Result<Option<String>, ServiceError> {
    let Some(user) = caller.user_id.as_deref() else {
        return Ok(None);
    };
    Ok(held(c, user)?
        .into_iter()
        .find(|(_, bf, ods)| *bf == caller.business_function && ods == caller.organisation.as_str())
        .map(|(id, _, _)| format!("PractitionerRole/{id}")))
}

/// (PractitionerRole id, business function, ODS code) of each active role of the user.
fn held(
    c: &mut DbConnection,
    sds_user_id: &str,
) -> Result<Vec<(String, BusinessFunction, String)>, ServiceError> {
    Ok(active_roles(c, vec![of_user(sds_user_id)])?
        .into_iter()
        .flat_map(|h| {
            let (id, ods) = (h.role.id, h.ods);
            h.functions
                .into_iter()
                .map(move |bf| (id.clone(), bf, ods.clone()))
        })
        .collect())
}

/// The user's own roles, to choose the caller headers from (e-RS A030): each active
/// PractitionerRole giving an e-RS business function at an organisation with an ODS code, and
/// those organisations (once each).
pub fn own(
    conn: &mut DbConnection,
    sds_user_id: &str,
) -> Result<(Vec<ResourceRow>, Vec<ResourceRow>), ServiceError> {
    read_tx(conn, |c| {
        let mut roles = Vec::new();
        let mut orgs: Vec<ResourceRow> = Vec::new();
        for h in active_roles(c, vec![of_user(sds_user_id)])? {
            if !orgs.iter().any(|o| o.id == h.org.id) {
                orgs.push(h.org);
            }
            roles.push(h.role);
        }
        Ok((roles, orgs))
    })
}

/// The clinicians a SERVICE_PROVIDER_CLINICIAN_ADMIN at `ods` may act for (e-RS A040): the
/// active Practitioners holding SERVICE_PROVIDER_CLINICIAN there, as the caller check
/// (`http::caller`) takes `NHSD-eRS-On-Behalf-Of-User-ID`.
pub fn clinicians_at(conn: &mut DbConnection, ods: &str) -> Result<Vec<ResourceRow>, ServiceError> {
    let spc = BusinessFunction::ServiceProviderClinician;
    read_tx(conn, |c| {
        let criteria = vec![
            Criterion::Token {
                param: "role".into(),
                any_of: vec![TokenMatch {
                    system: Some(BUSINESS_FUNCTION_SYSTEM.into()),
                    code: Some(spc.code().into()),
                }],
                negate: false,
            },
            Criterion::Chain {
                param: "organization".into(),
                target_type: "Organization".into(),
                inner: Box::new(Criterion::Token {
                    param: "identifier".into(),
                    any_of: vec![TokenMatch {
                        system: Some(OdsCode::ORGANIZATION_SYSTEM.into()),
                        code: Some(ods.into()),
                    }],
                    negate: false,
                }),
                also: Vec::new(),
            },
        ];
        let mut out: Vec<ResourceRow> = Vec::new();
        for h in active_roles(c, criteria)? {
            if h.ods != ods || !h.functions.contains(&spc) {
                continue;
            }
            let role: Value = super::parse_stored(&h.role)?;
            let Some((_, id)) = role
                .at("/practitioner/reference")
                .and_then(Value::as_str)
                .and_then(split_reference)
            else {
                continue;
            };
            if out.iter().any(|p| p.id == id) {
                continue;
            }
            let Some(row) = store::get_current(c, "Practitioner", id)?.filter(|r| !r.is_deleted())
            else {
                continue;
            };
            let practitioner: Value = super::parse_stored(&row)?;
            if practitioner.get("active") != Some(&Value::Bool(false)) {
                out.push(row);
            }
        }
        Ok(out)
    })
}

/// PractitionerRoles of the Practitioner with this SDS user id.
fn of_user(sds_user_id: &str) -> Criterion {
    Criterion::Chain {
        param: "practitioner".into(),
        target_type: "Practitioner".into(),
        inner: Box::new(Criterion::Token {
            param: "identifier".into(),
            any_of: vec![TokenMatch {
                system: Some(SdsUserId::SYSTEM.into()),
                code: Some(sds_user_id.into()),
            }],
            negate: false,
        }),
        also: Vec::new(),
    }
}

/// An active role: the PractitionerRole, its organisation with the organisation's ODS code,
/// and the e-RS business functions it gives there (at least one).
struct Held {
    role: ResourceRow,
    org: ResourceRow,
    ods: String,
    functions: Vec<BusinessFunction>,
}

/// The active PractitionerRoles meeting `criteria` that give an e-RS business function at an
/// organisation with an ODS code.
fn active_roles(c: &mut DbConnection, criteria: Vec<Criterion>) -> Result<Vec<Held>, ServiceError> {
    let query = SearchQuery {
        res_type: "PractitionerRole".into(),
        criteria,
        sort: Vec::new(),
        offset: 0,
        limit: 500,
    };
    let (rows, _) = store_search::search(c, &query, false)?;
    let mut out = Vec::new();
    for row in rows {
        let role: Value = super::parse_stored(&row)?;
        if role.get("active") == Some(&Value::Bool(false)) {
            continue;
        }
        let Some((_, org_id)) = role
            .at("/organization/reference")
            .and_then(Value::as_str)
            .and_then(split_reference)
        else {
            continue;
        };
        let Some(org) = store::get_current(c, "Organization", org_id)?.filter(|r| !r.is_deleted())
        else {
            continue;
        };
        let parsed: Value = super::parse_stored(&org)?;
        let Some(ods) = parsed
            .get("identifier")
            .and_then(Value::as_array)
            .and_then(|ids| {
                ids.iter().find(|i| {
                    i.get("system").and_then(Value::as_str) == Some(OdsCode::ORGANIZATION_SYSTEM)
                })
            })
            .and_then(|i| i.get("value").and_then(Value::as_str))
            .map(str::to_owned)
        else {
            continue;
        };
        let functions: Vec<BusinessFunction> = role
            .get("code")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|code| code.get("coding").and_then(Value::as_array))
            .flatten()
            .filter(|coding| {
                coding.get("system").and_then(Value::as_str) == Some(BUSINESS_FUNCTION_SYSTEM)
            })
            .filter_map(|coding| {
                coding
                    .get("code")
                    .and_then(Value::as_str)
                    .and_then(BusinessFunction::parse)
            })
            .collect();
        if !functions.is_empty() {
            out.push(Held {
                role: row,
                org,
                ods,
                functions,
            });
        }
    }
    Ok(out)
}

//! The e-RS roles a user holds: their active PractitionerRoles, as (business function, ODS).

use crate::fhir::At;
use ers_schema::search::{self as store_search, Criterion, SearchQuery, TokenMatch};
use ers_schema::{read_tx, store, DbConnection};
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
    {
        let query = SearchQuery {
            res_type: "PractitionerRole".into(),
            criteria: vec![Criterion::Chain {
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
            }],
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
            let Some(org) = store::get_current(c, "Organization", org_id)? else {
                continue;
            };
            let org: Value = super::parse_stored(&org)?;
            let Some(ods) = org
                .get("identifier")
                .and_then(Value::as_array)
                .and_then(|ids| {
                    ids.iter().find(|i| {
                        i.get("system").and_then(Value::as_str)
                            == Some(OdsCode::ORGANIZATION_SYSTEM)
                    })
                })
                .and_then(|i| i.get("value").and_then(Value::as_str))
            else {
                continue;
            };
            for code in role
                .get("code")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for coding in code
                    .get("coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if coding.get("system").and_then(Value::as_str)
                        == Some(BUSINESS_FUNCTION_SYSTEM)
                    {
                        if let Some(bf) = coding
                            .get("code")
                            .and_then(Value::as_str)
                            .and_then(BusinessFunction::parse)
                        {
                            out.push((row.id.clone(), bf, ods.to_owned()));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

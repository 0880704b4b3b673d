//! Organisation scoping of patient data: a referral (and the records about it) is seen only by
//! the organisations related to it — the referrer and each shortlisted or booked provider.
//! Anyone else gets 404, as if it did not exist.
//!
//! The writer of a scoped resource names those organisations; each version indexes their ODS
//! codes as `_access` tokens, so reads check one index row and searches filter in SQL (totals
//! and paging stay right). A Provenance is seen by whoever may see its target (it is derived
//! from the target's version: `provenance`).

use std::collections::HashSet;

use ers_schema::search::{Criterion, TokenMatch};
use ers_schema::{store, DbConnection, ResourceRow, TokenEntry};

use super::{provenance, Result, ServiceError};
use crate::domain::Caller;
use crate::fhir::registry::{self, ResourceDef, Visibility};

/// The index parameter holding who may see a resource (not a client search parameter).
pub const PARAM: &str = "_access";
/// The `_access` code of a record visible to everyone who may read its type.
const EVERYONE: &str = "*";

/// Index entries for a version of `def` written for `organisations` (ODS codes).
pub fn entries(def: &ResourceDef, organisations: &[String]) -> Result<Vec<TokenEntry>> {
    if def.visibility == Visibility::Organisations && organisations.is_empty() {
        return Err(ServiceError::Internal(format!(
            "a {} must be written with the organisations that may see it",
            def.name
        )));
    }
    Ok(token_entries(organisations))
}

fn token_entries(codes: &[String]) -> Vec<TokenEntry> {
    codes
        .iter()
        .map(|c| TokenEntry {
            param: PARAM.to_owned(),
            system: String::new(),
            code: c.clone(),
        })
        .collect()
}

/// Whether a version of `def` written for `organisations` has no `_access` tokens, so its
/// content tells all its index tokens (`store::KnownIndex::tokens_complete`).
pub fn tokens_from_content_alone(def: &ResourceDef, organisations: &[String]) -> bool {
    def.visibility == Visibility::Everyone && organisations.is_empty()
}

/// The `_access` codes that let the caller see a resource of `def`, or None when the type is
/// visible to everyone who may read it.
pub fn codes_for(def: &ResourceDef, caller: &Caller) -> Option<Vec<String>> {
    let me = caller.organisation.as_str().to_owned();
    match def.visibility {
        Visibility::Everyone => None,
        Visibility::Organisations => Some(vec![me]),
        Visibility::AsTarget | Visibility::Audience => Some(vec![me, EVERYONE.to_owned()]),
    }
}

/// For an audience: the business-function tokens that let the caller see it.
const AUDIENCE_ROLE: &str = "audience-role";

fn role_codes(def: &ResourceDef, caller: &Caller) -> Option<Vec<String>> {
    (def.visibility == Visibility::Audience).then(|| {
        vec![
            caller.business_function.code().to_owned(),
            EVERYONE.to_owned(),
        ]
    })
}

fn criterion(codes: Vec<String>) -> Criterion {
    Criterion::Token {
        param: PARAM.to_owned(),
        any_of: codes
            .into_iter()
            .map(|c| TokenMatch {
                system: None,
                code: Some(c),
            })
            .collect(),
        negate: false,
    }
}

/// The index tokens a resource of `def` must hold (parameter, any of these codes) for the
/// caller to see it: the same rule as `restrict`, for bulk reads filtered in SQL.
pub fn required_tokens(def: &ResourceDef, caller: &Caller) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    if let Some(codes) = codes_for(def, caller) {
        out.push((PARAM.to_owned(), codes));
    }
    if let Some(codes) = role_codes(def, caller) {
        out.push((AUDIENCE_ROLE.to_owned(), codes));
    }
    out
}

/// Narrows a search of `def` to what the caller may see, including the resources that reverse
/// chains (`_has`) look through.
pub fn restrict(def: &ResourceDef, criteria: &mut Vec<Criterion>, caller: &Caller) {
    for c in criteria.iter_mut() {
        restrict_within(c, caller);
    }
    if let Some(codes) = codes_for(def, caller) {
        criteria.push(criterion(codes));
    }
    if let Some(codes) = role_codes(def, caller) {
        let Criterion::Token { any_of, .. } = criterion(codes) else {
            return;
        };
        criteria.push(Criterion::Token {
            param: AUDIENCE_ROLE.to_owned(),
            any_of,
            negate: false,
        });
    }
}

/// What a criterion looks through is restricted as the search is: a reverse chain's sources
/// (`_has`) and a chain's targets (so no chain tells anything of a resource the caller may not
/// see, such as the advice request a referral was converted from, as seen by a provider the
/// referral went to).
fn restrict_within(c: &mut Criterion, caller: &Caller) {
    match c {
        Criterion::ReferencedBy {
            source_type,
            all_of,
            ..
        } => {
            if let Some(source) = registry::find(source_type) {
                restrict(source, all_of, caller);
            }
        }
        Criterion::Chain {
            target_type,
            inner,
            also,
            ..
        } => {
            restrict_within(inner, caller);
            if let Some(target) = registry::find(target_type) {
                let mut scope = Vec::new();
                restrict(target, &mut scope, caller);
                *also = scope;
            }
        }
        Criterion::AnyOf(parts) => parts.iter_mut().for_each(|p| restrict_within(p, caller)),
        _ => {}
    }
}

/// 404 unless the caller may see `def`/`id` (the caller's organisation is related to it).
pub fn check(conn: &mut DbConnection, def: &ResourceDef, id: &str, caller: &Caller) -> Result<()> {
    if def.visibility == Visibility::AsTarget {
        let Some((target, target_id, _)) = provenance::target_of(id) else {
            return Err(ServiceError::NotFound {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
            });
        };
        return check(conn, target, target_id, caller).map_err(|e| match e {
            ServiceError::NotVisible { organisation, .. } => ServiceError::NotVisible {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
                organisation,
            },
            ServiceError::NotFound { .. } => ServiceError::NotFound {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
            },
            other => other,
        });
    }
    let Some(codes) = codes_for(def, caller) else {
        return Ok(());
    };
    let mut held = store::holding_token(conn, def.name, &[id.to_owned()], PARAM, &codes)?;
    if let Some(roles) = role_codes(def, caller) {
        if store::holding_token(conn, def.name, &[id.to_owned()], AUDIENCE_ROLE, &roles)?.is_empty()
        {
            held.clear();
        }
    }
    if held.is_empty() {
        return Err(if store::exists(conn, def.name, id)? {
            ServiceError::NotVisible {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
                organisation: caller.organisation.as_str().to_owned(),
            }
        } else {
            ServiceError::NotFound {
                res_type: def.name.to_owned(),
                id: id.to_owned(),
            }
        });
    }
    Ok(())
}

/// For a change: 403 unless the caller's organisation is related to `def`/`id` (writes say
/// why they are refused; reads answer 404).
pub fn check_write(
    conn: &mut DbConnection,
    def: &ResourceDef,
    id: &str,
    caller: &Caller,
) -> Result<()> {
    match check(conn, def, id, caller) {
        Err(ServiceError::NotVisible {
            res_type,
            id,
            organisation,
        }) => Err(unrelated(&res_type, &id, &organisation)),
        other => other,
    }
}

/// `check_write` of a resource of a type scoped by organisation that exists, from the
/// `_access` codes it holds (`held`), read in the change's own transaction.
pub fn check_write_held(
    def: &ResourceDef,
    id: &str,
    caller: &Caller,
    held: &[String],
) -> Result<()> {
    if def.visibility != Visibility::Organisations {
        return Err(ServiceError::Internal(format!(
            "{} is not scoped by organisation alone",
            def.name
        )));
    }
    // The codes that let the caller see it (`codes_for`), among those it holds.
    let codes = codes_for(def, caller).unwrap_or_default();
    if held.iter().any(|c| codes.contains(c)) {
        Ok(())
    } else {
        Err(unrelated(def.name, id, caller.organisation.as_str()))
    }
}

fn unrelated(res_type: &str, id: &str, organisation: &str) -> ServiceError {
    ServiceError::Forbidden(format!(
        "{res_type}/{id} has no relationship with your organisation ({organisation}): only the referring organisation and the providers it is shortlisted with or booked at may change it"
    ))
}

/// The records that follow a referral — its appointments and documents (and so the
/// Provenance of them and of the referral) — take the referral's organisations as they are
/// now, so a provider added to the shortlist sees the letter already attached, and one taken
/// off no longer does.
pub fn follow_referral(
    conn: &mut DbConnection,
    referral_id: &str,
    organisations: &[String],
) -> Result<()> {
    let referral = [referral_id.to_owned()];
    let appointments =
        store::referring(conn, "Appointment", "based-on", "ServiceRequest", &referral)?;
    let documents = store::referring(
        conn,
        "DocumentReference",
        "related",
        "ServiceRequest",
        &referral,
    )?;
    store::replace_tokens(conn, "Appointment", &appointments, PARAM, organisations)?;
    store::replace_tokens(conn, "DocumentReference", &documents, PARAM, organisations)?;
    Ok(())
}

/// Drops the rows (of any types, e.g. `_include`d ones) the caller may not see; a Provenance
/// goes with its target.
pub fn retain_visible(
    conn: &mut DbConnection,
    rows: &mut Vec<ResourceRow>,
    caller: &Caller,
) -> Result<()> {
    // Whose visibility decides each row's.
    let decider = |r: &ResourceRow| -> Option<(String, String)> {
        if r.res_type == provenance::TYPE {
            provenance::target_of(&r.id).map(|(d, id, _)| (d.name.to_owned(), id.to_owned()))
        } else {
            Some((r.res_type.clone(), r.id.clone()))
        }
    };
    let keys: HashSet<(String, String)> = rows.iter().filter_map(decider).collect();
    let mut visible: HashSet<(String, String)> = HashSet::new();
    let types: HashSet<&String> = keys.iter().map(|(t, _)| t).collect();
    for t in types {
        let Some(def) = registry::find(t) else {
            continue;
        };
        let ids: Vec<String> = keys
            .iter()
            .filter(|(kt, _)| kt == t)
            .map(|(_, id)| id.clone())
            .collect();
        let held = match codes_for(def, caller) {
            None => ids,
            Some(codes) => store::holding_token(conn, t, &ids, PARAM, &codes)?,
        };
        visible.extend(held.into_iter().map(|id| (t.clone(), id)));
    }
    rows.retain(|r| decider(r).is_some_and(|k| visible.contains(&k)));
    Ok(())
}

//! Provenance, derived from the versions it describes. Every stored version records who made it
//! (user or application, business function, organisation, the user a delegate acted for), when
//! and how (create, update, delete): that row *is* the record of its making, so the server
//! serves it as a Provenance instead of writing one beside every version (a fifth of a
//! referral's rows, nearly half of a booking's).
//!
//! A Provenance's id names its version, `{type}.{version}.{id}` (`ServiceRequest.2.0193…`):
//! server-assigned ids are UUIDs, so it stays within FHIR's 64 characters. It has one version;
//! it is visible to whoever may see its target (`scope`), and goes when its target is purged.

use ers_schema::exports::{self as pages, Cursor, PageQuery, PageRow};
use ers_schema::search::{self as store_search, Count, Criterion, DateMatch, DatePrefix, SortKey};
use ers_schema::store::{self, HistoryQuery};
use ers_schema::versions::{self, Maker, VersionCriterion, VersionOrder, VersionSearch, Visible};
use ers_schema::{read_tx, DbConnection, ResourceRow, VersionRow};
use serde_json::{json, Value};

use super::resource::SearchResult;
use super::{scope, Result, ServiceError};
use crate::domain::{OdsCode, SdsUserId};
use crate::fhir::registry::{self, ResourceDef, Visibility};
use crate::fhir::search::{SearchRequest, Summary, TotalMode};

/// The derived type.
pub const TYPE: &str = "Provenance";
/// The identifier system of applications (OAuth client ids) as agents.
pub const APPLICATION_SYSTEM: &str = "https://fhir.nhs.uk/Id/ers-application";
const PROFILE: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Provenance";
/// At most this many resources a chained `target` parameter may stand for.
const MAX_CHAINED: i64 = 1000;

/// Whether `def` is the derived type.
pub fn is(def: &ResourceDef) -> bool {
    registry::is_derived(def)
}

/// The id of the Provenance of a version.
pub fn id_of(res_type: &str, id: &str, version: i64) -> String {
    format!("{res_type}.{version}.{id}")
}

/// The version a Provenance id names: its type's registration, id and version number.
pub fn target_of(pid: &str) -> Option<(&'static ResourceDef, &str, i64)> {
    let (t, rest) = pid.split_once('.')?;
    let (v, id) = rest.split_once('.')?;
    let def = registry::find(t).filter(|d| !is(d))?;
    let version: i64 = v.parse().ok().filter(|n: &i64| *n > 0)?;
    // One spelling per version (no `ServiceRequest.02.…`).
    (version.to_string() == v && !id.is_empty()).then_some((def, id, version))
}

fn activity(method: &str) -> &'static str {
    match method {
        "POST" => "CREATE",
        "DELETE" => "DELETE",
        _ => "UPDATE",
    }
}

/// The Provenance of a version.
pub fn content(v: &VersionRow) -> Value {
    let who = match (&v.client_id, &v.author_user) {
        (Some(app), _) => json!({"identifier": {"system": APPLICATION_SYSTEM, "value": app}}),
        (None, Some(user)) if SdsUserId::parse(user).is_ok() => {
            json!({"identifier": {"system": SdsUserId::SYSTEM, "value": user}})
        }
        (None, Some(user)) => json!({"display": user}),
        (None, None) => json!({"display": "ers-server"}),
    };
    let on_behalf_of = match &v.on_behalf_of {
        Some(obo) => json!({"identifier": {"system": SdsUserId::SYSTEM, "value": obo}}),
        None => {
            json!({"identifier": {"system": OdsCode::ORGANIZATION_SYSTEM, "value": v.author_org}})
        }
    };
    let recorded = crate::fhir::datetime::instant(v.last_updated);
    json!({
        "resourceType": TYPE,
        "id": id_of(&v.res_type, &v.id, v.version_id),
        "meta": {"versionId": "1", "lastUpdated": recorded, "profile": [PROFILE]},
        "target": [{"reference": format!("{}/{}/_history/{}", v.res_type, v.id, v.version_id)}],
        "recorded": recorded,
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": activity(&v.method)}]},
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
            "role": [{"coding": [{"system": super::seed::BUSINESS_FUNCTION_SYSTEM, "code": v.author_role}]}],
            "who": who,
            "onBehalfOf": on_behalf_of,
        }],
    })
}

/// The Provenance of a version, as a current resource.
pub fn row(v: &VersionRow) -> ResourceRow {
    ResourceRow {
        res_type: TYPE.to_owned(),
        id: id_of(&v.res_type, &v.id, v.version_id),
        version_id: 1,
        last_updated: v.last_updated,
        deleted: 0,
        content: content(v).to_string(),
    }
}

/// The Provenance of a version, as its one version.
fn as_version(v: &VersionRow) -> VersionRow {
    VersionRow {
        res_type: TYPE.to_owned(),
        id: id_of(&v.res_type, &v.id, v.version_id),
        version_id: 1,
        method: "POST".into(),
        deleted: 0,
        content: content(v).to_string(),
        ..v.clone()
    }
}

fn not_found(pid: &str) -> ServiceError {
    ServiceError::NotFound {
        res_type: TYPE.to_owned(),
        id: pid.to_owned(),
    }
}

fn described(c: &mut DbConnection, pid: &str) -> Result<VersionRow> {
    let (def, id, version) = target_of(pid).ok_or_else(|| not_found(pid))?;
    store::get_version(c, def.name, id, version)?.ok_or_else(|| not_found(pid))
}

/// `GET Provenance/{id}`.
pub fn read(c: &mut DbConnection, pid: &str) -> Result<ResourceRow> {
    Ok(row(&described(c, pid)?))
}

/// `GET Provenance/{id}/_history/{vid}`: a Provenance has one version.
pub fn vread(c: &mut DbConnection, pid: &str, version: i64) -> Result<VersionRow> {
    let v = described(c, pid)?;
    if version != 1 {
        return Err(ServiceError::VersionNotFound {
            res_type: TYPE.to_owned(),
            id: pid.to_owned(),
            version,
        });
    }
    Ok(as_version(&v))
}

/// What the caller may see, from the organisation codes scoping gives the type (`_access`):
/// the Provenance of resources of types everyone may see, and of resources holding one of
/// the codes.
fn visible(codes: Vec<String>) -> Visible {
    Visible {
        everyone: registry::RESOURCES
            .iter()
            .filter(|d| d.visibility == Visibility::Everyone)
            .map(|d| d.name.to_owned())
            .collect(),
        param: scope::PARAM.to_owned(),
        codes,
    }
}

/// `GET Provenance/_history` and `Provenance/{id}/_history`: each Provenance's one version,
/// newest first.
pub fn history(c: &mut DbConnection, q: &HistoryQuery) -> Result<(Vec<VersionRow>, Option<i64>)> {
    read_tx(c, |c| {
        if let Some(pid) = &q.id {
            let v = described(c, pid)?;
            let inside = q.since.is_none_or(|t| v.last_updated >= t)
                && q.at_or_before.is_none_or(|t| v.last_updated <= t);
            let rows: Vec<VersionRow> = (inside && q.offset == 0 && q.limit > 0)
                .then(|| as_version(&v))
                .into_iter()
                .collect();
            return Ok((rows, Some(i64::from(inside))));
        }
        let mut recorded = Vec::new();
        if let Some(t) = q.since {
            recorded.push(VersionCriterion::Recorded(vec![at(DatePrefix::Ge, t)]));
        }
        if let Some(t) = q.at_or_before {
            recorded.push(VersionCriterion::Recorded(vec![at(DatePrefix::Le, t)]));
        }
        let (rows, total) = versions::search(
            c,
            &VersionSearch {
                criteria: recorded,
                visible: q.holding.clone().map(|(_, codes)| visible(codes)),
                order: VersionOrder::Recorded { desc: true },
                offset: q.offset,
                limit: q.limit,
                count: q.count,
            },
        )?;
        Ok((rows.iter().map(as_version).collect(), total))
    })
}

fn at(prefix: DatePrefix, t: chrono::NaiveDateTime) -> DateMatch {
    DateMatch {
        prefix,
        low: t,
        high: t,
    }
}

/// The types a Provenance's `target` may name.
fn targets() -> &'static [&'static str] {
    registry::find(TYPE)
        .and_then(|d| d.param("target"))
        .map_or(&[], |p| p.targets)
}

fn unsupported(what: &str) -> ServiceError {
    ServiceError::BadRequest(format!(
        "Provenance is searched by _id, _lastUpdated, target (also chained), agent, agent-role and recorded; {what} is not supported"
    ))
}

fn maker(system: Option<&str>, code: Option<&str>) -> Maker {
    match (system, code) {
        (Some(APPLICATION_SYSTEM), code) => Maker::Application(code.map(str::to_owned)),
        (Some(SdsUserId::SYSTEM), code) => Maker::User(code.map(str::to_owned)),
        (None, Some(code)) => Maker::Either(code.to_owned()),
        _ => Maker::Nobody,
    }
}

/// The search's scoping criterion (`scope::restrict`), if any.
fn scoping(criteria: &[Criterion]) -> Option<&Criterion> {
    criteria.iter().find(
        |c| matches!(c, Criterion::Token { param, negate: false, .. } if param == scope::PARAM),
    )
}

/// One search criterion, on versions; the scoping one (`scope::restrict`) is kept in
/// `visible_codes` instead, and also narrows what a chained `target` may stand for.
fn version_criterion(
    c: &mut DbConnection,
    crit: &Criterion,
    scope_by: Option<&Criterion>,
    visible_codes: &mut Option<Vec<String>>,
) -> Result<Option<VersionCriterion>> {
    Ok(Some(match crit {
        Criterion::Id(ids) => VersionCriterion::Exactly(
            ids.iter()
                .filter_map(|pid| target_of(pid))
                .map(|(d, id, v)| (d.name.to_owned(), id.to_owned(), v))
                .collect(),
        ),
        Criterion::LastUpdated(any_of) => VersionCriterion::Recorded(any_of.clone()),
        Criterion::Date { param, any_of } if param == "recorded" => {
            VersionCriterion::Recorded(any_of.clone())
        }
        // A bare id stands for that id in each type a Provenance may point to, so that each
        // is a probe of the versions' key (type, id), not a scan of every version.
        Criterion::Reference { param, any_of } if param == "target" => VersionCriterion::Of(
            any_of
                .iter()
                .flat_map(|r| match &r.target_type {
                    Some(t) => vec![(Some(t.clone()), r.id.clone())],
                    None => targets()
                        .iter()
                        .map(|t| (Some((*t).to_owned()), r.id.clone()))
                        .collect(),
                })
                .collect(),
        ),
        // Scoped below, as every other target criterion (`scope_by`).
        Criterion::Chain {
            param,
            target_type,
            inner,
            ..
        } if param == "target" => {
            let mut criteria = vec![(**inner).clone()];
            // Only what the caller may see (nor does the refusal below count anything else).
            if registry::find(target_type).is_some_and(|d| d.visibility != Visibility::Everyone) {
                criteria.extend(scope_by.cloned());
            }
            let q = store_search::SearchQuery {
                res_type: target_type.clone(),
                criteria,
                sort: Vec::new(),
                offset: 0,
                limit: MAX_CHAINED + 1,
            };
            let (rows, _) = store_search::search(c, &q, false)?;
            if rows.len() as i64 > MAX_CHAINED {
                return Err(ServiceError::BadRequest(format!(
                    "target:{target_type} matches more than {MAX_CHAINED} resources: narrow it"
                )));
            }
            VersionCriterion::Of(
                rows.into_iter()
                    .map(|r| (Some(target_type.clone()), r.id))
                    .collect(),
            )
        }
        Criterion::Token {
            param,
            any_of,
            negate,
        } if param == "agent" => VersionCriterion::MadeBy {
            any_of: any_of
                .iter()
                .map(|t| maker(t.system.as_deref(), t.code.as_deref()))
                .collect(),
            negate: *negate,
        },
        Criterion::Token {
            param,
            any_of,
            negate,
        } if param == "agent-role" => VersionCriterion::Role {
            any_of: any_of
                .iter()
                .filter(|t| {
                    t.system
                        .as_deref()
                        .is_none_or(|s| s == super::seed::BUSINESS_FUNCTION_SYSTEM)
                })
                .map(|t| t.code.clone())
                .collect(),
            negate: *negate,
        },
        Criterion::Token {
            param,
            any_of,
            negate: false,
        } if param == scope::PARAM => {
            *visible_codes = Some(any_of.iter().filter_map(|t| t.code.clone()).collect());
            return Ok(None);
        }
        Criterion::Missing { param, .. } => return Err(unsupported(&format!("{param}:missing"))),
        Criterion::Token { param, .. }
        | Criterion::String { param, .. }
        | Criterion::Date { param, .. }
        | Criterion::Reference { param, .. }
        | Criterion::Chain { param, .. }
        | Criterion::Near { param, .. }
        | Criterion::ReferencedBy { param, .. } => return Err(unsupported(param)),
        Criterion::FreeSlot { .. } => return Err(unsupported("availability")),
        Criterion::AnyOf(_) => return Err(unsupported("the :identifier modifier")),
    }))
}

/// `GET Provenance?…`: the parsed search, on versions.
pub fn search(c: &mut DbConnection, req: &SearchRequest) -> Result<SearchResult> {
    read_tx(c, |c| {
        let mut codes = None;
        let mut criteria = Vec::new();
        let scope_by = scoping(&req.query.criteria);
        for crit in &req.query.criteria {
            criteria.extend(version_criterion(c, crit, scope_by, &mut codes)?);
        }
        let mut order = VersionOrder::Recorded { desc: false };
        if let Some((key, desc)) = req.query.sort.first() {
            order = match key {
                SortKey::LastUpdated => VersionOrder::Recorded { desc: *desc },
                SortKey::Param { param, .. } if param == "recorded" => {
                    VersionOrder::Recorded { desc: *desc }
                }
                SortKey::Id => VersionOrder::Key { desc: *desc },
                SortKey::Param { param, .. } if param == "target" => {
                    VersionOrder::Key { desc: *desc }
                }
                _ => {
                    return Err(ServiceError::BadRequest(
                        "Provenance sorts by recorded, _lastUpdated, target or _id".into(),
                    ))
                }
            };
        }
        let count_only = req.summary == Summary::Count;
        let q = VersionSearch {
            criteria,
            visible: codes.map(visible),
            order,
            offset: req.query.offset,
            limit: if count_only { 0 } else { req.query.limit },
            count: match req.total {
                _ if count_only => Count::All,
                TotalMode::None => Count::No,
                TotalMode::UpTo => Count::UpTo(req.count_up_to),
                TotalMode::Accurate => Count::All,
            },
        };
        let (rows, total) = versions::search(c, &q)?;
        let matches: Vec<ResourceRow> = rows.iter().map(row).collect();
        let mut included = Vec::new();
        let wanted = |t: &str| {
            req.includes
                .iter()
                .any(|i| i.param.name == "target" && i.target.as_deref().is_none_or(|w| w == t))
        };
        let mut by_type: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for v in rows.iter().filter(|v| wanted(&v.res_type)) {
            let ids = by_type.entry(v.res_type.as_str()).or_default();
            if !ids.contains(&v.id) {
                ids.push(v.id.clone());
            }
        }
        for (t, ids) in by_type {
            included.extend(store::get_many(c, t, &ids)?);
        }
        Ok(SearchResult {
            matches,
            included,
            total,
            distances: None,
            notes: Vec::new(),
        })
    })
}

/// The Provenance of every version of these resources (`_revinclude=Provenance:target`).
pub fn of(c: &mut DbConnection, res_type: &str, ids: &[String]) -> Result<Vec<ResourceRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let q = VersionSearch {
        criteria: vec![VersionCriterion::Of(
            ids.iter()
                .map(|id| (Some(res_type.to_owned()), id.clone()))
                .collect(),
        )],
        visible: None,
        order: VersionOrder::Key { desc: false },
        offset: 0,
        limit: i64::MAX,
        count: Count::No,
    };
    Ok(versions::search(c, &q)?.0.iter().map(row).collect())
}

fn page_search(q: &PageQuery, after: &Cursor, limit: i64) -> VersionSearch {
    let mut criteria = Vec::new();
    if let Some(t) = q.since {
        criteria.push(VersionCriterion::Recorded(vec![at(DatePrefix::Gt, t)]));
    }
    if let Some(t) = q.until {
        criteria.push(VersionCriterion::Recorded(vec![at(DatePrefix::Le, t)]));
    }
    if let Some((t, pid)) = after.position() {
        if let Some((def, id, version)) = target_of(pid) {
            criteria.push(VersionCriterion::After {
                at: t,
                res_type: def.name.to_owned(),
                id: id.to_owned(),
                version,
            });
        }
    }
    VersionSearch {
        criteria,
        visible: q
            .required
            .iter()
            .find(|(param, _)| param == scope::PARAM)
            .map(|(_, codes)| visible(codes.clone())),
        order: VersionOrder::Recorded { desc: false },
        offset: 0,
        limit,
        count: Count::No,
    }
}

/// A page of a type for bulk export, after `after` in change order: the stored resources, or
/// for Provenance each version's.
pub fn page(
    c: &mut DbConnection,
    q: &PageQuery,
    after: &Cursor,
    limit: i64,
) -> Result<Vec<PageRow>> {
    if q.res_type != TYPE {
        return Ok(pages::page(c, q, after, limit)?);
    }
    let (rows, _) = versions::search(c, &page_search(q, after, limit))?;
    Ok(rows
        .iter()
        .map(|v| PageRow {
            id: id_of(&v.res_type, &v.id, v.version_id),
            last_updated: v.last_updated,
            content: content(v).to_string(),
        })
        .collect())
}

/// How many resources of a type a bulk export covers.
pub fn count(c: &mut DbConnection, q: &PageQuery) -> Result<i64> {
    if q.res_type != TYPE {
        return Ok(pages::count(c, q)?);
    }
    let mut s = page_search(q, &Cursor::default(), 0);
    s.count = Count::All;
    Ok(versions::search(c, &s)?.1.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(user: Option<&str>, client: Option<&str>, obo: Option<&str>) -> VersionRow {
        VersionRow {
            res_type: "ServiceRequest".into(),
            id: "r.0193".into(),
            version_id: 12,
            last_updated: chrono::DateTime::from_timestamp(1_790_000_000, 0)
                .expect("time")
                .naive_utc(),
            method: "PUT".into(),
            deleted: 0,
            content: "{}".into(),
            author_user: user.map(str::to_owned),
            author_role: "SERVICE_PROVIDER_CLINICIAN_ADMIN".into(),
            author_org: "RCD".into(),
            request_id: "q".into(),
            client_id: client.map(str::to_owned),
            on_behalf_of: obo.map(str::to_owned),
        }
    }

    #[test]
    fn the_id_names_the_version_and_back() {
        let pid = id_of("ServiceRequest", "r.0193", 12);
        assert_eq!(pid, "ServiceRequest.12.r.0193");
        let (def, id, v) = target_of(&pid).expect("a version");
        assert_eq!((def.name, id, v), ("ServiceRequest", "r.0193", 12));
        for bad in [
            "ServiceRequest.012.r.0193",
            "ServiceRequest.-1.r.0193",
            "ServiceRequest.1.",
            "Provenance.1.x",
            "Unknown.1.x",
            "r.0193",
        ] {
            assert!(target_of(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_agent_is_the_application_or_the_user_and_whom_they_acted_for() {
        let agent = |v: &VersionRow| content(v)["agent"][0].clone();
        let app = agent(&version(Some("app-1"), Some("app-1"), None));
        assert_eq!(app["who"]["identifier"]["system"], APPLICATION_SYSTEM);
        assert_eq!(app["who"]["identifier"]["value"], "app-1");
        assert_eq!(
            app["onBehalfOf"]["identifier"]["system"],
            OdsCode::ORGANIZATION_SYSTEM
        );
        assert_eq!(app["onBehalfOf"]["identifier"]["value"], "RCD");
        let delegate = agent(&version(Some("555032006106"), None, Some("555032006107")));
        assert_eq!(delegate["who"]["identifier"]["system"], SdsUserId::SYSTEM);
        assert_eq!(delegate["who"]["identifier"]["value"], "555032006106");
        assert_eq!(
            delegate["onBehalfOf"]["identifier"],
            json!({"system": SdsUserId::SYSTEM, "value": "555032006107"})
        );
        assert_eq!(
            delegate["role"][0]["coding"][0]["code"],
            "SERVICE_PROVIDER_CLINICIAN_ADMIN"
        );
        assert_eq!(
            agent(&version(Some("ers-seed job"), None, None))["who"],
            json!({"display": "ers-seed job"})
        );
        assert_eq!(
            agent(&version(None, None, None))["who"],
            json!({"display": "ers-server"})
        );
        let p = content(&version(None, None, None));
        assert_eq!(p["id"], "ServiceRequest.12.r.0193");
        assert_eq!(
            p["target"][0]["reference"],
            "ServiceRequest/r.0193/_history/12"
        );
        assert_eq!(p["activity"]["coding"][0]["code"], "UPDATE");
        assert_eq!(p["recorded"], p["meta"]["lastUpdated"]);
    }
}

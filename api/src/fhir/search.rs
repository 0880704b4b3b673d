//! FHIR search parameters → storage criteria. Every refusal names the parameter at fault.

use ers_schema::search::SearchQuery;
use ers_schema::search::{
    Criterion, DateMatch, DatePrefix, IndexKind, RefMatch, SortKey, StringMatch, TokenMatch,
};

use super::datetime;
use super::index::{normalise, split_reference};
use super::outcome::Issue;
use super::registry::{self, ParamKind, ResourceDef, SearchParamDef};

pub const DEFAULT_COUNT: i64 = 20;
pub const MAX_COUNT: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    False,
    True,
    Text,
    Data,
    Count,
}

/// `_total`: how far a search counts its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    /// `none`.
    None,
    /// The default, and `estimate`: every match up to `SearchRequest::count_up_to`; past it the
    /// Bundle has no total and says why (an exact count of a large organisation's referrals is
    /// its own query, in proportion to their number).
    UpTo,
    /// `accurate`: every match.
    Accurate,
}

/// How many matches a search counts by default (`ERS_SEARCH_TOTAL_UP_TO` sets it).
pub const COUNT_UP_TO: i64 = 1000;

/// `_include` / `_revinclude` request: `source:param[:target]`.
#[derive(Debug, Clone)]
pub struct Include {
    pub source: &'static str,
    pub param: &'static SearchParamDef,
    pub target: Option<String>,
    /// `:iterate` (R4; STU3's `:recurse`): followed from what was included too, not only from
    /// the matches.
    pub iterate: bool,
}

/// A parsed search: what to ask storage, and how to shape the Bundle.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: SearchQuery,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    /// `page` (e-RS A015's paging, from 1), made an offset once `_count` is known.
    pub page: Option<i64>,
    /// `_revinclude=Task:focus` on referrals: each match's available actions (e-RS A029) and
    /// its provider's deferral, as Tasks (`fhir::task`) made for the answer (Task is searched,
    /// not stored).
    pub action_tasks: bool,
    pub summary: Summary,
    pub elements: Option<Vec<String>>,
    pub total: TotalMode,
    /// With `TotalMode::UpTo`: how many matches are counted.
    pub count_up_to: i64,
    /// The parameters understood, as given (for the `self` link), without paging ones.
    pub accepted: Vec<(String, String)>,
    /// Parameters that were not understood (ignored unless handling is strict).
    pub ignored: Vec<String>,
    /// A `near` search (results carry their distance).
    pub near: Option<Near>,
    /// A `near-postcode` search, resolved to a `near` by the service: postcode, km, parameter.
    pub postcode_near: Option<(String, f64, &'static SearchParamDef)>,
}

/// A parameter over several target types (`registry::BY_TARGET`, `Appointment.actor`) as the
/// parameter of the one type it names: by its `:Type` modifier (`actor:Patient.identifier=…`),
/// else by its values (`actor=Patient/1,Patient/2`). None for any other parameter.
fn by_target(def: &ResourceDef, name: &str, value: &str) -> Result<Option<String>, Issue> {
    let base_end = name.find([':', '.']).unwrap_or(name.len());
    let Some(by) = registry::by_target(def.name, &name[..base_end]) else {
        return Ok(None);
    };
    let types = || by.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ");
    let rest = &name[base_end..];
    let (named, tail) = match rest.strip_prefix(':') {
        Some(m) => match m.split_once('.') {
            Some((t, chain)) => (Some(t.to_owned()), format!(".{chain}")),
            None => (Some(m.to_owned()), String::new()),
        },
        None => (None, rest.to_owned()),
    };
    let named = match named {
        Some(t) => t,
        None => {
            let mut seen: Vec<&str> = value
                .split(',')
                .map(|v| super::index::split_reference(v).map(|(t, _)| t))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    bad(name, format!("names no type: give each value as Type/id, or the type as a modifier (:{}), one of {}", by[0].0, types()))
                })?;
            seen.dedup();
            match seen.as_slice() {
                [one] if tail.is_empty() => (*one).to_owned(),
                [_] => {
                    return Err(bad(
                        name,
                        format!("a chain needs the type as a modifier (:{}.…)", by[0].0),
                    ))
                }
                _ => {
                    return Err(bad(
                        name,
                        format!("names {}: search one type at a time", seen.join(" and ")),
                    ))
                }
            }
        }
    };
    by.iter()
        .find(|(t, _)| *t == named)
        .map(|(_, ours)| Some(format!("{ours}{tail}")))
        .ok_or_else(|| {
            bad(
                name,
                format!(
                    "'{named}': this server finds {}s' {} of types {}",
                    def.name,
                    &name[..base_end],
                    types()
                ),
            )
        })
}

fn bad(param: &str, msg: impl std::fmt::Display) -> Issue {
    Issue::error(
        "invalid",
        "INVALID_VALUE",
        format!("Search parameter '{param}': {msg}"),
    )
    .with_expression(param.to_owned())
}

/// Parameters that shape results rather than select them (handled by other layers).
const RESULT_PARAMS: &[&str] = &["_format", "_pretty"];

/// Fuzz entry point (`fhir-profiles/fuzz`, target `search`) and corpus replay: the first byte
/// picks a hosted type, the rest is a query string; parsing it must never panic.
pub fn fuzz_query(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let def = &super::registry::RESOURCES[usize::from(*first) % super::registry::RESOURCES.len()];
    let text = String::from_utf8_lossy(rest);
    if let Ok(params) = serde_urlencoded::from_str::<Vec<(String, String)>>(&text) {
        let _ = parse(def, &params, true);
        let _ = parse(def, &params, false);
    }
}

/// Parses `params` (query string and form body, in order) for a search of `def`.
pub fn parse(
    def: &'static ResourceDef,
    params: &[(String, String)],
    strict: bool,
) -> Result<SearchRequest, Vec<Issue>> {
    let mut req = SearchRequest {
        query: SearchQuery {
            res_type: def.name.to_owned(),
            criteria: Vec::new(),
            sort: Vec::new(),
            offset: 0,
            limit: DEFAULT_COUNT,
        },
        includes: Vec::new(),
        revincludes: Vec::new(),
        action_tasks: false,
        page: None,
        summary: Summary::False,
        elements: None,
        total: TotalMode::UpTo,
        count_up_to: COUNT_UP_TO,
        accepted: Vec::new(),
        ignored: Vec::new(),
        near: None,
        postcode_near: None,
    };
    let mut issues = Vec::new();
    for (given, value) in params {
        // `actor` and the like stand for the parameter of the type they name.
        let name = match by_target(def, given, value) {
            Ok(Some(ours)) => ours,
            Ok(None) => given.clone(),
            Err(issue) => {
                issues.push(issue);
                continue;
            }
        };
        let name = &name;
        match parse_one(def, name, value, &mut req) {
            Ok(true) => req.accepted.push((given.clone(), value.clone())),
            Ok(false) => {
                if !RESULT_PARAMS.contains(&name.as_str())
                    && !["_count", "_offset", "page"].contains(&name.as_str())
                {
                    req.ignored.push(name.clone());
                }
            }
            Err(issue) => issues.push(issue),
        }
    }
    if let Some(page) = req.page {
        if params.iter().any(|(k, _)| k == "_offset") {
            issues.push(bad(
                "page",
                "give page (e-RS paging, from 1) or _offset, not both",
            ));
        } else {
            req.query.offset = (page - 1).saturating_mul(req.query.limit);
        }
    }
    if let Some(near) = req.near.clone() {
        match near_parts(def, &near) {
            Ok((criterion, sort)) => {
                req.query.criteria.push(criterion);
                if req.query.sort.is_empty() {
                    req.query.sort.push((sort, false));
                }
            }
            Err(issue) => issues.push(issue),
        }
    }
    if req.query.sort.is_empty() {
        if let Some(p) = def
            .default_sort
            .and_then(|(name, desc)| Some((def.param(name)?, desc)))
        {
            req.query.sort.push((
                SortKey::Param {
                    param: p.0.name.to_owned(),
                    kind: index_kind(p.0.kind),
                },
                p.1,
            ));
        }
    }
    if strict {
        for name in &req.ignored {
            issues.push(
                Issue::error(
                    "not-supported",
                    "INVALID_VALUE",
                    format!(
                        "Unknown search parameter '{name}' for {} (Prefer: handling=strict)",
                        def.name
                    ),
                )
                .with_expression(name.clone()),
            );
        }
    }
    if issues.is_empty() {
        Ok(req)
    } else {
        Err(issues)
    }
}

/// Returns Ok(true) when the parameter selects or shapes results and belongs in `self`,
/// Ok(false) when it is paging / formatting or unknown.
fn parse_one(
    def: &'static ResourceDef,
    name: &str,
    value: &str,
    req: &mut SearchRequest,
) -> Result<bool, Issue> {
    match name {
        "_count" => {
            let n: i64 = value
                .parse()
                .map_err(|_| bad(name, format!("'{value}' is not a whole number")))?;
            if !(0..=def.max_count).contains(&n) {
                return Err(bad(
                    name,
                    format!("{n} is out of range 0..{} for {}", def.max_count, def.name),
                ));
            }
            req.query.limit = n;
            return Ok(false);
        }
        // e-RS A015's paging: pages of `_count` from 1 (`_offset` once `_count` is known).
        "page" => {
            let n: i64 =
                value.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    bad(name, format!("'{value}' is not a page number (1, 2, …)"))
                })?;
            req.page = Some(n);
            return Ok(false);
        }
        "_offset" => {
            let n: i64 = value
                .parse()
                .map_err(|_| bad(name, format!("'{value}' is not a whole number")))?;
            if n < 0 {
                return Err(bad(name, "must not be negative"));
            }
            req.query.offset = n;
            return Ok(false);
        }
        "_summary" => {
            req.summary = match value {
                "true" => Summary::True,
                "false" => Summary::False,
                "text" => Summary::Text,
                "data" => Summary::Data,
                "count" => Summary::Count,
                _ => {
                    return Err(bad(
                        name,
                        format!("'{value}' is not one of true, false, text, data, count"),
                    ))
                }
            };
            return Ok(true);
        }
        // A named query ignored would answer another question: refused. The one this server
        // has, Practitioner's onBehalfOf (e-RS A040), is answered before a search is parsed.
        "_query" => {
            return Err(bad(
                name,
                format!("'{value}' is not a named query of {}: the one named query here is Practitioner?_query=onBehalfOf", def.name),
            ));
        }
        "_total" => {
            req.total = match value {
                "none" => TotalMode::None,
                "estimate" => TotalMode::UpTo,
                "accurate" => TotalMode::Accurate,
                _ => {
                    return Err(bad(
                        name,
                        format!("'{value}' is not one of none, estimate, accurate"),
                    ))
                }
            };
            return Ok(true);
        }
        "_elements" => {
            let list: Vec<String> = value
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if list
                .iter()
                .any(|e| !e.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err(bad(name, "expects a comma-separated list of element names"));
            }
            req.elements = Some(list);
            return Ok(true);
        }
        "_sort" => {
            for key in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (desc, key) = key
                    .strip_prefix('-')
                    .map(|k| (true, k))
                    .unwrap_or((false, key));
                let sort = match key {
                    "_id" => SortKey::Id,
                    "_lastUpdated" => SortKey::LastUpdated,
                    // Services by their earliest free slot from now (through schedules).
                    "earliest-slot" => match def
                        .params
                        .iter()
                        .find(|p| p.kind == ParamKind::Availability)
                    {
                        Some(_) => SortKey::EarliestFreeSlot {
                            after: chrono::Utc::now().naive_utc(),
                        },
                        None => {
                            return Err(bad(
                                name,
                                format!("{} cannot be sorted by earliest-slot", def.name),
                            ))
                        }
                    },
                    other => match def.param(other).filter(|p| p.kind != ParamKind::Position) {
                        Some(p) => SortKey::Param {
                            param: p.name.to_owned(),
                            kind: index_kind(p.kind),
                        },
                        None => {
                            return Err(bad(name, format!("cannot sort {} by '{other}'", def.name)))
                        }
                    },
                };
                req.query.sort.push((sort, desc));
            }
            return Ok(true);
        }
        "_include"
        | "_revinclude"
        | "_include:iterate"
        | "_revinclude:iterate"
        | "_include:recurse"
        | "_revinclude:recurse" => {
            if name.starts_with("_revinclude") && value.starts_with("Task:") {
                req.action_tasks = action_tasks(def, name, value)?;
                return Ok(true);
            }
            let incs = parse_include(def, name, value)?;
            if name.starts_with("_include") {
                req.includes.extend(incs);
            } else {
                req.revincludes.extend(incs);
            }
            return Ok(true);
        }
        _ => {}
    }
    if RESULT_PARAMS.contains(&name) {
        return Ok(false);
    }
    if def
        .param(name)
        .is_some_and(|p| p.kind == ParamKind::Availability)
    {
        req.query.criteria.push(availability(name, value)?);
        return Ok(true);
    }
    if let Some(p) = def.params.iter().find(|p| {
        p.kind == ParamKind::Position && (p.name == name || format!("{}-postcode", p.name) == name)
    }) {
        let parts: Vec<&str> = value.split('|').collect();
        if name == p.name {
            let coord = |i: usize, what: &str, limit: f64| -> Result<f64, Issue> {
                parts
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|x| x.is_finite() && x.abs() <= limit)
                    .ok_or_else(|| bad(name, format!("'{value}': {what} must be a number within ±{limit} (near=lat|long|distance|units)")))
            };
            let (latitude, longitude) =
                (coord(0, "latitude", 90.0)?, coord(1, "longitude", 180.0)?);
            let km = radius_km(name, parts.get(2).copied(), parts.get(3).copied())?;
            req.near = Some(Near {
                latitude,
                longitude,
                km,
                param: p,
            });
        } else {
            let postcode = parts
                .first()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad(name, "expects POSTCODE|distance|units"))?;
            let km = radius_km(name, parts.get(1).copied(), parts.get(2).copied())?;
            req.postcode_near = Some((postcode.to_owned(), km, p));
        }
        return Ok(true);
    }
    match criterion(def, name, value)? {
        Some(c) => {
            req.query.criteria.push(c);
            Ok(true)
        }
        None => Ok(false),
    }
}

fn index_kind(k: ParamKind) -> IndexKind {
    match k {
        ParamKind::Token | ParamKind::Uri => IndexKind::Token,
        ParamKind::String => IndexKind::String,
        ParamKind::Date => IndexKind::Date,
        ParamKind::Reference => IndexKind::Reference,
        // Positions are neither sorted by value nor tested for :missing (refused earlier).
        ParamKind::Position | ParamKind::Availability => IndexKind::Token,
    }
}

/// `available=PRIORITY[|from[|to]]`: a service some schedule of which has a free slot usable at
/// the priority, starting in the window.
fn availability(name: &str, value: &str) -> Result<Criterion, Issue> {
    let parts: Vec<&str> = value.split('|').collect();
    let priority = parts.first().copied().unwrap_or_default();
    let codes = registry::priorities_at_or_below(priority);
    if codes.is_empty() {
        return Err(bad(name, format!("'{priority}' is not a priority (ROUTINE, URGENT or TWO_WEEK_WAIT); expected PRIORITY[|from[|to]]")));
    }
    // The window's ends: a date stands for its whole day (from its start, to its end).
    let date = |i: usize| -> Result<Option<(chrono::NaiveDateTime, chrono::NaiveDateTime)>, Issue> {
        match parts.get(i).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => datetime::range(v)
                .map(Some)
                .ok_or_else(|| bad(name, format!("'{v}' is not a date"))),
        }
    };
    // The slot projection knows each slot's service, priority, status and start.
    Ok(Criterion::FreeSlot {
        priorities: codes.iter().map(|c| (*c).to_owned()).collect(),
        from: date(1)?.map_or_else(|| chrono::Utc::now().naive_utc(), |(low, _)| low),
        to: date(2)?.map(|(_, high)| high),
    })
}

/// A `near` search: the point, the radius, and the parameter it applies to.
#[derive(Debug, Clone)]
pub struct Near {
    pub latitude: f64,
    pub longitude: f64,
    pub km: f64,
    pub param: &'static SearchParamDef,
}

pub const MAX_NEAR_KM: f64 = 500.0;

/// `distance|units` → kilometres (km default; mi, m accepted).
fn radius_km(name: &str, distance: Option<&str>, units: Option<&str>) -> Result<f64, Issue> {
    let d: f64 = match distance {
        None | Some("") => 25.0,
        Some(d) => d
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x > 0.0)
            .ok_or_else(|| bad(name, format!("distance '{d}' is not a positive number")))?,
    };
    let km = match units.unwrap_or("km") {
        "km" | "" => d,
        "mi" | "[mi_i]" => d * 1.609_344,
        "m" => d / 1000.0,
        u => return Err(bad(name, format!("units '{u}' are not km, mi or m"))),
    };
    if km > MAX_NEAR_KM {
        return Err(bad(
            name,
            format!("{km:.0} km is more than the {MAX_NEAR_KM:.0} km a search may cover"),
        ));
    }
    Ok(km)
}

/// The criterion and the nearest-first sort of a `near` search on `def`.
pub fn near_parts(def: &'static ResourceDef, near: &Near) -> Result<(Criterion, SortKey), Issue> {
    let p = near.param;
    let inner = |param: &str| Criterion::Near {
        param: param.to_owned(),
        latitude: near.latitude,
        longitude: near.longitude,
        km: near.km,
    };
    if p.targets.is_empty() {
        return Ok((
            inner(p.name),
            SortKey::Distance {
                param: p.name.to_owned(),
                via: None,
                latitude: near.latitude,
                longitude: near.longitude,
            },
        ));
    }
    let via = p
        .paths
        .first()
        .and_then(|r| def.param(r))
        .filter(|r| r.kind == ParamKind::Reference)
        .ok_or_else(|| bad(p.name, "has no reference to follow"))?;
    let target = p.targets.first().copied().unwrap_or_default();
    let geo = registry::find(target)
        .and_then(|t| {
            t.params
                .iter()
                .find(|x| x.kind == ParamKind::Position && x.targets.is_empty())
        })
        .ok_or_else(|| bad(p.name, format!("{target} has no position")))?;
    Ok((
        Criterion::Chain {
            param: via.name.to_owned(),
            target_type: target.to_owned(),
            inner: Box::new(inner(geo.name)),
            also: Vec::new(),
        },
        SortKey::Distance {
            param: geo.name.to_owned(),
            via: Some(via.name.to_owned()),
            latitude: near.latitude,
            longitude: near.longitude,
        },
    ))
}

/// `_revinclude=Task:focus[:ServiceRequest]`: the Tasks of a referral's available actions
/// (e-RS A029) and of its provider's deferral, as the Patient Care API asks for a referral's
/// Tasks with its appointments.
/// Only on a ServiceRequest search, and not `:iterate` (the Tasks refer to nothing further).
fn action_tasks(def: &ResourceDef, name: &str, value: &str) -> Result<bool, Issue> {
    if def.name != "ServiceRequest" {
        return Err(bad(
            name,
            format!("'{value}': Tasks are the available actions of a referral, so only a ServiceRequest search includes them"),
        ));
    }
    if name.contains(':') {
        return Err(bad(
            name,
            format!(
                "'{value}' is not followed with :{}: it includes the Tasks of the matches",
                name.split_once(':').map(|(_, m)| m).unwrap_or_default()
            ),
        ));
    }
    if !matches!(value, "Task:focus" | "Task:focus:ServiceRequest") {
        return Err(bad(
            name,
            format!("'{value}': a Task is included by its focus (Task:focus)"),
        ));
    }
    Ok(true)
}

/// `_include[:iterate]` / `_revinclude[:iterate]`: `Source:param[:Target]`, `Source:*` (every
/// reference parameter of Source) or `*` (of the searched type for `_include`; of every type
/// that may point to it for `_revinclude`).
fn parse_include(
    def: &'static ResourceDef,
    name: &str,
    value: &str,
) -> Result<Vec<Include>, Issue> {
    let iterate = name.contains(':');
    let reverse = name.starts_with("_revinclude");
    let include = |source: &'static ResourceDef, param: &'static SearchParamDef| Include {
        source: source.name,
        param,
        target: None,
        iterate,
    };
    let references = |d: &'static ResourceDef| {
        d.all_params()
            .filter(|p| p.kind == ParamKind::Reference)
            .filter(move |p| !reverse || iterate || p.targets.contains(&def.name))
            .map(move |p| include(d, p))
            .collect::<Vec<_>>()
    };
    if value == "*" {
        return Ok(if reverse {
            registry::referrers_of(def.name)
                .into_iter()
                .filter_map(|(src, p)| registry::find(src).map(|d| include(d, p)))
                .collect()
        } else {
            references(def)
        });
    }
    let mut parts = value.split(':');
    let (source, param, target) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
    let source_def = registry::find(source).ok_or_else(|| {
        bad(
            name,
            format!("'{source}' is not a resource type of this server"),
        )
    })?;
    // Without :iterate an _include starts from the matches, so from the searched type.
    if !reverse && !iterate && source != def.name {
        return Err(bad(
            name,
            format!("'{value}' must start with the searched type {}", def.name),
        ));
    }
    if param == Some("*") && target.is_none() {
        let all = references(source_def);
        if all.is_empty() {
            let to = if reverse && !iterate {
                format!(" that points to {}", def.name)
            } else {
                String::new()
            };
            return Err(bad(
                name,
                format!("{source} has no reference parameter{to}"),
            ));
        }
        return Ok(all);
    }
    let param = param
        .and_then(|p| source_def.param(p))
        .filter(|p| p.kind == ParamKind::Reference)
        .ok_or_else(|| bad(name, format!("'{value}' does not name a reference parameter of {source} (expected Type:param[:target])")))?;
    if let Some(t) = target {
        if !param.targets.contains(&t) {
            return Err(bad(
                name,
                format!("{source}:{} cannot point to '{t}'", param.name),
            ));
        }
    }
    if reverse && !iterate && !param.targets.contains(&def.name) {
        return Err(bad(
            name,
            format!("{source}:{} never points to {}", param.name, def.name),
        ));
    }
    Ok(vec![Include {
        target: target.map(str::to_owned),
        ..include(source_def, param)
    }])
}

/// Splits `a,b\,c` on unescaped commas.
fn split_values(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some(',') | Some('|') | Some('$') | Some('\\')) => {
                if let (Some(n), Some(s)) = (chars.next(), out.last_mut()) {
                    s.push(n);
                }
            }
            ',' => out.push(String::new()),
            c => {
                if let Some(s) = out.last_mut() {
                    s.push(c)
                }
            }
        }
    }
    out
}

/// The most references one chained parameter follows (`a.b.c.d=…` is three).
pub const MAX_CHAIN_LEVELS: usize = 3;

/// One criterion, or None when the parameter is unknown for the type.
fn criterion(
    def: &'static ResourceDef,
    name: &str,
    value: &str,
) -> Result<Option<Criterion>, Issue> {
    if value.is_empty() {
        return Err(bad(name, "has no value"));
    }
    // Reverse chain: `_has:Type:reference-parameter:parameter` (resources another type refers
    // to, where the referring resource matches the parameter).
    if let Some(rest) = name.strip_prefix("_has:") {
        let mut parts = rest.splitn(3, ':');
        let (Some(source), Some(refp), Some(inner)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(
                name,
                "expects _has:Type:reference-parameter:parameter=value",
            ));
        };
        let source_def = registry::find(source)
            .ok_or_else(|| bad(name, format!("'{source}' is not hosted here")))?;
        if registry::is_derived(source_def) {
            return Err(bad(
                name,
                format!("_has:{source} is not supported: search {source}?{refp}=… instead"),
            ));
        }
        if !source_def
            .param(refp)
            .is_some_and(|p| p.kind == ParamKind::Reference && p.targets.contains(&def.name))
        {
            return Err(bad(
                name,
                format!(
                    "'{refp}' is not a reference parameter of {source} that points to {}",
                    def.name
                ),
            ));
        }
        // Nested (`_has:A:p:_has:B:q:param`): each level is one more EXISTS; bounded as chains.
        if name.matches("_has:").count() > MAX_CHAIN_LEVELS {
            return Err(bad(
                name,
                format!("at most {MAX_CHAIN_LEVELS} levels of _has are supported"),
            ));
        }
        let c = criterion(source_def, inner, value)?.ok_or_else(|| {
            bad(
                name,
                format!("'{inner}' is not a search parameter of {source}"),
            )
        })?;
        return Ok(Some(Criterion::ReferencedBy {
            source_type: source.to_owned(),
            param: refp.to_owned(),
            all_of: vec![c],
        }));
    }
    // Chain: `param.child` or `param:Type.child`.
    if let Some((head, child)) = name.split_once('.') {
        let (pname, target) = match head.split_once(':') {
            Some((p, t)) => (p, Some(t)),
            None => (head, None),
        };
        let Some(p) = def.param(pname) else {
            return Ok(None);
        };
        if p.kind != ParamKind::Reference {
            return Err(bad(
                name,
                format!("'{pname}' is not a reference parameter, so it cannot be chained"),
            ));
        }
        let target = match (target, p.targets) {
            (Some(t), _) if p.targets.contains(&t) => t,
            (Some(t), _) => return Err(bad(name, format!("'{pname}' cannot point to '{t}'"))),
            (None, [only]) => only,
            (None, _) => {
                return Err(bad(
                    name,
                    format!(
                        "'{pname}' may point to {}: name one, as {pname}:Type.{child}",
                        p.targets.join(", ")
                    ),
                ))
            }
        };
        let target_def = registry::find(target)
            .ok_or_else(|| bad(name, format!("'{target}' is not hosted here")))?;
        if name.matches('.').count() > MAX_CHAIN_LEVELS {
            return Err(bad(
                name,
                format!("at most {MAX_CHAIN_LEVELS} levels of chaining are supported"),
            ));
        }
        let inner = criterion(target_def, child, value)?.ok_or_else(|| {
            bad(
                name,
                format!("'{child}' is not a search parameter of {target}"),
            )
        })?;
        if matches!(inner, Criterion::Id(_) | Criterion::LastUpdated(_)) {
            // Ids are indexed as references: `patient._id=x` is `patient=x`.
            if let Criterion::Id(ids) = inner {
                let any_of = ids
                    .into_iter()
                    .map(|id| RefMatch {
                        target_type: Some(target.to_owned()),
                        id,
                    })
                    .collect();
                return Ok(Some(Criterion::Reference {
                    param: pname.to_owned(),
                    any_of,
                }));
            }
            return Err(bad(name, format!("'{child}' cannot be used in a chain")));
        }
        return Ok(Some(Criterion::Chain {
            param: pname.to_owned(),
            target_type: target.to_owned(),
            inner: Box::new(inner),
            also: Vec::new(),
        }));
    }
    let (pname, modifier) = match name.split_once(':') {
        Some((p, m)) => (p, Some(m)),
        None => (name, None),
    };
    let values = split_values(value);
    match pname {
        "_id" => {
            if modifier.is_some() {
                return Err(bad(name, "_id takes no modifier"));
            }
            for v in &values {
                if !super::is_valid_id(v) {
                    return Err(bad(name, format!("'{v}' is not a valid id")));
                }
            }
            if values.len() > def.max_ids {
                return Err(bad(
                    name,
                    format!(
                        "lists {} ids; at most {} may be asked for at once",
                        values.len(),
                        def.max_ids
                    ),
                ));
            }
            return Ok(Some(Criterion::Id(values)));
        }
        "_lastUpdated" => {
            if modifier.is_some() {
                return Err(bad(name, "_lastUpdated takes no modifier"));
            }
            let any_of = values
                .iter()
                .map(|v| date_match(name, v))
                .collect::<Result<_, _>>()?;
            return Ok(Some(Criterion::LastUpdated(any_of)));
        }
        _ => {}
    }
    let Some(p) = def.param(pname) else {
        return Ok(None);
    };
    if modifier == Some("missing")
        && !matches!(p.kind, ParamKind::Position | ParamKind::Availability)
    {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(bad(name, "expects true or false")),
        };
        return Ok(Some(Criterion::Missing {
            param: p.name.to_owned(),
            kind: index_kind(p.kind),
            missing,
        }));
    }
    if p.kind == ParamKind::Position {
        return Err(bad(
            name,
            "use near=lat|long|distance|units (no modifiers, not in a chain)",
        ));
    }
    let param = p.name.to_owned();
    let c = match p.kind {
        ParamKind::Position => return Err(bad(name, "use near=lat|long|distance|units")),
        ParamKind::Availability => {
            return Err(bad(
                name,
                "use available=PRIORITY[|from[|to]] (no modifiers, not in a chain)",
            ))
        }
        ParamKind::Token => {
            let negate = match modifier {
                None => false,
                Some("not") => true,
                Some(m) => return Err(bad(name, format!("modifier ':{m}' is not supported on a token parameter (use :not or :missing)"))),
            };
            let mut any_of: Vec<TokenMatch> = values.iter().map(|v| token_match(v)).collect();
            if let Some(expand) = p.expand {
                let mut expanded = Vec::new();
                for m in &any_of {
                    let implied = expand(m);
                    if implied.is_empty() {
                        return Err(bad(
                            name,
                            format!(
                                "'{}' is not one of the codes this parameter takes",
                                m.code.as_deref().unwrap_or("")
                            ),
                        ));
                    }
                    expanded.extend(implied);
                }
                any_of = expanded;
            }
            Criterion::Token {
                param,
                any_of,
                negate,
            }
        }
        ParamKind::Uri => {
            if let Some(m) = modifier {
                return Err(bad(
                    name,
                    format!("modifier ':{m}' is not supported on a uri parameter (use :missing)"),
                ));
            }
            let any_of = values
                .iter()
                .map(|v| TokenMatch {
                    system: None,
                    code: Some(super::index::cap(v).to_owned()),
                })
                .collect();
            Criterion::Token {
                param,
                any_of,
                negate: false,
            }
        }
        ParamKind::String => {
            let any_of = values
                .iter()
                .map(|v| match modifier {
                    None => Ok(StringMatch::StartsWith(
                        super::index::cap(&normalise(v)).to_owned(),
                    )),
                    Some("contains") => Ok(StringMatch::Contains(normalise(v))),
                    Some("exact") => Ok(StringMatch::Exact(super::index::cap(v).to_owned())),
                    Some(m) => Err(bad(name, format!("modifier ':{m}' is not supported on a string parameter (use :exact, :contains or :missing)"))),
                })
                .collect::<Result<_, _>>()?;
            Criterion::String { param, any_of }
        }
        ParamKind::Date => {
            if let Some(m) = modifier {
                return Err(bad(
                    name,
                    format!("modifier ':{m}' is not supported on a date parameter"),
                ));
            }
            let any_of = values
                .iter()
                .map(|v| date_match(name, v))
                .collect::<Result<_, _>>()?;
            Criterion::Date { param, any_of }
        }
        ParamKind::Reference if modifier == Some("identifier") => {
            return by_identifier(p, name, value).map(Some)
        }
        ParamKind::Reference => {
            let forced_type = match modifier {
                None => None,
                Some(t) if p.targets.contains(&t) => Some(t.to_owned()),
                Some(m) => {
                    return Err(bad(
                        name,
                        format!(
                            "modifier ':{m}' is neither :identifier nor a type '{}' can point to",
                            p.name
                        ),
                    ))
                }
            };
            let any_of = values
                .iter()
                .map(|v| {
                    let local = v
                        .rsplit_once("/FHIR/R4/")
                        .map(|(_, rest)| rest)
                        .unwrap_or(v);
                    if let Some((t, id)) = split_reference(local) {
                        if !p.targets.contains(&t) {
                            return Err(bad(
                                name,
                                format!("'{v}': {} cannot point to {t}", p.name),
                            ));
                        }
                        Ok(RefMatch {
                            target_type: Some(t.to_owned()),
                            id: id.to_owned(),
                        })
                    } else if super::is_valid_id(local) {
                        Ok(RefMatch {
                            target_type: forced_type.clone(),
                            id: local.to_owned(),
                        })
                    } else {
                        Err(bad(
                            name,
                            format!("'{v}' is not a reference (Type/id or id)"),
                        ))
                    }
                })
                .collect::<Result<_, _>>()?;
            Criterion::Reference { param, any_of }
        }
    };
    Ok(Some(c))
}

/// `[system|]code`, as a token search value gives it.
fn token_match(v: &str) -> TokenMatch {
    match v.split_once('|') {
        Some((s, c)) => TokenMatch {
            system: Some(super::index::cap(s).to_owned()),
            code: (!c.is_empty()).then(|| super::index::cap(c).to_owned()),
        },
        None => TokenMatch {
            system: None,
            code: Some(super::index::cap(v).to_owned()),
        },
    }
}

/// `param:identifier=[system|]value`: resources whose reference carries that business
/// identifier (`Reference.identifier`, as e-RS sends references: an NHS number, an ODS code, a
/// UBRN; indexed as the token parameter `{param}:identifier`, `index::identifier_param`), or
/// points to a resource here that has it (the chain `param:Type.identifier`, to each type it
/// may point to that has identifiers).
fn by_identifier(p: &SearchParamDef, name: &str, value: &str) -> Result<Criterion, Issue> {
    let mut any_of = vec![Criterion::Token {
        param: super::index::identifier_param(p.name),
        any_of: split_values(value).iter().map(|v| token_match(v)).collect(),
        negate: false,
    }];
    for target in p.targets.iter().filter_map(|t| registry::find(t)) {
        if !target
            .param("identifier")
            .is_some_and(|i| i.kind == ParamKind::Token)
        {
            continue;
        }
        let inner = criterion(target, "identifier", value)?
            .ok_or_else(|| bad(name, format!("{} has no identifier parameter", target.name)))?;
        any_of.push(Criterion::Chain {
            param: p.name.to_owned(),
            target_type: target.name.to_owned(),
            inner: Box::new(inner),
            also: Vec::new(),
        });
    }
    Ok(Criterion::AnyOf(any_of))
}

fn date_match(name: &str, v: &str) -> Result<DateMatch, Issue> {
    let prefixes = [
        ("eq", DatePrefix::Eq),
        ("ne", DatePrefix::Ne),
        ("lt", DatePrefix::Lt),
        ("gt", DatePrefix::Gt),
        ("le", DatePrefix::Le),
        ("ge", DatePrefix::Ge),
        ("sa", DatePrefix::Sa),
        ("eb", DatePrefix::Eb),
    ];
    let (prefix, rest) = prefixes
        .iter()
        .find_map(|(p, d)| v.strip_prefix(p).map(|r| (*d, r)))
        .unwrap_or((DatePrefix::Eq, v));
    let (low, high) = datetime::range(rest).ok_or_else(|| bad(name, format!("'{v}' is not a valid date (a prefix such as ge, then YYYY[-MM[-DD[Thh:mm[:ss][Z|+hh:mm]]]])")))?;
    Ok(DateMatch { prefix, low, high })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search corpus of `fhir-profiles/fuzz` replays without a panic.
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        let dir = std::path::PathBuf::from(
            // The package's folder where this test runs (a build may be reused from another
            // checkout of the same tree: the compile-time path is the fallback).
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../fhir-profiles/fuzz/corpus/search");
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("corpus folder").flatten() {
            fuzz_query(&std::fs::read(e.path()).expect("corpus file"));
            n += 1;
        }
        assert!(n >= 5, "{n} inputs");
    }

    fn patient() -> &'static ResourceDef {
        registry::find("Patient").expect("registered")
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn unknown_params_are_ignored_or_refused_when_strict() {
        let r = parse(patient(), &p(&[("foo", "1"), ("family", "smith")]), false).expect("lenient");
        assert_eq!(r.ignored, vec!["foo".to_string()]);
        assert_eq!(r.accepted.len(), 1);
        let e = parse(patient(), &p(&[("foo", "1")]), true).expect_err("strict");
        assert!(e[0].diagnostics.contains("foo"));
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let e = parse(patient(), &p(&[("birthdate", "ge19x")]), false).expect_err("bad date");
        assert!(
            e[0].diagnostics.contains("birthdate"),
            "{}",
            e[0].diagnostics
        );
        let e = parse(patient(), &p(&[("_count", "-1")]), false).expect_err("bad count");
        assert!(e[0].diagnostics.contains("_count"));
        let e = parse(patient(), &p(&[("family:sounds", "x")]), false).expect_err("bad modifier");
        assert!(e[0].diagnostics.contains(":sounds"));
    }

    #[test]
    fn escaped_commas() {
        assert_eq!(
            split_values(r"a,b\,c"),
            vec!["a".to_string(), "b,c".to_string()]
        );
    }
}

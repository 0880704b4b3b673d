//! `POST /FHIR/R4` with a `transaction` or `batch` Bundle: creates (POST) and updates (PUT) for
//! bulk loading, e.g. a service's slots, and patches, deletes, reads and searches (PATCH,
//! DELETE, GET). A
//! transaction is all or nothing, runs its deletes first and its reads last, and its entries may
//! refer to each other by `urn:uuid:` fullUrl; a batch answers each entry on its own, in order.

use crate::fhir::At;
use actix_web::http::header::{EntityTag, IfNoneMatch};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use ers_schema::{read_tx, write_tx, ResourceRow};
use serde_json::{json, Value};

use super::caller::author;
use super::handlers::{
    authorise, base_url, check_id, conditional_criteria, draft, holds, ok_outcome, on_conn,
    parse_query, plain_writes, prefer, read_shape, read_subset, touched_version, Search,
};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::datetime;
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::search::SearchRequest;
use crate::security::permissions::Action;
use crate::service::audit::{self as audit, AuditDraft, Outcome, Touched};
use crate::service::resource::{self as svc, Created, IfMatch};
use crate::service::scope;
use crate::service::ServiceError;
use crate::startup::AppState;
use ers_schema::search::SearchQuery;

const MAX_ENTRIES: usize = 1000;

/// One entry, checked before anything is written or read.
struct Planned {
    def: &'static ResourceDef,
    interaction: Interaction,
    /// For a create: the id assigned up front (a transaction entry with a `urn:uuid:` fullUrl).
    create_id: Option<String>,
    if_match: Option<i64>,
    /// A `HEAD` entry: answered as its `GET`, without the resource.
    head: bool,
}

/// What an entry asks for.
enum Interaction {
    /// `POST Type`, with `request.ifNoneExist` criteria if given (conditional create).
    Create(Value, Option<(SearchQuery, String)>),
    /// `PUT Type/id`.
    Update(String, Value),
    /// `PUT Type?criteria` (conditional update).
    ConditionalUpdate((SearchQuery, String), Value),
    /// `PATCH Type/id`, with a JSON Patch in a Binary.
    Patch(String, json_patch::Patch),
    /// `DELETE Type/id`.
    Delete(String),
    /// `GET Type/id`, with the version the client holds (`request.ifNoneMatch`) if given, and
    /// the subset asked for (`_summary`, `_elements`).
    Read(String, Option<String>, Option<SearchRequest>),
    /// `GET Type/id/_history/n`, with the subset asked for.
    VRead(String, i64, Option<SearchRequest>),
    /// `GET Type?criteria`.
    Search(Box<Search>),
}

/// The rank of the entries that only read (`Interaction::rank`).
const READS: u8 = 2;

impl Interaction {
    /// When a transaction runs the entry (http.html#trules): deletes first, then creates and
    /// updates, then reads, which see what the others wrote. Creates and updates keep the
    /// Bundle's order among themselves (FHIR puts every create first), so that an entry's
    /// conditional reference (`Organization?identifier=…`) finds what an earlier entry wrote,
    /// as this server resolves it when the entry is written — except that what an entry
    /// refers to by `urn:uuid:` runs before it (`in_run_order`).
    fn rank(&self) -> u8 {
        match self {
            Interaction::Delete(_) => 0,
            Interaction::Create(..)
            | Interaction::Update(..)
            | Interaction::ConditionalUpdate(..)
            | Interaction::Patch(..) => 1,
            Interaction::Read(..) | Interaction::VRead(..) | Interaction::Search(_) => READS,
        }
    }

    /// The resource an entry writes whole (not a patch's).
    fn resource(&self) -> Option<&Value> {
        match self {
            Interaction::Create(r, _)
            | Interaction::Update(_, r)
            | Interaction::ConditionalUpdate(_, r) => Some(r),
            _ => None,
        }
    }

    /// The `Type/id` a delete, an update or a patch names (which one transaction may touch only
    /// once).
    fn names(&self, def: &ResourceDef) -> Option<String> {
        match self {
            Interaction::Delete(id) | Interaction::Update(id, _) | Interaction::Patch(id, _) => {
                Some(format!("{}/{id}", def.name))
            }
            _ => None,
        }
    }
}

/// The order a transaction runs its entries in: by rank (deletes, writes, reads), and among the
/// writes, the entry that creates what another refers to by its `urn:uuid:` fullUrl before
/// that other (FHIR gives the entries of a transaction no order among its creates: a
/// reference to a later entry is as good as one to an earlier). Otherwise the Bundle's order;
/// the entries of a cycle keep it too. With each entry, what it refers to that a later entry
/// creates (`Type/id`: only in a cycle), which it is written taking as there
/// (`resource::with_forward`) and the transaction checks at its end.
fn in_run_order(mut planned: Vec<(usize, Planned)>) -> Vec<(usize, Planned, Vec<String>)> {
    planned.sort_by_key(|(_, p)| p.interaction.rank());
    let created: std::collections::HashMap<String, usize> = planned
        .iter()
        .enumerate()
        .filter_map(|(k, (_, p))| Some((format!("{}/{}", p.def.name, p.create_id.as_ref()?), k)))
        .collect();
    if created.is_empty() {
        return planned
            .into_iter()
            .map(|(i, p)| (i, p, Vec::new()))
            .collect();
    }
    // What each entry (by position in `planned`) refers to that another entry creates.
    let needs: Vec<Vec<usize>> = planned
        .iter()
        .enumerate()
        .map(|(k, (_, p))| {
            p.interaction
                .resource()
                .map(|r| {
                    crate::fhir::index::all_references(r)
                        .into_iter()
                        .filter_map(|(_, to)| created.get(to.as_str()).copied())
                        .filter(|j| *j != k)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut placed = vec![false; planned.len()];
    let mut order: Vec<usize> = Vec::with_capacity(planned.len());
    while let Some(first) = (0..planned.len()).find(|k| !placed[*k]) {
        // Among the entries of the lowest rank left (they are sorted by rank), the first whose
        // every creator has run; in a cycle, the first.
        let rank = planned[first].1.interaction.rank();
        let k = (first..planned.len())
            .take_while(|k| planned[*k].1.interaction.rank() == rank)
            .filter(|k| !placed[*k])
            .find(|k| needs[*k].iter().all(|j| placed[*j]))
            .unwrap_or(first);
        placed[k] = true;
        order.push(k);
    }
    // What each entry refers to that runs after it.
    let mut ran = vec![false; planned.len()];
    let mut forward: Vec<Vec<String>> = vec![Vec::new(); planned.len()];
    for &k in &order {
        forward[k] = needs[k]
            .iter()
            .filter(|j| !ran[**j])
            .filter_map(|j| {
                let (_, p) = &planned[*j];
                Some(format!("{}/{}", p.def.name, p.create_id.as_ref()?))
            })
            .collect();
        ran[k] = true;
    }
    let mut slots: Vec<Option<(usize, Planned)>> = planned.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|k| {
            let (i, p) = slots[k].take()?;
            Some((i, p, std::mem::take(&mut forward[k])))
        })
        .collect()
}

/// Transaction entries created with a `urn:uuid:` fullUrl get their ids now, and every
/// reference to that fullUrl in the Bundle becomes `Type/id`: one transaction can load a
/// service, its schedule and its slots. Returns the assigned id of each entry. A conditional
/// entry gets none (whether it creates, and what, is known only when it runs): refer to what
/// it writes with a conditional reference (`Type?identifier=…`) instead.
fn resolve_placeholders(entries: &mut [Value]) -> Vec<Option<String>> {
    let mut assigned = std::collections::HashMap::new();
    let mut ids = Vec::with_capacity(entries.len());
    for e in entries.iter() {
        let full_url = e.get("fullUrl").and_then(Value::as_str);
        let method = e.at("/request/method").and_then(Value::as_str);
        let url = e.at("/request/url").and_then(Value::as_str);
        let conditional = e.at("/request/ifNoneExist").is_some();
        match (full_url, method, url) {
            (Some(f), Some("POST"), Some(t))
                if f.starts_with("urn:uuid:") && !t.contains(['/', '?']) && !conditional =>
            {
                let id = crate::fhir::new_id();
                assigned.insert(f.to_owned(), format!("{t}/{id}"));
                ids.push(Some(id));
            }
            _ => ids.push(None),
        }
    }
    if !assigned.is_empty() {
        for e in entries.iter_mut() {
            if let Some(r) = e.get_mut("resource") {
                crate::fhir::for_each_reference_mut(r, &mut |s| {
                    if let Some(to) = assigned.get(s.as_str()) {
                        *s = to.clone();
                    }
                });
            }
        }
    }
    ids
}

/// A search entry's error names the entry's `request.url`, where its parameters are.
fn at_request_url(e: ApiError) -> ApiError {
    match e {
        ApiError::Search(issues) => ApiError::Search(
            issues
                .into_iter()
                .map(|i| i.with_expression("request.url".to_owned()))
                .collect(),
        ),
        other => other,
    }
}

/// The entry's resource, which a create or an update must have.
fn entry_resource(e: &Value, transaction: bool) -> Result<Value, ApiError> {
    let resource = e
        .get("resource")
        .cloned()
        .ok_or_else(|| ApiError::BadRequest("the entry has no resource to write".into()))?;
    // What is left of `urn:uuid:` references after the transaction's own were resolved
    // names nothing this Bundle creates; stored, it would point nowhere.
    if let Some((at, r)) = crate::fhir::index::all_references(&resource)
        .into_iter()
        .find(|(_, r)| r.starts_with("urn:"))
    {
        return Err(ApiError::BadRequest(format!(
            "{at}: '{r}' names no entry this {} creates by POST (an entry with request.ifNoneExist, a conditional update or a batch entry cannot be referred to by its fullUrl: refer to what it writes by search, e.g. Organization?identifier=system|value)",
            if transaction { "transaction" } else { "batch" }
        )));
    }
    Ok(resource)
}

/// A `PATCH` entry's JSON Patch: a Binary resource holding it (FHIR's form for a patch in a
/// Bundle: `contentType` application/json-patch+json, the document base64 in `data`).
fn entry_patch(e: &Value) -> Result<json_patch::Patch, ApiError> {
    use base64::Engine;
    let binary = e
        .get("resource")
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Binary"));
    let content_type = binary
        .and_then(|b| b.get("contentType"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(data) = binary
        .filter(|_| content_type == "application/json-patch+json")
        .and_then(|b| b.get("data"))
        .and_then(Value::as_str)
    else {
        return Err(ApiError::BadRequest(
            "a PATCH entry's resource is a Binary with contentType application/json-patch+json and the JSON Patch document, base64, in data (FHIRPath Patch is not supported)".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| {
            ApiError::BadRequest(format!("the PATCH entry's Binary.data is not base64: {e}"))
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the PATCH entry's Binary.data is not a JSON Patch document (an array of operations, each with 'op' and 'path'): {e}"
        ))
    })
}

/// One entry's request, checked: its type, interaction, the caller's right to it.
fn plan_entry(
    req: &HttpRequest,
    e: &Value,
    caller: &Caller,
    transaction: bool,
    strict: bool,
    state: &AppState,
) -> Result<Planned, ApiError> {
    let text = |path: &str| e.at(path).and_then(Value::as_str).unwrap_or_default();
    let (method, url) = (text("/request/method"), text("/request/url"));
    let head = method == "HEAD";
    let method = if head { "GET" } else { method };
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    let def = registry::find(segments[0]).ok_or_else(|| {
        ApiError::BadRequest(match segments[0] {
            "AuditEvent" | "Binary" => format!(
                "request.url '{url}': {} is read with its own request, not in a Bundle",
                segments[0]
            ),
            _ => format!("request.url '{url}' does not name a hosted type"),
        })
    })?;
    let id = |id: &str| check_id(id).map(|_| id.to_owned());
    let interaction = match (method, &segments[1..], query) {
        ("POST", [], None) => Interaction::Create(
            entry_resource(e, transaction)?,
            e.at("/request/ifNoneExist")
                .and_then(Value::as_str)
                .map(|q| conditional_criteria(def, q, "request.ifNoneExist", caller))
                .transpose()?,
        ),
        ("PUT", [i], None) => Interaction::Update(id(i)?, entry_resource(e, transaction)?),
        ("PUT", [], Some(q)) => Interaction::ConditionalUpdate(
            conditional_criteria(def, q, "request.url", caller)?,
            entry_resource(e, transaction)?,
        ),
        ("PATCH", [i], None) => Interaction::Patch(id(i)?, entry_patch(e)?),
        ("DELETE", [i], None) => Interaction::Delete(id(i)?),
        ("GET", [i], q) => Interaction::Read(
            id(i)?,
            e.at("/request/ifNoneMatch")
                .and_then(Value::as_str)
                .map(str::to_owned),
            read_subset(q.unwrap_or_default(), def).map_err(at_request_url)?,
        ),
        ("GET", [i, "_history", v], q) => Interaction::VRead(
            id(i)?,
            v.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "request.url '{url}': '{v}' is not a version id (versions are 1, 2, 3...)"
                ))
            })?,
            read_subset(q.unwrap_or_default(), def).map_err(at_request_url)?,
        ),
        ("GET", [], q) => Interaction::Search(Box::new(
            Search::prepare(
                def,
                // The request's headers apply to its entries: a Slot search is narrowed by
                // NHSD-eRS-Comm-Rule-Org as it is on its own.
                parse_query(q.unwrap_or_default())?
                    .into_iter()
                    .chain(super::caller::commissioning_criterion(req, def.name)?)
                    .collect(),
                None,
                strict,
                caller,
                state,
            )
            .map_err(at_request_url)?,
        )),
        ("POST" | "PUT" | "PATCH" | "DELETE" | "GET", ..) => {
            return Err(ApiError::BadRequest(format!(
                "request {} {url}: an entry is POST Type (with request.ifNoneExist if wanted), PUT Type/id, PUT Type?criteria, PATCH Type/id, DELETE Type/id, GET (or HEAD) Type/id, Type/id/_history/n or Type?criteria",
                if head { "HEAD" } else { method }
            )))
        }
        _ => {
            return Err(ApiError::BadRequest(format!(
                "request.method '{method}': an entry is GET, HEAD, POST, PUT, PATCH or DELETE"
            )))
        }
    };
    let action = match &interaction {
        Interaction::Create(..) => Action::Create,
        Interaction::Update(..) | Interaction::Patch(..) => Action::Update,
        // It may create as well as change.
        Interaction::ConditionalUpdate(..) => {
            authorise(def.name, Action::Create, caller)?;
            Action::Update
        }
        Interaction::Delete(_) => Action::Delete,
        Interaction::Read(..) | Interaction::VRead(..) => Action::Read,
        // Authorised as it was prepared.
        Interaction::Search(_) => Action::Search,
    };
    if matches!(action, Action::Create | Action::Update | Action::Delete) {
        plain_writes(def, "in a Bundle")?;
    }
    authorise(def.name, action, caller)?;
    let if_match = e
        .at("/request/ifMatch")
        .and_then(Value::as_str)
        .map(|v| v.trim_start_matches("W/").trim_matches('"').parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::BadRequest("request.ifMatch is not W/\"n\"".into()))?;
    Ok(Planned {
        def,
        interaction,
        create_id: None,
        if_match,
        head,
    })
}

fn plan(
    req: &HttpRequest,
    entries: &[Value],
    assigned: &[Option<String>],
    caller: &Caller,
    transaction: bool,
    strict: bool,
    state: &AppState,
) -> Result<Vec<Result<Planned, ApiError>>, ApiError> {
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::BadRequest(format!(
            "the Bundle has {} entries; at most {MAX_ENTRIES}",
            entries.len()
        )));
    }
    let mut planned = Vec::with_capacity(entries.len());
    // What the transaction's deletes and updates name, and by which entry.
    let mut named = std::collections::HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let p = plan_entry(req, e, caller, transaction, strict, state).map(|p| Planned {
            create_id: assigned.get(i).cloned().flatten(),
            ..p
        });
        let p = match p {
            Ok(p) if transaction => match p.interaction.names(p.def) {
                Some(target) => match named.insert(target.clone(), i) {
                    Some(j) => Err(ApiError::BadRequest(format!(
                        "{target} is also deleted or updated by Bundle.entry[{j}]: a transaction changes each resource once"
                    ))),
                    None => Ok(p),
                },
                None => Ok(p),
            },
            p => p,
        };
        match p {
            // A transaction is refused whole by its first bad entry, before anything is written.
            Err(err) if transaction => return Err(ApiError::InEntry(i, Box::new(err))),
            p => planned.push(p),
        }
    }
    Ok(planned)
}

/// A transaction entry's identifier that an earlier entry of the same transaction has just
/// written is the Bundle's own contradiction, not a resource already on the server (which the
/// failed transaction leaves unwritten): said so, naming that entry.
fn earlier_entry(e: ServiceError, wrote: &[(usize, String)]) -> ApiError {
    match e {
        ServiceError::Duplicate {
            res_type,
            system,
            value,
            existing,
        } => match wrote
            .iter()
            .find(|(_, w)| *w == format!("{res_type}/{existing}"))
        {
            Some((j, _)) => ApiError::Service(ServiceError::Invalid(vec![Issue::error(
                "duplicate",
                "INAPPROPRIATE_VALUE",
                format!("{res_type} with identifier {system}|{value} is also written by Bundle.entry[{j}]: a transaction writes each identifier once"),
            )
            .with_expression(format!("{res_type}.identifier"))])),
            None => ApiError::Service(ServiceError::Duplicate {
                res_type,
                system,
                value,
                existing,
            }),
        },
        other => ApiError::Service(other),
    }
}

/// An entry's `response` for a version of a resource.
fn response(base: &str, status: &str, row: &ResourceRow) -> Value {
    json!({
        "status": status,
        "location": format!("{base}/{}/{}/_history/{}", row.res_type, row.id, row.version_id),
        "etag": format!("W/\"{}\"", row.version_id),
        "lastModified": datetime::instant(row.last_updated),
    })
}

/// What one entry did: its answer, what it wrote (`Type/id`), and what it showed (for the
/// audit: the interaction's outcome and the resources).
struct Done {
    entry: Value,
    wrote: Option<String>,
    shown: Option<(Outcome, Vec<Touched>)>,
}

/// Runs one planned entry on `c` (in the transaction's own transaction, if it is one); a
/// `HEAD` entry is answered as its `GET` without the resource (its status, ETag and
/// Last-Modified in `response`).
fn run(
    c: &mut ers_schema::DbConnection,
    p: Planned,
    at: &Acting<'_>,
    transaction: bool,
) -> Result<Done, ApiError> {
    let head = p.head;
    let mut done = run_interaction(c, p, at, transaction)?;
    if head {
        if let Some(entry) = done.entry.as_object_mut() {
            entry.shift_remove("resource");
        }
    }
    Ok(done)
}

fn run_interaction(
    c: &mut ers_schema::DbConnection,
    p: Planned,
    at: &Acting<'_>,
    transaction: bool,
) -> Result<Done, ApiError> {
    let Planned {
        def,
        interaction,
        create_id,
        if_match,
        head: _,
    } = p;
    let w = svc::Writer::new(at.who, at.draft);
    let precondition = IfMatch {
        version: if_match,
        required: at.require_if_match,
    };
    let written = |done: Created| {
        let (status, row) = match &done {
            Created::New(row) => ("201 Created", row),
            Created::Existing(row) => ("200 OK", row),
        };
        Done {
            entry: json!({"response": response(at.base, status, row)}),
            wrote: Some(format!("{}/{}", row.res_type, row.id)),
            shown: None,
        }
    };
    let resolved = |c: &mut ers_schema::DbConnection, mut resource: Value| {
        if transaction {
            svc::resolve_conditional_references(c, &mut resource)?;
        }
        svc::resolve_logical_references(c, &mut resource)?;
        Ok::<_, ServiceError>(resource)
    };
    Ok(match interaction {
        Interaction::Create(resource, if_none_exist) => {
            let resource = resolved(c, resource)?;
            written(svc::create(c, def, resource, &w, if_none_exist, create_id)?)
        }
        Interaction::Update(id, resource) => {
            let resource = resolved(c, resource)?;
            written(Created::Existing(svc::update(
                c,
                def,
                &id,
                resource,
                precondition,
                &w,
            )?))
        }
        Interaction::ConditionalUpdate(criteria, resource) => {
            let resource = resolved(c, resource)?;
            written(svc::conditional_update(
                c,
                def,
                criteria,
                resource,
                precondition,
                &w,
            )?)
        }
        Interaction::Patch(id, operations) => written(Created::Existing(svc::patch(
            c,
            def,
            &id,
            &operations,
            precondition,
            &w,
            &|patched| negotiate::as_parsed(patched, at.base),
        )?)),
        Interaction::Delete(id) => {
            let precondition = IfMatch {
                required: false,
                ..precondition
            };
            svc::delete(c, def, &id, precondition, at.who, at.draft)?;
            Done {
                entry: json!({"response": {"status": "204 No Content"}}),
                wrote: Some(format!("{}/{id}", def.name)),
                shown: None,
            }
        }
        Interaction::Read(id, held, subset) => {
            let row = svc::read(c, def, &id)?;
            scope::check(c, def, &id, at.caller)?;
            let mut response = response(at.base, "200 OK", &row);
            let tag = EntityTag::new_weak(row.version_id.to_string());
            let entry = match held.as_deref().map(if_none_match) {
                // The client's copy is current.
                Some(Some(h)) if holds(&h, &tag) => {
                    response["status"] = json!("304 Not Modified");
                    json!({"response": response})
                }
                _ => json!({
                    "fullUrl": format!("{}/{}/{}", at.base, row.res_type, row.id),
                    "resource": as_read(&row.content, subset.as_ref(), def)?,
                    "response": response,
                }),
            };
            Done {
                entry,
                wrote: None,
                shown: Some((ok_outcome("R", "read"), vec![audit::touched(&row)])),
            }
        }
        Interaction::VRead(id, version, subset) => {
            scope::check(c, def, &id, at.caller)?;
            let v = svc::vread(c, def, &id, version)?;
            Done {
                entry: json!({
                    "fullUrl": format!("{}/{}/{}", at.base, v.res_type, v.id),
                    "resource": as_read(&v.content, subset.as_ref(), def)?,
                    "response": {
                        "status": "200 OK",
                        "etag": format!("W/\"{}\"", v.version_id),
                        "lastModified": datetime::instant(v.last_updated),
                    },
                }),
                wrote: None,
                shown: Some((ok_outcome("R", "vread"), vec![touched_version(&v)])),
            }
        }
        Interaction::Search(search) => {
            let result = search.execute(c, None, at.caller)?;
            let (bundle, touched) = search.bundle(at.base, result, Vec::new())?;
            Done {
                entry: json!({"resource": stored(&bundle)?, "response": {"status": "200 OK"}}),
                wrote: None,
                shown: Some((ok_outcome("E", "search-type"), touched)),
            }
        }
    })
}

/// `request.ifNoneMatch`: `*` or entity tags, as the header has them; `None` if it does not
/// parse (then ignored, as the header would be).
fn if_none_match(raw: &str) -> Option<IfNoneMatch> {
    if raw.trim() == "*" {
        return Some(IfNoneMatch::Any);
    }
    raw.split(',')
        .map(|t| t.trim().parse::<EntityTag>().ok())
        .collect::<Option<Vec<_>>>()
        .map(IfNoneMatch::Items)
}

/// A read entry's resource: the version, or the subset asked for.
fn as_read(
    content: &str,
    subset: Option<&SearchRequest>,
    def: &ResourceDef,
) -> Result<Value, ApiError> {
    match read_shape(content, subset, def)? {
        Some(v) => Ok(v),
        None => stored(content),
    }
}

fn stored(content: &str) -> Result<Value, ApiError> {
    serde_json::from_str(content)
        .map_err(|e| ApiError::Internal(format!("stored JSON unreadable: {e}")))
}

/// Who runs a Bundle's entries, and how.
struct Acting<'a> {
    caller: &'a Caller,
    who: &'a ers_schema::Author,
    draft: &'a AuditDraft,
    base: &'a str,
    require_if_match: bool,
}

pub async fn post(
    req: HttpRequest,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let bundle = negotiate::parse_body(&req, &body)?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::BadRequest(
            "POST to the base takes a Bundle of type transaction or batch".into(),
        ));
    }
    let kind = bundle
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let transaction = match kind.as_str() {
        "transaction" => true,
        "batch" => false,
        other => {
            return Err(ApiError::BadRequest(format!(
                "Bundle.type '{other}' is not transaction or batch"
            )))
        }
    };
    let mut entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let assigned = if transaction {
        resolve_placeholders(&mut entries)
    } else {
        Vec::new()
    };
    let strict = prefer(&req).strict;
    let planned = plan(
        &req,
        &entries,
        &assigned,
        &caller,
        transaction,
        strict,
        &state,
    )?;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let base = base_url(&req, &state);
    let require_if_match = state.settings.require_if_match;
    let audit_draft = d.clone();
    let done: Vec<Result<Done, ApiError>> = on_conn(
        &state,
        move |c| -> Result<Vec<Result<Done, ApiError>>, ApiError> {
            let at = Acting {
                caller: &caller,
                who: &who,
                draft: &d,
                base: &base,
                require_if_match,
            };
            if transaction {
                // All entries in one transaction, deletes first and reads last: the first
                // failure undoes every write. One that only reads takes no writer's turn.
                let writes = planned
                    .iter()
                    .any(|p| p.as_ref().map_or(true, |p| p.interaction.rank() < READS));
                let all = |c: &mut ers_schema::DbConnection| -> Result<Vec<Result<Done, ApiError>>, ApiError> {
                    let order = in_run_order(
                        planned
                            .into_iter()
                            .enumerate()
                            .map(|(i, p)| {
                                p.map(|p| (i, p))
                                    .map_err(|e| ApiError::InEntry(i, Box::new(e)))
                            })
                            .collect::<Result<_, _>>()?,
                    );
                    let mut done: Vec<Option<Done>> = (0..order.len()).map(|_| None).collect();
                    let mut wrote = Vec::<(usize, String)>::new();
                    let mut owed = Vec::<(usize, String)>::new();
                    for (i, p, forward) in order {
                        let d = svc::with_forward(&forward, || run(c, p, &at, true)).map_err(|e| {
                            let e = match e {
                                ApiError::Service(e) => earlier_entry(e, &wrote),
                                other => other,
                            };
                            ApiError::InEntry(i, Box::new(e))
                        })?;
                        if let Some(w) = &d.wrote {
                            wrote.push((i, w.clone()));
                        }
                        owed.extend(forward.into_iter().map(|f| (i, f)));
                        done[i] = Some(d);
                    }
                    // What an entry of a cycle referred to ahead of its writing is there now.
                    if let Some((i, missing)) = owed.iter().find(|(_, f)| !wrote.iter().any(|(_, w)| w == f)) {
                        return Err(ApiError::InEntry(
                            *i,
                            Box::new(ApiError::Service(ServiceError::ReferenceNotFound {
                                path: "resource".into(),
                                reference: missing.clone(),
                            })),
                        ));
                    }
                    Ok(done.into_iter().flatten().map(Ok).collect())
                };
                if writes {
                    write_tx(c, all)
                } else {
                    read_tx(c, all)
                }
            } else {
                Ok(planned
                    .into_iter()
                    .map(|p| p.and_then(|p| run(c, p, &at, false)))
                    .collect())
            }
        },
    )
    .await?;
    let mut out = Vec::with_capacity(done.len());
    for d in done {
        out.push(match d {
            Ok(d) => {
                if let Some((outcome, touched)) = &d.shown {
                    state.audit.record(&audit_draft, outcome, touched).await?;
                }
                d.entry
            }
            Err(e) => {
                let (status, issues) = e.parts();
                json!({"response": {"status": status.to_string(), "outcome": operation_outcome(&issues)}})
            }
        });
    }
    let response = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": [crate::fhir::bundle::PROFILE]},
        "type": format!("{kind}-response"),
        "entry": out,
    });
    negotiate::respond(&req, StatusCode::OK, Body::Value(response))
}

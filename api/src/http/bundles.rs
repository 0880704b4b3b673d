//! `POST /FHIR/R4` with a `transaction` or `batch` Bundle of creates (POST) and updates (PUT):
//! bulk loading, e.g. a service's slots. A transaction is all or nothing, and its entries may
//! refer to each other by `urn:uuid:` fullUrl; a batch answers each entry on its own.

use crate::fhir::At;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use ers_schema::{write_tx, ResourceRow};
use serde_json::{json, Value};

use super::caller::author;
use super::handlers::{authorise, base_url, conditional_criteria, draft, on_conn};
use super::negotiate::{self, Body};
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::datetime;
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::registry::{self, ResourceDef};
use crate::security::permissions::Action;
use crate::service::resource::{self as svc, Created, IfMatch};
use crate::service::ServiceError;
use crate::startup::AppState;
use ers_schema::search::SearchQuery;

const MAX_ENTRIES: usize = 1000;

/// One entry, checked before anything is written.
struct Planned {
    def: &'static ResourceDef,
    resource: Value,
    /// For a create: the id assigned up front (a transaction entry with a `urn:uuid:` fullUrl).
    create_id: Option<String>,
    write: Write,
    if_match: Option<i64>,
}

/// What an entry asks for.
enum Write {
    /// `POST Type`, with `request.ifNoneExist` criteria if given (conditional create).
    Create(Option<(SearchQuery, String)>),
    /// `PUT Type/id`.
    Update(String),
    /// `PUT Type?criteria` (conditional update).
    ConditionalUpdate((SearchQuery, String)),
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

fn plan(
    entries: &[Value],
    assigned: &[Option<String>],
    caller: &Caller,
    transaction: bool,
) -> Result<Vec<Result<Planned, ApiError>>, ApiError> {
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::BadRequest(format!(
            "the Bundle has {} entries; at most {MAX_ENTRIES}",
            entries.len()
        )));
    }
    let one = |e: &Value| -> Result<Planned, ApiError> {
        let method = e
            .at("/request/method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let url = e
            .at("/request/url")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(method, "POST" | "PUT") {
            return Err(ApiError::BadRequest(format!(
                "request.method '{method}': this server's Bundles write (POST Type, PUT Type/id or PUT Type?criteria); read, search and delete with their own requests"
            )));
        }
        let resource = e
            .get("resource")
            .cloned()
            .ok_or_else(|| ApiError::BadRequest("the entry has no resource".into()))?;
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
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (url, None),
        };
        let (type_name, id) = match path.split_once('/') {
            Some((t, id)) => (t, Some(id.to_owned())),
            None => (path, None),
        };
        let def = registry::find(type_name).ok_or_else(|| {
            ApiError::BadRequest(format!("request.url '{url}' does not name a hosted type"))
        })?;
        let if_none_exist = e.at("/request/ifNoneExist").and_then(Value::as_str);
        let (actions, write) = match (method, id, query) {
            ("POST", None, None) => (
                &[Action::Create][..],
                Write::Create(
                    if_none_exist
                        .map(|q| conditional_criteria(def, q, "request.ifNoneExist", caller))
                        .transpose()?,
                ),
            ),
            ("PUT", Some(id), None) => (&[Action::Update][..], Write::Update(id)),
            // It may create as well as change.
            ("PUT", None, Some(q)) => (
                &[Action::Update, Action::Create][..],
                Write::ConditionalUpdate(conditional_criteria(def, q, "request.url", caller)?),
            ),
            _ => {
                return Err(ApiError::BadRequest(format!(
                "request {method} {url}: a Bundle entry is POST Type (with request.ifNoneExist if wanted), PUT Type/id or PUT Type?criteria"
            )))
            }
        };
        if !def.plain_writes {
            return Err(ApiError::Service(ServiceError::MethodNotAllowed(format!(
                "{0} is created with POST {0} and changed only through its operations (see the CapabilityStatement), not in a Bundle",
                def.name
            ))));
        }
        for action in actions {
            authorise(def.name, *action, caller)?;
        }
        let if_match = e
            .at("/request/ifMatch")
            .and_then(Value::as_str)
            .map(|v| v.trim_start_matches("W/").trim_matches('"').parse::<i64>())
            .transpose()
            .map_err(|_| ApiError::BadRequest("request.ifMatch is not W/\"n\"".into()))?;
        Ok(Planned {
            def,
            resource,
            create_id: None,
            write,
            if_match,
        })
    };
    let mut planned = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        match one(e).map(|p| Planned {
            create_id: assigned.get(i).cloned().flatten(),
            ..p
        }) {
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
fn earlier_entry(e: ServiceError, wrote: &[String]) -> ApiError {
    match e {
        ServiceError::Duplicate {
            res_type,
            system,
            value,
            existing,
        } => match wrote
            .iter()
            .position(|w| *w == format!("{res_type}/{existing}"))
        {
            Some(j) => ApiError::Service(ServiceError::Invalid(vec![Issue::error(
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

fn response_entry(base: &str, status: &str, row: &ResourceRow) -> Value {
    json!({
        "response": {
            "status": status,
            "location": format!("{base}/{}/{}/_history/{}", row.res_type, row.id, row.version_id),
            "etag": format!("W/\"{}\"", row.version_id),
            "lastModified": datetime::instant(row.last_updated),
        }
    })
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
    let planned = plan(&entries, &assigned, &caller, transaction)?;
    let who = author(&req, &caller);
    let d = draft(&req, Some(&caller));
    let base = base_url(&req, &state);
    let require = state.settings.require_if_match;
    let out: Vec<Value> = on_conn(&state, move |c| -> Result<Vec<Value>, ApiError> {
        // The answer's entry, and what it wrote (Type/id).
        let run = |c: &mut ers_schema::DbConnection, p: Planned| -> Result<(Value, String), ServiceError> {
            let mut p = p;
            if transaction {
                svc::resolve_conditional_references(c, &mut p.resource)?;
            }
            let w = svc::Writer::new(&who, &d);
            let precondition = IfMatch { version: p.if_match, required: require };
            let done = match p.write {
                Write::Create(if_none_exist) => svc::create(c, p.def, p.resource, &w, if_none_exist, p.create_id)?,
                Write::Update(id) => Created::Existing(svc::update(c, p.def, &id, p.resource, precondition, &w)?),
                Write::ConditionalUpdate(criteria) => svc::conditional_update(c, p.def, criteria, p.resource, precondition, &w)?,
            };
            let (status, row) = match &done {
                Created::New(row) => ("201 Created", row),
                Created::Existing(row) => ("200 OK", row),
            };
            Ok((response_entry(&base, status, row), format!("{}/{}", row.res_type, row.id)))
        };
        if transaction {
            // All entries in one transaction: the first failure undoes every write.
            write_tx(c, |c| -> Result<Vec<Value>, ApiError> {
                let (mut out, mut wrote) = (Vec::new(), Vec::<String>::new());
                for (i, p) in planned.into_iter().enumerate() {
                    let p = p.map_err(|e| ApiError::InEntry(i, Box::new(e)))?;
                    let (entry, what) = run(c, p).map_err(|e| {
                        ApiError::InEntry(i, Box::new(earlier_entry(e, &wrote)))
                    })?;
                    out.push(entry);
                    wrote.push(what);
                }
                Ok(out)
            })
        } else {
            let mut out = Vec::new();
            for p in planned {
                let result = p.and_then(|p| run(c, p).map(|(entry, _)| entry).map_err(ApiError::Service));
                out.push(match result {
                    Ok(v) => v,
                    Err(e) => {
                        let (status, issues) = e.parts();
                        json!({"response": {"status": status.to_string(), "outcome": operation_outcome(&issues)}})
                    }
                });
            }
            Ok(out)
        }
    })
    .await?;
    let response = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": [crate::fhir::bundle::PROFILE]},
        "type": format!("{kind}-response"),
        "entry": out,
    });
    negotiate::respond(&req, StatusCode::OK, Body::Value(response))
}

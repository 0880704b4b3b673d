//! Subscriptions (R4 rest-hook): a system of an organisation watches a search of a type whose
//! changes go to the outbox (referrals, appointments, documents, A&G messages), and is told of
//! each matching change it may see, in order, at least once.
//!
//! Delivery state lives beside the resource (`subscription_state`): the event number reached
//! (the cursor), failures and back-off, the lease of the instance delivering, and the channel
//! headers (the resource shows them redacted). Any instance may deliver any subscription: it
//! takes the lease first. A change matches when the subscription's search, narrowed to that
//! resource and to what the owner's organisation may see, finds it as it is when delivered.

use std::collections::{HashMap, HashSet};

use chrono::{Duration, NaiveDateTime, Utc};
use ers_schema::search as store_search;
use ers_schema::{
    read_tx, store, write_tx, Author, DbConnection, OutboxRow, ResourceRow, SubscriptionState,
};
use serde_json::{json, Value};

use super::audit::AuditDraft;
use super::referral::Acting;
use super::resource::{self, IfMatch, Writer};
use super::stored_value;
use super::{scope, Result, ServiceError};
use crate::domain::{BusinessFunction, Caller, OdsCode};
use crate::fhir::outcome::Issue;
use crate::fhir::registry::{self, ResourceDef};
use crate::fhir::resources::subscription::{self as sub, Event};
use crate::fhir::{datetime, search as fsearch};

/// Changes numbered per round at most (the rest in the next rounds).
const NUMBER_AT_MOST: i64 = 5000;
/// Failures in a row before the subscription shows `error` (delivery keeps retrying).
const ERROR_AFTER: i32 = 3;
/// The longest back-off between attempts.
const MAX_BACKOFF_SECS: i64 = 300;
/// How long an instance holds a subscription while delivering.
const LEASE_SECS: i64 = 15;
/// Events per notification.
const BATCH: i64 = 500;

fn def() -> Result<&'static ResourceDef> {
    registry::find("Subscription")
        .ok_or_else(|| ServiceError::Internal("Subscription is not registered".into()))
}

fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// The checks a subscription's author gets before anything is stored: the search is one this
/// server runs, and the endpoint is HTTPS in production.
fn check(body: &Value, production: bool) -> Result<()> {
    let at = |p: &str, msg: String| ServiceError::Invalid(vec![Issue::invalid_at(p, msg)]);
    let (d, params) = sub::criteria(body).map_err(|e| at("Subscription.criteria", e))?;
    if let Err(issues) = fsearch::parse(d, &params, true) {
        let why = issues
            .iter()
            .map(|i| i.diagnostics.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(at(
            "Subscription.criteria",
            format!("is not a search this server runs: {why}"),
        ));
    }
    if production
        && !sub::endpoint(body)
            .unwrap_or_default()
            .starts_with("https://")
    {
        return Err(at(
            "Subscription.channel.endpoint",
            "must be https:// in production mode".into(),
        ));
    }
    match body.get("status").and_then(Value::as_str) {
        Some("requested" | "active" | "off") | None => Ok(()),
        Some(s) => Err(at(
            "Subscription.status",
            format!("({s}) may be requested, active or off; the server sets error"),
        )),
    }
}

/// Creates a subscription for the caller's organisation: `requested` until the endpoint
/// answers the handshake; events from now on.
pub fn create(
    conn: &mut DbConnection,
    mut body: Value,
    who: &Acting<'_>,
    production: bool,
) -> Result<ResourceRow> {
    check(&body, production)?;
    let headers = sub::headers(&body);
    sub::redact(&mut body);
    body["status"] = json!("requested");
    let stored = body.clone();
    let org = who.caller.organisation.as_str().to_owned();
    write_tx(conn, |c| {
        let access = [org.clone()];
        let row = match resource::create(
            c,
            def()?,
            body,
            &Writer::new(who.author, who.audit).visible_to(&access),
            None,
            None,
        )? {
            resource::Created::New(r) | resource::Created::Existing(r) => r,
        };
        let t = now();
        // It starts after every change committed before it (numbered first).
        while store::number_events(c, NUMBER_AT_MOST)? > 0 {}
        let cursor = store::last_event(c)?;
        store::save_subscription_state(
            c,
            &SubscriptionState {
                id: row.id.clone(),
                owner_org: org.clone(),
                owner_role: who.caller.business_function.code().to_owned(),
                cursor,
                events_sent: 0,
                failures: 0,
                next_attempt: t,
                lease_until: None,
                lease_owner: None,
                last_error: None,
                last_sent: t,
                headers: serde_json::to_string(&headers).unwrap_or_else(|_| "[]".into()),
                handshake: 1,
                heartbeat: sub::heartbeat(&stored),
            },
        )?;
        Ok(row)
    })
}

/// Changes a subscription (its owner only). Redacted header values keep their stored value;
/// `requested` or `active` after `off` or `error` re-runs the handshake.
pub fn update(
    conn: &mut DbConnection,
    id: &str,
    mut body: Value,
    if_match: Option<i64>,
    who: &Acting<'_>,
    production: bool,
) -> Result<ResourceRow> {
    check(&body, production)?;
    let d = def()?;
    write_tx(conn, |c| {
        scope::check_write(c, d, id, who.caller)?;
        let mut state =
            store::subscription_state(c, id)?.ok_or_else(|| ServiceError::NotFound {
                res_type: "Subscription".into(),
                id: id.to_owned(),
            })?;
        let stored: Vec<(String, String)> =
            serde_json::from_str(&state.headers).unwrap_or_default();
        let headers: Vec<(String, String)> = sub::headers(&body)
            .into_iter()
            .map(|(n, v)| {
                if v == sub::REDACTED {
                    let kept = stored.iter().find(|(s, _)| s.eq_ignore_ascii_case(&n));
                    (n, kept.map(|(_, v)| v.clone()).unwrap_or_default())
                } else {
                    (n, v)
                }
            })
            .collect();
        sub::redact(&mut body);
        if body.get("status").and_then(Value::as_str) != Some("off") {
            body["status"] = json!("requested");
            if let Some(o) = body.as_object_mut() {
                o.shift_remove("error");
            }
        }
        let access = [state.owner_org.clone()];
        let body_now = body.clone();
        let row = resource::update(
            c,
            d,
            id,
            body,
            IfMatch {
                version: if_match,
                required: false,
            },
            &Writer::new(who.author, who.audit).visible_to(&access),
        )?;
        state.headers = serde_json::to_string(&headers).unwrap_or_else(|_| "[]".into());
        state.heartbeat = sub::heartbeat(&body_now);
        state.handshake = i32::from(body_now["status"] == "requested");
        state.failures = 0;
        state.next_attempt = now();
        state.last_error = None;
        store::save_subscription_state(c, &state)?;
        Ok(row)
    })
}

/// Removes a subscription (its owner only): nothing more is sent.
pub fn delete(
    conn: &mut DbConnection,
    id: &str,
    precondition: resource::IfMatch,
    who: &Acting<'_>,
) -> Result<()> {
    let d = def()?;
    write_tx(conn, |c| {
        scope::check_write(c, d, id, who.caller)?;
        resource::delete(c, d, id, precondition, who.author, who.audit)?;
        store::delete_subscription_state(c, id)?;
        Ok(())
    })
}

/// The owner, as a caller whose view of the data the subscription gets.
fn owner(state: &SubscriptionState) -> Result<Caller> {
    Ok(Caller {
        user_id: None,
        client_id: None,
        business_function: BusinessFunction::parse(&state.owner_role).ok_or_else(|| {
            ServiceError::Internal(format!("subscription owner role {}", state.owner_role))
        })?,
        organisation: OdsCode::parse(&state.owner_org)
            .map_err(|e| ServiceError::Internal(format!("subscription owner: {}", e.0)))?,
        on_behalf_of: None,
    })
}

/// What a round already knows: per search (criteria and owner), the ids checked and those
/// that matched, with the matched resources as the search found them (stored JSON text) —
/// subscriptions with the same search share the work, and a full-resource payload reads
/// nothing more.
type Known = std::collections::HashMap<String, (HashSet<String>, HashMap<String, String>)>;

/// The events after each cursor read in this round: subscriptions that keep up share one.
type Read = std::collections::HashMap<i64, Vec<OutboxRow>>;

/// A cursor's next notification for one search, owner and payload: built once in a round and
/// shared by every subscription it applies to (a hundred subscribers of one search cost one).
struct Batch {
    through: i64,
    events: i64,
    shared: sub::Shared,
}

type Built = HashMap<String, Batch>;

/// Which of these changes match the subscription, as the resources are now and as the owner
/// sees them, each with its resource's current stored text: one search per batch (the
/// changed ids as `_id`), not one per change, and none for ids this round has already
/// checked for the same search.
fn matching(
    c: &mut DbConnection,
    subscription: &Value,
    caller: &Caller,
    rows: &[OutboxRow],
    known: &mut Known,
) -> Result<HashMap<String, String>> {
    let Ok((d, params)) = sub::criteria(subscription) else {
        return Ok(HashMap::new());
    };
    let key = format!(
        "{}|{}|{}",
        subscription["criteria"].as_str().unwrap_or_default(),
        caller.organisation.as_str(),
        caller.business_function.code()
    );
    let (checked, hits) = known.entry(key).or_default();
    let mut ids: Vec<&str> = rows
        .iter()
        .filter(|r| r.res_type == d.name && !checked.contains(&r.res_id))
        .map(|r| r.res_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(d.max_ids.max(1)) {
        let mut p = params.clone();
        p.push(("_id".into(), chunk.join(",")));
        let mut req = fsearch::parse(d, &p, false).map_err(ServiceError::Invalid)?;
        scope::restrict(d, &mut req.query.criteria, caller);
        req.query.offset = 0;
        req.query.limit = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
        hits.extend(
            store_search::search(c, &req.query, false)?
                .0
                .into_iter()
                .map(|r| (r.id, r.content)),
        );
        checked.extend(chunk.iter().map(|s| (*s).to_owned()));
    }
    Ok(rows
        .iter()
        .filter_map(|r| {
            hits.get(&r.res_id)
                .map(|text| (r.res_id.clone(), text.clone()))
        })
        .collect())
}

/// One event; for a full-resource payload, with the resource as the match found it now.
fn event(r: &OutboxRow, full: bool, now: &str) -> Event {
    let resource = if full {
        serde_json::from_str(now).ok()
    } else {
        None
    };
    Event {
        number: r.seq,
        at: datetime::instant(r.occurred),
        focus: format!("{}/{}/_history/{}", r.res_type, r.res_id, r.version_id),
        resource,
    }
}

/// A notification ready to send.
pub struct Due {
    pub id: String,
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    /// The notification Bundle, as JSON text.
    pub body: String,
    /// The cursor once it is delivered.
    pub through: i64,
    pub events: i64,
    /// Failing or still to shake hands: its delivery changes the resource's status too.
    pub recovering: bool,
}

/// What a leased subscription is to do this round.
pub enum Plan {
    Send(Due),
    /// Nothing to send: move the cursor past what it does not match (or, when off, past
    /// everything), and look again after `wait` ms.
    Idle {
        cursor: i64,
        off: bool,
        wait: i64,
    },
    /// The subscription is gone.
    Gone,
}

/// How a round went for one subscription.
pub enum Outcome {
    Delivered(Due),
    Failed(Due, String),
    Idle { id: String, plan: Plan },
}

/// Starts a delivery round: takes the leases of every subscription with something to send (one
/// short write: SQLite locks the whole database for a write), then plans each — the
/// handshake, its next events, or a heartbeat — by reading only.
pub fn begin_round(conn: &mut DbConnection, base: &str) -> Result<(Vec<Due>, Vec<Outcome>)> {
    let t = now();
    let owner = uuid::Uuid::new_v4().to_string();
    let claimed = write_tx(conn, |c| {
        store::number_events(c, NUMBER_AT_MOST)?;
        Ok::<_, ServiceError>(store::claim_subscriptions(
            c,
            t,
            t + Duration::seconds(LEASE_SECS),
            &owner,
        )?)
    })?;
    let mut sends = Vec::new();
    let mut idle = Vec::new();
    read_tx(conn, |c| {
        let mut known = Known::new();
        let mut read = Read::new();
        let mut built = Built::new();
        // The claimed rows are current (this round holds their leases); the resources are read
        // in one query.
        let ids: Vec<String> = claimed.iter().map(|s| s.id.clone()).collect();
        let resources: HashMap<String, ResourceRow> = store::get_many(c, "Subscription", &ids)?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for state in &claimed {
            match plan(
                c,
                state,
                resources.get(&state.id),
                base,
                t,
                (&mut known, &mut read, &mut built),
            )? {
                Plan::Send(due) => sends.push(due),
                plan => idle.push(Outcome::Idle {
                    id: state.id.clone(),
                    plan,
                }),
            }
        }
        Ok::<_, ServiceError>(())
    })?;
    Ok((sends, idle))
}

/// Ends a round: records every outcome and frees the leases (one write; subscriptions that
/// went the same way share a statement).
pub fn end_round(conn: &mut DbConnection, outcomes: &[Outcome]) -> Result<()> {
    let t = now();
    let mut delivered_alike: HashMap<(i64, i64), Vec<String>> = HashMap::new();
    let mut idle_alike: HashMap<(i64, i64), Vec<String>> = HashMap::new();
    write_tx(conn, |c| {
        for o in outcomes {
            match o {
                Outcome::Delivered(due) if !due.recovering => delivered_alike
                    .entry((due.through, due.events))
                    .or_default()
                    .push(due.id.clone()),
                Outcome::Idle {
                    id,
                    plan:
                        Plan::Idle {
                            cursor,
                            off: false,
                            wait,
                        },
                } => idle_alike
                    .entry((*cursor, *wait))
                    .or_default()
                    .push(id.clone()),
                Outcome::Delivered(due) => delivered(c, due, t)?,
                Outcome::Failed(due, reason) => failed(c, due, reason, t)?,
                Outcome::Idle { id, plan } => idle(c, id, plan, t)?,
            }
        }
        for ((through, events), ids) in &delivered_alike {
            store::record_delivered(c, ids, *through, *events, t)?;
        }
        for ((cursor, wait), ids) in &idle_alike {
            store::record_idle(c, ids, *cursor, t + Duration::milliseconds(*wait))?;
        }
        Ok(())
    })
}

fn idle(c: &mut DbConnection, id: &str, plan: &Plan, t: NaiveDateTime) -> Result<()> {
    match plan {
        Plan::Gone => store::delete_subscription_state(c, id)?,
        Plan::Idle { cursor, off, wait } => {
            if let Some(mut state) = store::subscription_state(c, id)? {
                state.cursor = state.cursor.max(*cursor);
                if *off {
                    state.handshake = 0;
                }
                release(&mut state);
                state.next_attempt = t + Duration::milliseconds(*wait);
                store::save_subscription_state(c, &state)?;
            }
        }
        Plan::Send(_) => {}
    }
    Ok(())
}

fn release(state: &mut SubscriptionState) {
    state.lease_until = None;
    state.lease_owner = None;
}

/// What a leased subscription (its state, and its resource unless deleted) is to do.
fn plan(
    c: &mut DbConnection,
    state: &SubscriptionState,
    row: Option<&ResourceRow>,
    base: &str,
    t: NaiveDateTime,
    (known, read, built): (&mut Known, &mut Read, &mut Built),
) -> Result<Plan> {
    let id = state.id.as_str();
    let resource = match row {
        Some(r) => stored_value(r)?,
        None => return Ok(Plan::Gone),
    };
    let status = resource["status"].as_str().unwrap_or("off").to_owned();
    let endpoint = sub::endpoint(&resource).unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = serde_json::from_str(&state.headers).unwrap_or_default();
    let due = |body: String, through: i64, events: i64| {
        Plan::Send(Due {
            id: id.to_owned(),
            endpoint: endpoint.clone(),
            headers: headers.clone(),
            body,
            through,
            events,
            recovering: state.failures > 0 || state.handshake == 1,
        })
    };
    match status.as_str() {
        "off" => Ok(Plan::Idle {
            cursor: store::last_event(c)?,
            off: true,
            wait: 5_000,
        }),
        "requested" => Ok(due(
            sub::notification_text(
                id,
                "requested",
                "handshake",
                state.events_sent,
                &Default::default(),
            ),
            state.cursor,
            0,
        )),
        _ => {
            let caller = owner(state)?;
            let full = sub::full_resource(&resource);
            let key = format!(
                "{}|{}|{}|{full}|{}",
                resource["criteria"].as_str().unwrap_or_default(),
                caller.organisation.as_str(),
                caller.business_function.code(),
                state.cursor
            );
            if !built.contains_key(&key) {
                let batch = next_batch(c, &resource, &caller, state.cursor, base, known, read)?;
                built.insert(key.clone(), batch);
            }
            let batch = &built[&key];
            let through = batch.through;
            if batch.events > 0 {
                return Ok(due(
                    sub::notification_text(
                        id,
                        &status,
                        "event-notification",
                        state.events_sent + batch.events,
                        &batch.shared,
                    ),
                    through,
                    batch.events,
                ));
            }
            if let Some(period) = sub::heartbeat(&resource) {
                if t - state.last_sent >= Duration::seconds(period) {
                    return Ok(due(
                        sub::notification_text(
                            id,
                            &status,
                            "heartbeat",
                            state.events_sent,
                            &Default::default(),
                        ),
                        through,
                        0,
                    ));
                }
            }
            Ok(Plan::Idle {
                cursor: through,
                off: false,
                wait: 250,
            })
        }
    }
}

/// The events after `cursor` (one read per cursor a round) that a subscription's search finds
/// for its owner, serialised for its notification.
fn next_batch(
    c: &mut DbConnection,
    resource: &Value,
    caller: &Caller,
    cursor: i64,
    base: &str,
    known: &mut Known,
    read: &mut Read,
) -> Result<Batch> {
    let full = sub::full_resource(resource);
    let kind = sub::criteria(resource)
        .map(|(d, _)| d.name)
        .unwrap_or_default();
    // Numbers are given once changes have committed, without gaps (`number_events`): whatever
    // follows the cursor is final.
    if let std::collections::hash_map::Entry::Vacant(slot) = read.entry(cursor) {
        slot.insert(store::events_after(c, cursor, BATCH)?);
    }
    let rows = &read[&cursor];
    let hit = matching(c, resource, caller, rows, known)?;
    let mut events = Vec::new();
    let mut through = cursor;
    for r in rows {
        if r.res_type == kind {
            if let Some(now) = hit.get(&r.res_id) {
                events.push(event(r, full, now));
            }
        }
        through = r.seq;
    }
    Ok(Batch {
        through,
        events: i64::try_from(events.len()).unwrap_or(0),
        shared: sub::Shared::new(base, &events),
    })
}

fn system() -> (Author, AuditDraft) {
    let request_id = uuid::Uuid::new_v4().to_string();
    (
        Author {
            user: None,
            role: "SYSTEM".into(),
            org: "ers-server".into(),
            request_id: request_id.clone(),
            client_id: Some("ers-server subscriptions".into()),
            on_behalf_of: None,
        },
        AuditDraft {
            client_id: Some("ers-server subscriptions".into()),
            method: "PUT".into(),
            path: "Subscription".into(),
            request_id,
            ..AuditDraft::default()
        },
    )
}

/// Shows the delivery status on the resource (active, or error with the reason).
fn set_status(c: &mut DbConnection, id: &str, status: &str, error: Option<&str>) -> Result<()> {
    let Some(row) = store::get_current(c, "Subscription", id)?.filter(|r| !r.is_deleted()) else {
        return Ok(());
    };
    let mut body = stored_value(&row)?;
    if body["status"] == status || body["status"] == "off" {
        return Ok(());
    }
    body["status"] = json!(status);
    match error {
        Some(e) => body["error"] = json!(e),
        None => {
            if let Some(o) = body.as_object_mut() {
                o.shift_remove("error");
            }
        }
    }
    let (author, audit) = system();
    let access = store::token_codes(c, "Subscription", id, scope::PARAM)?;
    resource::rewrite(
        c,
        def()?,
        id,
        row.version_id,
        body,
        &Writer::new(&author, &audit).visible_to(&access),
    )?;
    Ok(())
}

/// The endpoint took the notification: the cursor moves on, failures are forgotten.
fn delivered(c: &mut DbConnection, due: &Due, t: NaiveDateTime) -> Result<()> {
    let Some(mut state) = store::subscription_state(c, &due.id)? else {
        return Ok(());
    };
    let was_failing = state.failures > 0 || state.handshake == 1;
    state.cursor = state.cursor.max(due.through);
    state.events_sent += due.events;
    state.handshake = 0;
    state.failures = 0;
    state.last_error = None;
    state.last_sent = t;
    state.next_attempt = t;
    release(&mut state);
    store::save_subscription_state(c, &state)?;
    if was_failing {
        set_status(c, &due.id, "active", None)?;
    }
    Ok(())
}

/// The endpoint did not take it: back off (1, 2, 4 … 300 s); after a few failures in a row the
/// subscription shows `error` with the reason, and is retried until it works.
fn failed(c: &mut DbConnection, due: &Due, reason: &str, t: NaiveDateTime) -> Result<()> {
    let Some(mut state) = store::subscription_state(c, &due.id)? else {
        return Ok(());
    };
    state.failures += 1;
    let wait = 1i64
        .checked_shl(u32::try_from(state.failures - 1).unwrap_or(0).min(16))
        .unwrap_or(MAX_BACKOFF_SECS)
        .min(MAX_BACKOFF_SECS);
    state.next_attempt = t + Duration::seconds(wait);
    state.last_error = Some(reason.to_owned());
    release(&mut state);
    store::save_subscription_state(c, &state)?;
    if state.failures >= ERROR_AFTER {
        set_status(
            c,
            &due.id,
            "error",
            Some(&format!(
                "{} failed deliveries in a row; the last: {reason}",
                state.failures
            )),
        )?;
    }
    Ok(())
}

/// `$events`: the matching events after `since` (and up to `until`), for a subscriber that
/// was away — as a notification Bundle of type query-event.
pub fn events(
    conn: &mut DbConnection,
    id: &str,
    caller: &Caller,
    since: i64,
    until: Option<i64>,
    base: &str,
) -> Result<Value> {
    let d = def()?;
    let row = resource::read(conn, d, id)?;
    scope::check(conn, d, id, caller)?;
    let resource = stored_value(&row)?;
    let state = store::subscription_state(conn, id)?.ok_or_else(|| ServiceError::NotFound {
        res_type: "Subscription".into(),
        id: id.to_owned(),
    })?;
    let owner = owner(&state)?;
    let full = sub::full_resource(&resource);
    let kind = sub::criteria(&resource)
        .map(|(d, _)| d.name)
        .unwrap_or_default();
    // Whatever has committed, numbered now (delivery may be off on this instance).
    write_tx(conn, |c| store::number_events(c, NUMBER_AT_MOST))?;
    let mut out = Vec::new();
    let mut after = since;
    'pages: loop {
        let rows = store::events_after(conn, after, 500)?;
        if rows.is_empty() {
            break;
        }
        let hit = matching(conn, &resource, &owner, &rows, &mut Known::new())?;
        for r in rows {
            if until.is_some_and(|u| r.seq > u) || out.len() >= 1000 {
                break 'pages;
            }
            after = r.seq;
            if r.res_type == kind {
                if let Some(now) = hit.get(&r.res_id) {
                    out.push(event(&r, full, now));
                }
            }
        }
    }
    Ok(sub::notification(
        base,
        id,
        resource["status"].as_str().unwrap_or("active"),
        "query-event",
        state.events_sent,
        &out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_endpoints_are_https_only() {
        let at = |endpoint: &str| {
            json!({"resourceType": "Subscription", "status": "requested", "reason": "x",
                "criteria": "ServiceRequest?status=active",
                "channel": {"type": "rest-hook", "endpoint": endpoint}})
        };
        assert!(check(&at("http://127.0.0.1:9/hook"), false).is_ok());
        assert!(check(&at("https://system.example/hook"), true).is_ok());
        match check(&at("http://system.example/hook"), true) {
            Err(ServiceError::Invalid(issues)) => assert_eq!(
                issues[0].expression.as_deref(),
                Some("Subscription.channel.endpoint")
            ),
            other => panic!("{other:?}"),
        }
        // The server sets error; a client may not.
        let mut s = at("https://system.example/hook");
        s["status"] = json!("error");
        assert!(check(&s, true).is_err());
    }
}

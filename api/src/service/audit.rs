//! Recording the audit trail. Writes record their event inside their own transaction; reads,
//! searches and refusals record theirs before the response leaves.

use ers_schema::audit::{AuditEntityRow, AuditRow};
use ers_schema::{DbConnection, ResourceRow, StorageError};
use serde_json::Value;

use crate::domain::{Caller, NhsNumber};

/// Who asked for what, known before the outcome.
#[derive(Debug, Clone, Default)]
pub struct AuditDraft {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub role: Option<String>,
    pub org: Option<String>,
    pub on_behalf_of: Option<String>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub source_address: Option<String>,
    pub request_id: String,
    pub correlation_id: Option<String>,
    /// The idempotency key a write is asked for under (`http::idempotency`): claimed in the
    /// transaction of the write's audit event; a malformed one refuses the write.
    pub idempotency: Option<IdempotencyKey>,
}

/// A request's `Idempotency-Key`: the claim it makes, or what is wrong with it; and whether
/// a write of the request has claimed it (shared by the copies in its audit drafts).
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: Result<ers_schema::idempotency::Claim, String>,
    pub claimed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl IdempotencyKey {
    pub fn new(key: Result<ers_schema::idempotency::Claim, String>) -> Self {
        IdempotencyKey {
            key,
            claimed: Default::default(),
        }
    }

    /// Whether a write claimed the key (its transaction may still have rolled back since).
    pub fn was_claimed(&self) -> bool {
        self.claimed.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl AuditDraft {
    pub fn with_caller(mut self, caller: &Caller) -> Self {
        self.user_id = caller.user_id.clone();
        self.client_id = caller.client_id.clone();
        self.role = Some(caller.business_function.code().to_owned());
        self.org = Some(caller.organisation.as_str().to_owned());
        self.on_behalf_of = caller.on_behalf_of.clone();
        self
    }
}

/// A resource an event touched.
#[derive(Debug, Clone)]
pub struct Touched {
    pub entity_type: String,
    pub entity_id: String,
    pub nhs_number: Option<String>,
    pub ubrn: Option<String>,
}

/// The NHS number of a Patient resource.
pub fn nhs_number_of(resource: &Value) -> Option<String> {
    resource
        .get("identifier")?
        .as_array()?
        .iter()
        .find(|i| i.get("system").and_then(Value::as_str) == Some(NhsNumber::SYSTEM))
        .and_then(|i| i.get("value").and_then(Value::as_str))
        .map(str::to_owned)
}

pub fn touched(row: &ResourceRow) -> Touched {
    let nhs_number = if row.res_type == "Patient" {
        serde_json::from_str::<Value>(&row.content)
            .ok()
            .as_ref()
            .and_then(nhs_number_of)
    } else {
        None
    };
    Touched {
        entity_type: row.res_type.clone(),
        entity_id: row.id.clone(),
        nhs_number,
        ubrn: None,
    }
}

/// The outcome of an audited request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// FHIR AuditEvent.action: C, R, U, D or E.
    pub action: &'static str,
    /// The interaction (read, search, create...) or `access-denied`.
    pub subtype: String,
    pub status: u16,
    pub description: Option<String>,
}

/// FHIR audit-event-outcome for an HTTP status: 0 success, 4 minor failure (client), 8 serious.
fn outcome_code(status: u16) -> &'static str {
    match status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    }
}

/// Appends an event (in whatever transaction the connection is in).
pub fn record(
    conn: &mut DbConnection,
    draft: &AuditDraft,
    outcome: &Outcome,
    entities: &[Touched],
) -> super::Result<()> {
    match draft.idempotency.as_ref().filter(|_| outcome.action != "R") {
        Some(IdempotencyKey {
            key: Ok(key),
            claimed,
        }) => {
            super::deferred::claim(conn, key)?;
            claimed.store(true, std::sync::atomic::Ordering::Release);
        }
        Some(IdempotencyKey {
            key: Err(message), ..
        }) => {
            return Err(super::ServiceError::BadHeader {
                header: "Idempotency-Key",
                message: message.clone(),
            })
        }
        None => {}
    }
    let (row, entities) = event_rows(draft, outcome, entities);
    Ok(super::deferred::audit(conn, row, entities)?)
}

/// The rows of one event.
fn event_rows(
    draft: &AuditDraft,
    outcome: &Outcome,
    entities: &[Touched],
) -> (AuditRow, Vec<AuditEntityRow>) {
    // Time-ordered like resource ids: the event table's key grows at its end.
    let id = crate::fhir::new_id();
    let row = AuditRow {
        id: id.clone(),
        recorded: chrono::Utc::now().naive_utc(),
        action: outcome.action.to_owned(),
        subtype: outcome.subtype.clone(),
        outcome: outcome_code(outcome.status).to_owned(),
        outcome_desc: outcome.description.clone(),
        user_id: draft.user_id.clone(),
        client_id: draft.client_id.clone(),
        role: draft.role.clone(),
        org: draft.org.clone(),
        on_behalf_of: draft.on_behalf_of.clone(),
        method: draft.method.clone(),
        path: draft.path.clone(),
        query: draft.query.clone(),
        status: i32::from(outcome.status),
        source_address: draft.source_address.clone(),
        request_id: draft.request_id.clone(),
        correlation_id: draft.correlation_id.clone(),
    };
    let entities: Vec<AuditEntityRow> = entities
        .iter()
        .enumerate()
        .map(|(i, t)| AuditEntityRow {
            audit_id: id.clone(),
            position: i32::try_from(i).unwrap_or(i32::MAX),
            entity_type: t.entity_type.clone(),
            entity_id: t.entity_id.clone(),
            nhs_number: t.nhs_number.clone(),
            ubrn: t.ubrn.clone(),
        })
        .collect();
    (row, entities)
}

/// The audit events of reads and searches, and the answers of writes made under an
/// `Idempotency-Key`, committed in groups: each request hands its row to one writer thread and
/// waits until the transaction holding it has committed, so no answer leaves before its event
/// (or its stored copy) is stored (as when each request wrote its own), but many requests
/// share one commit instead of each paying for its own (a WAL flush on PostgreSQL, the write
/// lock on SQLite). The writer has a connection of its own.
#[derive(Clone)]
pub struct AuditLog {
    jobs: std::sync::mpsc::Sender<Job>,
}

struct Job {
    row: Row,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

enum Row {
    Event(Box<(AuditRow, Vec<AuditEntityRow>)>),
    Answer(ers_schema::idempotency::Answer),
}

/// Most events in one transaction.
const GROUP: usize = 500;

impl AuditLog {
    /// Starts the writer; it ends when the last `AuditLog` handle is dropped.
    pub fn start(pool: ers_schema::DbPool) -> std::io::Result<AuditLog> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                // The writer keeps its connection between groups (no checkout, and no
                // liveness query, per group). A group that fails on the kept connection (the
                // database restarted since, say) is tried once more on a fresh one from the
                // pool, which tests it first; a failed attempt commits nothing.
                let mut held: Option<ers_schema::PooledConn> = None;
                while let Ok(first) = queue.recv() {
                    let mut group = vec![first];
                    while group.len() < GROUP {
                        match queue.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let mut events = Vec::new();
                    let mut answers = Vec::new();
                    let mut waiters = Vec::new();
                    for job in group {
                        match job.row {
                            Row::Event(e) => events.push(*e),
                            Row::Answer(a) => answers.push(a),
                        }
                        waiters.push(job.done);
                    }
                    let write = |c: &mut ers_schema::PooledConn| {
                        ers_schema::write_tx(c, |c| {
                            if !events.is_empty() {
                                ers_schema::audit::insert_many(c, &events)?;
                            }
                            for a in &answers {
                                ers_schema::idempotency::answer(c, a)?;
                            }
                            Ok(())
                        })
                        .map_err(|e: StorageError| e.to_string())
                    };
                    let kept = held.take().and_then(|mut c| write(&mut c).ok().map(|()| c));
                    let result = match kept {
                        Some(c) => Ok(c),
                        None => pool
                            .get()
                            .map_err(|e| e.to_string())
                            .and_then(|mut c| write(&mut c).map(|()| c)),
                    }
                    .map(|c| held = Some(c));
                    if let Err(e) = &result {
                        log::error!(
                            "{} audit events and {} idempotent answers not recorded: {e}",
                            events.len(),
                            answers.len()
                        );
                    }
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            })?;
        Ok(AuditLog { jobs })
    }

    /// Records an event and waits until it is committed. A failure is the database being
    /// unavailable: the request's answer is withheld (503).
    pub async fn record(
        &self,
        draft: &AuditDraft,
        outcome: &Outcome,
        entities: &[Touched],
    ) -> Result<(), StorageError> {
        self.write(
            Row::Event(Box::new(event_rows(draft, outcome, entities))),
            "the audit event",
        )
        .await
    }

    /// Stores the answer of a write made under an idempotency key and waits until it is
    /// committed (a request that claimed no key changes nothing).
    pub async fn keep_answer(
        &self,
        answer: ers_schema::idempotency::Answer,
    ) -> Result<(), StorageError> {
        self.write(Row::Answer(answer), "the answer").await
    }

    async fn write(&self, row: Row, what: &str) -> Result<(), StorageError> {
        let unavailable =
            |e: String| StorageError::Unavailable(format!("{what} could not be recorded: {e}"));
        let (done, committed) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job { row, done })
            .map_err(|_| unavailable("the audit writer has stopped".into()))?;
        committed
            .await
            .map_err(|_| unavailable("the audit writer has stopped".into()))?
            .map_err(unavailable)
    }
}

//! Use cases. Each is a synchronous function over a connection (run inside `web::block`) that
//! owns its transaction: domain and resource rules first, then storage.

pub mod advice;
pub mod announcements;
pub mod attachments;
pub mod audit;
pub mod booking;
pub mod deferred;
pub mod directory;
pub mod exports;
pub mod letters;
pub mod memo;
pub mod postcodes;
pub mod provenance;
pub mod referral;
pub mod reindex;
pub mod reporting;
pub mod reports;
pub mod resource;
pub mod roles;
pub mod scan;
pub mod scope;
pub mod seed;
pub mod subscriptions;
pub mod synthetic;
pub mod transfer;

use ers_schema::StorageError;

use crate::fhir::outcome::Issue;

/// What a use case returns.
pub type Result<T> = std::result::Result<T, ServiceError>;

/// A stored version's JSON, parsed: content that does not parse is the server's fault (the
/// store keeps only what passed validation), named by type and id.
pub(crate) fn parse_stored<T: serde::de::DeserializeOwned>(
    row: &ers_schema::ResourceRow,
) -> Result<T> {
    serde_json::from_str(&row.content).map_err(|e| {
        ServiceError::Internal(format!(
            "stored {}/{} unreadable: {e}",
            row.res_type, row.id
        ))
    })
}

/// A stored version's JSON as a `Value` (`parse_stored`'s usual use).
pub(crate) fn stored_value(row: &ers_schema::ResourceRow) -> Result<serde_json::Value> {
    parse_stored(row)
}

/// Why a use case refused or failed. `http/error.rs` maps each to a status and issue code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{res_type}/{id} is not known")]
    NotFound { res_type: String, id: String },
    /// The resource exists but the caller's organisation is not related to it: answered as
    /// not found (no existence leak), audited as an access denial.
    #[error("{res_type}/{id} is not known")]
    NotVisible {
        res_type: String,
        id: String,
        organisation: String,
    },
    #[error("{res_type}/{id} has been deleted (version {version})")]
    Gone {
        res_type: String,
        id: String,
        version: i64,
    },
    /// Removed under the retention policy: its UBRN expired (e-RS UBRN_EXPIRED).
    #[error("{res_type}/{id}: {explanation}")]
    Expired {
        res_type: String,
        id: String,
        explanation: String,
    },
    #[error("{res_type}/{id} has no version {version}")]
    VersionNotFound {
        res_type: String,
        id: String,
        version: i64,
    },
    #[error(
        "If-Match names version {given} but the current version of {res_type}/{id} is {current}"
    )]
    VersionMismatch {
        res_type: String,
        id: String,
        given: i64,
        current: i64,
    },
    #[error(
        "{res_type}/{id} was changed by another request at the same time; read it again and retry"
    )]
    ConcurrentUpdate { res_type: String, id: String },
    #[error("updating {res_type} requires an If-Match header with the current version (W/\"n\")")]
    IfMatchRequired { res_type: String },
    #[error("If-Match names version {given} but {res_type}/{id} is at version {current}: another change came first; read it again")]
    StaleVersion {
        res_type: String,
        id: String,
        given: i64,
        current: i64,
    },
    /// The request is in the wrong state for the action (e-RS INVALID_REQUEST_STATE).
    #[error("{0}")]
    RequestState(String),
    #[error("{0}")]
    BadRequest(String),
    /// A search parameter the service could not resolve (a postcode it does not know): 400,
    /// naming the parameter.
    #[error("Search parameter '{param}': {message}")]
    BadSearch { param: String, message: String },
    /// A request header that is not as it must be.
    #[error("{header} header: {message}")]
    BadHeader {
        header: &'static str,
        message: String,
    },
    #[error("the resource is invalid")]
    Invalid(Vec<Issue>),
    #[error("{res_type} with identifier {system}|{value} already exists as {res_type}/{existing}")]
    Duplicate {
        res_type: String,
        system: String,
        value: String,
        existing: String,
    },
    /// Another writer stored one of the keys at the same moment (the store's unique index
    /// refused this write after its own look found no owner).
    #[error("another {res_type} with identifier {keys} was written at the same moment, so this one was not written")]
    DuplicateConcurrent { res_type: String, keys: String },
    #[error("'{path}' refers to {reference}, which does not exist on this server")]
    ReferenceNotFound { path: String, reference: String },
    /// The resource a request is about, named in its body (an appointment's referral,
    /// `basedOn`), is not known: 404 as for an unknown UBRN, naming where it was named.
    #[error("'{path}' ({reference}) is not known")]
    SubjectNotFound { path: String, reference: String },
    #[error("{res_type}/{id} cannot be deleted while other resources refer to it: {by}")]
    StillReferenced {
        res_type: String,
        id: String,
        by: String,
    },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the criteria '{criteria}' match {matched} resources; a conditional create or update needs them to match at most one")]
    ConditionalMultiple { criteria: String, matched: String },
    /// The request conflicts with the current state of a resource (a slot already taken).
    #[error("{message}")]
    Conflict {
        ers_code: &'static str,
        message: String,
        expression: String,
    },
    /// An upload of a type that is not accepted.
    #[error("{0}")]
    UnsupportedType(String),
    /// An upload over the size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Something the request needs is not working now (a retry later may succeed).
    #[error("{0}")]
    Unavailable(String),
    /// A broken invariant of the server's own (a bug, never the client's doing).
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for ServiceError {
    fn from(e: diesel::result::Error) -> Self {
        ServiceError::Storage(StorageError::Query(e))
    }
}

//! actix-web only: routes, content negotiation, the caller seam, handlers, errors.

pub mod advice;
pub mod announcements;
pub mod appointments;
pub mod attachments;
pub mod audit;
pub mod bulk;
pub mod bundles;
pub mod caller;
pub mod dashboard;
pub mod directory;
pub mod error;
pub mod everything;
pub mod fhir_schemas;
pub mod gate;
pub mod handlers;
pub mod idempotency;
pub mod middleware;
pub mod negotiate;
pub mod oauth;
pub mod openapi;
pub mod referrals;
pub mod reports;
pub mod roles;
pub mod routes;
pub mod subscriptions;
pub mod summary_pdf;
pub mod system;
pub mod tasks;
pub mod terminology;

pub use error::ApiError;

//! The one integration-test binary: the real server over HTTP against a fresh database per test.

mod helpers;

mod advice;
mod announcements;
mod attachments;
mod audit;
mod booking;
mod bulk;
mod commissioning;
mod crud;
mod directory;
mod errors;
mod examples;
mod idempotency;
mod openapi;
mod referrals;
mod reliability;
mod reports;
mod search;
mod security;
mod subscriptions;
mod system;
mod validation;

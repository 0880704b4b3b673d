//! e-RS FHIR R4 server. Layers: `http` (actix) → `fhir` (mapping) → `service` (use cases) →
//! `domain` (pure rules) and `ers_schema` (storage). See docs/ARCHITECTURE.md.

pub mod config;
pub mod domain;
pub mod fhir;
pub mod http;
pub mod security;
pub mod service;
pub mod startup;

//! The authorization server. `main.rs` only loads configuration and calls [`Application`].
//!
//! Layers: HTTP handlers (`routes`, thin) -> services (plain Rust in `platform` and feature
//! modules, no actix types) -> storage (`platform::storage`). [`startup`] builds an instance
//! (the composition root); [`state`] is what its handlers share.

pub mod customer_login;
pub mod dashboard;
pub mod demo;
pub mod http;
pub mod lifecycle;
pub mod oauth;
pub mod openapi;
pub mod revocation_list;
pub mod routes;
pub mod sandbox;
pub mod ssf;
pub mod staff_access;
pub mod staff_broadcast;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod verification;
pub mod webhooks;

pub use startup::{Application, ServeOptions, migrate};
pub use state::AppState;

//! The billing records vault service: the HTTP edge of `vault-core`.
//!
//! The endpoint table ([`endpoint`]), routes, extractors, authentication, the
//! audit middleware, limits and the OpenAPI description; one mapping from the domain's errors to statuses
//! ([`error`]). [`startup::build`] opens a [`vault_core::Vault`] from a
//! [`vault_core::config::Config`] and wraps it in the edge's state;
//! [`startup::serve`] runs it until shutdown. The binary (`main.rs`) only parses
//! options and calls these.

pub mod audit_note;
pub mod audit_trail;
pub mod auth;
pub mod endpoint;
pub mod error;
pub mod http_server;
pub mod limits;
pub mod metrics_token;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod state;

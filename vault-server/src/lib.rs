//! The billing records vault service.
//!
//! An axum HTTP API over an object store ([`storage`]) and the key hierarchy of
//! `vault-crypto`. [`startup::build`] turns a [`config::Config`] into a ready
//! router; [`startup::serve`] runs it until shutdown. The binary (`main.rs`) only
//! parses options and calls these.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod config;
pub mod documents;
pub mod error;
pub mod extraction;
pub mod http_server;
pub mod key_lifecycle;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod search;
pub mod startup;
pub mod state;
pub mod storage;
pub mod tenants;

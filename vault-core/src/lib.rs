//! The vault's domain: documents, search, credentials, tenants, key lifecycle,
//! audit logs and backups over an object store and the key hierarchy.
//!
//! [`Vault::open`] turns a [`config::Config`] into an open [`Vault`]; the
//! operations take it (or the parts of it they need) and return [`Error`], whose
//! kinds say what went wrong in the vault's terms. Nothing here knows HTTP: the
//! server (`vault-server`) is the edge that maps requests to these operations and
//! their errors to statuses; the CLI (`vault-cli`) uses the offline parts
//! (backup verify, restore, drill, audit verify) directly.

pub mod audit;
pub mod backup;
pub mod catch_up;
pub mod config;
pub mod credentials;
pub mod data_dir_lock;
pub mod documents;
pub mod error;
pub mod extraction;
pub mod failpoints;
pub mod index_snapshot;
pub mod jobs;
pub mod key_lifecycle;
pub mod leftovers;
pub mod maintenance;
pub mod metrics;
pub mod mfa;
pub mod operators;
pub mod progress;
pub mod search;
pub mod storage;
pub mod tenant_documents;
pub mod tenants;
pub mod vault;

pub use error::{Error, Result};
pub use vault::{OpenError, Opened, SharedVault, Vault};

#[cfg(test)]
mod tests;

//! Key providers and the key hierarchy.
//!
//! Tenant KEK (in a [`KeyProvider`]: the local keystore or AWS KMS) → tenant branch
//! key and index root key (random, wrapped by the KEK, persisted through a
//! [`TenantKeyStore`], cached by [`KeyHierarchy`]) → per-document DEK (wrapped by the
//! branch key in the document's key record).

mod aws_kms;
mod hierarchy;
mod local;
mod provider;
mod tenant_key_record;

pub use aws_kms::AwsKmsProvider;
pub use hierarchy::{CachePolicy, KeyHierarchy, TenantKeySpec};
pub use local::LocalKeyProvider;
pub use provider::{EncryptionContext, KeyProvider, Purpose};
pub use tenant_key_record::{TenantKeyKind, TenantKeyRecord, TenantKeyStore};

//! Where tenant keys live and how they are cached: the key providers that hold
//! tenant KEKs (the local keystore sealed under a root key file, or AWS KMS)
//! behind one [`KeyProvider`] trait, and the [`KeyHierarchy`]: tenant KEK →
//! tenant branch key and index root key (random, wrapped by the KEK, persisted
//! through a [`TenantKeyStore`], cached with a time to live) → per-document DEK.
//!
//! The formats (tenant key records, the encryption context) are `vault-crypto`'s;
//! this crate does the I/O: KMS calls, the root key file, and
//! [`private_file`], the one atomic 0600 file writer of the vault.

#[cfg(feature = "aws-kms")]
mod aws_kms;
mod hierarchy;
mod local;
pub mod private_file;
mod provider;
mod store;

#[cfg(feature = "aws-kms")]
pub use aws_kms::AwsKmsProvider;
pub use hierarchy::{CachePolicy, KeyHierarchy, TenantKeySpec};
pub use local::{LocalKeyProvider, KEK_CACHE_TTL, SEALS_FILE_NAME};
pub use provider::KeyProvider;
pub use store::{KeystoreObject, KeystoreObjects, TenantKeyStore};
pub use vault_crypto::keys::{EncryptionContext, Purpose, TenantKeyKind, TenantKeyRecord};

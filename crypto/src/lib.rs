//! Cryptography of the billing records vault.
//!
//! * [`envelope`]: the document envelope format (v1): a per-document random DEK,
//!   the body in AES-256-GCM-SIV segments under the STREAM construction, an
//!   ESDK-style key commitment, and a separate, rewritable *key record* that holds
//!   the wrapped DEK and the encrypted metadata block.
//! * [`keys`]: tenant key records (a branch or index root key wrapped by a KEK)
//!   and the encryption context `{tenant, purpose}`; the providers and the cached
//!   hierarchy that use them are the `vault-keys` crate.
//! * [`blind`]: blind-index keys and truncated HMAC-SHA256 tokens.
//! * [`merkle`]: the RFC 9162 Merkle tree, proofs and an append-only frontier.
//! * [`signing`]: Ed25519 keys and signed checkpoints (tree heads).
//!
//! This crate does no I/O at all: no files, no network, no async runtime. Its
//! streaming adapters (`envelope::encrypt_stream`, ...) work over any `Stream`.

pub mod blind;
pub mod envelope;
mod error;
mod ids;
pub mod keys;
pub mod merkle;
mod secret;
pub mod signing;
pub mod wire;

pub use error::CryptoError;
pub use ids::{DocumentId, TenantId};
pub use secret::{random_bytes, Key256};

/// Result type of this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

//! Cryptography of the billing records vault.
//!
//! * [`envelope`]: the document envelope format (v1): a per-document random DEK,
//!   the body in AES-256-GCM-SIV segments under the STREAM construction, an
//!   ESDK-style key commitment, and a separate, rewritable *key record* that holds
//!   the wrapped DEK and the encrypted metadata block.
//! * [`keys`]: key providers (`local` keystore, `aws-kms`) behind one trait, and the
//!   key hierarchy tenant KEK → branch key (cached) → per-document DEK.
//! * [`blind`]: blind-index keys and truncated HMAC-SHA256 tokens.
//! * [`merkle`]: the RFC 9162 Merkle tree, proofs and an append-only frontier.
//! * [`signing`]: Ed25519 keys and signed checkpoints (tree heads).
//!
//! This crate never touches document storage. Its only I/O is the key providers':
//! KMS calls, and the local keystore file.

pub mod blind;
pub mod envelope;
mod error;
mod ids;
pub mod keys;
pub mod merkle;
pub mod private_file;
mod secret;
pub mod signing;
mod wire;

pub use error::CryptoError;
pub use ids::{DocumentId, TenantId};
pub use secret::Key256;

/// Result type of this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

//! The crate's one error type. Variants carry ids, positions and provider messages,
//! never key material or plaintext.

use thiserror::Error;

/// Every failure of the crypto layer.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// The bytes are not a well-formed envelope structure.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure (body header, key record, keystore, ...).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A structure written by a newer (or unknown) format version.
    #[error("unsupported {what} format version {version}")]
    UnsupportedVersion {
        /// Which structure.
        what: &'static str,
        /// The version found.
        version: u16,
    },
    /// An algorithm suite this build does not know.
    #[error("unsupported algorithm suite {0:#06x}")]
    UnsupportedSuite(u16),
    /// The key commitment does not match the data key: wrong key or forged header.
    #[error("key commitment mismatch: the data key does not belong to this ciphertext")]
    KeyCommitmentMismatch,
    /// The envelope belongs to another tenant or document than the one asked for.
    #[error("envelope is bound to another {0}")]
    ContextMismatch(&'static str),
    /// A body segment failed authentication (modified, reordered or spliced).
    #[error("integrity check failed at segment {segment}")]
    SegmentIntegrity {
        /// Zero-based segment index.
        segment: u64,
    },
    /// The body ended before its final segment (truncation).
    #[error("ciphertext is truncated")]
    Truncated,
    /// Bytes follow the final segment.
    #[error("trailing data after the final segment")]
    TrailingData,
    /// A wrapped key did not unwrap (wrong key, wrong context or modified record).
    #[error("could not unwrap {0}: wrong key, wrong context or modified record")]
    UnwrapFailed(&'static str),
    /// The metadata block failed authentication.
    #[error("metadata block failed authentication")]
    MetadataIntegrity,
    /// The key version named by a record is not known.
    #[error("key version {version} of tenant {tenant} is not available")]
    KeyVersionUnavailable {
        /// Tenant id.
        tenant: String,
        /// Version asked for.
        version: u32,
    },
    /// The key version is below the tenant's minimum decryption version.
    #[error("key version {version} is retired (minimum decryption version is {min})")]
    KeyVersionRetired {
        /// Version named by the record.
        version: u32,
        /// The tenant's minimum decryption version.
        min: u32,
    },
    /// The tenant has no key in this provider.
    #[error("tenant {0} has no key")]
    UnknownTenant(String),
    /// A request would exceed a format limit (segment counter, sizes).
    #[error("limit exceeded: {0}")]
    Limit(&'static str),
    /// Invalid argument (bad id, bad bit length, ...).
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The key provider (KMS) failed or refused.
    #[error("key provider {provider} failed: {message}")]
    Provider {
        /// Provider id.
        provider: &'static str,
        /// The provider's message (no key material).
        message: String,
    },
    /// A KMS key asked for a tenant already belongs to another tenant.
    #[error("the KMS key is already the key of another tenant")]
    KeyInUse,
    /// The local keystore or root key file could not be used.
    #[error("keystore {path}: {reason}")]
    Keystore {
        /// File concerned.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A signature (checkpoint, manifest) does not verify under the given key.
    #[error("signature does not verify")]
    BadSignature,
    /// The key record store (implemented by the server) failed.
    #[error("key record store: {0}")]
    RecordStore(String),
}

impl CryptoError {
    /// A `Malformed` error.
    pub fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        CryptoError::Malformed {
            what,
            reason: reason.into(),
        }
    }

    /// True when the failure means the stored bytes were tampered with or corrupted
    /// (as opposed to an unavailable key or provider).
    pub fn is_integrity_failure(&self) -> bool {
        matches!(
            self,
            CryptoError::Malformed { .. }
                | CryptoError::KeyCommitmentMismatch
                | CryptoError::ContextMismatch(_)
                | CryptoError::SegmentIntegrity { .. }
                | CryptoError::Truncated
                | CryptoError::TrailingData
                | CryptoError::UnwrapFailed(_)
                | CryptoError::MetadataIntegrity
                | CryptoError::BadSignature
        )
    }
}

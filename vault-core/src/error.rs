//! The domain's error: what went wrong, in the vault's own terms.
//!
//! Each failure has a kind (not found, invalid, conflict, unavailable, ...) and,
//! where the caller can act on it, a stable machine-readable code
//! (`document_not_found`, `legal_hold`, `index_rebuilding`, ...). Nothing here
//! knows HTTP: the server maps kinds to statuses in one place (its `error.rs`),
//! and it is there, where a failure is answered, that it is logged, once. A
//! failure's `cause` is for that log line only; it never reaches a client.

use vault_crypto::CryptoError;

use crate::storage::StorageError;

/// A failure of a vault operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the request names is not there (for a document: never existed, was
    /// deleted or belongs to another tenant; one answer for all three).
    #[error("{message}")]
    NotFound {
        /// Machine-readable code.
        code: &'static str,
        /// Explanation (no PHI).
        message: String,
    },
    /// The request is malformed or names something impossible.
    #[error("{message}")]
    Invalid {
        /// Machine-readable code.
        code: &'static str,
        /// Explanation (no PHI, never echoes the input).
        message: String,
    },
    /// The request is well-formed but its content cannot be processed.
    #[error("{message}")]
    Unprocessable {
        /// Machine-readable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// The request conflicts with the current state (legal hold, retention, an
    /// existing tenant, a running job).
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// An upload is larger than the configured limit.
    #[error("the body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// The uploader's stream failed before it ended.
    #[error("{0}")]
    UploadAborted(String),
    /// The work cannot be done now; trying later may succeed.
    #[error("{message}")]
    Unavailable {
        /// Machine-readable code.
        code: &'static str,
        /// Explanation.
        message: String,
        /// Seconds after which a retry makes sense.
        retry_after: Option<u64>,
        /// What failed underneath, for the log.
        cause: Option<String>,
    },
    /// The document's key is retired or destroyed: it can never be opened again.
    #[error("the document's key is no longer available")]
    KeyUnavailable {
        /// What the key hierarchy said, for the log.
        cause: String,
    },
    /// The key provider (local keystore or KMS) did not answer.
    #[error("the key provider did not answer")]
    KeyProvider {
        /// What the provider said, for the log.
        cause: String,
    },
    /// The object store is out of space: nothing is written until space is freed.
    #[error("the vault's storage is full")]
    InsufficientStorage {
        /// What the store said, for the log.
        cause: String,
    },
    /// A stored object failed its integrity check.
    #[error("the stored document failed its integrity check")]
    Integrity {
        /// What failed, for the log.
        cause: String,
    },
    /// A fault of the vault itself (storage, serialisation, a task that died).
    #[error("internal error in {context}")]
    Internal {
        /// Where.
        context: &'static str,
        /// What, for the log.
        cause: String,
    },
}

/// The result of a vault operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The one answer for a document that cannot be shown to this caller.
    pub fn document_not_found() -> Self {
        Self::not_found("document_not_found", "no such document")
    }

    /// [`Error::NotFound`].
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    /// [`Error::Invalid`].
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    /// [`Error::Unprocessable`].
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }

    /// [`Error::Conflict`].
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// [`Error::Unavailable`], with no retry hint and no cause.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unavailable {
            code,
            message: message.into(),
            retry_after: None,
            cause: None,
        }
    }

    /// [`Error::Internal`].
    pub fn internal(context: &'static str, cause: impl std::fmt::Display) -> Self {
        Self::Internal {
            context,
            cause: cause.to_string(),
        }
    }

    /// Adds a retry hint to an [`Error::Unavailable`] (other kinds are unchanged).
    pub fn retry_after(mut self, secs: u64) -> Self {
        if let Self::Unavailable { retry_after, .. } = &mut self {
            *retry_after = Some(secs);
        }
        self
    }

    /// Whether the failure will never go away by itself: a stored object
    /// failed its integrity check. (A key version not known yet, as after a
    /// rotation another replica made, is not: a fresh tenant record has it.)
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Integrity { .. })
    }

    /// Whether this is a [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// The machine-readable code, where the kind has one of its own.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { code, .. }
            | Self::Invalid { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::TooLarge { .. } => "payload_too_large",
            Self::UploadAborted(_) => "upload_aborted",
            Self::KeyUnavailable { .. } => "key_unavailable",
            Self::KeyProvider { .. } => "key_provider_unavailable",
            Self::InsufficientStorage { .. } => "insufficient_storage",
            Self::Integrity { .. } => "integrity_error",
            Self::Internal { .. } => "internal",
        }
    }

    /// The failure with its cause, for a log line (never for a client: a cause
    /// may name objects and positions).
    pub fn for_log(&self) -> String {
        match self {
            Self::Unavailable {
                cause: Some(cause), ..
            } => format!("{self}: {cause}"),
            Self::KeyUnavailable { cause }
            | Self::KeyProvider { cause }
            | Self::InsufficientStorage { cause }
            | Self::Integrity { cause }
            | Self::Internal { cause, .. } => format!("{self}: {cause}"),
            _ => self.to_string(),
        }
    }

    /// The answer to a request whose audit event could not be made durable.
    pub fn audit_unavailable(cause: Option<String>) -> Self {
        Self::Unavailable {
            code: "audit_unavailable",
            message: "the request could not be recorded in the audit log, so it was not answered"
                .into(),
            retry_after: None,
            cause,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::TooLarge(limit) => Self::TooLarge { limit },
            StorageError::SourceFailed(reason) => Self::UploadAborted(reason),
            StorageError::NotFound(_) => Self::document_not_found(),
            StorageError::Full(cause) => Self::InsufficientStorage { cause },
            StorageError::Backend(cause) => Self::Unavailable {
                code: "storage_unavailable",
                message: "the object store did not answer; retry shortly".into(),
                retry_after: Some(1),
                cause: Some(cause),
            },
            StorageError::Changed(_) => Self::conflict(
                "changed_concurrently",
                "another request changed this record meanwhile; retry",
            ),
            other => Self::internal("storage", other),
        }
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        if e.is_integrity_failure() {
            return Self::Integrity {
                cause: e.to_string(),
            };
        }
        match e {
            CryptoError::KeyVersionRetired { .. }
            | CryptoError::KeyVersionUnavailable { .. }
            | CryptoError::UnknownTenant(_) => Self::KeyUnavailable {
                cause: e.to_string(),
            },
            CryptoError::KeyInUse => Self::conflict(
                "kms_key_in_use",
                "that KMS key belongs to another tenant: give each tenant its own key",
            ),
            CryptoError::Provider { .. } => Self::KeyProvider {
                cause: e.to_string(),
            },
            other => Self::internal("crypto", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_failures_and_retired_keys_keep_their_kinds() {
        assert!(matches!(
            Error::from(CryptoError::MetadataIntegrity),
            Error::Integrity { .. }
        ));
        assert_eq!(
            Error::from(StorageError::NotFound("x".into())).code(),
            "document_not_found"
        );
        assert_eq!(
            Error::from(StorageError::TooLarge(5)).code(),
            "payload_too_large"
        );
        let unavailable = Error::unavailable("index_rebuilding", "later").retry_after(3);
        assert!(matches!(
            unavailable,
            Error::Unavailable {
                retry_after: Some(3),
                ..
            }
        ));
    }

    #[test]
    fn a_cause_never_reaches_the_message() {
        let e = Error::internal("facts", "secret detail");
        assert!(!e.to_string().contains("secret detail"));
    }
}

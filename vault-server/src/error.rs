//! The one mapping from failures to HTTP: a status and the JSON envelope
//! `{"code": "...", "message": "..."}`. The domain's failures ([`vault_core::Error`])
//! become an [`ApiError`] here; server-side ones are logged here, once, and
//! answered without their causes; client errors are not logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vault_crypto::CryptoError;

use vault_core::storage::StorageError;

pub use vault_api::ErrorBody;

/// An API failure.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After: secs` to the answer.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no, malformed, unknown, expired or revoked credential.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: the credential lacks the role.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for a document: the same answer whether it never existed, was deleted or
    /// belongs to another tenant.
    pub fn document_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "document_not_found",
            "no such document",
        )
    }

    /// 404 for anything else.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 422: the request is well-formed but its content cannot be processed.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 500, logged once here.
    pub fn internal(context: &'static str, error: impl std::fmt::Display) -> Self {
        tracing::error!(context, error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// Status of this error.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Code of this error.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<vault_core::Error> for ApiError {
    /// The one mapping from the domain's failures to HTTP. Server-side failures
    /// are logged here, where they are answered, with their causes; the client
    /// gets the code and a message without them.
    fn from(e: vault_core::Error) -> Self {
        use vault_core::Error as E;
        let status = match &e {
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::Invalid { .. } | E::UploadAborted(_) => StatusCode::BAD_REQUEST,
            E::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::Conflict { .. } => StatusCode::CONFLICT,
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::Unavailable { .. } | E::KeyProvider { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::KeyUnavailable { .. } => StatusCode::GONE,
            E::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            E::Integrity { .. } | E::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        match &e {
            E::Internal { context, cause } => {
                tracing::error!(context, error = %cause, "internal error");
                return Self::new(status, "internal", "internal error; see the server log");
            }
            E::Integrity { .. } => {
                tracing::error!(error = %e.for_log(), "stored object failed its integrity check")
            }
            E::KeyUnavailable { .. } => {
                tracing::warn!(error = %e.for_log(), "document key unavailable")
            }
            E::KeyProvider { .. } => tracing::error!(error = %e.for_log(), "key provider failed"),
            E::Unavailable {
                cause: Some(_),
                code,
                ..
            } => tracing::error!(code, error = %e.for_log(), "operation unavailable"),
            _ => {}
        }
        let retry_after = match &e {
            E::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        };
        let mut error = Self::new(status, e.code(), e.to_string());
        error.retry_after = retry_after;
        error
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        vault_core::Error::from(e).into()
    }
}

impl From<CryptoError> for ApiError {
    fn from(e: CryptoError) -> Self {
        vault_core::Error::from(e).into()
    }
}

impl From<vault_core::audit::AuditError> for ApiError {
    fn from(e: vault_core::audit::AuditError) -> Self {
        vault_core::Error::from(e).into()
    }
}

impl From<vault_core::backup::BackupError> for ApiError {
    fn from(e: vault_core::backup::BackupError) -> Self {
        vault_core::Error::from(e).into()
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

//! The one mapping from failures to HTTP: a status and the JSON envelope
//! `{"code": "...", "message": "..."}`. Server-side failures are logged here, once,
//! and answered with a generic message; client errors are not logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use vault_crypto::CryptoError;

use crate::storage::StorageError;

/// The JSON error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation (never PHI, never secrets).
    pub message: String,
}

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

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::TooLarge(limit) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body exceeds the limit of {limit} bytes"),
            ),
            StorageError::SourceFailed(reason) => Self::bad_request("upload_aborted", reason),
            StorageError::NotFound(_) => Self::document_not_found(),
            other => Self::internal("storage", other),
        }
    }
}

impl From<CryptoError> for ApiError {
    fn from(e: CryptoError) -> Self {
        if e.is_integrity_failure() {
            tracing::error!(error = %e, "stored object failed its integrity check");
            return Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "integrity_error",
                "the stored document failed its integrity check",
            );
        }
        match e {
            CryptoError::KeyVersionRetired { .. }
            | CryptoError::KeyVersionUnavailable { .. }
            | CryptoError::UnknownTenant(_) => {
                tracing::warn!(error = %e, "document key unavailable");
                Self::new(
                    StatusCode::GONE,
                    "key_unavailable",
                    "the document's key is no longer available",
                )
            }
            CryptoError::KeyInUse => Self::conflict(
                "kms_key_in_use",
                "that KMS key belongs to another tenant: give each tenant its own key",
            ),
            CryptoError::Provider { .. } => {
                tracing::error!(error = %e, "key provider failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "key_provider_unavailable",
                    "the key provider did not answer",
                )
            }
            other => Self::internal("crypto", other),
        }
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

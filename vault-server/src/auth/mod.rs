//! Authentication and authorisation of requests.
//!
//! Credentials are `vlt_<kind>_<id>_<secret>`: kind `op` (operator) or `ak` (tenant
//! API key), a 16-hex-digit public id and 256 random bits in base64url. Only the
//! SHA-256 of the secret is stored (the secret is high-entropy, so a fast hash is
//! enough); it is compared in constant time. The secret is shown once, at issue.
//! The records are vault-core's (`credentials`); this module finds and checks them
//! for a request.

mod extract;
mod step_up;

pub use extract::Caller;
pub use step_up::{refused as mfa_refused, require_step_up, MFA_HEADER};
pub use vault_core::credentials::AuthFailure;
pub use vault_core::credentials::{
    CredentialKind, CredentialRecord, IssuedCredential, OperatorRole, Role,
};

use axum::http::HeaderMap;

use crate::error::ApiError;

/// A single-valued request header as text; given twice it is ambiguous (which
/// Idempotency-Key, which kind?) and refused.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    if headers.get_all(name).iter().nth(1).is_some() {
        return Err(ApiError::bad_request(
            "invalid_header",
            format!("{name} must be given once"),
        ));
    }
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", format!("{name} must be visible ASCII"))
            })
        })
        .transpose()
}

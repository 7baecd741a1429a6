//! Authentication and authorisation of requests.
//!
//! Credentials are `vlt_<kind>_<id>_<secret>`: kind `op` (operator) or `ak` (tenant
//! API key), a 16-hex-digit public id and 256 random bits in base64url. Only the
//! SHA-256 of the secret is stored (the secret is high-entropy, so a fast hash is
//! enough); it is compared in constant time. The secret is shown once, at issue.
//! The records are vault-core's (`credentials`); this module finds and checks them
//! for a request.

mod extract;

pub use extract::Caller;
pub use vault_core::credentials::AuthFailure;
pub use vault_core::credentials::{
    CredentialKind, CredentialRecord, IssuedCredential, OperatorRole, Role,
};

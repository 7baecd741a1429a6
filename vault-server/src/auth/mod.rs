//! Authentication and authorisation.
//!
//! Credentials are `vlt_<kind>_<id>_<secret>`: kind `op` (operator) or `ak` (tenant
//! API key), a 16-hex-digit public id and 256 random bits in base64url. Only the
//! SHA-256 of the secret is stored (the secret is high-entropy, so a fast hash is
//! enough); it is compared in constant time. The secret is shown once, at issue.

mod credentials;
mod extract;

pub use credentials::{CredentialKind, CredentialRecord, IssuedCredential, Role};
pub use extract::{AuthFailure, Caller};

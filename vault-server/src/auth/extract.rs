//! The `Caller` extractor: who is making this request, checked against storage.

use std::sync::LazyLock;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use time::OffsetDateTime;
use vault_crypto::TenantId;

use super::{CredentialKind, CredentialRecord, Role};
use crate::audit::middleware::NoteSlot;
use crate::error::ApiError;
use crate::state::SharedState;
use crate::storage::ObjectName;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Public id of the credential (recorded in logs and audit; not secret).
    pub key_id: String,
    /// Operator or tenant API key.
    pub kind: CredentialKind,
    /// Tenant of an API key.
    pub tenant: Option<TenantId>,
    /// Roles of an API key.
    pub roles: Vec<Role>,
}

impl Caller {
    /// Requires an operator credential.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self.kind {
            CredentialKind::Operator => Ok(()),
            CredentialKind::ApiKey => Err(ApiError::forbidden(
                "this endpoint needs an operator credential",
            )),
        }
    }

    /// Requires a tenant API key with `role`; returns its tenant.
    pub fn require_role(&self, role: Role) -> Result<&TenantId, ApiError> {
        match (&self.tenant, self.kind) {
            (Some(tenant), CredentialKind::ApiKey) if self.roles.contains(&role) => Ok(tenant),
            (Some(_), CredentialKind::ApiKey) => Err(ApiError::forbidden(format!(
                "this API key lacks the {} role",
                role.as_str()
            ))),
            _ => Err(ApiError::forbidden("this endpoint needs a tenant API key")),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::unauthorized(
        "unauthorized",
        "missing or invalid credential: send Authorization: Bearer <token>",
    )
}

/// Why a request could not be attributed to a credential: the `reason` label of
/// `vault_unauthenticated_requests_total` and of the sampled system-log events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    MissingCredential,
    /// Not `Bearer vlt_<kind>_<id>_<secret>`.
    MalformedCredential,
    /// No credential has that id.
    UnknownCredential,
    /// The id exists; the secret does not match.
    WrongSecret,
    /// The credential was revoked.
    RevokedCredential,
    /// The credential expired.
    ExpiredCredential,
    /// The credential could not be looked up (storage failed).
    CheckFailed,
    /// No route matched, so no credential was looked at.
    Unrouted,
    /// The handler answered before looking at the credential.
    NotChecked,
}

impl AuthFailure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingCredential => "missing_credential",
            AuthFailure::MalformedCredential => "malformed_credential",
            AuthFailure::UnknownCredential => "unknown_credential",
            AuthFailure::WrongSecret => "wrong_secret",
            AuthFailure::RevokedCredential => "revoked_credential",
            AuthFailure::ExpiredCredential => "expired_credential",
            AuthFailure::CheckFailed => "check_failed",
            AuthFailure::Unrouted => "unrouted",
            AuthFailure::NotChecked => "not_checked",
        }
    }
}

/// A credential record that exists nowhere, with a random secret hash: an unknown
/// id is checked against it, so that answering "unknown id" costs the same record
/// decoding, hash and constant-time comparison as "wrong secret" and the timing
/// does not tell which key ids exist.
static DUMMY_RECORD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let issued = CredentialRecord::issue(CredentialKind::ApiKey, None, Vec::new(), None);
    serde_json::to_vec_pretty(&issued.record).unwrap_or_default()
});

/// Decodes the stored record of `id` (or, when there is none, the dummy record)
/// and compares the presented secret with it: the same work either way. Returns
/// the record only when it exists, is of `kind` and the secret matches it.
fn verify_secret(
    stored: Option<&[u8]>,
    kind: CredentialKind,
    secret: &str,
) -> Result<Result<CredentialRecord, AuthFailure>, ApiError> {
    let decode = |bytes: &[u8]| serde_json::from_slice::<CredentialRecord>(bytes);
    let (record, exists) = match stored {
        Some(bytes) => (
            decode(bytes).map_err(|e| ApiError::internal("credential record", e))?,
            true,
        ),
        None => (
            decode(&DUMMY_RECORD).map_err(|e| ApiError::internal("dummy credential", e))?,
            false,
        ),
    };
    let matches = record.secret_matches(secret);
    Ok(match (exists && record.kind == kind, matches) {
        (false, _) => Err(AuthFailure::UnknownCredential),
        (true, false) => Err(AuthFailure::WrongSecret),
        (true, true) => Ok(record),
    })
}

/// Marks the request's audit note with why authentication failed.
fn failed(parts: &Parts, reason: AuthFailure, error: ApiError) -> ApiError {
    if let Some(note) = parts.extensions.get::<NoteSlot>() {
        note.update(|n| n.auth_failure = Some(reason));
    }
    error
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(failed(
                parts,
                AuthFailure::MissingCredential,
                unauthorized(),
            ));
        };
        let parsed = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|token| CredentialRecord::parse_token(token.trim()));
        let Some((kind, id, secret)) = parsed else {
            return Err(failed(
                parts,
                AuthFailure::MalformedCredential,
                unauthorized(),
            ));
        };
        let name = match kind {
            CredentialKind::Operator => ObjectName::operator(id),
            CredentialKind::ApiKey => ObjectName::api_key(id),
        };
        let stored = match state.store.get_bytes(&name).await {
            Ok(stored) => stored,
            Err(e) => return Err(failed(parts, AuthFailure::CheckFailed, e.into())),
        };
        let record = match verify_secret(stored.as_deref(), kind, secret) {
            Ok(Ok(record)) => record,
            Ok(Err(reason)) => return Err(failed(parts, reason, unauthorized())),
            Err(e) => return Err(failed(parts, AuthFailure::CheckFailed, e)),
        };
        if record.revoked_at.is_some() {
            return Err(failed(
                parts,
                AuthFailure::RevokedCredential,
                ApiError::unauthorized("credential_revoked", "this credential has been revoked"),
            ));
        }
        if record.is_expired(OffsetDateTime::now_utc()) {
            return Err(failed(
                parts,
                AuthFailure::ExpiredCredential,
                ApiError::unauthorized("credential_expired", "this credential has expired"),
            ));
        }
        // Authenticated: from here on the request is the credential's, and audited.
        if let Some(note) = parts.extensions.get::<NoteSlot>() {
            note.update(|n| {
                n.actor = Some(match kind {
                    CredentialKind::Operator => format!("operator:{}", record.id),
                    CredentialKind::ApiKey => format!("apikey:{}", record.id),
                });
                n.api_key = (kind == CredentialKind::ApiKey).then(|| record.id.clone());
                n.roles = record.roles.iter().map(|r| r.as_str().to_owned()).collect();
                if n.tenant.is_none() {
                    n.tenant.clone_from(&record.tenant);
                }
            });
        }
        if let Some(tenant) = &record.tenant {
            let active = state
                .tenants
                .get(tenant)
                .await?
                .is_some_and(|t| t.is_active());
            if !active {
                return Err(ApiError::unauthorized(
                    "tenant_disabled",
                    "the credential's tenant is disabled",
                ));
            }
        }
        if kind == CredentialKind::ApiKey && state.audit.bulk.throttled(&record.id).is_some() {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "bulk_access_throttled",
                "this API key read far more documents than usual and is paused; retry later",
            ));
        }
        // After the secret check: naming a key's id without its secret cannot
        // spend that key's budget.
        if let Err(wait) = state.rates.check(&record.id) {
            state.metrics.rate_limited.inc();
            return Err(crate::limits::rate_limited(wait));
        }
        Ok(Caller {
            key_id: record.id,
            kind,
            tenant: record.tenant,
            roles: record.roles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::credentials::comparisons;
    use super::*;

    #[test]
    fn an_unknown_id_costs_the_same_comparison_as_a_wrong_secret() {
        let issued =
            CredentialRecord::issue(CredentialKind::ApiKey, None, vec![Role::Reader], None);
        let stored = serde_json::to_vec_pretty(&issued.record).unwrap();
        let (_, _, secret) = CredentialRecord::parse_token(&issued.token).unwrap();
        let wrong = "A".repeat(43);

        let before = comparisons();
        let unknown = verify_secret(None, CredentialKind::ApiKey, &wrong).unwrap();
        assert_eq!(unknown.unwrap_err(), AuthFailure::UnknownCredential);
        assert_eq!(comparisons() - before, 1, "the unknown id is compared too");

        let before = comparisons();
        let mismatch = verify_secret(Some(&stored), CredentialKind::ApiKey, &wrong).unwrap();
        assert_eq!(mismatch.unwrap_err(), AuthFailure::WrongSecret);
        assert_eq!(comparisons() - before, 1);

        let before = comparisons();
        let other_kind = verify_secret(Some(&stored), CredentialKind::Operator, secret).unwrap();
        assert_eq!(other_kind.unwrap_err(), AuthFailure::UnknownCredential);
        assert_eq!(comparisons() - before, 1);

        let before = comparisons();
        let ok = verify_secret(Some(&stored), CredentialKind::ApiKey, secret).unwrap();
        assert_eq!(ok.unwrap().id, issued.record.id);
        assert_eq!(comparisons() - before, 1);
    }

    #[test]
    fn the_dummy_record_decodes() {
        let dummy: CredentialRecord = serde_json::from_slice(&DUMMY_RECORD).unwrap();
        assert!(!dummy.secret_matches(&"A".repeat(43)));
    }
}

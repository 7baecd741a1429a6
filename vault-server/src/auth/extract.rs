//! The `Caller` extractor: who is making this request, checked against storage.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
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

impl FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(unauthorized)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        let (kind, id, secret) =
            CredentialRecord::parse_token(token.trim()).ok_or_else(unauthorized)?;
        let name = match kind {
            CredentialKind::Operator => ObjectName::operator(id),
            CredentialKind::ApiKey => ObjectName::api_key(id),
        };
        let bytes = state
            .store
            .get_bytes(&name)
            .await?
            .ok_or_else(unauthorized)?;
        let record: CredentialRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal("credential record", e))?;
        if record.kind != kind || !record.secret_matches(secret) {
            return Err(unauthorized());
        }
        if record.revoked_at.is_some() {
            return Err(ApiError::unauthorized(
                "credential_revoked",
                "this credential has been revoked",
            ));
        }
        if record.is_expired(OffsetDateTime::now_utc()) {
            return Err(ApiError::unauthorized(
                "credential_expired",
                "this credential has expired",
            ));
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
        if let Some(note) = parts.extensions.get::<NoteSlot>() {
            note.update(|n| {
                n.actor = Some(match kind {
                    CredentialKind::Operator => format!("operator:{}", record.id),
                    CredentialKind::ApiKey => format!("apikey:{}", record.id),
                });
                n.roles = record.roles.iter().map(|r| r.as_str().to_owned()).collect();
                if n.tenant.is_none() {
                    n.tenant.clone_from(&record.tenant);
                }
            });
        }
        Ok(Caller {
            key_id: record.id,
            kind,
            tenant: record.tenant,
            roles: record.roles,
        })
    }
}

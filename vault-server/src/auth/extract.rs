//! The `Caller` extractor: who is making this request, checked against storage.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use time::OffsetDateTime;
use vault_crypto::TenantId;

use super::{CredentialKind, OperatorRole, Role};
use crate::audit_note::NoteSlot;
use crate::error::ApiError;
use crate::state::SharedState;
use vault_core::credentials::{authenticate, AuthFailure};

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
    /// Roles of an operator.
    pub operator_roles: Vec<OperatorRole>,
    /// Name of an operator (its MFA enrolment goes by it).
    pub operator_name: Option<String>,
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

    /// Requires an operator credential with `role`.
    pub fn require_operator_role(&self, role: OperatorRole) -> Result<(), ApiError> {
        self.require_operator()?;
        if self.operator_roles.contains(&role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this operator lacks the {} role",
                role.as_str()
            )))
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
        // Checked once per request: a second extractor gets the same caller
        // (and the credential's rate is spent once).
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let caller = Self::check(parts, state).await?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

impl Caller {
    async fn check(parts: &mut Parts, state: &SharedState) -> Result<Caller, ApiError> {
        if parts.headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
            // Which one counts would depend on who reads it: a proxy that reads
            // the last one would see another caller than this server.
            return Err(ApiError::bad_request(
                "invalid_header",
                "Authorization must be given once",
            ));
        }
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(failed(
                parts,
                AuthFailure::MissingCredential,
                unauthorized(),
            ));
        };
        let Some(token) = header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(failed(
                parts,
                AuthFailure::MalformedCredential,
                unauthorized(),
            ));
        };
        let record = match authenticate(
            state.vault.store.as_ref(),
            token,
            OffsetDateTime::now_utc(),
        )
        .await
        {
            Ok(Ok(record)) => record,
            Ok(Err(reason)) => {
                let answer = match reason {
                    AuthFailure::RevokedCredential => ApiError::unauthorized(
                        "credential_revoked",
                        "this credential has been revoked",
                    ),
                    AuthFailure::ExpiredCredential => {
                        ApiError::unauthorized("credential_expired", "this credential has expired")
                    }
                    AuthFailure::DisabledCredential => {
                        ApiError::unauthorized("credential_disabled", "this operator is disabled")
                    }
                    _ => unauthorized(),
                };
                return Err(failed(parts, reason, answer));
            }
            Err(e) => return Err(failed(parts, AuthFailure::CheckFailed, e.into())),
        };
        let kind = record.kind;
        let (operator_name, operator_roles) = match record.operator_profile() {
            Some(profile) => (Some(profile.name), profile.roles),
            None => (None, Vec::new()),
        };
        // Authenticated: from here on the request is the credential's, and audited.
        if let Some(note) = parts.extensions.get::<NoteSlot>() {
            note.update(|n| {
                n.actor = Some(match kind {
                    CredentialKind::Operator => format!("operator:{}", record.id),
                    CredentialKind::ApiKey => format!("apikey:{}", record.id),
                });
                n.api_key = (kind == CredentialKind::ApiKey).then(|| record.id.clone());
                n.roles = match kind {
                    CredentialKind::Operator => operator_roles
                        .iter()
                        .map(|r| r.as_str().to_owned())
                        .collect(),
                    CredentialKind::ApiKey => {
                        record.roles.iter().map(|r| r.as_str().to_owned()).collect()
                    }
                };
                if n.tenant.is_none() {
                    n.tenant.clone_from(&record.tenant);
                }
            });
        }
        if let Some(tenant) = &record.tenant {
            use vault_api::tenants::TenantStatus;
            match state.vault.tenants.get(tenant).await?.map(|t| t.status) {
                Some(TenantStatus::Active) => {}
                Some(TenantStatus::Disabled) => {
                    return Err(ApiError::unauthorized(
                        "tenant_disabled",
                        "the credential's tenant is disabled",
                    ));
                }
                Some(TenantStatus::Offboarded) | None => {
                    return Err(ApiError::unauthorized(
                        "tenant_offboarded",
                        "the credential's tenant was offboarded",
                    ));
                }
            }
        }
        if kind == CredentialKind::ApiKey && state.vault.audit.bulk.throttled(&record.id).is_some()
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "bulk_access_throttled",
                "this API key read far more documents than usual and is paused; retry later",
            ));
        }
        // After the secret check: naming a key's id without its secret cannot
        // spend that key's budget.
        if let Err(wait) = state.rates.check(&record.id) {
            state.vault.metrics.rate_limited.inc();
            return Err(crate::limits::rate_limited(wait));
        }
        Ok(Caller {
            key_id: record.id,
            kind,
            tenant: record.tenant,
            roles: record.roles,
            operator_roles,
            operator_name,
        })
    }
}

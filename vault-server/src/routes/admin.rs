//! Operator endpoints under `/v1/admin`: tenants and API keys.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::extract::{JsonBody, Operator, OperatorOnTenant};
use crate::audit_note::NoteSlot;
use crate::audit_trail::record_intent;
use crate::auth::{CredentialRecord, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use vault_api::json::optional_whole_number;
use vault_core::credentials;
use vault_core::tenants::{parse_tenant_id, NewTenant, TenantRecord, TenantStatus};
use vault_crypto::TenantId;

/// Body of `POST /v1/admin/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Tenant id: 1-63 of `a-z 0-9 - _`, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub id: String,
    /// `local` (default) or `aws-kms`.
    #[serde(default = "default_provider")]
    #[schema(pattern = "^(local|aws-kms)$")]
    pub key_provider: String,
    /// For `aws-kms`: an existing key ARN or alias; without it the vault creates a
    /// key with alias `alias/vault/<tenant>`.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Days a document must be kept before it can be deleted (default 2190: the
    /// HIPAA documentation rule's six years; at most 36,500).
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(minimum = 0, maximum = 36_500)]
    pub retention_days: Option<u32>,
    /// Documents the tenant is expected to hold (1 to 10^10): sizes its blind
    /// tokens. Default `search.initial_expected_documents` (10,000); the plan grows
    /// with the tenant. A plan far above the real count makes tokens nearly unique.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(minimum = 1, maximum = 10_000_000_000_u64)]
    pub expected_documents: Option<u64>,
}

fn default_provider() -> String {
    "local".into()
}

/// Creates a tenant and its keys.
#[utoipa::path(post, path = "/v1/admin/tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantRecord), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_tenant(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    JsonBody(body): JsonBody<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantRecord>)> {
    let id = parse_tenant_id(body.id)?;
    note.update(|n| n.tenant = Some(id.clone()));
    record_intent(&state, &note).await?;
    let record = state
        .vault
        .lifecycle
        .create_tenant(NewTenant {
            id,
            key_provider: body.key_provider,
            kms_key_id: body.kms_key_id,
            retention_days: body.retention_days,
            expected_documents: body.expected_documents,
        })
        .await?;
    tracing::info!(tenant = %record.id, provider = %record.key_provider, "tenant created");
    Ok((StatusCode::CREATED, Json(record)))
}

/// Lists tenants.
#[utoipa::path(get, path = "/v1/admin/tenants", responses((status = 200, body = [TenantRecord])), security(("bearer" = [])))]
pub async fn list_tenants(
    State(state): State<SharedState>,
    _operator: Operator,
) -> ApiResult<Json<Vec<TenantRecord>>> {
    Ok(Json(state.vault.tenants.list().await?))
}

/// Shows one tenant.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}", responses((status = 200, body = TenantRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
) -> ApiResult<Json<TenantRecord>> {
    Ok(Json(state.vault.tenants.require(&id).await?))
}

/// Disables a tenant: its API keys are refused and its documents can be neither
/// written nor read until an operator acts again. Keys and documents are kept
/// (destroying them is offboarding).
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/disable", responses((status = 200, body = TenantRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn disable_tenant(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
) -> ApiResult<Json<TenantRecord>> {
    // Offboarded (or disabled already): stays as it is.
    let record = change_status(
        &state,
        &id,
        &note,
        TenantStatus::Active,
        TenantStatus::Disabled,
    )
    .await?;
    Ok(Json(record))
}

/// Enables a disabled tenant again: its API keys are accepted as before (by
/// every replica within the tenant cache's 5 s). An offboarded tenant's keys are
/// destroyed: it stays offboarded (409 `tenant_offboarded`).
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/enable", responses((status = 200, body = TenantRecord), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn enable_tenant(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
) -> ApiResult<Json<TenantRecord>> {
    let record = change_status(
        &state,
        &id,
        &note,
        TenantStatus::Disabled,
        TenantStatus::Active,
    )
    .await?;
    if record.status == TenantStatus::Offboarded {
        return Err(ApiError::conflict(
            "tenant_offboarded",
            "the tenant is offboarded: its keys are destroyed and it cannot be enabled",
        ));
    }
    Ok(Json(record))
}

/// Moves a tenant from `from` to `to`, its intent audited before the write
/// (a conditional write, so a change through another replica meanwhile is
/// seen); a tenant in any other state is left as it is. Answers the record as
/// it ends.
async fn change_status(
    state: &SharedState,
    id: &TenantId,
    note: &NoteSlot,
    from: TenantStatus,
    to: TenantStatus,
) -> ApiResult<TenantRecord> {
    let record = state.vault.tenants.require_fresh(id).await?;
    if record.status != from {
        return Ok(record);
    }
    record_intent(state, note).await?;
    let record = state
        .vault
        .tenants
        .modify(id, |r| {
            let moving = r.status == from;
            if moving {
                r.status = to;
            }
            Ok(moving)
        })
        .await?;
    if record.status == to {
        tracing::info!(tenant = %id, status = ?to, "tenant status changed");
    }
    Ok(record)
}

/// Body of `POST /v1/admin/tenants/{tenant}/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueApiKey {
    /// Any non-empty subset of `uploader`, `reader`, `auditor`, `tenant-admin`.
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
    /// Days until expiry (1 to 3650); none means no expiry.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// An issued API key: the secret is shown only here.
#[derive(Serialize, ToSchema)]
pub struct IssuedApiKey {
    /// Public id (for revocation and audit).
    pub id: String,
    /// Bearer token. Shown once; store it in a secret manager.
    pub secret: String,
    /// Tenant.
    pub tenant: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

/// Issues an API key for a tenant.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/api-keys", request_body = IssueApiKey,
    responses((status = 201, body = IssuedApiKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn issue_api_key(
    State(state): State<SharedState>,
    OperatorOnTenant(tenant): OperatorOnTenant,
    note: NoteSlot,
    JsonBody(body): JsonBody<IssueApiKey>,
) -> ApiResult<(StatusCode, Json<IssuedApiKey>)> {
    match state.vault.tenants.get_fresh(&tenant).await? {
        Some(record) if record.is_active() => {}
        _ => return Err(vault_core::tenants::tenant_not_found(&tenant).into()),
    }
    record_intent(&state, &note).await?;
    let issued = credentials::issue_api_key(
        state.vault.store.as_ref(),
        &tenant,
        body.roles,
        body.expires_in_days,
        OffsetDateTime::now_utc(),
    )
    .await?;
    tracing::info!(tenant = %tenant, key_id = %issued.record.id, "api key issued");
    note.update(|n| n.detail = Some(format!("api_key={}", issued.record.id)));
    Ok((
        StatusCode::CREATED,
        Json(IssuedApiKey {
            id: issued.record.id.clone(),
            secret: issued.token.to_string(),
            tenant: tenant.to_string(),
            roles: issued.record.roles.clone(),
            expires_at: issued.record.expires_at,
        }),
    ))
}

/// An API key as listed: never its secret or its hash.
#[derive(Serialize, ToSchema)]
pub struct ListedApiKey {
    /// Public id.
    pub id: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Issue time.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// Revocation time.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Lists a tenant's API keys (ids, roles, dates; never secrets), oldest first.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}/api-keys",
    responses((status = 200, body = [ListedApiKey]), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_api_keys(
    State(state): State<SharedState>,
    OperatorOnTenant(tenant): OperatorOnTenant,
) -> ApiResult<Json<Vec<ListedApiKey>>> {
    state.vault.tenants.require(&tenant).await?;
    let keys = credentials::api_keys_of(state.vault.store.as_ref(), &tenant)
        .await?
        .into_iter()
        .map(|record| ListedApiKey {
            id: record.id,
            roles: record.roles,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
        })
        .collect();
    Ok(Json(keys))
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/v1/admin/api-keys/{id}", responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_api_key(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    // Checked before anything records it: a raw path value never reaches the log.
    if !CredentialRecord::is_id(&id) {
        return Err(ApiError::bad_request(
            "invalid_api_key_id",
            "an API key id is 16 lowercase hexadecimal digits",
        ));
    }
    note.update(|n| n.detail = Some(format!("api_key={id}")));
    let mut record = credentials::find_api_key(state.vault.store.as_ref(), &id).await?;
    note.update(|n| n.tenant.clone_from(&record.tenant));
    record_intent(&state, &note).await?;
    if credentials::revoke(
        state.vault.store.as_ref(),
        &mut record,
        OffsetDateTime::now_utc(),
    )
    .await?
    {
        tracing::info!(key_id = %id, "api key revoked");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A new operator credential: the secret is shown only here.
#[derive(Serialize, ToSchema)]
pub struct RotatedOperator {
    /// Public id of the new credential.
    pub id: String,
    /// Bearer token of the new credential. Shown once; `vault-cli operator rotate`
    /// writes it to the token file.
    pub secret: String,
    /// Id of the credential that made the request, now revoked.
    pub revoked: String,
}

/// Rotates the caller's operator credential: issues a new one and revokes the
/// caller's. The new secret is in the answer only.
#[utoipa::path(post, path = "/v1/admin/operator/rotate",
    responses((status = 201, body = RotatedOperator), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_operator(
    State(state): State<SharedState>,
    Operator(caller): Operator,
    note: NoteSlot,
) -> ApiResult<(StatusCode, Json<RotatedOperator>)> {
    record_intent(&state, &note).await?;
    let issued = vault_core::operators::rotate(
        &state.vault.store,
        &state.vault.holder,
        &caller.key_id,
        OffsetDateTime::now_utc(),
    )
    .await?;
    tracing::info!(new = %issued.record.id, revoked = %caller.key_id, "operator credential rotated");
    note.update(|n| {
        n.detail = Some(format!(
            "operator={} revoked={}",
            issued.record.id, caller.key_id
        ))
    });
    Ok((
        StatusCode::CREATED,
        Json(RotatedOperator {
            id: issued.record.id.clone(),
            secret: issued.token.to_string(),
            revoked: caller.key_id,
        }),
    ))
}

//! Operator endpoints under `/v1/admin`: tenants and API keys.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use super::extract::{JsonBody, OperatorOnTenant};
use crate::audit::middleware::NoteSlot;
use crate::auth::{Caller, CredentialKind, CredentialRecord, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use crate::storage::ObjectName;
use crate::tenants::{parse_tenant_id, TenantRecord, TenantStatus};

/// Body of `POST /v1/admin/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Tenant id: 1-63 of `a-z 0-9 - _`.
    pub id: String,
    /// `local` (default) or `aws-kms`.
    #[serde(default = "default_provider")]
    pub key_provider: String,
    /// For `aws-kms`: an existing key ARN or alias; without it the vault creates a
    /// key with alias `alias/vault/<tenant>`.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Days a document must be kept before it can be deleted (default 2190: the
    /// HIPAA documentation rule's six years).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Documents the tenant is expected to hold (1 to 10^10): sizes its blind
    /// tokens. Default `search.initial_expected_documents` (10,000); the plan grows
    /// with the tenant. A plan far above the real count makes tokens nearly unique.
    #[serde(default)]
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
    caller: Caller,
    note: NoteSlot,
    JsonBody(body): JsonBody<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantRecord>)> {
    caller.require_operator()?;
    let id = parse_tenant_id(body.id)?;
    if id.as_str() == crate::audit::SYSTEM_LOG {
        return Err(ApiError::bad_request(
            "invalid_tenant_id",
            "the tenant id system is reserved for the vault's own audit log",
        ));
    }
    note.update(|n| n.tenant = Some(id.clone()));
    if state.tenants.get(&id).await?.is_some() {
        return Err(ApiError::conflict(
            "tenant_exists",
            format!("tenant {id} already exists"),
        ));
    }
    let provider = match body.key_provider.as_str() {
        "local" if body.kms_key_id.is_none() => state.keys.provider("local")?,
        "local" => {
            return Err(ApiError::bad_request(
                "invalid_key_provider",
                "kms_key_id is only for key_provider aws-kms",
            ))
        }
        "aws-kms" => state.keys.provider("aws-kms").map_err(|_| {
            ApiError::bad_request(
                "key_provider_disabled",
                "the aws-kms provider is not enabled on this server ([keys] aws_kms = true)",
            )
        })?,
        other => {
            return Err(ApiError::bad_request(
                "invalid_key_provider",
                format!("unknown key provider {other:?}: use local or aws-kms"),
            ))
        }
    };
    let planned_documents = crate::tenants::check_planned_documents(
        body.expected_documents
            .unwrap_or(state.config.search.initial_expected_documents),
    )?;
    let kek_id = provider
        .ensure_tenant_key(&id, body.kms_key_id.as_deref())
        .await?;
    let record = TenantRecord {
        format: 1,
        id,
        key_provider: provider.id().to_owned(),
        kek_id,
        branch_version: 1,
        min_decryption_version: 1,
        index_version: 1,
        status: TenantStatus::Active,
        retired_kek_ids: Vec::new(),
        retention_days: body
            .retention_days
            .unwrap_or(crate::key_lifecycle::DEFAULT_RETENTION_DAYS),
        planned_documents: Some(planned_documents),
        created_at: OffsetDateTime::now_utc(),
    };
    // Create the branch key now, so the first upload is as fast as any other and a
    // KEK that cannot wrap is found at once.
    state.keys.branch_key_for_upload(&record.key_spec()).await?;
    state.tenants.create(record.clone()).await?;
    // Likewise the blind index and its root key: the first upload and search then
    // cost no key-service call.
    crate::search::tenant_index(&state, &record).await?;
    tracing::info!(tenant = %record.id, provider = %record.key_provider, "tenant created");
    Ok((StatusCode::CREATED, Json(record)))
}

/// Lists tenants.
#[utoipa::path(get, path = "/v1/admin/tenants", responses((status = 200, body = [TenantRecord])), security(("bearer" = [])))]
pub async fn list_tenants(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TenantRecord>>> {
    caller.require_operator()?;
    Ok(Json(state.tenants.list().await?))
}

/// Shows one tenant.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}", responses((status = 200, body = TenantRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
) -> ApiResult<Json<TenantRecord>> {
    state.tenants.require(&id).await.map(Json)
}

/// Disables a tenant: its API keys are refused and its documents can be neither
/// written nor read until an operator acts again. Keys and documents are kept
/// (destroying them is offboarding).
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/disable", responses((status = 200, body = TenantRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn disable_tenant(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
) -> ApiResult<Json<TenantRecord>> {
    let mut record = state.tenants.require(&id).await?;
    if record.status == TenantStatus::Active {
        record.status = TenantStatus::Disabled;
        state.tenants.update(record.clone()).await?;
        tracing::info!(tenant = %id, "tenant disabled");
    }
    Ok(Json(record))
}

/// Body of `POST /v1/admin/tenants/{tenant}/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueApiKey {
    /// Any non-empty subset of `uploader`, `reader`, `auditor`, `tenant-admin`.
    pub roles: Vec<Role>,
    /// Days until expiry (1 to 3650); none means no expiry.
    #[serde(default)]
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
    state.tenants.require_active(&tenant).await?;
    let mut roles = body.roles;
    roles.sort_by_key(|r| r.as_str());
    roles.dedup();
    if roles.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_roles",
            "give at least one role",
        ));
    }
    let expires_at = match body.expires_in_days {
        Some(days @ 1..=3650) => Some(OffsetDateTime::now_utc() + Duration::days(i64::from(days))),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_expiry",
                "expires_in_days must be 1 to 3650",
            ))
        }
        None => None,
    };
    let issued = CredentialRecord::issue(
        CredentialKind::ApiKey,
        Some(tenant.clone()),
        roles.clone(),
        expires_at,
    );
    let bytes = serde_json::to_vec_pretty(&issued.record)
        .map_err(|e| ApiError::internal("api key record", e))?;
    state
        .store
        .put_new_bytes(&ObjectName::api_key(&issued.record.id), Bytes::from(bytes))
        .await?;
    tracing::info!(tenant = %tenant, key_id = %issued.record.id, "api key issued");
    note.update(|n| n.detail = Some(format!("api_key={}", issued.record.id)));
    Ok((
        StatusCode::CREATED,
        Json(IssuedApiKey {
            id: issued.record.id.clone(),
            secret: issued.token.to_string(),
            tenant: tenant.to_string(),
            roles,
            expires_at,
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
    state.tenants.require(&tenant).await?;
    let mut keys = Vec::new();
    for info in crate::storage::list_all(state.store.as_ref(), "system/api-keys/", None).await? {
        let Some(bytes) = state.store.get_bytes(&info.name).await? else {
            continue;
        };
        let record: CredentialRecord =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("api key record", e))?;
        if record.tenant.as_ref() == Some(&tenant) {
            keys.push(ListedApiKey {
                id: record.id,
                roles: record.roles,
                created_at: record.created_at,
                expires_at: record.expires_at,
                revoked_at: record.revoked_at,
            });
        }
    }
    keys.sort_by_key(|k| k.created_at);
    Ok(Json(keys))
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/v1/admin/api-keys/{id}", responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_api_key(
    State(state): State<SharedState>,
    caller: Caller,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_operator()?;
    // Checked before anything records it: a raw path value never reaches the log.
    if !CredentialRecord::is_id(&id) {
        return Err(ApiError::bad_request(
            "invalid_api_key_id",
            "an API key id is 16 lowercase hexadecimal digits",
        ));
    }
    note.update(|n| n.detail = Some(format!("api_key={id}")));
    let not_found = || ApiError::not_found("api_key_not_found", "no such API key");
    let name = ObjectName::api_key(&id);
    let bytes = state.store.get_bytes(&name).await?.ok_or_else(not_found)?;
    let mut record: CredentialRecord =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("api key record", e))?;
    note.update(|n| n.tenant.clone_from(&record.tenant));
    if record.revoked_at.is_none() {
        record.revoked_at = Some(OffsetDateTime::now_utc());
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| ApiError::internal("api key record", e))?;
        state.store.replace(&name, Bytes::from(bytes)).await?;
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
    caller: Caller,
    note: NoteSlot,
) -> ApiResult<(StatusCode, Json<RotatedOperator>)> {
    caller.require_operator()?;
    let old_name = ObjectName::operator(&caller.key_id);
    let bytes = state
        .store
        .get_bytes(&old_name)
        .await?
        .ok_or_else(|| ApiError::internal("operator record", "the caller's record is gone"))?;
    let mut old: CredentialRecord =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("operator record", e))?;
    // The new credential first: a failure in between leaves two valid operator
    // credentials (the old one still works), never none.
    let issued = CredentialRecord::issue(CredentialKind::Operator, None, Vec::new(), None);
    let record = serde_json::to_vec_pretty(&issued.record)
        .map_err(|e| ApiError::internal("operator record", e))?;
    state
        .store
        .put_new_bytes(
            &ObjectName::operator(&issued.record.id),
            Bytes::from(record),
        )
        .await?;
    old.revoked_at = Some(OffsetDateTime::now_utc());
    let revoked =
        serde_json::to_vec_pretty(&old).map_err(|e| ApiError::internal("operator record", e))?;
    state.store.replace(&old_name, Bytes::from(revoked)).await?;
    tracing::info!(new = %issued.record.id, revoked = %old.id, "operator credential rotated");
    note.update(|n| n.detail = Some(format!("operator={} revoked={}", issued.record.id, old.id)));
    Ok((
        StatusCode::CREATED,
        Json(RotatedOperator {
            id: issued.record.id.clone(),
            secret: issued.token.to_string(),
            revoked: old.id,
        }),
    ))
}

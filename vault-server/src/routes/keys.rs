//! Operator endpoints for the key lifecycle and document retention: rotate,
//! rewrap, index key rotation, offboarding, retention periods and legal holds.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use vault_crypto::{DocumentId, TenantId};

use super::extract::{JsonBody, OperatorOnTenant};
use super::jobs::Answer;
use crate::audit_note::NoteSlot;
use crate::audit_trail::record_intent;
use crate::auth::{require_step_up, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use axum::http::HeaderMap;
use axum::response::Response;
use vault_api::json::{optional_whole_number, whole_number};
use vault_core::jobs::{JobRecord, JobResult};
use vault_core::key_lifecycle::{OffboardReport, RewrapReport};
use vault_core::search::ReconcileReport;
use vault_core::tenants::TenantRecord;

/// Rotates the tenant's KEK and starts a new branch key version.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/keys/rotate",
    responses((status = 200, body = TenantRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
) -> ApiResult<Json<TenantRecord>> {
    record_intent(&state, &note).await?;
    let record = state.vault.maintenance.rotate_keys(&id).await?;
    note.update(|n| n.detail = Some(format!("branch_version={}", record.branch_version)));
    Ok(Json(record))
}

/// Body of `POST /v1/admin/tenants/{tenant}/keys/rewrap`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewrapRequest {
    /// After a complete rewrap, refuse branch keys older than the current one.
    #[serde(default)]
    pub retire_old: bool,
}

/// Re-wraps every key record of the tenant under the current branch key.
///
/// Runs as a job: the answer is its report once it finished, or at once `202`
/// with the job (`Prefer: respond-async`), followed at `GET /v1/admin/jobs/{id}`;
/// a client that goes away does not stop it.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/keys/rewrap", request_body = Option<RewrapRequest>,
    responses((status = 200, body = RewrapReport), (status = 202, body = JobRecord, description = "with `Prefer: respond-async`: the job, to follow at `Location`"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn rewrap(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    // The operator OperatorOnTenant checked (kept in the request).
    caller: Caller,
    note: NoteSlot,
    headers: HeaderMap,
    // No body, or `null` (the document's `Option`), is the default.
    body: Option<JsonBody<Option<RewrapRequest>>>,
) -> ApiResult<Response> {
    let request = body.and_then(|JsonBody(b)| b).unwrap_or_default();
    if request.retire_old {
        // Retiring old key versions is irreversible: a second factor.
        require_step_up(&state, &caller, &headers, Some(&note)).await?;
    }
    record_intent(&state, &note).await?;
    let started = state
        .vault
        .maintenance
        .rewrap(&id, request.retire_old, &note.actor())
        .await?;
    let job = started.record.id.clone();
    let answer = super::jobs::answer(started, &headers, |result| match result {
        JobResult::Rewrap(report) => Some(report),
        _ => None,
    })
    .await?;
    note.update(|n| {
        n.detail = Some(match &answer {
            Answer::Finished(report) => format!(
                "rewrapped={} failed={} min_decryption_version={}",
                report.documents_rewrapped + report.audit_segments_rewrapped,
                report.failed,
                report.min_decryption_version
            ),
            Answer::Accepted(_) => format!("job={job}"),
        })
    });
    Ok(answer.into_response())
}

/// Body of `POST /v1/admin/tenants/{tenant}/index/rotate`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIndexRequest {
    /// Re-plan the new index's token lengths for this many documents (1 to 10^10);
    /// without it the tenant's plan stays.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(minimum = 1, maximum = 10_000_000_000_u64)]
    pub expected_documents: Option<u64>,
}

/// Rotates the blind-index key and rebuilds the index under the new version.
///
/// Runs as a job: the answer is its report once it finished, or at once `202`
/// with the job (`Prefer: respond-async`), followed at `GET /v1/admin/jobs/{id}`;
/// a client that goes away does not stop it.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/index/rotate", request_body = Option<RotateIndexRequest>,
    responses((status = 200, body = ReconcileReport), (status = 202, body = JobRecord, description = "with `Prefer: respond-async`: the job, to follow at `Location`"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn rotate_index(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
    headers: HeaderMap,
    // No body, or `null` (the document's `Option`), is the default.
    body: Option<JsonBody<Option<RotateIndexRequest>>>,
) -> ApiResult<Response> {
    let request = body.and_then(|JsonBody(b)| b).unwrap_or_default();
    let planned = request
        .expected_documents
        .map(vault_core::tenants::check_planned_documents)
        .transpose()?;
    record_intent(&state, &note).await?;
    let started = state
        .vault
        .maintenance
        .rotate_index(&id, planned, &note.actor())
        .await?;
    if let Some(planned) = planned {
        note.update(|n| n.detail = Some(format!("planned_documents={planned}")));
    }
    let answer = super::jobs::answer(started, &headers, |result| match result {
        JobResult::Reconcile(report) => Some(report),
        _ => None,
    })
    .await?;
    Ok(answer.into_response())
}

/// Offboards a tenant: credentials revoked, keys destroyed (crypto-shredding).
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/offboard",
    responses((status = 200, body = OffboardReport), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn offboard(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
) -> ApiResult<Json<OffboardReport>> {
    record_intent(&state, &note).await?;
    let report = state.vault.lifecycle.offboard(&id, 7).await?;
    Ok(Json(report))
}

/// Body of `PUT /v1/admin/tenants/{tenant}/retention`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRequest {
    /// Days after upload during which a document cannot be deleted (0 to 36,500).
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 36_500)]
    pub days: u32,
}

/// Sets the tenant's retention period.
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant}/retention", request_body = RetentionRequest,
    responses((status = 200, body = TenantRecord), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_retention(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
    JsonBody(body): JsonBody<RetentionRequest>,
) -> ApiResult<Json<TenantRecord>> {
    note.update(|n| n.detail = Some(format!("retention_days={}", body.days)));
    record_intent(&state, &note).await?;
    Ok(Json(
        state.vault.lifecycle.set_retention(&id, body.days).await?,
    ))
}

async fn hold_or_release(
    state: &SharedState,
    note: &NoteSlot,
    id: &TenantId,
    document: String,
    on: bool,
) -> ApiResult<StatusCode> {
    let doc: DocumentId = document
        .parse()
        .map_err(|_| ApiError::document_not_found())?;
    note.update(|n| n.document = Some(doc.to_string()));
    let record = state.vault.tenants.require_fresh(id).await?;
    record_intent(state, note).await?;
    state.vault.lifecycle.set_hold(&record, &doc, on).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Puts a document under legal hold: it cannot be deleted until released.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/documents/{id}/hold",
    responses((status = 204, description = "held"), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn hold(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
    Path((_tenant, document)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    hold_or_release(&state, &note, &id, document, true).await
}

/// Releases a document's legal hold.
#[utoipa::path(delete, path = "/v1/admin/tenants/{tenant}/documents/{id}/hold",
    responses((status = 204, description = "released"), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn release(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
    Path((_tenant, document)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    hold_or_release(&state, &note, &id, document, false).await
}

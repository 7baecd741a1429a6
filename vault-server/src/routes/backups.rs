//! Operator endpoints for backups: the job's status and snapshots, the vault's
//! backup public key, starting a backup, applying retention, legal holds, and
//! recording drill reports.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::extract::{JsonBody, Operator};
use crate::audit_note::NoteSlot;
use crate::audit_trail::record_intent;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use vault_core::backup::drill::DrillReport;
use vault_core::backup::manifest::is_snapshot_id;

fn snapshot_id(raw: &str) -> Result<&str, ApiError> {
    if is_snapshot_id(raw) {
        Ok(raw)
    } else {
        Err(ApiError::not_found(
            "snapshot_not_found",
            "no such snapshot",
        ))
    }
}

/// The backup job's status and the repository's snapshots.
#[utoipa::path(get, path = "/v1/admin/backups",
    responses((status = 200, description = "`{\"status\": {...}, \"snapshots\": [...]}`")),
    security(("bearer" = [])))]
pub async fn list(State(state): State<SharedState>, _operator: Operator) -> ApiResult<Json<Value>> {
    let status = state.vault.backups.status();
    let snapshots = if status.configured {
        let repo = state.vault.backups.repository().await?;
        if repo.config().await?.is_some() {
            repo.summaries(&state.vault.audit.signer.public).await?
        } else {
            Vec::new()
        }
    } else {
        Vec::new()
    };
    Ok(Json(json!({ "status": status, "snapshots": snapshots })))
}

/// The vault's backup public key.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupPublicKey {
    /// Always `ed25519`.
    pub algorithm: &'static str,
    /// The public key (64 hex digits).
    pub public_key: String,
}

/// The vault's backup public key (Ed25519).
///
/// Every snapshot manifest is signed with its private half (the vault's key, which
/// also signs audit checkpoints). `vault-cli backup verify`, `restore` and `drill`
/// check every manifest against this key, never one found in the repository. Save
/// it beside the root key file for a restore without the server.
#[utoipa::path(get, path = "/v1/admin/backups/public-key",
    responses((status = 200, body = BackupPublicKey)),
    security(("bearer" = [])))]
pub async fn public_key(
    State(state): State<SharedState>,
    _operator: Operator,
) -> ApiResult<Json<BackupPublicKey>> {
    Ok(Json(BackupPublicKey {
        algorithm: "ed25519",
        public_key: state.vault.audit.signer.public.to_hex(),
    }))
}

/// Starts a backup now; poll `GET /v1/admin/backups` for its progress.
///
/// It runs as a job: its record is in the answer (`job`) and at `Location`.
#[utoipa::path(post, path = "/v1/admin/backups",
    responses((status = 202, description = "started"), (status = 409, body = crate::error::ErrorBody, description = "a backup is running")),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<SharedState>,
    Operator(caller): Operator,
    note: NoteSlot,
) -> ApiResult<Response> {
    state.vault.backups.check_can_start()?;
    record_intent(&state, &note).await?;
    let requested_at = time::OffsetDateTime::now_utc();
    let started = state
        .vault
        .maintenance
        .backup(&format!("operator:{}", caller.key_id))?;
    let requested_at = requested_at
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::internal("time", e))?;
    let location = format!("/v1/admin/jobs/{}", started.record.id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({ "started": true, "requested_at": requested_at, "job": started.record })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Applies the configured retention rules.
#[utoipa::path(post, path = "/v1/admin/backups/prune",
    responses((status = 200, description = "what was kept and removed")),
    security(("bearer" = [])))]
pub async fn prune(
    State(state): State<SharedState>,
    Operator(caller): Operator,
    note: NoteSlot,
) -> ApiResult<Json<Value>> {
    record_intent(&state, &note).await?;
    let report = state
        .vault
        .backups
        .run_prune(&format!("operator:{}", caller.key_id))
        .await?;
    note.update(|n| n.detail = Some(format!("removed {}", report.removed.len())));
    Ok(Json(json!(report)))
}

/// Puts a legal hold on a snapshot: no retention rule removes it.
#[utoipa::path(post, path = "/v1/admin/backups/{id}/hold",
    responses((status = 204, description = "held")), security(("bearer" = [])))]
pub async fn hold(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = snapshot_id(&id)?;
    note.update(|n| n.detail = Some(format!("snapshot={id}")));
    let repo = state.vault.backups.repository().await?;
    record_intent(&state, &note).await?;
    repo.hold(id, &state.vault.audit.signer.public).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Releases a snapshot's legal hold.
#[utoipa::path(delete, path = "/v1/admin/backups/{id}/hold",
    responses((status = 204, description = "released")), security(("bearer" = [])))]
pub async fn release(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = snapshot_id(&id)?;
    note.update(|n| n.detail = Some(format!("snapshot={id}")));
    let repo = state.vault.backups.repository().await?;
    record_intent(&state, &note).await?;
    repo.release(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records a drill's report in the audit log (`vault-cli drill` sends it).
#[utoipa::path(post, path = "/v1/admin/drills",
    request_body(content = DrillReport, content_type = "application/json", description = "the JSON report `vault-cli drill --json` prints"),
    responses((status = 201, description = "recorded")), security(("bearer" = [])))]
pub async fn record_drill(
    _operator: Operator,
    note: NoteSlot,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // serde's message would quote the body: say what is expected instead.
    let report: DrillReport = serde_json::from_value(body).map_err(|_| {
        ApiError::bad_request(
            "invalid_drill_report",
            "not a drill report: send the JSON report `vault-cli drill --json` prints",
        )
    })?;
    if !is_snapshot_id(&report.snapshot) || !matches!(report.status.as_str(), "passed" | "failed") {
        return Err(ApiError::bad_request(
            "invalid_drill_report",
            "a drill report names a snapshot and a status of passed or failed",
        ));
    }
    note.update(|n| {
        n.detail = Some(format!(
            "drill {} snapshot {} rpo_s {} rto_s {:.1} objects {} bytes {} mismatches {}",
            report.status,
            report.snapshot,
            report.rpo_seconds,
            report.rto_seconds,
            report.objects_verified,
            report.bytes_verified,
            report.mismatches.len()
        ));
    });
    Ok((StatusCode::CREATED, Json(json!({ "recorded": true }))))
}

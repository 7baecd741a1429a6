//! Operator endpoints for jobs: follow, list and cancel the vault's long
//! operations (index rebuilds, rotations and re-plans, rewraps, backups), and the
//! one way every endpoint that starts one answers.
//!
//! An endpoint that starts a job answers, as it always has, with the finished
//! job's report; a client that sends `Prefer: respond-async` (RFC 7240) gets
//! `202 Accepted` at once instead, with the job's record and its `Location`, and
//! follows it with `GET /v1/admin/jobs/{id}`. Either way the job runs on its own:
//! a client that goes away, or a request that runs out of time, does not stop it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::Operator;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use vault_core::jobs::{is_job_id, JobList, JobRecord, JobResult, Started};

/// Whether the client asked for `202 Accepted` and a job to follow.
pub fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// How a request that started a job is answered.
pub enum Answer<T> {
    /// `202 Accepted` with the job's record: the client follows it.
    Accepted(Response),
    /// The finished job's report.
    Finished(T),
}

impl<T: serde::Serialize> Answer<T> {
    /// The response: the record, or the report as JSON.
    pub fn into_response(self) -> Response {
        match self {
            Answer::Accepted(response) => response,
            Answer::Finished(report) => Json(report).into_response(),
        }
    }
}

/// Answers for a job just started: `202` with its record when the client
/// prefers, else the finished job's report (`pick` takes it from the result).
pub async fn answer<T>(
    started: Started,
    headers: &HeaderMap,
    pick: fn(JobResult) -> Option<T>,
) -> ApiResult<Answer<T>> {
    if prefers_async(headers) {
        let location = format!("/v1/admin/jobs/{}", started.record.id);
        let mut response = (StatusCode::ACCEPTED, Json(started.record)).into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
        return Ok(Answer::Accepted(response));
    }
    let result = started.outcome().await?;
    pick(result)
        .map(Answer::Finished)
        .ok_or_else(|| ApiError::internal("job", "the job answered with another report"))
}

fn job_id(raw: &str) -> ApiResult<&str> {
    if is_job_id(raw) {
        Ok(raw)
    } else {
        Err(ApiError::not_found("job_not_found", "no such job"))
    }
}

/// Running jobs and the most recent finished ones of every replica, newest first.
#[utoipa::path(get, path = "/v1/admin/jobs",
    responses((status = 200, body = JobList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<SharedState>,
    _operator: Operator,
) -> ApiResult<Json<JobList>> {
    Ok(Json(state.vault.maintenance.board.list().await?))
}

/// A job: where it is, and its report or error once it stopped.
#[utoipa::path(get, path = "/v1/admin/jobs/{id}",
    responses((status = 200, body = JobRecord), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<SharedState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<JobRecord>> {
    Ok(Json(state.vault.maintenance.board.get(job_id(&id)?).await?))
}

/// Cancels a running job (on whichever replica runs it). It stops at its next step, puts the tenant's state
/// back in order (an index is reconciled again, a half-built index removed), and
/// then reads `cancelled`.
#[utoipa::path(post, path = "/v1/admin/jobs/{id}/cancel",
    responses((status = 202, body = JobRecord), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<SharedState>,
    _operator: Operator,
    note: crate::audit_note::NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobRecord>)> {
    let id = job_id(&id)?;
    crate::audit_trail::record_intent(&state, &note).await?;
    let record = state.vault.maintenance.board.cancel(id).await?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

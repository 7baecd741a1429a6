//! Health, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::SharedState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: storage is writable and the key providers answer.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
pub async fn readyz(State(state): State<SharedState>) -> impl IntoResponse {
    let storage = state.store.check().await;
    let keys = state.keys.provider("local").map(|_| ());
    match (storage, keys) {
        (Ok(()), Ok(())) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        (storage, keys) => {
            tracing::warn!(storage = ?storage.err().map(|e| e.to_string()), keys = ?keys.err().map(|e| e.to_string()), "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not ready"})),
            )
        }
    }
}

/// Prometheus metrics.
pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    state
        .metrics
        .key_provider_calls
        .set(i64::try_from(state.keys.provider_calls()).unwrap_or(i64::MAX));
    let last_backup = state.metrics.backup_last_success.get();
    if last_backup > 0 {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        state.metrics.backup_age.set(now - last_backup);
    }
    match state.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::from("metrics encoding failed"),
        ),
    }
}

//! Health, readiness and metrics.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::atomic::Ordering;

use crate::error::ApiError;
use crate::state::SharedState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: storage is writable, the key providers answer, the audit log
/// takes events (its latest write did not fail, or failed over a minute ago) and
/// the blind indexes opened at start-up are complete (searches answer in full).
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready: `{\"status\": \"ready\", \"checks\": {...}}`"), (status = 503, description = "not ready, with the failing checks")))]
pub async fn readyz(State(state): State<SharedState>) -> impl IntoResponse {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "checks": {}})),
        );
    }
    let storage = state.vault.store.check().await;
    let keys = state.vault.keys.provider("local").map(|_| ());
    let audit_failing = state.vault.audit.health.failing();
    let indexes_ready = state.vault.search.opened_at_start();
    let word = |ok: bool| if ok { "ok" } else { "failing" };
    let checks = json!({
        "storage": word(storage.is_ok()),
        "keys": word(keys.is_ok()),
        "audit": word(!audit_failing),
        "search": if indexes_ready { "ok" } else { "opening" },
    });
    if storage.is_ok() && keys.is_ok() && !audit_failing && indexes_ready {
        return (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        );
    }
    if !indexes_ready && storage.is_ok() && keys.is_ok() && !audit_failing {
        // Opening indexes after a start is expected: not worth a warning.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "checks": checks})),
        );
    }
    tracing::warn!(storage = ?storage.err().map(|e| e.to_string()), keys = ?keys.err().map(|e| e.to_string()), audit_failing, "not ready");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not ready", "checks": checks})),
    )
}

/// Prometheus metrics, for a scraper holding the metrics token
/// (`Authorization: Bearer <token>`; the file is `[metrics] token_file`, by default
/// `<data_dir>/metrics-token`). Operator and API keys are not accepted: a scraper
/// holds a credential that can read metrics and nothing else.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics text"), (status = 401, body = crate::error::ErrorBody)), security(("bearer" = [])))]
pub async fn metrics(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !presented.is_some_and(|token| state.metrics_token.matches(token)) {
        return ApiError::unauthorized(
            "unauthorized",
            "send the metrics token: Authorization: Bearer <token from the metrics token file>",
        )
        .into_response();
    }
    // Raised to the provider's count, never lowered: concurrent scrapes agree.
    state
        .vault
        .metrics
        .key_provider_calls
        .inner()
        .fetch_max(state.vault.keys.provider_calls(), Ordering::Relaxed);
    let last_backup = state.vault.metrics.backup_last_success.get();
    if last_backup > 0 {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        state.vault.metrics.backup_age.set(now - last_backup);
    }
    match state.vault.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal("metrics encoding", e).into_response(),
    }
}

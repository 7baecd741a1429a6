//! The one place audit events are written: a middleware around every API route.
//!
//! Before the handler runs it puts an empty
//! [`AuditNote`](crate::audit_note::AuditNote) in the request; the
//! `Caller` extractor writes who is calling (or why it could not tell), handlers
//! add what they acted on (a new document id, the search field names, an issued
//! key id). After the handler answers, the middleware appends the event with the
//! outcome taken from the status, waits until it is durable, and only then lets
//! the answer (and any streamed body) go out. If the event cannot be written the
//! answer is dropped and replaced by 503: nothing is returned that was not recorded.
//! The event's action is its endpoint's (`endpoint.rs`).
//!
//! Only authenticated requests are recorded one by one, in the log of the
//! credential's tenant (or of the tenant an operator acted on). A request without
//! a valid credential (none, malformed, unknown, wrong secret, revoked, expired)
//! names no one the vault can vouch for: it is counted in
//! `vault_unauthenticated_requests_total{reason}` and sampled into the system log
//! (at most one event per reason per second, carrying the number suppressed since
//! the previous one), never written into a tenant's log, and its answer never
//! waits for the audit log. So a client without a credential cannot grow any log
//! faster than the sampling allows, nor make the vault's answers depend on it.
//!
//! It also records an `anomaly` event when a key's document reads cross the
//! configured limits (the throttling itself is the `Caller`'s).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vault_crypto::{DocumentId, TenantId};

use crate::audit_note::NoteSlot;
use crate::endpoint::{audit_action_of, Endpoint};
use crate::error::ApiError;
use crate::request_id::request_id_of;
use crate::state::SharedState;
use vault_core::audit::{new_event, Outcome, SYSTEM_LOG};
use vault_core::credentials::AuthFailure;
use vault_core::metrics::ReasonLabels;

/// The value of a `{name}` parameter of the route template in the request path.
fn path_param(route: &str, path: &str, name: &str) -> Option<String> {
    let wanted = format!("{{{name}}}");
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(pattern, _)| *pattern == wanted)
        .map(|(_, value)| value.to_owned())
}

/// The document id in a `/v1/documents/{id}` path, only when it is one: a raw
/// path value never reaches the log.
fn document_in_path(route: &str, path: &str) -> Option<String> {
    if !route.starts_with("/v1/documents/") {
        return None;
    }
    path_param(route, path, "id")
        .and_then(|raw| raw.parse::<DocumentId>().ok())
        .map(|id| id.to_string())
}

/// The log a request's events go to: its tenant's, or the system log for events
/// about a tenant that does not exist (a typo in an admin path, a failed
/// creation) or whose keys are destroyed (offboarded), and for requests about
/// no tenant.
async fn log_of(state: &SharedState, tenant: Option<TenantId>) -> Option<TenantId> {
    let system = TenantId::new(SYSTEM_LOG).ok();
    let Some(tenant) = tenant else {
        return system;
    };
    if tenant.as_str() == SYSTEM_LOG {
        return Some(tenant);
    }
    match state.vault.tenants.get(&tenant).await {
        Ok(Some(r)) if r.status != vault_core::tenants::TenantStatus::Offboarded => Some(tenant),
        _ => system,
    }
}

/// Records durably, before a handler commits its change, that the request is
/// making it: an `intent` event with what the note says so far (who, which
/// tenant, the document when known). The middleware's event with the outcome
/// follows it. When the intent cannot be written the change must not be made:
/// the error (503 `audit_unavailable`) is the request's answer.
pub async fn record_intent(state: &SharedState, note: &NoteSlot) -> Result<(), vault_core::Error> {
    let note = note.snapshot();
    let detail = note.event_detail();
    let (Some(action), Some(actor)) = (note.action, note.actor) else {
        // Outside the middleware (unit tests): nothing to record against.
        return Ok(());
    };
    let Some(tenant) = log_of(state, note.tenant).await else {
        return Ok(());
    };
    let mut event = new_event(action, actor, Outcome::Intent, 102);
    event.detail = detail;
    event.roles = note.roles;
    event.document = note.document;
    event.request_id = note.request_id;
    event.client = note.client;
    if state.vault.audit.append(&tenant, event).await.is_err() {
        state.vault.metrics.audit_failures.inc();
        return Err(vault_core::Error::audit_unavailable(None));
    }
    Ok(())
}

/// The intent of an upload, recorded at its commit point: once its document has
/// an id and its body is stored, before it becomes visible.
pub struct UploadIntent<'a> {
    /// The server.
    pub state: &'a SharedState,
    /// The request's note.
    pub note: &'a NoteSlot,
}

#[async_trait::async_trait]
impl vault_core::documents::BeforeVisible for UploadIntent<'_> {
    async fn before_visible(
        &self,
        id: &DocumentId,
        _metadata: &vault_core::documents::SealedMetadata,
    ) -> Result<(), vault_core::Error> {
        self.note.update(|n| n.document = Some(id.to_string()));
        record_intent(self.state, self.note).await
    }
}

/// The middleware.
pub async fn record(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let endpoint = request.extensions().get::<Endpoint>().copied();
    let Some(action) = audit_action_of(endpoint, &route) else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    let request_id = request_id_of(&request).to_owned();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let slot = NoteSlot::default();
    slot.update(|n| {
        n.action = Some(action);
        n.request_id.clone_from(&request_id);
        n.client.clone_from(&client);
    });
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;

    let note = slot.take();
    let status = response.status().as_u16();
    let outcome = Outcome::of_status(status);
    let Some(actor) = note.actor.clone() else {
        let reason = note.auth_failure.unwrap_or(if route.is_empty() {
            AuthFailure::Unrouted
        } else {
            AuthFailure::NotChecked
        });
        sample_unauthenticated(&state, action, reason, status, request_id, client);
        return response;
    };
    let Some(tenant) = log_of(&state, note.tenant.clone()).await else {
        return response;
    };
    let mut event = new_event(action, actor.clone(), outcome, status);
    event.detail = note.event_detail();
    event.roles = note.roles;
    event.document = note.document.or_else(|| document_in_path(&route, &path));
    event.request_id = request_id.clone();
    event.client = client.clone();
    event.fields = note.fields;
    if state.vault.audit.append(&tenant, event).await.is_err() {
        state.vault.metrics.audit_failures.inc();
        return ApiError::from(vault_core::Error::audit_unavailable(None)).into_response();
    }

    let is_read = matches!(
        endpoint,
        Some(Endpoint::DownloadDocument | Endpoint::DocumentMetadata)
    );
    if is_read && outcome == Outcome::Allowed {
        if let Some(anomaly) = note
            .api_key
            .as_deref()
            .and_then(|id| state.vault.audit.bulk.record_read(id, &tenant))
        {
            state.vault.metrics.bulk_access_anomalies.inc();
            tracing::warn!(tenant = %tenant, actor, reads = anomaly.reads_in_window, usual = anomaly.usual, throttled = anomaly.throttled, "bulk document access");
            let mut flag = new_event("anomaly", actor, Outcome::Allowed, status);
            flag.request_id = request_id;
            flag.client = client;
            flag.detail = Some(format!(
                "bulk document reads: {:.0} in the window, usually {:.1}{}",
                anomaly.reads_in_window,
                anomaly.usual,
                if anomaly.throttled {
                    "; key throttled"
                } else {
                    ""
                }
            ));
            if state.vault.audit.append(&tenant, flag).await.is_err() {
                state.vault.metrics.audit_failures.inc();
                return ApiError::from(vault_core::Error::audit_unavailable(None)).into_response();
            }
        }
    }
    response
}

/// Counts an unauthenticated request and, when its reason's sample is due, writes
/// one event for it (and the ones suppressed before it) to the system log, in the
/// background: the answer does not wait for it, and a failure only shows in
/// `/readyz` and the metrics.
fn sample_unauthenticated(
    state: &SharedState,
    action: &str,
    reason: AuthFailure,
    status: u16,
    request_id: String,
    client: Option<String>,
) {
    state
        .vault
        .metrics
        .unauthenticated
        .get_or_create(&ReasonLabels {
            reason: reason.as_str(),
        })
        .inc();
    let Some(suppressed) = state.vault.audit.unauthenticated.admit(reason.as_str()) else {
        return;
    };
    let Ok(system) = TenantId::new(SYSTEM_LOG) else {
        return;
    };
    let mut event = new_event(
        action,
        "anonymous".to_owned(),
        Outcome::of_status(status),
        status,
    );
    event.request_id = request_id;
    event.client = client;
    event.detail = Some(format!(
        "unauthenticated: {}; sampled, {suppressed} more since the previous sample",
        reason.as_str()
    ));
    let state = Arc::clone(state);
    tokio::spawn(async move {
        if let Err(e) = state.vault.audit.append(&system, event).await {
            tracing::warn!(error = %e, "sampled unauthenticated request not recorded");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_params_follow_the_route_template() {
        assert_eq!(
            path_param(
                "/v1/admin/tenants/{tenant}/api-keys",
                "/v1/admin/tenants/acme/api-keys",
                "tenant"
            ),
            Some("acme".to_owned())
        );
        assert_eq!(
            path_param("/v1/documents/{id}", "/v1/documents/abc", "id"),
            Some("abc".to_owned())
        );
        assert_eq!(path_param("/v1/documents", "/v1/documents", "id"), None);
    }

    #[test]
    fn only_document_ids_are_taken_from_the_path() {
        let id = DocumentId::random().to_string();
        assert_eq!(
            document_in_path("/v1/documents/{id}", &format!("/v1/documents/{id}")),
            Some(id.clone())
        );
        assert_eq!(
            document_in_path(
                "/v1/documents/{id}/metadata",
                "/v1/documents/DOE-JANE/metadata"
            ),
            None
        );
        assert_eq!(
            document_in_path(
                "/v1/admin/backups/{id}/hold",
                &format!("/v1/admin/backups/{id}/hold")
            ),
            None
        );
    }
}

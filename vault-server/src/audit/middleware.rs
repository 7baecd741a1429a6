//! The one place audit events are written: a middleware around every API route.
//!
//! Before the handler runs it puts an empty [`AuditNote`] in the request; the
//! `Caller` extractor writes who is calling, handlers add what they acted on (a
//! new document id, the search field names, an issued key id). After the handler
//! answers, the middleware appends the event with the outcome taken from the
//! status, waits until it is durable, and only then lets the answer (and any
//! streamed body) go out. If the event cannot be written the answer is dropped
//! and replaced by 503: nothing is returned that was not recorded.
//!
//! It also applies bulk-access throttling (429 for a flagged key) and records an
//! `anomaly` event when a key's document reads cross the configured limits.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vault_crypto::TenantId;

use super::event::action_of;
use super::{append, new_event, Outcome, SYSTEM_LOG};
use crate::auth::{CredentialKind, CredentialRecord};
use crate::error::ApiError;
use crate::routes::REQUEST_ID_HEADER;
use crate::state::SharedState;

/// What the caller and the handler tell the audit log about a request.
#[derive(Debug, Default, Clone)]
pub struct AuditNote {
    /// The log to write to (the caller's tenant, or the tenant acted on).
    pub tenant: Option<TenantId>,
    /// `apikey:<id>` or `operator:<id>`.
    pub actor: Option<String>,
    /// Roles of the credential.
    pub roles: Vec<String>,
    /// The document acted on.
    pub document: Option<String>,
    /// Search field names (never values).
    pub fields: Vec<String>,
    /// Non-PHI detail.
    pub detail: Option<String>,
}

/// The note of a request, shared between the middleware, the extractor and the
/// handler.
#[derive(Clone, Debug, Default)]
pub struct NoteSlot(Arc<Mutex<AuditNote>>);

impl NoteSlot {
    /// Changes the note.
    pub fn update(&self, change: impl FnOnce(&mut AuditNote)) {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn take(&self) -> AuditNote {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NoteSlot {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // Outside the middleware (unit tests) a detached note is harmless.
        Ok(parts
            .extensions
            .get::<NoteSlot>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The value of a `{name}` parameter of the route template in the request path.
fn path_param(route: &str, path: &str, name: &str) -> Option<String> {
    let wanted = format!("{{{name}}}");
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(pattern, _)| *pattern == wanted)
        .map(|(_, value)| value.to_owned())
}

/// The API key id in an `Authorization` header, unverified (ids are public).
fn claimed_key_id(request: &Request) -> Option<String> {
    let token = request
        .headers()
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    match CredentialRecord::parse_token(token.trim())? {
        (CredentialKind::ApiKey, id, _) => Some(id.to_owned()),
        _ => None,
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
    let method = request.method().as_str().to_owned();
    let Some(action) = action_of(&method, &route) else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let claimed_key = claimed_key_id(&request);
    let slot = NoteSlot::default();
    request.extensions_mut().insert(slot.clone());

    let throttled = claimed_key
        .as_deref()
        .and_then(|id| state.audit.bulk.throttled(id));
    if let Some(tenant) = &throttled {
        slot.update(|n| n.tenant = Some(tenant.clone()));
    }
    let response = if throttled.is_some() {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "bulk_access_throttled",
            "this API key read far more documents than usual and is paused; retry later",
        )
        .into_response()
    } else {
        next.run(request).await
    };

    let note = slot.take();
    let status = response.status().as_u16();
    let outcome = Outcome::of_status(status);
    let tenant = note
        .tenant
        .clone()
        .or_else(|| path_param(&route, &path, "tenant").and_then(|t| TenantId::new(t).ok()))
        .or_else(|| TenantId::new(SYSTEM_LOG).ok());
    let Some(mut tenant) = tenant else {
        return response;
    };
    // Events about a tenant that does not exist (a typo in an admin path, a
    // failed creation) or whose keys are destroyed (offboarded) go to the system log.
    let has_log =
        |r: &crate::tenants::TenantRecord| r.status != crate::tenants::TenantStatus::Offboarded;
    if tenant.as_str() != SYSTEM_LOG
        && !matches!(state.tenants.get(&tenant).await, Ok(Some(ref r)) if has_log(r))
    {
        if let Ok(system) = TenantId::new(SYSTEM_LOG) {
            tenant = system;
        }
    }
    let actor = note.actor.clone().unwrap_or_else(|| match &claimed_key {
        Some(id) => format!("apikey:{id}"),
        None => "anonymous".to_owned(),
    });
    let mut event = new_event(action, actor.clone(), outcome, status);
    event.roles = note.roles;
    event.document = note
        .document
        .or_else(|| path_param(&route, &path, "id").filter(|_| route.starts_with("/v1/documents")));
    event.request_id = request_id.clone();
    event.client = client.clone();
    event.fields = note.fields;
    event.detail = note.detail;
    if append(&state, &tenant, event).await.is_err() {
        state.metrics.audit_failures.inc();
        return super::unavailable().into_response();
    }

    let is_read = matches!(action, "document.download" | "document.metadata");
    if is_read && outcome == Outcome::Allowed {
        if let Some(anomaly) = claimed_key
            .as_deref()
            .and_then(|id| state.audit.bulk.record_read(id, &tenant))
        {
            state.metrics.bulk_access_anomalies.inc();
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
            if append(&state, &tenant, flag).await.is_err() {
                state.metrics.audit_failures.inc();
                return super::unavailable().into_response();
            }
        }
    }
    response
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
}

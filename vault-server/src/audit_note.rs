//! What a request tells the audit log about itself: the [`AuditNote`] that the
//! audit middleware (`audit_trail.rs`) puts in each request, the `Caller`
//! extractor fills with who is calling, and handlers with what they acted on.

use std::sync::{Arc, Mutex, PoisonError};

use vault_core::credentials::AuthFailure;
use vault_crypto::TenantId;

/// What the caller and the handler tell the audit log about a request.
#[derive(Debug, Default, Clone)]
pub struct AuditNote {
    /// The log to write to (the caller's tenant, or the tenant acted on). Set only
    /// once the caller is authenticated.
    pub tenant: Option<TenantId>,
    /// `apikey:<id>` or `operator:<id>`: set only for an authenticated caller.
    pub actor: Option<String>,
    /// The authenticated API key's id (for bulk-read detection).
    pub api_key: Option<String>,
    /// Why the caller could not be authenticated.
    pub auth_failure: Option<AuthFailure>,
    /// Roles of the credential.
    pub roles: Vec<String>,
    /// The document acted on.
    pub document: Option<String>,
    /// Search field names (never values).
    pub fields: Vec<String>,
    /// Non-PHI detail, made only of validated values (never raw request text).
    pub detail: Option<String>,
    /// The endpoint's audit action (set by the middleware).
    pub action: Option<&'static str>,
    /// The request id (set by the middleware).
    pub request_id: String,
    /// The client address (set by the middleware).
    pub client: Option<String>,
    /// How a sensitive call's second factor went (`code`, `window`,
    /// `not-enrolled`, or the refusal's code).
    pub mfa: Option<&'static str>,
}

impl AuditNote {
    /// The event's detail: the handler's, then the step-up's outcome.
    pub fn event_detail(&self) -> Option<String> {
        match (&self.detail, self.mfa) {
            (detail, None) => detail.clone(),
            (None, Some(mfa)) => Some(format!("mfa={mfa}")),
            (Some(detail), Some(mfa)) => Some(format!("{detail} mfa={mfa}")),
        }
    }
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

    /// Who is calling, once authenticated (`operator:<id>` or `apikey:<id>`): what
    /// a job started by this request records as its actor.
    pub fn actor(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .actor
            .clone()
            .unwrap_or_default()
    }

    /// A copy of the note as it stands.
    pub fn snapshot(&self) -> AuditNote {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the note out, once the handler has answered.
    pub(crate) fn take(&self) -> AuditNote {
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

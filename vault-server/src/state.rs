//! Shared application state handed to every handler: the vault, and what only
//! the edge needs (request rates, upload slots, the metrics token).

use std::sync::Arc;

use vault_core::SharedVault;

/// Everything a request may need.
pub struct AppState {
    /// The vault the requests act on.
    pub vault: SharedVault,
    /// Per-credential request rates.
    pub rates: crate::limits::CredentialRates,
    /// Uploads in progress.
    pub uploads: crate::limits::UploadSlots,
    /// The bearer token `/metrics` requires.
    pub metrics_token: crate::metrics_token::MetricsToken,
    /// Set on SIGTERM: `/readyz` answers 503 while in-flight work finishes.
    pub draining: std::sync::atomic::AtomicBool,
}

/// State as axum holds it.
pub type SharedState = Arc<AppState>;

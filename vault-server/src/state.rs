//! Shared application state handed to every handler.

use std::sync::Arc;

use vault_keys::{AwsKmsProvider, KeyHierarchy, LocalKeyProvider};

use crate::audit::AuditService;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::search::SearchService;
use crate::storage::ObjectStore;
use crate::tenants::TenantRegistry;

/// Everything a request may need.
pub struct AppState {
    /// Effective configuration.
    pub config: Config,
    /// Where documents and records live.
    pub store: Arc<dyn ObjectStore>,
    /// Tenant keys with their cache.
    pub keys: Arc<KeyHierarchy>,
    /// The local key provider (always present: the embedded default).
    pub local_keys: Arc<LocalKeyProvider>,
    /// The AWS KMS provider, when enabled.
    pub kms: Option<Arc<AwsKmsProvider>>,
    /// Tenant records.
    pub tenants: TenantRegistry,
    /// Audit logs.
    pub audit: AuditService,
    /// Per-tenant blind indexes.
    pub search: SearchService,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The backup job.
    pub backups: crate::backup::schedule::BackupService,
    /// Per-credential request rates.
    pub rates: crate::limits::CredentialRates,
    /// Uploads in progress.
    pub uploads: crate::limits::UploadSlots,
    /// The bearer token `/metrics` requires.
    pub metrics_token: crate::metrics::MetricsToken,
}

/// State as axum holds it.
pub type SharedState = Arc<AppState>;

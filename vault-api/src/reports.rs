//! What a long operation did: the reports of index rebuilds, rewraps and
//! offboarding.

use serde::{Deserialize, Serialize};

/// What a reconciliation or rebuild did.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReconcileReport {
    /// Documents in the store.
    pub documents: u64,
    /// Documents added to the index.
    pub added: u64,
    /// Index entries removed (their documents are gone).
    pub removed: u64,
    /// Documents whose metadata could not be read (left out; see the server log).
    pub failed: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

/// What a rewrap did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RewrapReport {
    /// The branch key version everything is now wrapped under.
    pub branch_version: u32,
    /// Document key records re-wrapped.
    pub documents_rewrapped: u64,
    /// Audit segments re-wrapped.
    pub audit_segments_rewrapped: u64,
    /// Records that were already current.
    pub already_current: u64,
    /// Records that could not be re-wrapped (left as they were; see the log).
    pub failed: u64,
    /// Bytes of key records read.
    pub bytes_read: u64,
    /// Bytes of key records written.
    pub bytes_written: u64,
    /// Wall time.
    pub seconds: f64,
    /// Records per second.
    pub records_per_second: f64,
    /// The oldest branch key version still accepted afterwards.
    pub min_decryption_version: u32,
}

/// What offboarding destroyed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OffboardReport {
    /// Tenant key records (branch and index root keys) destroyed.
    pub tenant_key_records_destroyed: u64,
    /// The local KEK was deleted from the keystore.
    pub local_kek_destroyed: bool,
    /// KMS keys scheduled for deletion.
    pub kms_keys_scheduled_for_deletion: Vec<String>,
    /// API keys revoked.
    pub api_keys_revoked: u64,
}

/// What a backup made.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackupSummary {
    /// The snapshot's id.
    pub snapshot: String,
    /// Objects in the snapshot.
    pub objects: u64,
    /// Bytes in the snapshot.
    pub bytes: u64,
    /// Bytes copied into the repository by this backup.
    pub bytes_added: u64,
}

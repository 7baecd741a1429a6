//! What a long operation did: the reports of index rebuilds, rewraps,
//! offboarding and restore drills.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::json::whole_number;

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

/// One tenant's part of the drill.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantDrill {
    /// Tenant id.
    pub tenant: String,
    /// Key provider (`local` keys come from the snapshot, `aws-kms` from KMS).
    pub provider: String,
    /// Whether the tenant is active (disabled tenants are counted, not opened).
    pub active: bool,
    /// Documents the manifest lists, less those left out as deleted.
    #[serde(deserialize_with = "whole_number")]
    pub documents_in_manifest: u64,
    /// Documents of the snapshot left out as deleted (a tombstone in it or in a
    /// newer snapshot).
    #[serde(default, deserialize_with = "whole_number")]
    pub documents_deleted: u64,
    /// Documents visible in the restored vault.
    #[serde(deserialize_with = "whole_number")]
    pub documents_restored: u64,
    /// Documents in the rebuilt index.
    #[serde(deserialize_with = "whole_number")]
    pub documents_indexed: u64,
    /// Sampled documents decrypted whole, with the SHA-256 of their plaintext checked.
    #[serde(deserialize_with = "whole_number")]
    pub samples_decrypted: u64,
    /// Probe searches run (one per sampled document with a searchable field).
    #[serde(deserialize_with = "whole_number")]
    pub probes_run: u64,
    /// Probe searches that found their document.
    #[serde(deserialize_with = "whole_number")]
    pub probes_passed: u64,
}

/// The drill's report (no PHI: ids, counts, times).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DrillReport {
    /// `passed` or `failed`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(passed|failed)$"))]
    pub status: String,
    /// The snapshot restored (its id).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$")
    )]
    pub snapshot: String,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub snapshot_created_at: OffsetDateTime,
    /// When the drill ran.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub drilled_at: OffsetDateTime,
    /// The repository.
    pub repository: String,
    /// RPO achieved: the snapshot's age when the drill started.
    #[serde(deserialize_with = "whole_number")]
    pub rpo_seconds: i64,
    /// Restoring (and hash-checking) every object.
    pub restore_seconds: f64,
    /// Opening the vault and decrypting the samples.
    pub open_seconds: f64,
    /// Rebuilding every tenant's index.
    pub index_seconds: f64,
    /// RTO achieved: restore + verify + open + index.
    pub rto_seconds: f64,
    /// Objects verified against the manifest.
    #[serde(deserialize_with = "whole_number")]
    pub objects_verified: u64,
    /// Their bytes.
    #[serde(deserialize_with = "whole_number")]
    pub bytes_verified: u64,
    /// Restore throughput.
    pub restore_mb_per_s: f64,
    /// Per tenant.
    pub tenants: Vec<TenantDrill>,
    /// Where the keys came from.
    pub keys: Vec<String>,
    /// Everything that did not match.
    pub mismatches: Vec<String>,
    /// The scratch vault, when kept.
    pub scratch: Option<String>,
}

impl DrillReport {
    /// Whether the drill passed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// A human summary.
    pub fn human(&self) -> String {
        let mut out = format!(
            "drill {}: snapshot {} taken {}\n  RPO {} s, RTO {:.1} s (restore {:.1} s, open {:.1} s, index {:.1} s)\n  {} objects, {} bytes verified ({:.1} MB/s)\n",
            self.status.to_uppercase(),
            self.snapshot,
            self.snapshot_created_at,
            self.rpo_seconds,
            self.rto_seconds,
            self.restore_seconds,
            self.open_seconds,
            self.index_seconds,
            self.objects_verified,
            self.bytes_verified,
            self.restore_mb_per_s,
        );
        for t in &self.tenants {
            out.push_str(&format!(
                "  tenant {} ({}{}): {} in manifest ({} deleted left out), {} restored, {} indexed, {} decrypted, {}/{} probes\n",
                t.tenant,
                t.provider,
                if t.active { "" } else { ", disabled" },
                t.documents_in_manifest,
                t.documents_deleted,
                t.documents_restored,
                t.documents_indexed,
                t.samples_decrypted,
                t.probes_passed,
                t.probes_run
            ));
        }
        for k in &self.keys {
            out.push_str(&format!("  keys: {k}\n"));
        }
        for m in &self.mismatches {
            out.push_str(&format!("  MISMATCH: {m}\n"));
        }
        if let Some(s) = &self.scratch {
            out.push_str(&format!("  scratch vault kept at {s}\n"));
        }
        out
    }
}

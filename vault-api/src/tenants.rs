//! The tenant record: stored as `system/tenants/<id>` and answered as it is.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vault_crypto::TenantId;

/// The key providers a tenant can be created with (`key_provider`).
pub const KEY_PROVIDERS: [&str; 2] = ["local", "aws-kms"];

/// Whether a tenant can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// In use.
    Active,
    /// Suspended: credentials refused; keys and documents kept.
    Disabled,
    /// Offboarded: keys destroyed (crypto-shredded), credentials refused.
    Offboarded,
}

/// A tenant record (JSON, format 1).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantRecord {
    /// Record format version. FORMAT CONSTANT: 1.
    pub format: u32,
    /// Tenant id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "acme"))]
    pub id: TenantId,
    /// `local` or `aws-kms`.
    pub key_provider: String,
    /// KEK id within the provider (KMS ARN or alias for `aws-kms`).
    pub kek_id: String,
    /// Branch key version for new documents.
    pub branch_version: u32,
    /// Oldest branch key version still accepted.
    pub min_decryption_version: u32,
    /// Blind-index root key version.
    pub index_version: u32,
    /// Active, disabled or offboarded.
    pub status: TenantStatus,
    /// KEKs replaced by rotation, still unwrapping older branch keys until a rewrap
    /// retires them; all are destroyed when the tenant is offboarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_kek_ids: Vec<String>,
    /// Documents cannot be deleted until this many days after their upload.
    #[serde(default)]
    pub retention_days: u32,
    /// Documents the blind index's token lengths are planned for. Absent in records
    /// made before plans were per tenant (`search.expected_documents` applies);
    /// raised as the tenant grows (`search::replan_if_grown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_documents: Option<u64>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
}

impl TenantStatus {
    /// The status's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Disabled => "disabled",
            TenantStatus::Offboarded => "offboarded",
        }
    }
}

impl TenantRecord {
    /// Whether credentials of this tenant are honoured.
    pub fn is_active(&self) -> bool {
        self.status == TenantStatus::Active
    }
}

//! The tenant registry: one JSON record per tenant in the object store
//! (`system/tenants/<id>`), cached in memory.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::RwLock;
use utoipa::ToSchema;
use vault_crypto::TenantId;
use vault_keys::TenantKeySpec;

use crate::error::ApiError;
use crate::storage::{ObjectName, ObjectStore, StorageError};

/// Whether a tenant can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantRecord {
    /// Record format version. FORMAT CONSTANT: 1.
    pub format: u32,
    /// Tenant id.
    #[schema(value_type = String, example = "acme")]
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
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl TenantRecord {
    /// Key configuration for the crypto layer.
    pub fn key_spec(&self) -> TenantKeySpec {
        TenantKeySpec {
            tenant: self.id.clone(),
            provider: self.key_provider.clone(),
            kek_id: self.kek_id.clone(),
            branch_version: self.branch_version,
            min_decryption_version: self.min_decryption_version,
            index_version: self.index_version,
        }
    }

    /// Whether credentials of this tenant are honoured.
    pub fn is_active(&self) -> bool {
        self.status == TenantStatus::Active
    }
}

/// A tenant id from a request (path, query or body), or 400 `invalid_tenant_id`.
pub fn parse_tenant_id(raw: impl Into<String>) -> Result<TenantId, ApiError> {
    TenantId::new(raw).map_err(|e| ApiError::bad_request("invalid_tenant_id", e.to_string()))
}

/// A tenant's planned document count from a request, or 400 `invalid_expected_documents`.
pub fn check_planned_documents(documents: u64) -> Result<u64, ApiError> {
    if (1..=crate::config::MAX_PLANNED_DOCUMENTS).contains(&documents) {
        Ok(documents)
    } else {
        Err(ApiError::bad_request(
            "invalid_expected_documents",
            format!(
                "expected_documents must be 1 to {}",
                crate::config::MAX_PLANNED_DOCUMENTS
            ),
        ))
    }
}

/// 404 `tenant_not_found`.
pub fn tenant_not_found(id: &TenantId) -> ApiError {
    ApiError::not_found("tenant_not_found", format!("no tenant {id}"))
}

/// Tenant records, cached.
pub struct TenantRegistry {
    store: Arc<dyn ObjectStore>,
    cache: RwLock<HashMap<TenantId, TenantRecord>>,
}

impl TenantRegistry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        TenantRegistry {
            store,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The tenant's record, if it exists.
    pub async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, ApiError> {
        if let Some(record) = self.cache.read().await.get(tenant) {
            return Ok(Some(record.clone()));
        }
        let Some(bytes) = self.store.get_bytes(&ObjectName::tenant(tenant)).await? else {
            return Ok(None);
        };
        let record: TenantRecord =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("tenant record", e))?;
        self.cache
            .write()
            .await
            .insert(tenant.clone(), record.clone());
        Ok(Some(record))
    }

    /// The tenant's record, whatever its status, or 404.
    pub async fn require(&self, tenant: &TenantId) -> Result<TenantRecord, ApiError> {
        self.get(tenant)
            .await?
            .ok_or_else(|| tenant_not_found(tenant))
    }

    /// An active tenant's record, or 404.
    pub async fn require_active(&self, tenant: &TenantId) -> Result<TenantRecord, ApiError> {
        match self.get(tenant).await? {
            Some(record) if record.is_active() => Ok(record),
            _ => Err(ApiError::not_found(
                "tenant_not_found",
                format!("no active tenant {tenant}"),
            )),
        }
    }

    /// Stores a new tenant record; 409 if the id is taken.
    pub async fn create(&self, record: TenantRecord) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| ApiError::internal("tenant record", e))?;
        match self
            .store
            .put_new_bytes(&ObjectName::tenant(&record.id), Bytes::from(bytes))
            .await
        {
            Ok(()) => {
                self.cache.write().await.insert(record.id.clone(), record);
                Ok(())
            }
            Err(StorageError::AlreadyExists(_)) => Err(ApiError::conflict(
                "tenant_exists",
                format!("tenant {} already exists", record.id),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a tenant record (rotation, offboarding).
    pub async fn update(&self, record: TenantRecord) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| ApiError::internal("tenant record", e))?;
        self.store
            .replace(&ObjectName::tenant(&record.id), Bytes::from(bytes))
            .await?;
        self.cache.write().await.insert(record.id.clone(), record);
        Ok(())
    }

    /// Every tenant, in id order.
    pub async fn list(&self) -> Result<Vec<TenantRecord>, ApiError> {
        let mut out = Vec::new();
        for info in crate::storage::list_all(self.store.as_ref(), "system/tenants/", None).await? {
            if let Some(bytes) = self.store.get_bytes(&info.name).await? {
                out.push(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| ApiError::internal("tenant record", e))?,
                );
            }
        }
        Ok(out)
    }
}

//! The tenant registry: one JSON record per tenant in the object store
//! (`system/tenants/<id>`), cached in memory.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use std::time::Duration;

use tokio::sync::RwLock;
use tokio::time::Instant;
use vault_crypto::TenantId;
use vault_keys::TenantKeySpec;

use crate::error::Error;
use crate::storage::{ObjectName, ObjectStore, StorageError};

pub use vault_api::{TenantRecord, TenantStatus};

/// Key configuration of a tenant for the key hierarchy.
pub fn key_spec(record: &TenantRecord) -> TenantKeySpec {
    TenantKeySpec {
        tenant: record.id.clone(),
        provider: record.key_provider.clone(),
        kek_id: record.kek_id.clone(),
        branch_version: record.branch_version,
        min_decryption_version: record.min_decryption_version,
        index_version: record.index_version,
    }
}

/// A tenant id from a request (path, query or body), or 400 `invalid_tenant_id`.
pub fn parse_tenant_id(raw: impl Into<String>) -> Result<TenantId, Error> {
    TenantId::new(raw).map_err(|e| Error::invalid("invalid_tenant_id", e.to_string()))
}

/// A tenant's planned document count from a request, or 400 `invalid_expected_documents`.
pub fn check_planned_documents(documents: u64) -> Result<u64, Error> {
    if (1..=crate::config::MAX_PLANNED_DOCUMENTS).contains(&documents) {
        Ok(documents)
    } else {
        Err(Error::invalid(
            "invalid_expected_documents",
            format!(
                "expected_documents must be 1 to {}",
                crate::config::MAX_PLANNED_DOCUMENTS
            ),
        ))
    }
}

/// 404 `tenant_not_found`.
pub fn tenant_not_found(id: &TenantId) -> Error {
    Error::not_found("tenant_not_found", format!("no tenant {id}"))
}

/// How long a cached tenant record is trusted before it is read again: a tenant
/// disabled or offboarded through another server over the same store is refused
/// here within this time.
pub const TENANT_CACHE_TTL: Duration = Duration::from_secs(5);
/// Reads and conditional writes one change of a tenant record may take.
const MODIFY_ATTEMPTS: u32 = 8;

/// Tenant records, cached for [`TENANT_CACHE_TTL`]. Clones share the cache.
#[derive(Clone)]
pub struct TenantRegistry {
    store: Arc<dyn ObjectStore>,
    cache: Arc<RwLock<HashMap<TenantId, (TenantRecord, Instant)>>>,
}

impl TenantRegistry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        TenantRegistry {
            store,
            cache: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// The tenant's record, if it exists.
    pub async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, Error> {
        if let Some((record, read_at)) = self.cache.read().await.get(tenant) {
            if read_at.elapsed() < TENANT_CACHE_TTL {
                return Ok(Some(record.clone()));
            }
        }
        self.get_fresh(tenant).await
    }

    /// The tenant's record as the store has it now (bypassing the cache, which is
    /// refreshed): for changes to it, and for checks another replica's change
    /// must not slip past.
    pub async fn get_fresh(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, Error> {
        let Some(bytes) = self.store.get_bytes(&ObjectName::tenant(tenant)).await? else {
            self.cache.write().await.remove(tenant);
            return Ok(None);
        };
        let record: TenantRecord =
            serde_json::from_slice(&bytes).map_err(|e| Error::internal("tenant record", e))?;
        self.cache
            .write()
            .await
            .insert(tenant.clone(), (record.clone(), Instant::now()));
        Ok(Some(record))
    }

    /// [`TenantRegistry::get_fresh`], or 404.
    pub async fn require_fresh(&self, tenant: &TenantId) -> Result<TenantRecord, Error> {
        self.get_fresh(tenant)
            .await?
            .ok_or_else(|| tenant_not_found(tenant))
    }

    /// The tenant's record, whatever its status, or 404.
    pub async fn require(&self, tenant: &TenantId) -> Result<TenantRecord, Error> {
        self.get(tenant)
            .await?
            .ok_or_else(|| tenant_not_found(tenant))
    }

    /// An active tenant's record, or 404.
    pub async fn require_active(&self, tenant: &TenantId) -> Result<TenantRecord, Error> {
        match self.get(tenant).await? {
            Some(record) if record.is_active() => Ok(record),
            _ => Err(Error::not_found(
                "tenant_not_found",
                format!("no active tenant {tenant}"),
            )),
        }
    }

    /// Stores a new tenant record; 409 if the id is taken.
    pub async fn create(&self, record: TenantRecord) -> Result<(), Error> {
        let bytes =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::internal("tenant record", e))?;
        match self
            .store
            .put_new_bytes(&ObjectName::tenant(&record.id), Bytes::from(bytes))
            .await
        {
            Ok(()) => {
                self.cache
                    .write()
                    .await
                    .insert(record.id.clone(), (record, Instant::now()));
                Ok(())
            }
            Err(StorageError::AlreadyExists(_)) => Err(Error::conflict(
                "tenant_exists",
                format!("tenant {} already exists", record.id),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes a tenant record with a conditional write: reads it from the
    /// store, lets `change` edit it (returning whether there is anything to
    /// write), and writes it only if no one replaced it meanwhile (`If-Match` on
    /// S3). If someone did, it reads and applies `change` again, so two replicas
    /// changing one tenant at once both land, in some order, and neither undoes
    /// the other (a disable racing a rotation keeps both).
    pub async fn modify(
        &self,
        tenant: &TenantId,
        mut change: impl FnMut(&mut TenantRecord) -> Result<bool, Error>,
    ) -> Result<TenantRecord, Error> {
        let name = ObjectName::tenant(tenant);
        for _ in 0..MODIFY_ATTEMPTS {
            let Some((bytes, version)) = self.store.get_versioned(&name).await? else {
                self.cache.write().await.remove(tenant);
                return Err(tenant_not_found(tenant));
            };
            let mut record: TenantRecord =
                serde_json::from_slice(&bytes).map_err(|e| Error::internal("tenant record", e))?;
            let written = if change(&mut record)? {
                let bytes = serde_json::to_vec_pretty(&record)
                    .map_err(|e| Error::internal("tenant record", e))?;
                match self
                    .store
                    .replace_if(&name, Bytes::from(bytes), &version)
                    .await
                {
                    Ok(()) => true,
                    Err(StorageError::Changed(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            } else {
                false
            };
            tracing::debug!(tenant = %tenant, written, "tenant record changed");
            self.cache
                .write()
                .await
                .insert(tenant.clone(), (record.clone(), Instant::now()));
            return Ok(record);
        }
        Err(Error::conflict(
            "changed_concurrently",
            format!("tenant {tenant} kept changing under this request; retry"),
        ))
    }

    /// Every tenant, in id order.
    pub async fn list(&self) -> Result<Vec<TenantRecord>, Error> {
        let mut out = Vec::new();
        for info in
            crate::storage::list_all(self.store.as_ref(), ObjectName::TENANTS_PREFIX, None).await?
        {
            if let Some(bytes) = self.store.get_bytes(&info.name).await? {
                out.push(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| Error::internal("tenant record", e))?,
                );
            }
        }
        Ok(out)
    }
}

/// What an operator asks for in a new tenant.
#[derive(Debug)]
pub struct NewTenant {
    /// Its id.
    pub id: TenantId,
    /// `local` or `aws-kms`.
    pub key_provider: String,
    /// For `aws-kms`: the operator's own KMS key (ARN or alias); none makes one.
    pub kms_key_id: Option<String>,
    /// Days documents are kept before they may be deleted (the default when none).
    pub retention_days: Option<u32>,
    /// Documents the blind index is planned for (the configured default when none).
    pub expected_documents: Option<u64>,
}

//! The crypto crate's [`TenantKeyStore`] over the object store: wrapped branch and
//! index root keys live beside the tenant's documents, create-only.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vault_crypto::{CryptoError, TenantId};
use vault_keys::{TenantKeyKind, TenantKeyStore};

use super::{ObjectName, ObjectStore, StorageError};

/// Tenant key records in an object store.
pub struct ObjectTenantKeyStore(pub Arc<dyn ObjectStore>);

#[async_trait]
impl TenantKeyStore for ObjectTenantKeyStore {
    async fn load(
        &self,
        tenant: &TenantId,
        kind: TenantKeyKind,
        version: u32,
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        let name = ObjectName::tenant_key(tenant, kind, version);
        self.0
            .get_bytes(&name)
            .await
            .map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| CryptoError::RecordStore(e.to_string()))
    }

    async fn create(
        &self,
        tenant: &TenantId,
        kind: TenantKeyKind,
        version: u32,
        record: Vec<u8>,
    ) -> Result<bool, CryptoError> {
        let name = ObjectName::tenant_key(tenant, kind, version);
        match self.0.put_new_bytes(&name, Bytes::from(record)).await {
            Ok(()) => Ok(true),
            Err(StorageError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(CryptoError::RecordStore(e.to_string())),
        }
    }
}

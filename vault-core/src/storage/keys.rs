//! The key crate's stores over the object store: wrapped branch and index root
//! keys ([`TenantKeyStore`]) and the local keystore's objects
//! ([`KeystoreObjects`]), all create-only.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vault_crypto::{CryptoError, TenantId};
use vault_keys::{KeystoreObject, KeystoreObjects, TenantKeyKind, TenantKeyStore};

use super::{list_all, ObjectName, ObjectStore, StorageError};

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

/// The local keystore's objects: KEK versions beside the tenant's other objects
/// in the vault's store, the root check and seal keys in the key custody (the
/// same store on S3, under `custody/`; a store beside the root key file on fs).
pub struct ObjectKeystore {
    /// The vault's store.
    pub store: Arc<dyn ObjectStore>,
    /// The key custody.
    pub custody: Arc<dyn ObjectStore>,
    /// The custody is another vault's (a drill reads the live vault's): nothing
    /// is created in it, and what is destroyed there is left to that vault.
    pub custody_read_only: bool,
}

impl ObjectKeystore {
    fn locate(&self, object: &KeystoreObject) -> (&dyn ObjectStore, ObjectName) {
        match object {
            KeystoreObject::RootCheck => (self.custody.as_ref(), ObjectName::custody_root_check()),
            KeystoreObject::Seal(tenant) => {
                (self.custody.as_ref(), ObjectName::custody_seal(tenant))
            }
            KeystoreObject::Kek(tenant, version) => (
                self.store.as_ref(),
                ObjectName::tenant_kek(tenant, *version),
            ),
        }
    }
}

fn record_store(e: StorageError) -> CryptoError {
    CryptoError::RecordStore(e.to_string())
}

#[async_trait]
impl KeystoreObjects for ObjectKeystore {
    async fn load(&self, object: &KeystoreObject) -> Result<Option<Vec<u8>>, CryptoError> {
        let (store, name) = self.locate(object);
        store
            .get_bytes(&name)
            .await
            .map(|b| b.map(|b| b.to_vec()))
            .map_err(record_store)
    }

    async fn create(&self, object: &KeystoreObject, bytes: Vec<u8>) -> Result<bool, CryptoError> {
        let (store, name) = self.locate(object);
        if self.custody_read_only && name.as_str().starts_with(ObjectName::CUSTODY_PREFIX) {
            return Err(CryptoError::Keystore {
                path: "key custody".into(),
                reason: format!(
                    "read-only here, and it has no {}: is it the live vault's key custody?",
                    name.as_str()
                ),
            });
        }
        match store.put_new_bytes(&name, Bytes::from(bytes)).await {
            Ok(()) => Ok(true),
            Err(StorageError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(record_store(e)),
        }
    }

    async fn kek_versions(&self, tenant: &TenantId) -> Result<Vec<u32>, CryptoError> {
        let prefix = ObjectName::tenant_keks_prefix(tenant);
        Ok(list_all(self.store.as_ref(), &prefix, None)
            .await
            .map_err(record_store)?
            .into_iter()
            .filter_map(|info| info.name.as_str().strip_prefix(&prefix)?.parse().ok())
            .collect())
    }

    async fn destroy(&self, object: &KeystoreObject) -> Result<(), CryptoError> {
        let (store, name) = self.locate(object);
        if self.custody_read_only && name.as_str().starts_with(ObjectName::CUSTODY_PREFIX) {
            return Ok(());
        }
        store.delete_all_versions(&name).await.map_err(record_store)
    }
}

//! Where tenant key records and the local keystore's objects are kept:
//! implemented by the server over its object stores (this crate does no storage
//! I/O itself). Everything is create-only.

use async_trait::async_trait;
use vault_crypto::keys::TenantKeyKind;
use vault_crypto::{CryptoError, TenantId};

/// Persistence of tenant key records, implemented by the server over its object
/// store (the crypto crate does no storage I/O itself). Records are create-only.
#[async_trait]
pub trait TenantKeyStore: Send + Sync + 'static {
    /// Loads a record, if it exists.
    async fn load(
        &self,
        tenant: &TenantId,
        kind: TenantKeyKind,
        version: u32,
    ) -> Result<Option<Vec<u8>>, CryptoError>;

    /// Stores a record unless one exists already; returns false when it did.
    async fn create(
        &self,
        tenant: &TenantId,
        kind: TenantKeyKind,
        version: u32,
        record: Vec<u8>,
    ) -> Result<bool, CryptoError>;
}

/// One object of the local key provider's keystore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeystoreObject {
    /// A value sealed under the root key: proves a root key file is the vault's.
    /// Kept in the key custody (never in a backup).
    RootCheck,
    /// A tenant's seal key, sealed under the root key. Kept in the key custody
    /// (never in a backup); destroying it shreds the tenant's KEKs everywhere.
    Seal(TenantId),
    /// One version of a tenant's KEK, sealed under the tenant's seal key. Kept
    /// with the tenant's objects (backups copy it).
    Kek(TenantId, u32),
}

/// Persistence of the local keystore's objects, implemented by the server over
/// its object stores: the key custody (root check, seal keys) and the main store
/// (KEK versions). Every object is create-only; replicas share them.
#[async_trait]
pub trait KeystoreObjects: Send + Sync + 'static {
    /// Loads an object, if it exists.
    async fn load(&self, object: &KeystoreObject) -> Result<Option<Vec<u8>>, CryptoError>;

    /// Stores an object unless one exists already; returns false when it did.
    async fn create(&self, object: &KeystoreObject, bytes: Vec<u8>) -> Result<bool, CryptoError>;

    /// The KEK versions stored for a tenant, in any order.
    async fn kek_versions(&self, tenant: &TenantId) -> Result<Vec<u32>, CryptoError>;

    /// Deletes an object with every stored version of it (a no-op when absent).
    async fn destroy(&self, object: &KeystoreObject) -> Result<(), CryptoError>;
}

#[cfg(test)]
pub(crate) use memory::MemoryKeystoreObjects;

#[cfg(test)]
mod memory {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use vault_crypto::{CryptoError, TenantId};

    use super::{KeystoreObject, KeystoreObjects};

    /// The keystore objects in memory, as replicas share them in a bucket (the
    /// server's implementation over its object stores is tested in `vault-core`).
    #[derive(Default)]
    pub(crate) struct MemoryKeystoreObjects(pub(crate) Mutex<BTreeMap<String, Vec<u8>>>);

    fn name(object: &KeystoreObject) -> String {
        match object {
            KeystoreObject::RootCheck => "root-check".into(),
            KeystoreObject::Seal(t) => format!("seal/{t}"),
            KeystoreObject::Kek(t, v) => format!("kek/{t}/{v}"),
        }
    }

    #[async_trait]
    impl KeystoreObjects for MemoryKeystoreObjects {
        async fn load(&self, object: &KeystoreObject) -> Result<Option<Vec<u8>>, CryptoError> {
            Ok(self.0.lock().unwrap().get(&name(object)).cloned())
        }
        async fn create(
            &self,
            object: &KeystoreObject,
            bytes: Vec<u8>,
        ) -> Result<bool, CryptoError> {
            let mut map = self.0.lock().unwrap();
            if map.contains_key(&name(object)) {
                return Ok(false);
            }
            map.insert(name(object), bytes);
            Ok(true)
        }
        async fn kek_versions(&self, tenant: &TenantId) -> Result<Vec<u32>, CryptoError> {
            let prefix = format!("kek/{tenant}/");
            Ok(self
                .0
                .lock()
                .unwrap()
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
                .collect())
        }
        async fn destroy(&self, object: &KeystoreObject) -> Result<(), CryptoError> {
            self.0.lock().unwrap().remove(&name(object));
            Ok(())
        }
    }

    impl MemoryKeystoreObjects {
        pub(crate) fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
            self.0.lock().unwrap().clone()
        }
    }
}

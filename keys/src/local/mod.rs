//! The `local` key provider: per-tenant KEKs sealed under a root key file, kept in
//! the object store so that every replica of the vault shares them. The embedded
//! default.
//!
//! Root key file: 32 random bytes, created with mode 0600 on first use; refused when
//! group or others can read it. Every replica gets a copy, as a secret. The key
//! objects ([`objects`] has their formats), all create-only:
//!
//! - the **root check**, sealed under the root key: a replica whose root key file
//!   is not the vault's refuses to start, and writes nothing;
//! - per tenant a random **seal key**, sealed under the root key;
//! - per tenant and KEK version the **KEK**, sealed under the tenant's seal key.
//!
//! Root check and seal keys live in the *key custody*, a part of the store that
//! backups never copy; KEKs live with the tenant's objects and are in backups.
//! Destroying a tenant's seal key (offboarding) therefore crypto-shreds its KEKs
//! in every copy, backups included, while other tenants are untouched. Root key
//! file and key custody together are the vault's key custody.
//!
//! Each replica caches a tenant's KEKs for at most [`KEK_CACHE_TTL`]: a tenant
//! created, rotated or offboarded through another replica is seen within that
//! (and a KEK version it does not know yet is looked up at once).
//!
//! Wrapped data keys:
//!
//! ```text
//! "BVLW" | u16 version (1) | u32 KEK version | nonce (12) | wrapped key (32 + 16)
//! aad = the first 10 bytes | tenant | purpose
//! ```

mod legacy;
mod objects;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use async_trait::async_trait;
use zeroize::Zeroizing;

use vault_crypto::keys::EncryptionContext;
use vault_crypto::wire::{put_short_str, Reader};
use vault_crypto::{CryptoError, Key256, TenantId};

use crate::private_file::sync_parent;
use crate::{KeyProvider, KeystoreObject, KeystoreObjects};

/// Name of the tenant seal file that earlier versions kept beside the root key
/// file; imported into the key custody and removed at start-up.
pub const SEALS_FILE_NAME: &str = "tenant-seals.bin";
/// How long a replica trusts its cached view of a tenant's KEKs (which versions
/// exist, whether the seal key does).
pub const KEK_CACHE_TTL: Duration = Duration::from_secs(5);
/// Magic of a locally wrapped data key. FORMAT CONSTANT.
const WRAPPED_MAGIC: [u8; 4] = *b"BVLW";
/// Version of a locally wrapped data key. FORMAT CONSTANT.
const VERSION: u16 = 1;

/// One version of a tenant KEK.
#[derive(Clone)]
struct KekVersion {
    version: u32,
    key: Key256,
}

/// A tenant's KEKs as last read from the store.
#[derive(Clone)]
struct CachedKeks {
    /// Ascending by version; the last is current.
    versions: Arc<Vec<KekVersion>>,
    read_at: Instant,
}

/// The local key provider.
pub struct LocalKeyProvider {
    root_key_path: PathBuf,
    root: Key256,
    objects: Arc<dyn KeystoreObjects>,
    /// Never held across an await.
    cache: Mutex<BTreeMap<TenantId, CachedKeks>>,
    calls: AtomicU64,
}

impl std::fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("root_key_path", &self.root_key_path)
            .finish_non_exhaustive()
    }
}

fn keystore_err(path: &Path, reason: impl Into<String>) -> CryptoError {
    CryptoError::Keystore {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl LocalKeyProvider {
    /// Opens the keystore in `objects` under the root key at `root_key_path`.
    ///
    /// On a new vault the root key file is created (mode 0600) and its root check
    /// stored. On an existing vault the root key file must be the vault's: a
    /// missing or different one is refused before anything is written.
    pub async fn open(
        root_key_path: &Path,
        objects: Arc<dyn KeystoreObjects>,
    ) -> Result<Self, CryptoError> {
        let check = objects.load(&KeystoreObject::RootCheck).await?;
        if check.is_some() && !root_key_path.exists() {
            return Err(keystore_err(
                root_key_path,
                "missing: this vault exists already, and every replica needs a copy of the root key file it was created with",
            ));
        }
        let root = load_or_create_root_key(root_key_path)?;
        let check = match check {
            Some(check) => check,
            None => {
                let sealed = objects::seal_root_check(&root)?;
                if objects
                    .create(&KeystoreObject::RootCheck, sealed.clone())
                    .await?
                {
                    sealed
                } else {
                    // Another replica created the vault at the same moment.
                    objects
                        .load(&KeystoreObject::RootCheck)
                        .await?
                        .ok_or_else(|| keystore_err(root_key_path, "root check vanished"))?
                }
            }
        };
        if !objects::opens_root_check(&root, &check)? {
            return Err(keystore_err(
                root_key_path,
                "not this vault's root key (the vault's root check does not open under it): give every replica a copy of the same root key file",
            ));
        }
        Ok(LocalKeyProvider {
            root_key_path: root_key_path.to_owned(),
            root,
            objects,
            cache: Mutex::new(BTreeMap::new()),
            calls: AtomicU64::new(0),
        })
    }

    /// Imports the keystore file (`keystore.bin`) and the tenant seal file that
    /// earlier versions kept on local disk, then removes both: afterwards the
    /// object store is the only keystore. Tenants for which `skip` is true
    /// (offboarded ones, whose KEKs a restored old file would bring back) are
    /// left out. A tenant already in the store keeps its seal key; its KEK
    /// versions from the file are added under it. Returns the tenants imported.
    ///
    /// With `seal_file` `None` the seal file is neither read nor removed (a drill
    /// uses the live vault's custody and must not change it).
    pub async fn import_legacy_files(
        &self,
        keystore_file: &Path,
        seal_file: Option<&Path>,
        skip: &(dyn Fn(&TenantId) -> bool + Sync),
    ) -> Result<usize, CryptoError> {
        let seal_file = seal_file.filter(|p| p.exists());
        if !keystore_file.exists() && seal_file.is_none() {
            return Ok(0);
        }
        let file_seals = match seal_file {
            Some(path) => {
                check_private_file(path)?;
                let sealed = fs::read(path).map_err(|e| keystore_err(path, e.to_string()))?;
                legacy::open_seal_file(&self.root, &sealed)
                    .map_err(|e| keystore_err(path, e.to_string()))?
            }
            None => BTreeMap::new(),
        };
        let keystore = if keystore_file.exists() {
            let mut sealed = Vec::new();
            File::open(keystore_file)
                .and_then(|mut f| f.read_to_end(&mut sealed))
                .map_err(|e| keystore_err(keystore_file, e.to_string()))?;
            Some(
                legacy::KeystoreFile::open(&self.root, &sealed)
                    .map_err(|e| keystore_err(keystore_file, e.to_string()))?,
            )
        } else {
            None
        };
        let mut imported = 0;
        for (tenant, entry) in keystore.iter().flat_map(|k| k.entries.iter()) {
            if skip(tenant) {
                continue;
            }
            let file_seal = match file_seals.get(tenant) {
                Some(seal) => Some(seal.clone()),
                None => self.load_seal(tenant).await?,
            };
            let versions = keystore
                .as_ref()
                .map(|k| k.versions(tenant, entry, file_seal.as_ref()))
                .transpose()
                .map_err(|e| keystore_err(keystore_file, e.to_string()))?
                .flatten();
            let Some(versions) = versions else {
                continue;
            };
            let seal = self
                .ensure_seal(tenant, file_seal.unwrap_or_else(Key256::random))
                .await?;
            for kek in &versions {
                self.create_kek(tenant, &seal, kek).await?;
            }
            imported += 1;
        }
        for (tenant, seal) in &file_seals {
            if !skip(tenant) {
                self.ensure_seal(tenant, seal.clone()).await?;
            }
        }
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for path in [Some(keystore_file), seal_file].into_iter().flatten() {
            match fs::remove_file(path) {
                Ok(()) => sync_parent(path).map_err(|e| keystore_err(path, e.to_string()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(keystore_err(path, e.to_string())),
            }
        }
        Ok(imported)
    }

    /// Adds a new KEK version for `tenant` and makes it current; returns it. When
    /// another replica adds the same version first, that one is current.
    pub async fn rotate_tenant_key(&self, tenant: &TenantId) -> Result<u32, CryptoError> {
        let seal = self
            .load_seal(tenant)
            .await?
            .ok_or_else(|| CryptoError::UnknownTenant(tenant.to_string()))?;
        let current = self.read_keks(tenant).await?;
        let next = current
            .as_ref()
            .and_then(|c| c.versions.last())
            .map_or(1, |v| v.version + 1);
        self.create_kek(
            tenant,
            &seal,
            &KekVersion {
                version: next,
                key: Key256::random(),
            },
        )
        .await?;
        self.read_keks(tenant).await?;
        Ok(next)
    }

    /// Destroys every KEK version of `tenant` (crypto-shredding): afterwards nothing
    /// wrapped under them can be unwrapped, from this store or from a backup.
    ///
    /// The tenant's seal key goes first: from then on its KEKs cannot be read from
    /// any copy, backups included. Then the KEK objects themselves.
    pub async fn destroy_tenant_key(&self, tenant: &TenantId) -> Result<bool, CryptoError> {
        let had_seal = self
            .objects
            .load(&KeystoreObject::Seal(tenant.clone()))
            .await?
            .is_some();
        self.objects
            .destroy(&KeystoreObject::Seal(tenant.clone()))
            .await?;
        self.forget(tenant);
        let versions = self.objects.kek_versions(tenant).await?;
        for version in &versions {
            self.objects
                .destroy(&KeystoreObject::Kek(tenant.clone(), *version))
                .await?;
        }
        self.forget(tenant);
        Ok(had_seal || !versions.is_empty())
    }

    /// Current KEK version of `tenant`, as the store has it now.
    pub async fn current_version(&self, tenant: &TenantId) -> Result<Option<u32>, CryptoError> {
        Ok(self
            .read_keks(tenant)
            .await?
            .and_then(|c| c.versions.last().map(|v| v.version)))
    }

    fn forget(&self, tenant: &TenantId) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant);
    }

    async fn load_seal(&self, tenant: &TenantId) -> Result<Option<Key256>, CryptoError> {
        match self
            .objects
            .load(&KeystoreObject::Seal(tenant.clone()))
            .await?
        {
            Some(bytes) => objects::open_tenant_seal(&self.root, tenant, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The tenant's seal key: the stored one, else `proposed`, stored create-only.
    async fn ensure_seal(
        &self,
        tenant: &TenantId,
        proposed: Key256,
    ) -> Result<Key256, CryptoError> {
        if let Some(seal) = self.load_seal(tenant).await? {
            return Ok(seal);
        }
        let sealed = objects::seal_tenant_seal(&self.root, tenant, &proposed)?;
        if self
            .objects
            .create(&KeystoreObject::Seal(tenant.clone()), sealed)
            .await?
        {
            return Ok(proposed);
        }
        self.load_seal(tenant)
            .await?
            .ok_or_else(|| CryptoError::UnknownTenant(tenant.to_string()))
    }

    /// Stores a KEK version create-only; false when that version existed.
    async fn create_kek(
        &self,
        tenant: &TenantId,
        seal: &Key256,
        kek: &KekVersion,
    ) -> Result<bool, CryptoError> {
        let sealed = objects::seal_kek(seal, tenant, kek.version, &kek.key)?;
        self.objects
            .create(&KeystoreObject::Kek(tenant.clone(), kek.version), sealed)
            .await
    }

    /// Reads the tenant's KEKs from the store (reusing versions already cached:
    /// a version never changes) and caches them. `None` when the tenant has no
    /// seal key (never created, or offboarded).
    async fn read_keks(&self, tenant: &TenantId) -> Result<Option<CachedKeks>, CryptoError> {
        let Some(seal) = self.load_seal(tenant).await? else {
            self.forget(tenant);
            return Ok(None);
        };
        let known = self.cached(tenant).map(|c| c.versions);
        let mut stored = self.objects.kek_versions(tenant).await?;
        stored.sort_unstable();
        stored.dedup();
        let mut versions = Vec::with_capacity(stored.len());
        for version in stored {
            if let Some(kek) = known
                .as_ref()
                .and_then(|k| k.iter().find(|k| k.version == version))
            {
                versions.push(kek.clone());
                continue;
            }
            let Some(bytes) = self
                .objects
                .load(&KeystoreObject::Kek(tenant.clone(), version))
                .await?
            else {
                continue;
            };
            versions.push(KekVersion {
                version,
                key: objects::open_kek(&seal, tenant, version, &bytes)?,
            });
        }
        if versions.is_empty() {
            self.forget(tenant);
            return Ok(None);
        }
        let cached = CachedKeks {
            versions: Arc::new(versions),
            read_at: Instant::now(),
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.clone(), cached.clone());
        Ok(Some(cached))
    }

    fn cached(&self, tenant: &TenantId) -> Option<CachedKeks> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// The tenant's KEKs, from the cache while it is fresh.
    async fn keks(&self, tenant: &TenantId) -> Result<Arc<Vec<KekVersion>>, CryptoError> {
        if let Some(cached) = self
            .cached(tenant)
            .filter(|c| c.read_at.elapsed() < KEK_CACHE_TTL)
        {
            return Ok(cached.versions);
        }
        self.read_keks(tenant)
            .await?
            .map(|c| c.versions)
            .ok_or_else(|| CryptoError::UnknownTenant(tenant.to_string()))
    }

    fn tenant_of(kek_id: &str, context: &EncryptionContext) -> Result<(), CryptoError> {
        if kek_id != context.tenant.as_str() {
            return Err(CryptoError::UnwrapFailed(
                "data key (KEK belongs to another tenant)",
            ));
        }
        Ok(())
    }
}

fn wrapped_aad(prefix: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut aad = prefix.to_vec();
    put_short_str(&mut aad, context.tenant.as_str());
    aad.extend_from_slice(context.purpose.as_str().as_bytes());
    aad
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn id(&self) -> &'static str {
        "local"
    }

    async fn ensure_tenant_key(
        &self,
        tenant: &TenantId,
        requested: Option<&str>,
    ) -> Result<String, CryptoError> {
        if let Some(requested) = requested {
            if requested != tenant.as_str() {
                return Err(CryptoError::InvalidArgument {
                    what: "local KEK id",
                    reason: "the local provider names each tenant's KEK after the tenant".into(),
                });
            }
        }
        if self.read_keks(tenant).await?.is_none() {
            // The seal key is stored first: a KEK object must always be readable.
            let seal = self.ensure_seal(tenant, Key256::random()).await?;
            let first = KekVersion {
                version: 1,
                key: Key256::random(),
            };
            // Losing the race to another replica is fine: its version 1 is used.
            self.create_kek(tenant, &seal, &first).await?;
            self.read_keks(tenant)
                .await?
                .ok_or_else(|| CryptoError::UnknownTenant(tenant.to_string()))?;
        }
        Ok(tenant.to_string())
    }

    async fn generate_data_key(
        &self,
        kek_id: &str,
        context: &EncryptionContext,
    ) -> Result<(Key256, Vec<u8>), CryptoError> {
        Self::tenant_of(kek_id, context)?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let keks = self.keks(&context.tenant).await?;
        let kek = keks
            .last()
            .ok_or_else(|| CryptoError::UnknownTenant(context.tenant.to_string()))?;
        let data_key = Key256::random();
        let mut blob = Vec::with_capacity(10 + 12 + 48);
        blob.extend_from_slice(&WRAPPED_MAGIC);
        blob.extend_from_slice(&VERSION.to_be_bytes());
        blob.extend_from_slice(&kek.version.to_be_bytes());
        let nonce: [u8; 12] = vault_crypto::random_bytes();
        let aad = wrapped_aad(&blob, context);
        let wrapped = Aes256GcmSiv::new(kek.key.expose().into())
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: data_key.expose(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Limit("local key wrap"))?;
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&wrapped);
        Ok((data_key, blob))
    }

    async fn decrypt_data_key(
        &self,
        kek_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Key256, CryptoError> {
        Self::tenant_of(kek_id, context)?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut reader = Reader::new(wrapped, "locally wrapped key");
        reader.expect_magic_and_version(WRAPPED_MAGIC, VERSION)?;
        let kek_version = reader.u32()?;
        let nonce: [u8; 12] = reader.array()?;
        let ciphertext = reader.take(48)?;
        reader.expect_end()?;
        let aad = wrapped_aad(&wrapped[..10], context);
        let mut keks = self.keks(&context.tenant).await?;
        if !keks.iter().any(|v| v.version == kek_version) {
            // A version another replica added since this one last looked.
            keks = self
                .read_keks(&context.tenant)
                .await?
                .map(|c| c.versions)
                .ok_or_else(|| CryptoError::UnknownTenant(context.tenant.to_string()))?;
        }
        let kek = keks
            .iter()
            .find(|v| v.version == kek_version)
            .ok_or_else(|| CryptoError::KeyVersionUnavailable {
                tenant: context.tenant.to_string(),
                version: kek_version,
            })?;
        let plain = Zeroizing::new(
            Aes256GcmSiv::new(kek.key.expose().into())
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| CryptoError::UnwrapFailed("data key"))?,
        );
        Key256::from_slice(&plain).ok_or(CryptoError::UnwrapFailed("data key"))
    }

    fn call_count(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Refuses key files that group or others can read or write.
pub fn check_private_file(path: &Path) -> Result<(), CryptoError> {
    crate::private_file::ensure_private(path).map_err(|e| keystore_err(path, e.to_string()))
}

fn load_or_create_root_key(path: &Path) -> Result<Key256, CryptoError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| keystore_err(parent, e.to_string()))?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let key = Key256::random();
            file.write_all(key.expose())
                .and_then(|()| file.sync_all())
                .map_err(|e| keystore_err(path, e.to_string()))?;
            sync_parent(path).map_err(|e| keystore_err(path, e.to_string()))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            check_private_file(path)?;
            let mut bytes = Zeroizing::new(Vec::with_capacity(32));
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| keystore_err(path, e.to_string()))?;
            Key256::from_slice(&bytes)
                .ok_or_else(|| keystore_err(path, "root key file must hold exactly 32 bytes"))
        }
        Err(e) => Err(keystore_err(path, e.to_string())),
    }
}

#[cfg(test)]
mod tests;

//! The `local` key provider: per-tenant KEKs in a keystore file sealed under a root
//! key file. The embedded default; one process owns the keystore.
//!
//! Root key file: 32 random bytes, created with mode 0600 on first use; refused when
//! group or others can read it. Beside it, the tenant seal file
//! (`tenant-seals.bin`, 0600) holds one random 32-byte seal key per tenant, sealed
//! under the root key. The keystore (which backups copy) holds each tenant's KEK
//! versions sealed under that tenant's seal key; the seal file is never in a
//! backup, so destroying a tenant's seal key crypto-shreds its KEKs in every copy
//! of the keystore, backups included, while other tenants are untouched. Root key
//! file and seal file together are the vault's key custody.
//!
//! Keystore file v2 (v1, without seal keys, is still read and migrated):
//!
//! ```text
//! "BVKS" | u16 version (2) | nonce (12) | AES-256-GCM-SIV(root key, nonce, entries,
//!                                             aad = "BVKS" | version)
//! entries = u32 tenant count, then per tenant: tenant (u8 len + bytes), nonce (12),
//!           u32 length, AES-256-GCM-SIV(seal key, nonce, versions,
//!                                      aad = "BVKS" | version | tenant)
//! versions = u32 version count, then per version: u32 version, 32-byte KEK
//! v1 entries = u32 tenant count, then per tenant: tenant, versions (no seal)
//! ```
//!
//! Seal file v1: `"BVTS" | u16 1 | nonce (12) | AES-256-GCM-SIV(root key, nonce,
//! u32 count, then per tenant: tenant, 32-byte seal key; aad = "BVTS" | 1)`.
//!
//! Writes go to a temporary file that is fsynced, renamed over the keystore and
//! followed by a directory fsync, so a crash leaves the old or the new keystore,
//! never a torn one. Wrapped data keys:
//!
//! ```text
//! "BVLW" | u16 version (1) | u32 KEK version | nonce (12) | wrapped key (32 + 16)
//! aad = the first 10 bytes | tenant | purpose
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use async_trait::async_trait;
use zeroize::Zeroizing;

use vault_crypto::keys::EncryptionContext;
use vault_crypto::wire::{put_short_str, Reader};
use vault_crypto::{CryptoError, Key256, TenantId};

use crate::private_file::{sync_parent, write_atomically};
use crate::KeyProvider;

/// Magic of the keystore file. FORMAT CONSTANT.
const KEYSTORE_MAGIC: [u8; 4] = *b"BVKS";
/// Keystore without per-tenant seal keys. FORMAT CONSTANT.
const KEYSTORE_V1: u16 = 1;
/// Keystore with per-tenant seal keys. FORMAT CONSTANT.
const KEYSTORE_V2: u16 = 2;
/// Magic of the tenant seal file. FORMAT CONSTANT.
const SEALS_MAGIC: [u8; 4] = *b"BVTS";
/// Version of the tenant seal file. FORMAT CONSTANT.
const SEALS_VERSION: u16 = 1;
/// Name of the tenant seal file, beside the root key file.
pub const SEALS_FILE_NAME: &str = "tenant-seals.bin";
/// Magic of a locally wrapped data key. FORMAT CONSTANT.
const WRAPPED_MAGIC: [u8; 4] = *b"BVLW";
const VERSION: u16 = 1;

/// One version of a tenant KEK.
struct KekVersion {
    version: u32,
    key: Key256,
}

/// The local key provider.
pub struct LocalKeyProvider {
    root_key_path: PathBuf,
    keystore_path: PathBuf,
    root: Key256,
    keks: Mutex<BTreeMap<TenantId, Vec<KekVersion>>>,
    seals_path: PathBuf,
    seals: Mutex<BTreeMap<TenantId, Key256>>,
    calls: AtomicU64,
}

impl std::fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("root_key_path", &self.root_key_path)
            .field("keystore_path", &self.keystore_path)
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
    /// Opens the keystore at `keystore_path` sealed under the root key at
    /// `root_key_path`, creating either when missing (the root key with mode 0600).
    ///
    /// A tenant whose seal key is gone (destroyed by offboarding) is absent: its
    /// KEKs in this keystore, a copy from before the offboarding, cannot be read.
    /// A v1 keystore gets seal keys and is rewritten as v2.
    pub fn open(root_key_path: &Path, keystore_path: &Path) -> Result<Self, CryptoError> {
        let root = load_or_create_root_key(root_key_path)?;
        let seals_path = root_key_path.with_file_name(SEALS_FILE_NAME);
        let mut seals = if seals_path.exists() {
            check_private_file(&seals_path)?;
            let sealed =
                fs::read(&seals_path).map_err(|e| keystore_err(&seals_path, e.to_string()))?;
            unseal_seals(&root, &sealed).map_err(|e| keystore_err(&seals_path, e.to_string()))?
        } else {
            BTreeMap::new()
        };
        let (keks, migrate) = if keystore_path.exists() {
            let mut sealed = Vec::new();
            File::open(keystore_path)
                .and_then(|mut f| f.read_to_end(&mut sealed))
                .map_err(|e| keystore_err(keystore_path, e.to_string()))?;
            unseal_keystore(&root, &sealed, &seals)
                .map_err(|e| keystore_err(keystore_path, e.to_string()))?
        } else {
            (BTreeMap::new(), false)
        };
        if migrate {
            for tenant in keks.keys() {
                seals.entry(tenant.clone()).or_insert_with(Key256::random);
            }
        }
        let provider = LocalKeyProvider {
            root_key_path: root_key_path.to_owned(),
            keystore_path: keystore_path.to_owned(),
            root,
            keks: Mutex::new(keks),
            seals_path,
            seals: Mutex::new(seals),
            calls: AtomicU64::new(0),
        };
        if migrate {
            let keks = provider.keks.lock().unwrap_or_else(PoisonError::into_inner);
            provider.persist_seals()?;
            provider.persist(&keks)?;
        }
        Ok(provider)
    }

    fn persist_seals(&self) -> Result<(), CryptoError> {
        let seals = self.seals.lock().unwrap_or_else(PoisonError::into_inner);
        let sealed = seal_seals(&self.root, &seals)?;
        write_atomically(&self.seals_path, &sealed)
            .map_err(|e| keystore_err(&self.seals_path, e.to_string()))
    }

    /// Adds a new KEK version for `tenant` and makes it current; returns it.
    pub fn rotate_tenant_key(&self, tenant: &TenantId) -> Result<u32, CryptoError> {
        let mut keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        let versions = keks
            .get_mut(tenant)
            .ok_or_else(|| CryptoError::UnknownTenant(tenant.to_string()))?;
        let next = versions.last().map_or(1, |v| v.version + 1);
        versions.push(KekVersion {
            version: next,
            key: Key256::random(),
        });
        self.persist(&keks)?;
        Ok(next)
    }

    /// Destroys every KEK version of `tenant` (crypto-shredding): afterwards nothing
    /// wrapped under them can be unwrapped, from this store or from a backup of it
    /// taken afterwards.
    ///
    /// The tenant's seal key goes first: from then on its KEKs cannot be read from
    /// any copy of the keystore, backups included. Then the keystore drops them.
    pub fn destroy_tenant_key(&self, tenant: &TenantId) -> Result<bool, CryptoError> {
        let mut keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        let had_seal = self
            .seals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant)
            .is_some();
        if had_seal {
            self.persist_seals()?;
        }
        let existed = keks.remove(tenant).is_some();
        if existed {
            self.persist(&keks)?;
        }
        Ok(existed || had_seal)
    }

    /// Current KEK version of `tenant`.
    pub fn current_version(&self, tenant: &TenantId) -> Option<u32> {
        let keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        keks.get(tenant).and_then(|v| v.last()).map(|v| v.version)
    }

    fn persist(&self, keks: &BTreeMap<TenantId, Vec<KekVersion>>) -> Result<(), CryptoError> {
        let sealed = {
            let seals = self.seals.lock().unwrap_or_else(PoisonError::into_inner);
            seal_keystore(&self.root, keks, &seals)?
        };
        write_atomically(&self.keystore_path, &sealed)
            .map_err(|e| keystore_err(&self.keystore_path, e.to_string()))
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
        let mut keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        if !keks.contains_key(tenant) {
            // The seal key is stored first: a keystore entry must always be readable.
            let new_seal = {
                let mut seals = self.seals.lock().unwrap_or_else(PoisonError::into_inner);
                if seals.contains_key(tenant) {
                    false
                } else {
                    seals.insert(tenant.clone(), Key256::random());
                    true
                }
            };
            if new_seal {
                self.persist_seals()?;
            }
            keks.insert(
                tenant.clone(),
                vec![KekVersion {
                    version: 1,
                    key: Key256::random(),
                }],
            );
            if let Err(e) = self.persist(&keks) {
                keks.remove(tenant);
                return Err(e);
            }
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
        let keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        let kek = keks
            .get(&context.tenant)
            .and_then(|v| v.last())
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
        let keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        let kek = keks
            .get(&context.tenant)
            .ok_or_else(|| CryptoError::UnknownTenant(context.tenant.to_string()))?
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

fn aead_seal(key: &Key256, plain: &[u8], aad: &[u8]) -> Result<([u8; 12], Vec<u8>), CryptoError> {
    let nonce: [u8; 12] = vault_crypto::random_bytes();
    let sealed = Aes256GcmSiv::new(key.expose().into())
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| CryptoError::Limit("keystore too large"))?;
    Ok((nonce, sealed))
}

fn aead_open(
    key: &Key256,
    nonce: &[u8; 12],
    sealed: &[u8],
    aad: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    Aes256GcmSiv::new(key.expose().into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::UnwrapFailed(what))
}

fn encode_versions(out: &mut Vec<u8>, versions: &[KekVersion]) {
    out.extend_from_slice(&(versions.len() as u32).to_be_bytes());
    for v in versions {
        out.extend_from_slice(&v.version.to_be_bytes());
        out.extend_from_slice(v.key.expose());
    }
}

fn decode_versions(reader: &mut Reader<'_>) -> Result<Vec<KekVersion>, CryptoError> {
    let count = reader.u32()?;
    let mut versions = Vec::new();
    for _ in 0..count {
        let version = reader.u32()?;
        let key = Key256::from_bytes(reader.array()?);
        versions.push(KekVersion { version, key });
    }
    Ok(versions)
}

fn tenant_aad(header: &[u8], tenant: &TenantId) -> Vec<u8> {
    let mut aad = header.to_vec();
    put_short_str(&mut aad, tenant.as_str());
    aad
}

fn seal_keystore(
    root: &Key256,
    keks: &BTreeMap<TenantId, Vec<KekVersion>>,
    seals: &BTreeMap<TenantId, Key256>,
) -> Result<Vec<u8>, CryptoError> {
    let mut header = Vec::with_capacity(6);
    header.extend_from_slice(&KEYSTORE_MAGIC);
    header.extend_from_slice(&KEYSTORE_V2.to_be_bytes());
    let mut plain = Zeroizing::new(Vec::with_capacity(keks.len() * 96));
    plain.extend_from_slice(&(keks.len() as u32).to_be_bytes());
    for (tenant, versions) in keks {
        let seal = seals
            .get(tenant)
            .ok_or_else(|| CryptoError::UnknownTenant(tenant.to_string()))?;
        let mut inner = Zeroizing::new(Vec::with_capacity(4 + versions.len() * 36));
        encode_versions(&mut inner, versions);
        let (nonce, sealed) = aead_seal(seal, &inner, &tenant_aad(&header, tenant))?;
        put_short_str(&mut plain, tenant.as_str());
        plain.extend_from_slice(&nonce);
        plain.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        plain.extend_from_slice(&sealed);
    }
    let (nonce, sealed) = aead_seal(root, &plain, &header)?;
    let mut out = header;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The tenants' KEKs, and whether the file was v1 (to be migrated).
fn unseal_keystore(
    root: &Key256,
    sealed: &[u8],
    seals: &BTreeMap<TenantId, Key256>,
) -> Result<(BTreeMap<TenantId, Vec<KekVersion>>, bool), CryptoError> {
    let mut reader = Reader::new(sealed, "keystore");
    let version = reader.expect_magic_and_versions(KEYSTORE_MAGIC, &[KEYSTORE_V1, KEYSTORE_V2])?;
    let header = &sealed[..6];
    let nonce: [u8; 12] = reader.array()?;
    let plain = aead_open(
        root,
        &nonce,
        &sealed[reader.position()..],
        header,
        "keystore (wrong root key or modified file)",
    )?;
    let mut reader = Reader::new(&plain, "keystore");
    let mut keks = BTreeMap::new();
    for _ in 0..reader.u32()? {
        let tenant = TenantId::new(reader.short_str()?)
            .map_err(|_| CryptoError::malformed("keystore", "invalid tenant id"))?;
        if version == KEYSTORE_V1 {
            keks.insert(tenant, decode_versions(&mut reader)?);
            continue;
        }
        let nonce: [u8; 12] = reader.array()?;
        let len = reader.u32()? as usize;
        let sealed_versions = reader.take(len)?;
        // No seal key: the tenant was offboarded; its KEKs are shredded.
        let Some(seal) = seals.get(&tenant) else {
            continue;
        };
        let inner = aead_open(
            seal,
            &nonce,
            sealed_versions,
            &tenant_aad(header, &tenant),
            "keystore entry (wrong tenant seal key)",
        )?;
        let mut inner_reader = Reader::new(&inner, "keystore entry");
        let versions = decode_versions(&mut inner_reader)?;
        inner_reader.expect_end()?;
        keks.insert(tenant, versions);
    }
    reader.expect_end()?;
    Ok((keks, version == KEYSTORE_V1))
}

fn seal_seals(root: &Key256, seals: &BTreeMap<TenantId, Key256>) -> Result<Vec<u8>, CryptoError> {
    let mut header = Vec::with_capacity(6);
    header.extend_from_slice(&SEALS_MAGIC);
    header.extend_from_slice(&SEALS_VERSION.to_be_bytes());
    let mut plain = Zeroizing::new(Vec::with_capacity(seals.len() * 48));
    plain.extend_from_slice(&(seals.len() as u32).to_be_bytes());
    for (tenant, key) in seals {
        put_short_str(&mut plain, tenant.as_str());
        plain.extend_from_slice(key.expose());
    }
    let (nonce, sealed) = aead_seal(root, &plain, &header)?;
    let mut out = header;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn unseal_seals(root: &Key256, sealed: &[u8]) -> Result<BTreeMap<TenantId, Key256>, CryptoError> {
    let mut reader = Reader::new(sealed, "tenant seal file");
    reader.expect_magic_and_version(SEALS_MAGIC, SEALS_VERSION)?;
    let nonce: [u8; 12] = reader.array()?;
    let plain = aead_open(
        root,
        &nonce,
        &sealed[reader.position()..],
        &sealed[..6],
        "tenant seal file (wrong root key or modified file)",
    )?;
    let mut reader = Reader::new(&plain, "tenant seal file");
    let mut seals = BTreeMap::new();
    for _ in 0..reader.u32()? {
        let tenant = TenantId::new(reader.short_str()?)
            .map_err(|_| CryptoError::malformed("tenant seal file", "invalid tenant id"))?;
        seals.insert(tenant, Key256::from_bytes(reader.array()?));
    }
    reader.expect_end()?;
    Ok(seals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use vault_crypto::keys::Purpose;

    fn ctx(tenant: &str, purpose: Purpose) -> EncryptionContext {
        EncryptionContext {
            tenant: TenantId::new(tenant).unwrap(),
            purpose,
        }
    }

    #[tokio::test]
    async fn keys_survive_restart_and_root_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let (root, store) = (dir.path().join("root.key"), dir.path().join("keystore.bin"));
        let acme = TenantId::new("acme").unwrap();
        let (key, wrapped) = {
            let provider = LocalKeyProvider::open(&root, &store).unwrap();
            let kek = provider.ensure_tenant_key(&acme, None).await.unwrap();
            provider
                .generate_data_key(&kek, &ctx("acme", Purpose::BranchKey))
                .await
                .unwrap()
        };
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let reopened = LocalKeyProvider::open(&root, &store).unwrap();
        let again = reopened
            .decrypt_data_key("acme", &wrapped, &ctx("acme", Purpose::BranchKey))
            .await
            .unwrap();
        assert_eq!(key.expose(), again.expose());
        // Wrong purpose or wrong tenant: refused.
        assert!(reopened
            .decrypt_data_key("acme", &wrapped, &ctx("acme", Purpose::IndexRoot))
            .await
            .is_err());
        assert!(reopened
            .decrypt_data_key("other", &wrapped, &ctx("other", Purpose::BranchKey))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn world_readable_root_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.key");
        LocalKeyProvider::open(&root, &dir.path().join("ks")).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalKeyProvider::open(&root, &dir.path().join("ks")).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[tokio::test]
    async fn rotation_keeps_old_versions_and_destroy_shreds() {
        let dir = tempfile::tempdir().unwrap();
        let provider =
            LocalKeyProvider::open(&dir.path().join("r"), &dir.path().join("k")).unwrap();
        let acme = TenantId::new("acme").unwrap();
        provider.ensure_tenant_key(&acme, None).await.unwrap();
        let c = ctx("acme", Purpose::BranchKey);
        let (k1, w1) = provider.generate_data_key("acme", &c).await.unwrap();
        assert_eq!(provider.rotate_tenant_key(&acme).unwrap(), 2);
        let (_, w2) = provider.generate_data_key("acme", &c).await.unwrap();
        assert_eq!(&w2[6..10], &2u32.to_be_bytes());
        assert_eq!(
            provider
                .decrypt_data_key("acme", &w1, &c)
                .await
                .unwrap()
                .expose(),
            k1.expose()
        );
        assert!(provider.destroy_tenant_key(&acme).unwrap());
        assert!(matches!(
            provider.decrypt_data_key("acme", &w1, &c).await,
            Err(CryptoError::UnknownTenant(_))
        ));
    }

    #[test]
    fn tampered_keystore_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (root, store) = (dir.path().join("r"), dir.path().join("k"));
        let provider = LocalKeyProvider::open(&root, &store).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(provider.ensure_tenant_key(&TenantId::new("acme").unwrap(), None))
            .unwrap();
        let mut bytes = fs::read(&store).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&store, bytes).unwrap();
        assert!(LocalKeyProvider::open(&root, &store).is_err());
    }

    /// A v1 keystore as the first release wrote it (no seal keys).
    fn seal_keystore_v1(root: &Key256, tenant: &str, kek: [u8; 32]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&1u32.to_be_bytes());
        put_short_str(&mut plain, tenant);
        plain.extend_from_slice(&1u32.to_be_bytes());
        plain.extend_from_slice(&1u32.to_be_bytes());
        plain.extend_from_slice(&kek);
        let mut header = KEYSTORE_MAGIC.to_vec();
        header.extend_from_slice(&KEYSTORE_V1.to_be_bytes());
        let (nonce, sealed) = aead_seal(root, &plain, &header).unwrap();
        let mut out = header;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    fn fixture(version: &str, name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("keystore-{version}"))
            .join(name)
    }

    /// Copies a checked-in fixture directory to a private temporary one.
    fn fixture_copy(version: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in ["root.key", "keystore.bin", "tenant-seals.bin", "wrapped"] {
            let from = fixture(version, name);
            if from.exists() {
                let to = dir.path().join(name);
                fs::copy(&from, &to).unwrap();
                fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        dir
    }

    /// The v1 and v2 fixtures still open; v1 is migrated to v2 with a seal file.
    #[tokio::test]
    async fn keystore_fixtures_still_open() {
        for version in ["v1", "v2"] {
            let dir = fixture_copy(version);
            let (root, store) = (dir.path().join("root.key"), dir.path().join("keystore.bin"));
            let provider = LocalKeyProvider::open(&root, &store).unwrap();
            let wrapped = fs::read(dir.path().join("wrapped")).unwrap();
            let key = provider
                .decrypt_data_key("acme", &wrapped, &ctx("acme", Purpose::BranchKey))
                .await
                .unwrap();
            assert_eq!(key.expose(), &[5u8; 32], "{version}");
            assert_eq!(&fs::read(&store).unwrap()[4..6], &KEYSTORE_V2.to_be_bytes());
            assert!(dir.path().join(SEALS_FILE_NAME).exists());
        }
    }

    /// Offboarding destroys the tenant's seal key: an older copy of the keystore (a
    /// backup) no longer yields its KEK, while other tenants still open.
    #[tokio::test]
    async fn destroyed_tenants_are_shredded_in_keystore_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (root, store) = (dir.path().join("root.key"), dir.path().join("keystore.bin"));
        let provider = LocalKeyProvider::open(&root, &store).unwrap();
        let (acme, other) = (
            TenantId::new("acme").unwrap(),
            TenantId::new("other").unwrap(),
        );
        provider.ensure_tenant_key(&acme, None).await.unwrap();
        provider.ensure_tenant_key(&other, None).await.unwrap();
        let (_, acme_wrapped) = provider
            .generate_data_key("acme", &ctx("acme", Purpose::BranchKey))
            .await
            .unwrap();
        let (other_key, other_wrapped) = provider
            .generate_data_key("other", &ctx("other", Purpose::BranchKey))
            .await
            .unwrap();
        let backup = fs::read(&store).unwrap();
        assert!(provider.destroy_tenant_key(&acme).unwrap());
        drop(provider);
        // Restore the old keystore beside the live root key and seal file.
        fs::write(&store, &backup).unwrap();
        let restored = LocalKeyProvider::open(&root, &store).unwrap();
        assert!(restored
            .decrypt_data_key("acme", &acme_wrapped, &ctx("acme", Purpose::BranchKey))
            .await
            .is_err());
        let again = restored
            .decrypt_data_key("other", &other_wrapped, &ctx("other", Purpose::BranchKey))
            .await
            .unwrap();
        assert_eq!(again.expose(), other_key.expose());
    }

    /// Writes the fixtures (run once per format version, then checked in).
    #[test]
    fn write_fixtures_when_asked() {
        if std::env::var_os("VAULT_WRITE_FIXTURES").is_none() {
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for version in ["v1", "v2"] {
            let dir = fixture("v1", "x")
                .parent()
                .unwrap()
                .with_file_name(format!("keystore-{version}"));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            let root = Key256::random();
            let root_path = dir.join("root.key");
            fs::write(&root_path, root.expose()).unwrap();
            fs::set_permissions(&root_path, fs::Permissions::from_mode(0o600)).unwrap();
            let kek = [9u8; 32];
            fs::write(
                dir.join("keystore.bin"),
                seal_keystore_v1(&root, "acme", kek),
            )
            .unwrap();
            let provider = LocalKeyProvider::open(&root_path, &dir.join("keystore.bin")).unwrap();
            if version == "v1" {
                fs::write(
                    dir.join("keystore.bin"),
                    seal_keystore_v1(&root, "acme", kek),
                )
                .unwrap();
                let _ = fs::remove_file(dir.join(SEALS_FILE_NAME));
            }
            // A data key of [5; 32] wrapped by hand under KEK version 1.
            let mut blob = WRAPPED_MAGIC.to_vec();
            blob.extend_from_slice(&VERSION.to_be_bytes());
            blob.extend_from_slice(&1u32.to_be_bytes());
            let c = ctx("acme", Purpose::BranchKey);
            let (nonce, wrapped) = aead_seal(
                &Key256::from_bytes(kek),
                &[5u8; 32],
                &wrapped_aad(&blob, &c),
            )
            .unwrap();
            blob.extend_from_slice(&nonce);
            blob.extend_from_slice(&wrapped);
            fs::write(dir.join("wrapped"), blob).unwrap();
            drop(provider);
            let _ = rt;
        }
    }
}

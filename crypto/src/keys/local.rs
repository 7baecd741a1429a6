//! The `local` key provider: per-tenant KEKs in a keystore file sealed under a root
//! key file. The embedded default; one process owns the keystore.
//!
//! Root key file: 32 random bytes, created with mode 0600 on first use; refused when
//! group or others can read it. Keystore file v1:
//!
//! ```text
//! "BVKS" | u16 version (1) | nonce (12) | AES-256-GCM-SIV(root key, nonce, entries,
//!                                             aad = "BVKS" | version)
//! entries = u32 tenant count, then per tenant: tenant (u8 len + bytes),
//!           u32 version count, then per version: u32 version, 32-byte KEK
//! ```
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
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use async_trait::async_trait;
use zeroize::Zeroizing;

use super::{EncryptionContext, KeyProvider};
use crate::wire::{put_short_str, Reader};
use crate::{CryptoError, Key256, TenantId};

/// Magic of the keystore file. FORMAT CONSTANT.
const KEYSTORE_MAGIC: [u8; 4] = *b"BVKS";
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
    pub fn open(root_key_path: &Path, keystore_path: &Path) -> Result<Self, CryptoError> {
        let root = load_or_create_root_key(root_key_path)?;
        let keks = if keystore_path.exists() {
            let mut sealed = Vec::new();
            File::open(keystore_path)
                .and_then(|mut f| f.read_to_end(&mut sealed))
                .map_err(|e| keystore_err(keystore_path, e.to_string()))?;
            unseal_keystore(&root, &sealed)
                .map_err(|e| keystore_err(keystore_path, e.to_string()))?
        } else {
            BTreeMap::new()
        };
        Ok(LocalKeyProvider {
            root_key_path: root_key_path.to_owned(),
            keystore_path: keystore_path.to_owned(),
            root,
            keks: Mutex::new(keks),
            calls: AtomicU64::new(0),
        })
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
    pub fn destroy_tenant_key(&self, tenant: &TenantId) -> Result<bool, CryptoError> {
        let mut keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        let existed = keks.remove(tenant).is_some();
        if existed {
            self.persist(&keks)?;
        }
        Ok(existed)
    }

    /// Current KEK version of `tenant`.
    pub fn current_version(&self, tenant: &TenantId) -> Option<u32> {
        let keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        keks.get(tenant).and_then(|v| v.last()).map(|v| v.version)
    }

    fn persist(&self, keks: &BTreeMap<TenantId, Vec<KekVersion>>) -> Result<(), CryptoError> {
        let sealed = seal_keystore(&self.root, keks)?;
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
        let nonce: [u8; 12] = crate::secret::random_bytes();
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
    let meta = fs::metadata(path).map_err(|e| keystore_err(path, e.to_string()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(keystore_err(
            path,
            format!(
                "permissions {:o} let group or others read it; run chmod 600",
                mode & 0o777
            ),
        ));
    }
    Ok(())
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

fn seal_keystore(
    root: &Key256,
    keks: &BTreeMap<TenantId, Vec<KekVersion>>,
) -> Result<Vec<u8>, CryptoError> {
    let mut plain = Zeroizing::new(Vec::with_capacity(keks.len() * 48));
    plain.extend_from_slice(&(keks.len() as u32).to_be_bytes());
    for (tenant, versions) in keks {
        put_short_str(&mut plain, tenant.as_str());
        plain.extend_from_slice(&(versions.len() as u32).to_be_bytes());
        for v in versions {
            plain.extend_from_slice(&v.version.to_be_bytes());
            plain.extend_from_slice(v.key.expose());
        }
    }
    let mut out = Vec::with_capacity(plain.len() + 34);
    out.extend_from_slice(&KEYSTORE_MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    let nonce: [u8; 12] = crate::secret::random_bytes();
    let sealed = Aes256GcmSiv::new(root.expose().into())
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &out,
            },
        )
        .map_err(|_| CryptoError::Limit("keystore too large"))?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn unseal_keystore(
    root: &Key256,
    sealed: &[u8],
) -> Result<BTreeMap<TenantId, Vec<KekVersion>>, CryptoError> {
    let mut reader = Reader::new(sealed, "keystore");
    reader.expect_magic_and_version(KEYSTORE_MAGIC, VERSION)?;
    let nonce: [u8; 12] = reader.array()?;
    let ciphertext = &sealed[reader.position()..];
    let plain = Zeroizing::new(
        Aes256GcmSiv::new(root.expose().into())
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: ciphertext,
                    aad: &sealed[..6],
                },
            )
            .map_err(|_| CryptoError::UnwrapFailed("keystore (wrong root key or modified file)"))?,
    );
    let mut reader = Reader::new(&plain, "keystore");
    let mut keks = BTreeMap::new();
    for _ in 0..reader.u32()? {
        let tenant = TenantId::new(reader.short_str()?)
            .map_err(|_| CryptoError::malformed("keystore", "invalid tenant id"))?;
        let count = reader.u32()?;
        let mut versions = Vec::new();
        for _ in 0..count {
            let version = reader.u32()?;
            let key = Key256::from_bytes(reader.array()?);
            versions.push(KekVersion { version, key });
        }
        keks.insert(tenant, versions);
    }
    reader.expect_end()?;
    Ok(keks)
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a
/// mix: temporary file (0600), fsync, rename, directory fsync.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp-{}",
        hex::encode(crate::secret::random_bytes::<6>())
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => File::open(parent)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Purpose;

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
}

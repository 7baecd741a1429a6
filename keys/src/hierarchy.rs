//! The key hierarchy with its in-memory cache of tenant keys.
//!
//! Branch and index root keys are unwrapped by the tenant's KEK once and cached
//! with a time-to-live and a use limit (as AWS's hierarchical keyring does), so an
//! upload costs no KMS round trip while its tenant's branch key is cached. Evicted
//! keys are zeroized when their last holder drops them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use vault_crypto::blind::IndexRootKey;
use vault_crypto::envelope::KeyRef;
use vault_crypto::keys::{EncryptionContext, TenantKeyKind, TenantKeyRecord};
use vault_crypto::{CryptoError, Key256, TenantId};

use crate::{KeyProvider, TenantKeyStore};

/// How long, and for how many uses, an unwrapped tenant key stays in memory.
#[derive(Clone, Copy, Debug)]
pub struct CachePolicy {
    /// Time to live of a cached key.
    pub ttl: Duration,
    /// Uses (document keys wrapped or unwrapped) before the key is unwrapped again.
    pub max_uses: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(300),
            max_uses: 100_000,
        }
    }
}

/// A tenant's key configuration, as the server's tenant registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantKeySpec {
    /// The tenant.
    pub tenant: TenantId,
    /// Provider id of its KEK.
    pub provider: String,
    /// Its KEK id within the provider.
    pub kek_id: String,
    /// Branch key version used for new documents.
    pub branch_version: u32,
    /// Documents wrapped under older branch versions are refused.
    pub min_decryption_version: u32,
    /// Blind-index root key version.
    pub index_version: u32,
}

struct CachedKey {
    key: Arc<Key256>,
    loaded: Instant,
    uses: u64,
}

type CacheKey = (TenantId, TenantKeyKind, u32);

/// One key's place in the cache. Its async mutex is held while the key loads, so
/// concurrent misses for the same key cost one KMS call (single flight), while
/// other keys, and other tenants, are not held up.
type Slot = Arc<Mutex<Option<CachedKey>>>;

/// Tenant KEK → branch / index keys → DEKs, with caching.
pub struct KeyHierarchy {
    providers: Vec<Arc<dyn KeyProvider>>,
    store: Arc<dyn TenantKeyStore>,
    policy: CachePolicy,
    // A short, synchronous lock over the slots, never held across I/O or an await.
    slots: std::sync::Mutex<HashMap<CacheKey, Slot>>,
}

impl std::fmt::Debug for KeyHierarchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHierarchy")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl KeyHierarchy {
    /// A hierarchy over the given providers and record store.
    pub fn new(
        providers: Vec<Arc<dyn KeyProvider>>,
        store: Arc<dyn TenantKeyStore>,
        policy: CachePolicy,
    ) -> Self {
        KeyHierarchy {
            providers,
            store,
            policy,
            slots: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Result<&Arc<dyn KeyProvider>, CryptoError> {
        self.providers
            .iter()
            .find(|p| p.id() == id)
            .ok_or_else(|| CryptoError::InvalidArgument {
                what: "key provider",
                reason: format!("{id} is not configured"),
            })
    }

    /// Total calls made to key services by every provider.
    pub fn provider_calls(&self) -> u64 {
        self.providers.iter().map(|p| p.call_count()).sum()
    }

    /// The branch key for a new document, and the reference to store in its key record.
    pub async fn branch_key_for_upload(
        &self,
        spec: &TenantKeySpec,
    ) -> Result<(KeyRef, Arc<Key256>), CryptoError> {
        let key = self
            .tenant_key(spec, TenantKeyKind::Branch, spec.branch_version, true)
            .await?;
        let key_ref = KeyRef {
            provider: spec.provider.clone(),
            kek_id: spec.kek_id.clone(),
            version: spec.branch_version,
        };
        Ok((key_ref, key))
    }

    /// The branch key named by a document's key record.
    pub async fn branch_key(
        &self,
        spec: &TenantKeySpec,
        key_ref: &KeyRef,
    ) -> Result<Arc<Key256>, CryptoError> {
        if key_ref.version < spec.min_decryption_version {
            return Err(CryptoError::KeyVersionRetired {
                version: key_ref.version,
                min: spec.min_decryption_version,
            });
        }
        if key_ref.version > spec.branch_version {
            return Err(CryptoError::KeyVersionUnavailable {
                tenant: spec.tenant.to_string(),
                version: key_ref.version,
            });
        }
        self.tenant_key(spec, TenantKeyKind::Branch, key_ref.version, false)
            .await
    }

    /// The tenant's blind-index root key (current version).
    pub async fn index_root_key(&self, spec: &TenantKeySpec) -> Result<IndexRootKey, CryptoError> {
        let key = self
            .tenant_key(spec, TenantKeyKind::IndexRoot, spec.index_version, true)
            .await?;
        Ok(IndexRootKey::new(Key256::clone(&key), spec.index_version))
    }

    /// Drops every cached key past its time to live or use limit, so an idle
    /// tenant's keys leave memory on time rather than at their next use. The
    /// server calls it periodically. Returns how many were dropped (zeroized when
    /// their last holder lets go).
    pub async fn evict_expired(&self) -> usize {
        let mut dropped = 0;
        self.lock_slots().retain(|_, slot| {
            // A slot in use (a load or a hit right now) is left for the next sweep.
            let Ok(entry) = slot.try_lock() else {
                return true;
            };
            match entry.as_ref() {
                Some(cached) if self.is_fresh(cached) => true,
                Some(_) => {
                    dropped += 1;
                    false
                }
                None => false,
            }
        });
        dropped
    }

    /// How many tenant keys are cached now (slots busy loading count too).
    pub async fn cached_keys(&self) -> usize {
        self.lock_slots()
            .values()
            .filter(|slot| slot.try_lock().map_or(true, |entry| entry.is_some()))
            .count()
    }

    /// Drops every cached key of a tenant (after rotation or offboarding). A load
    /// under way finishes into a slot no one finds again.
    pub async fn evict_tenant(&self, tenant: &TenantId) {
        self.lock_slots().retain(|(t, _, _), _| t != tenant);
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_fresh(&self, cached: &CachedKey) -> bool {
        cached.loaded.elapsed() < self.policy.ttl && cached.uses < self.policy.max_uses
    }

    async fn tenant_key(
        &self,
        spec: &TenantKeySpec,
        kind: TenantKeyKind,
        version: u32,
        create_if_missing: bool,
    ) -> Result<Arc<Key256>, CryptoError> {
        let slot = Arc::clone(
            self.lock_slots()
                .entry((spec.tenant.clone(), kind, version))
                .or_default(),
        );
        let mut entry = slot.lock().await;
        if let Some(cached) = entry.as_mut() {
            if self.is_fresh(cached) {
                cached.uses += 1;
                return Ok(Arc::clone(&cached.key));
            }
        }
        // Drop the stale key now (zeroized with its last holder), not after the load.
        *entry = None;
        let key = Arc::new(
            self.load_or_create(spec, kind, version, create_if_missing)
                .await?,
        );
        *entry = Some(CachedKey {
            key: Arc::clone(&key),
            loaded: Instant::now(),
            uses: 1,
        });
        Ok(key)
    }

    async fn load_or_create(
        &self,
        spec: &TenantKeySpec,
        kind: TenantKeyKind,
        version: u32,
        create_if_missing: bool,
    ) -> Result<Key256, CryptoError> {
        let context = EncryptionContext {
            tenant: spec.tenant.clone(),
            purpose: kind.purpose(),
        };
        if let Some(bytes) = self.store.load(&spec.tenant, kind, version).await? {
            return self
                .unwrap_record(&bytes, spec, kind, version, &context)
                .await;
        }
        if !create_if_missing {
            return Err(CryptoError::KeyVersionUnavailable {
                tenant: spec.tenant.to_string(),
                version,
            });
        }
        let provider = self.provider(&spec.provider)?;
        let (key, wrapped) = provider.generate_data_key(&spec.kek_id, &context).await?;
        let record = TenantKeyRecord {
            kind,
            tenant: spec.tenant.clone(),
            version,
            provider: spec.provider.clone(),
            kek_id: spec.kek_id.clone(),
            wrapped,
        };
        if self
            .store
            .create(&spec.tenant, kind, version, record.encode())
            .await?
        {
            return Ok(key);
        }
        // Another replica created it first: use theirs.
        let bytes = self
            .store
            .load(&spec.tenant, kind, version)
            .await?
            .ok_or_else(|| {
                CryptoError::RecordStore("tenant key record vanished after a create race".into())
            })?;
        self.unwrap_record(&bytes, spec, kind, version, &context)
            .await
    }

    async fn unwrap_record(
        &self,
        bytes: &[u8],
        spec: &TenantKeySpec,
        kind: TenantKeyKind,
        version: u32,
        context: &EncryptionContext,
    ) -> Result<Key256, CryptoError> {
        let record = TenantKeyRecord::parse(bytes)?;
        if record.tenant != spec.tenant || record.kind != kind || record.version != version {
            return Err(CryptoError::UnwrapFailed(
                "tenant key record (belongs elsewhere)",
            ));
        }
        self.provider(&record.provider)?
            .decrypt_data_key(&record.kek_id, &record.wrapped, context)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex as StdMutex;

    use async_trait::async_trait;

    use super::*;
    use crate::LocalKeyProvider;

    /// Tenant key records in memory.
    #[derive(Default)]
    struct Records(StdMutex<HashMap<(TenantId, TenantKeyKind, u32), Vec<u8>>>);

    #[async_trait]
    impl TenantKeyStore for Records {
        async fn load(
            &self,
            tenant: &TenantId,
            kind: TenantKeyKind,
            version: u32,
        ) -> Result<Option<Vec<u8>>, CryptoError> {
            let records = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Ok(records.get(&(tenant.clone(), kind, version)).cloned())
        }

        async fn create(
            &self,
            tenant: &TenantId,
            kind: TenantKeyKind,
            version: u32,
            record: Vec<u8>,
        ) -> Result<bool, CryptoError> {
            let mut records = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Ok(records
                .insert((tenant.clone(), kind, version), record)
                .is_none())
        }
    }

    #[tokio::test]
    async fn an_idle_tenants_keys_leave_the_cache_when_their_time_is_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = Arc::new(
            LocalKeyProvider::open(
                &dir.path().join("root.key"),
                Arc::new(crate::store::MemoryKeystoreObjects::default()),
            )
            .await
            .expect("keystore"),
        );
        let tenant = TenantId::new("acme").expect("tenant id");
        let kek_id = local
            .ensure_tenant_key(&tenant, None)
            .await
            .expect("tenant KEK");
        let hierarchy = KeyHierarchy::new(
            vec![local],
            Arc::new(Records::default()),
            CachePolicy {
                ttl: Duration::from_millis(50),
                max_uses: 1_000,
            },
        );
        let spec = TenantKeySpec {
            tenant,
            provider: "local".into(),
            kek_id,
            branch_version: 1,
            min_decryption_version: 1,
            index_version: 1,
        };
        hierarchy
            .branch_key_for_upload(&spec)
            .await
            .expect("branch key");
        assert_eq!(hierarchy.cached_keys().await, 1);
        assert_eq!(hierarchy.evict_expired().await, 0, "still fresh");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(hierarchy.evict_expired().await, 1);
        assert_eq!(hierarchy.cached_keys().await, 0);
    }

    /// The local provider, but every key operation of one tenant waits until the
    /// test opens the gate: a KMS call that hangs.
    struct Gated {
        inner: LocalKeyProvider,
        gated: TenantId,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl KeyProvider for Gated {
        fn id(&self) -> &'static str {
            self.inner.id()
        }

        async fn ensure_tenant_key(
            &self,
            tenant: &TenantId,
            requested: Option<&str>,
        ) -> Result<String, CryptoError> {
            self.inner.ensure_tenant_key(tenant, requested).await
        }

        async fn generate_data_key(
            &self,
            kek_id: &str,
            context: &EncryptionContext,
        ) -> Result<(Key256, Vec<u8>), CryptoError> {
            if context.tenant == self.gated {
                let _open = self.gate.acquire().await;
            }
            self.inner.generate_data_key(kek_id, context).await
        }

        async fn decrypt_data_key(
            &self,
            kek_id: &str,
            wrapped: &[u8],
            context: &EncryptionContext,
        ) -> Result<Key256, CryptoError> {
            if context.tenant == self.gated {
                let _open = self.gate.acquire().await;
            }
            self.inner.decrypt_data_key(kek_id, wrapped, context).await
        }

        fn call_count(&self) -> u64 {
            self.inner.call_count()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_tenants_hanging_key_service_does_not_hold_up_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = LocalKeyProvider::open(
            &dir.path().join("root.key"),
            Arc::new(crate::store::MemoryKeystoreObjects::default()),
        )
        .await
        .expect("keystore");
        let slow = TenantId::new("slow").expect("tenant id");
        let fast = TenantId::new("fast").expect("tenant id");
        let mut specs = Vec::new();
        for tenant in [&slow, &fast] {
            let kek_id = local.ensure_tenant_key(tenant, None).await.expect("KEK");
            specs.push(TenantKeySpec {
                tenant: tenant.clone(),
                provider: "local".into(),
                kek_id,
                branch_version: 1,
                min_decryption_version: 1,
                index_version: 1,
            });
        }
        let provider = Arc::new(Gated {
            inner: local,
            gated: slow,
            gate: tokio::sync::Semaphore::new(0),
        });
        let hierarchy = Arc::new(KeyHierarchy::new(
            vec![provider.clone()],
            Arc::new(Records::default()),
            CachePolicy::default(),
        ));
        let slow_spec = specs[0].clone();
        let stuck = {
            let hierarchy = Arc::clone(&hierarchy);
            tokio::spawn(async move { hierarchy.branch_key_for_upload(&slow_spec).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stuck.is_finished(), "the gated tenant's load is waiting");
        // The other tenant's key loads while the first tenant's call hangs.
        tokio::time::timeout(
            Duration::from_secs(10),
            hierarchy.branch_key_for_upload(&specs[1]),
        )
        .await
        .expect("held up by another tenant's key service")
        .expect("branch key");
        provider.gate.add_permits(100);
        stuck.await.expect("task").expect("branch key");
    }
}

//! Taking a snapshot: list the vault's objects, hash them, copy those the
//! repository lacks under their hash, then write the signed manifest last.
//!
//! Incremental by construction: an object whose hash is already in `data/` is not
//! copied. Objects that never change once written (bodies, facts, tombstones,
//! audit segments and checkpoints) keep the hash recorded in the previous snapshot when their size
//! is unchanged, so an unchanged document is not even read again; everything else
//! (key records, which rewraps replace; tenant and credential records) is re-read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vault_crypto::signing::SigningKey;
use vault_crypto::TenantId;

use super::manifest::{new_snapshot_id, Entry, LockInfo, Manifest};
use super::repo::Repository;
use super::{sha256_hex, BackupError, Progress};
use crate::storage::retry::retry_transient;
use crate::storage::{collect, list_all, ObjectInfo, ObjectName, ObjectStore, StorageError};

/// Objects up to this size are read once into memory, hashed and written; larger
/// ones are hashed in a streaming pass first and copied in a second one.
const IN_MEMORY_LIMIT: u64 = 8 << 20;
/// Objects handled at once.
const CONCURRENCY: usize = 32;

/// What to back up.
pub struct Source<'a> {
    /// The vault's store.
    pub store: &'a dyn ObjectStore,
    /// Where the store is, for the manifest (`fs` or `s3://bucket/prefix`).
    pub label: String,
    /// The vault's signing key.
    pub signer: &'a SigningKey,
}

/// Tenants to include; empty means the whole vault.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Chosen tenants.
    pub tenants: Vec<TenantId>,
}

/// Whether an object, once written, never changes (so a previous hash holds).
fn is_immutable(name: &str) -> bool {
    name.ends_with("/body")
        || name.ends_with("/meta")
        || name.contains("/tombstones/")
        || name.contains("/audit/segments/")
        || name.contains("/audit/checkpoints/")
}

/// Objects of the store that belong to the selection.
async fn list_source(
    store: &dyn ObjectStore,
    selection: &Selection,
) -> Result<Vec<ObjectInfo>, BackupError> {
    if selection.tenants.is_empty() {
        let mut all = list_all(store, "", None).await?;
        // The key custody is never in a backup (see `ObjectName::CUSTODY_PREFIX`).
        // Nor are leases, published jobs and the leftovers collector's
        // record: they are about the running replicas. Nor index snapshots: a
        // cache, rebuilt from what is backed up.
        all.retain(|info| {
            let name = info.name.as_str();
            !name.starts_with(ObjectName::CUSTODY_PREFIX)
                && !name.starts_with(ObjectName::LEASES_PREFIX)
                && !name.starts_with(ObjectName::JOBS_PREFIX)
                && !name.starts_with(ObjectName::LEFTOVERS_PREFIX)
                && !name.starts_with(ObjectName::INDEX_SNAPSHOTS_PREFIX)
        });
        return Ok(all);
    }
    let mut out = Vec::new();
    // Shared by every tenant: operators, the audit signing key, the system log.
    for prefix in [
        ObjectName::OPERATORS_PREFIX,
        ObjectName::AUDIT_SIGNING_PREFIX,
        &ObjectName::tenant_prefix(crate::audit::SYSTEM_LOG),
    ] {
        out.extend(list_all(store, prefix, None).await?);
    }
    for tenant in &selection.tenants {
        out.extend(list_all(store, &ObjectName::tenant_prefix(tenant.as_str()), None).await?);
        let record = ObjectName::tenant(tenant);
        if let Some(info) = store.head(&record).await? {
            out.push(info);
        }
    }
    for key in list_all(store, ObjectName::API_KEYS_PREFIX, None).await? {
        let Some(bytes) = store.get_bytes(&key.name).await? else {
            continue;
        };
        let tenant = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("tenant").and_then(|t| t.as_str()).map(str::to_owned));
        if tenant.is_some_and(|t| selection.tenants.iter().any(|s| s.as_str() == t)) {
            out.push(key);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// Shared state of one backup run.
///
/// Data objects are written deferred (no fsync each) and made durable by one
/// `sync` before the manifest is written. An object the repository holds is
/// relied on only when it is *trusted*: named by the previous manifest (so it
/// was durable before that manifest), or written by this run. Other objects found
/// there are leftovers of an interrupted run, possibly torn by a crash: they are
/// hashed before use and replaced when wrong.
struct Run<'a> {
    source: &'a dyn ObjectStore,
    repo: &'a Repository,
    present: Mutex<HashSet<String>>,
    trusted: Mutex<HashSet<String>>,
    /// Data objects this run wrote (the others it names are reused).
    written: Mutex<HashSet<String>>,
    previous: HashMap<String, (u64, String)>,
    bytes_added: Mutex<u64>,
    progress: &'a dyn Progress,
}

impl Run<'_> {
    fn is_trusted(&self, sha: &str) -> bool {
        self.trusted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(sha)
    }

    fn mark_present(&self, sha: &str, added: u64) {
        self.trusted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sha.to_owned());
        *self
            .bytes_added
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += added;
    }

    fn mark_written(&self, sha: &str, size: u64) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sha.to_owned());
        self.mark_present(sha, size);
    }

    /// Whether the repository holds a good copy of `sha`: trusted, or a leftover
    /// that hashes right (a wrong one is deleted, to be written again).
    async fn usable(&self, sha: &str) -> Result<bool, BackupError> {
        if self.is_trusted(sha) {
            return Ok(true);
        }
        let leftover = self
            .present
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(sha);
        if !leftover {
            return Ok(false);
        }
        let name = ObjectName::backup_data(sha);
        let good = match self.repo.store.get(&name).await {
            Ok(stream) => matches!(hash_stream(stream).await, Ok((actual, _)) if actual == sha),
            Err(StorageError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if good {
            self.mark_present(sha, 0);
        } else {
            self.repo.store.delete(&name).await?;
        }
        Ok(good)
    }

    /// Stores `bytes` under their hash unless present; returns the hash.
    async fn put_bytes(&self, bytes: Bytes) -> Result<String, BackupError> {
        let sha = sha256_hex(&bytes);
        if !self.usable(&sha).await? {
            let size = bytes.len() as u64;
            let body: crate::storage::ByteStream =
                Box::pin(futures::stream::once(async move { Ok(bytes) }));
            match self
                .repo
                .store
                .put_new_deferred(&ObjectName::backup_data(&sha), body)
                .await
            {
                Ok(_) => {
                    crate::failpoints::crash_point(crate::failpoints::BACKUP_AFTER_DATA);
                    self.mark_written(&sha, size);
                }
                Err(StorageError::AlreadyExists(_)) => self.mark_present(&sha, 0),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sha)
    }

    /// One object: its manifest entry, or `None` when it vanished meanwhile (a
    /// document deleted while the backup ran).
    async fn object(&self, info: &ObjectInfo) -> Result<Option<Entry>, BackupError> {
        let name = info.name.as_str();
        if is_immutable(name) {
            if let Some((size, sha)) = self.previous.get(name) {
                if *size == info.size && self.is_trusted(sha) {
                    return Ok(Some(Entry {
                        name: name.to_owned(),
                        size: *size,
                        sha256: sha.clone(),
                    }));
                }
            }
        }
        let result = if info.size <= IN_MEMORY_LIMIT {
            self.small(info).await
        } else {
            self.large(info).await
        };
        match result {
            Ok(entry) => Ok(Some(entry)),
            Err(BackupError::Storage(StorageError::NotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn small(&self, info: &ObjectInfo) -> Result<Entry, BackupError> {
        let stream = self.source.get(&info.name).await?;
        let bytes = collect(stream, IN_MEMORY_LIMIT as usize).await?;
        let size = bytes.len() as u64;
        let sha = self.put_bytes(bytes).await?;
        Ok(Entry {
            name: info.name.as_str().to_owned(),
            size,
            sha256: sha,
        })
    }

    async fn large(&self, info: &ObjectInfo) -> Result<Entry, BackupError> {
        let (sha, size) = hash_stream(self.source.get(&info.name).await?).await?;
        if !self.usable(&sha).await? {
            // Copy while hashing again: the bytes must be the ones hashed.
            let hasher = Arc::new(Mutex::new(Sha256::new()));
            let tee = Arc::clone(&hasher);
            let stream = self.source.get(&info.name).await?.map_ok(move |chunk| {
                tee.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .update(&chunk);
                chunk
            });
            let target = ObjectName::backup_data(&sha);
            match self
                .repo
                .store
                .put_new_deferred(&target, Box::pin(stream))
                .await
            {
                Ok(_) => {
                    let copied =
                        std::mem::take(&mut *hasher.lock().unwrap_or_else(PoisonError::into_inner))
                            .finalize();
                    if hex::encode(copied) != sha {
                        // It changed between the passes: never keep a misnamed object.
                        self.repo.store.delete(&target).await?;
                        return Err(BackupError::Mismatch {
                            name: info.name.to_string(),
                            problem: "changed while being backed up".into(),
                        });
                    }
                    crate::failpoints::crash_point(crate::failpoints::BACKUP_AFTER_DATA);
                    self.mark_written(&sha, size);
                }
                Err(StorageError::AlreadyExists(_)) => self.mark_present(&sha, 0),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Entry {
            name: info.name.as_str().to_owned(),
            size,
            sha256: sha,
        })
    }
}

/// SHA-256 (hex) and length of a stream.
pub async fn hash_stream(
    mut stream: crate::storage::ByteStream,
) -> Result<(String, u64), BackupError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Takes a snapshot and returns its manifest.
pub async fn run(
    source: Source<'_>,
    repo: &Repository,
    selection: &Selection,
    progress: &dyn Progress,
) -> Result<Manifest, BackupError> {
    let vault_key = source.signer.public_key();
    repo.init_or_check(&vault_key).await?;
    let created_at = OffsetDateTime::now_utc();
    let parent = repo.latest(&vault_key).await?;
    let previous = parent
        .as_ref()
        .map(|m| {
            m.entries
                .iter()
                .map(|e| (e.name.clone(), (e.size, e.sha256.clone())))
                .collect()
        })
        .unwrap_or_default();
    let present: HashSet<String> = repo.data_objects().await?.into_keys().collect();
    let trusted: HashSet<String> = parent
        .iter()
        .flat_map(|m| m.entries.iter().map(|e| e.sha256.clone()))
        .filter(|sha| present.contains(sha))
        .collect();
    let objects = list_source(source.store, selection).await?;
    let total: u64 = objects.iter().map(|o| o.size).sum();
    progress.start("backup", objects.len() as u64, total);

    let run = Run {
        source: source.store,
        repo,
        present: Mutex::new(present),
        trusted: Mutex::new(trusted),
        written: Mutex::new(HashSet::new()),
        previous,
        bytes_added: Mutex::new(0),
        progress,
    };
    let mut entries: Vec<Entry> = futures::stream::iter(objects)
        .map(|info| {
            let run = &run;
            async move {
                let entry = retry_transient(info.name.as_str(), BackupError::is_transient, |_| {
                    run.object(&info)
                })
                .await;
                run.progress.advance(info.size);
                entry
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_filter_map(|entry| async move { Ok(entry) })
        .try_collect()
        .await?;

    progress.finish();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if repo.lock.is_some() {
        // Reused objects were locked by earlier snapshots, until earlier: lock them
        // as long as this snapshot's own, or its retention would be a claim only.
        let written =
            std::mem::take(&mut *run.written.lock().unwrap_or_else(PoisonError::into_inner));
        let reused: HashSet<ObjectName> = entries
            .iter()
            .filter(|e| !written.contains(&e.sha256))
            .map(|e| ObjectName::backup_data(&e.sha256))
            .collect();
        let store = &repo.store;
        futures::stream::iter(reused)
            .map(|name| async move { store.extend_lock(&name).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await?;
    }
    let lock = repo.lock.map(|l| LockInfo {
        mode: l.mode_name().to_owned(),
        retain_until: created_at + time::Duration::days(i64::from(l.days)),
    });
    let manifest = Manifest {
        snapshot: new_snapshot_id(created_at),
        vault_key: vault_key.to_hex(),
        created_at,
        finished_at: OffsetDateTime::now_utc(),
        source: source.label,
        tenants: selection.tenants.iter().map(|t| t.to_string()).collect(),
        parent: parent.map(|p| p.into_inner().snapshot),
        lock,
        bytes_added: *run
            .bytes_added
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
        merkle_root: Manifest::compute_root(&entries),
        entries,
    };
    // Every data object the manifest names is durable before the manifest is.
    repo.store.sync().await?;
    let signed = manifest.sign(source.signer)?;
    repo.store
        .put_new_bytes(
            &ObjectName::backup_snapshot(&manifest.snapshot),
            Bytes::from(signed),
        )
        .await?;
    crate::failpoints::crash_point(crate::failpoints::BACKUP_AFTER_MANIFEST);
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::NoProgress;
    use crate::storage::fs::FsStore;
    use crate::storage::StoreLocation;
    use vault_crypto::Key256;

    /// A whole-vault backup copies the vault's records and leaves out what is
    /// about the running replicas (leases, jobs, the leftovers record), the
    /// index snapshots (a cache) and the key custody (never backed up).
    #[tokio::test]
    async fn a_vault_backup_leaves_out_the_replicas_state_and_the_custody() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(&dir.path().join("vault")).await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let kept = ObjectName::audit_segment(&tenant, 0);
        let left_out = [
            ObjectName::custody_seal(&tenant),
            ObjectName::parse(&format!("{}x", ObjectName::vault_lease_prefix("leftovers")))
                .unwrap(),
            ObjectName::parse(&format!("{}j1", ObjectName::JOBS_PREFIX)).unwrap(),
            ObjectName::leftovers_last_pass(),
            ObjectName::index_snapshot(&tenant, 1, "00000000000000000001-00000000"),
        ];
        for name in left_out.iter().chain([&kept]) {
            store
                .put_new_bytes(name, Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let listed: Vec<String> = list_source(
            &store,
            &Selection {
                tenants: Vec::new(),
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.name.as_str().to_owned())
        .collect();
        assert_eq!(listed, [kept.as_str()]);
    }

    /// A data object left torn by a crash (wrong bytes under its hash name) is
    /// found, replaced, and never named by a manifest as it was.
    #[tokio::test]
    async fn a_torn_leftover_is_replaced_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let source = FsStore::open(&dir.path().join("vault")).await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let name = ObjectName::audit_segment(&tenant, 0);
        let content = Bytes::from_static(b"sealed audit segment bytes");
        source.put_new_bytes(&name, content.clone()).await.unwrap();
        let repo = Repository::open(&StoreLocation::Fs(dir.path().join("repo")), 0, false)
            .await
            .unwrap();
        let sha = sha256_hex(&content);
        repo.store
            .put_new_bytes(&ObjectName::backup_data(&sha), Bytes::from_static(b"torn"))
            .await
            .unwrap();
        let signer = SigningKey::from_seed(&Key256::from_bytes([3; 32]));
        let manifest = run(
            Source {
                store: &source,
                label: "fs".into(),
                signer: &signer,
            },
            &repo,
            &Selection::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(manifest.entries.len(), 1);
        assert_eq!(manifest.entries[0].sha256, sha);
        let stored = repo
            .store
            .get_bytes(&ObjectName::backup_data(&sha))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, content);
        assert_eq!(manifest.bytes_added, content.len() as u64);
    }
}

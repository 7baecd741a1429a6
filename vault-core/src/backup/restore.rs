//! Restoring a snapshot into an empty store, every object checked against the
//! manifest as it is written: an object whose bytes do not hash to the manifest's
//! value fails its create-only write, so nothing unverified becomes visible.
//!
//! A restore runs only from a [`RestorePlan`], which only [`plan`] makes: the
//! repository's record names the vault's pinned key, the manifest verified under
//! that key, and the documents deleted as far as the repository knows (their
//! tombstones, see [`super::tombstones`]) are left out.
//! Parallel, and resumable: with `allow_non_empty`, objects already restored with
//! the right hash are kept. Objects are written without a sync each and made
//! durable together by one `sync` before the restore reports success.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use vault_crypto::signing::PublicKey;

use std::collections::{HashMap, HashSet};

use super::manifest::{Entry, Location, VerifiedManifest, KEYSTORE_ENTRY};
use super::repo::Repository;
use super::snapshot::hash_stream;
use super::tombstones::{self, Tombstones};
use super::{sha256_hex, BackupError, Progress};
use crate::storage::retry::retry_transient;
use crate::storage::{ByteStream, ObjectName, ObjectStore, StorageError};

/// Objects restored at once.
const CONCURRENCY: usize = 32;

/// Where a restore goes.
pub struct Target<'a> {
    /// The store to fill.
    pub store: &'a dyn ObjectStore,
    /// Where the sealed local keystore goes (`<data dir>/keys/keystore.bin`).
    pub keystore_file: Option<PathBuf>,
    /// Resume into a store that already holds some of the snapshot.
    pub allow_non_empty: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    /// The snapshot.
    pub snapshot: String,
    /// Objects written or found already restored.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects that were already there (resumed).
    pub already_present: u64,
    /// Deleted documents (tombstoned in this or a newer snapshot) left out; their
    /// tombstones are restored.
    pub deleted_documents_left_out: u64,
    /// Their objects in the snapshot, not restored.
    pub deleted_objects_left_out: u64,
    /// Objects that could not be restored or did not match.
    pub mismatches: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

/// A stream that hashes what passes and fails at its end when the hash is not
/// `expected`, so a create-only put of it never completes with wrong bytes.
fn verified(stream: ByteStream, expected: String, name: String) -> ByteStream {
    let hasher = Arc::new(Mutex::new(Some(Sha256::new())));
    let tail_hasher = Arc::clone(&hasher);
    let body = stream.map(move |chunk| {
        if let Ok(bytes) = &chunk {
            if let Some(h) = hasher
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
            {
                h.update(bytes);
            }
        }
        chunk
    });
    let check = futures::stream::once(async move {
        let digest = tail_hasher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|h| hex::encode(h.finalize()));
        if digest.as_deref() == Some(expected.as_str()) {
            Ok(bytes::Bytes::new())
        } else {
            Err(StorageError::SourceFailed(format!(
                "{name}: bytes do not match the manifest's SHA-256"
            )))
        }
    });
    Box::pin(body.chain(check))
}

/// Restores one object stored whole (streamed, checked as it goes);
/// `retrying` lets a copy already in the target (an earlier try's, whose
/// answer was lost) count when its hash is right.
async fn restore_object(
    repo: &Repository,
    target: &Target<'_>,
    entry: &Entry,
    retrying: bool,
) -> Result<bool, BackupError> {
    let missing = || BackupError::Mismatch {
        name: entry.name.clone(),
        problem: "missing from the repository".into(),
    };
    let data = ObjectName::backup_data(&entry.sha256);
    if entry.name == KEYSTORE_ENTRY {
        let bytes = repo.store.get_bytes(&data).await?.ok_or_else(missing)?;
        return write_object(target, entry, bytes, retrying).await;
    }
    let stream = match repo.store.get(&data).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let body = verified(stream, entry.sha256.clone(), entry.name.clone());
    put_object(target, entry, body, retrying).await
}

/// Writes `body` as the entry's object, create-only. One already there counts
/// when resuming (or retrying) and its bytes hash right; a body whose stream
/// failed its hash check is a mismatch.
async fn put_object(
    target: &Target<'_>,
    entry: &Entry,
    body: ByteStream,
    retrying: bool,
) -> Result<bool, BackupError> {
    let mismatch = |problem: String| BackupError::Mismatch {
        name: entry.name.clone(),
        problem,
    };
    let name =
        ObjectName::parse(&entry.name).ok_or_else(|| mismatch("not a valid object name".into()))?;
    match target.store.put_new_deferred(&name, body).await {
        Ok(_) => {
            crate::failpoints::crash_point(crate::failpoints::RESTORE_AFTER_OBJECT);
            Ok(false)
        }
        Err(StorageError::AlreadyExists(_)) if target.allow_non_empty || retrying => {
            let (sha, _) = hash_stream(target.store.get(&name).await?).await?;
            if sha == entry.sha256 {
                Ok(true)
            } else {
                Err(mismatch(
                    "the target holds different bytes under this name".into(),
                ))
            }
        }
        Err(StorageError::SourceFailed(problem)) => Err(mismatch(problem)),
        Err(e) => Err(e.into()),
    }
}

/// Writes the keystore file (0600), create-only unless resuming with the same bytes.
fn write_keystore(path: &Path, bytes: &[u8], allow_existing: bool) -> Result<bool, BackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| BackupError::Io(format!("{}: {e}", path.display()));
    if let Ok(existing) = std::fs::read(path) {
        if allow_existing && existing == bytes {
            return Ok(true);
        }
        return Err(BackupError::Io(format!(
            "{} exists; refusing to overwrite a keystore",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(false)
}

/// What a restore of one snapshot writes: only [`plan`] makes one.
#[derive(Debug)]
pub struct RestorePlan {
    manifest: VerifiedManifest,
    deleted: Tombstones,
    vault_key: PublicKey,
}

impl RestorePlan {
    /// The snapshot's manifest (verified under the vault's pinned key).
    pub fn manifest(&self) -> &VerifiedManifest {
        &self.manifest
    }

    /// Documents left out as deleted.
    pub fn deleted(&self) -> &Tombstones {
        &self.deleted
    }
}

/// Plans the restore of `manifest`: checks that the repository's record names
/// `vault_key` (the vault's key as the caller knows it, never taken from the
/// repository) and collects the tombstones of the snapshot and every newer one.
pub async fn plan(
    repo: &Repository,
    vault_key: &PublicKey,
    manifest: VerifiedManifest,
) -> Result<RestorePlan, BackupError> {
    repo.check_pinned(vault_key).await?;
    if manifest.vault_key != vault_key.to_hex() {
        return Err(BackupError::ForeignManifest(manifest.snapshot.clone()));
    }
    let deleted = tombstones::collect(repo, vault_key, &manifest).await?;
    Ok(RestorePlan {
        manifest,
        deleted,
        vault_key: *vault_key,
    })
}

/// Restores a planned snapshot into `target`, a chunk of its manifest at a
/// time. Mismatching objects are reported (and left out); other failures stop
/// the restore.
pub async fn restore(
    repo: &Repository,
    plan: &RestorePlan,
    target: &Target<'_>,
    progress: &dyn Progress,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    if !target.allow_non_empty && !target.store.list("", None, 1).await?.is_empty() {
        return Err(BackupError::TargetNotEmpty);
    }
    let manifest = plan.manifest();
    progress.start("restore", manifest.objects, manifest.bytes);
    let mut report = RestoreReport {
        snapshot: manifest.snapshot.clone(),
        ..RestoreReport::default()
    };
    // Objects behind a record this vault did not sign are looked for where the
    // manifest put them: found and hash-checked there, or reported missing.
    let (relocations, refused) = repo.relocations(&plan.vault_key).await?;
    for why in refused {
        tracing::warn!(problem = %why, "restore: relocation record not trusted");
    }
    let mut own_tombstones = HashSet::new();
    let mut deleted_documents = HashSet::new();
    let mut chunks = repo.entries(manifest);
    while let Some(chunk) = chunks.next().await {
        let mut wanted = Vec::new();
        for entry in chunk? {
            if ObjectName::tombstone_of(&entry.name).is_some() {
                own_tombstones.insert(entry.name.clone());
            }
            if plan.deleted.covers(&entry.name) {
                report.deleted_objects_left_out += 1;
                if let Some(document) = ObjectName::document_object_of(&entry.name) {
                    deleted_documents.insert((document.0.to_owned(), document.1));
                }
            } else {
                let location = relocations.locate(&entry.location)?;
                wanted.push(Entry { location, ..entry });
            }
        }
        restore_entries(repo, target, wanted, progress, &mut report).await?;
    }
    // The tombstones only newer snapshots hold.
    let newer: Vec<Entry> = plan
        .deleted
        .entries()
        .filter(|e| !own_tombstones.contains(&e.name))
        .map(|e| {
            Ok(Entry {
                location: relocations.locate(&e.location)?,
                ..e.clone()
            })
        })
        .collect::<Result<_, BackupError>>()?;
    restore_entries(repo, target, newer, progress, &mut report).await?;
    progress.finish();
    // Everything written is durable before the restore says it is done. (A machine
    // crash before this may leave torn objects; a resumed restore finds them by
    // their hash and refuses them, so the restore is then started anew.)
    target.store.sync().await?;
    report.deleted_documents_left_out = deleted_documents.len() as u64;
    report.mismatches.sort();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One object's restore: its name, size, and whether it was already there.
type Outcome = (String, u64, Result<bool, BackupError>);

/// Packed objects closer than this in one pack are read in one range.
const RANGE_GAP: u64 = 1 << 20;
/// The longest range read at once.
const RANGE_MAX: u64 = 32 << 20;
/// Ranges (or whole objects) read at once.
const READS_AT_ONCE: usize = 8;

/// What one read brings: a range of a pack holding some entries, or an object
/// stored whole.
enum Read {
    Range {
        pack: String,
        start: u64,
        end: u64,
        /// Each entry with its offset in the pack.
        entries: Vec<(u64, Entry)>,
    },
    Whole(Entry),
}

/// Groups entries into reads: a pack's entries by offset, neighbours merged.
fn plan_reads(entries: Vec<Entry>) -> Vec<Read> {
    let mut by_pack: HashMap<String, Vec<(u64, Entry)>> = HashMap::new();
    let mut reads = Vec::new();
    for entry in entries {
        match &entry.location {
            Location::Whole => reads.push(Read::Whole(entry)),
            Location::Packed { pack, offset } => {
                let (pack, offset) = (pack.clone(), *offset);
                by_pack.entry(pack).or_default().push((offset, entry));
            }
        }
    }
    for (pack, mut packed) in by_pack {
        packed.sort_by_key(|(offset, _)| *offset);
        let mut current: Option<Read> = None;
        for (offset, entry) in packed {
            let end = offset.saturating_add(entry.size);
            if let Some(Read::Range {
                start,
                end: range_end,
                entries,
                ..
            }) = &mut current
            {
                if offset >= *range_end
                    && offset - *range_end <= RANGE_GAP
                    && end - *start <= RANGE_MAX
                {
                    *range_end = end;
                    entries.push((offset, entry));
                    continue;
                }
            }
            if let Some(done) = current.take() {
                reads.push(done);
            }
            current = Some(Read::Range {
                pack: pack.clone(),
                start: offset,
                end,
                entries: vec![(offset, entry)],
            });
        }
        reads.extend(current);
    }
    reads
}

/// Restores entries, [`READS_AT_ONCE`] reads at a time, into the report.
async fn restore_entries(
    repo: &Repository,
    target: &Target<'_>,
    entries: Vec<Entry>,
    progress: &dyn Progress,
    report: &mut RestoreReport,
) -> Result<(), BackupError> {
    let results: Vec<Vec<Outcome>> = futures::stream::iter(plan_reads(entries))
        .map(|read| async move {
            match read {
                Read::Whole(entry) => {
                    // A retry may find what its earlier try wrote: checked by hash.
                    let result = retry_transient(&entry.name, BackupError::is_transient, |n| {
                        restore_object(repo, target, &entry, n > 1)
                    })
                    .await;
                    progress.advance(entry.size);
                    vec![(entry.name, entry.size, result)]
                }
                Read::Range {
                    pack,
                    start,
                    end,
                    entries,
                } => restore_range(repo, target, &pack, start..end, entries, progress).await,
            }
        })
        .buffer_unordered(READS_AT_ONCE)
        .collect()
        .await;
    for (name, size, result) in results.into_iter().flatten() {
        match result {
            Ok(present) => {
                report.objects += 1;
                report.bytes += size;
                report.already_present += u64::from(present);
            }
            Err(BackupError::Mismatch { problem, .. }) => {
                report.mismatches.push(format!("{name}: {problem}"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one range of a pack and restores the entries in it, each checked
/// against its hash before it is written.
async fn restore_range(
    repo: &Repository,
    target: &Target<'_>,
    pack: &str,
    range: std::ops::Range<u64>,
    entries: Vec<(u64, Entry)>,
    progress: &dyn Progress,
) -> Vec<Outcome> {
    let name = ObjectName::backup_pack(pack);
    let len = (range.end - range.start) as usize;
    let fetched = retry_transient(name.as_str(), BackupError::is_transient, |_| {
        let range = range.clone();
        let name = &name;
        async move {
            let stream = repo.store.get_range(name, range).await?;
            Ok::<_, BackupError>(crate::storage::collect(stream, len).await?)
        }
    })
    .await;
    let bytes = match fetched {
        Ok(bytes) if bytes.len() == len => Ok(bytes),
        Ok(_) => Err(format!("pack {pack} is shorter than the manifest says")),
        Err(BackupError::Storage(StorageError::NotFound(_))) => {
            Err(format!("pack {pack} is missing from the repository"))
        }
        Err(e) => {
            let e = Arc::new(e);
            return entries
                .into_iter()
                .map(|(_, entry)| {
                    (
                        entry.name,
                        entry.size,
                        Err(BackupError::Storage(StorageError::Backend(e.to_string()))),
                    )
                })
                .collect();
        }
    };
    futures::stream::iter(entries)
        .map(|(offset, entry)| {
            let bytes = bytes.clone();
            let start = range.start;
            async move {
                let result = match bytes {
                    Err(problem) => Err(BackupError::Mismatch {
                        name: entry.name.clone(),
                        problem,
                    }),
                    Ok(bytes) => {
                        let from = (offset - start) as usize;
                        let object = bytes.slice(from..from + entry.size as usize);
                        retry_transient(&entry.name, BackupError::is_transient, |n| {
                            write_object(target, &entry, object.clone(), n > 1)
                        })
                        .await
                    }
                };
                progress.advance(entry.size);
                (entry.name, entry.size, result)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// Writes one object's bytes (already read) after checking their hash;
/// `retrying` lets a copy already in the target count when its hash is right.
async fn write_object(
    target: &Target<'_>,
    entry: &Entry,
    bytes: bytes::Bytes,
    retrying: bool,
) -> Result<bool, BackupError> {
    let mismatch = |problem: &str| BackupError::Mismatch {
        name: entry.name.clone(),
        problem: problem.to_owned(),
    };
    if sha256_hex(&bytes) != entry.sha256 {
        return Err(mismatch("bytes do not match the manifest's SHA-256"));
    }
    if entry.name == KEYSTORE_ENTRY {
        let Some(path) = &target.keystore_file else {
            return Err(BackupError::Invalid(
                "the snapshot holds the local keystore: give a data directory for it".into(),
            ));
        };
        return write_keystore(path, &bytes, target.allow_non_empty || retrying);
    }
    let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
    put_object(target, entry, body, retrying).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use vault_crypto::signing::SigningKey;
    use vault_crypto::{DocumentId, Key256, TenantId};

    use super::*;
    use crate::backup::NoProgress;
    use crate::storage::fs::FsStore;

    async fn repository(dir: &Path) -> Repository {
        Repository {
            store: Arc::new(FsStore::open(dir).await.unwrap()),
            location: dir.display().to_string(),
            lock: None,
        }
    }

    /// Stores `content` in the repository as the object `name` and returns its entry.
    async fn object(repo: &Repository, name: &ObjectName, content: &str) -> Entry {
        let sha = sha256_hex(content.as_bytes());
        match repo
            .store
            .put_new_bytes(
                &ObjectName::backup_data(&sha),
                Bytes::from(content.to_owned()),
            )
            .await
        {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => panic!("{e}"),
        }
        Entry {
            name: name.as_str().to_owned(),
            size: content.len() as u64,
            sha256: sha,
            location: Location::Whole,
        }
    }

    async fn document(repo: &Repository, tenant: &TenantId, doc: &DocumentId) -> Vec<Entry> {
        vec![
            object(
                repo,
                &ObjectName::doc_body(tenant, doc),
                &format!("body {doc}"),
            )
            .await,
            object(
                repo,
                &ObjectName::doc_key(tenant, doc),
                &format!("key {doc}"),
            )
            .await,
            object(
                repo,
                &ObjectName::doc_meta(tenant, doc),
                &format!("meta {doc}"),
            )
            .await,
        ]
    }

    async fn snapshot(repo: &Repository, key: &SigningKey, id: &str, entries: Vec<Entry>) {
        let manifest = crate::backup::tombstones::tests::manifest(key, id, entries);
        repo.store
            .put_new_bytes(
                &ObjectName::backup_snapshot(id),
                Bytes::from(manifest.sign(key).unwrap()),
            )
            .await
            .unwrap();
    }

    const FIRST: &str = "20260101-000000-00000001";
    const SECOND: &str = "20260102-000000-00000002";

    /// A and B are backed up, A is deleted, a second snapshot holds A's tombstone:
    /// restoring either brings back B and A's tombstone, never A.
    #[tokio::test]
    async fn a_restore_leaves_out_documents_tombstoned_in_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir.path().join("repo")).await;
        let key = SigningKey::from_seed(&Key256::from_bytes([4; 32]));
        let pinned = key.public_key();
        repo.init_or_check(&pinned).await.unwrap();
        let acme = TenantId::new("acme").unwrap();
        let (a, b) = (DocumentId::random(), DocumentId::random());
        let mut first = document(&repo, &acme, &a).await;
        first.extend(document(&repo, &acme, &b).await);
        first.push(object(&repo, &ObjectName::doc_hold(&acme, &a), "hold").await);
        snapshot(&repo, &key, FIRST, first).await;
        let mut second = document(&repo, &acme, &b).await;
        let tombstone = ObjectName::tombstone(&acme, &a);
        second.push(object(&repo, &tombstone, "tombstone").await);
        snapshot(&repo, &key, SECOND, second).await;

        for (id, target_dir) in [(FIRST, "first"), (SECOND, "second")] {
            let target = FsStore::open(&dir.path().join(target_dir)).await.unwrap();
            let manifest = repo.manifest(id, &pinned).await.unwrap();
            let plan = plan(&repo, &pinned, manifest).await.unwrap();
            let report = restore(
                &repo,
                &plan,
                &Target {
                    store: &target,
                    keystore_file: None,
                    allow_non_empty: false,
                },
                &NoProgress,
            )
            .await
            .unwrap();
            assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
            for name in [
                ObjectName::doc_body(&acme, &a),
                ObjectName::doc_key(&acme, &a),
                ObjectName::doc_meta(&acme, &a),
                ObjectName::doc_hold(&acme, &a),
            ] {
                assert!(target.head(&name).await.unwrap().is_none(), "{id}: {name}");
            }
            assert!(target
                .head(&ObjectName::doc_meta(&acme, &b))
                .await
                .unwrap()
                .is_some());
            assert!(target.head(&tombstone).await.unwrap().is_some(), "{id}");
            if id == FIRST {
                assert_eq!(report.deleted_documents_left_out, 1);
                assert_eq!(report.deleted_objects_left_out, 4);
                // B's three objects and A's tombstone.
                assert_eq!(report.objects, 4);
            } else {
                assert_eq!(report.deleted_documents_left_out, 0);
            }
        }
    }

    /// A repository whose record names another key is refused before anything is
    /// written, even with manifests signed by that other key.
    #[tokio::test]
    async fn a_repository_pinned_to_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(&dir.path().join("repo")).await;
        let ours = SigningKey::from_seed(&Key256::from_bytes([4; 32]));
        let forger = SigningKey::from_seed(&Key256::from_bytes([8; 32]));
        repo.init_or_check(&forger.public_key()).await.unwrap();
        let acme = TenantId::new("acme").unwrap();
        let entries = document(&repo, &acme, &DocumentId::random()).await;
        snapshot(&repo, &forger, FIRST, entries).await;
        assert!(matches!(
            repo.check_pinned(&ours.public_key()).await,
            Err(BackupError::ForeignRepository { .. })
        ));
        assert!(matches!(
            repo.manifest(FIRST, &ours.public_key()).await,
            Err(BackupError::ForeignManifest(_))
        ));
        // Even with a manifest that verified (under the forger's key), planning
        // under our key refuses the repository.
        let forged = repo.manifest(FIRST, &forger.public_key()).await.unwrap();
        assert!(matches!(
            plan(&repo, &ours.public_key(), forged).await,
            Err(BackupError::ForeignRepository { .. })
        ));
    }
}

//! Restoring a snapshot into an empty store, every object checked against the
//! manifest as it is written: an object whose bytes do not hash to the manifest's
//! value fails its create-only write, so nothing unverified becomes visible.
//! Parallel, and resumable: with `allow_non_empty`, objects already restored with
//! the right hash are kept. Objects are written without a sync each and made
//! durable together by one `sync` before the restore reports success.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::manifest::{Entry, Manifest, KEYSTORE_ENTRY};
use super::repo::Repository;
use super::snapshot::hash_stream;
use super::{sha256_hex, BackupError, Progress};
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

async fn restore_object(
    repo: &Repository,
    target: &Target<'_>,
    entry: &Entry,
) -> Result<bool, BackupError> {
    let mismatch = |problem: String| BackupError::Mismatch {
        name: entry.name.clone(),
        problem,
    };
    let data = ObjectName::backup_data(&entry.sha256);
    if entry.name == KEYSTORE_ENTRY {
        let Some(path) = &target.keystore_file else {
            return Err(BackupError::Invalid(
                "the snapshot holds the local keystore: give a data directory for it".into(),
            ));
        };
        let bytes = repo
            .store
            .get_bytes(&data)
            .await?
            .ok_or_else(|| mismatch("missing from the repository".into()))?;
        if sha256_hex(&bytes) != entry.sha256 {
            return Err(mismatch("bytes do not match the manifest's SHA-256".into()));
        }
        return write_keystore(path, &bytes, target.allow_non_empty);
    }
    let name =
        ObjectName::parse(&entry.name).ok_or_else(|| mismatch("not a valid object name".into()))?;
    let stream = match repo.store.get(&data).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => {
            return Err(mismatch("missing from the repository".into()))
        }
        Err(e) => return Err(e.into()),
    };
    match target
        .store
        .put_new_deferred(
            &name,
            verified(stream, entry.sha256.clone(), entry.name.clone()),
        )
        .await
    {
        Ok(_) => Ok(false),
        Err(StorageError::AlreadyExists(_)) if target.allow_non_empty => {
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

/// Restores `manifest` into `target`. Mismatching objects are reported (and left
/// out); other failures stop the restore.
pub async fn restore(
    repo: &Repository,
    manifest: &Manifest,
    target: &Target<'_>,
    progress: &dyn Progress,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    if !target.allow_non_empty && !target.store.list("", None, 1).await?.is_empty() {
        return Err(BackupError::TargetNotEmpty);
    }
    progress.start(
        "restore",
        manifest.entries.len() as u64,
        manifest.total_bytes(),
    );
    let results: Vec<(String, u64, Result<bool, BackupError>)> =
        futures::stream::iter(manifest.entries.iter().cloned())
            .map(|entry| async move {
                let result = restore_object(repo, target, &entry).await;
                progress.advance(entry.size);
                (entry.name.clone(), entry.size, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    progress.finish();
    // Everything written is durable before the restore says it is done. (A machine
    // crash before this may leave torn objects; a resumed restore finds them by
    // their hash and refuses them, so the restore is then started anew.)
    target.store.sync().await?;
    let mut report = RestoreReport {
        snapshot: manifest.snapshot.clone(),
        ..RestoreReport::default()
    };
    for (name, size, result) in results {
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
    report.mismatches.sort();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

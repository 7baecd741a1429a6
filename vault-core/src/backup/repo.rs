//! A backup repository: a directory or an S3 prefix holding `config`, signed
//! manifests under `snapshots/`, content-addressed objects under `data/` and legal
//! holds under `holds/` (names in `storage/names.rs`).
//!
//! The repository record names the vault's public key, written at the first
//! backup. It is never trusted to say which key that is: every reader brings the
//! vault's key from elsewhere (the server its own signing key; `vault-cli` the
//! live server's answer or `--public-key`), checks the record names it, and checks
//! every manifest against it, so a repository re-pinned to another key, or a
//! manifest copied in from another vault, is refused.
//! Writes are create-only (`If-None-Match: *` on S3); on a bucket with Object Lock
//! enabled every object gets the configured retention.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vault_crypto::signing::PublicKey;

use futures::stream::BoxStream;
use futures::StreamExt;
use vault_crypto::merkle::Frontier;

use super::manifest::{
    is_sha256_hex, is_snapshot_id, Body, ChunkRef, Entry, Manifest, VerifiedManifest,
    MAX_MANIFEST_BYTES,
};
use super::pack::{self, Relocation, Relocations};
use super::BackupError;
use crate::storage::s3::{ObjectLock, S3Store};
use crate::storage::{
    get_bytes_at_most, list_all, ObjectName, ObjectStore, StorageError, StoreLocation,
};

/// FORMAT CONSTANT: version of the repository record.
const CONFIG_FORMAT: u32 = 1;
/// A relocation record read: its old pack, and the record or why it is refused.
type ReadRecord = (String, Result<Relocation, String>);
/// The repository record is a few hundred bytes: a larger file is not read.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The repository record (`config`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoConfig {
    /// FORMAT CONSTANT: 1.
    pub format: u32,
    /// Public key (hex) of the vault whose snapshots this repository holds.
    pub vault_key: String,
    /// When the repository was started.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An open repository.
pub struct Repository {
    /// Its objects.
    pub store: Arc<dyn ObjectStore>,
    /// Where it is (for reports).
    pub location: String,
    /// Object Lock applied to new objects, when the bucket has it.
    pub lock: Option<ObjectLock>,
}

/// A manifest's summary, for listings.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotSummary {
    /// Snapshot id.
    pub id: String,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Objects in it.
    pub objects: u64,
    /// Their total size.
    pub bytes: u64,
    /// Bytes it added to the repository.
    pub bytes_added: u64,
    /// Tenants (empty: all).
    pub tenants: Vec<String>,
    /// Object Lock retention end, if locked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub locked_until: Option<OffsetDateTime>,
    /// Whether a legal hold keeps it.
    pub held: bool,
}

impl Repository {
    /// Opens a repository; on S3 with `lock_days > 0`, applies Object Lock when the
    /// bucket has it enabled.
    pub async fn open(
        location: &StoreLocation,
        lock_days: u32,
        compliance: bool,
    ) -> Result<Repository, BackupError> {
        Ok(match location {
            StoreLocation::Fs(root) => Repository {
                store: Arc::new(crate::storage::fs::FsStore::open(root).await?),
                location: root.display().to_string(),
                lock: None,
            },
            StoreLocation::S3 { bucket, prefix } => {
                let store = S3Store::new(bucket, prefix, None, None, 64 << 20).await;
                let lock = if lock_days > 0 && store.object_lock_enabled().await? {
                    Some(ObjectLock {
                        compliance,
                        days: lock_days,
                    })
                } else {
                    None
                };
                let store = match lock {
                    Some(lock) => store.with_object_lock(lock),
                    None => store,
                };
                Repository {
                    store: Arc::new(store),
                    location: format!("s3://{bucket}/{prefix}"),
                    lock,
                }
            }
        })
    }

    /// Opens an existing repository read-only (offline verify, restore, drill):
    /// nothing in it is changed, not even a running backup's temporary files.
    pub async fn open_existing(location: &StoreLocation) -> Result<Repository, BackupError> {
        let label = match location {
            StoreLocation::Fs(root) => root.display().to_string(),
            StoreLocation::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        };
        Ok(Repository {
            store: location.open().await?,
            location: label,
            lock: None,
        })
    }

    /// Reads the repository record, if the repository was started.
    pub async fn config(&self) -> Result<Option<RepoConfig>, BackupError> {
        let Some(bytes) = get_bytes_at_most(
            self.store.as_ref(),
            &ObjectName::backup_config(),
            MAX_CONFIG_BYTES,
        )
        .await?
        else {
            return Ok(None);
        };
        let config: RepoConfig = serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::Repository(format!("unreadable record: {e}")))?;
        if config.format != CONFIG_FORMAT {
            return Err(BackupError::Repository(format!(
                "unknown record format {}",
                config.format
            )));
        }
        Ok(Some(config))
    }

    /// Starts the repository for this vault, or checks it is this vault's.
    pub async fn init_or_check(&self, vault_key: &PublicKey) -> Result<(), BackupError> {
        if let Some(config) = self.config().await? {
            return check_key(&config, vault_key);
        }
        let config = RepoConfig {
            format: CONFIG_FORMAT,
            vault_key: vault_key.to_hex(),
            created_at: OffsetDateTime::now_utc(),
        };
        let bytes =
            serde_json::to_vec_pretty(&config).map_err(|e| BackupError::Internal(e.to_string()))?;
        match self
            .store
            .put_new_bytes(&ObjectName::backup_config(), Bytes::from(bytes))
            .await
        {
            Ok(()) => Ok(()),
            // Started concurrently: theirs must be ours too.
            Err(StorageError::AlreadyExists(_)) => match self.config().await? {
                Some(config) => check_key(&config, vault_key),
                None => Err(BackupError::Repository("record vanished".into())),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Checks that the repository's record names `vault_key`, the vault's key as
    /// the caller knows it (never read from the repository).
    pub async fn check_pinned(&self, vault_key: &PublicKey) -> Result<(), BackupError> {
        let config = self.config().await?.ok_or_else(|| {
            BackupError::Repository(format!("{} is not a backup repository", self.location))
        })?;
        check_key(&config, vault_key)
    }

    /// Snapshot ids, oldest first.
    pub async fn snapshot_ids(&self) -> Result<Vec<String>, BackupError> {
        let listed = list_all(
            self.store.as_ref(),
            ObjectName::BACKUP_SNAPSHOTS_PREFIX,
            None,
        )
        .await?;
        Ok(listed
            .iter()
            .map(|o| o.name.file_name().to_owned())
            .filter(|id| is_snapshot_id(id))
            .collect())
    }

    /// Reads and verifies a manifest: that `vault_key` (the vault's pinned key)
    /// signed it, and its entries' root.
    pub async fn manifest(
        &self,
        id: &str,
        vault_key: &PublicKey,
    ) -> Result<VerifiedManifest, BackupError> {
        if !is_snapshot_id(id) {
            return Err(BackupError::UnknownSnapshot(id.to_owned()));
        }
        let name = ObjectName::backup_snapshot(id);
        let bytes = match get_bytes_at_most(self.store.as_ref(), &name, MAX_MANIFEST_BYTES).await {
            Ok(found) => found.ok_or_else(|| BackupError::UnknownSnapshot(id.to_owned()))?,
            Err(StorageError::TooLarge(limit)) => {
                return Err(BackupError::BadManifest(format!(
                    "snapshot {id}: larger than any manifest ({limit} bytes)"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let manifest = Manifest::parse_and_verify(&bytes, vault_key)?;
        if manifest.snapshot != id {
            return Err(BackupError::BadManifest(format!(
                "snapshot {id} holds the manifest of {}",
                manifest.snapshot
            )));
        }
        Ok(manifest)
    }

    /// The newest snapshot, if any.
    pub async fn latest(
        &self,
        vault_key: &PublicKey,
    ) -> Result<Option<VerifiedManifest>, BackupError> {
        let (latest, skipped) = self.latest_verifying(vault_key).await?;
        for why in skipped {
            tracing::warn!(problem = %why, "backup: newer snapshot skipped");
        }
        Ok(latest)
    }

    /// The newest snapshot whose manifest verifies under `vault_key`, and what
    /// is wrong with each newer one: a file under `snapshots/` this vault did
    /// not sign, or one damaged, is no snapshot of it, and must not stop its
    /// backups (a snapshot id is a time, so a planted far-future one would
    /// otherwise always be the latest).
    pub async fn latest_verifying(
        &self,
        vault_key: &PublicKey,
    ) -> Result<(Option<VerifiedManifest>, Vec<String>), BackupError> {
        let mut skipped = Vec::new();
        for id in self.snapshot_ids().await?.iter().rev() {
            match self.manifest(id, vault_key).await {
                Ok(manifest) => return Ok((Some(manifest), skipped)),
                Err(e) if e.is_not_a_snapshot() => skipped.push(format!("snapshot {id}: {e}")),
                Err(e) => return Err(e),
            }
        }
        Ok((None, skipped))
    }

    /// Whole data objects present (`data/`): hash -> size.
    pub async fn data_objects(&self) -> Result<HashMap<String, u64>, BackupError> {
        self.content_objects(ObjectName::BACKUP_DATA_PREFIX).await
    }

    /// Packs present (`packs/`): hash -> size.
    pub async fn packs(&self) -> Result<HashMap<String, u64>, BackupError> {
        self.content_objects(ObjectName::BACKUP_PACKS_PREFIX).await
    }

    /// Manifest chunks present (`chunks/`): hash -> size.
    pub async fn chunks(&self) -> Result<HashMap<String, u64>, BackupError> {
        self.content_objects(ObjectName::BACKUP_CHUNKS_PREFIX).await
    }

    /// Content-addressed objects under `prefix`: hash -> size. Only names the
    /// repository could have written (64 lowercase hex digits) count.
    async fn content_objects(&self, prefix: &str) -> Result<HashMap<String, u64>, BackupError> {
        let listed = list_all(self.store.as_ref(), prefix, None).await?;
        Ok(listed
            .into_iter()
            .map(|o| (o.name.file_name().to_owned(), o.size))
            .filter(|(sha, _)| is_sha256_hex(sha))
            .collect())
    }

    /// Every relocation record (where prunes moved repacked blobs) that
    /// `vault_key` signed for its pack, and what is wrong with each other one
    /// (unreadable, too large, unsigned or signed by another key): the caller
    /// decides whether it can go on without them.
    pub async fn relocations(
        &self,
        vault_key: &PublicKey,
    ) -> Result<(Relocations, Vec<String>), BackupError> {
        let listed = self
            .content_objects(ObjectName::BACKUP_RELOCATIONS_PREFIX)
            .await?;
        let records: Vec<Result<ReadRecord, BackupError>> = futures::stream::iter(listed)
            .map(|(pack, size)| async move {
                let name = ObjectName::backup_relocation(&pack);
                if size > pack::MAX_RELOCATION_BYTES {
                    let why = format!("{name}: {size} bytes, more than any record");
                    return Ok((pack, Err(why)));
                }
                let limit = pack::MAX_RELOCATION_BYTES as usize;
                let record = match get_bytes_at_most(self.store.as_ref(), &name, limit).await {
                    Ok(Some(bytes)) => {
                        Relocation::parse(&bytes, &pack, vault_key).map_err(|e| e.to_string())
                    }
                    Ok(None) => Err(format!("{name} vanished")),
                    Err(e @ StorageError::TooLarge(_)) => Err(format!("{name}: {e}")),
                    Err(e) => return Err(e.into()),
                };
                Ok((pack, record))
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut trusted = HashMap::new();
        let mut refused = Vec::new();
        for record in records {
            match record? {
                (pack, Ok(record)) => {
                    trusted.insert(pack, record);
                }
                (_, Err(why)) => refused.push(why),
            }
        }
        refused.sort();
        Ok((Relocations::new(trusted), refused))
    }

    /// A manifest's entries, in name order, a chunk at a time (a v1 manifest's
    /// all at once). Each v2 chunk must hash to the value the manifest signed
    /// and hold the count it says; the entries must ascend across chunks, and
    /// at the end their Merkle root and total size must be the manifest's: a
    /// failed check is the stream's last item.
    pub fn entries<'a>(
        &'a self,
        manifest: &'a VerifiedManifest,
    ) -> BoxStream<'a, Result<Vec<Entry>, BackupError>> {
        let chunks = match manifest.body() {
            Body::Inline(entries) => {
                return futures::stream::once(async move { Ok(entries.clone()) }).boxed()
            }
            Body::Chunks(chunks) => chunks,
        };
        let fetched = futures::stream::iter(chunks)
            .map(move |chunk| self.read_chunk(chunk))
            .buffered(CHUNKS_AHEAD);
        let check = ChunkCheck {
            frontier: Frontier::new(),
            last: None,
            bytes: 0,
        };
        futures::stream::unfold(Some((fetched.boxed(), check)), move |state| {
            next_checked(state, manifest)
        })
        .boxed()
    }

    /// Reads one chunk and checks it against its reference.
    async fn read_chunk(&self, chunk: &ChunkRef) -> Result<Vec<Entry>, BackupError> {
        let mismatch = |problem: &str| BackupError::Mismatch {
            name: format!("manifest chunk {}", chunk.sha256),
            problem: problem.to_owned(),
        };
        let name = ObjectName::backup_chunk(&chunk.sha256);
        let bytes = match get_bytes_at_most(
            self.store.as_ref(),
            &name,
            super::chunk::MAX_CHUNK_BYTES,
        )
        .await
        {
            Ok(found) => found.ok_or_else(|| mismatch("missing from the repository"))?,
            Err(StorageError::TooLarge(_)) => return Err(mismatch("larger than any chunk")),
            Err(e) => return Err(e.into()),
        };
        if super::sha256_hex(&bytes) != chunk.sha256 {
            return Err(mismatch("bytes do not match the manifest's SHA-256"));
        }
        let entries = super::chunk::decode(&bytes)?;
        if entries.len() as u64 != chunk.entries {
            return Err(mismatch(
                "holds another number of entries than the manifest says",
            ));
        }
        Ok(entries)
    }

    /// Snapshots under legal hold.
    pub async fn holds(&self) -> Result<BTreeSet<String>, BackupError> {
        let listed = list_all(self.store.as_ref(), ObjectName::BACKUP_HOLDS_PREFIX, None).await?;
        Ok(listed
            .iter()
            .map(|o| o.name.file_name().to_owned())
            .collect())
    }

    /// Puts a legal hold on a snapshot (idempotent).
    pub async fn hold(&self, id: &str, vault_key: &PublicKey) -> Result<(), BackupError> {
        self.manifest(id, vault_key).await?;
        let record = serde_json::json!({ "format": 1, "held_at": OffsetDateTime::now_utc().unix_timestamp() });
        match self
            .store
            .put_new_bytes(
                &ObjectName::backup_hold(id),
                Bytes::from(record.to_string()),
            )
            .await
        {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Releases a legal hold (idempotent). On a locked bucket the hold object itself
    /// is under retention; its deletion then leaves only a delete marker, which is
    /// what releases it.
    pub async fn release(&self, id: &str) -> Result<(), BackupError> {
        if !is_snapshot_id(id) {
            return Err(BackupError::UnknownSnapshot(id.to_owned()));
        }
        self.store.delete(&ObjectName::backup_hold(id)).await?;
        Ok(())
    }

    /// Summaries of every snapshot, oldest first (manifests that fail verification
    /// are errors: listing is also a check).
    pub async fn summaries(
        &self,
        vault_key: &PublicKey,
    ) -> Result<Vec<SnapshotSummary>, BackupError> {
        let holds = self.holds().await?;
        let mut out = Vec::new();
        for id in self.snapshot_ids().await? {
            let m = self.manifest(&id, vault_key).await?;
            out.push(SnapshotSummary {
                held: holds.contains(&id),
                id,
                created_at: m.created_at,
                objects: m.objects,
                bytes: m.bytes,
                bytes_added: m.bytes_added,
                tenants: m.tenants.clone(),
                locked_until: m.lock.as_ref().map(|l| l.retain_until),
            });
        }
        Ok(out)
    }
}

/// The state of [`Repository::entries`] between chunks.
type ChunkState<'a> = Option<(BoxStream<'a, Result<Vec<Entry>, BackupError>>, ChunkCheck)>;

/// The next chunk of a manifest, checked; at the end, the checks over all.
async fn next_checked<'a>(
    state: ChunkState<'a>,
    manifest: &VerifiedManifest,
) -> Option<(Result<Vec<Entry>, BackupError>, ChunkState<'a>)> {
    let (mut fetched, mut check) = state?;
    match fetched.next().await {
        Some(Ok(entries)) => match check.add(&entries) {
            Ok(()) => Some((Ok(entries), Some((fetched, check)))),
            Err(e) => Some((Err(e), None)),
        },
        Some(Err(e)) => Some((Err(e), None)),
        None => match check.finish(manifest) {
            Ok(()) => None,
            Err(e) => Some((Err(e), None)),
        },
    }
}

/// Chunks read ahead of the one being used.
const CHUNKS_AHEAD: usize = 2;

/// The checks across a v2 manifest's chunks.
struct ChunkCheck {
    frontier: Frontier,
    last: Option<String>,
    bytes: u64,
}

impl ChunkCheck {
    fn add(&mut self, entries: &[Entry]) -> Result<(), BackupError> {
        if let (Some(last), Some(first)) = (&self.last, entries.first()) {
            if first.name <= *last {
                return Err(BackupError::BadManifest("chunks not in name order".into()));
            }
        }
        for entry in entries {
            self.frontier.push(entry.leaf());
            self.bytes += entry.size;
        }
        if let Some(last) = entries.last() {
            self.last = Some(last.name.clone());
        }
        Ok(())
    }

    fn finish(&self, manifest: &VerifiedManifest) -> Result<(), BackupError> {
        if hex::encode(self.frontier.root()) != manifest.merkle_root {
            return Err(BackupError::BadManifest(format!(
                "snapshot {}: Merkle root does not match the entries",
                manifest.snapshot
            )));
        }
        if self.bytes != manifest.bytes {
            return Err(BackupError::BadManifest(format!(
                "snapshot {}: entries do not add up to its size",
                manifest.snapshot
            )));
        }
        Ok(())
    }
}

fn check_key(config: &RepoConfig, vault_key: &PublicKey) -> Result<(), BackupError> {
    if config.vault_key == vault_key.to_hex() {
        Ok(())
    } else {
        Err(BackupError::ForeignRepository {
            recorded: short_key(&config.vault_key),
            expected: short_key(&vault_key.to_hex()),
        })
    }
}

/// The first 16 hex digits of a public key, for messages.
fn short_key(hex: &str) -> String {
    hex.chars().take(16).collect()
}

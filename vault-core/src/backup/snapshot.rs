//! Taking a snapshot (repository format v2): page through the vault's objects
//! in name order beside the previous snapshot's entries, pack the new small
//! objects, keep large ones whole, write the entries in chunks, then the signed
//! manifest last.
//!
//! Incremental by construction: objects that never change once written (bodies,
//! facts, tombstones, audit segments and checkpoints) keep the previous
//! snapshot's entry, pack and offset when their size is unchanged, so an
//! unchanged document is not even read again; everything else (key records,
//! which rewraps replace; tenant and credential records) is re-read and reuses
//! the previous copy when its hash is unchanged.
//!
//! Bounded memory whatever the vault's size: one page of the listing, one chunk
//! of the previous manifest, the objects in flight, the pack being filled and
//! [`PACKS_IN_FLIGHT`] packs going up, and the chunks waiting for their pack.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vault_crypto::signing::SigningKey;
use vault_crypto::TenantId;

use vault_crypto::merkle::Frontier;

use super::chunk;
use super::manifest::{
    new_snapshot_id, Body, ChunkRef, Entry, Location, LockInfo, ManifestV2, SnapshotInfo,
    VerifiedManifest,
};
use super::pack::{self, PackBuilder, Relocations, SealedPack};
use super::repo::Repository;
use super::{sha256_hex, BackupError, Progress};
use crate::storage::retry::retry_transient;
use crate::storage::{
    collect, get_bytes_at_most, list_all, ObjectInfo, ObjectName, ObjectStore, StorageError,
};

/// Objects up to this size go into packs (read once into memory, hashed and
/// appended); larger ones stay whole under `data/<sha256>`, hashed in a
/// streaming pass first and copied in a second one.
const PACKED_LIMIT: u64 = 8 << 20;
/// Objects read at once.
const CONCURRENCY: usize = 32;
/// Packs and chunks being written at once (each pack about 16 MiB in memory).
pub const PACKS_IN_FLIGHT: usize = 4;

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

/// Whether a whole-vault backup copies the object named `name`. The key custody
/// is never in a backup (see `ObjectName::CUSTODY_PREFIX`). Nor are leases,
/// published jobs and the leftovers collector's record: they are about the
/// running replicas. Nor index snapshots: a cache, rebuilt from what is backed up.
fn is_backed_up(name: &str) -> bool {
    !name.starts_with(ObjectName::CUSTODY_PREFIX)
        && !name.starts_with(ObjectName::LEASES_PREFIX)
        && !name.starts_with(ObjectName::JOBS_PREFIX)
        && !name.starts_with(ObjectName::LEFTOVERS_PREFIX)
        && !name.starts_with(ObjectName::INDEX_SNAPSHOTS_PREFIX)
}

/// The objects to back up, in name order, a page at a time: the whole vault's
/// listing as the store streams it, or a tenant selection's objects (listed
/// whole: a selection is a few tenants).
enum Listing<'a> {
    Pages(BoxStream<'a, Result<Vec<ObjectInfo>, StorageError>>),
    Selected(Option<Vec<ObjectInfo>>),
}

impl<'a> Listing<'a> {
    async fn new(
        store: &'a dyn ObjectStore,
        selection: &Selection,
    ) -> Result<Listing<'a>, BackupError> {
        if selection.tenants.is_empty() {
            return Ok(Listing::Pages(store.list_pages("", None)));
        }
        let mut selected = list_selection(store, selection).await?;
        selected.sort_by(|a, b| a.name.cmp(&b.name));
        selected.dedup_by(|a, b| a.name == b.name);
        Ok(Listing::Selected(Some(selected)))
    }

    async fn next_page(&mut self) -> Result<Option<Vec<ObjectInfo>>, BackupError> {
        match self {
            Listing::Selected(all) => Ok(all.take()),
            Listing::Pages(pages) => {
                let Some(mut page) = pages.try_next().await? else {
                    return Ok(None);
                };
                page.retain(|info| is_backed_up(info.name.as_str()));
                Ok(Some(page))
            }
        }
    }
}

/// Objects of the store that belong to a tenant selection.
async fn list_selection(
    store: &dyn ObjectStore,
    selection: &Selection,
) -> Result<Vec<ObjectInfo>, BackupError> {
    let mut out = Vec::new();
    // Shared by every tenant: operators (their names and second factors too),
    // the audit signing key, the system log.
    for prefix in [
        ObjectName::OPERATORS_PREFIX,
        ObjectName::OPERATOR_NAMES_PREFIX,
        ObjectName::OPERATOR_MFA_PREFIX,
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
    Ok(out)
}

/// The previous snapshot's entries, walked in name order beside the listing.
struct Previous<'a> {
    entries: Option<BoxStream<'a, Result<Vec<Entry>, BackupError>>>,
    current: VecDeque<Entry>,
}

impl Previous<'_> {
    /// The previous entry named `name`, if any (names come in ascending order).
    async fn find(&mut self, name: &str) -> Result<Option<Entry>, BackupError> {
        loop {
            while let Some(front) = self.current.front() {
                match front.name.as_str().cmp(name) {
                    std::cmp::Ordering::Less => {
                        self.current.pop_front();
                    }
                    std::cmp::Ordering::Equal => return Ok(self.current.pop_front()),
                    std::cmp::Ordering::Greater => return Ok(None),
                }
            }
            let Some(stream) = self.entries.as_mut() else {
                return Ok(None);
            };
            match stream.next().await {
                Some(chunk) => self.current = chunk?.into(),
                None => {
                    self.entries = None;
                    return Ok(None);
                }
            }
        }
    }
}

/// One object after reading: where its entry points, or its bytes to pack.
enum Item {
    /// It vanished since it was listed (a document deleted meanwhile).
    Vanished,
    /// Its entry, located (reused, or copied whole).
    Located(Entry),
    /// A new small object: to be appended to the pack being filled.
    ToPack {
        name: String,
        sha256: [u8; 32],
        bytes: Bytes,
    },
}

/// Shared state of one backup run.
///
/// Packs, chunks and whole objects are written deferred (no fsync each) and made
/// durable by one `sync` before the manifest is written. An object the
/// repository holds is relied on only when it is *trusted*: named by the
/// previous manifest (so it was durable before that manifest), or written by
/// this run. Other objects found there are leftovers of an interrupted run,
/// possibly torn by a crash: they are hashed before use and replaced when wrong.
struct Run<'a> {
    source: &'a dyn ObjectStore,
    repo: &'a Repository,
    /// Packs present when the run began.
    packs_present: HashSet<String>,
    /// Where prunes moved repacked blobs.
    relocations: Relocations,
    /// Blobs of packs written after the previous snapshot (an interrupted
    /// run's), checked whole: hash -> (pack, offset).
    leftovers: HashMap<[u8; 32], (String, u64)>,
    /// Whole data objects present when the run began, not yet checked.
    data_present: Mutex<HashSet<String>>,
    /// Whole data objects known good.
    data_trusted: Mutex<HashSet<String>>,
    /// Chunks the previous manifest names.
    parent_chunks: HashSet<String>,
    /// What this run wrote (the rest its entries name is reused: Object Lock).
    written: Arc<Mutex<HashSet<ObjectName>>>,
    bytes_added: Mutex<u64>,
    progress: &'a dyn Progress,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Run<'_> {
    /// Whether the previous entry's copy can be named again.
    fn reusable(&self, previous: &Entry) -> bool {
        match &previous.location {
            Location::Packed { pack, .. } => self.packs_present.contains(pack),
            Location::Whole => {
                if locked(&self.data_trusted).contains(&previous.sha256) {
                    return true;
                }
                // Named by the previous manifest and present: durable before it.
                if locked(&self.data_present).remove(&previous.sha256) {
                    locked(&self.data_trusted).insert(previous.sha256.clone());
                    return true;
                }
                false
            }
        }
    }

    fn added(&self, bytes: u64, name: ObjectName) {
        *locked(&self.bytes_added) += bytes;
        locked(&self.written).insert(name);
    }

    /// One listed object.
    async fn object(
        &self,
        info: &ObjectInfo,
        previous: Option<Entry>,
    ) -> Result<Item, BackupError> {
        let name = info.name.as_str();
        // A reused entry names where its object is now.
        let previous = match previous {
            Some(mut entry) => {
                entry.location = self.relocations.locate(&entry.location)?;
                Some(entry)
            }
            None => None,
        };
        if let Some(previous) = &previous {
            if is_immutable(name) && previous.size == info.size && self.reusable(previous) {
                return Ok(Item::Located(previous.clone()));
            }
        }
        let result = if info.size <= PACKED_LIMIT {
            self.small(info, previous).await
        } else {
            self.large(info).await.map(Item::Located)
        };
        match result {
            Err(BackupError::Storage(StorageError::NotFound(_))) => Ok(Item::Vanished),
            other => other,
        }
    }

    async fn small(&self, info: &ObjectInfo, previous: Option<Entry>) -> Result<Item, BackupError> {
        let stream = self.source.get(&info.name).await?;
        let bytes = collect(stream, PACKED_LIMIT as usize).await?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(previous) = previous {
            if previous.sha256 == hex::encode(sha256)
                && previous.size == bytes.len() as u64
                && self.reusable(&previous)
            {
                return Ok(Item::Located(previous));
            }
        }
        if let Some((pack, offset)) = self.leftovers.get(&sha256) {
            return Ok(Item::Located(Entry {
                name: info.name.as_str().to_owned(),
                size: bytes.len() as u64,
                sha256: hex::encode(sha256),
                location: Location::Packed {
                    pack: pack.clone(),
                    offset: *offset,
                },
            }));
        }
        Ok(Item::ToPack {
            name: info.name.as_str().to_owned(),
            sha256,
            bytes,
        })
    }

    /// Whether the repository holds a good whole copy of `sha`: trusted, or a
    /// leftover that hashes right (a wrong one is deleted, to be written again).
    async fn usable(&self, sha: &str) -> Result<bool, BackupError> {
        if locked(&self.data_trusted).contains(sha) {
            return Ok(true);
        }
        if !locked(&self.data_present).remove(sha) {
            return Ok(false);
        }
        let name = ObjectName::backup_data(sha);
        let good = match self.repo.store.get(&name).await {
            Ok(stream) => matches!(hash_stream(stream).await, Ok((actual, _)) if actual == sha),
            Err(StorageError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if good {
            locked(&self.data_trusted).insert(sha.to_owned());
        } else {
            self.repo.store.delete(&name).await?;
        }
        Ok(good)
    }

    async fn large(&self, info: &ObjectInfo) -> Result<Entry, BackupError> {
        let (sha, size) = hash_stream(self.source.get(&info.name).await?).await?;
        if !self.usable(&sha).await? {
            // Copy while hashing again: the bytes must be the ones hashed.
            let hasher = Arc::new(Mutex::new(Sha256::new()));
            let tee = Arc::clone(&hasher);
            let stream = self.source.get(&info.name).await?.map_ok(move |chunk| {
                locked(&tee).update(&chunk);
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
                    let copied = std::mem::take(&mut *locked(&hasher)).finalize();
                    if hex::encode(copied) != sha {
                        // It changed between the passes: never keep a misnamed object.
                        self.repo.store.delete(&target).await?;
                        return Err(BackupError::Mismatch {
                            name: info.name.to_string(),
                            problem: "changed while being backed up".into(),
                        });
                    }
                    crate::failpoints::crash_point(crate::failpoints::BACKUP_AFTER_DATA);
                    locked(&self.data_trusted).insert(sha.clone());
                    self.added(size, target);
                }
                Err(StorageError::AlreadyExists(_)) => {
                    locked(&self.data_trusted).insert(sha.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Entry {
            name: info.name.as_str().to_owned(),
            size,
            sha256: sha,
            location: Location::Whole,
        })
    }
}

/// Stores a content-addressed object (pack or chunk) create-only. One already
/// there is kept when `trusted` or when its bytes hash to its name (a
/// leftover of an interrupted run); else it is replaced. Returns whether it
/// was written.
pub(super) async fn put_content(
    store: &dyn ObjectStore,
    name: &ObjectName,
    sha: &str,
    bytes: Bytes,
    trusted: bool,
) -> Result<bool, BackupError> {
    retry_transient(name.as_str(), BackupError::is_transient, |_| {
        let bytes = bytes.clone();
        async move {
            let body = |b: Bytes| -> crate::storage::ByteStream {
                Box::pin(futures::stream::once(async move { Ok(b) }))
            };
            match store.put_new_deferred(name, body(bytes.clone())).await {
                Ok(_) => Ok(true),
                Err(StorageError::AlreadyExists(_)) => {
                    if trusted {
                        return Ok(false);
                    }
                    let good = match store.get_bytes(name).await? {
                        Some(existing) => sha256_hex(&existing) == sha,
                        None => false,
                    };
                    if good {
                        return Ok(false);
                    }
                    store.delete(name).await?;
                    store.put_new_deferred(name, body(bytes)).await?;
                    Ok(true)
                }
                Err(e) => Err(e.into()),
            }
        }
    })
    .await
}

/// The entries in name order, packed and chunked as they come.
struct Writer<'a> {
    run: &'a Run<'a>,
    pack: PackBuilder,
    /// Entries of the chunk being filled.
    open: Vec<Entry>,
    /// Closed chunks whose last pack is not sealed yet.
    waiting: Vec<Vec<Entry>>,
    chunks: Vec<ChunkRef>,
    frontier: Frontier,
    objects: u64,
    bytes: u64,
    /// Packs, chunks and whole objects the entries name.
    named: HashSet<ObjectName>,
    uploads: tokio::task::JoinSet<Result<(), BackupError>>,
}

/// The pack field of entries whose pack is still being filled.
const UNSEALED: &str = "";

impl Writer<'_> {
    async fn push(&mut self, item: Item) -> Result<(), BackupError> {
        let entry = match item {
            Item::Vanished => return Ok(()),
            Item::Located(entry) => entry,
            Item::ToPack {
                name,
                sha256,
                bytes,
            } => {
                let offset = self.pack.add(sha256, &bytes);
                let entry = Entry {
                    name,
                    size: bytes.len() as u64,
                    sha256: hex::encode(sha256),
                    location: Location::Packed {
                        pack: UNSEALED.to_owned(),
                        offset,
                    },
                };
                *locked(&self.run.bytes_added) += entry.size;
                entry
            }
        };
        match &entry.location {
            Location::Whole => {
                self.named.insert(ObjectName::backup_data(&entry.sha256));
            }
            // The pack being filled is named when it is sealed.
            Location::Packed { pack, .. } if pack == UNSEALED => {}
            Location::Packed { pack, .. } => {
                self.named.insert(ObjectName::backup_pack(pack));
            }
        }
        self.frontier.push(entry.leaf());
        self.objects += 1;
        self.bytes += entry.size;
        self.open.push(entry);
        let last = self
            .open
            .last()
            .map(|e| chunk::ends_after(e, self.open.len()));
        if last == Some(true) {
            let closed = std::mem::take(&mut self.open);
            self.waiting.push(closed);
        }
        if self.pack.is_full() {
            self.seal().await?;
        }
        self.write_ready_chunks().await
    }

    /// Seals the pack being filled, names it in the entries, and sends it up.
    async fn seal(&mut self) -> Result<(), BackupError> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let sealed: SealedPack = std::mem::take(&mut self.pack).seal();
        for entry in self
            .waiting
            .iter_mut()
            .flatten()
            .chain(self.open.iter_mut())
        {
            if let Location::Packed { pack, .. } = &mut entry.location {
                if pack == UNSEALED {
                    pack.clone_from(&sealed.sha256);
                }
            }
        }
        let name = ObjectName::backup_pack(&sealed.sha256);
        self.named.insert(name.clone());
        // A pack of the same name already there is a leftover of an
        // interrupted run (the same objects in the same order), never trusted.
        let trusted = false;
        let store = Arc::clone(&self.run.repo.store);
        let written = Arc::clone(&self.run.written);
        let sha = sealed.sha256;
        let bytes = sealed.bytes;
        self.spawn(async move {
            if put_content(store.as_ref(), &name, &sha, bytes, trusted).await? {
                crate::failpoints::crash_point(crate::failpoints::BACKUP_AFTER_DATA);
                locked(&written).insert(name);
            }
            Ok(())
        })
        .await
    }

    /// Writes the closed chunks whose entries are all located.
    async fn write_ready_chunks(&mut self) -> Result<(), BackupError> {
        while let Some(first) = self.waiting.first() {
            let ready = first
                .iter()
                .all(|e| !matches!(&e.location, Location::Packed { pack, .. } if pack == UNSEALED));
            if !ready {
                return Ok(());
            }
            let entries = self.waiting.remove(0);
            self.write_chunk(entries).await?;
        }
        Ok(())
    }

    async fn write_chunk(&mut self, entries: Vec<Entry>) -> Result<(), BackupError> {
        let (bytes, sha) = chunk::encode(&entries)?;
        self.chunks.push(ChunkRef {
            sha256: sha.clone(),
            entries: entries.len() as u64,
        });
        let name = ObjectName::backup_chunk(&sha);
        self.named.insert(name.clone());
        let trusted = self.run.parent_chunks.contains(&sha);
        let store = Arc::clone(&self.run.repo.store);
        let written = Arc::clone(&self.run.written);
        self.spawn(async move {
            if put_content(store.as_ref(), &name, &sha, Bytes::from(bytes), trusted).await? {
                locked(&written).insert(name);
            }
            Ok(())
        })
        .await
    }

    /// Runs a write in the background, at most [`PACKS_IN_FLIGHT`] at once.
    async fn spawn(
        &mut self,
        write: impl std::future::Future<Output = Result<(), BackupError>> + Send + 'static,
    ) -> Result<(), BackupError> {
        while self.uploads.len() >= PACKS_IN_FLIGHT {
            self.join_one().await?;
        }
        self.uploads.spawn(write);
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), BackupError> {
        match self.uploads.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(BackupError::Internal(format!("pack upload: {e}"))),
            None => Ok(()),
        }
    }

    /// Seals the last pack, writes the last chunks, waits for every write.
    async fn finish(&mut self) -> Result<(), BackupError> {
        self.seal().await?;
        if !self.open.is_empty() {
            let last = std::mem::take(&mut self.open);
            self.waiting.push(last);
        }
        self.write_ready_chunks().await?;
        while !self.uploads.is_empty() {
            self.join_one().await?;
        }
        Ok(())
    }
}

/// Leftover packs read at most (the newest): bounds the memory their blobs take.
const LEFTOVER_PACKS: usize = 64;

/// The blobs of packs written after the previous snapshot was (or, with none,
/// of every pack): what an interrupted run copied, so a run again reuses it
/// instead of copying it once more. Each pack is read whole and must hash to
/// its name, and each blob to its record (a crash may have torn one); a pack
/// that does not is not used (and never deleted here: it may be a prune's).
async fn leftover_blobs(
    repo: &Repository,
    parent: Option<&VerifiedManifest>,
) -> Result<HashMap<[u8; 32], (String, u64)>, BackupError> {
    let mut packs: Vec<ObjectInfo> =
        list_all(repo.store.as_ref(), ObjectName::BACKUP_PACKS_PREFIX, None)
            .await?
            .into_iter()
            .filter(|info| super::manifest::is_sha256_hex(info.name.file_name()))
            .filter(|info| match (parent, info.modified) {
                (None, _) => true,
                (Some(parent), Some(modified)) => modified > parent.finished_at,
                (Some(_), None) => false,
            })
            .collect();
    packs.sort_by_key(|info| std::cmp::Reverse(info.modified));
    packs.truncate(LEFTOVER_PACKS);
    let checked: Vec<Option<(String, Vec<pack::PackedBlob>)>> = futures::stream::iter(packs)
        .map(|info| async move {
            let sha = info.name.file_name().to_owned();
            let bytes = get_bytes_at_most(
                repo.store.as_ref(),
                &info.name,
                pack::MAX_PACK_BYTES as usize,
            )
            .await
            .ok()
            .flatten()?;
            let blobs = pack::check(&bytes, &sha).ok()?;
            Some((sha, blobs))
        })
        .buffer_unordered(PACKS_IN_FLIGHT)
        .collect()
        .await;
    let mut out = HashMap::new();
    for (pack, blobs) in checked.into_iter().flatten() {
        for blob in blobs {
            out.insert(blob.sha256, (pack.clone(), blob.offset));
        }
    }
    Ok(out)
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

/// Takes a snapshot and returns what its manifest says.
pub async fn run(
    source: Source<'_>,
    repo: &Repository,
    selection: &Selection,
    progress: &dyn Progress,
) -> Result<SnapshotInfo, BackupError> {
    let vault_key = source.signer.public_key();
    repo.init_or_check(&vault_key).await?;
    let created_at = OffsetDateTime::now_utc();
    let parent: Option<VerifiedManifest> = repo.latest(&vault_key).await?;
    let parent_chunks: HashSet<String> = match parent.as_ref().map(|p| p.body()) {
        Some(Body::Chunks(chunks)) => chunks.iter().map(|c| c.sha256.clone()).collect(),
        _ => HashSet::new(),
    };
    let packs_present: HashSet<String> = repo.packs().await?.into_keys().collect();
    // A record this vault did not sign is not followed: the entries it would
    // move are read from the vault again, as if their pack were gone.
    let (relocations, refused) = repo.relocations(&vault_key).await?;
    for why in refused {
        tracing::warn!(problem = %why, "backup: relocation record not trusted");
    }
    let leftovers = leftover_blobs(repo, parent.as_ref()).await?;
    let data_present: HashSet<String> = repo.data_objects().await?.into_keys().collect();
    // The size is known only when the listing is done: the previous snapshot's
    // is the estimate.
    progress.start(
        "backup",
        parent.as_ref().map_or(0, |p| p.objects),
        parent.as_ref().map_or(0, |p| p.bytes),
    );
    let run = Run {
        source: source.store,
        repo,
        packs_present,
        relocations,
        leftovers,
        data_present: Mutex::new(data_present),
        data_trusted: Mutex::new(HashSet::new()),
        parent_chunks,
        written: Arc::new(Mutex::new(HashSet::new())),
        bytes_added: Mutex::new(0),
        progress,
    };
    let mut writer = Writer {
        run: &run,
        pack: PackBuilder::new(),
        open: Vec::new(),
        waiting: Vec::new(),
        chunks: Vec::new(),
        frontier: Frontier::new(),
        objects: 0,
        bytes: 0,
        named: HashSet::new(),
        uploads: tokio::task::JoinSet::new(),
    };
    let mut previous = Previous {
        entries: parent.as_ref().map(|p| repo.entries(p)),
        current: VecDeque::new(),
    };
    let mut listing = Listing::new(source.store, selection).await?;
    let result: Result<(), BackupError> = async {
        while let Some(page) = listing.next_page().await? {
            let mut jobs = Vec::with_capacity(page.len());
            for info in page {
                let before = previous.find(info.name.as_str()).await?;
                jobs.push((info, before));
            }
            let run = &run;
            let mut items = futures::stream::iter(jobs)
                .map(|(info, before)| async move {
                    let item =
                        retry_transient(info.name.as_str(), BackupError::is_transient, |_| {
                            run.object(&info, before.clone())
                        })
                        .await;
                    run.progress.advance(info.size);
                    item
                })
                .buffered(CONCURRENCY);
            while let Some(item) = items.next().await {
                writer.push(item?).await?;
            }
        }
        writer.finish().await
    }
    .await;
    if let Err(e) = result {
        // Let writes already started end before the error is reported.
        writer.uploads.shutdown().await;
        return Err(e);
    }
    progress.finish();
    if repo.lock.is_some() {
        // Reused objects were locked by earlier snapshots, until earlier: lock them
        // as long as this snapshot's own, or its retention would be a claim only.
        let written = std::mem::take(&mut *locked(&run.written));
        let store = &repo.store;
        let reused: Vec<ObjectName> = writer
            .named
            .iter()
            .filter(|n| !written.contains(*n))
            .cloned()
            .collect();
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
    let manifest = ManifestV2 {
        snapshot: new_snapshot_id(created_at),
        vault_key: vault_key.to_hex(),
        created_at,
        finished_at: OffsetDateTime::now_utc(),
        source: source.label,
        tenants: selection.tenants.iter().map(|t| t.to_string()).collect(),
        parent: parent.as_ref().map(|p| p.snapshot.clone()),
        lock,
        bytes_added: *locked(&run.bytes_added),
        objects: writer.objects,
        bytes: writer.bytes,
        merkle_root: hex::encode(writer.frontier.root()),
        chunks: std::mem::take(&mut writer.chunks),
    };
    // Every pack, chunk and object the manifest names is durable before it is.
    repo.store.sync().await?;
    let signed = manifest.sign(source.signer)?;
    repo.store
        .put_new_bytes(
            &ObjectName::backup_snapshot(&manifest.snapshot),
            Bytes::from(signed),
        )
        .await?;
    crate::failpoints::crash_point(crate::failpoints::BACKUP_AFTER_MANIFEST);
    Ok(manifest.into_info())
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
        let mut listing = Listing::new(&store, &Selection::default()).await.unwrap();
        let mut listed = Vec::new();
        while let Some(page) = listing.next_page().await.unwrap() {
            listed.extend(page.into_iter().map(|info| info.name.as_str().to_owned()));
        }
        assert_eq!(listed, [kept.as_str()]);
    }

    fn signer() -> SigningKey {
        SigningKey::from_seed(&Key256::from_bytes([3; 32]))
    }

    async fn backup(source: &FsStore, repo: &Repository) -> SnapshotInfo {
        run(
            Source {
                store: source,
                label: "fs".into(),
                signer: &signer(),
            },
            repo,
            &Selection::default(),
            &NoProgress,
        )
        .await
        .unwrap()
    }

    async fn entries(repo: &Repository, id: &str) -> Vec<Entry> {
        let manifest = repo.manifest(id, &signer().public_key()).await.unwrap();
        let mut out = Vec::new();
        let mut chunks = repo.entries(&manifest);
        while let Some(chunk) = chunks.next().await {
            out.extend(chunk.unwrap());
        }
        out
    }

    /// A pack left torn by a crash (wrong bytes under its hash name) is found,
    /// replaced, and never named by a manifest as it was.
    #[tokio::test]
    async fn a_torn_leftover_pack_is_replaced_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let source = FsStore::open(&dir.path().join("vault")).await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let name = ObjectName::audit_segment(&tenant, 0);
        let content = Bytes::from_static(b"sealed audit segment bytes");
        source.put_new_bytes(&name, content.clone()).await.unwrap();
        let repo = Repository::open(&StoreLocation::Fs(dir.path().join("repo")), 0, false)
            .await
            .unwrap();
        // The pack this backup writes, as an interrupted run would have left it.
        let mut expected = PackBuilder::new();
        expected.add(Sha256::digest(&content).into(), &content);
        let expected = expected.seal();
        repo.store
            .put_new_bytes(
                &ObjectName::backup_pack(&expected.sha256),
                Bytes::from_static(b"torn"),
            )
            .await
            .unwrap();
        let info = backup(&source, &repo).await;
        assert_eq!(info.objects, 1);
        let stored = repo
            .store
            .get_bytes(&ObjectName::backup_pack(&expected.sha256))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, expected.bytes);
        let entries = entries(&repo, &info.snapshot).await;
        assert_eq!(entries[0].sha256, sha256_hex(&content));
        assert_eq!(
            entries[0].location,
            Location::Packed {
                pack: expected.sha256.clone(),
                offset: crate::backup::pack::HEADER_LEN
            }
        );
        assert_eq!(info.bytes_added, content.len() as u64);
    }

    /// Small objects go into packs, a large one stays whole; a second backup of
    /// an unchanged vault copies nothing and names the same packs and chunks.
    #[tokio::test]
    async fn small_objects_are_packed_and_an_unchanged_vault_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = FsStore::open(&dir.path().join("vault")).await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        for i in 0..300u32 {
            let doc = vault_crypto::DocumentId::random();
            let _ = i;
            for (name, len) in [
                (ObjectName::doc_body(&tenant, &doc), 3000),
                (ObjectName::doc_key(&tenant, &doc), 300),
                (ObjectName::doc_meta(&tenant, &doc), 200),
            ] {
                let bytes: Vec<u8> = (0..len).map(|_| rand::random()).collect();
                source
                    .put_new_bytes(&name, Bytes::from(bytes))
                    .await
                    .unwrap();
            }
        }
        let large = ObjectName::audit_segment(&tenant, 0);
        let large_bytes: Vec<u8> = (0..(PACKED_LIMIT + 1)).map(|i| i as u8).collect();
        source
            .put_new_bytes(&large, Bytes::from(large_bytes.clone()))
            .await
            .unwrap();
        let repo = Repository::open(&StoreLocation::Fs(dir.path().join("repo")), 0, false)
            .await
            .unwrap();
        let first = backup(&source, &repo).await;
        assert_eq!(first.objects, 901);
        assert_eq!(repo.packs().await.unwrap().len(), 1);
        assert_eq!(repo.data_objects().await.unwrap().len(), 1);
        assert_eq!(repo.chunks().await.unwrap().len(), 1);
        let listed = entries(&repo, &first.snapshot).await;
        let whole: Vec<&Entry> = listed
            .iter()
            .filter(|e| e.location == Location::Whole)
            .collect();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].name, large.as_str());

        let second = backup(&source, &repo).await;
        assert_eq!(second.bytes_added, 0);
        assert_eq!(second.merkle_root, first.merkle_root);
        assert_eq!(repo.packs().await.unwrap().len(), 1);
        assert_eq!(repo.chunks().await.unwrap().len(), 1);
        assert_eq!(entries(&repo, &second.snapshot).await, listed);
    }

    /// A v2 backup into a v1 repository names the v1 objects it already holds
    /// instead of copying them again.
    #[tokio::test]
    async fn a_v2_backup_reuses_a_v1_repositorys_objects() {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("repo");
        crate::backup::tests::copy_v1_fixture(&repo_dir);
        let repo = Repository::open(&StoreLocation::Fs(repo_dir), 0, false)
            .await
            .unwrap();
        let fixture_key = SigningKey::from_seed(&Key256::from_bytes([7; 32]));
        let v1 = repo
            .latest(&fixture_key.public_key())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v1.format, 1);
        // The vault as the v1 snapshot saw it.
        let source = FsStore::open(&dir.path().join("vault")).await.unwrap();
        let mut chunks = repo.entries(&v1);
        while let Some(chunk) = chunks.next().await {
            for entry in chunk.unwrap() {
                let bytes = repo
                    .store
                    .get_bytes(&ObjectName::backup_data(&entry.sha256))
                    .await
                    .unwrap()
                    .unwrap();
                source
                    .put_new_bytes(&ObjectName::parse(&entry.name).unwrap(), bytes)
                    .await
                    .unwrap();
            }
        }
        drop(chunks);
        let v2 = run(
            Source {
                store: &source,
                label: "fs".into(),
                signer: &fixture_key,
            },
            &repo,
            &Selection::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(v2.format, 2);
        assert_eq!(v2.parent.as_deref(), Some(v1.snapshot.as_str()));
        assert_eq!(v2.merkle_root, v1.merkle_root);
        // Immutable objects (bodies, facts, the tombstone) are reused whole;
        // the key and tenant records are re-read, and match, so reused too.
        assert_eq!(v2.bytes_added, 0);
        assert!(repo.packs().await.unwrap().is_empty());
    }
}

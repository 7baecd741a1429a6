//! Index snapshots in the store (format: [`crate::index_snapshot`]).
//!
//! Every `search.snapshot_interval_secs`, each replica looks at the indexes it
//! has open and current: one that changed since its last snapshot, and whose
//! tenant has no snapshot younger than half the interval (another replica wrote
//! it), is sealed and written, and older snapshots are removed (the newest two
//! stay, so a replica reading one while it is replaced still finds it).
//!
//! A replica without a tenant's index opens the newest snapshot that opens.
//! The snapshot records where the tenant's audit log (the change feed) stood
//! when it was taken; the replica follows the log from there, and the index is
//! current (searches are served, `/readyz`) once it has caught up with where
//! the log ended when the index was opened: the cost is the changes since the
//! snapshot, not the tenant's size. A reconciliation with the store (a listing
//! of the documents) then runs in the background as a check, changing what it
//! finds wrong and saying so. A snapshot without a position (written before
//! positions were recorded) is reconciled before it is current, as any index
//! opened from the data directory is.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio_util::io::{StreamReader, SyncIoBridge};
use vault_crypto::envelope::KeyRecord;
use vault_crypto::TenantId;
use vault_index::blind_index::BlindIndex;
use vault_index::tokens::Tokenizer;

use super::{blocking, commit, IndexSync, SearchService, TenantIndex};
use crate::error::Error;
use crate::index_snapshot::{self, SnapshotContents, SnapshotId};
use crate::storage::{list_all, sink, ObjectName};
use crate::tenants::TenantRecord;

/// Snapshots kept per tenant and index key version.
const KEPT: usize = 2;

/// How a tenant's index was opened.
pub(super) enum Started {
    /// From this replica's data directory; with the log position its last commit
    /// recorded, brought up to date by following the log from there, else by a
    /// reconciliation.
    Kept {
        /// The first segment of the log whose changes it may lack.
        followed_to: Option<u64>,
    },
    /// Created empty: filled from the store by the reconciliation.
    Empty,
    /// From a snapshot; with the log position it recorded, it is brought up to
    /// date by following the log from there, else by a reconciliation.
    FromSnapshot {
        /// The first segment of the log whose changes it may lack.
        followed_to: Option<u64>,
    },
}

impl SearchService {
    /// Writes snapshots every `search.snapshot_interval_secs`, for ever (never
    /// when it is 0).
    pub async fn run_snapshotter(self) {
        if self.config.snapshot_interval_secs == 0 {
            return;
        }
        let mut tick =
            tokio::time::interval(Duration::from_secs(self.config.snapshot_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.snapshot_all().await;
        }
    }

    /// Writes a snapshot of every open, current index that changed since its
    /// last one, unless another replica wrote one lately. Returns how many were
    /// written.
    pub async fn snapshot_all(&self) -> usize {
        let open: Vec<(TenantId, Arc<TenantIndex>)> = self
            .indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|(tenant, cell)| Some((tenant.clone(), cell.get()?.clone())))
            .collect();
        let mut written = 0;
        for (tenant, index) in open {
            match self.snapshot(&tenant, &index).await {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(e) => {
                    self.metrics.index_failures.inc();
                    tracing::warn!(tenant = %tenant, code = e.code(), error = %e.for_log(), "index snapshot not written; the next interval tries again");
                }
            }
        }
        written
    }

    async fn snapshot(&self, tenant: &TenantId, index: &Arc<TenantIndex>) -> Result<bool, Error> {
        let changes = index.index.changes();
        // Any change of state from here on (a rebuild emptying the index, a
        // failure) makes what is exported unfit: it is dropped.
        let state = index.sync.subscribe();
        if *state.borrow() != IndexSync::Current
            || index.snapshotted.load(Ordering::SeqCst) == changes
        {
            return Ok(false);
        }
        let Some(record) = self.tenants.get(tenant).await? else {
            return Ok(false);
        };
        let version = index.tokenizer.key_version();
        if !record.is_active() || record.index_version != version {
            return Ok(false);
        }
        let prefix = ObjectName::index_snapshots_of_version(tenant, version);
        let existing = list_all(self.store.as_ref(), &prefix, None).await?;
        let now = OffsetDateTime::now_utc();
        // The store's clock, where it gives one: a replica whose clock runs
        // ahead does not keep the others from writing.
        let fresh = time::Duration::seconds((self.config.snapshot_interval_secs / 2) as i64);
        if existing.iter().any(|info| {
            info.modified
                .or_else(|| snapshot_time(info.name.as_str()))
                .is_some_and(|at| now - at < fresh)
        }) {
            return Ok(false);
        }
        // Where the log stood before the commit: every change in the segments
        // before it was applied to the index (by its upload, or by following
        // the log) before the follower moved past it, so the commit below
        // holds it. A replica starting from this snapshot follows from here.
        let followed_to = self.followed_from(tenant);
        commit(index, followed_to).await?;
        let export = {
            let index = Arc::clone(index);
            blocking(move || index.index.export()).await?
        };
        if state.has_changed().unwrap_or(true) {
            return Ok(false);
        }
        let spec = crate::tenants::key_spec(&record);
        let (key_ref, branch) = self.keys.branch_key_for_upload(&spec).await?;
        let name = format!(
            "{:020}-{}",
            unix_ms(now),
            hex::encode(vault_crypto::random_bytes::<4>())
        );
        let object = ObjectName::index_snapshot(tenant, version, &name);
        // Sealed on a blocking thread straight into the store's upload, one
        // buffer at a time: the index is never in memory.
        let (mut sink, body) = sink::blocking_sink();
        let sealing = {
            let tenant = tenant.clone();
            let contents = SnapshotContents {
                files: export.files().to_vec(),
                followed_to,
            };
            tokio::task::spawn_blocking(move || {
                let id = SnapshotId {
                    tenant: &tenant,
                    index_version: version,
                    name: &name,
                };
                let mut files = export.into_reader();
                index_snapshot::seal_to(&mut sink, id, &contents, &mut files, &branch, key_ref)?;
                sink.finish()?;
                Ok::<_, index_snapshot::SnapshotError>(())
            })
        };
        let stored = self.store.put_new(&object, body).await;
        sealing
            .await
            .map_err(|e| Error::internal("index snapshot task", e))?
            .map_err(|e| Error::internal("index snapshot", e))?;
        let size = stored?;
        // Offboarded meanwhile (through another replica, whose removal of the
        // snapshots may have run before this write): not left behind.
        if !self
            .tenants
            .get_fresh(tenant)
            .await?
            .is_some_and(|r| r.is_active())
        {
            let _ = self.store.delete(&object).await;
            return Ok(false);
        }
        index.snapshotted.store(changes, Ordering::SeqCst);
        self.metrics.index_snapshots_written.inc();
        tracing::info!(tenant = %tenant, bytes = size, documents = index.index.len(), "index snapshot written");
        // Older snapshots of this version (the newest ones stay), and every
        // snapshot of other versions (their keys are rotated away).
        for old in existing.iter().rev().skip(KEPT - 1) {
            let _ = self.store.delete(&old.name).await;
        }
        for other in list_all(
            self.store.as_ref(),
            &ObjectName::index_snapshots_prefix(tenant),
            None,
        )
        .await?
        {
            if !other.name.as_str().starts_with(&prefix) {
                let _ = self.store.delete(&other.name).await;
            }
        }
        Ok(true)
    }

    /// The tenant's latest snapshots of its current index version, newest
    /// first (none when snapshots are off or cannot be listed: then the index
    /// is built from the store, as without snapshots).
    async fn latest_snapshots(&self, tenant: &TenantRecord) -> Vec<(ObjectName, String)> {
        if self.config.snapshot_interval_secs == 0 {
            return Vec::new();
        }
        let prefix = ObjectName::index_snapshots_of_version(&tenant.id, tenant.index_version);
        let listed = match list_all(self.store.as_ref(), &prefix, None).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, error = %e, "index snapshots could not be listed; building the index from the store");
                return Vec::new();
            }
        };
        listed
            .into_iter()
            .rev()
            .take(KEPT)
            .filter_map(|info| {
                let short = info.name.as_str().strip_prefix(&prefix)?.to_owned();
                Some((info.name, short))
            })
            .collect()
    }

    /// Makes `dir` the index in snapshot `object` (named `short` among the
    /// tenant's), streamed from the store through authentication into files
    /// put in place only once all of it checked out. Returns where the log
    /// stood when it was taken.
    async fn import_snapshot(
        &self,
        tenant: &TenantRecord,
        (object, short): &(ObjectName, String),
        dir: &std::path::Path,
    ) -> Result<Option<u64>, Error> {
        let unusable = |e: index_snapshot::SnapshotError| Error::internal("index snapshot", e);
        let stream = self.store.get(object).await?;
        let mut reader = StreamReader::new(stream.map_err(std::io::Error::other));
        let mut header = [0u8; index_snapshot::HEADER_LEN];
        reader
            .read_exact(&mut header)
            .await
            .map_err(|e| unusable(e.into()))?;
        let (header_version, record_len) =
            index_snapshot::parse_header(&header).map_err(unusable)?;
        let mut record = vec![0u8; record_len];
        reader
            .read_exact(&mut record)
            .await
            .map_err(|e| unusable(e.into()))?;
        let record = KeyRecord::parse(&record).map_err(|e| unusable(e.into()))?;
        let spec = crate::tenants::key_spec(tenant);
        let branch = self.keys.branch_key(&spec, &record.key_ref).await?;
        let rest = SyncIoBridge::new(reader);
        let (tenant_id, version, short, dir) = (
            tenant.id.clone(),
            tenant.index_version,
            short.clone(),
            dir.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let id = SnapshotId {
                tenant: &tenant_id,
                index_version: version,
                name: &short,
            };
            let (contents, mut body) =
                index_snapshot::open_body(header_version, &record, rest, id, &branch)
                    .map_err(unusable)?;
            BlindIndex::import(&dir, &contents.files, &mut body)
                .map_err(|e| Error::internal("index snapshot import", e))?;
            Ok(contents.followed_to)
        })
        .await
        .map_err(|e| Error::internal("index snapshot task", e))?
    }

    /// Replaces a newly created (empty) index with the latest snapshot's, when
    /// one opens; returns the index to use and how it was started.
    pub(super) async fn open_from_snapshot(
        &self,
        tenant: &TenantRecord,
        empty: BlindIndex,
        tokenizer: Tokenizer,
    ) -> Result<(BlindIndex, Tokenizer, Started), Error> {
        let candidates = self.latest_snapshots(tenant).await;
        if candidates.is_empty() {
            return Ok((empty, tokenizer, Started::Empty));
        }
        let dir = empty.dir().to_owned();
        // Closed first: the import replaces its directory.
        drop(empty);
        let mut imported = None;
        for candidate in &candidates {
            match self.import_snapshot(tenant, candidate, &dir).await {
                Ok(followed_to) => {
                    imported = Some(followed_to);
                    break;
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id, snapshot = %candidate.0, code = e.code(), error = %e.for_log(), "index snapshot not usable");
                }
            }
        }
        // Whatever the imports did, the directory opens: as the snapshot's
        // index, or empty again (none imported, or another token plan).
        let (index, created, tokenizer) = tokio::task::spawn_blocking(move || {
            BlindIndex::open(&dir, &tokenizer).map(|(index, created)| (index, created, tokenizer))
        })
        .await
        .map_err(|e| Error::internal("index task", e))?
        .map_err(super::index_error)?;
        let Some(followed_to) = imported else {
            tracing::warn!(tenant = %tenant.id, "no index snapshot opened; building the index from the store");
            return Ok((index, tokenizer, Started::Empty));
        };
        if created {
            tracing::info!(tenant = %tenant.id, "index snapshot made under another token plan; building the index from the store");
            return Ok((index, tokenizer, Started::Empty));
        }
        self.metrics.index_snapshots_restored.inc();
        tracing::info!(tenant = %tenant.id, documents = index.len(), followed_to = ?followed_to, "blind index opened from a snapshot");
        Ok((index, tokenizer, Started::FromSnapshot { followed_to }))
    }

    /// Removes a tenant's snapshots (offboarding).
    pub async fn delete_snapshots(&self, tenant: &TenantId) -> Result<u64, Error> {
        let mut removed = 0;
        for info in list_all(
            self.store.as_ref(),
            &ObjectName::index_snapshots_prefix(tenant),
            None,
        )
        .await?
        {
            self.store.delete(&info.name).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn unix_ms(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// When a snapshot was written, from its name (where the store gives no time).
fn snapshot_time(name: &str) -> Option<OffsetDateTime> {
    let ms: i128 = name.rsplit('/').next()?.get(..20)?.parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()
}

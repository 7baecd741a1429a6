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

use bytes::Bytes;
use time::OffsetDateTime;
use vault_crypto::TenantId;
use vault_index::blind_index::BlindIndex;
use vault_index::tokens::Tokenizer;

use super::{blocking, commit, IndexSync, SearchService, TenantIndex};
use crate::error::Error;
use crate::index_snapshot::{self, OpenedSnapshot};
use crate::storage::{list_all, ObjectName};
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
        let files = {
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
        let sealed = {
            let tenant = tenant.clone();
            let name = name.clone();
            tokio::task::spawn_blocking(move || {
                index_snapshot::seal(
                    &tenant,
                    version,
                    &name,
                    (&files, followed_to),
                    &branch,
                    key_ref,
                )
            })
            .await
            .map_err(|e| Error::internal("index snapshot task", e))?
            .map_err(|e| Error::internal("index snapshot", e))?
        };
        let size = sealed.len();
        let object = ObjectName::index_snapshot(tenant, version, &name);
        self.store
            .put_new_bytes(&object, Bytes::from(sealed))
            .await?;
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

    /// The latest readable snapshot of the tenant's current index version,
    /// newest first; `None` when there is none or none opens (then the index is
    /// built from the store, as without snapshots).
    async fn latest_snapshot(&self, tenant: &TenantRecord) -> Option<OpenedSnapshot> {
        if self.config.snapshot_interval_secs == 0 {
            return None;
        }
        let version = tenant.index_version;
        let prefix = ObjectName::index_snapshots_of_version(&tenant.id, version);
        let listed = match list_all(self.store.as_ref(), &prefix, None).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, error = %e, "index snapshots could not be listed; building the index from the store");
                return None;
            }
        };
        let spec = crate::tenants::key_spec(tenant);
        for info in listed.iter().rev().take(KEPT) {
            let Some(short) = info.name.as_str().strip_prefix(&prefix) else {
                continue;
            };
            let opened = async {
                let bytes = self
                    .store
                    .get_bytes(&info.name)
                    .await?
                    .ok_or_else(|| Error::not_found("snapshot_gone", "replaced meanwhile"))?;
                let (_, record) = index_snapshot::peek(&bytes)
                    .map_err(|e| Error::internal("index snapshot", e))?;
                let branch = self.keys.branch_key(&spec, &record.key_ref).await?;
                let (tenant_id, name) = (tenant.id.clone(), short.to_owned());
                tokio::task::spawn_blocking(move || {
                    index_snapshot::open(&bytes, &tenant_id, version, &name, &branch)
                })
                .await
                .map_err(|e| Error::internal("index snapshot task", e))?
                .map_err(|e| Error::internal("index snapshot", e))
            }
            .await;
            match opened {
                Ok(snapshot) => return Some(snapshot),
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id, snapshot = %info.name, code = e.code(), error = %e.for_log(), "index snapshot not usable");
                }
            }
        }
        None
    }

    /// Replaces a newly created (empty) index with the latest snapshot's, when
    /// one opens; returns the index to use and how it was started.
    pub(super) async fn open_from_snapshot(
        &self,
        tenant: &TenantRecord,
        empty: BlindIndex,
        tokenizer: Tokenizer,
    ) -> Result<(BlindIndex, Tokenizer, Started), Error> {
        let Some(OpenedSnapshot { files, followed_to }) = self.latest_snapshot(tenant).await else {
            return Ok((empty, tokenizer, Started::Empty));
        };
        let dir = empty.dir().to_owned();
        // Closed first: the import replaces its directory.
        drop(empty);
        let (imported, reopened, tokenizer) = tokio::task::spawn_blocking(move || {
            let imported = BlindIndex::import(&dir, &files);
            // Whatever the import did, the directory opens: as the snapshot's
            // index, or empty again (files missing, or another token plan).
            let reopened = BlindIndex::open(&dir, &tokenizer);
            (imported, reopened, tokenizer)
        })
        .await
        .map_err(|e| Error::internal("index task", e))?;
        let (index, created) = reopened.map_err(super::index_error)?;
        if let Err(e) = imported {
            tracing::warn!(tenant = %tenant.id, error = %e, "index snapshot could not be written here; building the index from the store");
            return Ok((index, tokenizer, Started::Empty));
        }
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

//! Index snapshots in the store (format: [`crate::index_snapshot`]).
//!
//! Every `search.snapshot_interval_secs`, each replica looks at the indexes it
//! has open and current: one that changed since its last snapshot, and whose
//! tenant has no snapshot younger than half the interval (another replica wrote
//! it), is sealed and written, and older snapshots are removed (the newest two
//! stay, so a replica reading one while it is replaced still finds it).
//!
//! A snapshot records the first audit log segment whose changes it may lack,
//! read before the index is committed and exported: the catch-up has applied
//! every upload and delete of the segments before it, so a replica opening the
//! snapshot follows the log from there and is complete once it reaches the
//! end the log had at the opening.

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
        if *index.sync.borrow() != IndexSync::Current
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
        let now_ms = unix_ms(OffsetDateTime::now_utc());
        let fresh_ms = self.config.snapshot_interval_secs * 1000 / 2;
        if existing
            .last()
            .and_then(|info| snapshot_time_ms(info.name.as_str()))
            .is_some_and(|at| now_ms.saturating_sub(at) < fresh_ms)
        {
            return Ok(false);
        }
        // Read before the export: every change of the segments before it is
        // applied, so it is in what is exported.
        let Some(follow_from) = self.followed_from(tenant) else {
            return Ok(false);
        };
        commit(index).await?;
        let files = {
            let index = Arc::clone(index);
            blocking(move || index.index.export()).await?
        };
        let spec = crate::tenants::key_spec(&record);
        let (key_ref, branch) = self.keys.branch_key_for_upload(&spec).await?;
        let name = format!(
            "{now_ms:020}-{}",
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
                    &files,
                    follow_from,
                    &branch,
                    key_ref,
                )
            })
            .await
            .map_err(|e| Error::internal("index snapshot task", e))?
            .map_err(|e| Error::internal("index snapshot", e))?
        };
        let size = sealed.len();
        self.store
            .put_new_bytes(
                &ObjectName::index_snapshot(tenant, version, &name),
                Bytes::from(sealed),
            )
            .await?;
        index.snapshotted.store(changes, Ordering::SeqCst);
        self.metrics.index_snapshots_written.inc();
        tracing::info!(tenant = %tenant, bytes = size, documents = index.index.len(), follow_from, "index snapshot written");
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
    /// one opens; returns the index to use and, when it came from a snapshot,
    /// the log segment to follow from.
    pub(super) async fn open_from_snapshot(
        &self,
        tenant: &TenantRecord,
        empty: BlindIndex,
        tokenizer: Tokenizer,
    ) -> Result<(BlindIndex, Tokenizer, Option<u64>), Error> {
        let Some(snapshot) = self.latest_snapshot(tenant).await else {
            return Ok((empty, tokenizer, None));
        };
        let dir = empty.dir().to_owned();
        // Closed first: the import replaces its directory.
        drop(empty);
        let (imported, reopened, tokenizer) = tokio::task::spawn_blocking(move || {
            let imported = BlindIndex::import(&dir, &snapshot.files);
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
            return Ok((index, tokenizer, None));
        }
        if created {
            tracing::info!(tenant = %tenant.id, "index snapshot made under another token plan; building the index from the store");
            return Ok((index, tokenizer, None));
        }
        self.metrics.index_snapshots_restored.inc();
        tracing::info!(tenant = %tenant.id, documents = index.len(), follow_from = snapshot.follow_from, "blind index opened from a snapshot");
        Ok((index, tokenizer, Some(snapshot.follow_from)))
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

/// When a snapshot was written, from its name.
fn snapshot_time_ms(name: &str) -> Option<u64> {
    name.rsplit('/').next()?.get(..20)?.parse().ok()
}

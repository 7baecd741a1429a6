//! Leases: one holder at a time of something shared (a backup repository, a
//! tenant's keys), across server replicas, kept in an object store: no state that
//! only one process holds, and no service besides the store.
//!
//! After restic's locks: a holder first stores its lease object
//! (`<prefix><run>-<n>`, create-only), then lists the others. If it finds a live
//! one of another holder, it removes its own and backs off. Two holders starting
//! together both back off, so a few jittered retries settle who goes. A lease is
//! live while it is refreshed, every [`LeaseTiming::refresh`], by writing a new
//! object and removing the old one. One not refreshed for
//! [`LeaseTiming::stale`] was left by a process that died, and is removed. So is
//! one of this same holder (host and data directory) from an earlier run: the
//! caller serializes its own work in-process, so that run cannot still be going.
//! Clock skew between replicas well below `stale` changes nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use super::{list_all, ObjectName, ObjectStore, StorageError};

/// FORMAT CONSTANT: version of a lease object.
const LEASE_FORMAT: u32 = 1;
/// Attempts when other holders' leases are in the way.
const ATTEMPTS: u32 = 3;

/// The runs of the leases this process holds now: a lease of this holder that is
/// not among them was left by an earlier run (a crash), one that is belongs to
/// concurrent work here and is as live as another replica's.
static HELD_HERE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
    std::sync::LazyLock::new(Default::default);

fn held_here(run: &str) -> bool {
    HELD_HERE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(run)
}

fn set_held_here(run: &str, held: bool) {
    let mut runs = HELD_HERE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if held {
        runs.insert(run.to_owned());
    } else {
        runs.remove(run);
    }
}

/// How often a held lease is refreshed, and when an unrefreshed one is stale.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    /// Refresh period.
    pub refresh: Duration,
    /// Age after which a lease not refreshed belongs to a dead holder.
    pub stale: Duration,
}

/// What a lease object says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// FORMAT CONSTANT: 1.
    pub format: u32,
    /// Who holds it: host name and data directory.
    pub holder: String,
    /// This acquisition (random), shared by its refreshed objects.
    pub run: String,
    /// What it is held for (`backup`, `prune`, `key.rewrap`, ...).
    pub operation: String,
    /// When the lease was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub acquired_at: OffsetDateTime,
    /// When this object was written.
    #[serde(with = "time::serde::rfc3339")]
    pub refreshed_at: OffsetDateTime,
}

/// Why a lease was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it.
    #[error("held by {holder} for {operation} since {since}")]
    Held {
        /// Its holder.
        holder: String,
        /// What for.
        operation: String,
        /// Since when.
        since: OffsetDateTime,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A held lease. Call [`Lease::release`] when done; one dropped without being
/// released stops being refreshed and goes stale.
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    run: String,
    refresher: JoinHandle<()>,
}

/// Who this process is, for leases and idempotency claims: host name and data
/// directory, made unique by the kernel's boot id and the data directory's
/// device and inode (it is what `data_dir_lock.rs` locks). Two containers with
/// the same host name and path on one bucket differ in these, so one never takes
/// the other for an earlier run of itself; after a reboot, or with the directory
/// made anew, the earlier runs are no longer recognised and their leases and
/// claims wait to go stale instead.
pub fn holder_name(data_dir: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().chars().take(8).collect::<String>())
        .unwrap_or_else(|_| "unknown".to_owned());
    let directory = std::fs::metadata(data_dir)
        .map(|m| format!("{}:{}", m.dev(), m.ino()))
        .unwrap_or_else(|_| "none".to_owned());
    format!("{host}:{} [boot {boot}, dir {directory}]", dir.display())
}

fn lease_name(prefix: &str, run: &str, n: u64) -> ObjectName {
    ObjectName::lease(prefix, &format!("{run}-{n}"))
}

/// Stores one lease object, create-only.
pub(crate) async fn write_lease(
    store: &dyn ObjectStore,
    prefix: &str,
    record: &LeaseRecord,
    n: u64,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(record).map_err(|e| StorageError::Backend(e.to_string()))?;
    store
        .put_new_bytes(&lease_name(prefix, &record.run, n), Bytes::from(bytes))
        .await
}

/// The leases of other runs that stand in the way: stale ones and this holder's
/// leftovers are removed on the way.
async fn others(
    store: &dyn ObjectStore,
    prefix: &str,
    me: &LeaseRecord,
    stale: Duration,
    now: OffsetDateTime,
) -> Result<Vec<LeaseRecord>, StorageError> {
    let mut live = Vec::new();
    for info in list_all(store, prefix, None).await? {
        if info.name.file_name().starts_with(&format!("{}-", me.run)) {
            continue;
        }
        let record = match store.get_bytes(&info.name).await {
            Ok(Some(bytes)) => serde_json::from_slice::<LeaseRecord>(&bytes).ok(),
            // Released meanwhile.
            Ok(None) | Err(StorageError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let dead = match &record {
            None => Some("unreadable"),
            Some(r) if r.holder == me.holder && !held_here(&r.run) => {
                Some("left by an earlier run of this server")
            }
            Some(r) if now - r.refreshed_at > stale => Some("stale"),
            Some(_) => None,
        };
        match (dead, record) {
            (Some(why), _) => {
                tracing::warn!(lease = %info.name, why, "removing a lease");
                store.delete(&info.name).await?;
            }
            (None, Some(record)) => live.push(record),
            (None, None) => {}
        }
    }
    Ok(live)
}

impl Lease {
    /// Takes the lease kept under `prefix` for `operation`, or fails with
    /// [`LeaseError::Held`] naming who holds it.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        holder: &str,
        operation: &str,
        timing: LeaseTiming,
    ) -> Result<Lease, LeaseError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let now = OffsetDateTime::now_utc();
            let record = LeaseRecord {
                format: LEASE_FORMAT,
                holder: holder.to_owned(),
                run: hex::encode(rand::random::<[u8; 8]>()),
                operation: operation.to_owned(),
                acquired_at: now,
                refreshed_at: now,
            };
            write_lease(store.as_ref(), prefix, &record, 0).await?;
            let live = match others(store.as_ref(), prefix, &record, timing.stale, now).await {
                Ok(live) => live,
                Err(e) => {
                    let _ = store.delete(&lease_name(prefix, &record.run, 0)).await;
                    return Err(e.into());
                }
            };
            let Some(first) = live.into_iter().min_by_key(|r| r.acquired_at) else {
                set_held_here(&record.run, true);
                let refresher = tokio::spawn(refresh(
                    Arc::clone(&store),
                    prefix.to_owned(),
                    record.clone(),
                    timing.refresh,
                ));
                return Ok(Lease {
                    store,
                    prefix: prefix.to_owned(),
                    run: record.run,
                    refresher,
                });
            };
            store.delete(&lease_name(prefix, &record.run, 0)).await?;
            if attempt >= ATTEMPTS {
                return Err(LeaseError::Held {
                    holder: first.holder,
                    operation: first.operation,
                    since: first.acquired_at,
                });
            }
            // Holders that started together all backed off: retry apart.
            let pause = rand::thread_rng().gen_range(200..1500);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// The store's clock now, as the time it gives the lease's newest object
    /// (written moments ago): for comparing with other objects' times without
    /// trusting this machine's clock.
    pub async fn store_time(&self) -> Result<Option<OffsetDateTime>, StorageError> {
        let mine = format!("{}-", self.run);
        Ok(list_all(self.store.as_ref(), &self.prefix, None)
            .await?
            .into_iter()
            .filter(|info| info.name.file_name().starts_with(&mine))
            .filter_map(|info| info.modified)
            .max())
    }

    /// Releases the lease (its refresher stops and its objects are removed). A
    /// failure is logged: the lease then goes stale.
    pub async fn release(mut self) {
        self.refresher.abort();
        let _ = (&mut self.refresher).await;
        let run = std::mem::take(&mut self.run);
        remove(self.store.clone(), self.prefix.clone(), run.clone()).await;
        set_held_here(&run, false);
    }
}

async fn remove(store: Arc<dyn ObjectStore>, prefix: String, run: String) {
    let mine = format!("{run}-");
    let removed = async {
        for info in list_all(store.as_ref(), &prefix, None).await? {
            if info.name.file_name().starts_with(&mine) {
                store.delete(&info.name).await?;
            }
        }
        Ok::<_, StorageError>(())
    }
    .await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, prefix = %prefix, "could not remove a lease; it goes stale");
    }
}

/// A lease dropped without [`Lease::release`] (its work was cancelled, or never
/// started) stops being refreshed, and its objects are removed in the background
/// (if that fails they go stale, or this holder's next run clears them).
impl Drop for Lease {
    fn drop(&mut self) {
        self.refresher.abort();
        if self.run.is_empty() {
            return;
        }
        let run = std::mem::take(&mut self.run);
        set_held_here(&run, false);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(remove(self.store.clone(), self.prefix.clone(), run));
        }
    }
}

/// Keeps a lease live: a new object every `period`, then the old one removed.
async fn refresh(
    store: Arc<dyn ObjectStore>,
    prefix: String,
    mut record: LeaseRecord,
    period: Duration,
) {
    let mut n = 0;
    loop {
        tokio::time::sleep(period).await;
        record.refreshed_at = OffsetDateTime::now_utc();
        match write_lease(store.as_ref(), &prefix, &record, n + 1).await {
            Ok(()) => {
                let _ = store.delete(&lease_name(&prefix, &record.run, n)).await;
                n += 1;
            }
            Err(e) => tracing::warn!(error = %e, prefix = %prefix, "could not refresh a lease"),
        }
    }
}

//! The repository lock: one writer (backup or prune) per repository, across
//! server replicas, kept in the repository itself (no state only one process
//! holds).
//!
//! After restic's locks: a writer first stores its lock object
//! (`locks/<run>-<n>`, create-only), then lists the others. If it finds a live
//! one from another holder, it removes its own and backs off. Two writers starting
//! together both back off, so a few jittered retries settle who goes. A lock is
//! live while it is refreshed, every [`REFRESH`], by writing a new object and
//! removing the old one. One not refreshed for [`STALE`] was left by a process
//! that died, and is removed. So is one of this same holder (host and data
//! directory) from an earlier run: the caller holds the in-process job lock, so
//! that run cannot still be going.
//!
//! Readers (verify, restore, drill) take no lock. A prune that runs under a
//! verify may make the verify report objects missing, never the reverse.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use super::BackupError;
use crate::storage::{list_all, ObjectName, ObjectStore, StorageError};

/// FORMAT CONSTANT: version of a lock object.
const LOCK_FORMAT: u32 = 1;
/// How often a held lock is refreshed.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale.
pub const STALE: Duration = Duration::from_secs(30 * 60);
/// Attempts when other writers' locks are in the way.
const ATTEMPTS: u32 = 3;

/// What a lock object says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockRecord {
    /// FORMAT CONSTANT: 1.
    pub format: u32,
    /// Who holds it: host name and data directory.
    pub holder: String,
    /// This acquisition (random), shared by its refreshed objects.
    pub run: String,
    /// `backup` or `prune`.
    pub operation: String,
    /// When the lock was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub acquired_at: OffsetDateTime,
    /// When this object was written.
    #[serde(with = "time::serde::rfc3339")]
    pub refreshed_at: OffsetDateTime,
}

/// A held lock. Call [`RepoLock::release`] when done; a lock that is dropped
/// without being released stops being refreshed and goes stale.
pub struct RepoLock {
    store: Arc<dyn ObjectStore>,
    run: String,
    refresher: JoinHandle<()>,
}

/// Who this process is, for locks: host name and data directory.
pub fn holder_name(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    format!("{host}:{}", dir.display())
}

fn lock_name(run: &str, n: u64) -> ObjectName {
    ObjectName::backup_lock(&format!("{run}-{n}"))
}

async fn write_lock(
    store: &dyn ObjectStore,
    record: &LockRecord,
    n: u64,
) -> Result<(), BackupError> {
    let bytes = serde_json::to_vec(record).map_err(|e| BackupError::Internal(e.to_string()))?;
    store
        .put_new_bytes(&lock_name(&record.run, n), Bytes::from(bytes))
        .await?;
    Ok(())
}

/// The locks of other runs that stand in the way: stale ones and this holder's
/// leftovers are removed on the way.
async fn others(
    store: &dyn ObjectStore,
    me: &LockRecord,
    now: OffsetDateTime,
) -> Result<Vec<LockRecord>, BackupError> {
    let mut live = Vec::new();
    for info in list_all(store, ObjectName::BACKUP_LOCKS_PREFIX, None).await? {
        if info.name.file_name().starts_with(&format!("{}-", me.run)) {
            continue;
        }
        let record = match store.get_bytes(&info.name).await {
            Ok(Some(bytes)) => serde_json::from_slice::<LockRecord>(&bytes).ok(),
            // Released meanwhile.
            Ok(None) | Err(StorageError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let dead = match &record {
            None => Some("unreadable"),
            Some(r) if r.holder == me.holder => Some("left by an earlier run of this server"),
            Some(r) if now - r.refreshed_at > STALE => Some("stale"),
            Some(_) => None,
        };
        match (dead, record) {
            (Some(why), _) => {
                tracing::warn!(lock = %info.name, why, "removing a repository lock");
                store.delete(&info.name).await?;
            }
            (None, Some(record)) => live.push(record),
            (None, None) => {}
        }
    }
    Ok(live)
}

impl RepoLock {
    /// Takes the repository's lock for `operation`, or fails with
    /// [`BackupError::Locked`] naming who holds it.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        holder: &str,
        operation: &str,
    ) -> Result<RepoLock, BackupError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let now = OffsetDateTime::now_utc();
            let record = LockRecord {
                format: LOCK_FORMAT,
                holder: holder.to_owned(),
                run: hex::encode(rand::random::<[u8; 8]>()),
                operation: operation.to_owned(),
                acquired_at: now,
                refreshed_at: now,
            };
            write_lock(store.as_ref(), &record, 0).await?;
            let live = match others(store.as_ref(), &record, now).await {
                Ok(live) => live,
                Err(e) => {
                    let _ = store.delete(&lock_name(&record.run, 0)).await;
                    return Err(e);
                }
            };
            let Some(first) = live.into_iter().min_by_key(|r| r.acquired_at) else {
                let refresher = tokio::spawn(refresh(Arc::clone(&store), record.clone()));
                return Ok(RepoLock {
                    store,
                    run: record.run,
                    refresher,
                });
            };
            store.delete(&lock_name(&record.run, 0)).await?;
            if attempt >= ATTEMPTS {
                return Err(BackupError::Locked {
                    holder: first.holder,
                    operation: first.operation,
                    since: first.acquired_at,
                });
            }
            // Writers that started together all backed off: retry apart.
            let pause = rand::thread_rng().gen_range(200..1500);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// Releases the lock (its refresher stops and its objects are removed). A
    /// failure is logged: the lock then goes stale.
    pub async fn release(mut self) {
        self.refresher.abort();
        let _ = (&mut self.refresher).await;
        let mine = format!("{}-", self.run);
        let removed = async {
            for info in list_all(self.store.as_ref(), ObjectName::BACKUP_LOCKS_PREFIX, None).await?
            {
                if info.name.file_name().starts_with(&mine) {
                    self.store.delete(&info.name).await?;
                }
            }
            Ok::<_, StorageError>(())
        }
        .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "could not remove the repository lock; it goes stale in 30 minutes");
        }
    }
}

/// A lock dropped without [`RepoLock::release`] (its backup was cancelled) stops
/// being refreshed: its objects go stale, or this holder's next run clears them.
impl Drop for RepoLock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Keeps a lock live: a new object every [`REFRESH`], then the old one removed.
async fn refresh(store: Arc<dyn ObjectStore>, mut record: LockRecord) {
    let mut n = 0;
    loop {
        tokio::time::sleep(REFRESH).await;
        record.refreshed_at = OffsetDateTime::now_utc();
        match write_lock(store.as_ref(), &record, n + 1).await {
            Ok(()) => {
                let _ = store.delete(&lock_name(&record.run, n)).await;
                n += 1;
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh the repository lock"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStore;

    async fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::open(dir.path()).await.unwrap());
        (dir, store)
    }

    async fn plant(store: &dyn ObjectStore, holder: &str, age: Duration) {
        let at = OffsetDateTime::now_utc() - age;
        let record = LockRecord {
            format: LOCK_FORMAT,
            holder: holder.to_owned(),
            run: "00ff00ff00ff00ff".to_owned(),
            operation: "backup".to_owned(),
            acquired_at: at,
            refreshed_at: at,
        };
        write_lock(store, &record, 0).await.unwrap();
    }

    async fn lock_count(store: &dyn ObjectStore) -> usize {
        list_all(store, ObjectName::BACKUP_LOCKS_PREFIX, None)
            .await
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn one_writer_at_a_time_and_release_frees_it() {
        let (_dir, store) = store().await;
        let held = RepoLock::acquire(Arc::clone(&store), "host-a:/data", "backup")
            .await
            .unwrap();
        match RepoLock::acquire(Arc::clone(&store), "host-b:/data", "prune").await {
            Err(BackupError::Locked {
                holder, operation, ..
            }) => {
                assert_eq!(
                    (holder.as_str(), operation.as_str()),
                    ("host-a:/data", "backup")
                );
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("two writers hold the lock"),
        }
        assert_eq!(
            lock_count(store.as_ref()).await,
            1,
            "the loser leaves no lock"
        );
        held.release().await;
        assert_eq!(lock_count(store.as_ref()).await, 0);
        let again = RepoLock::acquire(Arc::clone(&store), "host-b:/data", "prune")
            .await
            .unwrap();
        again.release().await;
    }

    #[tokio::test]
    async fn a_live_foreign_lock_blocks_and_a_stale_one_is_removed() {
        let (_dir, store) = store().await;
        plant(store.as_ref(), "host-b:/data", Duration::from_secs(60)).await;
        assert!(matches!(
            RepoLock::acquire(Arc::clone(&store), "host-a:/data", "backup").await,
            Err(BackupError::Locked { .. })
        ));
        let (_dir, store) = self::store().await;
        plant(
            store.as_ref(),
            "host-b:/data",
            STALE + Duration::from_secs(60),
        )
        .await;
        let held = RepoLock::acquire(Arc::clone(&store), "host-a:/data", "backup")
            .await
            .unwrap();
        assert_eq!(
            lock_count(store.as_ref()).await,
            1,
            "the stale lock is gone"
        );
        held.release().await;
    }

    #[tokio::test]
    async fn this_servers_leftover_from_a_crash_is_taken_over() {
        let (_dir, store) = store().await;
        plant(store.as_ref(), "host-a:/data", Duration::from_secs(5)).await;
        let held = RepoLock::acquire(Arc::clone(&store), "host-a:/data", "backup")
            .await
            .unwrap();
        assert_eq!(lock_count(store.as_ref()).await, 1);
        held.release().await;
    }

    #[tokio::test]
    async fn writers_starting_together_end_with_exactly_one_holder() {
        let (_dir, store) = store().await;
        let contenders = (0..4).map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                RepoLock::acquire(store, &format!("host-{i}:/data"), "backup").await
            })
        });
        let mut held = Vec::new();
        for c in contenders {
            if let Ok(lock) = c.await.unwrap() {
                held.push(lock);
            }
        }
        assert!(held.len() <= 1, "{} writers hold the lock", held.len());
        for lock in held {
            lock.release().await;
        }
    }
}

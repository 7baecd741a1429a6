//! The repository lock: one writer (backup or prune) per repository, across
//! server replicas, kept in the repository itself: a [`Lease`] under `locks/`,
//! refreshed every 5 minutes and stale after 30 (a backup may run for hours).
//!
//! Readers (verify, restore, drill) take no lock. A prune that runs under a
//! verify may make the verify report objects missing, never the reverse.

use std::sync::Arc;
use std::time::Duration;

use super::BackupError;
use crate::storage::lease::{Lease, LeaseError, LeaseTiming};
use crate::storage::{ObjectName, ObjectStore};

pub use crate::storage::lease::holder_name;

/// How often a held lock is refreshed.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale.
pub const STALE: Duration = Duration::from_secs(30 * 60);

/// A held lock. Call [`RepoLock::release`] when done; a lock that is dropped
/// without being released stops being refreshed and goes stale.
pub struct RepoLock(Lease);

impl RepoLock {
    /// Takes the repository's lock for `operation`, or fails with
    /// [`BackupError::Locked`] naming who holds it.
    pub async fn acquire(
        store: Arc<dyn ObjectStore>,
        holder: &str,
        operation: &str,
    ) -> Result<RepoLock, BackupError> {
        let timing = LeaseTiming {
            refresh: REFRESH,
            stale: STALE,
        };
        match Lease::acquire(
            store,
            ObjectName::BACKUP_LOCKS_PREFIX,
            holder,
            operation,
            timing,
        )
        .await
        {
            Ok(lease) => Ok(RepoLock(lease)),
            Err(LeaseError::Held {
                holder,
                operation,
                since,
            }) => Err(BackupError::Locked {
                holder,
                operation,
                since,
            }),
            Err(LeaseError::Storage(e)) => Err(e.into()),
        }
    }

    /// Releases the lock (its refresher stops and its objects are removed). A
    /// failure is logged: the lock then goes stale.
    pub async fn release(self) {
        self.0.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsStore;
    use crate::storage::lease::{write_lease, LeaseRecord};
    use crate::storage::list_all;
    use time::OffsetDateTime;

    async fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::open(dir.path()).await.unwrap());
        (dir, store)
    }

    async fn plant(store: &dyn ObjectStore, holder: &str, age: Duration) {
        let at = OffsetDateTime::now_utc() - age;
        let record = LeaseRecord {
            format: 1,
            holder: holder.to_owned(),
            run: "00ff00ff00ff00ff".to_owned(),
            operation: "backup".to_owned(),
            acquired_at: at,
            refreshed_at: at,
        };
        write_lease(store, ObjectName::BACKUP_LOCKS_PREFIX, &record, 0)
            .await
            .unwrap();
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

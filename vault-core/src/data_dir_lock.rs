//! One process per data directory. A replica's data directory (its index cache,
//! the root key file) belongs to one running `vault-server`: [`DataDirLock`]
//! holds an exclusive `flock` on the data directory itself for the life of the
//! process, so a second server on the same directory refuses to start. (A lock
//! file inside it could be deleted and made anew by a second server, which
//! would then lock the new file: the directory cannot be replaced under a
//! running server.)
//!
//! With the lock held, a replica also knows which of its own earlier runs are
//! dead: every run gets a random id, and an idempotency claim names the run that
//! made it. A claim made by this replica (same holder name) in another run
//! belongs to a process that no longer exists, since this one holds the lock, so
//! a retry after a crash takes the key over at once instead of waiting out the
//! claim's grace period.

use std::fs::File;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

/// Who made a claim: a replica (its [`crate::storage::lease::holder_name`]) in
/// one run of its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The replica: host name and data directory.
    pub holder: String,
    /// This run of it: random, new at every start.
    pub id: String,
}

impl Run {
    /// As a claim records it: `<holder>#<run id>`.
    pub fn tag(&self) -> String {
        format!("{}#{}", self.holder, self.id)
    }

    /// Whether `tag` names an earlier (so dead) run of this same replica.
    pub fn is_earlier_run_of_this_replica(&self, tag: &str) -> bool {
        match tag.rsplit_once('#') {
            Some((holder, id)) => holder == self.holder && id != self.id,
            None => false,
        }
    }
}

/// The held lock, released when the process exits (or this is dropped).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    run: Run,
}

impl DataDirLock {
    /// Takes the lock of `data_dir`, or fails when another process holds it.
    pub fn acquire(data_dir: &Path) -> std::io::Result<DataDirLock> {
        let file = File::open(data_dir)?;
        flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            if e == rustix::io::Errno::WOULDBLOCK {
                std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another vault-server is running on this data directory (each replica needs its own)",
                )
            } else {
                std::io::Error::from(e)
            }
        })?;
        Ok(DataDirLock {
            _file: file,
            run: Run {
                holder: crate::storage::lease::holder_name(data_dir),
                id: hex::encode(rand::random::<[u8; 8]>()),
            },
        })
    }

    /// This run.
    pub fn run(&self) -> &Run {
        &self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_process_on_one_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let second = DataDirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::WouldBlock);
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn only_earlier_runs_of_the_same_replica_are_dead() {
        let run = Run {
            holder: "host:/data".into(),
            id: "aa".into(),
        };
        assert!(run.is_earlier_run_of_this_replica("host:/data#bb"));
        assert!(!run.is_earlier_run_of_this_replica("host:/data#aa"));
        assert!(!run.is_earlier_run_of_this_replica("other:/data#bb"));
        assert!(!run.is_earlier_run_of_this_replica("no tag"));
    }
}

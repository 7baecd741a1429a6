//! Checking a repository, like `restic check`: its record names the vault's
//! pinned key (given by the caller, never read from the repository); every
//! manifest parses, is signed with that key and matches its Merkle root; every object it names is
//! present with the right size; with `read_data`, every object's bytes hash to the
//! manifest's value (or only the subset `n/t`, by hash, like
//! `--read-data-subset`).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use vault_crypto::signing::PublicKey;

use super::repo::Repository;
use super::snapshot::hash_stream;
use super::{BackupError, Progress};
use crate::storage::{ObjectName, StorageError};

/// Which objects' bytes to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every object.
    All,
    /// Part `n` of `t` (1-based), chosen by hash.
    Subset {
        /// Which part.
        n: u32,
        /// Of how many.
        t: u32,
    },
}

impl ReadData {
    /// Parses `n/t`.
    pub fn parse_subset(raw: &str) -> Result<ReadData, BackupError> {
        let bad = || {
            BackupError::Invalid(format!(
                "--read-data-subset takes n/t with 1 <= n <= t, not {raw:?}"
            ))
        };
        let (n, t) = raw.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let t: u32 = t.trim().parse().map_err(|_| bad())?;
        if n == 0 || t == 0 || n > t {
            return Err(bad());
        }
        Ok(ReadData::Subset { n, t })
    }

    fn selects(&self, sha: &str) -> bool {
        match self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset { n, t } => {
                let head = u32::from_str_radix(sha.get(..8).unwrap_or("0"), 16).unwrap_or(0);
                head % t == n - 1
            }
        }
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Snapshots whose manifests verified.
    pub snapshots: u64,
    /// Distinct data objects the manifests name.
    pub objects: u64,
    /// Objects whose bytes were read and hashed.
    pub objects_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Problems, one line each (snapshot or object, and what).
    pub problems: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the repository (all snapshots, or only `only`).
pub async fn verify(
    repo: &Repository,
    vault_key: &PublicKey,
    only: Option<&str>,
    read: ReadData,
    progress: &dyn Progress,
) -> Result<VerifyReport, BackupError> {
    let started = Instant::now();
    let mut report = VerifyReport::default();
    match repo.check_pinned(vault_key).await {
        Ok(()) => {}
        Err(e @ BackupError::ForeignRepository { .. }) => report.problems.push(e.to_string()),
        Err(e) => return Err(e),
    }
    let ids = match only {
        Some(id) => vec![id.to_owned()],
        None => repo.snapshot_ids().await?,
    };
    // hash -> (size, first object naming it)
    let mut wanted: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for id in &ids {
        match repo.manifest(id, vault_key).await {
            Ok(manifest) => {
                report.snapshots += 1;
                for entry in manifest.into_inner().entries {
                    if let Some((size, _)) = wanted.get(&entry.sha256) {
                        if *size != entry.size {
                            report.problems.push(format!(
                                "snapshot {id}: {} has size {} but its content has {size}",
                                entry.name, entry.size
                            ));
                        }
                        continue;
                    }
                    wanted.insert(entry.sha256, (entry.size, entry.name));
                }
            }
            Err(BackupError::Storage(e)) => return Err(e.into()),
            Err(e) => report.problems.push(format!("snapshot {id}: {e}")),
        }
    }
    report.objects = wanted.len() as u64;
    let present: HashMap<String, u64> = repo.data_objects().await?;
    let mut to_read = Vec::new();
    for (sha, (size, name)) in &wanted {
        match present.get(sha) {
            None => report
                .problems
                .push(format!("{name}: missing from the repository")),
            Some(actual) if actual != size => report.problems.push(format!(
                "{name}: stored with {actual} bytes, the manifest says {size}"
            )),
            Some(_) if read.selects(sha) => to_read.push((sha.clone(), *size, name.clone())),
            Some(_) => {}
        }
    }
    let total: u64 = to_read.iter().map(|(_, size, _)| size).sum();
    progress.start("verify", to_read.len() as u64, total);
    let results: Vec<Result<Option<String>, BackupError>> = futures::stream::iter(to_read)
        .map(|(sha, size, name)| async move {
            let outcome = match repo.store.get(&ObjectName::backup_data(&sha)).await {
                Ok(stream) => match hash_stream(stream).await {
                    Ok((actual, _)) if actual == sha => Ok(None),
                    Ok(_) => Ok(Some(format!(
                        "{name}: bytes do not match the manifest's SHA-256"
                    ))),
                    Err(BackupError::Storage(StorageError::NotFound(_))) => {
                        Ok(Some(format!("{name}: missing from the repository")))
                    }
                    Err(e) => Err(e),
                },
                Err(StorageError::NotFound(_)) => {
                    Ok(Some(format!("{name}: missing from the repository")))
                }
                Err(e) => Err(e.into()),
            };
            progress.advance(size);
            outcome
        })
        .buffer_unordered(8)
        .collect()
        .await;
    progress.finish();
    for result in results {
        report.objects_read += 1;
        if let Some(problem) = result? {
            report.problems.push(problem);
        }
    }
    report.bytes_read = total;
    report.problems.sort();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_partition_the_hashes() {
        let hashes: Vec<String> = (0..200u32)
            .map(|i| format!("{:08x}{}", i * 7919, "0".repeat(56)))
            .collect();
        let t = 3;
        for sha in &hashes {
            let owners = (1..=t)
                .filter(|n| ReadData::Subset { n: *n, t }.selects(sha))
                .count();
            assert_eq!(owners, 1);
        }
        assert!(ReadData::parse_subset("0/3").is_err());
        assert!(ReadData::parse_subset("4/3").is_err());
        assert!(ReadData::parse_subset("x").is_err());
        assert_eq!(
            ReadData::parse_subset("2/5").unwrap(),
            ReadData::Subset { n: 2, t: 5 }
        );
    }
}

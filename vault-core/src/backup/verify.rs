//! Checking a repository, like `restic check`: its record names the vault's
//! pinned key (given by the caller, never read from the repository); every
//! manifest parses, is signed with that key, and its chunks match the hashes it
//! signed and its Merkle root; every object it names is present (whole with the
//! right size, or inside a present pack); with `read_data`, every pack hashes to
//! its name and each of its blobs to its record, every entry names exactly a
//! blob of its pack, and every whole object hashes to the manifest's value (or
//! only the subset `n/t` of packs and objects, by hash, like
//! `--read-data-subset`). Manifests are read a chunk at a time; the trailers of
//! the packs read are kept (48 bytes a blob).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use vault_crypto::signing::PublicKey;

use super::manifest::Location;
use super::pack::{self, PackedBlob};
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
    /// Entries the manifests name (an object in two snapshots counts twice).
    pub objects: u64,
    /// Packs and whole objects whose bytes were read and hashed.
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

/// A pack read whole: its name, and its blobs or what is wrong with it.
type PackCheck = (String, Result<Vec<PackedBlob>, String>);

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
    let packs_present: HashMap<String, u64> = repo.packs().await?;
    let (relocations, refused) = repo.relocations(vault_key).await?;
    report.problems.extend(refused);
    // 1. With --read-data, read the chosen packs whole first: each must hash to
    // its name and every blob to its trailer record. Their trailers are kept
    // (48 bytes a blob) to check the manifests' claims against in step 2.
    let mut trailers: HashMap<String, Vec<PackedBlob>> = HashMap::new();
    let chosen: Vec<(String, u64)> = packs_present
        .iter()
        .filter(|(sha, _)| read.selects(sha))
        .map(|(sha, size)| (sha.clone(), *size))
        .collect();
    let pack_bytes: u64 = chosen.iter().map(|(_, size)| size).sum();
    progress.start("verify packs", chosen.len() as u64, pack_bytes);
    let checked: Vec<Result<PackCheck, BackupError>> = futures::stream::iter(chosen)
        .map(|(sha, size)| async move {
            let name = ObjectName::backup_pack(&sha);
            if size > pack::MAX_PACK_BYTES {
                progress.advance(size);
                return Ok((sha, Err(format!("{size} bytes: larger than any pack"))));
            }
            let outcome = match repo.store.get(&name).await {
                Ok(stream) => match crate::storage::collect(stream, size as usize + 1).await {
                    Ok(bytes) => pack::check(&bytes, &sha).map_err(|e| e.to_string()),
                    Err(StorageError::NotFound(_)) => Err("missing from the repository".to_owned()),
                    Err(e) => return Err(BackupError::from(e)),
                },
                Err(StorageError::NotFound(_)) => Err("missing from the repository".to_owned()),
                Err(e) => return Err(e.into()),
            };
            progress.advance(size);
            Ok((sha, outcome))
        })
        .buffer_unordered(4)
        .collect()
        .await;
    progress.finish();
    for result in checked {
        let (sha, outcome) = result?;
        report.objects_read += 1;
        report.bytes_read += packs_present.get(&sha).copied().unwrap_or(0);
        match outcome {
            Ok(blobs) => {
                trailers.insert(sha, blobs);
            }
            Err(problem) => report.problems.push(format!("pack {sha}: {problem}")),
        }
    }

    // 2. Every manifest, a chunk at a time: signed, chunks present and matching
    // their hashes, entries in order and matching the Merkle root; every packed
    // entry inside a present pack (and, where the pack was read, exactly one of
    // its blobs); whole objects gathered for step 3.
    // hash -> (size, first object naming it)
    let mut wanted: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut missing_packs: BTreeSet<String> = BTreeSet::new();
    for id in &ids {
        let manifest = match repo.manifest(id, vault_key).await {
            Ok(manifest) => manifest,
            Err(BackupError::Storage(e)) => return Err(e.into()),
            Err(e) => {
                report.problems.push(format!("snapshot {id}: {e}"));
                continue;
            }
        };
        report.snapshots += 1;
        let mut chunks = repo.entries(&manifest);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(BackupError::Storage(e)) => return Err(e.into()),
                Err(e) => {
                    report.problems.push(format!("snapshot {id}: {e}"));
                    break;
                }
            };
            for mut entry in chunk {
                report.objects += 1;
                match relocations.locate(&entry.location) {
                    Ok(location) => entry.location = location,
                    Err(e) => {
                        report.problems.push(format!("{}: {e}", entry.name));
                        continue;
                    }
                }
                match &entry.location {
                    Location::Whole => {
                        if let Some((size, _)) = wanted.get(&entry.sha256) {
                            if *size != entry.size {
                                report.problems.push(format!(
                                    "snapshot {id}: {} has size {} but its content has {size}",
                                    entry.name, entry.size
                                ));
                            }
                            continue;
                        }
                        wanted.insert(entry.sha256.clone(), (entry.size, entry.name.clone()));
                    }
                    Location::Packed { pack, offset } => {
                        let Some(pack_size) = packs_present.get(pack) else {
                            if missing_packs.insert(pack.clone()) {
                                report.problems.push(format!(
                                    "{}: its pack {pack} is missing from the repository",
                                    entry.name
                                ));
                            }
                            continue;
                        };
                        if offset.saturating_add(entry.size) > *pack_size {
                            report.problems.push(format!(
                                "snapshot {id}: {} lies outside its pack {pack}",
                                entry.name
                            ));
                        } else if let Some(blobs) = trailers.get(pack) {
                            let found = blobs
                                .binary_search_by_key(offset, |b| b.offset)
                                .ok()
                                .map(|i| &blobs[i]);
                            let matches = found.is_some_and(|b| {
                                b.length == entry.size && hex::encode(b.sha256) == entry.sha256
                            });
                            if !matches {
                                report.problems.push(format!(
                                    "snapshot {id}: {}: its pack {pack} holds other bytes at its offset",
                                    entry.name
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    // 3. Whole objects (v1 snapshots, large objects): present with their size,
    // and with --read-data their bytes hash right.
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
    report.bytes_read += total;
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

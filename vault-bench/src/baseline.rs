//! The baselines, measured in the same run on the same bytes: files written with
//! fsync (and read back) on the filesystem of the vault's data directory, the bare
//! AES-256-GCM-SIV AEAD in 64 KiB chunks, a plaintext Tantivy index of the same
//! field values, and restic backing up and restoring the same plaintext files.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use anyhow::{bail, Context};
use bytes::Bytes;

use crate::stats::{run_threads, Summary, Timed};

/// Syncs a directory (a new name in it is durable only then).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes one file durably: create, write, fsync the file, fsync its directory.
pub fn write_durable(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(body)?;
    f.sync_all()?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `bodies[i]` to `paths[i]` durably at this concurrency (the fsync'd
/// file-write baseline of an upload).
pub fn write_files(
    paths: &[PathBuf],
    bodies: &[Bytes],
    concurrency: usize,
) -> anyhow::Result<Timed> {
    for dir in paths
        .iter()
        .filter_map(|p| p.parent())
        .collect::<BTreeSet<_>>()
    {
        std::fs::create_dir_all(dir)?;
    }
    run_threads(paths.len(), concurrency, |i| {
        write_durable(&paths[i], &bodies[i]).with_context(|| paths[i].display().to_string())?;
        Ok(bodies[i].len() as u64)
    })
}

/// Reads whole files at this concurrency (the download baseline).
pub fn read_files(paths: &[PathBuf], concurrency: usize) -> anyhow::Result<Timed> {
    run_threads(paths.len(), concurrency, |i| {
        Ok(std::fs::read(&paths[i])?.len() as u64)
    })
}

/// Reads `(offset, len)` ranges of one file, one at a time (the ranged-read
/// baseline).
pub fn read_ranges(path: &Path, ranges: &[(u64, usize)]) -> anyhow::Result<Timed> {
    let file = File::open(path)?;
    run_threads(ranges.len(), 1, |i| {
        let (offset, len) = ranges[i];
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(len as u64)
    })
}

/// Writes a stream of chunks to one file and fsyncs it: the baseline of the large
/// upload. Returns the summary (one operation) and the SHA-256 of the bytes.
pub fn write_stream(
    path: &Path,
    chunks: impl Iterator<Item = Vec<u8>>,
) -> anyhow::Result<(Summary, [u8; 32])> {
    use sha2::Digest as _;
    let started = Instant::now();
    let mut hash_time = std::time::Duration::ZERO;
    let mut f = File::create(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut bytes = 0u64;
    for chunk in chunks {
        f.write_all(&chunk)?;
        // Hashing is for checking the vault's answer, not part of the baseline.
        let t = Instant::now();
        hasher.update(&chunk);
        hash_time += t.elapsed();
        bytes += chunk.len() as u64;
    }
    f.sync_all()?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    let wall = started.elapsed().saturating_sub(hash_time);
    Ok((
        Summary::new(vec![wall.as_secs_f64() * 1e3], bytes, wall),
        hasher.finalize().into(),
    ))
}

/// Chunk size of the AEAD baseline (the vault's segment size).
pub const AEAD_CHUNK: usize = 64 * 1024;

/// Encrypts every body with the bare AES-256-GCM-SIV AEAD in 64 KiB chunks, on one
/// thread (one key, a counter nonce; no key derivation, header or I/O).
pub fn aead(bodies: &[Bytes]) -> anyhow::Result<Summary> {
    let cipher = Aes256GcmSiv::new(&[7u8; 32].into());
    let mut buf = Vec::with_capacity(AEAD_CHUNK);
    let mut counter = 0u64;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(bodies.len());
    let mut bytes = 0u64;
    for body in bodies {
        let t = Instant::now();
        for chunk in body.chunks(AEAD_CHUNK) {
            buf.clear();
            buf.extend_from_slice(chunk);
            counter += 1;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&counter.to_be_bytes());
            let tag = cipher
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut buf)
                .map_err(|_| anyhow::anyhow!("AEAD encryption failed"))?;
            std::hint::black_box((&buf, tag));
        }
        bytes += body.len() as u64;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Summary::new(latencies, bytes, started.elapsed()))
}

/// The plaintext Tantivy baseline (shared with `index/benches/search.rs`).
pub use vault_index::plaintext_baseline::PlainIndex;

/// restic backing up and restoring a directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restic {
    /// `restic version`.
    pub version: String,
    /// The backup (one operation; bytes are the plaintext bytes).
    pub backup: Summary,
    /// The restore of that snapshot into an empty directory.
    pub restore: Summary,
    /// Size of the repository after the backup.
    pub repository_bytes: u64,
}

/// Total size of the files under `dir`.
pub fn tree_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            tree_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `restic version`, or `None` when the binary is missing.
pub fn restic_version() -> Option<String> {
    Command::new("restic")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Backs `source` up into a new repository under `work`, then restores it; both
/// timed. The restored copy and the repository are removed afterwards.
pub fn restic(source: &Path, work: &Path, version: String) -> anyhow::Result<Restic> {
    let repo = work.join("restic-repo");
    let target = work.join("restic-restore");
    let cache = work.join("restic-cache");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("restic")
            .args(["--repo"])
            .arg(&repo)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--quiet")
            .args(args)
            .env("RESTIC_PASSWORD", "vault-bench")
            .env_remove("RESTIC_REPOSITORY")
            .output()
            .context("run restic")?;
        if !out.status.success() {
            bail!(
                "restic {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let bytes = tree_bytes(source)?;
    run(&["init"])?;
    let source_arg = source.to_string_lossy().into_owned();
    let t = Instant::now();
    run(&["backup", &source_arg])?;
    let wall = t.elapsed();
    let backup = Summary::new(vec![wall.as_secs_f64() * 1e3], bytes, wall);
    let repository_bytes = tree_bytes(&repo)?;
    let target_arg = target.to_string_lossy().into_owned();
    let t = Instant::now();
    run(&["restore", "latest", "--target", &target_arg])?;
    let wall = t.elapsed();
    let restored = tree_bytes(&target)?;
    if restored != bytes {
        bail!("restic restored {restored} bytes of {bytes}");
    }
    let restore = Summary::new(vec![wall.as_secs_f64() * 1e3], bytes, wall);
    let _ = std::fs::remove_dir_all(&target);
    let _ = std::fs::remove_dir_all(&repo);
    let _ = std::fs::remove_dir_all(&cache);
    Ok(Restic {
        version,
        backup,
        restore,
        repository_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_writes_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..5).map(|i| dir.path().join(format!("d/{i}"))).collect();
        let bodies: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let s = write_files(&paths, &bodies, 2).unwrap().summary();
        assert_eq!((s.ops, s.bytes), (5, 5000));
        assert_eq!(std::fs::read(&paths[3]).unwrap(), vec![3u8; 1000]);
        assert_eq!(read_files(&paths, 3).unwrap().bytes, 5000);
        assert_eq!(
            read_ranges(&paths[0], &[(10, 100), (0, 1000)])
                .unwrap()
                .bytes,
            1100
        );
        assert_eq!(tree_bytes(dir.path()).unwrap(), 5000);
        let (s, hash) = write_stream(&dir.path().join("big"), (0..3).map(|i| vec![i; 10])).unwrap();
        assert_eq!(s.bytes, 30);
        use sha2::Digest as _;
        let expected: [u8; 32] =
            sha2::Sha256::digest([[0u8; 10], [1; 10], [2; 10]].concat()).into();
        assert_eq!(hash, expected);
    }

    #[test]
    fn aead_counts_bytes() {
        let s = aead(&[Bytes::from(vec![1u8; 100_000]), Bytes::from(vec![2u8; 10])]).unwrap();
        assert_eq!((s.ops, s.bytes), (2, 100_010));
    }
}

//! Backups: snapshots of ciphertext into a content-addressed repository, retention,
//! verification, restore and the disaster-recovery drill.
//!
//! A backup never needs a data key: it copies the store's objects (bodies, key
//! records, facts, tenant key records, audit segments) and the sealed local
//! keystore as they are, each named in the repository by the SHA-256 of its bytes,
//! so an object already there is never copied again. A snapshot exists when its
//! manifest ([`manifest`]) exists; the manifest is written last, create-only and
//! signed with the vault's Ed25519 key, so an interrupted backup leaves only
//! unreferenced data objects, which the next backup reuses and a prune removes.
//!
//! - [`repo`]: the repository (a directory or an S3 prefix) and its record.
//! - [`snapshot`]: taking a snapshot.
//! - [`retention`]: keep-last/daily/weekly/monthly/within and the prune.
//! - [`restore`]: restoring a snapshot into an empty store, hash-checked.
//! - [`tombstones`]: which deleted documents a restore leaves out.
//! - [`verify`]: checking a repository's structure and, optionally, its data.
//! - [`drill`]: restore, verify, open, decrypt, index and search a scratch vault.
//! - [`schedule`]: the server's cron-driven backup job and its status.

pub mod drill;
pub mod lock;
pub mod manifest;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod snapshot;
pub mod tombstones;
pub mod verify;

use crate::storage::StorageError;

/// Backup failures. Messages name snapshots and objects (no PHI), never contents.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The repository or the vault store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A manifest is not a valid v1 manifest.
    #[error("manifest is invalid: {0}")]
    BadManifest(String),
    /// A manifest's signature does not verify.
    #[error("manifest {0}: signature does not verify")]
    BadSignature(String),
    /// A manifest was signed by another vault than this repository's.
    #[error("manifest {0} was signed by another vault")]
    ForeignManifest(String),
    /// The repository's record names another key than the vault's.
    #[error("the backup repository belongs to another vault: its record names key {recorded}..., this vault's key is {expected}...")]
    ForeignRepository {
        /// Start of the key the record names (hex).
        recorded: String,
        /// Start of the vault's key (hex).
        expected: String,
    },
    /// The repository's record is missing or unreadable.
    #[error("backup repository: {0}")]
    Repository(String),
    /// No such snapshot.
    #[error("snapshot {0} not found")]
    UnknownSnapshot(String),
    /// The restore target already holds objects.
    #[error("the target store is not empty (use --allow-non-empty to resume a restore)")]
    TargetNotEmpty,
    /// An object's bytes do not match the manifest.
    #[error("object {name}: {problem}")]
    Mismatch {
        /// The object.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Another backup or prune is running.
    #[error("a backup or prune is already running")]
    Busy,
    /// Another server holds the repository's lock.
    #[error("the backup repository is locked by {holder} ({operation}, since {since})")]
    Locked {
        /// Host and data directory of the holder.
        holder: String,
        /// What it is doing.
        operation: String,
        /// Since when.
        since: time::OffsetDateTime,
    },
    /// This server has no backup repository (`[backup] target`).
    #[error("no backup target is configured ([backup] target)")]
    NotConfigured,
    /// Bad settings or arguments.
    #[error("{0}")]
    Invalid(String),
    /// Local files (keystore, scratch directory).
    #[error("{0}")]
    Io(String),
    /// Anything else (serialisation).
    #[error("internal: {0}")]
    Internal(String),
}

impl BackupError {
    /// Whether trying again may succeed (a store that failed or timed out).
    pub fn is_transient(&self) -> bool {
        matches!(self, BackupError::Storage(StorageError::Backend(_)))
    }
}

impl From<BackupError> for crate::Error {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Busy => {
                crate::Error::conflict("backup_running", "a backup or prune is running")
            }
            locked @ BackupError::Locked { .. } => {
                crate::Error::conflict("backup_running", locked.to_string())
            }
            BackupError::UnknownSnapshot(id) => {
                crate::Error::not_found("snapshot_not_found", format!("snapshot {id} not found"))
            }
            not_configured @ BackupError::NotConfigured => {
                crate::Error::conflict("backup_not_configured", not_configured.to_string())
            }
            BackupError::Invalid(message) => {
                crate::Error::invalid("invalid_backup_request", message)
            }
            other => crate::Error::Unavailable {
                code: "backup_failed",
                message: other.to_string(),
                retry_after: None,
                cause: Some(other.to_string()),
            },
        }
    }
}

pub use crate::progress::{NoProgress, Progress};

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

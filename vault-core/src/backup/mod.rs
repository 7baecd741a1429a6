//! Backups: snapshots of ciphertext into a content-addressed repository, retention,
//! verification, restore and the disaster-recovery drill.
//!
//! A backup never needs a data key: it copies the store's objects (bodies, key
//! records, facts, tenant key records, audit segments) and the sealed local
//! keystore as they are. Repository format v2 packs small objects into pack
//! files of about 16 MiB ([`pack`]) and keeps large ones whole under their
//! SHA-256; a snapshot's entries (name, size, hash, where) are written in
//! content-addressed chunks ([`chunk`]), and an object the previous snapshot
//! holds unchanged is never read or copied again. A snapshot exists when its
//! manifest ([`manifest`]) exists; the manifest is written last, create-only and
//! signed with the vault's Ed25519 key, so an interrupted backup leaves only
//! unreferenced packs and chunks, which a prune removes. Format v1 repositories
//! (one object per vault object under `data/`) are still read, restored,
//! verified and pruned, and a v2 backup into one reuses their objects.
//!
//! - [`repo`]: the repository (a directory or an S3 prefix) and its record.
//! - [`pack`], [`chunk`]: the pack and manifest-chunk formats.
//! - [`snapshot`]: taking a snapshot.
//! - [`retention`]: keep-last/daily/weekly/monthly/within and the prune.
//! - [`restore`]: restoring a snapshot into an empty store, hash-checked.
//! - [`tombstones`]: which deleted documents a restore leaves out.
//! - [`verify`]: checking a repository's structure and, optionally, its data.
//! - [`drill`]: restore, verify, open, decrypt, index and search a scratch vault.
//! - [`schedule`]: the server's cron-driven backup job and its status.

pub mod chunk;
pub mod drill;
pub mod lock;
pub mod manifest;
pub mod pack;
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
    /// A pack is malformed or does not match its name.
    #[error("pack is invalid: {0}")]
    BadPack(String),
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

    /// Whether reading a manifest failed because the file under `snapshots/` is
    /// no snapshot of this vault (damaged, unsigned, another vault's, gone),
    /// rather than because the store failed.
    pub fn is_not_a_snapshot(&self) -> bool {
        matches!(
            self,
            BackupError::BadManifest(_)
                | BackupError::BadSignature(_)
                | BackupError::ForeignManifest(_)
                | BackupError::UnknownSnapshot(_)
        )
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use vault_crypto::signing::{PublicKey, SigningKey};
    use vault_crypto::{DocumentId, Key256, TenantId};

    use super::pack;
    use super::repo::Repository;
    use super::restore::{plan, restore, Target};
    use super::retention::{prune, KeepPolicy};
    use super::snapshot::{run, Selection, Source};
    use super::verify::{verify, ReadData};
    use super::NoProgress;
    use crate::storage::fs::FsStore;
    use crate::storage::{list_all, ObjectName, ObjectStore};

    fn fixture_signer() -> SigningKey {
        SigningKey::from_seed(&Key256::from_bytes([7; 32]))
    }

    fn fixture_key() -> PublicKey {
        fixture_signer().public_key()
    }

    async fn open(dir: &std::path::Path) -> Repository {
        Repository {
            store: Arc::new(FsStore::open(dir).await.unwrap()),
            location: dir.display().to_string(),
            lock: None,
        }
    }

    async fn names(store: &dyn ObjectStore) -> Vec<String> {
        list_all(store, "", None)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name.as_str().to_owned())
            .collect()
    }

    async fn restore_into(
        repo: &Repository,
        key: &PublicKey,
        id: &str,
        to: &std::path::Path,
    ) -> FsStore {
        let target = FsStore::open(to).await.unwrap();
        let manifest = repo.manifest(id, key).await.unwrap();
        let plan = plan(repo, key, manifest).await.unwrap();
        let report = restore(
            repo,
            &plan,
            &Target {
                store: &target,
                keystore_file: None,
                allow_non_empty: false,
            },
            &NoProgress,
        )
        .await
        .unwrap();
        assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
        target
    }

    /// A whole-vault snapshot of `source` into `repo`, signed by `signer`.
    async fn take_snapshot(
        source: &FsStore,
        repo: &Repository,
        signer: &SigningKey,
    ) -> super::manifest::SnapshotInfo {
        run(
            Source {
                store: source,
                label: "fs".into(),
                signer,
            },
            repo,
            &Selection::default(),
            &NoProgress,
        )
        .await
        .unwrap()
    }

    const DELETED: &str = "1b2c3d4e5f60718293a4b5c6d7e8f90a";

    /// The checked-in v1 repository verifies (with its data), restores (the
    /// document deleted before the second snapshot left out of the first), and
    /// prunes: forgetting the first snapshot removes exactly the objects only it
    /// named.
    #[tokio::test]
    async fn a_v1_repository_verifies_restores_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        copy_v1_fixture(&dir.path().join("repo"));
        let repo = open(&dir.path().join("repo")).await;
        let key = fixture_key();
        let report = verify(&repo, &key, None, ReadData::All, &NoProgress)
            .await
            .unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.snapshots, 2);
        let ids = repo.snapshot_ids().await.unwrap();
        let first = restore_into(&repo, &key, &ids[0], &dir.path().join("first")).await;
        let restored = names(&first).await;
        assert!(!restored
            .iter()
            .any(|n| n.contains(DELETED) && !n.contains("tombstones")));
        assert!(restored
            .iter()
            .any(|n| n.ends_with(&format!("tombstones/{DELETED}"))));
        assert_eq!(
            first
                .get_bytes(
                    &ObjectName::parse("tenants/acme/docs/0a1b2c3d4e5f60718293a4b5c6d7e8f9/body")
                        .unwrap()
                )
                .await
                .unwrap()
                .unwrap(),
            Bytes::from(vec![0xa5; 5000])
        );

        let before = repo.data_objects().await.unwrap().len();
        let pruned = prune(
            &repo,
            &fixture_signer(),
            &KeepPolicy {
                keep_last: 1,
                ..KeepPolicy::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(pruned.removed, [ids[0].clone()]);
        // The deleted document's three objects were named by the first only.
        assert_eq!(pruned.data_objects_deleted, 3);
        assert_eq!(repo.data_objects().await.unwrap().len(), before - 3);
        let report = verify(&repo, &key, None, ReadData::All, &NoProgress)
            .await
            .unwrap();
        assert!(report.ok(), "{:?}", report.problems);
    }

    async fn vault_with_documents(
        dir: &std::path::Path,
        count: usize,
    ) -> (FsStore, Vec<DocumentId>) {
        let store = FsStore::open(dir).await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let mut docs = Vec::new();
        for i in 0..count {
            let doc = DocumentId::random();
            for (name, len) in [
                (ObjectName::doc_body(&tenant, &doc), 2000 + i),
                (ObjectName::doc_key(&tenant, &doc), 300),
                (ObjectName::doc_meta(&tenant, &doc), 200),
            ] {
                let bytes: Vec<u8> = (0..len).map(|_| rand::random()).collect();
                store
                    .put_new_bytes(&name, Bytes::from(bytes))
                    .await
                    .unwrap();
            }
            docs.push(doc);
        }
        (store, docs)
    }

    /// v2 end to end in the library: back up, verify with data, restore
    /// byte-for-byte; a flipped byte in a pack and a missing pack are found.
    #[tokio::test]
    async fn a_v2_snapshot_verifies_restores_and_tampering_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _) = vault_with_documents(&dir.path().join("vault"), 50).await;
        let repo = open(&dir.path().join("repo")).await;
        let signer = SigningKey::from_seed(&Key256::from_bytes([9; 32]));
        let key = signer.public_key();
        let info = run(
            Source {
                store: &source,
                label: "fs".into(),
                signer: &signer,
            },
            &repo,
            &Selection::default(),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(info.objects, 150);
        let report = verify(&repo, &key, None, ReadData::All, &NoProgress)
            .await
            .unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.objects, 150);
        let restored =
            restore_into(&repo, &key, &info.snapshot, &dir.path().join("restored")).await;
        let original = names(&source).await;
        assert_eq!(names(&restored).await, original);
        for name in &original {
            let name = ObjectName::parse(name).unwrap();
            assert_eq!(
                restored.get_bytes(&name).await.unwrap(),
                source.get_bytes(&name).await.unwrap()
            );
        }

        let (pack, _) = repo.packs().await.unwrap().into_iter().next().unwrap();
        let pack_name = ObjectName::backup_pack(&pack);
        let original_pack = repo.store.get_bytes(&pack_name).await.unwrap().unwrap();
        let mut flipped = original_pack.to_vec();
        flipped[1000] ^= 0x40;
        repo.store.delete(&pack_name).await.unwrap();
        repo.store
            .put_new_bytes(&pack_name, Bytes::from(flipped))
            .await
            .unwrap();
        let report = verify(&repo, &key, None, ReadData::All, &NoProgress)
            .await
            .unwrap();
        assert!(!report.ok());
        // Without reading data, a flipped byte is not seen; a restore refuses it.
        let target = FsStore::open(&dir.path().join("tampered")).await.unwrap();
        let manifest = repo.manifest(&info.snapshot, &key).await.unwrap();
        let restore_plan = plan(&repo, &key, manifest).await.unwrap();
        let report = restore(
            &repo,
            &restore_plan,
            &Target {
                store: &target,
                keystore_file: None,
                allow_non_empty: false,
            },
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(report.mismatches.len(), 1, "{:?}", report.mismatches);

        repo.store.delete(&pack_name).await.unwrap();
        let report = verify(&repo, &key, None, ReadData::None, &NoProgress)
            .await
            .unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains("missing")),
            "{:?}",
            report.problems
        );
    }

    /// Pruning a v2 repository deletes the packs and chunks only forgotten
    /// snapshots named, keeps the rest whole, and what remains verifies.
    #[tokio::test]
    async fn pruning_v2_removes_what_only_forgotten_snapshots_named() {
        let dir = tempfile::tempdir().unwrap();
        let vault_dir = dir.path().join("vault");
        let (source, docs) = vault_with_documents(&vault_dir, 40).await;
        let repo = open(&dir.path().join("repo")).await;
        let signer = SigningKey::from_seed(&Key256::from_bytes([9; 32]));
        let key = signer.public_key();
        take_snapshot(&source, &repo, &signer).await;
        // Every document goes, new ones come: the second snapshot names none of
        // the first's objects.
        let tenant = TenantId::new("acme").unwrap();
        for doc in &docs {
            for name in [
                ObjectName::doc_body(&tenant, doc),
                ObjectName::doc_key(&tenant, doc),
                ObjectName::doc_meta(&tenant, doc),
            ] {
                source.delete(&name).await.unwrap();
            }
        }
        drop(vault_with_documents(&vault_dir, 10).await);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        take_snapshot(&source, &repo, &signer).await;
        assert_eq!(repo.packs().await.unwrap().len(), 2);
        let pruned = prune(
            &repo,
            &signer,
            &KeepPolicy {
                keep_last: 1,
                ..KeepPolicy::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(pruned.removed.len(), 1);
        // The first snapshot's pack and chunk.
        assert_eq!(pruned.data_objects_deleted, 2);
        assert_eq!(repo.packs().await.unwrap().len(), 1);
        let report = verify(&repo, &key, None, ReadData::All, &NoProgress)
            .await
            .unwrap();
        assert!(report.ok(), "{:?}", report.problems);
    }

    /// A relocation record the vault did not sign (planted, or of the unsigned
    /// format 1) is never followed: verify reports it, a prune refuses to delete
    /// anything while it is there, and backups and restores go on as if it were
    /// not (attack report F1: a planted record made a prune delete a live pack).
    #[tokio::test]
    async fn a_relocation_record_the_vault_did_not_sign_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _) = vault_with_documents(&dir.path().join("vault"), 30).await;
        let repo = open(&dir.path().join("repo")).await;
        let signer = SigningKey::from_seed(&Key256::from_bytes([9; 32]));
        let key = signer.public_key();
        take_snapshot(&source, &repo, &signer).await;
        let live_pack = repo.packs().await.unwrap().into_keys().next().unwrap();
        let forger = SigningKey::from_seed(&Key256::from_bytes([8; 32]));
        let planted = pack::Relocation {
            moves: vec![(pack::HEADER_LEN, "ab".repeat(32), pack::HEADER_LEN)],
        };
        let unsigned_v1 = include_bytes!("../../tests/fixtures/backup-pack-v1/relocation").to_vec();
        for record in [planted.encode(&live_pack, &forger).unwrap(), unsigned_v1] {
            let name = ObjectName::backup_relocation(&live_pack);
            repo.store
                .put_new_bytes(&name, Bytes::from(record))
                .await
                .unwrap();
            let report = verify(&repo, &key, None, ReadData::None, &NoProgress)
                .await
                .unwrap();
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.contains("relocation record")),
                "{:?}",
                report.problems
            );
            let refused = prune(
                &repo,
                &signer,
                &KeepPolicy {
                    keep_last: 1,
                    ..KeepPolicy::default()
                },
            )
            .await
            .unwrap_err();
            assert!(refused.to_string().contains("deletes nothing"), "{refused}");
            assert!(repo.packs().await.unwrap().contains_key(&live_pack));
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            let info = take_snapshot(&source, &repo, &signer).await;
            let restored = dir.path().join(format!("restored-{}", info.snapshot));
            restore_into(&repo, &key, &info.snapshot, &restored).await;
            repo.store.delete(&name).await.unwrap();
        }
        let report = verify(&repo, &key, None, ReadData::All, &NoProgress)
            .await
            .unwrap();
        assert!(report.ok(), "{:?}", report.problems);
    }

    /// A file under `snapshots/` that is no snapshot of this vault, named to
    /// sort last, is skipped as the latest: backups go on from the real one
    /// (attack report F3). A restore still refuses to run while it is there:
    /// a newer snapshot's tombstones keep deleted documents out, so one that
    /// cannot be read is for the operator to look at, not to skip.
    #[tokio::test]
    async fn a_planted_far_future_snapshot_is_not_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _) = vault_with_documents(&dir.path().join("vault"), 10).await;
        let repo = open(&dir.path().join("repo")).await;
        let signer = SigningKey::from_seed(&Key256::from_bytes([9; 32]));
        let key = signer.public_key();
        let first = take_snapshot(&source, &repo, &signer).await;
        let planted = "20991231-235959-ffffffff";
        repo.store
            .put_new_bytes(
                &ObjectName::backup_snapshot(planted),
                Bytes::from_static(b"garbage"),
            )
            .await
            .unwrap();
        let (latest, skipped) = repo.latest_verifying(&key).await.unwrap();
        assert_eq!(latest.unwrap().snapshot, first.snapshot);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].contains(planted), "{skipped:?}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let second = take_snapshot(&source, &repo, &signer).await;
        assert_eq!(second.parent.as_deref(), Some(first.snapshot.as_str()));
        let manifest = repo.manifest(&second.snapshot, &key).await.unwrap();
        let refused = plan(&repo, &key, manifest).await.unwrap_err();
        assert!(refused.is_not_a_snapshot(), "{refused}");
        repo.store
            .delete(&ObjectName::backup_snapshot(planted))
            .await
            .unwrap();
        restore_into(&repo, &key, &second.snapshot, &dir.path().join("restored")).await;
    }

    /// Copies the checked-in v1 repository (two snapshots of the key `[7; 32]`,
    /// the second after a document was deleted) to `to`, for tests that change it.
    pub(crate) fn copy_v1_fixture(to: &std::path::Path) {
        let from =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backup-repo-v1");
        copy_dir(&from, to);
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
}

//! Deleted documents in backups: which objects a restore leaves out.
//!
//! Deleting a document writes its tombstone (`tenants/<t>/tombstones/<doc>`) before
//! any of its objects is removed, and backups copy tombstones like any other
//! object. A snapshot taken before the delete still holds the document's body and
//! key record, so restoring it would bring the document back. A restore of snapshot
//! S therefore leaves out every object of a document whose tombstone is named in S
//! or in any snapshot of the same repository newer than S (their manifests' entry
//! names suffice: a tombstone's name carries the tenant and document ids), and
//! restores those tombstones (the newer snapshots' too), so the restored vault
//! knows of the deletes and its own backups carry them on.
//!
//! The limit: a repository that holds no snapshot taken after the delete (they were
//! pruned, or S is copied alone elsewhere) does not know of it, and restoring S
//! brings the document back. Only offboarding (crypto-shredding the tenant's keys)
//! reaches every copy.

use std::collections::{BTreeMap, HashSet};

use vault_crypto::signing::PublicKey;
use vault_crypto::DocumentId;

use super::manifest::{Entry, VerifiedManifest};
use super::repo::Repository;
use super::BackupError;
use crate::storage::ObjectName;

/// Deleted documents, by tenant and document id, and the manifest entries of
/// their tombstones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tombstones {
    deleted: HashSet<(String, DocumentId)>,
    entries: BTreeMap<String, Entry>,
}

impl Tombstones {
    /// Adds the documents whose tombstones these entries name.
    pub fn add_entries(&mut self, entries: &[Entry]) {
        for entry in entries {
            if let Some((tenant, doc)) = ObjectName::tombstone_of(&entry.name) {
                self.deleted.insert((tenant.to_owned(), doc));
                self.entries
                    .entry(entry.name.clone())
                    .or_insert_with(|| entry.clone());
            }
        }
    }

    /// The tombstones' entries (from whichever snapshot named each first).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Whether `name` is an object of a deleted document (its body, key record,
    /// facts or legal hold; never its tombstone).
    pub fn covers(&self, name: &str) -> bool {
        ObjectName::document_object_of(name)
            .is_some_and(|(tenant, doc)| self.deleted.contains(&(tenant.to_owned(), doc)))
    }

    /// How many deleted documents.
    pub fn len(&self) -> usize {
        self.deleted.len()
    }

    /// Whether no document is deleted.
    pub fn is_empty(&self) -> bool {
        self.deleted.is_empty()
    }

    /// Counts, per tenant, the documents that restoring `entries` (a chunk of a
    /// manifest's) brings back: the `meta` objects, less those of documents
    /// deleted here.
    pub fn count_documents(&self, entries: &[Entry], counts: &mut BTreeMap<String, u64>) {
        for entry in entries {
            if let Some(rest) = entry.name.strip_prefix("tenants/") {
                if let Some((tenant, doc)) = rest.split_once("/docs/") {
                    if doc.ends_with("/meta") && !self.covers(&entry.name) {
                        *counts.entry(tenant.to_owned()).or_insert(0) += 1;
                    }
                }
            }
        }
    }
}

/// The snapshots of `ids` (a repository's, oldest first) that may be newer than
/// `snapshot`: those of a later second, and those of the same second (ids carry
/// the time to the second, then a random part, so a sibling of the same second may
/// be either; its tombstones are taken too, which is safe: a document id is never
/// reused, so a tombstone anywhere means the document is gone).
pub fn newer_snapshots<'a>(ids: &'a [String], snapshot: &str) -> Vec<&'a str> {
    let second = |id: &str| id.get(..15).map(str::to_owned).unwrap_or_default();
    let own = second(snapshot);
    ids.iter()
        .map(String::as_str)
        .filter(|id| *id != snapshot && second(id) >= own)
        .collect()
}

/// The documents deleted as far as the repository knows when restoring
/// `snapshot`: tombstones named in it and in every newer snapshot, each of whose
/// manifests must verify under the vault's pinned key.
pub async fn collect(
    repo: &Repository,
    vault_key: &PublicKey,
    snapshot: &VerifiedManifest,
) -> Result<Tombstones, BackupError> {
    let mut deleted = Tombstones::default();
    add_snapshot(repo, snapshot, &mut deleted).await?;
    let ids = repo.snapshot_ids().await?;
    for id in newer_snapshots(&ids, &snapshot.snapshot) {
        let newer = repo.manifest(id, vault_key).await?;
        add_snapshot(repo, &newer, &mut deleted).await?;
    }
    Ok(deleted)
}

/// Adds the tombstones a snapshot names, reading its entries a chunk at a time.
async fn add_snapshot(
    repo: &Repository,
    manifest: &VerifiedManifest,
    deleted: &mut Tombstones,
) -> Result<(), BackupError> {
    let mut chunks = repo.entries(manifest);
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        deleted.add_entries(&chunk?);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use vault_crypto::signing::SigningKey;
    use vault_crypto::{Key256, TenantId};

    use super::*;
    use crate::backup::manifest::Manifest;
    use crate::storage::fs::FsStore;

    fn entry(name: &ObjectName) -> Entry {
        Entry {
            name: name.as_str().to_owned(),
            size: 10,
            sha256: "a".repeat(64),
            location: crate::backup::manifest::Location::Whole,
        }
    }

    fn document(tenant: &TenantId, doc: &DocumentId) -> Vec<Entry> {
        [
            ObjectName::doc_body(tenant, doc),
            ObjectName::doc_key(tenant, doc),
            ObjectName::doc_meta(tenant, doc),
        ]
        .iter()
        .map(entry)
        .collect()
    }

    /// An unsigned manifest of `entries` (sorted), for tests of the backup modules.
    pub(crate) fn manifest(key: &SigningKey, id: &str, mut entries: Vec<Entry>) -> Manifest {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Manifest {
            snapshot: id.to_owned(),
            vault_key: key.public_key().to_hex(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            finished_at: time::OffsetDateTime::UNIX_EPOCH,
            source: "fs".into(),
            tenants: vec![],
            parent: None,
            lock: None,
            bytes_added: 0,
            merkle_root: Manifest::compute_root(&entries),
            entries,
        }
    }

    #[test]
    fn a_tombstone_covers_its_documents_objects_only() {
        let acme = TenantId::new("acme").unwrap();
        let other = TenantId::new("other").unwrap();
        let gone = DocumentId::random();
        let kept = DocumentId::random();
        let mut deleted = Tombstones::default();
        deleted.add_entries(&[entry(&ObjectName::tombstone(&acme, &gone))]);
        assert_eq!(deleted.len(), 1);
        for name in [
            ObjectName::doc_body(&acme, &gone),
            ObjectName::doc_key(&acme, &gone),
            ObjectName::doc_meta(&acme, &gone),
            ObjectName::doc_hold(&acme, &gone),
        ] {
            assert!(deleted.covers(name.as_str()), "{name}");
        }
        for name in [
            // The tombstone itself is restored.
            ObjectName::tombstone(&acme, &gone),
            ObjectName::doc_meta(&acme, &kept),
            // The same id in another tenant is another document.
            ObjectName::doc_meta(&other, &gone),
            ObjectName::tenant(&acme),
            ObjectName::audit_segment(&acme, 3),
        ] {
            assert!(!deleted.covers(name.as_str()), "{name}");
        }
    }

    #[test]
    fn newer_snapshots_are_those_of_a_later_or_the_same_second() {
        let ids: Vec<String> = [
            "20260101-000000-00000001",
            "20260102-120000-ffffffff",
            "20260102-120000-00000000",
            "20260102-120001-00000000",
            "20260203-000000-00000000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            newer_snapshots(&ids, "20260102-120000-ffffffff"),
            vec![
                "20260102-120000-00000000",
                "20260102-120001-00000000",
                "20260203-000000-00000000"
            ]
        );
        assert!(newer_snapshots(&ids, "20260203-000000-00000000").is_empty());
        assert_eq!(newer_snapshots(&ids, "20260101-000000-00000001").len(), 4);
    }

    #[test]
    fn documents_counted_for_a_restore_leave_deleted_ones_out() {
        let key = SigningKey::from_seed(&Key256::from_bytes([5; 32]));
        let acme = TenantId::new("acme").unwrap();
        let (a, b) = (DocumentId::random(), DocumentId::random());
        let mut entries = document(&acme, &a);
        entries.extend(document(&acme, &b));
        let first = manifest(&key, "20260101-000000-00000001", entries);
        let mut deleted = Tombstones::default();
        let count = |deleted: &Tombstones| {
            let mut counts = BTreeMap::new();
            deleted.count_documents(&first.entries, &mut counts);
            counts.get("acme").copied()
        };
        assert_eq!(count(&deleted), Some(2));
        deleted.add_entries(&[entry(&ObjectName::tombstone(&acme, &a))]);
        assert_eq!(count(&deleted), Some(1));
    }

    async fn repository(dir: &std::path::Path) -> Repository {
        Repository {
            store: Arc::new(FsStore::open(dir).await.unwrap()),
            location: dir.display().to_string(),
            lock: None,
        }
    }

    async fn write(repo: &Repository, key: &SigningKey, manifest: &Manifest) {
        repo.store
            .put_new_bytes(
                &ObjectName::backup_snapshot(&manifest.snapshot),
                Bytes::from(manifest.sign(key).unwrap()),
            )
            .await
            .unwrap();
    }

    /// Snapshot 1 holds A and B; A is deleted before snapshot 2, B before snapshot
    /// 3; C is uploaded after snapshot 1. Restoring 1 knows both deletes, restoring
    /// 2 knows both too (B's from 3), restoring 3 only what it holds.
    #[tokio::test]
    async fn tombstones_come_from_the_snapshot_and_every_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(dir.path()).await;
        let key = SigningKey::from_seed(&Key256::from_bytes([5; 32]));
        repo.init_or_check(&key.public_key()).await.unwrap();
        let acme = TenantId::new("acme").unwrap();
        let (a, b, c) = (
            DocumentId::random(),
            DocumentId::random(),
            DocumentId::random(),
        );
        let mut one = document(&acme, &a);
        one.extend(document(&acme, &b));
        let mut two = document(&acme, &b);
        two.extend(document(&acme, &c));
        two.push(entry(&ObjectName::tombstone(&acme, &a)));
        let mut three = document(&acme, &c);
        three.push(entry(&ObjectName::tombstone(&acme, &a)));
        three.push(entry(&ObjectName::tombstone(&acme, &b)));
        let ids = [
            "20260101-000000-00000001",
            "20260102-000000-00000002",
            "20260103-000000-00000003",
        ];
        for (id, entries) in ids.iter().zip([one, two, three]) {
            write(&repo, &key, &manifest(&key, id, entries)).await;
        }
        let pinned = key.public_key();
        let of = |id: &'static str| {
            let repo = &repo;
            async move {
                let snapshot = repo.manifest(id, &pinned).await.unwrap();
                collect(repo, &pinned, &snapshot).await.unwrap()
            }
        };
        let first = of(ids[0]).await;
        assert_eq!(first.len(), 2);
        assert!(first.covers(ObjectName::doc_meta(&acme, &a).as_str()));
        assert!(first.covers(ObjectName::doc_meta(&acme, &b).as_str()));
        assert!(!first.covers(ObjectName::doc_meta(&acme, &c).as_str()));
        assert_eq!(of(ids[1]).await, first);
        assert_eq!(of(ids[2]).await, first);

        // Without the later snapshots the repository no longer knows of A's delete.
        for id in &ids[1..] {
            repo.store
                .delete(&ObjectName::backup_snapshot(id))
                .await
                .unwrap();
        }
        assert!(of(ids[0]).await.is_empty());
    }

    /// A newer manifest that does not verify under the pinned key fails the
    /// collection: a restore never runs on a repository it cannot trust.
    #[tokio::test]
    async fn a_newer_manifest_signed_by_another_key_fails_the_collection() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(dir.path()).await;
        let key = SigningKey::from_seed(&Key256::from_bytes([5; 32]));
        let forger = SigningKey::from_seed(&Key256::from_bytes([6; 32]));
        let acme = TenantId::new("acme").unwrap();
        let a = DocumentId::random();
        let first = manifest(&key, "20260101-000000-00000001", document(&acme, &a));
        write(&repo, &key, &first).await;
        let forged = manifest(&forger, "20260102-000000-00000002", vec![]);
        write(&repo, &forger, &forged).await;
        let pinned = key.public_key();
        let snapshot = repo.manifest(&first.snapshot, &pinned).await.unwrap();
        assert!(matches!(
            collect(&repo, &pinned, &snapshot).await,
            Err(BackupError::ForeignManifest(_))
        ));
    }
}

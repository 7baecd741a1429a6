//! The snapshot manifest: what a snapshot holds and who made it.
//!
//! Format v2 (written since repository format v2) is a signed header: the
//! snapshot's facts, its totals, the Merkle root over its entries and the
//! hashes of the chunks ([`super::chunk`]) that hold the entries, so a
//! manifest of millions of objects is read one chunk at a time:
//!
//! ```text
//! vault backup manifest v2\n          FORMAT CONSTANT (the magic line)
//! {"snapshot": ..., "chunks": [...], ...}\n     the header, one JSON line
//! sig <128 hex digits>\n              Ed25519 over the magic line and the header line
//! ```
//!
//! Format v1 (still read, never written) held every entry in its one JSON line:
//!
//! ```text
//! vault backup manifest v1\n          FORMAT CONSTANT (the magic line)
//! {"snapshot": ..., "entries": [...], ...}\n     the body, one JSON line
//! sig <128 hex digits>\n              Ed25519 over the magic line and the body line
//! ```
//!
//! The signature covers the exact stored bytes (no re-serialisation before
//! verifying). Entries are sorted by name; the Merkle root (RFC 9162) is taken
//! over `leaf(name NUL size NUL sha256)` per entry, so one changed, added,
//! removed or reordered entry changes it. Names, sizes and hashes are of
//! ciphertext objects and carry no PHI.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vault_crypto::merkle;
use vault_crypto::signing::{PublicKey, SigningKey};

use super::BackupError;

/// FORMAT CONSTANT: the first line of every v1 manifest.
pub const MAGIC_V1: &str = "vault backup manifest v1";
/// FORMAT CONSTANT: the first line of every v2 manifest.
pub const MAGIC_V2: &str = "vault backup manifest v2";
/// FORMAT CONSTANT: the prefix of the signature line.
const SIGNATURE_PREFIX: &str = "sig ";
/// Largest manifest accepted when parsing (about 2 million entries).
pub const MAX_MANIFEST_BYTES: usize = 512 << 20;

/// Pseudo object name of the sealed local keystore inside a snapshot: it is not an
/// object of the store but a file of the data directory.
pub const KEYSTORE_ENTRY: &str = "local/keystore.bin";

/// Where a snapshot's object is in the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Location {
    /// Whole, as `data/<sha256>` (v1 snapshots; large objects).
    #[default]
    Whole,
    /// In a pack (`packs/<pack>`), starting at `offset`.
    Packed {
        /// The pack's SHA-256 (hex).
        pack: String,
        /// Where the object starts in it.
        offset: u64,
    },
}

/// One object of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Object name in the vault's store (or [`KEYSTORE_ENTRY`]).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the (ciphertext) bytes, hex.
    pub sha256: String,
    /// Where its bytes are (v1 manifests: always whole; a v2 chunk says).
    #[serde(skip)]
    pub location: Location,
}

impl Entry {
    /// The entry's Merkle leaf hash.
    pub fn leaf(&self) -> merkle::Hash {
        let mut data = Vec::with_capacity(self.name.len() + 96);
        data.extend_from_slice(self.name.as_bytes());
        data.push(0);
        data.extend_from_slice(self.size.to_string().as_bytes());
        data.push(0);
        data.extend_from_slice(self.sha256.as_bytes());
        merkle::leaf_hash(&data)
    }
}

/// S3 Object Lock retention applied to a snapshot's objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// `governance` or `compliance`.
    pub mode: String,
    /// Objects written by this snapshot cannot be deleted before this time.
    #[serde(with = "time::serde::rfc3339")]
    pub retain_until: OffsetDateTime,
}

/// The signed content of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Snapshot id (`YYYYMMDD-HHMMSS-<8 hex>`, sorts by time).
    pub snapshot: String,
    /// The signing vault's public key (hex): which vault made this snapshot.
    pub vault_key: String,
    /// When the snapshot's listing was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the manifest was written.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Where it came from (`fs` or `s3://bucket/prefix`; no PHI).
    pub source: String,
    /// Tenants included; empty means the whole vault.
    pub tenants: Vec<String>,
    /// The snapshot this one was made incrementally from, if any.
    pub parent: Option<String>,
    /// Object Lock retention of the objects this snapshot wrote.
    pub lock: Option<LockInfo>,
    /// Bytes this snapshot copied to the repository (new objects only).
    pub bytes_added: u64,
    /// Merkle root (hex) over the entries.
    pub merkle_root: String,
    /// Every object, sorted by name.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Total size of the snapshot's objects.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The Merkle root of these entries (hex).
    pub fn compute_root(entries: &[Entry]) -> String {
        let leaves: Vec<merkle::Hash> = entries.iter().map(Entry::leaf).collect();
        hex::encode(merkle::root(&leaves))
    }

    /// Serialises and signs.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, BackupError> {
        sign_as(MAGIC_V1, self, key)
    }

    /// Parses a stored manifest (either format) and checks it against the
    /// vault's pinned public key `expected` (never a key taken from the
    /// repository or the manifest): it must name that key and carry its
    /// signature over the exact bytes; a v1 manifest's entries must be sorted
    /// and match their Merkle root (a v2 manifest's are checked as its chunks
    /// are read, see [`VerifiedManifest::check_chunk`]).
    pub fn parse_and_verify(
        bytes: &[u8],
        expected: &PublicKey,
    ) -> Result<VerifiedManifest, BackupError> {
        let bad = |reason: &str| BackupError::BadManifest(reason.to_owned());
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(bad("manifest too large"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.split_inclusive('\n');
        let magic = lines
            .next()
            .ok_or_else(|| bad("empty"))?
            .trim_end_matches('\n');
        if magic != MAGIC_V1 && magic != MAGIC_V2 {
            return Err(bad("unknown format (first line)"));
        }
        let body = lines.next().ok_or_else(|| bad("no body line"))?;
        let sig_line = lines.next().ok_or_else(|| bad("no signature line"))?;
        if lines.next().is_some() || !sig_line.ends_with('\n') || !body.ends_with('\n') {
            return Err(bad("trailing data"));
        }
        let body = body.trim_end_matches('\n');
        let signature: [u8; 64] = sig_line
            .trim_end_matches('\n')
            .strip_prefix(SIGNATURE_PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("malformed signature line"))?;
        let (info, body_kind) = if magic == MAGIC_V1 {
            let manifest: Manifest =
                serde_json::from_str(body).map_err(|e| bad(&format!("body: {e}")))?;
            let info = SnapshotInfo {
                format: 1,
                objects: manifest.entries.len() as u64,
                bytes: manifest.total_bytes(),
                snapshot: manifest.snapshot,
                vault_key: manifest.vault_key,
                created_at: manifest.created_at,
                finished_at: manifest.finished_at,
                source: manifest.source,
                tenants: manifest.tenants,
                parent: manifest.parent,
                lock: manifest.lock,
                bytes_added: manifest.bytes_added,
                merkle_root: manifest.merkle_root,
            };
            (info, Body::Inline(manifest.entries))
        } else {
            let header: ManifestV2 =
                serde_json::from_str(body).map_err(|e| bad(&format!("body: {e}")))?;
            let (info, chunks) = header.split();
            (info, Body::Chunks(chunks))
        };
        if info.vault_key != expected.to_hex() {
            return Err(BackupError::ForeignManifest(info.snapshot));
        }
        expected
            .verify(&signed_bytes(magic, body), &signature)
            .map_err(|_| BackupError::BadSignature(info.snapshot.clone()))?;
        match &body_kind {
            Body::Inline(entries) => {
                if !entries.windows(2).all(|w| w[0].name < w[1].name) {
                    return Err(bad("entries not sorted or duplicated"));
                }
                if entries.iter().any(|e| !is_sha256_hex(&e.sha256)) {
                    return Err(bad("entry hash is not 64 lowercase hex digits"));
                }
                if Manifest::compute_root(entries) != info.merkle_root {
                    return Err(bad("Merkle root does not match the entries"));
                }
            }
            Body::Chunks(chunks) => {
                if chunks.iter().any(|c| !is_sha256_hex(&c.sha256)) {
                    return Err(bad("chunk hash is not 64 lowercase hex digits"));
                }
                if chunks.iter().map(|c| c.entries).sum::<u64>() != info.objects {
                    return Err(bad("the chunks' entries do not add up to the objects"));
                }
            }
        }
        Ok(VerifiedManifest {
            info,
            body: body_kind,
        })
    }
}

/// Whether `text` is a SHA-256 in lowercase hex (it becomes part of object names).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A v2 manifest's chunk: its hash (its name in `chunks/`) and how many entries,
/// of how many bytes, it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// SHA-256 of the chunk's bytes, hex.
    pub sha256: String,
    /// Entries in it.
    pub entries: u64,
}

/// The signed header of a v2 manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestV2 {
    /// Snapshot id (`YYYYMMDD-HHMMSS-<8 hex>`, sorts by time).
    pub snapshot: String,
    /// The signing vault's public key (hex).
    pub vault_key: String,
    /// When the snapshot's listing was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the manifest was written.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Where it came from (`fs` or `s3://bucket/prefix`; no PHI).
    pub source: String,
    /// Tenants included; empty means the whole vault.
    pub tenants: Vec<String>,
    /// The snapshot this one was made incrementally from, if any.
    pub parent: Option<String>,
    /// Object Lock retention of the objects this snapshot wrote or reused.
    pub lock: Option<LockInfo>,
    /// Bytes this snapshot copied to the repository (new objects only).
    pub bytes_added: u64,
    /// Objects in the snapshot.
    pub objects: u64,
    /// Their total size.
    pub bytes: u64,
    /// Merkle root (hex) over the entries, as in v1.
    pub merkle_root: String,
    /// The chunks holding the entries, in name order.
    pub chunks: Vec<ChunkRef>,
}

impl ManifestV2 {
    /// Serialises and signs.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, BackupError> {
        sign_as(MAGIC_V2, self, key)
    }

    /// What the manifest says, its chunks aside.
    pub fn into_info(self) -> SnapshotInfo {
        self.split().0
    }

    fn split(self) -> (SnapshotInfo, Vec<ChunkRef>) {
        (
            SnapshotInfo {
                format: 2,
                snapshot: self.snapshot,
                vault_key: self.vault_key,
                created_at: self.created_at,
                finished_at: self.finished_at,
                source: self.source,
                tenants: self.tenants,
                parent: self.parent,
                lock: self.lock,
                bytes_added: self.bytes_added,
                objects: self.objects,
                bytes: self.bytes,
                merkle_root: self.merkle_root,
            },
            self.chunks,
        )
    }
}

/// What a manifest of either format says about its snapshot, entries aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Manifest format (1 or 2).
    pub format: u32,
    /// Snapshot id.
    pub snapshot: String,
    /// The signing vault's public key (hex).
    pub vault_key: String,
    /// When the snapshot's listing was taken.
    pub created_at: OffsetDateTime,
    /// When the manifest was written.
    pub finished_at: OffsetDateTime,
    /// Where it came from.
    pub source: String,
    /// Tenants included; empty means the whole vault.
    pub tenants: Vec<String>,
    /// The snapshot this one was made incrementally from.
    pub parent: Option<String>,
    /// Object Lock retention.
    pub lock: Option<LockInfo>,
    /// Bytes this snapshot copied to the repository.
    pub bytes_added: u64,
    /// Objects in it.
    pub objects: u64,
    /// Their total size.
    pub bytes: u64,
    /// Merkle root (hex) over the entries.
    pub merkle_root: String,
}

/// Where a verified manifest's entries are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// v1: in the manifest itself.
    Inline(Vec<Entry>),
    /// v2: in chunks, read one at a time.
    Chunks(Vec<ChunkRef>),
}

/// A manifest whose signature verified under the vault's pinned public key. Only
/// [`Manifest::parse_and_verify`] makes one, and restores take nothing else, so no
/// object is restored from a snapshot that did not verify. A v2 manifest's
/// entries are read through [`super::repo::Repository::entries`], which checks
/// each chunk against the hash this manifest signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    info: SnapshotInfo,
    body: Body,
}

impl VerifiedManifest {
    /// Where the entries are.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The snapshot's facts.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }
}

impl std::ops::Deref for VerifiedManifest {
    type Target = SnapshotInfo;

    fn deref(&self) -> &SnapshotInfo {
        &self.info
    }
}

/// The stored bytes of a manifest: the magic line, the body as one JSON line,
/// and the signature line over both.
fn sign_as(magic: &str, body: &impl Serialize, key: &SigningKey) -> Result<Vec<u8>, BackupError> {
    let body = serde_json::to_string(body).map_err(|e| BackupError::Internal(e.to_string()))?;
    let mut out = signed_bytes(magic, &body);
    let signature = key.sign(&out);
    out.extend_from_slice(SIGNATURE_PREFIX.as_bytes());
    out.extend_from_slice(hex::encode(signature).as_bytes());
    out.push(b'\n');
    Ok(out)
}

fn signed_bytes(magic: &str, body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(magic.len() + body.len() + 2);
    out.extend_from_slice(magic.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
    out
}

/// A new snapshot id for `now`: `YYYYMMDD-HHMMSS-<8 random hex>`.
pub fn new_snapshot_id(now: OffsetDateTime) -> String {
    let suffix: u32 = rand::random();
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{suffix:08x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Whether `id` has the shape of a snapshot id (it becomes part of an object name).
pub fn is_snapshot_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 24
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 15 => *b == b'-',
            0..=14 => b.is_ascii_digit(),
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vault_crypto::Key256;

    fn key() -> SigningKey {
        SigningKey::from_seed(&Key256::from_bytes([7; 32]))
    }

    pub(crate) fn sample(key: &SigningKey) -> Manifest {
        let entries = vec![
            Entry {
                name: "system/tenants/acme".into(),
                size: 120,
                sha256: "a".repeat(64),
                location: Location::Whole,
            },
            Entry {
                name: "tenants/acme/docs/0123/body".into(),
                size: 4096,
                sha256: "b".repeat(64),
                location: Location::Whole,
            },
            Entry {
                name: "tenants/acme/docs/0123/meta".into(),
                size: 90,
                sha256: "c".repeat(64),
                location: Location::Whole,
            },
        ];
        Manifest {
            snapshot: "20261124-153000-0badcafe".into(),
            vault_key: key.public_key().to_hex(),
            created_at: time::macros::datetime!(2026-11-24 15:30:00 UTC),
            finished_at: time::macros::datetime!(2026-11-24 15:30:02 UTC),
            source: "fs".into(),
            tenants: vec![],
            parent: None,
            lock: None,
            bytes_added: 4306,
            merkle_root: Manifest::compute_root(&entries),
            entries,
        }
    }

    #[test]
    fn signed_manifest_round_trips_and_counts_documents() {
        let key = key();
        let manifest = sample(&key);
        let bytes = manifest.sign(&key).unwrap();
        let parsed = Manifest::parse_and_verify(&bytes, &key.public_key()).unwrap();
        assert_eq!(parsed.body(), &Body::Inline(manifest.entries.clone()));
        assert_eq!((parsed.format, parsed.objects, parsed.bytes), (1, 3, 4306));
        assert_eq!(parsed.merkle_root, manifest.merkle_root);
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let key = key();
        let bytes = sample(&key).sign(&key).unwrap();
        for i in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            assert!(
                Manifest::parse_and_verify(&tampered, &key.public_key()).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn another_vaults_manifest_is_foreign() {
        let ours = key();
        let theirs = SigningKey::from_seed(&Key256::from_bytes([9; 32]));
        let bytes = sample(&theirs).sign(&theirs).unwrap();
        assert!(matches!(
            Manifest::parse_and_verify(&bytes, &ours.public_key()),
            Err(BackupError::ForeignManifest(_))
        ));
    }

    /// A manifest that names the pinned key but was signed by another: the
    /// signature is checked with the pinned key, never the one a manifest names.
    #[test]
    fn a_manifest_naming_our_key_but_signed_by_another_is_refused() {
        let ours = key();
        let theirs = SigningKey::from_seed(&Key256::from_bytes([9; 32]));
        let bytes = sample(&ours).sign(&theirs).unwrap();
        assert!(matches!(
            Manifest::parse_and_verify(&bytes, &ours.public_key()),
            Err(BackupError::BadSignature(_))
        ));
    }

    #[test]
    fn re_signed_entries_must_match_the_root() {
        let key = key();
        let mut manifest = sample(&key);
        manifest.entries[1].size += 1;
        let bytes = manifest.sign(&key).unwrap();
        assert!(matches!(
            Manifest::parse_and_verify(&bytes, &key.public_key()),
            Err(BackupError::BadManifest(_))
        ));
    }

    /// A manifest written by the first release: it must always open.
    #[test]
    fn v1_fixture_still_opens() {
        let bytes = include_bytes!("../../tests/fixtures/backup-manifest-v1/manifest");
        let manifest = Manifest::parse_and_verify(bytes, &key().public_key()).unwrap();
        let expected = sample(&key());
        assert_eq!(manifest.body(), &Body::Inline(expected.entries));
        assert_eq!(manifest.snapshot, expected.snapshot);
        assert_eq!(manifest.created_at, expected.created_at);
    }

    #[test]
    fn snapshot_ids_sort_by_time_and_validate() {
        let a = new_snapshot_id(time::macros::datetime!(2026-01-02 03:04:05 UTC));
        let b = new_snapshot_id(time::macros::datetime!(2026-01-02 03:04:06 UTC));
        assert!(is_snapshot_id(&a) && is_snapshot_id(&b));
        assert!(a < b);
        assert!(!is_snapshot_id("../../etc/passwd"));
        assert!(!is_snapshot_id("20261124-153000-0BADCAFE"));
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Manifest::parse_and_verify(&bytes, &key().public_key());
        }

        #[test]
        fn parser_never_panics_on_near_manifests(
            body in "\\PC{0,200}",
            sig in "[0-9a-f]{0,130}",
        ) {
            let text = format!("{MAGIC_V1}\n{body}\nsig {sig}\n");
            let _ = Manifest::parse_and_verify(text.as_bytes(), &key().public_key());
        }
    }
}

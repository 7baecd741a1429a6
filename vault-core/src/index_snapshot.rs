//! The index snapshot, v1: a tenant's blind index as files, sealed under the
//! tenant's keys and kept in the store, so that a new replica (or one that lost
//! its data directory) starts from it and the change feed instead of opening
//! every document's metadata.
//!
//! ```text
//! "BVIX" | u16 version (1) | u32 index key version | u32 key record length
//! key record (v1, see vault-crypto): wrapped DEK + the contents (JSON, encrypted)
//! body (v1 envelope body): the files' bytes, one after another
//! ```
//!
//! The contents list the files and, since 2026-12, where the tenant's audit log
//! (the change feed) stood: `followed_to`, the first segment whose changes the
//! index may lack. A replica starting from the snapshot follows the log from
//! there instead of listing every document. The field is optional (older
//! snapshots have none and are reconciled by a listing, as before); older
//! readers ignore it, so the format version stays 1.
//!
//! The key record and the body are bound to a document id derived from the
//! tenant, the index key version and the snapshot's name, so a snapshot moved to
//! another name, tenant or version does not open. What it holds is what the
//! blind index holds (document ids, kinds, upload times, truncated blind
//! tokens), never plaintext, and it is encrypted all the same: the tokens'
//! frequencies are the tenant's business.
//!
//! Snapshots are a cache: they are never in a backup, any of them may be
//! missing or unreadable, and a replica that cannot use one builds its index
//! from the store as before.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vault_crypto::envelope::{self, BodyDecryptor, BodyHeader, KeyRecord, KeyRef};
use vault_crypto::{CryptoError, DocumentId, Key256, TenantId};

/// FORMAT CONSTANT: snapshot magic.
const MAGIC: [u8; 4] = *b"BVIX";
/// FORMAT CONSTANT: snapshot format version.
const VERSION: u16 = 1;
/// FORMAT CONSTANT: label of the derived document id.
const DOCUMENT_LABEL: &[u8] = b"billing-vault index snapshot v1";
/// Bytes before the key record.
const HEADER_LEN: usize = 4 + 2 + 4 + 4;
/// Most files one snapshot lists (a Tantivy index has a few per segment).
const MAX_FILES: usize = 10_000;

/// Why a snapshot could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a v1 snapshot of this index.
    #[error("malformed index snapshot: {0}")]
    Malformed(&'static str),
    /// Sealing or opening failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// What the key record's encrypted metadata holds.
#[derive(Serialize, Deserialize)]
struct Contents {
    /// The files, in body order: name and length.
    files: Vec<(String, u64)>,
    /// FORMAT FIELD (optional): the first segment of the tenant's audit log
    /// whose changes the index may not reflect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    followed_to: Option<u64>,
}

/// An opened snapshot.
pub struct OpenedSnapshot {
    /// The index's files (name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// The first segment of the tenant's audit log whose changes the index may
    /// lack (none in snapshots written before it was recorded).
    pub followed_to: Option<u64>,
}

/// The document id a snapshot's key record and body are bound to.
fn snapshot_document_id(tenant: &TenantId, index_version: u32, name: &str) -> DocumentId {
    let digest = Sha256::new()
        .chain_update(DOCUMENT_LABEL)
        .chain_update([tenant.as_str().len() as u8])
        .chain_update(tenant.as_str())
        .chain_update(index_version.to_be_bytes())
        .chain_update((name.len() as u32).to_be_bytes())
        .chain_update(name)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    DocumentId::from_bytes(id)
}

/// Seals an index's files as the snapshot stored under `name`; `followed_to`
/// is the first segment of the tenant's log whose changes they may lack.
pub fn seal(
    tenant: &TenantId,
    index_version: u32,
    name: &str,
    (files, followed_to): (&[(String, Vec<u8>)], Option<u64>),
    branch: &Key256,
    key_ref: KeyRef,
) -> Result<Vec<u8>, SnapshotError> {
    let contents = Contents {
        files: files
            .iter()
            .map(|(name, bytes)| (name.clone(), bytes.len() as u64))
            .collect(),
        followed_to,
    };
    let listing = serde_json::to_vec(&contents)
        .map_err(|_| SnapshotError::Malformed("the file list does not encode"))?;
    let dek = Key256::random();
    let document = snapshot_document_id(tenant, index_version, name);
    let (header_bytes, mut encryptor) =
        envelope::begin_body(&dek, tenant, document, envelope::DEFAULT_SEGMENT_SIZE)?;
    let (header, _) = BodyHeader::parse(&header_bytes)?;
    let record = KeyRecord::seal(&dek, &header, branch, key_ref, &listing)?.encode();
    let record_len =
        u32::try_from(record.len()).map_err(|_| SnapshotError::Malformed("key record too long"))?;
    let mut out = Vec::with_capacity(
        HEADER_LEN + record.len() + files.iter().map(|(_, b)| b.len()).sum::<usize>() * 101 / 100,
    );
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&index_version.to_be_bytes());
    out.extend_from_slice(&record_len.to_be_bytes());
    out.extend_from_slice(&record);
    out.extend_from_slice(&header_bytes);
    let mut sealed = Vec::new();
    for (_, bytes) in files {
        encryptor.update(bytes, &mut sealed)?;
        for chunk in sealed.drain(..) {
            out.extend_from_slice(&chunk);
        }
    }
    out.extend_from_slice(&encryptor.finish()?);
    Ok(out)
}

/// The clear part of a snapshot: its index key version and its key record
/// (to find the branch key it names).
pub fn peek(bytes: &[u8]) -> Result<(u32, KeyRecord), SnapshotError> {
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Malformed("shorter than its header"));
    }
    if bytes[..4] != MAGIC {
        return Err(SnapshotError::Malformed("not an index snapshot"));
    }
    if bytes[4..6] != VERSION.to_be_bytes() {
        return Err(SnapshotError::Malformed("unknown snapshot version"));
    }
    let index_version = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let record_len = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    let record_end = HEADER_LEN
        .checked_add(record_len)
        .filter(|end| *end <= bytes.len())
        .ok_or(SnapshotError::Malformed("key record past the end"))?;
    let record = KeyRecord::parse(&bytes[HEADER_LEN..record_end])?;
    Ok((index_version, record))
}

/// Opens the snapshot stored under `name` for this tenant and index key
/// version, with the branch key its key record names.
pub fn open(
    bytes: &[u8],
    tenant: &TenantId,
    index_version: u32,
    name: &str,
    branch: &Key256,
) -> Result<OpenedSnapshot, SnapshotError> {
    let (version, record) = peek(bytes)?;
    let document = snapshot_document_id(tenant, index_version, name);
    if version != index_version || record.tenant != *tenant || record.document != document {
        return Err(SnapshotError::Crypto(CryptoError::ContextMismatch(
            "index snapshot",
        )));
    }
    let dek = record.unwrap_dek(branch)?;
    let listing = record.open_metadata(&dek)?;
    let contents: Contents = serde_json::from_slice(&listing)
        .map_err(|_| SnapshotError::Malformed("the file list does not decode"))?;
    if contents.files.len() > MAX_FILES {
        return Err(SnapshotError::Malformed("too many files"));
    }
    let body = &bytes[HEADER_LEN + record.encode().len()..];
    let header_len = BodyHeader::peek_len(body)?
        .filter(|len| *len <= body.len())
        .ok_or(SnapshotError::Malformed("body header past the end"))?;
    let (header, cipher) = envelope::open_body(&dek, tenant, document, &body[..header_len])?;
    if !record.matches_body(&header) {
        return Err(SnapshotError::Crypto(CryptoError::ContextMismatch(
            "index snapshot body",
        )));
    }
    let mut decryptor = BodyDecryptor::new(cipher);
    let mut chunks = Vec::new();
    decryptor.update(&body[header_len..], &mut chunks)?;
    decryptor.finish(&mut chunks)?;
    let plain: Vec<u8> = chunks.concat();
    let total = contents
        .files
        .iter()
        .try_fold(0u64, |sum, (_, len)| sum.checked_add(*len));
    if total != Some(plain.len() as u64) {
        return Err(SnapshotError::Malformed(
            "the files do not add up to the body",
        ));
    }
    let mut files = Vec::with_capacity(contents.files.len());
    let mut at = 0usize;
    for (name, len) in contents.files {
        let len = len as usize;
        files.push((name, plain[at..at + len].to_vec()));
        at += len;
    }
    Ok(OpenedSnapshot {
        files,
        followed_to: contents.followed_to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_ref() -> KeyRef {
        KeyRef {
            provider: "local".into(),
            kek_id: "acme".into(),
            version: 1,
        }
    }

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("meta.json".into(), b"{\"segments\": []}\n".to_vec()),
            ("abc.idx".into(), vec![7u8; 3_000]),
            ("empty.del".into(), Vec::new()),
        ]
    }

    #[test]
    fn a_snapshot_opens_under_its_name_tenant_and_version_only() {
        let tenant: TenantId = "acme".parse().unwrap();
        let branch = Key256::from_bytes([3; 32]);
        // Larger than one body segment (64 KiB).
        let mut files = files();
        files.push((
            "big.store".into(),
            (0..200_000u32).map(|n| n as u8).collect(),
        ));
        let sealed = seal(&tenant, 2, "s1", (&files, Some(42)), &branch, key_ref()).unwrap();
        let opened = open(&sealed, &tenant, 2, "s1", &branch).unwrap();
        assert_eq!(opened.files, files);
        assert_eq!(opened.followed_to, Some(42));
        // Nothing of the files in the clear.
        assert!(!sealed.windows(9).any(|w| w == b"meta.json"));

        let other: TenantId = "globex".parse().unwrap();
        assert!(open(&sealed, &other, 2, "s1", &branch).is_err());
        assert!(open(&sealed, &tenant, 3, "s1", &branch).is_err());
        assert!(open(&sealed, &tenant, 2, "s2", &branch).is_err());
        assert!(open(&sealed, &tenant, 2, "s1", &Key256::from_bytes([4; 32])).is_err());
        for cut in [0, 5, HEADER_LEN + 3, sealed.len() / 2, sealed.len() - 1] {
            assert!(
                open(&sealed[..cut], &tenant, 2, "s1", &branch).is_err(),
                "{cut}"
            );
        }
        let mut flipped = sealed.clone();
        let at = sealed.len() - 100;
        flipped[at] ^= 1;
        assert!(open(&flipped, &tenant, 2, "s1", &branch).is_err());
    }

    /// The checked-in v1 snapshot still opens, as one without a log position
    /// (written before positions were recorded). It was sealed with the key below
    /// (public, test-only); `BILLVAULT_WRITE_FIXTURES=1` writes it anew, as for the
    /// envelope fixtures.
    #[test]
    fn the_v1_fixture_still_opens() {
        let tenant: TenantId = "acme".parse().unwrap();
        let key = Key256::from_bytes([3; 32]);
        let path = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("tests/fixtures/index-snapshot-v1/snapshot");
        if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_some() {
            let sealed = seal(&tenant, 2, "fixture", (&files(), None), &key, key_ref()).unwrap();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, sealed).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        let opened = open(&bytes, &tenant, 2, "fixture", &key).unwrap();
        assert_eq!(opened.files, files());
        assert_eq!(opened.followed_to, None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let tenant: TenantId = "acme".parse().unwrap();
            let _ = open(&bytes, &tenant, 2, "s1", &Key256::from_bytes([3; 32]));
        }
    }
}

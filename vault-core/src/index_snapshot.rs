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
//!
//! Sealing and opening stream: the writer reads the index's files and the
//! reader writes them one buffer at a time ([`seal_to`], [`open_body`]), so an
//! index of any size is moved in a few hundred KiB of memory. Opening
//! authenticates each 64 KiB segment before its bytes are handed on, and the
//! end of the body only once its final segment is: an importer that writes the
//! files aside and puts them in place after reading to the end never installs
//! a changed or truncated snapshot.

use std::collections::VecDeque;
use std::io::{Read, Write};

use bytes::Bytes;
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
pub const HEADER_LEN: usize = 4 + 2 + 4 + 4;
/// Most files one snapshot lists (a Tantivy index has a few per segment).
const MAX_FILES: usize = 10_000;
/// Longest key record read (it is read before anything is authenticated).
const MAX_RECORD_LEN: usize = 1 << 20;
/// Bytes of the body read or sealed at a time: sealing and opening hold about
/// this much, whatever the index's size.
const BUFFER_LEN: usize = 256 * 1024;

/// Why a snapshot could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a v1 snapshot of this index.
    #[error("malformed index snapshot: {0}")]
    Malformed(&'static str),
    /// Sealing or opening failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// Reading the files or writing the snapshot failed.
    #[error("index snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
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

/// Which snapshot: the tenant, its index key version and the snapshot's name
/// in the store. A snapshot opens only under the ones it was sealed for.
#[derive(Clone, Copy)]
pub struct SnapshotId<'a> {
    /// The tenant whose index it is.
    pub tenant: &'a TenantId,
    /// The index key version its tokens are made under.
    pub index_version: u32,
    /// Its name among the tenant's snapshots of that version.
    pub name: &'a str,
}

impl SnapshotId<'_> {
    /// The document id the key record and body are bound to.
    fn document_id(&self) -> DocumentId {
        let digest = Sha256::new()
            .chain_update(DOCUMENT_LABEL)
            .chain_update([self.tenant.as_str().len() as u8])
            .chain_update(self.tenant.as_str())
            .chain_update(self.index_version.to_be_bytes())
            .chain_update((self.name.len() as u32).to_be_bytes())
            .chain_update(self.name)
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        DocumentId::from_bytes(id)
    }
}

/// What a snapshot holds besides the files' bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotContents {
    /// The index's files, in body order: name and length.
    pub files: Vec<(String, u64)>,
    /// The first segment of the tenant's audit log whose changes the index may
    /// lack (none in snapshots written before it was recorded).
    pub followed_to: Option<u64>,
}

/// `read`, again when interrupted.
fn read_some(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Seals an index's files as the snapshot `id` into `out`: `contents` lists
/// them, and `body` gives their bytes one after another (and must end there).
/// Holds one buffer of the body at a time. Returns the bytes written.
pub fn seal_to(
    out: &mut dyn Write,
    id: SnapshotId<'_>,
    contents: &SnapshotContents,
    body: &mut dyn Read,
    branch: &Key256,
    key_ref: KeyRef,
) -> Result<u64, SnapshotError> {
    if contents.files.len() > MAX_FILES {
        return Err(SnapshotError::Malformed("too many files"));
    }
    let expected = contents
        .files
        .iter()
        .try_fold(0u64, |sum, (_, len)| sum.checked_add(*len))
        .ok_or(SnapshotError::Malformed("the files' lengths overflow"))?;
    let listing = serde_json::to_vec(&Contents {
        files: contents.files.clone(),
        followed_to: contents.followed_to,
    })
    .map_err(|_| SnapshotError::Malformed("the file list does not encode"))?;
    let dek = Key256::random();
    let (header_bytes, mut encryptor) = envelope::begin_body(
        &dek,
        id.tenant,
        id.document_id(),
        envelope::DEFAULT_SEGMENT_SIZE,
    )?;
    let (header, _) = BodyHeader::parse(&header_bytes)?;
    let record = KeyRecord::seal(&dek, &header, branch, key_ref, &listing)?.encode();
    let record_len =
        u32::try_from(record.len()).map_err(|_| SnapshotError::Malformed("key record too long"))?;
    let mut written = 0u64;
    let mut emit = |bytes: &[u8]| -> std::io::Result<()> {
        out.write_all(bytes)?;
        written += bytes.len() as u64;
        Ok(())
    };
    emit(&MAGIC)?;
    emit(&VERSION.to_be_bytes())?;
    emit(&id.index_version.to_be_bytes())?;
    emit(&record_len.to_be_bytes())?;
    emit(&record)?;
    emit(&header_bytes)?;
    let mut buf = vec![0u8; BUFFER_LEN];
    let mut sealed = Vec::new();
    let mut read = 0u64;
    loop {
        let n = read_some(body, &mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > expected {
            return Err(SnapshotError::Malformed(
                "the body is longer than its files",
            ));
        }
        encryptor.update(&buf[..n], &mut sealed)?;
        for chunk in sealed.drain(..) {
            emit(&chunk)?;
        }
    }
    if read != expected {
        return Err(SnapshotError::Malformed(
            "the body ends before its files do",
        ));
    }
    emit(&encryptor.finish()?)?;
    out.flush()?;
    Ok(written)
}

/// The clear start of a snapshot (its first [`HEADER_LEN`] bytes): the index key
/// version it says it is made under and the length of the key record after it.
pub fn parse_header(header: &[u8]) -> Result<(u32, usize), SnapshotError> {
    if header.len() < HEADER_LEN {
        return Err(SnapshotError::Malformed("shorter than its header"));
    }
    if header[..4] != MAGIC {
        return Err(SnapshotError::Malformed("not an index snapshot"));
    }
    if header[4..6] != VERSION.to_be_bytes() {
        return Err(SnapshotError::Malformed("unknown snapshot version"));
    }
    let index_version = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    let record_len = u32::from_be_bytes([header[10], header[11], header[12], header[13]]) as usize;
    if record_len > MAX_RECORD_LEN {
        return Err(SnapshotError::Malformed("key record too long"));
    }
    Ok((index_version, record_len))
}

/// Opens the body of the snapshot `id`, whose header said `header_version` and
/// whose key record is `record`, with the branch key the record names; `rest`
/// is what follows the record. Returns what it holds and a reader of the files'
/// bytes that authenticates as it goes: every byte it gives is authentic, and
/// it fails (rather than end) on a body cut short or changed.
pub fn open_body<R: Read>(
    header_version: u32,
    record: &KeyRecord,
    mut rest: R,
    id: SnapshotId<'_>,
    branch: &Key256,
) -> Result<(SnapshotContents, SnapshotBody<R>), SnapshotError> {
    let document = id.document_id();
    if header_version != id.index_version
        || record.tenant != *id.tenant
        || record.document != document
    {
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
    if contents
        .files
        .iter()
        .try_fold(0u64, |sum, (_, len)| sum.checked_add(*len))
        .is_none()
    {
        return Err(SnapshotError::Malformed("the files' lengths overflow"));
    }
    let mut header = Vec::new();
    let header_len = loop {
        if let Some(len) = BodyHeader::peek_len(&header)? {
            break len;
        }
        let mut byte = [0u8; 1];
        rest.read_exact(&mut byte)
            .map_err(|_| SnapshotError::Malformed("body header past the end"))?;
        header.push(byte[0]);
    };
    if header_len > header.len() {
        let at = header.len();
        header.resize(header_len, 0);
        rest.read_exact(&mut header[at..])
            .map_err(|_| SnapshotError::Malformed("body header past the end"))?;
    }
    let (header, cipher) = envelope::open_body(&dek, id.tenant, document, &header)?;
    if !record.matches_body(&header) {
        return Err(SnapshotError::Crypto(CryptoError::ContextMismatch(
            "index snapshot body",
        )));
    }
    let body = SnapshotBody {
        inner: rest,
        decryptor: Some(BodyDecryptor::new(cipher)),
        ready: VecDeque::new(),
        buf: vec![0u8; BUFFER_LEN],
        failed: false,
    };
    Ok((
        SnapshotContents {
            files: contents.files,
            followed_to: contents.followed_to,
        },
        body,
    ))
}

/// The files' bytes of an opened snapshot, authenticated as they are read.
pub struct SnapshotBody<R> {
    inner: R,
    /// `None` once the final segment is authenticated.
    decryptor: Option<BodyDecryptor>,
    ready: VecDeque<Bytes>,
    buf: Vec<u8>,
    /// A read failed: every later one fails too (never a clean end).
    failed: bool,
}

impl<R: Read> SnapshotBody<R> {
    fn fill(&mut self) -> Result<(), SnapshotError> {
        let mut plain = Vec::new();
        let n = read_some(&mut self.inner, &mut self.buf)?;
        if n == 0 {
            if let Some(decryptor) = self.decryptor.take() {
                decryptor.finish(&mut plain)?;
            }
        } else if let Some(decryptor) = self.decryptor.as_mut() {
            decryptor.update(&self.buf[..n], &mut plain)?;
        }
        self.ready.extend(plain);
        Ok(())
    }
}

impl<R: Read> Read for SnapshotBody<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.failed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the index snapshot failed to open",
            ));
        }
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(front) = self.ready.front_mut() {
                let n = out.len().min(front.len());
                out[..n].copy_from_slice(&front.split_to(n));
                if front.is_empty() {
                    self.ready.pop_front();
                }
                if n > 0 {
                    return Ok(n);
                }
                continue;
            }
            if self.decryptor.is_none() {
                return Ok(0);
            }
            if let Err(e) = self.fill() {
                self.failed = true;
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        }
    }
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

    fn id<'a>(tenant: &'a TenantId, index_version: u32, name: &'a str) -> SnapshotId<'a> {
        SnapshotId {
            tenant,
            index_version,
            name,
        }
    }

    /// Seals files held in memory.
    fn seal(
        id: SnapshotId<'_>,
        files: &[(String, Vec<u8>)],
        followed_to: Option<u64>,
        branch: &Key256,
    ) -> Vec<u8> {
        let contents = SnapshotContents {
            files: files
                .iter()
                .map(|(name, bytes)| (name.clone(), bytes.len() as u64))
                .collect(),
            followed_to,
        };
        let body: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
        let mut out = Vec::new();
        let written = seal_to(&mut out, id, &contents, &mut &body[..], branch, key_ref()).unwrap();
        assert_eq!(written, out.len() as u64);
        out
    }

    type Files = Vec<(String, Vec<u8>)>;

    /// Opens a whole snapshot into memory, as the server does from a stream.
    fn open(
        bytes: &[u8],
        id: SnapshotId<'_>,
        branch: &Key256,
    ) -> Result<(Files, Option<u64>), SnapshotError> {
        let header = bytes
            .get(..HEADER_LEN)
            .ok_or(SnapshotError::Malformed("short"))?;
        let (version, record_len) = parse_header(header)?;
        let record = bytes
            .get(HEADER_LEN..HEADER_LEN + record_len)
            .ok_or(SnapshotError::Malformed("short record"))?;
        let record = KeyRecord::parse(record)?;
        let (contents, mut body) = open_body(
            version,
            &record,
            &bytes[HEADER_LEN + record_len..],
            id,
            branch,
        )?;
        let mut files = Vec::new();
        for (name, len) in contents.files {
            let mut file = Vec::new();
            (&mut body).take(len).read_to_end(&mut file)?;
            if file.len() as u64 != len {
                return Err(SnapshotError::Malformed("short file"));
            }
            files.push((name, file));
        }
        if body.read(&mut [0u8; 1])? != 0 {
            return Err(SnapshotError::Malformed("long body"));
        }
        Ok((files, contents.followed_to))
    }

    #[test]
    fn a_snapshot_opens_under_its_name_tenant_and_version_only() {
        let tenant: TenantId = "acme".parse().unwrap();
        let branch = Key256::from_bytes([3; 32]);
        // Larger than one body segment (64 KiB) and one buffer (256 KiB).
        let mut files = files();
        files.push((
            "big.store".into(),
            (0..700_000u32).map(|n| n as u8).collect(),
        ));
        let sealed = seal(id(&tenant, 2, "s1"), &files, Some(42), &branch);
        let (opened, followed_to) = open(&sealed, id(&tenant, 2, "s1"), &branch).unwrap();
        assert_eq!(opened, files);
        assert_eq!(followed_to, Some(42));
        // Nothing of the files in the clear.
        assert!(!sealed.windows(9).any(|w| w == b"meta.json"));

        let other: TenantId = "globex".parse().unwrap();
        assert!(open(&sealed, id(&other, 2, "s1"), &branch).is_err());
        assert!(open(&sealed, id(&tenant, 3, "s1"), &branch).is_err());
        assert!(open(&sealed, id(&tenant, 2, "s2"), &branch).is_err());
        assert!(open(&sealed, id(&tenant, 2, "s1"), &Key256::from_bytes([4; 32])).is_err());
        for cut in [0, 5, HEADER_LEN + 3, sealed.len() / 2, sealed.len() - 1] {
            assert!(
                open(&sealed[..cut], id(&tenant, 2, "s1"), &branch).is_err(),
                "{cut}"
            );
        }
        let mut flipped = sealed.clone();
        let at = sealed.len() - 100;
        flipped[at] ^= 1;
        assert!(open(&flipped, id(&tenant, 2, "s1"), &branch).is_err());
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(open(&longer, id(&tenant, 2, "s1"), &branch).is_err());
    }

    #[test]
    fn a_body_that_does_not_match_its_file_list_is_not_sealed() {
        let tenant: TenantId = "acme".parse().unwrap();
        let branch = Key256::from_bytes([3; 32]);
        let contents = SnapshotContents {
            files: vec![("a".into(), 10)],
            followed_to: None,
        };
        for body in [&[1u8; 9][..], &[1u8; 11][..]] {
            let mut out = Vec::new();
            let sealed = seal_to(
                &mut out,
                id(&tenant, 2, "s1"),
                &contents,
                &mut &body[..],
                &branch,
                key_ref(),
            );
            assert!(matches!(sealed, Err(SnapshotError::Malformed(_))));
        }
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
            let sealed = seal(id(&tenant, 2, "fixture"), &files(), None, &key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, sealed).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        let (opened, followed_to) = open(&bytes, id(&tenant, 2, "fixture"), &key).unwrap();
        assert_eq!(opened, files());
        assert_eq!(followed_to, None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let tenant: TenantId = "acme".parse().unwrap();
            let _ = open(&bytes, id(&tenant, 2, "s1"), &Key256::from_bytes([3; 32]));
        }
    }
}

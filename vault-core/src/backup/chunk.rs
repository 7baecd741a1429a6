//! Manifest chunks (repository format v2): a snapshot's entries, in name order,
//! split into content-addressed objects (`chunks/<2 hex>/<sha256>`) that the
//! signed manifest names by hash.
//!
//! ```text
//! "BVMC" | u16 version = 1                           FORMAT CONSTANTS
//! u32 pack count | pack count x sha256 [32]          the packs the entries name
//! u32 entry count | entries
//! entry: u16 bytes shared with the previous name | u16 suffix length | suffix
//!        | u64 size | sha256 [32] | u32 pack index | u64 offset (packed only)
//! ```
//!
//! Integers are little-endian; pack index `u32::MAX` means the object is stored
//! whole, as `data/<sha256>` (large objects, and objects of v1 snapshots that a
//! v2 snapshot reuses).
//!
//! Chunks end where the entries say, not at a count: after an entry whose
//! leaf hash has its low bits zero (between [`MIN_ENTRIES`] and
//! [`MAX_ENTRIES`]). A run of unchanged entries therefore makes the same chunk
//! in the next snapshot, which is stored once (restic's trees do the same for
//! unchanged directories). Reading is streaming: a reader holds one chunk at a
//! time, whatever the snapshot's size.

use sha2::{Digest, Sha256};

use super::manifest::{Entry, Location};
use super::BackupError;

/// FORMAT CONSTANT: first bytes of every chunk.
pub const CHUNK_MAGIC: &[u8; 4] = b"BVMC";
/// FORMAT CONSTANT: the chunk format written.
pub const CHUNK_VERSION: u16 = 1;
/// FORMAT CONSTANT: the pack index of an object stored whole.
const WHOLE: u32 = u32::MAX;
/// Smallest encoded entry (empty suffix, stored whole).
const MIN_ENTRY_LEN: usize = 2 + 2 + 8 + 32 + 4;

/// Fewest entries in a chunk (but the snapshot's last).
pub const MIN_ENTRIES: usize = 1024;
/// Most entries in a chunk: bounds a reader's memory (about 8 MiB of entries).
pub const MAX_ENTRIES: usize = 32_768;
/// No chunk the vault writes is larger (32,768 entries of names of at most a
/// few hundred bytes): a larger file is not read.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;
/// A chunk ends after an entry whose leaf hash's first two bytes, masked with
/// this, are zero: about one entry in 16,384.
const CUT_MASK: u16 = (1 << 14) - 1;

/// Whether a chunk of `len` entries ends after `last`.
pub fn ends_after(last: &Entry, len: usize) -> bool {
    if len >= MAX_ENTRIES {
        return true;
    }
    if len < MIN_ENTRIES {
        return false;
    }
    let leaf = last.leaf();
    u16::from_le_bytes([leaf[0], leaf[1]]) & CUT_MASK == 0
}

/// Encodes entries (sorted by name, each located) into a chunk; returns the
/// bytes and their SHA-256 (hex).
pub fn encode(entries: &[Entry]) -> Result<(Vec<u8>, String), BackupError> {
    let internal = |why: &str| BackupError::Internal(format!("manifest chunk: {why}"));
    let mut packs: Vec<&str> = Vec::new();
    let mut pack_index = std::collections::HashMap::new();
    for entry in entries {
        if let Location::Packed { pack, .. } = &entry.location {
            pack_index.entry(pack.as_str()).or_insert_with(|| {
                packs.push(pack.as_str());
                packs.len() - 1
            });
        }
    }
    let mut out = Vec::with_capacity(64 + packs.len() * 32 + entries.len() * 100);
    out.extend_from_slice(CHUNK_MAGIC);
    out.extend_from_slice(&CHUNK_VERSION.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(packs.len())
            .map_err(|_| internal("packs"))?
            .to_le_bytes(),
    );
    for pack in &packs {
        out.extend_from_slice(&decode_hash(pack).ok_or_else(|| internal("pack name"))?);
    }
    out.extend_from_slice(
        &u32::try_from(entries.len())
            .map_err(|_| internal("entries"))?
            .to_le_bytes(),
    );
    let mut previous = "";
    for entry in entries {
        let shared = common_prefix(previous, &entry.name).min(u16::MAX as usize);
        let suffix = &entry.name.as_bytes()[shared..];
        out.extend_from_slice(&(shared as u16).to_le_bytes());
        out.extend_from_slice(
            &u16::try_from(suffix.len())
                .map_err(|_| internal("name too long"))?
                .to_le_bytes(),
        );
        out.extend_from_slice(suffix);
        out.extend_from_slice(&entry.size.to_le_bytes());
        out.extend_from_slice(&decode_hash(&entry.sha256).ok_or_else(|| internal("hash"))?);
        match &entry.location {
            Location::Whole => out.extend_from_slice(&WHOLE.to_le_bytes()),
            Location::Packed { pack, offset } => {
                let index = pack_index[pack.as_str()] as u32;
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
        }
        previous = &entry.name;
    }
    let sha = hex::encode(Sha256::digest(&out));
    Ok((out, sha))
}

/// Decodes a chunk (untrusted bytes; the caller checks their hash against the
/// signed manifest first). Names must be UTF-8 and strictly ascending.
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, BackupError> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.take(4)? != CHUNK_MAGIC {
        return Err(bad("not a manifest chunk (magic)"));
    }
    let version = reader.u16()?;
    if version != CHUNK_VERSION {
        return Err(bad(&format!("unknown chunk version {version}")));
    }
    let pack_count = reader.u32()? as usize;
    if pack_count > reader.remaining() / 32 {
        return Err(bad("more packs than bytes"));
    }
    let mut packs = Vec::with_capacity(pack_count);
    for _ in 0..pack_count {
        packs.push(hex::encode(reader.take(32)?));
    }
    let count = reader.u32()? as usize;
    if count > reader.remaining() / MIN_ENTRY_LEN {
        return Err(bad("more entries than bytes"));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(count);
    let mut previous: Vec<u8> = Vec::new();
    for _ in 0..count {
        let shared = reader.u16()? as usize;
        let suffix_len = reader.u16()? as usize;
        if shared > previous.len() {
            return Err(bad("name shares more than the previous name has"));
        }
        let mut name = previous[..shared].to_vec();
        name.extend_from_slice(reader.take(suffix_len)?);
        let size = reader.u64()?;
        let sha256 = hex::encode(reader.take(32)?);
        let index = reader.u32()?;
        let location = if index == WHOLE {
            Location::Whole
        } else {
            let pack = packs
                .get(index as usize)
                .ok_or_else(|| bad("pack index out of range"))?
                .clone();
            Location::Packed {
                pack,
                offset: reader.u64()?,
            }
        };
        if !entries.is_empty() && name <= previous {
            return Err(bad("entries not sorted or duplicated"));
        }
        let text = String::from_utf8(name.clone()).map_err(|_| bad("name is not UTF-8"))?;
        previous = name;
        entries.push(Entry {
            name: text,
            size,
            sha256,
            location,
        });
    }
    if reader.remaining() != 0 {
        return Err(bad("trailing bytes"));
    }
    Ok(entries)
}

fn bad(why: &str) -> BackupError {
    BackupError::BadManifest(format!("chunk: {why}"))
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

fn decode_hash(hex_text: &str) -> Option<[u8; 32]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BackupError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| bad("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, BackupError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, BackupError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, BackupError> {
        let b = self.take(8)?;
        let mut out = [0u8; 8];
        out.copy_from_slice(b);
        Ok(u64::from_le_bytes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> Vec<Entry> {
        vec![
            Entry {
                name: "system/tenants/acme".into(),
                size: 120,
                sha256: "a".repeat(64),
                location: Location::Packed {
                    pack: "1".repeat(64),
                    offset: 6,
                },
            },
            Entry {
                name: "tenants/acme/docs/0123/body".into(),
                size: 40 << 20,
                sha256: "b".repeat(64),
                location: Location::Whole,
            },
            Entry {
                name: "tenants/acme/docs/0123/key".into(),
                size: 300,
                sha256: "c".repeat(64),
                location: Location::Packed {
                    pack: "2".repeat(64),
                    offset: 126,
                },
            },
            Entry {
                name: "tenants/acme/docs/0123/meta".into(),
                size: 90,
                sha256: "d".repeat(64),
                location: Location::Packed {
                    pack: "1".repeat(64),
                    offset: 426,
                },
            },
        ]
    }

    #[test]
    fn entries_round_trip() {
        let (bytes, sha) = encode(&sample()).unwrap();
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    /// A chunk written by the first release: it must always open.
    #[test]
    fn v1_fixture_still_opens() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/backup-chunk-v1/chunk");
        if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_some() {
            std::fs::write(&path, encode(&sample()).unwrap().0).unwrap();
        }
        let bytes = include_bytes!("../../tests/fixtures/backup-chunk-v1/chunk");
        assert_eq!(decode(bytes).unwrap(), sample());
    }

    #[test]
    fn unsorted_entries_are_refused() {
        let mut entries = sample();
        entries.swap(1, 2);
        let (bytes, _) = encode(&entries).unwrap();
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn chunks_end_where_the_entries_say() {
        let entry = |i: u32| Entry {
            name: format!("tenants/acme/docs/{i:08}/body"),
            size: 1,
            sha256: "e".repeat(64),
            location: Location::Whole,
        };
        assert!(!ends_after(&entry(1), MIN_ENTRIES - 1));
        assert!(ends_after(&entry(1), MAX_ENTRIES));
        let cuts = (0..200_000)
            .filter(|i| ends_after(&entry(*i), MIN_ENTRIES))
            .count();
        // About one in 16,384.
        assert!((4..40).contains(&cuts), "{cuts} cuts");
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decoder_never_panics_on_near_chunks(flip in 0usize..400, value in any::<u8>()) {
            let (mut bytes, _) = encode(&sample()).unwrap();
            let at = flip % bytes.len();
            bytes[at] = value;
            let _ = decode(&bytes);
        }

        #[test]
        fn any_sorted_entries_round_trip(
            names in proptest::collection::btree_set("[a-z/]{0,40}", 0..30),
            packed in any::<bool>(),
        ) {
            let entries: Vec<Entry> = names.into_iter().enumerate().map(|(i, name)| Entry {
                name,
                size: i as u64,
                sha256: format!("{:064x}", i),
                location: if packed && i % 2 == 0 {
                    Location::Packed { pack: format!("{:064x}", i % 3), offset: i as u64 * 7 }
                } else {
                    Location::Whole
                },
            }).collect();
            let (bytes, _) = encode(&entries).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), entries);
        }
    }
}

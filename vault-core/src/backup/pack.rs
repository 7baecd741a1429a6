//! Pack files (repository format v2): many small objects in one repository
//! object, as restic, Borg and Kopia do, so a snapshot of 100,000 documents is a
//! few hundred objects instead of hundreds of thousands.
//!
//! ```text
//! "BVPK" | u16 version = 1                      header (FORMAT CONSTANTS)
//! blob bytes, one after another                 each a vault object's ciphertext
//! per blob: sha256 [32] | offset u64 | length u64   the trailer, in offset order
//! count u32 | "BVPT"                            (integers little-endian)
//! ```
//!
//! A pack is named by the SHA-256 of all its bytes (`packs/<2 hex>/<sha256>`),
//! so a reader that hashes it knows it whole. The trailer makes a pack
//! self-describing (a repository whose manifests were lost still names what
//! each pack holds); manifests carry each object's pack and offset, so a
//! restore reads ranges without opening trailers. Nothing here is secret: the
//! blobs are ciphertext, the hashes are of ciphertext.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use vault_crypto::signing::{PublicKey, SigningKey};

use super::manifest::Location;
use super::BackupError;

/// FORMAT CONSTANT: first bytes of every pack.
pub const PACK_MAGIC: &[u8; 4] = b"BVPK";
/// FORMAT CONSTANT: the pack format written.
pub const PACK_VERSION: u16 = 1;
/// FORMAT CONSTANT: last bytes of every pack.
pub const TRAILER_MAGIC: &[u8; 4] = b"BVPT";
/// FORMAT CONSTANT: header length (magic and version).
pub const HEADER_LEN: u64 = 6;
/// FORMAT CONSTANT: one trailer record (hash, offset, length).
pub const RECORD_LEN: usize = 48;
/// FORMAT CONSTANT: the trailer's end (count and magic).
const TRAILER_END_LEN: usize = 8;
/// Bytes of a pack holding no blob (header and trailer end).
pub const EMPTY_PACK_LEN: u64 = HEADER_LEN + TRAILER_END_LEN as u64;

/// A pack is sealed once its blobs reach this size. Large enough that a
/// repository of a million documents is a few hundred packs, small enough that
/// a few packs in flight stay well inside the server's memory budget.
pub const TARGET_PACK_BYTES: usize = 16 << 20;
/// No pack the vault writes is larger (a full pack, one more blob of at most
/// the packed limit, its trailer): a larger file under `packs/` is not read.
pub const MAX_PACK_BYTES: u64 = 64 << 20;

/// One blob of a pack, as its trailer records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedBlob {
    /// SHA-256 of the blob.
    pub sha256: [u8; 32],
    /// Where it starts in the pack.
    pub offset: u64,
    /// Its length.
    pub length: u64,
}

/// A pack being filled.
pub struct PackBuilder {
    bytes: Vec<u8>,
    blobs: Vec<PackedBlob>,
}

/// A finished pack: its bytes, its name (hash) and its blobs.
pub struct SealedPack {
    /// The whole pack.
    pub bytes: Bytes,
    /// SHA-256 of `bytes`, hex: the pack's name.
    pub sha256: String,
    /// Its blobs, in offset order.
    pub blobs: Vec<PackedBlob>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    /// An empty pack.
    pub fn new() -> Self {
        let mut bytes = Vec::with_capacity(TARGET_PACK_BYTES + (1 << 20));
        bytes.extend_from_slice(PACK_MAGIC);
        bytes.extend_from_slice(&PACK_VERSION.to_le_bytes());
        PackBuilder {
            bytes,
            blobs: Vec::new(),
        }
    }

    /// Appends a blob whose SHA-256 is `sha256`; returns its offset.
    pub fn add(&mut self, sha256: [u8; 32], blob: &[u8]) -> u64 {
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(blob);
        self.blobs.push(PackedBlob {
            sha256,
            offset,
            length: blob.len() as u64,
        });
        offset
    }

    /// Bytes of blobs so far.
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - HEADER_LEN as usize
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Whether the pack is full enough to seal.
    pub fn is_full(&self) -> bool {
        self.payload_len() >= TARGET_PACK_BYTES
    }

    /// Writes the trailer and names the pack.
    pub fn seal(mut self) -> SealedPack {
        for blob in &self.blobs {
            self.bytes.extend_from_slice(&blob.sha256);
            self.bytes.extend_from_slice(&blob.offset.to_le_bytes());
            self.bytes.extend_from_slice(&blob.length.to_le_bytes());
        }
        let count = u32::try_from(self.blobs.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(&count.to_le_bytes());
        self.bytes.extend_from_slice(TRAILER_MAGIC);
        let sha256 = hex::encode(Sha256::digest(&self.bytes));
        SealedPack {
            bytes: Bytes::from(self.bytes),
            sha256,
            blobs: self.blobs,
        }
    }
}

/// Parses a whole pack's header and trailer (untrusted bytes: a repository is
/// not trusted). Checks the blobs lie between the header and the trailer, in
/// order, without overlap; the blobs' hashes are the caller's to check.
pub fn parse(pack: &[u8]) -> Result<Vec<PackedBlob>, BackupError> {
    let bad = |why: &str| BackupError::BadPack(why.to_owned());
    let header_len = HEADER_LEN as usize;
    if pack.len() < header_len + TRAILER_END_LEN {
        return Err(bad("too short"));
    }
    if &pack[..4] != PACK_MAGIC {
        return Err(bad("not a pack (magic)"));
    }
    let version = u16::from_le_bytes([pack[4], pack[5]]);
    if version != PACK_VERSION {
        return Err(bad(&format!("unknown pack version {version}")));
    }
    let end = pack.len() - TRAILER_END_LEN;
    if &pack[end + 4..] != TRAILER_MAGIC {
        return Err(bad("no trailer"));
    }
    let count = u32::from_le_bytes([pack[end], pack[end + 1], pack[end + 2], pack[end + 3]]);
    let records_len = (count as usize)
        .checked_mul(RECORD_LEN)
        .filter(|len| *len <= end - header_len)
        .ok_or_else(|| bad("trailer longer than the pack"))?;
    let records_start = end - records_len;
    let mut blobs = Vec::with_capacity(count as usize);
    let mut next_free = HEADER_LEN;
    for record in pack[records_start..end].chunks_exact(RECORD_LEN) {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&record[..32]);
        let offset = u64::from_le_bytes(record[32..40].try_into().map_err(|_| bad("record"))?);
        let length = u64::from_le_bytes(record[40..48].try_into().map_err(|_| bad("record"))?);
        let blob_end = offset
            .checked_add(length)
            .ok_or_else(|| bad("blob length overflows"))?;
        if offset < next_free || blob_end > records_start as u64 {
            return Err(bad("blobs overlap or lie outside the pack"));
        }
        next_free = blob_end;
        blobs.push(PackedBlob {
            sha256,
            offset,
            length,
        });
    }
    Ok(blobs)
}

/// Checks a whole pack: its bytes hash to `name` (its hex SHA-256) and every
/// blob its trailer names hashes to its record. Returns the blobs.
pub fn check(pack: &[u8], name: &str) -> Result<Vec<PackedBlob>, BackupError> {
    if hex::encode(Sha256::digest(pack)) != name {
        return Err(BackupError::BadPack(
            "bytes do not hash to the pack's name".into(),
        ));
    }
    let blobs = parse(pack)?;
    for blob in &blobs {
        let range = blob.offset as usize..(blob.offset + blob.length) as usize;
        if Sha256::digest(&pack[range])[..] != blob.sha256 {
            return Err(BackupError::BadPack(format!(
                "the blob at offset {} does not match its hash",
                blob.offset
            )));
        }
    }
    Ok(blobs)
}

/// FORMAT CONSTANT: first bytes of every relocation record.
pub const RELOCATION_MAGIC: &[u8; 4] = b"BVRL";
/// FORMAT CONSTANT: the relocation record format written (2: signed).
pub const RELOCATION_VERSION: u16 = 2;
/// FORMAT CONSTANT: what a relocation record's signature covers first (then
/// the old pack's hash, then the record before the signature).
const RELOCATION_CONTEXT: &[u8] = b"billing-vault backup relocation v2\n";
/// FORMAT CONSTANT: one moved blob (old offset, new pack, new offset).
const MOVE_LEN: usize = 8 + 32 + 8;
const SIGNATURE_LEN: usize = 64;
/// A record is never larger: a pack holds fewer blobs than this.
pub const MAX_RELOCATION_BYTES: u64 = 10 + 1_000_000 * MOVE_LEN as u64 + SIGNATURE_LEN as u64;
/// A chain of relocations longer than this is refused (a cycle, or a
/// repository that was tampered with).
const MAX_HOPS: usize = 64;

/// Where a prune moved the blobs of one pack that were still named when it
/// repacked that pack (`relocations/<2 hex>/<old pack>`):
///
/// ```text
/// "BVRL" | u16 version = 2 | u32 count                 FORMAT CONSTANTS
/// count x (old offset u64 | new pack sha256 [32] | new offset u64)
/// Ed25519 signature [64] by the vault's backup key over
///   "billing-vault backup relocation v2\n" | old pack sha256 [32] | the bytes above
/// ```
///
/// Manifest chunks are immutable and signed through their hashes, so a
/// repacked blob is found by its old place: a reader follows the old pack's
/// record (and that pack's, if it was repacked again). A reader checks every
/// object against its signed hash, but a prune deletes the packs a record
/// moves blobs out of, and a backup names a blob where a record says it is:
/// so a record is trusted only when the vault signed it for that old pack (an
/// unsigned one, or one moved to another pack's name, would make a prune delete
/// live data). Format 1 records were unsigned: they are refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relocation {
    /// (old offset, new pack, new offset), by old offset.
    pub moves: Vec<(u64, String, u64)>,
}

/// What a relocation record's signature covers.
fn relocation_signed_bytes(old_pack: &str, record: &[u8]) -> Result<Vec<u8>, BackupError> {
    let old = hex::decode(old_pack)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| BackupError::BadPack(format!("{old_pack} is not a pack name")))?;
    let mut message = Vec::with_capacity(RELOCATION_CONTEXT.len() + 32 + record.len());
    message.extend_from_slice(RELOCATION_CONTEXT);
    message.extend_from_slice(&old);
    message.extend_from_slice(record);
    Ok(message)
}

impl Relocation {
    /// Encodes the record of `old_pack` (moves sorted by old offset), signed.
    pub fn encode(&self, old_pack: &str, signer: &SigningKey) -> Result<Vec<u8>, BackupError> {
        let mut moves: Vec<&(u64, String, u64)> = self.moves.iter().collect();
        moves.sort_by_key(|m| m.0);
        let mut out = Vec::with_capacity(10 + moves.len() * MOVE_LEN + SIGNATURE_LEN);
        out.extend_from_slice(RELOCATION_MAGIC);
        out.extend_from_slice(&RELOCATION_VERSION.to_le_bytes());
        let count = u32::try_from(moves.len())
            .map_err(|_| BackupError::BadPack("too many moves for one record".into()))?;
        out.extend_from_slice(&count.to_le_bytes());
        for (old, pack, new) in moves {
            out.extend_from_slice(&old.to_le_bytes());
            let sha: [u8; 32] = hex::decode(pack)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| BackupError::BadPack(format!("{pack} is not a pack name")))?;
            out.extend_from_slice(&sha);
            out.extend_from_slice(&new.to_le_bytes());
        }
        let signature = signer.sign(&relocation_signed_bytes(old_pack, &out)?);
        out.extend_from_slice(&signature);
        Ok(out)
    }

    /// Parses the record stored for `old_pack` (untrusted bytes) and checks
    /// that `vault_key` signed it for that pack.
    pub fn parse(
        bytes: &[u8],
        old_pack: &str,
        vault_key: &PublicKey,
    ) -> Result<Relocation, BackupError> {
        let bad = |why: &str| {
            BackupError::BadPack(format!("relocation record of pack {old_pack}: {why}"))
        };
        if bytes.len() < 10 || &bytes[..4] != RELOCATION_MAGIC {
            return Err(bad("not a relocation record"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version == 1 {
            return Err(bad("format 1 is unsigned and not trusted"));
        }
        if version != RELOCATION_VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        let count = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
        if count
            .checked_mul(MOVE_LEN)
            .and_then(|n| n.checked_add(10 + SIGNATURE_LEN))
            != Some(bytes.len())
        {
            return Err(bad("length does not match the count"));
        }
        let (record, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let signature: &[u8; SIGNATURE_LEN] = signature.try_into().map_err(|_| bad("signature"))?;
        vault_key
            .verify(&relocation_signed_bytes(old_pack, record)?, signature)
            .map_err(|_| bad("not signed by this vault for this pack"))?;
        let mut moves = Vec::with_capacity(count);
        for entry in record[10..].chunks_exact(MOVE_LEN) {
            let old = u64::from_le_bytes(entry[..8].try_into().map_err(|_| bad("record"))?);
            let pack = hex::encode(&entry[8..40]);
            let new = u64::from_le_bytes(entry[40..48].try_into().map_err(|_| bad("record"))?);
            if moves
                .last()
                .is_some_and(|(previous, _, _)| *previous >= old)
            {
                return Err(bad("moves not in offset order"));
            }
            moves.push((old, pack, new));
        }
        Ok(Relocation { moves })
    }

    fn find(&self, offset: u64) -> Option<(&str, u64)> {
        let i = self.moves.binary_search_by_key(&offset, |m| m.0).ok()?;
        let (_, pack, new) = &self.moves[i];
        Some((pack.as_str(), *new))
    }
}

/// Every relocation record of a repository, by old pack.
#[derive(Clone, Debug, Default)]
pub struct Relocations {
    by_pack: std::collections::HashMap<String, Relocation>,
}

impl Relocations {
    /// From records read from the repository.
    pub fn new(by_pack: std::collections::HashMap<String, Relocation>) -> Self {
        Relocations { by_pack }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_pack.is_empty()
    }

    /// The old packs that have records.
    pub fn packs(&self) -> impl Iterator<Item = &String> {
        self.by_pack.keys()
    }

    /// Where an entry's object is now (a whole object never moves).
    pub fn locate(&self, location: &Location) -> Result<Location, BackupError> {
        match location {
            Location::Whole => Ok(Location::Whole),
            Location::Packed { pack, offset } if !self.by_pack.contains_key(pack) => {
                Ok(Location::Packed {
                    pack: pack.clone(),
                    offset: *offset,
                })
            }
            Location::Packed { pack, offset } => {
                let (pack, offset) = self.resolve(pack, *offset, |_| {})?;
                Ok(Location::Packed {
                    pack: pack.to_owned(),
                    offset,
                })
            }
        }
    }

    /// Where the blob at `offset` of `pack` is now, following records from pack
    /// to pack; `hops` receives each record followed. An offset a record does
    /// not name stays where it was (the reader then finds what is there, and
    /// the hash check says whether it is right).
    pub fn resolve<'a>(
        &'a self,
        pack: &'a str,
        offset: u64,
        mut hops: impl FnMut(&'a str),
    ) -> Result<(&'a str, u64), BackupError> {
        let (mut pack, mut offset) = (pack, offset);
        for _ in 0..MAX_HOPS {
            let Some(record) = self.by_pack.get(pack) else {
                return Ok((pack, offset));
            };
            hops(pack);
            match record.find(offset) {
                Some((next, at)) => (pack, offset) = (next, at),
                None => return Ok((pack, offset)),
            }
        }
        Err(BackupError::BadPack(format!(
            "relocation records of pack {pack} form a cycle"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    fn sample() -> SealedPack {
        let mut builder = PackBuilder::new();
        for blob in [&b"first ciphertext"[..], b"", b"third, longer ciphertext"] {
            builder.add(sha(blob), blob);
        }
        builder.seal()
    }

    #[test]
    fn a_sealed_pack_parses_and_checks() {
        let pack = sample();
        let blobs = check(&pack.bytes, &pack.sha256).unwrap();
        assert_eq!(blobs, pack.blobs);
        assert_eq!(blobs[0].offset, HEADER_LEN);
        let third = &blobs[2];
        assert_eq!(
            &pack.bytes[third.offset as usize..(third.offset + third.length) as usize],
            b"third, longer ciphertext"
        );
    }

    #[test]
    fn any_changed_byte_fails_the_check() {
        let pack = sample();
        for i in 0..pack.bytes.len() {
            let mut tampered = pack.bytes.to_vec();
            tampered[i] ^= 0x40;
            assert!(check(&tampered, &pack.sha256).is_err(), "flip at {i}");
        }
    }

    /// A pack written by the first release: it must always open.
    #[test]
    fn v1_fixture_still_opens() {
        let bytes = include_bytes!("../../tests/fixtures/backup-pack-v1/pack");
        let name = include_str!("../../tests/fixtures/backup-pack-v1/name").trim();
        if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_some() {
            let pack = sample();
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/backup-pack-v1");
            std::fs::write(dir.join("pack"), &pack.bytes).unwrap();
            std::fs::write(dir.join("name"), format!("{}\n", pack.sha256)).unwrap();
        }
        let blobs = check(bytes, name).unwrap();
        assert_eq!(blobs, sample().blobs);
    }

    fn relocation() -> Relocation {
        Relocation {
            moves: vec![(6, "ab".repeat(32), 6), (4096, "cd".repeat(32), 70)],
        }
    }

    fn fixture_key() -> SigningKey {
        SigningKey::from_seed(&vault_crypto::Key256::from_bytes([7; 32]))
    }

    #[test]
    fn relocations_round_trip_and_chain() {
        let record = relocation();
        let key = fixture_key();
        let old = "01".repeat(32);
        let encoded = record.encode(&old, &key).unwrap();
        assert_eq!(
            Relocation::parse(&encoded, &old, &key.public_key()).unwrap(),
            record
        );
        let second = Relocation {
            moves: vec![(6, "ef".repeat(32), 900)],
        };
        let relocations = Relocations::new(
            [(old.clone(), record), ("ab".repeat(32), second)]
                .into_iter()
                .collect(),
        );
        let mut hops = Vec::new();
        let (pack, offset) = relocations
            .resolve(&old, 6, |p| hops.push(p.to_owned()))
            .unwrap();
        assert_eq!((pack, offset), ("ef".repeat(32).as_str(), 900));
        assert_eq!(hops, [old.clone(), "ab".repeat(32)]);
        let (pack, offset) = relocations.resolve(&old, 4096, |_| {}).unwrap();
        assert_eq!((pack, offset), ("cd".repeat(32).as_str(), 70));
        // A pack that was never repacked stays.
        let other = "99".repeat(32);
        assert_eq!(
            relocations.resolve(&other, 6, |_| {}).unwrap(),
            (other.as_str(), 6)
        );
        // A cycle is refused.
        let cycle = Relocations::new(
            [
                (
                    "01".repeat(32),
                    Relocation {
                        moves: vec![(6, "02".repeat(32), 6)],
                    },
                ),
                (
                    "02".repeat(32),
                    Relocation {
                        moves: vec![(6, "01".repeat(32), 6)],
                    },
                ),
            ]
            .into_iter()
            .collect(),
        );
        assert!(cycle.resolve(&old, 6, |_| {}).is_err());
    }

    /// A record counts only when this vault signed it for the pack it is stored
    /// under: another key's, another pack's, or a changed byte is refused.
    #[test]
    fn a_relocation_record_is_trusted_only_as_signed() {
        let key = fixture_key();
        let old = "01".repeat(32);
        let encoded = relocation().encode(&old, &key).unwrap();
        let forger = SigningKey::from_seed(&vault_crypto::Key256::from_bytes([8; 32]));
        let forged = relocation().encode(&old, &forger).unwrap();
        assert!(Relocation::parse(&forged, &old, &key.public_key()).is_err());
        assert!(Relocation::parse(&encoded, &"02".repeat(32), &key.public_key()).is_err());
        for i in 0..encoded.len() {
            let mut tampered = encoded.clone();
            tampered[i] ^= 0x01;
            assert!(
                Relocation::parse(&tampered, &old, &key.public_key()).is_err(),
                "flip at {i}"
            );
        }
    }

    /// The unsigned records of format 1 (never in a released repository) are
    /// recognised and refused.
    #[test]
    fn relocation_v1_fixture_is_refused_as_unsigned() {
        let bytes = include_bytes!("../../tests/fixtures/backup-pack-v1/relocation");
        let refused = Relocation::parse(bytes, &"01".repeat(32), &fixture_key().public_key())
            .unwrap_err()
            .to_string();
        assert!(refused.contains("unsigned"), "{refused}");
    }

    /// A relocation record of format 2: it must always open.
    #[test]
    fn relocation_v2_fixture_still_opens() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/backup-pack-v1/relocation-v2");
        let old = "01".repeat(32);
        if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_some() {
            std::fs::write(&path, relocation().encode(&old, &fixture_key()).unwrap()).unwrap();
        }
        let bytes = include_bytes!("../../tests/fixtures/backup-pack-v1/relocation-v2");
        assert_eq!(
            Relocation::parse(bytes, &old, &fixture_key().public_key()).unwrap(),
            relocation()
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
            let _ = Relocation::parse(&bytes, &"01".repeat(32), &fixture_key().public_key());
        }

        #[test]
        fn any_blobs_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut builder = PackBuilder::new();
            for blob in &blobs {
                builder.add(sha(blob), blob);
            }
            let pack = builder.seal();
            let parsed = check(&pack.bytes, &pack.sha256).unwrap();
            prop_assert_eq!(parsed.len(), blobs.len());
            for (record, blob) in parsed.iter().zip(&blobs) {
                prop_assert_eq!(&pack.bytes[record.offset as usize..(record.offset + record.length) as usize], &blob[..]);
            }
        }

        #[test]
        fn a_truncated_pack_never_parses(cut in 1usize..60) {
            let pack = sample();
            let len = pack.bytes.len().saturating_sub(cut);
            prop_assert!(parse(&pack.bytes[..len]).is_err());
        }
    }
}

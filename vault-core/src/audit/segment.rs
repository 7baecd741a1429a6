//! The audit segment, v1: one batch of events, sealed under the tenant's keys.
//!
//! ```text
//! "BVAS" | u16 version (1) | u64 segment index | u64 first event seq | u32 event count
//! key record (v1, see vault-crypto): wrapped DEK + the events as an encrypted JSON array
//! ```
//!
//! The key record's document id is derived from the tenant and the segment index,
//! so a segment moved to another position or tenant does not open. The segment's
//! Merkle leaf is the clear header followed by the key record's
//! [`authenticated_content`](KeyRecord::authenticated_content): everything but the
//! wrapped DEK, so a key rotation that rewraps segments leaves the log's tree,
//! and its signed checkpoints, intact. Verifying the tree needs no key.

use sha2::{Digest, Sha256};
use vault_crypto::envelope::{self, BodyHeader, KeyRecord, KeyRef};
use vault_crypto::{CryptoError, DocumentId, Key256, TenantId};

use super::event::AuditEvent;

/// FORMAT CONSTANT: segment magic.
const MAGIC: [u8; 4] = *b"BVAS";
/// FORMAT CONSTANT: segment format version.
const VERSION: u16 = 1;
/// FORMAT CONSTANT: label of the derived document id.
const DOCUMENT_LABEL: &[u8] = b"billing-vault audit segment v1";
/// Bytes of the clear header.
const HEADER_LEN: usize = 4 + 2 + 8 + 8 + 4;

/// Why a segment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The bytes are not a v1 segment.
    #[error("malformed audit segment: {0}")]
    Malformed(&'static str),
    /// The key record failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The events did not decode or do not match the header.
    #[error("audit segment contents: {0}")]
    Contents(&'static str),
}

/// The clear part of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Position of the segment in the log (its Merkle leaf index).
    pub index: u64,
    /// Sequence number of its first event.
    pub first_seq: u64,
    /// Number of events.
    pub count: u32,
}

impl SegmentHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_be_bytes());
        out[6..14].copy_from_slice(&self.index.to_be_bytes());
        out[14..22].copy_from_slice(&self.first_seq.to_be_bytes());
        out[22..26].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    /// The sequence number after this segment's last event.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }
}

/// A parsed (still sealed) segment.
pub struct Segment {
    /// Its clear header.
    pub header: SegmentHeader,
    /// Its key record.
    pub record: KeyRecord,
}

fn be<const N: usize>(bytes: &[u8]) -> Result<[u8; N], SegmentError> {
    bytes
        .try_into()
        .map_err(|_| SegmentError::Malformed("truncated header"))
}

impl Segment {
    /// Parses a segment from untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Segment, SegmentError> {
        if bytes.len() < HEADER_LEN {
            return Err(SegmentError::Malformed("shorter than its header"));
        }
        if bytes[..4] != MAGIC {
            return Err(SegmentError::Malformed("not an audit segment"));
        }
        if u16::from_be_bytes(be(&bytes[4..6])?) != VERSION {
            return Err(SegmentError::Malformed("unknown segment version"));
        }
        let header = SegmentHeader {
            index: u64::from_be_bytes(be(&bytes[6..14])?),
            first_seq: u64::from_be_bytes(be(&bytes[14..22])?),
            count: u32::from_be_bytes(be(&bytes[22..26])?),
        };
        if header.count == 0 {
            return Err(SegmentError::Malformed(
                "a segment holds at least one event",
            ));
        }
        let record = KeyRecord::parse(&bytes[HEADER_LEN..])?;
        Ok(Segment { header, record })
    }

    /// The stored bytes: the clear header, then the key record (after a rewrap,
    /// with the new record; the Merkle leaf does not change).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.encode().to_vec();
        out.extend_from_slice(&self.record.encode());
        out
    }

    /// The Merkle leaf data: the clear header and the record's rewrap-stable bytes.
    pub fn leaf_data(&self) -> Vec<u8> {
        let mut out = self.header.encode().to_vec();
        out.extend_from_slice(&self.record.authenticated_content());
        out
    }

    /// The segment's Merkle leaf hash (RFC 9162).
    pub fn leaf_hash(&self) -> [u8; 32] {
        vault_crypto::merkle::leaf_hash(&self.leaf_data())
    }

    /// Whether the key record belongs at this position of this tenant's log.
    pub fn is_bound_to(&self, tenant: &TenantId) -> bool {
        self.record.tenant == *tenant
            && self.record.document == segment_document_id(tenant, self.header.index)
    }

    /// Decrypts the events with the branch key the record names.
    pub fn open(
        &self,
        tenant: &TenantId,
        branch: &Key256,
    ) -> Result<Vec<AuditEvent>, SegmentError> {
        if !self.is_bound_to(tenant) {
            return Err(SegmentError::Crypto(CryptoError::ContextMismatch(
                "audit segment",
            )));
        }
        let dek = self.record.unwrap_dek(branch)?;
        let json = self.record.open_metadata(&dek)?;
        let events: Vec<AuditEvent> = serde_json::from_slice(&json)
            .map_err(|_| SegmentError::Contents("events do not decode"))?;
        let in_order = events.len() == self.header.count as usize
            && events
                .iter()
                .enumerate()
                .all(|(i, e)| e.seq == self.header.first_seq + i as u64);
        if !in_order {
            return Err(SegmentError::Contents(
                "events do not match the segment header",
            ));
        }
        Ok(events)
    }
}

/// The document id a segment's key record is bound to.
pub fn segment_document_id(tenant: &TenantId, index: u64) -> DocumentId {
    let digest = Sha256::new()
        .chain_update(DOCUMENT_LABEL)
        .chain_update([tenant.as_str().len() as u8])
        .chain_update(tenant.as_str())
        .chain_update(index.to_be_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    DocumentId::from_bytes(id)
}

/// Seals a batch of events (their seqs consecutive from `first_seq`) as segment
/// `index`, under the tenant's branch key.
pub fn seal(
    tenant: &TenantId,
    index: u64,
    events: &[AuditEvent],
    branch: &Key256,
    key_ref: KeyRef,
) -> Result<Vec<u8>, SegmentError> {
    let first_seq = events
        .first()
        .map(|e| e.seq)
        .ok_or(SegmentError::Contents("no events"))?;
    let count =
        u32::try_from(events.len()).map_err(|_| SegmentError::Contents("too many events"))?;
    let header = SegmentHeader {
        index,
        first_seq,
        count,
    };
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec(events).map_err(|_| SegmentError::Contents("events do not encode"))?,
    );
    let dek = Key256::random();
    let document = segment_document_id(tenant, index);
    // The body header is only a carrier for the key commitment: no body is written.
    let (body_header, _) =
        envelope::begin_body(&dek, tenant, document, envelope::DEFAULT_SEGMENT_SIZE)?;
    let (body_header, _) = BodyHeader::parse(&body_header)?;
    let record = KeyRecord::seal(&dek, &body_header, branch, key_ref, &json)?;
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&record.encode());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::Outcome;
    use time::OffsetDateTime;

    fn event(seq: u64) -> AuditEvent {
        AuditEvent {
            seq,
            time: OffsetDateTime::UNIX_EPOCH,
            actor: "apikey:k1".into(),
            roles: vec!["reader".into()],
            action: "document.download".into(),
            document: Some("00112233445566778899aabbccddeeff".into()),
            outcome: Outcome::Allowed,
            status: 200,
            request_id: format!("req-{seq}"),
            client: Some("127.0.0.1".into()),
            fields: vec![],
            detail: None,
        }
    }

    fn key_ref() -> KeyRef {
        KeyRef {
            provider: "local".into(),
            kek_id: "acme".into(),
            version: 1,
        }
    }

    #[test]
    fn segments_round_trip_and_bind_to_their_place() {
        let tenant = TenantId::new("acme").unwrap();
        let branch = Key256::random();
        let events: Vec<AuditEvent> = (5..8).map(event).collect();
        let bytes = seal(&tenant, 2, &events, &branch, key_ref()).unwrap();
        let segment = Segment::parse(&bytes).unwrap();
        assert_eq!(
            segment.header,
            SegmentHeader {
                index: 2,
                first_seq: 5,
                count: 3
            }
        );
        assert_eq!(segment.open(&tenant, &branch).unwrap(), events);
        assert!(segment
            .open(&TenantId::new("other").unwrap(), &branch)
            .is_err());
        assert!(segment.open(&tenant, &Key256::random()).is_err());

        // Moved to another index: the binding fails, and so does the leaf.
        let mut moved = bytes.clone();
        moved[13] = 3;
        let moved = Segment::parse(&moved).unwrap();
        assert!(!moved.is_bound_to(&tenant));
        assert_ne!(moved.leaf_hash(), segment.leaf_hash());
    }

    #[test]
    fn rewrapping_keeps_the_leaf() {
        let tenant = TenantId::new("acme").unwrap();
        let branch = Key256::random();
        let bytes = seal(&tenant, 0, &[event(0)], &branch, key_ref()).unwrap();
        let segment = Segment::parse(&bytes).unwrap();
        let new_branch = Key256::random();
        let rewrapped = Segment {
            header: segment.header,
            record: segment
                .record
                .rewrap(
                    &branch,
                    &new_branch,
                    KeyRef {
                        version: 2,
                        ..key_ref()
                    },
                )
                .unwrap(),
        };
        assert_eq!(rewrapped.leaf_hash(), segment.leaf_hash());
        assert_eq!(rewrapped.open(&tenant, &new_branch).unwrap()[0], event(0));
    }

    /// Events of the checked-in segment fixtures: three seconds apart.
    fn fixture_events() -> Vec<AuditEvent> {
        let start = OffsetDateTime::from_unix_timestamp(1_796_300_000).unwrap();
        (7..10)
            .map(|seq| AuditEvent {
                time: start + time::Duration::seconds(3 * (seq as i64 - 7)),
                ..event(seq)
            })
            .collect()
    }

    fn fixture_path(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
            .join("segment")
    }

    /// The checked-in v1 segment still opens. It was sealed with the key below
    /// (public, test-only) by the v1 writer, which no longer exists: it is
    /// never written anew.
    #[test]
    fn the_v1_fixture_still_opens() {
        let tenant = TenantId::new("acme").unwrap();
        let branch = Key256::from_bytes([5; 32]);
        let path = fixture_path("audit-segment-v1");
        if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_some() && !path.exists() {
            let bytes = seal(&tenant, 4, &fixture_events(), &branch, key_ref()).unwrap();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        let segment = Segment::parse(&bytes).unwrap();
        assert_eq!(segment.header.index, 4);
        assert_eq!(segment.header.first_seq, 7);
        assert_eq!(segment.open(&tenant, &branch).unwrap(), fixture_events());
    }

    #[test]
    fn junk_is_refused() {
        for junk in [
            &b""[..],
            b"BVAS",
            b"XXXX\x00\x01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(Segment::parse(junk).is_err());
        }
    }
}

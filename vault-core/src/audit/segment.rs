//! The audit segment: one batch of events, sealed under the tenant's keys.
//!
//! ```text
//! v2: "BVAS" | u16 version (2) | u64 segment index | u64 first event seq | u32 event count
//!     | i64 earliest event time | i64 latest event time | i64 latest event time of the log so far
//!     (times in microseconds since 1970, UTC)
//!     key record (v1, see vault-crypto): wrapped DEK + the events as an encrypted JSON array
//! v1: the same without the three times (read; written only with
//!     `audit.segment_format = 1`, while replicas that read only v1 share the log)
//! ```
//!
//! The key record's document id is derived from the tenant and the segment index,
//! so a segment moved to another position or tenant does not open. The segment's
//! Merkle leaf is the clear header followed by the key record's
//! [`authenticated_content`](KeyRecord::authenticated_content): everything but the
//! wrapped DEK, so a key rotation that rewraps segments leaves the log's tree,
//! and its signed checkpoints, intact. Verifying the tree needs no key.
//!
//! The clear times let a reader find the events since T without decrypting the
//! segments before them. "The log so far" is the latest event time of this
//! segment and every one before it, so it never decreases along the log even when
//! replicas' clocks disagree: the first segment where it reaches T is exactly
//! where events at or after T begin. Opening a segment checks its times against
//! its events; the Merkle leaf covers them, so `vault audit verify` sees them
//! changed after a checkpoint signed them, and it, the writers and the readers
//! check the chain of "latest of the log so far" (see ARCHITECTURE, Formats).
//! What they reveal, when each batch was written, the objects' own modification
//! times reveal already.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vault_crypto::envelope::{self, BodyHeader, KeyRecord, KeyRef};
use vault_crypto::{CryptoError, DocumentId, Key256, TenantId};

use super::event::AuditEvent;

/// FORMAT CONSTANT: segment magic.
const MAGIC: [u8; 4] = *b"BVAS";
/// FORMAT CONSTANT: the first segment format (no clear times).
const VERSION_1: u16 = 1;
/// FORMAT CONSTANT: the segment format written now (clear times).
const VERSION_2: u16 = 2;
/// FORMAT CONSTANT: label of the derived document id.
const DOCUMENT_LABEL: &[u8] = b"billing-vault audit segment v1";
/// Bytes of the clear header, v1.
const HEADER_LEN_V1: usize = 4 + 2 + 8 + 8 + 4;
/// Bytes of the clear header, v2.
pub const HEADER_LEN_V2: usize = HEADER_LEN_V1 + 3 * 8;

/// Why a segment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The bytes are not a segment of a known version.
    #[error("malformed audit segment: {0}")]
    Malformed(&'static str),
    /// The key record failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The events did not decode or do not match the header.
    #[error("audit segment contents: {0}")]
    Contents(&'static str),
}

/// A segment's event times, in microseconds since 1970 (v2 headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentTimes {
    /// Its earliest event's time.
    pub earliest: i64,
    /// Its latest event's time.
    pub latest: i64,
    /// The latest event time of this segment and every segment before it.
    pub log_latest: i64,
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
    /// Its event times (`None` in a v1 segment).
    pub times: Option<SegmentTimes>,
}

/// An event time in the headers' unit (microseconds since 1970, rounded down:
/// the index's conversion of upload times).
pub fn micros(time: OffsetDateTime) -> i64 {
    crate::search::micros_floor(time.unix_timestamp_nanos())
}

impl SegmentHeader {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN_V2);
        out.extend_from_slice(&MAGIC);
        let version = match self.times {
            Some(_) => VERSION_2,
            None => VERSION_1,
        };
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        if let Some(times) = self.times {
            out.extend_from_slice(&times.earliest.to_be_bytes());
            out.extend_from_slice(&times.latest.to_be_bytes());
            out.extend_from_slice(&times.log_latest.to_be_bytes());
        }
        out
    }

    /// Parses the clear header at the start of `bytes` (which may hold only
    /// the first [`HEADER_LEN_V2`] bytes of a segment); returns it and its length.
    pub fn parse(bytes: &[u8]) -> Result<(SegmentHeader, usize), SegmentError> {
        if bytes.len() < HEADER_LEN_V1 {
            return Err(SegmentError::Malformed("shorter than its header"));
        }
        if bytes[..4] != MAGIC {
            return Err(SegmentError::Malformed("not an audit segment"));
        }
        let version = u16::from_be_bytes(be(&bytes[4..6])?);
        let mut header = SegmentHeader {
            index: u64::from_be_bytes(be(&bytes[6..14])?),
            first_seq: u64::from_be_bytes(be(&bytes[14..22])?),
            count: u32::from_be_bytes(be(&bytes[22..26])?),
            times: None,
        };
        if header.count == 0 {
            return Err(SegmentError::Malformed(
                "a segment holds at least one event",
            ));
        }
        if header
            .first_seq
            .checked_add(u64::from(header.count))
            .is_none()
        {
            return Err(SegmentError::Malformed("sequence numbers overflow"));
        }
        match version {
            VERSION_1 => Ok((header, HEADER_LEN_V1)),
            VERSION_2 => {
                if bytes.len() < HEADER_LEN_V2 {
                    return Err(SegmentError::Malformed("shorter than its header"));
                }
                let at = |offset: usize| -> Result<i64, SegmentError> {
                    Ok(i64::from_be_bytes(be(&bytes[offset..offset + 8])?))
                };
                let times = SegmentTimes {
                    earliest: at(HEADER_LEN_V1)?,
                    latest: at(HEADER_LEN_V1 + 8)?,
                    log_latest: at(HEADER_LEN_V1 + 16)?,
                };
                if !(times.earliest <= times.latest && times.latest <= times.log_latest) {
                    return Err(SegmentError::Malformed("event times out of order"));
                }
                header.times = Some(times);
                Ok((header, HEADER_LEN_V2))
            }
            _ => Err(SegmentError::Malformed("unknown segment version")),
        }
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
        let (header, header_len) = SegmentHeader::parse(bytes)?;
        let record = KeyRecord::parse(&bytes[header_len..])?;
        Ok(Segment { header, record })
    }

    /// The stored bytes: the clear header, then the key record (after a rewrap,
    /// with the new record; the Merkle leaf does not change).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.encode();
        out.extend_from_slice(&self.record.encode());
        out
    }

    /// The Merkle leaf data: the clear header and the record's rewrap-stable bytes.
    pub fn leaf_data(&self) -> Vec<u8> {
        let mut out = self.header.encode();
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
        let times_match = self.header.times.is_none_or(|times| {
            let earliest = events.iter().map(|e| micros(e.time)).min();
            let latest = events.iter().map(|e| micros(e.time)).max();
            earliest == Some(times.earliest) && latest == Some(times.latest)
        });
        if !in_order || !times_match {
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

/// Which segment format a writer seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentFormat {
    /// Without clear times (for logs shared with replicas that read only v1).
    V1,
    /// With clear times; `log_latest_before` is the previous v2 segment's
    /// "latest of the log so far" (`None` before the log's first v2 segment).
    V2 {
        /// The chain's value before this segment.
        log_latest_before: Option<i64>,
    },
}

/// Seals a batch of events (their seqs consecutive from `first_seq`) as segment
/// `index` (v2), under the tenant's branch key. `log_latest_before` is the
/// previous v2 segment's "latest of the log so far" (`None` for the log's
/// first v2 segment).
pub fn seal(
    tenant: &TenantId,
    index: u64,
    events: &[AuditEvent],
    log_latest_before: Option<i64>,
    branch: &Key256,
    key_ref: KeyRef,
) -> Result<Vec<u8>, SegmentError> {
    seal_as(
        SegmentFormat::V2 { log_latest_before },
        tenant,
        index,
        events,
        branch,
        key_ref,
    )
}

/// Seals a batch of events as segment `index` in the given format.
pub fn seal_as(
    format: SegmentFormat,
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
    let earliest = events.iter().map(|e| micros(e.time)).min();
    let latest = events.iter().map(|e| micros(e.time)).max();
    let (Some(earliest), Some(latest)) = (earliest, latest) else {
        return Err(SegmentError::Contents("no events"));
    };
    let times = match format {
        SegmentFormat::V1 => None,
        SegmentFormat::V2 { log_latest_before } => Some(SegmentTimes {
            earliest,
            latest,
            log_latest: log_latest_before.map_or(latest, |before| before.max(latest)),
        }),
    };
    let header = SegmentHeader {
        index,
        first_seq,
        count,
        times,
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
    let mut out = header.encode();
    out.extend_from_slice(&record.encode());
    Ok(out)
}

/// Whether a v2 segment's "latest of the log so far" follows from the chain
/// before it and its own latest time (`None` before the log's first v2
/// segment): a check on headers alone, which the readers, the writers and the
/// offline verification make on every pair of v2 segments they read in order.
pub fn follows_chain(before: Option<i64>, times: &SegmentTimes) -> bool {
    times.log_latest == before.map_or(times.latest, |before| before.max(times.latest))
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
        let bytes = seal(&tenant, 2, &events, None, &branch, key_ref()).unwrap();
        let segment = Segment::parse(&bytes).unwrap();
        assert_eq!(
            segment.header,
            SegmentHeader {
                index: 2,
                first_seq: 5,
                count: 3,
                times: Some(SegmentTimes {
                    earliest: 0,
                    latest: 0,
                    log_latest: 0
                }),
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
        let bytes = seal(&tenant, 0, &[event(0)], None, &branch, key_ref()).unwrap();
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
    /// (public, test-only) by the v1 writer, which no longer exists: it cannot
    /// be written anew.
    #[test]
    fn the_v1_fixture_still_opens() {
        let tenant = TenantId::new("acme").unwrap();
        let branch = Key256::from_bytes([5; 32]);
        let bytes = std::fs::read(fixture_path("audit-segment-v1")).unwrap();
        let segment = Segment::parse(&bytes).unwrap();
        assert_eq!(
            segment.header,
            SegmentHeader {
                index: 4,
                first_seq: 7,
                count: 3,
                times: None
            }
        );
        assert_eq!(segment.open(&tenant, &branch).unwrap(), fixture_events());
        // Its leaf is over the v1 header, as the log's checkpoints signed it.
        assert_eq!(
            &segment.leaf_data()[..HEADER_LEN_V1],
            &bytes[..HEADER_LEN_V1]
        );
        assert_eq!(segment.encode(), bytes);
    }

    /// The checked-in v2 segment still opens (`BILLVAULT_WRITE_FIXTURES=1`
    /// writes it anew, as for the envelope fixtures).
    #[test]
    fn the_v2_fixture_still_opens() {
        let tenant = TenantId::new("acme").unwrap();
        let branch = Key256::from_bytes([5; 32]);
        let path = fixture_path("audit-segment-v2");
        let before = 1_796_300_100_000_000;
        if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_some() {
            let bytes = seal(
                &tenant,
                4,
                &fixture_events(),
                Some(before),
                &branch,
                key_ref(),
            )
            .unwrap();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        let segment = Segment::parse(&bytes).unwrap();
        assert_eq!(
            segment.header.times,
            Some(SegmentTimes {
                earliest: 1_796_300_000_000_000,
                latest: 1_796_300_006_000_000,
                log_latest: before,
            })
        );
        assert_eq!(segment.open(&tenant, &branch).unwrap(), fixture_events());
        // A header read alone (as a time-bounded read does) says the same.
        let (header, len) = SegmentHeader::parse(&bytes[..HEADER_LEN_V2]).unwrap();
        assert_eq!((header, len), (segment.header, HEADER_LEN_V2));
    }

    #[test]
    fn the_log_latest_time_never_decreases_and_the_times_are_checked() {
        let tenant = TenantId::new("acme").unwrap();
        let branch = Key256::random();
        let events = fixture_events();
        let later = micros(events[2].time) + 60_000_000;
        let earlier = micros(events[0].time) - 60_000_000;
        let times = |before| {
            let bytes = seal(&tenant, 1, &events, before, &branch, key_ref()).unwrap();
            Segment::parse(&bytes).unwrap().header.times.unwrap()
        };
        // A replica whose clock is behind keeps the log's latest time.
        assert_eq!(times(Some(later)).log_latest, later);
        assert_eq!(times(Some(earlier)).log_latest, micros(events[2].time));
        assert_eq!(times(None).log_latest, micros(events[2].time));

        // Times in the header that do not match the events: refused on opening
        // (and the leaf changes, so the log's verification fails too).
        let bytes = seal(&tenant, 1, &events, None, &branch, key_ref()).unwrap();
        let original = Segment::parse(&bytes).unwrap();
        let mut shifted = bytes.clone();
        shifted[HEADER_LEN_V1 + 7] ^= 1;
        let shifted = Segment::parse(&shifted).unwrap();
        assert!(shifted.open(&tenant, &branch).is_err());
        assert_ne!(shifted.leaf_hash(), original.leaf_hash());
        // Out of order in the header: malformed.
        let mut disordered = bytes.clone();
        disordered[HEADER_LEN_V1] ^= 0x40;
        assert!(Segment::parse(&disordered).is_err());
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

    proptest::proptest! {
        /// Segments are read from the store, which is not trusted with the log.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(segment) = Segment::parse(&bytes) {
                let _ = segment.open(&TenantId::new("acme").unwrap(), &Key256::from_bytes([5; 32]));
            }
            let _ = SegmentHeader::parse(&bytes);
        }

        /// A valid header with arbitrary fields after it never panics either.
        #[test]
        fn arbitrary_headers_never_panic(version in 0u16..4, index: u64, first: u64, count: u32, times: [i64; 3]) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&version.to_be_bytes());
            bytes.extend_from_slice(&index.to_be_bytes());
            bytes.extend_from_slice(&first.to_be_bytes());
            bytes.extend_from_slice(&count.to_be_bytes());
            for time in times {
                bytes.extend_from_slice(&time.to_be_bytes());
            }
            if let Ok((header, _)) = SegmentHeader::parse(&bytes) {
                let _ = header.next_seq();
            }
        }
    }
}

//! Reading a log back: events by time and actor (decrypted with the tenant's keys),
//! and Merkle proofs over its segments.

use time::OffsetDateTime;
use vault_crypto::merkle;
use vault_crypto::TenantId;

use super::segment::Segment;
use super::{fetch_segment, read_segments, AuditError, AuditEvent, AuditService};
use crate::error::Error;
use crate::storage::{list_all, ObjectName};

pub use vault_api::ProofResponse;

/// How far out of order event times may be across a log's segments (replicas'
/// clocks, and the time between making an event and appending its segment):
/// time-bounded reads look this much further either side.
pub const CLOCK_SKEW_ALLOWED: time::Duration = time::Duration::minutes(5);

/// Which events to return.
#[derive(Debug, Default)]
pub struct EventFilter {
    /// At or after.
    pub since: Option<OffsetDateTime>,
    /// Before.
    pub until: Option<OffsetDateTime>,
    /// Of this actor.
    pub actor: Option<String>,
    /// With a sequence number above this.
    pub after_seq: Option<u64>,
}

/// A page of events.
pub struct EventsPage {
    /// Events in log order.
    pub events: Vec<AuditEvent>,
    /// The last returned seq, when more may follow.
    pub next_cursor: Option<u64>,
}

impl AuditService {
    /// Events of a tenant's log matching `filter`, at most `limit`.
    ///
    /// The work grows with the answer, not with the log: the first segment to
    /// read is found by bisection over segment positions (by sequence number for
    /// a cursor, by event time for `since`), reading O(log n) segments, and the
    /// scan stops at `until`. Event times come from each replica's clock and a
    /// segment is appended after its events were made, so times are ordered
    /// across segments only within [`CLOCK_SKEW_ALLOWED`]: the bisection and the
    /// stop allow that much either side (an event stamped further out of order
    /// may be left out of a time-bounded answer).
    pub async fn read_events(
        &self,
        tenant: &TenantId,
        filter: EventFilter,
        limit: usize,
    ) -> Result<EventsPage, AuditError> {
        let spec = self.key_spec(tenant).await?;
        let store = self.store.as_ref();
        let size = super::log_size(store, tenant).await?;
        let fetch = |index: u64| async move {
            fetch_segment(store, &ObjectName::audit_segment(tenant, index)).await
        };
        let open = |segment: Segment| {
            let spec = &spec;
            async move {
                let branch = self.keys.branch_key(spec, &segment.record.key_ref).await?;
                Ok::<_, AuditError>(segment.open(tenant, &branch)?)
            }
        };
        let mut start = 0;
        if let Some(after) = filter.after_seq {
            // The first segment with an event after the cursor.
            let (mut low, mut high) = (start, size);
            while low < high {
                let middle = low + (high - low) / 2;
                if fetch(middle).await?.header.next_seq() <= after.saturating_add(1) {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            start = low;
        }
        if let Some(since) = filter.since {
            // The first segment with an event at or after `since`, less the skew.
            // (At the edge of the representable times, no allowance is needed.)
            let from = since.checked_sub(CLOCK_SKEW_ALLOWED).unwrap_or(since);
            let (mut low, mut high) = (start, size);
            while low < high {
                let middle = low + (high - low) / 2;
                let events = open(fetch(middle).await?).await?;
                if events.iter().all(|e| e.time < from) {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            start = low;
        }
        let mut events = Vec::new();
        for index in start..size {
            let segment = fetch(index).await?;
            if filter
                .after_seq
                .is_some_and(|after| segment.header.next_seq() <= after.saturating_add(1))
            {
                continue;
            }
            let opened = open(segment).await?;
            if let Some(stop) = filter
                .until
                .and_then(|until| until.checked_add(CLOCK_SKEW_ALLOWED))
            {
                if opened.iter().all(|e| e.time >= stop) {
                    break;
                }
            }
            for event in opened {
                let wanted = filter.after_seq.is_none_or(|after| event.seq > after)
                    && filter.since.is_none_or(|t| event.time >= t)
                    && filter.until.is_none_or(|t| event.time < t)
                    && filter.actor.as_ref().is_none_or(|a| *a == event.actor);
                if wanted {
                    if events.len() == limit {
                        let next_cursor = events.last().map(|e: &AuditEvent| e.seq);
                        return Ok(EventsPage {
                            events,
                            next_cursor,
                        });
                    }
                    events.push(event);
                }
            }
        }
        Ok(EventsPage {
            events,
            next_cursor: None,
        })
    }

    /// The events of the segments from index `first` on, decrypted, and the index
    /// after the last segment read (`first` when there is none yet).
    pub async fn events_from_segment(
        &self,
        tenant: &TenantId,
        first: u64,
    ) -> Result<(Vec<AuditEvent>, u64), AuditError> {
        let prefix = ObjectName::audit_segments_prefix(tenant);
        let after = (first > 0).then(|| {
            ObjectName::audit_segment(tenant, first - 1)
                .as_str()
                .to_owned()
        });
        let mut next = first;
        let mut events = Vec::new();
        // The listing says how far the log reaches; the segments are then read
        // by position. (A listing made while segments are appended may leave
        // out one that a later one follows: filesystems list in hash order,
        // and a name made during the walk may or may not be seen.)
        let listed = list_all(self.store.as_ref(), &prefix, after.as_deref()).await?;
        let Some(last) = listed
            .iter()
            .filter_map(|info| info.name.audit_segment_index())
            .max()
        else {
            return Ok((events, next));
        };
        let spec = self.key_spec(tenant).await?;
        while next <= last {
            // Segments are appended in order: one missing below a later one
            // that exists is a hole in the log.
            let bytes = self
                .store
                .get_bytes(&ObjectName::audit_segment(tenant, next))
                .await?
                .ok_or_else(|| {
                    AuditError::Corrupt(format!("segment {next} is missing from the log"))
                })?;
            let segment = Segment::parse(&bytes)?;
            let branch = self.keys.branch_key(&spec, &segment.record.key_ref).await?;
            events.extend(segment.open(tenant, &branch)?);
            next += 1;
        }
        Ok((events, next))
    }

    /// An inclusion proof for the segment holding `seq`, against `tree_size` (default:
    /// the latest checkpoint), and a consistency proof from `old_size` when asked.
    pub async fn prove(
        &self,
        tenant: &TenantId,
        seq: u64,
        tree_size: Option<u64>,
        old_size: Option<u64>,
    ) -> Result<ProofResponse, Error> {
        let segments = read_segments(self.store.as_ref(), tenant).await?;
        let leaves: Vec<[u8; 32]> = segments.iter().map(|(_, s)| s.leaf_hash()).collect();
        let size = match tree_size {
            Some(size) => size,
            None => match super::latest_checkpoint(self.store.as_ref(), tenant).await? {
                Some(stored) => {
                    stored
                        .verify(&self.signer.public, tenant)?
                        .checkpoint
                        .tree_size
                }
                None => leaves.len() as u64,
            },
        };
        let bad = |m: &str| Error::invalid("invalid_query", m.to_owned());
        let size_usize = usize::try_from(size).map_err(|_| bad("tree_size too large"))?;
        if size == 0 {
            return Err(match tree_size {
                Some(_) => bad("tree_size must be at least 1"),
                // Nothing written yet: no event to prove.
                None => Error::not_found("event_not_found", "the log holds no events yet"),
            });
        }
        if size_usize > leaves.len() {
            // A tree the log has not grown to: nothing to prove against yet.
            return Err(Error::not_found(
                "tree_not_found",
                "the log is smaller than tree_size",
            ));
        }
        let index = segments[..size_usize]
            .iter()
            .position(|(_, s)| s.header.first_seq <= seq && seq < s.header.next_seq())
            .ok_or_else(|| {
                Error::not_found(
                    "event_not_found",
                    "no event with this seq in the tree of that size",
                )
            })?;
        let prefix = &leaves[..size_usize];
        let inclusion = merkle::inclusion_proof(prefix, index).map_err(AuditError::from)?;
        let consistency = match old_size {
            Some(old) => {
                let old = usize::try_from(old).map_err(|_| bad("old_size too large"))?;
                if old == 0 || old > size_usize {
                    return Err(bad("old_size must be between 1 and tree_size"));
                }
                Some(
                    merkle::consistency_proof(prefix, old)
                        .map_err(AuditError::from)?
                        .iter()
                        .map(hex::encode)
                        .collect(),
                )
            }
            None => None,
        };
        Ok(ProofResponse {
            segment: index as u64,
            leaf_hash: hex::encode(prefix[index]),
            tree_size: size,
            root: hex::encode(merkle::root(prefix)),
            inclusion: inclusion.iter().map(hex::encode).collect(),
            consistency,
        })
    }
}

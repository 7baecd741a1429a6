//! Reading a log back: events by time and actor (decrypted with the tenant's keys),
//! and Merkle proofs over its segments.

use time::OffsetDateTime;
use vault_crypto::merkle;
use vault_crypto::TenantId;

use super::segment::{self, Segment};
use super::{fetch_header, fetch_segment, read_segments, AuditError, AuditEvent, AuditService};
use crate::error::Error;
use crate::storage::ObjectName;

pub use vault_api::ProofResponse;

/// Segments one call to [`AuditService::events_from_segment`] reads at most.
pub const FOLLOW_BATCH: u64 = 1024;

/// How far out of order event times may be across v1 segments, which carry no
/// clear times (replicas' clocks, and the time between making an event and
/// appending its segment), and how far past `until` a read looks for events
/// stamped earlier by a replica whose clock is behind.
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
    /// The work grows with the answer, not with the log. The log's size is
    /// found by probing names from a size this replica knew. The first segment
    /// to read is found by bisection over segment headers alone (read as a
    /// range, not decrypted): by sequence number for a cursor, and for `since`
    /// by the header's latest event time of the log so far, which never
    /// decreases along the log, so the start is exact even when replicas'
    /// clocks disagree. Segments whose header times fall outside the window are
    /// passed over without decrypting them. The scan stops at the first segment
    /// whose events are all past `until` by more than [`CLOCK_SKEW_ALLOWED`]:
    /// a read bounded by `until` may leave out events appended after a segment
    /// from a replica whose clock was that far ahead (the log's order is not
    /// its times' order beyond the allowance; only `since` is exact). v1
    /// segments, without clear times, are decrypted to compare, and are ordered
    /// only within that allowance.
    pub async fn read_events(
        &self,
        tenant: &TenantId,
        filter: EventFilter,
        limit: usize,
    ) -> Result<EventsPage, AuditError> {
        let spec = self.key_spec(tenant).await?;
        let store = self.store.as_ref();
        let size = self.log_size(tenant).await?;
        let name = |index: u64| ObjectName::audit_segment(tenant, index);
        let open = |segment: Segment| {
            let spec = &spec;
            async move {
                self.metrics.audit_read_segments.inc();
                let branch = self.keys.branch_key(spec, &segment.record.key_ref).await?;
                Ok::<_, AuditError>(segment.open(tenant, &branch)?)
            }
        };
        let since = filter.since.map(segment::micros);
        // Rounded up: a segment whose earliest event (rounded down) is at or
        // after it holds nothing before `until`.
        let until = filter
            .until
            .map(|until| crate::search::micros_floor(until.unix_timestamp_nanos() + 999));
        let mut start = 0;
        if let Some(after) = filter.after_seq {
            // The first segment with an event after the cursor.
            let (mut low, mut high) = (start, size);
            while low < high {
                let middle = low + (high - low) / 2;
                if fetch_header(store, &name(middle)).await?.next_seq() <= after.saturating_add(1) {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            start = low;
        }
        if let (Some(since_time), Some(since)) = (filter.since, since) {
            // The first segment that may hold an event at or after `since`.
            // (At the edge of the representable times, no allowance is needed.)
            let skewed = segment::micros(
                since_time
                    .checked_sub(CLOCK_SKEW_ALLOWED)
                    .unwrap_or(since_time),
            );
            let (mut low, mut high) = (start, size);
            while low < high {
                let middle = low + (high - low) / 2;
                let before = match fetch_header(store, &name(middle)).await?.times {
                    Some(times) => times.log_latest < since,
                    None => open(fetch_segment(store, &name(middle)).await?)
                        .await?
                        .iter()
                        .all(|e| segment::micros(e.time) < skewed),
                };
                if before {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            start = low;
        }
        let stop = filter
            .until
            .and_then(|until| until.checked_add(CLOCK_SKEW_ALLOWED))
            .map(segment::micros);
        let mut events = Vec::new();
        // The chain of clear times, checked along the scan: a header edited to
        // pass its segment over must still fit the segments around it.
        let mut chain: Option<i64> = None;
        for index in start..size {
            // Read whole: from an exact start, most segments are opened.
            let segment = fetch_segment(store, &name(index)).await?;
            let header = segment.header;
            if let Some(times) = header.times {
                if chain.is_some() && !segment::follows_chain(chain, &times) {
                    return Err(AuditError::Corrupt(format!(
                        "segment {index}'s clear times do not follow the log's"
                    )));
                }
                chain = Some(times.log_latest);
            }
            if filter
                .after_seq
                .is_some_and(|after| header.next_seq() <= after.saturating_add(1))
            {
                continue;
            }
            if let Some(times) = header.times {
                if stop.is_some_and(|stop| times.earliest >= stop) {
                    break;
                }
                let outside = since.is_some_and(|since| times.latest < since)
                    || until.is_some_and(|until| times.earliest >= until);
                if outside {
                    continue;
                }
            }
            let opened = open(segment).await?;
            if header.times.is_none()
                && stop.is_some_and(|stop| opened.iter().all(|e| segment::micros(e.time) >= stop))
            {
                break;
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
        let mut next = first;
        let mut events = Vec::new();
        let mut spec = None;
        // Read by position until the first missing segment: no listing, so an
        // idle follower costs one read of a missing name, however long the log.
        // At most FOLLOW_BATCH at a time: a log growing as fast as it is read
        // still returns, and the caller comes back for the rest.
        while next - first < FOLLOW_BATCH {
            let Some(bytes) = self
                .store
                .get_bytes(&ObjectName::audit_segment(tenant, next))
                .await?
            else {
                break;
            };
            let segment = Segment::parse(&bytes)?;
            let spec = match &mut spec {
                Some(spec) => spec,
                None => spec.insert(self.key_spec(tenant).await?),
            };
            let branch = self.keys.branch_key(spec, &segment.record.key_ref).await?;
            events.extend(segment.open(tenant, &branch)?);
            next += 1;
        }
        if next - first == FOLLOW_BATCH {
            self.note_log_size(tenant, next);
            return Ok((events, next));
        }
        // Segments are appended in order: one missing below a later one that
        // exists is a hole.
        let later = self
            .store
            .head(&ObjectName::audit_segment(tenant, next.saturating_add(1)))
            .await?
            .is_some();
        // A later segment may have been appended after `next` was found
        // missing, and `next` with it: looked at again before calling it a hole
        // (segments are never removed, so still missing now is a hole).
        let hole = later
            && self
                .store
                .head(&ObjectName::audit_segment(tenant, next))
                .await?
                .is_none();
        if hole {
            return Err(AuditError::Corrupt(format!(
                "segment {next} is missing from the log"
            )));
        }
        self.note_log_size(tenant, next);
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

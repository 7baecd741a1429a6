//! Offline verification of an audit log: with the store and the public key only,
//! no tenant key and no running server.
//!
//! The segments must be named 0, 1, 2, ... with headers that agree (position, and
//! event sequence numbers that continue from one segment to the next), each bound
//! to its tenant and position; every stored checkpoint must carry a valid
//! signature and the root of the first `tree_size` segments as they are now; a
//! checkpoint the auditor saved earlier must still be honoured (so deleting the
//! tail of the log, checkpoints included, is found too); the clear times of v2
//! segments must form the chain a writer makes ("latest of the log so far" is the
//! previous one's or the segment's own latest, whichever is later). The report
//! gives the first bad position found.

use serde::Serialize;
use vault_crypto::merkle::Frontier;
use vault_crypto::signing::{PublicKey, SignedCheckpoint};
use vault_crypto::TenantId;

use super::segment::Segment;
use super::{origin, AuditError, StoredCheckpoint};
use crate::storage::{list_all, ObjectName, ObjectStore};

/// One thing wrong with a log.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The first segment affected (as far as can be told).
    pub segment: u64,
    /// A stable name: `missing_segment`, `misplaced_segment`, `sequence_gap`,
    /// `time_chain_broken`, `unreadable_segment`, `bad_signature`,
    /// `root_mismatch`, `truncated`.
    pub kind: &'static str,
    /// What was found.
    pub message: String,
}

/// The result of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The tenant whose log was checked.
    pub tenant: String,
    /// Segments found.
    pub segments: u64,
    /// Events in the segments.
    pub events: u64,
    /// Stored checkpoints checked.
    pub checkpoints: u64,
    /// Size of the largest valid checkpoint.
    pub verified_tree_size: u64,
    /// Problems, in log order (empty when the log is intact).
    pub problems: Vec<Problem>,
    /// The first bad segment, if any.
    pub first_bad_segment: Option<u64>,
    /// The first event sequence number at or after which the log is bad, if known.
    pub first_bad_event: Option<u64>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A checkpoint to hold the log to.
struct Expected {
    tree_size: u64,
    root: [u8; 32],
    source: String,
}

/// Verifies a tenant's log in `store` against `public`, and against a checkpoint
/// saved earlier (the text of a signed checkpoint) when given.
pub async fn verify_log(
    store: &dyn ObjectStore,
    tenant: &TenantId,
    public: &PublicKey,
    saved: Option<&str>,
) -> Result<VerifyReport, AuditError> {
    let mut problems = Vec::new();
    let mut expected = Vec::new();
    let mut checkpoints = 0;

    // Checkpoints: each must be signed by the vault and name this log.
    let prefix = ObjectName::audit_checkpoints_prefix(tenant);
    for info in &list_all(store, &prefix, None).await? {
        checkpoints += 1;
        let parsed = store
            .get_bytes(&info.name)
            .await?
            .and_then(|b| serde_json::from_slice::<StoredCheckpoint>(&b).ok())
            .and_then(|stored| SignedCheckpoint::parse(&stored.signed).ok());
        match parsed.map(|signed| signed.verify(public)) {
            Some(Ok(cp)) if cp.origin == origin(tenant) => expected.push(Expected {
                tree_size: cp.tree_size,
                root: cp.root,
                source: format!("stored checkpoint at size {}", cp.tree_size),
            }),
            _ => problems.push(Problem {
                segment: checkpoint_size(&info.name).unwrap_or(0),
                kind: "bad_signature",
                message: format!(
                    "checkpoint {} is not a valid checkpoint of this log signed by this key",
                    info.name
                ),
            }),
        }
    }
    if let Some(text) = saved {
        let checkpoint = SignedCheckpoint::parse(text)
            .and_then(|s| s.verify(public))
            .map_err(AuditError::Crypto)?;
        if checkpoint.origin != origin(tenant) {
            return Err(AuditError::Corrupt(
                "the saved checkpoint belongs to another log".to_owned(),
            ));
        }
        expected.push(Expected {
            tree_size: checkpoint.tree_size,
            root: checkpoint.root,
            source: format!("saved checkpoint at size {}", checkpoint.tree_size),
        });
    }
    expected.sort_by_key(|e| e.tree_size);

    // Segments, in name order: structure first, then roots at checkpoint sizes.
    let prefix = ObjectName::audit_segments_prefix(tenant);
    let mut frontier = Frontier::new();
    let mut next_seq = 0u64;
    let mut first_event_of: Vec<u64> = Vec::new();
    let mut pending = expected.iter().peekable();
    let mut verified_tree_size = 0;
    let mut last_good = 0u64;
    let mut log_latest: Option<i64> = None;
    for info in &list_all(store, &prefix, None).await? {
        let position = frontier.size();
        let bytes = store.get_bytes(&info.name).await?.unwrap_or_default();
        match info.name.audit_segment_index() {
            Some(index) if index == position => {}
            Some(index) if index > position => problems.push(Problem {
                segment: position,
                kind: "missing_segment",
                message: format!("segments {position} to {} are missing", index - 1),
            }),
            _ => problems.push(Problem {
                segment: position,
                kind: "misplaced_segment",
                message: format!("object {} is out of place", info.name),
            }),
        }
        match Segment::parse(&bytes) {
            Ok(segment) => {
                if segment.header.index != position || !segment.is_bound_to(tenant) {
                    problems.push(Problem {
                        segment: position,
                        kind: "misplaced_segment",
                        message: format!(
                            "segment at position {position} was written for position {}",
                            segment.header.index
                        ),
                    });
                }
                if segment.header.first_seq != next_seq {
                    problems.push(Problem {
                        segment: position,
                        kind: "sequence_gap",
                        message: format!(
                            "events should continue at {next_seq}, segment starts at {}",
                            segment.header.first_seq
                        ),
                    });
                }
                if let Some(times) = segment.header.times {
                    if !super::segment::follows_chain(log_latest, &times) {
                        problems.push(Problem {
                            segment: position,
                            kind: "time_chain_broken",
                            message: format!(
                                "segment {position}'s latest time of the log so far does not follow from the segments before it"
                            ),
                        });
                    }
                    log_latest = Some(times.log_latest);
                }
                first_event_of.push(next_seq);
                next_seq = segment.header.next_seq().max(next_seq);
                frontier.push(segment.leaf_hash());
            }
            Err(e) => {
                problems.push(Problem {
                    segment: position,
                    kind: "unreadable_segment",
                    message: format!("segment {position}: {e}"),
                });
                first_event_of.push(next_seq);
                frontier.push(vault_crypto::merkle::leaf_hash(&bytes));
            }
        }
        while let Some(cp) = pending.next_if(|cp| cp.tree_size == frontier.size()) {
            if frontier.root() == cp.root {
                verified_tree_size = verified_tree_size.max(cp.tree_size);
                last_good = cp.tree_size;
            } else {
                problems.push(Problem {
                    segment: last_good,
                    kind: "root_mismatch",
                    message: format!(
                        "segments {last_good} to {} differ from what the {} signed",
                        cp.tree_size - 1,
                        cp.source
                    ),
                });
            }
        }
    }
    let segments = frontier.size();
    // The empty tree matches a size-0 checkpoint trivially; anything left is larger
    // than the log.
    for cp in pending {
        if cp.tree_size == 0 {
            continue;
        }
        problems.push(Problem {
            segment: segments,
            kind: "truncated",
            message: format!(
                "the log has {segments} segments but the {} covers {}",
                cp.source, cp.tree_size
            ),
        });
    }
    problems.sort_by_key(|p| p.segment);
    let first_bad_segment = problems.first().map(|p| p.segment);
    let first_bad_event = first_bad_segment.map(|s| {
        usize::try_from(s)
            .ok()
            .and_then(|s| first_event_of.get(s).copied())
            .unwrap_or(next_seq)
    });
    Ok(VerifyReport {
        tenant: tenant.to_string(),
        segments,
        events: next_seq,
        checkpoints,
        verified_tree_size,
        problems,
        first_bad_segment,
        first_bad_event,
    })
}

fn checkpoint_size(name: &ObjectName) -> Option<u64> {
    name.as_str().rsplit('/').next()?.parse().ok()
}

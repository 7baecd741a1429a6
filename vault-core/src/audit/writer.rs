//! One tenant's audit log writer: a task that owns the log's tail.
//!
//! Requests send their event and wait. The task takes every event waiting at that
//! moment (group commit), gives them consecutive sequence numbers, seals them as
//! the next segment and writes it create-only; then it answers every waiting
//! request at once. Under load one segment carries many events, so auditing costs
//! one write per batch, not per request. A failed write answers every waiter with
//! the error (fail closed) and leaves the tail where it was.
//!
//! The task keeps the Merkle tree's right frontier (O(log n) hashes), and writes a
//! signed checkpoint when asked (periodically and at shutdown). At start it loads
//! the latest checkpoint and reads only the segments after it.
//!
//! Replicas share the log: each has such a task, and none owns the tail. A
//! segment's name is its index and it is written create-only, so of two replicas
//! writing segment n one wins; the other reads the segments it missed, extends
//! its frontier with them and seals its batch again as the next segment (up to
//! [`MAX_RACES`] times in a row). The log never forks, and contention is never
//! an error.

use bytes::Bytes;
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use vault_crypto::merkle::Frontier;
use vault_crypto::signing::Checkpoint;
use vault_crypto::TenantId;

use super::event::AuditEvent;
use super::segment::{self, Segment};
use super::AuditService;
use super::{AuditError, StoredCheckpoint};
use crate::storage::{list_all, ObjectName, StorageError};

/// Most events sealed in one segment.
const MAX_BATCH: usize = 512;
/// Requests that may wait for one log at a time (back-pressure beyond that).
const QUEUE: usize = 4096;
/// Segment races one batch may lose in a row before it fails (each loss means
/// another replica appended: progress is made, only not by this one).
const MAX_RACES: usize = 64;
/// Segments after which a checkpoint is written at once, whatever the interval:
/// a replica opening the log reads only the segments after the latest
/// checkpoint, so this bounds that read even when replicas are restarted more
/// often than the interval (a crash loop, a rolling upgrade).
const CHECKPOINT_EVERY_SEGMENTS: u64 = 64;
/// How long after a failed inline checkpoint the next is tried.
const CHECKPOINT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
/// Segments fetched at once when catching up.
const CATCH_UP_FETCHES: usize = 8;
/// Segments looked at, back from a checkpoint without the chain's value, for
/// the last one with clear times.
const CHAIN_LOOKBACK: usize = 64;

/// A message to a log's task.
pub enum Command {
    /// Append an event (its `seq` is assigned here); answers with the seq.
    Append(Box<AuditEvent>, oneshot::Sender<Result<u64, AuditError>>),
    /// Write a checkpoint if the log grew since the last; answers with its size.
    Checkpoint(oneshot::Sender<Result<Option<u64>, AuditError>>),
}

/// Where the log's tail stands.
struct Tail {
    /// Segments written (the tree size).
    segments: u64,
    /// Events written.
    events: u64,
    frontier: Frontier,
    /// The last v2 segment's latest event time of the log so far (`None`
    /// before the log's first v2 segment): the next segment's starts from it.
    log_latest: Option<i64>,
    /// Tree size of the latest checkpoint.
    checkpointed: u64,
    /// When an inline checkpoint last failed: the next is not tried before
    /// [`CHECKPOINT_RETRY`] (the appends go on meanwhile).
    checkpoint_failed_at: Option<std::time::Instant>,
}

/// Starts a tenant's log task; returns its queue.
pub fn spawn(logs: AuditService, tenant: TenantId) -> mpsc::Sender<Command> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(logs, tenant, rx));
    tx
}

async fn run(logs: AuditService, tenant: TenantId, mut rx: mpsc::Receiver<Command>) {
    let mut tail: Option<Tail> = None;
    while let Some(first) = rx.recv().await {
        let mut appends = Vec::new();
        let mut checkpoints = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(event, done) => appends.push((*event, done)),
                Command::Checkpoint(done) => checkpoints.push(done),
            }
            if appends.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if tail.is_none() {
            match load(&logs, &tenant).await {
                Ok(mut loaded) => {
                    checkpoint_if_far_behind(&logs, &tenant, &mut loaded).await;
                    tail = Some(loaded);
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant, error = %e, "audit log could not be opened");
                    for (_, done) in appends {
                        let _ = done.send(Err(AuditError::Unavailable));
                    }
                    for done in checkpoints {
                        let _ = done.send(Err(AuditError::Unavailable));
                    }
                    continue;
                }
            }
        }
        let Some(current) = tail.as_mut() else {
            continue;
        };
        if !appends.is_empty() {
            let (events, waiters): (Vec<AuditEvent>, Vec<_>) = appends.into_iter().unzip();
            match write_segment(&logs, &tenant, current, events).await {
                Ok(first_seq) => {
                    for (i, done) in waiters.into_iter().enumerate() {
                        let _ = done.send(Ok(first_seq + i as u64));
                    }
                    checkpoint_if_far_behind(&logs, &tenant, current).await;
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant, error = %e, "audit segment could not be written; requests fail closed");
                    // The tail may be stale (another writer, a half-known write):
                    // reload it before the next batch.
                    tail = None;
                    for done in waiters {
                        let _ = done.send(Err(AuditError::Unavailable));
                    }
                }
            }
        }
        for done in checkpoints {
            let result = match tail.as_mut() {
                Some(current) => write_checkpoint(&logs, &tenant, current).await,
                None => Err(AuditError::Unavailable),
            };
            let _ = done.send(result);
        }
    }
}

async fn write_segment(
    logs: &AuditService,
    tenant: &TenantId,
    tail: &mut Tail,
    mut events: Vec<AuditEvent>,
) -> Result<u64, AuditError> {
    let spec = logs.current_key_spec(tenant).await?;
    let (key_ref, branch) = logs.keys.branch_key_for_upload(&spec).await?;
    for _ in 0..MAX_RACES {
        let first_seq = tail.events;
        for (i, event) in events.iter_mut().enumerate() {
            event.seq = first_seq + i as u64;
        }
        let format = match logs.config.segment_format {
            1 => segment::SegmentFormat::V1,
            _ => segment::SegmentFormat::V2 {
                log_latest_before: tail.log_latest,
            },
        };
        let bytes = segment::seal_as(
            format,
            tenant,
            tail.segments,
            &events,
            &branch,
            key_ref.clone(),
        )?;
        let parsed = Segment::parse(&bytes)?;
        match logs
            .store
            .put_new_bytes(
                &ObjectName::audit_segment(tenant, tail.segments),
                Bytes::from(bytes),
            )
            .await
        {
            Ok(()) => {
                tail.frontier.push(parsed.leaf_hash());
                tail.segments += 1;
                tail.events += events.len() as u64;
                if let Some(times) = parsed.header.times {
                    tail.log_latest = Some(times.log_latest);
                }
                logs.note_log_size(tenant, tail.segments);
                logs.metrics.audit_events.inc_by(events.len() as u64);
                logs.metrics.audit_segments.inc();
                return Ok(first_seq);
            }
            Err(StorageError::AlreadyExists(_)) => {
                // Another replica appended first: follow it, then try again.
                logs.metrics.audit_segment_races.inc();
                catch_up(logs, tenant, tail).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AuditError::Corrupt(format!(
        "lost {MAX_RACES} segment races in a row"
    )))
}

async fn write_checkpoint(
    logs: &AuditService,
    tenant: &TenantId,
    tail: &mut Tail,
) -> Result<Option<u64>, AuditError> {
    if tail.segments == tail.checkpointed {
        return Ok(None);
    }
    let checkpoint = Checkpoint {
        origin: super::origin(tenant),
        tree_size: tail.segments,
        root: tail.frontier.root(),
        timestamp_unix_ms: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64,
    };
    let signed = checkpoint.sign(&logs.signer.key);
    let stored = StoredCheckpoint {
        format: 1,
        signed: signed.encode(),
        events: tail.events,
        frontier: tail.frontier.hashes().iter().map(hex::encode).collect(),
        log_latest: tail.log_latest,
    };
    let json = serde_json::to_vec_pretty(&stored).map_err(|_| AuditError::Unavailable)?;
    match logs
        .store
        .put_new_bytes(
            &ObjectName::audit_checkpoint(tenant, tail.segments),
            Bytes::from(json),
        )
        .await
    {
        // Written already (a checkpoint at this size is the same tree head).
        Ok(()) | Err(StorageError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    tail.checkpointed = tail.segments;
    Ok(Some(tail.segments))
}

/// Writes a checkpoint when [`CHECKPOINT_EVERY_SEGMENTS`] segments followed the
/// last one. The events are durable already, so a failure here is only logged,
/// and not tried again inline for [`CHECKPOINT_RETRY`] (under S3 faults each
/// try would hold up the tenant's appends).
async fn checkpoint_if_far_behind(logs: &AuditService, tenant: &TenantId, tail: &mut Tail) {
    if tail.segments - tail.checkpointed < CHECKPOINT_EVERY_SEGMENTS
        || tail
            .checkpoint_failed_at
            .is_some_and(|at| at.elapsed() < CHECKPOINT_RETRY)
    {
        return;
    }
    match write_checkpoint(logs, tenant, tail).await {
        Ok(_) => tail.checkpoint_failed_at = None,
        Err(e) => {
            tail.checkpoint_failed_at = Some(std::time::Instant::now());
            tracing::warn!(tenant = %tenant, error = %e, "audit checkpoint failed; tried again in 30 s or by the periodic checkpointer");
        }
    }
}

/// Loads the tail: the latest checkpoint (checked against the signing key), then
/// every segment after it.
async fn load(logs: &AuditService, tenant: &TenantId) -> Result<Tail, AuditError> {
    let mut tail = Tail {
        segments: 0,
        events: 0,
        frontier: Frontier::new(),
        log_latest: None,
        checkpointed: 0,
        checkpoint_failed_at: None,
    };
    if let Some(stored) = super::latest_checkpoint(logs.store.as_ref(), tenant).await? {
        let verified = stored.verify(&logs.signer.public, tenant)?;
        tail.segments = verified.checkpoint.tree_size;
        tail.events = stored.events;
        tail.frontier = verified.frontier;
        tail.checkpointed = tail.segments;
        tail.log_latest = stored.log_latest;
    }
    if tail.log_latest.is_none() {
        // Where the log's times stand at the checkpoint, for one written
        // before checkpoints recorded it: the last v2 segment before it
        // (headers only, back at most [`CHAIN_LOOKBACK`] segments: v1 ones come
        // only from replicas of an older version).
        for index in (0..tail.segments).rev().take(CHAIN_LOOKBACK) {
            let name = ObjectName::audit_segment(tenant, index);
            if let Some(times) = super::fetch_header(logs.store.as_ref(), &name).await?.times {
                tail.log_latest = Some(times.log_latest);
                break;
            }
        }
    }
    catch_up(logs, tenant, &mut tail).await?;
    Ok(tail)
}

/// Reads the segments after the tail (written by another replica, or since the
/// checkpoint) and extends the tail with them, checking that each follows.
async fn catch_up(
    logs: &AuditService,
    tenant: &TenantId,
    tail: &mut Tail,
) -> Result<(), AuditError> {
    let prefix = ObjectName::audit_segments_prefix(tenant);
    let after = (tail.segments > 0).then(|| {
        ObjectName::audit_segment(tenant, tail.segments - 1)
            .as_str()
            .to_owned()
    });
    let names = list_all(logs.store.as_ref(), &prefix, after.as_deref()).await?;
    // Fetched a few at a time, taken in order.
    let mut fetches = futures::stream::iter(names.into_iter().map(|info| async move {
        let bytes = logs.store.get_bytes(&info.name).await?;
        Ok::<_, StorageError>((info, bytes))
    }))
    .buffered(CATCH_UP_FETCHES);
    while let Some(fetched) = fetches.next().await {
        let (info, bytes) = fetched?;
        let bytes = bytes.ok_or(AuditError::Unavailable)?;
        let segment = Segment::parse(&bytes)?;
        if info.name.audit_segment_index() != Some(tail.segments)
            || segment.header.index != tail.segments
            || segment.header.first_seq != tail.events
            || !segment.is_bound_to(tenant)
        {
            // What was found, for the one who investigates (indexes and
            // sequence numbers only).
            return Err(AuditError::Corrupt(format!(
                "segment {} does not follow the log: listed as {:?}, its header says index {} from seq {}, the log had {} events",
                tail.segments,
                info.name.audit_segment_index(),
                segment.header.index,
                segment.header.first_seq,
                tail.events
            )));
        }
        if let Some(times) = segment.header.times {
            // Another replica's times must continue the chain this one would
            // have made: checked before this replica seals (and signs) after
            // them. (A v1 segment, from a replica of an older version or one
            // set to write v1, leaves the chain as it was.)
            if tail.log_latest.is_some() && !segment::follows_chain(tail.log_latest, &times) {
                return Err(AuditError::Corrupt(format!(
                    "segment {}'s clear times do not follow the log's",
                    tail.segments
                )));
            }
            tail.log_latest = Some(times.log_latest);
        }
        tail.frontier.push(segment.leaf_hash());
        tail.segments += 1;
        tail.events = segment.header.next_seq();
    }
    logs.note_log_size(tenant, tail.segments);
    Ok(())
}

/// Sends a command and waits for its answer.
pub async fn ask<T>(
    queue: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<Result<T, AuditError>>) -> Command,
) -> Result<T, AuditError> {
    let (done, answer) = oneshot::channel();
    queue
        .send(make(done))
        .await
        .map_err(|_| AuditError::Unavailable)?;
    answer.await.map_err(|_| AuditError::Unavailable)?
}

//! The tamper-evident audit log.
//!
//! Every authenticated request that touches tenant data appends an [`AuditEvent`]
//! to its tenant's log (requests with no tenant, such as an operator's tenant
//! listing, go to the reserved `system` log) before it is answered: if the event
//! cannot be made durable the request fails with 503 and returns no data (the
//! server's audit middleware, `vault-server/src/audit_trail.rs`). Requests without a valid credential are counted and sampled
//! into the system log, never recorded one by one (`health.rs`).
//!
//! A log is a sequence of sealed segments (`segment.rs`), each a batch of events
//! encrypted under the tenant's keys, written create-only by one task per tenant
//! (`writer.rs`). The segments are the leaves of an RFC 9162 Merkle tree; the
//! server signs checkpoints (tree size, root, time) with an Ed25519 key kept
//! wrapped by the local key provider, periodically and at shutdown. Anyone with the
//! public key can check a log offline (`verify.rs`, `vault-cli audit verify`):
//! modified, deleted, inserted, reordered or truncated segments are found without
//! any tenant key. `anomaly.rs` watches per-key read rates for bulk access.

pub mod anomaly;
pub mod event;
pub mod health;
pub mod read;
pub mod segment;
pub mod verify;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use vault_crypto::merkle::Frontier;
use vault_crypto::signing::{Checkpoint, PublicKey, SignedCheckpoint, SigningKey};
use vault_crypto::{CryptoError, TenantId};
use vault_keys::{
    EncryptionContext, KeyHierarchy, KeyProvider, LocalKeyProvider, Purpose, TenantKeySpec,
};

pub use event::{AuditEvent, Outcome};
use segment::{Segment, SegmentError};

use crate::config::AuditConfig;
use crate::metrics::Metrics;
use crate::storage::{list_all, ObjectName, ObjectStore, StorageError};
use crate::tenants::TenantRegistry;

/// The reserved tenant id of the system log (no tenant may be created with it).
pub const SYSTEM_LOG: &str = "system";

/// Audit failures. Messages name positions and objects, never event contents.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log could not be written or read now.
    #[error("the audit log is unavailable")]
    Unavailable,
    /// Storage failed.
    #[error("audit storage: {0}")]
    Storage(#[from] StorageError),
    /// Keys failed.
    #[error("audit keys: {0}")]
    Crypto(#[from] CryptoError),
    /// A segment could not be read.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The stored log does not hold together.
    #[error("audit log corrupt: {0}")]
    Corrupt(String),
}

impl From<AuditError> for crate::Error {
    /// The log could not be written or read: the request is not answered.
    fn from(e: AuditError) -> Self {
        crate::Error::audit_unavailable(Some(e.to_string()))
    }
}

/// The checkpoint signing key and its public half.
pub struct Signer {
    /// Signs checkpoints.
    pub key: SigningKey,
    /// Verifies them; exported for offline verification.
    pub public: PublicKey,
}

/// A checkpoint as stored: the signed tree head, plus (unsigned, checked against
/// it) the event count and the tree's frontier so a restart need not re-read the
/// whole log. Format 1.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// FORMAT CONSTANT: 1.
    pub format: u32,
    /// The signed checkpoint (text).
    pub signed: String,
    /// Events in the log at this size.
    pub events: u64,
    /// Frontier hashes (hex), left to right.
    pub frontier: Vec<String>,
    /// The last v2 segment's "latest event time of the log so far" at this
    /// size (µs since 1970; added with segment v2, absent before: a writer
    /// then reads it from the segments' headers). Unsigned: where the next
    /// segment's chain starts, which `audit verify` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_latest: Option<i64>,
}

/// A stored checkpoint whose signature and frontier were checked.
pub struct VerifiedCheckpoint {
    /// The signed content.
    pub checkpoint: Checkpoint,
    /// The tree's frontier at that size.
    pub frontier: Frontier,
}

impl StoredCheckpoint {
    /// Checks the signature, the origin and that the frontier gives the signed root.
    pub fn verify(
        &self,
        public: &PublicKey,
        tenant: &TenantId,
    ) -> Result<VerifiedCheckpoint, AuditError> {
        let signed = SignedCheckpoint::parse(&self.signed)?;
        let checkpoint = signed.verify(public)?;
        if checkpoint.origin != origin(tenant) {
            return Err(AuditError::Corrupt("checkpoint of another log".to_owned()));
        }
        let hashes = self
            .frontier
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| AuditError::Corrupt("checkpoint frontier".to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let frontier = Frontier::from_parts(checkpoint.tree_size, hashes)
            .map_err(|_| AuditError::Corrupt("checkpoint frontier".to_owned()))?;
        if frontier.root() != checkpoint.root {
            return Err(AuditError::Corrupt(
                "checkpoint frontier does not give its root".to_owned(),
            ));
        }
        Ok(VerifiedCheckpoint {
            checkpoint,
            frontier,
        })
    }
}

/// The origin line of a tenant's checkpoints.
pub fn origin(tenant: &TenantId) -> String {
    format!("billing-vault/{tenant}/audit")
}

/// The latest checkpoint of a tenant's log, if any.
pub async fn latest_checkpoint(
    store: &dyn ObjectStore,
    tenant: &TenantId,
) -> Result<Option<StoredCheckpoint>, AuditError> {
    let prefix = ObjectName::audit_checkpoints_prefix(tenant);
    let last = list_all(store, &prefix, None)
        .await?
        .pop()
        .map(|info| info.name);
    let Some(name) = last else { return Ok(None) };
    let bytes = store
        .get_bytes(&name)
        .await?
        .ok_or(AuditError::Unavailable)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| AuditError::Corrupt(format!("checkpoint {name} does not decode")))
}

/// How many segments a tenant's log holds now: the latest checkpoint's size (by
/// its name: a position to follow the log from, not a proof) and the segments
/// written after it.
pub async fn log_size(store: &dyn ObjectStore, tenant: &TenantId) -> Result<u64, AuditError> {
    let checkpointed = list_all(store, &ObjectName::audit_checkpoints_prefix(tenant), None)
        .await?
        .last()
        .and_then(|info| info.name.as_str().rsplit('/').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let after = (checkpointed > 0).then(|| {
        ObjectName::audit_segment(tenant, checkpointed - 1)
            .as_str()
            .to_owned()
    });
    let prefix = ObjectName::audit_segments_prefix(tenant);
    let later = list_all(store, &prefix, after.as_deref()).await?.len() as u64;
    Ok(checkpointed + later)
}

/// The first index from `known` on with no segment, found by probing names
/// (O(log n) existence checks for n segments appended since): a log has no
/// holes, as segments are written create-only in order. The answer is the
/// size at some moment during the call. `known` must be a size the log had
/// reached (it never shrinks while the tenant exists).
async fn probe_log_size(
    store: &dyn ObjectStore,
    tenant: &TenantId,
    known: u64,
) -> Result<u64, AuditError> {
    let exists = |index: u64| async move {
        Ok::<_, AuditError>(
            store
                .head(&ObjectName::audit_segment(tenant, index))
                .await?
                .is_some(),
        )
    };
    // Gallop past the end, then bisect between the last present and the
    // first missing index.
    let (mut present_below, mut step) = (known, 1u64);
    let mut missing = loop {
        let probe = present_below.saturating_add(step - 1);
        if !exists(probe).await? {
            break probe;
        }
        present_below = probe.checked_add(1).ok_or_else(|| {
            AuditError::Corrupt("the log's segment names run past the last index".into())
        })?;
        step = step.saturating_mul(2);
    };
    while present_below < missing {
        let middle = present_below + (missing - present_below) / 2;
        if exists(middle).await? {
            present_below = middle + 1;
        } else {
            missing = middle;
        }
    }
    Ok(present_below)
}

/// The clear header of one segment, read alone (a range of the object).
pub async fn fetch_header(
    store: &dyn ObjectStore,
    name: &ObjectName,
) -> Result<segment::SegmentHeader, AuditError> {
    let stream = match store
        .get_range(name, 0..segment::HEADER_LEN_V2 as u64)
        .await
    {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => return Err(AuditError::Unavailable),
        Err(e) => return Err(e.into()),
    };
    let bytes = crate::storage::collect(stream, segment::HEADER_LEN_V2).await?;
    Ok(segment::SegmentHeader::parse(&bytes)?.0)
}

/// Every segment of a tenant's log, in order, parsed (still sealed).
pub async fn read_segments(
    store: &dyn ObjectStore,
    tenant: &TenantId,
) -> Result<Vec<(ObjectName, Segment)>, AuditError> {
    let prefix = ObjectName::audit_segments_prefix(tenant);
    let mut out = Vec::new();
    for info in list_all(store, &prefix, None).await? {
        let segment = fetch_segment(store, &info.name).await?;
        out.push((info.name, segment));
    }
    Ok(out)
}

/// One segment of a log, parsed (still sealed).
pub async fn fetch_segment(
    store: &dyn ObjectStore,
    name: &ObjectName,
) -> Result<Segment, AuditError> {
    let bytes = store
        .get_bytes(name)
        .await?
        .ok_or(AuditError::Unavailable)?;
    Ok(Segment::parse(&bytes)?)
}

/// The audit logs of a server: one writer task per log, the checkpoint signer,
/// and what watches the logs' health. Clones share them.
#[derive(Clone)]
pub struct AuditService(Arc<AuditLogs>);

/// What an [`AuditService`] holds.
pub struct AuditLogs {
    store: Arc<dyn ObjectStore>,
    keys: Arc<KeyHierarchy>,
    tenants: TenantRegistry,
    metrics: Arc<Metrics>,
    /// Checkpoint signing.
    pub signer: Signer,
    /// Keys of the system log.
    system: TenantKeySpec,
    logs: Mutex<HashMap<TenantId, mpsc::Sender<writer::Command>>>,
    /// Per tenant, a size its log is known to have reached (by this replica's
    /// writes and reads): where finding its current size starts.
    known_sizes: Mutex<HashMap<TenantId, u64>>,
    /// Settings.
    pub config: AuditConfig,
    /// Bulk-access detection.
    pub bulk: anomaly::BulkAccess,
    /// Whether the latest write succeeded (for `/readyz`).
    pub health: health::AuditHealth,
    /// Sampling of unauthenticated requests into the system log.
    pub unauthenticated: health::Sampler,
}

impl std::ops::Deref for AuditService {
    type Target = AuditLogs;

    fn deref(&self) -> &AuditLogs {
        &self.0
    }
}

/// What the audit logs are written with.
pub struct AuditDeps {
    /// Where segments and checkpoints go.
    pub store: Arc<dyn ObjectStore>,
    /// Tenant keys (segments are sealed under the tenant's branch key).
    pub keys: Arc<KeyHierarchy>,
    /// The local provider, which keeps the signing key and the system log's KEK.
    pub local_keys: Arc<LocalKeyProvider>,
    /// Tenant records (a log's keys are its tenant's).
    pub tenants: TenantRegistry,
    /// Counters of events, segments and failures.
    pub metrics: Arc<Metrics>,
}

impl AuditLogs {
    /// Records that a tenant's log has reached `size` segments.
    pub(crate) fn note_log_size(&self, tenant: &TenantId, size: u64) {
        let mut sizes = self
            .known_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let known = sizes.entry(tenant.clone()).or_insert(0);
        *known = (*known).max(size);
    }

    /// How many segments a tenant's log holds now. From a size this replica
    /// knew, by probing names ([`probe_log_size`]: a few existence checks,
    /// however long the log); the first time, by listing ([`log_size`]).
    pub async fn log_size(&self, tenant: &TenantId) -> Result<u64, AuditError> {
        let known = self
            .known_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .copied();
        let store = self.store.as_ref();
        let size = match known {
            // A log shorter than it was (the tenant deleted and made again):
            // listed afresh.
            Some(known)
                if known == 0
                    || store
                        .head(&ObjectName::audit_segment(tenant, known - 1))
                        .await?
                        .is_some() =>
            {
                let size = probe_log_size(store, tenant, known).await?;
                self.note_log_size(tenant, size);
                size
            }
            _ => {
                let size = log_size(store, tenant).await?;
                // Replaces a size the log no longer has.
                self.known_sizes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(tenant.clone(), size);
                size
            }
        };
        Ok(size)
    }
}

impl AuditService {
    /// Loads the signing key (creating it on a new vault) and the system log's keys.
    pub async fn open(deps: AuditDeps, config: AuditConfig) -> Result<AuditService, AuditError> {
        let AuditDeps {
            store,
            keys,
            local_keys,
            tenants,
            metrics,
        } = deps;
        let system = TenantId::new(SYSTEM_LOG)?;
        let kek_id = local_keys.ensure_tenant_key(&system, None).await?;
        let context = EncryptionContext {
            tenant: system.clone(),
            purpose: Purpose::Audit,
        };
        let name = ObjectName::audit_signing_key();
        let seed = match store.get_bytes(&name).await? {
            Some(wrapped) => {
                local_keys
                    .decrypt_data_key(&kek_id, &wrapped, &context)
                    .await?
            }
            None => {
                let (seed, wrapped) = local_keys.generate_data_key(&kek_id, &context).await?;
                match store.put_new_bytes(&name, Bytes::from(wrapped)).await {
                    Ok(()) => seed,
                    // Another process created it first: use theirs.
                    Err(StorageError::AlreadyExists(_)) => {
                        let wrapped = store
                            .get_bytes(&name)
                            .await?
                            .ok_or(AuditError::Unavailable)?;
                        local_keys
                            .decrypt_data_key(&kek_id, &wrapped, &context)
                            .await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let key = SigningKey::from_seed(&seed);
        let public = key.public_key();
        store
            .replace(
                &ObjectName::audit_public_key(),
                Bytes::from(public.to_hex()),
            )
            .await?;
        Ok(AuditService(Arc::new(AuditLogs {
            store,
            keys,
            tenants,
            metrics,
            signer: Signer { key, public },
            system: TenantKeySpec {
                tenant: system,
                provider: local_keys.id().to_owned(),
                kek_id,
                branch_version: 1,
                min_decryption_version: 1,
                index_version: 1,
            },
            logs: Mutex::new(HashMap::new()),
            known_sizes: Mutex::new(HashMap::new()),
            bulk: anomaly::BulkAccess::new(&config),
            health: health::AuditHealth::default(),
            unauthenticated: health::Sampler::default(),
            config,
        })))
    }

    fn queue(&self, tenant: &TenantId) -> mpsc::Sender<writer::Command> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.entry(tenant.clone())
            .or_insert_with(|| writer::spawn(self.clone(), tenant.clone()))
            .clone()
    }

    fn open_queues(&self) -> Vec<mpsc::Sender<writer::Command>> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The keys a tenant's log is sealed under.
    async fn key_spec(&self, tenant: &TenantId) -> Result<TenantKeySpec, AuditError> {
        if tenant.as_str() == SYSTEM_LOG {
            return Ok(self.system.clone());
        }
        match self.tenants.get(tenant).await {
            Ok(Some(record)) => Ok(crate::tenants::key_spec(&record)),
            _ => Err(AuditError::Unavailable),
        }
    }

    /// The keys a new segment is sealed under: the tenant's as the store has them
    /// now (another replica may have rotated and retired the cached version).
    async fn current_key_spec(&self, tenant: &TenantId) -> Result<TenantKeySpec, AuditError> {
        if tenant.as_str() == SYSTEM_LOG {
            return Ok(self.system.clone());
        }
        match self.tenants.get_fresh(tenant).await {
            Ok(Some(record)) => Ok(crate::tenants::key_spec(&record)),
            _ => Err(AuditError::Unavailable),
        }
    }

    /// Appends an event (its `seq` is assigned by the log) and waits until it is
    /// durable; returns its seq.
    pub async fn append(&self, tenant: &TenantId, event: AuditEvent) -> Result<u64, AuditError> {
        let queue = self.queue(tenant);
        let written = writer::ask(&queue, |done| {
            writer::Command::Append(Box::new(event), done)
        })
        .await;
        self.health.record(written.is_ok());
        self.metrics.audit_failing.set(i64::from(written.is_err()));
        written
    }

    /// Writes a checkpoint of every open log that grew.
    pub async fn checkpoint_all(&self) {
        for queue in self.open_queues() {
            if let Err(e) = writer::ask(&queue, writer::Command::Checkpoint).await {
                tracing::error!(error = %e, "audit checkpoint failed");
            }
        }
    }

    /// Writes a checkpoint of one tenant's log (if it grew) and returns the latest.
    pub async fn checkpoint_now(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<StoredCheckpoint>, AuditError> {
        let queue = self.queue(tenant);
        writer::ask(&queue, writer::Command::Checkpoint).await?;
        latest_checkpoint(self.store.as_ref(), tenant).await
    }

    /// Checkpoints every `audit.checkpoint_interval_secs`, for ever.
    pub async fn run_checkpointer(self) {
        let mut tick =
            tokio::time::interval(Duration::from_secs(self.config.checkpoint_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.checkpoint_all().await;
        }
    }
}

/// A new event for `action` at this moment (seq assigned on append).
pub fn new_event(action: &str, actor: String, outcome: Outcome, status: u16) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time: OffsetDateTime::now_utc(),
        actor,
        roles: Vec::new(),
        action: action.to_owned(),
        document: None,
        outcome,
        status,
        request_id: String::new(),
        client: None,
        fields: Vec::new(),
        detail: None,
    }
}

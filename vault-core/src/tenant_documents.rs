//! A tenant's documents as its users see them: an upload end to end (a retry with
//! the same `Idempotency-Key` answered with the first document, the document
//! stored, then indexed), a download whole or as one byte range, a listing, and
//! a delete under legal holds and retention. The sealed records themselves are
//! [`crate::documents`]'; the index is [`crate::search`]'.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vault_crypto::envelope::{self, BodyHeader, StreamError};
use vault_crypto::{CryptoError, DocumentId};

use crate::data_dir_lock::Run;
use crate::documents::{
    BeforeVisible, DocumentFacts, DocumentKind, Documents, Fields, Opened, Presence,
    SealedMetadata, SearchTerms, UploadRequest,
};
use crate::error::Error;
use crate::key_lifecycle::KeyLifecycle;
use crate::metrics::Metrics;
use crate::search::{indexed_document, micros_floor, SearchService};
use crate::storage::{ObjectName, ObjectStore, StorageError};
use crate::tenants::TenantRecord;
use vault_index::blind_index::ListFilter as IndexListFilter;

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// FORMAT CONSTANT: version of an idempotency record (see [`IdempotencyRecord`]).
const IDEMPOTENCY_FORMAT: u32 = 2;
/// A claim whose document is not visible after this long belongs to an upload
/// that crashed (an upload claims its key only once its body is stored, just
/// before making the document visible, which must then happen within
/// [`crate::documents::COMMIT_DEADLINE`]); a retry then takes the key over.
const CLAIM_GRACE: Duration = Duration::from_secs(300);
/// How long a retry waits for a concurrent upload with its key to finish.
const CLAIM_WAIT: Duration = Duration::from_secs(3);
/// Most claims one key may go through (each after a crashed upload).
const MAX_CLAIMS: u32 = 16;

/// Uploads, downloads, listings and deletes of tenants' documents. Clones share
/// their services.
#[derive(Clone)]
pub struct TenantDocuments {
    store: Arc<dyn ObjectStore>,
    documents: Documents,
    search: SearchService,
    lifecycle: KeyLifecycle,
    metrics: Arc<Metrics>,
    /// This run of the replica, when it holds its data directory's lock: claims
    /// name it, and a claim of an earlier run of this replica is known dead.
    run: Option<Run>,
}

/// A document as an upload answers it: stored now, or the first upload of a retry.
#[derive(Debug)]
pub struct Filed {
    /// Its id.
    pub id: DocumentId,
    /// Its metadata as sealed.
    pub metadata: SealedMetadata,
    /// Its search terms.
    pub terms: Arc<SearchTerms>,
    /// Whether this answers a retry with the first upload's document.
    pub replayed: bool,
}

/// A document's plaintext, whole or one range of it.
pub struct Body {
    /// The bytes, decrypted and authenticated segment by segment.
    pub plaintext: BoxStream<'static, Result<Bytes, Error>>,
    /// The range served (end exclusive), or the whole document.
    pub range: Option<(u64, u64)>,
}

/// Which documents a listing wants.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    /// Of this kind.
    pub kind: Option<DocumentKind>,
    /// Uploaded at or after.
    pub uploaded_after: Option<OffsetDateTime>,
    /// Uploaded before.
    pub uploaded_before: Option<OffsetDateTime>,
}

/// A page of a listing.
pub struct ListPage {
    /// Facts of the documents, in id order.
    pub documents: Vec<DocumentFacts>,
    /// Where the next page starts, when there may be one.
    pub next_cursor: Option<DocumentId>,
}

impl TenantDocuments {
    /// A tenant's documents over these services.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        documents: Documents,
        search: SearchService,
        lifecycle: KeyLifecycle,
        metrics: Arc<Metrics>,
    ) -> Self {
        TenantDocuments {
            store,
            documents,
            search,
            lifecycle,
            metrics,
            run: None,
        }
    }

    /// Names `run` in the idempotency claims this replica makes, and takes over at
    /// once the claims of its earlier runs (see [`crate::data_dir_lock`]).
    pub fn in_run(mut self, run: Option<Run>) -> Self {
        self.run = run;
        self
    }

    /// Stores a document and indexes it. With an `Idempotency-Key`, a retry of the
    /// same request (same body, kind, type, name and fields) gets the first
    /// document back, and a different request with that key is refused
    /// (`idempotency_key_mismatch`): a reused key never reveals another document.
    pub async fn upload<S, E>(
        &self,
        tenant: &TenantRecord,
        request: UploadRequest,
        idempotency_key: Option<&str>,
        body: S,
        intent: Option<&dyn BeforeVisible>,
    ) -> Result<Filed, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let claim = match idempotency_key {
            None => None,
            Some(key) => {
                let hash = idempotency_hash(tenant, key)?;
                match self.await_claim(tenant, &hash).await? {
                    Claim::Visible(first) => {
                        // Its answer goes only to the same request (IETF
                        // Idempotency-Key draft): the body is read and compared.
                        let body_sha256 =
                            hash_body(body, self.documents.settings().max_upload_bytes).await?;
                        return Fingerprint::of(&request)
                            .same_or_conflict(first, &body_sha256)
                            .await;
                    }
                    Claim::Free(name) => Some((
                        hash,
                        ClaimGate {
                            store: self.store.clone(),
                            name,
                            run: self.run.as_ref().map(Run::tag),
                            lost_with_sha256: std::sync::Mutex::new(None),
                            claimed: std::sync::atomic::AtomicBool::new(false),
                        },
                    )),
                }
            }
        };
        let fingerprint = Fingerprint::of(&request);
        let current = CurrentTenant {
            tenants: &self.lifecycle.tenants,
            used: tenant,
        };
        let gates = Gates {
            current: &current,
            intent,
            claim: claim.as_ref().map(|(_, gate)| gate),
        };
        let stored = match self
            .documents
            .store_gated(tenant, request, body, Some(&gates))
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                let Some((hash, gate)) = &claim else {
                    return Err(e);
                };
                let Some(sha256) = gate.lost() else {
                    // Refused after our claim (the facts could not be written):
                    // the document is removed, so the claim goes too.
                    gate.release().await;
                    return Err(e);
                };
                // Another upload with this key claimed it first (ours is removed):
                // this one is its retry.
                return match self.await_claim(tenant, hash).await? {
                    Claim::Visible(first) => fingerprint.same_or_conflict(first, &sha256).await,
                    Claim::Free(_) => Err(e),
                };
            }
        };
        // The document is durable; the index is derived data. It is indexed now
        // when the tenant's index is open; while the index is being opened, its
        // reconciliation or the catch-up adds it (the upload does not wait for
        // an index to open). A failure here is logged and counted, and the next
        // reconciliation (start-up or rebuild) adds it.
        let indexed = indexed_document(
            &stored.id,
            stored.metadata.kind,
            stored.metadata.uploaded_at,
        );
        if let Err(e) = self
            .search
            .index_if_open(tenant, indexed, Arc::clone(&stored.terms))
            .await
        {
            self.metrics.index_failures.inc();
            tracing::error!(tenant = %tenant.id, document = %stored.id, code = e.code(), "document stored but not indexed");
        }
        tracing::info!(tenant = %tenant.id, document = %stored.id, kind = ?stored.metadata.kind, size = stored.metadata.size, "document stored");
        Ok(Filed {
            id: stored.id,
            metadata: stored.metadata,
            terms: stored.terms,
            replayed: false,
        })
    }

    /// Where an Idempotency-Key stands, waiting up to [`CLAIM_WAIT`] for an upload
    /// with it that is finishing.
    async fn await_claim(&self, tenant: &TenantRecord, hash: &str) -> Result<Claim, Error> {
        let waited = tokio::time::Instant::now();
        loop {
            match self.look_up_claim(tenant, hash).await? {
                Lookup::Settled(claim) => return Ok(claim),
                Lookup::InFlight if waited.elapsed() < CLAIM_WAIT => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Lookup::InFlight => {
                    return Err(Error::conflict(
                        "idempotency_key_in_flight",
                        "an upload with this Idempotency-Key is still in progress; retry it in a moment",
                    )
                    .retry_after(1))
                }
            }
        }
    }

    /// Follows a key's claims: the first, and after each whose upload crashed
    /// (its document never became visible within [`CLAIM_GRACE`]) the next.
    async fn look_up_claim(&self, tenant: &TenantRecord, hash: &str) -> Result<Lookup, Error> {
        for generation in 1..=MAX_CLAIMS {
            let name = claim_name(tenant, hash, generation);
            let Some(bytes) = self.store.get_bytes(&name).await? else {
                return Ok(Lookup::Settled(Claim::Free(name)));
            };
            let record: IdempotencyRecord = serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal("idempotency record", e))?;
            let id = record
                .document
                .parse::<DocumentId>()
                .map_err(|_| Error::internal("idempotency record", "no document id"))?;
            match self.documents.presence(&tenant.id, &id).await? {
                Presence::Visible => {
                    let opened = self.documents.open(tenant, &id).await?;
                    return Ok(Lookup::Settled(Claim::Visible((id, opened.metadata))));
                }
                Presence::Deleted => return Err(key_reused()),
                Presence::Absent => match record.claimed_at {
                    // Format 1 was written once the document was visible.
                    None => return Err(key_reused()),
                    // Made by an earlier run of this replica: its process is gone,
                    // and whatever it sent has landed or never will.
                    Some(at)
                        if self.made_by_earlier_run(&record)
                            && now_unix() - at
                                >= self.store.write_settle_time().as_secs_f64().ceil() as i64 =>
                    {
                        continue
                    }
                    Some(at) if now_unix() - at < CLAIM_GRACE.as_secs() as i64 => {
                        return Ok(Lookup::InFlight)
                    }
                    // Its upload crashed before the document became visible.
                    Some(_) => continue,
                },
            }
        }
        Err(Error::internal(
            "idempotency record",
            format!("{MAX_CLAIMS} uploads under one key crashed"),
        ))
    }

    fn made_by_earlier_run(&self, record: &IdempotencyRecord) -> bool {
        match (&self.run, &record.claimed_by) {
            (Some(run), Some(tag)) => run.is_earlier_run_of_this_replica(tag),
            _ => false,
        }
    }

    /// Opens a visible document (its key and metadata): 404 unless it is one of
    /// the tenant's.
    pub async fn open(&self, tenant: &TenantRecord, id: &DocumentId) -> Result<Opened, Error> {
        self.documents.open(tenant, id).await
    }

    /// An opened document's plaintext: whole, or the bytes `start..end` (end
    /// exclusive, within its size) decrypting only the segments they fall in.
    pub async fn body(
        &self,
        tenant: &TenantRecord,
        id: &DocumentId,
        opened: &Opened,
        range: Option<(u64, u64)>,
    ) -> Result<Body, Error> {
        let name = ObjectName::doc_body(&tenant.id, id);
        let stored = self
            .store
            .head(&name)
            .await?
            .ok_or_else(Error::document_not_found)?;
        let plaintext = match range {
            None => {
                let ciphertext = self.store.get(&name).await?;
                envelope::decrypt_stream(opened.dek.clone(), tenant.id.clone(), *id, ciphertext)
                    .map_err(stream_error)
                    .boxed()
            }
            Some((start, end)) => {
                let len = opened.metadata.size;
                let prefix = self.store.get_range(&name, 0..stored.size.min(512)).await?;
                let prefix = crate::storage::collect(prefix, 512).await?;
                let header_len = BodyHeader::peek_len(&prefix)?
                    .filter(|l| *l <= prefix.len())
                    .ok_or(CryptoError::Truncated)?;
                let (_, cipher) =
                    envelope::open_body(&opened.dek, &tenant.id, *id, &prefix[..header_len])?;
                let layout = cipher.layout();
                if layout.plaintext_len(stored.size)? != len {
                    return Err(CryptoError::Truncated.into());
                }
                let plan = layout.plan_range(len, start, end)?;
                let ciphertext = self.store.get_range(&name, plan.ciphertext.clone()).await?;
                envelope::decrypt_range_stream(cipher, plan, ciphertext)
                    .map_err(stream_error)
                    .boxed()
            }
        };
        self.metrics.downloads.inc();
        Ok(Body { plaintext, range })
    }

    /// Deletes a visible document, unless a legal hold or its retention period
    /// keeps it, and takes it out of the index. A document deleted already (its
    /// delete maybe interrupted) is finished and reported not found.
    pub async fn delete(&self, tenant: &TenantRecord, id: &DocumentId) -> Result<(), Error> {
        match self.documents.presence(&tenant.id, id).await? {
            Presence::Visible => {}
            Presence::Absent => return Err(Error::document_not_found()),
            Presence::Deleted => {
                self.documents.delete(&tenant.id, id).await?;
                return Err(Error::document_not_found());
            }
        }
        self.lifecycle.check_deletable(tenant, id).await?;
        self.documents.delete(&tenant.id, id).await?;
        // A search between the delete above and this skips the entry: its metadata
        // no longer opens.
        if let Err(e) = self.search.remove_if_open(tenant, id).await {
            self.metrics.index_failures.inc();
            tracing::error!(tenant = %tenant.id, document = %id, code = e.code(), "document deleted but still in the index until the next reconciliation");
        }
        tracing::info!(tenant = %tenant.id, document = %id, "document deleted (tombstone written, objects removed)");
        Ok(())
    }

    /// Up to `limit` visible documents matching `filter`, in id order, after
    /// `cursor`. Read from the tenant's blind index when it is current (the cost
    /// of a page, whatever the tenant's size; other replicas' uploads and deletes
    /// appear as in search, within about 0.6 s), else from the store. Either way
    /// each listed document's facts are read and its tombstone looked for, so a
    /// deleted document is never listed.
    pub async fn list(
        &self,
        tenant: &TenantRecord,
        filter: &ListFilter,
        cursor: Option<&DocumentId>,
        limit: usize,
    ) -> Result<ListPage, Error> {
        // The API asks for 1 to 1,000; anything else is bounded here too.
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        match self.list_from_index(tenant, filter, cursor, limit).await? {
            Some(page) => Ok(page),
            None => {
                self.metrics.listed_from_store.inc();
                self.list_from_store(tenant, filter, cursor, limit).await
            }
        }
    }

    /// [`TenantDocuments::list`] from the index; `None` when it is not current.
    async fn list_from_index(
        &self,
        tenant: &TenantRecord,
        filter: &ListFilter,
        cursor: Option<&DocumentId>,
        limit: usize,
    ) -> Result<Option<ListPage>, Error> {
        let kind = filter.kind.map(|k| k.as_str());
        let index_filter = IndexListFilter {
            kind,
            // Whole microseconds around the asked times: the index narrows, the
            // facts decide.
            uploaded_from_micros: filter
                .uploaded_after
                .map(|t| micros_floor(t.unix_timestamp_nanos())),
            uploaded_before_micros: filter
                .uploaded_before
                .map(|t| micros_floor(t.unix_timestamp_nanos() + 999)),
        };
        let mut after = cursor.map(DocumentId::to_string);
        let mut documents: Vec<DocumentFacts> = Vec::new();
        // One more than a page tells whether another page follows.
        while documents.len() <= limit {
            let wanted = limit + 1 - documents.len();
            let Some(entries) = self
                .search
                .list_indexed(tenant, index_filter, after.clone(), wanted)
                .await?
            else {
                return Ok(None);
            };
            let exhausted = entries.len() < wanted;
            after = entries.last().map(|e| e.id.clone());
            let facts: Vec<Option<DocumentFacts>> = futures::stream::iter(entries)
                .map(|entry| async move {
                    match entry.id.parse::<DocumentId>() {
                        Ok(id) => self.visible_facts(tenant, &id).await,
                        Err(_) => Ok(None),
                    }
                })
                .buffered(LIST_READ_CONCURRENCY)
                .try_collect()
                .await?;
            documents.extend(facts.into_iter().flatten().filter(|f| filter.keeps(f)));
            if exhausted {
                break;
            }
        }
        let next_cursor = if documents.len() > limit {
            documents.truncate(limit);
            documents.last().map(|d| d.id)
        } else {
            None
        };
        Ok(Some(ListPage {
            documents,
            next_cursor,
        }))
    }

    /// [`TenantDocuments::list`] by walking the tenant's objects in the store.
    async fn list_from_store(
        &self,
        tenant: &TenantRecord,
        filter: &ListFilter,
        cursor: Option<&DocumentId>,
        limit: usize,
    ) -> Result<ListPage, Error> {
        let prefix = ObjectName::docs_prefix(&tenant.id);
        let mut start_after =
            cursor.map(|id| ObjectName::doc_meta(&tenant.id, id).as_str().to_owned());
        let mut documents: Vec<DocumentFacts> = Vec::new();
        let mut next_cursor = None;
        // Each document has three objects: three listings per wanted document.
        let batch = 3 * limit + 3;
        'pages: loop {
            let page = self
                .store
                .list(&prefix, start_after.as_deref(), batch)
                .await?;
            let Some(last) = page.last() else { break };
            start_after = Some(last.name.as_str().to_owned());
            let exhausted = page.len() < batch;
            for info in page.iter().filter(|i| i.name.as_str().ends_with("/meta")) {
                let Some(id) = info.name.meta_document() else {
                    continue;
                };
                let Some(facts) = self.visible_facts(tenant, &id).await? else {
                    continue;
                };
                if filter.keeps(&facts) {
                    if documents.len() == limit {
                        next_cursor = documents.last().map(|d| d.id);
                        break 'pages;
                    }
                    documents.push(facts);
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(ListPage {
            documents,
            next_cursor,
        })
    }

    /// A document's facts, if it is visible: `None` when its facts object is
    /// gone or its tombstone is there (the facts are then the remainder of an
    /// interrupted delete).
    async fn visible_facts(
        &self,
        tenant: &TenantRecord,
        id: &DocumentId,
    ) -> Result<Option<DocumentFacts>, Error> {
        let (meta, tombstone) = (
            ObjectName::doc_meta(&tenant.id, id),
            ObjectName::tombstone(&tenant.id, id),
        );
        let (bytes, tombstone) =
            tokio::join!(self.store.get_bytes(&meta), self.store.head(&tombstone));
        if tombstone?.is_some() {
            return Ok(None);
        }
        let Some(bytes) = bytes? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal("document facts", e))
    }
}

/// The most documents a listing page holds.
const MAX_LIST_LIMIT: usize = 10_000;

/// Listed documents whose facts are read at once.
const LIST_READ_CONCURRENCY: usize = 16;

impl ListFilter {
    /// Whether the filter keeps a document.
    fn keeps(&self, facts: &DocumentFacts) -> bool {
        self.kind.is_none_or(|k| k == facts.kind)
            && self.uploaded_after.is_none_or(|t| facts.uploaded_at >= t)
            && self.uploaded_before.is_none_or(|t| facts.uploaded_at < t)
    }
}

/// What names a tenant's Idempotency-Key in the store: a hash of the tenant and
/// the key (the key itself is the client's text and never reaches a name).
fn idempotency_hash(tenant: &TenantRecord, key: &str) -> Result<String, Error> {
    check_idempotency_key(key)?;
    let mut hasher = Sha256::new();
    hasher.update(tenant.id.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    Ok(hex::encode(hasher.finalize()))
}

/// A key's claim record of one generation: the first is `idempotency/<hash>` (as
/// format 1 named it), a later one `idempotency/<hash>.<generation>`.
fn claim_name(tenant: &TenantRecord, hash: &str, generation: u32) -> ObjectName {
    if generation == 1 {
        ObjectName::idempotency(&tenant.id, hash)
    } else {
        ObjectName::idempotency(&tenant.id, &format!("{hash}.{generation}"))
    }
}

fn key_reused() -> Error {
    Error::conflict(
        "idempotency_key_reused",
        "this Idempotency-Key belonged to a document that has since been deleted",
    )
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// An idempotency record: which document a key was used for.
///
/// Format 1 was written after the document became visible; format 2 is the
/// *claim*, written create-only before (the commit point of a keyed upload), with
/// the time it was made, so a retry can tell an upload still finishing from one
/// that crashed.
#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    format: u32,
    document: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_at: Option<i64>,
    /// The replica run that claimed it (`<holder>#<run id>`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_by: Option<String>,
}

/// Where a key stands.
enum Claim {
    /// Its document is visible: the first upload's answer.
    Visible((DocumentId, SealedMetadata)),
    /// Unused: an upload claims it at this name.
    Free(ObjectName),
}

enum Lookup {
    Settled(Claim),
    /// An upload with this key is finishing (its claim is younger than the grace).
    InFlight,
}

/// What an upload's commit point asks, in order: that the tenant is still as the
/// upload found it, the audit intent (a change is never made unrecorded), then
/// the idempotency claim.
struct Gates<'a> {
    current: &'a CurrentTenant<'a>,
    intent: Option<&'a dyn BeforeVisible>,
    claim: Option<&'a ClaimGate>,
}

/// The tenant at an upload's commit point, read from the store (not the cache):
/// still active, and its branch key still the one the upload sealed under.
/// Another replica may have disabled or offboarded it, or rotated its keys (a
/// document sealed under a version a rewrap has already passed could be retired
/// unreadable), in the seconds the cache trusts. Such an upload is refused before
/// it becomes visible; a retry uses the tenant as it is now.
struct CurrentTenant<'a> {
    tenants: &'a crate::tenants::TenantRegistry,
    used: &'a TenantRecord,
}

impl CurrentTenant<'_> {
    async fn check(&self) -> Result<(), Error> {
        match self.tenants.get_fresh(&self.used.id).await? {
            Some(now) if !now.is_active() => Err(Error::not_found(
                "tenant_not_found",
                format!("no active tenant {}", self.used.id),
            )),
            Some(now)
                if now.branch_version == self.used.branch_version
                    && now.kek_id == self.used.kek_id =>
            {
                Ok(())
            }
            Some(_) => Err(Error::Unavailable {
                code: "tenant_keys_rotated",
                message: "the tenant's keys were rotated during the upload; retry it".into(),
                retry_after: Some(1),
                cause: None,
            }),
            None => Err(crate::tenants::tenant_not_found(&self.used.id)),
        }
    }
}

#[async_trait::async_trait]
impl BeforeVisible for Gates<'_> {
    async fn before_visible(
        &self,
        id: &DocumentId,
        metadata: &SealedMetadata,
    ) -> Result<(), Error> {
        self.current.check().await?;
        if let Some(intent) = self.intent {
            intent.before_visible(id, metadata).await?;
        }
        crate::failpoints::crash_point(crate::failpoints::UPLOAD_AFTER_INTENT);
        if let Some(claim) = self.claim {
            claim.before_visible(id, metadata).await?;
        }
        Ok(())
    }
}

/// Claims a key for a document just before it becomes visible.
struct ClaimGate {
    store: Arc<dyn ObjectStore>,
    name: ObjectName,
    /// This replica's run, named in the claim.
    run: Option<String>,
    /// Set when another upload claimed the key first: this body's SHA-256.
    lost_with_sha256: std::sync::Mutex<Option<String>>,
    /// Set once the claim is stored.
    claimed: std::sync::atomic::AtomicBool,
}

impl ClaimGate {
    /// Removes the claim after its document was refused (best effort: a claim
    /// left behind is taken over once [`CLAIM_GRACE`] has passed).
    async fn release(&self) {
        if self.claimed.load(std::sync::atomic::Ordering::Acquire) {
            if let Err(e) = self.store.delete(&self.name).await {
                tracing::warn!(error = %e, "could not remove the idempotency claim of a failed upload");
            }
        }
    }

    fn lost(&self) -> Option<String> {
        self.lost_with_sha256
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait::async_trait]
impl BeforeVisible for ClaimGate {
    async fn before_visible(
        &self,
        id: &DocumentId,
        metadata: &SealedMetadata,
    ) -> Result<(), Error> {
        let record = IdempotencyRecord {
            format: IDEMPOTENCY_FORMAT,
            document: id.to_string(),
            claimed_at: Some(now_unix()),
            claimed_by: self.run.clone(),
        };
        let json =
            serde_json::to_vec(&record).map_err(|e| Error::internal("idempotency record", e))?;
        match self
            .store
            .put_new_bytes(&self.name, Bytes::from(json))
            .await
        {
            Ok(()) => {
                self.claimed
                    .store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            Err(StorageError::AlreadyExists(_)) => {
                *self
                    .lost_with_sha256
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(metadata.sha256.clone());
                Err(Error::conflict(
                    "idempotency_key_in_flight",
                    "another upload with this Idempotency-Key was first",
                ))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Checks an `Idempotency-Key`: 1 to 255 characters.
pub fn check_idempotency_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(Error::invalid(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(())
}

fn stream_error(e: StreamError<StorageError>) -> Error {
    match e {
        StreamError::Source(s) => s.into(),
        StreamError::Crypto(c) => c.into(),
    }
}

/// SHA-256 of a request body read to its end (at most `limit` bytes), hex.
async fn hash_body<E>(
    body: impl Stream<Item = Result<Bytes, E>>,
    limit: u64,
) -> Result<String, Error> {
    let mut stream = std::pin::pin!(body);
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            Error::invalid("body_read_failed", "the request body could not be read")
        })?;
        read += chunk.len() as u64;
        if read > limit {
            return Err(StorageError::TooLarge(limit).into());
        }
        hasher.update(&chunk);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What makes two uploads the same request for an Idempotency-Key: the body (by
/// its SHA-256) and what shapes the stored document.
struct Fingerprint {
    kind: DocumentKind,
    content_type: String,
    file_name: Option<String>,
    fields: Fields,
}

impl Fingerprint {
    fn of(request: &UploadRequest) -> Self {
        Fingerprint {
            kind: request.kind,
            content_type: request.content_type.clone(),
            file_name: request.file_name.clone(),
            fields: request.fields.clone(),
        }
    }

    /// The first upload's document when this request, whose body hashed to
    /// `body_sha256`, is the one it answered; else `idempotency_key_mismatch`.
    async fn same_or_conflict(
        &self,
        (id, first): (DocumentId, SealedMetadata),
        body_sha256: &str,
    ) -> Result<Filed, Error> {
        let fields_match = match &first.caller_fields_sha256 {
            Some(digest) => *digest == SealedMetadata::caller_fields_digest(&self.fields),
            // Uploaded before the digest was kept: the stored fields are the
            // caller's merged with extracted ones, so the caller's must be among them.
            None => self.fields.iter().all(|(name, values)| {
                first
                    .fields
                    .get(name)
                    .is_some_and(|stored| values.iter().all(|v| stored.contains(v)))
            }),
        };
        let same = first.kind == self.kind
            && first.content_type == self.content_type
            && first.file_name == self.file_name
            && fields_match
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                first.sha256.as_bytes(),
                body_sha256.as_bytes(),
            ));
        if !same {
            return Err(Error::unprocessable(
                "idempotency_key_mismatch",
                "this Idempotency-Key was used for a different request; use a new key for a new document",
            ));
        }
        // A remittance's terms are CPU work: off the async workers.
        let fields = first.fields.clone();
        let terms = tokio::task::spawn_blocking(move || {
            Arc::new(vault_index::fields::search_terms(&fields))
        })
        .await
        .map_err(|e| Error::internal("search terms task", e))?;
        Ok(Filed {
            id,
            metadata: first,
            terms,
            replayed: true,
        })
    }
}

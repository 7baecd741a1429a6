//! Documents as the vault stores them: the encrypted metadata block, the public
//! facts object, the tombstone of a deleted document, and the upload / read /
//! delete operations over storage and keys. HTTP concerns stay in
//! the server's `routes/documents.rs`.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vault_crypto::envelope::{self, BodyHeader, KeyRecord, StreamError};
use vault_crypto::{DocumentId, Key256, TenantId};
use vault_keys::KeyHierarchy;

use crate::config::{Config, SearchConfig};
use crate::error::Error;
use crate::extraction::{self, Capture, Extraction};
use crate::failpoints;
use crate::metrics::Metrics;
use crate::storage::{ByteStream, ObjectName, ObjectStore, StorageError};
use crate::tenants::TenantRecord;

pub use vault_api::DocumentKind;

/// Field values: each field may have several values (a remittance holds many claims).
pub use vault_index::fields::Fields;

/// The encrypted metadata block (JSON inside the key record). Format 1.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealedMetadata {
    /// FORMAT CONSTANT: 1.
    pub format: u32,
    /// Declared kind.
    pub kind: DocumentKind,
    /// Content type given at upload.
    pub content_type: String,
    /// File name given at upload.
    pub file_name: Option<String>,
    /// Plaintext size.
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    /// Searchable fields (caller-supplied and extracted).
    pub fields: Fields,
    /// Upload time.
    #[serde(with = "time::serde::rfc3339")]
    pub uploaded_at: OffsetDateTime,
    /// SHA-256 of the caller's own fields (`X-Vault-Fields`, as parsed), hex: an
    /// Idempotency-Key replay must bring exactly these. Absent in documents
    /// uploaded before it was recorded (their replays compare a subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_fields_sha256: Option<String>,
}

impl SealedMetadata {
    /// The digest kept in `caller_fields_sha256` for a caller's fields.
    pub fn caller_fields_digest(fields: &Fields) -> String {
        // A BTreeMap of vectors serialises in one order: the digest is canonical.
        let json = serde_json::to_vec(fields).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }
}

/// Public facts of a document (the `meta` object, unencrypted): nothing here is PHI.
/// Its presence is what makes a document visible. Format 1.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocumentFacts {
    /// FORMAT CONSTANT: 1.
    pub format: u32,
    /// Document id.
    pub id: DocumentId,
    /// Declared kind.
    pub kind: DocumentKind,
    /// Upload time.
    #[serde(with = "time::serde::rfc3339")]
    pub uploaded_at: OffsetDateTime,
    /// Ciphertext bytes stored.
    pub stored_bytes: u64,
}

/// The record of a deleted document (`tenants/<t>/tombstones/<doc>`), written
/// create-only before any of the document's objects is removed, and never removed
/// itself. A document with a tombstone is deleted wherever it is seen: reads,
/// listings, searches and index reconciliation never show it (leftover objects of
/// an interrupted delete are removed), and a restore leaves its objects out of any
/// snapshot the repository holds a later tombstone for (`backup/tombstones.rs`).
/// Format 1; no PHI.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tombstone {
    /// FORMAT CONSTANT: 1.
    pub format: u32,
    /// The deleted document.
    pub document: DocumentId,
    /// When it was deleted.
    #[serde(with = "time::serde::rfc3339")]
    pub deleted_at: OffsetDateTime,
}

/// FORMAT CONSTANT: version of [`Tombstone`].
const TOMBSTONE_FORMAT: u32 = 1;

/// Whether a document exists, as its objects say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Its facts object exists and it has no tombstone.
    Visible,
    /// It has a tombstone (objects of an interrupted delete may remain).
    Deleted,
    /// Neither.
    Absent,
}

/// Time from a gate's agreement to the document becoming visible; past it the
/// upload fails instead (an idempotency claim older than its grace may have been
/// taken over by a retry).
pub const COMMIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Asked by [`Documents::store_gated`] after a document's body and key record are
/// durable and before it becomes visible (an idempotency claim, an audit intent):
/// an error refuses it, and it never becomes visible.
#[async_trait::async_trait]
pub trait BeforeVisible: Send + Sync {
    /// Agrees to document `id`, whose metadata is `metadata`, becoming visible.
    async fn before_visible(&self, id: &DocumentId, metadata: &SealedMetadata)
        -> Result<(), Error>;
}

/// A document's objects, facts first (removing it makes the document disappear).
fn document_objects(tenant: &TenantId, id: &DocumentId) -> [ObjectName; 3] {
    [
        ObjectName::doc_meta(tenant, id),
        ObjectName::doc_key(tenant, id),
        ObjectName::doc_body(tenant, id),
    ]
}

/// A document's normalised search terms, virtual fields included.
pub type SearchTerms = std::collections::BTreeSet<(vault_index::fields::Field, String)>;

/// What an upload needs besides the body.
pub struct UploadRequest {
    /// Declared kind.
    pub kind: DocumentKind,
    /// Content type.
    pub content_type: String,
    /// Optional file name.
    pub file_name: Option<String>,
    /// Caller-supplied searchable fields.
    pub fields: Fields,
    /// Whether fields are extracted from the body.
    pub extraction: Extraction,
}

/// The result of a stored upload.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Document id.
    pub id: DocumentId,
    /// The metadata that was sealed.
    pub metadata: SealedMetadata,
    /// The search terms of its fields, for the index.
    pub terms: Arc<SearchTerms>,
}

/// What the blocking part of an upload makes: the fields extracted and merged,
/// the sealed key record, the search terms.
struct Sealed {
    metadata: SealedMetadata,
    record: Vec<u8>,
    terms: SearchTerms,
}

/// Running plaintext size and hash of an upload, and the bytes kept for
/// extraction, shared with its stream.
struct Tap {
    size: u64,
    capture: Capture,
}

/// Bytes of a body hashed in the request's task; past them, on a thread of
/// its own.
const HASH_INLINE: u64 = 1024 * 1024;
/// Chunks the hashing thread may lag behind (a bounded queue: a starved
/// thread holds the upload back rather than piling up its body in memory).
const HASH_QUEUE: usize = 16;

/// The SHA-256 of a body as it streams. A large body's hash runs on a thread
/// beside its encryption and write instead of before them on the same one
/// (small bodies stay inline: a thread hand-off would cost more than it saves).
enum BodyHash {
    /// The hasher and the bytes it took.
    Inline(Sha256, u64),
    Threaded(
        tokio::sync::mpsc::Sender<Bytes>,
        tokio::task::JoinHandle<Sha256>,
    ),
}

impl Default for BodyHash {
    fn default() -> Self {
        BodyHash::Inline(Sha256::new(), 0)
    }
}

impl BodyHash {
    async fn update(&mut self, chunk: &Bytes) -> Result<(), StorageError> {
        if let BodyHash::Inline(hasher, hashed) = self {
            *hashed += chunk.len() as u64;
            if *hashed <= HASH_INLINE {
                hasher.update(chunk);
                return Ok(());
            }
            let mut hasher = std::mem::take(hasher);
            let (chunks, mut received) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
            let thread = tokio::task::spawn_blocking(move || {
                while let Some(chunk) = received.blocking_recv() {
                    hasher.update(&chunk);
                }
                hasher
            });
            *self = BodyHash::Threaded(chunks, thread);
        }
        if let BodyHash::Threaded(chunks, _) = self {
            chunks
                .send(chunk.clone())
                .await
                .map_err(|_| StorageError::Backend("the body's hashing stopped".into()))?;
        }
        Ok(())
    }

    async fn finish(self) -> Result<[u8; 32], Error> {
        let hasher = match self {
            BodyHash::Inline(hasher, _) => hasher,
            BodyHash::Threaded(chunks, thread) => {
                drop(chunks);
                thread
                    .await
                    .map_err(|e| Error::internal("body hashing thread", e))?
            }
        };
        Ok(hasher.finalize().into())
    }
}

/// The CPU-bound part of an upload, on the blocking pool: the captured document's
/// fields merged into the caller's, within the limits; the metadata sealed in a
/// key record; the search terms.
fn seal(
    mut metadata: SealedMetadata,
    captured: extraction::Captured,
    limits: vault_index::fields::FieldLimits,
    max_extract_bytes: u64,
    (dek, header, branch_key, key_ref): (&Key256, &BodyHeader, &Key256, envelope::KeyRef),
) -> Result<Sealed, Error> {
    let extracted = extraction::extract_captured(captured, limits, max_extract_bytes)?;
    let caller = std::mem::take(&mut metadata.fields);
    metadata.fields = extraction::merge(caller, extracted, &limits)?;
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec(&metadata).map_err(|e| Error::internal("metadata", e))?,
    );
    if json.len() > envelope::MAX_METADATA_LEN {
        return Err(extraction::fields_too_large(envelope::MAX_METADATA_LEN));
    }
    let record = KeyRecord::seal(dek, header, branch_key, key_ref, &json)?;
    let terms = vault_index::fields::search_terms(&metadata.fields);
    Ok(Sealed {
        metadata,
        record: record.encode(),
        terms,
    })
}

/// A visible document's key record, DEK and decrypted metadata.
pub struct Opened {
    /// The DEK (zeroized on drop).
    pub dek: Key256,
    /// Decrypted metadata.
    pub metadata: SealedMetadata,
    /// Public facts.
    pub facts: DocumentFacts,
}

/// Key records up to this size have their metadata opened on the async worker.
const INLINE_METADATA_BYTES: usize = 64 * 1024;

fn open_metadata(record: &KeyRecord, dek: &Key256) -> Result<SealedMetadata, Error> {
    let metadata_json = record.open_metadata(dek)?;
    serde_json::from_slice(&metadata_json).map_err(|e| Error::internal("sealed metadata", e))
}

/// What uploads are held to.
#[derive(Clone, Debug)]
pub struct DocumentSettings {
    /// Plaintext bytes per sealed segment of a body (`segment_size`).
    pub segment_size: u32,
    /// Largest document accepted (`max_upload_bytes`).
    pub max_upload_bytes: u64,
    /// Extraction and field limits (`[search]`).
    pub search: SearchConfig,
}

impl DocumentSettings {
    /// The settings of `config`.
    pub fn of(config: &Config) -> Self {
        DocumentSettings {
            segment_size: config.segment_size,
            max_upload_bytes: config.max_upload_bytes,
            search: config.search.clone(),
        }
    }
}

/// Documents over the store and the key hierarchy: upload, open, delete.
/// Clones share the extraction turns.
#[derive(Clone)]
pub struct Documents {
    store: Arc<dyn ObjectStore>,
    keys: Arc<KeyHierarchy>,
    metrics: Arc<Metrics>,
    settings: DocumentSettings,
    /// Turns to run an extraction (`search.max_concurrent_extractions`).
    extractions: Arc<Semaphore>,
}

impl Documents {
    /// Documents of `store`, sealed with `keys`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        keys: Arc<KeyHierarchy>,
        metrics: Arc<Metrics>,
        settings: DocumentSettings,
    ) -> Self {
        let extractions = Arc::new(Semaphore::new(settings.search.concurrent_extractions()));
        Documents {
            store,
            keys,
            metrics,
            settings,
            extractions,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &DocumentSettings {
        &self.settings
    }

    /// A turn to run an extraction: waits while `search.max_concurrent_extractions`
    /// are running, so CPU-heavy uploads queue instead of taking every core.
    async fn extraction_permit(&self) -> Result<OwnedSemaphorePermit, Error> {
        Arc::clone(&self.extractions)
            .acquire_owned()
            .await
            .map_err(|e| Error::internal("extraction permits", e))
    }

    /// Whether `id` is a visible, deleted or unknown document of `tenant`.
    pub async fn presence(
        &self,
        tenant: &TenantId,
        id: &DocumentId,
    ) -> Result<Presence, StorageError> {
        let facts = ObjectName::doc_meta(tenant, id);
        let tombstone = ObjectName::tombstone(tenant, id);
        let (facts, tombstone) = tokio::join!(self.store.head(&facts), self.store.head(&tombstone));
        Ok(if tombstone?.is_some() {
            Presence::Deleted
        } else if facts?.is_some() {
            Presence::Visible
        } else {
            Presence::Absent
        })
    }

    /// Deletes a document: writes its tombstone (create-only; one already there is a
    /// delete being finished), then removes its facts (it disappears), key record and
    /// body, each with every earlier version the store keeps. A crash in between
    /// leaves a tombstoned remainder that every reader treats as deleted and the next
    /// delete or index reconciliation removes.
    pub async fn delete(&self, tenant: &TenantId, id: &DocumentId) -> Result<(), Error> {
        let tombstone = Tombstone {
            format: TOMBSTONE_FORMAT,
            document: *id,
            deleted_at: OffsetDateTime::now_utc(),
        };
        let record = serde_json::to_vec(&tombstone).map_err(|e| Error::internal("tombstone", e))?;
        match self
            .store
            .put_new_bytes(&ObjectName::tombstone(tenant, id), Bytes::from(record))
            .await
        {
            Ok(()) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        failpoints::crash_point(failpoints::DELETE_AFTER_TOMBSTONE);
        for (n, name) in document_objects(tenant, id).into_iter().enumerate() {
            self.store.delete_all_versions(&name).await?;
            if n == 0 {
                failpoints::crash_point(failpoints::DELETE_AFTER_FACTS_REMOVED);
            }
        }
        failpoints::crash_point(failpoints::DELETE_AFTER_OBJECTS_REMOVED);
        Ok(())
    }

    /// Stores a document: the body streamed through the encryptor, then the key record,
    /// then the public facts. Visible only once the last write is durable.
    pub async fn store<S, E>(
        &self,
        tenant: &TenantRecord,
        request: UploadRequest,
        body: S,
    ) -> Result<Stored, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.store_gated(tenant, request, body, None).await
    }

    /// [`Documents::store`], asking `gate` once the body and key record are durable
    /// and before the facts object makes the document visible: the commit point.
    /// A gate that refuses removes the document's objects, and its error is
    /// returned; nothing was visible.
    pub async fn store_gated<S, E>(
        &self,
        tenant: &TenantRecord,
        request: UploadRequest,
        body: S,
        gate: Option<&dyn BeforeVisible>,
    ) -> Result<Stored, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let spec = crate::tenants::key_spec(tenant);
        let (key_ref, branch_key) = self.keys.branch_key_for_upload(&spec).await?;
        let id = DocumentId::random();
        let dek = Key256::random();
        let (header_bytes, encryptor) =
            envelope::begin_body(&dek, &tenant.id, id, self.settings.segment_size)?;
        let (header, _) = BodyHeader::parse(&header_bytes)?;

        let extract_limit = self.settings.search.max_extract_bytes;
        let hash = Arc::new(tokio::sync::Mutex::new(BodyHash::default()));
        let tap = Arc::new(Mutex::new(Tap {
            size: 0,
            capture: Capture::start(
                request.extraction == Extraction::Auto && request.kind != DocumentKind::Scan,
            ),
        }));
        let limit = self.settings.max_upload_bytes;
        let tapped = {
            let (tap, hash) = (Arc::clone(&tap), Arc::clone(&hash));
            let content_type = request.content_type.clone();
            body.then(move |chunk| {
                let (tap, hash, content_type) =
                    (Arc::clone(&tap), Arc::clone(&hash), content_type.clone());
                async move {
                    let chunk = chunk.map_err(|e| StorageError::SourceFailed(e.to_string()))?;
                    {
                        let mut tap = tap.lock().unwrap_or_else(PoisonError::into_inner);
                        tap.size += chunk.len() as u64;
                        if tap.size > limit {
                            return Err(StorageError::TooLarge(limit));
                        }
                        tap.capture.feed(&chunk, &content_type, extract_limit);
                    }
                    hash.lock().await.update(&chunk).await?;
                    Ok(chunk)
                }
            })
        };
        let sealed: ByteStream = Box::pin(
            envelope::encrypt_stream(header_bytes, encryptor, tapped).map_err(|e| match e {
                StreamError::Source(source) => source,
                StreamError::Crypto(crypto) => StorageError::Backend(crypto.to_string()),
            }),
        );

        // Body and key record are written deferred and made durable together by
        // one sync before the commit gates: the store shares that sync among
        // the uploads waiting at once (group commit). Nothing refers to them
        // until the facts object, written after the sync.
        let body_name = ObjectName::doc_body(&tenant.id, &id);
        let stored_bytes = self.store.put_new_deferred(&body_name, sealed).await?;
        failpoints::crash_point(failpoints::UPLOAD_AFTER_BODY);
        let (size, capture) = {
            let mut tap = tap.lock().unwrap_or_else(PoisonError::into_inner);
            let capture = std::mem::replace(&mut tap.capture, Capture::start(false));
            (tap.size, capture)
        };
        let sha256 = match std::mem::take(&mut *hash.lock().await).finish().await {
            Ok(digest) => hex::encode(digest),
            Err(e) => {
                self.remove_objects(&tenant.id, &id).await;
                return Err(e);
            }
        };
        if size == 0 {
            // Nothing to keep: an empty body is a client's mistake (a file
            // path that named nothing), not a document.
            self.remove_objects(&tenant.id, &id).await;
            return Err(Error::invalid(
                "empty_body",
                "the request body is empty: send the document's bytes",
            ));
        }
        let captured = capture.finish(&request.content_type);
        // Extraction, merging, the metadata JSON, its encryption and the search terms
        // are CPU work that grows with the document: off the async workers, and only
        // `search.max_concurrent_extractions` extracting documents at once.
        let permit = match captured {
            extraction::Captured::Document(..) => match self.extraction_permit().await {
                Ok(permit) => Some(permit),
                Err(e) => {
                    self.remove_objects(&tenant.id, &id).await;
                    return Err(e);
                }
            },
            _ => None,
        };
        let metadata = SealedMetadata {
            format: 1,
            kind: request.kind,
            content_type: request.content_type,
            file_name: request.file_name,
            size,
            sha256,
            caller_fields_sha256: Some(SealedMetadata::caller_fields_digest(&request.fields)),
            fields: request.fields,
            uploaded_at: OffsetDateTime::now_utc(),
        };
        let limits = self.settings.search.field_limits();
        let sealed = tokio::task::spawn_blocking(move || {
            seal(
                metadata,
                captured,
                limits,
                extract_limit,
                (&dek, &header, &branch_key, key_ref),
            )
        })
        .await
        .map_err(|e| Error::internal("upload sealing task", e))
        .and_then(|sealed| sealed);
        drop(permit);
        let Sealed {
            metadata,
            record,
            terms,
        } = match sealed {
            Ok(sealed) => sealed,
            Err(e) => {
                self.remove_objects(&tenant.id, &id).await;
                return Err(e);
            }
        };
        let finish = async {
            let record: ByteStream =
                Box::pin(futures::stream::once(
                    async move { Ok(Bytes::from(record)) },
                ));
            self.store
                .put_new_deferred(&ObjectName::doc_key(&tenant.id, &id), record)
                .await?;
            self.store.sync().await?;
            failpoints::crash_point(failpoints::UPLOAD_AFTER_KEY_RECORD);
            if let Some(gate) = gate {
                gate.before_visible(&id, &metadata).await?;
            }
            failpoints::crash_point(failpoints::UPLOAD_AFTER_GATE);
            let agreed = tokio::time::Instant::now();
            let facts = DocumentFacts {
                format: 1,
                id,
                kind: metadata.kind,
                uploaded_at: metadata.uploaded_at,
                stored_bytes,
            };
            let facts_json = serde_json::to_vec(&facts).map_err(|e| Error::internal("facts", e))?;
            // What the gate agreed to (an idempotency claim) holds only so long:
            // past the deadline the document must not become visible.
            let left = COMMIT_DEADLINE.saturating_sub(agreed.elapsed());
            tokio::time::timeout(
                left,
                self.store.put_new_bytes(
                    &ObjectName::doc_meta(&tenant.id, &id),
                    Bytes::from(facts_json),
                ),
            )
            .await
            .map_err(|_| {
                Error::unavailable(
                    "storage_unavailable",
                    "the object store did not take the upload in time; retry",
                )
            })??;
            failpoints::crash_point(failpoints::UPLOAD_AFTER_FACTS);
            Ok::<(), Error>(())
        };
        if let Err(e) = finish.await {
            self.remove_objects(&tenant.id, &id).await;
            return Err(e);
        }
        self.metrics.uploads.inc();
        self.metrics.upload_bytes.inc_by(metadata.size);
        Ok(Stored {
            id,
            metadata,
            terms: Arc::new(terms),
        })
    }

    /// Best-effort removal of an unfinished upload's objects (every version), facts
    /// first so it disappears at once.
    pub async fn remove_objects(&self, tenant: &TenantId, id: &DocumentId) {
        for name in document_objects(tenant, id) {
            if let Err(e) = self.store.delete_all_versions(&name).await {
                tracing::warn!(object = %name, error = %e, "could not remove an object of an unfinished document");
            }
        }
    }

    /// Opens a document's key record: 404 unless it is visible in this tenant (its
    /// facts object exists and it has no tombstone).
    pub async fn open(&self, tenant: &TenantRecord, id: &DocumentId) -> Result<Opened, Error> {
        let facts = ObjectName::doc_meta(&tenant.id, id);
        let tombstone = ObjectName::tombstone(&tenant.id, id);
        let (facts_bytes, tombstone) =
            tokio::join!(self.store.get_bytes(&facts), self.store.head(&tombstone));
        if tombstone?.is_some() {
            return Err(Error::document_not_found());
        }
        let facts_bytes = facts_bytes?.ok_or_else(Error::document_not_found)?;
        let facts: DocumentFacts = serde_json::from_slice(&facts_bytes)
            .map_err(|e| Error::internal("document facts", e))?;
        let record_bytes = self
            .store
            .get_bytes(&ObjectName::doc_key(&tenant.id, id))
            .await?
            .ok_or_else(Error::document_not_found)?;
        let record = KeyRecord::parse(&record_bytes)?;
        if record.tenant != tenant.id || record.document != *id {
            return Err(vault_crypto::CryptoError::ContextMismatch("document").into());
        }
        let branch = self
            .keys
            .branch_key(&crate::tenants::key_spec(tenant), &record.key_ref)
            .await?;
        let dek = record.unwrap_dek(&branch)?;
        let (dek, metadata) = if record_bytes.len() <= INLINE_METADATA_BYTES {
            let metadata = open_metadata(&record, &dek)?;
            (dek, metadata)
        } else {
            // A remittance's metadata runs to megabytes: decrypting and parsing it is
            // CPU work for the blocking pool.
            tokio::task::spawn_blocking(move || open_metadata(&record, &dek).map(|m| (dek, m)))
                .await
                .map_err(|e| Error::internal("sealed metadata task", e))??
        };
        Ok(Opened {
            dek,
            metadata,
            facts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inline, across the hand-off to the thread, and on it: the same digest
    /// as hashing the body at once.
    #[tokio::test]
    async fn a_body_hash_is_the_same_inline_and_on_its_thread() {
        for total in [
            0usize,
            1000,
            HASH_INLINE as usize,
            3 * HASH_INLINE as usize + 7,
        ] {
            let body: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
            let mut hash = BodyHash::default();
            for chunk in body.chunks(65_536 + 3) {
                hash.update(&Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            let threaded = matches!(hash, BodyHash::Threaded(..));
            assert_eq!(threaded, total as u64 > HASH_INLINE, "{total}");
            let want: [u8; 32] = Sha256::digest(&body).into();
            assert_eq!(hash.finish().await.unwrap(), want, "{total}");
        }
    }
}

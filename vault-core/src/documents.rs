//! Documents as the vault stores them: the encrypted metadata block, the public
//! facts object, the tombstone of a deleted document, and the upload / read /
//! delete operations over storage and keys. HTTP concerns stay in
//! `routes/documents.rs`.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vault_crypto::envelope::{self, BodyHeader, KeyRecord, StreamError};
use vault_crypto::{DocumentId, Key256, TenantId};

use crate::error::Error;
use crate::extraction::{self, Capture, Extraction};
use crate::search::SearchTerms;
use crate::storage::{ByteStream, ObjectName, StorageError};
use crate::tenants::TenantRecord;
use crate::vault::Vault;

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

/// Whether `id` is a visible, deleted or unknown document of `tenant`.
pub async fn presence(
    state: &Vault,
    tenant: &TenantId,
    id: &DocumentId,
) -> Result<Presence, StorageError> {
    let facts = ObjectName::doc_meta(tenant, id);
    let tombstone = ObjectName::tombstone(tenant, id);
    let (facts, tombstone) = tokio::join!(state.store.head(&facts), state.store.head(&tombstone));
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
pub async fn delete(state: &Vault, tenant: &TenantId, id: &DocumentId) -> Result<(), Error> {
    let tombstone = Tombstone {
        format: TOMBSTONE_FORMAT,
        document: *id,
        deleted_at: OffsetDateTime::now_utc(),
    };
    let record = serde_json::to_vec(&tombstone).map_err(|e| Error::internal("tombstone", e))?;
    match state
        .store
        .put_new_bytes(&ObjectName::tombstone(tenant, id), Bytes::from(record))
        .await
    {
        Ok(()) | Err(StorageError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    for name in document_objects(tenant, id) {
        state.store.delete_all_versions(&name).await?;
    }
    Ok(())
}

/// A document's objects, facts first (removing it makes the document disappear).
fn document_objects(tenant: &TenantId, id: &DocumentId) -> [ObjectName; 3] {
    [
        ObjectName::doc_meta(tenant, id),
        ObjectName::doc_key(tenant, id),
        ObjectName::doc_body(tenant, id),
    ]
}

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
    sha256: Sha256,
    size: u64,
    capture: Capture,
}

/// Stores a document: the body streamed through the encryptor, then the key record,
/// then the public facts. Visible only once the last write is durable.
pub async fn store<S, E>(
    state: &Vault,
    tenant: &TenantRecord,
    request: UploadRequest,
    body: S,
) -> Result<Stored, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let spec = crate::tenants::key_spec(tenant);
    let (key_ref, branch_key) = state.keys.branch_key_for_upload(&spec).await?;
    let id = DocumentId::random();
    let dek = Key256::random();
    let (header_bytes, encryptor) =
        envelope::begin_body(&dek, &tenant.id, id, state.config.segment_size)?;
    let (header, _) = BodyHeader::parse(&header_bytes)?;

    let extract_limit = state.config.search.max_extract_bytes;
    let tap = Arc::new(Mutex::new(Tap {
        sha256: Sha256::new(),
        size: 0,
        capture: Capture::start(
            request.extraction == Extraction::Auto && request.kind != DocumentKind::Scan,
        ),
    }));
    let limit = state.config.max_upload_bytes;
    let tapped = {
        let tap = Arc::clone(&tap);
        let content_type = request.content_type.clone();
        body.map(move |chunk| {
            let chunk = chunk.map_err(|e| StorageError::SourceFailed(e.to_string()))?;
            let mut tap = tap.lock().unwrap_or_else(PoisonError::into_inner);
            tap.size += chunk.len() as u64;
            if tap.size > limit {
                return Err(StorageError::TooLarge(limit));
            }
            tap.sha256.update(&chunk);
            tap.capture.feed(&chunk, &content_type, extract_limit);
            Ok(chunk)
        })
    };
    let sealed: ByteStream = Box::pin(
        envelope::encrypt_stream(header_bytes, encryptor, tapped).map_err(|e| match e {
            StreamError::Source(source) => source,
            StreamError::Crypto(crypto) => StorageError::Backend(crypto.to_string()),
        }),
    );

    let body_name = ObjectName::doc_body(&tenant.id, &id);
    let stored_bytes = state.store.put_new(&body_name, sealed).await?;
    let (size, sha256, capture) = {
        let mut tap = tap.lock().unwrap_or_else(PoisonError::into_inner);
        let capture = std::mem::replace(&mut tap.capture, Capture::start(false));
        let sha256 = std::mem::take(&mut tap.sha256);
        (tap.size, hex::encode(sha256.finalize()), capture)
    };
    let captured = capture.finish(&request.content_type);
    // Extraction, merging, the metadata JSON, its encryption and the search terms
    // are CPU work that grows with the document: off the async workers, and only
    // `search.max_concurrent_extractions` extracting documents at once.
    let permit = match captured {
        extraction::Captured::Document(..) => match state.search.extraction_permit().await {
            Ok(permit) => Some(permit),
            Err(e) => {
                remove_objects(state, &tenant.id, &id).await;
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
    let limits = state.config.search.field_limits();
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
            remove_objects(state, &tenant.id, &id).await;
            return Err(e);
        }
    };
    let finish = async {
        state
            .store
            .put_new_bytes(&ObjectName::doc_key(&tenant.id, &id), Bytes::from(record))
            .await?;
        let facts = DocumentFacts {
            format: 1,
            id,
            kind: metadata.kind,
            uploaded_at: metadata.uploaded_at,
            stored_bytes,
        };
        let facts_json = serde_json::to_vec(&facts).map_err(|e| Error::internal("facts", e))?;
        state
            .store
            .put_new_bytes(
                &ObjectName::doc_meta(&tenant.id, &id),
                Bytes::from(facts_json),
            )
            .await?;
        Ok::<(), Error>(())
    };
    if let Err(e) = finish.await {
        remove_objects(state, &tenant.id, &id).await;
        return Err(e);
    }
    state.metrics.uploads.inc();
    state.metrics.upload_bytes.inc_by(metadata.size);
    Ok(Stored {
        id,
        metadata,
        terms: Arc::new(terms),
    })
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

/// Best-effort removal of an unfinished upload's objects (every version), facts
/// first so it disappears at once.
pub async fn remove_objects(state: &Vault, tenant: &TenantId, id: &DocumentId) {
    for name in document_objects(tenant, id) {
        if let Err(e) = state.store.delete_all_versions(&name).await {
            tracing::warn!(object = %name, error = %e, "could not remove an object of an unfinished document");
        }
    }
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

/// Opens a document's key record: 404 unless it is visible in this tenant (its
/// facts object exists and it has no tombstone).
pub async fn open(state: &Vault, tenant: &TenantRecord, id: &DocumentId) -> Result<Opened, Error> {
    let facts = ObjectName::doc_meta(&tenant.id, id);
    let tombstone = ObjectName::tombstone(&tenant.id, id);
    let (facts_bytes, tombstone) =
        tokio::join!(state.store.get_bytes(&facts), state.store.head(&tombstone));
    if tombstone?.is_some() {
        return Err(Error::document_not_found());
    }
    let facts_bytes = facts_bytes?.ok_or_else(Error::document_not_found)?;
    let facts: DocumentFacts =
        serde_json::from_slice(&facts_bytes).map_err(|e| Error::internal("document facts", e))?;
    let record_bytes = state
        .store
        .get_bytes(&ObjectName::doc_key(&tenant.id, id))
        .await?
        .ok_or_else(Error::document_not_found)?;
    let record = KeyRecord::parse(&record_bytes)?;
    if record.tenant != tenant.id || record.document != *id {
        return Err(vault_crypto::CryptoError::ContextMismatch("document").into());
    }
    let branch = state
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

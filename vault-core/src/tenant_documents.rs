//! A tenant's documents as its users see them: an upload end to end (a retry with
//! the same `Idempotency-Key` answered with the first document, the document
//! stored, then indexed), a download whole or as one byte range, a listing, and
//! a delete under legal holds and retention. The sealed records themselves are
//! [`crate::documents`]'; the index is [`crate::search`]'.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vault_crypto::envelope::{self, BodyHeader, StreamError};
use vault_crypto::{CryptoError, DocumentId};

use crate::documents::{
    DocumentFacts, DocumentKind, Documents, Fields, Opened, Presence, SealedMetadata, SearchTerms,
    UploadRequest,
};
use crate::error::Error;
use crate::key_lifecycle::KeyLifecycle;
use crate::metrics::Metrics;
use crate::search::{indexed_document, SearchService};
use crate::storage::{ObjectName, ObjectStore, StorageError};
use crate::tenants::TenantRecord;

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// FORMAT CONSTANT: version of an idempotency record.
const IDEMPOTENCY_FORMAT: u32 = 1;

/// Uploads, downloads, listings and deletes of tenants' documents. Clones share
/// their services.
#[derive(Clone)]
pub struct TenantDocuments {
    store: Arc<dyn ObjectStore>,
    documents: Documents,
    search: SearchService,
    lifecycle: KeyLifecycle,
    metrics: Arc<Metrics>,
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
        }
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
    ) -> Result<Filed, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let idempotency = idempotency_key
            .map(|key| idempotency_name(tenant, key))
            .transpose()?;
        if let Some(name) = &idempotency {
            if let Some(first) = self.replayed_document(tenant, name).await? {
                // Its answer goes only to the same request (IETF Idempotency-Key
                // draft): the body is read and compared.
                let body_sha256 =
                    hash_body(body, self.documents.settings().max_upload_bytes).await?;
                return Fingerprint::of(&request)
                    .same_or_conflict(first, &body_sha256)
                    .await;
            }
        }
        let fingerprint = Fingerprint::of(&request);
        let stored = self.documents.store(tenant, request, body).await?;
        if let Some(name) = &idempotency {
            let record = serde_json::json!({
                "format": IDEMPOTENCY_FORMAT,
                "document": stored.id.to_string(),
            });
            match self
                .store
                .put_new_bytes(name, Bytes::from(record.to_string()))
                .await
            {
                Ok(()) => {}
                Err(StorageError::AlreadyExists(_)) => {
                    // A concurrent retry won the race: keep its document, drop ours.
                    self.documents.remove_objects(&tenant.id, &stored.id).await;
                    if let Some(first) = self.replayed_document(tenant, name).await? {
                        return fingerprint
                            .same_or_conflict(first, &stored.metadata.sha256)
                            .await;
                    }
                }
                Err(e) => {
                    self.documents.remove_objects(&tenant.id, &stored.id).await;
                    return Err(e.into());
                }
            }
        }
        // The document is durable; the index is derived data. A failure here is
        // logged and counted, and the next reconciliation (start-up or rebuild)
        // adds it.
        let indexed = indexed_document(
            &stored.id,
            stored.metadata.kind,
            stored.metadata.uploaded_at,
        );
        if let Err(e) = self
            .search
            .index_document(tenant, indexed, Arc::clone(&stored.terms))
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

    /// The document an Idempotency-Key was first used for, if the key was seen.
    async fn replayed_document(
        &self,
        tenant: &TenantRecord,
        name: &ObjectName,
    ) -> Result<Option<(DocumentId, SealedMetadata)>, Error> {
        let Some(bytes) = self.store.get_bytes(name).await? else {
            return Ok(None);
        };
        let record: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::internal("idempotency record", e))?;
        let id = record["document"]
            .as_str()
            .and_then(|s| s.parse::<DocumentId>().ok())
            .ok_or_else(|| Error::internal("idempotency record", "no document id"))?;
        match self.documents.open(tenant, &id).await {
            Ok(opened) => Ok(Some((id, opened.metadata))),
            Err(e) if e.is_not_found() => Err(Error::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key belonged to a document that has since been deleted",
            )),
            Err(e) => Err(e),
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
        if let Err(e) = self.search.remove_document(tenant, id).await {
            self.metrics.index_failures.inc();
            tracing::error!(tenant = %tenant.id, document = %id, code = e.code(), "document deleted but still in the index until the next reconciliation");
        }
        tracing::info!(tenant = %tenant.id, document = %id, "document deleted (tombstone written, objects removed)");
        Ok(())
    }

    /// Up to `limit` visible documents matching `filter`, in id order, after
    /// `cursor`.
    pub async fn list(
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
                let tombstone = ObjectName::tombstone(&tenant.id, &id);
                let (bytes, tombstone) = tokio::join!(
                    self.store.get_bytes(&info.name),
                    self.store.head(&tombstone)
                );
                // Deleted: its facts object is a remainder of an interrupted delete.
                if tombstone?.is_some() {
                    continue;
                }
                let Some(bytes) = bytes? else {
                    continue;
                };
                let facts: DocumentFacts = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::internal("document facts", e))?;
                let wanted = filter.kind.is_none_or(|k| k == facts.kind)
                    && filter.uploaded_after.is_none_or(|t| facts.uploaded_at >= t)
                    && filter.uploaded_before.is_none_or(|t| facts.uploaded_at < t);
                if wanted {
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
}

/// Where a tenant's Idempotency-Key is recorded: named by a hash of the tenant
/// and key, so the key (caller text) never appears in an object name.
fn idempotency_name(tenant: &TenantRecord, key: &str) -> Result<ObjectName, Error> {
    check_idempotency_key(key)?;
    let hash = hex::encode(
        Sha256::new()
            .chain_update(tenant.id.as_str())
            .chain_update([0])
            .chain_update(key)
            .finalize(),
    );
    Ok(ObjectName::idempotency(&tenant.id, &hash))
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

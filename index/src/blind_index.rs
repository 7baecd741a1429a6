//! One tenant's blind index: a Tantivy index of document ids, kinds, upload times,
//! blind-token terms and each document's sealed exact tags, nothing else.
//!
//! The index is derived data. Its directory holds a small descriptor
//! (`blind-index.json`) recording the token plan and index key version it was built
//! with; opening it with another plan or key version starts it empty and reports
//! that it needs a rebuild, rather than serving searches that silently miss.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tantivy::collector::DocSetCollector;
use tantivy::query::{AllQuery, BooleanQuery, Occur, TermQuery};
use tantivy::schema::{
    Field as SchemaField, IndexRecordOption, Schema, Value, FAST, INDEXED, STORED, STRING,
};
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, SegmentReader, TantivyDocument,
    Term, TERMINATED,
};

mod transfer;

pub use transfer::IndexExport;

use crate::planner::TokenPlan;
use crate::query::Query;
use crate::tokens::{DocumentTokens, ExactFilter, Exactness, Tokenizer};

/// Name of the descriptor file in an index directory.
const DESCRIPTOR_FILE: &str = "blind-index.json";
/// Tantivy's list of committed segments.
const META_FILE: &str = "meta.json";
/// Tantivy's list of the files it manages (and may remove).
const MANAGED_FILE: &str = ".managed.json";
/// Descriptor format. FORMAT CONSTANT. 2: entries carry sealed exact tags (an
/// index of format 1 is made anew and rebuilt from the documents).
const DESCRIPTOR_FORMAT: u32 = 2;
/// Blocks of a segment's document store a listing keeps decompressed.
const LISTING_STORE_CACHE_BLOCKS: usize = 8;
/// Tantivy writer heap (its minimum); one indexing thread per tenant.
const WRITER_HEAP_BYTES: usize = 15_000_000;

/// Errors of the blind index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Tantivy failed.
    #[error("index engine: {0}")]
    Engine(#[from] tantivy::TantivyError),
    /// The index directory could not be used.
    #[error("index directory: {0}")]
    Io(#[from] std::io::Error),
    /// Making a token failed.
    #[error("token: {0}")]
    Token(#[from] vault_crypto::CryptoError),
    /// A query matches more candidates than the limit.
    #[error("the query matches more than {limit} candidate documents")]
    TooManyCandidates {
        /// The limit.
        limit: usize,
    },
}

/// What the index keeps of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedDocument {
    /// Document id (hex).
    pub id: String,
    /// Kind (`eob`, `claim`, `scan`, `other`).
    pub kind: String,
    /// Upload time, Unix microseconds.
    pub uploaded_at_micros: i64,
}

/// A candidate of a query and whether its index entry answered exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The document.
    pub document: IndexedDocument,
    /// [`Exactness::Matches`] or [`Exactness::Unknown`] (the document itself must
    /// be checked); entries that do not match are left out.
    pub exactness: Exactness,
}

/// Which entries a listing keeps ([`BlindIndex::list`]): facts the index holds
/// in clear, never field values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter<'a> {
    /// Of this kind.
    pub kind: Option<&'a str>,
    /// Uploaded at or after this time (Unix microseconds).
    pub uploaded_from_micros: Option<i64>,
    /// Uploaded before this time (Unix microseconds).
    pub uploaded_before_micros: Option<i64>,
}

impl ListFilter<'_> {
    fn keeps_time(&self, micros: i64) -> bool {
        self.uploaded_from_micros.is_none_or(|t| micros >= t)
            && self.uploaded_before_micros.is_none_or(|t| micros < t)
    }
}

/// The descriptor stored beside the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Descriptor {
    format: u32,
    key_version: u32,
    plan: TokenPlan,
}

#[derive(Clone, Copy)]
struct SchemaFields {
    id: SchemaField,
    kind: SchemaField,
    uploaded_at: SchemaField,
    token: SchemaField,
    sealed_exact: SchemaField,
}

fn schema() -> (Schema, SchemaFields) {
    let mut builder = Schema::builder();
    let fields = SchemaFields {
        id: builder.add_text_field("id", STRING | STORED),
        kind: builder.add_text_field("kind", STRING | STORED),
        uploaded_at: builder.add_i64_field("uploaded_at", INDEXED | STORED | FAST),
        token: builder.add_text_field("token", STRING),
        sealed_exact: builder.add_bytes_field("sealed_exact", STORED),
    };
    (builder.build(), fields)
}

/// One tenant's open index.
pub struct BlindIndex {
    dir: PathBuf,
    fields: SchemaFields,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    pending: AtomicU64,
    /// Changes ever made through this handle (adds, removes, clears).
    changes: AtomicU64,
    /// The change-feed position recorded with the last commit.
    committed_followed_to: Mutex<Option<u64>>,
}

/// What a commit records beside the index (Tantivy's commit payload, in
/// `meta.json`): how far the tenant's change feed had been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct CommitPayload {
    /// FORMAT CONSTANT: 1.
    format: u32,
    followed_to: u64,
}

/// Format of [`CommitPayload`]. FORMAT CONSTANT.
const COMMIT_PAYLOAD_FORMAT: u32 = 1;

fn followed_to_of(index: &Index) -> Option<u64> {
    let payload = index.load_metas().ok()?.payload?;
    let payload: CommitPayload = serde_json::from_str(&payload).ok()?;
    (payload.format == COMMIT_PAYLOAD_FORMAT).then_some(payload.followed_to)
}

impl std::fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlindIndex")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl BlindIndex {
    /// Opens the index in `dir` for this tokenizer's plan and key version, creating
    /// it when absent. Returns whether it was (re)created and so must be rebuilt
    /// from the stored documents.
    pub fn open(dir: &Path, tokenizer: &Tokenizer) -> Result<(BlindIndex, bool), IndexError> {
        let wanted = Descriptor {
            format: DESCRIPTOR_FORMAT,
            key_version: tokenizer.key_version(),
            plan: tokenizer.plan().clone(),
        };
        let descriptor_path = dir.join(DESCRIPTOR_FILE);
        let current: Option<Descriptor> = std::fs::read(&descriptor_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let (schema, fields) = schema();
        // An index is kept only when built with this plan and key version and
        // this schema; it is opened once and that handle is the one used.
        let existing = if current.as_ref() == Some(&wanted) {
            Index::open_in_dir(dir)
                .ok()
                .filter(|index| index.schema() == schema)
        } else {
            None
        };
        // An existing index whose files do not all open (a copy cut short) is
        // made anew as well.
        let opened = existing.and_then(|index| {
            let writer = index.writer_with_num_threads(1, WRITER_HEAP_BYTES).ok()?;
            let reader: IndexReader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()
                .ok()?;
            Some((writer, reader))
        });
        let reusable = opened.is_some();
        let followed_to = opened
            .as_ref()
            .and_then(|(writer, _)| followed_to_of(writer.index()));
        let (writer, reader) = match opened {
            Some(opened) => opened,
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)?;
                }
                std::fs::create_dir_all(dir)?;
                let index = Index::create_in_dir(dir, schema)?;
                write_descriptor(&descriptor_path, &wanted)?;
                let writer = index.writer_with_num_threads(1, WRITER_HEAP_BYTES)?;
                let reader = index
                    .reader_builder()
                    .reload_policy(ReloadPolicy::Manual)
                    .try_into()?;
                (writer, reader)
            }
        };
        Ok((
            BlindIndex {
                dir: dir.to_owned(),
                fields,
                writer: Mutex::new(writer),
                reader,
                pending: AtomicU64::new(0),
                changes: AtomicU64::new(0),
                committed_followed_to: Mutex::new(followed_to),
            },
            !reusable,
        ))
    }

    /// Adds (or replaces) a document with its index terms and sealed exact tags.
    /// Visible after the next [`commit`](Self::commit).
    pub fn add(
        &self,
        document: &IndexedDocument,
        tokens: &DocumentTokens,
    ) -> Result<(), IndexError> {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.fields.id, &document.id);
        doc.add_text(self.fields.kind, &document.kind);
        doc.add_i64(self.fields.uploaded_at, document.uploaded_at_micros);
        for term in &tokens.terms {
            doc.add_text(self.fields.token, term);
        }
        if let Some(sealed) = &tokens.sealed_exact {
            doc.add_bytes(self.fields.sealed_exact, sealed);
        }
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer.delete_term(Term::from_field_text(self.fields.id, &document.id));
        writer.add_document(doc)?;
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Removes a document. Visible after the next [`commit`](Self::commit).
    pub fn remove(&self, id: &str) {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer.delete_term(Term::from_field_text(self.fields.id, id));
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// Removes every document (before a rebuild).
    pub fn clear(&self) -> Result<(), IndexError> {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer.delete_all_documents()?;
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Changes made since the index was opened (a snapshot is worth writing
    /// when this moved).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Changes waiting for a commit.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Makes every change so far durable and searchable, recording with them how
    /// far the tenant's change feed had been applied (`None`: not known, as while
    /// the index is rebuilt). Does nothing when there is neither a change nor a
    /// new position. Blocking: call it off the async runtime.
    pub fn commit(&self, followed_to: Option<u64>) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut committed = self
            .committed_followed_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = self.pending.load(Ordering::SeqCst);
        if before == 0 && *committed == followed_to {
            return Ok(());
        }
        let mut prepared = writer.prepare_commit()?;
        if let Some(followed_to) = followed_to {
            let payload = CommitPayload {
                format: COMMIT_PAYLOAD_FORMAT,
                followed_to,
            };
            prepared.set_payload(&serde_json::to_string(&payload).map_err(std::io::Error::other)?);
        }
        prepared.commit()?;
        *committed = followed_to;
        self.reader.reload()?;
        self.pending.fetch_sub(before, Ordering::SeqCst);
        Ok(())
    }

    /// The change-feed position the last commit recorded: every change in the
    /// tenant's log before it is in the committed index.
    pub fn committed_followed_to(&self) -> Option<u64> {
        *self
            .committed_followed_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The committed index as files and one stream of their bytes: its
    /// descriptor, `meta.json` and every file of its searchable segments,
    /// enough for [`import`] to make the same index elsewhere. Commit first for
    /// pending changes to be in it. Blocking: call it off the async runtime.
    ///
    /// The segment list is read under Tantivy's meta lock (as its own readers
    /// do), and the segment files are opened while the loaded metas are alive:
    /// its garbage collection keeps every file a live segment meta names, so a
    /// merge finishing meanwhile cannot remove them, and once open they stay
    /// readable whatever happens to their names.
    ///
    /// [`import`]: BlindIndex::import
    pub fn export(&self) -> Result<IndexExport, IndexError> {
        let metas = {
            use tantivy::Directory as _;
            let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let index = writer.index();
            let _meta_lock = index
                .directory()
                .acquire_lock(&tantivy::directory::META_LOCK)
                .map_err(|e| IndexError::Io(std::io::Error::other(e.to_string())))?;
            index.load_metas()?
        };
        let mut export = IndexExport::new();
        export.push_bytes(
            DESCRIPTOR_FILE,
            std::fs::read(self.dir.join(DESCRIPTOR_FILE))?,
        );
        let mut meta_json = serde_json::to_vec_pretty(&metas)
            .map_err(|e| IndexError::Io(std::io::Error::other(e)))?;
        meta_json.push(b'\n');
        export.push_bytes(META_FILE, meta_json);
        let mut names: Vec<String> = Vec::new();
        for segment in &metas.segments {
            for component in tantivy::index::SegmentComponent::iterator() {
                let absent = match component {
                    tantivy::index::SegmentComponent::TempStore => true,
                    tantivy::index::SegmentComponent::Delete => !segment.has_deletes(),
                    _ => false,
                };
                if !absent {
                    if let Some(name) = segment.relative_path(*component).to_str() {
                        names.push(name.to_owned());
                    }
                }
            }
        }
        names.sort();
        for name in names {
            export.push_file(&name, std::fs::File::open(self.dir.join(&name))?)?;
        }
        Ok(export)
    }

    /// Makes `dir` the index an [`export`](Self::export) described: its files
    /// (name, length) and their bytes one after another in `body`. Names must be
    /// plain file names. Nothing is put in place unless every file was written
    /// and `body` ended exactly after the last one: see [`transfer::import`].
    pub fn import(
        dir: &Path,
        files: &[(String, u64)],
        body: &mut dyn std::io::Read,
    ) -> Result<(), IndexError> {
        transfer::import(dir, files, body)
    }

    /// The directory the index lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of searchable documents.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether no document is searchable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a document is searchable (committed).
    pub fn contains(&self, id: &str) -> bool {
        self.reader
            .searcher()
            .doc_freq(&Term::from_field_text(self.fields.id, id))
            .is_ok_and(|n| n > 0)
    }

    /// Every searchable document id.
    pub fn ids(&self) -> Result<HashSet<String>, IndexError> {
        let searcher = self.reader.searcher();
        let mut ids = HashSet::new();
        for address in searcher.search(&AllQuery, &DocSetCollector)? {
            let doc: TantivyDocument = searcher.doc(address)?;
            ids.insert(self.document(&doc).id);
        }
        Ok(ids)
    }

    /// The candidates of a query: every document whose tokens satisfy it (a
    /// superset of the exact answer, because tokens are truncated) less those
    /// whose sealed exact tags rule them out. At most `limit` token candidates.
    pub fn candidates(
        &self,
        query: &Query,
        tokenizer: &Tokenizer,
        limit: usize,
    ) -> Result<Vec<Candidate>, IndexError> {
        let filter = tokenizer.exact_filter(query)?;
        let compiled = self.compile(query, &filter)?;
        let searcher = self.reader.searcher();
        let addresses = match compiled {
            Some(q) => searcher.search(q.as_ref(), &DocSetCollector)?,
            None => searcher.search(&AllQuery, &DocSetCollector)?,
        };
        if addresses.len() > limit {
            return Err(IndexError::TooManyCandidates { limit });
        }
        let mut out = Vec::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            let document = self.document(&doc);
            let sealed = doc
                .get_first(self.fields.sealed_exact)
                .and_then(|v| v.as_bytes());
            match filter.check(&document.id, sealed) {
                Exactness::NoMatch => {}
                exactness => out.push(Candidate {
                    document,
                    exactness,
                }),
            }
        }
        Ok(out)
    }

    /// Up to `limit` committed entries after the id `after`, in id order, that
    /// `filter` keeps. The cost follows the page, not the index: each segment's
    /// id terms are walked in order from `after` until `limit` entries are kept,
    /// or, for a kind too rare for that walk to be short, that kind's entries are
    /// read instead. Blocking: call it off the async runtime.
    pub fn list(
        &self,
        after: Option<&str>,
        filter: &ListFilter<'_>,
        limit: usize,
    ) -> Result<Vec<IndexedDocument>, IndexError> {
        let searcher = self.reader.searcher();
        let mut found = Vec::new();
        for segment in searcher.segment_readers() {
            found.extend(self.list_segment(segment, after, filter, limit)?);
        }
        // An id lives in one segment (an add deletes the id's older entry first);
        // each segment gave its first `limit`, so the first `limit` of all are here.
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        found.truncate(limit);
        Ok(found)
    }

    fn list_segment(
        &self,
        segment: &SegmentReader,
        after: Option<&str>,
        filter: &ListFilter<'_>,
        limit: usize,
    ) -> Result<Vec<IndexedDocument>, IndexError> {
        let store = segment.get_store_reader(LISTING_STORE_CACHE_BLOCKS)?;
        let uploaded = segment.fast_fields().i64("uploaded_at")?;
        let keep = |doc: DocId| -> Result<Option<IndexedDocument>, IndexError> {
            if segment.is_deleted(doc)
                || !uploaded
                    .first(doc)
                    .is_some_and(|micros| filter.keeps_time(micros))
            {
                return Ok(None);
            }
            let document = self.document(&store.get::<TantivyDocument>(doc)?);
            let kept = filter.kind.is_none_or(|kind| document.kind == kind)
                && after.is_none_or(|after| document.id.as_str() > after);
            Ok(kept.then_some(document))
        };
        let mut out = Vec::new();
        if let Some(kind) = filter.kind {
            let kinds = segment.inverted_index(self.fields.kind)?;
            let term = Term::from_field_text(self.fields.kind, kind);
            let of_kind = u64::from(kinds.doc_freq(&term)?);
            // A walk in id order keeps one entry in docs/of_kind: about
            // limit * docs / of_kind entries read for a page, against of_kind
            // for reading the kind's entries. The cheaper one.
            if of_kind * of_kind < limit as u64 * u64::from(segment.max_doc()) {
                if let Some(mut postings) = kinds.read_postings(&term, IndexRecordOption::Basic)? {
                    let mut doc = postings.doc();
                    while doc != TERMINATED {
                        out.extend(keep(doc)?);
                        doc = postings.advance();
                    }
                }
                out.sort_by(|a, b| a.id.cmp(&b.id));
                out.truncate(limit);
                return Ok(out);
            }
        }
        let ids = segment.inverted_index(self.fields.id)?;
        let mut terms = match after {
            Some(after) => ids.terms().range().gt(after.as_bytes()).into_stream()?,
            None => ids.terms().stream()?,
        };
        while out.len() < limit && terms.advance() {
            let mut postings =
                ids.read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
            let mut doc = postings.doc();
            while doc != TERMINATED {
                out.extend(keep(doc)?);
                doc = postings.advance();
            }
        }
        Ok(out)
    }

    /// The token query of a query; `None` where it cannot narrow the candidates.
    /// A `NOT` cannot: a truncated token shared with the excluded value says nothing
    /// about whether the document holds it, so it is left to the exact filter.
    fn compile<'q>(
        &self,
        query: &'q Query,
        filter: &ExactFilter<'q>,
    ) -> Result<Option<Box<dyn tantivy::query::Query>>, IndexError> {
        Ok(match query {
            Query::Term(field, value) => {
                let term =
                    Term::from_field_text(self.fields.token, filter.index_term(*field, value)?);
                Some(Box::new(TermQuery::new(term, IndexRecordOption::Basic)))
            }
            Query::Not(_) => None,
            Query::And(children) => {
                let mut clauses = Vec::new();
                for child in children {
                    if let Some(q) = self.compile(child, filter)? {
                        clauses.push((Occur::Must, q));
                    }
                }
                (!clauses.is_empty())
                    .then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn tantivy::query::Query>)
            }
            Query::Or(children) => {
                let mut clauses = Vec::new();
                for child in children {
                    match self.compile(child, filter)? {
                        Some(q) => clauses.push((Occur::Should, q)),
                        None => return Ok(None),
                    }
                }
                Some(Box::new(BooleanQuery::new(clauses)))
            }
        })
    }

    fn document(&self, doc: &TantivyDocument) -> IndexedDocument {
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        IndexedDocument {
            id: text(self.fields.id),
            kind: text(self.fields.kind),
            uploaded_at_micros: doc
                .get_first(self.fields.uploaded_at)
                .and_then(|v| v.as_i64())
                .unwrap_or_default(),
        }
    }
}

fn write_descriptor(path: &Path, descriptor: &Descriptor) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(descriptor).map_err(std::io::Error::other)?;
    vault_keys::private_file::write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{search_terms, Field, FieldsBuilder};
    use std::collections::BTreeMap;
    use vault_crypto::blind::IndexRootKey;
    use vault_crypto::Key256;

    fn tokenizer(version: u32, documents: u64) -> Tokenizer {
        Tokenizer::new(
            &IndexRootKey::new(Key256::from_bytes([9; 32]), version),
            TokenPlan::new(documents, &BTreeMap::new()),
        )
    }

    fn add(index: &BlindIndex, tokenizer: &Tokenizer, id: &str, pairs: &[(Field, &str)]) {
        let mut b = FieldsBuilder::new();
        for (f, v) in pairs {
            b.add(*f, v);
        }
        let tokens = tokenizer
            .document_tokens(id, &search_terms(&b.build()))
            .unwrap();
        let doc = IndexedDocument {
            id: id.into(),
            kind: "eob".into(),
            uploaded_at_micros: 1,
        };
        index.add(&doc, &tokens).unwrap();
    }

    fn ids(index: &BlindIndex, tokenizer: &Tokenizer, q: &str) -> Vec<String> {
        let mut ids: Vec<String> = index
            .candidates(&Query::parse(q).unwrap(), tokenizer, 100)
            .unwrap()
            .into_iter()
            .map(|c| c.document.id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn listings_page_in_id_order_with_filters_across_segments() {
        let tokenizer = tokenizer(1, 1_000);
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = BlindIndex::open(dir.path(), &tokenizer).unwrap();
        // (id, kind, uploaded at), the model the listings are checked against.
        let mut model: Vec<(String, &str, i64)> = Vec::new();
        for n in 0..60_i64 {
            // Added out of id order, so segments do not follow ids.
            let id = format!("d{:02}", (n * 37) % 60);
            let kind = if n % 10 == 3 { "scan" } else { "eob" };
            let tokens = tokenizer
                .document_tokens(&id, &search_terms(&FieldsBuilder::new().build()))
                .unwrap();
            let doc = IndexedDocument {
                id: id.clone(),
                kind: kind.into(),
                uploaded_at_micros: 1_000 + n,
            };
            index.add(&doc, &tokens).unwrap();
            model.push((id, kind, 1_000 + n));
            if n % 15 == 14 {
                index.commit(None).unwrap();
            }
        }
        for gone in ["d07", "d31"] {
            index.remove(gone);
            model.retain(|(id, _, _)| id != gone);
        }
        index.commit(None).unwrap();
        model.sort();
        assert!(index.reader.searcher().segment_readers().len() > 1);

        let filters = [
            ListFilter::default(),
            ListFilter {
                kind: Some("scan"),
                ..Default::default()
            },
            ListFilter {
                kind: Some("eob"),
                ..Default::default()
            },
            ListFilter {
                uploaded_from_micros: Some(1_020),
                uploaded_before_micros: Some(1_031),
                ..Default::default()
            },
            ListFilter {
                kind: Some("scan"),
                uploaded_from_micros: Some(1_020),
                uploaded_before_micros: None,
            },
            ListFilter {
                kind: Some("claim"),
                ..Default::default()
            },
        ];
        for filter in &filters {
            let expected: Vec<String> = model
                .iter()
                .filter(|(_, kind, at)| {
                    filter.kind.is_none_or(|k| k == *kind) && filter.keeps_time(*at)
                })
                .map(|(id, _, _)| id.clone())
                .collect();
            for limit in [1, 3, 10, 100] {
                let mut listed = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = index.list(after.as_deref(), filter, limit).unwrap();
                    assert!(page.len() <= limit);
                    listed.extend(page.iter().map(|d| d.id.clone()));
                    if page.len() < limit {
                        break;
                    }
                    after = page.last().map(|d| d.id.clone());
                }
                assert_eq!(listed, expected, "{filter:?}, limit {limit}");
            }
        }
        // Entries come back with their kind and time.
        let first = index.list(None, &ListFilter::default(), 1).unwrap();
        let (id, kind, at) = &model[0];
        assert_eq!(
            first,
            vec![IndexedDocument {
                id: id.clone(),
                kind: (*kind).into(),
                uploaded_at_micros: *at
            }]
        );
    }

    #[test]
    fn an_exported_index_imported_elsewhere_opens_as_the_same_index() {
        let tokenizer = tokenizer(1, 1_000);
        let here = tempfile::tempdir().unwrap();
        let (index, _) = BlindIndex::open(here.path(), &tokenizer).unwrap();
        for n in 0..40 {
            let name = format!("Zyxwer{}, Anna", n % 4);
            add(
                &index,
                &tokenizer,
                &format!("d{n}"),
                &[(Field::PatientName, &name)],
            );
            // Several commits: several segments.
            if n % 10 == 9 {
                index.commit(None).unwrap();
            }
        }
        index.remove("d3");
        index.commit(None).unwrap();
        let export = index.export().unwrap();
        let files = export.files().to_vec();
        assert!(files.iter().any(|(name, _)| name == "meta.json"));

        let there = tempfile::tempdir().unwrap();
        let target = there.path().join("index");
        BlindIndex::import(&target, &files, &mut export.into_reader()).unwrap();
        let (copy, created) = BlindIndex::open(&target, &tokenizer).unwrap();
        assert!(!created, "the imported index was not taken as built");
        assert_eq!(copy.ids().unwrap(), index.ids().unwrap());
        assert_eq!(copy.len(), 39);
        let q = "patient_last_name:zyxwer1";
        assert_eq!(ids(&copy, &tokenizer, q), ids(&index, &tokenizer, q));
        // It goes on as an index of its own.
        add(
            &copy,
            &tokenizer,
            "new",
            &[(Field::PatientName, "Zyxwer1, Bo")],
        );
        copy.commit(None).unwrap();
        assert!(ids(&copy, &tokenizer, q).contains(&"new".to_owned()));
        // Under another key version it is not taken.
        drop(copy);
        let (_, created) = BlindIndex::open(&target, &super::tests::tokenizer(2, 1_000)).unwrap();
        assert!(created);
    }

    #[test]
    fn an_import_refuses_file_names_that_leave_the_directory() {
        let there = tempfile::tempdir().unwrap();
        let descriptor = (DESCRIPTOR_FILE.to_owned(), 2);
        for name in ["../escape", "a/b", "", ".managed.json", "/etc/x"] {
            let files = vec![descriptor.clone(), (name.to_owned(), 1)];
            assert!(
                BlindIndex::import(&there.path().join("index"), &files, &mut &b"{}x"[..]).is_err(),
                "{name:?} was written"
            );
        }
        assert!(!there.path().join("escape").exists());
        // Without its descriptor nothing is put in place, and no staging
        // directory stays behind.
        let files = vec![("meta.json".to_owned(), 2)];
        assert!(BlindIndex::import(&there.path().join("index"), &files, &mut &b"{}"[..]).is_err());
        assert_eq!(std::fs::read_dir(there.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_import_whose_body_is_short_long_or_failing_puts_nothing_in_place() {
        let tokenizer = tokenizer(1, 1_000);
        let here = tempfile::tempdir().unwrap();
        let (index, _) = BlindIndex::open(here.path(), &tokenizer).unwrap();
        add(
            &index,
            &tokenizer,
            "a",
            &[(Field::PatientName, "Zyxwer, Anna")],
        );
        index.commit(None).unwrap();
        let export = index.export().unwrap();
        let files = export.files().to_vec();
        let body: Vec<u8> = export
            .read_all()
            .unwrap()
            .into_iter()
            .flat_map(|(_, bytes)| bytes)
            .collect();
        let there = tempfile::tempdir().unwrap();
        let target = there.path().join("index");
        // The directory in place before a failed import stays as it was.
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"k").unwrap();
        let longer: Vec<u8> = body.iter().copied().chain([0]).collect();
        struct Failing<'a>(&'a [u8]);
        impl std::io::Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len());
                if n == 0 {
                    return Err(std::io::Error::other("authentication failed"));
                }
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let attempts: [&mut dyn std::io::Read; 3] = [
            &mut &body[..body.len() - 1],
            &mut &longer[..],
            &mut Failing(&body),
        ];
        for body in attempts {
            assert!(BlindIndex::import(&target, &files, body).is_err());
            let left: Vec<_> = std::fs::read_dir(there.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, ["index"], "a staging directory stayed behind");
            assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"k");
        }
        BlindIndex::import(&target, &files, &mut &body[..]).unwrap();
        assert!(!target.join("keep").exists());
        let (copy, created) = BlindIndex::open(&target, &tokenizer).unwrap();
        assert!(!created);
        assert_eq!(copy.len(), 1);
    }

    #[test]
    fn an_index_whose_files_are_missing_is_made_anew_not_refused() {
        let tokenizer = tokenizer(1, 1_000);
        let here = tempfile::tempdir().unwrap();
        let (index, _) = BlindIndex::open(here.path(), &tokenizer).unwrap();
        add(
            &index,
            &tokenizer,
            "a",
            &[(Field::PatientName, "Zyxwer, Anna")],
        );
        index.commit(None).unwrap();
        let export = index.export().unwrap();
        let files = export.files().to_vec();
        drop(index);
        // A copy that lost a segment file (made by hand: import never leaves one).
        let there = tempfile::tempdir().unwrap();
        let target = there.path().join("index");
        BlindIndex::import(&target, &files, &mut export.into_reader()).unwrap();
        let segment_file = files
            .iter()
            .find(|(name, _)| name.ends_with(".idx"))
            .map(|(name, _)| name.clone())
            .unwrap();
        std::fs::remove_file(target.join(segment_file)).unwrap();
        let (copy, created) = BlindIndex::open(&target, &tokenizer).unwrap();
        assert!(created, "a broken index was kept");
        assert!(copy.is_empty());
    }

    #[test]
    fn candidates_cover_the_exact_answer_and_the_directory_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        // 256 bits per token: no coincidences, so candidates are exact here.
        let tokenizer = Tokenizer::new(
            &IndexRootKey::new(Key256::from_bytes([9; 32]), 1),
            TokenPlan::new(
                1_000,
                &Field::ALL
                    .iter()
                    .map(|f| (f.name().to_owned(), 64))
                    .collect(),
            ),
        );
        let (index, fresh) = BlindIndex::open(dir.path(), &tokenizer).unwrap();
        assert!(fresh);
        add(
            &index,
            &tokenizer,
            "a",
            &[
                (Field::PatientName, "Zyxwer, Quentin"),
                (Field::ClaimStatus, "1"),
            ],
        );
        add(
            &index,
            &tokenizer,
            "b",
            &[
                (Field::PatientName, "Zyxwer, Anna"),
                (Field::ClaimStatus, "4"),
            ],
        );
        add(&index, &tokenizer, "c", &[(Field::MemberId, "MBR99887766")]);
        assert_eq!(index.len(), 0, "nothing visible before a commit");
        index.commit(None).unwrap();
        assert_eq!(
            ids(&index, &tokenizer, "patient_last_name:zyxwer"),
            ["a", "b"]
        );
        assert_eq!(
            ids(
                &index,
                &tokenizer,
                "patient_last_name:zyxwer AND claim_status:4"
            ),
            ["b"]
        );
        assert_eq!(
            ids(
                &index,
                &tokenizer,
                "member_id:mbr-99887766 OR claim_status:1"
            ),
            ["a", "c"]
        );
        // NOT narrows nothing at the token stage; the sealed exact tags apply it.
        assert_eq!(ids(&index, &tokenizer, "NOT claim_status:1"), ["b", "c"]);
        // The change-feed position is kept with a commit and read back on opening.
        assert_eq!(index.committed_followed_to(), None);
        index.commit(Some(17)).unwrap();
        assert_eq!(index.committed_followed_to(), Some(17));
        drop(index);
        let (index, created) = BlindIndex::open(dir.path(), &tokenizer).unwrap();
        assert!(!created);
        assert_eq!(index.committed_followed_to(), Some(17));
        index.remove("a");
        index.commit(None).unwrap();
        assert_eq!(ids(&index, &tokenizer, "patient_last_name:zyxwer"), ["b"]);
        assert!(matches!(
            index.candidates(&Query::parse("NOT claim_status:1").unwrap(), &tokenizer, 1),
            Err(IndexError::TooManyCandidates { limit: 1 })
        ));
        drop(index);
        for entry in walk(dir.path()) {
            let bytes = std::fs::read(&entry).unwrap().to_ascii_lowercase();
            for secret in [&b"zyxwer"[..], b"quentin", b"mbr99887766", b"99887766"] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret),
                    "{} holds plaintext",
                    entry.display()
                );
            }
        }
    }

    #[test]
    fn a_changed_plan_or_key_version_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = tokenizer(1, 1_000);
        {
            let (index, fresh) = BlindIndex::open(dir.path(), &first).unwrap();
            assert!(fresh);
            add(&index, &first, "a", &[(Field::MemberId, "M1")]);
            index.commit(None).unwrap();
        }
        {
            let (index, fresh) = BlindIndex::open(dir.path(), &first).unwrap();
            assert!(!fresh);
            assert_eq!(index.ids().unwrap(), HashSet::from(["a".to_owned()]));
        }
        for changed in [tokenizer(2, 1_000), tokenizer(1, 1_000_000)] {
            let (index, fresh) = BlindIndex::open(dir.path(), &changed).unwrap();
            assert!(fresh);
            assert!(index.is_empty());
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}

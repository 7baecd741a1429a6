//! The server's side of search: one blind index per tenant, kept in step with the
//! store, and the exact search over it.
//!
//! A tenant's index (`<data dir>/index/<tenant>-v<index key version>/`) is opened
//! on first use, and for every tenant at start-up, then reconciled with the
//! store: documents missing from it are added (from their decrypted metadata),
//! entries of deleted documents are removed. An index this replica lacks is
//! taken from the latest snapshot in the store and brought up to date from the
//! tenant's log instead ([`snapshots`]). Uploads add their tokens before answering; a background committer
//! makes changes searchable every `search.commit_interval_ms`, and a search commits
//! pending changes first, so an upload is searchable as soon as it is answered.
//!
//! A search turns the query into blind tokens under the tenant's field keys, takes
//! the candidates the index returns (a superset: tokens are truncated), decrypts
//! each candidate's metadata and keeps only the exact matches, so results are
//! never approximate. The query text is never logged.
//!
//! Index key rotation builds the next version's index beside the current one:
//! while a backfill fills it from the store, uploads and deletes go to both and
//! searches use the current one (complete and exact); when the backfill is done
//! the tenant record moves to the new version and the indexes are swapped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch, OnceCell};
use vault_crypto::{DocumentId, TenantId};
use vault_index::blind_index::{BlindIndex, Candidate, IndexError, IndexedDocument, ListFilter};
use vault_index::fields::{search_terms, Field, Fields};
use vault_index::planner::TokenPlan;
use vault_index::query::Query;
use vault_index::tokens::{Exactness, Tokenizer};

use crate::config::SearchConfig;
use crate::documents::{DocumentKind, Documents, Presence};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::progress::{NoProgress, Progress};
use crate::storage::ObjectName;
use crate::storage::ObjectStore;
use crate::tenants::TenantRecord;
use crate::tenants::TenantRegistry;
use vault_keys::KeyHierarchy;

mod snapshots;

use snapshots::Started;

/// Candidates whose metadata are decrypted at the same time.
const FILTER_CONCURRENCY: usize = 16;
/// How long a search waits for a tenant's index to finish reconciling.
const RECONCILE_WAIT: Duration = Duration::from_secs(60);

/// Where a tenant's index stands with the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexSync {
    /// Being reconciled (searches wait).
    Reconciling,
    /// Reconciled; uploads and deletes keep it current.
    Current,
    /// Reconciling failed; searches are refused until a rebuild succeeds.
    Failed,
}

/// One tenant's open index and token keys.
pub struct TenantIndex {
    tokenizer: Tokenizer,
    index: BlindIndex,
    sync: watch::Sender<IndexSync>,
    /// A re-plan of this index was started (`replan_if_grown`).
    replanning: std::sync::atomic::AtomicBool,
    /// Documents added since the last commit (not yet searchable): what this
    /// replica indexed itself, so following the log does not open them again.
    uncommitted: Mutex<std::collections::HashSet<String>>,
    /// The last reconciliation left documents out (their metadata could not be
    /// read): listings read the store until one leaves none out.
    incomplete: std::sync::atomic::AtomicBool,
    /// Documents the log's follower left out (they can never be opened), and
    /// that count when the latest reconciliation began: one that ends leaving
    /// none out clears `incomplete` only if the follower left none out meanwhile.
    left_out: std::sync::atomic::AtomicU64,
    left_out_at_reconcile: std::sync::atomic::AtomicU64,
    /// `index.changes()` when a snapshot of it was last written or restored
    /// (`u64::MAX`: never).
    snapshotted: std::sync::atomic::AtomicU64,
    /// Set when a key rotation swapped this index out. Declared last: fields drop
    /// in order, so the directory goes only after the index has closed.
    retired: RemoveWhenDropped,
}

impl TenantIndex {
    fn new(tokenizer: Tokenizer, index: BlindIndex, sync: IndexSync) -> Self {
        TenantIndex {
            tokenizer,
            index,
            sync: watch::channel(sync).0,
            replanning: Default::default(),
            uncommitted: Mutex::default(),
            incomplete: Default::default(),
            left_out: Default::default(),
            left_out_at_reconcile: Default::default(),
            snapshotted: std::sync::atomic::AtomicU64::new(u64::MAX),
            retired: RemoveWhenDropped::default(),
        }
    }
}

/// Removes a retired index's directory when the last holder lets go of the index.
/// A search or commit that took the index just before a rotation swapped it out
/// finishes on it (its results are complete: writes went to both indexes until the
/// swap) instead of failing on a directory removed under it.
#[derive(Default)]
struct RemoveWhenDropped(std::sync::OnceLock<PathBuf>);

impl Drop for RemoveWhenDropped {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else {
            return;
        };
        // Tantivy's merge threads may still be finishing a write into the
        // directory as the index closes: a few tries, off the async workers.
        let remove = move || {
            let mut tries = 0;
            loop {
                tries += 1;
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => return,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                    Err(_) if tries < 20 => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => {
                        // Derived data: the next start-up removes what is left.
                        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a retired index");
                        return;
                    }
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

pub use vault_api::ReconcileReport;

/// After a reconciliation: the index may lack documents if it left some out,
/// or if the log's follower left one out while it ran (its listing of the
/// store may have come before that document).
fn settle_incomplete(index: &TenantIndex, report: &ReconcileReport) {
    use std::sync::atomic::Ordering::SeqCst;
    let left_out_meanwhile =
        index.left_out.load(SeqCst) != index.left_out_at_reconcile.load(SeqCst);
    index
        .incomplete
        .store(report.failed > 0 || left_out_meanwhile, SeqCst);
}

/// One page of search results.
#[derive(Debug)]
pub struct SearchPage {
    /// Exact matches in all pages.
    pub total: u64,
    /// This page, newest first.
    pub hits: Vec<IndexedDocument>,
    /// Cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
    /// False when this replica's index may lack documents (its last
    /// reconciliation left some out, or following other replicas' changes is
    /// failing): every hit is still an exact match, but some may be missing.
    pub complete: bool,
}

/// The per-tenant blind indexes of a server. Clones share them.
#[derive(Clone)]
pub struct SearchService(Arc<Indexes>);

/// What a [`SearchService`] holds.
pub struct Indexes {
    store: Arc<dyn ObjectStore>,
    keys: Arc<KeyHierarchy>,
    tenants: TenantRegistry,
    documents: Documents,
    metrics: Arc<Metrics>,
    dir: PathBuf,
    config: SearchConfig,
    indexes: Mutex<HashMap<TenantId, Arc<OnceCell<Arc<TenantIndex>>>>>,
    /// Indexes under a tenant's next index key version, while they are backfilled.
    next: Mutex<HashMap<TenantId, Arc<TenantIndex>>>,
    /// Tenants whose index is being rotated (at most one rotation each).
    rotating: Mutex<std::collections::HashSet<TenantId>>,
    /// Where an index that outgrew its plan asks for a re-plan (the jobs run it).
    replans: mpsc::UnboundedSender<Replan>,
    /// Per tenant with an open index, the first segment of its audit log not yet
    /// read for changes made by other replicas ([`crate::catch_up`]).
    followed: Mutex<HashMap<TenantId, u64>>,
    /// Tenants whose last follow of the log failed: their index may lack other
    /// replicas' changes, so listings read the store until a follow succeeds.
    follow_failing: Mutex<std::collections::HashSet<TenantId>>,
    /// Set once every index opened at start-up is current (or failed): the
    /// replica's searches are then complete (`/readyz`).
    opened_at_start: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for SearchService {
    type Target = Indexes;

    fn deref(&self) -> &Indexes {
        &self.0
    }
}

/// A tenant's index that outgrew its token plan, asking to be re-planned: an
/// index key rotation under a plan for `new_plan` documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replan {
    /// The tenant.
    pub tenant: TenantId,
    /// Documents its index holds.
    pub held: u64,
    /// Documents its tokens were planned for.
    pub planned: u64,
    /// Documents the new plan is for.
    pub new_plan: u64,
}

/// What the indexes read documents and keys from.
pub struct SearchDeps {
    /// Where the documents are.
    pub store: Arc<dyn ObjectStore>,
    /// Index root keys.
    pub keys: Arc<KeyHierarchy>,
    /// Tenant records.
    pub tenants: TenantRegistry,
    /// Documents (indexes are filled from their sealed metadata).
    pub documents: Documents,
    /// Search counters.
    pub metrics: Arc<Metrics>,
}

pub use crate::documents::SearchTerms;

impl SearchService {
    /// Indexes under `dir`, one subdirectory per tenant; re-plans are asked for on
    /// `replans`.
    pub fn new(
        deps: SearchDeps,
        dir: PathBuf,
        config: SearchConfig,
        replans: mpsc::UnboundedSender<Replan>,
    ) -> Self {
        let SearchDeps {
            store,
            keys,
            tenants,
            documents,
            metrics,
        } = deps;
        SearchService(Arc::new(Indexes {
            store,
            keys,
            tenants,
            documents,
            metrics,
            dir,
            config,
            indexes: Mutex::new(HashMap::new()),
            next: Mutex::new(HashMap::new()),
            rotating: Mutex::default(),
            replans,
            followed: Mutex::default(),
            follow_failing: Mutex::default(),
            opened_at_start: Default::default(),
        }))
    }

    /// Tenants whose index is open here, followed for other replicas' changes.
    pub fn followed_tenants(&self) -> Vec<TenantId> {
        self.followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The first segment of the tenant's log not yet read for changes.
    pub fn followed_from(&self, tenant: &TenantId) -> Option<u64> {
        self.followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .copied()
    }

    /// Records that the tenant's log was read (and applied) up to segment `next`.
    pub fn followed_to(&self, tenant: &TenantId, next: u64) {
        if let Some(at) = self
            .followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(tenant)
        {
            *at = (*at).max(next);
        }
    }

    /// Records whether following the tenant's log failed this time.
    pub fn follow_failed(&self, tenant: &TenantId, failed: bool) {
        let mut failing = self
            .follow_failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failed {
            failing.insert(tenant.clone());
        } else {
            failing.remove(tenant);
        }
    }

    /// Whether a tenant's index may lack documents although it is current: its
    /// last reconciliation left some out, or following the log is failing.
    fn may_lack_documents(&self, tenant: &TenantId, index: &TenantIndex) -> bool {
        index.incomplete.load(std::sync::atomic::Ordering::SeqCst)
            || self
                .follow_failing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(tenant)
    }

    /// Records that a document was left out of the tenant's current index (it
    /// can never be opened): listings then walk the store and searches say
    /// they may be incomplete, until a reconciliation finds nothing left out.
    pub async fn left_out(&self, tenant: &TenantRecord) -> Result<(), Error> {
        let index = self.tenant_index(tenant).await?;
        index
            .left_out
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        index
            .incomplete
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Whether the tenant's current index holds a document, committed or added
    /// since the last commit.
    pub async fn holds(&self, tenant: &TenantRecord, id: &DocumentId) -> Result<bool, Error> {
        let index = self.tenant_index(tenant).await?;
        let id = id.to_string();
        let added = index
            .uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id);
        Ok(added || index.index.contains(&id))
    }

    /// The settings in force.
    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    /// The documents a tenant's tokens are planned for.
    pub fn planned_documents(&self, tenant: &TenantRecord) -> u64 {
        tenant
            .planned_documents
            .unwrap_or(self.config.expected_documents)
    }

    /// The token lengths of a tenant's index.
    fn plan_for(&self, tenant: &TenantRecord) -> TokenPlan {
        TokenPlan::new(self.planned_documents(tenant), &self.config.token_bits)
    }

    /// Closes a tenant's indexes and removes their directories (offboarding):
    /// its token keys leave memory with the last holder, its index files with it.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        self.followed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant);
        let mut dropped: Vec<Arc<TenantIndex>> = Vec::new();
        if let Some(cell) = self
            .indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant)
        {
            dropped.extend(cell.get().cloned());
        }
        dropped.extend(
            self.next
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(tenant),
        );
        // An open index's directory goes with its last holder (a search in flight
        // finishes); the others (older versions, crash leftovers) go now.
        let open: Vec<PathBuf> = dropped.iter().map(|i| i.index.dir().to_owned()).collect();
        for index in dropped {
            let _ = index.retired.0.set(index.index.dir().to_owned());
            // Whoever waits for it to be reconciled stops waiting.
            if *index.sync.borrow() == IndexSync::Reconciling {
                index.sync.send_replace(IndexSync::Failed);
            }
        }
        remove_tenant_dirs(&self.dir, tenant, |name| {
            open.iter()
                .any(|dir| dir.file_name().is_some_and(|n| n == name))
        });
    }

    /// Every open index: its tenant, and whether it is the tenant's current one
    /// (or the next one, being filled during a key rotation).
    fn open_indexes(&self) -> Vec<(TenantId, Arc<TenantIndex>, bool)> {
        let mut open: Vec<(TenantId, Arc<TenantIndex>, bool)> = self
            .indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(tenant, cell)| cell.get().map(|i| (tenant.clone(), Arc::clone(i), true)))
            .collect();
        open.extend(
            self.next
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(tenant, i)| (tenant.clone(), Arc::clone(i), false)),
        );
        open
    }

    /// Where a tenant's index under index key `version` lives.
    fn index_path(&self, tenant: &TenantId, version: u32) -> PathBuf {
        self.dir.join(format!("{tenant}-v{version}"))
    }

    /// The index being backfilled under the tenant's next key version, if any.
    fn next_index(&self, tenant: &TenantId) -> Option<Arc<TenantIndex>> {
        self.next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// Commits every open index with pending changes (the background committer and
    /// shutdown call this).
    pub async fn commit_all(&self) {
        for (tenant, index, current) in self.open_indexes() {
            let followed_to = if current {
                self.followed_position(&tenant, &index)
            } else {
                None
            };
            // With no change to commit, a commit only to record the position is
            // made once the log moved on by a step: a restart then re-reads at
            // most that many segments.
            let worth_recording = match (index.index.committed_followed_to(), followed_to) {
                (Some(committed), Some(at)) => at >= committed + POSITION_RECORD_STEP,
                (None, Some(_)) => true,
                _ => false,
            };
            if index.index.pending() > 0 || worth_recording {
                // The changes stay pending and the next tick tries again.
                if let Err(e) = commit(&index, followed_to).await {
                    tracing::error!(error = %e.for_log(), "blind index commit failed");
                }
            }
        }
    }

    /// The change-feed position a commit of the tenant's current index records:
    /// read before the commit, every change in the segments before it has been
    /// applied to the index (by its upload here, or by following the log) before
    /// the follower moved past it, so the commit holds it. `None` while the index
    /// is not current (a rebuild under way).
    fn followed_position(&self, tenant: &TenantId, index: &TenantIndex) -> Option<u64> {
        (*index.sync.borrow() == IndexSync::Current)
            .then(|| self.followed_from(tenant))
            .flatten()
    }
}

/// Log segments the change feed may move past before an index with nothing else
/// to commit records its position (what a restart re-reads at most, besides the
/// changes themselves).
const POSITION_RECORD_STEP: u64 = 64;

/// Commits the index's changes, recording the change-feed position `followed_to`.
async fn commit(tenant: &Arc<TenantIndex>, followed_to: Option<u64>) -> Result<(), Error> {
    let added = std::mem::take(
        &mut *tenant
            .uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let index = Arc::clone(tenant);
    let committed = blocking(move || index.index.commit(followed_to)).await;
    if committed.is_err() {
        tenant
            .uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(added);
    }
    committed
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, IndexError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal("index task", e))?
        .map_err(index_error)
}

fn index_error(e: IndexError) -> Error {
    match e {
        IndexError::TooManyCandidates { limit } => Error::invalid(
            "query_too_broad",
            format!("the query matches more than {limit} candidate documents; narrow it"),
        ),
        other => Error::internal("blind index", other),
    }
}

/// Removes index directories of a tenant other than `keep`'s (older key versions,
/// the pre-versioned layout, an unfinished rotation): derived data, never needed.
fn remove_other_versions(dir: &std::path::Path, tenant: &TenantId, keep: u32) {
    let keep = format!("{tenant}-v{keep}");
    remove_tenant_dirs(dir, tenant, |name| name == keep);
}

/// Removes a tenant's index directories under `dir`, but those `keep` names.
fn remove_tenant_dirs(dir: &std::path::Path, tenant: &TenantId, keep: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == tenant.as_str()
            || name
                .strip_prefix(&format!("{tenant}-v"))
                .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit()));
        if ours && !keep(&name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Field values up to which a candidate is checked on the async worker.
const INLINE_MATCH_VALUES: usize = 256;

/// Whether a document with these fields matches the query exactly; a document
/// with many values (a remittance) is checked on the blocking pool.
async fn matches(query: &Query, fields: Fields) -> Result<bool, Error> {
    if fields.values().map(Vec::len).sum::<usize>() <= INLINE_MATCH_VALUES {
        return Ok(query.matches(&search_terms(&fields)));
    }
    let query = query.clone();
    tokio::task::spawn_blocking(move || query.matches(&search_terms(&fields)))
        .await
        .map_err(|e| Error::internal("search filter task", e))
}

/// What the index keeps of a document.
pub fn indexed_document(
    id: &DocumentId,
    kind: DocumentKind,
    uploaded_at: OffsetDateTime,
) -> IndexedDocument {
    IndexedDocument {
        id: id.to_string(),
        kind: kind.as_str().to_owned(),
        uploaded_at_micros: micros_floor(uploaded_at.unix_timestamp_nanos()),
    }
}

/// Unix microseconds, rounded down, of a time in nanoseconds: the index's upload
/// times, and the bounds a listing asks the index for.
pub(crate) fn micros_floor(nanos: i128) -> i64 {
    i64::try_from(nanos.div_euclid(1000)).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// The names of the fields a document with these terms is searchable by (base
/// and derived).
pub fn indexed_field_names(terms: &SearchTerms) -> Vec<String> {
    let mut names: Vec<String> = terms
        .iter()
        .map(|(field, _)| field.name().to_owned())
        .collect();
    names.dedup();
    names
}

/// The search terms of a document's fields, computed on the blocking pool (a
/// remittance may carry tens of thousands of values).
pub async fn terms_of(fields: Fields) -> Result<Arc<SearchTerms>, Error> {
    tokio::task::spawn_blocking(move || Arc::new(search_terms(&fields)))
        .await
        .map_err(|e| Error::internal("search terms task", e))
}

/// A tenant whose index holds more than this many times its planned documents
/// gets a new plan.
pub const REPLAN_GROWTH: u64 = 4;

/// Blind tokens of the terms (an HMAC each) and the index write, on the blocking
/// pool.
async fn add_to_index(
    index: &Arc<TenantIndex>,
    document: IndexedDocument,
    terms: Arc<SearchTerms>,
) -> Result<(), Error> {
    let index = Arc::clone(index);
    tokio::task::spawn_blocking(move || {
        let tokens = index
            .tokenizer
            .document_tokens(&document.id, &terms)
            .map_err(|e| Error::internal("blind tokens", e))?;
        index.index.add(&document, &tokens).map_err(index_error)?;
        index
            .uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(document.id);
        Ok(())
    })
    .await
    .map_err(|e| Error::internal("index task", e))?
}

async fn wait_until_reconciled(index: &TenantIndex, failed_is_ok: bool) -> Result<(), Error> {
    let mut sync = index.sync.subscribe();
    let settled = tokio::time::timeout(
        RECONCILE_WAIT,
        sync.wait_for(|s| *s != IndexSync::Reconciling),
    )
    .await;
    match settled {
        Ok(Ok(s)) if *s == IndexSync::Current || failed_is_ok => Ok(()),
        Ok(_) => Err(Error::unavailable(
            "index_unavailable",
            "the tenant's index could not be brought up to date; an operator must rebuild it",
        )),
        Err(_) => Err(Error::unavailable(
            "index_rebuilding",
            "the tenant's index is being rebuilt; retry shortly",
        )),
    }
}

/// Where a page starts: after the hit with this upload time and id.
fn parse_cursor(raw: &str) -> Result<(i64, String), Error> {
    let bad = || Error::invalid("invalid_cursor", "cursor is not one this server gave");
    let (micros, id) = raw.split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let id: DocumentId = id.parse().map_err(|_| bad())?;
    Ok((micros, id.to_string()))
}

/// The fields a query names, for the audit log (names only, never values).
pub fn queried_fields(query: &Query) -> Vec<&'static str> {
    query.fields().into_iter().map(Field::name).collect()
}

/// Put back in order when an index rebuild stops before it finished (its job was
/// cancelled): the index, half filled, is reconciled again in the background, so
/// it ends current (or failed, with searches refused until a rebuild) instead of
/// leaving searches waiting on "reconciling".
struct ReconcileIfDropped {
    search: Option<SearchService>,
    tenant: TenantRecord,
    index: Arc<TenantIndex>,
}

impl ReconcileIfDropped {
    /// The rebuild finished: nothing to put back.
    fn disarm(mut self) {
        self.search = None;
    }
}

impl Drop for ReconcileIfDropped {
    fn drop(&mut self) {
        let Some(search) = self.search.take() else {
            return;
        };
        let (tenant, index) = (self.tenant.clone(), Arc::clone(&self.index));
        tracing::warn!(tenant = %tenant.id, "index rebuild stopped before it finished; reconciling the index again");
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let outcome = search.reconcile(&tenant, &index, &NoProgress).await;
                    search.finish_reconcile(&tenant, &index, &outcome);
                });
            }
            // No runtime left (shutting down): the next start reconciles it.
            Err(_) => {
                index.sync.send_replace(IndexSync::Failed);
            }
        }
    }
}

/// A tenant's one index rotation, released when the rotation ends however it ends.
struct RotationSlot {
    search: SearchService,
    tenant: TenantId,
}

impl RotationSlot {
    fn take(search: &SearchService, tenant: &TenantId) -> Result<Self, Error> {
        let fresh = search
            .rotating
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.clone());
        if !fresh {
            return Err(Error::conflict(
                "index_rotation_in_progress",
                "an index rotation or re-plan of this tenant is under way; retry when it has finished",
            ));
        }
        Ok(RotationSlot {
            search: search.clone(),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for RotationSlot {
    fn drop(&mut self) {
        self.search
            .rotating
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.tenant);
    }
}

/// Put back in order when an index rotation stops before its swap (an error, a
/// cancelled job): the next index is unregistered, so writes stop going to it and
/// another rotation may start, and its files are removed.
struct RemoveNextIfDropped {
    search: Option<SearchService>,
    tenant: TenantRecord,
}

impl RemoveNextIfDropped {
    /// The next index became current: nothing to remove.
    fn disarm(mut self) {
        self.search = None;
    }
}

impl Drop for RemoveNextIfDropped {
    fn drop(&mut self) {
        let Some(search) = self.search.take() else {
            return;
        };
        search
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.tenant.id);
        let _ =
            std::fs::remove_dir_all(search.index_path(&self.tenant.id, self.tenant.index_version));
    }
}

impl SearchService {
    /// The tokenizer of a tenant's index under the record's index key version and
    /// token plan.
    async fn tokenizer_for(&self, tenant: &TenantRecord) -> Result<Tokenizer, Error> {
        let root = self
            .keys
            .index_root_key(&crate::tenants::key_spec(tenant))
            .await?;
        Ok(Tokenizer::new(&root, self.plan_for(tenant)))
    }

    /// The tenant's index, opened (and reconciled in the background) on first use.
    pub async fn tenant_index(&self, tenant: &TenantRecord) -> Result<Arc<TenantIndex>, Error> {
        let cell = {
            let mut tenants = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(tenants.entry(tenant.id.clone()).or_default())
        };
        cell.get_or_try_init(|| async {
            let tokenizer = self.tokenizer_for(tenant).await?;
            let dir = self.index_path(&tenant.id, tenant.index_version);
            remove_other_versions(&self.dir, &tenant.id, tenant.index_version);
            let (index, tokenizer, created) = tokio::task::spawn_blocking(move || {
                BlindIndex::open(&dir, &tokenizer).map(|(index, created)| (index, tokenizer, created))
            })
            .await
            .map_err(|e| Error::internal("index task", e))?
            .map_err(index_error)?;
            // An index this replica does not have is taken from the latest
            // snapshot in the store when there is one: the reconciliation below
            // then opens only the documents the snapshot lacks.
            let (index, tokenizer, started) = if created {
                self.open_from_snapshot(tenant, index, tokenizer).await?
            } else {
                let followed_to = index.committed_followed_to();
                (index, tokenizer, Started::Kept { followed_to })
            };
            if matches!(started, Started::Empty) {
                tracing::info!(tenant = %tenant.id, "blind index created; filling it from the store");
            }
            // Where the log ends before the index is reconciled with the store:
            // changes from here on, made by any replica, are followed.
            let log_end = crate::audit::log_size(self.store.as_ref(), &tenant.id)
                .await
                .map_err(Error::from)?;
            // An index (kept here or from a snapshot) that says where the log
            // stood is brought up to date by following the log from there (a
            // position past the log's end is from another history: reconciled
            // instead). Its time to ready grows with the changes since, not with
            // the documents.
            let recorded_at = match started {
                Started::FromSnapshot {
                    followed_to: Some(at),
                }
                | Started::Kept {
                    followed_to: Some(at),
                } if at <= log_end => Some(at),
                _ => None,
            };
            {
                let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
                match recorded_at {
                    Some(at) => {
                        followed.insert(tenant.id.clone(), at);
                    }
                    None => {
                        followed.entry(tenant.id.clone()).or_insert(log_end);
                    }
                }
            }
            let opened = Arc::new(TenantIndex::new(tokenizer, index, IndexSync::Reconciling));
            if matches!(started, Started::FromSnapshot { .. }) {
                opened
                    .snapshotted
                    .store(opened.index.changes(), std::sync::atomic::Ordering::SeqCst);
            }
            let (this, tenant_record, task_index) =
                (self.clone(), tenant.clone(), Arc::clone(&opened));
            tokio::spawn(async move {
                match recorded_at {
                    Some(at) => {
                        this.catch_up_from(&tenant_record, &task_index, at, log_end)
                            .await;
                    }
                    None => {
                        let outcome =
                            this.reconcile(&tenant_record, &task_index, &NoProgress).await;
                        this.finish_reconcile(&tenant_record, &task_index, &outcome);
                    }
                }
            });
            Ok(opened)
        })
        .await
        .cloned()
    }

    /// Rotates a tenant's blind-index key: opens an index under `new` (the tenant's
    /// next index key version, whose root key exists), fills it from the store while
    /// uploads and deletes also reach it, then makes it current with `make_current`
    /// (which persists the tenant record) and drops the old one. Searches use the old
    /// index until the swap, so they stay complete and exact throughout.
    pub async fn rotate_index(
        &self,
        tenant: &TenantRecord,
        new: &TenantRecord,
        make_current: impl std::future::Future<Output = Result<(), Error>>,
        progress: &dyn Progress,
    ) -> Result<ReconcileReport, Error> {
        // Taken before the first await and held to the end: two rotations that
        // both passed a check would build the same next version in one directory,
        // and the first swap would unregister the other's index under its uploads.
        let _rotating = RotationSlot::take(self, &tenant.id)?;
        // The current index must be in step before writes are doubled.
        let current = self.tenant_index(tenant).await?;
        wait_until_reconciled(&current, false).await?;
        let tokenizer = self.tokenizer_for(new).await?;
        let dir = self.index_path(&new.id, new.index_version);
        let _ = std::fs::remove_dir_all(&dir);
        let (index, tokenizer) = tokio::task::spawn_blocking(move || {
            BlindIndex::open(&dir, &tokenizer).map(|(index, _)| (index, tokenizer))
        })
        .await
        .map_err(|e| Error::internal("index task", e))?
        .map_err(index_error)?;
        let next = Arc::new(TenantIndex::new(tokenizer, index, IndexSync::Reconciling));
        self.next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(new.id.clone(), Arc::clone(&next));
        // Until the swap below, a stop for any reason (an error, a cancelled job)
        // unregisters the next index and removes its files.
        let unfinished = RemoveNextIfDropped {
            search: Some(self.clone()),
            tenant: new.clone(),
        };
        let outcome = async {
            let report = self.reconcile(new, &next, progress).await?;
            if report.failed > 0 {
                return Err(Error::unavailable(
                    "index_unavailable",
                    "some documents could not be indexed under the new key; the old key stays in use",
                ));
            }
            commit(&next, None).await?;
            make_current.await?;
            Ok(report)
        }
        .await;
        match &outcome {
            Ok(_) => {
                next.sync.send_replace(IndexSync::Current);
                let cell = Arc::new(OnceCell::new_with(Some(Arc::clone(&next))));
                // Both maps change under the tenants lock, so a writer sees either
                // (old, next) or (new, none).
                let mut tenants = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
                tenants.insert(new.id.clone(), cell);
                unfinished.disarm();
                self.next
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&new.id);
                drop(tenants);
                // Not removed now: a search may still be reading it.
                let _ = current
                    .retired
                    .0
                    .set(self.index_path(&tenant.id, tenant.index_version));
            }
            Err(_) => drop(unfinished),
        }
        outcome
    }

    /// Makes an index opened from a snapshot current once the log follower
    /// ([`crate::catch_up`]) has applied every change from the snapshot's
    /// position `from` up to `log_end`, where the log ended when the index was
    /// opened: then the index holds whatever the store held then, as a
    /// reconciled one does, at the cost of the changes since the snapshot. A
    /// reconciliation with the store follows in the background as a check
    /// (the index stays current; what it corrects is logged).
    async fn catch_up_from(
        &self,
        tenant: &TenantRecord,
        index: &Arc<TenantIndex>,
        from: u64,
        log_end: u64,
    ) {
        let started = Instant::now();
        loop {
            match self.followed_from(&tenant.id) {
                // Forgotten meanwhile (offboarded): nothing to make current.
                None => return,
                Some(at) if at >= log_end => break,
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        index.sync.send_replace(IndexSync::Current);
        tracing::info!(tenant = %tenant.id, documents = index.index.len(), segments = log_end - from, duration_ms = started.elapsed().as_millis() as u64, "blind index current from its recorded log position and the change feed");
        match self.reconcile(tenant, index, &NoProgress).await {
            Ok(report) if report.added + report.removed + report.failed > 0 => {
                settle_incomplete(index, &report);
                self.metrics.index_failures.inc();
                tracing::warn!(tenant = %tenant.id, added = report.added, removed = report.removed, failed = report.failed, "the index from its recorded log position and the change feed differed from the store; corrected");
            }
            Ok(report) => {
                settle_incomplete(index, &report);
                tracing::info!(tenant = %tenant.id, documents = report.documents, duration_ms = report.duration_ms, "index from its recorded log position checked against the store: in step");
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, code = e.code(), error = %e.for_log(), "index from its recorded log position could not be checked against the store");
            }
        }
    }

    fn finish_reconcile(
        &self,
        tenant: &TenantRecord,
        index: &TenantIndex,
        outcome: &Result<ReconcileReport, Error>,
    ) {
        match outcome {
            Ok(report) => {
                tracing::info!(tenant = %tenant.id, documents = report.documents, added = report.added, removed = report.removed, failed = report.failed, duration_ms = report.duration_ms, "blind index reconciled");
                settle_incomplete(index, report);
                index.sync.send_replace(IndexSync::Current);
            }
            Err(e) => {
                self.metrics.index_failures.inc();
                tracing::error!(tenant = %tenant.id, code = e.code(), error = %e.for_log(), "blind index reconciliation failed; searches are refused until `vault-cli index rebuild`");
                index.sync.send_replace(IndexSync::Failed);
            }
        }
    }

    /// Opens (and reconciles) the index of every tenant: called at start-up.
    /// Once each is current (or failed), [`SearchService::opened_at_start`]
    /// says so.
    pub async fn open_all(&self) {
        let mut opened = Vec::new();
        match self.tenants.list().await {
            Ok(tenants) => {
                for tenant in tenants.iter().filter(|t| t.is_active()) {
                    match self.tenant_index(tenant).await {
                        Ok(index) => opened.push(index),
                        Err(e) => {
                            self.metrics.index_failures.inc();
                            tracing::error!(tenant = %tenant.id, code = e.code(), error = %e.for_log(), "could not open the blind index");
                        }
                    }
                }
            }
            Err(e) => tracing::error!(
                code = e.code(), error = %e.for_log(),
                "could not list tenants to open their indexes"
            ),
        }
        for index in opened {
            let mut sync = index.sync.subscribe();
            // Reconciled, failed, or forgotten meanwhile (offboarded): each
            // leaves `Reconciling`.
            let _ = sync
                .wait_for(|state| *state != IndexSync::Reconciling)
                .await;
        }
        self.opened_at_start
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether every index opened at start-up is current (or failed), so that
    /// this replica's searches are complete.
    pub fn opened_at_start(&self) -> bool {
        self.opened_at_start
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Commits pending index changes every `search.commit_interval_ms`, for ever.
    pub async fn run_committer(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.commit_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.commit_all().await;
        }
    }

    /// Adds a stored document's tokens to its tenant's index (and to the next one,
    /// during an index key rotation).
    pub async fn index_document(
        &self,
        tenant: &TenantRecord,
        document: IndexedDocument,
        terms: Arc<SearchTerms>,
    ) -> Result<(), Error> {
        let (index, next) = self.current_and_next(tenant).await?;
        add_to_index(&index, document.clone(), Arc::clone(&terms)).await?;
        let rotating = next.is_some();
        if let Some(next) = next {
            add_to_index(&next, document, terms).await?;
        }
        if !rotating {
            self.replan_if_grown(tenant, &index);
        }
        Ok(())
    }

    /// [`SearchService::index_document`] for an upload just committed here, if the
    /// tenant's index is open. While it is being opened (after a restart, or at
    /// its first use on this replica) the upload does not wait for it: the
    /// document is durable and audited, and the opening's reconciliation with the
    /// store, or the catch-up from the log position the opening remembered, adds
    /// it. Returns whether it was indexed now.
    pub async fn index_if_open(
        &self,
        tenant: &TenantRecord,
        document: IndexedDocument,
        terms: Arc<SearchTerms>,
    ) -> Result<bool, Error> {
        if !self.is_open(&tenant.id) {
            return Ok(false);
        }
        self.index_document(tenant, document, terms)
            .await
            .map(|()| true)
    }

    /// [`SearchService::remove_document`] if the tenant's index is open (else
    /// its opening or the catch-up drops it, as for [`SearchService::index_if_open`]).
    pub async fn remove_if_open(
        &self,
        tenant: &TenantRecord,
        id: &DocumentId,
    ) -> Result<(), Error> {
        if !self.is_open(&tenant.id) {
            return Ok(());
        }
        self.remove_document(tenant, id).await
    }

    /// Whether the tenant's index is open here (neither absent nor being opened).
    fn is_open(&self, tenant: &TenantId) -> bool {
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .is_some_and(|cell| cell.initialized())
    }

    /// Starts a re-plan when the tenant has outgrown its plan: its tokens, sized for
    /// fewer documents, now match too many candidates each. The new plan is made for
    /// `REPLAN_GROWTH` times today's count and built as an index key rotation (a new
    /// index filled beside the current one, then swapped in; searches stay exact and
    /// complete). At most one per index; audited in the tenant's log before it starts.
    fn replan_if_grown(&self, tenant: &TenantRecord, index: &Arc<TenantIndex>) {
        let planned = self.planned_documents(tenant);
        let held = index.index.len();
        if held <= planned.saturating_mul(REPLAN_GROWTH)
            || index
                .replanning
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let new_plan = held
            .saturating_mul(REPLAN_GROWTH)
            .min(crate::config::MAX_PLANNED_DOCUMENTS);
        let wanted = Replan {
            tenant: tenant.id.clone(),
            held,
            planned,
            new_plan,
        };
        if self.replans.send(wanted).is_err() {
            // No one runs re-plans (a vault opened for offline work): the index
            // keeps its plan, and the next upload asks again.
            index
                .replanning
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The tenant's current index and, during an index key rotation, the next one,
    /// read together.
    async fn current_and_next(
        &self,
        tenant: &TenantRecord,
    ) -> Result<(Arc<TenantIndex>, Option<Arc<TenantIndex>>), Error> {
        loop {
            let index = self.tenant_index(tenant).await?;
            let tenants = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
            let next = self.next_index(&tenant.id);
            // Swapped meanwhile: take the new pair.
            let still_current = tenants
                .get(&tenant.id)
                .and_then(|cell| cell.get())
                .is_some_and(|current| Arc::ptr_eq(current, &index));
            if still_current {
                return Ok((index, next));
            }
        }
    }

    /// Removes a deleted document from its tenant's index.
    pub async fn remove_document(
        &self,
        tenant: &TenantRecord,
        id: &DocumentId,
    ) -> Result<(), Error> {
        let (index, next) = self.current_and_next(tenant).await?;
        index.index.remove(&id.to_string());
        if let Some(next) = next {
            next.index.remove(&id.to_string());
        }
        Ok(())
    }

    /// Every visible document of a tenant: those whose facts object exists and that
    /// have no tombstone. A facts object beside a tombstone is the remainder of an
    /// interrupted delete, which is finished here.
    async fn stored_documents(&self, tenant: &TenantId) -> Result<Vec<DocumentId>, Error> {
        use futures::TryStreamExt;
        // The listings stream: only ids are kept (16 bytes a document), never
        // the names and sizes of a tenant's millions of objects. Facts first,
        // then tombstones, so a delete in between is seen as one to finish.
        let mut with_facts = Vec::new();
        let mut objects = self
            .store
            .list_pages(&ObjectName::docs_prefix(tenant), None);
        while let Some(page) = objects.try_next().await? {
            with_facts.extend(page.iter().filter_map(|info| info.name.meta_document()));
        }
        let mut deleted = std::collections::HashSet::new();
        let mut tombstones = self
            .store
            .list_pages(&ObjectName::tombstones_prefix(tenant), None);
        while let Some(page) = tombstones.try_next().await? {
            deleted.extend(
                page.iter().filter_map(|info| {
                    ObjectName::tombstone_of(info.name.as_str()).map(|(_, id)| id)
                }),
            );
        }
        let mut visible = Vec::new();
        for id in with_facts {
            if !deleted.contains(&id) {
                visible.push(id);
            } else if let Err(e) = self.documents.delete(tenant, &id).await {
                tracing::warn!(tenant = %tenant, document = %id, code = e.code(), error = %e.for_log(), "could not finish an interrupted delete");
            }
        }
        Ok(visible)
    }

    /// Brings a tenant's index in step with the store.
    async fn reconcile(
        &self,
        tenant: &TenantRecord,
        index: &Arc<TenantIndex>,
        progress: &dyn Progress,
    ) -> Result<ReconcileReport, Error> {
        let started = Instant::now();
        index.left_out_at_reconcile.store(
            index.left_out.load(std::sync::atomic::Ordering::SeqCst),
            std::sync::atomic::Ordering::SeqCst,
        );
        // Pending changes first (the catch-up's, an upload's): the ids below are
        // the committed ones, and a change still pending would count as a
        // difference with the store.
        commit(index, self.followed_position(&tenant.id, index)).await?;
        // Index ids first, then the store: a document uploaded in between is in the
        // store listing or was added by its upload, and is never removed by mistake.
        let indexed = {
            let index = Arc::clone(index);
            blocking(move || index.index.ids()).await?
        };
        let stored = self.stored_documents(&tenant.id).await?;
        let stored_set: std::collections::HashSet<String> =
            stored.iter().map(ToString::to_string).collect();
        let mut report = ReconcileReport {
            documents: stored.len() as u64,
            ..ReconcileReport::default()
        };
        for gone in indexed.difference(&stored_set) {
            index.index.remove(gone);
            report.removed += 1;
        }
        let missing: Vec<DocumentId> = stored
            .into_iter()
            .filter(|id| !indexed.contains(&id.to_string()))
            .collect();
        progress.start("reconcile", missing.len() as u64, 0);
        let outcomes: Vec<Result<bool, Error>> = futures::stream::iter(missing)
            .map(|id| async move {
                let opened = self.documents.open(tenant, &id).await;
                progress.advance(0);
                match opened {
                    Ok(opened) => {
                        let document =
                            indexed_document(&id, opened.metadata.kind, opened.metadata.uploaded_at);
                        let terms = terms_of(opened.metadata.fields).await?;
                        add_to_index(index, document, terms).await.map(|()| true)
                    }
                    // Deleted since the listing.
                    Err(e) if e.is_not_found() => Ok(false),
                    Err(e) => {
                        tracing::error!(tenant = %tenant.id, document = %id, code = e.code(), error = %e.for_log(), "document left out of the index: its metadata could not be read");
                        Err(e)
                    }
                }
            })
            .buffer_unordered(FILTER_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(true) => report.added += 1,
                Ok(false) => {}
                Err(_) => report.failed += 1,
            }
        }
        commit(index, self.followed_position(&tenant.id, index)).await?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Empties a tenant's index and fills it again from the store.
    pub async fn rebuild(
        &self,
        tenant: &TenantRecord,
        progress: &dyn Progress,
    ) -> Result<ReconcileReport, Error> {
        let index = self.tenant_index(tenant).await?;
        wait_until_reconciled(&index, true).await?;
        index.sync.send_replace(IndexSync::Reconciling);
        let interrupted = ReconcileIfDropped {
            search: Some(self.clone()),
            tenant: tenant.clone(),
            index: Arc::clone(&index),
        };
        let outcome = async {
            let cleared = Arc::clone(&index);
            // Pending additions first: tantivy's delete-all removes committed
            // segments only, so an addition still pending would survive the clear
            // and be counted as already indexed.
            blocking(move || {
                cleared.index.commit(None)?;
                cleared.index.clear()?;
                cleared.index.commit(None)
            })
            .await?;
            self.reconcile(tenant, &index, progress).await
        }
        .await;
        interrupted.disarm();
        self.finish_reconcile(tenant, &index, &outcome);
        outcome.map_err(|_| {
            Error::unavailable(
                "index_unavailable",
                "the index could not be rebuilt; see the server log",
            )
        })
    }

    /// Up to `limit` entries of the tenant's index after the id `after`, in id
    /// order, that `filter` keeps, with this replica's own changes in them;
    /// `None` when the index is not current (being opened, caught up, rebuilt,
    /// or failed), may lack documents (its last reconciliation left some out, or
    /// following the log is failing), or could not be read: the caller then
    /// reads the store. Never waits for the index to be reconciled.
    pub async fn list_indexed(
        &self,
        tenant: &TenantRecord,
        filter: ListFilter<'static>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<Vec<IndexedDocument>>, Error> {
        let complete = |index: &TenantIndex| {
            *index.sync.borrow() == IndexSync::Current
                && !self.may_lack_documents(&tenant.id, index)
        };
        let read = async {
            let index = self.tenant_index(tenant).await?;
            if !complete(&index) {
                return Ok(None);
            }
            if index.index.pending() > 0 {
                commit(&index, self.followed_position(&tenant.id, &index)).await?;
            }
            let reading = Arc::clone(&index);
            let listed =
                blocking(move || reading.index.list(after.as_deref(), &filter, limit)).await?;
            // A rebuild that began meanwhile may have emptied the index.
            Ok::<_, Error>(complete(&index).then_some(listed))
        };
        match read.await {
            Ok(Some(listed)) => {
                self.metrics.listed_from_index.inc();
                Ok(Some(listed))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, code = e.code(), error = %e.for_log(), "listing from the store: the index could not be read");
                Ok(None)
            }
        }
    }

    /// Runs a query for a tenant: candidates from the blind index, kept only when the
    /// decrypted fields match exactly, newest first.
    pub async fn search(
        &self,
        tenant: &TenantRecord,
        query: &Query,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SearchPage, Error> {
        let after = cursor.map(parse_cursor).transpose()?;
        let index = self.tenant_index(tenant).await?;
        wait_until_reconciled(&index, false).await?;
        if index.index.pending() > 0 {
            commit(&index, self.followed_position(&tenant.id, &index)).await?;
        }
        let candidates = {
            let index = Arc::clone(&index);
            let query = query.clone();
            let max = self.config.max_candidates;
            blocking(move || index.index.candidates(&query, &index.tokenizer, max)).await?
        };
        self.metrics
            .search_candidates
            .inc_by(candidates.len() as u64);
        // Entries whose sealed exact tags answered need no document read, only a
        // look that the document is still there (a delete's tombstone counts
        // at once, before the index hears of it); the rest (documents with too
        // many values to seal) are checked against the document's own fields.
        let (exact, unknown): (Vec<Candidate>, Vec<Candidate>) = candidates
            .into_iter()
            .partition(|c| c.exactness == Exactness::Matches);
        let present: Vec<Option<IndexedDocument>> = futures::stream::iter(exact)
            .map(|candidate| async move {
                let candidate = candidate.document;
                let Ok(id) = candidate.id.parse::<DocumentId>() else {
                    return Ok(None);
                };
                let presence = self.documents.presence(&tenant.id, &id).await?;
                Ok::<_, Error>((presence == Presence::Visible).then_some(candidate))
            })
            .buffer_unordered(FILTER_CONCURRENCY)
            .try_collect()
            .await?;
        self.metrics
            .search_documents_read
            .inc_by(unknown.len() as u64);
        let checked: Vec<Option<IndexedDocument>> = futures::stream::iter(unknown)
            .map(|candidate| async move {
                let candidate = candidate.document;
                let Ok(id) = candidate.id.parse::<DocumentId>() else {
                    return Ok(None);
                };
                match self.documents.open(tenant, &id).await {
                    Ok(opened) => Ok(matches(query, opened.metadata.fields)
                        .await?
                        .then_some(candidate)),
                    // Deleted since it was indexed.
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(FILTER_CONCURRENCY)
            .try_collect()
            .await?;
        // Judged after the candidates were read: a failure meanwhile counts.
        let complete = !self.may_lack_documents(&tenant.id, &index);
        if !complete {
            self.metrics.incomplete_searches.inc();
        }
        let mut hits: Vec<IndexedDocument> = present.into_iter().chain(checked).flatten().collect();
        hits.sort_by(|a, b| (b.uploaded_at_micros, &b.id).cmp(&(a.uploaded_at_micros, &a.id)));
        let total = hits.len() as u64;
        self.metrics.searches.inc();
        self.metrics.search_results.inc_by(total);
        let start = match &after {
            Some((micros, id)) => hits
                .iter()
                .position(|h| (h.uploaded_at_micros, &h.id) < (*micros, id))
                .unwrap_or(hits.len()),
            None => 0,
        };
        let page: Vec<IndexedDocument> = hits.into_iter().skip(start).take(limit + 1).collect();
        let (hits, next_cursor) = if page.len() > limit {
            let hits: Vec<IndexedDocument> = page.into_iter().take(limit).collect();
            let cursor = hits
                .last()
                .map(|h| format!("{}.{}", h.uploaded_at_micros, h.id));
            (hits, cursor)
        } else {
            (page, None)
        };
        Ok(SearchPage {
            total,
            hits,
            next_cursor,
            complete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_index(dir: &std::path::Path) -> TenantIndex {
        let root =
            vault_crypto::blind::IndexRootKey::new(vault_crypto::Key256::from_bytes([7; 32]), 1);
        let tokenizer = Tokenizer::new(&root, TokenPlan::new(1_000, &Default::default()));
        let (index, _) = BlindIndex::open(dir, &tokenizer).unwrap();
        TenantIndex::new(tokenizer, index, IndexSync::Current)
    }

    #[test]
    fn a_retired_index_stays_usable_until_its_last_holder_lets_go() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("acme-v1");
        let swapped_out = Arc::new(open_index(&dir));
        let search_in_flight = Arc::clone(&swapped_out);
        swapped_out.retired.0.set(dir.clone()).unwrap();
        drop(swapped_out);
        // The search that took the index before the swap can still write and
        // commit (a rotation used to remove the directory under it: a 500).
        let mut fields = Fields::new();
        fields.insert("claim_id".into(), vec!["CLM1".into()]);
        let document = indexed_document(
            &DocumentId::random(),
            DocumentKind::Claim,
            OffsetDateTime::now_utc(),
        );
        let tokens = search_in_flight
            .tokenizer
            .document_tokens(&document.id, &search_terms(&fields))
            .unwrap();
        search_in_flight.index.add(&document, &tokens).unwrap();
        search_in_flight.index.commit(None).unwrap();
        assert!(dir.exists());
        drop(search_in_flight);
        assert!(
            !dir.exists(),
            "the retired index is removed with its last holder"
        );
    }

    #[test]
    fn a_current_index_is_never_removed_on_drop() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("acme-v1");
        drop(open_index(&dir));
        assert!(dir.exists());
    }

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        let id = DocumentId::random();
        let (micros, parsed) = parse_cursor(&format!("1700000000000000.{id}")).unwrap();
        assert_eq!(micros, 1_700_000_000_000_000);
        assert_eq!(parsed, id.to_string());
        for bad in ["", "x", "12.", ".abc", "12.nothex"] {
            assert_eq!(parse_cursor(bad).unwrap_err().code(), "invalid_cursor");
        }
    }

    #[test]
    fn indexed_field_names_include_derived_fields() {
        let mut fields = Fields::new();
        fields.insert("patient_name".into(), vec!["DOE, JOHN".into()]);
        fields.insert("service_date".into(), vec!["20240301".into()]);
        let names = indexed_field_names(&search_terms(&fields));
        for name in [
            "patient_name",
            "patient_last_name",
            "service_date",
            "service_month",
        ] {
            assert!(names.contains(&name.to_owned()), "{name}");
        }
    }
}

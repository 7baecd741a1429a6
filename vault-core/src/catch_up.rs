//! Following the other replicas: every replica's uploads and deletes reach this
//! replica's blind indexes within [`FOLLOW_INTERVAL`] plus an index commit.
//!
//! The change feed is the tenant's audit log. Every upload and delete is in it
//! (its intent before the change, its outcome before the answer), ordered, shared
//! by every replica and written create-only, so it is the per-tenant feed a
//! replica needs, without a second write per change. For each tenant whose index
//! is open here, [`CatchUp`] reads the segments after the last one it read
//! (the index remembers where the log ended when it was opened, before it was
//! reconciled with the store) and, for each document an upload or delete event
//! names, asks the store how the document stands now: a visible document the
//! index lacks is opened and indexed, a deleted one is dropped. Events carry no
//! field values, so the document's key record is opened for its terms, once, and
//! only for documents another replica uploaded (this replica's own are in its
//! index already).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use vault_crypto::{DocumentId, TenantId};

use crate::audit::AuditService;
use crate::documents::{Documents, Presence};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::search::{indexed_document, terms_of, SearchService};
use crate::tenants::TenantRegistry;

/// How often each followed tenant's log is read for changes made elsewhere.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// Audit actions that change a tenant's documents. FORMAT CONSTANTS (the
/// endpoint table's).
const UPLOAD: &str = "document.upload";
const DELETE: &str = "document.delete";

/// Applies other replicas' document changes to this replica's indexes. Clones
/// share their services.
#[derive(Clone)]
pub struct CatchUp {
    audit: AuditService,
    search: SearchService,
    documents: Documents,
    tenants: TenantRegistry,
    metrics: Arc<Metrics>,
}

/// What one pass over a tenant's new segments did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Followed {
    /// Segments read.
    pub segments: u64,
    /// Documents added to the index (uploaded elsewhere).
    pub added: u64,
    /// Documents dropped from the index (deleted).
    pub removed: u64,
    /// Documents that can never be opened (their key record or metadata
    /// failed its integrity check), left out of the index, which then says it may be
    /// incomplete: one such document does not stop the tenant's follower.
    pub left_out: u64,
}

impl CatchUp {
    /// The catch-up over these services.
    pub fn new(
        audit: AuditService,
        search: SearchService,
        documents: Documents,
        tenants: TenantRegistry,
        metrics: Arc<Metrics>,
    ) -> Self {
        CatchUp {
            audit,
            search,
            documents,
            tenants,
            metrics,
        }
    }

    /// Follows every open index, every [`FOLLOW_INTERVAL`], until dropped.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for tenant in self.search.followed_tenants() {
                loop {
                    let followed = self.follow(&tenant).await;
                    self.search.follow_failed(&tenant, followed.is_err());
                    match followed {
                        // A full batch: more may wait, read at once.
                        Ok(f) if f.segments == crate::audit::read::FOLLOW_BATCH => continue,
                        Ok(_) => {}
                        Err(e) => {
                            self.metrics.index_failures.inc();
                            tracing::warn!(tenant = %tenant, code = e.code(), error = %e.for_log(), "could not follow the tenant's changes; retrying");
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Reads the tenant's log from where this replica stopped and applies the
    /// document changes in it.
    pub async fn follow(&self, tenant: &TenantId) -> Result<Followed, Error> {
        let Some(from) = self.search.followed_from(tenant) else {
            return Ok(Followed::default());
        };
        let (events, next) = self.audit.events_from_segment(tenant, from).await?;
        let mut followed = Followed {
            segments: next - from,
            ..Followed::default()
        };
        if next == from {
            return Ok(followed);
        }
        let mut touched = BTreeSet::new();
        for event in &events {
            if event.action != UPLOAD && event.action != DELETE {
                continue;
            }
            if let Some(id) = event.document.as_deref().and_then(|d| d.parse().ok()) {
                touched.insert(id);
            }
        }
        if !touched.is_empty() {
            let Some(record) = self.tenants.get(tenant).await? else {
                self.search.followed_to(tenant, next);
                return Ok(followed);
            };
            if record.status == crate::tenants::TenantStatus::Offboarded {
                // Offboarded through another replica: its index goes here too.
                self.search.forget_tenant(tenant);
                return Ok(followed);
            }
            // A disabled tenant's changes are applied all the same: skipping
            // them would leave this replica's index without the uploads made
            // just before the disable once the tenant is enabled again.
            for id in touched {
                match self.apply(&record, &id, &mut followed).await {
                    Ok(()) => {}
                    Err(e) if e.is_permanent() => {
                        tracing::error!(tenant = %tenant, document = %id, code = e.code(), error = %e.for_log(), "document left out of the index: it can never be opened; searches say they may be incomplete");
                        self.search.left_out(&record).await?;
                        followed.left_out += 1;
                    }
                    // Tried again from the same position at the next tick.
                    Err(e) => return Err(e),
                }
            }
        }
        self.search.followed_to(tenant, next);
        Ok(followed)
    }

    async fn apply(
        &self,
        tenant: &crate::tenants::TenantRecord,
        id: &DocumentId,
        followed: &mut Followed,
    ) -> Result<(), Error> {
        match self.documents.presence(&tenant.id, id).await? {
            Presence::Visible => {
                if self.search.holds(tenant, id).await? {
                    return Ok(());
                }
                let opened = self.documents.open(tenant, id).await?;
                let terms = terms_of(opened.metadata.fields.clone()).await?;
                let indexed = indexed_document(id, opened.facts.kind, opened.facts.uploaded_at);
                self.search.index_document(tenant, indexed, terms).await?;
                followed.added += 1;
            }
            Presence::Deleted => {
                self.search.remove_document(tenant, id).await?;
                followed.removed += 1;
            }
            // An upload whose intent is logged and whose document is not (yet)
            // visible: its outcome event, later in the log, brings it here again.
            Presence::Absent => {}
        }
        Ok(())
    }
}

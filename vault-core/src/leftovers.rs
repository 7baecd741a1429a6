//! Collecting what crashes leave behind: the body and key record of an upload
//! that never became visible (the process died before its facts object was
//! written). They are invisible and harmless, but they hold storage and
//! ciphertext of data that was never acknowledged.
//!
//! A document's objects without its facts object are a leftover once the newest
//! of them is older than the grace period, which is longer than any upload may
//! take (the transfer time limit plus ten minutes): an upload in flight is never
//! touched. One replica collects at a time (a vault-wide lease), and a pass is
//! due once an hour for the whole vault, not per replica: each replica checks
//! soon after start-up and then every hour, and passes only when the record of
//! the last finished pass (its time on the store's clock) is older than that.
//! A pass lists every document object, so a replica added to a large vault does
//! not start with one. Removals are counted in `vault_leftovers_removed_total`.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use time::OffsetDateTime;
use vault_crypto::DocumentId;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::storage::lease::{Lease, LeaseError, LeaseTiming};
use crate::storage::{ObjectName, ObjectStore};
use crate::tenants::{TenantRegistry, TenantStatus};

/// Longest time between two passes (shorter when the grace period is).
const PERIOD: Duration = Duration::from_secs(3600);
/// Longest wait for the first pass after start-up (let the replica settle first).
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);
/// The collection lease: refreshed every 10 s, stale after a minute.
const TIMING: LeaseTiming = LeaseTiming {
    refresh: Duration::from_secs(10),
    stale: Duration::from_secs(60),
};

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Documents whose leftover objects were removed.
    pub documents: u64,
    /// Objects removed.
    pub objects: u64,
    /// Documents without facts still inside the grace period (uploads in flight,
    /// or leftovers too young to tell).
    pub young: u64,
}

/// The collector. Clones share their services.
#[derive(Clone)]
pub struct Leftovers {
    store: Arc<dyn ObjectStore>,
    tenants: TenantRegistry,
    metrics: Arc<Metrics>,
    holder: String,
    grace: Duration,
}

impl Leftovers {
    /// A collector over `store` that leaves alone anything younger than `grace`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        tenants: TenantRegistry,
        metrics: Arc<Metrics>,
        holder: String,
        grace: Duration,
    ) -> Self {
        Leftovers {
            store,
            tenants,
            metrics,
            holder,
            grace,
        }
    }

    /// Between two passes over the vault: an hour, or the grace period when
    /// that is shorter.
    fn period(&self) -> Duration {
        PERIOD.min(self.grace)
    }

    /// Collects when a pass is due, checked soon after start-up and then every
    /// period, until dropped.
    pub async fn run(self) {
        tokio::time::sleep(FIRST_PASS_AFTER.min(self.grace)).await;
        loop {
            match self.collect_when_due().await {
                Ok(Some(done)) if done.objects > 0 => {
                    tracing::info!(
                        documents = done.documents,
                        objects = done.objects,
                        "removed the leftovers of crashed uploads"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(code = e.code(), error = %e.for_log(), "collecting crash leftovers failed; retrying later");
                }
            }
            tokio::time::sleep(self.period()).await;
        }
    }

    /// One pass over every tenant; `None` when another replica is collecting.
    pub async fn collect(&self) -> Result<Option<Collected>, Error> {
        self.collect_if(false).await
    }

    /// A pass, unless one finished less than a period ago (on any replica) or
    /// another replica is collecting (`None` then).
    pub async fn collect_when_due(&self) -> Result<Option<Collected>, Error> {
        self.collect_if(true).await
    }

    async fn collect_if(&self, only_when_due: bool) -> Result<Option<Collected>, Error> {
        let lease = match Lease::acquire(
            self.store.clone(),
            &ObjectName::vault_lease_prefix("leftovers"),
            &self.holder,
            "leftovers",
            TIMING,
        )
        .await
        {
            Ok(lease) => lease,
            Err(LeaseError::Held { .. }) => return Ok(None),
            Err(LeaseError::Storage(e)) => return Err(e.into()),
        };
        // Ages are measured on the store's clock (the lease object was written
        // just now), so a replica whose clock runs ahead cannot take an upload
        // in flight for an old leftover.
        let collected = match lease.store_time().await {
            Ok(now) => {
                let now = now.unwrap_or_else(OffsetDateTime::now_utc);
                self.pass_unless_recent(now, only_when_due).await
            }
            Err(e) => Err(e.into()),
        };
        lease.release().await;
        collected.map(Some)
    }

    /// The pass, and its record; nothing when `only_when_due` and the last
    /// recorded pass finished within the period before `now`.
    async fn pass_unless_recent(
        &self,
        now: OffsetDateTime,
        only_when_due: bool,
    ) -> Result<Collected, Error> {
        let record = ObjectName::leftovers_last_pass();
        if only_when_due {
            let last = self
                .store
                .head(&record)
                .await?
                .and_then(|info| info.modified);
            // A record from the future (the store's clock stepped back) is no
            // reason to wait: only a pass within the period before now is.
            if last.is_some_and(|at| at <= now && now - at < self.period()) {
                return Ok(Collected::default());
            }
        }
        let collected = self.pass(now).await?;
        self.store
            .replace(&record, bytes::Bytes::from_static(b"{\"format\":1}"))
            .await?;
        Ok(collected)
    }

    async fn pass(&self, now: OffsetDateTime) -> Result<Collected, Error> {
        let mut collected = Collected::default();
        for tenant in self.tenants.list().await? {
            if tenant.status == TenantStatus::Offboarded {
                continue;
            }
            // A document's objects are neighbours in the listing (they share
            // its prefix), so the listing streams and one document is held at a
            // time, whatever the tenant's size.
            let prefix = ObjectName::docs_prefix(&tenant.id);
            let mut pages = self.store.list_pages(&prefix, None);
            let mut current: Option<DocumentObjects> = None;
            while let Some(page) = pages.try_next().await? {
                for info in page {
                    let Some((_, id)) = ObjectName::document_object_of(info.name.as_str()) else {
                        continue;
                    };
                    if current.as_ref().is_some_and(|c| c.id != id) {
                        if let Some(done) = current.take() {
                            self.settle(done, now, &mut collected).await?;
                        }
                    }
                    let entry = current.get_or_insert_with(|| DocumentObjects {
                        id,
                        visible: false,
                        newest: None,
                        names: Vec::new(),
                    });
                    entry.visible |= info.name.meta_document().is_some();
                    entry.newest = entry.newest.max(info.modified);
                    entry.names.push(info.name);
                }
            }
            if let Some(done) = current.take() {
                self.settle(done, now, &mut collected).await?;
            }
        }
        Ok(collected)
    }

    /// Removes one document's objects if they are a leftover: no facts object
    /// (never visible) and older than the grace period.
    async fn settle(
        &self,
        document: DocumentObjects,
        now: OffsetDateTime,
        collected: &mut Collected,
    ) -> Result<(), Error> {
        if document.visible {
            return Ok(());
        }
        let old = document.newest.is_some_and(|at| now - at > self.grace);
        if !old {
            collected.young += 1;
            return Ok(());
        }
        for name in &document.names {
            self.store.delete_all_versions(name).await?;
        }
        collected.documents += 1;
        collected.objects += document.names.len() as u64;
        self.metrics
            .leftovers_removed
            .inc_by(document.names.len() as u64);
        Ok(())
    }
}

/// The objects of one document, as the listing gives them.
struct DocumentObjects {
    id: DocumentId,
    /// Whether its facts object exists.
    visible: bool,
    /// Its newest object's time.
    newest: Option<OffsetDateTime>,
    names: Vec<ObjectName>,
}

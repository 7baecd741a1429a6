//! The vault's long operations, each started as a job ([`crate::jobs`]): index
//! rebuilds, index key rotations and re-plans, rewraps and backups.
//!
//! What can be refused at once (an unknown or offboarded tenant, a bad plan, no
//! backup target, one already running) is refused before a job starts, so the
//! caller gets the same answer it always did; the rest happens in the job.
//!
//! Work on a tenant's shared keys (KEK rotation and rewrap; index key rotation
//! and re-plan) runs on one replica at a time: it holds the tenant's lease of that
//! scope in the store ([`crate::storage::lease`]) for as long as it runs, and a
//! replica that finds it held elsewhere answers 409 `running_elsewhere`. A crashed
//! holder's lease is stale after a minute. Index rebuilds touch only this
//! replica's own index and take none.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vault_crypto::TenantId;

use crate::audit::{AuditService, Outcome};
use crate::backup::schedule::BackupService;
use crate::backup::BackupError;
use crate::error::Error;
use crate::jobs::{kind, JobResult, Jobs, Started};
use crate::key_lifecycle::KeyLifecycle;
use crate::search::{Replan, SearchService, REPLAN_GROWTH};
use crate::storage::lease::{Lease, LeaseError, LeaseTiming};
use crate::storage::{ObjectName, ObjectStore};
use crate::tenants::{TenantRecord, TenantRegistry};

/// Leases on a tenant's key work: refreshed every 10 s, a crashed holder's stale
/// after a minute (well above the clock skew replicas may have).
const TENANT_WORK: LeaseTiming = LeaseTiming {
    refresh: Duration::from_secs(10),
    stale: Duration::from_secs(60),
};
/// Lease scope of KEK rotation and rewrap.
const KEYS: &str = "keys";
/// Lease scope of index key rotation and re-plan.
const INDEX_KEY: &str = "index-key";

pub use vault_api::BackupSummary;

/// Starts the vault's long operations as jobs. Clones share them.
#[derive(Clone)]
pub struct Maintenance {
    /// The jobs this replica runs.
    pub jobs: Jobs,
    /// Every replica's jobs (follow, list, cancel from any replica).
    pub board: crate::jobs::JobBoard,
    audit: AuditService,
    lifecycle: KeyLifecycle,
    search: SearchService,
    tenants: TenantRegistry,
    backups: BackupService,
    store: Arc<dyn ObjectStore>,
    /// This replica, as leases name it.
    holder: String,
}

/// What [`Maintenance`] works with.
pub struct MaintenanceDeps {
    /// The job table.
    pub jobs: Jobs,
    /// The audit logs (a re-plan is recorded before it starts).
    pub audit: AuditService,
    /// Key work.
    pub lifecycle: KeyLifecycle,
    /// The indexes.
    pub search: SearchService,
    /// Tenant records.
    pub tenants: TenantRegistry,
    /// Backups.
    pub backups: BackupService,
    /// Where leases are kept.
    pub store: Arc<dyn ObjectStore>,
    /// This replica, as leases name it.
    pub holder: String,
}

impl Maintenance {
    /// Long operations over these services.
    pub fn new(deps: MaintenanceDeps) -> Self {
        let MaintenanceDeps {
            jobs,
            audit,
            lifecycle,
            search,
            tenants,
            backups,
            store,
            holder,
        } = deps;
        Maintenance {
            board: crate::jobs::JobBoard::new(jobs.clone(), store.clone(), holder.clone()),
            jobs,
            audit,
            lifecycle,
            search,
            tenants,
            backups,
            store,
            holder,
        }
    }

    /// Takes the tenant's lease of `scope` for `operation`.
    async fn lease(&self, tenant: &TenantId, scope: &str, operation: &str) -> Result<Lease, Error> {
        Lease::acquire(
            self.store.clone(),
            &ObjectName::tenant_lease_prefix(tenant, scope),
            &self.holder,
            operation,
            TENANT_WORK,
        )
        .await
        .map_err(|e| match e {
            LeaseError::Held {
                holder,
                operation,
                since,
            } => Error::conflict(
                "running_elsewhere",
                format!(
                    "{operation} of this tenant runs on another replica ({holder}, since {since}); retry when it has finished"
                ),
            ),
            LeaseError::Storage(e) => e.into(),
        })
    }

    /// Rotates the tenant's KEK (see [`KeyLifecycle::rotate`]), on one replica at
    /// a time.
    pub async fn rotate_keys(&self, tenant: &TenantId) -> Result<TenantRecord, Error> {
        let lease = self.lease(tenant, KEYS, "key.rotate").await?;
        let rotated = self.lifecycle.rotate(tenant).await;
        lease.release().await;
        rotated
    }

    /// Starts emptying a tenant's index and filling it again from the store.
    pub async fn rebuild_index(&self, tenant: &TenantId, actor: &str) -> Result<Started, Error> {
        let record = self.lifecycle.active(tenant).await?;
        let search = self.search.clone();
        self.jobs
            .start(kind::INDEX_REBUILD, Some(tenant), actor, |job| async move {
                search
                    .rebuild(&record, job.as_ref())
                    .await
                    .map(JobResult::Reconcile)
            })
    }

    /// Starts moving a tenant's index to its next index key (and, with
    /// `planned_documents`, to a new token plan).
    pub async fn rotate_index(
        &self,
        tenant: &TenantId,
        planned_documents: Option<u64>,
        actor: &str,
    ) -> Result<Started, Error> {
        self.lifecycle.active(tenant).await?;
        let lease = self.lease(tenant, INDEX_KEY, kind::INDEX_ROTATE).await?;
        let (lifecycle, id) = (self.lifecycle.clone(), tenant.clone());
        self.jobs
            .start(kind::INDEX_ROTATE, Some(tenant), actor, |job| async move {
                let report = lifecycle
                    .rotate_index(&id, planned_documents, job.as_ref())
                    .await
                    .map(JobResult::Reconcile);
                lease.release().await;
                report
            })
    }

    /// Starts re-wrapping a tenant's key records under its current branch key.
    pub async fn rewrap(
        &self,
        tenant: &TenantId,
        retire_old: bool,
        actor: &str,
    ) -> Result<Started, Error> {
        self.lifecycle.active(tenant).await?;
        let lease = self.lease(tenant, KEYS, kind::KEY_REWRAP).await?;
        let (lifecycle, id) = (self.lifecycle.clone(), tenant.clone());
        self.jobs
            .start(kind::KEY_REWRAP, Some(tenant), actor, |job| async move {
                let report = lifecycle
                    .rewrap(&id, retire_old, job.as_ref())
                    .await
                    .map(JobResult::Rewrap);
                lease.release().await;
                report
            })
    }

    /// Starts a backup (without the retention rules: those run after scheduled
    /// backups and on `prune`). Refused when no target is configured or one runs.
    pub fn backup(&self, actor: &str) -> Result<Started, BackupError> {
        self.backups.check_can_start()?;
        let (backups, trigger) = (self.backups.clone(), actor.to_owned());
        self.jobs
            .start(kind::BACKUP, None, actor, |_| async move {
                let manifest = backups.run_backup(&trigger, false).await?;
                Ok(JobResult::Backup(BackupSummary {
                    snapshot: manifest.snapshot.clone(),
                    objects: manifest.objects,
                    bytes: manifest.bytes,
                    bytes_added: manifest.bytes_added,
                }))
            })
            .map_err(|_| BackupError::Busy)
    }

    /// Runs the re-plans indexes ask for, for ever: each one that is still wanted
    /// (the tenant's record may have been re-planned meanwhile) is recorded in the
    /// tenant's audit log, then run as an `index.replan` job.
    pub async fn run_replans(self, mut wanted: mpsc::UnboundedReceiver<Replan>) {
        while let Some(replan) = wanted.recv().await {
            match self.replan(&replan).await {
                Ok(()) => {}
                // Another replica re-plans this tenant's index.
                Err(e) if e.code() == "running_elsewhere" => {
                    tracing::debug!(tenant = %replan.tenant, "blind index re-plan runs on another replica");
                }
                Err(e) => {
                    tracing::error!(tenant = %replan.tenant, code = e.code(), error = %e.for_log(), "blind index re-plan not started");
                }
            }
        }
    }

    async fn replan(&self, replan: &Replan) -> Result<(), Error> {
        let Replan {
            tenant,
            held,
            planned,
            new_plan,
        } = replan;
        match self.tenants.get(tenant).await? {
            Some(fresh)
                if fresh.is_active()
                    && *held
                        > self
                            .search
                            .planned_documents(&fresh)
                            .saturating_mul(REPLAN_GROWTH) => {}
            _ => return Ok(()),
        }
        let lease = self.lease(tenant, INDEX_KEY, kind::INDEX_REPLAN).await?;
        let mut event = crate::audit::new_event(
            kind::INDEX_REPLAN,
            "system".to_owned(),
            Outcome::Allowed,
            202,
        );
        event.detail = Some(format!(
            "{held} documents outgrew the plan for {planned}; re-planning for {new_plan}"
        ));
        // Audited before it starts: a re-plan that cannot be recorded does not run.
        self.audit.append(tenant, event).await?;
        let (lifecycle, id, new_plan) = (self.lifecycle.clone(), tenant.clone(), *new_plan);
        self.jobs
            .start(kind::INDEX_REPLAN, Some(tenant), "system", |job| async move {
                let report = lifecycle
                    .rotate_index(&id, Some(new_plan), job.as_ref())
                    .await;
                lease.release().await;
                let report = report?;
                tracing::info!(tenant = %id, planned = new_plan, documents = report.documents, "blind index re-planned");
                Ok(JobResult::Reconcile(report))
            })?;
        Ok(())
    }
}

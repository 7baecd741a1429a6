//! The server's backup job: on a cron schedule and on demand, one at a time, with
//! its status in `/metrics` and `GET /v1/admin/backups`, recorded in the system
//! audit log.
//!
//! A backup interrupted by a crash leaves no manifest, only data objects that the
//! next run finds already present and does not copy again: it resumes. The last
//! success survives restarts because it is read back from the repository's newest
//! manifest at start-up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;
use vault_crypto::TenantId;

use super::lock::{holder_name, RepoLock};
use super::manifest::SnapshotInfo;
use super::repo::Repository;
use super::retention::PruneReport;
use super::snapshot::{Selection, Source};
use super::{BackupError, Progress};
use crate::audit::{self, AuditService, Outcome, SYSTEM_LOG};
use crate::config::{parse_schedule, BackupConfig, Config, StorageConfig};
use crate::metrics::Metrics;
use crate::storage::ObjectStore;
use crate::storage::StoreLocation;

/// The trigger (and audit actor) of scheduled runs.
const SCHEDULE: &str = "schedule";

/// Where the configured repository is.
fn location(config: &BackupConfig) -> Result<StoreLocation, BackupError> {
    let target = config.target.as_deref().ok_or(BackupError::NotConfigured)?;
    StoreLocation::parse(target).map_err(BackupError::from)
}

/// Where a running backup is.
#[derive(Clone, Debug, Serialize)]
pub struct Running {
    /// What started it: `schedule` or `operator:<id>`.
    pub trigger: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Objects to look at.
    pub objects_total: u64,
    /// Objects done.
    pub objects_done: u64,
    /// Bytes to look at.
    pub bytes_total: u64,
    /// Bytes done.
    pub bytes_done: u64,
}

/// The last finished backup.
#[derive(Clone, Debug, Serialize)]
pub struct Finished {
    /// Snapshot id (on success).
    pub snapshot: Option<String>,
    /// Whether it succeeded.
    pub ok: bool,
    /// The failure (on error).
    pub error: Option<String>,
    /// Not run: another server held the repository's lock (not a failure).
    #[serde(default)]
    pub skipped: bool,
    /// When it finished.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Wall time.
    pub seconds: f64,
    /// Snapshot size.
    pub bytes: u64,
    /// Bytes copied.
    pub bytes_added: u64,
    /// Objects in the snapshot.
    pub objects: u64,
}

/// What `GET /v1/admin/backups` reports about the job.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobStatus {
    /// Whether a target is configured.
    pub configured: bool,
    /// The repository.
    pub target: Option<String>,
    /// The cron schedule.
    pub schedule: Option<String>,
    /// The next scheduled run.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_run: Option<OffsetDateTime>,
    /// A backup in progress.
    pub running: Option<Running>,
    /// The last backup that finished (success or failure) since start-up.
    pub last: Option<Finished>,
    /// The last success (also from the repository, across restarts).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    /// Age of the last success in seconds.
    pub age_seconds: Option<i64>,
}

/// The backup job of a server. Clones share it.
#[derive(Clone)]
pub struct BackupService(Arc<BackupJob>);

/// What a [`BackupService`] holds.
pub struct BackupJob {
    /// Settings.
    pub config: BackupConfig,
    /// What is backed up.
    store: Arc<dyn ObjectStore>,
    /// Manifests are signed with the audit key; runs are recorded in the system log.
    audit: AuditService,
    metrics: Arc<Metrics>,
    /// Who holds the repository's lock: this server (its host and data directory).
    holder: String,
    /// What the manifest says was backed up (`fs` or `s3://bucket/prefix`).
    source_label: String,
    /// Held by a backup or a prune: never both at once.
    lock: tokio::sync::Mutex<()>,
    status: Mutex<JobStatus>,
    /// Opened once: opening a directory repository clears its temporary files,
    /// which must never happen under a running backup.
    repo: tokio::sync::OnceCell<Arc<Repository>>,
}

impl std::ops::Deref for BackupService {
    type Target = BackupJob;

    fn deref(&self) -> &BackupJob {
        &self.0
    }
}

/// Clears a backup's "running" status when it stops before it finished (its job
/// was cancelled): the status says it did not finish. Its data objects stay and
/// the next backup reuses them; its repository lock stops being refreshed
/// ([`RepoLock`]'s drop) and is cleared by this server's next run or goes stale.
struct MarkStoppedIfDropped {
    service: Option<BackupService>,
    started: Instant,
}

impl MarkStoppedIfDropped {
    fn disarm(mut self) {
        self.service = None;
    }
}

impl Drop for MarkStoppedIfDropped {
    fn drop(&mut self) {
        let Some(service) = self.service.take() else {
            return;
        };
        let seconds = self.started.elapsed().as_secs_f64();
        service.update(|s| {
            s.running = None;
            s.last = Some(Finished {
                snapshot: None,
                ok: false,
                error: Some("cancelled before it finished".to_owned()),
                skipped: false,
                finished_at: OffsetDateTime::now_utc(),
                seconds,
                bytes: 0,
                bytes_added: 0,
                objects: 0,
            });
        });
    }
}

/// Progress of a running backup, into the job status.
struct StatusProgress<'a> {
    service: &'a BackupService,
    objects_done: AtomicU64,
    bytes_done: AtomicU64,
}

impl Progress for StatusProgress<'_> {
    fn start(&self, _phase: &str, objects: u64, bytes: u64) {
        self.service.update(|s| {
            if let Some(r) = s.running.as_mut() {
                r.objects_total = objects;
                r.bytes_total = bytes;
            }
        });
    }

    fn advance(&self, bytes: u64) {
        let objects = self.objects_done.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.bytes_done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.service.update(|s| {
            if let Some(r) = s.running.as_mut() {
                r.objects_done = objects;
                r.bytes_done = bytes;
            }
        });
    }
}

impl BackupService {
    /// The backup job of the vault `config` describes, over `store`.
    pub fn new(
        config: &Config,
        store: Arc<dyn ObjectStore>,
        audit: AuditService,
        metrics: Arc<Metrics>,
    ) -> Self {
        let source_label = match &config.storage {
            StorageConfig::Fs { .. } => "fs".to_owned(),
            StorageConfig::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        };
        let holder = holder_name(&config.data_dir);
        let config = config.backup.clone();
        let status = JobStatus {
            configured: config.target.is_some(),
            target: config.target.clone(),
            schedule: config.schedule.clone(),
            ..JobStatus::default()
        };
        BackupService(Arc::new(BackupJob {
            config,
            store,
            audit,
            metrics,
            holder,
            source_label,
            lock: tokio::sync::Mutex::new(()),
            status: Mutex::new(status),
            repo: tokio::sync::OnceCell::new(),
        }))
    }

    fn update(&self, change: impl FnOnce(&mut JobStatus)) {
        change(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The job's status now.
    pub fn status(&self) -> JobStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        status.age_seconds = status
            .last_success_at
            .map(|at| (OffsetDateTime::now_utc() - at).whole_seconds());
        status
    }

    /// Whether a backup or prune is running.
    pub fn is_running(&self) -> bool {
        self.lock.try_lock().is_err()
    }

    /// Opens the configured repository.
    pub async fn repository(&self) -> Result<Arc<Repository>, BackupError> {
        self.repo
            .get_or_try_init(|| async {
                Repository::open(
                    &location(&self.config)?,
                    self.config.lock_days,
                    self.config.lock_mode.as_deref() == Some("compliance"),
                )
                .await
                .map(Arc::new)
            })
            .await
            .cloned()
    }
}

fn selection(config: &BackupConfig) -> Result<Selection, BackupError> {
    let tenants = config
        .tenants
        .iter()
        .map(|t| TenantId::new(t).map_err(|_| BackupError::Invalid(format!("bad tenant {t:?}"))))
        .collect::<Result<_, _>>()?;
    Ok(Selection { tenants })
}

impl BackupService {
    fn record_success(&self, manifest: &SnapshotInfo, seconds: f64) {
        let metrics = &self.metrics;
        metrics
            .backup_last_success
            .set(manifest.finished_at.unix_timestamp());
        metrics.backup_age.set(0);
        metrics.backup_last_duration_seconds.set(seconds);
        metrics
            .backup_last_size
            .set(i64::try_from(manifest.bytes).unwrap_or(i64::MAX));
        metrics
            .backup_last_added
            .set(i64::try_from(manifest.bytes_added).unwrap_or(i64::MAX));
        self.update(|s| {
            s.running = None;
            s.last_success_at = Some(manifest.finished_at);
            s.last = Some(Finished {
                snapshot: Some(manifest.snapshot.clone()),
                ok: true,
                error: None,
                skipped: false,
                finished_at: manifest.finished_at,
                seconds,
                bytes: manifest.bytes,
                bytes_added: manifest.bytes_added,
                objects: manifest.objects,
            });
        });
    }

    /// Runs one backup now (waiting for nothing: `Busy` when one is running), then
    /// applies the retention rules when `prune` is set. Records the outcome in the
    /// system audit log (and fails if that record cannot be written).
    pub async fn run_backup(
        &self,
        trigger: &str,
        prune: bool,
    ) -> Result<SnapshotInfo, BackupError> {
        let service = self;
        let _guard = service.lock.try_lock().map_err(|_| BackupError::Busy)?;
        if trigger == SCHEDULE {
            // Audited before it writes anything, as every change is; an
            // operator's run is recorded so by its request.
            self.record_event_with_status(
                "backup.run",
                trigger,
                Outcome::Intent,
                102,
                "scheduled run starting".to_owned(),
            )
            .await?;
        }
        service.update(|s| {
            s.running = Some(Running {
                trigger: trigger.to_owned(),
                started_at: OffsetDateTime::now_utc(),
                objects_total: 0,
                objects_done: 0,
                bytes_total: 0,
                bytes_done: 0,
            });
        });
        let started = Instant::now();
        let stopped = MarkStoppedIfDropped {
            service: Some(self.clone()),
            started,
        };
        let progress = StatusProgress {
            service,
            objects_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
        };
        let outcome = async {
            let repo = service.repository().await?;
            let lock = self.lock_repository(&repo, "backup").await?;
            let result = self.backup_and_prune(&repo, &progress, prune).await;
            lock.release().await;
            result
        }
        .await;
        stopped.disarm();
        let seconds = started.elapsed().as_secs_f64();
        let (event_outcome, detail) = match &outcome {
            Ok((manifest, pruned)) => {
                self.record_success(manifest, seconds);
                (
                    Outcome::Allowed,
                    format!(
                        "snapshot {} objects {} bytes {} added {}{}",
                        manifest.snapshot,
                        manifest.objects,
                        manifest.bytes,
                        manifest.bytes_added,
                        pruned
                            .as_ref()
                            .map(|p| format!(" pruned {}", p.removed.len()))
                            .unwrap_or_default()
                    ),
                )
            }
            Err(e) => {
                // Another replica backing up this repository is not a failure of ours.
                let skipped = matches!(e, BackupError::Locked { .. });
                let message = if skipped {
                    tracing::info!(reason = %e, trigger, "backup skipped");
                    format!("skipped: {e}")
                } else {
                    self.metrics.backup_failures.inc();
                    tracing::error!(error = %e, trigger, "backup failed");
                    e.to_string()
                };
                service.update(|s| {
                    s.running = None;
                    s.last = Some(Finished {
                        snapshot: None,
                        ok: false,
                        error: Some(message.clone()),
                        skipped,
                        finished_at: OffsetDateTime::now_utc(),
                        seconds,
                        bytes: 0,
                        bytes_added: 0,
                        objects: 0,
                    });
                });
                (Outcome::Failed, message)
            }
        };
        self.record_event("backup.run", trigger, event_outcome, detail)
            .await?;
        outcome.map(|(manifest, _)| manifest)
    }

    /// Takes the repository's lock for `operation`, held by this server (its host and
    /// data directory).
    async fn lock_repository(
        &self,
        repo: &Repository,
        operation: &str,
    ) -> Result<RepoLock, BackupError> {
        RepoLock::acquire(Arc::clone(&repo.store), &self.holder, operation).await
    }

    /// A snapshot, then the retention rules when `prune` is set (and any are).
    async fn backup_and_prune(
        &self,
        repo: &Repository,
        progress: &StatusProgress<'_>,
        prune: bool,
    ) -> Result<(SnapshotInfo, Option<PruneReport>), BackupError> {
        let service = self;
        let source = Source {
            store: self.store.as_ref(),
            label: self.source_label.clone(),
            signer: &self.audit.signer.key,
        };
        let manifest =
            super::snapshot::run(source, repo, &selection(&service.config)?, progress).await?;
        let pruned = if prune && !service.config.retention.is_empty() {
            Some(
                super::retention::prune(repo, &self.audit.signer.key, &service.config.retention)
                    .await?,
            )
        } else {
            None
        };
        Ok((manifest, pruned))
    }

    /// Applies the retention rules now (`Busy` while a backup runs).
    pub async fn run_prune(&self, actor: &str) -> Result<PruneReport, BackupError> {
        let service = self;
        let _guard = service.lock.try_lock().map_err(|_| BackupError::Busy)?;
        let repo = service.repository().await?;
        let lock = self.lock_repository(&repo, "prune").await?;
        let result =
            super::retention::prune(&repo, &self.audit.signer.key, &service.config.retention).await;
        lock.release().await;
        let (outcome, detail) = match &result {
            Ok(r) => (
                Outcome::Allowed,
                format!(
                    "removed {} kept {} freed {}",
                    r.removed.len(),
                    r.kept.len(),
                    r.bytes_freed
                ),
            ),
            Err(e) => (Outcome::Failed, e.to_string()),
        };
        self.record_event("backup.prune", actor, outcome, detail)
            .await?;
        result
    }

    /// Appends a backup event to the system log (for scheduled runs, which no request
    /// carries; on-demand runs are also recorded by the request's own event).
    async fn record_event(
        &self,
        action: &str,
        actor: &str,
        outcome: Outcome,
        detail: String,
    ) -> Result<(), BackupError> {
        let status = if outcome == Outcome::Allowed {
            200
        } else {
            500
        };
        self.record_event_with_status(action, actor, outcome, status, detail)
            .await
    }

    async fn record_event_with_status(
        &self,
        action: &str,
        actor: &str,
        outcome: Outcome,
        status: u16,
        detail: String,
    ) -> Result<(), BackupError> {
        let system = TenantId::new(SYSTEM_LOG).map_err(|e| BackupError::Internal(e.to_string()))?;
        let mut event = audit::new_event(action, actor.to_owned(), outcome, status);
        event.detail = Some(detail);
        self.audit
            .append(&system, event)
            .await
            .map(|_| ())
            .map_err(|e| BackupError::Internal(format!("audit: {e}")))
    }

    /// Reads the last success back from the repository (after a restart).
    pub async fn load_last_success(&self) {
        if self.config.target.is_none() {
            return;
        }
        let latest = async {
            let repo = self.repository().await?;
            repo.latest(&self.audit.signer.public).await
        }
        .await;
        match latest {
            Ok(Some(manifest)) => {
                let m = &self.metrics;
                m.backup_last_success
                    .set(manifest.finished_at.unix_timestamp());
                m.backup_last_size
                    .set(i64::try_from(manifest.bytes).unwrap_or(i64::MAX));
                m.backup_last_added
                    .set(i64::try_from(manifest.bytes_added).unwrap_or(i64::MAX));
                let duration = manifest.finished_at - manifest.created_at;
                m.backup_last_duration_seconds
                    .set(duration.as_seconds_f64().max(0.0));
                self.update(|s| s.last_success_at = Some(manifest.finished_at));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not read the backup repository at start-up")
            }
        }
    }

    /// Runs backups on the configured schedule, for ever.
    pub async fn run_scheduler(self) {
        self.load_last_success().await;
        let Some(expr) = self.config.schedule.clone() else {
            return;
        };
        let schedule = match parse_schedule(&expr) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "backup schedule is invalid; no scheduled backups");
                return;
            }
        };
        loop {
            let Ok(next) = schedule.find_next_occurrence(&chrono::Utc::now(), false) else {
                tracing::error!(%expr, "backup schedule has no next run; no scheduled backups");
                return;
            };
            let next_unix = next.timestamp();
            self.update(|s| {
                s.next_run = OffsetDateTime::from_unix_timestamp(next_unix).ok();
            });
            let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            match self.run_backup(SCHEDULE, true).await {
                Ok(manifest) => {
                    tracing::info!(snapshot = %manifest.snapshot, "scheduled backup done")
                }
                // Logged where it failed (run_backup); a busy job skips this tick.
                Err(BackupError::Busy) => {
                    tracing::warn!("scheduled backup skipped: one is running")
                }
                Err(_) => {}
            }
        }
    }

    /// Whether a backup may start now: a target is configured and none runs.
    pub fn check_can_start(&self) -> Result<(), BackupError> {
        if self.config.target.is_none() {
            return Err(BackupError::NotConfigured);
        }
        if self.is_running() {
            return Err(BackupError::Busy);
        }
        Ok(())
    }
}

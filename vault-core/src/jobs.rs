//! Long operations as jobs the vault owns: index rebuilds, index key rotations and
//! re-plans, rewraps and backups.
//!
//! A job runs in its own task, never in a request's future: a client that
//! disconnects, or a request that runs out of time, leaves it running. The API
//! starts one and answers with its record (or waits for it, for the endpoints
//! that always answered with the finished report), and anyone may follow it by
//! id. An operator may cancel a running job: its task is dropped at its next
//! await, and the guards of the work it was doing put the tenant back in order
//! (an index being rebuilt is reconciled again, a half-built next index is
//! removed, a backup's status is cleared) before the job is marked cancelled.
//!
//! At most one job of a kind runs per tenant at a time. The table is this
//! process's; [`JobBoard`] publishes it in the store, so that every replica can
//! show, list and cancel every replica's jobs.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};
use vault_crypto::TenantId;

use crate::error::Error;
use crate::progress::Progress;

mod board;
pub use board::JobBoard;

pub use vault_api::{
    is_job_id, ErrorBody, JobList, JobProgress, JobRecord, JobResult, JobState, JOB_ID_PREFIX,
};

/// Finished jobs kept for their status (the oldest are forgotten first).
const FINISHED_KEPT: usize = 100;

/// Kinds of job, as their records name them.
pub mod kind {
    /// Empties a tenant's index and fills it again from the store.
    pub const INDEX_REBUILD: &str = "index.rebuild";
    /// Moves a tenant's index to its next index key.
    pub const INDEX_ROTATE: &str = "index.rotate";
    /// Moves a tenant's index that outgrew its plan to a new plan.
    pub const INDEX_REPLAN: &str = "index.replan";
    /// Re-wraps a tenant's key records under its current branch key.
    pub const KEY_REWRAP: &str = "key.rewrap";
    /// Backs the vault up.
    pub const BACKUP: &str = "backup";
}

/// The jobs that may not run together for one tenant: every job on a tenant's
/// index (a rebuild, a key rotation, a re-plan) is in one lane, each other kind in
/// its own.
fn lane(kind: &str) -> &str {
    if kind.starts_with("index.") {
        "index"
    } else {
        kind
    }
}

/// The jobs of a server. Clones share them.
#[derive(Clone, Default)]
pub struct Jobs(Arc<JobTable>);

#[derive(Default)]
struct JobTable {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, Entry>,
    /// Finished jobs, oldest first.
    finished: VecDeque<String>,
}

struct Entry {
    record: JobRecord,
    abort: Option<tokio::task::AbortHandle>,
    /// Turns true when the job has stopped.
    done: watch::Sender<bool>,
}

/// What a running job reports its progress through.
pub struct JobHandle {
    jobs: Jobs,
    id: String,
    done: AtomicU64,
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn set(&self, change: impl FnOnce(&mut JobProgress)) {
        self.jobs
            .update(&self.id, |record| change(&mut record.progress));
    }
}

impl Progress for JobHandle {
    fn start(&self, phase: &str, objects: u64, _bytes: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.set(|p| {
            p.phase = phase.to_owned();
            p.done = 0;
            p.total = Some(objects);
        });
    }

    fn advance(&self, _bytes: u64) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.set(|p| p.done = p.done.max(done));
    }
}

/// Marks its job stopped when dropped: as it finished, or as cancelled when the
/// job's task was dropped before (the work's own guards have run by then: they
/// were dropped first, with the work).
struct Finish {
    jobs: Jobs,
    id: String,
    outcome: Option<Result<JobResult, Error>>,
    /// A request waiting for the outcome, if any.
    waiter: Option<oneshot::Sender<Result<JobResult, Error>>>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let waiter = self.waiter.take();
        let (state, result, error) = match self.outcome.take() {
            Some(Ok(result)) => {
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(result.clone()));
                }
                (JobState::Succeeded, Some(result), None)
            }
            Some(Err(e)) => {
                let body = ErrorBody {
                    code: e.code().to_owned(),
                    message: e.to_string(),
                };
                // Logged once: by the request that waits for it (where it is
                // answered), else here.
                let unanswered = match waiter {
                    Some(waiter) => waiter.send(Err(e)).err(),
                    None => Some(Err(e)),
                };
                if let Some(Err(e)) = unanswered {
                    tracing::error!(job = %self.id, code = e.code(), error = %e.for_log(), "job failed");
                }
                (JobState::Failed, None, Some(body))
            }
            None => {
                tracing::warn!(job = %self.id, "job cancelled");
                (JobState::Cancelled, None, None)
            }
        };
        self.jobs.finish(&self.id, state, result, error);
    }
}

/// A job just started: its record, and its outcome for whoever waits for it.
pub struct Started {
    /// The job's record as it started.
    pub record: JobRecord,
    /// The job's outcome; closed without one when the job was cancelled.
    pub outcome: oneshot::Receiver<Result<JobResult, Error>>,
}

impl Started {
    /// Waits for the job's outcome (a cancelled job is a `job_cancelled` conflict).
    pub async fn outcome(self) -> Result<JobResult, Error> {
        self.outcome.await.unwrap_or_else(|_| {
            Err(Error::conflict(
                "job_cancelled",
                format!("job {} was cancelled before it finished", self.record.id),
            ))
        })
    }
}

impl Jobs {
    /// Starts `work` as a job of `kind` (on `tenant`, for `actor`) and returns its
    /// record. Refused with `job_running` while a job of the same lane (for an
    /// index, any index job) runs for the same tenant.
    pub fn start<W, F>(
        &self,
        kind: &'static str,
        tenant: Option<&TenantId>,
        actor: &str,
        work: W,
    ) -> Result<Started, Error>
    where
        W: FnOnce(Arc<JobHandle>) -> F,
        F: Future<Output = Result<JobResult, Error>> + Send + 'static,
    {
        let id = format!("{JOB_ID_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let record = JobRecord {
            id: id.clone(),
            kind: kind.to_owned(),
            tenant: tenant.map(ToString::to_string),
            actor: actor.to_owned(),
            state: JobState::Running,
            cancel_requested: false,
            started_at: OffsetDateTime::now_utc(),
            finished_at: None,
            progress: JobProgress::default(),
            result: None,
            error: None,
        };
        {
            let mut entries = self.entries();
            if let Some(running) = entries.by_id.values().find(|e| {
                e.record.state == JobState::Running
                    && lane(&e.record.kind) == lane(&record.kind)
                    && e.record.tenant == record.tenant
            }) {
                return Err(Error::conflict(
                    "job_running",
                    format!(
                        "job {} ({}) is already running for this {}; follow it or cancel it",
                        running.record.id,
                        running.record.kind,
                        if tenant.is_some() { "tenant" } else { "vault" }
                    ),
                ));
            }
            entries.by_id.insert(
                id.clone(),
                Entry {
                    record: record.clone(),
                    abort: None,
                    done: watch::channel(false).0,
                },
            );
        }
        let handle = Arc::new(JobHandle {
            jobs: self.clone(),
            id: id.clone(),
            done: AtomicU64::new(0),
        });
        let work = work(handle);
        let (waiter, outcome) = oneshot::channel();
        let finish = Finish {
            jobs: self.clone(),
            id: id.clone(),
            outcome: None,
            waiter: Some(waiter),
        };
        let task = tokio::spawn(async move {
            // Declared first, dropped last: a cancelled job's work (and its guards)
            // is dropped before the job is marked stopped.
            let mut finish = finish;
            let outcome = {
                let work = work;
                work.await
            };
            finish.outcome = Some(outcome);
        });
        if let Some(entry) = self.entries().by_id.get_mut(&id) {
            // Already finished (a fast job) or not: either way it is recorded once.
            entry.abort = Some(task.abort_handle());
        }
        Ok(Started { record, outcome })
    }

    /// A job's record.
    pub fn get(&self, id: &str) -> Result<JobRecord, Error> {
        self.entries()
            .by_id
            .get(id)
            .map(|e| e.record.clone())
            .ok_or_else(not_found)
    }

    /// Running jobs and the most recent finished ones, newest first.
    pub fn list(&self) -> JobList {
        let mut jobs: Vec<JobRecord> = self
            .entries()
            .by_id
            .values()
            .map(|e| e.record.clone())
            .collect();
        jobs.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        JobList { jobs }
    }

    /// Waits until a job has stopped and returns its record.
    pub async fn wait(&self, id: &str) -> Result<JobRecord, Error> {
        let mut done = self
            .entries()
            .by_id
            .get(id)
            .map(|e| e.done.subscribe())
            .ok_or_else(not_found)?;
        // The sender lives as long as the entry; an entry is only forgotten
        // after it finished.
        let _ = done.wait_for(|finished| *finished).await;
        self.get(id)
    }

    /// Asks a running job to stop: its task is dropped, its guards put the tenant
    /// back in order, and then it is `cancelled` (follow it with [`Jobs::wait`]).
    pub fn cancel(&self, id: &str) -> Result<JobRecord, Error> {
        let mut entries = self.entries();
        let entry = entries.by_id.get_mut(id).ok_or_else(not_found)?;
        if entry.record.state.is_finished() {
            return Err(Error::conflict(
                "job_finished",
                format!("job {id} has already stopped"),
            ));
        }
        entry.record.cancel_requested = true;
        if let Some(abort) = &entry.abort {
            abort.abort();
        }
        Ok(entry.record.clone())
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.0
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut JobRecord)) {
        if let Some(entry) = self.entries().by_id.get_mut(id) {
            change(&mut entry.record);
        }
    }

    fn finish(
        &self,
        id: &str,
        state: JobState,
        result: Option<JobResult>,
        error: Option<ErrorBody>,
    ) {
        let mut entries = self.entries();
        let Some(entry) = entries.by_id.get_mut(id) else {
            return;
        };
        entry.record.state = state;
        entry.record.result = result;
        entry.record.error = error;
        entry.record.finished_at = Some(OffsetDateTime::now_utc());
        entry.abort = None;
        entry.done.send_replace(true);
        entries.finished.push_back(id.to_owned());
        while entries.finished.len() > FINISHED_KEPT {
            if let Some(oldest) = entries.finished.pop_front() {
                entries.by_id.remove(&oldest);
            }
        }
    }
}

fn not_found() -> Error {
    Error::not_found("job_not_found", "no such job")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(documents: u64) -> JobResult {
        JobResult::Reconcile(vault_api::ReconcileReport {
            documents,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_job_runs_to_its_result_and_reports_progress() {
        let jobs = Jobs::default();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let started = jobs
            .start(
                kind::INDEX_REBUILD,
                None,
                "operator:1",
                |handle| async move {
                    handle.start("reconcile", 3, 0);
                    handle.advance(0);
                    let _ = wait.await;
                    Ok(report(3))
                },
            )
            .unwrap()
            .record;
        assert_eq!(started.state, JobState::Running);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let running = jobs.get(&started.id).unwrap();
        assert_eq!(running.progress.phase, "reconcile");
        assert_eq!(
            (running.progress.done, running.progress.total),
            (1, Some(3))
        );
        go.send(()).unwrap();
        let done = jobs.wait(&started.id).await.unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert!(done.finished_at.is_some());
        assert!(matches!(done.result, Some(JobResult::Reconcile(r)) if r.documents == 3));
    }

    #[tokio::test]
    async fn a_failed_job_keeps_its_error_code() {
        let jobs = Jobs::default();
        let started = jobs
            .start(kind::KEY_REWRAP, None, "system", |_| async {
                Err(Error::unavailable("index_unavailable", "no"))
            })
            .unwrap();
        let id = started.record.id.clone();
        // The waiter gets the error itself (its kind decides the answer).
        let error = started.outcome().await.unwrap_err();
        assert!(matches!(
            error,
            Error::Unavailable {
                code: "index_unavailable",
                ..
            }
        ));
        let done = jobs.wait(&id).await.unwrap();
        assert_eq!(done.state, JobState::Failed);
        assert_eq!(done.error.unwrap().code, "index_unavailable");
    }

    #[tokio::test]
    async fn one_job_of_a_kind_per_tenant_and_cancel_runs_the_guards_first() {
        struct Guard(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let jobs = Jobs::default();
        let tenant = TenantId::new("acme").unwrap();
        let restored = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&restored);
        let started = jobs
            .start(
                kind::INDEX_REBUILD,
                Some(&tenant),
                "operator:1",
                |_| async move {
                    let _guard = Guard(flag);
                    std::future::pending::<()>().await;
                    Ok(report(0))
                },
            )
            .unwrap();
        let waiting = tokio::spawn(started.outcome());
        let started = jobs.list().jobs[0].clone();
        let again = jobs.start(
            kind::INDEX_REBUILD,
            Some(&tenant),
            "operator:1",
            |_| async { Ok(report(0)) },
        );
        assert_eq!(again.err().map(|e| e.code()), Some("job_running"));
        // No other job on the same index either (a rotation would build beside a
        // rebuild); another lane, or another tenant, may run meanwhile.
        let rotation = jobs.start(kind::INDEX_ROTATE, Some(&tenant), "system", |_| async {
            Ok(report(0))
        });
        assert_eq!(rotation.err().map(|e| e.code()), Some("job_running"));
        let other = jobs
            .start(kind::KEY_REWRAP, Some(&tenant), "operator:1", |_| async {
                Ok(report(0))
            })
            .unwrap()
            .record;
        jobs.wait(&other.id).await.unwrap();
        let elsewhere = TenantId::new("beta").unwrap();
        let beta = jobs
            .start(kind::INDEX_ROTATE, Some(&elsewhere), "system", |_| async {
                Ok(report(0))
            })
            .unwrap()
            .record;
        jobs.wait(&beta.id).await.unwrap();

        let asked = jobs.cancel(&started.id).unwrap();
        assert!(asked.cancel_requested);
        let done = jobs.wait(&started.id).await.unwrap();
        assert_eq!(done.state, JobState::Cancelled);
        assert!(
            restored.load(Ordering::SeqCst),
            "the guard ran before the job was marked cancelled"
        );
        let answer = waiting.await.unwrap().unwrap_err();
        assert_eq!(answer.code(), "job_cancelled");
        assert_eq!(jobs.cancel(&started.id).unwrap_err().code(), "job_finished");
        assert_eq!(jobs.get("job_nope").unwrap_err().code(), "job_not_found");
        assert_eq!(jobs.list().jobs.len(), 3);
    }

    #[tokio::test]
    async fn only_the_latest_finished_jobs_are_kept() {
        let jobs = Jobs::default();
        let mut ids = Vec::new();
        for _ in 0..FINISHED_KEPT + 5 {
            let started = jobs
                .start(kind::BACKUP, None, "schedule", |_| async { Ok(report(0)) })
                .unwrap()
                .record;
            jobs.wait(&started.id).await.unwrap();
            ids.push(started.id);
        }
        assert_eq!(jobs.list().jobs.len(), FINISHED_KEPT);
        assert!(jobs.get(&ids[0]).is_err());
        assert!(jobs.get(&ids[FINISHED_KEPT + 4]).is_ok());
    }
}

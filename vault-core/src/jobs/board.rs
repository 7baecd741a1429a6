//! Jobs seen from every replica: a job runs on the replica that started it,
//! and every replica can show, list and cancel it.
//!
//! Each replica publishes its jobs' records in the store
//! (`system/jobs/<id>`, see [`ObjectName::job`]) when they change, and a running
//! job's every [`HEARTBEAT`] as well. A replica asked about a job it does not
//! run reads the published record; one whose heartbeat is older than
//! [`LOST_AFTER`] belonged to a replica that stopped, and reads as failed
//! (`job_lost`). A cancel asked of another replica leaves a request beside the
//! record (`<id>.cancel`) that the running replica sees within
//! [`PUBLISH_INTERVAL`] and carries out. When a replica forgets a finished
//! job (it keeps the latest 100), it removes the published record too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{not_found, ErrorBody, JobList, JobRecord, JobState, Jobs};
use crate::error::Error;
use crate::storage::{list_all, ObjectName, ObjectStore};

/// How often a replica publishes its jobs' changes and looks for cancels.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// How often a running job's record is published even when unchanged.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A running job whose record is older than this lost its replica.
pub const LOST_AFTER: Duration = Duration::from_secs(60);
/// Published records read at once for a listing.
const LIST_READS: usize = 16;

/// FORMAT CONSTANT: version of a published job record.
const FORMAT: u32 = 1;

/// What a replica publishes of one of its jobs.
#[derive(Serialize, Deserialize)]
struct Published {
    format: u32,
    /// The replica running it (its holder name).
    replica: String,
    /// When this was published (Unix ms, the publishing replica's clock).
    published_unix_ms: u64,
    record: JobRecord,
}

/// The jobs of this replica and, through the store, of every other.
#[derive(Clone)]
pub struct JobBoard {
    jobs: Jobs,
    store: Arc<dyn ObjectStore>,
    replica: String,
}

impl JobBoard {
    /// The board of `jobs`, published in `store` as `replica`.
    pub fn new(jobs: Jobs, store: Arc<dyn ObjectStore>, replica: String) -> Self {
        JobBoard {
            jobs,
            store,
            replica,
        }
    }

    /// A job's record, run here or by another replica.
    pub async fn get(&self, id: &str) -> Result<JobRecord, Error> {
        if let Ok(record) = self.jobs.get(id) {
            return Ok(record);
        }
        self.published(id).await?.ok_or_else(not_found)
    }

    /// Running jobs and the most recent finished ones of every replica, newest
    /// first.
    pub async fn list(&self) -> Result<JobList, Error> {
        let mut jobs = self.jobs.list().jobs;
        let here: HashSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let elsewhere: Vec<String> = list_all(self.store.as_ref(), ObjectName::JOBS_PREFIX, None)
            .await?
            .into_iter()
            .filter_map(|info| {
                let id = info.name.as_str().strip_prefix(ObjectName::JOBS_PREFIX)?;
                (super::is_job_id(id) && !here.contains(id)).then(|| id.to_owned())
            })
            .collect();
        let read: Vec<Result<Option<JobRecord>, Error>> = futures::stream::iter(elsewhere)
            .map(|id| async move { self.published(&id).await })
            .buffer_unordered(LIST_READS)
            .collect()
            .await;
        for record in read {
            // One gone meanwhile (forgotten by its replica) is simply left out.
            if let Some(record) = record? {
                jobs.push(record);
            }
        }
        jobs.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        Ok(JobList { jobs })
    }

    /// Cancels a running job here, or asks the replica running it to.
    pub async fn cancel(&self, id: &str) -> Result<JobRecord, Error> {
        match self.jobs.cancel(id) {
            Err(e) if e.code() == "job_not_found" => {}
            here => return here,
        }
        let mut record = self.published(id).await?.ok_or_else(not_found)?;
        if record.state.is_finished() {
            return Err(Error::conflict(
                "job_finished",
                format!("job {id} has already stopped"),
            ));
        }
        self.store
            .replace(&ObjectName::job_cancel(id), Bytes::from_static(b"{}"))
            .await?;
        record.cancel_requested = true;
        Ok(record)
    }

    /// A published record, as a reader should see it: a running job whose
    /// replica stopped publishing reads as failed.
    async fn published(&self, id: &str) -> Result<Option<JobRecord>, Error> {
        let Some(bytes) = self.store.get_bytes(&ObjectName::job(id)).await? else {
            return Ok(None);
        };
        let published: Published = serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal("published job record", e))?;
        if published.format != FORMAT {
            return Err(Error::internal(
                "published job record",
                format!("unknown format {}", published.format),
            ));
        }
        let mut record = published.record;
        let age_ms = unix_ms(OffsetDateTime::now_utc()).saturating_sub(published.published_unix_ms);
        if record.state == JobState::Running && age_ms > LOST_AFTER.as_millis() as u64 {
            record.state = JobState::Failed;
            record.error = Some(ErrorBody {
                code: "job_lost".to_owned(),
                message: format!(
                    "the replica running this job stopped publishing it {} s ago; start it again",
                    age_ms / 1000
                ),
            });
        }
        Ok(Some(record))
    }

    /// Publishes this replica's jobs every [`PUBLISH_INTERVAL`] and carries
    /// out cancels asked through other replicas, for ever.
    pub async fn run(self) {
        let mut published: HashMap<String, (Vec<u8>, Instant)> = HashMap::new();
        let mut tick = tokio::time::interval(PUBLISH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.publish(&mut published).await;
        }
    }

    /// One round of [`JobBoard::run`]: `published` is what was published last
    /// (record JSON, when).
    pub async fn publish(&self, published: &mut HashMap<String, (Vec<u8>, Instant)>) {
        let records = self.jobs.list().jobs;
        let here: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        for record in records {
            let Ok(json) = serde_json::to_vec(&record) else {
                continue;
            };
            let running = record.state == JobState::Running;
            let due = published
                .get(&record.id)
                .is_none_or(|(last, at)| *last != json || (running && at.elapsed() >= HEARTBEAT));
            if due {
                let body = Published {
                    format: FORMAT,
                    replica: self.replica.clone(),
                    published_unix_ms: unix_ms(OffsetDateTime::now_utc()),
                    record: record.clone(),
                };
                let Ok(bytes) = serde_json::to_vec(&body) else {
                    continue;
                };
                match self
                    .store
                    .replace(&ObjectName::job(&record.id), Bytes::from(bytes))
                    .await
                {
                    Ok(()) => {
                        published.insert(record.id.clone(), (json, Instant::now()));
                        if !running {
                            // Finished: a cancel asked for it has nothing left to do.
                            let _ = self.store.delete(&ObjectName::job_cancel(&record.id)).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %record.id, error = %e, "job record not published; trying again");
                    }
                }
            }
            if running && !record.cancel_requested {
                if let Ok(Some(_)) = self.store.head(&ObjectName::job_cancel(&record.id)).await {
                    tracing::info!(job = %record.id, "cancel asked through another replica");
                    let _ = self.jobs.cancel(&record.id);
                }
            }
        }
        // Forgotten here (beyond the latest finished ones): unpublished.
        let forgotten: Vec<String> = published
            .keys()
            .filter(|id| !here.contains(*id))
            .cloned()
            .collect();
        for id in forgotten {
            if self.store.delete(&ObjectName::job(&id)).await.is_ok() {
                let _ = self.store.delete(&ObjectName::job_cancel(&id)).await;
                published.remove(&id);
            }
        }
    }
}

fn unix_ms(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::kind;
    use crate::progress::Progress;
    use crate::storage::memory::MemoryStore;

    fn report() -> super::super::JobResult {
        super::super::JobResult::Reconcile(vault_api::ReconcileReport::default())
    }

    /// Two replicas over one store: a job started on one is shown, listed and
    /// cancelled through the other; once it is forgotten, its record goes.
    #[tokio::test]
    async fn a_job_is_followed_and_cancelled_through_another_replica() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::default());
        let here = JobBoard::new(Jobs::default(), store.clone(), "here".into());
        let there = JobBoard::new(Jobs::default(), store.clone(), "there".into());
        let started = here
            .jobs
            .start(kind::KEY_REWRAP, None, "operator:1", |handle| async move {
                handle.start("rewrap", 10, 0);
                std::future::pending::<()>().await;
                Ok(report())
            })
            .unwrap()
            .record;
        let mut published = HashMap::new();
        assert_eq!(
            there.get(&started.id).await.unwrap_err().code(),
            "job_not_found",
            "not published yet"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        here.publish(&mut published).await;
        let seen = there.get(&started.id).await.unwrap();
        assert_eq!(seen.state, JobState::Running);
        assert_eq!(seen.progress.phase, "rewrap");
        assert_eq!(there.list().await.unwrap().jobs.len(), 1);

        let asked = there.cancel(&started.id).await.unwrap();
        assert!(asked.cancel_requested);
        here.publish(&mut published).await;
        let done = here.jobs.wait(&started.id).await.unwrap();
        assert_eq!(done.state, JobState::Cancelled);
        here.publish(&mut published).await;
        assert_eq!(
            there.get(&started.id).await.unwrap().state,
            JobState::Cancelled
        );
        assert_eq!(
            there.cancel(&started.id).await.unwrap_err().code(),
            "job_finished"
        );
        assert!(store
            .head(&ObjectName::job_cancel(&started.id))
            .await
            .unwrap()
            .is_none());
    }

    /// A running job whose replica stopped publishing reads as lost.
    #[tokio::test]
    async fn a_job_whose_replica_went_quiet_reads_as_lost() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::default());
        let board = JobBoard::new(Jobs::default(), store.clone(), "reader".into());
        let id = "job_0123456789abcdef0123456789abcdef";
        let old = Published {
            format: FORMAT,
            replica: "gone".into(),
            published_unix_ms: unix_ms(OffsetDateTime::now_utc()) - 61_000,
            record: JobRecord {
                id: id.into(),
                kind: kind::BACKUP.into(),
                tenant: None,
                actor: "schedule".into(),
                state: JobState::Running,
                cancel_requested: false,
                started_at: OffsetDateTime::now_utc(),
                finished_at: None,
                progress: Default::default(),
                result: None,
                error: None,
            },
        };
        store
            .replace(
                &ObjectName::job(id),
                Bytes::from(serde_json::to_vec(&old).unwrap()),
            )
            .await
            .unwrap();
        let seen = board.get(id).await.unwrap();
        assert_eq!(seen.state, JobState::Failed);
        assert_eq!(seen.error.unwrap().code, "job_lost");
        assert_eq!(board.cancel(id).await.unwrap_err().code(), "job_finished");
    }
}

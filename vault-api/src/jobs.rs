//! Long operations the vault runs as jobs (index rebuilds and rotations, rewraps,
//! backups, index re-plans): what `GET /v1/admin/jobs/{id}` answers.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ErrorBody;
use crate::reports::{BackupSummary, ReconcileReport, RewrapReport};

/// What every job id starts with; 32 lowercase hex digits follow.
pub const JOB_ID_PREFIX: &str = "job_";

/// Whether `raw` has the shape of a job id (`job_` and 32 hex digits): anything
/// else names no job, and never reaches a request path or a lookup.
pub fn is_job_id(raw: &str) -> bool {
    raw.strip_prefix(JOB_ID_PREFIX)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Running (a cancellation may have been asked for).
    Running,
    /// Finished; `result` says what it did.
    Succeeded,
    /// Finished with `error`.
    Failed,
    /// Stopped by an operator; what it changed was put back in order first.
    Cancelled,
}

impl JobState {
    /// Whether the job has stopped.
    pub fn is_finished(self) -> bool {
        self != JobState::Running
    }
}

/// How far a job has come.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobProgress {
    /// What it is doing now (`rewrap`, `reconcile`, `backup`, ...).
    pub phase: String,
    /// Items done in this phase.
    pub done: u64,
    /// Items in this phase, once known.
    pub total: Option<u64>,
}

/// What a job that succeeded did.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum JobResult {
    /// An index rebuild, rotation or re-plan.
    Reconcile(ReconcileReport),
    /// A rewrap.
    Rewrap(RewrapReport),
    /// A backup.
    Backup(BackupSummary),
}

/// A job: what it is, who started it, where it is, and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    /// Its id (`job_` and 32 hex digits).
    pub id: String,
    /// `index.rebuild`, `index.rotate`, `index.replan`, `key.rewrap` or `backup`.
    pub kind: String,
    /// The tenant it works on (none for a backup).
    pub tenant: Option<String>,
    /// Who started it: `operator:<id>`, `schedule` or `system`.
    pub actor: String,
    /// Where it is.
    pub state: JobState,
    /// Whether an operator asked to cancel it.
    pub cancel_requested: bool,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub started_at: OffsetDateTime,
    /// When it stopped.
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Option<OffsetDateTime>,
    /// How far it has come.
    pub progress: JobProgress,
    /// What it did (when it succeeded).
    pub result: Option<JobResult>,
    /// Why it failed.
    pub error: Option<ErrorBody>,
}

/// Jobs, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    /// Running jobs and the most recent finished ones of every replica.
    pub jobs: Vec<JobRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_shape_the_server_gives_is_a_job_id() {
        assert!(is_job_id("job_0123456789abcdef0123456789abcdef"));
        for not in [
            "",
            "job_",
            "job_0123456789abcdef0123456789abcde",
            "job_0123456789abcdef0123456789abcdef0",
            "job_0123456789abcdef0123456789abcdeg",
            "JOB_0123456789abcdef0123456789abcdef",
            "../tenants/acme/index/rebuild?x=",
            "job_0123456789abcdef0123456789abcdé",
        ] {
            assert!(!is_job_id(not), "{not:?}");
        }
    }
}

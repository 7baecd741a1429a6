//! `vault-cli job ...`, and how the commands that start a job follow it.
//!
//! Index rebuilds and rotations and rewraps run on the server as jobs. The CLI
//! starts one with `Prefer: respond-async`, then follows it by id, drawing its
//! progress on stderr, and prints the finished job's report as before. Stopping
//! the CLI (Ctrl-C, a lost connection) does not stop the job: `vault-cli job show
//! <id>` finds it again, `vault-cli job cancel <id>` stops it.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use vault_api::{is_job_id, JobList, JobRecord, JobState};

use crate::client::{CliError, Client};
use crate::{print_as, JobCommand};

/// How often a followed job is asked where it is.
const POLL: Duration = Duration::from_millis(500);

/// Starts the job `path` starts and follows it to its end; returns its report.
pub async fn run_and_follow(
    client: &Client,
    json_mode: bool,
    path: &str,
    body: &Value,
) -> Result<Value, CliError> {
    let started = client.post_async(path, body).await?;
    let record: JobRecord = serde_json::from_value(started)
        .map_err(|e| CliError::Failed(format!("the server's job record is not readable: {e}")))?;
    if !json_mode {
        eprintln!("job {} started ({}); following it", record.id, record.kind);
    }
    let bar = if json_mode {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let finished = loop {
        let now: JobRecord =
            serde_json::from_value(client.get(&format!("/v1/admin/jobs/{}", record.id)).await?)
                .map_err(|e| {
                    CliError::Failed(format!("the server's job record is not readable: {e}"))
                })?;
        if now.state.is_finished() {
            break now;
        }
        bar.set_prefix(now.progress.phase.clone());
        bar.set_length(now.progress.total.unwrap_or(0));
        bar.set_position(now.progress.done);
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    match finished.state {
        JobState::Succeeded => {
            serde_json::to_value(&finished.result).map_err(|e| CliError::Failed(e.to_string()))
        }
        JobState::Failed => {
            let error = finished.error.unwrap_or(vault_api::ErrorBody {
                code: "job_failed".into(),
                message: "the job failed; see the server log".into(),
            });
            Err(CliError::Failed(format!(
                "job {} failed: {} ({})",
                finished.id, error.message, error.code
            )))
        }
        _ => Err(CliError::Failed(format!(
            "job {} was cancelled before it finished",
            finished.id
        ))),
    }
}

fn line(job: &JobRecord) -> String {
    let state = match job.state {
        JobState::Running if job.cancel_requested => "cancelling",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    };
    let progress = match job.progress.total {
        Some(total) => format!(" {} {}/{}", job.progress.phase, job.progress.done, total),
        None => String::new(),
    };
    let error = job
        .error
        .as_ref()
        .map(|e| format!(": {} ({})", e.message, e.code))
        .unwrap_or_default();
    format!(
        "{}  {:<13} {:<10} {:<10}{progress}{error}",
        job.id,
        job.kind,
        job.tenant.as_deref().unwrap_or("-"),
        state
    )
}

/// A job id as the server gives them (`job_` and 32 hex digits), so nothing else
/// ever reaches a request path.
fn job_id(raw: &str) -> Result<&str, CliError> {
    if is_job_id(raw) {
        Ok(raw)
    } else {
        Err(CliError::Usage(
            "a job id is job_ and 32 hex digits (see `vault-cli job list`)".into(),
        ))
    }
}

/// Runs one `JobCommand`.
pub async fn run(client: &Client, json_mode: bool, command: JobCommand) -> Result<(), CliError> {
    match command {
        JobCommand::List => {
            let list = client.get("/v1/admin/jobs").await?;
            print_as(json_mode, &list, |l: &JobList| {
                if l.jobs.is_empty() {
                    "no jobs".to_owned()
                } else {
                    l.jobs.iter().map(line).collect::<Vec<_>>().join("\n")
                }
            })?;
        }
        JobCommand::Show { id } => {
            let id = job_id(&id)?;
            let job = client.get(&format!("/v1/admin/jobs/{id}")).await?;
            print_as(json_mode, &job, line)?;
        }
        JobCommand::Cancel { id } => {
            let id = job_id(&id)?;
            let job = client
                .post(&format!("/v1/admin/jobs/{id}/cancel"), &json!({}))
                .await?;
            print_as(json_mode, &job, |j: &JobRecord| {
                format!(
                    "asked job {} to stop; `vault-cli job show {}` follows it",
                    j.id, j.id
                )
            })?;
        }
    }
    Ok(())
}

//! The vault's own backup, measured on the benchmark tenant with the server
//! running: a full backup (`POST /v1/admin/backups`, followed to its end), an
//! incremental one after 1 % more documents, then `vault-cli restore` into an
//! empty directory and `vault-cli backup verify --read-data`. The repository is
//! `<work>/vault-repo` (the server's `[backup] target`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::server::{backup_repository as repository, Server};

/// One backup, restore or verify.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// Wall time, seconds.
    pub seconds: f64,
    /// Bytes it covered (the snapshot's).
    pub bytes: u64,
    /// MB/s.
    pub mb_per_s: f64,
}

impl Operation {
    fn new(seconds: f64, bytes: u64) -> Operation {
        Operation {
            seconds,
            bytes,
            mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
        }
    }
}

/// Runs a backup now through the server and waits for its end; returns the
/// wall time and the job's `last` record.
pub async fn backup_now(server: &Server) -> anyhow::Result<(f64, Value)> {
    let started = Instant::now();
    let r = server
        .http
        .post(server.at("/v1/admin/backups"))
        .bearer_auth(&server.operator_token)
        .send()
        .await?;
    if r.status().as_u16() != 202 {
        bail!(
            "POST /v1/admin/backups: {}: {}",
            r.status(),
            r.text().await?
        );
    }
    let requested: Value = r.json().await?;
    let requested_at = requested["requested_at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status: Value = server
            .http
            .get(server.at("/v1/admin/backups"))
            .bearer_auth(&server.operator_token)
            .send()
            .await?
            .json()
            .await?;
        let job = &status["status"];
        let last = &job["last"];
        // The job is done when it is not running and its last end is after the request.
        let rfc3339 = |t: &str| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        };
        let finished = last["finished_at"].as_str().and_then(rfc3339);
        if job["running"].is_null()
            && finished.is_some_and(|f| rfc3339(&requested_at).is_some_and(|r| f >= r))
        {
            if last["ok"].as_bool() != Some(true) {
                bail!("the vault's backup failed: {}", last["error"]);
            }
            return Ok((started.elapsed().as_secs_f64(), last.clone()));
        }
    }
}

fn cli_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BILLVAULT_CLI_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let cli = exe.with_file_name("vault-cli");
    if !cli.exists() {
        bail!(
            "vault-cli not found at {} (build it: cargo build -p vault-cli, or set BILLVAULT_CLI_BIN)",
            cli.display()
        );
    }
    Ok(cli)
}

/// Runs `vault-cli --json <args>` against the server; returns wall time and output.
pub fn cli(server: &Server, args: &[&str]) -> anyhow::Result<(f64, Value)> {
    let started = Instant::now();
    let mut command = std::process::Command::new(cli_binary()?);
    if let Some(endpoint) = server.moto_url() {
        // Offline commands on a repository on moto (restore, verify).
        command.envs([
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
    }
    let out = command
        .arg("--server")
        .arg(&server.url)
        .arg("--token-file")
        .arg(server.data_dir.join("operator-token"))
        .arg("--json")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("run vault-cli")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "vault-cli {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        seconds,
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    ))
}

/// The figures of the vault's backup phase.
#[derive(Debug, Clone, Serialize)]
pub struct VaultBackup {
    /// Full backup.
    pub full: Operation,
    /// Incremental backup after 1 % more documents.
    pub incremental: Operation,
    /// Bytes the incremental backup copied.
    pub incremental_bytes_added: u64,
    /// Restore into an empty directory (every object hash-checked).
    pub restore: Operation,
    /// `backup verify --read-data`.
    pub verify: Operation,
}

/// The figures of a finished backup job.
pub fn operation(seconds: f64, last: &Value) -> Operation {
    Operation::new(seconds, last["bytes"].as_u64().unwrap_or(0))
}

/// Restore of the latest snapshot and a read-data verify.
pub fn restore_and_verify(server: &Server, work: &Path) -> anyhow::Result<(Operation, Operation)> {
    let store = repository(work).display().to_string();
    let target = work.join("vault-restored").display().to_string();
    let (seconds, restored) = cli(
        server,
        &[
            "restore",
            "--store",
            &store,
            "--snapshot",
            "latest",
            "--to",
            &target,
        ],
    )?;
    if restored["mismatches"]
        .as_array()
        .is_some_and(|m| !m.is_empty())
    {
        bail!("the restore found mismatches: {}", restored["mismatches"]);
    }
    let restore = Operation::new(seconds, restored["bytes"].as_u64().unwrap_or(0));
    let _ = std::fs::remove_dir_all(work.join("vault-restored"));
    let (seconds, verified) = cli(
        server,
        &["backup", "verify", "--store", &store, "--read-data"],
    )?;
    if verified["problems"]
        .as_array()
        .is_some_and(|p| !p.is_empty())
    {
        bail!("the repository did not verify: {}", verified["problems"]);
    }
    let verify = Operation::new(seconds, verified["bytes_read"].as_u64().unwrap_or(0));
    Ok((restore, verify))
}

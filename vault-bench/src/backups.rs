//! `vault-bench --backups` (issue 20): the vault's backups against restic and
//! Borg on the same data in the same run.
//!
//! The vault is filled through its API (real vault objects: ciphertext bodies,
//! key records, facts, audit segments) on the filesystem store. The vault backs
//! up through the running server; restic and Borg back up the store's directory
//! (`<data dir>/objects`), the same files. The repository is a directory, or
//! with `--backup-repo s3` a bucket on moto for the vault and for restic (Borg
//! has no S3 backend). Each tool in turn, timed: a full backup; a backup after
//! 1 % more documents; a restore into an empty directory; a verify that reads
//! every byte (`backup verify --read-data`, `restic check --read-data`, `borg
//! check --verify-data`); and, after 10 % of the documents are deleted and each
//! tool backs up again, a prune keeping the last snapshot. Then each
//! repository's size and object count, and each process's peak memory during
//! the full backup (the vault's server: `VmHWM`, reset before).
//!
//! Kopia is not in Debian or on PyPI: its row says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::client::Vault;
use crate::corpus::Generator;
use crate::server::{Launch, Server, ALL_ROLES};
use crate::stats::run_tasks;
use crate::vault_backup::{backup_now, cli};

/// One timed operation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Step {
    /// Wall time, seconds.
    pub seconds: f64,
    /// The vault's snapshot bytes over the time (the same bytes for every tool).
    pub mb_per_s: f64,
}

/// What one tool did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolRow {
    /// `vault`, `restic`, `borg`.
    pub tool: String,
    /// Its version.
    pub version: String,
    /// `ok`, or why it was not run.
    pub status: String,
    /// Full backup.
    pub full: Step,
    /// Backup after 1 % more documents.
    pub incremental: Step,
    /// Restore into an empty directory.
    pub restore: Step,
    /// Verify reading every byte.
    pub verify: Step,
    /// Backup after deleting 10 % of the documents.
    pub after_delete: Step,
    /// Prune keeping the last snapshot.
    pub prune: Step,
    /// Repository bytes after the second backup.
    pub repository_bytes: u64,
    /// Repository objects (files, or S3 objects) after the second backup.
    pub repository_objects: u64,
    /// Repository bytes after the prune.
    pub repository_bytes_after_prune: u64,
    /// Peak resident memory during the full backup, KiB.
    pub peak_rss_kib: u64,
    /// Resident memory just before it (the server's; 0 for a new process), KiB.
    pub rss_before_kib: u64,
    /// The server's resident memory once a second during the full backup, KiB
    /// (where in the backup a peak comes from; empty for the other tools).
    pub rss_each_second_kib: Vec<u64>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct BackupsReport {
    /// Documents before the 1 % more.
    pub documents: usize,
    /// Their kind: 2–20 KiB X12/FHIR, or scans of a fixed size.
    pub kind: String,
    /// Objects of the vault's first snapshot.
    pub objects: u64,
    /// Its bytes.
    pub bytes: u64,
    /// `directory` or `s3 (moto)`.
    pub repository: String,
    /// Seconds to fill the vault.
    pub fill_seconds: f64,
    /// One row per tool.
    pub tools: Vec<ToolRow>,
}

fn step(seconds: f64, bytes: u64) -> Step {
    Step {
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
    }
}

/// Runs `program args` with `envs`, polling its peak memory; fails on a
/// non-zero exit. Returns wall seconds and the peak resident memory (KiB).
fn run_tool(
    program: &str,
    args: &[&str],
    envs: &[(String, String)],
    cwd: Option<&Path>,
) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let mut child = command.spawn().with_context(|| format!("run {program}"))?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Ok(memory) = crate::procfs::memory(pid) {
            peak = peak.max(memory.hwm_kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        bail!(
            "{program} {} failed ({status}): {}",
            args.join(" "),
            stderr.trim()
        );
    }
    Ok((seconds, peak))
}

fn version(program: &str, arg: &str) -> Option<String> {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Files and bytes under a directory.
fn tree(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

/// Objects and bytes under a prefix of a bucket on moto (unsigned listing).
async fn bucket_tree(
    http: &reqwest::Client,
    moto: &str,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<(u64, u64)> {
    let mut objects = 0;
    let mut bytes = 0;
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{moto}/{bucket}?list-type=2&prefix={prefix}&max-keys=1000");
        if let Some(t) = &token {
            url.push_str(&format!(
                "&continuation-token={}",
                t.replace('+', "%2B")
                    .replace('/', "%2F")
                    .replace('=', "%3D")
            ));
        }
        let text = http.get(&url).send().await?.text().await?;
        for part in text.split("<Size>").skip(1) {
            if let Some(end) = part.find("</Size>") {
                objects += 1;
                bytes += part[..end].parse::<u64>().unwrap_or(0);
            }
        }
        token = text
            .split("<NextContinuationToken>")
            .nth(1)
            .and_then(|t| t.split("</NextContinuationToken>").next())
            .map(str::to_owned);
        if token.is_none() || !text.contains("<IsTruncated>true</IsTruncated>") {
            return Ok((objects, bytes));
        }
    }
}

/// Uploads `count` documents at concurrency 64: 2–20 KiB X12/FHIR ones, or
/// scans of `doc_bytes`; returns their ids.
async fn upload(
    vault: &Vault,
    generator: &mut Generator,
    count: usize,
    doc_bytes: Option<usize>,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(count);
    let mut left = count;
    while left > 0 {
        let n = left.min(5_000);
        let docs = Arc::new(
            (0..n)
                .map(|_| match doc_bytes {
                    Some(size) => generator.scan(size),
                    None => generator.small(),
                })
                .collect::<Vec<_>>(),
        );
        let out = Arc::new(std::sync::Mutex::new(vec![String::new(); n]));
        {
            let (docs, out, vault) = (docs.clone(), out.clone(), vault.clone());
            run_tasks(n, 64, move |i| {
                let (docs, out, vault) = (docs.clone(), out.clone(), vault.clone());
                async move {
                    let stored = vault.upload(&docs[i]).await?;
                    out.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] = stored.id;
                    Ok(stored.size)
                }
            })
            .await?;
        }
        ids.extend(std::mem::take(
            &mut *out.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        ));
        left -= n;
        eprintln!("  {} documents", count - left);
    }
    Ok(ids)
}

/// Where restic and Borg keep their repositories, and how to reach them.
struct Baselines {
    work: PathBuf,
    source: PathBuf,
    /// `s3:http://.../bucket/restic` with --backup-repo s3.
    restic_repo: String,
    restic_env: Vec<(String, String)>,
    borg_repo: PathBuf,
    borg_env: Vec<(String, String)>,
}

impl Baselines {
    fn restic(&self, args: &[&str]) -> anyhow::Result<(f64, u64)> {
        let mut all = vec!["--repo", &self.restic_repo, "--quiet"];
        let cache = self.work.join("restic-cache").display().to_string();
        all.extend(["--cache-dir", &cache]);
        all.extend(args);
        run_tool("restic", &all, &self.restic_env, None)
    }

    fn borg(&self, args: &[&str], cwd: Option<&Path>) -> anyhow::Result<(f64, u64)> {
        run_tool("borg", args, &self.borg_env, cwd)
    }
}

/// Runs the comparison.
pub async fn run(
    launch: &Launch,
    documents: usize,
    doc_bytes: Option<usize>,
    s3_repo: bool,
    with_borg: bool,
) -> anyhow::Result<BackupsReport> {
    let mut launch = launch.clone();
    launch.backup_s3 = s3_repo;
    launch.backup_config = "[backup.retention]\nkeep_last = 1\n".into();
    let server = Server::start(&launch).await?;
    server
        .create_tenant_for("acme", "local", Some(documents + documents / 50 + 100))
        .await?;
    let key = server.api_key("acme", ALL_ROLES).await?;
    let vault = Vault::new(server.http.clone(), &server.url, &key);
    let mut generator = Generator::new(20, documents);
    eprintln!("filling the vault with {documents} documents");
    let t = Instant::now();
    let mut ids = upload(&vault, &mut generator, documents, doc_bytes).await?;
    let fill_seconds = t.elapsed().as_secs_f64();

    let work = launch.work_dir.clone();
    let moto = server.moto_url().map(str::to_owned);
    let aws_env: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(
        moto.iter()
            .map(|url| ("AWS_ENDPOINT_URL".to_owned(), url.clone())),
    )
    .collect();
    let (restic_repo, borg_possible) = match (&moto, &server.backup_bucket) {
        (Some(url), Some(bucket)) if s3_repo => (format!("s3:{url}/{bucket}/restic"), false),
        _ => (work.join("restic-repo").display().to_string(), true),
    };
    let mut restic_env = aws_env.clone();
    restic_env.push(("RESTIC_PASSWORD".into(), "vault-bench".into()));
    let baselines = Baselines {
        source: server.data_dir.join("objects"),
        restic_repo,
        restic_env,
        borg_repo: work.join("borg-repo"),
        borg_env: vec![
            ("BORG_PASSPHRASE".into(), "vault-bench".into()),
            ("BORG_RELOCATED_REPO_ACCESS_IS_OK".into(), "yes".into()),
            (
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK".into(),
                "yes".into(),
            ),
            (
                "BORG_BASE_DIR".into(),
                work.join("borg-home").display().to_string(),
            ),
        ],
        work: work.clone(),
    };
    let source_arg = baselines.source.display().to_string();
    let repo_size = |tool: &'static str| {
        let (http, moto, bucket, work) = (
            server.http.clone(),
            moto.clone(),
            server.backup_bucket.clone(),
            work.clone(),
        );
        async move {
            match (s3_repo, moto, bucket) {
                (true, Some(url), Some(bucket)) if tool != "borg" => {
                    let prefix = if tool == "vault" {
                        "vault-repo/"
                    } else {
                        "restic/"
                    };
                    bucket_tree(&http, &url, &bucket, prefix).await
                }
                _ => Ok(tree(&work.join(match tool {
                    "vault" => "vault-repo",
                    "restic" => "restic-repo",
                    _ => "borg-repo",
                }))),
            }
        }
    };

    // Full backups.
    let mut vault_row = ToolRow {
        tool: "vault".into(),
        version: format!("vault-server {}", env!("CARGO_PKG_VERSION")),
        status: "ok".into(),
        ..ToolRow::default()
    };
    vault_row.rss_before_kib = crate::procfs::memory(server.pid)?.rss_kib;
    crate::procfs::reset_peak(server.pid)?;
    eprintln!("vault: full backup");
    let sampler = crate::procfs::Sampler::start(server.pid, Duration::from_secs(1));
    let (seconds, last) = backup_now(&server).await?;
    vault_row.rss_each_second_kib = sampler.finish().await;
    let bytes = last["bytes"].as_u64().unwrap_or(0);
    let objects = last["objects"].as_u64().unwrap_or(0);
    vault_row.full = step(seconds, bytes);
    vault_row.peak_rss_kib = crate::procfs::memory(server.pid)?.hwm_kib;

    let mut restic_row = ToolRow {
        tool: "restic".into(),
        version: version("restic", "version").unwrap_or_default(),
        ..ToolRow::default()
    };
    let restic_ok = !restic_row.version.is_empty();
    restic_row.status = if restic_ok {
        "ok".into()
    } else {
        "not run (apt-get install restic)".into()
    };
    if restic_ok {
        eprintln!("restic: full backup");
        baselines.restic(&["init"])?;
        let (seconds, peak) = baselines.restic(&["backup", &source_arg])?;
        restic_row.full = step(seconds, bytes);
        restic_row.peak_rss_kib = peak;
    }
    let mut borg_row = ToolRow {
        tool: "borg".into(),
        version: version("borg", "--version").unwrap_or_default(),
        ..ToolRow::default()
    };
    let borg_ok = borg_possible && with_borg && !borg_row.version.is_empty();
    borg_row.status = if !borg_possible {
        "not run (Borg has no S3 backend)".into()
    } else if !with_borg {
        "not run (--without-borg)".into()
    } else if borg_row.version.is_empty() {
        "not run (apt-get install borgbackup)".into()
    } else {
        "ok".into()
    };
    let borg_repo = baselines.borg_repo.display().to_string();
    let archive = |n: u32| format!("{borg_repo}::a{n}");
    if borg_ok {
        eprintln!("borg: full backup");
        baselines.borg(&["init", "-e", "repokey-blake2", &borg_repo], None)?;
        let (seconds, peak) = baselines.borg(&["create", &archive(1), &source_arg], None)?;
        borg_row.full = step(seconds, bytes);
        borg_row.peak_rss_kib = peak;
    }

    // 1 % more documents, then incremental backups.
    ids.extend(upload(&vault, &mut generator, (documents / 100).max(1), doc_bytes).await?);
    eprintln!("incremental backups");
    let (seconds, _) = backup_now(&server).await?;
    vault_row.incremental = step(seconds, bytes);
    (vault_row.repository_objects, vault_row.repository_bytes) = repo_size("vault").await?;
    if restic_ok {
        let (seconds, _) = baselines.restic(&["backup", &source_arg])?;
        restic_row.incremental = step(seconds, bytes);
        (restic_row.repository_objects, restic_row.repository_bytes) = repo_size("restic").await?;
    }
    if borg_ok {
        let (seconds, _) = baselines.borg(&["create", &archive(2), &source_arg], None)?;
        borg_row.incremental = step(seconds, bytes);
        (borg_row.repository_objects, borg_row.repository_bytes) = repo_size("borg").await?;
    }

    // Restores into empty directories, one at a time (disk).
    eprintln!("restores");
    let vault_store = match (&server.backup_bucket, s3_repo) {
        (Some(bucket), true) => format!("s3://{bucket}/vault-repo"),
        _ => crate::server::backup_repository(&work)
            .display()
            .to_string(),
    };
    let target = work.join("restored");
    let target_arg = target.display().to_string();
    let (seconds, restored) = cli(
        &server,
        &[
            "restore",
            "--store",
            &vault_store,
            "--snapshot",
            "latest",
            "--to",
            &target_arg,
        ],
    )?;
    if restored["mismatches"]
        .as_array()
        .is_some_and(|m| !m.is_empty())
    {
        bail!(
            "the vault's restore found mismatches: {}",
            restored["mismatches"]
        );
    }
    vault_row.restore = step(seconds, bytes);
    let _ = std::fs::remove_dir_all(&target);
    if restic_ok {
        let (seconds, _) = baselines.restic(&["restore", "latest", "--target", &target_arg])?;
        restic_row.restore = step(seconds, bytes);
        let _ = std::fs::remove_dir_all(&target);
    }
    if borg_ok {
        std::fs::create_dir_all(&target)?;
        let (seconds, _) = baselines.borg(&["extract", &archive(2)], Some(&target))?;
        borg_row.restore = step(seconds, bytes);
        let _ = std::fs::remove_dir_all(&target);
    }

    // Verify every byte.
    eprintln!("verify, reading every byte");
    let (seconds, verified) = cli(
        &server,
        &["backup", "verify", "--store", &vault_store, "--read-data"],
    )?;
    if verified["problems"]
        .as_array()
        .is_some_and(|p| !p.is_empty())
    {
        bail!(
            "the vault's repository did not verify: {}",
            verified["problems"]
        );
    }
    vault_row.verify = step(seconds, bytes);
    if restic_ok {
        let (seconds, _) = baselines.restic(&["check", "--read-data"])?;
        restic_row.verify = step(seconds, bytes);
    }
    if borg_ok {
        let (seconds, _) = baselines.borg(&["check", "--verify-data", &borg_repo], None)?;
        borg_row.verify = step(seconds, bytes);
    }

    // Delete 10 %, back up, prune to the last snapshot.
    let doomed: Arc<Vec<String>> = Arc::new(ids.drain(..ids.len() / 10).collect());
    eprintln!("deleting {} documents", doomed.len());
    {
        let (doomed, vault) = (doomed.clone(), vault.clone());
        run_tasks(doomed.len(), 32, move |i| {
            let (doomed, vault) = (doomed.clone(), vault.clone());
            async move {
                vault.delete(&doomed[i]).await?;
                Ok(0)
            }
        })
        .await?;
    }
    eprintln!("backups after the deletes, and prunes");
    let (seconds, _) = backup_now(&server).await?;
    vault_row.after_delete = step(seconds, bytes);
    let t = Instant::now();
    let r = server
        .http
        .post(server.at("/v1/admin/backups/prune"))
        .bearer_auth(&server.operator_token)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("prune: {}: {}", r.status(), r.text().await?);
    }
    vault_row.prune = step(t.elapsed().as_secs_f64(), bytes);
    vault_row.repository_bytes_after_prune = repo_size("vault").await?.1;
    if restic_ok {
        let (seconds, _) = baselines.restic(&["backup", &source_arg])?;
        restic_row.after_delete = step(seconds, bytes);
        let (seconds, _) = baselines.restic(&["forget", "--keep-last", "1", "--prune"])?;
        restic_row.prune = step(seconds, bytes);
        restic_row.repository_bytes_after_prune = repo_size("restic").await?.1;
    }
    if borg_ok {
        let (seconds, _) = baselines.borg(&["create", &archive(3), &source_arg], None)?;
        borg_row.after_delete = step(seconds, bytes);
        let (prune_s, _) = baselines.borg(&["prune", "--keep-last", "1", &borg_repo], None)?;
        let (compact_s, _) = baselines.borg(&["compact", &borg_repo], None)?;
        borg_row.prune = step(prune_s + compact_s, bytes);
        borg_row.repository_bytes_after_prune = repo_size("borg").await?.1;
    }
    let kopia = ToolRow {
        tool: "kopia".into(),
        status: "not run (not packaged for Debian or PyPI)".into(),
        ..ToolRow::default()
    };
    Ok(BackupsReport {
        documents,
        kind: match doc_bytes {
            Some(size) => format!("{size}-byte scans"),
            None => "2–20 KiB X12/FHIR".into(),
        },
        objects,
        bytes,
        repository: if s3_repo { "s3 (moto)" } else { "directory" }.into(),
        fill_seconds,
        tools: vec![vault_row, restic_row, borg_row, kopia],
    })
}

/// The report as a markdown table, with ratios against restic.
pub fn markdown(report: &BackupsReport) -> String {
    let mut out = format!(
        "### Backups: {} documents of {} ({} objects, {:.1} MB), repository: {}\n\n",
        report.documents,
        report.kind,
        report.objects,
        report.bytes as f64 / 1e6,
        report.repository
    );
    out.push_str("| tool | full | +1 % | restore | verify (all data) | after 10 % deleted | prune | repository | objects | after prune | peak RSS (before) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    let restic = report
        .tools
        .iter()
        .find(|t| t.tool == "restic" && t.status == "ok");
    for tool in &report.tools {
        if tool.status != "ok" {
            out.push_str(&format!("| {} | {} |||||||||| \n", tool.tool, tool.status));
            continue;
        }
        let cell = |s: &Step, theirs: Option<&Step>| {
            let ratio = theirs
                .filter(|_| tool.tool != "restic")
                .map(|t| format!(" ({:.2}x)", t.seconds / s.seconds.max(1e-9)))
                .unwrap_or_default();
            format!("{:.1} s, {:.0} MB/s{ratio}", s.seconds, s.mb_per_s)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} MB | {} | {:.1} MB | {} MiB ({} MiB) |\n",
            tool.tool,
            cell(&tool.full, restic.map(|r| &r.full)),
            cell(&tool.incremental, restic.map(|r| &r.incremental)),
            cell(&tool.restore, restic.map(|r| &r.restore)),
            cell(&tool.verify, restic.map(|r| &r.verify)),
            cell(&tool.after_delete, restic.map(|r| &r.after_delete)),
            cell(&tool.prune, restic.map(|r| &r.prune)),
            tool.repository_bytes as f64 / 1e6,
            tool.repository_objects,
            tool.repository_bytes_after_prune as f64 / 1e6,
            tool.peak_rss_kib / 1024,
            tool.rss_before_kib / 1024,
        ));
    }
    out.push_str("\n(x): speed against restic in the same run (restic's time over this tool's; above 1 is faster).\n");
    for tool in &report.tools {
        let samples = &tool.rss_each_second_kib;
        if let Some((at, peak)) = samples.iter().enumerate().max_by_key(|(_, kib)| **kib) {
            out.push_str(&format!(
                "\n{} server memory sampled each second of its full backup: highest {} MiB at {} s of {} s, {} MiB at the end.\n",
                tool.tool,
                peak / 1024,
                at,
                samples.len(),
                samples.last().copied().unwrap_or_default() / 1024,
            ));
        }
    }
    out
}

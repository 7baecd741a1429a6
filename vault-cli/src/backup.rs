//! `backup`, `restore` and `drill`: on-demand backups through the server, and the
//! offline commands that work on a backup repository directly (`--store`).
//!
//! The offline commands trust a repository only as far as the vault's backup
//! public key vouches for it, and that key never comes from the repository: it is
//! `--public-key HEX`, `--public-key-file FILE`, or else the running server's
//! answer (`GET /v1/admin/backups/public-key`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use vault_core::backup::drill::{self, DrillOptions};
use vault_core::backup::repo::Repository;
use vault_core::backup::restore::{self, Target};
use vault_core::backup::verify::{self, ReadData};
use vault_core::backup::{BackupError, Progress};
use vault_core::storage::{list_all, StoreLocation};
use vault_crypto::signing::PublicKey;

use crate::client::{CliError, Client};

/// A progress bar on stderr (hidden with `--json` or when stderr is not a terminal).
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar, drawn unless `hidden`.
    pub fn new(hidden: bool) -> Self {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Bar { bar }
    }

    /// Sets the position directly (server-side progress).
    pub fn set(&self, phase: &str, done: u64, total: u64, message: String) {
        self.bar.set_prefix(phase.to_owned());
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar.set_message(message);
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, objects: u64, bytes: u64) {
        self.bar.set_prefix(phase.to_owned());
        self.bar.set_length(bytes);
        self.bar.set_position(0);
        self.bar.set_message(format!("{objects} objects"));
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn failed(e: BackupError) -> CliError {
    match e {
        BackupError::BadManifest(_)
        | BackupError::BadSignature(_)
        | BackupError::ForeignManifest(_)
        | BackupError::ForeignRepository { .. }
        | BackupError::Mismatch { .. } => CliError::Integrity(e.to_string()),
        BackupError::Invalid(_)
        | BackupError::NotConfigured
        | BackupError::TargetNotEmpty
        | BackupError::UnknownSnapshot(_) => CliError::Usage(e.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}

fn print_json(value: &impl serde::Serialize) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Opens an existing repository given as `--store`.
pub async fn open_repository(store: &str) -> Result<Repository, CliError> {
    let location = StoreLocation::parse(store).map_err(|e| CliError::Usage(e.to_string()))?;
    if let StoreLocation::Fs(dir) = &location {
        if !dir.is_dir() {
            return Err(CliError::Usage(format!(
                "{} is not a directory (a backup repository)",
                dir.display()
            )));
        }
    }
    Repository::open_existing(&location).await.map_err(failed)
}

/// Where the vault's backup public key comes from (`--public-key`,
/// `--public-key-file`, else the server).
#[derive(Clone, Debug, Default)]
pub struct KeySource {
    /// `--public-key HEX`.
    pub hex: Option<String>,
    /// `--public-key-file FILE`.
    pub file: Option<PathBuf>,
}

fn parse_key(hex: &str, origin: &str) -> Result<PublicKey, CliError> {
    PublicKey::from_hex(hex.trim()).map_err(|_| {
        CliError::Usage(format!(
            "{origin} is not an Ed25519 public key in hex (64 hex digits)"
        ))
    })
}

/// The vault's backup public key: from the command line, a file, or the running
/// server; never from the repository.
pub async fn vault_key(client: &Client, source: &KeySource) -> Result<PublicKey, CliError> {
    if let Some(hex) = &source.hex {
        return parse_key(hex, "--public-key");
    }
    if let Some(path) = &source.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--public-key-file {}: {e}", path.display())))?;
        return parse_key(&text, &format!("--public-key-file {}", path.display()));
    }
    let answer = client
        .get("/v1/admin/backups/public-key")
        .await
        .map_err(|e| {
            CliError::Usage(format!(
                "the vault's backup public key is needed to trust a backup repository, and the server could not give it ({e}); pass --public-key HEX or --public-key-file FILE (`vault-cli backup public-key` prints it while the server runs)"
            ))
        })?;
    let hex = answer["public_key"].as_str().ok_or_else(|| {
        CliError::Usage(
            "the server's answer holds no backup public key; pass --public-key HEX or --public-key-file FILE".into(),
        )
    })?;
    parse_key(hex, "the server's backup public key")
}

/// `backup public-key`: the vault's backup public key, from the server.
pub async fn public_key(client: &Client, json_mode: bool) -> Result<(), CliError> {
    let answer = client.get("/v1/admin/backups/public-key").await?;
    if json_mode {
        print_json(&answer);
    } else {
        outln!("{}", answer["public_key"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `backup run`: starts a backup on the server and follows it.
pub async fn run(client: &Client, json_mode: bool) -> Result<(), CliError> {
    let started = client.post("/v1/admin/backups", &json!({})).await?;
    let requested_at = started["requested_at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let requested = time::OffsetDateTime::parse(
        &requested_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| CliError::Failed("the server's answer has no start time".into()))?;
    let bar = Bar::new(json_mode);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let listed = client.get("/v1/admin/backups").await?;
        let status = &listed["status"];
        if let Some(running) = status["running"].as_object() {
            let number = |k: &str| running.get(k).and_then(Value::as_u64).unwrap_or(0);
            bar.set(
                "backup",
                number("bytes_done"),
                number("bytes_total"),
                format!(
                    "{}/{} objects",
                    number("objects_done"),
                    number("objects_total")
                ),
            );
            continue;
        }
        let last = &status["last"];
        let finished = last["finished_at"].as_str().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        if finished.is_none_or(|f| f < requested) {
            continue;
        }
        bar.finish();
        if json_mode {
            print_json(last);
        }
        if last["ok"].as_bool() != Some(true) {
            let error = last["error"].as_str().unwrap_or("see the server log");
            return Err(CliError::Failed(if last["skipped"] == true {
                format!("backup not run: {error}")
            } else {
                format!("backup failed: {error}")
            }));
        }
        if !json_mode {
            outln!(
                "snapshot {}: {} objects, {} bytes, {} bytes copied, in {:.1} s",
                last["snapshot"].as_str().unwrap_or("?"),
                last["objects"],
                last["bytes"],
                last["bytes_added"],
                last["seconds"].as_f64().unwrap_or(0.0)
            );
        }
        return Ok(());
    }
}

/// `backup list`.
pub async fn list(client: &Client, json_mode: bool) -> Result<(), CliError> {
    let listed = client.get("/v1/admin/backups").await?;
    if json_mode {
        print_json(&listed);
        return Ok(());
    }
    let status = &listed["status"];
    if status["configured"].as_bool() != Some(true) {
        outln!("no backup target is configured ([backup] target in the server's config)");
        return Ok(());
    }
    let last_success = match (
        status["last_success_at"].as_str(),
        status["age_seconds"].as_u64(),
    ) {
        (Some(at), Some(age)) => format!("{at} (age {age} s)"),
        (Some(at), None) => at.to_owned(),
        (None, _) => "never".to_owned(),
    };
    outln!(
        "repository {}  schedule {}  next {}  last success {last_success}",
        status["target"].as_str().unwrap_or("?"),
        status["schedule"].as_str().unwrap_or("none"),
        status["next_run"].as_str().unwrap_or("-"),
    );
    for s in listed["snapshots"].as_array().into_iter().flatten() {
        outln!(
            "{}  {}  {:>8} objects {:>12} bytes  +{:<12}{}{}",
            s["id"].as_str().unwrap_or("?"),
            s["created_at"].as_str().unwrap_or("?"),
            s["objects"],
            s["bytes"],
            s["bytes_added"],
            if s["held"].as_bool() == Some(true) {
                " held"
            } else {
                ""
            },
            s["locked_until"]
                .as_str()
                .map(|u| format!(" locked until {u}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `backup prune`.
pub async fn prune(client: &Client, json_mode: bool) -> Result<(), CliError> {
    let report = client.post("/v1/admin/backups/prune", &json!({})).await?;
    if json_mode {
        print_json(&report);
    } else {
        let count = |k: &str| report[k].as_array().map_or(0, Vec::len);
        outln!(
            "kept {} snapshots ({} only by a hold or lock), removed {}, deleted {} objects, repacked {} packs ({} bytes freed)",
            count("kept"),
            count("protected"),
            count("removed"),
            report["data_objects_deleted"],
            report["packs_repacked"],
            report["bytes_freed"]
        );
    }
    Ok(())
}

/// `backup verify`: offline, against the vault's pinned key.
pub async fn verify(
    client: &Client,
    json_mode: bool,
    store: &str,
    snapshot: Option<&str>,
    key: &KeySource,
    read: ReadData,
) -> Result<(), CliError> {
    let repo = open_repository(store).await?;
    let key = vault_key(client, key).await?;
    let bar = Bar::new(json_mode);
    let report = verify::verify(&repo, &key, snapshot, read, &bar)
        .await
        .map_err(failed)?;
    if json_mode {
        print_json(&report);
    } else {
        outln!(
            "{}: {} snapshots, {} objects, {} read ({} bytes) in {:.1} s",
            repo.location,
            report.snapshots,
            report.objects,
            report.objects_read,
            report.bytes_read,
            report.seconds
        );
        for p in &report.problems {
            outln!("  PROBLEM: {p}");
        }
    }
    if report.ok() {
        Ok(())
    } else {
        Err(CliError::Integrity(format!(
            "{} problems found",
            report.problems.len()
        )))
    }
}

/// Options of `restore`.
pub struct RestoreArgs<'a> {
    /// The repository.
    pub store: &'a str,
    /// Snapshot id or `latest`.
    pub snapshot: &'a str,
    /// Target: a data directory or s3://bucket/prefix.
    pub to: &'a str,
    /// Data directory for the keystore (default: `--to` when it is a directory).
    pub data_dir: Option<PathBuf>,
    /// Resume into a non-empty target.
    pub allow_non_empty: bool,
    /// Where the vault's key comes from.
    pub key: KeySource,
}

/// `restore`: offline, only from a snapshot that verifies under the vault's key.
pub async fn restore(
    client: &Client,
    json_mode: bool,
    args: RestoreArgs<'_>,
) -> Result<(), CliError> {
    let repo = open_repository(args.store).await?;
    let key = vault_key(client, &args.key).await?;
    repo.check_pinned(&key).await.map_err(failed)?;
    let manifest = if args.snapshot == "latest" {
        let (latest, skipped) = repo.latest_verifying(&key).await.map_err(failed)?;
        for why in &skipped {
            eprintln!("warning: not the latest: {why}");
        }
        latest.ok_or_else(|| {
            CliError::Usage("the repository holds no snapshot that verifies".into())
        })?
    } else {
        repo.manifest(args.snapshot, &key).await.map_err(failed)?
    };
    let target = StoreLocation::parse(args.to).map_err(|e| CliError::Usage(e.to_string()))?;
    let (store, data_dir) = match &target {
        StoreLocation::Fs(dir) => {
            // `--to` names a data directory: objects under objects/, keys under keys/.
            let dir = if dir.ends_with("objects") {
                dir.parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.clone())
            } else {
                dir.clone()
            };
            let store = vault_core::storage::fs::FsStore::open(&dir.join("objects"))
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            (
                std::sync::Arc::new(store) as std::sync::Arc<dyn vault_core::storage::ObjectStore>,
                Some(args.data_dir.clone().unwrap_or(dir)),
            )
        }
        s3 => (
            s3.open()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?,
            args.data_dir.clone(),
        ),
    };
    let plan = restore::plan(&repo, &key, manifest).await.map_err(failed)?;
    let bar = Bar::new(json_mode);
    let report = restore::restore(
        &repo,
        &plan,
        &Target {
            store: store.as_ref(),
            keystore_file: data_dir.map(|d| d.join("keys/keystore.bin")),
            allow_non_empty: args.allow_non_empty,
        },
        &bar,
    )
    .await
    .map_err(failed)?;
    if json_mode {
        print_json(&report);
    } else {
        outln!(
            "restored snapshot {} into {}: {} objects, {} bytes ({} already there) in {:.1} s, {:.1} MB/s",
            report.snapshot,
            args.to,
            report.objects,
            report.bytes,
            report.already_present,
            report.seconds,
            report.bytes as f64 / 1e6 / report.seconds.max(1e-9)
        );
        if report.deleted_documents_left_out > 0 {
            outln!(
                "left out {} deleted documents ({} objects): their tombstones are in this or a newer snapshot",
                report.deleted_documents_left_out, report.deleted_objects_left_out
            );
        }
        outln!("start the vault on it (with the vault's root key file); its indexes are rebuilt at start-up");
        for m in &report.mismatches {
            outln!("  MISMATCH: {m}");
        }
    }
    if report.mismatches.is_empty() {
        Ok(())
    } else {
        Err(CliError::Integrity(format!(
            "{} objects did not match the manifest",
            report.mismatches.len()
        )))
    }
}

/// Options of `drill`.
pub struct DrillArgs {
    /// The repository.
    pub store: String,
    /// Drill options.
    pub options: DrillOptions,
    /// Where the vault's key comes from.
    pub key: KeySource,
    /// Keep the scratch vault.
    pub keep: bool,
    /// Do not send the report to the server's audit log.
    pub no_record: bool,
    /// Also write the JSON report here.
    pub report_file: Option<PathBuf>,
}

/// `drill`: offline restore and checks, then the report into the audit log.
pub async fn drill(client: &Client, json_mode: bool, args: DrillArgs) -> Result<(), CliError> {
    let repo = open_repository(&args.store).await?;
    let key = vault_key(client, &args.key).await?;
    let bar = Bar::new(json_mode);
    let outcome = drill::run(&repo, &key, &args.options, &bar).await;
    if !args.keep {
        cleanup(&args.options).await;
    }
    let mut report = outcome.map_err(failed)?;
    if args.keep {
        report.scratch = Some(args.options.scratch_dir.display().to_string());
    }
    if let Some(path) = &args.report_file {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text)
            .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    }
    if !args.no_record {
        client
            .post(
                "/v1/admin/drills",
                &serde_json::to_value(&report).unwrap_or_default(),
            )
            .await?;
    }
    if json_mode {
        print_json(&report);
    } else {
        out!("{}", report.human());
        if !args.no_record {
            outln!("  recorded in the vault's audit log");
        }
    }
    if report.passed() {
        Ok(())
    } else {
        Err(CliError::Integrity(format!(
            "drill failed: {} mismatches",
            report.mismatches.len()
        )))
    }
}

/// Removes the scratch vault (directory, and objects of an S3 scratch store).
async fn cleanup(options: &DrillOptions) {
    if let Some(location @ StoreLocation::S3 { .. }) = &options.scratch_store {
        if let Ok(store) = location.open().await {
            if let Ok(objects) = list_all(store.as_ref(), "", None).await {
                for object in objects {
                    let _ = store.delete(&object.name).await;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&options.scratch_dir);
}

/// A fresh scratch directory name under the system's temp directory.
pub fn default_scratch() -> PathBuf {
    std::env::temp_dir().join(format!("vault-drill-{:08x}", rand_suffix()))
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id()
}

/// `backup hold|release`.
pub async fn hold(
    client: &Client,
    json_mode: bool,
    id: &str,
    release: bool,
) -> Result<(), CliError> {
    let path = format!("/v1/admin/backups/{id}/hold");
    if release {
        client.delete(&path).await?;
    } else {
        client.post(&path, &json!({})).await?;
    }
    let value = json!({"snapshot": id, "held": !release});
    if json_mode {
        print_json(&value);
    } else if release {
        outln!("released the legal hold on snapshot {id}");
    } else {
        outln!("snapshot {id} is under legal hold: no retention rule removes it");
    }
    Ok(())
}

/// Runs one `BackupCommand`.
pub async fn run_command(
    client: &Client,
    json_mode: bool,
    command: crate::BackupCommand,
) -> Result<(), CliError> {
    use crate::BackupCommand;
    match command {
        BackupCommand::Run => run(client, json_mode).await?,
        BackupCommand::List => list(client, json_mode).await?,
        BackupCommand::Prune => prune(client, json_mode).await?,
        BackupCommand::Hold { id } => hold(client, json_mode, &id, false).await?,
        BackupCommand::Release { id } => hold(client, json_mode, &id, true).await?,
        BackupCommand::PublicKey => public_key(client, json_mode).await?,
        BackupCommand::Verify {
            store,
            snapshot,
            read_data,
            read_data_subset,
            key,
        } => {
            let read = match (read_data, read_data_subset) {
                (true, _) => ReadData::All,
                (false, Some(subset)) => {
                    ReadData::parse_subset(&subset).map_err(|e| CliError::Usage(e.to_string()))?
                }
                (false, None) => ReadData::None,
            };
            verify(
                client,
                json_mode,
                &store,
                snapshot.as_deref(),
                &key.source(),
                read,
            )
            .await?
        }
    }
    Ok(())
}

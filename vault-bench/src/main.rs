//! `vault-bench`: the load benchmark of the whole vault (issue 8).
//!
//! One command starts the real `vault-server` binary on a free loopback port with
//! a fresh data directory (filesystem store and local keys, or `--backend s3`: a
//! bucket and KMS on moto), creates a tenant and an API key, fills the tenant with
//! realistic documents and measures, in one run: uploads (2–20 KiB X12/FHIR at
//! concurrency 1, 8 and 64; 20 MiB scans), downloads and ranged reads, search
//! latency at 10,000 and 100,000 documents, the server's resident memory during a
//! streamed 1 GiB upload, and key-service calls per 1,000 uploads. Each figure is
//! set against a baseline measured in the same run on the same bytes: files
//! written with fsync on the same filesystem, the bare AES-256-GCM-SIV AEAD, a
//! plaintext Tantivy index of the same field values, and restic.
//!
//! Output: markdown tables on stdout and every figure, the parameters and the
//! machine's facts as JSON (`--out`). `--quick` is a small run (under two minutes
//! with debug builds) that CI runs.

mod backups;
mod baseline;
mod bench;
mod chaos;
mod client;
mod corpus;
mod metrics;
mod procfs;
mod replicas;
mod report;
mod server;
mod stats;
mod vault_backup;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use crate::server::Backend;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load benchmark of the vault against raw file writes, the bare AEAD, plaintext Tantivy and restic"
)]
struct Options {
    /// Small counts, a 64 MiB large upload and no 100k search: under two minutes.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// The vault-server binary (default: beside this program).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Storage backend: fs (local keys) or s3 (moto, with an aws-kms tenant).
    #[arg(long, value_enum, default_value = "fs")]
    backend: Backend,
    /// moto's URL for --backend s3 (default: start moto_server from the PATH).
    #[arg(long, env = "BILLVAULT_TEST_MOTO_URL")]
    moto_url: Option<String>,
    /// Directory under which the run's temporary directory is made (the vault's
    /// data directory and the baseline files share its filesystem).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the run's directory (data, logs, plaintext copies) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Documents in the tenant at the second search (default 100,000; 0: no fill
    /// and no second search; quick runs have none).
    #[arg(long)]
    docs: Option<usize>,
    /// Size of the single streamed upload, MiB (default 1024; quick 64).
    #[arg(long)]
    large_mib: Option<u64>,
    /// Instead of the full run: N replicas over one bucket (needs --backend s3),
    /// uploads and downloads spread over them beside one replica, per-replica
    /// CPU, and the time a new and a restarted replica take to serve complete
    /// searches of a tenant holding --docs documents (default 100,000; quick 400).
    #[arg(long)]
    replicas: Option<usize>,
    /// Instead of the full run: the chaos soak (issue 17). Mixed keyed load while
    /// the server is killed at random and, with --backend s3, S3 answers fail
    /// through a fault-injecting proxy; then every acknowledged document is
    /// checked (lost, wrong bytes, duplicates, unaudited changes, orphans after
    /// collection). Ten minutes, or 40 s with --quick. Fails if a promise broke.
    #[arg(long)]
    chaos: bool,
    /// Instead of the full run: how the cost grows (issue 19). The tenant (planned
    /// for --docs) is filled at concurrency 64 to 10,000, 100,000 and --docs
    /// documents (default 1,000,000; quick: 300 and 600); at each size, search
    /// against plaintext Tantivy, the first page of the listing and a sparse
    /// one, audit events since a minute ago, and a restart to `/readyz` and to
    /// complete searches (page cache dropped first, as root).
    #[arg(long)]
    growth: bool,
    /// Instead of the full run: backups against restic and Borg (issue 20) on a
    /// vault of --docs documents (default 100,000; quick 2,000): full, +1 %,
    /// restore, verify reading all data, a backup after deleting 10 % and a
    /// prune; repository size and objects; peak memory.
    #[arg(long)]
    backups: bool,
    /// Where --backups keeps the repositories: a directory of the run, or a
    /// bucket on moto (the vault and restic; Borg has no S3 backend).
    #[arg(long, value_enum, default_value = "fs")]
    backup_repo: Backend,
    /// With --backups: fill with scans of this many bytes instead of 2–20 KiB
    /// X12/FHIR documents (a million documents in less disk).
    #[arg(long)]
    doc_bytes: Option<usize>,
    /// With --backups: leave Borg out (its single-threaded backup of a million
    /// documents takes longer than the rest of the run).
    #[arg(long)]
    without_borg: bool,
    /// Seconds of chaos load (overrides the default of --chaos).
    #[arg(long)]
    chaos_seconds: Option<u64>,
    /// The shared test data (X12 and FHIR files uploaded with the synthetic ones).
    #[arg(long, env = "BILLVAULT_SHARED_DATA")]
    shared_data: Option<PathBuf>,
}

fn machine(work: &std::path::Path, server: &std::path::Path) -> report::Machine {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    report::Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        nproc: std::process::Command::new("nproc")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        cpu_model: read("/proc/cpuinfo").and_then(|t| procfs::cpu_model(&t)),
        kernel: read("/proc/sys/kernel/osrelease").map(|t| t.trim().to_owned()),
        memory_kib: read("/proc/meminfo").and_then(|t| procfs::status_kib(&t, "MemTotal")),
        filesystem: read("/proc/self/mounts").and_then(|t| procfs::mount_of(&t, work)),
        bench_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        server_binary: server.display().to_string(),
        malloc_env: std::env::vars()
            .filter(|(k, _)| k.starts_with("MALLOC_"))
            .collect(),
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let binary = match &options.server_bin {
        Some(path) => path.clone(),
        None => server::default_server_binary()?,
    };
    let base = options.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let tempdir = tempfile::Builder::new()
        .prefix("vault-bench-")
        .tempdir_in(&base)
        .context("make the run's directory")?;
    let work = std::fs::canonicalize(tempdir.path())?;
    let outcome = measure(&options, binary, &work, started, started_unix).await;
    if outcome.is_err() {
        // Keep the server's log beside the results; the run's directory goes.
        let log = PathBuf::from(format!("{}.server.log", options.out.display()));
        if std::fs::copy(work.join("vault-server.log"), &log).is_ok() {
            eprintln!("server log kept in {}", log.display());
        }
    }
    if options.keep {
        let kept = tempdir.keep();
        eprintln!("kept {}", kept.display());
    }
    outcome
}

/// Starts the server, runs the phases and writes the report.
async fn measure(
    options: &Options,
    binary: PathBuf,
    work: &std::path::Path,
    started: Instant,
    started_unix: u64,
) -> anyhow::Result<()> {
    let shared_data = options
        .shared_data
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let shared_data = shared_data.is_dir().then_some(shared_data);
    if options.chaos {
        let launch = server::Launch::new(
            binary,
            options.backend,
            options.moto_url.clone(),
            work.to_owned(),
        );
        let mut settings = chaos::ChaosSettings::new(options.backend, options.quick);
        if let Some(seconds) = options.chaos_seconds {
            settings.seconds = seconds;
        }
        let report = chaos::run(&launch, &settings).await?;
        println!("{}", chaos::markdown(&settings, &report));
        std::fs::write(
            &options.out,
            serde_json::to_vec_pretty(
                &serde_json::json!({"settings": settings, "report": report}),
            )?,
        )
        .with_context(|| format!("write {}", options.out.display()))?;
        let broken = chaos::failures(&report);
        anyhow::ensure!(
            broken.is_empty(),
            "the chaos run broke promises: {}",
            broken.join(", ")
        );
        return Ok(());
    }
    if options.backups {
        anyhow::ensure!(
            options.backend == server::Backend::Fs,
            "--backups backs up the filesystem store (restic and Borg read its files): leave --backend at fs and choose --backup-repo"
        );
        let launch = server::Launch::new(
            binary,
            options.backend,
            options.moto_url.clone(),
            work.to_owned(),
        );
        let documents = options
            .docs
            .unwrap_or(if options.quick { 2_000 } else { 100_000 });
        let report = backups::run(
            &launch,
            documents,
            options.doc_bytes,
            options.backup_repo == server::Backend::S3,
            !options.without_borg,
        )
        .await?;
        println!("{}", backups::markdown(&report));
        std::fs::write(&options.out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", options.out.display()))?;
        eprintln!(
            "results: {} ({:.0} s)",
            options.out.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if let Some(replicas) = options.replicas {
        anyhow::ensure!(
            options.backend == server::Backend::S3,
            "--replicas needs --backend s3: replicas share a bucket"
        );
        let launch = server::Launch::new(
            binary,
            options.backend,
            options.moto_url.clone(),
            work.to_owned(),
        );
        let documents = options
            .docs
            .unwrap_or(if options.quick { 400 } else { 100_000 });
        let ops = if options.quick { 150 } else { 2000 };
        let report = replicas::run(&launch, replicas, documents, ops, 16).await?;
        std::fs::write(&options.out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", options.out.display()))?;
        eprintln!(
            "results: {} ({:.0} s)",
            options.out.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let mut settings = bench::Settings::new(options.quick, options.backend);
    let growth_sizes = options.growth.then(|| {
        let top = options
            .docs
            .unwrap_or(if options.quick { 600 } else { 1_000_000 })
            .max(1);
        let steps: &[usize] = if options.quick {
            &[300]
        } else {
            &[10_000, 100_000]
        };
        let mut sizes: Vec<usize> = steps.iter().copied().filter(|&n| n < top).collect();
        sizes.push(top);
        sizes
    });
    if let Some(sizes) = &growth_sizes {
        let top = sizes.last().copied().unwrap_or(1);
        settings.small_uploads.clear();
        settings.first_search_documents = None;
        settings.second_search_documents = Some(top);
        settings.plain_copies = false;
        settings.planned_documents = Some(top);
    } else if let Some(docs) = options.docs {
        settings.second_search_documents = (docs > settings.first_search_documents.unwrap_or(0))
            .then_some(docs)
            .filter(|_| docs > 0);
    }
    if let Some(mib) = options.large_mib {
        anyhow::ensure!(mib > 0, "--large-mib must be at least 1");
        settings.large_bytes = mib << 20;
    }
    let need = settings.disk_bytes();
    if let Some(free) = procfs::available_bytes(work) {
        if free < need {
            anyhow::bail!(
                "the run needs about {:.1} GB free under {} and {:.1} GB are: free some, or choose another filesystem with --work-dir",
                need as f64 / 1e9,
                work.display(),
                free as f64 / 1e9
            );
        }
    }
    let machine = machine(work, &binary);
    eprintln!(
        "vault-bench{}: server {}, work directory {} (needs about {:.1} GB)",
        if options.quick { " --quick" } else { "" },
        binary.display(),
        work.display(),
        need as f64 / 1e9
    );
    let launch = server::Launch::new(
        binary,
        options.backend,
        options.moto_url.clone(),
        work.to_owned(),
    );
    let server = server::Server::start(&launch).await?;
    let bench = bench::Bench::new(settings.clone(), server, launch, work, shared_data).await?;
    let results = match &growth_sizes {
        Some(sizes) => bench.run_growth(sizes).await?,
        None => bench.run().await?,
    };
    let report = report::Report {
        tool: format!("vault-bench {}", env!("CARGO_PKG_VERSION")),
        started_unix,
        duration_s: started.elapsed().as_secs_f64(),
        machine,
        // The full run's targets (issue 8); the growth run's are in BENCHMARKS.md.
        targets: if growth_sizes.is_some() {
            Vec::new()
        } else {
            report::targets(&settings, &results)
        },
        parameters: settings,
        results,
    };
    println!(
        "{}",
        if growth_sizes.is_some() {
            report::growth_markdown(&report)
        } else {
            report::markdown(&report)
        }
    );
    std::fs::write(&options.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("write {}", options.out.display()))?;
    eprintln!(
        "results: {} ({:.0} s)",
        options.out.display(),
        started.elapsed().as_secs_f64()
    );
    let search_misses: usize = report
        .results
        .search
        .iter()
        .map(|s| s.vault_misses + s.plain_misses)
        .sum();
    if search_misses > 0 {
        anyhow::bail!("{search_misses} search answers lacked the document they were made from");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

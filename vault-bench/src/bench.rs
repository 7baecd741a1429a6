//! The phases of one run against one server, in order, and what they measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;
use sha2::Digest as _;

use crate::baseline::{self, PlainIndex, Restic};
use crate::client::{Stored, Vault};
use crate::corpus::{self, Doc, Generator};
use crate::procfs;
use crate::server::{Backend, Server};
use crate::stats::{ratio, run_tasks, Summary, Timed};

/// Counts and sizes of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `--quick`.
    pub quick: bool,
    /// Seed of every generated document and choice.
    pub seed: u64,
    /// Storage backend.
    pub backend: Backend,
    /// Key provider of the tenant (`local`, or `aws-kms` on S3).
    pub key_provider: String,
    /// Uploads between the two `/metrics` scrapes of the key-service calls.
    pub key_call_uploads: usize,
    /// Concurrency of the key-call uploads.
    pub key_call_concurrency: usize,
    /// Small-document upload phases: (concurrency, documents).
    pub small_uploads: Vec<(usize, usize)>,
    /// Documents in the tenant at the first search (the last small-upload phase
    /// is sized to reach it), if set.
    pub first_search_documents: Option<usize>,
    /// Documents in the tenant at the second search (filled at concurrency 64).
    pub second_search_documents: Option<usize>,
    /// Searches timed per measurement.
    pub queries: usize,
    /// 20 MiB scan upload phases: (concurrency, scans).
    pub scan_uploads: Vec<(usize, usize)>,
    /// 1–20 MiB scans of the tenant, uploaded at concurrency 4.
    pub mixed_scans: usize,
    /// Small-document download phases: (concurrency, reads).
    pub downloads: Vec<(usize, usize)>,
    /// Concurrencies of the 20 MiB scan downloads (each reads every such scan).
    pub scan_download_concurrency: Vec<usize>,
    /// Size of the single streamed upload.
    pub large_bytes: u64,
    /// Ranged reads of it.
    pub ranged_reads: usize,
    /// Bytes per ranged read.
    pub range_bytes: usize,
    /// Keep a plaintext copy of each document as a file (the restic baseline's
    /// input); the growth run does without.
    pub plain_copies: bool,
    /// The tenant's search plan is made for this many documents (`None`: the
    /// server's default for a new tenant, re-planned as it grows).
    pub planned_documents: Option<usize>,
}

impl Settings {
    /// The full run, or the quick one.
    pub fn new(quick: bool, backend: Backend) -> Settings {
        let key_provider = match backend {
            Backend::Fs => "local",
            Backend::S3 => "aws-kms",
        }
        .to_owned();
        if quick {
            Settings {
                quick,
                seed: 20_260_301,
                backend,
                key_provider,
                key_call_uploads: 1_000,
                key_call_concurrency: 8,
                small_uploads: vec![(1, 100), (8, 300), (64, 600)],
                first_search_documents: None,
                second_search_documents: None,
                queries: 200,
                scan_uploads: vec![(1, 3), (4, 4)],
                mixed_scans: 4,
                downloads: vec![(1, 100), (8, 300), (64, 600)],
                scan_download_concurrency: vec![1, 4],
                large_bytes: 64 << 20,
                ranged_reads: 100,
                range_bytes: 64 << 10,
                plain_copies: true,
                planned_documents: None,
            }
        } else {
            Settings {
                quick,
                seed: 20_260_301,
                backend,
                key_provider,
                key_call_uploads: 1_000,
                key_call_concurrency: 8,
                small_uploads: vec![(1, 1_000), (8, 3_000), (64, 4_000)],
                first_search_documents: Some(10_000),
                second_search_documents: Some(100_000),
                queries: 2_000,
                scan_uploads: vec![(1, 6), (4, 8)],
                mixed_scans: 8,
                downloads: vec![(1, 1_000), (8, 3_000), (64, 5_000)],
                scan_download_concurrency: vec![1, 4],
                large_bytes: 1 << 30,
                ranged_reads: 500,
                range_bytes: 64 << 10,
                plain_copies: true,
                planned_documents: None,
            }
        }
    }
}

impl Settings {
    /// Disk the run needs at its peak (a generous estimate): per small document
    /// about 24 KiB in the vault (three objects and a directory) and 16 KiB as a
    /// plaintext file; scans twice; the large upload once (at the first search's
    /// size; it is deleted after its phase); during the vault's backup phase also
    /// its repository and a restored copy (about 24 KiB per document each, scans
    /// twice more); and for restic, with the vault's repository still there, the
    /// plaintext files, restic's repository and a restored copy. The growth run
    /// keeps no plaintext copies and makes no backup.
    pub fn disk_bytes(&self) -> u64 {
        if !self.plain_copies {
            // The growth run: the vault's objects and the two indexes only
            // (32 GB at 1,000,000 documents on ext4).
            let docs = self.second_search_documents.unwrap_or(0) as u64;
            return docs * (36 << 10) + (256 << 20);
        }
        let first = self.first_search_documents.unwrap_or_else(|| {
            self.key_call_uploads + self.small_uploads.iter().map(|p| p.1).sum::<usize>() + 200
        }) as u64;
        let docs = self.second_search_documents.map_or(first, |d| d as u64);
        let scans: u64 = self
            .scan_uploads
            .iter()
            .map(|p| p.1 as u64 * (20 << 20))
            .sum::<u64>()
            + self.mixed_scans as u64 * (21 << 20) / 2;
        let at_large = first * (40 << 10) + 2 * scans + self.large_bytes;
        let filled = docs * (40 << 10) + 2 * scans;
        let vault_backup = docs * (88 << 10) + 4 * scans;
        let restic = docs * (62 << 10) + 4 * scans;
        at_large.max(filled).max(vault_backup).max(restic) + (256 << 20)
    }
}

/// Uploads of one workload at one concurrency, against the same files written
/// with fsync at the same concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct UploadRow {
    /// What was uploaded.
    pub workload: String,
    /// Requests in flight.
    pub concurrency: usize,
    /// The vault.
    pub vault: Summary,
    /// The fsync'd file-write baseline (none for the fill).
    pub files: Option<Summary>,
    /// Vault MB/s over file MB/s.
    pub ratio: Option<f64>,
}

/// The bare AEAD on the bytes of a workload.
#[derive(Debug, Clone, Serialize)]
pub struct AeadRow {
    /// What was encrypted.
    pub workload: String,
    /// AES-256-GCM-SIV in 64 KiB chunks, one thread.
    pub aead: Summary,
    /// The vault's best upload MB/s for this workload.
    pub vault_mb_per_s: f64,
    /// At this concurrency.
    pub vault_concurrency: usize,
    /// Vault over AEAD.
    pub ratio: Option<f64>,
}

/// Downloads against reading the same plaintext files.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadRow {
    /// What was read.
    pub workload: String,
    /// Requests in flight.
    pub concurrency: usize,
    /// The vault.
    pub vault: Summary,
    /// Reading the plaintext files.
    pub files: Summary,
    /// Vault MB/s over file MB/s.
    pub ratio: Option<f64>,
}

/// Ranged reads of the large upload.
#[derive(Debug, Clone, Serialize)]
pub struct RangedRow {
    /// Size of the object.
    pub object_bytes: u64,
    /// Bytes per read.
    pub range_bytes: usize,
    /// `Range: bytes=a-b` requests, one at a time.
    pub vault: Summary,
    /// `pread` of the same ranges of the plaintext file.
    pub file: Summary,
}

/// One query class of a search measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassRow {
    /// Queries of the class.
    pub queries: usize,
    /// Vault p50, ms.
    pub vault_p50_ms: f64,
    /// Vault p99, ms.
    pub vault_p99_ms: f64,
    /// Plaintext p50, ms.
    pub plain_p50_ms: f64,
    /// Plaintext p99, ms.
    pub plain_p99_ms: f64,
    /// Mean total hits per query.
    pub hits_per_query: f64,
}

/// Searches at one tenant size.
#[derive(Debug, Clone, Serialize)]
pub struct SearchRow {
    /// Documents in the tenant.
    pub documents: usize,
    /// `GET /v1/search`, one at a time.
    pub vault: Summary,
    /// The same queries on the plaintext Tantivy index, in process.
    pub plain: Summary,
    /// Vault p99 over plaintext p99.
    pub p99_ratio: Option<f64>,
    /// `GET /healthz`, one at a time: the HTTP round trip on this machine.
    pub http_floor: Summary,
    /// Answers of the vault without the document the query was made from.
    pub vault_misses: usize,
    /// Answers of the plaintext index without it.
    pub plain_misses: usize,
    /// Vault answers with more than one page, the document not on the first.
    pub unverifiable: usize,
    /// Mean total hits per query (vault).
    pub hits_per_query: f64,
    /// By query class.
    pub classes: BTreeMap<String, ClassRow>,
}

/// Server memory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryRow {
    /// Size of the streamed upload.
    pub large_bytes: u64,
    /// The streamed upload (one request).
    pub upload: Summary,
    /// Writing the same bytes to one file with fsync.
    pub file: Summary,
    /// Upload MB/s over file MB/s.
    pub ratio: Option<f64>,
    /// VmRSS before the upload, KiB.
    pub rss_before_kib: u64,
    /// Whether VmHWM could be reset before the upload (else it is the process peak).
    pub hwm_reset: bool,
    /// VmHWM after the upload: the peak during it when reset, KiB.
    pub hwm_during_kib: u64,
    /// Largest sampled VmRSS during the upload, KiB.
    pub sampled_max_kib: u64,
    /// Mean sampled VmRSS during the upload, KiB.
    pub sampled_mean_kib: u64,
    /// Samples taken (every 20 ms).
    pub samples: usize,
    /// Peak resident memory over the whole run (VmHWM before the reset and at the
    /// end, and every sample), KiB.
    pub peak_run_kib: u64,
}

/// Key-service calls (`vault_key_provider_calls_total`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeyCalls {
    /// The tenant's key provider.
    pub provider: String,
    /// Uploads between the two scrapes.
    pub uploads: usize,
    /// Calls between them.
    pub calls: f64,
    /// Per 1,000 uploads.
    pub per_1000: f64,
    /// Documents uploaded over the whole run.
    pub run_uploads: usize,
    /// Calls over the whole run (uploads, reads and searches), after tenant creation.
    pub run_calls: f64,
    /// Per 1,000 uploads over the whole run.
    pub run_per_1000: f64,
}

/// The restic baseline.
#[derive(Debug, Clone, Serialize)]
pub struct ResticRow {
    /// `ok`, `not run` (restic missing) or `failed: ...`.
    pub status: String,
    /// Its figures when run.
    pub result: Option<Restic>,
}

/// The tenant at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CorpusFacts {
    /// Documents by format.
    pub documents_by_format: BTreeMap<String, usize>,
    /// Documents.
    pub documents: usize,
    /// Plaintext bytes.
    pub bytes: u64,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Uploads.
    pub uploads: Vec<UploadRow>,
    /// AEAD baselines.
    pub aead: Vec<AeadRow>,
    /// Downloads.
    pub downloads: Vec<DownloadRow>,
    /// Ranged reads.
    pub ranged: Option<RangedRow>,
    /// Searches.
    pub search: Vec<SearchRow>,
    /// Server memory.
    pub memory: MemoryRow,
    /// Key-service calls.
    pub key_calls: KeyCalls,
    /// restic backup and restore of the same plaintext files.
    pub restic: ResticRow,
    /// Vault backup, incremental backup, restore and verify (`vault_backup.rs`).
    pub vault_backup: Option<serde_json::Value>,
    /// The tenant.
    pub corpus: CorpusFacts,
    /// The phases in order, with the server's memory after each.
    pub phases: Vec<Phase>,
    /// Listings and audit reads at each search size (how the cost grows).
    pub growth: Vec<GrowthRow>,
    /// The server restarted on its data directory (at the end of the full run;
    /// at each size of the growth run).
    pub restarts: Vec<RestartRow>,
}

/// What requests whose cost could grow with the vault take at one size.
#[derive(Debug, Clone, Serialize)]
pub struct GrowthRow {
    /// Documents in the tenant.
    pub documents: usize,
    /// `GET /v1/documents?limit=100`, the first page.
    pub list_first_page: Summary,
    /// `GET /v1/documents?kind=scan&limit=100`: a filter few documents pass.
    pub list_sparse_filter: Summary,
    /// `GET /v1/audit/events?since=<a minute ago>&limit=100` (operator).
    pub audit_since: Summary,
    /// Events in the tenant's log in the last minute (what the read returns, at
    /// most 100).
    pub audit_events_returned: usize,
}

/// A restart of the server on its data directory.
#[derive(Debug, Clone, Serialize)]
pub struct RestartRow {
    /// Documents in the tenant.
    pub documents: usize,
    /// From stopping the old process to `/readyz` and to a complete search.
    pub ready: crate::replicas::TimeToReady,
    /// Whether the page cache was dropped before the start (needs root).
    pub page_cache_dropped: bool,
}

/// One phase of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Its name.
    pub name: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Server VmRSS at its end, KiB.
    pub rss_kib: u64,
    /// Server VmHWM at its end, KiB (reset before the large upload).
    pub hwm_kib: u64,
}

/// A stored document of the tenant.
struct Uploaded {
    id: String,
    size: u64,
    sha256: [u8; 32],
    format: &'static str,
    query: Option<(&'static str, String)>,
    path: PathBuf,
}

/// Prints a progress line on stderr.
fn progress(started: Instant, text: &str) {
    eprintln!("[{:7.1} s] {text}", started.elapsed().as_secs_f64());
}

/// One run.
pub struct Bench {
    settings: Settings,
    server: Server,
    /// How the server was started (for the restart).
    launch: crate::server::Launch,
    /// The benchmark tenant's API key.
    key: String,
    vault: Vault,
    generator: Generator,
    plain: PlainIndex,
    plain_dir: PathBuf,
    work: PathBuf,
    shared_data: Option<PathBuf>,
    docs: Vec<Uploaded>,
    uploads: usize,
    stopped: bool,
    seq: usize,
    started: Instant,
    results: Results,
}

impl Bench {
    /// A run against a started server: creates the tenant and its API key.
    pub async fn new(
        settings: Settings,
        server: Server,
        launch: crate::server::Launch,
        work: &Path,
        shared_data: Option<PathBuf>,
    ) -> anyhow::Result<Bench> {
        server
            .create_tenant_for("bench", &settings.key_provider, settings.planned_documents)
            .await
            .context("create the benchmark tenant")?;
        let key = server
            .api_key("bench", crate::server::ALL_ROLES)
            .await
            .context("issue the benchmark API key")?;
        let vault = Vault::new(server.http.clone(), &server.url, &key);
        let expected = settings
            .second_search_documents
            .or(settings.first_search_documents)
            .unwrap_or(10_000);
        let plain_dir = work.join("plain");
        std::fs::create_dir_all(&plain_dir)?;
        Ok(Bench {
            generator: Generator::new(settings.seed, expected),
            plain: PlainIndex::create(&work.join("plain-index"))?,
            settings,
            server,
            launch,
            key,
            vault,
            plain_dir,
            work: work.to_owned(),
            shared_data,
            docs: Vec::new(),
            uploads: 0,
            stopped: false,
            seq: 0,
            started: Instant::now(),
            results: Results {
                uploads: Vec::new(),
                aead: Vec::new(),
                downloads: Vec::new(),
                ranged: None,
                search: Vec::new(),
                memory: MemoryRow::default(),
                key_calls: KeyCalls::default(),
                restic: ResticRow {
                    status: "not run".into(),
                    result: None,
                },
                vault_backup: None,
                corpus: CorpusFacts::default(),
                phases: Vec::new(),
                growth: Vec::new(),
                restarts: Vec::new(),
            },
        })
    }

    fn progress(&self, text: &str) {
        progress(self.started, text);
    }

    async fn timed_phase<F>(&mut self, name: &str, phase: F) -> anyhow::Result<()>
    where
        F: AsyncFnOnce(&mut Bench) -> anyhow::Result<()>,
    {
        self.progress(&format!("== {name}"));
        let t = Instant::now();
        phase(self).await.with_context(|| format!("phase {name}"))?;
        if !self.stopped && !self.server.running() {
            bail!(
                "vault-server died during {name}; see {}",
                self.server.log.display()
            );
        }
        let memory = procfs::memory(self.server.pid).unwrap_or_default();
        self.results.phases.push(Phase {
            name: name.to_owned(),
            seconds: t.elapsed().as_secs_f64(),
            rss_kib: memory.rss_kib,
            hwm_kib: memory.hwm_kib,
        });
        Ok(())
    }

    /// Runs every phase; the results.
    pub async fn run(mut self) -> anyhow::Result<Results> {
        let pid = self.server.pid;
        let run_sampler = procfs::Sampler::start(pid, Duration::from_millis(100));
        let run_calls_before = self.server.metric("vault_key_provider_calls_total").await?;

        self.timed_phase("key-service calls", Bench::key_calls)
            .await?;
        self.timed_phase("shared files", Bench::shared_files)
            .await?;
        let small = self.settings.small_uploads.clone();
        for (i, (concurrency, count)) in small.iter().copied().enumerate() {
            let count = match (i + 1 == small.len(), self.settings.first_search_documents) {
                // The last phase brings the tenant to the first search's size.
                (true, Some(target)) => {
                    target.saturating_sub(self.docs.len()).max(count.min(1_000))
                }
                _ => count,
            };
            self.timed_phase(
                &format!("small uploads c={concurrency}"),
                async move |b: &mut Bench| b.small_uploads(concurrency, count).await,
            )
            .await?;
        }
        self.timed_phase("search", Bench::search).await?;
        self.timed_phase("growth", Bench::growth).await?;
        self.timed_phase("scan uploads", Bench::scan_uploads)
            .await?;
        self.timed_phase("downloads", Bench::downloads).await?;
        self.timed_phase("large upload and memory", Bench::large_upload)
            .await?;
        if self.settings.second_search_documents.is_some() {
            self.timed_phase("fill", Bench::fill).await?;
            self.timed_phase("search (filled)", Bench::search).await?;
            self.timed_phase("growth (filled)", Bench::growth).await?;
        }
        // The vault's backup, incremental backup, restore and verify, with the
        // server running and the tenant complete, on the same data as restic below.
        self.timed_phase("vault backup", Bench::vault_backup)
            .await?;

        let run_calls_after = self.server.metric("vault_key_provider_calls_total").await?;
        let kc = &mut self.results.key_calls;
        kc.run_uploads = self.uploads;
        kc.run_calls = run_calls_after - run_calls_before;
        kc.run_per_1000 = kc.run_calls * 1000.0 / kc.run_uploads.max(1) as f64;
        let end = procfs::memory(pid)?;
        let samples = run_sampler.finish().await;
        let m = &mut self.results.memory;
        m.peak_run_kib = m
            .peak_run_kib
            .max(end.hwm_kib)
            .max(samples.iter().copied().max().unwrap_or(0));
        self.timed_phase("restart", Bench::restart).await?;
        self.stopped = true;
        self.timed_phase("server stop", async |b: &mut Bench| {
            b.server.stop();
            // restic needs room for a repository and a restored copy of the
            // plaintext files; the vault's data goes first when the disk is short
            // of that (removing it right after the server wrote it can be slow,
            // so it otherwise goes with the run's directory at the end).
            let plain = baseline::tree_bytes(&b.plain_dir)?;
            let free = procfs::available_bytes(&b.work).unwrap_or(0);
            if free < plain.saturating_mul(2) + (512 << 20) {
                b.progress("removing the vault's data to make room for restic");
                std::fs::remove_dir_all(&b.server.data_dir)?;
            }
            Ok(())
        })
        .await?;
        self.timed_phase("restic", Bench::restic).await?;
        let corpus = &mut self.results.corpus;
        for d in &self.docs {
            *corpus
                .documents_by_format
                .entry(d.format.to_owned())
                .or_default() += 1;
            corpus.bytes += d.size;
        }
        corpus.documents = self.docs.len();
        Ok(self.results)
    }

    /// The growth run (issue 19): at each size, filled at concurrency 64, search
    /// against plaintext Tantivy, listings, an audit read and a restart.
    pub async fn run_growth(mut self, sizes: &[usize]) -> anyhow::Result<Results> {
        for &size in sizes {
            self.timed_phase(&format!("fill to {size}"), async move |b: &mut Bench| {
                b.fill_to(size).await
            })
            .await?;
            self.timed_phase(&format!("search at {size}"), Bench::search)
                .await?;
            self.timed_phase(&format!("growth at {size}"), Bench::growth)
                .await?;
            self.timed_phase(&format!("restart at {size}"), Bench::restart)
                .await?;
        }
        self.stopped = true;
        self.server.stop();
        self.results.corpus.documents = self.docs.len();
        self.results.corpus.bytes = self.docs.iter().map(|d| d.size).sum();
        Ok(self.results)
    }

    /// Uploads `docs` at `concurrency`: the timing, and the documents back with what
    /// the server stored.
    async fn upload(
        &self,
        docs: Vec<Doc>,
        concurrency: usize,
    ) -> anyhow::Result<(Timed, Vec<Doc>, Vec<Stored>)> {
        let n = docs.len();
        let docs = Arc::new(docs);
        let out: Arc<Mutex<Vec<Option<Stored>>>> = Arc::new(Mutex::new(vec![None; n]));
        let cpu = self.cpu();
        let mut timed = {
            let (docs, out, vault) = (docs.clone(), out.clone(), self.vault.clone());
            run_tasks(n, concurrency, move |i| {
                let (docs, out, vault) = (docs.clone(), out.clone(), vault.clone());
                async move {
                    let stored = vault.upload(&docs[i]).await?;
                    let size = stored.size;
                    out.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] = Some(stored);
                    Ok(size)
                }
            })
            .await?
        };
        timed.cpu_s = Some(self.cpu_since(cpu));
        let docs = Arc::try_unwrap(docs).unwrap_or_else(|shared| (*shared).clone());
        let stored = std::mem::take(&mut *out.lock().map_err(|_| anyhow::anyhow!("poisoned"))?)
            .into_iter()
            .map(|s| s.context("an upload did not finish"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((timed, docs, stored))
    }

    /// Checks what the server stored, writes the plaintext copies under `dir`
    /// (with fsync at `durable` concurrency, timed: the file baseline; else
    /// plainly), adds the fields to the plaintext index and keeps the documents.
    async fn keep(
        &mut self,
        docs: Vec<Doc>,
        stored: Vec<Stored>,
        dir: &str,
        durable: Option<usize>,
    ) -> anyhow::Result<Option<Timed>> {
        self.uploads += docs.len();
        let mut paths = Vec::with_capacity(docs.len());
        for (doc, s) in docs.iter().zip(&stored) {
            let sha: [u8; 32] = sha2::Sha256::digest(&doc.body).into();
            if sha != s.sha256 {
                bail!(
                    "the server's SHA-256 of document {} differs from the body sent",
                    s.id
                );
            }
            let name = match &doc.file_name {
                Some(name) => name.clone(),
                None => {
                    self.seq += 1;
                    let ext = match doc.content_type {
                        "application/edi-x12" => "x12",
                        "application/fhir+json" => "json",
                        "application/pdf" => "pdf",
                        _ => "bin",
                    };
                    format!("{dir}/{:07}.{ext}", self.seq)
                }
            };
            paths.push(self.plain_dir.join(name));
        }
        let bodies: Vec<Bytes> = docs.iter().map(|d| d.body.clone()).collect();
        let timed = match durable {
            Some(concurrency) => Some(baseline::write_files(&paths, &bodies, concurrency)?),
            None if !self.settings.plain_copies => None,
            None => {
                for (path, body) in paths.iter().zip(&bodies) {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(path, body)?;
                }
                None
            }
        };
        for ((doc, s), path) in docs.into_iter().zip(stored).zip(paths) {
            let fields = if doc.format.starts_with("shared") {
                self.vault.fields(&s.id).await?
            } else {
                doc.fields
            };
            self.plain.add(&s.id, &fields)?;
            self.docs.push(Uploaded {
                id: s.id,
                size: s.size,
                sha256: s.sha256,
                format: doc.format,
                query: doc.query,
                path,
            });
        }
        Ok(timed)
    }

    async fn key_calls(&mut self) -> anyhow::Result<()> {
        let n = self.settings.key_call_uploads;
        let docs: Vec<Doc> = (0..n).map(|_| self.generator.small()).collect();
        let before = self.server.metric("vault_key_provider_calls_total").await?;
        let (_, docs, stored) = self
            .upload(docs, self.settings.key_call_concurrency)
            .await?;
        let after = self.server.metric("vault_key_provider_calls_total").await?;
        self.keep(docs, stored, "keycalls", None).await?;
        let kc = &mut self.results.key_calls;
        kc.provider.clone_from(&self.settings.key_provider);
        kc.uploads = n;
        kc.calls = after - before;
        kc.per_1000 = kc.calls * 1000.0 / n.max(1) as f64;
        Ok(())
    }

    async fn shared_files(&mut self) -> anyhow::Result<()> {
        let Some(dir) = self.shared_data.clone() else {
            self.progress("no shared data folder: synthetic documents only");
            return Ok(());
        };
        let docs = corpus::shared_files(&dir)?;
        self.progress(&format!("{} files from {}", docs.len(), dir.display()));
        let (_, docs, stored) = self.upload(docs, 8).await?;
        self.keep(docs, stored, "shared", None).await?;
        Ok(())
    }

    /// Full backup, +1 % of documents, incremental backup, restore, verify.
    async fn vault_backup(&mut self) -> anyhow::Result<()> {
        use crate::vault_backup::{backup_now, operation, restore_and_verify, VaultBackup};
        let (seconds, last) = backup_now(&self.server).await?;
        let full = operation(seconds, &last);
        self.progress(&format!(
            "vault backup: {:.1} MB in {:.2} s, {:.0} MB/s",
            full.bytes as f64 / 1e6,
            full.seconds,
            full.mb_per_s
        ));
        // 1 % more documents (kept as plaintext files too, so restic backs up the
        // same data).
        let count = (self.docs.len() / 100).max(1);
        let docs: Vec<Doc> = (0..count).map(|_| self.generator.small()).collect();
        let (_, docs, stored) = self.upload(docs, 8).await?;
        self.keep(docs, stored, "backup-incremental", None).await?;
        let (seconds, last) = backup_now(&self.server).await?;
        let incremental = operation(seconds, &last);
        let incremental_bytes_added = last["bytes_added"].as_u64().unwrap_or(0);
        let (restore, verify) = restore_and_verify(&self.server, &self.work)?;
        self.progress(&format!(
            "vault incremental backup (+{count} documents) {:.2} s; restore {:.0} MB/s; verify {:.0} MB/s",
            incremental.seconds, restore.mb_per_s, verify.mb_per_s
        ));
        self.results.vault_backup = Some(serde_json::to_value(VaultBackup {
            full,
            incremental,
            incremental_bytes_added,
            restore,
            verify,
        })?);
        Ok(())
    }

    async fn small_uploads(&mut self, concurrency: usize, count: usize) -> anyhow::Result<()> {
        let docs: Vec<Doc> = (0..count).map(|_| self.generator.small()).collect();
        let bodies: Vec<Bytes> = docs.iter().map(|d| d.body.clone()).collect();
        let (timed, docs, stored) = self.upload(docs, concurrency).await?;
        let files = self
            .keep(
                docs,
                stored,
                &format!("small-c{concurrency}"),
                Some(concurrency),
            )
            .await?
            .map(|t| t.summary());
        let vault = timed.summary();
        self.progress(&format!(
            "{count} uploads at c={concurrency}: {:.0}/s (files {:.0}/s)",
            vault.ops_per_s,
            files.as_ref().map_or(0.0, |f| f.ops_per_s)
        ));
        self.results.uploads.push(UploadRow {
            workload: "2–20 KiB X12/FHIR".into(),
            concurrency,
            ratio: files
                .as_ref()
                .and_then(|f| ratio(vault.mb_per_s, f.mb_per_s)),
            vault,
            files,
        });
        if self.settings.small_uploads.last().map(|l| l.0) == Some(concurrency) {
            self.aead_row("2–20 KiB X12/FHIR", &bodies)?;
        }
        Ok(())
    }

    /// The AEAD on these bodies against the best vault upload MB/s of `workload`.
    fn aead_row(&mut self, workload: &str, bodies: &[Bytes]) -> anyhow::Result<()> {
        let aead = baseline::aead(bodies)?;
        let best = self
            .results
            .uploads
            .iter()
            .filter(|r| r.workload == workload)
            .max_by(|a, b| a.vault.mb_per_s.total_cmp(&b.vault.mb_per_s));
        let (vault_mb_per_s, vault_concurrency) =
            best.map_or((0.0, 0), |r| (r.vault.mb_per_s, r.concurrency));
        self.results.aead.push(AeadRow {
            workload: workload.to_owned(),
            ratio: ratio(vault_mb_per_s, aead.mb_per_s),
            aead,
            vault_mb_per_s,
            vault_concurrency,
        });
        Ok(())
    }

    async fn scan_uploads(&mut self) -> anyhow::Result<()> {
        let phases = self.settings.scan_uploads.clone();
        let mut last_bodies = Vec::new();
        for (concurrency, count) in phases {
            let docs: Vec<Doc> = (0..count)
                .map(|_| {
                    let mut d = self.generator.scan(20 << 20);
                    d.format = "scan-20mib";
                    d
                })
                .collect();
            last_bodies = docs.iter().map(|d| d.body.clone()).collect();
            let (timed, docs, stored) = self.upload(docs, concurrency).await?;
            let files = self
                .keep(
                    docs,
                    stored,
                    &format!("scans-c{concurrency}"),
                    Some(concurrency),
                )
                .await?
                .map(|t| t.summary());
            let vault = timed.summary();
            self.progress(&format!(
                "{count} 20 MiB scans at c={concurrency}: {:.0} MB/s (files {:.0} MB/s)",
                vault.mb_per_s,
                files.as_ref().map_or(0.0, |f| f.mb_per_s)
            ));
            self.results.uploads.push(UploadRow {
                workload: "20 MiB scan".into(),
                concurrency,
                ratio: files
                    .as_ref()
                    .and_then(|f| ratio(vault.mb_per_s, f.mb_per_s)),
                vault,
                files,
            });
        }
        self.aead_row("20 MiB scan", &last_bodies)?;
        drop(last_bodies);
        let docs: Vec<Doc> = (0..self.settings.mixed_scans)
            .map(|_| self.generator.mixed_scan())
            .collect();
        let (timed, docs, stored) = self.upload(docs, 4).await?;
        let files = self
            .keep(docs, stored, "scans-mixed", Some(4))
            .await?
            .map(|t| t.summary());
        let vault = timed.summary();
        self.results.uploads.push(UploadRow {
            workload: "1–20 MiB scan".into(),
            concurrency: 4,
            ratio: files
                .as_ref()
                .and_then(|f| ratio(vault.mb_per_s, f.mb_per_s)),
            vault,
            files,
        });
        Ok(())
    }

    /// Downloads documents `picks` at `concurrency`, checking each body's SHA-256.
    async fn download(&self, picks: &[usize], concurrency: usize) -> anyhow::Result<Timed> {
        let targets: Arc<Vec<(String, u64, [u8; 32])>> = Arc::new(
            picks
                .iter()
                .map(|&i| {
                    (
                        self.docs[i].id.clone(),
                        self.docs[i].size,
                        self.docs[i].sha256,
                    )
                })
                .collect(),
        );
        let vault = self.vault.clone();
        // Bodies are checked after the batch, so hashing is not timed.
        let bodies: Arc<Mutex<Vec<Option<Bytes>>>> = Arc::new(Mutex::new(vec![None; picks.len()]));
        let cpu = self.cpu();
        let mut timed = {
            let (targets, bodies) = (targets.clone(), bodies.clone());
            run_tasks(picks.len(), concurrency, move |i| {
                let (targets, vault, bodies) = (targets.clone(), vault.clone(), bodies.clone());
                async move {
                    let body = vault.download(&targets[i].0).await?;
                    let len = body.len() as u64;
                    bodies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] = Some(body);
                    Ok(len)
                }
            })
            .await?
        };
        timed.cpu_s = Some(self.cpu_since(cpu));
        let bodies = std::mem::take(&mut *bodies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        for ((id, size, sha), body) in targets.iter().zip(bodies) {
            let body = body.context("a download did not finish")?;
            if body.len() as u64 != *size || sha2::Sha256::digest(&body)[..] != sha[..] {
                bail!("document {id} came back different");
            }
        }
        Ok(timed)
    }

    /// CPU seconds used so far by the server and by this program.
    fn cpu(&self) -> (f64, f64) {
        (
            procfs::cpu_seconds(self.server.pid),
            procfs::cpu_seconds(std::process::id()),
        )
    }

    /// CPU seconds used since `start` (from [`Bench::cpu`]).
    fn cpu_since(&self, start: (f64, f64)) -> (f64, f64) {
        let now = self.cpu();
        (now.0 - start.0, now.1 - start.1)
    }

    async fn downloads(&mut self) -> anyhow::Result<()> {
        let small: Vec<usize> = (0..self.docs.len())
            .filter(|&i| self.docs[i].query.is_some())
            .collect();
        for (concurrency, count) in self.settings.downloads.clone() {
            let picks: Vec<usize> = (0..count)
                .map(|_| small[self.generator.index(small.len())])
                .collect();
            let vault = self.download(&picks, concurrency).await?.summary();
            let paths: Vec<PathBuf> = picks.iter().map(|&i| self.docs[i].path.clone()).collect();
            let files = baseline::read_files(&paths, concurrency)?.summary();
            self.progress(&format!(
                "{count} downloads at c={concurrency}: {:.0}/s (files {:.0}/s)",
                vault.ops_per_s, files.ops_per_s
            ));
            self.results.downloads.push(DownloadRow {
                workload: "2–20 KiB X12/FHIR".into(),
                concurrency,
                ratio: ratio(vault.mb_per_s, files.mb_per_s),
                vault,
                files,
            });
        }
        let scans: Vec<usize> = (0..self.docs.len())
            .filter(|&i| self.docs[i].format == "scan-20mib")
            .collect();
        for concurrency in self.settings.scan_download_concurrency.clone() {
            let vault = self.download(&scans, concurrency).await?.summary();
            let paths: Vec<PathBuf> = scans.iter().map(|&i| self.docs[i].path.clone()).collect();
            let files = baseline::read_files(&paths, concurrency)?.summary();
            self.results.downloads.push(DownloadRow {
                workload: "20 MiB scan".into(),
                concurrency,
                ratio: ratio(vault.mb_per_s, files.mb_per_s),
                vault,
                files,
            });
        }
        Ok(())
    }

    async fn search(&mut self) -> anyhow::Result<()> {
        // Index changes are committed at least every 250 ms; a search also commits.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        self.plain.commit()?;
        let with_query: Vec<usize> = (0..self.docs.len())
            .filter(|&i| self.docs[i].query.is_some())
            .collect();
        if with_query.is_empty() {
            bail!("no document to search for");
        }
        let picks: Vec<usize> = (0..self.settings.queries)
            .map(|_| with_query[self.generator.index(with_query.len())])
            .collect();
        // Warm both sides (page cache, Tantivy caches, connections).
        for &i in picks.iter().take(20) {
            let Some((_, q)) = &self.docs[i].query else {
                continue;
            };
            self.vault.search(q).await?;
            self.plain.search(
                &vault_index::query::Query::parse(q).map_err(|e| anyhow::anyhow!("{q}: {e}"))?,
            )?;
        }
        let mut floor = Timed::default();
        let floor_started = Instant::now();
        for _ in 0..self.settings.queries.min(500) {
            let t = Instant::now();
            self.server
                .http
                .get(self.server.at("/healthz"))
                .send()
                .await?
                .error_for_status()?;
            floor.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        floor.wall = floor_started.elapsed();
        let (mut vault, mut plain) = (Timed::default(), Timed::default());
        let mut classes: BTreeMap<&str, (Vec<f64>, Vec<f64>, u64)> = BTreeMap::new();
        let (mut vault_misses, mut plain_misses, mut unverifiable, mut hits) = (0, 0, 0, 0u64);
        for &i in &picks {
            let d = &self.docs[i];
            let Some((class, q)) = &d.query else { continue };
            let query =
                vault_index::query::Query::parse(q).map_err(|e| anyhow::anyhow!("{q}: {e}"))?;
            let t = Instant::now();
            let (total, ids) = self.vault.search(q).await?;
            let vault_ms = t.elapsed().as_secs_f64() * 1e3;
            vault.wall += t.elapsed();
            let t = Instant::now();
            let plain_ids = self.plain.search(&query)?;
            let plain_ms = t.elapsed().as_secs_f64() * 1e3;
            plain.wall += t.elapsed();
            if !ids.contains(&d.id) {
                if total as usize > ids.len() {
                    unverifiable += 1;
                } else {
                    vault_misses += 1;
                    self.progress(&format!("vault search missed its document ({class})"));
                }
            }
            if !plain_ids.contains(&d.id) {
                plain_misses += 1;
            }
            hits += total;
            vault.latencies_ms.push(vault_ms);
            plain.latencies_ms.push(plain_ms);
            let c = classes.entry(class).or_default();
            c.0.push(vault_ms);
            c.1.push(plain_ms);
            c.2 += total;
        }
        let vault = vault.summary();
        let plain = plain.summary();
        let classes = classes
            .into_iter()
            .map(|(class, (v, p, h))| {
                let n = v.len();
                let v = Summary::new(v, 0, Duration::ZERO);
                let p = Summary::new(p, 0, Duration::ZERO);
                (
                    class.to_owned(),
                    ClassRow {
                        queries: n,
                        vault_p50_ms: v.p50_ms,
                        vault_p99_ms: v.p99_ms,
                        plain_p50_ms: p.p50_ms,
                        plain_p99_ms: p.p99_ms,
                        hits_per_query: h as f64 / n.max(1) as f64,
                    },
                )
            })
            .collect();
        self.progress(&format!(
            "{} searches at {} documents: p50 {:.2} ms, p99 {:.2} ms (plaintext p99 {:.3} ms), {vault_misses} misses",
            vault.ops,
            self.docs.len(),
            vault.p50_ms,
            vault.p99_ms,
            plain.p99_ms
        ));
        self.results.search.push(SearchRow {
            documents: self.docs.len(),
            p99_ratio: ratio(vault.p99_ms, plain.p99_ms),
            hits_per_query: hits as f64 / vault.ops.max(1) as f64,
            vault,
            plain,
            http_floor: floor.summary(),
            vault_misses,
            plain_misses,
            unverifiable,
            classes,
        });
        Ok(())
    }

    /// Listings and audit reads at the tenant's current size: what issue 19 asks
    /// to grow with the answer, not with the vault.
    async fn growth(&mut self) -> anyhow::Result<()> {
        let rounds = self.settings.queries.clamp(1, 200);
        let mut first_page = Timed::default();
        for _ in 0..rounds {
            let t = Instant::now();
            self.vault.list("limit=100").await?;
            first_page
                .latencies_ms
                .push(t.elapsed().as_secs_f64() * 1e3);
            first_page.wall += t.elapsed();
        }
        let mut sparse = Timed::default();
        // A store walk when the index is not current: a few rounds.
        for _ in 0..rounds.min(10) {
            let t = Instant::now();
            self.vault.list("limit=100&kind=scan").await?;
            sparse.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
            sparse.wall += t.elapsed();
        }
        let since = (time::OffsetDateTime::now_utc() - time::Duration::minutes(1))
            .format(&time::format_description::well_known::Rfc3339)?;
        let path = format!("/v1/audit/events?tenant=bench&limit=100&since={since}");
        let mut audit = Timed::default();
        let mut returned = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            let page = self.server.operator_get(&path).await?;
            audit.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
            audit.wall += t.elapsed();
            returned = page["events"].as_array().map_or(0, Vec::len);
        }
        let row = GrowthRow {
            documents: self.docs.len(),
            list_first_page: first_page.summary(),
            list_sparse_filter: sparse.summary(),
            audit_since: audit.summary(),
            audit_events_returned: returned,
        };
        self.progress(&format!(
            "at {} documents: listing p99 {:.2} ms (sparse filter {:.2} ms), audit since a minute ago p99 {:.2} ms",
            row.documents,
            row.list_first_page.p99_ms,
            row.list_sparse_filter.p99_ms,
            row.audit_since.p99_ms
        ));
        self.results.growth.push(row);
        Ok(())
    }

    /// Restarts the server on its data directory: the time to `/readyz` and to a
    /// search as complete as before the restart.
    async fn restart(&mut self) -> anyhow::Result<()> {
        let Some((_, query)) = self.docs.iter().rev().find_map(|d| d.query.clone()) else {
            bail!("no document to search for");
        };
        let (expected, _) = self.vault.search(&query).await?;
        self.server.stop();
        // What a restart of a machine would find: nothing of the vault cached.
        let page_cache_dropped = procfs::drop_page_cache();
        let started = Instant::now();
        self.server.restart_in_place(&self.launch).await?;
        // The new process listens on a port of its own.
        self.vault = Vault::new(self.server.http.clone(), &self.server.url, &self.key);
        let ready =
            crate::replicas::time_to_ready(&self.server, &self.key, &query, expected, started)
                .await?;
        self.progress(&format!(
            "restarted at {} documents: /readyz after {:.2} s, complete searches after {:.2} s",
            self.docs.len(),
            ready.readyz_s,
            ready.complete_search_s
        ));
        self.results.restarts.push(RestartRow {
            documents: self.docs.len(),
            ready,
            page_cache_dropped,
        });
        Ok(())
    }

    async fn large_upload(&mut self) -> anyhow::Result<()> {
        let pid = self.server.pid;
        let total = self.settings.large_bytes;
        let seed = self.settings.seed ^ 0x1a26e;
        let len = self.settings.range_bytes.min(total as usize);
        let ranges: Vec<(u64, usize)> = (0..self.settings.ranged_reads)
            .map(|_| {
                (
                    self.generator.index((total - len as u64 + 1) as usize) as u64,
                    len,
                )
            })
            .collect();
        // The baselines first: the same bytes to one file with fsync, the same
        // ranges read back; the file is removed before the vault's turn (disk).
        let path = self.plain_dir.join("large.bin");
        let chunks = total.div_ceil(corpus::LARGE_CHUNK as u64);
        let (file, sha) = baseline::write_stream(
            &path,
            (0..chunks).map(|i| {
                let mut c = corpus::large_chunk(seed, i);
                c.truncate(
                    (total - i * corpus::LARGE_CHUNK as u64).min(corpus::LARGE_CHUNK as u64)
                        as usize,
                );
                c
            }),
        )?;
        let file_ranges = baseline::read_ranges(&path, &ranges)?;
        std::fs::remove_file(&path)?;

        let before = procfs::memory(pid)?;
        let hwm_reset = procfs::reset_peak(pid).is_ok();
        let mut doc = self.generator.scan(0);
        doc.format = "large-scan";
        let sampler = procfs::Sampler::start(pid, Duration::from_millis(20));
        let cpu = self.cpu();
        let t = Instant::now();
        let body = reqwest::Body::wrap_stream(corpus::large_stream(seed, total));
        let stored = self.vault.upload_stream(&doc, body).await?;
        let wall = t.elapsed();
        let samples = sampler.finish().await;
        let after = procfs::memory(pid)?;
        if stored.size != total {
            bail!("the large upload stored {} bytes of {total}", stored.size);
        }
        if sha != stored.sha256 {
            bail!("the server's SHA-256 of the large upload differs from the bytes sent");
        }
        self.uploads += 1;
        let upload = Timed {
            latencies_ms: vec![wall.as_secs_f64() * 1e3],
            bytes: total,
            wall,
            cpu_s: Some(self.cpu_since(cpu)),
        }
        .summary();
        self.progress(&format!(
            "{} MiB streamed: {:.0} MB/s (file {:.0} MB/s), server VmHWM {} MiB",
            total >> 20,
            upload.mb_per_s,
            file.mb_per_s,
            after.hwm_kib / 1024
        ));
        let m = &mut self.results.memory;
        m.large_bytes = total;
        m.ratio = ratio(upload.mb_per_s, file.mb_per_s);
        m.upload = upload;
        m.file = file;
        m.rss_before_kib = before.rss_kib;
        m.hwm_reset = hwm_reset;
        m.hwm_during_kib = after.hwm_kib;
        m.sampled_max_kib = samples.iter().copied().max().unwrap_or(0);
        m.sampled_mean_kib = samples.iter().sum::<u64>() / samples.len().max(1) as u64;
        m.samples = samples.len();
        m.peak_run_kib = before.hwm_kib.max(after.hwm_kib);

        // Ranged reads at random offsets, checked against the regenerated bytes.
        let ranges = Arc::new(ranges);
        let (vault, id) = (self.vault.clone(), stored.id.clone());
        let vault_timed = run_tasks(ranges.len(), 1, move |i| {
            let (vault, id, ranges) = (vault.clone(), id.clone(), ranges.clone());
            async move {
                let (offset, len) = ranges[i];
                let body = vault.range(&id, offset, len).await?;
                if body[..] != corpus::large_range(seed, offset, len)[..] {
                    bail!("ranged read at {offset} came back different");
                }
                Ok(len as u64)
            }
        })
        .await?;
        self.results.ranged = Some(RangedRow {
            object_bytes: total,
            range_bytes: len,
            vault: vault_timed.summary(),
            file: file_ranges.summary(),
        });
        // The large upload measured memory and ranged reads; it leaves the tenant
        // so that the backups and the disk stay small.
        self.vault.delete(&stored.id).await?;
        Ok(())
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        match self.settings.second_search_documents {
            Some(target) => self.fill_to(target).await,
            None => Ok(()),
        }
    }

    /// Uploads small documents at concurrency 64 until the tenant holds `target`.
    async fn fill_to(&mut self, target: usize) -> anyhow::Result<()> {
        let mut all = Timed::default();
        while self.docs.len() < target {
            let n = (target - self.docs.len()).min(5_000);
            let docs: Vec<Doc> = (0..n).map(|_| self.generator.small()).collect();
            let (timed, docs, stored) = self.upload(docs, 64).await?;
            all.merge(timed);
            self.keep(docs, stored, "fill", None).await?;
            self.progress(&format!("{} documents", self.docs.len()));
        }
        self.results.uploads.push(UploadRow {
            workload: format!("2–20 KiB X12/FHIR, filling to {target}"),
            concurrency: 64,
            vault: all.summary(),
            files: None,
            ratio: None,
        });
        Ok(())
    }

    async fn restic(&mut self) -> anyhow::Result<()> {
        let Some(version) = baseline::restic_version() else {
            println!("restic not found: `apt-get install restic` to run the restic baseline (reported as not run)");
            self.results.restic.status = "not run (restic missing: apt-get install restic)".into();
            return Ok(());
        };
        let plain = self.plain_dir.clone();
        let work = self.work.clone();
        match tokio::task::spawn_blocking(move || baseline::restic(&plain, &work, version)).await? {
            Ok(r) => {
                self.progress(&format!(
                    "restic: backup {:.0} MB/s, restore {:.0} MB/s",
                    r.backup.mb_per_s, r.restore.mb_per_s
                ));
                self.results.restic = ResticRow {
                    status: "ok".into(),
                    result: Some(r),
                };
            }
            Err(e) => {
                self.progress(&format!("restic failed: {e:#}"));
                self.results.restic.status = format!("failed: {e:#}");
            }
        }
        Ok(())
    }
}

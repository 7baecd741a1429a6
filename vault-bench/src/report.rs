//! The report: machine facts, parameters and every figure as JSON, and the same
//! as markdown tables on stdout, with the targets.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::{Results, Settings};
use crate::stats::Summary;

/// The machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub cores: usize,
    /// `nproc`'s answer, when it ran.
    pub nproc: Option<String>,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// `MemTotal`, KiB.
    pub memory_kib: Option<u64>,
    /// Filesystem of the work directory (the vault's data directory and the
    /// baseline files): device, mount point, type.
    pub filesystem: Option<(String, String, String)>,
    /// Build profile of this program.
    pub bench_profile: String,
    /// The `vault-server` binary.
    pub server_binary: String,
    /// `MALLOC_*` variables of the environment (the server inherits them).
    pub malloc_env: Vec<(String, String)>,
}

/// One issue target and what was measured for it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The target.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met, missed, or not measured in this run (`None`).
    pub met: Option<bool>,
}

/// Everything written to the JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// This program and version.
    pub tool: String,
    /// Unix time of the start.
    pub started_unix: u64,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// The machine.
    pub machine: Machine,
    /// Counts and sizes.
    pub parameters: Settings,
    /// Every figure.
    pub results: Results,
    /// The targets.
    pub targets: Vec<Target>,
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn opt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{:.0} %", r * 100.0))
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

/// The targets against the results.
pub fn targets(settings: &Settings, r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let small_c64 = r
        .uploads
        .iter()
        .filter(|u| u.workload.starts_with("2–20 KiB") && u.concurrency == 64)
        .map(|u| u.vault.ops_per_s)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.min(b))));
    out.push(Target {
        target: "≥ 1,500 durable small-document uploads/s at concurrency 64".into(),
        measured: small_c64.map_or("not measured".into(), |v| {
            format!("{v:.0}/s (slowest c=64 phase)")
        }),
        met: small_c64.map(|v| v >= 1_500.0),
    });
    for u in r.uploads.iter().filter(|u| u.workload == "20 MiB scan") {
        out.push(Target {
            target: format!(
                "20 MiB scan upload MB/s ≥ 80 % of fsync'd file writes (c={})",
                u.concurrency
            ),
            measured: format!(
                "{:.0} vs {:.0} MB/s: {}",
                u.vault.mb_per_s,
                u.files.as_ref().map_or(0.0, |f| f.mb_per_s),
                opt_ratio(u.ratio)
            ),
            met: u.ratio.map(|x| x >= 0.8),
        });
    }
    let big = r.search.iter().find(|s| s.documents >= 100_000);
    out.push(Target {
        target: "search p99 ≤ 10 ms at 100k documents".into(),
        measured: match big {
            Some(s) => format!("{:.2} ms at {} documents", s.vault.p99_ms, s.documents),
            None => match r.search.last() {
                Some(s) => format!(
                    "not measured (quick run: {:.2} ms at {} documents)",
                    s.vault.p99_ms, s.documents
                ),
                None => "not measured".into(),
            },
        },
        met: big.map(|s| s.vault.p99_ms <= 10.0),
    });
    for s in &r.search {
        out.push(Target {
            target: format!(
                "search p99 ≤ 1.5× plaintext Tantivy ({} documents)",
                s.documents
            ),
            measured: format!(
                "{:.2} ms vs {:.3} ms: {}",
                s.vault.p99_ms,
                s.plain.p99_ms,
                times(s.p99_ratio)
            ),
            met: s.p99_ratio.map(|x| x <= 1.5),
        });
    }
    let kc = &r.key_calls;
    out.push(Target {
        target: "≤ 1 key-service call per 1,000 uploads".into(),
        measured: format!(
            "{} provider: {} calls for {} uploads; {:.2} per 1,000 over the run",
            kc.provider, kc.calls, kc.uploads, kc.run_per_1000
        ),
        met: Some(kc.per_1000 <= 1.0),
    });
    let m = &r.memory;
    let full = settings.large_bytes >= 1 << 30;
    out.push(Target {
        target: "server RSS ≤ 200 MiB during a 1 GiB upload".into(),
        measured: format!(
            "{:.0} MiB peak (VmHWM{}) during a {} MiB upload{}",
            kib_to_mib(m.hwm_during_kib.max(m.sampled_max_kib)),
            if m.hwm_reset {
                ", reset before"
            } else {
                " of the process"
            },
            m.large_bytes >> 20,
            if full { "" } else { " (quick run: not 1 GiB)" }
        ),
        met: full.then_some(kib_to_mib(m.hwm_during_kib.max(m.sampled_max_kib)) <= 200.0),
    });
    let backup = |v: &serde_json::Value, k: &str| v[k]["mb_per_s"].as_f64().unwrap_or(0.0);
    match (&r.vault_backup, &r.restic.result) {
        (Some(v), Some(x)) => out.push(Target {
            target: "backup and restore MB/s ≥ restic's on the same data".into(),
            measured: format!(
                "backup {:.0} vs {:.0} MB/s, restore {:.0} vs {:.0} MB/s",
                backup(v, "full"),
                x.backup.mb_per_s,
                backup(v, "restore"),
                x.restore.mb_per_s
            ),
            met: Some(
                backup(v, "full") >= x.backup.mb_per_s
                    && backup(v, "restore") >= x.restore.mb_per_s,
            ),
        }),
        _ => out.push(Target {
            target: "backup and restore MB/s ≥ restic's on the same data".into(),
            measured: format!("restic: {}", r.restic.status),
            met: None,
        }),
    }
    out
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

fn cores(s: &Summary) -> String {
    match (s.server_cores, s.client_cores) {
        (Some(server), Some(client)) => format!("{server:.2} + {client:.2}"),
        _ => "–".into(),
    }
}

fn lat(s: &Summary) -> String {
    format!("{} / {}", ms(s.p50_ms), ms(s.p99_ms))
}

/// The report as markdown.
pub fn markdown(report: &Report) -> String {
    let mut o = header(report);
    let r = &report.results;
    let m = &report.machine;
    let _ = writeln!(
        o,
        "### Uploads (vault vs. the same files written with fsync, same concurrency)\n"
    );
    let _ = writeln!(o, "| workload | conc. | n | vault docs/s | vault MB/s | vault p50 / p99 | CPU cores server + client | files/s | files MB/s | files p50 / p99 | vault / files (MB/s) |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
    for u in &r.uploads {
        let (fo, fm, fl) =
            u.files
                .as_ref()
                .map_or(("–".into(), "–".into(), "–".into()), |f| {
                    (
                        format!("{:.0}", f.ops_per_s),
                        format!("{:.1}", f.mb_per_s),
                        lat(f),
                    )
                });
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {:.1} | {} | {} | {fo} | {fm} | {fl} | {} |",
            u.workload,
            u.concurrency,
            u.vault.ops,
            u.vault.ops_per_s,
            u.vault.mb_per_s,
            lat(&u.vault),
            cores(&u.vault),
            opt_ratio(u.ratio)
        );
    }
    let _ = writeln!(
        o,
        "\n### Bare AEAD (AES-256-GCM-SIV, 64 KiB chunks, one thread, same bytes)\n"
    );
    if m.bench_profile == "debug" {
        let _ = writeln!(o, "Debug build: the AEAD is compiled into this program without optimisation; its figures mean nothing here.\n");
    }
    let _ = writeln!(
        o,
        "| bytes | AEAD MB/s | vault upload MB/s (best conc.) | vault / AEAD |"
    );
    let _ = writeln!(o, "|---|---|---|---|");
    for a in &r.aead {
        let _ = writeln!(
            o,
            "| {} | {:.0} | {:.1} (c={}) | {} |",
            a.workload,
            a.aead.mb_per_s,
            a.vault_mb_per_s,
            a.vault_concurrency,
            opt_ratio(a.ratio)
        );
    }
    let _ = writeln!(
        o,
        "\n### Downloads (vault vs. reading the same plaintext files)\n"
    );
    let _ = writeln!(o, "| workload | conc. | n | vault docs/s | vault MB/s | vault p50 / p99 | CPU cores server + client | files/s | files MB/s | vault / files (MB/s) |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for d in &r.downloads {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {:.1} | {} | {} | {:.0} | {:.0} | {} |",
            d.workload,
            d.concurrency,
            d.vault.ops,
            d.vault.ops_per_s,
            d.vault.mb_per_s,
            lat(&d.vault),
            cores(&d.vault),
            d.files.ops_per_s,
            d.files.mb_per_s,
            opt_ratio(d.ratio)
        );
    }
    if let Some(g) = &r.ranged {
        let _ = writeln!(
            o,
            "\nRanged reads (`Range: bytes=a-b`, {} KiB at random offsets of the {} MiB upload, one at a time): vault {} reads, p50 / p99 {} ms ({:.0} MB/s); pread of the plaintext file {} ms.",
            g.range_bytes >> 10,
            g.object_bytes >> 20,
            g.vault.ops,
            lat(&g.vault),
            g.vault.mb_per_s,
            lat(&g.file)
        );
    }
    let _ = writeln!(
        o,
        "\n### Search (`GET /v1/search`, one at a time, vs. plaintext Tantivy in process)\n"
    );
    let _ = writeln!(o, "| documents | queries | vault p50 / p99 | plaintext p50 / p99 | p99 ratio | HTTP floor p50 / p99 | hits/query | misses |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for s in &r.search {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.3} / {:.3} | {} | {} | {:.1} | {} (plaintext {}; {} unverifiable) |",
            s.documents,
            s.vault.ops,
            lat(&s.vault),
            s.plain.p50_ms,
            s.plain.p99_ms,
            times(s.p99_ratio),
            lat(&s.http_floor),
            s.hits_per_query,
            s.vault_misses,
            s.plain_misses,
            s.unverifiable
        );
    }
    if let Some(s) = r.search.last() {
        let _ = writeln!(o, "\nBy query class at {} documents:\n", s.documents);
        let _ = writeln!(
            o,
            "| class | queries | vault p50 / p99 | plaintext p50 / p99 | hits/query |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|");
        for (class, c) in &s.classes {
            let _ = writeln!(
                o,
                "| {class} | {} | {:.2} / {:.2} | {:.3} / {:.3} | {:.1} |",
                c.queries,
                c.vault_p50_ms,
                c.vault_p99_ms,
                c.plain_p50_ms,
                c.plain_p99_ms,
                c.hits_per_query
            );
        }
    }
    let mem = &r.memory;
    o.push_str(&growth_table(r));
    let _ = writeln!(o, "\n### Server memory\n");
    let _ = writeln!(o, "| streamed upload | vault MB/s | CPU cores server + client | fsync'd file MB/s | vault / file | RSS before | VmHWM during (increase) | sampled VmRSS max / mean | peak over the run |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| {} MiB | {:.0} | {} | {:.0} | {} | {:.0} MiB | {:.0} MiB (+{:.0}){} | {:.0} / {:.0} MiB ({} samples) | {:.0} MiB |",
        mem.large_bytes >> 20,
        mem.upload.mb_per_s,
        cores(&mem.upload),
        mem.file.mb_per_s,
        opt_ratio(mem.ratio),
        kib_to_mib(mem.rss_before_kib),
        kib_to_mib(mem.hwm_during_kib),
        kib_to_mib(mem.hwm_during_kib.saturating_sub(mem.rss_before_kib)),
        if mem.hwm_reset { "" } else { " (not reset: process peak)" },
        kib_to_mib(mem.sampled_max_kib),
        kib_to_mib(mem.sampled_mean_kib),
        mem.samples,
        kib_to_mib(mem.peak_run_kib)
    );
    let _ = writeln!(
        o,
        "\nServer VmRSS after each phase: {}.",
        r.phases
            .iter()
            .filter(|p| p.rss_kib > 0)
            .map(|p| format!(
                "{} {:.0} MiB ({:.0} s)",
                p.name,
                kib_to_mib(p.rss_kib),
                p.seconds
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let kc = &r.key_calls;
    let _ = writeln!(
        o,
        "\n### Key-service calls (`vault_key_provider_calls_total`)\n"
    );
    let _ = writeln!(
        o,
        "| provider | uploads | calls | per 1,000 | whole run: uploads | calls | per 1,000 |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| {} | {} | {} | {:.2} | {} | {} | {:.2} |",
        kc.provider,
        kc.uploads,
        kc.calls,
        kc.per_1000,
        kc.run_uploads,
        kc.run_calls,
        kc.run_per_1000
    );
    let _ = writeln!(o, "\n### Backup and restore of the same data\n");
    let _ = writeln!(
        o,
        "| tool | backup MB/s | restore MB/s | plaintext | repository |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    match &r.restic.result {
        Some(x) => {
            let _ = writeln!(
                o,
                "| {} | {:.0} | {:.0} | {:.0} MB | {:.0} MB |",
                x.version
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
                x.backup.mb_per_s,
                x.restore.mb_per_s,
                x.backup.bytes as f64 / 1e6,
                x.repository_bytes as f64 / 1e6
            );
        }
        None => {
            let _ = writeln!(o, "| restic | {} | | | |", r.restic.status);
        }
    }
    match &r.vault_backup {
        Some(v) => {
            let mb = |k: &str| v[k]["mb_per_s"].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                o,
                "| vault | {:.0} | {:.0} | snapshot {:.0} MB | verify --read-data {:.0} MB/s; +1 % incremental {:.2} s, {:.1} MB copied |",
                mb("full"),
                mb("restore"),
                v["full"]["bytes"].as_f64().unwrap_or(0.0) / 1e6,
                mb("verify"),
                v["incremental"]["seconds"].as_f64().unwrap_or(0.0),
                v["incremental_bytes_added"].as_f64().unwrap_or(0.0) / 1e6
            );
        }
        None => {
            let _ = writeln!(o, "| vault | not measured | | | |");
        }
    }
    let c = &r.corpus;
    let _ = writeln!(
        o,
        "\nTenant at the end: {} documents, {:.0} MB ({}); the large upload was deleted after its phase.",
        c.documents,
        c.bytes as f64 / 1e6,
        c.documents_by_format
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(o, "\n### Targets (issue 8)\n");
    let _ = writeln!(o, "| target | measured | verdict |");
    let _ = writeln!(o, "|---|---|---|");
    for t in &report.targets {
        let _ = writeln!(o, "| {} | {} | {} |", t.target, t.measured, verdict(t.met));
    }
    o
}

/// The growth run's report as markdown: the machine and one table.
pub fn growth_markdown(report: &Report) -> String {
    let mut o = header(report);
    o.push_str(&growth_table(&report.results));
    o
}

/// How the cost grows with the tenant's size: one row per size measured (none
/// in a run that measured none).
fn growth_table(r: &Results) -> String {
    let mut o = String::new();
    if r.growth.is_empty() && r.restarts.is_empty() {
        return o;
    }
    let _ = writeln!(o, "\n### How the cost grows (p50 / p99 ms)\n");
    let _ = writeln!(
        o,
        "| documents | filling to it, docs/s | search | plaintext Tantivy in process | HTTP floor | listing, first page | listing, sparse filter | audit events since a minute ago (returned) | restart: `/readyz` s | restart: complete searches s |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for g in &r.growth {
        let search = r.search.iter().find(|s| s.documents == g.documents);
        let fill = r
            .uploads
            .iter()
            .find(|u| u.workload.ends_with(&format!("filling to {}", g.documents)))
            .map_or_else(|| "–".into(), |u| format!("{:.0}", u.vault.ops_per_s));
        let restart = r.restarts.iter().find(|x| x.documents == g.documents);
        let _ = writeln!(
            o,
            "| {} | {fill} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
            g.documents,
            search.map_or_else(|| "–".into(), |s| lat(&s.vault)),
            search.map_or_else(|| "–".into(), |s| lat(&s.plain)),
            search.map_or_else(|| "–".into(), |s| lat(&s.http_floor)),
            lat(&g.list_first_page),
            lat(&g.list_sparse_filter),
            lat(&g.audit_since),
            g.audit_events_returned,
            restart.map_or_else(|| "–".into(), |x| format!("{:.2}", x.ready.readyz_s)),
            restart.map_or_else(
                || "–".into(),
                |x| format!("{:.2}", x.ready.complete_search_s)
            ),
        );
    }
    for x in r.restarts.iter().filter(|x| !x.page_cache_dropped) {
        let _ = writeln!(
            o,
            "\nThe restart at {} documents found the page cache as it was (dropping it needs root).",
            x.documents
        );
    }
    o
}

/// The run's heading and the machine it ran on.
fn header(report: &Report) -> String {
    let mut o = String::new();
    let m = &report.machine;
    let p = &report.parameters;
    let _ = writeln!(
        o,
        "## vault-bench{}\n",
        if p.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(
        o,
        "Machine: {} cores, {}, {:.0} GiB, kernel {}, {} on {}; vault-bench {} build, server {}. Backend {:?}, key provider {}. Run time {:.0} s. Client and server share the machine. MB = 10^6 bytes; latencies p50 / p99 in ms.\n",
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.memory_kib.unwrap_or(0) as f64 / 1024.0 / 1024.0,
        m.kernel.as_deref().unwrap_or("?"),
        m.filesystem.as_ref().map_or("?", |f| f.2.as_str()),
        m.filesystem.as_ref().map_or("?", |f| f.0.as_str()),
        m.bench_profile,
        m.server_binary,
        p.backend,
        p.key_provider,
        report.duration_s
    );
    if !m.malloc_env.is_empty() {
        let _ = writeln!(
            o,
            "Server environment: {}.\n",
            m.malloc_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    if m.filesystem.as_ref().is_some_and(|f| f.2 == "tmpfs") {
        let _ = writeln!(o, "**The work directory is on tmpfs: fsync costs nothing there, so durable-write figures and the file baselines are not those of a disk.**\n");
    }
    o
}

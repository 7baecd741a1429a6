//! `--replicas N`: the vault as N `vault-server` processes over one bucket
//! (moto), with requests spread over them, beside one replica in the same run;
//! and the time a new replica (empty data directory) and a restarted one take to
//! serve complete searches of a tenant holding `--docs` documents.
//!
//! On one machine the replicas share its cores: the table says what spreading
//! costs or gains here and how the CPU divides, not what N machines would do.
//! The replicas reach moto through a fault proxy with no faults set, which
//! counts their S3 requests: per upload and per download, with one replica and
//! with N (each replica also reads what the others upload, to index it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::client::Vault;
use crate::corpus::{Doc, Generator};
use crate::server::{moto_behind_proxy, Launch, Server, ALL_ROLES};
use crate::stats::{run_tasks, Summary};

/// `[search] snapshot_interval_secs` of the replicas: short, so the snapshot
/// after the fill comes soon.
pub const SNAPSHOT_INTERVAL_SECS: u64 = 30;

/// What `--replicas` measured.
#[derive(Debug, Serialize)]
pub struct ReplicaReport {
    /// Replicas in the spread run.
    pub replicas: usize,
    /// Client concurrency of both runs.
    pub concurrency: usize,
    /// Uploads through one replica.
    pub one_replica_uploads: Summary,
    /// Uploads spread over every replica.
    pub spread_uploads: Summary,
    /// Downloads through one replica.
    pub one_replica_downloads: Summary,
    /// Downloads spread over every replica.
    pub spread_downloads: Summary,
    /// CPU cores each replica used during the spread uploads.
    pub cpu_cores_per_replica: Vec<f64>,
    /// Documents the tenant held when a replica was (re)started.
    pub documents: usize,
    /// A new replica (empty data directory) starting from the index snapshot
    /// in the store and the log after it.
    pub cold: TimeToReady,
    /// That replica restarted (its indexes kept).
    pub warm: TimeToReady,
    /// A new replica with index snapshots off: its index built from the
    /// documents (what every new replica did before snapshots).
    pub cold_without_snapshot: TimeToReady,
    /// S3 requests per search through one replica (the replicas' idle polls
    /// left out).
    pub s3_requests_per_search: f64,
    /// S3 requests per upload through one replica (all replicas running).
    pub s3_requests_per_upload_one: f64,
    /// S3 requests per upload spread over every replica.
    pub s3_requests_per_upload_spread: f64,
    /// S3 requests per download.
    pub s3_requests_per_download: f64,
    /// S3 requests per second of all replicas while idle (following the log).
    pub s3_requests_per_second_idle: f64,
}

/// How long a (re)started replica took to be ready.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimeToReady {
    /// Seconds from the start to `/readyz` answering 200.
    pub readyz_s: f64,
    /// Seconds from the start to its first complete search.
    pub complete_search_s: f64,
}

/// Runs the measurement and prints its table.
pub async fn run(
    launch: &Launch,
    replicas: usize,
    documents: usize,
    ops: usize,
    concurrency: usize,
) -> anyhow::Result<ReplicaReport> {
    if replicas < 2 {
        bail!("--replicas needs at least 2");
    }
    let mut launch = launch.clone();
    let (_moto, proxy) = moto_behind_proxy(&mut launch).await?;
    launch.s3_storage = format!("endpoint = {:?}\n", proxy.url);
    launch.search = format!("snapshot_interval_secs = {SNAPSHOT_INTERVAL_SECS}\n");
    let launch = &launch;
    // S3 requests during `phase`, per operation, once the followers settled.
    let requests = || proxy.answers.load(Ordering::Relaxed);
    let per_op = |before: u64, after: u64| (after - before) as f64 / ops as f64;
    let first = Server::start(launch).await?;
    // Planned for the documents it will hold: a tenant growing past its plan
    // re-plans its index (a rebuild from the store, which slowed the 100,000
    // fill four-fold from 40,000 on), and time to ready is measured on the
    // index as it is then, not on one being rebuilt.
    first
        .create_tenant_for("acme", "local", Some(documents.max(ops * 2)))
        .await?;
    let key = first.api_key("acme", ALL_ROLES).await?;
    let mut others = Vec::new();
    for n in 1..replicas {
        others.push(first.start_replica(launch, n).await?);
    }
    let all: Vec<&Server> = std::iter::once(&first).chain(others.iter()).collect();
    let clients: Arc<Vec<Vault>> = Arc::new(
        all.iter()
            .map(|s| Vault::new(s.http.clone(), &s.url, &key))
            .collect(),
    );
    let docs: Arc<Vec<Doc>> = {
        let mut generator = Generator::new(7, ops);
        Arc::new((0..ops).map(|_| generator.small()).collect())
    };

    let stored_ids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let upload = |spread: usize| {
        let (clients, docs, ids) = (clients.clone(), docs.clone(), stored_ids.clone());
        move |i: usize| {
            let (clients, docs, ids) = (clients.clone(), docs.clone(), ids.clone());
            async move {
                let doc = &docs[i % docs.len()];
                let stored = clients[i % spread].upload(doc).await?;
                ids.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(stored.id);
                Ok(doc.body.len() as u64)
            }
        }
    };
    // Let every replica catch up with the tenant's creation first; then what
    // idle replicas ask S3 (their polls of the tenant's log).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_from = requests();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s3_requests_per_second_idle = (requests() - idle_from) as f64 / 2.0;
    let before = requests();
    let one = run_tasks(ops, concurrency, upload(1)).await?.summary();
    // The followers read what was uploaded within their next few polls.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s3_requests_per_upload_one = per_op(before, requests());
    let cpu_before: Vec<f64> = all
        .iter()
        .map(|s| crate::procfs::cpu_seconds(s.pid))
        .collect();
    let started = Instant::now();
    let before = requests();
    let spread = run_tasks(ops, concurrency, upload(replicas))
        .await?
        .summary();
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let cpu_cores_per_replica = all
        .iter()
        .zip(&cpu_before)
        .map(|(s, before)| (crate::procfs::cpu_seconds(s.pid) - before) / wall)
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s3_requests_per_upload_spread = per_op(before, requests());

    // Downloads of what was stored, through one and through all.
    let ids: Arc<Vec<String>> = Arc::new(
        stored_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    );
    let download = |spread: usize| {
        let (clients, ids) = (clients.clone(), ids.clone());
        move |i: usize| {
            let (clients, ids) = (clients.clone(), ids.clone());
            async move {
                let body = clients[i % spread].download(&ids[i % ids.len()]).await?;
                Ok(body.len() as u64)
            }
        }
    };
    let before = requests();
    let one_replica_downloads = run_tasks(ops, concurrency, download(1)).await?.summary();
    let s3_requests_per_download = per_op(before, requests());
    let spread_downloads = run_tasks(ops, concurrency, download(replicas))
        .await?
        .summary();

    let probe = docs
        .iter()
        .find_map(|d| d.query.as_ref().map(|(_, q)| q.clone()))
        .context("a document with a query")?;
    let searches = (ops / 10).max(10);
    let before = requests();
    let searching = Instant::now();
    for _ in 0..searches {
        clients[0].search(&probe).await?;
    }
    // The replicas' polls of the log (measured while idle) left out.
    let polls = s3_requests_per_second_idle * searching.elapsed().as_secs_f64();
    let s3_requests_per_search = ((requests() - before) as f64 - polls).max(0.0) / searches as f64;

    // Fill the tenant through the first replica alone (the others would only
    // follow it), then time a new replica, the same one restarted, and a new
    // one with snapshots off.
    for other in &mut others {
        other.stop();
    }
    let held = 2 * ops;
    if documents > held {
        let mut generator = Generator::new(11, documents - held);
        let fill: Arc<Vec<Doc>> = Arc::new(
            (0..(documents - held).min(5000))
                .map(|_| generator.small())
                .collect(),
        );
        let through = clients[0].clone();
        run_tasks(documents - held, concurrency.max(16), {
            let fill = fill.clone();
            move |i: usize| {
                let (through, fill) = (through.clone(), fill.clone());
                async move {
                    let doc = &fill[i % fill.len()];
                    through.upload(doc).await?;
                    Ok(doc.body.len() as u64)
                }
            }
        })
        .await?;
    }
    let total = documents.max(held);
    // A snapshot of the whole tenant: the one the first replica writes after
    // the fill.
    let written = first.metric("vault_index_snapshots_written_total").await?;
    let deadline = Instant::now() + Duration::from_secs(4 * SNAPSHOT_INTERVAL_SECS + 600);
    while first.metric("vault_index_snapshots_written_total").await? <= written {
        if Instant::now() > deadline {
            bail!("no index snapshot was written after the fill");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expected = clients[0].search(&probe).await?.0;

    let started = Instant::now();
    let fresh = first.start_replica(launch, replicas).await?;
    let cold = time_to_ready(&fresh, &key, &probe, expected, started).await?;
    let mut fresh = fresh;
    fresh.stop();
    let started = Instant::now();
    let restarted = fresh.restart(launch).await?;
    let warm = time_to_ready(&restarted, &key, &probe, expected, started).await?;
    drop(restarted);

    let started = Instant::now();
    let without = first
        .start_replica_with(launch, replicas + 1, |config| {
            config.replace(
                &format!("snapshot_interval_secs = {SNAPSHOT_INTERVAL_SECS}"),
                "snapshot_interval_secs = 0",
            )
        })
        .await?;
    let cold_without_snapshot = time_to_ready(&without, &key, &probe, expected, started).await?;

    let report = ReplicaReport {
        replicas,
        concurrency,
        one_replica_uploads: one,
        spread_uploads: spread,
        one_replica_downloads,
        spread_downloads,
        cpu_cores_per_replica,
        documents: total,
        cold,
        warm,
        cold_without_snapshot,
        s3_requests_per_search,
        s3_requests_per_upload_one,
        s3_requests_per_upload_spread,
        s3_requests_per_download,
        s3_requests_per_second_idle,
    };
    println!("{}", markdown(&report));
    Ok(report)
}

/// Times a replica started at `started`: until `/readyz` answers 200, and
/// until a search gives `expected` hits.
pub async fn time_to_ready(
    server: &Server,
    key: &str,
    query: &str,
    expected: u64,
    started: Instant,
) -> anyhow::Result<TimeToReady> {
    let deadline = started + Duration::from_secs(3 * 3600);
    let mut out = TimeToReady::default();
    loop {
        let ready = server
            .http
            .get(server.at("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            out.readyz_s = started.elapsed().as_secs_f64();
            break;
        }
        if Instant::now() > deadline {
            bail!("a replica was not ready within three hours");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Vault::new(server.http.clone(), &server.url, key);
    loop {
        if let Ok((total, _)) = client.search(query).await {
            if total == expected {
                out.complete_search_s = started.elapsed().as_secs_f64();
                return Ok(out);
            }
        }
        if Instant::now() > deadline {
            bail!("a replica did not serve complete searches within three hours");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn markdown(r: &ReplicaReport) -> String {
    let row = |what: &str, s: &Summary| {
        format!(
            "| {what} | {:.0} | {:.1} | {:.1} |\n",
            s.ops_per_s, s.p50_ms, s.p99_ms
        )
    };
    let mut out = format!(
        "\n### Replicas ({} on one machine, concurrency {})\n\n| run | ops/s | p50 ms | p99 ms |\n|---|---|---|---|\n",
        r.replicas, r.concurrency
    );
    out.push_str(&row("uploads, one replica", &r.one_replica_uploads));
    out.push_str(&row(
        &format!("uploads, {} replicas", r.replicas),
        &r.spread_uploads,
    ));
    out.push_str(&row("downloads, one replica", &r.one_replica_downloads));
    out.push_str(&row(
        &format!("downloads, {} replicas", r.replicas),
        &r.spread_downloads,
    ));
    out.push_str(&format!(
        "\nCPU cores per replica during the spread uploads: {}\n\n#### Time to ready at {} documents\n\n| replica | `/readyz` s | complete searches s |\n|---|---|---|\n",
        r.cpu_cores_per_replica
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.documents,
    ));
    for (what, t) in [
        (
            "new (empty data directory), from the index snapshot",
            &r.cold,
        ),
        ("restarted (index kept)", &r.warm),
        (
            "new, snapshots off (index built from the documents)",
            &r.cold_without_snapshot,
        ),
    ] {
        out.push_str(&format!(
            "| {what} | {:.1} | {:.1} |\n",
            t.readyz_s, t.complete_search_s
        ));
    }
    out.push_str(&format!(
        "\nS3 requests (all replicas, their polls included): {:.1} per upload through one replica, {:.1} per upload spread over {}, {:.1} per download, {:.1} per search; {:.1} per second while idle\n",
        r.s3_requests_per_upload_one,
        r.s3_requests_per_upload_spread,
        r.replicas,
        r.s3_requests_per_download,
        r.s3_requests_per_search,
        r.s3_requests_per_second_idle
    ));
    out
}

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
    /// Seconds from starting a replica with an empty data directory to its
    /// first complete search.
    pub cold_ready_s: f64,
    /// Seconds from restarting that replica (its indexes kept) to its first
    /// complete search.
    pub warm_ready_s: f64,
    /// S3 requests per upload through one replica (all replicas running).
    pub s3_requests_per_upload_one: f64,
    /// S3 requests per upload spread over every replica.
    pub s3_requests_per_upload_spread: f64,
    /// S3 requests per download.
    pub s3_requests_per_download: f64,
    /// S3 requests per second of all replicas while idle (following the log).
    pub s3_requests_per_second_idle: f64,
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
    let launch = &launch;
    // S3 requests during `phase`, per operation, once the followers settled.
    let requests = || proxy.answers.load(Ordering::Relaxed);
    let per_op = |before: u64, after: u64| (after - before) as f64 / ops as f64;
    let first = Server::start(launch).await?;
    first.create_tenant("acme", "local").await?;
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

    // Fill the tenant, then time a new replica and a restarted one.
    let held = 2 * ops;
    if documents > held {
        let mut generator = Generator::new(11, documents - held);
        let fill: Arc<Vec<Doc>> = Arc::new(
            (0..(documents - held).min(5000))
                .map(|_| generator.small())
                .collect(),
        );
        run_tasks(documents - held, concurrency.max(16), {
            let (clients, fill) = (clients.clone(), fill.clone());
            move |i: usize| {
                let (clients, fill) = (clients.clone(), fill.clone());
                async move {
                    let doc = &fill[i % fill.len()];
                    clients[i % clients.len()].upload(doc).await?;
                    Ok(doc.body.len() as u64)
                }
            }
        })
        .await?;
    }
    let total = documents.max(held);
    let probe = docs
        .iter()
        .find_map(|d| d.query.as_ref().map(|(_, q)| q.clone()))
        .context("a document with a query")?;
    let started = Instant::now();
    let mut fresh = first.start_replica(launch, replicas).await?;
    let expected = Vault::new(first.http.clone(), &first.url, &key)
        .search(&probe)
        .await?
        .0;
    let client = Vault::new(fresh.http.clone(), &fresh.url, &key);
    until_complete(&client, &probe, expected).await?;
    let cold_ready_s = started.elapsed().as_secs_f64();
    fresh.stop();
    let started = Instant::now();
    let restarted = fresh.restart(launch).await?;
    let client = Vault::new(restarted.http.clone(), &restarted.url, &key);
    until_complete(&client, &probe, expected).await?;
    let warm_ready_s = started.elapsed().as_secs_f64();

    let report = ReplicaReport {
        replicas,
        concurrency,
        one_replica_uploads: one,
        spread_uploads: spread,
        one_replica_downloads,
        spread_downloads,
        cpu_cores_per_replica,
        documents: total,
        cold_ready_s,
        warm_ready_s,
        s3_requests_per_upload_one,
        s3_requests_per_upload_spread,
        s3_requests_per_download,
        s3_requests_per_second_idle,
    };
    println!("{}", markdown(&report));
    Ok(report)
}

/// Waits until a search on `client` gives `expected` hits (its replica is
/// ready and its index complete).
async fn until_complete(client: &Vault, query: &str, expected: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if let Ok((total, _)) = client.search(query).await {
            if total == expected {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("a replica did not serve complete searches within an hour");
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
        "\nCPU cores per replica during the spread uploads: {}\n\nTime to complete searches at {} documents: new replica (empty data directory) {:.1} s, restarted replica {:.1} s\n",
        r.cpu_cores_per_replica
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.documents,
        r.cold_ready_s,
        r.warm_ready_s
    ));
    out.push_str(&format!(
        "\nS3 requests (all replicas, their polls included): {:.1} per upload through one replica, {:.1} per upload spread over {}, {:.1} per download; {:.1} per second while idle\n",
        r.s3_requests_per_upload_one,
        r.s3_requests_per_upload_spread,
        r.replicas,
        r.s3_requests_per_download,
        r.s3_requests_per_second_idle
    ));
    out
}

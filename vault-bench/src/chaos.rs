//! `vault-bench --chaos`: a bounded soak under faults (issue 17). Mixed load
//! (keyed uploads, downloads, deletes, listings) runs against the real server
//! while it is killed (`SIGKILL`) at random moments and restarted, and, on S3,
//! while a fault-injecting proxy between the vault and moto refuses
//! connections, drops answers after the request was carried out, cuts answers
//! off, delays them and stalls them. Clients behave as a billing system should:
//! every upload carries an Idempotency-Key and is retried with it until it is
//! acknowledged or its budget runs out.
//!
//! Then, with the faults off, everything is checked against what the clients
//! were told:
//! - lost: acknowledged and not deleted, but not readable;
//! - wrong bytes: readable, but not the bytes acknowledged;
//! - duplicates: more than one visible document for one Idempotency-Key (each
//!   body names its key);
//! - unaudited: a visible document without an upload event, or an acknowledged
//!   delete without a delete event, in the tenant's audit log;
//! - orphans: a document's objects without its facts object, after the crash
//!   leftovers collector ran (a short grace period here, safe because the
//!   transfer limit is shorter still).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fault_proxy::Faults;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use crate::server::{moto_behind_proxy, Backend, Launch, Server};

const ALL_ROLES: &[&str] = &["uploader", "reader", "tenant-admin", "auditor"];
/// Every upload is bounded by this (and so is the leftovers grace below it).
const TRANSFER_TIMEOUT_SECS: u64 = 45;
const LEFTOVERS_GRACE_SECS: u64 = 50;
/// How long a client keeps retrying one upload or delete.
const OPERATION_BUDGET: Duration = Duration::from_secs(120);

/// What a chaos run does.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosSettings {
    /// Storage backend (S3 faults only with `s3`).
    pub backend: Backend,
    /// Seconds of load.
    pub seconds: u64,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Mean seconds between two kills.
    pub kill_every_secs: f64,
    /// The S3 fault mix (probabilities per answer).
    pub faults: FaultMix,
}

/// The fault mix, as the report shows it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FaultMix {
    /// Connections refused.
    pub refuse: f64,
    /// Answers dropped after the request was carried out.
    pub drop_answer: f64,
    /// Answers cut off.
    pub truncate_answer: f64,
    /// Answers delayed by 300 ms.
    pub delay_answer: f64,
    /// Answers never sent.
    pub stall: f64,
}

impl ChaosSettings {
    /// The documented full run, or the short one CI runs.
    pub fn new(backend: Backend, quick: bool) -> Self {
        let faults = match backend {
            // About 17 % of answers faulty, as in the fault-injection run of issue 17.
            Backend::S3 => FaultMix {
                refuse: 0.03,
                drop_answer: 0.04,
                truncate_answer: 0.04,
                delay_answer: 0.06,
                stall: 0.002,
            },
            Backend::Fs => FaultMix {
                refuse: 0.0,
                drop_answer: 0.0,
                truncate_answer: 0.0,
                delay_answer: 0.0,
                stall: 0.0,
            },
        };
        ChaosSettings {
            backend,
            seconds: if quick { 40 } else { 600 },
            concurrency: 8,
            kill_every_secs: if quick { 12.0 } else { 30.0 },
            faults,
        }
    }
}

/// What a chaos run found.
#[derive(Debug, Default, Serialize)]
pub struct ChaosReport {
    /// Seconds of load.
    pub seconds: f64,
    /// `SIGKILL`s of the server.
    pub kills: u64,
    /// S3 faults injected.
    pub faults_injected: u64,
    /// Uploads tried (each with its own Idempotency-Key, retried as needed).
    pub uploads: u64,
    /// Uploads acknowledged (201).
    pub acknowledged: u64,
    /// Uploads whose retries ran out of budget unacknowledged.
    pub gave_up: u64,
    /// Upload attempts that failed and were retried.
    pub retried_attempts: u64,
    /// Deletes acknowledged.
    pub deletes: u64,
    /// Deletes never answered within the client's budget (their documents may
    /// be either way).
    pub deletes_unanswered: u64,
    /// Downloads during the load (each compared with the acknowledged bytes).
    pub downloads: u64,
    /// Acknowledged, not deleted, and not readable at the end.
    pub lost: u64,
    /// Read back with bytes other than those acknowledged (during or after).
    pub wrong_bytes: u64,
    /// Deleted (acknowledged) but still readable at the end.
    pub undeleted: u64,
    /// Listed as visible but unreadable: half-written and visible.
    pub unreadable_listed: u64,
    /// Extra visible documents for one Idempotency-Key.
    pub duplicates: u64,
    /// Visible documents without an upload event, acknowledged deletes without
    /// a delete event.
    pub unaudited: u64,
    /// Documents whose objects remain without their facts after collection.
    pub orphans_after_gc: u64,
    /// Leftover objects the collector removed (`vault_leftovers_removed_total`
    /// of the last server run).
    pub leftovers_removed: f64,
    /// Acknowledged uploads / uploads tried.
    pub upload_success_rate: f64,
    /// Latency of an acknowledged upload, first try to acknowledgement, ms.
    pub upload_p50_ms: f64,
    /// 99th percentile of the same.
    pub upload_p99_ms: f64,
    /// 99th percentile of the uploads that did not span a kill (S3 faults only).
    pub upload_p99_between_kills_ms: f64,
    /// Answers by status code during the load (connection failures as 0).
    pub statuses: BTreeMap<u16, u64>,
}

/// One acknowledged upload.
struct Acked {
    key: String,
    body: Vec<u8>,
    deleted: bool,
    /// A delete was sent and never answered: the document may be either way.
    delete_unanswered: bool,
}

/// What the clients were told, shared by them.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, Acked>,
    latencies_ms: Vec<f64>,
    latencies_between_kills_ms: Vec<f64>,
    statuses: BTreeMap<u16, u64>,
    uploads: u64,
    gave_up: u64,
    retried: u64,
    downloads: u64,
    wrong_bytes: u64,
    /// Acknowledged documents a delete's first try found missing.
    missing_at_delete: u64,
}

struct Shared {
    url: RwLock<String>,
    key: String,
    http: reqwest::Client,
    ledger: Mutex<Ledger>,
    /// Kills so far.
    kills: AtomicU64,
    /// Incremented when a kill starts and when the restart is done: an upload
    /// that saw it change overlapped a kill or the restart.
    epoch: AtomicU64,
}

impl Shared {
    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.url.read().unwrap_or_else(PoisonError::into_inner)
        )
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, status: u16) {
        *self.ledger().statuses.entry(status).or_default() += 1;
    }
}

/// Runs the chaos soak and checks the result.
pub async fn run(launch: &Launch, settings: &ChaosSettings) -> anyhow::Result<ChaosReport> {
    let mut launch = Launch {
        limits: format!(
            "transfer_timeout_secs = {TRANSFER_TIMEOUT_SECS}\nleftovers_grace_secs = {LEFTOVERS_GRACE_SECS}\n"
        ),
        ..Launch::new(
            launch.binary.clone(),
            launch.backend,
            launch.moto_url.clone(),
            launch.work_dir.clone(),
        )
    };
    let mut _moto = None;
    let mut proxy = None;
    if settings.backend == Backend::S3 {
        let (moto, started) = moto_behind_proxy(&mut launch).await?;
        // Attempts bounded to 2 s and operations to 6 s: a stalled S3 answer is
        // retried quickly (the defaults, 30 s and 90 s, suit slow large parts).
        launch.s3_storage = format!("endpoint = {:?}\noperation_timeout_secs = 6\n", started.url);
        _moto = moto;
        proxy = Some(started);
    }
    let server = Server::start(&launch).await?;
    server.create_tenant("acme", "local").await?;
    let key = server.api_key("acme", ALL_ROLES).await?;
    let shared = Arc::new(Shared {
        url: RwLock::new(server.url.clone()),
        key,
        http: crate::server::http_client()?,
        ledger: Mutex::default(),
        kills: AtomicU64::new(0),
        epoch: AtomicU64::new(0),
    });
    if let Some(proxy) = &proxy {
        let f = settings.faults;
        proxy.set(Faults {
            refuse: f.refuse,
            drop_answer: f.drop_answer,
            truncate_answer: f.truncate_answer,
            delay_answer: f.delay_answer,
            delay: Duration::from_millis(300),
            stall: f.stall,
            // The chaos documents are small: their answers are never long.
            cut_long_answer: 0.0,
        });
    }

    let started = Instant::now();
    let load_until = started + Duration::from_secs(settings.seconds);
    let mut clients = Vec::new();
    for worker in 0..settings.concurrency {
        clients.push(tokio::spawn(client(shared.clone(), worker, load_until)));
    }
    // The killer: SIGKILL at random moments, restart at once.
    let mut server = server;
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    loop {
        let wait = Duration::from_secs_f64(settings.kill_every_secs * rng.gen_range(0.5..1.5));
        if Instant::now() + wait >= load_until {
            break;
        }
        tokio::time::sleep(wait).await;
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        server.stop();
        shared.kills.fetch_add(1, Ordering::SeqCst);
        let killed_at = Instant::now();
        server = server.restart(&launch).await?;
        *shared.url.write().unwrap_or_else(PoisonError::into_inner) = server.url.clone();
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        eprintln!(
            "chaos: kill {} at {:.0} s, serving again after {:.1} s",
            shared.kills.load(Ordering::SeqCst),
            started.elapsed().as_secs_f64(),
            killed_at.elapsed().as_secs_f64()
        );
    }
    for c in clients {
        c.await.context("a chaos client panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let faults_injected = proxy.as_ref().map_or(0, |p| p.injected.total());
    if let Some(proxy) = &proxy {
        proxy.set(Faults::default());
    }

    // The check, on a server restarted once more with the faults off: what a
    // crash left is collected once older than the grace period.
    let server = server.restart(&launch).await?;
    *shared.url.write().unwrap_or_else(PoisonError::into_inner) = server.url.clone();
    let mut report = check(&shared, &server).await?;
    report.seconds = seconds;
    report.kills = shared.kills.load(Ordering::SeqCst);
    report.faults_injected = faults_injected;
    Ok(report)
}

/// One client: a mix of keyed uploads (60 %), downloads (25 %), deletes (10 %)
/// and listings (5 %) until `until`.
async fn client(shared: Arc<Shared>, worker: usize, until: Instant) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + worker as u64);
    let mut n = 0u64;
    while Instant::now() < until {
        let roll: f64 = rng.gen();
        if roll < 0.60 {
            n += 1;
            upload(&shared, &format!("chaos-{worker}-{n}"), &mut rng).await;
        } else if roll < 0.85 {
            if let Some((id, body)) = pick(&shared, &mut rng, false) {
                download(&shared, &id, &body).await;
            }
        } else if roll < 0.95 {
            if let Some((id, _)) = pick(&shared, &mut rng, true) {
                delete(&shared, &id).await;
            }
        } else {
            let r = shared
                .http
                .get(shared.url("/v1/documents?limit=50"))
                .bearer_auth(&shared.key)
                .send()
                .await;
            shared.count(r.map_or(0, |r| r.status().as_u16()));
        }
    }
    Ok(())
}

/// A random acknowledged, undeleted document (and marks it deleted when `take`).
fn pick(shared: &Shared, rng: &mut impl Rng, take: bool) -> Option<(String, Vec<u8>)> {
    let mut ledger = shared.ledger();
    let live: Vec<&String> = ledger
        .acked
        .iter()
        .filter(|(_, a)| !a.deleted)
        .map(|(id, _)| id)
        .collect();
    if live.is_empty() {
        return None;
    }
    let id = live[rng.gen_range(0..live.len())].clone();
    let acked = ledger.acked.get_mut(&id)?;
    if take {
        // Taken out of the readable set now: a download racing the delete
        // must not count its 404 as a loss.
        acked.deleted = true;
    }
    Some((id, acked.body.clone()))
}

async fn upload(shared: &Shared, key: &str, rng: &mut impl Rng) {
    let size = rng.gen_range(512..16 * 1024);
    let mut body = format!("chaos-key={key}\n").into_bytes();
    body.extend((body.len()..size).map(|_| rng.gen::<u8>()));
    shared.ledger().uploads += 1;
    let started = Instant::now();
    let epoch_before = shared.epoch.load(Ordering::SeqCst);
    let mut backoff = Duration::from_millis(100);
    while started.elapsed() < OPERATION_BUDGET {
        let answer = shared
            .http
            .post(shared.url("/v1/documents"))
            .bearer_auth(&shared.key)
            .header("X-Vault-Kind", "scan")
            .header("Content-Type", "application/octet-stream")
            .header("Idempotency-Key", key)
            .timeout(Duration::from_secs(TRANSFER_TIMEOUT_SECS + 5))
            .body(body.clone())
            .send()
            .await;
        let status = answer.as_ref().map_or(0, |r| r.status().as_u16());
        shared.count(status);
        if let Ok(r) = answer {
            if r.status().is_success() {
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                let Some(id) = v["id"].as_str() else { continue };
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let spanned_kill = shared.epoch.load(Ordering::SeqCst) != epoch_before;
                let mut ledger = shared.ledger();
                ledger.latencies_ms.push(ms);
                if !spanned_kill {
                    ledger.latencies_between_kills_ms.push(ms);
                }
                ledger.acked.insert(
                    id.to_owned(),
                    Acked {
                        key: key.to_owned(),
                        body,
                        deleted: false,
                        delete_unanswered: false,
                    },
                );
                return;
            }
        }
        shared.ledger().retried += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    shared.ledger().gave_up += 1;
}

async fn download(shared: &Shared, id: &str, body: &[u8]) {
    let r = shared
        .http
        .get(shared.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&shared.key)
        .timeout(Duration::from_secs(TRANSFER_TIMEOUT_SECS + 5))
        .send()
        .await;
    let status = r.as_ref().map_or(0, |r| r.status().as_u16());
    shared.count(status);
    if let Ok(r) = r {
        if r.status().is_success() {
            if let Ok(bytes) = r.bytes().await {
                let mut ledger = shared.ledger();
                ledger.downloads += 1;
                if bytes.as_ref() != body {
                    ledger.wrong_bytes += 1;
                }
            }
        }
    }
}

async fn delete(shared: &Shared, id: &str) {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut first_try = true;
    while started.elapsed() < OPERATION_BUDGET {
        let r = shared
            .http
            .delete(shared.url(&format!("/v1/documents/{id}")))
            .bearer_auth(&shared.key)
            .send()
            .await;
        let status = r.as_ref().map_or(0, |r| r.status().as_u16());
        shared.count(status);
        // 404 after an earlier try: that try deleted it. At the first try, an
        // acknowledged document was missing.
        if status == 404 && first_try {
            eprintln!("chaos: acknowledged document {id} was missing at its delete");
            shared.ledger().missing_at_delete += 1;
        }
        if status == 204 || status == 404 {
            return;
        }
        first_try = false;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    // Never answered: it may be deleted or not. Not picked again; the check
    // accepts either.
    if let Some(acked) = shared.ledger().acked.get_mut(id) {
        acked.delete_unanswered = true;
    }
}

/// Compares the vault with the ledger (faults off).
async fn check(shared: &Shared, server: &Server) -> anyhow::Result<ChaosReport> {
    let mut report = ChaosReport::default();
    let ledger = std::mem::take(&mut *shared.ledger());
    report.uploads = ledger.uploads;
    report.acknowledged = ledger.acked.len() as u64;
    report.gave_up = ledger.gave_up;
    report.retried_attempts = ledger.retried;
    report.downloads = ledger.downloads;
    report.wrong_bytes = ledger.wrong_bytes;
    report.statuses = ledger.statuses.clone();
    report.deletes = ledger
        .acked
        .values()
        .filter(|a| a.deleted && !a.delete_unanswered)
        .count() as u64;
    report.deletes_unanswered = ledger
        .acked
        .values()
        .filter(|a| a.delete_unanswered)
        .count() as u64;
    report.upload_success_rate = if ledger.uploads == 0 {
        0.0
    } else {
        ledger.acked.len() as f64 / ledger.uploads as f64
    };
    report.upload_p50_ms = percentile(&ledger.latencies_ms, 0.50);
    report.upload_p99_ms = percentile(&ledger.latencies_ms, 0.99);
    report.upload_p99_between_kills_ms = percentile(&ledger.latencies_between_kills_ms, 0.99);

    // Every visible document, read whole: its key is in its first line.
    let visible = list_all(shared).await?;
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for id in &visible {
        match get(shared, id).await {
            Read::Bytes(bytes) => {
                let key =
                    String::from_utf8_lossy(bytes.split(|b| *b == b'\n').next().unwrap_or(&[]))
                        .trim_start_matches("chaos-key=")
                        .to_owned();
                per_key.entry(key).or_default().push(id.clone());
                bodies.insert(id.clone(), bytes);
            }
            // Listed but unreadable: half-written and visible (if it was
            // acknowledged, it is also lost below).
            Read::Missing | Read::Failed => {
                eprintln!("chaos check: document {id} is listed but does not read");
                report.unreadable_listed += 1;
            }
        }
    }
    report.lost += ledger.missing_at_delete;
    // Whether a document is deleted, as far as its client knows: a delete
    // never answered counts as done when the document is gone, else as not.
    let deleted_now = |id: &String, acked: &Acked| {
        acked.deleted && (!acked.delete_unanswered || !bodies.contains_key(id))
    };
    for (id, acked) in &ledger.acked {
        let twins = per_key.get(&acked.key).map_or(0, Vec::len) as u64;
        match (deleted_now(id, acked), bodies.get(id)) {
            (false, None) => match get(shared, id).await {
                Read::Bytes(bytes) if bytes == acked.body => {}
                Read::Bytes(_) => report.wrong_bytes += 1,
                Read::Missing | Read::Failed => {
                    eprintln!("chaos check: acknowledged document {id} does not read");
                    report.lost += 1;
                }
            },
            (false, Some(bytes)) if *bytes != acked.body => report.wrong_bytes += 1,
            (true, Some(_)) => report.undeleted += 1,
            _ => {}
        }
        // Other documents of its key: any beside it, or any after it was deleted.
        report.duplicates += if deleted_now(id, acked) {
            twins
        } else {
            twins.saturating_sub(u64::from(bodies.contains_key(id)))
        };
    }
    // Keys never acknowledged (the client gave up) may have one document at most.
    let acked_keys: BTreeSet<&String> = ledger.acked.values().map(|a| &a.key).collect();
    report.duplicates += per_key
        .iter()
        .filter(|(key, _)| !acked_keys.contains(key))
        .map(|(_, ids)| ids.len().saturating_sub(1) as u64)
        .sum::<u64>();

    // The audit log names every visible document's upload and every
    // acknowledged delete.
    let (uploaded, deleted) = audited_documents(shared, server).await?;
    report.unaudited = visible.iter().filter(|id| !uploaded.contains(*id)).count() as u64
        + ledger
            .acked
            .iter()
            .filter(|(id, a)| deleted_now(id, a) && !deleted.contains(*id))
            .count() as u64;

    // Crash leftovers: collected once older than the grace period (passes run
    // at least that often), so wait up to three of them.
    let deadline = Instant::now() + Duration::from_secs(3 * LEFTOVERS_GRACE_SECS + 10);
    loop {
        report.orphans_after_gc = orphans(server).await?;
        if report.orphans_after_gc == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    report.leftovers_removed = server
        .metric("vault_leftovers_removed_total")
        .await
        .unwrap_or(0.0);
    Ok(report)
}

async fn list_all(shared: &Shared) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = shared.url("/v1/documents?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = shared.http.get(url).bearer_auth(&shared.key).send().await?;
        if !r.status().is_success() {
            bail!("listing documents: {}", r.status());
        }
        let v: Value = r.json().await?;
        for d in v["documents"].as_array().into_iter().flatten() {
            ids.extend(d["id"].as_str().map(str::to_owned));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(ids),
        }
    }
}

/// A read at the check.
enum Read {
    Bytes(Vec<u8>),
    Missing,
    /// Any other answer (a document whose objects are damaged answers 5xx).
    Failed,
}

async fn get(shared: &Shared, id: &str) -> Read {
    let r = match shared
        .http
        .get(shared.url(&format!("/v1/documents/{id}")))
        .bearer_auth(&shared.key)
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return Read::Failed,
    };
    match r.status().as_u16() {
        200 => match r.bytes().await {
            Ok(bytes) => Read::Bytes(bytes.to_vec()),
            Err(_) => Read::Failed,
        },
        404 => Read::Missing,
        other => {
            eprintln!("chaos check: reading {id} answered {other}");
            Read::Failed
        }
    }
}

/// Documents with an upload event and with a delete event in the tenant's log.
async fn audited_documents(
    shared: &Shared,
    server: &Server,
) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let (mut uploaded, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut url = shared.url("/v1/audit/events?tenant=acme&limit=1000");
        if let Some(c) = cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = shared
            .http
            .get(url)
            .bearer_auth(&server.operator_token)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("reading the audit log: {}", r.status());
        }
        let v: Value = r.json().await?;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            let Some(doc) = e["document"].as_str() else {
                continue;
            };
            // The intent before the change, or the event of its success; a
            // refused or failed request's event does not vouch for a change.
            if !matches!(e["outcome"].as_str(), Some("intent" | "allowed")) {
                continue;
            }
            match e["action"].as_str() {
                Some("document.upload") => {
                    uploaded.insert(doc.to_owned());
                }
                Some("document.delete") => {
                    deleted.insert(doc.to_owned());
                }
                _ => {}
            }
        }
        match v["next_cursor"].as_str() {
            Some(c) if !events.is_empty() => cursor = Some(c.to_owned()),
            _ => return Ok((uploaded, deleted)),
        }
    }
}

/// Documents whose objects exist without their facts object.
async fn orphans(server: &Server) -> anyhow::Result<u64> {
    let names = match &server.bucket {
        None => fs_document_objects(&server.data_dir.join("objects/tenants/acme/docs"))?,
        Some(bucket) => s3_document_objects(server, bucket).await?,
    };
    let mut documents: BTreeMap<String, bool> = BTreeMap::new();
    for (document, object) in names {
        *documents.entry(document).or_default() |= object == "meta";
    }
    Ok(documents.values().filter(|has_meta| !**has_meta).count() as u64)
}

/// (document, object) for every file under an fs store's docs directory.
fn fs_document_objects(docs: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(docs) else {
        return Ok(out);
    };
    for entry in entries {
        let dir = entry?.path();
        let document = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for file in std::fs::read_dir(&dir)? {
            out.push((
                document.clone(),
                file?.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    Ok(out)
}

/// (document, object) for every key under the bucket's docs prefix, listed
/// straight from moto (unsigned requests), not through the vault.
async fn s3_document_objects(
    server: &Server,
    bucket: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let moto = server.moto_url().context("an S3 server has a moto URL")?;
    let prefix = "vault/tenants/acme/docs/";
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = server
            .http
            .get(format!("{moto}/{bucket}"))
            .query(&[("list-type", "2"), ("prefix", prefix)]);
        if let Some(t) = &token {
            request = request.query(&[("continuation-token", t.as_str())]);
        }
        let xml = request.send().await?.error_for_status()?.text().await?;
        for key in tag_values(&xml, "Key") {
            let rest = key.trim_start_matches(prefix);
            if let Some((document, object)) = rest.split_once('/') {
                out.push((document.to_owned(), object.to_owned()));
            }
        }
        match tag_values(&xml, "NextContinuationToken").into_iter().next() {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// The text of every `<tag>…</tag>` in `xml` (S3 listing keys hold no markup).
fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].replace("&amp;", "&"));
        rest = &rest[end + close.len()..];
    }
    out
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The report as a markdown table row set.
pub fn markdown(settings: &ChaosSettings, r: &ChaosReport) -> String {
    let backend = match settings.backend {
        Backend::Fs => "fs",
        Backend::S3 => "S3 (moto, through the fault proxy)",
    };
    let rows: Vec<(&str, String)> = vec![
        ("load, s", format!("{:.0}", r.seconds)),
        ("kills (SIGKILL)", r.kills.to_string()),
        ("S3 faults injected", r.faults_injected.to_string()),
        ("uploads tried", r.uploads.to_string()),
        ("acknowledged", r.acknowledged.to_string()),
        ("gave up (budget spent)", r.gave_up.to_string()),
        ("deletes acknowledged", r.deletes.to_string()),
        ("deletes never answered", r.deletes_unanswered.to_string()),
        ("downloads checked", r.downloads.to_string()),
        ("lost", r.lost.to_string()),
        ("wrong bytes", r.wrong_bytes.to_string()),
        ("deleted but readable", r.undeleted.to_string()),
        ("listed but unreadable", r.unreadable_listed.to_string()),
        ("duplicates from keyed retries", r.duplicates.to_string()),
        ("unaudited changes", r.unaudited.to_string()),
        ("orphans left after GC", r.orphans_after_gc.to_string()),
        (
            "upload success rate",
            format!("{:.2} %", r.upload_success_rate * 100.0),
        ),
        ("upload p50, ms", format!("{:.0}", r.upload_p50_ms)),
        ("upload p99, ms", format!("{:.0}", r.upload_p99_ms)),
        (
            "upload p99 between kills, ms",
            format!("{:.0}", r.upload_p99_between_kills_ms),
        ),
    ];
    let mut out = format!(
        "### Chaos run, {backend}: {} clients, a kill every ~{:.0} s\n\n| | |\n|---|---|\n",
        settings.concurrency, settings.kill_every_secs
    );
    for (name, value) in rows {
        out.push_str(&format!("| {name} | {value} |\n"));
    }
    out.push_str(&format!(
        "\nanswers by status (0: no answer): {:?}\n",
        r.statuses
    ));
    out
}

/// Whether the run kept every promise (the numbers that must be 0 are).
pub fn failures(r: &ChaosReport) -> Vec<String> {
    let mut out = Vec::new();
    for (name, n) in [
        ("lost", r.lost),
        ("wrong bytes", r.wrong_bytes),
        ("deleted but readable", r.undeleted),
        ("listed but unreadable", r.unreadable_listed),
        ("duplicates", r.duplicates),
        ("unaudited", r.unaudited),
        ("orphans after GC", r.orphans_after_gc),
    ] {
        if n > 0 {
            out.push(format!("{n} {name}"));
        }
    }
    if r.acknowledged == 0 {
        out.push("no upload was acknowledged".into());
    }
    out
}

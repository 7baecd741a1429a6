//! Replicas: several `vault-server` processes over one S3 bucket (moto), sharing
//! nothing else but the root key file. Every replica serves every request; the
//! others' uploads and deletes reach each one's searches within the documented
//! staleness; revocations reach all within 5 s; a replica killed mid-load
//! restarts and catches up; the shared audit log verifies as one.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vault_e2e::{Backend, TestApp};

/// The staleness a search may have against another replica's writes: the
/// documented bound (one follow interval, 250 ms, and one index commit, 250 ms,
/// about 0.6 s in all) with room for a test machine running five servers and
/// moto on two cores (this file's tests run at once).
const STALENESS_ALLOWED: Duration = Duration::from_secs(4);
/// How long a revocation may take to reach every replica (tenant records are
/// cached for 5 s; API keys are read on every request).
const REVOCATION_ALLOWED: Duration = Duration::from_secs(6);

struct Doc {
    id: String,
    claim: String,
    body: Vec<u8>,
}

async fn upload(app: &TestApp, key: &str, n: usize) -> Result<Doc, String> {
    let claim = format!("C-{n:05}");
    let body = format!("%PDF-1.7 replica document {n}").into_bytes();
    let fields = json!({ "claim_id": claim }).to_string();
    let r = app
        .upload(
            key,
            "claim",
            "application/pdf",
            body.clone(),
            &[
                ("X-Vault-Fields", fields.as_str()),
                ("X-Vault-Extraction", "opaque"),
            ],
        )
        .await;
    let status = r.status();
    let answer: Value = r.json().await.unwrap_or(Value::Null);
    if status != StatusCode::CREATED {
        return Err(format!("upload {n} through {}: {status} {answer}", app.url));
    }
    Ok(Doc {
        id: answer["id"].as_str().unwrap_or_default().to_owned(),
        claim,
        body,
    })
}

async fn hits(app: &TestApp, key: &str, claim: &str) -> u64 {
    let r = app
        .get_as(key, &format!("/v1/search?q=claim_id:{claim}"))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "search on {}", app.url);
    r.json::<Value>().await.unwrap()["total"].as_u64().unwrap()
}

/// Waits until a search on `app` gives `want` hits for `claim`; how long it took.
async fn until_hits(app: &TestApp, key: &str, claim: &str, want: u64) -> Duration {
    let started = Instant::now();
    loop {
        if hits(app, key, claim).await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < STALENESS_ALLOWED,
            "{} still does not give {want} hit(s) for {claim} after {:?}",
            app.url,
            STALENESS_ALLOWED
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `request` on every replica answers `status`; how long it took.
async fn until_refused(
    replicas: &[&TestApp],
    key: &str,
    path: &str,
    status: StatusCode,
) -> Duration {
    let started = Instant::now();
    for app in replicas {
        loop {
            if app.get_as(key, path).await.status() == status {
                break;
            }
            assert!(
                started.elapsed() < REVOCATION_ALLOWED,
                "{} still serves {path} after {:?}",
                app.url,
                REVOCATION_ALLOWED
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_serve_one_tenant_through_load_a_crash_and_revocations() {
    let first = TestApp::builder().backend(Backend::S3).start().await;
    let second = first.replica().await;
    let mut third = first.replica().await;
    assert!(
        !second.data_dir.join("operator-token").exists()
            || std::fs::read_to_string(second.data_dir.join("operator-token")).unwrap()
                == first.operator_token,
        "a replica issued a second first operator"
    );
    // Created through one, usable through the others at once.
    first.create_tenant_with("acme", "local").await;
    let key = second
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let mut docs = Vec::new();

    // Concurrent uploads through all three: none fails through contention.
    {
        let replicas = [&first, &second, &third];
        let uploads = (0..36).map(|n| upload(replicas[n % 3], &key, n));
        for result in futures::future::join_all(uploads).await {
            docs.push(result.expect("an upload failed"));
        }
        // Each replica's searches see every other's uploads within the bound.
        let mut slowest = Duration::ZERO;
        for doc in docs.iter().step_by(5) {
            for app in replicas {
                slowest = slowest.max(until_hits(app, &key, &doc.claim, 1).await);
            }
        }
        println!("slowest cross-replica search after the uploads: {slowest:?}");
    }

    // One replica is killed mid-load and restarted; the others keep serving.
    {
        let load = async {
            let replicas = [&first, &second];
            let mut out = Vec::new();
            for n in 36..48 {
                out.push(
                    upload(replicas[n % 2], &key, n)
                        .await
                        .expect("upload during the crash"),
                );
            }
            out
        };
        let crash = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            third.kill();
        };
        let (more, ()) = tokio::join!(load, crash);
        docs.extend(more);
        third = third.restart().await;
    }
    let replicas = [&first, &second, &third];

    // Every acknowledged document reads back byte-identical through every replica,
    // and every replica's searches give the same exact answers.
    for doc in &docs {
        for app in replicas {
            let r = app.get_as(&key, &format!("/v1/documents/{}", doc.id)).await;
            assert_eq!(r.status(), StatusCode::OK, "{} on {}", doc.id, app.url);
            assert_eq!(r.bytes().await.unwrap().as_ref(), doc.body.as_slice());
        }
    }
    for doc in docs.iter().skip(30) {
        for app in replicas {
            until_hits(app, &key, &doc.claim, 1).await;
        }
    }

    // Deletes through one replica leave no candidate on the others.
    for doc in docs.iter().take(3) {
        let r = first
            .http
            .delete(first.at(&format!("/v1/documents/{}", doc.id)))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    for doc in docs.iter().take(3) {
        for app in replicas {
            until_hits(app, &key, &doc.claim, 0).await;
            let r = app.get_as(&key, &format!("/v1/documents/{}", doc.id)).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
        }
    }

    // Key rotation through one and a rewrap retiring the old keys through another,
    // while the third (whose cached tenant record still names the old keys) takes
    // uploads: an upload sealed under the old keys is refused at its commit point
    // (503, retried), never stored under a key the rewrap then retires.
    assert!(upload(&third, &key, 99).await.is_ok());
    let r = second
        .operator(Method::POST, "/v1/admin/tenants/acme/keys/rotate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = first
        .operator(Method::POST, "/v1/admin/tenants/acme/keys/rewrap")
        .json(&json!({"retire_old": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let mut after = None;
    for _ in 0..20 {
        match upload(&third, &key, 100).await {
            Ok(doc) => {
                after = Some(doc);
                break;
            }
            Err(e) => assert!(e.contains("503"), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = after.expect("an upload after a rotation landed");
    // Every replica's audit events still read (none sealed under retired keys).
    for app in replicas {
        app.operator_get("/v1/audit/events?tenant=acme&limit=1000")
            .await;
    }
    for app in replicas {
        let r = app
            .get_as(&key, &format!("/v1/documents/{}", after.id))
            .await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), after.body.as_slice());
        let r = app
            .get_as(&key, &format!("/v1/documents/{}", docs[10].id))
            .await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), docs[10].body.as_slice());
    }

    // Revoked through one replica: refused by every one.
    let reader = first.api_key("acme", &["reader"]).await;
    let path = format!("/v1/documents/{}", docs[20].id);
    for app in replicas {
        assert_eq!(app.get_as(&reader, &path).await.status(), StatusCode::OK);
    }
    let id = reader.split('_').nth(2).unwrap();
    let r = third
        .operator(Method::DELETE, &format!("/v1/admin/api-keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let took = until_refused(&replicas, &reader, &path, StatusCode::UNAUTHORIZED).await;
    println!("API key revocation reached every replica in {took:?}");

    // The shared log verifies as one chain.
    let cp: Value = second
        .operator_get("/v1/audit/checkpoint?tenant=acme")
        .await;
    let store = first.store_arg();
    let out = first.cli(&[
        "--json",
        "audit",
        "verify",
        "--store",
        &store,
        "--tenant",
        "acme",
        "--public-key",
        cp["public_key"].as_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A tenant disabled through one replica is refused by every one within 5 s.
    let r = second
        .operator(Method::POST, "/v1/admin/tenants/acme/disable")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let took = until_refused(&replicas, &key, &path, StatusCode::UNAUTHORIZED).await;
    println!("tenant disable reached every replica in {took:?}");
}

/// A replica whose root key file is not the vault's does not start, and writes
/// nothing to the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_root_key_refuses_to_start() {
    let first = TestApp::builder().backend(Backend::S3).start().await;
    first.create_tenant_with("acme", "local").await;
    let before = bucket_keys(&first).await;
    // The replica's root key file replaced by another one.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("vault");
    std::fs::create_dir_all(data_dir.join("keys")).unwrap();
    std::fs::write(data_dir.join("keys/root.key"), [9u8; 32]).unwrap();
    std::fs::set_permissions(
        data_dir.join("keys/root.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = first.data_dir.with_extension("toml");
    let out = std::process::Command::new(vault_e2e::server_binary())
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .envs(vault_e2e::aws_env())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not this vault's root key"), "{stderr}");
    assert_eq!(bucket_keys(&first).await, before);
}

/// A replica with an empty data directory starts from the tenant's index
/// snapshot in the bucket, reconciled with the store: once `/readyz` says ready
/// its searches are complete at once, including what changed after the
/// snapshot. Offboarding removes the snapshots with the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_is_ready_from_the_index_snapshot() {
    let first = TestApp::builder()
        .backend(Backend::S3)
        .config("[search]\nsnapshot_interval_secs = 2\n")
        .start()
        .await;
    first.create_tenant("acme").await;
    let key = first
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let mut docs = Vec::new();
    for n in 0..30 {
        docs.push(upload(&first, &key, n).await.unwrap());
    }
    assert_eq!(hits(&first, &key, "C-00003").await, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.metric("vault_index_snapshots_written_total").await < 1.0 {
        assert!(Instant::now() < deadline, "no index snapshot written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = bucket_keys(&first).await;
    let snapshots: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/caches/index/acme/"))
        .collect();
    assert!(!snapshots.is_empty(), "{keys:?}");
    // After the snapshot: more uploads and a delete.
    for n in 30..35 {
        docs.push(upload(&first, &key, n).await.unwrap());
    }
    let r = first
        .http
        .delete(first.at(&format!("/v1/documents/{}", docs[0].id)))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let fresh = first.replica().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = fresh.http.get(fresh.at("/readyz")).send().await.unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        let body: Value = r.json().await.unwrap();
        assert!(
            Instant::now() < deadline,
            "the new replica never became ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fresh.metric("vault_index_snapshots_restored_total").await,
        1.0
    );
    // Ready means complete: no waiting.
    assert_eq!(hits(&fresh, &key, docs[0].claim.as_str()).await, 0);
    for doc in &docs[1..] {
        assert_eq!(hits(&fresh, &key, &doc.claim).await, 1, "{}", doc.claim);
    }

    let r = first
        .operator(Method::POST, "/v1/admin/tenants/acme/offboard")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // A snapshot another replica was writing while the tenant was offboarded
    // can land after the offboarding's removal; its writer then sees the
    // tenant offboarded and removes it. So: gone within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let keys = bucket_keys(&first).await;
        let left: Vec<&String> = keys
            .iter()
            .filter(|k| k.contains("/caches/index/acme/"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "snapshots left after offboarding: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A job runs on the replica that started it and is followed, listed and
/// cancelled through any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_on_one_replica_is_followed_and_cancelled_on_another() {
    let first = TestApp::builder().backend(Backend::S3).start().await;
    first.create_tenant("acme").await;
    let key = first.api_key("acme", &["uploader"]).await;
    for n in 0..20 {
        upload(&first, &key, n).await.unwrap();
    }
    let other = first.replica().await;
    let r = first
        .operator(Method::POST, "/v1/admin/tenants/acme/keys/rewrap")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/jobs/{id}");
    // Published within a second or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let r = other.operator(Method::GET, &path).send().await.unwrap();
        if r.status() == StatusCode::OK {
            break r.json::<Value>().await.unwrap();
        }
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(
            Instant::now() < deadline,
            "the job never showed on the other replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(seen["kind"], "key.rewrap");
    let listed = other.operator_get("/v1/admin/jobs").await;
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str()),
        "{listed}"
    );
    // Cancelled there (unless it finished first): the record says how it ended.
    let r = other
        .operator(Method::POST, &format!("{path}/cancel"))
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == StatusCode::ACCEPTED || r.status() == StatusCode::CONFLICT,
        "{}",
        r.status()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let record = other.operator_get(&path).await;
        if record["state"] != "running" {
            assert!(
                record["state"] == "cancelled" || record["state"] == "succeeded",
                "{record}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the job never stopped: {record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bucket_keys(app: &TestApp) -> Vec<String> {
    let s3 = aws_sdk_s3::Client::new(&vault_e2e::aws_config().await);
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(app.bucket.as_ref().unwrap())
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    keys.sort();
    keys
}

/// A rolling restart under load: each replica in turn gets SIGTERM (its
/// `/readyz` turns unready while it still serves, then it stops accepting and
/// finishes what is in flight), exits, and is started again. A client that, like
/// a load balancer, retries a refused connection on the other replica sees no
/// request fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let first = TestApp::builder()
        .backend(Backend::S3)
        .config("[limits]\nshutdown_delay_secs = 1\n")
        .start()
        .await;
    let second = first.replica().await;
    first.create_tenant_with("acme", "local").await;
    let key = first
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let urls = std::sync::Arc::new(std::sync::Mutex::new(vec![
        first.url.clone(),
        second.url.clone(),
    ]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A fresh connection per request, as a load balancer's health-checked pool
    // would route it: refused means "try the other one".
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let load = {
        let (urls, stop, key, client) = (urls.clone(), stop.clone(), key.clone(), client.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = Vec::new();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let body = format!("%PDF-1.7 rolling {n}").into_bytes();
                let mut answered = false;
                for attempt in 0..4 {
                    let url = {
                        let urls = urls.lock().unwrap();
                        urls[(n + attempt) % urls.len()].clone()
                    };
                    let sent = client
                        .post(format!("{url}/v1/documents"))
                        .bearer_auth(&key)
                        .header("X-Vault-Kind", "scan")
                        .header("Content-Type", "application/pdf")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::CREATED => {
                            let v: Value = r.json().await.unwrap();
                            acked.push((v["id"].as_str().unwrap().to_owned(), body.clone()));
                            answered = true;
                            break;
                        }
                        Ok(r) => {
                            failures.push(format!("{url}: {}", r.status()));
                            answered = true;
                            break;
                        }
                        // Refused (or the replica is between its exit and its restart):
                        // what a load balancer retries elsewhere.
                        Err(e) if e.is_connect() => continue,
                        Err(e) => {
                            failures.push(format!("{url}: {e}"));
                            answered = true;
                            break;
                        }
                    }
                }
                if !answered {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (acked, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut replicas = vec![first, second];
    for i in 0..2 {
        let app = replicas.remove(i);
        app.terminate();
        // While it drains, it says so: the signal is handled asynchronously, so
        // /readyz turns 503 shortly after `kill` returns, not at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = client.get(app.at("/readyz")).send().await.unwrap();
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            assert_eq!(r.status(), StatusCode::OK, "/readyz while draining");
            assert!(
                Instant::now() < deadline,
                "/readyz still 200 5 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut app = app;
        assert!(
            app.wait_for_exit(Duration::from_secs(30)).is_some(),
            "a replica did not exit after SIGTERM"
        );
        let app = app.restart().await;
        urls.lock().unwrap()[i] = app.url.clone();
        replicas.insert(i, app);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acked, failures) = load.await.unwrap();
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert!(acked.len() > 10, "only {} uploads made", acked.len());
    for (id, body) in &acked {
        for app in &replicas {
            let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
            assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
        }
    }
    println!(
        "rolling restart: {} uploads acknowledged, none failed",
        acked.len()
    );
}

//! S3 the way S3 fails, through a fault-injecting proxy in front of moto:
//! connections refused, answers lost after the request was carried out, answers
//! cut off or delayed, answers never sent. Uploads retried by a client with their
//! Idempotency-Key all land, once each, and read back byte for byte; a stalled S3
//! answers 503 within the configured bound, and the vault recovers when S3 does.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use vault_e2e::fault_proxy::{FaultProxy, Faults};
use vault_e2e::{moto_endpoint, Backend, TestApp};

async fn start(proxy: &FaultProxy, timeout_secs: u64) -> TestApp {
    TestApp::builder()
        .backend(Backend::S3)
        .s3_endpoint(&proxy.url)
        .s3_setting(&format!("operation_timeout_secs = {timeout_secs}"))
        .start()
        .await
}

async fn proxy() -> FaultProxy {
    let moto = moto_endpoint();
    FaultProxy::start(moto.trim_start_matches("http://")).await
}

/// What a client does: retries a 503 (or a cut connection) with the same key.
async fn upload_retrying(app: &TestApp, key: &str, n: usize) -> (String, u32) {
    let body = format!("%PDF-1.7 faulty document {n}").into_bytes();
    let idempotency = format!("fault-{n}");
    for attempt in 1..=8 {
        let r = app
            .http
            .post(app.at("/v1/documents"))
            .bearer_auth(key)
            .header("X-Vault-Kind", "scan")
            .header("Content-Type", "application/pdf")
            .header("Idempotency-Key", &idempotency)
            .body(body.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::CREATED => {
                let v: Value = r.json().await.unwrap();
                return (v["id"].as_str().unwrap().to_owned(), attempt);
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                assert!(
                    status == StatusCode::SERVICE_UNAVAILABLE
                        || status == StatusCode::CONFLICT
                            && text.contains("idempotency_key_in_flight"),
                    "upload {n}: {status} {text}"
                );
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    panic!("upload {n} never landed");
}

async fn download_retrying(app: &TestApp, key: &str, id: &str) -> Vec<u8> {
    for attempt in 1..=8u64 {
        if let Ok(r) = app
            .http
            .get(app.at(&format!("/v1/documents/{id}")))
            .bearer_auth(key)
            .send()
            .await
        {
            if r.status() == StatusCode::OK {
                if let Ok(bytes) = r.bytes().await {
                    return bytes.to_vec();
                }
            } else {
                assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "download {id}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
    panic!("download {id} never succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_uploads_land_once_each_through_injected_s3_faults() {
    let proxy = proxy().await;
    let app = start(&proxy, 20).await;
    app.create_tenant_with("acme", "local").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    proxy.set(Faults {
        refuse: 0.05,
        drop_answer: 0.05,
        truncate_answer: 0.03,
        delay_answer: 0.05,
        delay: Duration::from_millis(300),
        stall: 0.0,
        cut_long_answer: 0.0,
    });
    let mut first_try = 0;
    let mut docs = Vec::new();
    for n in 0..40 {
        let (id, attempts) = upload_retrying(&app, &key, n).await;
        first_try += u32::from(attempts == 1);
        docs.push((id, n));
    }
    assert!(
        proxy.injected.total() > 0,
        "no fault was injected: the test proved nothing"
    );
    for (id, n) in &docs {
        let body = download_retrying(&app, &key, id).await;
        assert_eq!(body, format!("%PDF-1.7 faulty document {n}").into_bytes());
    }
    proxy.set(Faults::default());
    // Each document once: no keyed retry made a second one.
    let listed: Value = app
        .get_as(&key, "/v1/documents?limit=1000")
        .await
        .json()
        .await
        .unwrap();
    let count = listed["documents"].as_array().unwrap().len();
    assert_eq!(count, 40, "{listed}");
    println!(
        "40 uploads, {first_try} landed at the first try; faults injected: {:?}",
        proxy.injected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_s3_answers_503_in_bounded_time_and_the_vault_recovers() {
    let proxy = proxy().await;
    let app = start(&proxy, 3).await;
    app.create_tenant_with("acme", "local").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let (id, _) = upload_retrying(&app, &key, 0).await;
    proxy.set(Faults {
        stall: 1.0,
        ..Faults::default()
    });
    let started = Instant::now();
    let r = app
        .http
        .get(app.at(&format!("/v1/documents/{id}")))
        .bearer_auth(&key)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "storage_unavailable", "{v}");
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    println!("a stalled S3 was answered with 503 after {took:?}");
    proxy.set(Faults::default());
    let body = download_retrying(&app, &key, &id).await;
    assert_eq!(body, b"%PDF-1.7 faulty document 0".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_whose_s3_body_is_cut_off_is_resumed_from_the_last_byte() {
    let proxy = proxy().await;
    let app = start(&proxy, 20).await;
    app.create_tenant_with("acme", "local").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = app
        .upload(&key, "scan", "application/pdf", body.clone(), &[])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every S3 answer over 64 KiB is cut off somewhere in its body.
    proxy.set(Faults {
        cut_long_answer: 1.0,
        ..Faults::default()
    });
    let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let got = r.bytes().await.unwrap();
    let cut = proxy
        .injected
        .cut
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        cut >= 2,
        "only {cut} answers were cut: the test proved nothing"
    );
    assert_eq!(got.len(), body.len());
    assert!(got.as_ref() == body.as_slice(), "the resumed bytes differ");
    println!("a 3 MB download read through {cut} cut-off S3 answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_s3_is_answered_503_at_once_behind_the_circuit_breaker() {
    let proxy = proxy().await;
    let app = start(&proxy, 6).await;
    app.create_tenant_with("acme", "local").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let (id, _) = upload_retrying(&app, &key, 0).await;
    let path = format!("/v1/documents/{id}");
    // S3 is gone: every connection refused.
    proxy.set(Faults {
        refuse: 1.0,
        ..Faults::default()
    });
    let mut took = Vec::new();
    for _ in 0..8 {
        let started = Instant::now();
        let r = app.get_as(&key, &path).await;
        took.push(started.elapsed());
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "storage_unavailable", "{v}");
    }
    // The first requests spent their retries; once the breaker opened, the
    // answer comes without going to S3.
    let last = *took.last().unwrap();
    assert!(
        last < Duration::from_millis(250),
        "still slow behind an open breaker: {took:?}"
    );
    assert!(
        took[0] > last * 4,
        "the first request did not retry: {took:?}"
    );
    let ready = app.http.get(app.at("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // S3 is back: after the breaker's period requests go through again.
    proxy.set(Faults::default());
    let body = download_retrying(&app, &key, &id).await;
    assert_eq!(body, b"%PDF-1.7 faulty document 0".to_vec());
    println!("dead S3: answers took {took:?}");

    // A replica restarted while S3 is gone waits for it instead of exiting.
    proxy.set(Faults {
        refuse: 1.0,
        ..Faults::default()
    });
    let restarting = tokio::spawn(app.restart());
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set(Faults::default());
    let app = restarting.await.unwrap();
    let body = download_retrying(&app, &key, &id).await;
    assert_eq!(body, b"%PDF-1.7 faulty document 0".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_through_s3_faults_completes_and_verifies() {
    let proxy = proxy().await;
    let repo = tempfile::tempdir().unwrap();
    let repo_dir = repo.path().join("repo");
    let app = TestApp::builder()
        .backend(Backend::S3)
        .s3_endpoint(&proxy.url)
        .s3_setting("operation_timeout_secs = 6")
        .config(&format!(
            "[backup]\ntarget = {:?}\n",
            repo_dir.display().to_string()
        ))
        .start()
        .await;
    app.create_tenant_with("acme", "local").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let mut docs = Vec::new();
    for n in 0..12u32 {
        // Some large enough for their S3 answers to be cut off mid-body.
        let size = if n % 4 == 0 { 400_000 } else { 2_000 };
        let body: Vec<u8> = (0..size).map(|i| (i as u32 ^ n) as u8).collect();
        let r = app
            .upload(&key, "scan", "application/pdf", body.clone(), &[])
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        docs.push((id, body));
    }
    // While the backup reads the vault's store: connections refused, answers
    // lost, bodies cut off.
    proxy.set(Faults {
        refuse: 0.05,
        drop_answer: 0.05,
        cut_long_answer: 0.5,
        ..Faults::default()
    });
    let r = app
        .operator(reqwest::Method::POST, "/v1/admin/backups")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(120);
    let last = loop {
        let status = app.operator_get("/v1/admin/backups").await;
        if status["status"]["running"].is_null() && status["status"]["last"].is_object() {
            break status["status"]["last"].clone();
        }
        assert!(Instant::now() < deadline, "the backup did not finish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    proxy.set(Faults::default());
    assert_eq!(last["ok"], true, "{last}");
    assert!(
        proxy.injected.total() > 0,
        "no fault was injected: the test proved nothing"
    );
    let store = repo_dir.display().to_string();
    let verified = app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
    ]);
    assert_eq!(
        verified["problems"].as_array().unwrap().len(),
        0,
        "{verified}"
    );
    for (id, body) in &docs {
        assert_eq!(&download_retrying(&app, &key, id).await, body);
    }
    println!("backup through faults: {:?}", proxy.injected);
}

//! The HTTP edge against hostile or careless clients: anonymous floods write no
//! tenant audit log, request ids are checked, slowloris connections are closed,
//! the connection cap holds, per-key rates and the upload cap answer with the
//! envelope and Retry-After, stalled uploads are cut, `/metrics` needs its token,
//! downloads are inert attachments, raw path values never reach the audit log,
//! operator credentials rotate, and a failing audit log shows in `/readyz` without
//! touching `/healthz` or unauthenticated answers.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vault_e2e::TestApp;

fn port_of(app: &TestApp) -> u16 {
    app.url.rsplit(':').next().unwrap().parse().unwrap()
}

fn segment_count(app: &TestApp, tenant: &str) -> usize {
    std::fs::read_dir(
        app.data_dir
            .join(format!("objects/tenants/{tenant}/audit/segments")),
    )
    .map(|d| d.count())
    .unwrap_or(0)
}

async fn events(app: &TestApp, tenant: &str) -> Vec<Value> {
    let r = app
        .operator(Method::GET, "/v1/audit/events")
        .query(&[("tenant", tenant), ("limit", "1000")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn key_id(secret: &str) -> &str {
    secret.split('_').nth(2).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_write_no_tenant_audit_segments() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let revoked = app.api_key("acme", &["reader"]).await;
    let r = app
        .operator(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{}", key_id(&revoked)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .upload(&key, "other", "text/plain", b"hello".to_vec(), &[])
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Let the writes above settle before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acme_before = segment_count(&app, "acme");
    let system_before = segment_count(&app, "system");
    assert!(acme_before > 0);

    let wrong_secret = format!("vlt_ak_{}_{}", key_id(&key), "A".repeat(43));
    let unknown = format!("vlt_ak_0123456789abcdef_{}", "B".repeat(43));
    let unknown_operator = format!("vlt_op_fedcba9876543210_{}", "C".repeat(43));
    let doc = format!("/v1/documents/{id}");
    const REQUESTS: usize = 10_000;
    const KINDS: usize = 7;
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let http = &app.http;
            let request = match i % KINDS {
                0 => http.get(app.at("/v1/documents")),
                1 => http
                    .get(app.at("/v1/search?q=claim_id:x"))
                    .bearer_auth("garbage"),
                2 => http.get(app.at(&doc)).bearer_auth(&unknown),
                3 => http
                    .post(app.at("/v1/admin/tenants/acme/api-keys"))
                    .json(&json!({"roles": ["reader"]})),
                4 => http
                    .get(app.at("/v1/admin/tenants/acme"))
                    .bearer_auth(&unknown_operator),
                5 => http.get(app.at(&doc)).bearer_auth(&wrong_secret),
                _ => http.get(app.at(&doc)).bearer_auth(&revoked),
            };
            async move { request.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 401), "all refused");
    // Sampled events are written in the background.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(
        segment_count(&app, "acme"),
        acme_before,
        "anonymous requests wrote into acme's log"
    );
    // At most one sample per reason and second (five reasons: missing, malformed,
    // unknown (two kinds of token), wrong secret, revoked).
    let reasons = 5;
    let bound = reasons * (elapsed.as_secs() as usize + 2);
    let grown = segment_count(&app, "system") - system_before;
    eprintln!("{REQUESTS} anonymous requests in {elapsed:?}: {grown} system segments (bound {bound}), acme unchanged at {acme_before}");
    assert!(
        grown <= bound,
        "{grown} system segments for {REQUESTS} requests in {elapsed:?} (bound {bound})"
    );
    let metrics = app.metrics_text().await;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vault_unauthenticated_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as usize, REQUESTS, "{metrics}");
    for reason in [
        "missing_credential",
        "malformed_credential",
        "unknown_credential",
        "wrong_secret",
        "revoked_credential",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason}"
        );
    }
    let sampled: Vec<Value> = events(&app, "system")
        .await
        .into_iter()
        .filter(|e| e["actor"] == "anonymous")
        .collect();
    assert!(!sampled.is_empty() && sampled.len() <= bound);
    let represented: u64 = sampled
        .iter()
        .map(|e| {
            assert_eq!(e["outcome"], "denied");
            let detail = e["detail"].as_str().unwrap();
            assert!(detail.starts_with("unauthenticated: "), "{detail}");
            1 + detail
                .split("sampled, ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap()
        })
        .sum();
    assert!(represented as usize <= REQUESTS);

    // An authenticated request still appends its event, to acme's log.
    let before = segment_count(&app, "acme");
    let r = app.get_as(&key, &doc).await;
    assert_eq!(r.status(), 200);
    assert_eq!(segment_count(&app, "acme"), before + 1);
    let last = events(&app, "acme").await.pop().unwrap();
    assert_eq!(last["action"], "document.download");
    assert_eq!(last["actor"], format!("apikey:{}", key_id(&key)));
}

#[tokio::test]
async fn request_ids_are_checked_before_anything_echoes_them() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["reader"]).await;
    let echoed = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let r = app
        .http
        .get(app.at("/v1/documents"))
        .bearer_auth(&key)
        .header("X-Request-Id", "billing-run.42_a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echoed(&r), "billing-run.42_a");

    for bad in ["x".repeat(40_000), "has spaces".to_owned(), "x".repeat(65)] {
        let r = app
            .http
            .get(app.at("/v1/documents"))
            .bearer_auth(&key)
            .header("X-Request-Id", &bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let id = echoed(&r);
        assert!(id.len() <= 64 && id != bad, "{id}");
        let last = events(&app, "acme")
            .await
            .into_iter()
            .rfind(|e| e["action"] == "document.list")
            .unwrap();
        assert_eq!(last["request_id"], id.as_str());
    }

    // A 1 MB header never reaches the application: hyper refuses the head (431).
    let r = app
        .http
        .get(app.at("/v1/documents"))
        .bearer_auth(&key)
        .header("X-Request-Id", "x".repeat(1 << 20))
        .send()
        .await;
    assert!(
        r.as_ref().map_or(true, |r| r.status()
            == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "{r:?}"
    );
    let r = app.http.get(app.at("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(echoed(&r).len() <= 64);
}

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_timeout() {
    let app = TestApp::builder()
        .config("[limits]\nheader_read_timeout_secs = 2")
        .start()
        .await;
    let port = port_of(&app);
    let started = Instant::now();
    let mut held = Vec::new();
    for i in 0..60 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let partial: &[u8] = if i % 2 == 0 {
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        } else {
            b""
        };
        stream.write_all(partial).await.unwrap();
        held.push(stream);
    }
    // One trickles a byte every 300 ms: bytes do not reset the deadline.
    let mut trickler = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let trickle = tokio::spawn(async move {
        trickler
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if trickler.write_all(b"X").await.is_err() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Instant::now()
    });
    // The server keeps answering meanwhile.
    let r = app.http.get(app.at("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for mut stream in held {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf))
            .await
            .expect("the server closes a half-sent request");
        // Closed (EOF or reset), at most with an error answer.
        if let Ok(n) = read {
            if n > 0 {
                assert!(buf.starts_with(b"HTTP/1.1 4"), "{:?}", &buf[..n]);
            }
        }
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1500),
        "{closed_after:?}"
    );
    let trickle_closed = trickle.await.unwrap() - started;
    assert!(
        trickle_closed < Duration::from_secs(6),
        "{trickle_closed:?}"
    );
    let r = reqwest::Client::new()
        .get(app.at("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let app = TestApp::builder()
        .config("[limits]\nmax_connections = 4")
        .start()
        .await;
    let port = port_of(&app);
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut held {
        let mut buf = [0u8; 16];
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await
        {
            assert!(read.map_or(true, |n| n == 0), "closed without an answer");
            closed += 1;
        }
    }
    assert!(closed >= 6, "{closed} of 10 closed with a cap of 4");
    let fresh = reqwest::Client::new();
    assert!(
        fresh.get(app.at("/healthz")).send().await.is_err(),
        "a new connection is refused while the cap is reached"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = fresh.get(app.at("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(fresh);
    let metrics = app.metrics_text().await;
    let rejected: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vault_connections_rejected_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rejected >= 7.0, "{metrics}");
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_and_a_guessed_id_spends_nothing() {
    let app = TestApp::builder()
        .config("[limits]\nrequests_per_second = 1\nburst = 5")
        .start()
        .await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["reader"]).await;
    let other = app.api_key("acme", &["reader"]).await;
    // Someone who knows the key's id but not its secret cannot spend its budget.
    let forged = format!("vlt_ak_{}_{}", key_id(&key), "Z".repeat(43));
    for _ in 0..20 {
        assert_eq!(app.get_as(&forged, "/v1/documents").await.status(), 401);
    }
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..12 {
        let r = app.get_as(&key, "/v1/documents").await;
        statuses.push(r.status().as_u16());
        if r.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            limited = Some((retry, r.json::<Value>().await.unwrap()));
        }
    }
    assert!(
        statuses[..5].iter().all(|s| *s == 200),
        "the burst is allowed: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    let (retry, body) = limited.unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["message"].is_string());
    // Another key has its own budget.
    assert_eq!(app.get_as(&other, "/v1/documents").await.status(), 200);
    // The refusals are the key's own requests: audited in its tenant's log.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let denied = events(&app, "acme")
        .await
        .into_iter()
        .filter(|e| e["status"] == 429 && e["actor"] == format!("apikey:{}", key_id(&key)))
        .count();
    assert_eq!(denied, statuses.iter().filter(|s| **s == 429).count());
}

fn channel_body() -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, reqwest::Body::wrap_stream(stream))
}

#[tokio::test]
async fn uploads_beyond_the_cap_get_503_and_a_stalled_one_is_cut() {
    let app = TestApp::builder()
        .config("[limits]\nmax_concurrent_uploads = 1\nstall_timeout_secs = 2")
        .start()
        .await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader"]).await;
    let (tx, body) = channel_body();
    let first = tokio::spawn(
        app.http
            .post(app.at("/v1/documents"))
            .bearer_auth(&key)
            .header("X-Vault-Kind", "other")
            .body(body)
            .send(),
    );
    tx.send(Ok(vec![b'a'; 1024])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app
        .upload(&key, "other", "text/plain", b"second".to_vec(), &[])
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "too_many_uploads");
    tx.send(Ok(vec![b'b'; 1024])).await.unwrap();
    drop(tx);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);
    let r = app
        .upload(&key, "other", "text/plain", b"third".to_vec(), &[])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A body that stops arriving is cut after the stall timeout; the slot frees.
    let (tx, body) = channel_body();
    let started = Instant::now();
    let stalled = tokio::spawn(
        app.http
            .post(app.at("/v1/documents"))
            .bearer_auth(&key)
            .header("X-Vault-Kind", "other")
            .body(body)
            .send(),
    );
    tx.send(Ok(vec![b'c'; 1024])).await.unwrap();
    let answer = stalled.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.json::<Value>().await.unwrap()["code"],
        "upload_aborted"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    drop(tx);
    let r = app
        .upload(&key, "other", "text/plain", b"fourth".to_vec(), &[])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("vault_uploads_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_need_the_metrics_token() {
    let app = TestApp::builder().start().await;
    let path = app.data_dir.join("metrics-token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let log = std::fs::read_to_string(app.data_dir.with_extension("log")).unwrap();
    assert!(log.contains(&path.display().to_string()));
    assert!(
        !log.contains(&app.metrics_token()),
        "the token is never printed"
    );
    for (name, token) in [
        ("none", None),
        ("wrong", Some("vlt_metrics_not-the-token-at-all-0000000000")),
        ("operator", Some(app.operator_token.as_str())),
    ] {
        let mut request = app.http.get(app.at("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{name}");
    }
    let r = app
        .http
        .get(app.at("/metrics"))
        .bearer_auth(app.metrics_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("vault_http_requests"));

    // A configured token file must be private.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("scrape-token");
    std::fs::write(
        &token_file,
        "vlt_metrics_configured-token-of-enough-length\n",
    )
    .unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let status = std::process::Command::new(vault_e2e::server_binary())
        .arg("--data-dir")
        .arg(dir.path().join("vault"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", vault_e2e::free_port()))
        .arg("--config")
        .arg(write_config(
            dir.path(),
            &format!("[metrics]\ntoken_file = {token_file:?}\n"),
        ))
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("chmod 600"));
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("vault.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn downloads_are_inert_attachments() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let html = b"<html><script>alert(1)</script></html>".to_vec();
    let r = app
        .upload(
            &key,
            "other",
            "text/html",
            html.clone(),
            &[("X-Vault-File-Name", "../eob \"march\";.html")],
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for range in [None, Some("bytes=6-13")] {
        let mut request = app
            .http
            .get(app.at(&format!("/v1/documents/{id}")))
            .bearer_auth(&key);
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        let r = request.send().await.unwrap();
        let h = r.headers().clone();
        assert_eq!(
            r.status(),
            if range.is_some() { 206 } else { 200 },
            "{range:?}"
        );
        assert_eq!(h["content-type"], "application/octet-stream");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["content-security-policy"], "default-src 'none'; sandbox");
        assert_eq!(
            h["content-disposition"],
            "attachment; filename=\"eob _march__.html\"; filename*=UTF-8''eob%20%22march%22%3B.html"
        );
        assert_eq!(h["etag"], format!("\"{id}\"").as_str());
        let body = r.bytes().await.unwrap();
        match range {
            None => assert_eq!(body.as_ref(), html.as_slice()),
            Some(_) => {
                assert_eq!(
                    h["content-range"],
                    format!("bytes 6-13/{}", html.len()).as_str()
                );
                assert_eq!(body.as_ref(), &html[6..14]);
            }
        }
    }
    // The stored type is kept for everything else, and shown in the metadata.
    let r = app
        .upload(&key, "scan", "application/pdf", b"%PDF-1.7".to_vec(), &[])
        .await;
    let pdf = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.get_as(&key, &format!("/v1/documents/{pdf}")).await;
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.headers()["content-disposition"], "attachment");
    let r = app
        .get_as(&key, &format!("/v1/documents/{id}/metadata"))
        .await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(
        r.json::<Value>().await.unwrap()["content_type"],
        "text/html"
    );
    let r = app.get_as(&key, "/v1/documents").await;
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn raw_path_values_never_reach_the_audit_log() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["reader"]).await;
    let r = app
        .operator(Method::DELETE, "/v1/admin/api-keys/DOE-JANE-1980")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "invalid_api_key_id"
    );
    let r = app.get_as(&key, "/v1/documents/DOE-JANE-1980").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .operator(
            Method::POST,
            "/v1/admin/tenants/acme/documents/DOE-JANE-1980/hold",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for tenant in ["system", "acme"] {
        let text = serde_json::to_string(&events(&app, tenant).await).unwrap();
        assert!(!text.contains("DOE"), "{tenant}: {text}");
    }
    let revoke = events(&app, "system")
        .await
        .into_iter()
        .find(|e| e["action"] == "apikey.revoke")
        .unwrap();
    assert_eq!(revoke["status"], 400);
}

#[tokio::test]
async fn the_operator_credential_rotates() {
    let app = TestApp::builder().start().await;
    let old = app.operator_token.clone();
    let out = app.cli(&["--json", "operator", "rotate"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = app.data_dir.join("operator-token");
    let new = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(new, old);
    assert!(
        !stdout.contains(&new) && !String::from_utf8_lossy(&out.stderr).contains(&new),
        "the new token is never printed"
    );
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["token_file"], token_file.display().to_string());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let with = |token: &str| {
        app.http
            .get(app.at("/v1/admin/tenants"))
            .bearer_auth(token)
            .send()
    };
    let r = with(&old).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "credential_revoked"
    );
    assert_eq!(with(&new).await.unwrap().status(), StatusCode::OK);
    // Audited in the system log, with ids only.
    let r = app
        .http
        .get(app.at("/v1/audit/events?tenant=system&limit=1000"))
        .bearer_auth(&new)
        .send()
        .await
        .unwrap();
    let events: Value = r.json().await.unwrap();
    let rotation = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "operator.rotate" && e["outcome"] != "intent")
        .unwrap()
        .clone();
    assert_eq!(rotation["outcome"], "allowed");
    assert_eq!(rotation["actor"], format!("operator:{}", key_id(&old)));
    assert!(rotation["detail"].as_str().unwrap().contains(key_id(&new)));
    // The new credential rotates in turn.
    let r = app
        .http
        .post(app.at("/v1/admin/operator/rotate"))
        .bearer_auth(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "the new one rotates too");
}

#[tokio::test]
async fn a_failing_audit_log_shows_in_readyz_and_spares_health_and_anonymous_answers() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["reader"]).await;
    assert_eq!(app.get_as(&key, "/v1/documents").await.status(), 200);
    let ready: Value = app
        .http
        .get(app.at("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["audit"], "ok");

    // Both logs' storage made unavailable.
    let mut moved = Vec::new();
    for tenant in ["acme", "system"] {
        let segments = app
            .data_dir
            .join(format!("objects/tenants/{tenant}/audit/segments"));
        let aside = app.data_dir.join(format!("{tenant}-segments-aside"));
        std::fs::create_dir_all(&segments).unwrap();
        std::fs::rename(&segments, &aside).unwrap();
        std::fs::write(&segments, b"not a directory").unwrap();
        moved.push((segments, aside));
    }
    let r = app.get_as(&key, "/v1/documents").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "audit_unavailable"
    );
    let r = app.http.get(app.at("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["checks"]["audit"], "failing");
    assert_eq!(ready["checks"]["storage"], "ok");
    assert_eq!(
        app.http
            .get(app.at("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for _ in 0..5 {
        let r = app.http.get(app.at("/v1/documents")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The sampled (failing) system-log write happens in the background.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("vault_audit_failing 1"), "{metrics}");
    assert!(
        metrics.contains("vault_audit_failures_total 1"),
        "{metrics}"
    );

    for (segments, aside) in moved {
        std::fs::remove_file(&segments).unwrap();
        std::fs::rename(&aside, &segments).unwrap();
    }
    assert_eq!(app.get_as(&key, "/v1/documents").await.status(), 200);
    let ready = app.http.get(app.at("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(app.metrics_text().await.contains("vault_audit_failing 0"));
}

#[tokio::test]
async fn shutdown_finishes_the_upload_in_flight_and_accepts_no_more() {
    let mut app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader"]).await;
    let (tx, body) = channel_body();
    let upload = tokio::spawn(
        app.http
            .post(app.at("/v1/documents"))
            .bearer_auth(&key)
            .header("X-Vault-Kind", "other")
            .body(body)
            .send(),
    );
    tx.send(Ok(vec![b'a'; 64 * 1024])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reqwest::Client::new()
            .get(app.at("/healthz"))
            .send()
            .await
            .is_err(),
        "the listener is closed"
    );
    tx.send(Ok(vec![b'b'; 64 * 1024])).await.unwrap();
    drop(tx);
    let r = upload.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.json::<Value>().await.unwrap()["size"], 128 * 1024);
    let status = app
        .wait_for_exit(Duration::from_secs(20))
        .expect("the server exits once the upload is answered");
    assert!(status.success(), "{status:?}");
}

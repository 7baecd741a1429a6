//! What auditing costs: upload and download throughput through the real router
//! with and without the audit middleware, in the same run, over one vault (fs
//! store, local keys) in a temporary directory. Requests go to the router
//! in-process (no sockets), so the HTTP stack's own cost is left out and the
//! audit's share is, if anything, overstated.
//!
//! `cargo bench -p vault-server --features unaudited-bench --bench audit [-- --quick]`

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures::StreamExt;
use serde_json::Value;
use tower::ServiceExt;
use vault_core::config::Config;

struct Run {
    uploads: usize,
    downloads: usize,
    concurrency: usize,
    body_bytes: usize,
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, bytes::Bytes) {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("router is infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, body)
}

fn json_request(method: &str, uri: &str, token: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

async fn uploads(router: &Router, key: &str, run: &Run) -> (f64, Vec<String>) {
    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..run.uploads)
        .map(|i| {
            let mut body = format!("document {i} ").into_bytes();
            body.resize(run.body_bytes, b'x');
            let request = Request::builder()
                .method("POST")
                .uri("/v1/documents")
                .header("authorization", format!("Bearer {key}"))
                .header("x-vault-kind", "other")
                .header("content-type", "application/octet-stream")
                .body(Body::from(body))
                .expect("request");
            async move {
                let (status, body) = call(router, request).await;
                assert_eq!(status, StatusCode::CREATED);
                let v: Value = serde_json::from_slice(&body).expect("json");
                v["id"].as_str().expect("id").to_owned()
            }
        })
        .buffer_unordered(run.concurrency)
        .collect()
        .await;
    (run.uploads as f64 / started.elapsed().as_secs_f64(), ids)
}

async fn downloads(router: &Router, key: &str, ids: &[String], run: &Run) -> f64 {
    let started = Instant::now();
    futures::stream::iter(0..run.downloads)
        .map(|i| {
            let request = Request::builder()
                .uri(format!("/v1/documents/{}", ids[i % ids.len()]))
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .expect("request");
            async move {
                let (status, body) = call(router, request).await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body.len(), run.body_bytes);
            }
        })
        .buffer_unordered(run.concurrency)
        .collect::<Vec<()>>()
        .await;
    run.downloads as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let run = Run {
        uploads: if quick { 300 } else { 3000 },
        downloads: if quick { 600 } else { 6000 },
        concurrency: 16,
        body_bytes: 4096,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().join("vault"),
        // Measure auditing, not the per-key rate limit or the upload cap.
        limits: vault_core::config::LimitsConfig {
            requests_per_second: 0,
            max_concurrent_uploads: 1024,
            max_concurrent_uploads_per_tenant: 0,
            ..Default::default()
        },
        ..Config::default()
    };
    let built = vault_server::startup::build(config).await.expect("vault");
    let state = Arc::clone(&built.state);
    let token = std::fs::read_to_string(dir.path().join("vault/operator-token"))
        .expect("operator token")
        .trim()
        .to_owned();
    let audited = vault_server::routes::router(Arc::clone(&state));
    let unaudited = vault_server::routes::router_without_audit_for_benchmarks(Arc::clone(&state));

    let (status, _) = call(
        &audited,
        json_request(
            "POST",
            "/v1/admin/tenants",
            &token,
            serde_json::json!({"id": "bench"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, issued) = call(
        &audited,
        json_request(
            "POST",
            "/v1/admin/tenants/bench/api-keys",
            &token,
            serde_json::json!({"roles": ["uploader", "reader"]}),
        ),
    )
    .await;
    let key = serde_json::from_slice::<Value>(&issued).expect("json")["secret"]
        .as_str()
        .expect("secret")
        .to_owned();

    // Warm up both paths, then alternate so drift hits both alike.
    let warm = Run {
        uploads: 100,
        downloads: 100,
        ..run
    };
    let (_, warm_ids) = uploads(&audited, &key, &warm).await;
    downloads(&unaudited, &key, &warm_ids, &warm).await;
    let mut rates = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
    for order in [[0usize, 1], [1, 0]] {
        for which in order {
            let router = if which == 0 { &audited } else { &unaudited };
            let (up, ids) = uploads(router, &key, &run).await;
            let down = downloads(router, &key, &ids, &run).await;
            rates[which].0.push(up);
            rates[which].1.push(down);
        }
    }
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let (up_a, down_a) = (mean(&rates[0].0), mean(&rates[0].1));
    let (up_u, down_u) = (mean(&rates[1].0), mean(&rates[1].1));
    let segments = state.vault.metrics.audit_segments.get();
    let events = state.vault.metrics.audit_events.get();
    println!(
        "\n### Cost of auditing ({} B documents, concurrency {}, fs store, in-process router)\n",
        run.body_bytes, run.concurrency
    );
    println!("| path | with audit (req/s) | without audit (req/s) | with / without |");
    println!("|---|---|---|---|");
    println!(
        "| upload | {up_a:.0} | {up_u:.0} | {:.1} % |",
        100.0 * up_a / up_u
    );
    println!(
        "| download | {down_a:.0} | {down_u:.0} | {:.1} % |",
        100.0 * down_a / down_u
    );
    println!(
        "\nAudit events {events} in {segments} segments ({:.1} events per group commit).",
        events as f64 / segments.max(1) as f64
    );
}

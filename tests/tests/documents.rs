//! The document API end to end, on both storage backends: real sample documents,
//! a generated 200 MiB scan, ranges, idempotency, tenant isolation, roles,
//! revocation and expiry, bad input, tampering, no plaintext at rest, and a crash
//! mid-upload.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::path::PathBuf;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use vault_e2e::{aws_config, shared_data, Backend, TestApp};

const ALL_ROLES: &[&str] = &["uploader", "reader", "auditor", "tenant-admin"];

struct Sample {
    path: PathBuf,
    kind: &'static str,
    content_type: &'static str,
    /// Values that must never appear in stored bytes.
    secrets: &'static [&'static str],
}

fn samples() -> Vec<Sample> {
    let data = shared_data();
    vec![
        Sample {
            path: data.join("x12/pyx12/835_mult_loops.txt"),
            kind: "eob",
            content_type: "application/edi-x12",
            secrets: &["BACH", "2005555A", "4276512332"],
        },
        Sample {
            path: data.join("x12/imsweb-x12-parser/837_5010/x12_many_claims.txt"),
            kind: "claim",
            content_type: "application/edi-x12",
            secrets: &[],
        },
        Sample {
            path: data.join("x12/x12-types/005010_837.edi"),
            kind: "claim",
            content_type: "application/edi-x12",
            secrets: &[],
        },
        Sample {
            path: data.join("fhir/carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional2.json"),
            kind: "eob",
            content_type: "application/fhir+json",
            secrets: &["ExplanationOfBenefit"],
        },
        Sample {
            path: data.join("fhir/carin-bb-2.0.0/Patient-Patient1.json"),
            kind: "other",
            content_type: "application/fhir+json",
            secrets: &["Patient1"],
        },
    ]
}

async fn upload(
    app: &TestApp,
    key: &str,
    kind: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.http
        .post(app.at("/v1/documents"))
        .bearer_auth(key)
        .header("X-Vault-Kind", kind)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    app.http
        .get(app.at(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn code_of(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

/// Every stored byte of the vault: files of the fs store, or objects of the bucket.
async fn stored_bytes(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    match &app.bucket {
        None => {
            let mut stack = vec![app.data_dir.clone()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
                    }
                }
            }
        }
        Some(bucket) => {
            let s3 = aws_sdk_s3::Client::new(&aws_config().await);
            let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
            while let Some(page) = pages.next().await {
                for object in page.unwrap().contents() {
                    let key = object.key().unwrap().to_owned();
                    let body = s3
                        .get_object()
                        .bucket(bucket)
                        .key(&key)
                        .send()
                        .await
                        .unwrap()
                        .body
                        .collect()
                        .await
                        .unwrap();
                    out.push((key, body.into_bytes().to_vec()));
                }
            }
        }
    }
    out
}

/// S3 runs go with the aws-kms provider (production); fs runs with the local one.
async fn start(backend: Backend) -> TestApp {
    let builder = TestApp::builder().backend(backend);
    let app = match backend {
        Backend::S3 => builder.aws_kms().start().await,
        Backend::Fs => builder.start().await,
    };
    app.create_tenant_with(
        "acme",
        if backend == Backend::S3 {
            "aws-kms"
        } else {
            "local"
        },
    )
    .await;
    app
}

async fn round_trip_real_samples(backend: Backend) {
    let app = start(backend).await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let mut ids = Vec::new();
    for sample in samples() {
        let bytes = std::fs::read(&sample.path).unwrap();
        let r = upload(&app, &key, sample.kind, sample.content_type, bytes.clone()).await;
        assert_eq!(r.status(), 201, "{}", sample.path.display());
        let created: Value = r.json().await.unwrap();
        assert_eq!(created["size"], bytes.len());
        assert_eq!(created["sha256"], hex::encode(Sha256::digest(&bytes)));
        assert_eq!(created["kind"], sample.kind);
        let id = created["id"].as_str().unwrap().to_owned();
        let r = get(&app, &key, &format!("/v1/documents/{id}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], sample.content_type);
        assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
        let meta: Value = get(&app, &key, &format!("/v1/documents/{id}/metadata"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(meta["size"], bytes.len());
        assert_eq!(meta["kind"], sample.kind);
        // Ranges: first bytes, a middle slice, the tail.
        for (range, expected) in [
            ("bytes=0-9", &bytes[0..10]),
            ("bytes=100-399", &bytes[100..400]),
            ("bytes=-25", &bytes[bytes.len() - 25..]),
        ] {
            let r = app
                .http
                .get(app.at(&format!("/v1/documents/{id}")))
                .bearer_auth(&key)
                .header("Range", range)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 206, "{range}");
            assert_eq!(r.bytes().await.unwrap().to_vec(), expected, "{range}");
        }
        ids.push(id);
    }
    let listed: Value = get(&app, &key, "/v1/documents?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["documents"].as_array().unwrap().len(), 2);
    let cursor = listed["next_cursor"].as_str().unwrap();
    let rest: Value = get(
        &app,
        &key,
        &format!("/v1/documents?limit=10&cursor={cursor}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rest["documents"].as_array().unwrap().len(), ids.len() - 2);
    assert!(rest["next_cursor"].is_null());
    let eobs: Value = get(&app, &key, "/v1/documents?kind=eob")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(eobs["documents"].as_array().unwrap().len(), 2);

    // No plaintext at rest: not in object names, not in object contents.
    let stored = stored_bytes(&app).await;
    for sample in samples() {
        for secret in sample.secrets {
            for (name, bytes) in &stored {
                assert!(!name.contains(secret), "{secret} in object name {name}");
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} stored in plaintext in {name}"
                );
            }
        }
    }

    // Delete: gone for good, and listed no more.
    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{}", ids[0])))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        get(&app, &key, &format!("/v1/documents/{}", ids[0]))
            .await
            .status(),
        404
    );
    let after: Value = get(&app, &key, "/v1/documents").await.json().await.unwrap();
    assert_eq!(after["documents"].as_array().unwrap().len(), ids.len() - 1);
}

#[tokio::test]
async fn an_empty_body_is_refused_and_nothing_is_kept() {
    let app = start(Backend::Fs).await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let empty = upload(&app, &key, "scan", "application/pdf", Vec::new()).await;
    assert_eq!(
        code_of(empty).await,
        (StatusCode::BAD_REQUEST, "empty_body".to_owned())
    );
    // Sent chunked, without a Content-Length, it is known empty only at its end.
    let chunked = app
        .http
        .post(app.at("/v1/documents"))
        .bearer_auth(&key)
        .header("X-Vault-Kind", "scan")
        .body(reqwest::Body::wrap_stream(futures::stream::empty::<
            Result<Vec<u8>, std::io::Error>,
        >()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(chunked).await,
        (StatusCode::BAD_REQUEST, "empty_body".to_owned())
    );
    let listed: Value = get(&app, &key, "/v1/documents").await.json().await.unwrap();
    assert_eq!(listed["documents"], serde_json::json!([]));
    let kept: Vec<String> = stored_bytes(&app)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.contains("/docs/"))
        .collect();
    assert!(kept.is_empty(), "objects of a refused upload: {kept:?}");
}

#[tokio::test]
async fn real_samples_round_trip_on_fs() {
    round_trip_real_samples(Backend::Fs).await;
}

#[tokio::test]
async fn real_samples_round_trip_on_s3_with_kms() {
    round_trip_real_samples(Backend::S3).await;
}

/// Deterministic pseudo-random bytes (xorshift), generated in chunks.
fn scan_chunk(seed: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn large_scan(backend: Backend, size: usize) {
    let app = start(backend).await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let chunk = 1 << 20;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut hasher = Sha256::new();
    let chunks: Vec<Vec<u8>> = (0..size / chunk)
        .map(|_| scan_chunk(&mut seed, chunk))
        .collect();
    for c in &chunks {
        hasher.update(c);
    }
    let expected = hex::encode(hasher.finalize());
    let body = reqwest::Body::wrap_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::io::Error>),
    ));
    let r = app
        .http
        .post(app.at("/v1/documents"))
        .bearer_auth(&key)
        .header("X-Vault-Kind", "scan")
        .header("Content-Type", "image/tiff")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["sha256"], expected);
    let id = created["id"].as_str().unwrap();

    let mut stream = get(&app, &key, &format!("/v1/documents/{id}"))
        .await
        .bytes_stream();
    let mut hasher = Sha256::new();
    let mut total = 0;
    while let Some(part) = stream.next().await {
        let part = part.unwrap();
        total += part.len();
        hasher.update(&part);
    }
    assert_eq!(total, size);
    assert_eq!(hex::encode(hasher.finalize()), expected);

    // A range deep inside the scan, across a segment boundary.
    let start = size / 2 - 100;
    let r = app
        .http
        .get(app.at(&format!("/v1/documents/{id}")))
        .bearer_auth(&key)
        .header("Range", format!("bytes={start}-{}", start + 199))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes {start}-{}/{size}", start + 199)
    );
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut regenerated = Vec::new();
    for _ in 0..=(start + 200) / chunk {
        regenerated.extend(scan_chunk(&mut seed, chunk));
    }
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        regenerated[start..start + 200]
    );
}

#[tokio::test]
async fn a_200_mib_scan_streams_through_on_fs() {
    large_scan(Backend::Fs, 200 << 20).await;
}

#[tokio::test]
async fn a_200_mib_scan_streams_through_on_s3() {
    large_scan(Backend::S3, 200 << 20).await;
}

async fn idempotent_retry(backend: Backend) {
    let app = start(backend).await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let send = || {
        app.http
            .post(app.at("/v1/documents"))
            .bearer_auth(&key)
            .header("X-Vault-Kind", "claim")
            .header("Idempotency-Key", "claim-batch-17/retry")
            .body("claim batch 17, retried")
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let listed: Value = get(&app, &key, "/v1/documents").await.json().await.unwrap();
    assert_eq!(listed["documents"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_refused_without_revealing_the_first() {
    let app = start(Backend::Fs).await;
    let admin = app.api_key("acme", ALL_ROLES).await;
    let uploader = app.api_key("acme", &["uploader"]).await;
    let fields = r#"{"patient_name": "Doe, Jane", "claim_id": "CLM-1"}"#;
    let send_with = |key: &str, body: &'static str, kind: &str, fields: Option<&str>| {
        let mut request = app
            .http
            .post(app.at("/v1/documents"))
            .bearer_auth(key)
            .header("X-Vault-Kind", kind)
            .header("Idempotency-Key", "remit-2024-03-01");
        if let Some(fields) = fields {
            request = request.header("X-Vault-Fields", fields);
        }
        request.body(body).send()
    };
    let send = |key: &str, body: &'static str, kind: &str| send_with(key, body, kind, Some(fields));
    let first = send(&admin, "the first remittance", "eob").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // Another body, or the same body declared differently: 422, and nothing of the
    // first document (id, size, hash, fields) in the answer.
    for (body, kind) in [
        ("another remittance", "eob"),
        ("the first remittance", "claim"),
    ] {
        let reused = send(&uploader, body, kind).await.unwrap();
        assert_eq!(reused.status(), 422, "{body} as {kind}");
        let text = reused.text().await.unwrap();
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["code"], "idempotency_key_mismatch");
        for secret in ["id", "sha256"] {
            assert!(!text.contains(first[secret].as_str().unwrap()), "{text}");
        }
    }
    // Fewer (or other) fields than the first request's are another request too: a
    // replay must not confirm which field values a document holds.
    for other in [None, Some(r#"{"patient_name": "Doe, Jane"}"#)] {
        let reused = send_with(&uploader, "the first remittance", "eob", other)
            .await
            .unwrap();
        assert_eq!(reused.status(), 422, "{other:?}");
    }
    // The same request is still a retry.
    let retried: Value = send(&uploader, "the first remittance", "eob")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried["id"], first["id"]);
    let listed: Value = get(&app, &admin, "/v1/documents")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["documents"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn idempotent_retries_store_once_on_fs() {
    idempotent_retry(Backend::Fs).await;
}

#[tokio::test]
async fn idempotent_retries_store_once_on_s3() {
    idempotent_retry(Backend::S3).await;
}

#[tokio::test]
async fn tenants_are_isolated_on_every_endpoint() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let acme = app.api_key("acme", ALL_ROLES).await;
    let globex = app.api_key("globex", ALL_ROLES).await;
    let created: Value = upload(&app, &acme, "eob", "text/plain", b"acme only".to_vec())
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let missing = "0123456789abcdef0123456789abcdef";
    for path in [
        format!("/v1/documents/{id}"),
        format!("/v1/documents/{id}/metadata"),
    ] {
        let theirs = code_of(get(&app, &globex, &path).await).await;
        let nobody = code_of(get(&app, &globex, &path.replace(id, missing)).await).await;
        // The same answer as for a document that does not exist.
        assert_eq!(
            theirs,
            (StatusCode::NOT_FOUND, "document_not_found".into()),
            "{path}"
        );
        assert_eq!(theirs, nobody);
    }
    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{id}")))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let listed: Value = get(&app, &globex, "/v1/documents")
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["documents"].as_array().unwrap().is_empty());
    assert_eq!(
        get(&app, &acme, &format!("/v1/documents/{id}"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn roles_revocation_and_expiry_are_enforced() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let uploader = app.api_key("acme", &["uploader"]).await;
    let reader = app.api_key("acme", &["reader"]).await;
    let created: Value = upload(
        &app,
        &uploader,
        "claim",
        "text/plain",
        b"x document".to_vec(),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        code_of(get(&app, &uploader, &format!("/v1/documents/{id}")).await).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    assert_eq!(
        code_of(upload(&app, &reader, "claim", "text/plain", b"x".to_vec()).await)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{id}")))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        get(&app, &reader, &format!("/v1/documents/{id}"))
            .await
            .status(),
        200
    );

    // Revoked.
    let key_id = reader.split('_').nth(2).unwrap();
    assert_eq!(
        app.operator(Method::DELETE, &format!("/v1/admin/api-keys/{key_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        code_of(get(&app, &reader, &format!("/v1/documents/{id}")).await).await,
        (StatusCode::UNAUTHORIZED, "credential_revoked".into())
    );

    // Expired: move the stored expiry into the past, as time would.
    let expiring = app.api_key("acme", &["reader"]).await;
    let record_path = app
        .data_dir
        .join("objects/system/api-keys")
        .join(expiring.split('_').nth(2).unwrap());
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["expires_at"] = Value::String("2020-01-01T00:00:00Z".into());
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    assert_eq!(
        code_of(get(&app, &expiring, &format!("/v1/documents/{id}")).await).await,
        (StatusCode::UNAUTHORIZED, "credential_expired".into())
    );

    // No credential, a malformed one, a forged one.
    assert_eq!(
        app.http
            .get(app.at("/v1/documents"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get(&app, "not-a-token", "/v1/documents").await.status(),
        401
    );
    let forged = format!("{}A", &uploader[..uploader.len() - 1]);
    let forged = if forged == uploader {
        format!("{}B", &uploader[..uploader.len() - 1])
    } else {
        forged
    };
    assert_eq!(get(&app, &forged, "/v1/documents").await.status(), 401);
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_errors() {
    let app = TestApp::builder()
        .config("max_upload_bytes = 1000")
        .start()
        .await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ALL_ROLES).await;
    assert_eq!(
        code_of(upload(&app, &key, "eob", "text/plain", vec![b'x'; 2000]).await).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    // Without Content-Length (chunked), the limit holds while streaming.
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 400])),
    ));
    let r = app
        .http
        .post(app.at("/v1/documents"))
        .bearer_auth(&key)
        .header("X-Vault-Kind", "scan")
        .body(chunked)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(r).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    assert_eq!(
        code_of(upload(&app, &key, "invoice", "text/plain", b"x".to_vec()).await).await,
        (StatusCode::BAD_REQUEST, "invalid_kind".into())
    );
    let r = app
        .http
        .post(app.at("/v1/documents"))
        .bearer_auth(&key)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "missing_kind".into())
    );
    for fields in ["{not json", r#"{"ssn": "123"}"#, r#"["member_id"]"#] {
        let r = app
            .http
            .post(app.at("/v1/documents"))
            .bearer_auth(&key)
            .header("X-Vault-Kind", "scan")
            .header("X-Vault-Fields", fields)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(
            code_of(r).await,
            (StatusCode::BAD_REQUEST, "invalid_fields".into()),
            "{fields}"
        );
    }
    let r = app
        .http
        .get(app.at("/v1/documents?limit=0"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(r).await.0, StatusCode::BAD_REQUEST);
    let r = app
        .http
        .get(app.at("/v1/documents?cursor=zzz"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(r).await,
        (StatusCode::BAD_REQUEST, "invalid_cursor".into())
    );
    // Nothing was stored by any of these.
    let listed: Value = get(&app, &key, "/v1/documents").await.json().await.unwrap();
    assert!(listed["documents"].as_array().unwrap().is_empty());
    let created: Value = upload(&app, &key, "eob", "text/plain", b"0123456789".to_vec())
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .http
        .get(app.at(&format!(
            "/v1/documents/{}",
            created["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .header("Range", "bytes=50-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */10");
}

#[tokio::test]
async fn a_flipped_byte_at_rest_fails_the_download_never_returns_wrong_bytes() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let small: Value = upload(&app, &key, "eob", "text/plain", b"small document".to_vec())
        .await
        .json()
        .await
        .unwrap();
    let mut seed = 7u64;
    let big_bytes = scan_chunk(&mut seed, 300 * 1024);
    let big: Value = upload(&app, &key, "scan", "image/png", big_bytes.clone())
        .await
        .json()
        .await
        .unwrap();
    let body_path = |id: &Value| {
        app.data_dir.join(format!(
            "objects/tenants/acme/docs/{}/body",
            id.as_str().unwrap()
        ))
    };

    // First segment corrupt: a clean JSON integrity error.
    let path = body_path(&small["id"]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let r = get(
        &app,
        &key,
        &format!("/v1/documents/{}", small["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        code_of(r).await,
        (StatusCode::INTERNAL_SERVER_ERROR, "integrity_error".into())
    );

    // A later segment corrupt: the transfer breaks before the bad segment's bytes.
    let path = body_path(&big["id"]);
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = bytes.len() - 1000;
    bytes[offset] ^= 0x80;
    std::fs::write(&path, bytes).unwrap();
    let sent = app
        .http
        .get(app.at(&format!("/v1/documents/{}", big["id"].as_str().unwrap())))
        .bearer_auth(&key)
        .send()
        .await;
    // The connection is aborted: either before the headers or while the body flows.
    if let Ok(r) = sent {
        assert_eq!(r.status(), 200);
        match r.bytes().await {
            Err(_) => {}
            Ok(got) => panic!(
                "a corrupt document was served whole ({} bytes, equal to original: {})",
                got.len(),
                got.to_vec() == big_bytes
            ),
        }
    }
}

#[tokio::test]
async fn a_server_killed_mid_upload_restarts_with_nothing_visible() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let request = app
        .http
        .post(app.at("/v1/documents"))
        .bearer_auth(&key)
        .header("X-Vault-Kind", "scan")
        .body(body)
        .send();
    let pending = tokio::spawn(request);
    for _ in 0..8 {
        tx.send(Ok(vec![b'z'; 256 * 1024])).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut app = app;
    app.kill();
    drop(tx);
    let _ = pending.await;
    let app = app.restart().await;
    let listed: Value = get(&app, &key, "/v1/documents").await.json().await.unwrap();
    assert!(listed["documents"].as_array().unwrap().is_empty());
    let docs = app.data_dir.join("objects/tenants/acme/docs");
    let leftovers: Vec<_> = std::fs::read_dir(&docs)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "partial objects left: {leftovers:?}");
    assert_eq!(
        std::fs::read_dir(app.data_dir.join("objects/.tmp"))
            .unwrap()
            .count(),
        0
    );
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_thousand_uploads_cost_at_most_one_kms_call() {
    let app = start(Backend::S3).await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let before = app.metric("vault_key_provider_calls_total").await;
    let uploads = futures::stream::iter(0..1000).map(|i| {
        let (app, key) = (&app, &key);
        async move {
            upload(
                app,
                key,
                "claim",
                "application/octet-stream",
                format!("claim {i}").into_bytes(),
            )
            .await
            .status()
        }
    });
    let statuses: Vec<StatusCode> = uploads.buffer_unordered(8).collect().await;
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED));
    let calls = app.metric("vault_key_provider_calls_total").await - before;
    assert!(calls <= 1.0, "1,000 uploads made {calls} KMS calls");
}

/// On a bucket with versioning, deleting a document leaves no version and no
/// delete marker of any of its objects (not even of the key record a rewrap
/// replaced), only its tombstone; other documents are untouched.
#[tokio::test]
async fn a_delete_on_a_versioned_bucket_removes_every_version() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let app = TestApp::builder().backend(Backend::S3).start().await;
    let bucket = app.bucket.clone().unwrap();
    let s3 = aws_sdk_s3::Client::new(&aws_config().await);
    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let mut ids = Vec::new();
    for body in [&b"doomed scan"[..], &b"kept scan"[..]] {
        let created: Value = upload(&app, &key, "scan", "application/pdf", body.to_vec())
            .await
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let (doomed, kept) = (&ids[0], &ids[1]);
    // A second version of every key record.
    app.cli_json(&["--json", "key", "rotate", "acme"]);
    app.cli_json(&["--json", "key", "rewrap", "acme"]);
    let versions = |prefix: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            let listed = s3
                .list_object_versions()
                .bucket(&bucket)
                .prefix(prefix)
                .send()
                .await
                .unwrap();
            (listed.versions().len(), listed.delete_markers().len())
        }
    };
    let doc_prefix = |id: &str| format!("vault/tenants/acme/docs/{id}/");
    // body, key (twice), meta.
    assert_eq!(versions(doc_prefix(doomed)).await, (4, 0));

    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{doomed}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(versions(doc_prefix(doomed)).await, (0, 0));
    assert_eq!(
        versions(format!("vault/tenants/acme/tombstones/{doomed}")).await,
        (1, 0)
    );
    assert_eq!(versions(doc_prefix(kept)).await, (4, 0));
    assert_eq!(
        get(&app, &key, &format!("/v1/documents/{doomed}"))
            .await
            .status(),
        404
    );
    let r = get(&app, &key, &format!("/v1/documents/{kept}")).await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), b"kept scan".to_vec());
}

/// A delete interrupted after its tombstone was written (its objects still
/// there) never shows the document again: not by id, not listed, not found by
/// search, not holdable; index reconciliation and a repeated delete finish it.
#[tokio::test]
async fn an_interrupted_delete_never_shows_the_document_again() {
    let app = start(Backend::Fs).await;
    let key = app.api_key("acme", ALL_ROLES).await;
    let mut ids = Vec::new();
    for claim in ["CLM-T-1", "CLM-T-2"] {
        let fields = serde_json::json!({ "claim_id": claim }).to_string();
        let r = app
            .upload(
                &key,
                "scan",
                "application/pdf",
                format!("%PDF-1.4 {claim}").into_bytes(),
                &[("X-Vault-Fields", &fields)],
            )
            .await;
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let tenant_dir = app.data_dir.join("objects/tenants/acme");
    std::fs::create_dir_all(tenant_dir.join("tombstones")).unwrap();
    // As a delete that stopped right after writing its tombstone.
    for id in &ids {
        let tombstone = serde_json::json!({
            "format": 1, "document": id, "deleted_at": "2026-01-01T00:00:00Z"
        });
        std::fs::write(
            tenant_dir.join(format!("tombstones/{id}")),
            tombstone.to_string(),
        )
        .unwrap();
        assert!(tenant_dir.join(format!("docs/{id}/meta")).exists());
    }
    for id in &ids {
        for path in [
            format!("/v1/documents/{id}"),
            format!("/v1/documents/{id}/metadata"),
        ] {
            assert_eq!(
                code_of(get(&app, &key, &path).await).await,
                (StatusCode::NOT_FOUND, "document_not_found".into()),
                "{path}"
            );
        }
        let r = app
            .operator(
                Method::POST,
                &format!("/v1/admin/tenants/acme/documents/{id}/hold"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let listed: Value = get(&app, &key, "/v1/documents").await.json().await.unwrap();
    assert!(
        listed["documents"].as_array().unwrap().is_empty(),
        "{listed}"
    );
    for claim in ["CLM-T-1", "CLM-T-2"] {
        let found: Value = get(&app, &key, &format!("/v1/search?q=claim_id:{claim}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(found["total"], 0, "{found}");
    }
    let gone = |id: &str| {
        ["meta", "key", "body"]
            .iter()
            .all(|o| !tenant_dir.join(format!("docs/{id}/{o}")).exists())
            && tenant_dir.join(format!("tombstones/{id}")).exists()
    };
    // A repeated delete finishes the second (and answers 404: it was deleted)...
    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{}", ids[1])))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(gone(&ids[1]));
    assert!(!gone(&ids[0]));
    // ...and index reconciliation the first.
    app.cli_json(&["--json", "index", "rebuild", "--tenant", "acme"]);
    assert!(gone(&ids[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x12_in_utf16_is_searchable_and_kept_as_sent() {
    use vault_index::synth::x12::{remittance_835, X12Version};
    use vault_index::synth::SynthClaim;

    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let claims = SynthClaim::batch(1616, 1);
    let text = remittance_835(&claims, X12Version::V5010);
    // As Windows tools save it: little-endian with a byte-order mark.
    let mut body = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        body.extend_from_slice(&unit.to_le_bytes());
    }
    let r = app
        .upload(&key, "eob", "application/octet-stream", body.clone(), &[])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let stored: Value = r.json().await.unwrap();
    let id = stored["id"].as_str().unwrap();
    assert!(
        stored["indexed_fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "patient_name"),
        "{stored}"
    );
    let query = format!("member_id:{}", claims[0].member_id);
    let found: Value = app
        .get_as(&key, &format!("/v1/search?q={query}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1, "{found}");
    let back = app.get_as(&key, &format!("/v1/documents/{id}")).await;
    assert_eq!(back.bytes().await.unwrap().as_ref(), body.as_slice());
}

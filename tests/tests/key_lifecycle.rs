//! The key lifecycle end to end: rotation under concurrent uploads loses nothing;
//! rewrap touches key records only, keeps the audit log verifiable, and with the
//! old version retired every document still decrypts while an old-version record
//! is refused; index key rotation keeps search answers; retention and legal holds
//! refuse deletes; offboarding crypto-shreds the tenant.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use reqwest::Method;
use serde_json::{json, Value};
use vault_e2e::{Backend, TestApp};

fn body(i: usize, len: usize) -> Vec<u8> {
    let mut out = format!("%PDF-1.4 document {i}\n").into_bytes();
    out.extend((0..len).map(|b| (b * 31 + i * 7) as u8));
    out
}

async fn upload(app: &TestApp, key: &str, i: usize) -> (String, Vec<u8>) {
    let bytes = body(i, 50_000);
    let fields = json!({ "claim_id": format!("CLM{i:05}") }).to_string();
    let r = app
        .upload(
            key,
            "scan",
            "application/pdf",
            bytes.clone(),
            &[("X-Vault-Fields", &fields)],
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let v: Value = r.json().await.unwrap();
    (v["id"].as_str().unwrap().to_owned(), bytes)
}

async fn all_download(app: &TestApp, key: &str, docs: &[(String, Vec<u8>)]) {
    for (id, bytes) in docs {
        let r = app.get_as(key, &format!("/v1/documents/{id}")).await;
        assert_eq!(r.status(), 200, "document {id}");
        assert_eq!(&r.bytes().await.unwrap().to_vec(), bytes, "document {id}");
    }
}

async fn rotation_and_rewrap(backend: Backend, provider: &str) {
    let mut builder = TestApp::builder().backend(backend);
    if provider == "aws-kms" {
        builder = builder.aws_kms();
    }
    let app = builder.start().await;
    app.create_tenant_with("acme", provider).await;
    let key = app
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let mut docs = Vec::new();
    for i in 0..20 {
        docs.push(upload(&app, &key, i).await);
    }
    // Rotate while uploads run.
    let concurrent = {
        let app_url = app.url.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut out = Vec::new();
            for i in 20..50 {
                let bytes = body(i, 50_000);
                // An upload sealed under the keys the rotation replaced is refused
                // at its commit point (503 tenant_keys_rotated): a client retries.
                let mut tries = 0;
                let r = loop {
                    tries += 1;
                    let r = http
                        .post(format!("{app_url}/v1/documents"))
                        .bearer_auth(&key)
                        .header("X-Vault-Kind", "scan")
                        .header("Content-Type", "application/pdf")
                        .body(bytes.clone())
                        .send()
                        .await
                        .unwrap();
                    if r.status() != 503 || tries == 5 {
                        break r;
                    }
                    let v: Value = r.json().await.unwrap();
                    assert_eq!(v["code"], "tenant_keys_rotated", "{v}");
                };
                assert_eq!(r.status(), 201);
                let v: Value = r.json().await.unwrap();
                out.push((v["id"].as_str().unwrap().to_owned(), bytes));
            }
            out
        })
    };
    let rotated = app.cli_json(&["--json", "key", "rotate", "acme"]);
    assert_eq!(rotated["branch_version"], 2);
    docs.extend(concurrent.await.unwrap());
    all_download(&app, &key, &docs).await;

    let report = app.cli_json(&["--json", "key", "rewrap", "acme", "--retire-old"]);
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["branch_version"], 2);
    assert_eq!(report["min_decryption_version"], 2);
    let rewrapped = report["documents_rewrapped"].as_u64().unwrap();
    let current = report["already_current"].as_u64().unwrap();
    assert!(rewrapped >= 20, "{report}");
    assert!(
        report["audit_segments_rewrapped"].as_u64().unwrap() > 0,
        "{report}"
    );
    // Key records only: well under a kilobyte each way per record, never a body.
    let records = rewrapped + report["audit_segments_rewrapped"].as_u64().unwrap() + current;
    assert!(
        report["bytes_written"].as_u64().unwrap() < records * 4096,
        "{report}"
    );
    assert!(
        report["bytes_read"].as_u64().unwrap() < 50 * 50_000 / 10,
        "{report}"
    );
    // Idempotent: a second run finds everything current.
    let again = app.cli_json(&["--json", "key", "rewrap", "acme"]);
    assert_eq!(again["documents_rewrapped"], 0, "{again}");
    all_download(&app, &key, &docs).await;
    let tenant = app.cli_json(&["--json", "tenant", "show", "acme"]);
    assert_eq!(tenant["min_decryption_version"], 2);

    // The audit log, whose segments were re-wrapped too, still verifies offline.
    let checkpoint = app.cli_json(&["--json", "audit", "checkpoint", "--tenant", "acme"]);
    let public_key = checkpoint["public_key"].as_str().unwrap().to_owned();
    let store = app.store_arg();
    let verified = app.cli_json(&[
        "--json",
        "audit",
        "verify",
        "--store",
        &store,
        "--tenant",
        "acme",
        "--public-key",
        &public_key,
    ]);
    assert_eq!(
        verified["problems"].as_array().map_or(0, Vec::len),
        0,
        "{verified}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_uploads_then_rewrap_local_on_fs() {
    rotation_and_rewrap(Backend::Fs, "local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_uploads_then_rewrap_kms_on_s3() {
    rotation_and_rewrap(Backend::S3, "aws-kms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_key_version_is_refused() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let (id, _) = upload(&app, &key, 1).await;
    let record = app
        .data_dir
        .join(format!("objects/tenants/acme/docs/{id}/key"));
    let old_record = std::fs::read(&record).unwrap();
    app.cli_json(&["--json", "key", "rotate", "acme"]);
    app.cli_json(&["--json", "key", "rewrap", "acme", "--retire-old"]);
    assert_eq!(
        app.get_as(&key, &format!("/v1/documents/{id}"))
            .await
            .status(),
        200
    );
    // Put the version-1 record back: version 1 is retired, so it is refused.
    std::fs::write(&record, old_record).unwrap();
    let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
    assert!(
        r.status().is_server_error() || r.status().is_client_error(),
        "{}",
        r.status()
    );
    let text = r.text().await.unwrap();
    assert!(!text.contains("%PDF"), "no plaintext under a retired key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_key_rotation_keeps_search_answers() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(upload(&app, &key, i).await.0);
    }
    let search = |q: String| {
        let app = &app;
        let key = key.clone();
        async move {
            let r = app
                .http
                .get(app.at("/v1/search"))
                .query(&[("q", q)])
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let before = search("claim_id:CLM00003".into()).await;
    assert_eq!(before, vec![ids[3].clone()]);
    let rotated = app.cli_json(&["--json", "index", "rotate", "--tenant", "acme"]);
    assert_eq!(rotated["added"], 12, "{rotated}");
    assert_eq!(
        app.cli_json(&["--json", "tenant", "show", "acme"])["index_version"],
        2
    );
    assert_eq!(search("claim_id:CLM00003".into()).await, before);
    // New uploads are found under the new key too.
    let (late, _) = upload(&app, &key, 99).await;
    assert_eq!(search("claim_id:CLM00099".into()).await, vec![late]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_outgrows_its_plan_is_re_planned_and_searches_stay_exact() {
    let app = TestApp::builder()
        .config("[search]\ncommit_interval_ms = 50\n")
        .start()
        .await;
    let created: Value = app
        .operator(Method::POST, "/v1/admin/tenants")
        .json(&serde_json::json!({"id": "small", "expected_documents": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["planned_documents"], 3, "{created}");
    let bad = app
        .operator(Method::POST, "/v1/admin/tenants")
        .json(&serde_json::json!({"id": "huge", "expected_documents": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let key = app.api_key("small", &["uploader", "reader"]).await;
    // More than four times the plan: the index is re-planned (as an index key
    // rotation) for four times the count.
    let mut ids = Vec::new();
    for i in 0..16 {
        ids.push(upload(&app, &key, i).await.0);
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let replanned = loop {
        let record = app.cli_json(&["--json", "tenant", "show", "small"]);
        if record["index_version"].as_u64().unwrap() >= 2 {
            break record;
        }
        assert!(std::time::Instant::now() < deadline, "no re-plan: {record}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        replanned["planned_documents"].as_u64().unwrap() > 12,
        "{replanned}"
    );
    for (i, id) in ids.iter().enumerate() {
        let r = app
            .get_as(&key, &format!("/v1/search?q=claim_id:CLM{i:05}"))
            .await;
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["hits"][0]["id"], id.as_str(), "{v}");
        assert_eq!(v["total"], 1, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_legal_hold_refuse_deletes() {
    let app = TestApp::builder().start().await;
    // The default retention: six years.
    let created = app.cli_json(&["--json", "tenant", "create", "acme"]);
    assert_eq!(created["retention_days"], 2190);
    let key = app
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let (id, _) = upload(&app, &key, 1).await;
    let delete = |id: String| {
        let app = &app;
        let key = key.clone();
        async move {
            app.http
                .delete(app.at(&format!("/v1/documents/{id}")))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
        }
    };
    let r = delete(id.clone()).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "retention_period");
    app.cli_json(&["--json", "doc", "retention", "acme", "--days", "0"]);
    app.cli_json(&["--json", "doc", "hold", "acme", &id]);
    let r = delete(id.clone()).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "legal_hold");
    app.cli_json(&["--json", "doc", "release", "acme", &id]);
    assert_eq!(delete(id.clone()).await.status(), 204);
    // Holds and releases are audited.
    let events: Value = app
        .operator(Method::GET, "/v1/audit/events?tenant=acme&limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["document"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for action in ["document.hold", "document.release", "tenant.retention"] {
        assert!(
            actions.iter().any(|(a, _)| a == action),
            "{action} missing: {actions:?}"
        );
    }
    assert!(actions.contains(&("document.hold".into(), id.clone())));
    // A hold on an unknown document is a 404.
    let r = app
        .operator(
            Method::POST,
            "/v1/admin/tenants/acme/documents/00000000000000000000000000000000/hold",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_shreds_the_tenant_in_the_live_store() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    app.create_tenant("other").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let other_key = app.api_key("other", &["uploader", "reader"]).await;
    let (id, _) = upload(&app, &key, 1).await;
    let (other_id, other_bytes) = upload(&app, &other_key, 2).await;
    let (code, _) = {
        let out = app.cli(&["tenant", "offboard", "acme"]);
        (out.status.code(), out)
    };
    assert_eq!(code, Some(2), "offboarding needs --yes");
    let report = app.cli_json(&["--json", "tenant", "offboard", "acme", "--yes"]);
    assert_eq!(report["local_kek_destroyed"], true, "{report}");
    assert_eq!(report["api_keys_revoked"], 1);
    assert!(report["tenant_key_records_destroyed"].as_u64().unwrap() >= 2);
    assert_eq!(
        app.get_as(&key, &format!("/v1/documents/{id}"))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.cli_json(&["--json", "tenant", "show", "acme"])["status"],
        "offboarded"
    );
    // Its index (derived data, but keyed by its index key) is gone with it.
    let index_dirs = || {
        std::fs::read_dir(app.data_dir.join("index"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("acme"))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !index_dirs().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(index_dirs(), Vec::<String>::new());
    // Nothing left in the store or the keystore opens the document; the other
    // tenant is untouched, also after a restart (the keystore was rewritten).
    assert!(!app
        .data_dir
        .join("objects/tenants/acme/keys/branch")
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false));
    let app = app.restart().await;
    let r = app
        .get_as(&other_key, &format!("/v1/documents/{other_id}"))
        .await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), other_bytes);
    let r = app
        .operator(Method::POST, "/v1/admin/tenants/acme/keys/rotate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn key_objects_copied_back_after_an_offboarding_are_destroyed_at_start_up() {
    let mut app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    app.create_tenant("other").await;
    // The tenants' seal keys (in the key custody beside the root key file) and
    // KEK versions (in the store), as a file-level restore from before the
    // offboarding would bring them back.
    let data_dir = app.data_dir.clone();
    let key_objects = |tenant: &str| {
        vec![
            data_dir.join(format!("keys/custody/seals/{tenant}")),
            data_dir.join(format!("objects/tenants/{tenant}/kek/0000000001")),
        ]
    };
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = key_objects("acme")
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    app.cli_json(&["--json", "tenant", "offboard", "acme", "--yes"]);
    for (path, _) in &saved {
        assert!(
            !path.exists(),
            "{} outlived the offboarding",
            path.display()
        );
    }
    app.kill();
    for (path, bytes) in &saved {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let mut app = app.restart().await;
    app.kill();
    for path in key_objects("acme") {
        assert!(
            !path.exists(),
            "the offboarded tenant's key object {} came back",
            path.display()
        );
    }
    for path in key_objects("other") {
        assert!(path.exists(), "the other tenant keeps {}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_shreds_the_tenant_in_backups_taken_before() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let app = TestApp::builder()
        .config(&format!(
            "[backup]\ntarget = {:?}\n",
            repo.display().to_string()
        ))
        .start()
        .await;
    app.create_tenant("acme").await;
    app.create_tenant("other").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let other_key = app.api_key("other", &["uploader", "reader"]).await;
    for i in 0..4 {
        upload(&app, &key, i).await;
        upload(&app, &other_key, 10 + i).await;
    }
    app.cli_json(&["--json", "backup", "run"]);
    app.cli_json(&["--json", "tenant", "offboard", "acme", "--yes"]);
    // The snapshot from before the offboarding, with the live key custody.
    let root = app.data_dir.join("keys/root.key").display().to_string();
    let store = repo.display().to_string();
    let scratch = dir.path().join("drill").display().to_string();
    let out = app.cli(&[
        "--json",
        "drill",
        "--store",
        &store,
        "--root-key-file",
        &root,
        "--scratch",
        &scratch,
        "--samples",
        "4",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenants = report["tenants"].as_array().unwrap();
    let acme = tenants.iter().find(|t| t["tenant"] == "acme").unwrap();
    let other = tenants.iter().find(|t| t["tenant"] == "other").unwrap();
    assert_eq!(acme["documents_restored"], 4);
    assert_eq!(acme["samples_decrypted"], 0, "{report}");
    assert_eq!(other["samples_decrypted"], 4, "{report}");
    assert!(report["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m.as_str().unwrap().starts_with("tenant acme")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_stay_complete_during_an_index_key_rotation() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(upload(&app, &key, i).await.0);
    }
    let cli = vault_e2e::cli_binary();
    let (url, token) = (app.url.clone(), app.data_dir.join("operator-token"));
    let rotation = tokio::task::spawn_blocking(move || {
        std::process::Command::new(cli)
            .args([
                "--server", &url, "--json", "index", "rotate", "--tenant", "acme",
            ])
            .env("BILLVAULT_TOKEN_FILE", token)
            .output()
            .unwrap()
    });
    // While the new index is backfilled: uploads go on and searches find
    // everything, old and new.
    let mut late = Vec::new();
    for i in 0..10 {
        let (id, _) = upload(&app, &key, 500 + i).await;
        late.push(id);
        let q = format!("claim_id:CLM{:05}", i * 7);
        let r = app
            .http
            .get(app.at("/v1/search"))
            .query(&[("q", q.as_str())])
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["total"], 1, "{q} during the rotation: {v}");
        assert_eq!(v["hits"][0]["id"], ids[i * 7].as_str());
    }
    let out = rotation.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = app.cli_json(&["--json", "tenant", "show", "acme"]);
    assert_eq!(shown["index_version"], 2);
    // Documents uploaded during the backfill are in the new index.
    for (i, id) in late.iter().enumerate() {
        let q = format!("claim_id:CLM{:05}", 500 + i);
        let r = app
            .http
            .get(app.at("/v1/search"))
            .query(&[("q", q.as_str())])
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["hits"][0]["id"], id.as_str(), "{q}: {v}");
    }
    // Only the new version's index directory is left, once the last search or
    // commit holding the old index has let go of it.
    let index_dirs = || -> Vec<String> {
        std::fs::read_dir(app.data_dir.join("index"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("acme"))
            .collect()
    };
    // Generous: on a loaded machine (two cores, the whole suite running) the last
    // search or commit of the old index can take seconds to finish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while index_dirs() != ["acme-v2"] && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(index_dirs(), vec!["acme-v2".to_owned()]);
}

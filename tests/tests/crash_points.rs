//! Crashes at every crash point (`vault_core::failpoints`): the server, or the
//! CLI for a restore, dies at each step of an upload, a delete, a rewrap, a
//! backup and a restore, as a `SIGKILL` or a power cut would stop it. After a
//! restart every promise holds:
//! - nothing acknowledged is lost, and what was not acknowledged is either whole
//!   or absent (never half-written and visible);
//! - a retry with the same Idempotency-Key yields exactly one document;
//! - every change that happened is in the audit log (at least as an intent), and
//!   the log verifies offline;
//! - the crash's leftovers are collected (a short grace period here);
//! - an interrupted rewrap, backup or restore finishes when run again.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use vault_core::failpoints;
use vault_e2e::TestApp;

/// Leftovers collected 6 s after they were written (uploads here are bounded by
/// 5 s, so none in flight is touched).
const FAST_COLLECTION: &str = "[limits]\ntransfer_timeout_secs = 5\nleftovers_grace_secs = 6\n";
const ROLES: &[&str] = &["uploader", "reader", "tenant-admin"];

/// A server whose crash point `point` fires as `actions` says.
async fn armed(point: &str, actions: &str, extra_config: &str) -> TestApp {
    TestApp::builder()
        .config(FAST_COLLECTION)
        .config(extra_config)
        .env(failpoints::ENV, &format!("{point}={actions}"))
        .start()
        .await
}

/// Waits for the server to die at its crash point, then starts it again on the
/// same data directory without crash points.
async fn after_crash(mut app: TestApp) -> TestApp {
    let status = app
        .wait_for_exit(Duration::from_secs(30))
        .expect("the server did not crash at its crash point");
    assert!(!status.success(), "the server exited cleanly: {status}");
    app.restart_plain().await
}

async fn keyed_upload(
    app: &TestApp,
    key: &str,
    idempotency_key: &str,
    body: &[u8],
) -> Result<reqwest::Response, reqwest::Error> {
    app.http
        .post(app.at("/v1/documents"))
        .bearer_auth(key)
        .header("X-Vault-Kind", "scan")
        .header("Content-Type", "application/pdf")
        .header("Idempotency-Key", idempotency_key)
        .body(body.to_vec())
        .send()
        .await
}

async fn listed_ids(app: &TestApp, key: &str) -> Vec<String> {
    let r = app.get_as(key, "/v1/documents?limit=1000").await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    v["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn audit_events(app: &TestApp) -> Vec<Value> {
    let v = app
        .operator_get("/v1/audit/events?tenant=acme&limit=1000")
        .await;
    v["events"].as_array().unwrap().clone()
}

/// Whether the log holds an event (intent or outcome) of `action` on `document`.
fn audited(events: &[Value], action: &str, document: &str) -> bool {
    events
        .iter()
        .any(|e| e["action"] == action && e["document"].as_str() == Some(document))
}

/// A signed checkpoint of the tenant's log, saved as an auditor keeps one:
/// (its public key, the file).
async fn save_checkpoint(app: &TestApp) -> (String, tempfile::NamedTempFile) {
    let r = app
        .operator(Method::GET, "/v1/audit/checkpoint?tenant=acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let checkpoint: Value = r.json().await.unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), checkpoint["checkpoint"].as_str().unwrap()).unwrap();
    (checkpoint["public_key"].as_str().unwrap().to_owned(), file)
}

/// The offline verifier finds the tenant's log intact, and consistent with the
/// checkpoint saved before the crash (nothing written before it was lost).
fn log_verifies(app: &TestApp, saved: &(String, tempfile::NamedTempFile)) {
    let store = app.store_arg();
    let checkpoint = saved.1.path().display().to_string();
    let out = app.cli(&[
        "--json",
        "audit",
        "verify",
        "--store",
        &store,
        "--tenant",
        "acme",
        "--public-key",
        &saved.0,
        "--checkpoint",
        &checkpoint,
    ]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Document folders (fs store) holding objects but no facts object: what a
/// crash leaves and the collector must remove.
fn leftover_documents(data_dir: &Path) -> Vec<String> {
    let docs = data_dir.join("objects/tenants/acme/docs");
    let Ok(entries) = std::fs::read_dir(&docs) else {
        return Vec::new();
    };
    let mut leftovers = Vec::new();
    for entry in entries {
        let dir = entry.unwrap().path();
        let files: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !files.is_empty() && !files.iter().any(|f| f.starts_with("meta")) {
            leftovers.push(format!("{}: {files:?}", dir.display()));
        }
    }
    leftovers
}

/// Waits until the collector has removed every leftover (grace 6 s, passes at
/// least as often).
async fn leftovers_collected(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let left = leftover_documents(&app.data_dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "crash leftovers were not collected: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn upload_crash(point: &'static str) {
    let app = armed(point, "return", "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ROLES).await;
    let saved = save_checkpoint(&app).await;
    let body = format!("%PDF-1.7 crash at {point}").into_bytes();
    let first = keyed_upload(&app, &key, "claim-77", &body).await;
    assert!(
        first.is_err(),
        "{point}: the server answered instead of crashing: {:?}",
        first.map(|r| r.status())
    );
    let app = after_crash(app).await;
    if point != failpoints::UPLOAD_AFTER_FACTS {
        // What the crash left behind, which the collector must find.
        assert!(!leftover_documents(&app.data_dir).is_empty(), "{point}");
    }

    // Nothing half-written is visible: no document, or the whole one.
    let before_retry = listed_ids(&app, &key).await;
    assert!(before_retry.len() <= 1, "{point}: {before_retry:?}");
    for id in &before_retry {
        let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{point}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
        // Visible, so audited before it became visible: by the crashed request.
        assert!(
            audited(&audit_events(&app).await, "document.upload", id),
            "{point}: a document became visible without an upload event"
        );
    }

    // The client's retry: one document, the first one if it became visible.
    let retry = keyed_upload(&app, &key, "claim-77", &body).await.unwrap();
    let status = retry.status();
    let answer: Value = retry.json().await.unwrap();
    assert!(status.is_success(), "{point}: retry {status}: {answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    if let Some(first) = before_retry.first() {
        assert_eq!(&id, first, "{point}: the retry made a second document");
    }
    assert_eq!(listed_ids(&app, &key).await, vec![id.clone()], "{point}");
    let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());

    log_verifies(&app, &saved);
    leftovers_collected(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_body_is_stored() {
    upload_crash(failpoints::UPLOAD_AFTER_BODY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_key_record_is_stored() {
    upload_crash(failpoints::UPLOAD_AFTER_KEY_RECORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_audit_intent() {
    upload_crash(failpoints::UPLOAD_AFTER_INTENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_audit_intent_and_the_claim() {
    upload_crash(failpoints::UPLOAD_AFTER_GATE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_document_became_visible() {
    upload_crash(failpoints::UPLOAD_AFTER_FACTS).await;
}

/// Concurrent uploads share the sync of their bodies and key records (group
/// commit). The server dies as a batch's sync starts, after four uploads were
/// acknowledged one by one: those four are whole; of the batch, each document is
/// whole or absent, audited if visible; every retry yields one document per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_concurrent_uploads_share_a_sync() {
    let app = armed(failpoints::STORE_BEFORE_GROUP_SYNC, "4*off->return", "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ROLES).await;
    let saved = save_checkpoint(&app).await;
    let body = |n: usize| format!("%PDF-1.7 upload {n} of a batch").into_bytes();
    let mut acknowledged = Vec::new();
    for n in 0..4 {
        let r = keyed_upload(&app, &key, &format!("batch-{n}"), &body(n))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        acknowledged.push((n, v["id"].as_str().unwrap().to_owned()));
    }
    let batch = futures::future::join_all((4..16).map(|n| {
        let (app, key, body) = (&app, &key, body(n));
        async move {
            (
                n,
                keyed_upload(app, key, &format!("batch-{n}"), &body).await,
            )
        }
    }))
    .await;
    let mut crashed = 0;
    for (n, answer) in batch {
        match answer {
            Ok(r) if r.status() == StatusCode::CREATED => {
                let v: Value = r.json().await.unwrap();
                acknowledged.push((n, v["id"].as_str().unwrap().to_owned()));
            }
            _ => crashed += 1,
        }
    }
    assert!(crashed > 0, "the server did not crash during the batch");
    let app = after_crash(app).await;

    // Nothing acknowledged is lost.
    for (n, id) in &acknowledged {
        let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
        assert_eq!(r.status(), StatusCode::OK, "acknowledged upload {n} lost");
        assert_eq!(r.bytes().await.unwrap().as_ref(), body(*n).as_slice());
    }
    // Whatever is visible is whole and was audited.
    let events = audit_events(&app).await;
    let visible = listed_ids(&app, &key).await;
    for id in &visible {
        let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let bytes = r.bytes().await.unwrap();
        assert!(
            (0..16).any(|n| bytes.as_ref() == body(n).as_slice()),
            "a visible document is not one of the uploads"
        );
        assert!(audited(&events, "document.upload", id), "{id} unaudited");
    }
    // The clients' retries: one document per key, the acknowledged ones kept.
    let mut ids = Vec::new();
    for n in 0..16 {
        let r = keyed_upload(&app, &key, &format!("batch-{n}"), &body(n))
            .await
            .unwrap();
        assert!(r.status().is_success(), "retry {n}: {}", r.status());
        let v: Value = r.json().await.unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        if let Some((_, first)) = acknowledged.iter().find(|(m, _)| *m == n) {
            assert_eq!(&id, first, "the retry of {n} made a second document");
        }
        ids.push(id);
    }
    let mut listed = listed_ids(&app, &key).await;
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    log_verifies(&app, &saved);
    leftovers_collected(&app).await;
}

async fn delete_crash(point: &'static str) {
    let app = armed(point, "return", "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ROLES).await;
    let kept = b"%PDF-1.7 kept".to_vec();
    let doomed = b"%PDF-1.7 deleted".to_vec();
    let mut ids = Vec::new();
    for (n, body) in [&kept, &doomed].into_iter().enumerate() {
        let r = keyed_upload(&app, &key, &format!("doc-{n}"), body)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let (kept_id, doomed_id) = (ids[0].clone(), ids[1].clone());
    let saved = save_checkpoint(&app).await;
    let first = app
        .http
        .delete(app.at(&format!("/v1/documents/{doomed_id}")))
        .bearer_auth(&key)
        .send()
        .await;
    assert!(first.is_err(), "{point}: the server answered");
    let app = after_crash(app).await;

    // The crashed request's intent is in the log before anything was removed.
    assert!(
        audited(&audit_events(&app).await, "document.delete", &doomed_id),
        "{point}: the delete is not in the log"
    );
    // Whole or gone: visible with its bytes, or not found.
    let path = format!("/v1/documents/{doomed_id}");
    let r = app.get_as(&key, &path).await;
    match r.status() {
        StatusCode::OK => assert_eq!(r.bytes().await.unwrap().as_ref(), doomed.as_slice()),
        StatusCode::NOT_FOUND => {
            // What the interrupted delete left (key record, body) is collected
            // without any retry.
            leftovers_collected(&app).await;
        }
        other => panic!("{point}: {other}"),
    }
    // The client's retry finishes it.
    let retry = app
        .http
        .delete(app.at(&path))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(
        [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND].contains(&retry.status()),
        "{point}: {}",
        retry.status()
    );
    assert_eq!(
        app.get_as(&key, &path).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(listed_ids(&app, &key).await, vec![kept_id.clone()]);
    let r = app.get_as(&key, &format!("/v1/documents/{kept_id}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), kept.as_slice());

    log_verifies(&app, &saved);
    leftovers_collected(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_delete_intent() {
    delete_crash(failpoints::DELETE_AFTER_INTENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_tombstone() {
    delete_crash(failpoints::DELETE_AFTER_TOMBSTONE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_facts_are_removed() {
    delete_crash(failpoints::DELETE_AFTER_FACTS_REMOVED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_every_object_is_removed() {
    delete_crash(failpoints::DELETE_AFTER_OBJECTS_REMOVED).await;
}

/// Uploads `n` documents; their ids and bodies.
async fn corpus(app: &TestApp, key: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut docs = Vec::new();
    for i in 0..n {
        let body = format!("%PDF-1.7 document {i} {}", "x".repeat(i * 100)).into_bytes();
        let r = keyed_upload(app, key, &format!("corpus-{i}"), &body)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        docs.push((v["id"].as_str().unwrap().to_owned(), body));
    }
    docs
}

async fn all_read_back(app: &TestApp, key: &str, docs: &[(String, Vec<u8>)]) {
    for (id, body) in docs {
        let r = app.get_as(key, &format!("/v1/documents/{id}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{id}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice(), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_interrupted_by_a_crash_finishes_when_run_again() {
    // The third key record replaced brings the server down.
    let app = armed(failpoints::REWRAP_AFTER_RECORD, "2*off->return", "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ROLES).await;
    let docs = corpus(&app, &key, 24).await;
    let saved = save_checkpoint(&app).await;
    app.cli_json(&["--json", "key", "rotate", "acme"]);
    let (code, _) = app.cli_exit(&["--json", "key", "rewrap", "acme", "--retire-old"]);
    assert_ne!(code, 0, "the rewrap survived its crash point");
    let app = after_crash(app).await;
    // Half re-wrapped: every document still opens.
    all_read_back(&app, &key, &docs).await;
    // Run again at once (the crashed run's lease is known dead), it finishes.
    // (How many records the first run replaced depends on how many were in
    // flight when it died: they are re-wrapped concurrently.)
    let report = app.cli_json(&["--json", "key", "rewrap", "acme", "--retire-old"]);
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["min_decryption_version"], 2, "{report}");
    let again = app.cli_json(&["--json", "key", "rewrap", "acme"]);
    assert_eq!(again["documents_rewrapped"], 0, "{again}");
    all_read_back(&app, &key, &docs).await;
    log_verifies(&app, &saved);
}

fn backup_config(repo: &Path) -> String {
    format!("[backup]\ntarget = {:?}\n", repo.display().to_string())
}

async fn backup_finished(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = app.operator_get("/v1/admin/backups").await;
        if status["status"]["running"].is_null() && status["status"]["last"].is_object() {
            return status;
        }
        assert!(Instant::now() < deadline, "the backup did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn backup_verifies(app: &TestApp, repo: &Path) -> Value {
    let repo = repo.display().to_string();
    let verified = app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &repo,
        "--read-data",
    ]);
    assert_eq!(
        verified["problems"].as_array().unwrap().len(),
        0,
        "{verified}"
    );
    verified
}

async fn backup_crash(point: &'static str, actions: &str) {
    let repo = tempfile::tempdir().unwrap();
    let repo_dir = repo.path().join("repo");
    let app = armed(point, actions, &backup_config(&repo_dir)).await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ROLES).await;
    let docs = corpus(&app, &key, 6).await;
    let r = app
        .operator(Method::POST, "/v1/admin/backups")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let app = after_crash(app).await;
    // A snapshot whose manifest was not written does not exist; one whose
    // manifest was is whole.
    let listed = app.cli_json(&["--json", "backup", "list"]);
    let before = listed["snapshots"].as_array().unwrap().len();
    if point == failpoints::BACKUP_AFTER_DATA {
        assert_eq!(before, 0, "{listed}");
    } else {
        assert_eq!(before, 1, "{listed}");
        backup_verifies(&app, &repo_dir);
    }
    // Run again (the crashed run's repository lock is known dead): it completes.
    let r = app
        .operator(Method::POST, "/v1/admin/backups")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let status = backup_finished(&app).await;
    assert_eq!(status["status"]["last"]["ok"], true, "{status}");
    let listed = app.cli_json(&["--json", "backup", "list"]);
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), before + 1);
    backup_verifies(&app, &repo_dir);
    all_read_back(&app, &key, &docs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_interrupted_while_copying_completes_when_run_again() {
    // Hit once per pack or large object written: the vault's one pack.
    backup_crash(failpoints::BACKUP_AFTER_DATA, "return").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_backup_manifest() {
    backup_crash(failpoints::BACKUP_AFTER_MANIFEST, "return").await;
}

/// A prune killed while repacking (after the new packs, or after the
/// relocation records) leaves a repository that verifies with its data, and
/// the next prune completes and leaves it verifying.
async fn prune_crash(point: &'static str) {
    let repo = tempfile::tempdir().unwrap();
    let repo_dir = repo.path().join("repo");
    let config = format!(
        "{}[backup.retention]\nkeep_last = 1\n",
        backup_config(&repo_dir)
    );
    let app = armed(point, "return", &config).await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ROLES).await;
    // Documents large enough that they, not the audit log, fill the pack.
    let mut docs = Vec::new();
    for i in 0..12u8 {
        let body: Vec<u8> = (0..60_000u32)
            .map(|b| (b as u8) ^ i.wrapping_mul(37))
            .collect();
        let r = keyed_upload(&app, &key, &format!("big-{i}"), &body)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        docs.push((v["id"].as_str().unwrap().to_owned(), body));
    }
    let run_backup = |app: &TestApp| {
        let r = app.operator(Method::POST, "/v1/admin/backups");
        async move {
            assert_eq!(r.send().await.unwrap().status(), StatusCode::ACCEPTED);
        }
    };
    run_backup(&app).await;
    backup_finished(&app).await;
    // Most documents go: the first snapshot's pack is then mostly unnamed.
    for (id, _) in &docs[..10] {
        let r = app
            .http
            .delete(app.at(&format!("/v1/documents/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run_backup(&app).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.cli_json(&["--json", "backup", "list"])["snapshots"]
        .as_array()
        .unwrap()
        .len()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the second backup did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    backup_finished(&app).await;
    // The prune dies at its crash point.
    let _ = app
        .operator(Method::POST, "/v1/admin/backups/prune")
        .send()
        .await;
    let app = after_crash(app).await;
    backup_verifies(&app, &repo_dir);
    let pruned = app.cli_json(&["--json", "backup", "prune"]);
    assert!(pruned["removed"].as_array().unwrap().is_empty(), "{pruned}");
    if point == failpoints::PRUNE_AFTER_REPACKED_PACKS {
        // No record was written: the pack is repacked anew, and the first
        // try's packs are deleted as named by nothing.
        assert_eq!(pruned["packs_repacked"], 1, "{pruned}");
    } else {
        // The records were durable: the old pack is named by nothing.
        assert_eq!(pruned["packs_repacked"], 0, "{pruned}");
        assert!(
            pruned["data_objects_deleted"].as_u64().unwrap() >= 1,
            "{pruned}"
        );
    }
    let verified = backup_verifies(&app, &repo_dir);
    assert_eq!(verified["snapshots"], 1, "{verified}");
    // And the kept snapshot restores whole.
    let to = repo.path().join("restored").display().to_string();
    let store = repo_dir.display().to_string();
    let restored = app.cli_json(&[
        "--json",
        "restore",
        "--store",
        &store,
        "--snapshot",
        "latest",
        "--to",
        &to,
    ]);
    assert_eq!(
        restored["mismatches"].as_array().unwrap().len(),
        0,
        "{restored}"
    );
    all_read_back(&app, &key, &docs[10..]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_killed_after_writing_repacked_packs() {
    prune_crash(failpoints::PRUNE_AFTER_REPACKED_PACKS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_killed_after_writing_relocation_records() {
    prune_crash(failpoints::PRUNE_AFTER_RELOCATIONS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_interrupted_by_a_crash_resumes() {
    let repo = tempfile::tempdir().unwrap();
    let repo_dir = repo.path().join("repo");
    let mut app = TestApp::builder()
        .config(&backup_config(&repo_dir))
        .start()
        .await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ROLES).await;
    let docs = corpus(&app, &key, 6).await;
    // Saved before the backup: the restored log must extend it.
    let saved = save_checkpoint(&app).await;
    let r = app
        .operator(Method::POST, "/v1/admin/backups")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    backup_finished(&app).await;
    let vault_key = app.cli_json(&["--json", "backup", "public-key"])["public_key"]
        .as_str()
        .unwrap()
        .to_owned();

    // The primary is lost; the restore dies after its fourth object.
    app.kill();
    for dir in ["objects", "index"] {
        let _ = std::fs::remove_dir_all(app.data_dir.join(dir));
    }
    let store = repo_dir.display().to_string();
    let to = app.data_dir.display().to_string();
    let args = [
        "--json",
        "restore",
        "--store",
        &store,
        "--snapshot",
        "latest",
        "--to",
        &to,
        "--public-key",
        &vault_key,
    ];
    let crash = format!("{}=3*off->return", failpoints::RESTORE_AFTER_OBJECT);
    let out = app.cli_with_env(&[(failpoints::ENV, crash.as_str())], &args);
    assert!(
        !out.status.success(),
        "the restore survived its crash point"
    );
    // Resumed: what is there is checked, the rest restored.
    let mut resume = args.to_vec();
    resume.push("--allow-non-empty");
    let restored = app.cli_json(&resume);
    assert_eq!(
        restored["mismatches"].as_array().unwrap().len(),
        0,
        "{restored}"
    );
    assert!(
        restored["already_present"].as_u64().unwrap() >= 1,
        "nothing was resumed: {restored}"
    );
    let app = app.restart_plain().await;
    all_read_back(&app, &key, &docs).await;
    log_verifies(&app, &saved);
}

//! Backups end to end, on both backends: back up, wipe the primary, restore,
//! and every document comes back byte-identical and every search answers as
//! before; the drill passes, and fails with exit 2 on a flipped byte, a missing
//! object, a forged manifest and another vault's manifest; a second backup after
//! a 1 % change copies about 1 % of the bytes; Object Lock on moto refuses
//! deletion; prune keeps what is referenced, held or locked; the schedule runs
//! and its status survives a restart. Repositories are of format v2 (packs,
//! manifest chunks); a checked-in v1 repository of a real vault restores,
//! verifies and takes v2 backups (on a directory and on a locked bucket).

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use vault_core::backup::manifest::{Entry, Location, ManifestV2, MAGIC_V2};
use vault_e2e::{aws_config, Backend, TestApp};
use vault_index::synth::{self, SynthClaim};

/// A backup repository under test, to look at and tamper with directly.
enum Repo {
    Fs(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Repo {
    fn store_arg(&self) -> String {
        match self {
            Repo::Fs(dir) => dir.display().to_string(),
            Repo::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    async fn new_s3(object_lock: bool) -> Repo {
        let s3 = aws_sdk_s3::Client::new(&aws_config().await);
        let bucket = format!(
            "vault-backup-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        s3.create_bucket()
            .bucket(&bucket)
            .object_lock_enabled_for_bucket(object_lock)
            .send()
            .await
            .expect("create backup bucket on moto");
        Repo::S3 {
            bucket,
            prefix: "backups".into(),
        }
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        match self {
            Repo::Fs(dir) => {
                let mut out = Vec::new();
                let mut stack = vec![dir.join(prefix)];
                while let Some(d) = stack.pop() {
                    let Ok(entries) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in entries {
                        let p = e.unwrap().path();
                        if p.is_dir() {
                            stack.push(p);
                        } else {
                            out.push(p.strip_prefix(dir).unwrap().display().to_string());
                        }
                    }
                }
                out.sort();
                out
            }
            Repo::S3 { bucket, prefix: p } => {
                let s3 = aws_sdk_s3::Client::new(&aws_config().await);
                let listed = s3
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(format!("{p}/{prefix}"))
                    .send()
                    .await
                    .unwrap();
                let mut out: Vec<String> = listed
                    .contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(|k| k.strip_prefix(&format!("{p}/")).unwrap().to_owned())
                    .collect();
                out.sort();
                out
            }
        }
    }

    async fn read(&self, key: &str) -> Vec<u8> {
        match self {
            Repo::Fs(dir) => std::fs::read(dir.join(key)).unwrap(),
            Repo::S3 { bucket, prefix } => {
                let s3 = aws_sdk_s3::Client::new(&aws_config().await);
                let out = s3
                    .get_object()
                    .bucket(bucket)
                    .key(format!("{prefix}/{key}"))
                    .send()
                    .await
                    .unwrap();
                out.body.collect().await.unwrap().into_bytes().to_vec()
            }
        }
    }

    /// Overwrites (tampering: the vault itself only ever creates).
    async fn write(&self, key: &str, bytes: Vec<u8>) {
        match self {
            Repo::Fs(dir) => {
                let path = dir.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Repo::S3 { bucket, prefix } => {
                let s3 = aws_sdk_s3::Client::new(&aws_config().await);
                s3.put_object()
                    .bucket(bucket)
                    .key(format!("{prefix}/{key}"))
                    .body(bytes.into())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn delete(&self, key: &str) {
        match self {
            Repo::Fs(dir) => std::fs::remove_file(dir.join(key)).unwrap(),
            Repo::S3 { bucket, prefix } => {
                let s3 = aws_sdk_s3::Client::new(&aws_config().await);
                s3.delete_object()
                    .bucket(bucket)
                    .key(format!("{prefix}/{key}"))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

fn backup_config(repo: &Repo, extra: &str) -> String {
    format!(
        "[backup]\ntarget = {:?}\nlock_days = 1\n{extra}\n",
        repo.store_arg()
    )
}

/// A document as uploaded.
struct Uploaded {
    id: String,
    body: Vec<u8>,
}

/// Uploads generated 835s, 837s and FHIR EOBs (extracted fields) and scans.
async fn upload_corpus(app: &TestApp, key: &str, seed: u64, count: usize) -> Vec<Uploaded> {
    let claims = SynthClaim::batch(seed, count);
    let mut out = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        let (kind, content_type, body) = match i % 4 {
            0 => (
                "eob",
                "application/edi-x12",
                synth::x12::remittance_835(
                    std::slice::from_ref(claim),
                    synth::x12::X12Version::V5010,
                )
                .into_bytes(),
            ),
            1 => (
                "claim",
                "application/edi-x12",
                synth::x12::claim_837(
                    std::slice::from_ref(claim),
                    synth::x12::ClaimVariant::Professional,
                    synth::x12::X12Version::V5010,
                )
                .into_bytes(),
            ),
            2 => (
                "eob",
                "application/fhir+json",
                synth::fhir::explanation_of_benefit(claim, synth::fhir::PatientLayout::Contained)
                    .into_bytes(),
            ),
            _ => {
                let mut scan = format!("%PDF-1.4 scan {seed} {i}\n").into_bytes();
                scan.extend(
                    (0..20_000u32).map(|b| (b.wrapping_mul(31).wrapping_add(i as u32)) as u8),
                );
                ("scan", "application/pdf", scan)
            }
        };
        let fields = serde_json::json!({ "claim_id": claim.claim_id }).to_string();
        let headers: Vec<(&str, &str)> = if kind == "scan" {
            vec![("X-Vault-Fields", fields.as_str())]
        } else {
            vec![]
        };
        let r = app
            .upload(key, kind, content_type, body.clone(), &headers)
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        let v: Value = r.json().await.unwrap();
        out.push(Uploaded {
            id: v["id"].as_str().unwrap().to_owned(),
            body,
        });
    }
    out
}

/// Search answers for the claim ids of a seed (ids in order).
async fn searches(
    app: &TestApp,
    key: &str,
    seed: u64,
    count: usize,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for claim in SynthClaim::batch(seed, count).iter().take(12) {
        let q = format!("claim_id:\"{}\"", claim.claim_id);
        let r = app
            .http
            .get(app.at("/v1/search"))
            .query(&[("q", q.as_str())])
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let v: Value = r.json().await.unwrap();
        let mut ids: Vec<String> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        assert!(!ids.is_empty(), "query {q} found nothing");
        out.insert(q, ids);
    }
    out
}

fn root_key(app: &TestApp) -> String {
    app.data_dir.join("keys/root.key").display().to_string()
}

fn drill_args<'a>(repo: &'a str, root_key: &'a str, scratch: &'a str) -> Vec<&'a str> {
    vec![
        "--json",
        "drill",
        "--store",
        repo,
        "--root-key-file",
        root_key,
        "--scratch",
        scratch,
        "--samples",
        "8",
    ]
}

async fn start(backend: Backend, repo: &Repo, extra: &str) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .config(&backup_config(repo, extra))
        .start()
        .await
}

/// A vault on the filesystem backing up to an S3 repository (`aws_kms` gives it
/// the AWS environment of moto).
async fn start_with_s3_repo(repo: &Repo, extra: &str) -> TestApp {
    TestApp::builder()
        .aws_kms()
        .config(&backup_config(repo, extra))
        .start()
        .await
}

/// Removes everything of the primary vault but the root key file (which the
/// operator keeps apart from the data) and the operator token file.
async fn wipe_primary(app: &mut TestApp) {
    app.kill();
    for dir in ["objects", "index"] {
        let _ = std::fs::remove_dir_all(app.data_dir.join(dir));
    }
    if let Some(bucket) = &app.bucket {
        let s3 = aws_sdk_s3::Client::new(&aws_config().await);
        loop {
            let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
            if listed.contents().is_empty() {
                break;
            }
            for o in listed.contents() {
                s3.delete_object()
                    .bucket(bucket)
                    .key(o.key().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

async fn round_trip(backend: Backend) {
    let repo = match backend {
        Backend::Fs => Repo::Fs(tempfile::tempdir().unwrap().keep().join("repo")),
        Backend::S3 => Repo::new_s3(true).await,
    };
    let mut builder = TestApp::builder()
        .backend(backend)
        .config(&backup_config(&repo, ""));
    // The key custody is kept apart from the data: on fs it is beside the root
    // key file by default; on S3 it gets a bucket of its own here.
    let custody = match backend {
        Backend::Fs => None,
        Backend::S3 => match Repo::new_s3(false).await {
            Repo::S3 { bucket, .. } => Some(format!("s3://{bucket}/custody")),
            Repo::Fs(_) => None,
        },
    };
    if let Some(custody) = &custody {
        builder = builder.aws_kms().custody(custody);
    }
    let mut app = builder.start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let docs = upload_corpus(&app, &key, 61, 24).await;
    // On S3, a second tenant's keys live in KMS (not in the backup).
    let kms_key = if backend == Backend::S3 {
        app.create_tenant_with("kmsco", "aws-kms").await;
        let key = app.api_key("kmsco", &["uploader", "reader"]).await;
        let docs = upload_corpus(&app, &key, 62, 4).await;
        Some((key, docs))
    } else {
        None
    };
    let before = searches(&app, &key, 61, 24).await;

    let run = app.cli_json(&["--json", "backup", "run"]);
    assert_eq!(run["ok"], true, "{run}");
    let listed = app.cli_json(&["--json", "backup", "list"]);
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 1);
    let store = repo.store_arg();
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
    assert!(verified["objects"].as_u64().unwrap() > 24 * 3, "{verified}");
    // Packed: a handful of packs read whole, not one read per object.
    let read = verified["objects_read"].as_u64().unwrap();
    assert!((1..24).contains(&read), "{verified}");

    // The drill passes and lands in the system audit log.
    let scratch = tempfile::tempdir().unwrap();
    let scratch_dir = scratch.path().join("drill");
    let root = root_key(&app);
    let scratch_arg = scratch_dir.display().to_string();
    let mut args = drill_args(&store, &root, &scratch_arg);
    if let Some(custody) = &custody {
        args.extend(["--aws-kms", "--custody", custody]);
    }
    let report = app.cli_json(&args);
    assert_eq!(report["status"], "passed", "{report}");
    let tenants = report["tenants"].as_array().unwrap();
    let tenant = tenants.iter().find(|t| t["tenant"] == "acme").unwrap();
    if backend == Backend::S3 {
        let kms = tenants.iter().find(|t| t["tenant"] == "kmsco").unwrap();
        assert_eq!(kms["provider"], "aws-kms");
        assert_eq!(kms["samples_decrypted"], 4);
        assert!(report["keys"]
            .to_string()
            .contains("KMS keys are not in backups"));
    }
    assert_eq!(tenant["documents_in_manifest"], 24);
    assert_eq!(tenant["documents_restored"], 24);
    assert_eq!(tenant["documents_indexed"], 24);
    assert_eq!(tenant["samples_decrypted"], 8);
    assert_eq!(tenant["probes_run"], tenant["probes_passed"]);
    assert!(tenant["probes_run"].as_u64().unwrap() >= 6);
    assert!(report["rpo_seconds"].as_i64().unwrap() >= 0);
    assert!(report["rto_seconds"].as_f64().unwrap() > 0.0);
    assert!(!scratch_dir.exists(), "the scratch vault is removed");
    let events: Value = app
        .operator(Method::GET, "/v1/audit/events?tenant=system&limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"backup.run"), "{actions:?}");
    assert!(actions.contains(&"drill.report"), "{actions:?}");

    // Lose the primary, restore it (with the vault's key saved beforehand: the
    // server is gone), and everything is as it was.
    let vault_key = vault_public_key(&app);
    wipe_primary(&mut app).await;
    let data_dir = app.data_dir.display().to_string();
    let restore_to = app.store_arg();
    let mut args = vec![
        "--json",
        "restore",
        "--store",
        &store,
        "--snapshot",
        "latest",
        "--to",
        &restore_to,
        "--public-key",
        &vault_key,
    ];
    if backend == Backend::S3 {
        args.extend(["--data-dir", &data_dir]);
    }
    let restored = app.cli_json(&args);
    assert_eq!(restored["mismatches"].as_array().unwrap().len(), 0);
    // A second restore into the now non-empty store is refused.
    let (code, text) = app.cli_exit(&args);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not empty"), "{text}");

    let app = app.restart().await;
    for doc in &docs {
        let r = app.get_as(&key, &format!("/v1/documents/{}", doc.id)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.bytes().await.unwrap().to_vec(),
            doc.body,
            "document {}",
            doc.id
        );
    }
    let after = searches(&app, &key, 61, 24).await;
    assert_eq!(before, after);
    if let Some((key, docs)) = kms_key {
        for doc in &docs {
            let r = app.get_as(&key, &format!("/v1/documents/{}", doc.id)).await;
            assert_eq!(r.bytes().await.unwrap().to_vec(), doc.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_wipe_restore_and_drill_on_fs() {
    round_trip(Backend::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_wipe_restore_and_drill_on_s3() {
    round_trip(Backend::S3).await;
}

/// The entries of a snapshot as its manifest's chunks hold them (read
/// directly, as a tamperer would).
async fn snapshot_entries(repo: &Repo, manifest_key: &str) -> Vec<Entry> {
    let text = String::from_utf8(repo.read(manifest_key).await).unwrap();
    let header: ManifestV2 = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    let mut out = Vec::new();
    for chunk in &header.chunks {
        let key = format!("chunks/{}/{}", &chunk.sha256[..2], chunk.sha256);
        out.extend(vault_core::backup::chunk::decode(&repo.read(&key).await).unwrap());
    }
    out
}

/// Where the first object whose name ends with `object_suffix` is stored in a
/// repository holding one snapshot: the repository key and the byte range.
async fn stored_at(
    repo: &Repo,
    manifest_key: &str,
    object_suffix: &str,
) -> (String, std::ops::Range<usize>) {
    let entry = snapshot_entries(repo, manifest_key)
        .await
        .into_iter()
        .find(|e| e.name.ends_with(object_suffix))
        .unwrap();
    match entry.location {
        Location::Packed { pack, offset } => (
            format!("packs/{}/{pack}", &pack[..2]),
            offset as usize..(offset + entry.size) as usize,
        ),
        Location::Whole => (
            format!("data/{}/{}", &entry.sha256[..2], entry.sha256),
            0..entry.size as usize,
        ),
    }
}

async fn tampering(backend: Backend) {
    let repo = match backend {
        Backend::Fs => Repo::Fs(tempfile::tempdir().unwrap().keep().join("repo")),
        Backend::S3 => Repo::new_s3(false).await,
    };
    let app = start(backend, &repo, "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    upload_corpus(&app, &key, 7, 8).await;
    app.cli_json(&["--json", "backup", "run"]);
    let store = repo.store_arg();
    let root = root_key(&app);
    let manifests = repo.keys("snapshots/").await;
    assert_eq!(manifests.len(), 1);
    let manifest_key = manifests[0].clone();
    let (body_key, body_range) = stored_at(&repo, &manifest_key, "/body").await;
    let original = repo.read(&body_key).await;
    let scratch = tempfile::tempdir().unwrap();

    let check_fails = |what: &'static str, read_data: bool| {
        let store = store.clone();
        let root = root.clone();
        let scratch_arg = scratch.path().join(what).display().to_string();
        let app = &app;
        move || {
            let mut verify = vec!["--json", "backup", "verify", "--store", store.as_str()];
            if read_data {
                verify.push("--read-data");
            }
            let (code, text) = app.cli_exit(&verify);
            assert_eq!(code, 5, "{what}: verify must find it: {text}");
            let (code, text) = app.cli_exit(&drill_args(&store, &root, &scratch_arg));
            assert_eq!(code, 5, "{what}: the drill must fail: {text}");
        }
    };

    // A flipped byte in a body (inside its pack).
    let mut flipped = original.clone();
    let middle = (body_range.start + body_range.end) / 2;
    flipped[middle] ^= 0x40;
    repo.write(&body_key, flipped).await;
    check_fails("flipped", true)();
    repo.write(&body_key, original.clone()).await;
    app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
    ]);

    // A missing object.
    repo.delete(&body_key).await;
    check_fails("missing", false)();
    repo.write(&body_key, original).await;

    // A forged manifest: its size changed, the signature kept.
    let manifest = repo.read(&manifest_key).await;
    let text = String::from_utf8(manifest.clone()).unwrap();
    let forged = text.replacen("\"bytes\":", "\"bytes\":1", 1);
    assert_ne!(forged, text);
    repo.write(&manifest_key, forged.into_bytes()).await;
    check_fails("forged", false)();
    repo.write(&manifest_key, manifest).await;
    app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
    ]);

    // Another vault's manifest, validly signed by that vault.
    let other_repo = Repo::Fs(scratch.path().join("other-repo"));
    let other = start(Backend::Fs, &other_repo, "").await;
    other.create_tenant("acme").await;
    other.cli_json(&["--json", "backup", "run"]);
    let other_manifest = other_repo.keys("snapshots/").await[0].clone();
    repo.write(&other_manifest, other_repo.read(&other_manifest).await)
        .await;
    let (code, text) = app.cli_exit(&["--json", "backup", "verify", "--store", &store]);
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("another vault"), "{text}");
    let id = other_manifest.trim_start_matches("snapshots/");
    let scratch_arg = scratch.path().join("foreign").display().to_string();
    let mut args = drill_args(&store, &root, &scratch_arg);
    args.extend(["--snapshot", id]);
    let (code, text) = app.cli_exit(&args);
    assert_eq!(code, 5, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_fails_verify_and_drill_on_fs() {
    tampering(Backend::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_fails_verify_and_drill_on_s3() {
    tampering(Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_after_a_one_percent_change_copies_about_one_percent() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::Fs(dir.path().join("repo"));
    let app = start(Backend::Fs, &repo, "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    // 100 scans of ~200 KiB: the documents dominate the vault's bytes.
    for i in 0..100u32 {
        let body: Vec<u8> = (0..200_000u32)
            .map(|b| (b ^ i.wrapping_mul(2_654_435_761)) as u8)
            .collect();
        let r = app.upload(&key, "scan", "application/pdf", body, &[]).await;
        assert_eq!(r.status(), 201);
    }
    let first = app.cli_json(&["--json", "backup", "run"]);
    let total = first["bytes"].as_u64().unwrap();
    assert!(
        first["bytes_added"].as_u64().unwrap() >= total * 9 / 10,
        "{first}"
    );
    let body: Vec<u8> = (0..200_000u32).map(|b| (b * 7) as u8).collect();
    assert_eq!(
        app.upload(&key, "scan", "application/pdf", body, &[])
            .await
            .status(),
        201
    );
    let second = app.cli_json(&["--json", "backup", "run"]);
    let added = second["bytes_added"].as_u64().unwrap();
    let share = added as f64 / second["bytes"].as_u64().unwrap() as f64;
    assert!(
        (0.009..0.02).contains(&share),
        "a 1 % change copied {added} bytes ({:.2} %)",
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_on_moto_refuses_deletion_and_prune_keeps_locked_snapshots() {
    let repo = Repo::new_s3(true).await;
    let app = start_with_s3_repo(&repo, "[backup.retention]\nkeep_last = 1\n").await;
    app.create_tenant("acme").await;
    app.cli_json(&["--json", "backup", "run"]);
    // A second apart: an object locked by the first run alone would then be locked
    // at least a second less than the second snapshot claims.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.cli_json(&["--json", "backup", "run"]);
    let Repo::S3 { bucket, prefix } = &repo else {
        unreachable!()
    };
    let s3 = aws_sdk_s3::Client::new(&aws_config().await);
    assert_newest_snapshot_locks_what_it_names(&app, &repo, true).await;
    let manifest = format!("{prefix}/{}", repo.keys("snapshots/").await[0]);
    // (moto answers GetObjectRetention with the object; HeadObject carries it.)
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(&manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );
    assert!(head.object_lock_retain_until_date().is_some());
    let versions = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(&manifest)
        .send()
        .await
        .unwrap();
    let version = versions.versions()[0].version_id().unwrap().to_owned();
    let deleted = s3
        .delete_object()
        .bucket(bucket)
        .key(&manifest)
        .version_id(&version)
        .send()
        .await;
    assert!(deleted.is_err(), "a locked version was deleted");
    assert!(s3
        .get_object()
        .bucket(bucket)
        .key(&manifest)
        .version_id(&version)
        .send()
        .await
        .is_ok());
    // keep_last = 1 would remove the older snapshot, but it is locked.
    let pruned = app.cli_json(&["--json", "backup", "prune"]);
    assert_eq!(pruned["removed"].as_array().unwrap().len(), 0, "{pruned}");
    assert_eq!(pruned["protected"].as_array().unwrap().len(), 1, "{pruned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_referenced_and_held_snapshots_and_removes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::Fs(dir.path().join("repo"));
    let app = start(Backend::Fs, &repo, "[backup.retention]\nkeep_last = 1\n").await;
    app.create_tenant("acme").await;
    let key = app
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    upload_corpus(&app, &key, 3, 4).await;
    let first = app.cli_json(&["--json", "backup", "run"]);
    let doomed = upload_corpus(&app, &key, 4, 4).await;
    app.cli_json(&["--json", "backup", "run"]);
    for doc in &doomed {
        let r = app
            .http
            .delete(app.at(&format!("/v1/documents/{}", doc.id)))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    // A backup interrupted by a crash leaves an unreferenced object behind.
    repo.write(
        &format!("packs/ab/ab{}", "0".repeat(62)),
        b"orphan".to_vec(),
    )
    .await;
    app.cli_json(&["--json", "backup", "run"]);
    let first_id = first["snapshot"].as_str().unwrap();
    app.cli_json(&["--json", "backup", "hold", first_id]);
    let pruned = app.cli_json(&["--json", "backup", "prune"]);
    assert_eq!(pruned["removed"].as_array().unwrap().len(), 1, "{pruned}");
    assert_eq!(pruned["protected"], serde_json::json!([first_id]));
    // The orphan, the forgotten snapshot's chunk, and the pack that held the
    // deleted documents, repacked without them.
    assert!(
        pruned["data_objects_deleted"].as_u64().unwrap() >= 3,
        "{pruned}"
    );
    assert_eq!(pruned["packs_repacked"], 1, "{pruned}");
    let store = repo.store_arg();
    let verified = app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
    ]);
    assert_eq!(verified["snapshots"], 2);
    assert_eq!(verified["problems"].as_array().unwrap().len(), 0);
    app.cli_json(&["--json", "backup", "release", first_id]);
    let pruned = app.cli_json(&["--json", "backup", "prune"]);
    assert_eq!(pruned["removed"], serde_json::json!([first_id]));
    let verified = app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
    ]);
    assert_eq!(verified["snapshots"], 1);
    assert_eq!(verified["problems"].as_array().unwrap().len(), 0);
}

async fn backup_status(app: &TestApp) -> Value {
    app.operator(Method::GET, "/v1/admin/backups")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_runs_backups_and_its_status_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::Fs(dir.path().join("repo"));
    let app = start(Backend::Fs, &repo, "schedule = \"*/2 * * * * *\"").await;
    app.create_tenant("acme").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = backup_status(&app).await;
        if status["status"]["last_success_at"].is_string() {
            assert!(status["status"]["next_run"].is_string());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled backup: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = app.metrics_text().await;
    let gauge = |name: &str| -> i64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(gauge("vault_backup_last_success_timestamp_seconds") > 1_700_000_000);
    assert!(gauge("vault_backup_age_seconds") >= 0);
    assert!(gauge("vault_backup_last_size_bytes") > 0);
    // Each scheduled run is audited before it writes anything: its intent
    // comes first, then its outcome.
    let events = app
        .operator_get("/v1/audit/events?tenant=system&limit=1000")
        .await;
    let runs: Vec<(&str, u64)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "backup.run" && e["actor"] == "schedule")
        .filter_map(|e| Some((e["outcome"].as_str()?, e["seq"].as_u64()?)))
        .collect();
    let first = |outcome: &str| {
        runs.iter()
            .filter(|(o, _)| *o == outcome)
            .map(|(_, seq)| *seq)
            .min()
    };
    assert!(
        matches!((first("intent"), first("allowed")), (Some(i), Some(d)) if i < d),
        "{runs:?}"
    );
    let app = app.restart().await;
    let status = backup_status(&app).await;
    assert!(status["status"]["last_success_at"].is_string(), "{status}");
    assert!(!status["snapshots"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_resumes_and_refuses_foreign_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::Fs(dir.path().join("repo"));
    let app = start(Backend::Fs, &repo, "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    upload_corpus(&app, &key, 21, 12).await;
    app.cli_json(&["--json", "backup", "run"]);
    let store = repo.store_arg();
    let target = dir.path().join("restored");
    let to = target.display().to_string();
    let args = [
        "--json",
        "restore",
        "--store",
        &store,
        "--snapshot",
        "latest",
        "--to",
        &to,
    ];
    let full = app.cli_json(&args);
    let total = full["objects"].as_u64().unwrap();
    // Lose part of it, as an interrupted restore would have left it.
    let docs = target.join("objects/tenants/acme/docs");
    let mut removed = 0;
    for entry in std::fs::read_dir(&docs).unwrap().take(5) {
        let body = entry.unwrap().path().join("body");
        std::fs::remove_file(body).unwrap();
        removed += 1;
    }
    let (code, text) = app.cli_exit(&args);
    assert_eq!(
        code, 2,
        "a non-empty target needs --allow-non-empty: {text}"
    );
    let mut resume = args.to_vec();
    resume.push("--allow-non-empty");
    let resumed = app.cli_json(&resume);
    assert_eq!(resumed["objects"].as_u64().unwrap(), total);
    assert_eq!(
        resumed["already_present"].as_u64().unwrap(),
        total - removed
    );
    // Different bytes under a name the snapshot restores are never accepted.
    let victim = std::fs::read_dir(&docs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("meta");
    std::fs::write(&victim, b"{}").unwrap();
    let (code, text) = app.cli_exit(&resume);
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("different bytes"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_midway_leaves_no_snapshot_and_the_next_one_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::Fs(dir.path().join("repo"));
    let mut app = start(Backend::Fs, &repo, "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    for i in 0..48u32 {
        let body: Vec<u8> = (0..2_000_000u32)
            .map(|b| (b ^ i.wrapping_mul(97)) as u8)
            .collect();
        assert_eq!(
            app.upload(&key, "scan", "application/pdf", body, &[])
                .await
                .status(),
            201
        );
    }
    let r = app
        .operator(Method::POST, "/v1/admin/backups")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Kill the server (SIGKILL) once some objects are copied.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut killed_midway = false;
    loop {
        let status = backup_status(&app).await;
        let running = &status["status"]["running"];
        // Past three packs' worth (16 MiB each), so some are written.
        if running["bytes_done"].as_u64().unwrap_or(0) >= 56 << 20 {
            app.kill();
            killed_midway = true;
            break;
        }
        if status["status"]["last"].is_object() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        killed_midway,
        "the backup finished before it could be interrupted"
    );
    assert!(
        repo.keys("snapshots/").await.is_empty(),
        "no manifest for an interrupted backup"
    );
    let copied_before = repo.keys("packs/").await.len();
    assert!(copied_before > 0);
    let app = app.restart().await;
    let second = app.cli_json(&["--json", "backup", "run"]);
    // What the interrupted run copied was not copied again.
    assert!(
        second["bytes_added"].as_u64().unwrap() < second["bytes"].as_u64().unwrap(),
        "{second}"
    );
    let store = repo.store_arg();
    let verified = app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
    ]);
    assert_eq!(verified["snapshots"], 1);
    assert_eq!(
        verified["problems"].as_array().unwrap().len(),
        0,
        "{verified}"
    );
}

/// A lock object as another server would write it, `age` old.
fn foreign_lock(age: Duration) -> Vec<u8> {
    let at = aws_sdk_s3::primitives::DateTime::from(std::time::SystemTime::now() - age)
        .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
        .unwrap();
    serde_json::json!({
        "format": 1,
        "holder": "replica-2:/srv/vault",
        "run": "00ff00ff00ff00ff",
        "operation": "backup",
        "acquired_at": at,
        "refreshed_at": at,
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_servers_lock_on_the_repository_is_respected_until_stale() {
    let repo = Repo::new_s3(false).await;
    let app = start_with_s3_repo(&repo, "").await;
    app.create_tenant("acme").await;
    app.cli_json(&["--json", "backup", "run"]);
    let lock = "locks/00ff00ff00ff00ff-0";
    repo.write(lock, foreign_lock(Duration::from_secs(60)))
        .await;
    for args in [["backup", "run"], ["backup", "prune"]] {
        let (code, out) = app.cli_exit(&args);
        assert_ne!(code, 0, "{args:?} ran under another server's lock: {out}");
        assert!(out.contains("replica-2:/srv/vault"), "{out}");
    }
    // Skipped, not failed.
    let status = backup_status(&app).await;
    assert_eq!(status["status"]["last"]["skipped"], true, "{status}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("vault_backup_failures_total 0"),
        "{metrics}"
    );
    assert_eq!(repo.keys("snapshots/").await.len(), 1);
    // Not refreshed for over 30 minutes: its server is gone.
    repo.delete(lock).await;
    repo.write(lock, foreign_lock(Duration::from_secs(31 * 60)))
        .await;
    app.cli_json(&["--json", "backup", "run"]);
    assert_eq!(repo.keys("snapshots/").await.len(), 2);
    assert!(
        repo.keys("locks/").await.is_empty(),
        "a released lock is removed"
    );
}

/// Copies a directory tree.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn make_owner_only(path: &std::path::Path) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// The vault's backup public key, from the server.
fn vault_public_key(app: &TestApp) -> String {
    let answer = app.cli_json(&["--json", "backup", "public-key"]);
    assert_eq!(answer["algorithm"], "ed25519", "{answer}");
    answer["public_key"].as_str().unwrap().to_owned()
}

/// A hostile copy of a real repository, as the security review built it: its
/// `config` re-pinned to the forger's new Ed25519 key, an operator credential
/// record added, and the manifest re-signed with the forger's key over its
/// entries and the new one. Returns the forger's public key (hex).
fn forge_repository(real: &std::path::Path, forged: &std::path::Path) -> String {
    use vault_core::backup::chunk;
    use vault_core::backup::manifest::{ChunkRef, Manifest};
    use vault_core::credentials::{CredentialKind, CredentialRecord};
    use vault_crypto::signing::SigningKey;

    copy_dir(real, forged);
    let forger = SigningKey::generate();
    let forger_hex = forger.public_key().to_hex();
    let config_path = forged.join("config");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["vault_key"] = Value::String(forger_hex.clone());
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let operator = CredentialRecord::issue(CredentialKind::Operator, None, vec![], None);
    let record = serde_json::to_vec(&operator.record).unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&record));
    let data = forged.join(format!("data/{}/{sha}", &sha[..2]));
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    std::fs::write(&data, &record).unwrap();

    for manifest_file in std::fs::read_dir(forged.join("snapshots")).unwrap() {
        let path = manifest_file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(MAGIC_V2));
        let mut manifest: ManifestV2 = serde_json::from_str(lines.next().unwrap()).unwrap();
        let mut entries = Vec::new();
        for chunk in &manifest.chunks {
            let chunk_path = forged.join(format!("chunks/{}/{}", &chunk.sha256[..2], chunk.sha256));
            entries.extend(chunk::decode(&std::fs::read(chunk_path).unwrap()).unwrap());
        }
        entries.push(Entry {
            name: format!("system/operators/{}", operator.record.id),
            size: record.len() as u64,
            sha256: sha.clone(),
            location: Location::Whole,
        });
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let (bytes, chunk_sha) = chunk::encode(&entries).unwrap();
        let chunk_path = forged.join(format!("chunks/{}/{chunk_sha}", &chunk_sha[..2]));
        std::fs::create_dir_all(chunk_path.parent().unwrap()).unwrap();
        std::fs::write(chunk_path, bytes).unwrap();
        manifest.chunks = vec![ChunkRef {
            sha256: chunk_sha,
            entries: entries.len() as u64,
        }];
        manifest.objects = entries.len() as u64;
        manifest.bytes = entries.iter().map(|e| e.size).sum();
        manifest.merkle_root = Manifest::compute_root(&entries);
        manifest.vault_key = forger_hex.clone();
        std::fs::write(&path, manifest.sign(&forger).unwrap()).unwrap();
    }
    forger_hex
}

/// The attack of the security review (issue 14): a copy of a real repository
/// re-pinned to another key, with an added operator credential and a re-signed
/// manifest. `backup verify`, `restore` and `drill` refuse it with exit 2 (never
/// 0), with the key from the live server and with `--public-key`/`--public-key-file`;
/// nothing is restored. Without a server and without a key they stop with a usage
/// error that says what to pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_re_pinned_to_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("repo");
    let repo = Repo::Fs(real.clone());
    let mut app = start(Backend::Fs, &repo, "").await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    upload_corpus(&app, &key, 14, 4).await;
    app.cli_json(&["--json", "backup", "run"]);
    let vault_key = vault_public_key(&app);
    let key_file = dir.path().join("vault-backup.pub");
    std::fs::write(&key_file, format!("{vault_key}\n")).unwrap();
    let key_file = key_file.display().to_string();

    let snapshot_id = repo.keys("snapshots/").await[0]
        .trim_start_matches("snapshots/")
        .to_owned();
    let forged = dir.path().join("forged");
    let forger_key = forge_repository(&real, &forged);
    let forged_arg = forged.display().to_string();
    // The forgery is sound in itself: under the forger's key it verifies, so what
    // refuses it below is the pinned key alone.
    app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &forged_arg,
        "--read-data",
        "--public-key",
        &forger_key,
    ]);

    let root = root_key(&app);
    let key_options: [&[&str]; 3] = [
        &[],
        &["--public-key", &vault_key],
        &["--public-key-file", &key_file],
    ];
    for (i, key_args) in key_options.iter().enumerate() {
        let mut verify = vec!["--json", "backup", "verify", "--store", &forged_arg];
        verify.extend_from_slice(key_args);
        let (code, text) = app.cli_exit(&verify);
        assert_eq!(code, 5, "verify {key_args:?}: {text}");
        assert!(
            text.contains("another vault"),
            "verify {key_args:?}: {text}"
        );

        let target = dir.path().join(format!("restored-{i}"));
        let to = target.display().to_string();
        for snapshot in ["latest", snapshot_id.as_str()] {
            let mut restore = vec![
                "--json",
                "restore",
                "--store",
                &forged_arg,
                "--snapshot",
                snapshot,
                "--to",
                &to,
            ];
            restore.extend_from_slice(key_args);
            let (code, text) = app.cli_exit(&restore);
            assert_eq!(code, 5, "restore {snapshot} {key_args:?}: {text}");
            assert!(text.contains("another vault"), "{text}");
            assert!(!target.exists(), "restore {key_args:?} wrote {to}");
        }

        let scratch = dir.path().join(format!("drill-{i}"));
        let scratch_arg = scratch.display().to_string();
        let mut drill = drill_args(&forged_arg, &root, &scratch_arg);
        drill.extend_from_slice(key_args);
        let (code, text) = app.cli_exit(&drill);
        assert_eq!(code, 5, "drill {key_args:?}: {text}");
        assert!(text.contains("another vault"), "{text}");
        assert!(!scratch.join("objects/system").exists());
    }
    // The real repository still verifies under the fetched key.
    let store = repo.store_arg();
    app.cli_json(&["--json", "backup", "verify", "--store", &store]);

    // Without a server and without a key: a usage error (exit 2) saying what to pass.
    app.kill();
    for args in [
        vec!["backup", "verify", "--store", &store],
        vec![
            "restore",
            "--store",
            &store,
            "--snapshot",
            "latest",
            "--to",
            "unused",
        ],
        drill_args(&store, &root, "unused-scratch")[1..].to_vec(),
    ] {
        let (code, text) = app.cli_exit(&args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(
            text.contains("--public-key HEX or --public-key-file FILE"),
            "{args:?}: {text}"
        );
        let mut json = vec!["--json"];
        json.extend(args);
        let (code, text) = app.cli_exit(&json);
        assert_eq!(code, 2, "{text}");
        let error: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(error["code"], "usage", "{text}");
    }
    assert!(!std::path::Path::new("unused").exists());
    // With the saved key the offline commands still run, and still refuse the forgery.
    app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--public-key-file",
        &key_file,
    ]);
    let (code, text) = app.cli_exit(&[
        "backup",
        "verify",
        "--store",
        &forged_arg,
        "--public-key-file",
        &key_file,
    ]);
    assert_eq!(code, 5, "{text}");
}

/// Issue 14, finding 5: a deleted document does not come back from a snapshot
/// taken before its delete when the repository holds a later snapshot with its
/// tombstone; restore and drill both leave it out. With only the earlier snapshot
/// (no tombstone anywhere) the restore does bring it back: the documented limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_snapshot_from_before_a_delete_leaves_the_document_out() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("repo");
    let repo = Repo::Fs(real.clone());
    let store = repo.store_arg();
    let mut app = start(Backend::Fs, &repo, "").await;
    app.create_tenant("acme").await;
    let key = app
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let mut ids = Vec::new();
    for (claim, body) in [
        ("CLM-A-1", b"%PDF-1.4 A".to_vec()),
        ("CLM-B-2", b"%PDF-1.4 B".to_vec()),
    ] {
        let fields = serde_json::json!({ "claim_id": claim }).to_string();
        let r = app
            .upload(
                &key,
                "scan",
                "application/pdf",
                body,
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
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let first = app.cli_json(&["--json", "backup", "run"]);
    let first = first["snapshot"].as_str().unwrap().to_owned();
    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{a}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    app.cli_json(&["--json", "backup", "run"]);
    let vault_key = vault_public_key(&app);

    // The drill of the first snapshot counts and samples only B.
    let scratch = dir.path().join("drill");
    let scratch_arg = scratch.display().to_string();
    let root = root_key(&app);
    let mut drill = drill_args(&store, &root, &scratch_arg);
    drill.extend(["--snapshot", &first]);
    let report = app.cli_json(&drill);
    assert_eq!(report["status"], "passed", "{report}");
    let tenant = report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "acme")
        .unwrap();
    assert_eq!(tenant["documents_in_manifest"], 1, "{report}");
    assert_eq!(tenant["documents_deleted"], 1, "{report}");
    assert_eq!(tenant["documents_restored"], 1, "{report}");
    assert_eq!(tenant["samples_decrypted"], 1, "{report}");

    // A repository holding only the first snapshot: no tombstone anywhere.
    let alone = dir.path().join("alone");
    copy_dir(&real, &alone);
    for manifest in repo.keys("snapshots/").await {
        if !manifest.ends_with(&first) {
            std::fs::remove_file(alone.join(manifest)).unwrap();
        }
    }

    let restore_first = |app: &TestApp, store: &str| {
        let to = app.data_dir.display().to_string();
        app.cli_json(&[
            "--json",
            "restore",
            "--store",
            store,
            "--snapshot",
            &first,
            "--to",
            &to,
            "--public-key",
            &vault_key,
        ])
    };
    let search = |app: &TestApp, claim: &str| {
        let request = app
            .http
            .get(app.at("/v1/search"))
            .query(&[("q", format!("claim_id:\"{claim}\""))])
            .bearer_auth(&key);
        async move {
            let v: Value = request.send().await.unwrap().json().await.unwrap();
            v["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let listed = |app: &TestApp| {
        let request = app.http.get(app.at("/v1/documents")).bearer_auth(&key);
        async move {
            let v: Value = request.send().await.unwrap().json().await.unwrap();
            v["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };

    // Restore the first snapshot from the whole repository: A stays deleted.
    wipe_primary(&mut app).await;
    let restored = restore_first(&app, &store);
    assert_eq!(restored["deleted_documents_left_out"], 1, "{restored}");
    assert_eq!(restored["deleted_objects_left_out"], 3, "{restored}");
    let mut app = app.restart().await;
    assert_eq!(
        app.get_as(&key, &format!("/v1/documents/{a}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get_as(&key, &format!("/v1/documents/{a}/metadata"))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get_as(&key, &format!("/v1/documents/{b}"))
            .await
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        b"%PDF-1.4 B".to_vec()
    );
    assert_eq!(listed(&app).await, vec![b.clone()]);
    assert!(search(&app, "CLM-A-1").await.is_empty());
    assert_eq!(search(&app, "CLM-B-2").await, vec![b.clone()]);
    // The tombstone came back with the restore: the vault knows A is deleted.
    assert!(app
        .data_dir
        .join(format!("objects/tenants/acme/tombstones/{a}"))
        .exists());

    // Restore it from the repository that holds it alone: A comes back.
    wipe_primary(&mut app).await;
    let restored = restore_first(&app, &alone.display().to_string());
    assert_eq!(restored["deleted_documents_left_out"], 0, "{restored}");
    let app = app.restart().await;
    let r = app.get_as(&key, &format!("/v1/documents/{a}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), b"%PDF-1.4 A".to_vec());
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(listed(&app).await, both);
    assert_eq!(search(&app, "CLM-A-1").await, vec![a.clone()]);
}

/// Every object the newest snapshot names, reused ones included, is locked at
/// least as long as that snapshot claims (`packed`: some of them are packs).
async fn assert_newest_snapshot_locks_what_it_names(app: &TestApp, repo: &Repo, packed: bool) {
    let Repo::S3 { bucket, prefix } = repo else {
        unreachable!()
    };
    let s3 = aws_sdk_s3::Client::new(&aws_config().await);
    let listed = app.cli_json(&["--json", "backup", "list"]);
    let newest_claim = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        // (A snapshot of the first format, written unlocked, claims nothing.)
        .filter_map(|s| s["locked_until"].as_str())
        .map(|until| {
            aws_sdk_s3::primitives::DateTime::from_str(
                until,
                aws_sdk_s3::primitives::DateTimeFormat::DateTime,
            )
            .unwrap()
            .secs()
        })
        .max()
        .unwrap();
    let newest = repo.keys("snapshots/").await.last().unwrap().clone();
    let text = String::from_utf8(repo.read(&newest).await).unwrap();
    let header: ManifestV2 = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    let mut data: std::collections::BTreeSet<String> = header
        .chunks
        .iter()
        .map(|c| format!("chunks/{}/{}", &c.sha256[..2], c.sha256))
        .collect();
    for entry in snapshot_entries(repo, &newest).await {
        data.insert(match entry.location {
            Location::Packed { pack, .. } => format!("packs/{}/{pack}", &pack[..2]),
            Location::Whole => format!("data/{}/{}", &entry.sha256[..2], entry.sha256),
        });
    }
    assert_eq!(
        data.iter().any(|k| k.starts_with("packs/")),
        packed,
        "{data:?}"
    );
    for name in &data {
        let head = s3
            .head_object()
            .bucket(bucket)
            .key(format!("{prefix}/{name}"))
            .send()
            .await
            .unwrap();
        let until = head.object_lock_retain_until_date().unwrap().secs();
        assert!(
            until >= newest_claim,
            "{name} is locked until {until}, the newest snapshot claims {newest_claim}"
        );
    }
}

/// A repository of the first format, from a real vault (the checked-in fixture:
/// three documents, one deleted): it verifies with its data, restores into a
/// vault that serves its documents (and not the deleted one), and that vault's
/// next backups go into the same repository in format v2, reusing the v1
/// objects; the v2 snapshot verifies and drills; a prune to the last snapshot
/// removes the v1 one, and what remains verifies and restores.
/// On S3 with Object Lock, the v2 snapshot's retention also covers the v1
/// objects it reuses.
async fn v1_fixture_vault(repo: Repo) {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/backup-repo-v1-vault");
    let dir = tempfile::tempdir().unwrap();
    let s3_repo = matches!(repo, Repo::S3 { .. });
    for (file, bytes) in files_under(&fixture.join("repo")) {
        let key = file
            .strip_prefix(fixture.join("repo"))
            .unwrap()
            .display()
            .to_string();
        repo.write(&key, bytes).await;
    }
    let store = repo.store_arg();
    let public_key = std::fs::read_to_string(fixture.join("public-key"))
        .unwrap()
        .trim()
        .to_owned();
    let api_key = std::fs::read_to_string(fixture.join("api-key"))
        .unwrap()
        .trim()
        .to_owned();
    let documents: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("documents.json")).unwrap()).unwrap();
    let retention = "[backup.retention]\nkeep_last = 1\n";
    let mut app = if s3_repo {
        start_with_s3_repo(&repo, retention).await
    } else {
        start(Backend::Fs, &repo, retention).await
    };

    let verified = app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
        "--public-key",
        &public_key,
    ]);
    assert_eq!(verified["snapshots"], 1, "{verified}");
    assert_eq!(verified["problems"], serde_json::json!([]), "{verified}");

    // The fixture's vault replaces this one: its keys (kept apart from backups),
    // its operator token, then its objects from the v1 snapshot.
    app.kill();
    for sub in ["objects", "index", "keys"] {
        let _ = std::fs::remove_dir_all(app.data_dir.join(sub));
    }
    // Git keeps no file modes but the executable bit, so a fresh checkout holds
    // these secrets readable by all; the vault refuses them so until chmod 600.
    copy_dir(&fixture.join("keys"), &app.data_dir.join("keys"));
    make_owner_only(&app.data_dir.join("keys/root.key"));
    std::fs::copy(
        fixture.join("operator-token"),
        app.data_dir.join("operator-token"),
    )
    .unwrap();
    make_owner_only(&app.data_dir.join("operator-token"));
    let restore_to = app.store_arg();
    let restored = app.cli_json(&[
        "--json",
        "restore",
        "--store",
        &store,
        "--snapshot",
        "latest",
        "--to",
        &restore_to,
        "--public-key",
        &public_key,
    ]);
    assert_eq!(restored["mismatches"], serde_json::json!([]), "{restored}");
    let app = app.restart().await;
    assert_eq!(vault_public_key(&app), public_key);
    for doc in documents["documents"].as_array().unwrap() {
        let r = app
            .get_as(
                &api_key,
                &format!("/v1/documents/{}", doc["id"].as_str().unwrap()),
            )
            .await;
        if doc["deleted"] == true {
            assert_eq!(r.status(), 404, "{doc}");
        } else {
            assert_eq!(r.status(), 200, "{doc}");
            assert_eq!(
                r.bytes().await.unwrap(),
                doc["body"].as_str().unwrap().as_bytes(),
                "{doc}"
            );
        }
    }

    // The next backup goes into the same repository, in format v2: the v1
    // objects it still names are reused, not copied again.
    let second = app.cli_json(&["--json", "backup", "run"]);
    assert!(
        second["bytes_added"].as_u64().unwrap() < second["bytes"].as_u64().unwrap() / 2,
        "{second}"
    );
    let newest = repo.keys("snapshots/").await.last().unwrap().clone();
    let text = String::from_utf8(repo.read(&newest).await).unwrap();
    assert_eq!(text.lines().next(), Some(MAGIC_V2));
    let entries = snapshot_entries(&repo, &newest).await;
    assert!(
        entries.iter().any(|e| e.location == Location::Whole),
        "v1 objects reused whole"
    );
    let verified = app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
    ]);
    assert_eq!(verified["snapshots"], 2, "{verified}");
    assert_eq!(verified["problems"], serde_json::json!([]), "{verified}");
    let scratch = dir.path().join("drill");
    let root = root_key(&app);
    let scratch_arg = scratch.display().to_string();
    let drill = app.cli_json(&drill_args(&store, &root, &scratch_arg));
    assert_eq!(drill["status"], "passed", "{drill}");
    if s3_repo {
        assert_newest_snapshot_locks_what_it_names(&app, &repo, true).await;
    }

    // Pruned to the last snapshot: the v1 one goes; the objects the v2 one
    // still names stay, whole.
    let pruned = app.cli_json(&["--json", "backup", "prune"]);
    assert_eq!(pruned["removed"].as_array().unwrap().len(), 1, "{pruned}");
    let verified = app.cli_json(&[
        "--json",
        "backup",
        "verify",
        "--store",
        &store,
        "--read-data",
    ]);
    assert_eq!(verified["snapshots"], 1, "{verified}");
    assert_eq!(verified["problems"], serde_json::json!([]), "{verified}");
    let elsewhere = dir.path().join("restored").display().to_string();
    let restored = app.cli_json(&[
        "--json",
        "restore",
        "--store",
        &store,
        "--snapshot",
        "latest",
        "--to",
        &elsewhere,
    ]);
    assert_eq!(restored["mismatches"], serde_json::json!([]), "{restored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_repository_of_a_real_vault_restores_and_takes_v2_backups() {
    let dir = tempfile::tempdir().unwrap().keep();
    v1_fixture_vault(Repo::Fs(dir.join("repo"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_repository_on_s3_with_object_lock_takes_locked_v2_backups() {
    v1_fixture_vault(Repo::new_s3(true).await).await;
}

/// Every file under `dir` with its bytes.
fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out
}

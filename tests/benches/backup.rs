//! Backup and restore throughput of the vault against restic, in one run on the
//! same documents.
//!
//! The vault (the real release `vault-server` on loopback, filesystem backend)
//! receives a tenant's documents: generated 835/837/FHIR files of a few KiB and
//! 4 MiB scans. restic backs up the same documents as plaintext files. Measured
//! for both: a full backup, a restore, and a second backup after 1 % more
//! documents arrive. The vault's figures count the bytes of its snapshot
//! (ciphertext plus key records and audit segments), restic's the plaintext files.
//!
//! Run: `cargo build --release -p vault-server -p vault-cli &&
//!       cargo bench -p vault-e2e --bench backup` (needs `restic`:
//!       `apt-get install restic`; `BACKUP_BENCH_SCALE=0.2` for a quick run).

#![allow(clippy::unwrap_used)] // a benchmark that cannot run should stop loudly

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use futures::StreamExt;
use serde_json::Value;
use vault_e2e::TestApp;
use vault_index::synth::{self, SynthClaim};

struct Doc {
    kind: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

fn documents(seed: u64, small: usize, scans: usize) -> Vec<Doc> {
    let claims = SynthClaim::batch(seed, small * 3);
    let mut docs = Vec::new();
    for (i, chunk) in claims.chunks(3).enumerate().take(small) {
        let body = match i % 3 {
            0 => synth::x12::remittance_835(chunk, synth::x12::X12Version::V5010),
            1 => synth::x12::claim_837(
                chunk,
                synth::x12::ClaimVariant::Professional,
                synth::x12::X12Version::V5010,
            ),
            _ => synth::fhir::explanation_of_benefit(
                &chunk[0],
                synth::fhir::PatientLayout::Contained,
            ),
        };
        docs.push(Doc {
            kind: if i % 3 == 1 { "claim" } else { "eob" },
            content_type: if i % 3 == 2 {
                "application/fhir+json"
            } else {
                "application/edi-x12"
            },
            body: body.into_bytes(),
        });
    }
    for i in 0..scans {
        let mut body = vec![0u8; 4 << 20];
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005) ^ i as u64;
        for b in body.iter_mut() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            *b = (state >> 56) as u8;
        }
        docs.push(Doc {
            kind: "scan",
            content_type: "application/pdf",
            body,
        });
    }
    docs
}

async fn upload_all(app: &TestApp, key: &str, docs: &[Doc]) {
    futures::stream::iter(docs)
        .map(|doc| async move {
            let r = app
                .upload(key, doc.kind, doc.content_type, doc.body.clone(), &[])
                .await;
            assert_eq!(r.status(), 201);
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

fn write_plain(dir: &Path, docs: &[Doc], offset: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, doc) in docs.iter().enumerate() {
        std::fs::write(dir.join(format!("doc-{:06}", i + offset)), &doc.body).unwrap();
    }
}

fn timed(label: &str, command: &mut Command) -> f64 {
    let started = Instant::now();
    let out = command.output().unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(
        out.status.success(),
        "{label} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

fn restic(repo: &Path) -> Command {
    let mut c = Command::new("restic");
    c.env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", "benchmark-only")
        .env("RESTIC_CACHE_DIR", repo.with_extension("cache"))
        .arg("--quiet");
    c
}

fn cli_timed(app: &TestApp, label: &str, args: &[&str]) -> (f64, Value) {
    let started = Instant::now();
    let out = app.cli(args);
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{label} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        seconds,
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[tokio::main]
async fn main() {
    if Command::new("restic").arg("version").output().is_err() {
        panic!("restic is not installed: apt-get install restic");
    }
    let scale: f64 = std::env::var("BACKUP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let small = (3000.0 * scale) as usize;
    let scans = ((40.0 * scale) as usize).max(1);
    let work = tempfile::tempdir().unwrap();
    let repo_dir = work.path().join("vault-repo");
    let app = TestApp::builder()
        .config(&format!(
            "[backup]\ntarget = {:?}\n",
            repo_dir.display().to_string()
        ))
        .start()
        .await;
    app.create_tenant("bench").await;
    let key = app.api_key("bench", &["uploader", "reader"]).await;
    let docs = documents(1, small, scans);
    let plain_bytes: u64 = docs.iter().map(|d| d.body.len() as u64).sum();
    eprintln!(
        "uploading {} documents ({:.1} MB) ...",
        docs.len(),
        plain_bytes as f64 / 1e6
    );
    upload_all(&app, &key, &docs).await;
    let plain = work.path().join("plain");
    write_plain(&plain, &docs, 0);

    // Full backups.
    let (vault_backup_s, first) = cli_timed(&app, "vault backup", &["--json", "backup", "run"]);
    let snapshot_bytes = first["bytes"].as_u64().unwrap();
    let restic_repo = work.path().join("restic-repo");
    timed("restic init", restic(&restic_repo).arg("init"));
    let restic_backup_s = timed(
        "restic backup",
        restic(&restic_repo).arg("backup").arg(&plain),
    );

    // Restores.
    let vault_target = work.path().join("vault-restored");
    let target = vault_target.display().to_string();
    let store = repo_dir.display().to_string();
    let (vault_restore_s, restored) = cli_timed(
        &app,
        "vault restore",
        &[
            "--json",
            "restore",
            "--store",
            &store,
            "--snapshot",
            "latest",
            "--to",
            &target,
        ],
    );
    assert_eq!(restored["mismatches"].as_array().unwrap().len(), 0);
    let restic_target = work.path().join("restic-restored");
    let restic_restore_s = timed(
        "restic restore",
        restic(&restic_repo)
            .args(["restore", "latest", "--target"])
            .arg(&restic_target),
    );
    let (vault_verify_s, _) = cli_timed(
        &app,
        "vault verify",
        &[
            "--json",
            "backup",
            "verify",
            "--store",
            &store,
            "--read-data",
        ],
    );
    let restic_check_s = timed(
        "restic check",
        restic(&restic_repo).args(["check", "--read-data"]),
    );

    // 1 % more documents, then incremental backups.
    let more = documents(2, small / 100, (scans / 100).max(1));
    upload_all(&app, &key, &more).await;
    write_plain(&plain, &more, docs.len());
    let (vault_incr_s, second) = cli_timed(&app, "vault backup 2", &["--json", "backup", "run"]);
    let restic_incr_s = timed(
        "restic backup 2",
        restic(&restic_repo).arg("backup").arg(&plain),
    );

    // Key rotation: rotate the KEK, then re-wrap every key record.
    let (_, _) = cli_timed(&app, "key rotate", &["--json", "key", "rotate", "bench"]);
    let (rewrap_s, rewrap) = cli_timed(
        &app,
        "key rewrap",
        &["--json", "key", "rewrap", "bench", "--retire-old"],
    );
    let rewrapped = rewrap["documents_rewrapped"].as_u64().unwrap()
        + rewrap["audit_segments_rewrapped"].as_u64().unwrap();

    let mb = |bytes: u64, s: f64| bytes as f64 / 1e6 / s;
    let restic_repo_bytes = dir_bytes(&restic_repo);
    let rows = [
        (
            "full backup",
            mb(snapshot_bytes, vault_backup_s),
            mb(plain_bytes, restic_backup_s),
        ),
        (
            "restore",
            mb(snapshot_bytes, vault_restore_s),
            mb(plain_bytes, restic_restore_s),
        ),
        (
            "verify --read-data",
            mb(snapshot_bytes, vault_verify_s),
            mb(restic_repo_bytes, restic_check_s),
        ),
    ];
    println!(
        "\n## Backup benchmark ({} documents, {:.1} MB plaintext, vault snapshot {:.1} MB)\n",
        docs.len(),
        plain_bytes as f64 / 1e6,
        snapshot_bytes as f64 / 1e6
    );
    println!("| operation | vault MB/s | restic MB/s | vault / restic |");
    println!("|---|---:|---:|---:|");
    for (name, vault, restic) in rows {
        println!(
            "| {name} | {vault:.1} | {restic:.1} | {:.2}x |",
            vault / restic
        );
    }
    println!(
        "| incremental backup after +1 % (s) | {vault_incr_s:.2} | {restic_incr_s:.2} | {:.2}x time |",
        vault_incr_s / restic_incr_s
    );
    println!(
        "\nvault: full backup {vault_backup_s:.2} s, restore {vault_restore_s:.2} s, verify {vault_verify_s:.2} s; second backup copied {} of {} bytes ({:.2} %).",
        second["bytes_added"], second["bytes"],
        second["bytes_added"].as_f64().unwrap() / second["bytes"].as_f64().unwrap() * 100.0
    );
    println!(
        "\nrewrap after a KEK rotation: {} documents and {} audit segments in {rewrap_s:.2} s ({:.0} records/s, server-side {:.0}/s); {} bytes read and {} written ({:.0} B/record read, {:.0} B/record written); no body touched.",
        rewrap["documents_rewrapped"],
        rewrap["audit_segments_rewrapped"],
        rewrapped as f64 / rewrap_s,
        rewrap["records_per_second"].as_f64().unwrap_or(0.0),
        rewrap["bytes_read"],
        rewrap["bytes_written"],
        rewrap["bytes_read"].as_f64().unwrap() / rewrapped.max(1) as f64,
        rewrap["bytes_written"].as_f64().unwrap() / rewrapped.max(1) as f64,
    );
    println!(
        "restic: backup {restic_backup_s:.2} s, restore {restic_restore_s:.2} s, check --read-data {restic_check_s:.2} s over a {:.1} MB repository.",
        restic_repo_bytes as f64 / 1e6
    );
}

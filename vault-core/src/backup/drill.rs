//! The disaster-recovery drill, after AWS Backup's restore testing: restore a
//! snapshot into a scratch vault, verify every object against the manifest, open
//! that vault with the live key providers, decrypt a sample of documents per
//! tenant (the keys are reachable and the bytes are the ones uploaded), rebuild
//! the indexes, run probe searches, compare counts with the manifest, and report
//! RPO and RTO. Nothing of the scratch vault is kept unless asked.
//!
//! The snapshot is restored as `restore` does it: only from a manifest that
//! verifies under the vault's pinned key, leaving out documents deleted as far as
//! the repository knows (see [`super::tombstones`]); the counts compared are those
//! a restore must bring back.
//!
//! KMS keys are not in a backup: an `aws-kms` tenant's documents decrypt only
//! while its KMS key exists, and the report says which provider each tenant uses.
//! The local KEKs are in the snapshot, sealed under the tenants' seal keys, which
//! are not (they are in the key custody, with the root key file): the drill takes
//! the live vault's root key file and reads, never changes, its key custody.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;
use rand::seq::SliceRandom;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vault_crypto::signing::PublicKey;
use vault_crypto::DocumentId;
use vault_index::query::Query;

use super::manifest::{VerifiedManifest, KEYSTORE_ENTRY};
use super::repo::Repository;
use super::restore::{plan, restore, Target};
use super::tombstones::Tombstones;
use super::{BackupError, Progress};
use crate::config::{Config, StorageConfig};
use crate::storage::{list_all, ObjectName, StoreLocation};
use crate::tenants::TenantRecord;
use crate::vault::SharedVault;

/// What to drill.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// A snapshot id; else the newest, or a random one with `random_within_days`.
    pub snapshot: Option<String>,
    /// Pick a random snapshot among those of the last N days.
    pub random_within_days: Option<u32>,
    /// The scratch vault's data directory (created; must be empty).
    pub scratch_dir: PathBuf,
    /// Restore objects to this store instead of `<scratch>/objects`.
    pub scratch_store: Option<StoreLocation>,
    /// The live vault's root key file (unseals the restored local keystore).
    pub root_key_file: Option<PathBuf>,
    /// The live vault's key custody, when not beside the root key file (see
    /// [`crate::config::KeysConfig::custody`]).
    pub custody: Option<String>,
    /// Reach AWS KMS for `aws-kms` tenants (standard AWS environment).
    pub aws_kms: bool,
    /// Documents decrypted and searched for per tenant.
    pub samples_per_tenant: usize,
}

pub use vault_api::reports::{DrillReport, TenantDrill};

/// Chooses the snapshot to drill.
async fn choose(
    repo: &Repository,
    vault_key: &PublicKey,
    options: &DrillOptions,
) -> Result<VerifiedManifest, BackupError> {
    if let Some(id) = &options.snapshot {
        return repo.manifest(id, vault_key).await;
    }
    let ids = repo.snapshot_ids().await?;
    let id = match options.random_within_days {
        Some(days) => {
            let cutoff = OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
            let mut recent = Vec::new();
            for id in &ids {
                if repo.manifest(id, vault_key).await?.created_at >= cutoff {
                    recent.push(id.clone());
                }
            }
            recent.choose(&mut rand::thread_rng()).cloned()
        }
        None => ids.last().cloned(),
    };
    let id =
        id.ok_or_else(|| BackupError::Invalid("the repository holds no snapshot to drill".into()))?;
    repo.manifest(&id, vault_key).await
}

/// Runs the drill. Errors are failures to run it (exit 1); mismatches are in the
/// report (exit 2).
pub async fn run(
    repo: &Repository,
    vault_key: &PublicKey,
    options: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillReport, BackupError> {
    let drilled_at = OffsetDateTime::now_utc();
    repo.check_pinned(vault_key).await?;
    let plan = plan(repo, vault_key, choose(repo, vault_key, options).await?).await?;
    let manifest = plan.manifest();
    let mut report = DrillReport {
        snapshot: manifest.snapshot.clone(),
        snapshot_created_at: manifest.created_at,
        drilled_at,
        repository: repo.location.clone(),
        rpo_seconds: (drilled_at - manifest.created_at).whole_seconds(),
        status: String::new(),
        restore_seconds: 0.0,
        open_seconds: 0.0,
        index_seconds: 0.0,
        rto_seconds: 0.0,
        objects_verified: 0,
        bytes_verified: 0,
        restore_mb_per_s: 0.0,
        tenants: Vec::new(),
        keys: Vec::new(),
        mismatches: Vec::new(),
        scratch: None,
    };
    // One pass over the manifest: the keystore, and the documents per tenant
    // it holds (all, and less the deleted ones).
    let mut has_keystore = false;
    let mut expected = std::collections::BTreeMap::new();
    let mut listed = std::collections::BTreeMap::new();
    let mut chunks = repo.entries(manifest);
    while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
        let chunk = chunk?;
        has_keystore |= chunk
            .iter()
            .any(|e| e.name == KEYSTORE_ENTRY || e.name.contains("/kek/"));
        plan.deleted().count_documents(&chunk, &mut expected);
        Tombstones::default().count_documents(&chunk, &mut listed);
    }
    drop(chunks);
    if has_keystore && options.root_key_file.as_ref().is_none_or(|p| !p.exists()) {
        return Err(BackupError::Invalid(
            "the snapshot's local keystore is sealed under the vault's root key file: give it with --root-key-file".into(),
        ));
    }

    // 1. Restore, checking every object's hash.
    let scratch = &options.scratch_dir;
    if scratch.exists()
        && std::fs::read_dir(scratch)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(BackupError::Invalid(format!(
            "scratch directory {} is not empty",
            scratch.display()
        )));
    }
    let io = |e: std::io::Error| BackupError::Io(format!("{}: {e}", scratch.display()));
    std::fs::create_dir_all(scratch.join("keys")).map_err(io)?;
    let storage = match &options.scratch_store {
        None => StorageConfig::Fs {
            root: Some(scratch.join("objects")),
        },
        Some(StoreLocation::Fs(root)) => StorageConfig::Fs {
            root: Some(root.clone()),
        },
        Some(StoreLocation::S3 { bucket, prefix }) => StorageConfig::S3 {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            endpoint: None,
            region: None,
            multipart_threshold: 16 << 20,
            operation_timeout_secs: None,
        },
    };
    let location = options
        .scratch_store
        .clone()
        .unwrap_or_else(|| StoreLocation::Fs(scratch.join("objects")));
    let target_store = match &location {
        StoreLocation::Fs(root) => {
            std::sync::Arc::new(crate::storage::fs::FsStore::open(root).await?)
                as std::sync::Arc<dyn crate::storage::ObjectStore>
        }
        s3 => s3.open().await?,
    };
    let started = Instant::now();
    let restored = restore(
        repo,
        &plan,
        &Target {
            store: target_store.as_ref(),
            keystore_file: Some(scratch.join("keys/keystore.bin")),
            allow_non_empty: false,
        },
        progress,
    )
    .await?;
    report.restore_seconds = started.elapsed().as_secs_f64();
    report.objects_verified = restored.objects;
    report.bytes_verified = restored.bytes;
    report.restore_mb_per_s = restored.bytes as f64 / 1e6 / report.restore_seconds.max(1e-9);
    report.mismatches.extend(restored.mismatches);

    // 2. Open a vault on it with the live key providers.
    let opened_at = Instant::now();
    let mut config = Config {
        data_dir: scratch.clone(),
        storage,
        ..Config::default()
    };
    config.keys.root_key_file = options.root_key_file.clone();
    config.keys.custody = options.custody.clone();
    config.keys.custody_read_only = true;
    config.keys.aws_kms = options.aws_kms;
    let built = crate::vault::Vault::open(config).await.map_err(|e| {
        // Objects that did not match are the finding; a vault restored
        // without them may well not open, which says nothing more.
        match report.mismatches.first() {
            Some(first) => BackupError::Mismatch {
                name: first.clone(),
                problem: format!(
                    "{} objects of the snapshot did not match, and the restored vault does not open: {e}",
                    report.mismatches.len()
                ),
            },
            None => BackupError::Invalid(format!("the restored vault does not open: {e}")),
        }
    })?;
    let state = built.vault;
    if has_keystore {
        report.keys.push(
            "local keystore restored from the snapshot, unsealed with the given root key file"
                .into(),
        );
    }
    let tenants = state
        .tenants
        .list()
        .await
        .map_err(|e| BackupError::Internal(format!("tenant records: {e:?}")))?;
    let mut opened = Vec::new();
    for tenant in &tenants {
        let mut drill = drill_tenant(
            &state,
            tenant,
            &expected,
            options.samples_per_tenant,
            &mut report.mismatches,
        )
        .await?;
        let in_snapshot = listed.get(tenant.id.as_str()).copied().unwrap_or(0);
        drill.0.documents_deleted = in_snapshot.saturating_sub(drill.0.documents_in_manifest);
        opened.push(drill);
    }
    for (tenant, count) in &expected {
        if !tenants.iter().any(|t| t.id.as_str() == tenant) {
            report.mismatches.push(format!(
                "tenant {tenant}: {count} documents in the manifest but no tenant record"
            ));
        }
    }
    if tenants.iter().any(|t| t.key_provider == "aws-kms") {
        report.keys.push(
            "aws-kms tenants: KMS keys are not in backups; their documents were decrypted through the configured KMS".into(),
        );
    }
    report.open_seconds = opened_at.elapsed().as_secs_f64();

    // 3. Rebuild the indexes and probe them.
    let indexed_at = Instant::now();
    for (tenant, (drill, samples)) in tenants.iter().zip(opened.iter_mut()) {
        if !tenant.is_active() {
            report.tenants.push(drill.clone());
            continue;
        }
        match state.search.rebuild(tenant, &super::NoProgress).await {
            Ok(rebuilt) => {
                drill.documents_indexed = rebuilt.added;
                if drill.documents_indexed != drill.documents_restored {
                    report.mismatches.push(format!(
                        "tenant {}: {} documents restored but {} indexed",
                        tenant.id, drill.documents_restored, drill.documents_indexed
                    ));
                }
            }
            Err(e) => report.mismatches.push(format!(
                "tenant {}: index rebuild failed ({})",
                tenant.id,
                e.code()
            )),
        }
        for (id, query) in samples.iter() {
            drill.probes_run += 1;
            match state.search.search(tenant, query, None, 1000).await {
                Ok(page) if page.hits.iter().any(|h| h.id == id.to_string()) => {
                    drill.probes_passed += 1
                }
                Ok(_) => report.mismatches.push(format!(
                    "tenant {}: probe search did not find document {id}",
                    tenant.id
                )),
                Err(e) => report.mismatches.push(format!(
                    "tenant {}: probe search failed ({})",
                    tenant.id,
                    e.code()
                )),
            }
        }
        report.tenants.push(drill.clone());
    }
    state.search.commit_all().await;
    report.index_seconds = indexed_at.elapsed().as_secs_f64();
    report.rto_seconds = report.restore_seconds + report.open_seconds + report.index_seconds;
    report.status = if report.passed() { "passed" } else { "failed" }.to_owned();
    Ok(report)
}

type Samples = (TenantDrill, Vec<(DocumentId, Query)>);

/// Counts, samples and decrypts one tenant's documents.
async fn drill_tenant(
    state: &SharedVault,
    tenant: &TenantRecord,
    expected: &BTreeMap<String, u64>,
    samples_wanted: usize,
    mismatches: &mut Vec<String>,
) -> Result<Samples, BackupError> {
    let mut drill = TenantDrill {
        tenant: tenant.id.to_string(),
        provider: tenant.key_provider.clone(),
        active: tenant.is_active(),
        documents_in_manifest: expected.get(tenant.id.as_str()).copied().unwrap_or(0),
        ..TenantDrill::default()
    };
    let metas = list_all(
        state.store.as_ref(),
        &ObjectName::docs_prefix(&tenant.id),
        None,
    )
    .await?;
    let mut ids: Vec<DocumentId> = metas
        .iter()
        .filter_map(|o| o.name.meta_document())
        .collect();
    drill.documents_restored = ids.len() as u64;
    if drill.documents_restored != drill.documents_in_manifest {
        mismatches.push(format!(
            "tenant {}: {} documents in the manifest, {} restored",
            tenant.id, drill.documents_in_manifest, drill.documents_restored
        ));
    }
    let mut probes = Vec::new();
    if !tenant.is_active() {
        return Ok((drill, probes));
    }
    ids.shuffle(&mut rand::thread_rng());
    for id in ids.into_iter().take(samples_wanted) {
        match decrypt_and_check(state, tenant, id).await {
            Ok(query) => {
                drill.samples_decrypted += 1;
                probes.extend(query.map(|q| (id, q)));
            }
            Err(problem) => {
                mismatches.push(format!("tenant {}: document {id}: {problem}", tenant.id))
            }
        }
    }
    Ok((drill, probes))
}

/// Decrypts a document whole and checks its plaintext SHA-256; returns a probe
/// query for one of its fields.
async fn decrypt_and_check(
    state: &SharedVault,
    tenant: &TenantRecord,
    id: DocumentId,
) -> Result<Option<Query>, String> {
    let opened = state
        .documents
        .open(tenant, &id)
        .await
        .map_err(|e| format!("cannot open its key record ({})", e.code()))?;
    let ciphertext = state
        .store
        .get(&ObjectName::doc_body(&tenant.id, &id))
        .await
        .map_err(|e| format!("body: {e}"))?;
    let mut plain = std::pin::pin!(vault_crypto::envelope::decrypt_stream(
        opened.dek.clone(),
        tenant.id.clone(),
        id,
        ciphertext,
    ));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = plain.next().await {
        let chunk = chunk.map_err(|e| format!("does not decrypt: {e}"))?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    if size != opened.metadata.size || hex::encode(hasher.finalize()) != opened.metadata.sha256 {
        return Err("decrypted bytes do not match its recorded size and SHA-256".into());
    }
    let probe = [
        "claim_id",
        "trace_number",
        "member_id",
        "payer_claim_id",
        "provider_npi",
    ]
    .iter()
    .find_map(|field| {
        let value = opened.metadata.fields.get(*field)?.first()?;
        (!value.contains('"') && !value.contains('\\'))
            .then(|| Query::parse(&format!("{field}:\"{value}\"")).ok())
            .flatten()
    });
    Ok(probe)
}

//! Unit tests of the core's operations on the in-memory store, with injected
//! faults: the paths that only the end-to-end suite (a spawned server) reached
//! before the domain had a crate of its own.

use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;
use vault_crypto::{DocumentId, TenantId};

use crate::config::Config;
use crate::credentials::{self, AuthFailure, CredentialKind, Role};
use crate::documents::{DocumentKind, Fields, UploadRequest};
use crate::extraction::Extraction;
use crate::storage::memory::{MemoryStore, Op};
use crate::storage::{ObjectName, ObjectStore};
use crate::tenants::{NewTenant, TenantRecord};
use crate::{Error, SharedVault, Vault};

/// A vault over a fresh in-memory store (keys and indexes in a temporary
/// directory, dropped with it).
struct TestVault {
    vault: SharedVault,
    store: Arc<MemoryStore>,
    operator_token: String,
    _dir: tempfile::TempDir,
}

impl TestVault {
    async fn open() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let opened = Vault::open_with_store(config, store.clone()).await.unwrap();
        let token_file = opened
            .new_operator_token
            .expect("a new vault issues a token");
        let operator_token = std::fs::read_to_string(token_file)
            .unwrap()
            .trim()
            .to_owned();
        TestVault {
            vault: opened.vault,
            store,
            operator_token,
            _dir: dir,
        }
    }

    /// Creates tenant `id` with `provider` and the defaults.
    async fn create_tenant(&self, id: &str, provider: &str) -> Result<TenantRecord, Error> {
        let new = NewTenant {
            id: TenantId::new(id).unwrap(),
            key_provider: provider.into(),
            kms_key_id: None,
            retention_days: None,
            expected_documents: None,
        };
        self.vault.lifecycle.create_tenant(new).await
    }

    /// A local-key tenant without a retention period.
    async fn tenant(&self, id: &str) -> TenantRecord {
        let new = NewTenant {
            id: TenantId::new(id).unwrap(),
            key_provider: "local".into(),
            kms_key_id: None,
            retention_days: Some(0),
            expected_documents: None,
        };
        self.vault.lifecycle.create_tenant(new).await.unwrap()
    }

    async fn upload(
        &self,
        tenant: &TenantRecord,
        body: &'static [u8],
    ) -> Result<DocumentId, Error> {
        let request = opaque_request(DocumentKind::Scan, Fields::default());
        let stream = one_chunk(body);
        self.vault
            .documents
            .store(tenant, request, stream)
            .await
            .map(|stored| stored.id)
    }
}

/// An opaque upload request of `kind` with these caller fields.
fn opaque_request(kind: DocumentKind, fields: Fields) -> UploadRequest {
    UploadRequest {
        kind,
        content_type: "application/pdf".into(),
        file_name: None,
        fields,
        extraction: Extraction::Opaque,
    }
}

/// A request body of one chunk.
fn one_chunk(
    body: &'static [u8],
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(body))])
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[tokio::test]
async fn a_tenant_is_created_once_and_the_system_id_is_reserved() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    assert_eq!(acme.branch_version, 1);
    let again = t.create_tenant("acme", "local").await.unwrap_err();
    assert_eq!(again.code(), "tenant_exists");
    for (id, provider, code) in [
        ("system", "local", "invalid_tenant_id"),
        ("beta", "aws-kms", "key_provider_disabled"),
        ("beta", "vault", "invalid_key_provider"),
    ] {
        let refused = t.create_tenant(id, provider).await.unwrap_err();
        assert_eq!(refused.code(), code, "{id} with {provider}");
    }
    assert_eq!(t.vault.tenants.list().await.unwrap().len(), 1);
    // Every provider the CLI offers (`vault_api::tenants::KEY_PROVIDERS`) is
    // one the vault knows: enabled here, or refused as not enabled.
    for provider in vault_api::tenants::KEY_PROVIDERS {
        let id = format!("p-{provider}");
        if let Err(refused) = t.create_tenant(&id, provider).await {
            assert_eq!(refused.code(), "key_provider_disabled", "{provider}");
        }
    }
}

#[tokio::test]
async fn a_tenant_whose_record_cannot_be_stored_is_not_created() {
    let t = TestVault::open().await;
    t.store.fail_prefix(Op::Put, ObjectName::TENANTS_PREFIX);
    let refused = t.create_tenant("acme", "local").await.unwrap_err();
    assert_eq!(refused.code(), "storage_unavailable", "{refused:?}");
    t.store.clear_faults();
    assert!(t.vault.tenants.list().await.unwrap().is_empty());
    // A retry after the fault succeeds (the branch key made before is reused).
    t.tenant("acme").await;
}

#[tokio::test]
async fn credentials_authenticate_until_revoked_or_expired() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let store = t.store.as_ref();
    let operator = credentials::authenticate(store, &t.operator_token, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(operator.kind, CredentialKind::Operator);

    let issued = credentials::issue_api_key(
        store,
        &acme.id,
        vec![Role::Reader, Role::Reader, Role::Uploader],
        Some(30),
        now(),
    )
    .await
    .unwrap();
    assert_eq!(issued.record.roles, vec![Role::Reader, Role::Uploader]);
    let token = issued.token.to_string();
    let found = credentials::authenticate(store, &token, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.tenant.as_ref(), Some(&acme.id));

    let later = now() + time::Duration::days(31);
    assert_eq!(
        credentials::authenticate(store, &token, later)
            .await
            .unwrap()
            .unwrap_err(),
        AuthFailure::ExpiredCredential
    );
    let wrong = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(
        credentials::authenticate(store, &wrong, now())
            .await
            .unwrap()
            .unwrap_err(),
        AuthFailure::WrongSecret
    );
    assert_eq!(
        credentials::authenticate(store, "vlt_ak_nope", now())
            .await
            .unwrap()
            .unwrap_err(),
        AuthFailure::MalformedCredential
    );

    let mut record = credentials::find_api_key(store, &issued.record.id)
        .await
        .unwrap();
    assert!(credentials::revoke(store, &mut record, now())
        .await
        .unwrap());
    assert!(!credentials::revoke(store, &mut record, now())
        .await
        .unwrap());
    assert_eq!(
        credentials::authenticate(store, &token, now())
            .await
            .unwrap()
            .unwrap_err(),
        AuthFailure::RevokedCredential
    );
    assert_eq!(
        credentials::api_keys_of(store, &acme.id)
            .await
            .unwrap()
            .len(),
        1
    );

    for (roles, days, code) in [
        (vec![], None, "invalid_roles"),
        (vec![Role::Reader], Some(0), "invalid_expiry"),
        (vec![Role::Reader], Some(3651), "invalid_expiry"),
    ] {
        let refused = credentials::issue_api_key(store, &acme.id, roles, days, now())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code);
    }

    // A store that cannot be read is a failed check, not a refusal.
    t.store.fail_nth(Op::Get, 1);
    assert!(credentials::authenticate(store, &t.operator_token, now())
        .await
        .is_err());
}

#[tokio::test]
async fn an_interrupted_operator_rotation_leaves_the_old_credential_working() {
    let t = TestVault::open().await;
    let store = t.store.as_ref();
    let current = credentials::authenticate(store, &t.operator_token, now())
        .await
        .unwrap()
        .unwrap();
    // The revocation of the old credential fails after the new one is stored.
    t.store.fail_nth(Op::Replace, 1);
    assert!(credentials::rotate_operator(store, &current.id, now())
        .await
        .is_err());
    assert!(credentials::authenticate(store, &t.operator_token, now())
        .await
        .unwrap()
        .is_ok());
    let issued = credentials::rotate_operator(store, &current.id, now())
        .await
        .unwrap();
    assert_eq!(
        credentials::authenticate(store, &t.operator_token, now())
            .await
            .unwrap()
            .unwrap_err(),
        AuthFailure::RevokedCredential
    );
    let token = issued.token.to_string();
    assert!(credentials::authenticate(store, &token, now())
        .await
        .unwrap()
        .is_ok());
}

#[tokio::test]
async fn an_upload_opens_and_one_that_fails_midway_is_never_visible() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let id = t
        .upload(&acme, b"%PDF-1.7 scanned remittance")
        .await
        .unwrap();
    let opened = t.vault.documents.open(&acme, &id).await.unwrap();
    assert_eq!(opened.metadata.size, 27);
    assert_eq!(opened.facts.kind, DocumentKind::Scan);

    // Each of the upload's three writes fails in turn: the document never shows.
    for nth in 1..=3 {
        let before = t.store.names().len();
        t.store.fail_nth(Op::Put, nth);
        let failed = t.upload(&acme, b"%PDF-1.7 another").await;
        assert!(failed.is_err(), "write {nth} failed");
        let new_docs: Vec<_> = t
            .store
            .names()
            .into_iter()
            .filter(|n| n.ends_with("/meta"))
            .collect();
        assert_eq!(new_docs.len(), 1, "only the first document has facts");
        assert!(t.store.names().len() <= before + 2);
        t.store.clear_faults();
    }
}

#[tokio::test]
async fn a_torn_key_record_fails_its_integrity_check() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let id = t.upload(&acme, b"%PDF-1.7 original").await.unwrap();
    let key = ObjectName::doc_key(&acme.id, &id);
    let record = t.store.get_bytes(&key).await.unwrap().unwrap();
    t.store.tear_next_write();
    assert!(t.store.replace(&key, record).await.is_err());
    let broken = t.vault.documents.open(&acme, &id).await.err().unwrap();
    assert!(
        matches!(broken, Error::Integrity { .. } | Error::Internal { .. }),
        "{broken:?}"
    );
}

#[tokio::test]
async fn holds_and_retention_stop_a_delete_and_a_delete_hides_the_document() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let id = t.upload(&acme, b"%PDF-1.7 held").await.unwrap();
    t.vault.lifecycle.set_hold(&acme, &id, true).await.unwrap();
    let held = t
        .vault
        .lifecycle
        .check_deletable(&acme, &id)
        .await
        .unwrap_err();
    assert_eq!(held.code(), "legal_hold");
    t.vault.lifecycle.set_hold(&acme, &id, false).await.unwrap();
    let retained = TenantRecord {
        retention_days: 30,
        ..acme.clone()
    };
    let kept = t
        .vault
        .lifecycle
        .check_deletable(&retained, &id)
        .await
        .unwrap_err();
    assert_eq!(kept.code(), "retention_period");

    // The tombstone is written, then removing the objects fails: the document is
    // gone for readers all the same, and a second delete finishes the job.
    t.store.fail_nth(Op::Delete, 2);
    assert!(t.vault.documents.delete(&acme.id, &id).await.is_err());
    assert!(t
        .vault
        .documents
        .open(&acme, &id)
        .await
        .err()
        .unwrap()
        .is_not_found());
    t.vault.documents.delete(&acme.id, &id).await.unwrap();
    assert!(t.store.names().iter().all(|n| !n.contains("/docs/")));
}

#[tokio::test]
async fn a_rewrap_that_cannot_write_a_record_reports_it_and_a_second_run_finishes() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    for _ in 0..3 {
        t.upload(&acme, b"%PDF-1.7 rotating").await.unwrap();
    }
    t.vault.lifecycle.rotate(&acme.id).await.unwrap();
    t.store.fail_nth(Op::Replace, 1);
    let first = t
        .vault
        .lifecycle
        .rewrap(&acme.id, false, &crate::progress::NoProgress)
        .await
        .unwrap();
    assert_eq!(first.failed, 1);
    assert_eq!(first.documents_rewrapped, 2);
    let second = t
        .vault
        .lifecycle
        .rewrap(&acme.id, true, &crate::progress::NoProgress)
        .await
        .unwrap();
    assert_eq!(second.failed, 0);
    assert_eq!(second.documents_rewrapped, 1);
    assert_eq!(second.min_decryption_version, 2);
}

#[tokio::test]
async fn an_audit_event_that_cannot_be_stored_is_an_error_not_a_loss() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let event = crate::audit::new_event(
        "document.download",
        "operator:x".into(),
        crate::audit::Outcome::Allowed,
        200,
    );
    let segments = ObjectName::audit_segments_prefix(&acme.id);
    t.store.fail_prefix(Op::Put, &segments);
    let failed = t.vault.audit.append(&acme.id, event.clone()).await;
    assert!(failed.is_err());
    assert_eq!(Error::from(failed.unwrap_err()).code(), "audit_unavailable");
    t.store.clear_faults();
    let seq = t.vault.audit.append(&acme.id, event).await.unwrap();
    let stored = crate::storage::list_all(t.store.as_ref(), &segments, None)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "one segment, holding event {seq}");
}

#[test]
fn audit_and_backup_failures_keep_their_causes_for_the_log_only() {
    let e = Error::from(crate::audit::AuditError::Corrupt("segment 7".into()));
    assert_eq!(e.code(), "audit_unavailable");
    assert!(!e.to_string().contains("segment 7"));
    assert!(e.for_log().contains("segment 7"));
    assert_eq!(
        Error::from(crate::backup::BackupError::Busy).code(),
        "backup_running"
    );
}

/// Uploads a document with a claim id, through the whole upload (stored, then
/// indexed).
async fn upload_claim(t: &TestVault, tenant: &TenantRecord, claim: &str) -> DocumentId {
    let mut fields = Fields::default();
    fields.insert("claim_id".into(), vec![claim.to_owned()]);
    let request = opaque_request(DocumentKind::Claim, fields);
    let body = one_chunk(b"%PDF");
    t.vault
        .tenant_documents
        .upload(tenant, request, None, body, None)
        .await
        .unwrap()
        .id
}

async fn claim_hits(t: &TestVault, tenant: &TenantRecord, claim: &str) -> Result<u64, Error> {
    let query = vault_index::query::Query::parse(&format!("claim_id:{claim}")).unwrap();
    let page = t.vault.search.search(tenant, &query, None, 10).await?;
    Ok(page.total)
}

/// Waits until a job is filling an index (its reconcile phase started).
async fn until_reconciling(t: &TestVault, id: &str) {
    for _ in 0..200 {
        let job = t.vault.maintenance.jobs.get(id).unwrap();
        assert_eq!(job.state, crate::jobs::JobState::Running, "{job:?}");
        if job.progress.phase == "reconcile" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} never started filling its index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_rebuild_leaves_the_index_searchable_not_reconciling() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    for i in 0..6 {
        upload_claim(&t, &acme, &format!("CLM{i}")).await;
    }
    assert_eq!(claim_hits(&t, &acme, "CLM3").await.unwrap(), 1);
    // Every read slow: the rebuild is still filling the emptied index when
    // it is cancelled.
    t.store.delay(Op::Get, std::time::Duration::from_secs(2));
    let started = t
        .vault
        .maintenance
        .rebuild_index(&acme.id, "operator:test")
        .await
        .unwrap();
    let id = started.record.id.clone();
    until_reconciling(&t, &id).await;
    t.vault.maintenance.jobs.cancel(&id).unwrap();
    let cancelled = t.vault.maintenance.jobs.wait(&id).await.unwrap();
    assert_eq!(cancelled.state, crate::jobs::JobState::Cancelled);
    assert_eq!(started.outcome().await.unwrap_err().code(), "job_cancelled");
    t.store.clear_faults();
    // The guard reconciled the half-filled index again: searches are complete
    // (without it the index would stay "reconciling" and searches would fail
    // with index_rebuilding after a minute).
    for i in 0..6 {
        assert_eq!(claim_hits(&t, &acme, &format!("CLM{i}")).await.unwrap(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_index_rotation_leaves_no_next_index_behind() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    for i in 0..6 {
        upload_claim(&t, &acme, &format!("CLM{i}")).await;
    }
    t.store.delay(Op::Get, std::time::Duration::from_secs(2));
    let started = t
        .vault
        .maintenance
        .rotate_index(&acme.id, None, "operator:test")
        .await
        .unwrap();
    until_reconciling(&t, &started.record.id).await;
    t.vault.maintenance.jobs.cancel(&started.record.id).unwrap();
    let cancelled = t
        .vault
        .maintenance
        .jobs
        .wait(&started.record.id)
        .await
        .unwrap();
    assert_eq!(cancelled.state, crate::jobs::JobState::Cancelled);
    t.store.clear_faults();
    // The record kept the old index version; a new rotation may start (the
    // half-built index was unregistered) and succeeds.
    assert_eq!(
        t.vault
            .tenants
            .require(&acme.id)
            .await
            .unwrap()
            .index_version,
        1
    );
    let again = t
        .vault
        .maintenance
        .rotate_index(&acme.id, None, "operator:test")
        .await
        .unwrap();
    match again.outcome().await.unwrap() {
        crate::jobs::JobResult::Reconcile(report) => assert_eq!(report.added, 6),
        other => panic!("unexpected result {other:?}"),
    }
    let record = t.vault.tenants.require(&acme.id).await.unwrap();
    assert_eq!(record.index_version, 2);
    assert_eq!(claim_hits(&t, &record, "CLM5").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgrown_index_is_replanned_as_a_job_audited_before_it_starts() {
    let t = TestVault::open().await;
    // What a server runs: re-plans, and the committer (an index counts committed
    // documents).
    tokio::spawn(t.vault.clone().run_maintenance());
    tokio::spawn(t.vault.search.clone().run_committer());
    let new = NewTenant {
        id: TenantId::new("acme").unwrap(),
        key_provider: "local".into(),
        kms_key_id: None,
        retention_days: Some(0),
        expected_documents: Some(1),
    };
    let acme = t.vault.lifecycle.create_tenant(new).await.unwrap();
    for i in 0..8 {
        upload_claim(&t, &acme, &format!("CLM{i}")).await;
        if i >= 4 {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
    }
    let mut replanned = None;
    for _ in 0..200 {
        let jobs = t.vault.maintenance.jobs.list().jobs;
        if let Some(job) = jobs
            .iter()
            .find(|j| j.kind == "index.replan" && j.state.is_finished())
        {
            replanned = Some(job.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let job = replanned.expect("a re-plan job ran");
    assert_eq!(
        job.state,
        crate::jobs::JobState::Succeeded,
        "{:?}",
        job.error
    );
    assert_eq!(job.actor, "system");
    let record = t.vault.tenants.require(&acme.id).await.unwrap();
    assert!(record.planned_documents.unwrap() >= 20, "{record:?}");
    assert_eq!(record.index_version, 2);
    let log = t
        .vault
        .audit
        .read_events(&acme.id, Default::default(), 100)
        .await
        .unwrap();
    assert!(log
        .events
        .iter()
        .any(|e| e.action == "index.replan" && e.actor == "system"));
    assert_eq!(claim_hits(&t, &record, "CLM4").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_of_one_index_never_run_together() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    for i in 0..4 {
        upload_claim(&t, &acme, &format!("CLM{i}")).await;
    }
    // Slow reads keep the first rotation before its next index is registered
    // while the second one asks.
    t.store
        .delay(Op::Get, std::time::Duration::from_millis(300));
    let (first, second) = tokio::join!(
        t.vault
            .lifecycle
            .rotate_index(&acme.id, None, &crate::progress::NoProgress),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            t.vault
                .lifecycle
                .rotate_index(&acme.id, Some(100), &crate::progress::NoProgress)
                .await
        }
    );
    t.store.clear_faults();
    assert_eq!(first.unwrap().added, 4);
    assert_eq!(second.unwrap_err().code(), "index_rotation_in_progress");
    let record = t.vault.tenants.require(&acme.id).await.unwrap();
    assert_eq!(record.index_version, 2);
    for i in 0..4 {
        assert_eq!(
            claim_hits(&t, &record, &format!("CLM{i}")).await.unwrap(),
            1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_tenant_disabled_through_another_server_is_seen_within_the_cache_time() {
    // Two servers' registries over one store.
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let here = crate::tenants::TenantRegistry::new(store.clone());
    let there = crate::tenants::TenantRegistry::new(store);
    let record = TenantRecord {
        format: 1,
        id: TenantId::new("acme").unwrap(),
        key_provider: "local".into(),
        kek_id: "acme".into(),
        branch_version: 1,
        min_decryption_version: 1,
        index_version: 1,
        status: crate::tenants::TenantStatus::Active,
        retired_kek_ids: Vec::new(),
        retention_days: 0,
        planned_documents: Some(10),
        created_at: now(),
    };
    there.create(record.clone()).await.unwrap();
    assert!(here.require_active(&record.id).await.is_ok());
    there
        .modify(&record.id, |r| {
            r.status = crate::tenants::TenantStatus::Disabled;
            Ok(true)
        })
        .await
        .unwrap();
    // Cached here for a moment, then read again.
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    assert!(here.require_active(&record.id).await.is_ok());
    tokio::time::advance(crate::tenants::TENANT_CACHE_TTL).await;
    let refused = here.require_active(&record.id).await.unwrap_err();
    assert_eq!(refused.code(), "tenant_not_found");
}

impl TestVault {
    /// Another replica of this vault: its own data directory, the same store and
    /// a copy of the root key file.
    async fn replica(&self) -> (SharedVault, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (self.replica_in(dir.path()).await, dir)
    }

    /// A replica whose files are under `dir` (opened again there: a restart).
    async fn replica_in(&self, dir: &std::path::Path) -> SharedVault {
        self.replica_with(dir, |_| {}).await
    }

    /// [`TestVault::replica_in`] with its settings changed by `tweak`.
    async fn replica_with(
        &self,
        dir: &std::path::Path,
        tweak: impl FnOnce(&mut Config),
    ) -> SharedVault {
        let root_key = dir.join("root.key");
        std::fs::copy(self._dir.path().join("keys/root.key"), &root_key).unwrap();
        let mut config = Config {
            data_dir: dir.join("data"),
            ..Config::default()
        };
        config.keys.root_key_file = Some(root_key);
        // The key custody is shared: on S3 it is the bucket itself.
        config.keys.custody = Some(self._dir.path().join("keys").display().to_string());
        tweak(&mut config);
        let opened = Vault::open_with_store(config, self.store.clone())
            .await
            .unwrap();
        assert!(
            opened.new_operator_token.is_none(),
            "a replica issued a second first operator"
        );
        opened.vault
    }
}

#[tokio::test]
async fn a_replica_serves_tenants_and_documents_of_the_others_at_once() {
    let t = TestVault::open().await;
    let (replica, _dir) = t.replica().await;
    let acme = t.tenant("acme").await;
    let here = t.upload(&acme, b"%PDF-1.7 uploaded here").await.unwrap();
    let opened = replica.documents.open(&acme, &here).await.unwrap();
    assert_eq!(opened.metadata.size, 22);
    let request = opaque_request(DocumentKind::Scan, Fields::default());
    let body = one_chunk(b"%PDF-1.7 uploaded there");
    let there = replica
        .documents
        .store(&acme, request, body)
        .await
        .unwrap()
        .id;
    assert_eq!(
        t.vault
            .documents
            .open(&acme, &there)
            .await
            .unwrap()
            .metadata
            .size,
        23
    );
    // A rotation there is used here (a version this one has not seen yet).
    replica.lifecycle.rotate(&acme.id).await.unwrap();
    let acme = replica.tenants.require(&acme.id).await.unwrap();
    let rotated = t.upload(&acme, b"%PDF-1.7 after rotation").await.unwrap();
    replica.documents.open(&acme, &rotated).await.unwrap();
}

#[tokio::test]
async fn a_replica_with_another_root_key_refuses_to_start_and_writes_nothing() {
    let t = TestVault::open().await;
    t.tenant("acme").await;
    let before = t.store.names();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.keys.custody = Some(t._dir.path().join("keys").display().to_string());
    // No root key file: refused, and none is made up.
    config.keys.root_key_file = Some(dir.path().join("root.key"));
    let err = Vault::open_with_store(config.clone(), t.store.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("every replica needs a copy"),
        "{err}"
    );
    assert!(!dir.path().join("root.key").exists());
    // Another root key: refused.
    let other = dir.path().join("other.key");
    std::fs::write(&other, [7u8; 32]).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    config.keys.root_key_file = Some(other);
    let err = Vault::open_with_store(config, t.store.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("not this vault's root key"),
        "{err}"
    );
    assert_eq!(t.store.names(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_a_new_vault_together_issue_one_first_operator() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let root_key = dir.path().join("root.key");
    std::fs::write(&root_key, [3u8; 32]).unwrap();
    std::fs::set_permissions(
        &root_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let open = |n: usize| {
        let mut config = Config {
            data_dir: dir.path().join(format!("replica-{n}")),
            ..Config::default()
        };
        config.keys.root_key_file = Some(root_key.clone());
        let store = store.clone();
        async move { Vault::open_with_store(config, store).await.unwrap() }
    };
    let opened = futures::future::join_all((0..4).map(open)).await;
    let tokens: Vec<_> = opened
        .iter()
        .filter_map(|o| o.new_operator_token.clone())
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let operators: Vec<_> = store
        .names()
        .into_iter()
        .filter(|n| n.starts_with(ObjectName::OPERATORS_PREFIX))
        .collect();
    assert_eq!(operators.len(), 1);
    let token = std::fs::read_to_string(&tokens[0]).unwrap();
    let found = credentials::authenticate(opened[3].vault.store.as_ref(), token.trim(), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.kind, CredentialKind::Operator);
    for n in 0..4 {
        let file = dir.path().join(format!("replica-{n}/operator-token"));
        assert_eq!(file.exists(), tokens[0] == file, "{}", file.display());
    }
}

/// Replicas append to one tenant's log at the same time: no append fails, the
/// sequence numbers are all different, and the log verifies as one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_append_to_one_audit_log_without_forking_it() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let (replica, _dir) = t.replica().await;
    let event = |n: usize| {
        crate::audit::new_event(
            "document.download",
            format!("operator:{n}"),
            crate::audit::Outcome::Allowed,
            200,
        )
    };
    let appends = (0..60).map(|n| {
        let audit = if n % 2 == 0 {
            t.vault.audit.clone()
        } else {
            replica.audit.clone()
        };
        let (tenant, event) = (acme.id.clone(), event(n));
        tokio::spawn(async move { audit.append(&tenant, event).await })
    });
    let mut seqs = Vec::new();
    for handle in futures::future::join_all(appends).await {
        seqs.push(
            handle
                .unwrap()
                .expect("an append failed through contention"),
        );
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 60, "two appends got the same sequence number");
    t.vault.audit.checkpoint_now(&acme.id).await.unwrap();
    replica.audit.checkpoint_now(&acme.id).await.unwrap();
    let report = verify_log(&t, &acme.id).await;
    assert!(report.is_intact(), "{:?}", report.problems);
    assert!(report.events >= 60, "{}", report.events);

    // One replica's tail is behind the other's: its next write loses the race for
    // the segment, follows the other and lands as the next one.
    t.vault.audit.append(&acme.id, event(100)).await.unwrap();
    let races = t.vault.metrics.audit_segment_races.get();
    replica.audit.append(&acme.id, event(101)).await.unwrap();
    let seq = t.vault.audit.append(&acme.id, event(102)).await.unwrap();
    assert_eq!(t.vault.metrics.audit_segment_races.get(), races + 1);
    assert_eq!(seq, report.events + 2);
    let report = verify_log(&t, &acme.id).await;
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.events, seq + 1);
}

/// A log that grew by many segments is checkpointed at once, without waiting
/// for the interval: a replica restarted more often than the interval would
/// otherwise read the whole log each time it opens it.
#[tokio::test]
async fn a_log_is_checkpointed_every_few_dozen_segments_whatever_the_interval() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let checkpoints = |t: &TestVault| {
        t.store
            .names()
            .iter()
            .filter(|n| n.contains("/audit/checkpoints/"))
            .count()
    };
    let before = checkpoints(&t);
    // One append at a time: one segment each.
    for n in 0..70 {
        let event = crate::audit::new_event(
            "document.download",
            format!("operator:{n}"),
            crate::audit::Outcome::Allowed,
            200,
        );
        t.vault.audit.append(&acme.id, event).await.unwrap();
    }
    assert!(
        checkpoints(&t) > before,
        "no checkpoint after 70 segments: {:?}",
        t.store.names()
    );
    let latest = crate::audit::latest_checkpoint(t.store.as_ref(), &acme.id)
        .await
        .unwrap()
        .expect("a checkpoint");
    let verified = latest
        .verify(&t.vault.audit.signer.public, &acme.id)
        .unwrap();
    assert!(verified.checkpoint.tree_size >= 64);
}

impl TestVault {
    /// An opaque upload through the tenant's documents, with an Idempotency-Key.
    async fn keyed_upload(
        &self,
        tenant: &TenantRecord,
        key: &str,
        body: &'static [u8],
    ) -> Result<crate::tenant_documents::Filed, Error> {
        let request = opaque_request(DocumentKind::Scan, Fields::default());
        let stream = one_chunk(body);
        self.vault
            .tenant_documents
            .upload(tenant, request, Some(key), stream, None)
            .await
    }

    fn visible_documents(&self) -> usize {
        self.store
            .names()
            .iter()
            .filter(|n| n.ends_with("/meta"))
            .count()
    }
}

/// A keyed upload claims its key before its document becomes visible: whatever
/// step fails or crashes, a retry gets the same document or stores one, never a
/// second.
#[tokio::test]
async fn a_keyed_upload_that_fails_at_any_step_is_retried_into_one_document() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let body: &[u8] = b"%PDF-1.7 claim 1";
    // Body, key record, claim, facts: each write fails in turn; the retry (the
    // same request, same key) then stores exactly one document.
    for nth in 1..=4 {
        let key = format!("retry-{nth}");
        t.store.fail_nth(Op::Put, nth);
        let before = t.visible_documents();
        assert!(
            t.keyed_upload(&acme, &key, body).await.is_err(),
            "write {nth}"
        );
        t.store.clear_faults();
        assert_eq!(t.visible_documents(), before);
        let first = t.keyed_upload(&acme, &key, body).await.unwrap();
        assert!(!first.replayed, "write {nth}");
        let again = t.keyed_upload(&acme, &key, body).await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.id, first.id);
        assert_eq!(t.visible_documents(), before + 1, "write {nth}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_claim_left_by_a_crashed_upload_is_waited_for_then_taken_over() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let body: &[u8] = b"%PDF-1.7 claim 2";
    // What a crash between the claim and the facts leaves: a claim naming a
    // document that never became visible.
    let key = "crashed";
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"acme\0crashed"));
    let claim = ObjectName::idempotency(&acme.id, &hash);
    let crashed = DocumentId::random();
    let record = |claimed_at: i64| {
        Bytes::from(
            serde_json::json!({"format": 2, "document": crashed.to_string(), "claimed_at": claimed_at})
                .to_string(),
        )
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    t.store.put_new_bytes(&claim, record(now)).await.unwrap();
    // Young: the upload may still be finishing, so the retry is asked to wait.
    let busy = t.keyed_upload(&acme, key, body).await.unwrap_err();
    assert_eq!(busy.code(), "idempotency_key_in_flight");
    assert_eq!(t.visible_documents(), 0);
    // Old: it crashed. The retry takes the key over, once.
    t.store.replace(&claim, record(now - 3600)).await.unwrap();
    let taken = t.keyed_upload(&acme, key, body).await.unwrap();
    assert!(!taken.replayed);
    assert_ne!(taken.id, crashed);
    let again = t.keyed_upload(&acme, key, body).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.id, taken.id);
    assert_eq!(t.visible_documents(), 1);
    // A record of format 1 (written after its document was visible) still answers.
    let old_key_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"acme\0format-1"));
    t.store
        .put_new_bytes(
            &ObjectName::idempotency(&acme.id, &old_key_hash),
            Bytes::from(
                serde_json::json!({"format": 1, "document": taken.id.to_string()}).to_string(),
            ),
        )
        .await
        .unwrap();
    let replayed = t.keyed_upload(&acme, "format-1", body).await.unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.id, taken.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_with_one_key_store_one_document() {
    let t = Arc::new(TestVault::open().await);
    let acme = t.tenant("acme").await;
    let uploads = (0..6).map(|_| {
        let (t, acme) = (t.clone(), acme.clone());
        tokio::spawn(async move { t.keyed_upload(&acme, "same", b"%PDF-1.7 claim 3").await })
    });
    let mut ids = Vec::new();
    for upload in futures::future::join_all(uploads).await {
        match upload.unwrap() {
            Ok(filed) => ids.push(filed.id),
            Err(e) => assert_eq!(e.code(), "idempotency_key_in_flight"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(t.visible_documents(), 1);
}

/// What the server's audit middleware records for a document change.
async fn record_change(vault: &SharedVault, tenant: &TenantRecord, action: &str, id: &DocumentId) {
    let mut event = crate::audit::new_event(
        action,
        "apikey:0000000000000000".into(),
        crate::audit::Outcome::Allowed,
        200,
    );
    event.document = Some(id.to_string());
    vault.audit.append(&tenant.id, event).await.unwrap();
}

/// Uploads claims `{prefix}-0` to `{prefix}-{n-1}` through the first replica,
/// each in the log.
async fn logged_claims(
    t: &TestVault,
    tenant: &TenantRecord,
    prefix: &str,
    n: usize,
) -> Vec<DocumentId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = upload_claim(t, tenant, &format!("{prefix}-{i}")).await;
        record_change(&t.vault, tenant, "document.upload", &id).await;
        ids.push(id);
    }
    ids
}

/// Changes a replica has not seen: an upload of claim `{prefix}-9` and the
/// delete of `deleted`, both in the log.
async fn upload_and_delete_logged(
    t: &TestVault,
    tenant: &TenantRecord,
    prefix: &str,
    deleted: &DocumentId,
) {
    let later = upload_claim(t, tenant, &format!("{prefix}-9")).await;
    record_change(&t.vault, tenant, "document.upload", &later).await;
    t.vault
        .tenant_documents
        .delete(tenant, deleted)
        .await
        .unwrap();
    record_change(&t.vault, tenant, "document.delete", deleted).await;
}

async fn hits_on(vault: &SharedVault, tenant: &TenantRecord, claim: &str) -> u64 {
    let query = vault_index::query::Query::parse(&format!("claim_id:{claim}")).unwrap();
    vault
        .search
        .search(tenant, &query, None, 10)
        .await
        .unwrap()
        .total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_the_uploads_and_deletes_of_another() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let (replica, _dir) = t.replica().await;
    // The replica's index is open (and reconciled) before the other's upload.
    assert_eq!(hits_on(&replica, &acme, "C-1").await, 0);
    let id = upload_claim(&t, &acme, "C-1").await;
    record_change(&t.vault, &acme, "document.upload", &id).await;
    assert_eq!(hits_on(&replica, &acme, "C-1").await, 0, "not followed yet");
    let followed = replica.catch_up.follow(&acme.id).await.unwrap();
    assert_eq!((followed.added, followed.removed), (1, 0));
    assert_eq!(hits_on(&replica, &acme, "C-1").await, 1);
    // Nothing new: nothing done.
    let again = replica.catch_up.follow(&acme.id).await.unwrap();
    assert_eq!(again, crate::catch_up::Followed::default());

    // Deleted there: dropped here.
    t.vault.tenant_documents.delete(&acme, &id).await.unwrap();
    record_change(&t.vault, &acme, "document.delete", &id).await;
    let followed = replica.catch_up.follow(&acme.id).await.unwrap();
    assert_eq!((followed.added, followed.removed), (0, 1));
    assert_eq!(hits_on(&replica, &acme, "C-1").await, 0);

    // Its own uploads are in its index already: not opened again.
    let mut fields = Fields::default();
    fields.insert("claim_id".into(), vec!["C-2".to_owned()]);
    let request = opaque_request(DocumentKind::Claim, fields);
    let body = one_chunk(b"%PDF");
    let own = replica
        .tenant_documents
        .upload(&acme, request, None, body, None)
        .await
        .unwrap()
        .id;
    record_change(&replica, &acme, "document.upload", &own).await;
    let followed = replica.catch_up.follow(&acme.id).await.unwrap();
    assert_eq!(followed.added, 0);
    // And the first one follows it.
    assert_eq!(hits_on(&t.vault, &acme, "C-2").await, 0);
    assert_eq!(t.vault.catch_up.follow(&acme.id).await.unwrap().added, 1);
    assert_eq!(hits_on(&t.vault, &acme, "C-2").await, 1);
}

/// A document that can never be opened (its key record corrupt) does not stop
/// a replica following the log: it is left out and counted, the documents after
/// it are followed, and the replica's searches say they may be incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_cannot_be_opened_is_left_out_and_following_goes_on() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let (replica, _dir) = t.replica().await;
    assert_eq!(hits_on(&replica, &acme, "C-1").await, 0);
    let broken = upload_claim(&t, &acme, "C-1").await;
    record_change(&t.vault, &acme, "document.upload", &broken).await;
    let good = upload_claim(&t, &acme, "C-2").await;
    record_change(&t.vault, &acme, "document.upload", &good).await;
    let name = ObjectName::doc_key(&acme.id, &broken);
    let mut bytes = t.store.get_bytes(&name).await.unwrap().unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    t.store.replace(&name, Bytes::from(bytes)).await.unwrap();

    let followed = replica.catch_up.follow(&acme.id).await.unwrap();
    assert_eq!((followed.added, followed.left_out), (1, 1));
    let query = vault_index::query::Query::parse("claim_id:C-2").unwrap();
    let page = replica
        .search
        .search(&acme, &query, None, 10)
        .await
        .unwrap();
    assert!(page.total == 1 && !page.complete, "{page:?}");
    // Followed past it: nothing to do at the next tick.
    assert_eq!(
        replica.catch_up.follow(&acme.id).await.unwrap(),
        crate::catch_up::Followed::default()
    );
    // A rebuild cannot open it either: still incomplete. Once the document is
    // gone from the store, a rebuild leaves nothing out and clears the flag.
    let progress = crate::progress::NoProgress;
    let report = replica.search.rebuild(&acme, &progress).await.unwrap();
    assert_eq!(report.failed, 1);
    let page = replica
        .search
        .search(&acme, &query, None, 10)
        .await
        .unwrap();
    assert!(!page.complete);
    t.store
        .delete(&ObjectName::doc_meta(&acme.id, &broken))
        .await
        .unwrap();
    let report = replica.search.rebuild(&acme, &progress).await.unwrap();
    assert_eq!(report.failed, 0);
    let page = replica
        .search
        .search(&acme, &query, None, 10)
        .await
        .unwrap();
    assert!(page.complete && page.total == 1, "{page:?}");
}

/// A replica with an empty data directory opens a tenant's index from the
/// latest snapshot in the store and reconciles it with the store: it answers
/// as the replica that wrote the snapshot, including what changed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_opens_its_index_from_the_snapshot_and_reconciles_it() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let ids = logged_claims(&t, &acme, "S", 5).await;
    assert_eq!(hits_on(&t.vault, &acme, "S-1").await, 1);
    t.vault.catch_up.follow(&acme.id).await.unwrap();
    assert_eq!(t.vault.search.snapshot_all().await, 1);
    assert_eq!(
        t.vault.search.snapshot_all().await,
        0,
        "an unchanged index was snapshotted again"
    );
    // After the snapshot: one upload, one delete.
    upload_and_delete_logged(&t, &acme, "S", &ids[0]).await;
    assert_eq!(
        t.vault.search.snapshot_all().await,
        0,
        "a snapshot younger than half the interval was replaced"
    );

    let (replica, _dir) = t.replica().await;
    replica.search.tenant_index(&acme).await.unwrap();
    assert_eq!(replica.metrics.index_snapshots_restored.get(), 1);
    replica.catch_up.follow(&acme.id).await.unwrap();
    for (claim, hits) in [("S-0", 0), ("S-1", 1), ("S-4", 1), ("S-9", 1)] {
        assert_eq!(hits_on(&replica, &acme, claim).await, hits, "{claim}");
    }
}

/// A replica opening an index from a snapshot that records where the log
/// stood needs no listing of the tenant's documents to serve complete
/// searches: it follows the log from the snapshot's position. (The documents
/// cannot be listed here at all; the background check against the store then
/// fails, and searches are right regardless.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_from_a_snapshot_catches_up_from_the_log_without_listing_documents() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let ids = logged_claims(&t, &acme, "L", 4).await;
    assert_eq!(hits_on(&t.vault, &acme, "L-1").await, 1);
    t.vault.catch_up.follow(&acme.id).await.unwrap();
    assert_eq!(t.vault.search.snapshot_all().await, 1);
    // After the snapshot: an upload and a delete, in the log.
    upload_and_delete_logged(&t, &acme, "L", &ids[0]).await;

    t.store
        .fail_prefix(Op::List, &ObjectName::docs_prefix(&acme.id));
    let (replica, _dir) = t.replica().await;
    replica.search.tenant_index(&acme).await.unwrap();
    assert_eq!(replica.metrics.index_snapshots_restored.get(), 1);
    let followed = replica.catch_up.follow(&acme.id).await.unwrap();
    assert_eq!((followed.added, followed.removed), (1, 1));
    for (claim, hits) in [("L-0", 0), ("L-1", 1), ("L-3", 1), ("L-9", 1)] {
        assert_eq!(hits_on(&replica, &acme, claim).await, hits, "{claim}");
    }
    t.store.clear_faults();
}

/// A restarted replica whose kept index recorded where the log stood at its
/// last commit serves complete searches by following the log from there: its
/// time to ready grows with the changes made while it was down, not with the
/// tenant's documents (which cannot be listed here at all). Each runtime below
/// is one run of the replica's process; dropping it ends every task, closing
/// the index and the data directory.
#[test]
fn a_restarted_replica_follows_the_log_from_its_index_without_listing_documents() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let t = first.block_on(TestVault::open());
    let acme = first.block_on(t.tenant("acme"));
    let ids = first.block_on(logged_claims(&t, &acme, "R", 4));
    let replica_dir = tempfile::tempdir().unwrap();
    let run = runtime();
    run.block_on(async {
        let replica = t.replica_in(replica_dir.path()).await;
        assert_eq!(hits_on(&replica, &acme, "R-1").await, 1);
        replica.catch_up.follow(&acme.id).await.unwrap();
        replica.search.commit_all().await;
    });
    drop(run);

    // While it is down: an upload and a delete, in the log.
    first.block_on(upload_and_delete_logged(&t, &acme, "R", &ids[0]));
    t.store
        .fail_prefix(Op::List, &ObjectName::docs_prefix(&acme.id));
    let run = runtime();
    run.block_on(async {
        let replica = t.replica_in(replica_dir.path()).await;
        replica.search.tenant_index(&acme).await.unwrap();
        let followed = replica.catch_up.follow(&acme.id).await.unwrap();
        assert_eq!((followed.added, followed.removed), (1, 1));
        for (claim, hits) in [("R-0", 0), ("R-1", 1), ("R-3", 1), ("R-9", 1)] {
            assert_eq!(hits_on(&replica, &acme, claim).await, hits, "{claim}");
        }
    });
    drop(run);
    t.store.clear_faults();
}

/// A snapshot that does not open (damaged, or sealed for another tenant) is
/// passed over: the index is built from the store, complete all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_passed_over_and_the_index_built_from_the_store() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let id = upload_claim(&t, &acme, "D-1").await;
    record_change(&t.vault, &acme, "document.upload", &id).await;
    assert_eq!(hits_on(&t.vault, &acme, "D-1").await, 1);
    assert_eq!(t.vault.search.snapshot_all().await, 1);
    let name = t
        .store
        .names()
        .into_iter()
        .find(|n| n.starts_with(ObjectName::INDEX_SNAPSHOTS_PREFIX))
        .unwrap();
    let name = ObjectName::parse(&name).unwrap();
    let mut bytes = t.store.get_bytes(&name).await.unwrap().unwrap().to_vec();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x55;
    t.store.delete(&name).await.unwrap();
    t.store
        .put_new_bytes(&name, Bytes::from(bytes))
        .await
        .unwrap();

    let (replica, _dir) = t.replica().await;
    assert_eq!(hits_on(&replica, &acme, "D-1").await, 1);
    assert_eq!(replica.metrics.index_snapshots_restored.get(), 0);
}

/// A tenant's key work runs on one replica at a time: a rewrap or rotation asked
/// of one while another holds the tenant's lease is refused, and goes once the
/// lease is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_work_runs_on_one_replica_at_a_time() {
    use crate::storage::lease::{Lease, LeaseTiming};
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let (replica, _dir) = t.replica().await;
    let held = Lease::acquire(
        t.vault.store.clone(),
        &ObjectName::tenant_lease_prefix(&acme.id, "keys"),
        "another-host:/data",
        "key.rewrap",
        LeaseTiming {
            refresh: std::time::Duration::from_secs(10),
            stale: std::time::Duration::from_secs(60),
        },
    )
    .await
    .unwrap();
    let refused = replica
        .maintenance
        .rewrap(&acme.id, false, "operator:test")
        .await
        .err()
        .expect("refused while held elsewhere");
    assert_eq!(refused.code(), "running_elsewhere");
    let refused = replica.maintenance.rotate_keys(&acme.id).await.unwrap_err();
    assert_eq!(refused.code(), "running_elsewhere");
    held.release().await;
    replica.maintenance.rotate_keys(&acme.id).await.unwrap();
    let started = replica
        .maintenance
        .rewrap(&acme.id, false, "operator:test")
        .await
        .unwrap();
    replica
        .maintenance
        .jobs
        .wait(&started.record.id)
        .await
        .unwrap();
    // Released when the job ended: nothing left under the prefix.
    let left = crate::storage::list_all(
        t.store.as_ref(),
        &ObjectName::tenant_lease_prefix(&acme.id, "keys"),
        None,
    )
    .await
    .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// What a crash between an upload's body and its facts leaves is removed once it
/// is older than any upload may take; an upload in flight, or a visible
/// document, is never touched.
#[tokio::test]
async fn the_leftovers_of_crashed_uploads_are_collected_after_the_grace_period() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let kept = t.upload(&acme, b"%PDF-1.7 kept").await.unwrap();
    let crashed = DocumentId::random();
    for name in [
        ObjectName::doc_body(&acme.id, &crashed),
        ObjectName::doc_key(&acme.id, &crashed),
    ] {
        t.store
            .put_new_bytes(&name, Bytes::from_static(b"sealed bytes"))
            .await
            .unwrap();
    }
    // Young: it may be an upload in flight.
    let first = t.vault.leftovers.collect().await.unwrap().unwrap();
    assert_eq!((first.documents, first.young), (0, 1));
    // Older than the grace period (the transfer limit plus ten minutes).
    let grace = t.vault.config.limits.transfer_timeout_secs + 600;
    t.store.age(
        &ObjectName::docs_prefix(&acme.id),
        std::time::Duration::from_secs(grace + 60),
    );
    let second = t.vault.leftovers.collect().await.unwrap().unwrap();
    assert_eq!((second.documents, second.objects, second.young), (1, 2, 0));
    assert_eq!(t.vault.metrics.leftovers_removed.get(), 2);
    let left: Vec<String> = t
        .store
        .names()
        .into_iter()
        .filter(|n| n.contains(&crashed.to_string()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    t.vault.documents.open(&acme, &kept).await.unwrap();
}

/// A pass over every document is due once a period for the whole vault: a
/// replica that starts (or wakes) just after another one's pass does not list
/// every document again; once the record of that pass is old, it does.
#[tokio::test]
async fn a_leftovers_pass_is_due_once_a_period_for_every_replica() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let crashed = DocumentId::random();
    let body = ObjectName::doc_body(&acme.id, &crashed);
    let grace = t.vault.config.limits.transfer_timeout_secs + 600;
    // A pass (another replica's, say) just finished.
    t.vault.leftovers.collect().await.unwrap().unwrap();
    t.store
        .put_new_bytes(&body, Bytes::from_static(b"sealed bytes"))
        .await
        .unwrap();
    t.store.age(
        &ObjectName::docs_prefix(&acme.id),
        std::time::Duration::from_secs(grace + 60),
    );
    let skipped = t.vault.leftovers.collect_when_due().await.unwrap().unwrap();
    assert_eq!(skipped.documents + skipped.young, 0, "{skipped:?}");
    assert!(t.store.head(&body).await.unwrap().is_some());
    // An hour (the period, at most) later it is due.
    t.store
        .age("system/leftovers/", std::time::Duration::from_secs(3600));
    let due = t.vault.leftovers.collect_when_due().await.unwrap().unwrap();
    assert_eq!((due.documents, due.objects), (1, 1), "{due:?}");
    assert!(t.store.head(&body).await.unwrap().is_none());
}

/// A lease this process holds is as live for its other work as another
/// replica's: two rotations on one server do not both run.
#[tokio::test(start_paused = true)]
async fn a_lease_held_here_keeps_out_this_servers_other_work_too() {
    use crate::storage::lease::{Lease, LeaseError, LeaseTiming};
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let prefix = ObjectName::vault_lease_prefix("test");
    let timing = LeaseTiming {
        refresh: std::time::Duration::from_secs(10),
        stale: std::time::Duration::from_secs(60),
    };
    let first = Lease::acquire(store.clone(), &prefix, "me:/data", "one", timing)
        .await
        .unwrap();
    let second = Lease::acquire(store.clone(), &prefix, "me:/data", "two", timing).await;
    assert!(
        matches!(second, Err(LeaseError::Held { ref operation, .. }) if operation == "one"),
        "a second holder in this process"
    );
    first.release().await;
    Lease::acquire(store, &prefix, "me:/data", "two", timing)
        .await
        .unwrap()
        .release()
        .await;
}

/// An upload that began with a tenant record another replica has since changed
/// (its keys rotated) is refused at its commit point, before it is visible:
/// never sealed under a version a rewrap may retire.
#[tokio::test]
async fn an_upload_under_keys_rotated_elsewhere_is_refused_before_it_is_visible() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let (replica, _dir) = t.replica().await;
    let stale = replica.tenants.require(&acme.id).await.unwrap();
    t.vault.maintenance.rotate_keys(&acme.id).await.unwrap();
    let before = t.visible_documents();
    let request = opaque_request(DocumentKind::Scan, Fields::default());
    let body = one_chunk(b"%PDF-1.7 stale");
    let refused = replica
        .tenant_documents
        .upload(&stale, request, None, body, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "tenant_keys_rotated");
    assert_eq!(t.visible_documents(), before);
    // The retry, with the record as it is now, lands.
    let fresh = replica.tenants.require(&acme.id).await.unwrap();
    assert_eq!(fresh.branch_version, stale.branch_version + 1);
}

/// A tenant record changed by another replica between this one's read and its
/// write: the conditional write notices, reads again and applies its change to
/// the new record, so both changes land and neither is undone.
#[tokio::test]
async fn a_tenant_change_racing_another_keeps_both() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let name = ObjectName::tenant(&acme.id);
    let (_, stale_version) = t.store.get_versioned(&name).await.unwrap().unwrap();
    let mut calls = 0;
    let store = t.store.clone();
    let changed = t
        .vault
        .tenants
        .modify(&acme.id, |record| {
            calls += 1;
            if calls == 1 {
                // Meanwhile, another replica disables the tenant (a write this
                // closure's first read did not see).
                let mut other = record.clone();
                other.status = crate::tenants::TenantStatus::Disabled;
                let bytes = serde_json::to_vec(&other).unwrap();
                let store = store.clone();
                let name = name.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap()
                        .block_on(store.replace(&name, Bytes::from(bytes)))
                })
                .join()
                .unwrap()
                .unwrap();
            }
            record.retention_days = 30;
            Ok(true)
        })
        .await
        .unwrap();
    assert_eq!(
        calls, 2,
        "the change was not applied again after the conflict"
    );
    assert_eq!(changed.retention_days, 30);
    assert_eq!(changed.status, crate::tenants::TenantStatus::Disabled);
    let stored = t.vault.tenants.require_fresh(&acme.id).await.unwrap();
    assert_eq!(stored.status, crate::tenants::TenantStatus::Disabled);
    assert_eq!(stored.retention_days, 30);
    // A write from a stale version is refused outright.
    let refused = t
        .store
        .replace_if(&name, Bytes::from_static(b"{}"), &stale_version)
        .await
        .unwrap_err();
    assert!(matches!(refused, crate::storage::StorageError::Changed(_)));
}

/// A read of a document by key `n`, stamped `time`.
fn read_event(n: i64, time: time::OffsetDateTime) -> crate::audit::AuditEvent {
    let mut event = crate::audit::new_event(
        "document.read",
        format!("apikey:{n:016x}"),
        crate::audit::Outcome::Allowed,
        200,
    );
    event.time = time;
    event
}

/// The sequence numbers of a tenant's events that `filter` reads (up to 1,000).
async fn event_seqs(
    t: &TestVault,
    tenant: &TenantId,
    filter: crate::audit::read::EventFilter,
) -> Vec<u64> {
    t.vault
        .audit
        .read_events(tenant, filter, 1000)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// The offline verification of a tenant's log, against the vault's key.
async fn verify_log(t: &TestVault, tenant: &TenantId) -> crate::audit::verify::VerifyReport {
    crate::audit::verify::verify_log(t.store.as_ref(), tenant, &t.vault.audit.signer.public, None)
        .await
        .unwrap()
}

/// Reading audit events since a time costs the answer and a bisection, not the
/// log: the answer is the same as filtering every event, and the segments read
/// are far fewer than the log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_since_a_time_read_the_answer_not_the_log() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let start = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    // One segment per append; times ten minutes apart (twice the skew allowed).
    for n in 0..64i64 {
        let event = read_event(n, start + time::Duration::minutes(10 * n));
        t.vault.audit.append(&acme.id, event).await.unwrap();
    }
    let all = t
        .vault
        .audit
        .read_events(&acme.id, Default::default(), 1000)
        .await
        .unwrap()
        .events;
    // The edges of time and of sequence numbers answer, never overflow.
    for filter in [
        crate::audit::read::EventFilter {
            until: Some(time::PrimitiveDateTime::MAX.assume_utc()),
            ..Default::default()
        },
        crate::audit::read::EventFilter {
            since: Some(time::PrimitiveDateTime::MIN.assume_utc()),
            ..Default::default()
        },
        crate::audit::read::EventFilter {
            after_seq: Some(u64::MAX),
            ..Default::default()
        },
    ] {
        t.vault
            .audit
            .read_events(&acme.id, filter, 10)
            .await
            .unwrap();
    }
    for (since, until) in [
        (Some(40), None),
        (Some(3), Some(5)),
        (None, Some(2)),
        (Some(63), None),
        (Some(70), None),
    ] {
        let at = |n: i64| start + time::Duration::minutes(10 * n);
        let filter = crate::audit::read::EventFilter {
            since: since.map(at),
            until: until.map(at),
            ..Default::default()
        };
        let want: Vec<u64> = all
            .iter()
            .filter(|e| filter.since.is_none_or(|t| e.time >= t))
            .filter(|e| filter.until.is_none_or(|t| e.time < t))
            .map(|e| e.seq)
            .collect();
        let gets = t.store.calls(Op::Get);
        let got = event_seqs(&t, &acme.id, filter).await;
        assert_eq!(got, want, "since {since:?} until {until:?}");
        let read = t.store.calls(Op::Get) - gets;
        // Bisection over headers (log2 of the segments), the answer, and the
        // segments within the skew allowed past `until`.
        let bound = 8 + want.len() as u64 + 4;
        assert!(
            read <= bound,
            "since {since:?} until {until:?}: {read} reads for {} events (at most {bound})",
            want.len()
        );
    }
}

/// A time-bounded read starts exactly where events at or after `since` begin,
/// whatever replicas' clocks say (a replica twenty minutes ahead, four times the
/// allowance), and passes over the segments before it without decrypting them
/// even when the log's times are dense (a minute of events, all within the
/// allowance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_since_are_exact_whatever_the_clocks_and_cost_the_answer() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let base = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let ahead = base + time::Duration::minutes(20);
    for n in 0..64i64 {
        // Segment 3 by a replica whose clock is ahead; the rest a second apart.
        let time = if n == 3 {
            ahead
        } else {
            base + time::Duration::seconds(n)
        };
        t.vault
            .audit
            .append(&acme.id, read_event(n, time))
            .await
            .unwrap();
    }
    let all = t
        .vault
        .audit
        .read_events(&acme.id, Default::default(), 1000)
        .await
        .unwrap()
        .events;
    for (since, until, opened_at_most) in [
        // Only the event from the clock ahead: found, though every segment
        // after it is earlier by more than the allowance.
        (base + time::Duration::minutes(10), None, 1),
        // The last five seconds, and that event.
        (base + time::Duration::seconds(59), None, 6),
        // A read bounded by `until` stops at the first segment stamped
        // past it by more than the allowance (here, the clock ahead).
        (base, Some(base + time::Duration::seconds(2)), 3),
    ] {
        let filter = crate::audit::read::EventFilter {
            since: Some(since),
            until,
            ..Default::default()
        };
        let want: Vec<u64> = all
            .iter()
            .filter(|e| e.time >= since && until.is_none_or(|u| e.time < u))
            .map(|e| e.seq)
            .collect();
        let opened = t.vault.metrics.audit_read_segments.get();
        let got = event_seqs(&t, &acme.id, filter).await;
        assert_eq!(got, want, "since {since} until {until:?}");
        let opened = t.vault.metrics.audit_read_segments.get() - opened;
        assert!(
            opened <= opened_at_most,
            "since {since} until {until:?}: {opened} segments decrypted, at most {opened_at_most}"
        );
    }
}

/// A replica writing v1 segments (`audit.segment_format = 1`, as while replicas
/// of a version before v2 share the bucket) and one writing v2 share a log: the
/// chain of clear times carries over the v1 segments, the log verifies, and
/// reads since a time find exactly the events at or after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_segments_share_a_log() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let dir = tempfile::tempdir().unwrap();
    let older = t
        .replica_with(dir.path(), |config| config.audit.segment_format = 1)
        .await;
    let base = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let start = crate::audit::log_size(t.store.as_ref(), &acme.id)
        .await
        .unwrap();
    for n in 0..12i64 {
        let writer = if n % 3 == 0 { &older } else { &t.vault };
        let event = read_event(n, base + time::Duration::seconds(n));
        writer.audit.append(&acme.id, event).await.unwrap();
    }
    let mut formats = Vec::new();
    for index in start..start + 12 {
        let name = ObjectName::audit_segment(&acme.id, index);
        let header = crate::audit::fetch_header(t.store.as_ref(), &name)
            .await
            .unwrap();
        formats.push(header.times.is_some());
    }
    let want: Vec<bool> = (0..12).map(|n| n % 3 != 0).collect();
    assert_eq!(formats, want, "v2 segments, in append order");
    t.vault.audit.checkpoint_now(&acme.id).await.unwrap();
    let report = verify_log(&t, &acme.id).await;
    assert!(report.is_intact(), "{:?}", report.problems);
    for from in [0i64, 4, 6, 11] {
        let since = base + time::Duration::seconds(from);
        let page = t
            .vault
            .audit
            .read_events(
                &acme.id,
                crate::audit::read::EventFilter {
                    since: Some(since),
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap();
        let actors: Vec<String> = page.events.iter().map(|e| e.actor.clone()).collect();
        let want: Vec<String> = (from..12).map(|n| format!("apikey:{n:016x}")).collect();
        assert_eq!(actors, want, "since +{from} s");
    }
}

/// A v2 header whose "latest of the log so far" was lowered (to pass its
/// segment over in time-bounded reads) breaks the chain: the offline
/// verification names it, and a read that scans it fails instead of leaving
/// events out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_time_in_a_segment_header_is_found() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let base = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let start = crate::audit::log_size(t.store.as_ref(), &acme.id)
        .await
        .unwrap();
    // A clock ahead, then one on time: the second segment's chain value is the
    // first one's time.
    let times = [100, 1, 2];
    for (n, seconds) in times.into_iter().enumerate() {
        let event = read_event(n as i64, base + time::Duration::seconds(seconds));
        t.vault.audit.append(&acme.id, event).await.unwrap();
    }
    let name = ObjectName::audit_segment(&acme.id, start + 1);
    let mut bytes = t.store.get_bytes(&name).await.unwrap().unwrap().to_vec();
    let at = crate::audit::segment::HEADER_LEN_V2;
    let latest: [u8; 8] = bytes[at - 16..at - 8].try_into().unwrap();
    bytes[at - 8..at].copy_from_slice(&latest);
    t.store.replace(&name, Bytes::from(bytes)).await.unwrap();

    let report = verify_log(&t, &acme.id).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == "time_chain_broken" && p.segment == start + 1),
        "{:?}",
        report.problems
    );
    let read = t
        .vault
        .audit
        .read_events(
            &acme.id,
            crate::audit::read::EventFilter {
                since: Some(base),
                ..Default::default()
            },
            100,
        )
        .await;
    assert!(
        matches!(read, Err(crate::audit::AuditError::Corrupt(_))),
        "a broken chain was read past"
    );
}

/// Following the log reads segments by position up to the last one listed: a
/// segment a listing left out (made during the walk) is read all the same, and
/// only a segment truly missing below a later one is a hole.
#[tokio::test]
async fn following_the_log_reads_a_segment_a_listing_left_out() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let start = crate::audit::log_size(t.store.as_ref(), &acme.id)
        .await
        .unwrap();
    for n in 0..3 {
        let event = crate::audit::new_event(
            "document.read",
            format!("apikey:{n:016x}"),
            crate::audit::Outcome::Allowed,
            200,
        );
        t.vault.audit.append(&acme.id, event).await.unwrap();
    }
    let middle = ObjectName::audit_segment(&acme.id, start + 1);
    t.store.leave_out_of_listings(middle.as_str());
    let (events, next) = t
        .vault
        .audit
        .events_from_segment(&acme.id, start)
        .await
        .unwrap();
    assert_eq!((events.len(), next), (3, start + 3));
    t.store.delete(&middle).await.unwrap();
    let hole = t.vault.audit.events_from_segment(&acme.id, start).await;
    assert!(
        matches!(hole, Err(crate::audit::AuditError::Corrupt(_))),
        "a hole in the log was not reported"
    );
}

#[tokio::test]
async fn a_listing_is_read_from_the_index_and_never_shows_a_deleted_document() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    let mut claims = Vec::new();
    for n in 0..4 {
        claims.push(upload_claim(&t, &acme, &format!("CLM{n}")).await);
    }
    let mut scans = Vec::new();
    for _ in 0..3 {
        let request = opaque_request(DocumentKind::Scan, Fields::default());
        let filed = t
            .vault
            .tenant_documents
            .upload(&acme, request, None, one_chunk(b"%PDF-1.7 scan"), None)
            .await
            .unwrap();
        scans.push(filed.id);
    }
    // A search waits for the index to be current; the listings then read it.
    claim_hits(&t, &acme, "CLM0").await.unwrap();
    let listings = &t.vault.tenant_documents;
    let list =
        |filter: crate::tenant_documents::ListFilter, cursor: Option<DocumentId>, limit: usize| {
            let acme = acme.clone();
            async move {
                listings
                    .list(&acme, &filter, cursor.as_ref(), limit)
                    .await
                    .unwrap()
            }
        };
    // A store listing would leave this document out: the index lists it.
    t.store
        .leave_out_of_listings(ObjectName::doc_meta(&acme.id, &claims[1]).as_str());
    let mut all: Vec<DocumentId> = claims.iter().chain(&scans).copied().collect();
    all.sort_by_key(|id| id.to_string());
    let page = list(Default::default(), None, 100).await;
    let listed: Vec<DocumentId> = page.documents.iter().map(|d| d.id).collect();
    assert_eq!(listed, all);
    assert_eq!(page.next_cursor, None);

    // Pages of three cover the same documents, with a cursor until the last.
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(Default::default(), cursor, 3).await;
        paged.extend(page.documents.iter().map(|d| d.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, all);

    // Kind and time filters.
    let scans_only = crate::tenant_documents::ListFilter {
        kind: Some(DocumentKind::Scan),
        ..Default::default()
    };
    let mut expected_scans = scans.clone();
    expected_scans.sort_by_key(|id| id.to_string());
    let listed: Vec<DocumentId> = list(scans_only, None, 100)
        .await
        .documents
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, expected_scans);
    let future = crate::tenant_documents::ListFilter {
        uploaded_after: Some(now() + time::Duration::hours(1)),
        ..Default::default()
    };
    assert!(list(future, None, 100).await.documents.is_empty());

    // Deleted (tombstone written) but still in the index: not listed.
    t.vault
        .documents
        .delete(&acme.id, &claims[2])
        .await
        .unwrap();
    let listed: Vec<DocumentId> = list(Default::default(), None, 100)
        .await
        .documents
        .iter()
        .map(|d| d.id)
        .collect();
    assert!(!listed.contains(&claims[2]));
    assert_eq!(listed.len(), all.len() - 1);
    assert_eq!(t.vault.metrics.listed_from_store.get(), 0);
    assert!(t.vault.metrics.listed_from_index.get() >= 6);

    // While following the log fails, the index may lack other replicas'
    // changes: the store is walked (and its listing here leaves claims[1] out).
    t.vault.search.follow_failed(&acme.id, true);
    let walked: Vec<DocumentId> = list(Default::default(), None, 100)
        .await
        .documents
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(t.vault.metrics.listed_from_store.get(), 1);
    assert!(!walked.contains(&claims[1]));
    assert_eq!(walked.len(), all.len() - 2);
    // Search cannot walk the store: it answers from the index and says that
    // matches may be missing.
    let query = vault_index::query::Query::parse("claim_id:CLM0").unwrap();
    let page = t
        .vault
        .search
        .search(&acme, &query, None, 10)
        .await
        .unwrap();
    assert!(!page.complete && page.total == 1);
    assert_eq!(t.vault.metrics.incomplete_searches.get(), 1);
    t.vault.search.follow_failed(&acme.id, false);
    let page = t
        .vault
        .search
        .search(&acme, &query, None, 10)
        .await
        .unwrap();
    assert!(page.complete && page.total == 1);
    assert_eq!(
        list(Default::default(), None, 100).await.documents.len(),
        all.len() - 1
    );
    assert_eq!(t.vault.metrics.listed_from_store.get(), 1);
}

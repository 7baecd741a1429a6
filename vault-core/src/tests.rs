//! Unit tests of the core's operations on the in-memory store, with injected
//! faults: the paths that only the end-to-end suite (a spawned server) reached
//! before the domain had a crate of its own.

use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;
use vault_crypto::{DocumentId, TenantId};

use crate::config::Config;
use crate::credentials::{self, AuthFailure, CredentialKind, Role};
use crate::documents::{self, DocumentKind, Fields, UploadRequest};
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
        crate::tenants::create(&self.vault, new).await
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
        crate::tenants::create(&self.vault, new).await.unwrap()
    }

    async fn upload(
        &self,
        tenant: &TenantRecord,
        body: &'static [u8],
    ) -> Result<DocumentId, Error> {
        let request = UploadRequest {
            kind: DocumentKind::Scan,
            content_type: "application/pdf".into(),
            file_name: None,
            fields: Fields::default(),
            extraction: Extraction::Opaque,
        };
        let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(body))]);
        documents::store(&self.vault, tenant, request, stream)
            .await
            .map(|stored| stored.id)
    }
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
}

#[tokio::test]
async fn a_tenant_whose_record_cannot_be_stored_is_not_created() {
    let t = TestVault::open().await;
    t.store.fail_prefix(Op::Put, ObjectName::TENANTS_PREFIX);
    let refused = t.create_tenant("acme", "local").await.unwrap_err();
    assert!(matches!(refused, Error::Internal { .. }), "{refused:?}");
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
    let opened = documents::open(&t.vault, &acme, &id).await.unwrap();
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
    let broken = documents::open(&t.vault, &acme, &id).await.err().unwrap();
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
    crate::key_lifecycle::set_hold(&t.vault, &acme, &id, true)
        .await
        .unwrap();
    let held = crate::key_lifecycle::check_deletable(&t.vault, &acme, &id)
        .await
        .unwrap_err();
    assert_eq!(held.code(), "legal_hold");
    crate::key_lifecycle::set_hold(&t.vault, &acme, &id, false)
        .await
        .unwrap();
    let retained = TenantRecord {
        retention_days: 30,
        ..acme.clone()
    };
    let kept = crate::key_lifecycle::check_deletable(&t.vault, &retained, &id)
        .await
        .unwrap_err();
    assert_eq!(kept.code(), "retention_period");

    // The tombstone is written, then removing the objects fails: the document is
    // gone for readers all the same, and a second delete finishes the job.
    t.store.fail_nth(Op::Delete, 2);
    assert!(documents::delete(&t.vault, &acme.id, &id).await.is_err());
    assert!(documents::open(&t.vault, &acme, &id)
        .await
        .err()
        .unwrap()
        .is_not_found());
    documents::delete(&t.vault, &acme.id, &id).await.unwrap();
    assert!(t.store.names().iter().all(|n| !n.contains("/docs/")));
}

#[tokio::test]
async fn a_rewrap_that_cannot_write_a_record_reports_it_and_a_second_run_finishes() {
    let t = TestVault::open().await;
    let acme = t.tenant("acme").await;
    for _ in 0..3 {
        t.upload(&acme, b"%PDF-1.7 rotating").await.unwrap();
    }
    crate::key_lifecycle::rotate(&t.vault, &acme.id)
        .await
        .unwrap();
    t.store.fail_nth(Op::Replace, 1);
    let first = crate::key_lifecycle::rewrap(&t.vault, &acme.id, false)
        .await
        .unwrap();
    assert_eq!(first.failed, 1);
    assert_eq!(first.documents_rewrapped, 2);
    let second = crate::key_lifecycle::rewrap(&t.vault, &acme.id, true)
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
    let failed = crate::audit::append(&t.vault, &acme.id, event.clone()).await;
    assert!(failed.is_err());
    assert_eq!(Error::from(failed.unwrap_err()).code(), "audit_unavailable");
    t.store.clear_faults();
    let seq = crate::audit::append(&t.vault, &acme.id, event)
        .await
        .unwrap();
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

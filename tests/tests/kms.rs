//! The `aws-kms` key provider against a real `moto_server`: data-key round trip,
//! encryption context enforced, and the key hierarchy's cache keeping KMS calls to
//! a handful for 1,000 documents.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::sync::Arc;

use vault_core::storage::fs::FsStore;
use vault_core::storage::keys::ObjectTenantKeyStore;
use vault_crypto::envelope::{begin_body, BodyHeader, KeyRecord};
use vault_crypto::{CryptoError, DocumentId, Key256, TenantId};
use vault_e2e::aws_config;
use vault_keys::{
    AwsKmsProvider, CachePolicy, EncryptionContext, KeyHierarchy, KeyProvider, Purpose,
    TenantKeySpec,
};

async fn provider() -> AwsKmsProvider {
    AwsKmsProvider::new(aws_sdk_kms::Client::new(&aws_config().await))
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

#[tokio::test]
async fn data_key_round_trip_and_context_is_enforced() {
    let kms = provider().await;
    let acme = tenant(&format!("acme-{}", std::process::id()));
    let kek = kms.ensure_tenant_key(&acme, None).await.unwrap();
    assert!(kek.starts_with("alias/vault/"), "{kek}");
    // Asking again finds the alias instead of creating a second key.
    assert_eq!(kms.ensure_tenant_key(&acme, None).await.unwrap(), kek);

    let context = EncryptionContext {
        tenant: acme.clone(),
        purpose: Purpose::BranchKey,
    };
    let (key, wrapped) = kms.generate_data_key(&kek, &context).await.unwrap();
    let unwrapped = kms
        .decrypt_data_key(&kek, &wrapped, &context)
        .await
        .unwrap();
    assert_eq!(key.expose(), unwrapped.expose());

    let other_purpose = EncryptionContext {
        tenant: acme.clone(),
        purpose: Purpose::IndexRoot,
    };
    let err = kms
        .decrypt_data_key(&kek, &wrapped, &other_purpose)
        .await
        .unwrap_err();
    assert!(matches!(err, CryptoError::UnwrapFailed(_)), "{err}");
    let other_tenant = EncryptionContext {
        tenant: tenant("mallory"),
        purpose: Purpose::BranchKey,
    };
    assert!(kms
        .decrypt_data_key(&kek, &wrapped, &other_tenant)
        .await
        .is_err());
}

#[tokio::test]
async fn an_unknown_kms_key_is_refused_at_tenant_creation() {
    let kms = provider().await;
    let err = kms
        .ensure_tenant_key(&tenant("ghost"), Some("alias/does-not-exist"))
        .await
        .unwrap_err();
    assert!(matches!(err, CryptoError::Provider { .. }), "{err}");
}

#[tokio::test]
async fn a_kms_key_belongs_to_one_tenant() {
    let kms = provider().await;
    let client = aws_sdk_kms::Client::new(&aws_config().await);
    let key_id = client
        .create_key()
        .description("a customer's own key")
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_id()
        .to_owned();
    let suffix = std::process::id();
    let first = tenant(&format!("byok-a-{suffix}"));
    let second = tenant(&format!("byok-b-{suffix}"));
    // The first tenant claims the caller-supplied key (tagging it); asking again
    // for the same tenant is fine; a second tenant is refused.
    assert_eq!(
        kms.ensure_tenant_key(&first, Some(&key_id)).await.unwrap(),
        key_id
    );
    kms.ensure_tenant_key(&first, Some(&key_id)).await.unwrap();
    let err = kms
        .ensure_tenant_key(&second, Some(&key_id))
        .await
        .unwrap_err();
    assert!(matches!(err, CryptoError::KeyInUse), "{err}");
    // Nor can offboarding the second tenant schedule the first one's key for
    // deletion.
    let err = kms
        .schedule_key_deletion(&second, &key_id, 7)
        .await
        .unwrap_err();
    assert!(matches!(err, CryptoError::KeyInUse), "{err}");
    let state = client
        .describe_key()
        .key_id(&key_id)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_state()
        .cloned();
    assert_eq!(state, Some(aws_sdk_kms::types::KeyState::Enabled));
    kms.schedule_key_deletion(&first, &key_id, 7).await.unwrap();
}

#[tokio::test]
async fn a_thousand_documents_cost_a_handful_of_kms_calls() {
    let kms = Arc::new(provider().await);
    let acme = tenant(&format!("bulk-{}", std::process::id()));
    let kek = kms.ensure_tenant_key(&acme, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path()).await.unwrap());
    let keys = KeyHierarchy::new(
        vec![kms.clone()],
        Arc::new(ObjectTenantKeyStore(store)),
        CachePolicy::default(),
    );
    let spec = TenantKeySpec {
        tenant: acme.clone(),
        provider: "aws-kms".into(),
        kek_id: kek,
        branch_version: 1,
        min_decryption_version: 1,
        index_version: 1,
    };
    let before = kms.call_count();
    let mut records = Vec::new();
    for _ in 0..1000 {
        let dek = Key256::random();
        let doc = DocumentId::random();
        let (header_bytes, _body) = begin_body(&dek, &acme, doc, 64 * 1024).unwrap();
        let (header, _) = BodyHeader::parse(&header_bytes).unwrap();
        let (key_ref, branch) = keys.branch_key_for_upload(&spec).await.unwrap();
        records.push(KeyRecord::seal(&dek, &header, &branch, key_ref, b"{}").unwrap());
    }
    let calls = kms.call_count() - before;
    assert!(calls <= 2, "1,000 uploads made {calls} KMS calls");

    // A fresh hierarchy (a restarted server) unwraps the stored branch key once.
    let dir2 = dir.path().to_owned();
    let store = Arc::new(FsStore::open(&dir2).await.unwrap());
    let restarted = KeyHierarchy::new(
        vec![kms.clone()],
        Arc::new(ObjectTenantKeyStore(store)),
        CachePolicy::default(),
    );
    let before = kms.call_count();
    for record in &records {
        let branch = restarted.branch_key(&spec, &record.key_ref).await.unwrap();
        record.unwrap_dek(&branch).unwrap();
    }
    assert_eq!(kms.call_count() - before, 1);
}

#[tokio::test]
async fn retired_and_unknown_key_versions_are_refused_clearly() {
    let kms = Arc::new(provider().await);
    let acme = tenant(&format!("rot-{}", std::process::id()));
    let kek = kms.ensure_tenant_key(&acme, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path()).await.unwrap());
    let keys = KeyHierarchy::new(
        vec![kms],
        Arc::new(ObjectTenantKeyStore(store)),
        CachePolicy::default(),
    );
    let mut spec = TenantKeySpec {
        tenant: acme,
        provider: "aws-kms".into(),
        kek_id: kek,
        branch_version: 1,
        min_decryption_version: 1,
        index_version: 1,
    };
    let (v1, _) = keys.branch_key_for_upload(&spec).await.unwrap();
    spec.branch_version = 2;
    spec.min_decryption_version = 2;
    let err = keys.branch_key(&spec, &v1).await.unwrap_err();
    assert!(err.to_string().contains("retired"), "{err}");
    let v3 = vault_crypto::envelope::KeyRef { version: 3, ..v1 };
    let err = keys.branch_key(&spec, &v3).await.unwrap_err();
    assert!(err.to_string().contains("not available"), "{err}");
}

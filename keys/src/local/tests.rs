use std::os::unix::fs::PermissionsExt;

use vault_crypto::keys::Purpose;

use super::legacy::writers;
use super::*;
use crate::store::MemoryKeystoreObjects as MemoryObjects;

fn ctx(tenant: &str, purpose: Purpose) -> EncryptionContext {
    EncryptionContext {
        tenant: TenantId::new(tenant).unwrap(),
        purpose,
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

#[tokio::test]
async fn keys_survive_restart_and_root_key_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.key");
    let objects = Arc::new(MemoryObjects::default());
    let (key, wrapped) = {
        let provider = LocalKeyProvider::open(&root, objects.clone())
            .await
            .unwrap();
        let kek = provider
            .ensure_tenant_key(&tenant("acme"), None)
            .await
            .unwrap();
        provider
            .generate_data_key(&kek, &ctx("acme", Purpose::BranchKey))
            .await
            .unwrap()
    };
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let reopened = LocalKeyProvider::open(&root, objects).await.unwrap();
    let again = reopened
        .decrypt_data_key("acme", &wrapped, &ctx("acme", Purpose::BranchKey))
        .await
        .unwrap();
    assert_eq!(key.expose(), again.expose());
    // Wrong purpose or wrong tenant: refused.
    assert!(reopened
        .decrypt_data_key("acme", &wrapped, &ctx("acme", Purpose::IndexRoot))
        .await
        .is_err());
    assert!(reopened
        .decrypt_data_key("other", &wrapped, &ctx("other", Purpose::BranchKey))
        .await
        .is_err());
}

#[tokio::test]
async fn world_readable_root_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.key");
    let objects = Arc::new(MemoryObjects::default());
    LocalKeyProvider::open(&root, objects.clone())
        .await
        .unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o644)).unwrap();
    let err = LocalKeyProvider::open(&root, objects).await.unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn rotation_keeps_old_versions_and_destroy_shreds() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::default());
    let provider = LocalKeyProvider::open(&dir.path().join("r"), objects)
        .await
        .unwrap();
    let acme = tenant("acme");
    provider.ensure_tenant_key(&acme, None).await.unwrap();
    let c = ctx("acme", Purpose::BranchKey);
    let (k1, w1) = provider.generate_data_key("acme", &c).await.unwrap();
    assert_eq!(provider.rotate_tenant_key(&acme).await.unwrap(), 2);
    assert_eq!(provider.current_version(&acme).await.unwrap(), Some(2));
    let (_, w2) = provider.generate_data_key("acme", &c).await.unwrap();
    assert_eq!(&w2[6..10], &2u32.to_be_bytes());
    assert_eq!(
        provider
            .decrypt_data_key("acme", &w1, &c)
            .await
            .unwrap()
            .expose(),
        k1.expose()
    );
    assert!(provider.destroy_tenant_key(&acme).await.unwrap());
    assert!(!provider.destroy_tenant_key(&acme).await.unwrap());
    assert!(matches!(
        provider.decrypt_data_key("acme", &w1, &c).await,
        Err(CryptoError::UnknownTenant(_))
    ));
}

/// Two replicas over one store: a tenant created on one is usable on the other at
/// once, a rotation there is seen, and an offboarding there within the cache's
/// time to live.
#[tokio::test]
async fn replicas_share_tenants_rotations_and_offboardings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.key");
    let objects = Arc::new(MemoryObjects::default());
    let first = LocalKeyProvider::open(&root, objects.clone())
        .await
        .unwrap();
    let second = LocalKeyProvider::open(&root, objects.clone())
        .await
        .unwrap();
    let acme = tenant("acme");
    let c = ctx("acme", Purpose::BranchKey);
    first.ensure_tenant_key(&acme, None).await.unwrap();
    // Both create it at the same time elsewhere: one KEK version 1 wins.
    second.ensure_tenant_key(&acme, None).await.unwrap();
    let (key, wrapped) = first.generate_data_key("acme", &c).await.unwrap();
    assert_eq!(
        second
            .decrypt_data_key("acme", &wrapped, &c)
            .await
            .unwrap()
            .expose(),
        key.expose()
    );
    // A version the second has not seen yet is looked up when asked for.
    assert_eq!(first.rotate_tenant_key(&acme).await.unwrap(), 2);
    let (key, wrapped) = first.generate_data_key("acme", &c).await.unwrap();
    assert_eq!(
        second
            .decrypt_data_key("acme", &wrapped, &c)
            .await
            .unwrap()
            .expose(),
        key.expose()
    );
    // Offboarded through the first: the second refuses once its cache is stale.
    first.destroy_tenant_key(&acme).await.unwrap();
    second
        .cache
        .lock()
        .unwrap()
        .values_mut()
        .for_each(|c| c.read_at -= KEK_CACHE_TTL);
    assert!(matches!(
        second.generate_data_key("acme", &c).await,
        Err(CryptoError::UnknownTenant(_))
    ));
}

/// A replica with another root key file, or none, refuses to start and writes
/// nothing to the store.
#[tokio::test]
async fn a_replica_with_the_wrong_root_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::default());
    LocalKeyProvider::open(&dir.path().join("first.key"), objects.clone())
        .await
        .unwrap()
        .ensure_tenant_key(&tenant("acme"), None)
        .await
        .unwrap();
    let before = objects.snapshot();
    let other = dir.path().join("other.key");
    fs::write(&other, [7u8; 32]).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
    let err = LocalKeyProvider::open(&other, objects.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not this vault's root key"),
        "{err}"
    );
    let missing = dir.path().join("missing.key");
    let err = LocalKeyProvider::open(&missing, objects.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("every replica needs a copy"),
        "{err}"
    );
    assert!(!missing.exists(), "a root key file was made up");
    assert_eq!(objects.snapshot(), before);
}

/// Offboarding destroys the tenant's seal key: an older copy of its KEK objects
/// (a backup restored) no longer opens, while other tenants still do.
#[tokio::test]
async fn destroyed_tenants_are_shredded_in_copies_of_their_keks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.key");
    let objects = Arc::new(MemoryObjects::default());
    let provider = LocalKeyProvider::open(&root, objects.clone())
        .await
        .unwrap();
    let (acme, other) = (tenant("acme"), tenant("other"));
    provider.ensure_tenant_key(&acme, None).await.unwrap();
    provider.ensure_tenant_key(&other, None).await.unwrap();
    let (_, acme_wrapped) = provider
        .generate_data_key("acme", &ctx("acme", Purpose::BranchKey))
        .await
        .unwrap();
    let (other_key, other_wrapped) = provider
        .generate_data_key("other", &ctx("other", Purpose::BranchKey))
        .await
        .unwrap();
    let backup: Vec<_> = objects
        .snapshot()
        .into_iter()
        .filter(|(k, _)| k.starts_with("kek/"))
        .collect();
    assert!(provider.destroy_tenant_key(&acme).await.unwrap());
    drop(provider);
    objects.0.lock().unwrap().extend(backup);
    let restored = LocalKeyProvider::open(&root, objects).await.unwrap();
    assert!(restored
        .decrypt_data_key("acme", &acme_wrapped, &ctx("acme", Purpose::BranchKey))
        .await
        .is_err());
    let again = restored
        .decrypt_data_key("other", &other_wrapped, &ctx("other", Purpose::BranchKey))
        .await
        .unwrap();
    assert_eq!(again.expose(), other_key.expose());
}

fn fixture(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures")
    .join(dir)
    .join(name)
}

/// Copies a checked-in fixture directory to a private temporary one.
fn fixture_copy(dir: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(fixture(dir, "x").parent().unwrap()).unwrap() {
        let from = entry.unwrap().path();
        let to = copy.path().join(from.file_name().unwrap());
        fs::copy(&from, &to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).unwrap();
    }
    copy
}

/// The keystore files of earlier versions (v1, v2 with its seal file) are
/// imported into the store and removed; the data key wrapped then still opens.
#[tokio::test]
async fn keystore_file_fixtures_are_imported() {
    for version in ["v1", "v2"] {
        let dir = fixture_copy(&format!("keystore-{version}"));
        let (root, keystore) = (dir.path().join("root.key"), dir.path().join("keystore.bin"));
        let seals = dir.path().join(SEALS_FILE_NAME);
        let objects = Arc::new(MemoryObjects::default());
        let provider = LocalKeyProvider::open(&root, objects.clone())
            .await
            .unwrap();
        let imported = provider
            .import_legacy_files(&keystore, Some(&seals), &|_| false)
            .await
            .unwrap();
        assert_eq!(imported, 1, "{version}");
        assert!(!keystore.exists() && !seals.exists(), "{version}");
        let wrapped = fs::read(dir.path().join("wrapped")).unwrap();
        let key = provider
            .decrypt_data_key("acme", &wrapped, &ctx("acme", Purpose::BranchKey))
            .await
            .unwrap();
        assert_eq!(key.expose(), &[5u8; 32], "{version}");
        // Nothing left to import the second time.
        assert_eq!(
            provider
                .import_legacy_files(&keystore, Some(&seals), &|_| false)
                .await
                .unwrap(),
            0
        );
    }
}

/// An old keystore file restored after an offboarding does not bring the
/// offboarded tenant back: it is skipped, and its seal key is not imported.
#[tokio::test]
async fn import_leaves_out_skipped_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root.key");
    let objects = Arc::new(MemoryObjects::default());
    let provider = LocalKeyProvider::open(&root_path, objects.clone())
        .await
        .unwrap();
    let root = Key256::from_slice(&fs::read(&root_path).unwrap()).unwrap();
    let (acme_seal, other_seal) = (Key256::random(), Key256::random());
    let keystore = dir.path().join("keystore.bin");
    let seals = dir.path().join(SEALS_FILE_NAME);
    fs::write(
        &keystore,
        writers::keystore_v2(
            &root,
            &[
                ("acme", &acme_seal, vec![(1, [1; 32])]),
                ("other", &other_seal, vec![(1, [2; 32]), (2, [3; 32])]),
            ],
        ),
    )
    .unwrap();
    fs::write(
        &seals,
        writers::seal_file(&root, &[("acme", &acme_seal), ("other", &other_seal)]),
    )
    .unwrap();
    fs::set_permissions(&seals, fs::Permissions::from_mode(0o600)).unwrap();
    let imported = provider
        .import_legacy_files(&keystore, Some(&seals), &|t| t.as_str() == "acme")
        .await
        .unwrap();
    assert_eq!(imported, 1);
    let names: Vec<String> = objects.snapshot().into_keys().collect();
    assert_eq!(
        names,
        ["kek/other/1", "kek/other/2", "root-check", "seal/other"]
    );
    assert_eq!(
        provider.current_version(&tenant("other")).await.unwrap(),
        Some(2)
    );
}

/// The object formats of this version still open (fixture written once by
/// `write_object_fixtures_when_asked`).
#[tokio::test]
async fn keystore_object_fixtures_still_open() {
    let dir = fixture_copy("keystore-objects-v1");
    let objects = Arc::new(MemoryObjects::default());
    for (object, file) in [
        (KeystoreObject::RootCheck, "root-check"),
        (KeystoreObject::Seal(tenant("acme")), "seal-acme"),
        (KeystoreObject::Kek(tenant("acme"), 1), "kek-acme-1"),
    ] {
        let bytes = fs::read(dir.path().join(file)).unwrap();
        assert!(objects.create(&object, bytes).await.unwrap());
    }
    let provider = LocalKeyProvider::open(&dir.path().join("root.key"), objects)
        .await
        .unwrap();
    let wrapped = fs::read(dir.path().join("wrapped")).unwrap();
    let key = provider
        .decrypt_data_key("acme", &wrapped, &ctx("acme", Purpose::BranchKey))
        .await
        .unwrap();
    assert_eq!(key.expose(), &[5u8; 32]);
}

/// A data key of [5; 32] wrapped by hand under `kek` as version 1 of acme's KEK.
fn wrapped_fixture(kek: [u8; 32]) -> Vec<u8> {
    let mut blob = WRAPPED_MAGIC.to_vec();
    blob.extend_from_slice(&VERSION.to_be_bytes());
    blob.extend_from_slice(&1u32.to_be_bytes());
    let c = ctx("acme", Purpose::BranchKey);
    let (nonce, wrapped) = objects::aead_seal(
        &Key256::from_bytes(kek),
        &[5u8; 32],
        &wrapped_aad(&blob, &c),
    )
    .unwrap();
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&wrapped);
    blob
}

/// Writes the fixtures of the keystore files (run once per format version, then
/// checked in).
#[test]
fn write_file_fixtures_when_asked() {
    if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_none() {
        return;
    }
    for version in ["v1", "v2"] {
        let dir = fixture(&format!("keystore-{version}"), "x")
            .parent()
            .unwrap()
            .to_owned();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let root = Key256::random();
        fs::write(dir.join("root.key"), root.expose()).unwrap();
        let kek = [9u8; 32];
        let keystore = if version == "v1" {
            writers::keystore_v1(&root, &[("acme", vec![(1, kek)])])
        } else {
            let seal = Key256::random();
            fs::write(
                dir.join(SEALS_FILE_NAME),
                writers::seal_file(&root, &[("acme", &seal)]),
            )
            .unwrap();
            writers::keystore_v2(&root, &[("acme", &seal, vec![(1, kek)])])
        };
        fs::write(dir.join("keystore.bin"), keystore).unwrap();
        fs::write(dir.join("wrapped"), wrapped_fixture(kek)).unwrap();
    }
}

/// Writes the fixture of the keystore objects (run once per format version,
/// then checked in).
#[test]
fn write_object_fixtures_when_asked() {
    if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_none() {
        return;
    }
    let dir = fixture("keystore-objects-v1", "x")
        .parent()
        .unwrap()
        .to_owned();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let (root, seal, kek) = (Key256::random(), Key256::random(), [9u8; 32]);
    let acme = tenant("acme");
    fs::write(dir.join("root.key"), root.expose()).unwrap();
    fs::write(
        dir.join("root-check"),
        objects::seal_root_check(&root).unwrap(),
    )
    .unwrap();
    fs::write(
        dir.join("seal-acme"),
        objects::seal_tenant_seal(&root, &acme, &seal).unwrap(),
    )
    .unwrap();
    fs::write(
        dir.join("kek-acme-1"),
        objects::seal_kek(&seal, &acme, 1, &Key256::from_bytes(kek)).unwrap(),
    )
    .unwrap();
    fs::write(dir.join("wrapped"), wrapped_fixture(kek)).unwrap();
}

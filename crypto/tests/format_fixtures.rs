//! Checked-in fixtures of every persisted format version must still open.
//!
//! `fixtures/envelope-v1/` holds a body and key record sealed with the fixed test
//! keys below. Regenerate (only when adding a new version!) with
//! `BILLVAULT_WRITE_FIXTURES=1 cargo test -p vault-crypto --test format_fixtures`.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::path::PathBuf;

use vault_crypto::envelope::{begin_body, open_body, BodyDecryptor, BodyHeader, KeyRecord, KeyRef};
use vault_crypto::keys::{TenantKeyKind, TenantKeyRecord};
use vault_crypto::{DocumentId, Key256, TenantId};

// Test-only keys of the fixture: public by design, used nowhere else.
const FIXTURE_DEK: [u8; 32] = [0x11; 32];
const FIXTURE_BRANCH_KEY: [u8; 32] = [0x22; 32];
const FIXTURE_DOC: [u8; 16] = [0x33; 16];
const FIXTURE_PLAINTEXT: &str =
    "ISA*00*fixture body spanning two segments of 64 bytes each, plus a short final one~";
const FIXTURE_METADATA: &str = r#"{"content_type":"application/edi-x12"}"#;

fn dir() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/fixtures/envelope-v1")
}

fn write_fixtures() {
    let tenant = TenantId::new("fixture").unwrap();
    let dek = Key256::from_bytes(FIXTURE_DEK);
    let doc = DocumentId::from_bytes(FIXTURE_DOC);
    let (header, mut enc) = begin_body(&dek, &tenant, doc, 64).unwrap();
    let mut body = header.clone();
    let mut out = Vec::new();
    enc.update(FIXTURE_PLAINTEXT.as_bytes(), &mut out).unwrap();
    out.push(enc.finish().unwrap());
    body.extend(out.concat());
    let (parsed, _) = BodyHeader::parse(&header).unwrap();
    let key_ref = KeyRef {
        provider: "local".into(),
        kek_id: "fixture".into(),
        version: 1,
    };
    let record = KeyRecord::seal(
        &dek,
        &parsed,
        &Key256::from_bytes(FIXTURE_BRANCH_KEY),
        key_ref,
        FIXTURE_METADATA.as_bytes(),
    )
    .unwrap();
    let tenant_key = TenantKeyRecord {
        kind: TenantKeyKind::Branch,
        tenant,
        version: 1,
        provider: "local".into(),
        kek_id: "fixture".into(),
        wrapped: vec![0xAB; 70],
    };
    std::fs::create_dir_all(dir()).unwrap();
    std::fs::write(dir().join("body.bin"), body).unwrap();
    std::fs::write(dir().join("key-record.bin"), record.encode()).unwrap();
    std::fs::write(dir().join("tenant-key-record.bin"), tenant_key.encode()).unwrap();
}

#[test]
fn envelope_v1_fixtures_still_open() {
    if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_some() {
        write_fixtures();
    }
    let body = std::fs::read(dir().join("body.bin")).expect("fixture body.bin is checked in");
    let record = KeyRecord::parse(&std::fs::read(dir().join("key-record.bin")).unwrap()).unwrap();
    assert_eq!(record.key_ref.version, 1);
    let dek = record
        .unwrap_dek(&Key256::from_bytes(FIXTURE_BRANCH_KEY))
        .unwrap();
    assert_eq!(
        &record.open_metadata(&dek).unwrap()[..],
        FIXTURE_METADATA.as_bytes()
    );
    let len = BodyHeader::peek_len(&body).unwrap().unwrap();
    let tenant = TenantId::new("fixture").unwrap();
    let (header, cipher) = open_body(
        &dek,
        &tenant,
        DocumentId::from_bytes(FIXTURE_DOC),
        &body[..len],
    )
    .unwrap();
    assert!(record.matches_body(&header));
    let mut dec = BodyDecryptor::new(cipher);
    let mut out = Vec::new();
    dec.update(&body[len..], &mut out).unwrap();
    dec.finish(&mut out).unwrap();
    assert_eq!(out.concat(), FIXTURE_PLAINTEXT.as_bytes());

    let tenant_key =
        TenantKeyRecord::parse(&std::fs::read(dir().join("tenant-key-record.bin")).unwrap())
            .unwrap();
    assert_eq!(tenant_key.kind, TenantKeyKind::Branch);
    assert_eq!(tenant_key.wrapped, vec![0xAB; 70]);
}

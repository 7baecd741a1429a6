//! The formats of the local keystore's objects, shared by every replica through
//! the object store. Each is one AES-256-GCM-SIV seal with its header as AAD:
//!
//! ```text
//! root check  "BVRC" | u16 1 | nonce (12) | seal(root key, ROOT_CHECK_TEXT,
//!                                               aad = header)
//! seal key    "BVSK" | u16 1 | nonce (12) | seal(root key, 32-byte seal key,
//!                                               aad = header | tenant)
//! KEK version "BVKK" | u16 1 | u32 version | nonce (12) | seal(tenant seal key,
//!                                               32-byte KEK, aad = header | tenant)
//! ```
//!
//! The tenant (and the version) in the AAD bind each object to its name: a seal
//! key or KEK copied under another tenant's name does not open.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use zeroize::Zeroizing;

use vault_crypto::wire::{put_short_str, Reader};
use vault_crypto::{CryptoError, Key256, TenantId};

/// Magic of the root check object. FORMAT CONSTANT.
const ROOT_CHECK_MAGIC: [u8; 4] = *b"BVRC";
/// Magic of a tenant seal key object. FORMAT CONSTANT.
const SEAL_MAGIC: [u8; 4] = *b"BVSK";
/// Magic of a KEK version object. FORMAT CONSTANT.
const KEK_MAGIC: [u8; 4] = *b"BVKK";
/// Version of the three object formats. FORMAT CONSTANT.
const OBJECTS_VERSION: u16 = 1;
/// What the root check seals. FORMAT CONSTANT.
const ROOT_CHECK_TEXT: &[u8] = b"billing records vault root key";

pub(super) fn aead_seal(
    key: &Key256,
    plain: &[u8],
    aad: &[u8],
) -> Result<([u8; 12], Vec<u8>), CryptoError> {
    let nonce: [u8; 12] = vault_crypto::random_bytes();
    let sealed = Aes256GcmSiv::new(key.expose().into())
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| CryptoError::Limit("keystore too large"))?;
    Ok((nonce, sealed))
}

pub(super) fn aead_open(
    key: &Key256,
    nonce: &[u8; 12],
    sealed: &[u8],
    aad: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    Aes256GcmSiv::new(key.expose().into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::UnwrapFailed(what))
}

pub(super) fn tenant_aad(header: &[u8], tenant: &TenantId) -> Vec<u8> {
    let mut aad = header.to_vec();
    put_short_str(&mut aad, tenant.as_str());
    aad
}

fn header(magic: [u8; 4]) -> Vec<u8> {
    let mut header = magic.to_vec();
    header.extend_from_slice(&OBJECTS_VERSION.to_be_bytes());
    header
}

fn finish(mut header: Vec<u8>, nonce: [u8; 12], sealed: Vec<u8>) -> Vec<u8> {
    header.extend_from_slice(&nonce);
    header.extend_from_slice(&sealed);
    header
}

/// The root check object for `root`.
pub(super) fn seal_root_check(root: &Key256) -> Result<Vec<u8>, CryptoError> {
    let header = header(ROOT_CHECK_MAGIC);
    let (nonce, sealed) = aead_seal(root, ROOT_CHECK_TEXT, &header)?;
    Ok(finish(header, nonce, sealed))
}

/// Whether `bytes` is a root check sealed under `root` (an error when it is not
/// a root check at all).
pub(super) fn opens_root_check(root: &Key256, bytes: &[u8]) -> Result<bool, CryptoError> {
    let mut reader = Reader::new(bytes, "root check");
    reader.expect_magic_and_version(ROOT_CHECK_MAGIC, OBJECTS_VERSION)?;
    let nonce: [u8; 12] = reader.array()?;
    Ok(aead_open(
        root,
        &nonce,
        &bytes[reader.position()..],
        &bytes[..6],
        "root check",
    )
    .is_ok_and(|text| text.as_slice() == ROOT_CHECK_TEXT))
}

/// A tenant's seal key object.
pub(super) fn seal_tenant_seal(
    root: &Key256,
    tenant: &TenantId,
    seal: &Key256,
) -> Result<Vec<u8>, CryptoError> {
    let header = header(SEAL_MAGIC);
    let (nonce, sealed) = aead_seal(root, seal.expose(), &tenant_aad(&header, tenant))?;
    Ok(finish(header, nonce, sealed))
}

/// Opens a tenant's seal key object.
pub(super) fn open_tenant_seal(
    root: &Key256,
    tenant: &TenantId,
    bytes: &[u8],
) -> Result<Key256, CryptoError> {
    let mut reader = Reader::new(bytes, "tenant seal key");
    reader.expect_magic_and_version(SEAL_MAGIC, OBJECTS_VERSION)?;
    let nonce: [u8; 12] = reader.array()?;
    let plain = aead_open(
        root,
        &nonce,
        &bytes[reader.position()..],
        &tenant_aad(&bytes[..6], tenant),
        "tenant seal key (wrong root key, or not this tenant's)",
    )?;
    Key256::from_slice(&plain).ok_or(CryptoError::malformed("tenant seal key", "not 32 bytes"))
}

/// A KEK version object.
pub(super) fn seal_kek(
    seal: &Key256,
    tenant: &TenantId,
    version: u32,
    kek: &Key256,
) -> Result<Vec<u8>, CryptoError> {
    let mut header = header(KEK_MAGIC);
    header.extend_from_slice(&version.to_be_bytes());
    let (nonce, sealed) = aead_seal(seal, kek.expose(), &tenant_aad(&header, tenant))?;
    Ok(finish(header, nonce, sealed))
}

/// Opens a KEK version object stored as `version` of `tenant`.
pub(super) fn open_kek(
    seal: &Key256,
    tenant: &TenantId,
    version: u32,
    bytes: &[u8],
) -> Result<Key256, CryptoError> {
    let mut reader = Reader::new(bytes, "tenant KEK");
    reader.expect_magic_and_version(KEK_MAGIC, OBJECTS_VERSION)?;
    if reader.u32()? != version {
        return Err(CryptoError::malformed(
            "tenant KEK",
            "stored under another version",
        ));
    }
    let nonce: [u8; 12] = reader.array()?;
    let plain = aead_open(
        seal,
        &nonce,
        &bytes[reader.position()..],
        &tenant_aad(&bytes[..10], tenant),
        "tenant KEK (wrong seal key, or not this tenant's)",
    )?;
    Key256::from_slice(&plain).ok_or(CryptoError::malformed("tenant KEK", "not 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_open_only_under_their_key_and_name() {
        let (root, other_root) = (Key256::random(), Key256::random());
        let (acme, other) = (
            TenantId::new("acme").unwrap(),
            TenantId::new("other").unwrap(),
        );
        let check = seal_root_check(&root).unwrap();
        assert!(opens_root_check(&root, &check).unwrap());
        assert!(!opens_root_check(&other_root, &check).unwrap());

        let seal = Key256::random();
        let sealed = seal_tenant_seal(&root, &acme, &seal).unwrap();
        let opened = open_tenant_seal(&root, &acme, &sealed).unwrap();
        assert_eq!(opened.expose(), seal.expose());
        assert!(open_tenant_seal(&root, &other, &sealed).is_err());
        assert!(open_tenant_seal(&other_root, &acme, &sealed).is_err());

        let kek = Key256::random();
        let sealed = seal_kek(&seal, &acme, 3, &kek).unwrap();
        assert_eq!(
            open_kek(&seal, &acme, 3, &sealed).unwrap().expose(),
            kek.expose()
        );
        assert!(open_kek(&seal, &acme, 2, &sealed).is_err());
        assert!(open_kek(&seal, &other, 3, &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open_kek(&seal, &acme, 3, &tampered).is_err());
        // Truncated or foreign bytes are a clear error, not a panic.
        assert!(open_kek(&seal, &acme, 3, &sealed[..5]).is_err());
        assert!(opens_root_check(&root, &sealed).is_err());
    }
}

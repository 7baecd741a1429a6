//! The keystore files of earlier versions, read once to import them into the
//! object store (see [`super::LocalKeyProvider::import_legacy_files`]).
//!
//! Keystore file v2 (v1, without seal keys, is read too):
//!
//! ```text
//! "BVKS" | u16 version (2) | nonce (12) | AES-256-GCM-SIV(root key, nonce, entries,
//!                                             aad = "BVKS" | version)
//! entries = u32 tenant count, then per tenant: tenant (u8 len + bytes), nonce (12),
//!           u32 length, AES-256-GCM-SIV(seal key, nonce, versions,
//!                                      aad = "BVKS" | version | tenant)
//! versions = u32 version count, then per version: u32 version, 32-byte KEK
//! v1 entries = u32 tenant count, then per tenant: tenant, versions (no seal)
//! ```
//!
//! Seal file v1: `"BVTS" | u16 1 | nonce (12) | AES-256-GCM-SIV(root key, nonce,
//! u32 count, then per tenant: tenant, 32-byte seal key; aad = "BVTS" | 1)`.

use std::collections::BTreeMap;

use vault_crypto::wire::Reader;
use vault_crypto::{CryptoError, Key256, TenantId};

use super::objects::{aead_open, tenant_aad};
use super::KekVersion;

/// Magic of the keystore file. FORMAT CONSTANT.
pub(super) const KEYSTORE_MAGIC: [u8; 4] = *b"BVKS";
/// Keystore without per-tenant seal keys. FORMAT CONSTANT.
pub(super) const KEYSTORE_V1: u16 = 1;
/// Keystore with per-tenant seal keys. FORMAT CONSTANT.
pub(super) const KEYSTORE_V2: u16 = 2;
/// Magic of the tenant seal file. FORMAT CONSTANT.
pub(super) const SEALS_MAGIC: [u8; 4] = *b"BVTS";
/// Version of the tenant seal file. FORMAT CONSTANT.
pub(super) const SEALS_VERSION: u16 = 1;

/// One tenant's entry of a keystore file.
pub(super) enum Entry {
    /// A v1 entry: readable with the root key alone.
    Open(Vec<KekVersion>),
    /// A v2 entry: sealed under the tenant's seal key.
    Sealed { nonce: [u8; 12], sealed: Vec<u8> },
}

/// A keystore file, opened under the root key.
pub(super) struct KeystoreFile {
    header: Vec<u8>,
    /// Its tenants' entries.
    pub entries: Vec<(TenantId, Entry)>,
}

impl KeystoreFile {
    /// Opens the outer seal of a keystore file.
    pub fn open(root: &Key256, sealed: &[u8]) -> Result<Self, CryptoError> {
        let mut reader = Reader::new(sealed, "keystore");
        let version =
            reader.expect_magic_and_versions(KEYSTORE_MAGIC, &[KEYSTORE_V1, KEYSTORE_V2])?;
        let header = sealed[..6].to_vec();
        let nonce: [u8; 12] = reader.array()?;
        let plain = aead_open(
            root,
            &nonce,
            &sealed[reader.position()..],
            &header,
            "keystore (wrong root key or modified file)",
        )?;
        let mut reader = Reader::new(&plain, "keystore");
        let mut entries = Vec::new();
        for _ in 0..reader.u32()? {
            let tenant = TenantId::new(reader.short_str()?)
                .map_err(|_| CryptoError::malformed("keystore", "invalid tenant id"))?;
            let entry = if version == KEYSTORE_V1 {
                Entry::Open(decode_versions(&mut reader)?)
            } else {
                let nonce: [u8; 12] = reader.array()?;
                let len = reader.u32()? as usize;
                Entry::Sealed {
                    nonce,
                    sealed: reader.take(len)?.to_vec(),
                }
            };
            entries.push((tenant, entry));
        }
        reader.expect_end()?;
        Ok(KeystoreFile { header, entries })
    }

    /// A tenant's KEK versions; `None` when its entry is sealed and no seal key
    /// is given (the tenant was offboarded: its KEKs are shredded).
    pub fn versions(
        &self,
        tenant: &TenantId,
        entry: &Entry,
        seal: Option<&Key256>,
    ) -> Result<Option<Vec<KekVersion>>, CryptoError> {
        match entry {
            Entry::Open(versions) => Ok(Some(versions.clone())),
            Entry::Sealed { nonce, sealed } => {
                let Some(seal) = seal else {
                    return Ok(None);
                };
                let inner = aead_open(
                    seal,
                    nonce,
                    sealed,
                    &tenant_aad(&self.header, tenant),
                    "keystore entry (wrong tenant seal key)",
                )?;
                let mut reader = Reader::new(&inner, "keystore entry");
                let versions = decode_versions(&mut reader)?;
                reader.expect_end()?;
                Ok(Some(versions))
            }
        }
    }
}

fn decode_versions(reader: &mut Reader<'_>) -> Result<Vec<KekVersion>, CryptoError> {
    let count = reader.u32()?;
    let mut versions = Vec::new();
    for _ in 0..count {
        let version = reader.u32()?;
        let key = Key256::from_bytes(reader.array()?);
        versions.push(KekVersion { version, key });
    }
    Ok(versions)
}

/// Opens a tenant seal file.
pub(super) fn open_seal_file(
    root: &Key256,
    sealed: &[u8],
) -> Result<BTreeMap<TenantId, Key256>, CryptoError> {
    let mut reader = Reader::new(sealed, "tenant seal file");
    reader.expect_magic_and_version(SEALS_MAGIC, SEALS_VERSION)?;
    let nonce: [u8; 12] = reader.array()?;
    let plain = aead_open(
        root,
        &nonce,
        &sealed[reader.position()..],
        &sealed[..6],
        "tenant seal file (wrong root key or modified file)",
    )?;
    let mut reader = Reader::new(&plain, "tenant seal file");
    let mut seals = BTreeMap::new();
    for _ in 0..reader.u32()? {
        let tenant = TenantId::new(reader.short_str()?)
            .map_err(|_| CryptoError::malformed("tenant seal file", "invalid tenant id"))?;
        seals.insert(tenant, Key256::from_bytes(reader.array()?));
    }
    reader.expect_end()?;
    Ok(seals)
}

/// Writers of the old formats, for the fixtures and the import tests.
#[cfg(test)]
pub(super) mod writers {
    use super::*;
    use crate::local::objects::aead_seal;
    use vault_crypto::wire::put_short_str;

    /// KEK versions: (version, key).
    pub type Versions = Vec<(u32, [u8; 32])>;

    fn encode_versions(out: &mut Vec<u8>, versions: &[(u32, [u8; 32])]) {
        out.extend_from_slice(&(versions.len() as u32).to_be_bytes());
        for (version, key) in versions {
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(key);
        }
    }

    fn outer(root: &Key256, version: u16, plain: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut header = KEYSTORE_MAGIC.to_vec();
        header.extend_from_slice(&version.to_be_bytes());
        let (nonce, sealed) = aead_seal(root, plain, &header).unwrap();
        let mut out = header.clone();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        (header, out)
    }

    /// A v1 keystore file.
    pub fn keystore_v1(root: &Key256, tenants: &[(&str, Versions)]) -> Vec<u8> {
        let mut plain = (tenants.len() as u32).to_be_bytes().to_vec();
        for (tenant, versions) in tenants {
            put_short_str(&mut plain, tenant);
            encode_versions(&mut plain, versions);
        }
        outer(root, KEYSTORE_V1, &plain).1
    }

    /// A v2 keystore file; each tenant's entry sealed under its seal key.
    pub fn keystore_v2(root: &Key256, tenants: &[(&str, &Key256, Versions)]) -> Vec<u8> {
        let mut header = KEYSTORE_MAGIC.to_vec();
        header.extend_from_slice(&KEYSTORE_V2.to_be_bytes());
        let mut plain = (tenants.len() as u32).to_be_bytes().to_vec();
        for (tenant, seal, versions) in tenants {
            let mut inner = Vec::new();
            encode_versions(&mut inner, versions);
            let id = TenantId::new(*tenant).unwrap();
            let (nonce, sealed) = aead_seal(seal, &inner, &tenant_aad(&header, &id)).unwrap();
            put_short_str(&mut plain, tenant);
            plain.extend_from_slice(&nonce);
            plain.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
            plain.extend_from_slice(&sealed);
        }
        outer(root, KEYSTORE_V2, &plain).1
    }

    /// A seal file.
    pub fn seal_file(root: &Key256, seals: &[(&str, &Key256)]) -> Vec<u8> {
        let mut header = SEALS_MAGIC.to_vec();
        header.extend_from_slice(&SEALS_VERSION.to_be_bytes());
        let mut plain = (seals.len() as u32).to_be_bytes().to_vec();
        for (tenant, key) in seals {
            put_short_str(&mut plain, tenant);
            plain.extend_from_slice(key.expose());
        }
        let (nonce, sealed) = aead_seal(root, &plain, &header).unwrap();
        let mut out = header;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }
}

//! The key record, v1: the wrapped DEK and the encrypted metadata block of one
//! document, stored beside the body and rewritten alone on key rotation.
//!
//! ```text
//! "BVKR" | u16 version (1) | u16 suite
//! tenant id (u8 len + bytes) | document id (16) | message id (32) | commitment (32)
//!   -- the immutable part: associated data of the metadata block --
//! provider id (u8 len + bytes) | KEK id (u16 len + bytes) | key version (u32)
//!   -- everything so far: associated data of the wrapped DEK --
//! wrap nonce (12) | wrapped DEK (32 + 16 tag)
//! metadata nonce (12) | metadata length (u32) | metadata ciphertext (+ 16 tag)
//! ```

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use zeroize::Zeroizing;

use super::derive::DerivedKeys;
use super::{
    BodyHeader, FORMAT_V1, KEY_RECORD_MAGIC, SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT, TAG_LEN,
};
use crate::wire::{put_short_str, put_str16, Reader};
use crate::{CryptoError, DocumentId, Key256, TenantId};

const WHAT: &str = "key record";
/// Largest metadata block accepted (extracted fields of a large remittance fit).
pub const MAX_METADATA_LEN: usize = 4 * 1024 * 1024;

/// Which key wraps a DEK: the provider, the tenant KEK and the branch key version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    /// Key provider id (`local`, `aws-kms`).
    pub provider: String,
    /// KEK id within the provider (local tenant key, KMS ARN or alias).
    pub kek_id: String,
    /// Version of the tenant's branch key that wraps the DEK.
    pub version: u32,
}

/// A parsed key record.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Tenant of the document.
    pub tenant: TenantId,
    /// The document.
    pub document: DocumentId,
    message_id: [u8; 32],
    commitment: [u8; 32],
    /// The wrapping key.
    pub key_ref: KeyRef,
    wrap_nonce: [u8; 12],
    wrapped_dek: [u8; 32 + TAG_LEN],
    metadata_nonce: [u8; 12],
    metadata: Vec<u8>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("tenant", &self.tenant)
            .field("document", &self.document)
            .field("key_ref", &self.key_ref)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// Wraps `dek` under `wrapping_key` and encrypts `metadata` for the body described
    /// by `header`.
    pub fn seal(
        dek: &Key256,
        header: &BodyHeader,
        wrapping_key: &Key256,
        key_ref: KeyRef,
        metadata: &[u8],
    ) -> Result<KeyRecord, CryptoError> {
        if metadata.len() > MAX_METADATA_LEN {
            return Err(CryptoError::Limit("metadata block larger than 4 MiB"));
        }
        check_key_ref(&key_ref)?;
        let keys = DerivedKeys::derive(
            dek,
            SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT,
            &header.message_id,
        );
        keys.verify_commitment(&header.commitment)?;
        let mut record = KeyRecord {
            tenant: header.tenant.clone(),
            document: header.document,
            message_id: header.message_id,
            commitment: header.commitment,
            key_ref,
            wrap_nonce: crate::secret::random_bytes(),
            wrapped_dek: [0; 32 + TAG_LEN],
            metadata_nonce: crate::secret::random_bytes(),
            metadata: Vec::new(),
        };
        record.metadata = keys
            .metadata
            .encrypt(
                Nonce::from_slice(&record.metadata_nonce),
                Payload {
                    msg: metadata,
                    aad: &record.immutable_part(),
                },
            )
            .map_err(|_| CryptoError::Limit("metadata too large for AES-GCM-SIV"))?;
        record.wrap(dek, wrapping_key)?;
        Ok(record)
    }

    fn wrap(&mut self, dek: &Key256, wrapping_key: &Key256) -> Result<(), CryptoError> {
        self.wrap_nonce = crate::secret::random_bytes();
        let aead = Aes256GcmSiv::new(wrapping_key.expose().into());
        let wrapped = aead
            .encrypt(
                Nonce::from_slice(&self.wrap_nonce),
                Payload {
                    msg: dek.expose(),
                    aad: &self.wrap_aad(),
                },
            )
            .map_err(|_| CryptoError::Limit("key wrap"))?;
        self.wrapped_dek = wrapped
            .try_into()
            .map_err(|_| CryptoError::Limit("key wrap output length"))?;
        Ok(())
    }

    fn immutable_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&KEY_RECORD_MAGIC);
        out.extend_from_slice(&FORMAT_V1.to_be_bytes());
        out.extend_from_slice(&SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT.to_be_bytes());
        put_short_str(&mut out, self.tenant.as_str());
        out.extend_from_slice(self.document.as_bytes());
        out.extend_from_slice(&self.message_id);
        out.extend_from_slice(&self.commitment);
        out
    }

    fn wrap_aad(&self) -> Vec<u8> {
        let mut out = self.immutable_part();
        put_short_str(&mut out, &self.key_ref.provider);
        put_str16(&mut out, &self.key_ref.kek_id);
        out.extend_from_slice(&self.key_ref.version.to_be_bytes());
        out
    }

    /// Unwraps the DEK and checks it against the key commitment.
    pub fn unwrap_dek(&self, wrapping_key: &Key256) -> Result<Key256, CryptoError> {
        let aead = Aes256GcmSiv::new(wrapping_key.expose().into());
        let plain = Zeroizing::new(
            aead.decrypt(
                Nonce::from_slice(&self.wrap_nonce),
                Payload {
                    msg: &self.wrapped_dek,
                    aad: &self.wrap_aad(),
                },
            )
            .map_err(|_| CryptoError::UnwrapFailed("document key"))?,
        );
        let dek = Key256::from_slice(&plain).ok_or(CryptoError::UnwrapFailed("document key"))?;
        DerivedKeys::derive(
            &dek,
            SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT,
            &self.message_id,
        )
        .verify_commitment(&self.commitment)?;
        Ok(dek)
    }

    /// Decrypts the metadata block with the (already unwrapped) DEK.
    pub fn open_metadata(&self, dek: &Key256) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let keys = DerivedKeys::derive(
            dek,
            SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT,
            &self.message_id,
        );
        keys.verify_commitment(&self.commitment)?;
        keys.metadata
            .decrypt(
                Nonce::from_slice(&self.metadata_nonce),
                Payload {
                    msg: &self.metadata,
                    aad: &self.immutable_part(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::MetadataIntegrity)
    }

    /// Re-wraps the DEK under another key, leaving body and metadata untouched.
    pub fn rewrap(
        &self,
        old_key: &Key256,
        new_key: &Key256,
        new_ref: KeyRef,
    ) -> Result<KeyRecord, CryptoError> {
        check_key_ref(&new_ref)?;
        let dek = self.unwrap_dek(old_key)?;
        let mut record = self.clone();
        record.key_ref = new_ref;
        record.wrap(&dek, new_key)?;
        Ok(record)
    }

    /// The bytes of the record that a rewrap never changes: the immutable part,
    /// the metadata nonce and the metadata ciphertext. An append-only log hashes
    /// these, so rotating keys leaves its Merkle tree intact.
    pub fn authenticated_content(&self) -> Vec<u8> {
        let mut out = self.immutable_part();
        out.extend_from_slice(&self.metadata_nonce);
        out.extend_from_slice(&(self.metadata.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.metadata);
        out
    }

    /// True when this record's commitment matches the body header's.
    pub fn matches_body(&self, header: &BodyHeader) -> bool {
        use subtle::ConstantTimeEq;
        header.tenant == self.tenant
            && header.document == self.document
            && header.message_id == self.message_id
            && bool::from(header.commitment.ct_eq(&self.commitment))
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.wrap_aad();
        out.extend_from_slice(&self.wrap_nonce);
        out.extend_from_slice(&self.wrapped_dek);
        out.extend_from_slice(&self.metadata_nonce);
        out.extend_from_slice(&(self.metadata.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.metadata);
        out
    }

    /// Parses a record from untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<KeyRecord, CryptoError> {
        let mut reader = Reader::new(bytes, WHAT);
        reader.expect_magic_and_version(KEY_RECORD_MAGIC, FORMAT_V1)?;
        let suite = reader.u16()?;
        if suite != SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT {
            return Err(CryptoError::UnsupportedSuite(suite));
        }
        let tenant = TenantId::new(reader.short_str()?)
            .map_err(|_| CryptoError::malformed(WHAT, "invalid tenant id"))?;
        let document = DocumentId::from_bytes(reader.array()?);
        let message_id = reader.array()?;
        let commitment = reader.array()?;
        let key_ref = KeyRef {
            provider: reader.short_str()?.to_owned(),
            kek_id: reader.str16()?.to_owned(),
            version: reader.u32()?,
        };
        let wrap_nonce = reader.array()?;
        let wrapped_dek = reader.array()?;
        let metadata_nonce = reader.array()?;
        let metadata_len = reader.u32()? as usize;
        if !(TAG_LEN..=MAX_METADATA_LEN + TAG_LEN).contains(&metadata_len) {
            return Err(CryptoError::malformed(WHAT, "metadata length out of range"));
        }
        let metadata = reader.take(metadata_len)?.to_vec();
        reader.expect_end()?;
        Ok(KeyRecord {
            tenant,
            document,
            message_id,
            commitment,
            key_ref,
            wrap_nonce,
            wrapped_dek,
            metadata_nonce,
            metadata,
        })
    }
}

fn check_key_ref(key_ref: &KeyRef) -> Result<(), CryptoError> {
    if key_ref.provider.is_empty() || key_ref.provider.len() > 32 || key_ref.kek_id.len() > 2048 {
        return Err(CryptoError::InvalidArgument {
            what: "key reference",
            reason: "provider id must be 1-32 bytes and KEK id at most 2048 bytes".into(),
        });
    }
    Ok(())
}

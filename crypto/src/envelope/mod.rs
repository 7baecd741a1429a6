//! Envelope format v1.
//!
//! A document is stored as two objects:
//!
//! * the **body**: a [`BodyHeader`] followed by the plaintext in AES-256-GCM-SIV
//!   segments under the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár
//!   2015; the nonce layout of RustCrypto's `aead::stream::StreamBE32`);
//! * the **key record** ([`KeyRecord`]): the DEK wrapped under the tenant's branch
//!   key, naming provider, KEK id and key version, plus the encrypted metadata block.
//!   It is small and rewritten alone on key rotation; the body never changes.
//!
//! The data key is committed as in the AWS Encryption SDK's committing suites:
//! `HKDF-SHA512(ikm = DEK, salt = message id)` gives the body key
//! (`suite || "DERIVEKEY"`), the metadata key (`suite || "METADATAKEY"`) and the
//! 32-byte commitment (`"COMMITKEY"`), which both header and key record carry and
//! which is compared in constant time before any plaintext is released.
//!
//! Every segment's associated data is the whole encoded header, which contains the
//! format version, suite, tenant id and document id: a body moved to another tenant
//! or document, or with any header bit changed, fails to decrypt.

mod derive;
mod header;
mod key_record;
mod layout;
mod segment;
mod stream;

pub use header::BodyHeader;
pub use key_record::{KeyRecord, KeyRef, MAX_METADATA_LEN};
pub use layout::{BodyLayout, RangePlan};
pub use segment::BodyCipher;
pub use stream::{
    decrypt_range_stream, decrypt_stream, encrypt_stream, BodyDecryptor, BodyEncryptor, StreamError,
};

use crate::{DocumentId, Key256, Result, TenantId};

/// Magic bytes opening every body object. FORMAT CONSTANT: never change.
pub const BODY_MAGIC: [u8; 4] = *b"BVLT";
/// Magic bytes opening every key record. FORMAT CONSTANT: never change.
pub const KEY_RECORD_MAGIC: [u8; 4] = *b"BVKR";
/// Envelope format version 1. FORMAT CONSTANT: a new layout gets a new number.
pub const FORMAT_V1: u16 = 1;
/// Suite 1: AES-256-GCM-SIV, STREAM with 7-byte prefix / 32-bit BE counter / last
/// flag, HKDF-SHA512 key derivation and commitment. FORMAT CONSTANT.
pub const SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT: u16 = 0x0001;
/// Default plaintext bytes per segment.
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Smallest accepted segment size (small sizes exist for exhaustive tests).
pub const MIN_SEGMENT_SIZE: u32 = 16;
/// Largest accepted segment size: bounds memory per stream.
pub const MAX_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// AES-GCM-SIV tag length.
pub const TAG_LEN: usize = 16;

/// Starts a new document body: returns the encoded header (to be written first) and
/// the encryptor for the body. The caller keeps `dek` to seal the key record.
pub fn begin_body(
    dek: &Key256,
    tenant: &TenantId,
    document: DocumentId,
    segment_size: u32,
) -> Result<(Vec<u8>, BodyEncryptor)> {
    let message_id = crate::secret::random_bytes::<32>();
    let keys =
        derive::DerivedKeys::derive(dek, SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT, &message_id);
    let header = BodyHeader {
        tenant: tenant.clone(),
        document,
        segment_size,
        message_id,
        nonce_prefix: crate::secret::random_bytes::<7>(),
        commitment: keys.commitment,
    };
    header.validate()?;
    let encoded = header.encode();
    let cipher = BodyCipher::new(keys.body, &header, encoded.clone());
    Ok((encoded, BodyEncryptor::new(cipher)))
}

/// Opens a body whose header has been read: checks that it belongs to the expected
/// tenant and document and that `dek` matches its key commitment, then returns the
/// cipher for its segments. No plaintext is released before these checks.
pub fn open_body(
    dek: &Key256,
    expected_tenant: &TenantId,
    expected_document: DocumentId,
    header_bytes: &[u8],
) -> Result<(BodyHeader, BodyCipher)> {
    let (header, consumed) = BodyHeader::parse(header_bytes)?;
    if consumed != header_bytes.len() {
        return Err(crate::CryptoError::malformed(
            "body header",
            "unexpected bytes after the header",
        ));
    }
    if &header.tenant != expected_tenant {
        return Err(crate::CryptoError::ContextMismatch("tenant"));
    }
    if header.document != expected_document {
        return Err(crate::CryptoError::ContextMismatch("document"));
    }
    let keys = derive::DerivedKeys::derive(
        dek,
        SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT,
        &header.message_id,
    );
    keys.verify_commitment(&header.commitment)?;
    let cipher = BodyCipher::new(keys.body, &header, header_bytes.to_vec());
    Ok((header, cipher))
}

#[cfg(test)]
mod tests;

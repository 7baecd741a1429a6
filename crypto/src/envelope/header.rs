//! The body header, v1.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "BVLT"
//! 4       2     format version (1)
//! 6       2     suite id (0x0001)
//! 8       2     header length in bytes (all fields, including these)
//! 10      1+n   tenant id (length, bytes)
//! ..      16    document id
//! ..      4     segment size (plaintext bytes per full segment)
//! ..      32    message id (HKDF salt)
//! ..      7     STREAM nonce prefix
//! ..      32    key commitment
//! ```
//!
//! All integers are big-endian. The whole encoded header is the associated data of
//! every segment.

use super::{
    BODY_MAGIC, FORMAT_V1, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
    SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT,
};
use crate::wire::{put_short_str, Reader};
use crate::{CryptoError, DocumentId, TenantId};

const WHAT: &str = "body header";
/// Bytes before the tenant id: magic, version, suite, header length.
const FIXED_PREFIX_LEN: usize = 10;
/// Bytes of the fields after the tenant id.
const FIXED_SUFFIX_LEN: usize = 16 + 4 + 32 + 7 + 32;

/// The parsed header of a document body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyHeader {
    /// Tenant the body belongs to.
    pub tenant: TenantId,
    /// Document the body belongs to.
    pub document: DocumentId,
    /// Plaintext bytes per full segment.
    pub segment_size: u32,
    /// Random salt of the key derivation.
    pub message_id: [u8; 32],
    /// Random STREAM nonce prefix.
    pub nonce_prefix: [u8; 7],
    /// Key commitment derived from the DEK.
    pub commitment: [u8; 32],
}

impl BodyHeader {
    /// Encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        FIXED_PREFIX_LEN + 1 + self.tenant.as_str().len() + FIXED_SUFFIX_LEN
    }

    pub(crate) fn validate(&self) -> Result<(), CryptoError> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(CryptoError::InvalidArgument {
                what: "segment size",
                reason: format!("must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes"),
            });
        }
        Ok(())
    }

    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&BODY_MAGIC);
        out.extend_from_slice(&FORMAT_V1.to_be_bytes());
        out.extend_from_slice(&SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT.to_be_bytes());
        // Tenant ids are at most 63 bytes, so the header fits a u16 by construction.
        out.extend_from_slice(&(len as u16).to_be_bytes());
        put_short_str(&mut out, self.tenant.as_str());
        out.extend_from_slice(self.document.as_bytes());
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.message_id);
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&self.commitment);
        debug_assert_eq!(out.len(), len);
        out
    }

    /// How long the header starting `prefix` is, once at least 10 bytes are known.
    /// Lets a streaming reader know how much to buffer before [`BodyHeader::parse`].
    pub fn peek_len(prefix: &[u8]) -> Result<Option<usize>, CryptoError> {
        if prefix.len() < FIXED_PREFIX_LEN {
            return Ok(None);
        }
        let mut reader = Reader::new(prefix, WHAT);
        check_magic_version_suite(&mut reader)?;
        let len = usize::from(reader.u16()?);
        if !(FIXED_PREFIX_LEN + 2 + FIXED_SUFFIX_LEN
            ..=FIXED_PREFIX_LEN + 1 + TenantId::MAX_LEN + FIXED_SUFFIX_LEN)
            .contains(&len)
        {
            return Err(CryptoError::malformed(
                WHAT,
                format!("impossible header length {len}"),
            ));
        }
        Ok(Some(len))
    }

    /// Parses a header from the start of `bytes`; returns it and its length.
    pub fn parse(bytes: &[u8]) -> Result<(BodyHeader, usize), CryptoError> {
        let declared =
            Self::peek_len(bytes)?.ok_or_else(|| CryptoError::malformed(WHAT, "truncated"))?;
        let mut reader = Reader::new(bytes, WHAT);
        reader.take(FIXED_PREFIX_LEN)?;
        let tenant = TenantId::new(reader.short_str()?)
            .map_err(|_| CryptoError::malformed(WHAT, "invalid tenant id"))?;
        let document = DocumentId::from_bytes(reader.array()?);
        let segment_size = reader.u32()?;
        let header = BodyHeader {
            tenant,
            document,
            segment_size,
            message_id: reader.array()?,
            nonce_prefix: reader.array()?,
            commitment: reader.array()?,
        };
        if reader.position() != declared {
            return Err(CryptoError::malformed(
                WHAT,
                "declared length does not match its fields",
            ));
        }
        header
            .validate()
            .map_err(|_| CryptoError::malformed(WHAT, "segment size out of range"))?;
        Ok((header, declared))
    }
}

fn check_magic_version_suite(reader: &mut Reader<'_>) -> Result<(), CryptoError> {
    reader.expect_magic_and_version(BODY_MAGIC, FORMAT_V1)?;
    let suite = reader.u16()?;
    if suite != SUITE_AES256_GCM_SIV_HKDF_SHA512_COMMIT {
        return Err(CryptoError::UnsupportedSuite(suite));
    }
    Ok(())
}

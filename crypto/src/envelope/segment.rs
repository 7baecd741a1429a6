//! Sealing and opening one body segment.

use aes_gcm_siv::aead::AeadInPlace;
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};

use super::{BodyHeader, BodyLayout, TAG_LEN};
use crate::CryptoError;

/// The per-document body cipher: the derived body key, the STREAM nonce prefix and
/// the header bytes used as associated data.
pub struct BodyCipher {
    aead: Aes256GcmSiv,
    nonce_prefix: [u8; 7],
    header_bytes: Vec<u8>,
    segment_size: u32,
}

impl std::fmt::Debug for BodyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCipher")
            .field("segment_size", &self.segment_size)
            .finish_non_exhaustive()
    }
}

/// STREAM nonce (`aead::stream::StreamBE32` layout): 7-byte prefix, 32-bit big-endian
/// segment counter, one byte that is 1 for the final segment and 0 otherwise.
pub(crate) fn stream_nonce(prefix: &[u8; 7], index: u32, last: bool) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..7].copy_from_slice(prefix);
    nonce[7..11].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(last);
    nonce
}

impl BodyCipher {
    pub(crate) fn new(aead: Aes256GcmSiv, header: &BodyHeader, header_bytes: Vec<u8>) -> Self {
        BodyCipher {
            aead,
            nonce_prefix: header.nonce_prefix,
            header_bytes,
            segment_size: header.segment_size,
        }
    }

    /// Plaintext bytes per full segment.
    pub fn segment_size(&self) -> usize {
        self.segment_size as usize
    }

    /// The body's geometry.
    pub fn layout(&self) -> BodyLayout {
        BodyLayout {
            header_len: self.header_bytes.len() as u64,
            segment_size: u64::from(self.segment_size),
        }
    }

    fn counter(index: u64) -> Result<u32, CryptoError> {
        u32::try_from(index).map_err(|_| CryptoError::Limit("more than 2^32 segments"))
    }

    /// Encrypts `buf` (one segment's plaintext) in place and appends the tag.
    pub fn seal(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        let nonce = stream_nonce(&self.nonce_prefix, Self::counter(index)?, last);
        let tag = self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &self.header_bytes, buf)
            .map_err(|_| CryptoError::Limit("segment too large for AES-GCM-SIV"))?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Decrypts one segment (ciphertext followed by its tag) in place; returns the
    /// plaintext length (the first bytes of `buf`). Nothing is released on failure.
    pub fn open(&self, index: u64, last: bool, buf: &mut [u8]) -> Result<usize, CryptoError> {
        let integrity = CryptoError::SegmentIntegrity { segment: index };
        let plain_len = buf
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(CryptoError::Truncated)?;
        if plain_len > self.segment_size() || (plain_len == self.segment_size() && last) {
            return Err(integrity);
        }
        let nonce = stream_nonce(&self.nonce_prefix, Self::counter(index)?, last);
        let (data, tag) = buf.split_at_mut(plain_len);
        let tag = Tag::clone_from_slice(tag);
        match self.aead.decrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            &self.header_bytes,
            data,
            &tag,
        ) {
            Ok(()) => Ok(plain_len),
            Err(_) => Err(integrity),
        }
    }
}

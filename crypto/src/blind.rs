//! Blind-index keys and tokens.
//!
//! Per tenant a random index root key (wrapped by the tenant KEK, see
//! [`crate::keys::KeyHierarchy::index_root_key`]); per field a key
//! `HKDF-SHA256(ikm = root, salt = "billing-vault blind index", info = "field:" || version || name)`;
//! a token is `HMAC-SHA256(field key, normalised value)` truncated to the field's bit
//! length (as CipherSweet's blind indexes and AWS's beacons do). Truncation makes
//! tokens collide on purpose; callers post-filter candidates for exact results.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{CryptoError, Key256};

/// HKDF salt of field keys. FORMAT CONSTANT: changing it changes every token.
const FIELD_KEY_SALT: &[u8] = b"billing-vault blind index";

/// A tenant's blind-index root key.
#[derive(Clone, Debug)]
pub struct IndexRootKey {
    key: Key256,
    version: u32,
}

/// A per-field token key.
#[derive(Clone, Debug)]
pub struct FieldKey(Key256);

/// A truncated blind token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlindToken {
    bytes: Vec<u8>,
    bits: u16,
}

impl IndexRootKey {
    /// Wraps an unwrapped root key of the given version.
    pub fn new(key: Key256, version: u32) -> Self {
        IndexRootKey { key, version }
    }

    /// The root key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key of one field (e.g. `patient_name`).
    pub fn field_key(&self, field: &str) -> FieldKey {
        let hkdf = Hkdf::<Sha256>::new(Some(FIELD_KEY_SALT), self.key.expose());
        let mut okm = Zeroizing::new([0u8; 32]);
        let version = self.version.to_be_bytes();
        hkdf.expand_multi_info(&[b"field:", &version, field.as_bytes()], okm.as_mut())
            .unwrap_or_else(|_| unreachable!("32-byte HKDF-SHA256 output"));
        FieldKey(Key256::from_bytes(*okm))
    }
}

impl FieldKey {
    /// The token of a normalised value, truncated to `bits` (1 to 256).
    pub fn token(&self, normalised_value: &[u8], bits: u16) -> Result<BlindToken, CryptoError> {
        if !(1..=256).contains(&bits) {
            return Err(CryptoError::InvalidArgument {
                what: "token bit length",
                reason: "must be 1 to 256".into(),
            });
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(normalised_value);
        let full = mac.finalize().into_bytes();
        let byte_len = usize::from(bits).div_ceil(8);
        let mut bytes = full[..byte_len].to_vec();
        let spare = (byte_len * 8) as u16 - bits;
        if spare > 0 {
            if let Some(last) = bytes.last_mut() {
                *last &= 0xFFu8 << spare;
            }
        }
        Ok(BlindToken { bytes, bits })
    }
}

impl BlindToken {
    /// Hex form, as stored in the index.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }

    /// Bit length.
    pub fn bits(&self) -> u16 {
        self.bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(byte: u8) -> IndexRootKey {
        IndexRootKey::new(Key256::from_bytes([byte; 32]), 1)
    }

    #[test]
    fn tokens_are_deterministic_and_separated_by_field_and_tenant() {
        let a = root(1)
            .field_key("patient_name")
            .token(b"doe john", 256)
            .unwrap();
        assert_eq!(
            a,
            root(1)
                .field_key("patient_name")
                .token(b"doe john", 256)
                .unwrap()
        );
        assert_ne!(
            a,
            root(1)
                .field_key("member_id")
                .token(b"doe john", 256)
                .unwrap()
        );
        assert_ne!(
            a,
            root(2)
                .field_key("patient_name")
                .token(b"doe john", 256)
                .unwrap()
        );
        assert_ne!(
            a,
            IndexRootKey::new(Key256::from_bytes([1; 32]), 2)
                .field_key("patient_name")
                .token(b"doe john", 256)
                .unwrap()
        );
    }

    #[test]
    fn truncation_keeps_a_prefix_and_masks_spare_bits() {
        let key = root(7).field_key("claim_id");
        let full = key.token(b"CLM-1", 256).unwrap();
        let short = key.token(b"CLM-1", 13).unwrap();
        assert_eq!(short.to_hex().len(), 4);
        assert_eq!(short.bytes[0], full.bytes[0]);
        assert_eq!(short.bytes[1], full.bytes[1] & 0xF8);
        assert!(key.token(b"x", 0).is_err());
        assert!(key.token(b"x", 257).is_err());
    }
}

//! Blind-index keys and tokens.
//!
//! Per tenant a random index root key (wrapped by the tenant KEK, see
//! [`crate::keys::KeyHierarchy::index_root_key`]); per field a key
//! `HKDF-SHA256(ikm = root, salt = "billing-vault blind index", info = "field:" || version || name)`;
//! a token is `HMAC-SHA256(field key, normalised value)` truncated to the field's bit
//! length (as CipherSweet's blind indexes and AWS's beacons do). Truncation makes
//! tokens collide on purpose; callers post-filter candidates for exact results.
//!
//! The exact post-filter need not open the document: the untruncated HMAC of each
//! value (its first 16 bytes, an [`ExactTag`]) is sealed per document under an
//! [`ExactTermsKey`] (`HKDF-SHA256(root, salt, "exact-terms:" || version)`, AES-256-
//! GCM-SIV with a random nonce, the document id as associated data), so anyone
//! reading the index without the root key sees only the truncated tokens, whose
//! collisions hide how often a value recurs, and one AEAD open per candidate
//! answers exactly.

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{CryptoError, Key256};

/// HKDF salt of field keys. FORMAT CONSTANT: changing it changes every token.
const FIELD_KEY_SALT: &[u8] = b"billing-vault blind index";
/// HKDF info prefix of the exact-terms key. FORMAT CONSTANT.
const EXACT_TERMS_INFO: &[u8] = b"exact-terms:";
/// First byte of a sealed exact-terms blob: its format. FORMAT CONSTANT.
const EXACT_TERMS_FORMAT: u8 = 1;
/// Bytes of an exact tag (the HMAC's first 128 bits). FORMAT CONSTANT.
pub const EXACT_TAG_LEN: usize = 16;
const EXACT_NONCE_LEN: usize = 12;
const EXACT_AEAD_TAG_LEN: usize = 16;
const WHAT_EXACT: &str = "exact terms";

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

/// The untruncated keyed hash of one value (first 128 bits of its HMAC): what the
/// exact filter compares. Never stored in the clear.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExactTag([u8; EXACT_TAG_LEN]);

impl std::fmt::Debug for ExactTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExactTag(..)")
    }
}

/// The key that seals a document's exact tags in its index entry.
pub struct ExactTermsKey {
    aead: Aes256GcmSiv,
    version: u32,
}

impl std::fmt::Debug for ExactTermsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactTermsKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A document's exact tags, opened: sorted, distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactTags(Vec<ExactTag>);

impl ExactTags {
    /// Whether the document holds the value with this tag.
    pub fn contains(&self, tag: &ExactTag) -> bool {
        self.0.binary_search(tag).is_ok()
    }

    /// How many distinct values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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

    /// The key sealing documents' exact tags in this root key version's index.
    pub fn exact_terms_key(&self) -> ExactTermsKey {
        let hkdf = Hkdf::<Sha256>::new(Some(FIELD_KEY_SALT), self.key.expose());
        let mut okm = Zeroizing::new([0u8; 32]);
        let version = self.version.to_be_bytes();
        hkdf.expand_multi_info(&[EXACT_TERMS_INFO, &version], okm.as_mut())
            .unwrap_or_else(|_| unreachable!("32-byte HKDF-SHA256 output"));
        ExactTermsKey {
            aead: Aes256GcmSiv::new(okm.as_ref().into()),
            version: self.version,
        }
    }
}

impl FieldKey {
    /// The token of a normalised value, truncated to `bits` (1 to 256).
    pub fn token(&self, normalised_value: &[u8], bits: u16) -> Result<BlindToken, CryptoError> {
        Ok(self.token_and_tag(normalised_value, bits)?.0)
    }

    /// The exact tag of a normalised value.
    pub fn exact_tag(&self, normalised_value: &[u8]) -> ExactTag {
        exact_tag(&self.mac(normalised_value))
    }

    /// The truncated token and the exact tag of a value, from one HMAC.
    pub fn token_and_tag(
        &self,
        normalised_value: &[u8],
        bits: u16,
    ) -> Result<(BlindToken, ExactTag), CryptoError> {
        if !(1..=256).contains(&bits) {
            return Err(CryptoError::InvalidArgument {
                what: "token bit length",
                reason: "must be 1 to 256".into(),
            });
        }
        let full = self.mac(normalised_value);
        let tag = exact_tag(&full);
        let byte_len = usize::from(bits).div_ceil(8);
        let mut bytes = full[..byte_len].to_vec();
        let spare = (byte_len * 8) as u16 - bits;
        if spare > 0 {
            if let Some(last) = bytes.last_mut() {
                *last &= 0xFFu8 << spare;
            }
        }
        Ok((BlindToken { bytes, bits }, tag))
    }

    fn mac(&self, normalised_value: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(normalised_value);
        mac.finalize().into_bytes().into()
    }
}

fn exact_tag(full: &[u8; 32]) -> ExactTag {
    let mut tag = [0u8; EXACT_TAG_LEN];
    tag.copy_from_slice(&full[..EXACT_TAG_LEN]);
    ExactTag(tag)
}

impl ExactTermsKey {
    /// Seals a document's exact tags, bound to its id:
    /// `format (1) | nonce (12) | AES-256-GCM-SIV(sorted distinct tags) (16 n + 16)`.
    pub fn seal(&self, document: &[u8], tags: &[ExactTag]) -> Result<Vec<u8>, CryptoError> {
        let mut tags = tags.to_vec();
        tags.sort_unstable();
        tags.dedup();
        let mut plain = Zeroizing::new(Vec::with_capacity(tags.len() * EXACT_TAG_LEN));
        for tag in &tags {
            plain.extend_from_slice(&tag.0);
        }
        let nonce: [u8; EXACT_NONCE_LEN] = crate::random_bytes();
        let sealed = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &self.associated_data(document),
                },
            )
            .map_err(|_| CryptoError::InvalidArgument {
                what: WHAT_EXACT,
                reason: "too long to seal".into(),
            })?;
        let mut out = Vec::with_capacity(1 + EXACT_NONCE_LEN + sealed.len());
        out.push(EXACT_TERMS_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`ExactTermsKey::seal`] made for this document.
    pub fn open(&self, document: &[u8], sealed: &[u8]) -> Result<ExactTags, CryptoError> {
        let malformed = |reason: &str| CryptoError::Malformed {
            what: WHAT_EXACT,
            reason: reason.into(),
        };
        let (&format, rest) = sealed.split_first().ok_or_else(|| malformed("empty"))?;
        if format != EXACT_TERMS_FORMAT {
            return Err(CryptoError::UnsupportedVersion {
                what: WHAT_EXACT,
                version: u16::from(format),
            });
        }
        if rest.len() < EXACT_NONCE_LEN + EXACT_AEAD_TAG_LEN
            || (rest.len() - EXACT_NONCE_LEN - EXACT_AEAD_TAG_LEN) % EXACT_TAG_LEN != 0
        {
            return Err(malformed("length is not a whole number of tags"));
        }
        let (nonce, ciphertext) = rest.split_at(EXACT_NONCE_LEN);
        let plain = Zeroizing::new(
            self.aead
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &self.associated_data(document),
                    },
                )
                .map_err(|_| CryptoError::UnwrapFailed(WHAT_EXACT))?,
        );
        let tags: Vec<ExactTag> = plain
            .chunks_exact(EXACT_TAG_LEN)
            .map(|chunk| {
                let mut tag = [0u8; EXACT_TAG_LEN];
                tag.copy_from_slice(chunk);
                ExactTag(tag)
            })
            .collect();
        if tags.windows(2).any(|w| w[0] >= w[1]) {
            return Err(malformed("tags are not sorted and distinct"));
        }
        Ok(ExactTags(tags))
    }

    /// `format | key version | document id`: a blob opens only for its document
    /// under the key version it was sealed with.
    fn associated_data(&self, document: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(5 + document.len());
        aad.push(EXACT_TERMS_FORMAT);
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad.extend_from_slice(document);
        aad
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

    #[test]
    fn the_exact_tag_is_the_untruncated_tokens_prefix() {
        let key = root(7).field_key("claim_id");
        let (token, tag) = key.token_and_tag(b"CLM-1", 13).unwrap();
        assert_eq!(token, key.token(b"CLM-1", 13).unwrap());
        assert_eq!(tag, key.exact_tag(b"CLM-1"));
        assert_eq!(
            hex::encode(tag.0),
            key.token(b"CLM-1", 128).unwrap().to_hex()
        );
    }

    #[test]
    fn exact_tags_open_only_for_their_document_and_key_version() {
        let key = root(3).field_key("member_id");
        let tags = [
            key.exact_tag(b"M2"),
            key.exact_tag(b"M1"),
            key.exact_tag(b"M2"),
        ];
        let sealer = root(3).exact_terms_key();
        let sealed = sealer.seal(b"doc-a", &tags).unwrap();
        assert_eq!(sealed.len(), 1 + 12 + 2 * 16 + 16, "distinct tags only");
        let opened = sealer.open(b"doc-a", &sealed).unwrap();
        assert_eq!(opened.len(), 2);
        assert!(opened.contains(&key.exact_tag(b"M1")));
        assert!(!opened.contains(&key.exact_tag(b"M3")));
        // Another document, key, or key version: refused.
        assert!(sealer.open(b"doc-b", &sealed).is_err());
        assert!(root(4).exact_terms_key().open(b"doc-a", &sealed).is_err());
        let version_2 = IndexRootKey::new(Key256::from_bytes([3; 32]), 2).exact_terms_key();
        assert!(version_2.open(b"doc-a", &sealed).is_err());
        // Sealing twice gives different bytes (random nonce).
        assert_ne!(sealer.seal(b"doc-a", &tags).unwrap(), sealed);
        // Nothing sealed is fine too.
        assert!(sealer
            .open(b"doc-a", &sealer.seal(b"doc-a", &[]).unwrap())
            .unwrap()
            .is_empty());
    }

    proptest::proptest! {
        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = root(5).exact_terms_key().open(b"doc", &bytes);
        }

        #[test]
        fn a_changed_byte_never_opens(flip in 0usize..(1 + 12 + 3 * 16 + 16), bit in 0u8..8) {
            let key = root(5).field_key("npi");
            let tags = [key.exact_tag(b"1"), key.exact_tag(b"2"), key.exact_tag(b"3")];
            let sealer = root(5).exact_terms_key();
            let mut sealed = sealer.seal(b"doc", &tags).unwrap();
            sealed[flip] ^= 1 << bit;
            proptest::prop_assert!(sealer.open(b"doc", &sealed).is_err());
        }
    }
}

//! Key derivation and key commitment, after the AWS Encryption SDK's committing
//! algorithm suites: HKDF-SHA512 with the message id as salt.

use aes_gcm_siv::{Aes256GcmSiv, KeyInit};
use hkdf::Hkdf;
use sha2::Sha512;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{CryptoError, Key256};

/// HKDF label of the body key (prefixed by the 2-byte suite id). FORMAT CONSTANT.
const DERIVE_KEY_LABEL: &[u8] = b"DERIVEKEY";
/// HKDF label of the metadata key (prefixed by the suite id). FORMAT CONSTANT.
const METADATA_KEY_LABEL: &[u8] = b"METADATAKEY";
/// HKDF label of the key commitment. FORMAT CONSTANT.
const COMMIT_KEY_LABEL: &[u8] = b"COMMITKEY";

pub(crate) struct DerivedKeys {
    pub(crate) body: Aes256GcmSiv,
    pub(crate) metadata: Aes256GcmSiv,
    pub(crate) commitment: [u8; 32],
}

impl DerivedKeys {
    pub(crate) fn derive(dek: &Key256, suite: u16, message_id: &[u8; 32]) -> Self {
        let hkdf = Hkdf::<Sha512>::new(Some(message_id), dek.expose());
        let expand = |label: &[u8], with_suite: bool| {
            let mut okm = Zeroizing::new([0u8; 32]);
            let suite_bytes = suite.to_be_bytes();
            let info: [&[u8]; 2] = if with_suite {
                [&suite_bytes, label]
            } else {
                [&[], label]
            };
            // 32 bytes is far below HKDF-SHA512's output limit: expand cannot fail.
            hkdf.expand_multi_info(&info, okm.as_mut())
                .unwrap_or_else(|_| unreachable!("32-byte HKDF-SHA512 output"));
            okm
        };
        let body_key = expand(DERIVE_KEY_LABEL, true);
        let metadata_key = expand(METADATA_KEY_LABEL, true);
        let commitment = expand(COMMIT_KEY_LABEL, false);
        DerivedKeys {
            body: Aes256GcmSiv::new(body_key.as_ref().into()),
            metadata: Aes256GcmSiv::new(metadata_key.as_ref().into()),
            commitment: *commitment,
        }
    }

    pub(crate) fn verify_commitment(&self, stored: &[u8; 32]) -> Result<(), CryptoError> {
        if bool::from(self.commitment.ct_eq(stored)) {
            Ok(())
        } else {
            Err(CryptoError::KeyCommitmentMismatch)
        }
    }
}

//! Ed25519 signatures (RFC 8032, `ed25519-dalek`, strict verification) over
//! checkpoints: signed tree heads of an append-only Merkle log.
//!
//! A checkpoint is a text note after C2SP's `tlog-checkpoint` and `signed-note`:
//!
//! ```text
//! billing-vault checkpoint v1        format line (FORMAT CONSTANT)
//! <origin>                           which log, e.g. billing-vault/acme/audit
//! <tree size>                        decimal
//! <root>                             base64 of the 32-byte RFC 9162 root
//! <timestamp>                        Unix milliseconds
//!
//! — <key id> <base64 signature>      over every byte above the blank line
//! ```

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha256};

use crate::{CryptoError, Key256};

/// FORMAT CONSTANT: first line of a checkpoint body.
const FORMAT_LINE: &str = "billing-vault checkpoint v1";
/// FORMAT CONSTANT: signature line prefix (an em dash and a space, as signed-note).
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Longest note accepted by the parser.
const MAX_NOTE_LEN: usize = 4096;

fn malformed(reason: &'static str) -> CryptoError {
    CryptoError::malformed("checkpoint", reason)
}

/// An Ed25519 signing key. Zeroized on drop; `Debug` shows the public key id only.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key().key_id())
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(
            Key256::random().expose(),
        ))
    }

    /// The key of a 32-byte seed (RFC 8032 private key).
    pub fn from_seed(seed: &Key256) -> Self {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(seed.expose()))
    }

    /// The seed, to be stored wrapped like other keys.
    pub fn to_seed(&self) -> Key256 {
        Key256::from_bytes(self.0.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Parses 64 hex digits; refuses points that are not valid public keys.
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("a public key is 64 hex digits"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| malformed("not an Ed25519 public key"))
    }

    /// A short id: the first 8 bytes of SHA-256 of the key, hex.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.as_bytes())[..8])
    }

    /// Verifies a signature (strict: no malleable or small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), CryptoError> {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// Plain RFC 8032 verification (used only against published vectors).
    pub fn verify_rfc8032(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), CryptoError> {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0
            .verify(message, &signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}

/// A signed tree head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log: `billing-vault/<tenant>/audit`, `billing-vault/backup/<id>`.
    pub origin: String,
    /// Leaves in the tree.
    pub tree_size: u64,
    /// RFC 9162 root.
    pub root: [u8; 32],
    /// When it was signed, Unix milliseconds.
    pub timestamp_unix_ms: u64,
}

impl Checkpoint {
    fn body(&self) -> String {
        format!(
            "{FORMAT_LINE}\n{}\n{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            BASE64.encode(self.root),
            self.timestamp_unix_ms
        )
    }

    /// Signs the checkpoint.
    pub fn sign(&self, key: &SigningKey) -> SignedCheckpoint {
        let body = self.body();
        SignedCheckpoint {
            signature: key.sign(body.as_bytes()),
            key_id: key.public_key().key_id(),
            body,
        }
    }
}

/// A checkpoint and its signature, as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    body: String,
    key_id: String,
    signature: [u8; 64],
}

impl SignedCheckpoint {
    /// The note text.
    pub fn encode(&self) -> String {
        format!(
            "{}\n{SIGNATURE_PREFIX}{} {}\n",
            self.body,
            self.key_id,
            BASE64.encode(self.signature)
        )
    }

    /// Parses a note from untrusted text (strict, bounded).
    pub fn parse(text: &str) -> Result<SignedCheckpoint, CryptoError> {
        if text.len() > MAX_NOTE_LEN {
            return Err(malformed("too long"));
        }
        let (body, signature_block) = text
            .split_once("\n\n")
            .ok_or_else(|| malformed("no blank line before the signature"))?;
        let body = format!("{body}\n");
        let line = signature_block
            .strip_suffix('\n')
            .unwrap_or(signature_block)
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| malformed("no signature line"))?;
        let (key_id, signature) = line
            .split_once(' ')
            .ok_or_else(|| malformed("signature line is `key-id signature`"))?;
        let signature: [u8; 64] = BASE64
            .decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("signature is 64 bytes in base64"))?;
        let parsed = SignedCheckpoint {
            body,
            key_id: key_id.to_owned(),
            signature,
        };
        parsed.checkpoint()?;
        Ok(parsed)
    }

    fn checkpoint(&self) -> Result<Checkpoint, CryptoError> {
        let mut lines = self.body.lines();
        if lines.next() != Some(FORMAT_LINE) {
            return Err(malformed("unknown checkpoint format"));
        }
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| malformed("no origin"))?
            .to_owned();
        let tree_size = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| malformed("tree size is a decimal number"))?;
        let root: [u8; 32] = lines
            .next()
            .and_then(|l| BASE64.decode(l).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("root is 32 bytes in base64"))?;
        let timestamp_unix_ms = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| malformed("timestamp is a decimal number"))?;
        if lines.next().is_some() {
            return Err(malformed("unexpected lines"));
        }
        let checkpoint = Checkpoint {
            origin,
            tree_size,
            root,
            timestamp_unix_ms,
        };
        if checkpoint.body() != self.body {
            return Err(malformed("not in canonical form"));
        }
        Ok(checkpoint)
    }

    /// Checks the signature and returns the checkpoint.
    pub fn verify(&self, key: &PublicKey) -> Result<Checkpoint, CryptoError> {
        if self.key_id != key.key_id() {
            return Err(CryptoError::BadSignature);
        }
        key.verify(self.body.as_bytes(), &self.signature)?;
        self.checkpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 8032 §7.1 TEST 1-3 (Ed25519): secret, public key, message, signature.
    const RFC8032: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    #[test]
    fn rfc8032_vectors() {
        for (secret, public, message, signature) in RFC8032 {
            let seed: [u8; 32] = hex::decode(secret).unwrap().try_into().unwrap();
            let key = SigningKey::from_seed(&Key256::from_bytes(seed));
            assert_eq!(key.public_key().to_hex(), public);
            let message = hex::decode(message).unwrap();
            let signed = key.sign(&message);
            assert_eq!(hex::encode(signed), signature);
            key.public_key().verify(&message, &signed).unwrap();
            let mut bad = signed;
            bad[10] ^= 1;
            assert!(key.public_key().verify(&message, &bad).is_err());
            assert_eq!(key.to_seed().expose(), &seed);
            assert!(!format!("{key:?}").contains(secret));
        }
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "billing-vault/acme/audit".into(),
            tree_size: 42,
            root: [7; 32],
            timestamp_unix_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn checkpoints_round_trip_and_every_line_is_signed() {
        let key = SigningKey::generate();
        let text = checkpoint().sign(&key).encode();
        let parsed = SignedCheckpoint::parse(&text).unwrap();
        assert_eq!(parsed.verify(&key.public_key()).unwrap(), checkpoint());
        assert!(parsed.verify(&SigningKey::generate().public_key()).is_err());
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate().take(5).skip(1) {
            let changed = line.replace('2', "3").replace('a', "b").replace('B', "C");
            if changed == *line {
                continue;
            }
            let mut tampered = lines.clone();
            tampered[i] = &changed;
            let tampered = format!("{}\n", tampered.join("\n"));
            let outcome =
                SignedCheckpoint::parse(&tampered).and_then(|s| s.verify(&key.public_key()));
            assert!(outcome.is_err(), "line {i} changed and still verified");
        }
    }

    proptest! {
        #[test]
        fn parsing_junk_never_panics(text in "\\PC{0,300}") {
            let _ = SignedCheckpoint::parse(&text);
        }

        #[test]
        fn parsing_near_misses_never_panics(cut in 0usize..300, junk in "[\\n a-z0-9+/=\u{2014}]{0,40}") {
            let key = SigningKey::from_seed(&Key256::from_bytes([3; 32]));
            let text = checkpoint().sign(&key).encode();
            let cut = cut.min(text.len());
            if text.is_char_boundary(cut) {
                let _ = SignedCheckpoint::parse(&format!("{}{junk}", &text[..cut]));
            }
        }
    }
}

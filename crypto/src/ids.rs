//! Tenant and document identifiers, validated once and bound into every envelope.

use std::fmt;
use std::str::FromStr;

use crate::CryptoError;

/// A tenant id: 1 to 63 characters of `a-z`, `0-9`, `-` and `_`, starting with a letter
/// or digit. Safe to use in object names and logs (it is not PHI).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Longest accepted tenant id (it is stored behind a one-byte length).
    pub const MAX_LEN: usize = 63;

    /// Validates a tenant id.
    pub fn new(id: impl Into<String>) -> Result<Self, CryptoError> {
        let id = id.into();
        let valid_chars = id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        let valid_start = id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if id.len() > Self::MAX_LEN || !valid_chars || !valid_start {
            return Err(CryptoError::InvalidArgument {
                what: "tenant id",
                reason: "use 1 to 63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit".into(),
            });
        }
        Ok(TenantId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl FromStr for TenantId {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::new(s)
    }
}

/// A document id: 128 random bits, shown as 32 lowercase hex digits. Opaque: it says
/// nothing about the document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    /// A fresh random id.
    pub fn random() -> Self {
        DocumentId(crate::secret::random_bytes())
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        DocumentId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || CryptoError::InvalidArgument {
            what: "document id",
            reason: "expected 32 lowercase hex digits".into(),
        };
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| invalid())?;
        Ok(DocumentId(bytes))
    }
}

impl serde::Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::new(s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for DocumentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DocumentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_validated() {
        assert!(TenantId::new("acme").is_ok());
        assert!(TenantId::new("acme-billing_2").is_ok());
        for bad in ["", "-acme", "Acme", "acme/x", "a b", &"a".repeat(64)] {
            assert!(TenantId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn document_ids_round_trip_through_text() {
        let id = DocumentId::random();
        let parsed: DocumentId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        assert!("xyz".parse::<DocumentId>().is_err());
        assert!("ABCDEF0123456789ABCDEF0123456789"
            .parse::<DocumentId>()
            .is_err());
    }
}

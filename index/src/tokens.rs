//! Search terms to blind tokens, under one tenant's index key and token plan.

use std::collections::{BTreeMap, BTreeSet};

use vault_crypto::blind::{FieldKey, IndexRootKey};
use vault_crypto::CryptoError;

use crate::fields::Field;
use crate::planner::TokenPlan;

/// A tenant's per-field token keys and bit lengths.
pub struct Tokenizer {
    keys: BTreeMap<Field, FieldKey>,
    plan: TokenPlan,
    key_version: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Derives every field key from the tenant's index root key.
    pub fn new(root: &IndexRootKey, plan: TokenPlan) -> Tokenizer {
        let keys = Field::ALL
            .into_iter()
            .map(|field| (field, root.field_key(field.name())))
            .collect();
        Tokenizer {
            keys,
            plan,
            key_version: root.version(),
        }
    }

    /// The plan in use.
    pub fn plan(&self) -> &TokenPlan {
        &self.plan
    }

    /// The index key version the tokens are made under.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// The index term of one normalised value: `field:version:hex`. The field name
    /// and key version are not secret; they keep fields and key versions apart.
    pub fn term(&self, field: Field, normalized: &str) -> Result<String, CryptoError> {
        let key = self.keys.get(&field).ok_or(CryptoError::InvalidArgument {
            what: "field",
            reason: "no key".into(),
        })?;
        let token = key.token(normalized.as_bytes(), self.plan.bits(field))?;
        Ok(format!(
            "{}:{}:{}",
            field.name(),
            self.key_version,
            token.to_hex()
        ))
    }

    /// The index terms of a document's search terms.
    pub fn terms(&self, terms: &BTreeSet<(Field, String)>) -> Result<Vec<String>, CryptoError> {
        let mut out: Vec<String> = terms
            .iter()
            .map(|(field, value)| self.term(*field, value))
            .collect::<Result<_, _>>()?;
        // Values that share a truncated token give one term.
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_crypto::Key256;

    #[test]
    fn terms_carry_field_version_and_truncated_token() {
        let root = IndexRootKey::new(Key256::from_bytes([7; 32]), 3);
        let plan = TokenPlan::new(1_000_000, &BTreeMap::new());
        let tokenizer = Tokenizer::new(&root, plan);
        let term = tokenizer.term(Field::MemberId, "W123").unwrap();
        let (prefix, hex) = term.rsplit_once(':').unwrap();
        assert_eq!(prefix, "member_id:3");
        assert_eq!(hex.len(), 6, "17 bits in 3 bytes");
        assert!(!term.contains("W123"));
        assert_ne!(term, tokenizer.term(Field::ClaimId, "W123").unwrap());
    }
}

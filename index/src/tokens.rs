//! Search terms to blind tokens, under one tenant's index key and token plan, and
//! the exact filter over a document's sealed exact tags.

use std::collections::{BTreeMap, BTreeSet};

use vault_crypto::blind::{ExactTag, ExactTermsKey, FieldKey, IndexRootKey};
use vault_crypto::CryptoError;

use crate::fields::Field;
use crate::planner::TokenPlan;
use crate::query::Query;

/// Most distinct values whose exact tags are sealed in an index entry (16 bytes
/// each). A document with more (a large remittance) has none sealed, and its
/// candidacy is checked against the document itself.
pub const MAX_SEALED_TAGS: usize = 1024;

/// A tenant's per-field token keys and bit lengths.
pub struct Tokenizer {
    keys: BTreeMap<Field, FieldKey>,
    exact: ExactTermsKey,
    plan: TokenPlan,
    key_version: u32,
}

/// What the index stores of one document's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentTokens {
    /// Index terms (`field:version:hex` of truncated tokens), sorted, distinct.
    pub terms: Vec<String>,
    /// The document's exact tags, sealed ([`ExactTermsKey::seal`]); `None` for a
    /// document with more than [`MAX_SEALED_TAGS`] values.
    pub sealed_exact: Option<Vec<u8>>,
}

/// Whether an index entry answers a query exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exactness {
    /// Its sealed exact tags satisfy the query.
    Matches,
    /// Its sealed exact tags do not: a candidate only through a token collision.
    NoMatch,
    /// It has no sealed tags (too many values) or they do not open: the document
    /// itself must be checked.
    Unknown,
}

/// A query's index terms and exact tags, made once per search (one HMAC per
/// query term gives both).
pub struct ExactFilter<'a> {
    query: &'a Query,
    exact: &'a ExactTermsKey,
    tags: BTreeMap<(Field, &'a str), (String, ExactTag)>,
}

impl<'a> ExactFilter<'a> {
    /// The index term (truncated token) of one of the query's terms.
    pub fn index_term(&self, field: Field, value: &'a str) -> Result<&str, CryptoError> {
        self.tags
            .get(&(field, value))
            .map(|(term, _)| term.as_str())
            .ok_or(CryptoError::InvalidArgument {
                what: "query term",
                reason: "not a term of this query".into(),
            })
    }

    /// Checks one index entry's sealed exact tags.
    pub fn check(&self, document_id: &str, sealed_exact: Option<&[u8]>) -> Exactness {
        let Some(sealed) = sealed_exact else {
            return Exactness::Unknown;
        };
        let Ok(held) = self.exact.open(document_id.as_bytes(), sealed) else {
            return Exactness::Unknown;
        };
        let holds = |field: Field, value: &str| {
            self.tags
                .get(&(field, value))
                .is_some_and(|(_, tag)| held.contains(tag))
        };
        if self.query.matches_by(&holds) {
            Exactness::Matches
        } else {
            Exactness::NoMatch
        }
    }
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
            exact: root.exact_terms_key(),
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
        let token = self
            .key(field)?
            .token(normalized.as_bytes(), self.plan.bits(field))?;
        Ok(self.term_text(field, &token.to_hex()))
    }

    fn term_text(&self, field: Field, token_hex: &str) -> String {
        format!("{}:{}:{}", field.name(), self.key_version, token_hex)
    }

    fn key(&self, field: Field) -> Result<&FieldKey, CryptoError> {
        self.keys.get(&field).ok_or(CryptoError::InvalidArgument {
            what: "field",
            reason: "no key".into(),
        })
    }

    /// A document's index terms and sealed exact tags (one HMAC per value).
    pub fn document_tokens(
        &self,
        document_id: &str,
        terms: &BTreeSet<(Field, String)>,
    ) -> Result<DocumentTokens, CryptoError> {
        let mut index_terms = Vec::with_capacity(terms.len());
        let mut tags = Vec::with_capacity(terms.len());
        for (field, value) in terms {
            let (token, tag) = self
                .key(*field)?
                .token_and_tag(value.as_bytes(), self.plan.bits(*field))?;
            index_terms.push(self.term_text(*field, &token.to_hex()));
            tags.push(tag);
        }
        index_terms.sort_unstable();
        index_terms.dedup();
        let sealed_exact = (tags.len() <= MAX_SEALED_TAGS)
            .then(|| self.exact.seal(document_id.as_bytes(), &tags))
            .transpose()?;
        Ok(DocumentTokens {
            terms: index_terms,
            sealed_exact,
        })
    }

    /// The index terms and exact filter of a query (one HMAC per query term).
    pub fn exact_filter<'a>(&'a self, query: &'a Query) -> Result<ExactFilter<'a>, CryptoError> {
        let mut tags = BTreeMap::new();
        query.for_each_term(&mut |field, value| {
            if let std::collections::btree_map::Entry::Vacant(entry) = tags.entry((field, value)) {
                let (token, tag) = self
                    .key(field)?
                    .token_and_tag(value.as_bytes(), self.plan.bits(field))?;
                entry.insert((self.term_text(field, &token.to_hex()), tag));
            }
            Ok(())
        })?;
        Ok(ExactFilter {
            query,
            exact: &self.exact,
            tags,
        })
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

    fn document(pairs: &[(Field, &str)]) -> BTreeSet<(Field, String)> {
        pairs.iter().map(|(f, v)| (*f, (*v).to_owned())).collect()
    }

    #[test]
    fn the_exact_filter_answers_from_the_sealed_tags_alone() {
        let root = IndexRootKey::new(Key256::from_bytes([7; 32]), 1);
        // The shortest tokens the planner makes.
        let plan = TokenPlan::new(1, &BTreeMap::new());
        let tokenizer = Tokenizer::new(&root, plan);
        let terms = document(&[(Field::MemberId, "W1"), (Field::ClaimId, "C1")]);
        let tokens = tokenizer.document_tokens("doc-1", &terms).unwrap();
        assert_eq!(tokens.terms, tokenizer.terms(&terms).unwrap());
        let sealed = tokens.sealed_exact.as_deref();
        let check = |q: &str| {
            let query = Query::parse(q).unwrap();
            tokenizer
                .exact_filter(&query)
                .unwrap()
                .check("doc-1", sealed)
        };
        for (q, want) in [
            ("member_id:W1", Exactness::Matches),
            ("member_id:W2", Exactness::NoMatch),
            ("member_id:W1 AND claim_id:C1", Exactness::Matches),
            ("member_id:W1 AND claim_id:C2", Exactness::NoMatch),
            ("member_id:W2 OR claim_id:C1", Exactness::Matches),
            ("member_id:W1 AND NOT claim_id:C1", Exactness::NoMatch),
            ("NOT member_id:W9", Exactness::Matches),
        ] {
            let query = Query::parse(q).unwrap();
            assert_eq!(check(q), want, "{q}");
            // The same answer as the evaluation over the plaintext terms.
            assert_eq!(want == Exactness::Matches, query.matches(&terms), "{q}");
        }
        // Another document's entry, or none at all: the document must be read.
        let query = Query::parse("member_id:W1").unwrap();
        let filter = tokenizer.exact_filter(&query).unwrap();
        // Its index terms are the tokenizer's.
        query
            .for_each_term(&mut |field, value| {
                assert_eq!(
                    filter.index_term(field, value).unwrap(),
                    tokenizer.term(field, value).unwrap()
                );
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(filter.check("doc-2", sealed), Exactness::Unknown);
        assert_eq!(filter.check("doc-1", None), Exactness::Unknown);
    }

    #[test]
    fn a_document_with_too_many_values_has_no_sealed_tags() {
        let root = IndexRootKey::new(Key256::from_bytes([7; 32]), 1);
        let tokenizer = Tokenizer::new(&root, TokenPlan::new(1_000, &BTreeMap::new()));
        let many: BTreeSet<(Field, String)> = (0..=MAX_SEALED_TAGS)
            .map(|i| (Field::ClaimId, format!("C{i}")))
            .collect();
        let tokens = tokenizer.document_tokens("big", &many).unwrap();
        assert_eq!(tokens.sealed_exact, None);
        assert!(!tokens.terms.is_empty());
    }
}

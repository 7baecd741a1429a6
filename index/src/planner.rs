//! Token bit lengths: how much of each HMAC a blind token keeps.
//!
//! Truncation is deliberate (CipherSweet's planner, AWS's beacons): a token shared
//! by several values tells an observer of the index less about frequencies. For a
//! field expected to hold `D` distinct values, a length `L` gives `D / 2^L` values
//! per token ("coincidences"); we keep that between 2 and `sqrt(D)`, choosing the
//! longest such `L` so candidate sets stay small, and post-filter for exactness.
//! The plan is recorded with each index: a different plan forces a rebuild
//! instead of silently missing documents whose tokens have another length.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fields::Field;

/// Default expected number of documents per tenant.
pub const DEFAULT_EXPECTED_DOCUMENTS: u64 = 1_000_000;

/// The bit length of every field's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPlan {
    /// The tenant size the plan was made for.
    pub expected_documents: u64,
    /// Bits per field name.
    pub bits: BTreeMap<String, u16>,
}

/// How many distinct values a field holds in a tenant of `documents` documents:
/// a share of the documents for per-person or per-claim values, capped by the size
/// of the code set for bounded ones.
fn expected_distinct(field: Field, documents: u64) -> f64 {
    let n = documents as f64;
    let (per_document, code_set): (f64, Option<f64>) = match field {
        Field::PatientName | Field::MemberId | Field::PatientNameDob => (0.5, None),
        Field::PatientLastName => (0.5, Some(150_000.0)),
        Field::PatientDob => (0.5, Some(36_500.0)),
        Field::MemberIdLast4 => (0.5, Some(10_000.0)),
        Field::ClaimId | Field::PayerClaimId => (2.0, None),
        Field::TraceNumber => (0.2, None),
        Field::Payer => (0.05, Some(2_000.0)),
        Field::ProviderNpi => (0.1, Some(50_000.0)),
        Field::ServiceDate => (1.0, Some(3_650.0)),
        Field::ServiceMonth => (1.0, Some(120.0)),
        Field::ProcedureCode => (1.0, Some(10_000.0)),
        Field::DiagnosisCode => (1.0, Some(70_000.0)),
        Field::ClaimStatus => (1.0, Some(25.0)),
    };
    let distinct = n * per_document;
    code_set.map_or(distinct, |cap| distinct.min(cap)).max(4.0)
}

/// The longest bit length that keeps between 2 and `sqrt(distinct)` values per
/// token (or the shortest allowed when the two bounds cross).
pub fn bits_for(distinct: f64) -> u16 {
    let log = distinct.max(4.0).log2();
    let longest = (log - 1.0).floor(); // distinct / 2^L >= 2
    let shortest = (log / 2.0).ceil(); // distinct / 2^L <= sqrt(distinct)
    longest.max(shortest).clamp(1.0, 64.0) as u16
}

impl TokenPlan {
    /// The plan for a tenant of about `expected_documents` documents, with
    /// optional per-field overrides (bits, 1 to 64).
    pub fn new(expected_documents: u64, overrides: &BTreeMap<String, u16>) -> TokenPlan {
        let bits = Field::ALL
            .into_iter()
            .map(|field| {
                let bits = overrides
                    .get(field.name())
                    .copied()
                    .unwrap_or_else(|| bits_for(expected_distinct(field, expected_documents)))
                    .clamp(1, 64);
                (field.name().to_owned(), bits)
            })
            .collect();
        TokenPlan {
            expected_documents,
            bits,
        }
    }

    /// The bit length of a field's tokens.
    pub fn bits(&self, field: Field) -> u16 {
        self.bits.get(field.name()).copied().unwrap_or(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coincidences_stay_between_two_and_sqrt() {
        for distinct in [4.0, 25.0, 120.0, 10_000.0, 500_000.0, 2_000_000.0, 1e9] {
            let bits = bits_for(distinct);
            let coincidences = distinct / 2f64.powi(i32::from(bits));
            assert!(coincidences >= 2.0 || distinct < 16.0, "{distinct}: {bits}");
            assert!(
                coincidences <= distinct.sqrt().max(2.0),
                "{distinct}: {bits}"
            );
        }
    }

    #[test]
    fn plans_depend_on_size_and_overrides() {
        let small = TokenPlan::new(10_000, &BTreeMap::new());
        let large = TokenPlan::new(1_000_000, &BTreeMap::new());
        assert!(small.bits(Field::MemberId) < large.bits(Field::MemberId));
        assert_eq!(large.bits(Field::ClaimStatus), 3);
        assert_eq!(large.bits(Field::MemberId), 17);
        let custom = TokenPlan::new(1_000_000, &BTreeMap::from([("member_id".to_owned(), 24)]));
        assert_eq!(custom.bits(Field::MemberId), 24);
        assert_ne!(custom, large);
    }
}

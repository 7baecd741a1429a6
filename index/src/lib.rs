//! Searchable fields of billing documents and their normalisation.
//!
//! This crate turns what billing software sends (X12 835/837, FHIR
//! ExplanationOfBenefit and Claim, caller-supplied fields) into normalised field
//! values, which `vault-crypto` turns into blind tokens. So far it holds the
//! normalisation rules; extraction and the Tantivy index follow (issue 4).

pub mod normalize;

//! Searchable fields of billing documents and the blind index over them.
//!
//! This crate normalises field values into search terms ([`fields`],
//! [`normalize`]), turns terms into blind tokens under a tenant's index key
//! ([`tokens`], with bit lengths from [`planner`]), and keeps a per-tenant Tantivy
//! index of ids and tokens only ([`blind_index`]). Queries ([`query`]) are parsed
//! here and evaluated twice: as tokens against the index for candidates, then
//! exactly against the decrypted fields of each candidate. Fields come from
//! [`extract`] (X12 835/837, FHIR R4) or from the uploader; feature `synth` adds
//! a generator of synthetic billing documents for tests and benchmarks.
//!
//! **Architecture Invariant:** nothing in this crate writes a plaintext field value
//! to disk; the index holds document ids, kinds, upload times and tokens.

pub mod blind_index;
pub mod extract;
pub mod fields;
pub mod normalize;
#[cfg(feature = "plaintext-baseline")]
pub mod plaintext_baseline;
pub mod planner;
pub mod query;
#[cfg(feature = "synth")]
pub mod synth;
pub mod tokens;

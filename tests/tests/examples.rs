//! The sample files the README uses (`examples/`) are the project's own: the
//! 835 is the synthetic generator's output for a fixed seed (made-up people),
//! held to it here so that the file and the README's search example cannot
//! drift from the generator; `BILLVAULT_WRITE_FIXTURES=1` writes it anew.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::path::PathBuf;

use vault_index::synth::x12::{remittance_835, X12Version};
use vault_index::synth::SynthClaim;

/// Seed and count of the example remittance's claims.
const SEED: u64 = 835;
const CLAIMS: usize = 2;

fn example(name: &str) -> PathBuf {
    vault_e2e::workspace_root().join("examples").join(name)
}

#[test]
fn the_example_remittance_is_the_generators_and_the_readme_searches_its_patient() {
    let claims = SynthClaim::batch(SEED, CLAIMS);
    let expected = remittance_835(&claims, X12Version::V5010);
    let path = example("remittance-835.x12");
    if std::env::var_os("BILLVAULT_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap();
    assert_eq!(stored, expected, "examples/remittance-835.x12 is not the generator's output (BILLVAULT_WRITE_FIXTURES=1 writes it)");
    // The README searches for the first claim's patient and member id.
    let readme = std::fs::read_to_string(vault_e2e::workspace_root().join("README.md")).unwrap();
    let first = &claims[0];
    let patient = format!("patient_name:\"{}\"", first.patient_name());
    assert!(
        readme.contains(&patient),
        "the README's search example should name {patient}"
    );
}

#[test]
fn the_example_scan_is_a_pdf() {
    let scan = std::fs::read(example("scan.pdf")).unwrap();
    assert!(scan.starts_with(b"%PDF-1."));
    assert!(scan.ends_with(b"%%EOF\n"));
}

//! FHIR extraction on arbitrary bytes: an error or fields, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_index::extract::{extract, Format};

fuzz_target!(|data: &[u8]| {
    let _ = extract(Format::Fhir, data);
});

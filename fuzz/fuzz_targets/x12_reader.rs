//! The X12 reader and 835/837 extraction on arbitrary bytes: an error or fields,
//! never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_index::extract::{extract, Format};

fuzz_target!(|data: &[u8]| {
    let _ = extract(Format::X12, data);
});

//! Fuzzes every parser of a backup repository's bytes, which the vault does
//! not trust (anyone who can write the repository can change them): pack
//! headers and trailers, manifest chunks, relocation records, and signed
//! manifests of either format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::backup::manifest::Manifest;
use vault_core::backup::pack::{self, Relocation};
use vault_core::backup::chunk;
use vault_crypto::signing::SigningKey;
use vault_crypto::Key256;

fuzz_target!(|data: &[u8]| {
    let _ = pack::parse(data);
    let _ = pack::check(data, "00");
    let key = SigningKey::from_seed(&Key256::from_bytes([7; 32])).public_key();
    let _ = Relocation::parse(data, &"01".repeat(32), &key);
    let _ = chunk::decode(data);
    let _ = Manifest::parse_and_verify(data, &key);
});

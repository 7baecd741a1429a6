//! Fuzzes every parser of untrusted envelope bytes: body header, key record, tenant
//! key record, a blind-index entry's sealed exact tags, and the streaming body
//! decryptor fed arbitrary segments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_crypto::blind::IndexRootKey;
use vault_crypto::envelope::{begin_body, open_body, BodyDecryptor, BodyHeader, KeyRecord};
use vault_crypto::keys::TenantKeyRecord;
use vault_crypto::{DocumentId, Key256, TenantId};

fuzz_target!(|data: &[u8]| {
    let _ = BodyHeader::peek_len(data);
    let _ = BodyHeader::parse(data);
    let _ = KeyRecord::parse(data);
    let _ = TenantKeyRecord::parse(data);
    let _ = IndexRootKey::new(Key256::from_bytes([5; 32]), 1)
        .exact_terms_key()
        .open(b"fuzz", data);

    // Arbitrary bytes as segments of a real body: must be rejected, never panic.
    let dek = Key256::from_bytes([7; 32]);
    let tenant = TenantId::new("fuzz").expect("valid id");
    let doc = DocumentId::from_bytes([1; 16]);
    if let Ok((header, _)) = begin_body(&dek, &tenant, doc, 64) {
        if let Ok((_, cipher)) = open_body(&dek, &tenant, doc, &header) {
            let mut decryptor = BodyDecryptor::new(cipher);
            let mut out = Vec::new();
            if decryptor.update(data, &mut out).is_ok() {
                let _ = decryptor.finish(&mut out);
            }
        }
    }
});

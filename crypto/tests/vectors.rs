//! Published test vectors through the primitives the vault uses: every Wycheproof
//! AES-GCM-SIV vector (which include RFC 8452 Appendix C), RFC 4231 and Wycheproof
//! HMAC-SHA256, Wycheproof HKDF-SHA256. A few RFC 8452 vectors are embedded so the
//! primitive is checked even without the shared corpus; the full files are read from
//! `../shared/data/vectors` (or `$BILLVAULT_SHARED_DATA/vectors`) and their absence is a
//! failure, not a skip.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes128GcmSiv, Aes256GcmSiv, Nonce};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

fn shared_vectors() -> std::path::PathBuf {
    let base = std::env::var_os("BILLVAULT_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../shared/data")
        });
    let dir = base.join("vectors");
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: check out the project beside its shared/ folder or set BILLVAULT_SHARED_DATA",
        dir.display()
    );
    dir
}

fn load(path: &str) -> Value {
    let file = shared_vectors().join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex_field(test: &Value, name: &str) -> Vec<u8> {
    hex::decode(test[name].as_str().unwrap_or_default()).unwrap()
}

/// Encrypts and decrypts one AEAD vector; returns whether the outcome matched.
fn check_gcm_siv(test: &Value) -> bool {
    let (key, iv, aad, msg) = (
        hex_field(test, "key"),
        hex_field(test, "iv"),
        hex_field(test, "aad"),
        hex_field(test, "msg"),
    );
    let mut expected = hex_field(test, "ct");
    expected.extend(hex_field(test, "tag"));
    let valid = test["result"] == "valid";
    if iv.len() != 12 {
        // The crate only takes 96-bit nonces; such vectors are all "invalid".
        return !valid;
    }
    let nonce = Nonce::from_slice(&iv);
    let (sealed, opened) = match key.len() {
        16 => {
            let c = Aes128GcmSiv::new_from_slice(&key).unwrap();
            (
                c.encrypt(
                    nonce,
                    Payload {
                        msg: &msg,
                        aad: &aad,
                    },
                ),
                c.decrypt(
                    nonce,
                    Payload {
                        msg: &expected,
                        aad: &aad,
                    },
                ),
            )
        }
        32 => {
            let c = Aes256GcmSiv::new_from_slice(&key).unwrap();
            (
                c.encrypt(
                    nonce,
                    Payload {
                        msg: &msg,
                        aad: &aad,
                    },
                ),
                c.decrypt(
                    nonce,
                    Payload {
                        msg: &expected,
                        aad: &aad,
                    },
                ),
            )
        }
        _ => return !valid,
    };
    if valid {
        sealed.ok().as_deref() == Some(&expected[..]) && opened.ok().as_deref() == Some(&msg[..])
    } else {
        opened.is_err()
    }
}

#[test]
fn embedded_rfc8452_vectors() {
    // RFC 8452 Appendix C.2 (AEAD_AES_256_GCM_SIV), first vectors.
    let cases = [
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "",
            "",
            "07f5f4169bbf55a8400cd47ea6fd400f",
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "",
            "0100000000000000",
            "c2ef328e5c71c83b843122130f7364b761e0b97427e3df28",
        ),
    ];
    for (key, iv, aad, msg, ct_tag) in cases {
        let cipher = Aes256GcmSiv::new_from_slice(&hex::decode(key).unwrap()).unwrap();
        let iv = hex::decode(iv).unwrap();
        let (aad, msg) = (hex::decode(aad).unwrap(), hex::decode(msg).unwrap());
        let out = cipher
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &msg,
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(hex::encode(out), ct_tag);
    }
}

#[test]
fn all_wycheproof_aes_gcm_siv_vectors() {
    let file = load("wycheproof/testvectors_v1/aes_gcm_siv_test.json");
    let mut count = 0;
    for group in file["testGroups"].as_array().unwrap() {
        for test in group["tests"].as_array().unwrap() {
            assert!(
                check_gcm_siv(test),
                "Wycheproof AES-GCM-SIV tcId {} failed",
                test["tcId"]
            );
            count += 1;
        }
    }
    assert_eq!(count, file["numberOfTests"].as_u64().unwrap());
}

#[test]
fn rfc8452_vectors_from_wycheproof() {
    let file = load("derived/rfc8452_aes_gcm_siv_from_wycheproof.json");
    let mut count = 0;
    for group in file["testGroups"].as_array().unwrap() {
        for test in group["tests"].as_array().unwrap() {
            assert!(check_gcm_siv(test), "RFC 8452 tcId {} failed", test["tcId"]);
            count += 1;
        }
    }
    assert_eq!(count, 50);
}

fn check_hmac(test: &Value, tag_bits: usize) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hex_field(test, "key")).unwrap();
    mac.update(&hex_field(test, "msg"));
    let full = mac.finalize().into_bytes();
    let matches = full[..tag_bits / 8] == hex_field(test, "tag")[..];
    matches == (test["result"] == "valid")
}

#[test]
fn rfc4231_hmac_sha256() {
    let file = load("derived/rfc4231_hmac_sha256.json");
    let tests = file["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 7);
    for test in tests {
        let bits = test["tagSize"].as_u64().unwrap() as usize;
        assert!(
            check_hmac(test, bits),
            "RFC 4231 case {} failed",
            test["tcId"]
        );
    }
}

#[test]
fn wycheproof_hmac_sha256() {
    let file = load("wycheproof/testvectors_v1/hmac_sha256_test.json");
    for group in file["testGroups"].as_array().unwrap() {
        let bits = group["tagSize"].as_u64().unwrap() as usize;
        for test in group["tests"].as_array().unwrap() {
            assert!(
                check_hmac(test, bits),
                "Wycheproof HMAC tcId {} failed",
                test["tcId"]
            );
        }
    }
}

#[test]
fn wycheproof_hkdf_sha256() {
    let file = load("wycheproof/testvectors_v1/hkdf_sha256_test.json");
    for group in file["testGroups"].as_array().unwrap() {
        for test in group["tests"].as_array().unwrap() {
            let salt = hex_field(test, "salt");
            let hk = hkdf::Hkdf::<Sha256>::new(
                if salt.is_empty() { None } else { Some(&salt) },
                &hex_field(test, "ikm"),
            );
            let mut okm = vec![0u8; test["size"].as_u64().unwrap() as usize];
            let result = hk.expand(&hex_field(test, "info"), &mut okm);
            let ok = result.is_ok() && okm == hex_field(test, "okm");
            assert_eq!(
                ok,
                test["result"] == "valid",
                "Wycheproof HKDF tcId {} failed",
                test["tcId"]
            );
        }
    }
}

//! Envelope throughput against the bare AES-256-GCM-SIV primitive on the same buffer,
#![allow(missing_docs)] // criterion_group! generates an undocumented public fn
#![allow(clippy::unwrap_used)] // a failing benchmark should stop with the error
//! and blind tokens per second. After the runs it prints the envelope/bare ratio per
//! size from criterion's own estimates.

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use vault_crypto::blind::IndexRootKey;
use vault_crypto::envelope::{begin_body, open_body, BodyDecryptor, DEFAULT_SEGMENT_SIZE};
use vault_crypto::{DocumentId, Key256, TenantId};

const SIZES: [(usize, &str); 4] = [
    (2 << 10, "2KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (64 << 20, "64MiB"),
];

/// Encrypts as a streaming upload does: 1 MiB of plaintext at a time, each sealed
/// segment handed on (here: counted and dropped) instead of kept.
fn encrypt_envelope(dek: &Key256, tenant: &TenantId, doc: DocumentId, plain: &[u8]) -> usize {
    let (header, mut enc) = begin_body(dek, tenant, doc, DEFAULT_SEGMENT_SIZE).unwrap();
    let mut written = header.len();
    let mut out = Vec::new();
    for chunk in plain.chunks(1 << 20) {
        enc.update(chunk, &mut out).unwrap();
        written += out.drain(..).map(|segment| segment.len()).sum::<usize>();
    }
    written + enc.finish().unwrap().len()
}

/// The sealed body as a list of segments (input of the decrypt benchmark).
fn sealed_segments(
    dek: &Key256,
    tenant: &TenantId,
    doc: DocumentId,
    plain: &[u8],
) -> Vec<bytes::Bytes> {
    let (header, mut enc) = begin_body(dek, tenant, doc, DEFAULT_SEGMENT_SIZE).unwrap();
    let mut out = vec![bytes::Bytes::from(header)];
    enc.update(plain, &mut out).unwrap();
    out.push(enc.finish().unwrap());
    out
}

fn throughput(c: &mut Criterion) {
    let tenant = TenantId::new("bench").unwrap();
    let dek = Key256::random();
    let doc = DocumentId::random();
    for (direction, envelope_first) in [("encrypt", true), ("decrypt", false)] {
        let mut group = c.benchmark_group(direction);
        for (size, label) in SIZES {
            if size >= 64 << 20 {
                group.sample_size(10);
            } else {
                group.sample_size(30);
            }
            group.throughput(Throughput::Bytes(size as u64));
            let plain = vec![0x5Au8; size];
            let bare = Aes256GcmSiv::new(dek.expose().into());
            let nonce = [7u8; 12];
            let mut buf = plain.clone();
            group.bench_with_input(BenchmarkId::new("bare", label), &size, |b, _| {
                if envelope_first {
                    b.iter(|| {
                        buf.copy_from_slice(&plain);
                        bare.encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut buf)
                            .unwrap()
                    })
                } else {
                    let mut sealed = plain.clone();
                    let tag = bare
                        .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut sealed)
                        .unwrap();
                    b.iter(|| {
                        buf.copy_from_slice(&sealed);
                        bare.decrypt_in_place_detached(
                            Nonce::from_slice(&nonce),
                            b"",
                            &mut buf,
                            &tag,
                        )
                        .unwrap()
                    })
                }
            });
            group.bench_with_input(BenchmarkId::new("envelope", label), &size, |b, _| {
                if envelope_first {
                    b.iter(|| encrypt_envelope(&dek, &tenant, doc, &plain))
                } else {
                    let sealed = sealed_segments(&dek, &tenant, doc, &plain);
                    let header = sealed[0].clone();
                    b.iter(|| {
                        let (_, cipher) = open_body(&dek, &tenant, doc, &header).unwrap();
                        let mut dec = BodyDecryptor::new(cipher);
                        let mut out = Vec::new();
                        let mut read = 0;
                        for segment in &sealed[1..] {
                            dec.update(segment, &mut out).unwrap();
                            read += out.drain(..).map(|p| p.len()).sum::<usize>();
                        }
                        dec.finish(&mut out).unwrap();
                        read + out.iter().map(|p| p.len()).sum::<usize>()
                    })
                }
            });
        }
        group.finish();
    }
}

fn blind_tokens(c: &mut Criterion) {
    let root = IndexRootKey::new(Key256::random(), 1);
    let field = root.field_key("patient_name");
    let mut group = c.benchmark_group("blind");
    group.throughput(Throughput::Elements(1));
    group.bench_function("token", |b| {
        b.iter(|| field.token(b"doe john", 24).unwrap())
    });
    group.bench_function("field_key_and_token", |b| {
        b.iter(|| {
            root.field_key("member_id")
                .token(b"w123456789", 24)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, throughput, blind_tokens);

/// Reads criterion's mean estimate (ns) for one benchmark.
fn mean_ns(dir: &std::path::Path, group: &str, id: &str, label: &str) -> Option<f64> {
    let path = dir
        .join(group)
        .join(id)
        .join(label)
        .join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn report_ratios() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("criterion");
    println!("\nenvelope throughput as a share of the bare AES-256-GCM-SIV primitive (same run):");
    println!("| direction | size | bare MB/s | envelope MB/s | ratio |");
    println!("|---|---|---|---|---|");
    for group in ["encrypt", "decrypt"] {
        for (size, label) in SIZES {
            if let (Some(bare), Some(env)) = (
                mean_ns(&dir, group, "bare", label),
                mean_ns(&dir, group, "envelope", label),
            ) {
                let mbps = |ns: f64| size as f64 / ns * 1e9 / 1e6;
                println!(
                    "| {group} | {label} | {:.0} | {:.0} | {:.1} % |",
                    mbps(bare),
                    mbps(env),
                    bare / env * 100.0
                );
            }
        }
    }
    if let Some(ns) = mean_ns(&dir, "blind", "token", "") {
        println!(
            "blind tokens per second (cached field key): {:.0}",
            1e9 / ns
        );
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report_ratios();
}

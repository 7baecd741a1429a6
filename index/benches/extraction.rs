//! Extraction on the upload path, on the inputs of the issue 14 review: a
//! pathological (valid) 835 of 1, 4 and 16 MB read and merged into the caller's
//! fields, without limits and with the server's default ones, and the capture
//! of a 256 MiB body of white space fed in 64 KiB chunks.
//!
//! `cargo bench -p vault-index --bench extraction`

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vault_index::extract::capture::{Capture, Stage};
use vault_index::extract::{extract_within, ExtractFailure, Format};
use vault_index::fields::{merge, search_terms, FieldLimits, Fields};
use vault_index::synth::x12::large_remittance_835;

const MB: usize = 1_000_000;
const MIB: usize = 1 << 20;

/// The server's defaults (`[search]` in vault-server's config).
const DEFAULT_LIMITS: FieldLimits = FieldLimits {
    max_values_per_field: 50_000,
    max_claims: 20_000,
};

fn extract_and_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("extract_merge_835");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for size in [MB, 4 * MB, 16 * MB] {
        let document = large_remittance_835(14, size);
        let bytes = document.text.as_bytes();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let label = format!("{}MB_{}claims", size / MB, document.claims);
        group.bench_with_input(BenchmarkId::new("unlimited", &label), bytes, |b, bytes| {
            b.iter(|| {
                let extracted = extract_within(Format::X12, bytes, FieldLimits::NONE).unwrap();
                let fields = merge(Fields::new(), extracted);
                search_terms(&fields).len()
            });
        });
        group.bench_with_input(
            BenchmarkId::new("default_limits", &label),
            bytes,
            |b, bytes| {
                b.iter(
                    || match extract_within(Format::X12, bytes, DEFAULT_LIMITS) {
                        Ok(extracted) => merge(Fields::new(), extracted).len(),
                        Err(ExtractFailure::TooMany(_)) => 0,
                        Err(e) => panic!("{e}"),
                    },
                );
            },
        );
    }
    group.finish();
}

fn capture_white_space(c: &mut Criterion) {
    let mut group = c.benchmark_group("capture");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let chunk = vec![b' '; 64 * 1024];
    let total = 256 * MIB;
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("white_space_256MiB", |b| {
        b.iter(|| {
            let mut capture = Capture::start(true);
            for _ in 0..total / chunk.len() {
                capture.feed(&chunk, "text/plain", 1 << 30);
            }
            capture.feed(b"ISA*00*", "text/plain", 1 << 30);
            assert_eq!(capture.stage(), Stage::On(Format::X12));
            capture.held()
        });
    });
    group.finish();
}

criterion_group!(benches, extract_and_merge, capture_white_space);
criterion_main!(benches);

//! Streams a 1 GiB body through the envelope: encrypts generated plaintext into a
//! temporary file, then decrypts it back with `decrypt_stream` from the file, and
//! reports throughput and the process's peak resident memory (VmHWM). Shows that
//! memory stays bounded by the segment size, not the body size.
//!
//! `cargo run --release -p vault-crypto --example stream_1gib [-- SIZE_MIB]`

use std::io::Write;
use std::time::Instant;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;
use vault_crypto::envelope::{begin_body, decrypt_stream, BodyEncryptor, DEFAULT_SEGMENT_SIZE};
use vault_crypto::{DocumentId, Key256, TenantId};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn encrypt_to_file(
    mut encryptor: BodyEncryptor,
    header: Vec<u8>,
    size: usize,
    file: &mut std::fs::File,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    file.write_all(&header).expect("write");
    let chunk = vec![0u8; 1 << 20];
    let mut sealed = Vec::new();
    let mut counter = 0u64;
    let mut written = 0;
    while written < size {
        let mut plain = chunk.clone();
        for word in plain.chunks_mut(8) {
            counter = counter
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            word.copy_from_slice(&counter.to_le_bytes()[..word.len()]);
        }
        let n = plain.len().min(size - written);
        hasher.update(&plain[..n]);
        encryptor.update(&plain[..n], &mut sealed).expect("encrypt");
        for segment in sealed.drain(..) {
            file.write_all(&segment).expect("write");
        }
        written += n;
    }
    file.write_all(&encryptor.finish().expect("finish"))
        .expect("write");
    hasher.finalize().into()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let dek = Key256::random();
    let tenant = TenantId::new("bench").expect("tenant");
    let doc = DocumentId::random();
    let (header, encryptor) = begin_body(&dek, &tenant, doc, DEFAULT_SEGMENT_SIZE).expect("begin");
    let mut file = tempfile::tempfile().expect("temp file");

    let started = Instant::now();
    let expected = encrypt_to_file(encryptor, header, size, &mut file);
    let encrypt_secs = started.elapsed().as_secs_f64();
    let rss_after_encrypt = peak_rss_mib();

    use std::io::Seek;
    file.rewind().expect("rewind");
    let ciphertext = ReaderStream::with_capacity(tokio::fs::File::from_std(file), 64 * 1024);
    let started = Instant::now();
    let mut plain = std::pin::pin!(decrypt_stream(dek, tenant, doc, ciphertext));
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    while let Some(chunk) = plain.next().await {
        let chunk = chunk.expect("decrypt");
        total += chunk.len();
        hasher.update(&chunk);
    }
    let decrypt_secs = started.elapsed().as_secs_f64();
    assert_eq!(total, size);
    assert_eq!(
        <[u8; 32]>::from(hasher.finalize()),
        expected,
        "round trip changed the bytes"
    );
    println!("body: {mib} MiB");
    println!("encrypt to file: {:.0} MB/s (incl. generating and hashing plaintext), peak RSS so far {:.1} MiB", size as f64 / encrypt_secs / 1e6, rss_after_encrypt);
    println!(
        "decrypt from file: {:.0} MB/s (incl. hashing), peak RSS {:.1} MiB",
        size as f64 / decrypt_secs / 1e6,
        peak_rss_mib()
    );
}

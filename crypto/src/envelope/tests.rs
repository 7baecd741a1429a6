use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;

use super::*;
use crate::CryptoError;

const SEG: u32 = 64;

struct Sealed {
    dek: Key256,
    branch: Key256,
    body: Vec<u8>,
    header_len: usize,
    record: Vec<u8>,
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

fn key_ref() -> KeyRef {
    KeyRef {
        provider: "local".into(),
        kek_id: "acme".into(),
        version: 1,
    }
}

fn seal(plain: &[u8], segment_size: u32, doc: DocumentId) -> Sealed {
    let dek = Key256::random();
    let branch = Key256::random();
    let (header_bytes, mut enc) = begin_body(&dek, &tenant("acme"), doc, segment_size).unwrap();
    let mut body = header_bytes.clone();
    let mut out = Vec::new();
    // Feed in uneven chunks to exercise buffering.
    for chunk in plain.chunks(37) {
        enc.update(chunk, &mut out).unwrap();
    }
    out.push(enc.finish().unwrap());
    for seg in out {
        body.extend_from_slice(&seg);
    }
    let (header, _) = BodyHeader::parse(&header_bytes).unwrap();
    let record = KeyRecord::seal(
        &dek,
        &header,
        &branch,
        key_ref(),
        b"{\"content_type\":\"x12\"}",
    )
    .unwrap();
    Sealed {
        dek,
        branch,
        body,
        header_len: header_bytes.len(),
        record: record.encode(),
    }
}

/// Opens key record and body as a reader would: any failure is an error.
fn open(
    s: &Sealed,
    tenant_id: &str,
    doc: DocumentId,
    body: &[u8],
    record: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let record = KeyRecord::parse(record)?;
    if record.tenant.as_str() != tenant_id || record.document != doc {
        return Err(CryptoError::ContextMismatch("record"));
    }
    let dek = record.unwrap_dek(&s.branch)?;
    record.open_metadata(&dek)?;
    let len = BodyHeader::peek_len(body)?.ok_or(CryptoError::Truncated)?;
    if body.len() < len {
        return Err(CryptoError::Truncated);
    }
    let (header, cipher) = open_body(&dek, &tenant(tenant_id), doc, &body[..len])?;
    if !record.matches_body(&header) {
        return Err(CryptoError::KeyCommitmentMismatch);
    }
    let mut dec = BodyDecryptor::new(cipher);
    let mut out = Vec::new();
    dec.update(&body[len..], &mut out)?;
    dec.finish(&mut out)?;
    Ok(out.concat())
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn round_trips_across_segment_boundaries() {
    let doc = DocumentId::random();
    for len in [0, 1, 63, 64, 65, 127, 128, 129, 64 * 5, 64 * 5 + 17] {
        let plain = sample(len);
        let s = seal(&plain, SEG, doc);
        let layout = BodyLayout {
            header_len: s.header_len as u64,
            segment_size: u64::from(SEG),
        };
        assert_eq!(
            layout.ciphertext_len(len as u64),
            s.body.len() as u64,
            "len {len}"
        );
        assert_eq!(
            open(&s, "acme", doc, &s.body, &s.record).unwrap(),
            plain,
            "len {len}"
        );
    }
}

#[test]
fn default_segment_size_round_trips_a_few_segments() {
    let doc = DocumentId::random();
    let plain = sample(3 * DEFAULT_SEGMENT_SIZE as usize + 5);
    let s = seal(&plain, DEFAULT_SEGMENT_SIZE, doc);
    assert_eq!(open(&s, "acme", doc, &s.body, &s.record).unwrap(), plain);
}

#[test]
fn every_bit_flip_of_body_header_and_segments_is_rejected() {
    let doc = DocumentId::random();
    let s = seal(&sample(150), SEG, doc);
    for byte in 0..s.body.len() {
        for bit in 0..8 {
            let mut body = s.body.clone();
            body[byte] ^= 1 << bit;
            assert!(
                open(&s, "acme", doc, &body, &s.record).is_err(),
                "flip at byte {byte} bit {bit} accepted"
            );
        }
    }
}

#[test]
fn every_bit_flip_of_the_key_record_is_rejected() {
    let doc = DocumentId::random();
    let s = seal(&sample(10), SEG, doc);
    for byte in 0..s.record.len() {
        for bit in 0..8 {
            let mut record = s.record.clone();
            record[byte] ^= 1 << bit;
            assert!(
                open(&s, "acme", doc, &s.body, &record).is_err(),
                "flip at byte {byte} bit {bit} accepted"
            );
        }
    }
}

#[test]
fn truncation_reordering_and_splicing_are_rejected() {
    let doc = DocumentId::random();
    let s = seal(&sample(64 * 3 + 10), SEG, doc);
    let h = s.header_len;
    let full = SEG as usize + TAG_LEN;
    // Drop the final segment: a full segment is now last.
    let truncated = &s.body[..h + 3 * full];
    assert!(matches!(
        open(&s, "acme", doc, truncated, &s.record),
        Err(CryptoError::Truncated)
    ));
    // Drop bytes off the end, and everything after the header.
    assert!(open(&s, "acme", doc, &s.body[..s.body.len() - 1], &s.record).is_err());
    assert!(matches!(
        open(&s, "acme", doc, &s.body[..h], &s.record),
        Err(CryptoError::Truncated)
    ));
    // Swap segments 0 and 1.
    let mut reordered = s.body.clone();
    let (a, b) = (
        s.body[h..h + full].to_vec(),
        s.body[h + full..h + 2 * full].to_vec(),
    );
    reordered[h..h + full].copy_from_slice(&b);
    reordered[h + full..h + 2 * full].copy_from_slice(&a);
    assert!(matches!(
        open(&s, "acme", doc, &reordered, &s.record),
        Err(CryptoError::SegmentIntegrity { segment: 0 })
    ));
    // Splice a segment from another document of the same tenant.
    let other = seal(&sample(64 * 3 + 10), SEG, doc);
    let mut spliced = s.body.clone();
    spliced[h + full..h + 2 * full]
        .copy_from_slice(&other.body[other.header_len + full..other.header_len + 2 * full]);
    assert!(open(&s, "acme", doc, &spliced, &s.record).is_err());
    // Trailing garbage after the final segment.
    let mut extended = s.body.clone();
    extended.extend_from_slice(&[0u8; 5]);
    assert!(open(&s, "acme", doc, &extended, &s.record).is_err());
}

#[test]
fn a_body_moved_to_another_tenant_or_document_is_rejected() {
    let doc = DocumentId::random();
    let s = seal(&sample(100), SEG, doc);
    let other_doc = DocumentId::random();
    assert!(open(&s, "acme", other_doc, &s.body, &s.record).is_err());
    assert!(open(&s, "other", doc, &s.body, &s.record).is_err());
    // Rewriting the header to claim another document: commitment still matches, but
    // every segment's associated data changed.
    let record = KeyRecord::parse(&s.record).unwrap();
    let dek = record.unwrap_dek(&s.branch).unwrap();
    let (mut header, _) = BodyHeader::parse(&s.body).unwrap();
    header.document = other_doc;
    let forged = header.encode();
    let (_, cipher) = open_body(&dek, &tenant("acme"), other_doc, &forged).unwrap();
    let mut dec = BodyDecryptor::new(cipher);
    let mut out = Vec::new();
    let result = dec
        .update(&s.body[s.header_len..], &mut out)
        .and_then(|()| dec.finish(&mut out));
    assert!(matches!(
        result,
        Err(CryptoError::SegmentIntegrity { segment: 0 })
    ));
    assert!(out.is_empty());
}

#[test]
fn wrong_dek_fails_the_commitment_before_any_plaintext() {
    let doc = DocumentId::random();
    let s = seal(&sample(100), SEG, doc);
    let err = open_body(
        &Key256::random(),
        &tenant("acme"),
        doc,
        &s.body[..s.header_len],
    )
    .unwrap_err();
    assert!(matches!(err, CryptoError::KeyCommitmentMismatch));
    let _ = s.dek;
}

#[test]
fn rewrap_changes_only_the_key_record() {
    let doc = DocumentId::random();
    let plain = sample(200);
    let s = seal(&plain, SEG, doc);
    let record = KeyRecord::parse(&s.record).unwrap();
    let new_branch = Key256::random();
    let new_ref = KeyRef {
        version: 2,
        ..key_ref()
    };
    let rewrapped = record
        .rewrap(&s.branch, &new_branch, new_ref.clone())
        .unwrap();
    assert_eq!(rewrapped.key_ref, new_ref);
    assert_eq!(
        rewrapped.authenticated_content(),
        record.authenticated_content(),
        "what a log hashes survives a rewrap"
    );
    assert_ne!(rewrapped.encode(), record.encode());
    // Old branch key no longer opens it; the new one does, with the same body.
    assert!(matches!(
        rewrapped.unwrap_dek(&s.branch),
        Err(CryptoError::UnwrapFailed(_))
    ));
    let moved = Sealed {
        branch: new_branch,
        ..s
    };
    assert_eq!(
        open(&moved, "acme", doc, &moved.body, &rewrapped.encode()).unwrap(),
        plain
    );
    assert!(rewrapped.encode().len() < 300);
}

#[test]
fn unknown_versions_and_suites_are_named() {
    let doc = DocumentId::random();
    let s = seal(&sample(1), SEG, doc);
    let mut body = s.body.clone();
    body[5] = 2;
    assert!(matches!(
        BodyHeader::parse(&body),
        Err(CryptoError::UnsupportedVersion { version: 2, .. })
    ));
    let mut body = s.body.clone();
    body[7] = 9;
    assert!(matches!(
        BodyHeader::parse(&body),
        Err(CryptoError::UnsupportedSuite(9))
    ));
    let mut record = s.record.clone();
    record[5] = 7;
    assert!(matches!(
        KeyRecord::parse(&record),
        Err(CryptoError::UnsupportedVersion { version: 7, .. })
    ));
}

#[test]
fn stream_nonces_match_rustcrypto_stream_be32() {
    use aes_gcm_siv::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
    use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
    use aes_gcm_siv::{Aes256GcmSiv, Nonce};
    let key = [9u8; 32];
    let prefix = [1, 2, 3, 4, 5, 6, 7];
    for (index, last) in [(0u32, false), (1, false), (7, true), (u32::MAX - 1, true)] {
        let stream = StreamBE32::from_aead(Aes256GcmSiv::new(&key.into()), (&prefix).into());
        let mut reference = b"segment".to_vec();
        stream
            .encrypt_in_place(index, last, b"aad", &mut reference)
            .unwrap();
        let mut ours = b"segment".to_vec();
        let nonce = segment::stream_nonce(&prefix, index, last);
        let tag = Aes256GcmSiv::new(&key.into())
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"aad", &mut ours)
            .unwrap();
        ours.extend_from_slice(&tag);
        assert_eq!(ours, reference);
    }
}

fn chunks_of(
    bytes: &[u8],
    size: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let owned: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(size.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(owned)
}

async fn collect<S, E: std::fmt::Debug>(s: S) -> Result<Vec<u8>, StreamError<E>>
where
    S: futures::Stream<Item = Result<Bytes, StreamError<E>>>,
{
    let mut out = Vec::new();
    let mut s = std::pin::pin!(s);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn async_streams_round_trip_and_ranges_decrypt_only_their_segments() {
    let doc = DocumentId::random();
    let plain = sample(1000);
    let dek = Key256::random();
    let (header, enc) = begin_body(&dek, &tenant("acme"), doc, SEG).unwrap();
    let header_len = header.len();
    let body = collect(encrypt_stream(header, enc, chunks_of(&plain, 100)))
        .await
        .unwrap();
    let back = collect(decrypt_stream(
        dek.clone(),
        tenant("acme"),
        doc,
        chunks_of(&body, 7),
    ))
    .await
    .unwrap();
    assert_eq!(back, plain);

    for (start, end) in [
        (0u64, 1u64),
        (0, 1000),
        (63, 65),
        (64, 128),
        (500, 999),
        (990, 1000),
        (999, 5000),
    ] {
        let (_, cipher) = open_body(&dek, &tenant("acme"), doc, &body[..header_len]).unwrap();
        let plan = cipher.layout().plan_range(1000, start, end).unwrap();
        let slice = &body[plan.ciphertext.start as usize..plan.ciphertext.end as usize];
        let got = collect(decrypt_range_stream(cipher, plan, chunks_of(slice, 50)))
            .await
            .unwrap();
        assert_eq!(
            got,
            plain[start as usize..end.min(1000) as usize],
            "range {start}..{end}"
        );
    }
    // A range whose ciphertext is cut short fails rather than returning less.
    let (_, cipher) = open_body(&dek, &tenant("acme"), doc, &body[..header_len]).unwrap();
    let plan = cipher.layout().plan_range(1000, 100, 300).unwrap();
    let short = &body[plan.ciphertext.start as usize..plan.ciphertext.end as usize - 1];
    assert!(
        collect(decrypt_range_stream(cipher, plan, chunks_of(short, 50)))
            .await
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_body_round_trips(plain in proptest::collection::vec(any::<u8>(), 0..2000), seg in 16u32..300) {
        let doc = DocumentId::random();
        let s = seal(&plain, seg, doc);
        prop_assert_eq!(open(&s, "acme", doc, &s.body, &s.record).unwrap(), plain);
    }

    #[test]
    fn parsers_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = BodyHeader::parse(&bytes);
        let _ = KeyRecord::parse(&bytes);
        let _ = crate::keys::TenantKeyRecord::parse(&bytes);
    }

    #[test]
    fn parsers_never_panic_on_mutated_records(byte in 0usize..400, value in any::<u8>(), cut in 0usize..400) {
        let doc = DocumentId::random();
        let s = seal(b"x", SEG, doc);
        let mut record = s.record.clone();
        let i = byte % record.len();
        record[i] = value;
        record.truncate(cut.max(1).min(record.len()));
        let _ = KeyRecord::parse(&record);
        let mut body = s.body.clone();
        let j = byte % body.len();
        body[j] = value;
        let _ = BodyHeader::parse(&body[..cut.min(body.len())]);
    }
}

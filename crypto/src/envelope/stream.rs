//! Streaming encryption and decryption with memory bounded by one segment.

use std::pin::pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{open_body, BodyCipher, BodyHeader, RangePlan, TAG_LEN};
use crate::{CryptoError, DocumentId, Key256, TenantId};

/// Encrypts a body segment by segment. Feed plaintext with [`BodyEncryptor::update`]
/// and end with [`BodyEncryptor::finish`]; each call hands back sealed segments.
#[derive(Debug)]
pub struct BodyEncryptor {
    cipher: BodyCipher,
    pending: Vec<u8>,
    next_index: u64,
    plaintext_len: u64,
}

impl BodyEncryptor {
    pub(crate) fn new(cipher: BodyCipher) -> Self {
        let capacity = cipher.segment_size() + TAG_LEN;
        BodyEncryptor {
            cipher,
            pending: Vec::with_capacity(capacity),
            next_index: 0,
            plaintext_len: 0,
        }
    }

    /// Plaintext bytes consumed so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Consumes plaintext; pushes every segment it completes onto `out`.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<Bytes>) -> Result<(), CryptoError> {
        let segment_size = self.cipher.segment_size();
        self.plaintext_len += input.len() as u64;
        while !input.is_empty() {
            let take = (segment_size - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            // A full segment is never the final one (the final one is always short),
            // so it can be sealed as soon as it is complete.
            if self.pending.len() == segment_size {
                let mut segment = std::mem::replace(
                    &mut self.pending,
                    Vec::with_capacity(segment_size + TAG_LEN),
                );
                self.cipher.seal(self.next_index, false, &mut segment)?;
                self.next_index += 1;
                out.push(Bytes::from(segment));
            }
        }
        Ok(())
    }

    /// Seals the final (short, possibly empty) segment.
    pub fn finish(mut self) -> Result<Bytes, CryptoError> {
        let mut segment = std::mem::take(&mut self.pending);
        self.cipher.seal(self.next_index, true, &mut segment)?;
        Ok(Bytes::from(segment))
    }
}

/// Decrypts a body's segments (everything after the header), releasing each
/// segment's plaintext only once that segment has been authenticated.
#[derive(Debug)]
pub struct BodyDecryptor {
    cipher: BodyCipher,
    pending: Vec<u8>,
    next_index: u64,
    /// Decrypt no segment past this one (ranged reads).
    stop_after: Option<(u64, bool)>,
}

impl BodyDecryptor {
    /// Decrypts from the first segment.
    pub fn new(cipher: BodyCipher) -> Self {
        Self::starting_at(cipher, 0, None)
    }

    fn starting_at(
        cipher: BodyCipher,
        first_segment: u64,
        stop_after: Option<(u64, bool)>,
    ) -> Self {
        let capacity = cipher.segment_size() + TAG_LEN;
        BodyDecryptor {
            cipher,
            pending: Vec::with_capacity(capacity),
            next_index: first_segment,
            stop_after,
        }
    }

    fn open_pending(&mut self, last: bool, out: &mut Vec<Bytes>) -> Result<(), CryptoError> {
        let capacity = self.cipher.segment_size() + TAG_LEN;
        let mut segment = std::mem::replace(&mut self.pending, Vec::with_capacity(capacity));
        let len = self.cipher.open(self.next_index, last, &mut segment)?;
        segment.truncate(len);
        self.next_index += 1;
        out.push(Bytes::from(segment));
        Ok(())
    }

    /// Consumes ciphertext; pushes the plaintext of every authenticated segment.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<Bytes>) -> Result<(), CryptoError> {
        let full = self.cipher.segment_size() + TAG_LEN;
        while !input.is_empty() {
            if let Some((stop, _)) = self.stop_after {
                if self.next_index > stop {
                    return Err(CryptoError::TrailingData);
                }
            }
            let take = (full - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            // A complete full-size segment is never final: open it now, unless it is the
            // last one of a ranged read that ends on a non-final segment.
            if self.pending.len() == full {
                self.open_pending(false, out)?;
            }
        }
        Ok(())
    }

    /// Ends the stream: opens the final segment (or checks a ranged read ended where
    /// planned). Fails on truncation.
    pub fn finish(mut self, out: &mut Vec<Bytes>) -> Result<(), CryptoError> {
        match self.stop_after {
            Some((stop, false)) => {
                if self.pending.is_empty() && self.next_index == stop + 1 {
                    Ok(())
                } else {
                    Err(CryptoError::Truncated)
                }
            }
            _ => {
                if self.pending.len() < TAG_LEN {
                    return Err(CryptoError::Truncated);
                }
                self.open_pending(true, out)
            }
        }
    }
}

/// Error of a streaming adapter: the source's own error, or a crypto failure.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E> {
    /// The underlying stream failed.
    #[error("source stream failed: {0}")]
    Source(E),
    /// Encryption or authentication failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Encrypts a plaintext stream: yields the header, then sealed segments.
pub fn encrypt_stream<S, E>(
    header: Vec<u8>,
    mut encryptor: BodyEncryptor,
    plaintext: S,
) -> impl Stream<Item = Result<Bytes, StreamError<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    async_stream::try_stream! {
        yield Bytes::from(header);
        let mut plaintext = pin!(plaintext);
        let mut sealed = Vec::new();
        while let Some(chunk) = plaintext.next().await {
            let chunk = chunk.map_err(StreamError::Source)?;
            encryptor.update(&chunk, &mut sealed)?;
            for segment in sealed.drain(..) {
                yield segment;
            }
        }
        yield encryptor.finish()?;
    }
}

/// Decrypts a whole body stream (header first). The header is checked against the
/// expected tenant and document and the key commitment before any plaintext flows.
pub fn decrypt_stream<S, E>(
    dek: Key256,
    tenant: TenantId,
    document: DocumentId,
    ciphertext: S,
) -> impl Stream<Item = Result<Bytes, StreamError<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    async_stream::try_stream! {
        let mut ciphertext = pin!(ciphertext);
        let mut header_buf: Vec<u8> = Vec::new();
        let mut decryptor: Option<BodyDecryptor> = None;
        let mut plain = Vec::new();
        while let Some(chunk) = ciphertext.next().await {
            let chunk = chunk.map_err(StreamError::Source)?;
            let mut rest: &[u8] = &chunk;
            if decryptor.is_none() {
                header_buf.extend_from_slice(rest);
                rest = &[];
                if let Some(len) = BodyHeader::peek_len(&header_buf)? {
                    if header_buf.len() >= len {
                        let (_, cipher) = open_body(&dek, &tenant, document, &header_buf[..len])?;
                        let mut started = BodyDecryptor::new(cipher);
                        started.update(&header_buf[len..], &mut plain)?;
                        header_buf = Vec::new();
                        decryptor = Some(started);
                    }
                }
            }
            if let Some(decryptor) = decryptor.as_mut() {
                decryptor.update(rest, &mut plain)?;
            }
            for segment in plain.drain(..) {
                yield segment;
            }
        }
        let decryptor = decryptor.ok_or(CryptoError::Truncated)?;
        decryptor.finish(&mut plain)?;
        for segment in plain.drain(..) {
            yield segment;
        }
    }
}

/// Decrypts a ranged read: `ciphertext` must yield exactly `plan.ciphertext` of the
/// body; yields exactly the plaintext bytes the plan asked for.
pub fn decrypt_range_stream<S, E>(
    cipher: BodyCipher,
    plan: RangePlan,
    ciphertext: S,
) -> impl Stream<Item = Result<Bytes, StreamError<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    async_stream::try_stream! {
        let mut decryptor = Some(BodyDecryptor::starting_at(
            cipher,
            plan.first_segment,
            Some((plan.last_segment, plan.includes_final)),
        ));
        let mut ciphertext = pin!(ciphertext);
        let mut plain = Vec::new();
        let mut trim = Trim { skip: plan.skip, remaining: plan.len };
        loop {
            match ciphertext.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(StreamError::Source)?;
                    if let Some(decryptor) = decryptor.as_mut() {
                        decryptor.update(&chunk, &mut plain)?;
                    }
                }
                None => {
                    if let Some(decryptor) = decryptor.take() {
                        decryptor.finish(&mut plain)?;
                    }
                }
            }
            for segment in plain.drain(..) {
                if let Some(wanted) = trim.apply(segment) {
                    yield wanted;
                }
            }
            if decryptor.is_none() {
                break;
            }
        }
        if trim.remaining != 0 {
            Err(CryptoError::Truncated)?;
        }
    }
}

/// Cuts decrypted segments down to the requested plaintext range.
struct Trim {
    skip: u64,
    remaining: u64,
}

impl Trim {
    fn apply(&mut self, mut segment: Bytes) -> Option<Bytes> {
        let drop = self.skip.min(segment.len() as u64);
        self.skip -= drop;
        let _ = segment.split_to(drop as usize);
        let keep = self.remaining.min(segment.len() as u64);
        self.remaining -= keep;
        segment.truncate(keep as usize);
        (!segment.is_empty()).then_some(segment)
    }
}

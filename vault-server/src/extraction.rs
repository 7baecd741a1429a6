//! Extraction on upload: the bytes of an X12 or FHIR upload are captured while
//! they stream through the encryptor, then read for their searchable fields before
//! the key record (which seals the fields) is written.
//!
//! Nothing is captured for scans, for uploads sent as opaque
//! (`X-Vault-Extraction: opaque`), or once the first bytes show a format fields
//! cannot be extracted from (a PDF). The capture is bounded by
//! `search.max_extract_bytes` and lives only in memory.

use vault_index::extract::{self, Format};
use vault_index::fields::Fields;
use zeroize::Zeroizing;

use crate::error::ApiError;

/// What the uploader asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extraction {
    /// Extract fields from X12 and FHIR; refuse the upload when that fails.
    Auto,
    /// Store as given, with the caller's fields only.
    Opaque,
}

/// The bytes of an upload kept for extraction.
pub enum Capture {
    /// Not extracting.
    Off,
    /// Too few bytes yet to tell the format.
    Undecided(Zeroizing<Vec<u8>>),
    /// An extractable format, being captured.
    On(Format, Zeroizing<Vec<u8>>),
    /// An extractable format larger than the capture limit.
    Overflow(Format),
}

impl Capture {
    /// A capture for an upload of this content type, or `Off`.
    pub fn start(enabled: bool) -> Capture {
        if enabled {
            Capture::Undecided(Zeroizing::new(Vec::new()))
        } else {
            Capture::Off
        }
    }

    /// Takes the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8], content_type: &str, limit: u64) {
        match self {
            Capture::Off | Capture::Overflow(_) => {}
            Capture::Undecided(buffer) => {
                buffer.extend_from_slice(chunk);
                if shows_format(buffer) {
                    let taken = Zeroizing::new(std::mem::take(&mut **buffer));
                    *self = match extract::detect(&taken, content_type) {
                        Some(format) => Capture::On(format, taken),
                        None => Capture::Off,
                    };
                    self.check_limit(limit);
                }
            }
            Capture::On(_, buffer) => {
                buffer.extend_from_slice(chunk);
                self.check_limit(limit);
            }
        }
    }

    fn check_limit(&mut self, limit: u64) {
        if let Capture::On(format, buffer) = self {
            if buffer.len() as u64 > limit {
                *self = Capture::Overflow(*format);
            }
        }
    }

    /// The fields extracted from the whole body (empty when there was nothing to
    /// extract). 422 `extraction_failed` when the body is not readable in the
    /// format it claims, or too large to read.
    pub async fn finish(self, content_type: &str, limit: u64) -> Result<Fields, ApiError> {
        let (format, bytes) = match self {
            Capture::Off => return Ok(Fields::new()),
            // The whole body was blank: only the content type can say what it is.
            Capture::Undecided(bytes) => match extract::detect(&bytes, content_type) {
                Some(format) => (format, bytes),
                None => return Ok(Fields::new()),
            },
            Capture::On(format, bytes) => (format, bytes),
            Capture::Overflow(format) => {
                return Err(ApiError::unprocessable(
                    "extraction_failed",
                    format!(
                        "the {format} document is larger than the {limit}-byte extraction limit; send X-Vault-Extraction: opaque to store it without extracted fields"
                    ),
                ))
            }
        };
        tokio::task::spawn_blocking(move || extract::extract(format, &bytes))
            .await
            .map_err(|e| ApiError::internal("extraction task", e))?
            .map_err(|e| {
                ApiError::unprocessable(
                    "extraction_failed",
                    format!(
                        "the document is not readable {e}; send X-Vault-Extraction: opaque to store it without extracted fields"
                    ),
                )
            })
    }
}

/// Whether the bytes so far go beyond a byte-order mark and white space, so the
/// format can be told from them.
fn shows_format(bytes: &[u8]) -> bool {
    bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(bytes)
        .iter()
        .any(|b| !b.is_ascii_whitespace())
}

/// Caller-supplied and extracted fields together (values deduplicated).
pub fn merge(mut caller: Fields, extracted: Fields) -> Fields {
    for (name, values) in extracted {
        let slot = caller.entry(name).or_default();
        for value in values {
            if !slot.contains(&value) {
                slot.push(value);
            }
        }
    }
    caller
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_uploads_are_not_captured() {
        let mut capture = Capture::start(true);
        capture.feed(b"%PDF-1.7 ...", "application/pdf", 1 << 20);
        assert!(matches!(capture, Capture::Off));
    }

    #[test]
    fn x12_is_captured_until_the_limit() {
        let mut capture = Capture::start(true);
        capture.feed(b"  ", "text/plain", 16);
        assert!(matches!(capture, Capture::Undecided(_)));
        capture.feed(b"ISA*00*", "text/plain", 16);
        assert!(matches!(capture, Capture::On(Format::X12, _)));
        capture.feed(b"0123456789", "text/plain", 16);
        assert!(matches!(capture, Capture::Overflow(Format::X12)));
    }

    #[test]
    fn fields_merge_without_duplicates() {
        let mut a = Fields::new();
        a.insert("member_id".into(), vec!["W1".into()]);
        let mut b = Fields::new();
        b.insert("member_id".into(), vec!["W1".into(), "W2".into()]);
        b.insert("payer".into(), vec!["ACME".into()]);
        let merged = merge(a, b);
        assert_eq!(merged["member_id"], vec!["W1".to_owned(), "W2".to_owned()]);
        assert_eq!(merged["payer"], vec!["ACME".to_owned()]);
    }
}

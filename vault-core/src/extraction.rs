//! Extraction on upload: the bytes of an X12 or FHIR upload are captured while
//! they stream through the encryptor ([`Capture`]), then read for their
//! searchable fields before the key record (which seals the fields) is written.
//!
//! Nothing is captured for scans, for uploads sent as opaque
//! (`X-Vault-Extraction: opaque`), or once the first bytes show a format fields
//! cannot be extracted from (a PDF). The capture is bounded by
//! `search.max_extract_bytes`, looks at each chunk once and lives only in memory.
//! Reading the fields is CPU work: it runs on the blocking pool, at most
//! `search.max_concurrent_extractions` at once, and stops at the per-document
//! limits (`search.max_values_per_field`, `search.max_claims_per_document`).

pub use vault_index::extract::capture::{Capture, Captured};
use vault_index::extract::{self, ExtractFailure};
use vault_index::fields::{self, FieldLimits, Fields, LimitExceeded};

use crate::error::Error;

/// What the uploader asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extraction {
    /// Extract fields from X12 and FHIR; refuse the upload when that fails.
    Auto,
    /// Store as given, with the caller's fields only.
    Opaque,
}

const OPAQUE_HINT: &str = "send X-Vault-Extraction: opaque to store it without extracted fields";

/// The fields of a captured document (none when nothing was captured). CPU-bound:
/// call it on the blocking pool. 422 `extraction_failed` when the body is not
/// readable in the format it claims or larger than `max_bytes`;
/// `too_many_fields` / `too_many_claims` past `limits`.
pub fn extract_captured(
    captured: Captured,
    limits: FieldLimits,
    max_bytes: u64,
) -> Result<Fields, Error> {
    let (format, bytes) = match captured {
        Captured::Nothing => return Ok(Fields::new()),
        Captured::Document(format, bytes) => (format, bytes),
        Captured::TooLarge(format) => {
            return Err(Error::unprocessable(
                "extraction_failed",
                format!(
                    "the {format} document is larger than the {max_bytes}-byte extraction limit; {OPAQUE_HINT}"
                ),
            ))
        }
    };
    extract::extract_within(format, &bytes, limits).map_err(|e| match e {
        ExtractFailure::Unreadable(e) => Error::unprocessable(
            "extraction_failed",
            format!("the document is not readable {e}; {OPAQUE_HINT}"),
        ),
        ExtractFailure::TooMany(exceeded) => too_many(exceeded),
    })
}

/// Caller-supplied and extracted fields together (values deduplicated), within
/// the limits.
pub fn merge(caller: Fields, extracted: Fields, limits: &FieldLimits) -> Result<Fields, Error> {
    let merged = fields::merge(caller, extracted);
    fields::check_limits(&merged, limits).map_err(too_many)?;
    Ok(merged)
}

/// 422 for a document past a limit: names the limit and its setting, never a
/// value.
pub fn too_many(exceeded: LimitExceeded) -> Error {
    let (code, setting) = match exceeded {
        LimitExceeded::Values { .. } => ("too_many_fields", "search.max_values_per_field"),
        LimitExceeded::Claims { .. } => ("too_many_claims", "search.max_claims_per_document"),
    };
    Error::unprocessable(
        code,
        format!("the document has {exceeded} ({setting}); {OPAQUE_HINT}"),
    )
}

/// 422 for fields too large to seal in a key record.
pub fn fields_too_large(limit: usize) -> Error {
    Error::unprocessable(
        "too_many_fields",
        format!(
            "the document's searchable fields take more than the {limit} bytes a key record holds; {OPAQUE_HINT}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_index::extract::Format;

    const ISA: &str = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*^*00501*000000001*0*P*:~";

    fn captured(text: &str) -> Captured {
        let mut capture = Capture::start(true);
        capture.feed(text.as_bytes(), "application/edi-x12", 1 << 20);
        capture.finish("application/edi-x12")
    }

    fn remittance(claims: usize) -> String {
        let mut text = format!("{ISA}GS*HP~ST*835*1~");
        for i in 0..claims {
            text.push_str(&format!("CLP*SECRET{i}*1~"));
        }
        text + "SE~"
    }

    #[test]
    fn limits_are_refused_with_their_own_codes() {
        let limits = FieldLimits {
            max_values_per_field: 3,
            max_claims: 2,
        };
        let fields = extract_captured(captured(&remittance(2)), limits, 1 << 20).unwrap();
        assert_eq!(fields["claim_id"].len(), 2);
        let e = extract_captured(captured(&remittance(3)), limits, 1 << 20).unwrap_err();
        assert_eq!(e.code(), "too_many_claims");
        let e = extract_captured(
            captured(&remittance(4)),
            FieldLimits {
                max_claims: 10,
                ..limits
            },
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(e.code(), "too_many_fields");
        let e = extract_captured(captured("SECRET"), limits, 1 << 20).unwrap_err();
        assert_eq!(e.code(), "extraction_failed");
        let e = extract_captured(Captured::TooLarge(Format::X12), limits, 16).unwrap_err();
        assert_eq!(e.code(), "extraction_failed");
    }

    #[test]
    fn fields_merge_without_duplicates_and_within_the_limits() {
        let mut a = Fields::new();
        a.insert("member_id".into(), vec!["W1".into()]);
        let mut b = Fields::new();
        b.insert("member_id".into(), vec!["W1".into(), "W2".into()]);
        b.insert("payer".into(), vec!["ACME".into()]);
        let merged = merge(a.clone(), b.clone(), &FieldLimits::NONE).unwrap();
        assert_eq!(merged["member_id"], vec!["W1".to_owned(), "W2".to_owned()]);
        assert_eq!(merged["payer"], vec!["ACME".to_owned()]);
        let limits = FieldLimits {
            max_values_per_field: 1,
            max_claims: 1,
        };
        let e = merge(a, b, &limits).unwrap_err();
        assert_eq!(e.code(), "too_many_fields");
    }
}

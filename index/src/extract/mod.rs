//! Field extraction: the searchable fields of a billing document, read from the
//! formats billing software sends (X12 835/837, FHIR R4 JSON).
//!
//! [`detect`] decides from the first bytes (and, failing that, the declared content
//! type) which reader applies; [`extract`] runs it. Errors say where the input
//! failed (an X12 segment position and id, a JSON path or line) and what was
//! expected, never a value: the input is PHI.

pub mod fhir;
pub mod x12;

use std::fmt;

use crate::fields::Fields;

/// A format fields can be extracted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ASC X12 interchange (835 remittance, 837 P/I/D claims), 4010 or 5010.
    X12,
    /// FHIR R4 JSON: ExplanationOfBenefit, Claim, or a Bundle holding them.
    Fhir,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::X12 => "X12",
            Format::Fhir => "FHIR",
        })
    }
}

/// Input that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format} at {location}: {problem}")]
pub struct ExtractError {
    /// The format being read.
    pub format: Format,
    /// Where it failed: `segment 12 (CLP)`, `$.entry[3].resource`, `line 4 column 7`.
    /// Segment ids, element positions and JSON keys only, never values.
    pub location: String,
    /// What was expected there (never the value found).
    pub problem: String,
}

/// The format of a document, from its first bytes or else its content type; `None`
/// for anything fields cannot be extracted from (a PDF, an image).
pub fn detect(bytes: &[u8], content_type: &str) -> Option<Format> {
    let start = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = start.iter().position(|b| !b.is_ascii_whitespace());
    if let Some(first) = first {
        let rest = &start[first..];
        if rest.starts_with(b"ISA") {
            return Some(Format::X12);
        }
        if rest.starts_with(b"{") {
            return Some(Format::Fhir);
        }
    }
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/edi-x12" | "application/edi" | "application/x12" | "text/x12" => {
            Some(Format::X12)
        }
        "application/fhir+json" | "application/json" | "application/json+fhir" => {
            Some(Format::Fhir)
        }
        _ => None,
    }
}

/// Extracts the searchable fields of a document in `format`.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Fields, ExtractError> {
    match format {
        Format::X12 => x12::extract(bytes),
        Format::Fhir => fhir::extract(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_bytes_then_content_type() {
        assert_eq!(detect(b"ISA*00*", "text/plain"), Some(Format::X12));
        assert_eq!(detect(b"\xEF\xBB\xBF  \r\nISA|00|", ""), Some(Format::X12));
        assert_eq!(
            detect(b" {\"resourceType\":1}", "application/octet-stream"),
            Some(Format::Fhir)
        );
        assert_eq!(detect(b"garbage", "application/EDI-X12"), Some(Format::X12));
        assert_eq!(
            detect(b"garbage", "application/fhir+json; charset=utf-8"),
            Some(Format::Fhir)
        );
        assert_eq!(detect(b"%PDF-1.7", "application/pdf"), None);
        assert_eq!(detect(b"", ""), None);
    }
}

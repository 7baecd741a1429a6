//! Field extraction: the searchable fields of a billing document, read from the
//! formats billing software sends (X12 835/837, FHIR R4 JSON).
//!
//! [`detect`] decides from the first bytes (and, failing that, the declared content
//! type) which reader applies; [`extract`] runs it. Errors say where the input
//! failed (an X12 segment position and id, a JSON path or line) and what was
//! expected, never a value: the input is PHI.

pub mod capture;
pub mod fhir;
pub mod utf16;
pub mod x12;

use std::fmt;

use crate::fields::{FieldLimits, Fields, FieldsBuilder, LimitExceeded};

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
    if let Some(order) = utf16::byte_order(bytes) {
        if utf16::head(bytes, order, 64)
            .trim_start()
            .starts_with("ISA")
        {
            return Some(Format::X12);
        }
    }
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

/// Why [`extract_within`] refused a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractFailure {
    /// The input is not readable in its format.
    #[error(transparent)]
    Unreadable(#[from] ExtractError),
    /// The input carries more than the limits allow (found before any later
    /// unreadable part: reading stops there).
    #[error(transparent)]
    TooMany(#[from] LimitExceeded),
}

/// Extracts the searchable fields of a document in `format`, without limits.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Fields, ExtractError> {
    let mut out = FieldsBuilder::new();
    read_into(format, bytes, &mut out)?;
    Ok(out.build())
}

/// Extracts the searchable fields of a document in `format`, stopping as soon as
/// it carries more than `limits` allow. Linear in the input.
pub fn extract_within(
    format: Format,
    bytes: &[u8],
    limits: FieldLimits,
) -> Result<Fields, ExtractFailure> {
    let mut out = FieldsBuilder::with_limits(limits);
    let read = read_into(format, bytes, &mut out);
    if let Some(exceeded) = out.exceeded() {
        return Err(exceeded.into());
    }
    read?;
    Ok(out.build())
}

fn read_into(format: Format, bytes: &[u8], out: &mut FieldsBuilder) -> Result<(), ExtractError> {
    match format {
        Format::X12 => match utf16::byte_order(bytes) {
            // Read as UTF-8; the stored document stays as it was sent.
            Some(order) => x12::read_into(&utf16::to_utf8(bytes, order)?, out),
            None => x12::read_into(bytes, out),
        },
        Format::Fhir => fhir::read_into(bytes, out),
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
        assert_eq!(
            detect(b"\xFF\xFE \0\r\0\n\0I\0S\0A\0", ""),
            Some(Format::X12)
        );
        assert_eq!(detect(b"\0I\0S\0A\0*", ""), Some(Format::X12));
        assert_eq!(detect(b"", ""), None);
    }

    const ISA: &str = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*^*00501*000000001*0*P*:~";

    fn remittance(claims: usize) -> String {
        let mut text = format!("{ISA}GS*HP~ST*835*1~");
        for i in 0..claims {
            text.push_str(&format!("CLP*SECRET{i}*1~NM1*QC*1*DOE*JANE****MI*M{i}~"));
        }
        text.push_str("SE~");
        text
    }

    #[test]
    fn extraction_stops_at_the_claim_limit() {
        let limits = FieldLimits {
            max_values_per_field: 100,
            max_claims: 10,
        };
        let fields = extract_within(Format::X12, remittance(10).as_bytes(), limits).unwrap();
        assert_eq!(fields["claim_id"].len(), 10);
        let e = extract_within(Format::X12, remittance(11).as_bytes(), limits).unwrap_err();
        assert_eq!(
            e,
            ExtractFailure::TooMany(LimitExceeded::Claims { limit: 10 })
        );
        // Reading stops there: what follows is not read (nor refused).
        let broken = format!("{}~~garbage", remittance(11));
        let e = extract_within(Format::X12, broken.as_bytes(), limits).unwrap_err();
        assert!(matches!(e, ExtractFailure::TooMany(_)));
        assert!(!e.to_string().contains("SECRET"));
        // Without limits, the same input reads as before.
        assert_eq!(
            extract(Format::X12, remittance(11).as_bytes()).unwrap()["claim_id"].len(),
            11
        );
    }

    #[test]
    fn extraction_stops_at_the_value_limit() {
        let limits = FieldLimits {
            max_values_per_field: 5,
            max_claims: 100,
        };
        let e = extract_within(Format::X12, remittance(6).as_bytes(), limits).unwrap_err();
        assert_eq!(
            e,
            ExtractFailure::TooMany(LimitExceeded::Values {
                field: crate::fields::Field::ClaimId,
                limit: 5
            })
        );
        let entries: Vec<String> = (0..6)
            .map(|i| format!("{{\"resource\": {{\"resourceType\": \"Patient\", \"name\": [{{\"family\": \"SECRET{i}\"}}]}}}}"))
            .collect();
        let bundle = format!(
            "{{\"resourceType\": \"Bundle\", \"entry\": [{}]}}",
            entries.join(",")
        );
        let e = extract_within(Format::Fhir, bundle.as_bytes(), limits).unwrap_err();
        assert!(
            matches!(
                e,
                ExtractFailure::TooMany(LimitExceeded::Values { limit: 5, .. })
            ),
            "{e}"
        );
        assert!(!e.to_string().contains("SECRET"));
        // Unreadable input is still reported as such.
        let e = extract_within(Format::Fhir, b"{", limits).unwrap_err();
        assert!(matches!(e, ExtractFailure::Unreadable(_)));
    }

    #[test]
    fn fhir_claims_count_toward_the_claim_limit() {
        let limits = FieldLimits {
            max_values_per_field: 100,
            max_claims: 2,
        };
        let entry = r#"{"resource": {"resourceType": "ExplanationOfBenefit"}}"#;
        let bundle = |n: usize| {
            format!(
                r#"{{"resourceType": "Bundle", "entry": [{}]}}"#,
                vec![entry; n].join(",")
            )
        };
        assert!(extract_within(Format::Fhir, bundle(2).as_bytes(), limits).is_ok());
        assert_eq!(
            extract_within(Format::Fhir, bundle(3).as_bytes(), limits).unwrap_err(),
            ExtractFailure::TooMany(LimitExceeded::Claims { limit: 2 })
        );
    }

    #[test]
    fn x12_in_utf16_is_read_as_in_utf8_and_captured_as_sent() {
        use crate::synth::x12::{remittance_835, X12Version};
        use crate::synth::SynthClaim;

        let text = remittance_835(&SynthClaim::batch(16, 3), X12Version::V5010);
        let expected = extract(Format::X12, text.as_bytes()).unwrap();
        let mut utf8_with_mark = b"\xEF\xBB\xBF".to_vec();
        utf8_with_mark.extend_from_slice(text.as_bytes());
        assert_eq!(extract(Format::X12, &utf8_with_mark).unwrap(), expected);
        for (little, mark) in [(true, true), (true, false), (false, true), (false, false)] {
            let mut bytes = Vec::new();
            let units = mark
                .then_some(0xFEFF_u16)
                .into_iter()
                .chain(text.encode_utf16());
            for unit in units {
                bytes.extend_from_slice(&if little {
                    unit.to_le_bytes()
                } else {
                    unit.to_be_bytes()
                });
            }
            assert_eq!(
                detect(&bytes, "application/octet-stream"),
                Some(Format::X12)
            );
            assert_eq!(
                extract(Format::X12, &bytes).unwrap(),
                expected,
                "{little} {mark}"
            );
            // Through the upload's capture, in small chunks: the bytes as sent.
            let mut capture = capture::Capture::start(true);
            for chunk in bytes.chunks(7) {
                capture.feed(chunk, "application/octet-stream", 1 << 20);
            }
            match capture.finish("application/octet-stream") {
                capture::Captured::Document(Format::X12, captured) => {
                    assert_eq!(captured.as_slice(), bytes.as_slice());
                }
                _ => panic!("UTF-16 X12 ({little} {mark}) was not captured"),
            }
        }
    }
}

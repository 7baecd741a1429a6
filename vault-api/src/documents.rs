//! What a document is.

use serde::{Deserialize, Serialize};

/// What a document is, as declared by the uploader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// Explanation of benefits / remittance (X12 835, FHIR ExplanationOfBenefit).
    Eob,
    /// Claim (X12 837, FHIR Claim).
    Claim,
    /// Scanned record (PDF, TIFF, PNG, JPEG).
    Scan,
    /// Anything else.
    Other,
}

impl DocumentKind {
    /// The kind's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Eob => "eob",
            DocumentKind::Claim => "claim",
            DocumentKind::Scan => "scan",
            DocumentKind::Other => "other",
        }
    }

    /// Parses the `X-Vault-Kind` value.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "eob" => Some(DocumentKind::Eob),
            "claim" => Some(DocumentKind::Claim),
            "scan" => Some(DocumentKind::Scan),
            "other" => Some(DocumentKind::Other),
            _ => None,
        }
    }
}

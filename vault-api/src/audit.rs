//! What the audit log answers: its events (format 1, sealed in segments as they
//! are answered) and Merkle proofs over its segments.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done (2xx).
    Allowed,
    /// Refused for lack of a valid credential or role, or throttled (401, 403, 429).
    Denied,
    /// Could not be done (any other error).
    Failed,
    /// Recorded before a change was made, so no change is ever unrecorded: the
    /// request's outcome event (same `request_id`) follows. An intent without one
    /// is a change whose outcome is unknown (the server stopped, or its outcome
    /// could not be recorded): the store says whether it was made.
    Intent,
}

impl Outcome {
    /// The outcome of an HTTP status.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=399 => Outcome::Allowed,
            401 | 403 | 429 => Outcome::Denied,
            _ => Outcome::Failed,
        }
    }
}

/// One audit event. Format 1 (inside sealed segments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Position in the tenant's log, from 0.
    pub seq: u64,
    /// When the request was answered.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: OffsetDateTime,
    /// `apikey:<id>`, `operator:<id>`, `system` or `anonymous`.
    pub actor: String,
    /// Roles of the credential (empty for operators and anonymous callers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// What was attempted: `document.upload`, `search`, `tenant.create`, ...
    pub action: String,
    /// The document acted on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// HTTP status of the answer (102, Processing, for an intent).
    pub status: u16,
    /// Request id (`x-request-id`).
    pub request_id: String,
    /// Client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Search field names used (never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Non-PHI detail: an API key id issued or revoked, an anomaly's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An inclusion (and optionally consistency) proof, RFC 9162.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProofResponse {
    /// The segment holding the event (its leaf index).
    pub segment: u64,
    /// The segment's leaf hash (hex).
    pub leaf_hash: String,
    /// Tree size proved against.
    pub tree_size: u64,
    /// The root at that size (hex).
    pub root: String,
    /// Inclusion proof (hex hashes).
    pub inclusion: Vec<String>,
    /// Consistency proof from `old_size` (hex hashes), when asked.
    pub consistency: Option<Vec<String>>,
}

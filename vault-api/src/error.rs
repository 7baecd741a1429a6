//! The one JSON error envelope.

use serde::{Deserialize, Serialize};

/// The JSON error envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation (never PHI, never secrets).
    pub message: String,
}

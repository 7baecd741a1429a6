//! The encryption context of every KEK operation: `{tenant, purpose}`.

use crate::TenantId;

/// What a wrapped key is for; part of every KMS encryption context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A tenant branch key (wraps document DEKs).
    BranchKey,
    /// A tenant blind-index root key.
    IndexRoot,
    /// A tenant audit-log key.
    Audit,
    /// An operator's TOTP secret (sealed under the system KEK).
    OperatorMfa,
}

impl Purpose {
    /// The name used in encryption contexts. FORMAT CONSTANT: stored contexts use it.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::BranchKey => "branch-key",
            Purpose::IndexRoot => "index-root",
            Purpose::Audit => "audit",
            Purpose::OperatorMfa => "operator-mfa",
        }
    }
}

/// The encryption context bound to every KEK operation: `{tenant, purpose}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionContext {
    /// The tenant.
    pub tenant: TenantId,
    /// What the key is for.
    pub purpose: Purpose,
}

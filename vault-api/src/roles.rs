//! What a tenant API key may do.

use serde::{Deserialize, Serialize};

/// Roles of a tenant API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Upload documents.
    Uploader,
    /// Download, read metadata, list and search.
    Reader,
    /// Read the audit log.
    Auditor,
    /// Delete documents and manage the tenant's own keys.
    TenantAdmin,
}

impl Role {
    /// Every role, in the order the documentation lists them.
    pub const ALL: [Role; 4] = [
        Role::Uploader,
        Role::Reader,
        Role::Auditor,
        Role::TenantAdmin,
    ];

    /// Name as used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Uploader => "uploader",
            Role::Reader => "reader",
            Role::Auditor => "auditor",
            Role::TenantAdmin => "tenant-admin",
        }
    }
}

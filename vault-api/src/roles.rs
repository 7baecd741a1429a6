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

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` names every role once, and each name is the one the API reads
    /// and writes (the CLI offers `ALL`'s names; the server parses them).
    #[test]
    fn every_role_is_listed_once_under_its_api_name() {
        for role in Role::ALL {
            // A new variant stops this match compiling: add it here and to ALL.
            match role {
                Role::Uploader | Role::Reader | Role::Auditor | Role::TenantAdmin => {}
            }
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
        let mut names = Role::ALL.map(Role::as_str).to_vec();
        names.dedup();
        assert_eq!(names.len(), 4);
    }
}

//! What a tenant API key, and what an operator, may do.

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

/// Roles of a named operator: separate duties, so that no one operator needs
/// every power. An operator has one or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum OperatorRole {
    /// Tenants, their API keys, and operators.
    Admin,
    /// Key rotation and rewrapping, index key rotation, offboarding (crypto-
    /// shredding), retention and legal holds.
    KeyOfficer,
    /// Backups, their holds and pruning, restore drills.
    BackupOperator,
    /// Reading the audit log of any tenant.
    Auditor,
}

impl OperatorRole {
    /// Every operator role, in the order the documentation lists them.
    pub const ALL: [OperatorRole; 4] = [
        OperatorRole::Admin,
        OperatorRole::KeyOfficer,
        OperatorRole::BackupOperator,
        OperatorRole::Auditor,
    ];

    /// Name as used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Admin => "admin",
            OperatorRole::KeyOfficer => "key-officer",
            OperatorRole::BackupOperator => "backup-operator",
            OperatorRole::Auditor => "auditor",
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

    #[test]
    fn every_operator_role_is_listed_once_under_its_api_name() {
        for role in OperatorRole::ALL {
            // A new variant stops this match compiling: add it here and to ALL.
            match role {
                OperatorRole::Admin
                | OperatorRole::KeyOfficer
                | OperatorRole::BackupOperator
                | OperatorRole::Auditor => {}
            }
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<OperatorRole>(&json).unwrap(), role);
        }
        let mut names = OperatorRole::ALL.map(OperatorRole::as_str).to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 4);
    }
}

//! Credential records and their secrets.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use utoipa::ToSchema;
use vault_crypto::TenantId;
use zeroize::Zeroizing;

/// Roles of a tenant API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
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

/// Operator or tenant API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Runs `/v1/admin`.
    Operator,
    /// Scoped to one tenant and roles.
    ApiKey,
}

impl CredentialKind {
    fn tag(self) -> &'static str {
        match self {
            CredentialKind::Operator => "op",
            CredentialKind::ApiKey => "ak",
        }
    }
}

/// A stored credential (JSON, version 1). Holds the secret's hash, never the secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// Record format version. FORMAT CONSTANT: 1.
    pub format: u32,
    /// Public id.
    pub id: String,
    /// Operator or API key.
    pub kind: CredentialKind,
    /// Tenant of an API key.
    pub tenant: Option<TenantId>,
    /// Roles of an API key.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Issue time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expiry, if any.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    /// Revocation time, if revoked.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A freshly issued credential: the record to store and the token to show once.
pub struct IssuedCredential {
    /// The record.
    pub record: CredentialRecord,
    /// The full bearer token. Shown once, never logged.
    pub token: Zeroizing<String>,
}

impl std::fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

fn hash_secret(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl CredentialRecord {
    /// Issues a new credential.
    pub fn issue(
        kind: CredentialKind,
        tenant: Option<TenantId>,
        roles: Vec<Role>,
        expires_at: Option<OffsetDateTime>,
    ) -> IssuedCredential {
        let id = hex::encode(rand::random::<[u8; 8]>());
        let secret = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
        );
        let token = Zeroizing::new(format!("vlt_{}_{id}_{}", kind.tag(), secret.as_str()));
        let record = CredentialRecord {
            format: 1,
            id,
            kind,
            tenant,
            roles,
            secret_sha256: hex::encode(hash_secret(secret.as_bytes())),
            created_at: OffsetDateTime::now_utc(),
            expires_at,
            revoked_at: None,
        };
        IssuedCredential { record, token }
    }

    /// Splits a bearer token into kind, id and secret; `None` when malformed.
    pub fn parse_token(token: &str) -> Option<(CredentialKind, &str, &str)> {
        let rest = token.strip_prefix("vlt_")?;
        let (tag, rest) = rest.split_once('_')?;
        let kind = match tag {
            "op" => CredentialKind::Operator,
            "ak" => CredentialKind::ApiKey,
            _ => return None,
        };
        let (id, secret) = rest.split_once('_')?;
        (Self::is_id(id) && secret.len() == 43).then_some((kind, id, secret))
    }

    /// Whether `raw` has the shape of a credential id: 16 lowercase hex digits.
    pub fn is_id(raw: &str) -> bool {
        raw.len() == 16
            && raw
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }

    /// Constant-time check of a presented secret against the stored hash.
    pub fn secret_matches(&self, secret: &str) -> bool {
        #[cfg(test)]
        COMPARISONS.with(|c| c.set(c.get() + 1));
        let mut stored = [0u8; 32];
        if hex::decode_to_slice(&self.secret_sha256, &mut stored).is_err() {
            return false;
        }
        bool::from(hash_secret(secret.as_bytes()).ct_eq(&stored))
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
thread_local! {
    /// Secret comparisons made on this thread (tests check that every path makes one).
    static COMPARISONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Secret comparisons made on this thread so far.
#[cfg(test)]
pub(crate) fn comparisons() -> u64 {
    COMPARISONS.with(std::cell::Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_and_match_only_their_secret() {
        let issued = CredentialRecord::issue(
            CredentialKind::ApiKey,
            Some(TenantId::new("acme").unwrap()),
            vec![Role::Reader],
            None,
        );
        let (kind, id, secret) = CredentialRecord::parse_token(&issued.token).unwrap();
        assert_eq!(kind, CredentialKind::ApiKey);
        assert_eq!(id, issued.record.id);
        assert!(issued.record.secret_matches(secret));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('A') { "B" } else { "A" });
        assert!(!issued.record.secret_matches(&wrong));
        assert!(!format!("{issued:?}").contains(secret));
        let json = serde_json::to_string(&issued.record).unwrap();
        assert!(!json.contains(secret));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "vlt_",
            "vlt_xx_0123456789abcdef_",
            "Bearer x",
            "vlt_ak_0123_abc",
            "vlt_ak_0123456789ABCDEF_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(CredentialRecord::parse_token(bad).is_none(), "{bad}");
        }
    }
}

//! Credentials: their records and secrets, and checking a presented token.
//!
//! A token is `vlt_<kind>_<id>_<secret>`: kind `op` (operator) or `ak` (tenant
//! API key), a 16-hex-digit public id and 256 random bits in base64url. Only the
//! SHA-256 of the secret is stored (the secret is high-entropy, so a fast hash is
//! enough); it is compared in constant time. The secret is shown once, at issue.

use std::sync::LazyLock;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use vault_crypto::TenantId;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::storage::{list_all, ObjectName, ObjectStore, StorageError};

pub use vault_api::{OperatorRole, Role};

/// The name an operator record from before named operators goes by: the vault's
/// first operator, with every role. Reserved: no operator added takes it.
pub const BOOTSTRAP_OPERATOR: &str = "bootstrap";

/// A named operator: who an operator credential belongs to and what it may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorProfile {
    /// Unique among operators not removed: 1-63 of `a-z 0-9 . _ -`, starting
    /// with a letter.
    pub name: String,
    /// Its roles (at least one, sorted, no duplicates).
    pub roles: Vec<OperatorRole>,
}

impl OperatorProfile {
    /// The vault's first operator: every role, so that a new vault can be set
    /// up; it adds the named operators who then share the duties.
    pub fn bootstrap() -> Self {
        OperatorProfile {
            name: BOOTSTRAP_OPERATOR.to_owned(),
            roles: OperatorRole::ALL.to_vec(),
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
    /// FORMAT FIELD (optional, since 2026-12): the named operator an operator
    /// credential belongs to. An operator record without one predates named
    /// operators: it is the bootstrap operator, with every role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorProfile>,
    /// FORMAT FIELD (optional, since 2026-12): when the credential was
    /// disabled; refused until enabled again.
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub disabled_at: Option<OffsetDateTime>,
    /// FORMAT FIELD (optional, since 2026-12): the credential an operator's
    /// rotation replaced this one with (an id of a rotated-away credential
    /// still names its operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<String>,
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
            operator: None,
            disabled_at: None,
            rotated_to: None,
        };
        IssuedCredential { record, token }
    }

    /// Issues a credential of the named operator `profile`.
    pub fn issue_operator(
        profile: OperatorProfile,
        expires_at: Option<OffsetDateTime>,
    ) -> IssuedCredential {
        let mut issued =
            CredentialRecord::issue(CredentialKind::Operator, None, Vec::new(), expires_at);
        issued.record.operator = Some(profile);
        issued
    }

    /// The operator it belongs to (the bootstrap operator for an operator
    /// record from before named operators); `None` for an API key.
    pub fn operator_profile(&self) -> Option<OperatorProfile> {
        match self.kind {
            CredentialKind::Operator => Some(
                self.operator
                    .clone()
                    .unwrap_or_else(OperatorProfile::bootstrap),
            ),
            CredentialKind::ApiKey => None,
        }
    }

    /// Whether it can be used at `now`: neither revoked, disabled nor expired.
    pub fn is_usable(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.disabled_at.is_none() && !self.is_expired(now)
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

/// Why a request could not be attributed to a credential: the `reason` label of
/// `vault_unauthenticated_requests_total` and of the sampled system-log events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    MissingCredential,
    /// Not `Bearer vlt_<kind>_<id>_<secret>`.
    MalformedCredential,
    /// No credential has that id.
    UnknownCredential,
    /// The id exists; the secret does not match.
    WrongSecret,
    /// The credential was revoked.
    RevokedCredential,
    /// The credential expired.
    ExpiredCredential,
    /// The credential (an operator's) is disabled.
    DisabledCredential,
    /// The credential could not be looked up (storage failed).
    CheckFailed,
    /// No route matched, so no credential was looked at.
    Unrouted,
    /// The handler answered before looking at the credential.
    NotChecked,
}

impl AuthFailure {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingCredential => "missing_credential",
            AuthFailure::MalformedCredential => "malformed_credential",
            AuthFailure::UnknownCredential => "unknown_credential",
            AuthFailure::WrongSecret => "wrong_secret",
            AuthFailure::RevokedCredential => "revoked_credential",
            AuthFailure::ExpiredCredential => "expired_credential",
            AuthFailure::DisabledCredential => "disabled_credential",
            AuthFailure::CheckFailed => "check_failed",
            AuthFailure::Unrouted => "unrouted",
            AuthFailure::NotChecked => "not_checked",
        }
    }
}

/// A credential record that exists nowhere, with a random secret hash: an unknown
/// id is checked against it, so that answering "unknown id" costs the same record
/// decoding, hash and constant-time comparison as "wrong secret" and the timing
/// does not tell which key ids exist.
static DUMMY_RECORD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let issued = CredentialRecord::issue(CredentialKind::ApiKey, None, Vec::new(), None);
    serde_json::to_vec_pretty(&issued.record).unwrap_or_default()
});

/// Decodes the stored record of `id` (or, when there is none, the dummy record)
/// and compares the presented secret with it: the same work either way. Returns
/// the record only when it exists, is of `kind` and the secret matches it.
fn verify_secret(
    stored: Option<&[u8]>,
    kind: CredentialKind,
    secret: &str,
) -> Result<Result<CredentialRecord, AuthFailure>, Error> {
    let decode = |bytes: &[u8]| serde_json::from_slice::<CredentialRecord>(bytes);
    let (record, exists) = match stored {
        Some(bytes) => (
            decode(bytes).map_err(|e| Error::internal("credential record", e))?,
            true,
        ),
        None => (
            decode(&DUMMY_RECORD).map_err(|e| Error::internal("dummy credential", e))?,
            false,
        ),
    };
    let matches = record.secret_matches(secret);
    Ok(match (exists && record.kind == kind, matches) {
        (false, _) => Err(AuthFailure::UnknownCredential),
        (true, false) => Err(AuthFailure::WrongSecret),
        (true, true) => Ok(record),
    })
}

/// Finds and checks the credential a bearer token names: its record must exist,
/// be of the token's kind, match the secret (compared in constant time, with the
/// same work for an unknown id), and be neither revoked nor expired at `now`.
/// `Ok(Err(reason))` is a refusal; `Err` means the check itself failed (storage).
pub async fn authenticate(
    store: &dyn ObjectStore,
    token: &str,
    now: OffsetDateTime,
) -> Result<Result<CredentialRecord, AuthFailure>, Error> {
    let Some((kind, id, secret)) = CredentialRecord::parse_token(token.trim()) else {
        return Ok(Err(AuthFailure::MalformedCredential));
    };
    let stored = store.get_bytes(&record_name(kind, id)).await?;
    let record = match verify_secret(stored.as_deref(), kind, secret)? {
        Ok(record) => record,
        Err(reason) => return Ok(Err(reason)),
    };
    if record.revoked_at.is_some() {
        return Ok(Err(AuthFailure::RevokedCredential));
    }
    if record.is_expired(now) {
        return Ok(Err(AuthFailure::ExpiredCredential));
    }
    if record.disabled_at.is_some() {
        return Ok(Err(AuthFailure::DisabledCredential));
    }
    Ok(Ok(record))
}

/// Longest life of an API key, days.
pub const MAX_API_KEY_DAYS: u32 = 3650;

/// When a credential valid for `expires_in_days` (1 to [`MAX_API_KEY_DAYS`];
/// none: until revoked) from `now` expires.
pub fn expiry_after(
    expires_in_days: Option<u32>,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, Error> {
    match expires_in_days {
        Some(days @ 1..=MAX_API_KEY_DAYS) => Ok(Some(now + time::Duration::days(i64::from(days)))),
        Some(_) => Err(Error::invalid(
            "invalid_expiry",
            format!("expires_in_days must be 1 to {MAX_API_KEY_DAYS}"),
        )),
        None => Ok(None),
    }
}

/// Where the record of credential `id` of `kind` is stored.
fn record_name(kind: CredentialKind, id: &str) -> ObjectName {
    match kind {
        CredentialKind::Operator => ObjectName::operator(id),
        CredentialKind::ApiKey => ObjectName::api_key(id),
    }
}

/// Stores the record of a newly issued credential (create-only).
pub async fn store_new(store: &dyn ObjectStore, record: &CredentialRecord) -> Result<(), Error> {
    store
        .put_new_bytes(&record_name(record.kind, &record.id), record_json(record)?)
        .await?;
    Ok(())
}

/// Who issues a new vault's first operator credential.
pub enum FirstOperator {
    /// This process: its record is the claim.
    Ours,
    /// Another replica claimed it first: its record (no secret in it).
    Theirs(Box<CredentialRecord>),
}

/// Claims the issuing of a new vault's first operator credential, create-only:
/// of replicas starting a new vault together, one issues it, once.
pub async fn claim_first_operator(
    store: &dyn ObjectStore,
    record: &CredentialRecord,
) -> Result<FirstOperator, Error> {
    let name = ObjectName::operator_bootstrap();
    match store.put_new_bytes(&name, record_json(record)?).await {
        Ok(()) => Ok(FirstOperator::Ours),
        Err(StorageError::AlreadyExists(_)) => read_record(store, &name)
            .await?
            .map(|record| FirstOperator::Theirs(Box::new(record)))
            .ok_or_else(|| Error::internal("first operator claim", "vanished")),
        Err(e) => Err(e.into()),
    }
}

/// Stores a credential record unless it is there already (finishing a claim).
pub async fn ensure_stored(
    store: &dyn ObjectStore,
    record: &CredentialRecord,
) -> Result<(), Error> {
    let name = record_name(record.kind, &record.id);
    match store.put_new_bytes(&name, record_json(record)?).await {
        Ok(()) | Err(StorageError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `record` over its stored version (a change of its state).
pub async fn replace_record(
    store: &dyn ObjectStore,
    record: &CredentialRecord,
) -> Result<(), Error> {
    store
        .replace(&record_name(record.kind, &record.id), record_json(record)?)
        .await?;
    Ok(())
}

fn record_json(record: &CredentialRecord) -> Result<Bytes, Error> {
    serde_json::to_vec_pretty(record)
        .map(Bytes::from)
        .map_err(|e| Error::internal("credential record", e))
}

async fn read_record(
    store: &dyn ObjectStore,
    name: &ObjectName,
) -> Result<Option<CredentialRecord>, Error> {
    match store.get_bytes(name).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal("credential record", e)),
        None => Ok(None),
    }
}

/// Issues an API key of `tenant` with `roles` (at least one; duplicates dropped),
/// valid for `expires_in_days` (1 to [`MAX_API_KEY_DAYS`]) or until revoked.
pub async fn issue_api_key(
    store: &dyn ObjectStore,
    tenant: &TenantId,
    mut roles: Vec<Role>,
    expires_in_days: Option<u32>,
    now: OffsetDateTime,
) -> Result<IssuedCredential, Error> {
    roles.sort_by_key(|r| r.as_str());
    roles.dedup();
    if roles.is_empty() {
        return Err(Error::invalid("invalid_roles", "give at least one role"));
    }
    let expires_at = expiry_after(expires_in_days, now)?;
    let issued = CredentialRecord::issue(
        CredentialKind::ApiKey,
        Some(tenant.clone()),
        roles,
        expires_at,
    );
    store_new(store, &issued.record).await?;
    Ok(issued)
}

/// Every API key record (of all tenants, revoked ones included), in id order.
pub async fn all_api_keys(store: &dyn ObjectStore) -> Result<Vec<CredentialRecord>, Error> {
    let mut keys = Vec::new();
    for info in list_all(store, ObjectName::API_KEYS_PREFIX, None).await? {
        if let Some(record) = read_record(store, &info.name).await? {
            keys.push(record);
        }
    }
    Ok(keys)
}

/// A tenant's API key records, oldest first.
pub async fn api_keys_of(
    store: &dyn ObjectStore,
    tenant: &TenantId,
) -> Result<Vec<CredentialRecord>, Error> {
    let mut keys: Vec<_> = all_api_keys(store)
        .await?
        .into_iter()
        .filter(|k| k.tenant.as_ref() == Some(tenant))
        .collect();
    keys.sort_by_key(|k| k.created_at);
    Ok(keys)
}

/// The record of API key `id` (a well-formed id: see [`CredentialRecord::is_id`]).
pub async fn find_api_key(store: &dyn ObjectStore, id: &str) -> Result<CredentialRecord, Error> {
    read_record(store, &ObjectName::api_key(id))
        .await?
        .ok_or_else(|| Error::not_found("api_key_not_found", "no such API key"))
}

/// Revokes a credential as of `now`; `false` when it already was.
pub async fn revoke(
    store: &dyn ObjectStore,
    record: &mut CredentialRecord,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    if record.revoked_at.is_some() {
        return Ok(false);
    }
    record.revoked_at = Some(now);
    replace_record(store, record).await?;
    Ok(true)
}

/// Replaces operator credential `current` with a new one: the new one is stored
/// first, so a failure in between leaves two valid operator credentials (the old
/// one still works), never none. Returns the new credential.
pub async fn rotate_operator(
    store: &dyn ObjectStore,
    current: &str,
    now: OffsetDateTime,
) -> Result<IssuedCredential, Error> {
    let mut old = read_record(store, &ObjectName::operator(current))
        .await?
        .ok_or_else(|| Error::internal("operator record", "the caller's record is gone"))?;
    let profile = old
        .operator_profile()
        .unwrap_or_else(OperatorProfile::bootstrap);
    let issued = CredentialRecord::issue_operator(profile, old.expires_at);
    store_new(store, &issued.record).await?;
    old.rotated_to = Some(issued.record.id.clone());
    revoke(store, &mut old, now).await?;
    Ok(issued)
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

#[cfg(test)]
mod secret_check_tests {
    use super::*;

    #[test]
    fn an_unknown_id_costs_the_same_comparison_as_a_wrong_secret() {
        let issued =
            CredentialRecord::issue(CredentialKind::ApiKey, None, vec![Role::Reader], None);
        let stored = serde_json::to_vec_pretty(&issued.record).unwrap();
        let (_, _, secret) = CredentialRecord::parse_token(&issued.token).unwrap();
        let wrong = "A".repeat(43);

        let before = comparisons();
        let unknown = verify_secret(None, CredentialKind::ApiKey, &wrong).unwrap();
        assert_eq!(unknown.unwrap_err(), AuthFailure::UnknownCredential);
        assert_eq!(comparisons() - before, 1, "the unknown id is compared too");

        let before = comparisons();
        let mismatch = verify_secret(Some(&stored), CredentialKind::ApiKey, &wrong).unwrap();
        assert_eq!(mismatch.unwrap_err(), AuthFailure::WrongSecret);
        assert_eq!(comparisons() - before, 1);

        let before = comparisons();
        let other_kind = verify_secret(Some(&stored), CredentialKind::Operator, secret).unwrap();
        assert_eq!(other_kind.unwrap_err(), AuthFailure::UnknownCredential);
        assert_eq!(comparisons() - before, 1);

        let before = comparisons();
        let ok = verify_secret(Some(&stored), CredentialKind::ApiKey, secret).unwrap();
        assert_eq!(ok.unwrap().id, issued.record.id);
        assert_eq!(comparisons() - before, 1);
    }

    #[test]
    fn the_dummy_record_decodes() {
        let dummy: CredentialRecord = serde_json::from_slice(&DUMMY_RECORD).unwrap();
        assert!(!dummy.secret_matches(&"A".repeat(43)));
    }
}

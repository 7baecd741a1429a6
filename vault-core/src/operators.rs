//! Named operators: people (or their automation) with their own operator
//! credential and the roles that separate their duties (see
//! [`OperatorRole`]). Their records are operator credential records
//! ([`crate::credentials`]) with a profile: a name and roles.
//!
//! A name is claimed create-only (`system/operator-names/<sha256 of name>`), so
//! two replicas adding the same name at once give one operator; the claim is
//! given back when the operator is removed. Disabling is reversible (the
//! credential is refused until enabled); removing is not (it is revoked).
//! The last operator able to administer operators can be neither: a vault
//! never locks its operators out. That check reads the records first, so two
//! replicas disabling the last two admins at the same instant could both
//! pass it; the bootstrap token file (`operator-token`) is then the way back
//! only if the bootstrap operator was among those left.

use time::OffsetDateTime;

use crate::credentials::{
    self, CredentialKind, CredentialRecord, IssuedCredential, OperatorProfile, OperatorRole,
    BOOTSTRAP_OPERATOR, MAX_API_KEY_DAYS,
};
use crate::error::Error;
use crate::storage::{list_all, ObjectName, ObjectStore, StorageError};

/// Longest operator name.
const MAX_NAME_LEN: usize = 63;

/// Checks an operator's name: 1-63 of `a-z 0-9 . _ -`, starting with a letter,
/// and not the bootstrap operator's.
pub fn parse_name(raw: &str) -> Result<String, Error> {
    let valid = !raw.is_empty()
        && raw.len() <= MAX_NAME_LEN
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(Error::invalid(
            "invalid_operator_name",
            "an operator name is 1-63 of a-z 0-9 . _ - starting with a letter",
        ));
    }
    if raw == BOOTSTRAP_OPERATOR {
        return Err(Error::conflict(
            "operator_name_taken",
            "that name is the bootstrap operator's",
        ));
    }
    Ok(raw.to_owned())
}

/// Every operator credential record (removed ones included), in id order.
pub async fn all(store: &dyn ObjectStore) -> Result<Vec<CredentialRecord>, Error> {
    let mut operators = Vec::new();
    for info in list_all(store, ObjectName::OPERATORS_PREFIX, None).await? {
        if let Some(bytes) = store.get_bytes(&info.name).await? {
            let record: CredentialRecord = serde_json::from_slice(&bytes)
                .map_err(|e| Error::internal("operator record", e))?;
            if record.kind == CredentialKind::Operator {
                operators.push(record);
            }
        }
    }
    Ok(operators)
}

/// The record of operator credential `id` (a well-formed id).
pub async fn find(store: &dyn ObjectStore, id: &str) -> Result<CredentialRecord, Error> {
    let not_found = || Error::not_found("operator_not_found", "no such operator");
    if !CredentialRecord::is_id(id) {
        return Err(not_found());
    }
    let bytes = store
        .get_bytes(&ObjectName::operator(id))
        .await?
        .ok_or_else(not_found)?;
    let record: CredentialRecord =
        serde_json::from_slice(&bytes).map_err(|e| Error::internal("operator record", e))?;
    if record.kind != CredentialKind::Operator {
        return Err(not_found());
    }
    Ok(record)
}

/// Adds the operator `name` with `roles` (at least one; duplicates dropped),
/// valid for `expires_in_days` (1 to 3650) or until removed. Returns its
/// credential, whose token is shown once.
pub async fn add(
    store: &dyn ObjectStore,
    name: &str,
    mut roles: Vec<OperatorRole>,
    expires_in_days: Option<u32>,
    now: OffsetDateTime,
) -> Result<IssuedCredential, Error> {
    let name = parse_name(name)?;
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        return Err(Error::invalid(
            "invalid_roles",
            "give an operator at least one role",
        ));
    }
    let expires_at = match expires_in_days {
        Some(days @ 1..=MAX_API_KEY_DAYS) => Some(now + time::Duration::days(i64::from(days))),
        Some(_) => {
            return Err(Error::invalid(
                "invalid_expiry",
                format!("expires_in_days must be 1 to {MAX_API_KEY_DAYS}"),
            ))
        }
        None => None,
    };
    let issued = CredentialRecord::issue_operator(
        OperatorProfile {
            name: name.clone(),
            roles,
        },
        expires_at,
    );
    let claim = ObjectName::operator_name(&name);
    match store
        .put_new_bytes(&claim, issued.record.id.clone().into_bytes().into())
        .await
    {
        Ok(()) => {}
        Err(StorageError::AlreadyExists(_)) => {
            return Err(Error::conflict(
                "operator_name_taken",
                "an operator of that name exists",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = credentials::store_new(store, &issued.record).await {
        // The name is given back: nothing holds it.
        let _ = store.delete(&claim).await;
        return Err(e);
    }
    Ok(issued)
}

/// What can be done to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Refuse its credential until enabled.
    Disable,
    /// Accept it again.
    Enable,
    /// Revoke it for good and give its name back.
    Remove,
}

/// Applies `change` to operator `id` at `now`; returns the record as it now
/// is. Refuses to disable or remove the last usable admin, and to enable a
/// removed operator.
pub async fn change(
    store: &dyn ObjectStore,
    id: &str,
    change: Change,
    now: OffsetDateTime,
) -> Result<CredentialRecord, Error> {
    let mut record = find(store, id).await?;
    if record.revoked_at.is_some() {
        return match change {
            // Already so: the same answer as the first time.
            Change::Remove => Ok(record),
            Change::Disable | Change::Enable => Err(Error::conflict(
                "operator_removed",
                "that operator was removed",
            )),
        };
    }
    if change != Change::Enable && is_admin(&record, now) {
        let others = all(store)
            .await?
            .into_iter()
            .filter(|other| other.id != record.id && is_admin(other, now))
            .count();
        if others == 0 {
            return Err(Error::conflict(
                "last_admin",
                "this is the last operator with the admin role: add another admin first",
            ));
        }
    }
    match change {
        Change::Disable if record.disabled_at.is_none() => record.disabled_at = Some(now),
        Change::Enable if record.disabled_at.is_some() => record.disabled_at = None,
        Change::Remove => record.revoked_at = Some(now),
        Change::Disable | Change::Enable => return Ok(record),
    }
    let json =
        serde_json::to_vec_pretty(&record).map_err(|e| Error::internal("operator record", e))?;
    store
        .replace(&ObjectName::operator(&record.id), json.into())
        .await?;
    if change == Change::Remove {
        if let Some(profile) = &record.operator {
            store
                .delete(&ObjectName::operator_name(&profile.name))
                .await?;
        }
    }
    Ok(record)
}

/// Whether `record` is a usable operator credential with the admin role.
fn is_admin(record: &CredentialRecord, now: OffsetDateTime) -> bool {
    record.is_usable(now)
        && record
            .operator_profile()
            .is_some_and(|p| p.roles.contains(&OperatorRole::Admin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    #[tokio::test]
    async fn names_are_unique_roles_kept_and_the_last_admin_stays() {
        let store = MemoryStore::new();
        let now = OffsetDateTime::now_utc();
        let bootstrap = CredentialRecord::issue_operator(OperatorProfile::bootstrap(), None);
        credentials::store_new(&store, &bootstrap.record)
            .await
            .unwrap();

        let alice = add(
            &store,
            "alice",
            vec![
                OperatorRole::Auditor,
                OperatorRole::Admin,
                OperatorRole::Auditor,
            ],
            Some(30),
            now,
        )
        .await
        .unwrap();
        let profile = alice.record.operator.clone().unwrap();
        assert_eq!(profile.roles, [OperatorRole::Admin, OperatorRole::Auditor]);
        assert!(alice.record.expires_at.is_some());
        let taken = add(&store, "alice", vec![OperatorRole::Auditor], None, now).await;
        assert_eq!(taken.unwrap_err().code(), "operator_name_taken");
        for bad in ["", "Alice", "1x", "a/b", "bootstrap", &"a".repeat(64)] {
            assert!(add(&store, bad, vec![OperatorRole::Auditor], None, now)
                .await
                .is_err());
        }
        assert_eq!(
            add(&store, "bob", vec![], None, now)
                .await
                .unwrap_err()
                .code(),
            "invalid_roles"
        );

        // Two admins: one may go; then the other is the last.
        change(&store, &bootstrap.record.id, Change::Disable, now)
            .await
            .unwrap();
        let last = change(&store, &alice.record.id, Change::Remove, now).await;
        assert_eq!(last.unwrap_err().code(), "last_admin");
        change(&store, &bootstrap.record.id, Change::Enable, now)
            .await
            .unwrap();
        let removed = change(&store, &alice.record.id, Change::Remove, now)
            .await
            .unwrap();
        assert!(removed.revoked_at.is_some());
        assert_eq!(
            change(&store, &alice.record.id, Change::Enable, now)
                .await
                .unwrap_err()
                .code(),
            "operator_removed"
        );
        // The name is free again.
        add(&store, "alice", vec![OperatorRole::Auditor], None, now)
            .await
            .unwrap();
        assert_eq!(all(&store).await.unwrap().len(), 3);
    }

    #[test]
    fn a_record_from_before_named_operators_is_the_bootstrap_operator() {
        let legacy = r#"{"format":1,"id":"0123456789abcdef","kind":"operator","tenant":null,
            "roles":[],"secret_sha256":"00","created_at":"2026-01-01T00:00:00Z"}"#;
        let record: CredentialRecord = serde_json::from_str(legacy).unwrap();
        let profile = record.operator_profile().unwrap();
        assert_eq!(profile.name, BOOTSTRAP_OPERATOR);
        assert_eq!(profile.roles, OperatorRole::ALL);
        // And a record without the new fields is written as before.
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains("operator\":") && !json.contains("disabled_at"));
    }
}

//! Named operators: people (or their automation) with their own operator
//! credential and the roles that separate their duties (see
//! [`OperatorRole`]). Their records are operator credential records
//! ([`crate::credentials`]) with a profile: a name and roles.
//!
//! A name is claimed create-only (`system/operator-names/<sha256 of name>`), so
//! two replicas adding the same name at once give one operator; the claim is
//! given back when the operator is removed. Disabling is reversible (the
//! credential is refused until enabled); removing is not (it is revoked).
//! The last operator able to administer operators (an admin whose credential
//! does not expire) can be neither: a vault never locks its operators out.
//!
//! An operator is its name: rotating its credential gives it a new id, and any
//! id it had names it (disabling by an id from before a rotation disables the
//! operator's current credential). Every change to the set of operators (add,
//! disable, enable, remove, rotate) runs under one lease in the store
//! (`system/leases/_vault/operators/`), so checks such as "another admin
//! remains" are made on records no other replica or request is changing.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::credentials::{
    self, CredentialKind, CredentialRecord, IssuedCredential, OperatorProfile, OperatorRole,
    BOOTSTRAP_OPERATOR,
};
use crate::error::Error;
use crate::storage::lease::{Lease, LeaseError, LeaseTiming};
use crate::storage::{list_all, ObjectName, ObjectStore, StorageError};

/// Longest operator name.
const MAX_NAME_LEN: usize = 63;

/// The lease of operator changes: held for one change (a few store calls).
const TIMING: LeaseTiming = LeaseTiming {
    refresh: Duration::from_secs(5),
    stale: Duration::from_secs(30),
};

/// Tries at taking the lease while another change holds it, 100 ms apart.
const LEASE_TRIES: u32 = 50;

/// Holds the lease of operator changes for `operation`, waiting (up to about
/// five seconds) while another change holds it.
async fn lock(store: &Arc<dyn ObjectStore>, holder: &str, operation: &str) -> Result<Lease, Error> {
    for _ in 0..LEASE_TRIES {
        match Lease::acquire(
            Arc::clone(store),
            &ObjectName::vault_lease_prefix("operators"),
            holder,
            operation,
            TIMING,
        )
        .await
        {
            Ok(lease) => return Ok(lease),
            Err(LeaseError::Held { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(LeaseError::Storage(e)) => return Err(e.into()),
        }
    }
    Err(Error::unavailable(
        "operators_busy",
        "another change to the operators is under way; try again",
    ))
}

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
    store: &Arc<dyn ObjectStore>,
    holder: &str,
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
    let expires_at = credentials::expiry_after(expires_in_days, now)?;
    let issued = CredentialRecord::issue_operator(
        OperatorProfile {
            name: name.clone(),
            roles,
        },
        expires_at,
    );
    let lease = lock(store, holder, "operator.add").await?;
    let added = claim_and_store(store.as_ref(), &name, &issued).await;
    lease.release().await;
    added.map(|()| issued)
}

async fn claim_and_store(
    store: &dyn ObjectStore,
    name: &str,
    issued: &IssuedCredential,
) -> Result<(), Error> {
    let claim = ObjectName::operator_name(name);
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
    Ok(())
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

/// Applies `change` to the operator one of whose credentials is `id`, at
/// `now`; returns its current record as it now is. Refuses to disable or
/// remove the last lasting admin, and to enable a removed operator.
pub async fn change(
    store: &Arc<dyn ObjectStore>,
    holder: &str,
    id: &str,
    change: Change,
    now: OffsetDateTime,
) -> Result<CredentialRecord, Error> {
    let named = find(store.as_ref(), id).await?;
    let lease = lock(store, holder, "operator.change").await?;
    let changed = change_locked(store.as_ref(), named, change, now).await;
    lease.release().await;
    changed
}

async fn change_locked(
    store: &dyn ObjectStore,
    named: CredentialRecord,
    change: Change,
    now: OffsetDateTime,
) -> Result<CredentialRecord, Error> {
    let everyone = all(store).await?;
    let name = named.operator_profile().map(|p| p.name);
    // The operator's live credential: the one named, or the one its
    // rotations lead to.
    let mut current = Some(named.clone());
    for _ in 0..everyone.len() {
        match current.as_ref().and_then(|r| r.rotated_to.clone()) {
            Some(next) => current = everyone.iter().find(|r| r.id == next).cloned(),
            None => break,
        }
    }
    let Some(mut current) = current.filter(|r| r.revoked_at.is_none()) else {
        return match change {
            // Already so: the same answer as the first time.
            Change::Remove => Ok(named),
            Change::Disable | Change::Enable => Err(Error::conflict(
                "operator_removed",
                "that operator was removed",
            )),
        };
    };
    if change != Change::Enable && is_lasting_admin(&current, now) {
        let others = everyone
            .iter()
            .filter(|other| other.id != current.id && is_lasting_admin(other, now))
            .count();
        if others == 0 {
            return Err(Error::conflict(
                "last_admin",
                "this is the last usable operator with the admin role and no expiry: add another first",
            ));
        }
    }
    match change {
        Change::Disable if current.disabled_at.is_none() => current.disabled_at = Some(now),
        Change::Enable if current.disabled_at.is_some() => current.disabled_at = None,
        Change::Remove => current.revoked_at = Some(now),
        // Already so.
        Change::Disable | Change::Enable => return Ok(current),
    }
    credentials::replace_record(store, &current).await?;
    if change == Change::Remove {
        if let Some(name) = &name {
            // Its second factor goes with it: an operator given the name
            // later enrolls its own.
            store.delete(&ObjectName::operator_mfa(name)).await?;
            store.delete(&ObjectName::operator_name(name)).await?;
        }
    }
    Ok(current)
}

/// Rotates the operator credential `current` (the caller's): a new one with
/// the same name, roles and expiry, stored before the old one is revoked.
/// Refused when the credential was disabled or revoked meanwhile.
pub async fn rotate(
    store: &Arc<dyn ObjectStore>,
    holder: &str,
    current: &str,
    now: OffsetDateTime,
) -> Result<IssuedCredential, Error> {
    let lease = lock(store, holder, "operator.rotate").await?;
    let rotated = async {
        let record = find(store.as_ref(), current).await?;
        if !record.is_usable(now) {
            return Err(Error::conflict(
                "operator_not_usable",
                "this credential was disabled, removed or rotated meanwhile",
            ));
        }
        credentials::rotate_operator(store.as_ref(), current, now).await
    }
    .await;
    lease.release().await;
    rotated
}

/// Whether `record` is a usable operator credential with the admin role that
/// does not expire: one that keeps the vault administrable. (An admin whose
/// credential expires would leave none once it lapsed.)
fn is_lasting_admin(record: &CredentialRecord, now: OffsetDateTime) -> bool {
    record.is_usable(now)
        && record.expires_at.is_none()
        && record
            .operator_profile()
            .is_some_and(|p| p.roles.contains(&OperatorRole::Admin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    const HOLDER: &str = "test:/data";

    #[tokio::test]
    async fn names_are_unique_roles_kept_and_the_last_admin_stays() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let now = OffsetDateTime::now_utc();
        let bootstrap = CredentialRecord::issue_operator(OperatorProfile::bootstrap(), None);
        credentials::store_new(store.as_ref(), &bootstrap.record)
            .await
            .unwrap();

        let alice = add(
            &store,
            HOLDER,
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
        let taken = add(
            &store,
            HOLDER,
            "alice",
            vec![OperatorRole::Auditor],
            None,
            now,
        )
        .await;
        assert_eq!(taken.unwrap_err().code(), "operator_name_taken");
        for bad in ["", "Alice", "1x", "a/b", "bootstrap", &"a".repeat(64)] {
            assert!(
                add(&store, HOLDER, bad, vec![OperatorRole::Auditor], None, now)
                    .await
                    .is_err()
            );
        }
        assert_eq!(
            add(&store, HOLDER, "bob", vec![], None, now)
                .await
                .unwrap_err()
                .code(),
            "invalid_roles"
        );

        // Alice's credential expires: she does not keep the vault
        // administrable, so the bootstrap operator is the last lasting admin.
        let last = change(&store, HOLDER, &bootstrap.record.id, Change::Disable, now).await;
        assert_eq!(last.unwrap_err().code(), "last_admin");
        let carol = add(
            &store,
            HOLDER,
            "carol",
            vec![OperatorRole::Admin],
            None,
            now,
        )
        .await
        .unwrap();
        // Two lasting admins: one may go; then the other is the last.
        change(&store, HOLDER, &bootstrap.record.id, Change::Disable, now)
            .await
            .unwrap();
        let last = change(&store, HOLDER, &carol.record.id, Change::Remove, now).await;
        assert_eq!(last.unwrap_err().code(), "last_admin");
        change(&store, HOLDER, &bootstrap.record.id, Change::Enable, now)
            .await
            .unwrap();

        // Carol rotates: her old id still names her, and removing by it
        // revokes the credential she has now.
        let rotated = rotate(&store, HOLDER, &carol.record.id, now).await.unwrap();
        let removed = change(&store, HOLDER, &carol.record.id, Change::Remove, now)
            .await
            .unwrap();
        assert_eq!(removed.id, rotated.record.id);
        assert!(removed.revoked_at.is_some());
        assert_eq!(
            change(&store, HOLDER, &rotated.record.id, Change::Enable, now)
                .await
                .unwrap_err()
                .code(),
            "operator_removed"
        );
        // A removed (or disabled) credential cannot rotate itself back.
        assert_eq!(
            rotate(&store, HOLDER, &rotated.record.id, now)
                .await
                .unwrap_err()
                .code(),
            "operator_not_usable"
        );
        // The name is free again; the old ids do not name the new carol.
        let new_carol = add(
            &store,
            HOLDER,
            "carol",
            vec![OperatorRole::Auditor],
            None,
            now,
        )
        .await
        .unwrap();
        let again = change(&store, HOLDER, &carol.record.id, Change::Remove, now)
            .await
            .unwrap();
        assert_ne!(again.id, new_carol.record.id);
        assert!(find(store.as_ref(), &new_carol.record.id)
            .await
            .unwrap()
            .is_usable(now));
        assert_eq!(all(store.as_ref()).await.unwrap().len(), 5);
    }

    /// Two admins disabling each other at once: one wins, the other gets
    /// `last_admin` (the lease orders them), never both.
    #[tokio::test]
    async fn concurrent_changes_never_leave_no_admin() {
        for _ in 0..5 {
            let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
            let now = OffsetDateTime::now_utc();
            let first = add(
                &store,
                HOLDER,
                "first",
                vec![OperatorRole::Admin],
                None,
                now,
            )
            .await
            .unwrap();
            let second = add(
                &store,
                HOLDER,
                "second",
                vec![OperatorRole::Admin],
                None,
                now,
            )
            .await
            .unwrap();
            let (a, b) = tokio::join!(
                change(&store, HOLDER, &first.record.id, Change::Disable, now),
                change(&store, HOLDER, &second.record.id, Change::Disable, now),
            );
            assert!(a.is_ok() != b.is_ok(), "exactly one may win");
            let admins = all(store.as_ref())
                .await
                .unwrap()
                .iter()
                .filter(|r| is_lasting_admin(r, now))
                .count();
            assert_eq!(admins, 1);
        }
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

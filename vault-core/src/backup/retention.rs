//! Retention (which snapshots to keep) and the prune that applies it.
//!
//! The policy follows restic's `forget --keep-*`: keep the `last` newest
//! snapshots; for each of the newest `daily` (`weekly`, `monthly`) days (ISO weeks,
//! months) that have snapshots, keep the newest one of that period; keep every
//! snapshot younger than `within`. A snapshot is kept if any rule keeps it. An empty
//! policy keeps everything. Held and Object-Locked snapshots are always kept.
//!
//! The prune deletes forgotten manifests first, then the data objects no remaining
//! manifest references, so an interruption at any point leaves every remaining
//! snapshot whole (at worst some unreferenced data, removed by the next prune).
//! It must not run while a backup runs: the server holds one lock for both.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vault_crypto::signing::PublicKey;

use super::repo::Repository;
use super::BackupError;
use crate::storage::ObjectName;

/// Which snapshots to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepPolicy {
    /// The newest N snapshots.
    pub keep_last: u32,
    /// The newest snapshot of each of the newest N days.
    pub keep_daily: u32,
    /// ... of each of the newest N ISO weeks.
    pub keep_weekly: u32,
    /// ... of each of the newest N months.
    pub keep_monthly: u32,
    /// Every snapshot younger than this many days.
    pub keep_within_days: u32,
}

impl KeepPolicy {
    /// Whether no rule is set (then everything is kept).
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }
}

/// The snapshots `policy` keeps, of `snapshots` (id, creation time) in any order.
pub fn select_kept(
    snapshots: &[(String, OffsetDateTime)],
    policy: &KeepPolicy,
    now: OffsetDateTime,
) -> BTreeSet<String> {
    if policy.is_empty() {
        return snapshots.iter().map(|(id, _)| id.clone()).collect();
    }
    let mut newest_first: Vec<&(String, OffsetDateTime)> = snapshots.iter().collect();
    newest_first.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
    let mut kept = BTreeSet::new();
    for (id, _) in newest_first.iter().take(policy.keep_last as usize) {
        kept.insert(id.clone());
    }
    let mut by_period = |count: u32, period: &dyn Fn(OffsetDateTime) -> (i32, u32)| {
        let mut seen = HashSet::new();
        for (id, at) in &newest_first {
            if seen.len() >= count as usize {
                break;
            }
            // The first snapshot met in a period is that period's newest.
            if seen.insert(period(*at)) {
                kept.insert(id.clone());
            }
        }
    };
    by_period(policy.keep_daily, &|t| (t.year(), u32::from(t.ordinal())));
    by_period(policy.keep_weekly, &|t| {
        let (year, week, _) = t.to_iso_week_date();
        (year, u32::from(week))
    });
    by_period(policy.keep_monthly, &|t| {
        (t.year(), u32::from(u8::from(t.month())))
    });
    if policy.keep_within_days > 0 {
        let cutoff = now - time::Duration::days(i64::from(policy.keep_within_days));
        for (id, at) in &newest_first {
            if *at >= cutoff {
                kept.insert(id.clone());
            }
        }
    }
    kept
}

/// What a prune did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Snapshots kept.
    pub kept: Vec<String>,
    /// Snapshots removed.
    pub removed: Vec<String>,
    /// Snapshots a rule would remove but a legal hold or Object Lock keeps.
    pub protected: Vec<String>,
    /// Data objects deleted.
    pub data_objects_deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
}

/// Applies `policy` to the repository.
pub async fn prune(
    repo: &Repository,
    vault_key: &PublicKey,
    policy: &KeepPolicy,
) -> Result<PruneReport, BackupError> {
    let now = OffsetDateTime::now_utc();
    let holds = repo.holds().await?;
    let mut manifests = Vec::new();
    for id in repo.snapshot_ids().await? {
        manifests.push(repo.manifest(&id, vault_key).await?);
    }
    let listed: Vec<(String, OffsetDateTime)> = manifests
        .iter()
        .map(|m| (m.snapshot.clone(), m.created_at))
        .collect();
    let kept_by_rules = select_kept(&listed, policy, now);
    let mut report = PruneReport::default();
    let mut referenced = HashSet::new();
    for manifest in &manifests {
        let id = &manifest.snapshot;
        let locked = manifest.lock.as_ref().is_some_and(|l| l.retain_until > now);
        if kept_by_rules.contains(id) || holds.contains(id) || locked {
            if !kept_by_rules.contains(id) {
                report.protected.push(id.clone());
            }
            report.kept.push(id.clone());
            referenced.extend(manifest.entries.iter().map(|e| e.sha256.clone()));
        } else {
            repo.store.delete(&ObjectName::backup_snapshot(id)).await?;
            report.removed.push(id.clone());
        }
    }
    // Only now, with the forgotten manifests gone, remove what nothing references.
    for (sha, size) in repo.data_objects().await? {
        if !referenced.contains(&sha) {
            repo.store.delete(&ObjectName::backup_data(&sha)).await?;
            report.data_objects_deleted += 1;
            report.bytes_freed += size;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn snaps(times: &[OffsetDateTime]) -> Vec<(String, OffsetDateTime)> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("s{i:03}"), *t))
            .collect()
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let s = snaps(&[
            datetime!(2026-01-01 0:00 UTC),
            datetime!(2026-01-02 0:00 UTC),
        ]);
        assert_eq!(
            select_kept(&s, &KeepPolicy::default(), datetime!(2026-06-01 0:00 UTC)).len(),
            2
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let s = snaps(&[
            datetime!(2026-03-01 01:00 UTC),
            datetime!(2026-03-01 23:00 UTC),
            datetime!(2026-03-02 05:00 UTC),
            datetime!(2026-03-03 05:00 UTC),
            datetime!(2026-03-03 06:00 UTC),
        ]);
        let policy = KeepPolicy {
            keep_daily: 2,
            ..KeepPolicy::default()
        };
        let kept = select_kept(&s, &policy, datetime!(2026-03-04 0:00 UTC));
        assert_eq!(
            kept,
            ["s002", "s004"].map(String::from).into_iter().collect()
        );
    }

    #[test]
    fn last_weekly_monthly_and_within_combine() {
        let s = snaps(&[
            datetime!(2026-01-05 12:00 UTC),
            datetime!(2026-01-20 12:00 UTC),
            datetime!(2026-02-10 12:00 UTC),
            datetime!(2026-02-11 12:00 UTC),
            datetime!(2026-02-28 12:00 UTC),
        ]);
        let policy = KeepPolicy {
            keep_last: 1,
            keep_weekly: 2,
            keep_monthly: 2,
            keep_within_days: 0,
            keep_daily: 0,
        };
        let kept = select_kept(&s, &policy, datetime!(2026-03-01 0:00 UTC));
        // last: s004; weekly: s004 (week 9), s003 (week 7); monthly: s004 (Feb), s001 (Jan).
        assert_eq!(
            kept,
            ["s001", "s003", "s004"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        let within = KeepPolicy {
            keep_within_days: 20,
            ..KeepPolicy::default()
        };
        let kept = select_kept(&s, &within, datetime!(2026-03-01 0:00 UTC));
        assert_eq!(
            kept,
            ["s002", "s003", "s004"]
                .map(String::from)
                .into_iter()
                .collect()
        );
    }

    proptest! {
        /// Whatever the policy, the newest snapshot is kept and nothing invented.
        #[test]
        fn newest_is_always_kept(
            offsets in proptest::collection::vec(0i64..10_000_000, 1..40),
            last in 0u32..4, daily in 0u32..4, weekly in 0u32..4, monthly in 0u32..4,
            within in 0u32..30,
        ) {
            let base = datetime!(2026-01-01 0:00 UTC);
            let times: Vec<_> = offsets.iter().map(|o| base + time::Duration::seconds(*o)).collect();
            let s = snaps(&times);
            let policy = KeepPolicy { keep_last: last, keep_daily: daily, keep_weekly: weekly, keep_monthly: monthly, keep_within_days: within };
            let now = base + time::Duration::seconds(10_000_001);
            let kept = select_kept(&s, &policy, now);
            let newest = s.iter().max_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0))).map(|x| x.0.clone());
            let any_rule = last + daily + weekly + monthly > 0 || policy.is_empty();
            if any_rule {
                prop_assert!(kept.contains(&newest.unwrap_or_default()));
            }
            prop_assert!(kept.iter().all(|id| s.iter().any(|(i, _)| i == id)));
        }
    }
}

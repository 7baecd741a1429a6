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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::StreamExt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vault_crypto::signing::SigningKey;

use super::manifest::{Body, Location, VerifiedManifest};
use super::pack::{self, PackBuilder, Relocation, Relocations};
use super::repo::Repository;
use super::sha256_hex;
use super::BackupError;
use crate::storage::{get_bytes_at_most, ObjectName};

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
    /// Repository objects deleted (packs, manifest chunks, whole objects).
    pub data_objects_deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Packs rewritten without their unnamed blobs.
    pub packs_repacked: u64,
    /// Bytes of kept packs that no remaining snapshot names (below the repack
    /// threshold, or under Object Lock).
    pub bytes_unreferenced_in_kept_packs: u64,
}

/// Applies `policy` to the repository. `signer` is the vault's backup key:
/// only manifests and relocation records it signed are followed, and it signs
/// the relocation records of packs this prune rewrites.
pub async fn prune(
    repo: &Repository,
    signer: &SigningKey,
    policy: &KeepPolicy,
) -> Result<PruneReport, BackupError> {
    let vault_key = &signer.public_key();
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
    let mut kept = Vec::new();
    for manifest in manifests {
        let id = manifest.snapshot.clone();
        let locked = manifest.lock.as_ref().is_some_and(|l| l.retain_until > now);
        if kept_by_rules.contains(&id) || holds.contains(&id) || locked {
            if !kept_by_rules.contains(&id) {
                report.protected.push(id.clone());
            }
            report.kept.push(id);
            kept.push(manifest);
        } else {
            repo.store.delete(&ObjectName::backup_snapshot(&id)).await?;
            report.removed.push(id);
        }
    }
    // Only now, with the forgotten manifests gone, find what the rest name (a
    // chunk that cannot be read stops the prune before anything is deleted).
    // A record that is not this vault's stops the prune: ignoring it could make
    // the packs it moved blobs to look unused.
    let (relocations, refused) = repo.relocations(vault_key).await?;
    if let Some(first) = refused.into_iter().next() {
        return Err(BackupError::BadPack(format!(
            "{first}; prune deletes nothing while a relocation record cannot be trusted: restore the record from a copy of the repository, or remove it if it was not written by this vault"
        )));
    }
    let live = Live::collect(repo, &kept, &relocations, now).await?;
    for (sha, size) in repo.data_objects().await? {
        if !live.whole.contains(&sha) {
            repo.store.delete(&ObjectName::backup_data(&sha)).await?;
            report.data_objects_deleted += 1;
            report.bytes_freed += size;
        }
    }
    for (sha, size) in repo.chunks().await? {
        if !live.chunks.contains(&sha) {
            repo.store.delete(&ObjectName::backup_chunk(&sha)).await?;
            report.data_objects_deleted += 1;
            report.bytes_freed += size;
        }
    }
    // (pack, size, unused bytes) of the packs kept.
    let mut kept_packs = Vec::new();
    for (sha, size) in repo.packs().await? {
        match live.packs.get(&sha) {
            // Nothing names it: a forgotten snapshot's, a repacked one, or an
            // interrupted run's.
            None => {
                repo.store.delete(&ObjectName::backup_pack(&sha)).await?;
                report.data_objects_deleted += 1;
                report.bytes_freed += size;
            }
            Some(named) => kept_packs.push((sha, size, size.saturating_sub(*named))),
        }
    }
    let candidates = choose_repacks(kept_packs, &live.locked_packs, &mut report);
    // Relocation records no remaining entry goes through.
    for pack in relocations.packs() {
        if !live.relocations_used.contains(pack) {
            repo.store
                .delete(&ObjectName::backup_relocation(pack))
                .await?;
        }
    }
    if !candidates.is_empty() {
        repack(repo, signer, &kept, &relocations, candidates, &mut report).await?;
    }
    Ok(report)
}

/// A pack is repacked when more than this share of its bytes is named by no
/// remaining snapshot.
pub const REPACK_UNUSED_PERCENT: u64 = 50;
/// And packs with the most unused bytes are repacked until the unused bytes
/// left are at most this share of all packs' (restic's `prune --max-unused`
/// default: rewriting costs reads and writes, unused bytes cost storage and
/// keep deleted documents' ciphertext).
pub const REPACK_MAX_UNUSED_PERCENT: u64 = 5;

/// Which packs to repack: every pack mostly unused, then the most unused ones
/// until the rest is under the repository-wide share; never a pack a locked
/// snapshot names. What stays unused is added to the report.
fn choose_repacks(
    mut packs: Vec<(String, u64, u64)>,
    locked: &HashSet<String>,
    report: &mut PruneReport,
) -> Vec<(String, u64)> {
    let total: u64 = packs.iter().map(|(_, size, _)| size).sum();
    let mut unused_left: u64 = packs.iter().map(|(_, _, unused)| unused).sum();
    // Most unused share first.
    packs.sort_by(|a, b| (b.2 * a.1).cmp(&(a.2 * b.1)).then_with(|| a.0.cmp(&b.0)));
    let mut chosen = Vec::new();
    for (sha, size, unused) in packs {
        let mostly_unused = unused * 100 > size * REPACK_UNUSED_PERCENT;
        let too_much_left = unused_left * 100 > total * REPACK_MAX_UNUSED_PERCENT;
        if unused > 0 && (mostly_unused || too_much_left) && !locked.contains(&sha) {
            unused_left -= unused;
            chosen.push((sha, size));
        } else {
            report.bytes_unreferenced_in_kept_packs += unused;
        }
    }
    chosen
}

/// What the kept snapshots name, their entries followed through the
/// relocation records to where the objects are now.
struct Live {
    /// Named bytes per pack, with their trailer records and the pack's
    /// header and trailer end (so a pack whose every blob is named has none
    /// unused).
    packs: HashMap<String, u64>,
    /// Packs a snapshot under Object Lock names (never repacked: their
    /// retention is a promise).
    locked_packs: HashSet<String>,
    whole: HashSet<String>,
    chunks: HashSet<String>,
    /// Relocation records some entry goes through.
    relocations_used: HashSet<String>,
}

impl Live {
    async fn collect(
        repo: &Repository,
        kept: &[VerifiedManifest],
        relocations: &Relocations,
        now: OffsetDateTime,
    ) -> Result<Live, BackupError> {
        let mut live = Live {
            packs: HashMap::new(),
            locked_packs: HashSet::new(),
            whole: HashSet::new(),
            chunks: HashSet::new(),
            relocations_used: HashSet::new(),
        };
        for manifest in kept {
            let locked = manifest.lock.as_ref().is_some_and(|l| l.retain_until > now);
            if let Body::Chunks(refs) = manifest.body() {
                live.chunks.extend(refs.iter().map(|c| c.sha256.clone()));
            }
            // An object two snapshots name counts once per pack and offset.
            let mut counted: HashSet<(String, u64)> = HashSet::new();
            let mut entries = repo.entries(manifest);
            while let Some(chunk) = entries.next().await {
                for entry in chunk? {
                    match &entry.location {
                        Location::Whole => {
                            live.whole.insert(entry.sha256);
                        }
                        Location::Packed { pack, offset } => {
                            let (pack, offset) = relocations.resolve(pack, *offset, |hop| {
                                if !live.relocations_used.contains(hop) {
                                    live.relocations_used.insert(hop.to_owned());
                                }
                            })?;
                            if locked {
                                live.locked_packs.insert(pack.to_owned());
                            }
                            if counted.insert((pack.to_owned(), offset)) {
                                *live
                                    .packs
                                    .entry(pack.to_owned())
                                    .or_insert(pack::EMPTY_PACK_LEN) +=
                                    entry.size + pack::RECORD_LEN as u64;
                            }
                        }
                    }
                }
            }
        }
        Ok(live)
    }
}

/// Repacks `candidates`: copies the blobs still named into new packs (each
/// checked against its hash on the way), makes them durable, writes a
/// relocation record per old pack and makes those durable, and only then
/// deletes the old packs. Interrupted at any point, every snapshot still
/// reads: before the records, the new packs are unreferenced (the next prune
/// deletes them); after, readers follow the records and the old packs are
/// named by nothing (the next prune deletes them).
async fn repack(
    repo: &Repository,
    signer: &SigningKey,
    kept: &[VerifiedManifest],
    relocations: &Relocations,
    candidates: Vec<(String, u64)>,
    report: &mut PruneReport,
) -> Result<(), BackupError> {
    let chosen: HashSet<String> = candidates.iter().map(|(sha, _)| sha.clone()).collect();
    // old pack -> offset -> (length, hash): the blobs still named.
    let mut named: HashMap<String, BTreeMap<u64, (u64, String)>> = HashMap::new();
    for manifest in kept {
        let mut entries = repo.entries(manifest);
        while let Some(chunk) = entries.next().await {
            for entry in chunk? {
                if let Location::Packed { pack, offset } = &entry.location {
                    let (pack, offset) = relocations.resolve(pack, *offset, |_| {})?;
                    if chosen.contains(pack) {
                        named
                            .entry(pack.to_owned())
                            .or_default()
                            .insert(offset, (entry.size, entry.sha256.clone()));
                    }
                }
            }
        }
    }
    let mut builder = PackBuilder::new();
    // (old pack, old offset, new offset) of the blobs in `builder`.
    let mut in_builder: Vec<(String, u64, u64)> = Vec::new();
    let mut records: HashMap<String, Relocation> = HashMap::new();
    let mut written: HashSet<String> = HashSet::new();
    let mut written_bytes = 0u64;
    for (old, size) in &candidates {
        let bytes = get_bytes_at_most(
            repo.store.as_ref(),
            &ObjectName::backup_pack(old),
            pack::MAX_PACK_BYTES as usize,
        )
        .await?
        .ok_or_else(|| BackupError::BadPack(format!("pack {old} vanished during prune")))?;
        records.entry(old.clone()).or_default();
        for (offset, (length, sha)) in named.remove(old).unwrap_or_default() {
            let range = offset as usize..(offset + length) as usize;
            let blob = bytes.get(range).ok_or_else(|| {
                BackupError::BadPack(format!("pack {old} is shorter than its entries say"))
            })?;
            // Never copy damaged bytes under a good name: stop, and leave the
            // pack for verify to report.
            if sha256_hex(blob) != sha {
                return Err(BackupError::BadPack(format!(
                    "pack {old}: the blob at offset {offset} does not match its hash; run backup verify --read-data"
                )));
            }
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&sha, &mut digest)
                .map_err(|_| BackupError::Internal("entry hash".into()))?;
            let new_offset = builder.add(digest, blob);
            in_builder.push((old.clone(), offset, new_offset));
            if builder.is_full() {
                written_bytes += write_pack(
                    repo,
                    std::mem::take(&mut builder),
                    &mut in_builder,
                    &mut records,
                    &mut written,
                )
                .await?;
            }
        }
        report.bytes_freed += size;
        report.packs_repacked += 1;
    }
    if !builder.is_empty() {
        written_bytes +=
            write_pack(repo, builder, &mut in_builder, &mut records, &mut written).await?;
    }
    report.bytes_freed = report.bytes_freed.saturating_sub(written_bytes);
    repo.store.sync().await?;
    crate::failpoints::crash_point(crate::failpoints::PRUNE_AFTER_REPACKED_PACKS);
    for (old, record) in &records {
        if written.contains(old) {
            continue;
        }
        let encoded = bytes::Bytes::from(record.encode(old, signer)?);
        repo.store
            .put_new_deferred(
                &ObjectName::backup_relocation(old),
                Box::pin(futures::stream::once(futures::future::ready(Ok(encoded)))),
            )
            .await?;
    }
    repo.store.sync().await?;
    crate::failpoints::crash_point(crate::failpoints::PRUNE_AFTER_RELOCATIONS);
    for old in records.keys() {
        // A pack rewritten into the same bytes has the same name: it stays.
        if written.contains(old) {
            continue;
        }
        repo.store.delete(&ObjectName::backup_pack(old)).await?;
        report.data_objects_deleted += 1;
    }
    Ok(())
}

/// Seals and writes a repacked pack; records where its blobs came from.
async fn write_pack(
    repo: &Repository,
    builder: PackBuilder,
    in_builder: &mut Vec<(String, u64, u64)>,
    records: &mut HashMap<String, Relocation>,
    written: &mut HashSet<String>,
) -> Result<u64, BackupError> {
    let sealed = builder.seal();
    written.insert(sealed.sha256.clone());
    let size = sealed.bytes.len() as u64;
    super::snapshot::put_content(
        repo.store.as_ref(),
        &ObjectName::backup_pack(&sealed.sha256),
        &sealed.sha256,
        sealed.bytes,
        false,
    )
    .await?;
    for (old, old_offset, new_offset) in in_builder.drain(..) {
        records
            .entry(old)
            .or_default()
            .moves
            .push((old_offset, sealed.sha256.clone(), new_offset));
    }
    Ok(size)
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

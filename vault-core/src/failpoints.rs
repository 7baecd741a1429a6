//! Crash points: named places in the write paths (upload, delete, rewrap, backup,
//! restore) where a test can make the process die as a power cut or `SIGKILL`
//! would, to check that what a crash leaves behind keeps every promise (nothing
//! acknowledged lost, nothing half-written visible, no change unaudited).
//!
//! They are built on the `fail` crate and exist only with the `failpoints`
//! feature (on by default in `vault-server` and `vault-cli`; a build with
//! `--no-default-features` has none). They do nothing unless the process was
//! started with `BILLVAULT_FAILPOINTS` set, in the `fail` crate's syntax:
//! `upload.after_body=return` crashes at the first upload that reaches it;
//! `rewrap.after_record=2*off->return` lets two pass and crashes at the third.
//! The only action that means anything here is `return` (crash); the crate's
//! `sleep(ms)` and `pause` also work, for tests that need a slow step.

/// The environment variable that arms crash points.
pub const ENV: &str = "BILLVAULT_FAILPOINTS";

/// Every crash point, for the tests that visit each one.
pub const ALL: &[&str] = &[
    UPLOAD_AFTER_BODY,
    UPLOAD_AFTER_KEY_RECORD,
    STORE_BEFORE_GROUP_SYNC,
    UPLOAD_AFTER_INTENT,
    UPLOAD_AFTER_GATE,
    UPLOAD_AFTER_FACTS,
    DELETE_AFTER_INTENT,
    DELETE_AFTER_TOMBSTONE,
    DELETE_AFTER_FACTS_REMOVED,
    DELETE_AFTER_OBJECTS_REMOVED,
    REWRAP_AFTER_RECORD,
    BACKUP_AFTER_DATA,
    BACKUP_AFTER_MANIFEST,
    RESTORE_AFTER_OBJECT,
    PRUNE_AFTER_REPACKED_PACKS,
    PRUNE_AFTER_RELOCATIONS,
];

/// An upload's body is written (not yet synced); nothing else is written.
pub const UPLOAD_AFTER_BODY: &str = "upload.after_body";
/// The fs store is about to sync a batch of deferred writes (the bodies and key
/// records of the uploads waiting at once; hit once per sync).
pub const STORE_BEFORE_GROUP_SYNC: &str = "store.before_group_sync";
/// Body and key record are durable (the batch's sync is done); the commit gates
/// have not run.
pub const UPLOAD_AFTER_KEY_RECORD: &str = "upload.after_key_record";
/// The audit intent is durable; the idempotency claim is not written.
pub const UPLOAD_AFTER_INTENT: &str = "upload.after_intent";
/// The audit intent and the idempotency claim are durable; the document is not
/// visible yet.
pub const UPLOAD_AFTER_GATE: &str = "upload.after_gate";
/// The document is visible; nothing is answered, indexed or audited as done.
pub const UPLOAD_AFTER_FACTS: &str = "upload.after_facts";
/// A delete's audit intent is durable; nothing is removed.
pub const DELETE_AFTER_INTENT: &str = "delete.after_intent";
/// The tombstone is durable; the document's objects are all there.
pub const DELETE_AFTER_TOMBSTONE: &str = "delete.after_tombstone";
/// The facts object is gone; key record and body remain.
pub const DELETE_AFTER_FACTS_REMOVED: &str = "delete.after_facts_removed";
/// Every object is gone; the index and the audit outcome are not updated.
pub const DELETE_AFTER_OBJECTS_REMOVED: &str = "delete.after_objects_removed";
/// A rewrap replaced one key record (hit once per record).
pub const REWRAP_AFTER_RECORD: &str = "rewrap.after_record";
/// A backup wrote one data object to the repository (hit once per object).
pub const BACKUP_AFTER_DATA: &str = "backup.after_data";
/// A backup's signed manifest is durable; the job is not marked done.
pub const BACKUP_AFTER_MANIFEST: &str = "backup.after_manifest";
/// A restore wrote one object (hit once per object).
pub const RESTORE_AFTER_OBJECT: &str = "restore.after_object";
/// A prune's repacked packs are durable; no relocation record is written.
pub const PRUNE_AFTER_REPACKED_PACKS: &str = "prune.after_repacked_packs";
/// A prune's relocation records are durable; the old packs are not deleted.
pub const PRUNE_AFTER_RELOCATIONS: &str = "prune.after_relocations";

/// Crashes the process here if the point `name` is armed (see the module docs).
/// `abort` ends the process at once: no destructor runs, no buffer is flushed,
/// no answer is sent, as in a `SIGKILL`.
#[inline]
pub fn crash_point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Arms the crash points named in [`ENV`], if it is set. Returns the armed
/// configuration for the caller to log, or an error naming a bad entry.
pub fn arm_from_env() -> Result<Option<String>, String> {
    let Ok(spec) = std::env::var(ENV) else {
        return Ok(None);
    };
    if spec.split(';').all(|entry| entry.trim().is_empty()) {
        return Ok(None);
    }
    arm(&spec).map(|()| Some(spec))
}

/// Whether `actions` (the `fail` crate's `[p%][n*]task[->...]`) uses only the
/// tasks that mean something here: `return` (crash), `off`, `sleep(ms)`,
/// `delay(ms)`, `pause`, `yield`. A `panic` would only fail one request, and
/// `return(x)` carries a value no crash point reads.
#[cfg(feature = "failpoints")]
fn only_known_tasks(actions: &str) -> bool {
    actions.split("->").all(|task| {
        let mut task = task.trim();
        if let Some((chance, rest)) = task.split_once('%') {
            if chance.parse::<f32>().is_err() {
                return false;
            }
            task = rest;
        }
        if let Some((count, rest)) = task.split_once('*') {
            if count.parse::<usize>().is_err() {
                return false;
            }
            task = rest;
        }
        matches!(task, "return" | "off" | "pause" | "yield")
            || ["sleep(", "delay("].iter().any(|p| {
                task.strip_prefix(p)
                    .and_then(|t| t.strip_suffix(')'))
                    .is_some_and(|ms| ms.parse::<u64>().is_ok())
            })
    })
}

/// Arms crash points from `name=actions;name=actions`.
fn arm(spec: &str) -> Result<(), String> {
    #[cfg(not(feature = "failpoints"))]
    {
        if spec.trim().is_empty() {
            return Ok(());
        }
        Err(format!(
            "{ENV} is set but this build has no crash points (built without the `failpoints` feature)"
        ))
    }
    #[cfg(feature = "failpoints")]
    {
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, actions)) = entry.split_once('=') else {
                return Err(format!("{ENV}: `{entry}` is not name=actions"));
            };
            let name = name.trim();
            if !ALL.contains(&name) {
                return Err(format!(
                    "{ENV}: `{name}` is not a crash point (known: {})",
                    ALL.join(", ")
                ));
            }
            if !only_known_tasks(actions) {
                return Err(format!(
                    "{ENV}: `{entry}`: use return (crash), off, sleep(ms), delay(ms), pause or yield, each with an optional n* or p% before it"
                ));
            }
            fail::cfg(name, actions.trim()).map_err(|e| format!("{ENV}: `{entry}`: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[test]
    fn unknown_points_and_bad_actions_are_refused() {
        assert!(arm("no.such.point=return").is_err());
        assert!(arm("upload.after_body").is_err());
        assert!(arm("upload.after_body=explode").is_err());
        assert!(arm("upload.after_body=panic").is_err());
        assert!(arm("upload.after_body=return(x)").is_err());
        assert!(arm("upload.after_body=2*off->return").is_ok());
        assert!(arm("upload.after_body=50%sleep(10)").is_ok());
        assert!(arm("upload.after_body=off").is_ok());
        assert!(arm("").is_ok());
    }
}

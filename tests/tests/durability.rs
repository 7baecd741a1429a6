//! Power-loss durability on the filesystem store, checked on the system calls
//! the real server makes: it runs under `strace`, takes one upload, and the
//! trace must show that everything the document depends on reached the disk
//! before the document became visible.
//!
//! Body and key record are written without fsync (temporary file, the
//! document's new directory, link) and made durable together by one `syncfs` of
//! the store's filesystem, which concurrent uploads share (group commit), after
//! both are linked and before anything that refers to them. The facts object,
//! which makes the document visible, has its temporary file fsynced before it is
//! linked and its directory fsynced after, and is linked only after that
//! `syncfs` and after the audit segment holding the upload's intent is durable.
//! A power cut at any point of this sequence leaves an invisible leftover (which
//! may be torn: nothing refers to it, and the collector removes it) or a whole,
//! audited document.
//!
//! (A power-cut simulator, LazyFS or a device-mapper log-writes target, is not
//! available on these machines: no device mapper in the container.)

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::collections::HashMap;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;
use vault_e2e::TestApp;

/// One completed system call from the trace.
#[derive(Debug)]
struct Call {
    name: String,
    args: String,
    ok: bool,
}

/// The calls of an `strace -f -y` log, in the order they were made (a call
/// interrupted by another thread's is joined with its `resumed` line and kept
/// at its start). Start order, not completion order: strace may report one
/// thread's syscall exit after a later call of another thread, while a call
/// made after another one returned always starts after it.
fn calls(log: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, (usize, String)> = HashMap::new();
    let mut out: Vec<Option<Call>> = Vec::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let (slot, full) = if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, (out.len(), start.to_owned()));
            out.push(None);
            continue;
        } else if rest.starts_with("<... ") {
            let (Some(at), Some((slot, start))) = (rest.find("resumed>"), pending.remove(pid))
            else {
                continue;
            };
            (slot, format!("{start}{}", &rest[at + "resumed>".len()..]))
        } else {
            out.push(None);
            (out.len() - 1, rest.to_owned())
        };
        // strace pads short lines (a resumed call's) to a column before " = ".
        let (Some(open), Some(equals)) = (full.find('('), full.rfind(" = ")) else {
            continue;
        };
        let Some(call) = full[..equals].trim_end().strip_suffix(')') else {
            continue;
        };
        if call.len() < open {
            continue;
        }
        out[slot] = Some(Call {
            name: full[..open].to_owned(),
            args: call[open + 1..].to_owned(),
            ok: !full[equals + 3..].trim_start().starts_with('-'),
        });
    }
    out.into_iter().flatten().collect()
}

/// The quoted strings of a call's arguments (paths).
fn quoted(args: &str) -> Vec<&str> {
    args.split('"').skip(1).step_by(2).collect()
}

struct Trace(Vec<Call>);

impl Trace {
    /// Index of the successful link of a file to a path ending in `target`,
    /// and the temporary path it was linked from.
    fn link_to(&self, target: &str) -> (usize, String) {
        let (i, call) = self
            .0
            .iter()
            .enumerate()
            .find(|(_, c)| {
                c.ok && c.name.starts_with("link")
                    && quoted(&c.args).last().is_some_and(|p| p.ends_with(target))
            })
            .unwrap_or_else(|| panic!("no link to …{target} in the trace"));
        (i, quoted(&call.args)[0].to_owned())
    }

    /// Index of the first successful fsync of a file descriptor whose path ends
    /// in `path`, between `after` and `before`.
    fn fsync_of(&self, path: &str, after: usize, before: usize) -> Option<usize> {
        let fd_path = format!("{path}>");
        (after + 1..before).find(|&i| {
            let c = &self.0[i];
            c.ok && (c.name == "fsync" || c.name == "fdatasync") && c.args.ends_with(&fd_path)
        })
    }

    /// Index of the successful creation of directory `dir`.
    fn mkdir(&self, dir: &str) -> usize {
        self.0
            .iter()
            .position(|c| {
                c.ok && c.name.starts_with("mkdir")
                    && quoted(&c.args).iter().any(|p| p.ends_with(dir))
            })
            .unwrap_or_else(|| panic!("no mkdir of …{dir} in the trace"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_durable_on_disk_before_it_is_visible() {
    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "this test needs strace: apt-get install strace (.ci/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let log_arg = log.display().to_string();
    let mut app = TestApp::builder()
        .wrapped_in(&[
            "strace",
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=openat,fsync,fdatasync,syncfs,link,linkat,mkdir,mkdirat",
            "-o",
            &log_arg,
        ])
        .start()
        .await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let r = app
        .upload(
            &key,
            "scan",
            "application/pdf",
            b"%PDF-1.7 durable".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.kill();
    let trace = Trace(calls(&std::fs::read_to_string(&log).unwrap()));
    assert!(trace.0.len() > 20, "the trace is too short: {:?}", trace.0);

    let doc_dir = format!("/tenants/acme/docs/{id}");
    let made = trace.mkdir(&doc_dir);
    let (body, _) = trace.link_to(&format!("{doc_dir}/body"));
    let (key_record, _) = trace.link_to(&format!("{doc_dir}/key"));
    let (facts, facts_tmp) = trace.link_to(&format!("{doc_dir}/meta"));
    assert!(
        made < body && body < key_record && key_record < facts,
        "objects out of order"
    );
    // Body, key record and the new directory: durable by one syncfs of the
    // store after both are linked, before the facts.
    let synced = (key_record + 1..facts)
        .find(|&i| {
            let c = &trace.0[i];
            c.ok && c.name == "syncfs" && c.args.ends_with("/objects>")
        })
        .unwrap_or_else(|| {
            panic!(
                "the store was not synced between the key record's link and the facts' link: {:?}",
                &trace.0[key_record..facts]
            )
        });
    // The facts: bytes durable before the name, the name after.
    assert!(
        trace.fsync_of(&facts_tmp, 0, facts).is_some(),
        "the facts' file {facts_tmp} was not fsynced before it was linked"
    );
    assert!(
        trace.fsync_of(&doc_dir, facts, trace.0.len()).is_some(),
        "docs/{id}/ was not fsynced after the facts were linked"
    );
    // The upload's audit intent is durable before the document is visible: a
    // segment of the tenant's log was linked, and its directory fsynced, after
    // the sync of body and key record and before the facts.
    let segment = (synced..facts)
        .find(|&i| {
            let c = &trace.0[i];
            c.ok && c.name.starts_with("link")
                && quoted(&c.args)
                    .last()
                    .is_some_and(|p| p.contains("/tenants/acme/audit/segments/"))
        })
        .unwrap_or_else(|| panic!("no audit segment written between the key record and the facts"));
    assert!(
        trace
            .fsync_of("/tenants/acme/audit/segments", segment, facts)
            .is_some(),
        "the audit segment was not durable before the document became visible"
    );
}

#[test]
fn the_trace_parser_joins_interrupted_calls_at_their_start() {
    let log = "\
10 openat(AT_FDCWD</>, \"/v/objects/.tmp/a\", O_WRONLY|O_CREAT, 0600) = 7</v/objects/.tmp/a>
11 fsync(7</v/objects/.tmp/a> <unfinished ...>
10 mkdir(\"/v/objects/d\", 0777) = 0
11 <... fsync resumed>)              = 0
10 linkat(AT_FDCWD</>, \"/v/objects/.tmp/a\", AT_FDCWD</>, \"/v/objects/d/body\", 0) = -1 EEXIST (File exists)
";
    let parsed = calls(log);
    let names: Vec<&str> = parsed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["openat", "fsync", "mkdir", "linkat"]);
    assert_eq!(parsed[1].args, "7</v/objects/.tmp/a>");
    assert!(parsed[1].ok);
    assert!(!parsed[3].ok);
    assert_eq!(
        quoted(&parsed[3].args),
        ["/v/objects/.tmp/a", "/v/objects/d/body"]
    );
}

//! The operator workflow of the README, run as written: the shell block between
//! the `operator-workflow` markers of README.md, with bash, against a running
//! server (create a tenant, issue a key, upload with curl, search, rotate,
//! rewrap, back up, verify, drill, restore and start a vault on the restore,
//! offboard).

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::process::Command;

use reqwest::Method;
use serde_json::Value;
use vault_e2e::{cli_binary, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_operator_workflow_runs_as_written() {
    vault_e2e::require_tools(
        &["bash", "curl", "python3"],
        "the README's operator workflow",
    );
    let work = tempfile::tempdir().unwrap();
    let backup_dir = work.path().join("backups");
    let app = TestApp::builder()
        .config(&format!(
            "[backup]\ntarget = {:?}\n",
            backup_dir.display().to_string()
        ))
        .start()
        .await;
    // The repository's examples/, as beside a newcomer's shell.
    std::fs::create_dir(work.path().join("examples")).unwrap();
    std::fs::copy(
        vault_e2e::workspace_root().join("examples/scan.pdf"),
        work.path().join("examples/scan.pdf"),
    )
    .unwrap();
    let script = work.path().join("workflow.sh");
    std::fs::write(&script, vault_e2e::readme_block("operator-workflow")).unwrap();
    let cli_dir = cli_binary().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        cli_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Strict here, so a failing step fails the test; the README's block has
    // no `set -e`, which would close a reader's terminal at a mistyped step.
    let out = Command::new("bash")
        .args(["-e", "-u", "-o", "pipefail"])
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path)
        .env("BILLVAULT_ADDR", &app.url)
        .env("BILLVAULT_TOKEN_FILE", app.data_dir.join("operator-token"))
        .env("BILLVAULT_DATA_DIR", &app.data_dir)
        .env("BACKUP_DIR", &backup_dir)
        .env("RESTORED", format!("127.0.0.1:{}", vault_e2e::free_port()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README workflow failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("drill PASSED"), "{stdout}");
    // What it did is in the system audit log.
    let events: Value = app
        .operator(Method::GET, "/v1/audit/events?tenant=system&limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["backup.run", "drill.report", "tenant.offboard"] {
        assert!(actions.contains(&action), "{action} missing: {actions:?}");
    }
}

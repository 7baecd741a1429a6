//! The README's first steps, run as written: the shell block between the
//! `first-steps` markers of README.md, with bash, from a directory holding the
//! project's `examples/`, against a fresh server (tenant, API keys, uploads of
//! the example files with curl, searches, downloads, a delete, the audit log).
//! What the README says those commands answer is checked here too.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::process::Command;

use vault_e2e::{cli_binary, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_first_steps_run_as_written() {
    vault_e2e::require_tools(
        &["bash", "curl", "python3", "cmp"],
        "the README's first steps",
    );
    let app = TestApp::builder().start().await;
    // A newcomer's directory: the repository's examples/ beside the script.
    let work = tempfile::tempdir().unwrap();
    let examples = work.path().join("examples");
    std::fs::create_dir(&examples).unwrap();
    for name in ["remittance-835.x12", "scan.pdf"] {
        std::fs::copy(
            vault_e2e::workspace_root().join("examples").join(name),
            examples.join(name),
        )
        .unwrap();
    }
    let script = work.path().join("first-steps.sh");
    std::fs::write(&script, vault_e2e::readme_block("first-steps")).unwrap();
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
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README's first steps failed ({:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // What the README's `# ->` lines show (cargo test -- --nocapture).
    println!("{stdout}");
    // Both searches find their document, as the README says.
    assert_eq!(stdout.matches("\"total\":1,").count(), 2, "{stdout}");
    // The delete is answered 204, and the auditor's proof is a proof.
    assert!(stdout.lines().any(|l| l == "204"), "{stdout}");
    assert!(stdout.contains("\"inclusion\":"), "{stdout}");
}

//! The operator CLI's own behaviour: human and JSON output, the token from the
//! environment, shell completions, usage errors, and the commands no other suite
//! drives (`status`, `tenant list|show`, `audit export`), plus KMS offboarding.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::process::{Command, Stdio};

use serde_json::Value;
use vault_e2e::{aws_config, cli_binary, Backend, TestApp};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_and_json_output_token_from_env_and_completions() {
    let app = TestApp::builder().start().await;
    let out = app.cli(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("alive"), "{}", text(&out));
    let out = app.cli(&["tenant", "create", "acme"]);
    assert!(text(&out).contains("created tenant acme"), "{}", text(&out));
    let out = app.cli(&["tenant", "list"]);
    assert!(
        text(&out).contains("acme") && text(&out).contains("provider=local"),
        "{}",
        text(&out)
    );
    let out = app.cli(&["--json", "tenant", "show", "acme"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], "acme");
    // `--output json` and BILLVAULT_OUTPUT=json are `--json` by other names.
    let out = app.cli(&["--output", "json", "tenant", "show", "acme"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], "acme");
    let out = app.cli_with_env(&[("BILLVAULT_OUTPUT", "json")], &["tenant", "show", "acme"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], "acme");
    let out = app.cli(&["--output", "yaml", "tenant", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("json"), "{}", text(&out));

    // The token from BILLVAULT_TOKEN (never an argument), when no token file is named.
    let out = Command::new(cli_binary())
        .args(["--server", &app.url, "--json", "tenant", "list"])
        .env("BILLVAULT_TOKEN", &app.operator_token)
        .env_remove("BILLVAULT_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(cli_binary())
        .args(["--server", &app.url, "tenant", "list"])
        .env("BILLVAULT_TOKEN", "vault_op_wrong_token")
        .env_remove("BILLVAULT_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "refused by the server: {}",
        text(&out)
    );

    // HashiCorp Vault's variables are never read: a shell holding a Vault
    // session does not hand its token to this CLI (which, run where no
    // ./vault-data/operator-token is, then has no token at all).
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(cli_binary())
        .args(["--server", &app.url, "tenant", "list"])
        .env("VAULT_TOKEN", &app.operator_token)
        .env_remove("BILLVAULT_TOKEN")
        .env_remove("BILLVAULT_TOKEN_FILE")
        .current_dir(elsewhere.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("operator token file"), "{}", text(&out));

    // Completions for bash name the subcommands.
    let out = app.cli(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for word in ["vault-cli", "backup", "drill", "rewrap", "offboard"] {
        assert!(script.contains(word), "completion lacks {word}");
    }

    // A reader that went away (`| head -1`) ends it quietly, never a panic:
    // the pipe's read end is closed before the CLI starts.
    for args in [
        vec!["completions", "bash"],
        vec!["--server", app.url.as_str(), "--json", "tenant", "list"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(cli_binary())
            .args(&args)
            .env("BILLVAULT_TOKEN", &app.operator_token)
            .env_remove("BILLVAULT_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains("panicked"), "{args:?}: {}", text(&out));
    }

    // Usage errors: exit 2 with a message, never a panic.
    let out = app.cli(&["backup", "verify", "--store", "/nonexistent/repo"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not a directory"), "{}", text(&out));
    let out = app.cli(&[
        "--json",
        "backup",
        "verify",
        "--store",
        "/tmp",
        "--read-data-subset",
        "5/3",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // A role or key provider the server does not know is a usage error that
    // lists the choices, before any request is sent.
    for (args, choices) in [
        (
            vec!["apikey", "issue", "acme", "--role", "admin"],
            "uploader, reader, auditor, tenant-admin",
        ),
        (
            vec!["tenant", "create", "beta", "--key-provider", "vault"],
            "local, aws-kms",
        ),
    ] {
        let out = app.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(choices), "{args:?}: {}", text(&out));
    }
    let out = app.cli(&["--json", "tenant", "show", "beta"]);
    assert_eq!(out.status.code(), Some(4), "no tenant beta: {}", text(&out));

    // audit export writes JSON lines.
    let out = app.cli(&["audit", "export", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|e| e["action"] == "tenant.create"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_a_kms_tenant_schedules_its_keys_for_deletion() {
    let app = TestApp::builder()
        .backend(Backend::S3)
        .aws_kms()
        .start()
        .await;
    app.create_tenant_with("kmsco", "aws-kms").await;
    let rotated = app.cli(&["--json", "key", "rotate", "kmsco"]);
    assert!(rotated.status.success(), "{}", text(&rotated));
    let out = app.cli(&["--json", "tenant", "offboard", "kmsco", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = report["kms_keys_scheduled_for_deletion"]
        .as_array()
        .unwrap();
    assert_eq!(keys.len(), 2, "the original and the rotated key: {report}");
    let kms = aws_sdk_kms::Client::new(&aws_config().await);
    for key in keys {
        let described = kms
            .describe_key()
            .key_id(key.as_str().unwrap())
            .send()
            .await
            .unwrap();
        let state = described
            .key_metadata()
            .unwrap()
            .key_state()
            .unwrap()
            .as_str()
            .to_owned();
        assert_eq!(state, "PendingDeletion");
    }
}

#[test]
fn a_silent_server_times_out_with_its_cause() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let started = std::time::Instant::now();
    let out = Command::new(cli_binary())
        .args(["--server", &url, "--read-timeout", "1", "status"])
        .env_remove("BILLVAULT_ADDR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("timed out"), "{}", text(&out));
    drop(held.join());
}

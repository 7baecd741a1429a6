//! The API held to its OpenAPI document by schemathesis: requests generated
//! from the served document (valid and invalid), sent to the real server with
//! a tenant API key and then with the operator credential, every answer checked
//! against the document (status, content type, headers, body schema, no 5xx,
//! invalid input refused, valid input accepted; `tests/schemathesis.toml` says
//! where the document cannot describe validity). Bounded (a fixed seed and a few
//! examples per operation) so that it runs on every commit; any finding fails
//! the test with schemathesis's report.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::process::Command;

use vault_e2e::TestApp;

const ALL_ROLES: &[&str] = &["uploader", "reader", "auditor", "tenant-admin"];

/// Runs schemathesis against `app` with `credential` on the operations whose
/// path `excluded` (a regular expression) does not match, and fails on any
/// finding.
fn schemathesis(app: &TestApp, credential: &str, who: &str, excluded: &str) {
    let tool = vault_e2e::python_tool("st");
    let config = vault_e2e::workspace_root().join("tests/schemathesis.toml");
    // schemathesis keeps a cache in its working directory: not in the tree.
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new(&tool);
    command
        .current_dir(scratch.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.at("/v1/openapi.json"))
        .args(["--checks", "all"])
        .args(["--seed", "20261203"])
        .args(["--max-examples", "10"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--generation-database", "none"])
        .args(["--no-color", "--output-truncate", "false"])
        .args(["--header", &format!("Authorization: Bearer {credential}")]);
    command.args(["--exclude-path-regex", excluded]);
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install it with `pip install schemathesis` or run the tests with infra/test.sh, which installs it")
    });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems with {who}:\n{report}"
    );
    // A run that tested nothing (a document it could not read, every operation
    // filtered out) must not pass.
    assert!(
        report.contains("passed"),
        "schemathesis ran no operation with {who}:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_document_for_tenants_and_operators() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", ALL_ROLES).await;
    // Each credential on the operations it may call (that the others refuse it
    // is held by the unit test of the endpoint table); `/metrics` takes its own
    // token and answers text.
    schemathesis(&app, &key, "a tenant API key", "^/(v1/admin/|metrics)");
    // Not the operator's own rotation: the credential it ends would refuse
    // every request after it.
    schemathesis(
        &app,
        &app.operator_token,
        "the operator credential",
        "^/(v1/documents|v1/search|metrics|v1/admin/operator/rotate)",
    );
}

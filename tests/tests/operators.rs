//! Named operators over the real server and CLI: each role is let through
//! exactly its duties, audit events name the operator who acted, a disabled or
//! removed operator is refused, and the last admin cannot be locked out.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::process::{Command, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vault_e2e::{cli_binary, TestApp};

/// Runs `vault-cli --json` as the operator whose token is in `token_file`.
fn cli_as(app: &TestApp, token_file: &std::path::Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(cli_binary())
        .arg("--server")
        .arg(&app.url)
        .arg("--token-file")
        .arg(token_file)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn call(app: &TestApp, token: &str, method: Method, path: &str) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method.clone(), app.at(path))
        .bearer_auth(token);
    if method != Method::GET && method != Method::DELETE {
        request = request.json(&json!({}));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operator_does_its_duties_only_and_is_named_in_the_audit_log() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let work = tempfile::tempdir().unwrap();
    let bootstrap = app.data_dir.join("operator-token");

    // The bootstrap operator adds one operator per role, through the CLI.
    let mut tokens = std::collections::BTreeMap::new();
    let mut ids = std::collections::BTreeMap::new();
    for (name, role) in [
        ("alice", "admin"),
        ("kim", "key-officer"),
        ("bo", "backup-operator"),
        ("aud", "auditor"),
    ] {
        let (code, added, err) =
            cli_as(&app, &bootstrap, &["operator", "add", name, "--role", role]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(added["roles"], json!([role]));
        let token = added["secret"].as_str().unwrap().to_owned();
        let file = work.path().join(name);
        std::fs::write(&file, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        tokens.insert(name, token);
        ids.insert(name, added["id"].as_str().unwrap().to_owned());
    }
    let (code, listed, _) = cli_as(&app, &bootstrap, &["operator", "list"]);
    assert_eq!(code, 0);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bootstrap", "alice", "kim", "bo", "aud"]);
    assert!(!listed.to_string().contains(&tokens["alice"]));

    // What each may do: (operator, method, path, allowed).
    let table = [
        ("alice", Method::GET, "/v1/admin/tenants", true),
        ("kim", Method::GET, "/v1/admin/tenants", false),
        ("bo", Method::GET, "/v1/admin/tenants", false),
        ("aud", Method::GET, "/v1/admin/tenants", false),
        (
            "alice",
            Method::POST,
            "/v1/admin/tenants/acme/keys/rotate",
            false,
        ),
        (
            "kim",
            Method::POST,
            "/v1/admin/tenants/acme/keys/rotate",
            true,
        ),
        (
            "bo",
            Method::POST,
            "/v1/admin/tenants/acme/keys/rotate",
            false,
        ),
        ("aud", Method::GET, "/v1/audit/events?tenant=acme", true),
        ("alice", Method::GET, "/v1/audit/events?tenant=acme", false),
        ("kim", Method::GET, "/v1/audit/events?tenant=acme", false),
        ("bo", Method::GET, "/v1/admin/backups/public-key", true),
        ("kim", Method::GET, "/v1/admin/backups/public-key", false),
        ("alice", Method::GET, "/v1/admin/operators", true),
        ("kim", Method::GET, "/v1/admin/operators", false),
        ("aud", Method::GET, "/v1/admin/jobs", true),
    ];
    for (who, method, path, allowed) in table {
        let (status, body) = call(&app, &tokens[who], method.clone(), path).await;
        if allowed {
            assert!(
                status.is_success(),
                "{who} {method} {path}: {status} {body}"
            );
        } else {
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{who} {method} {path}: {body}"
            );
            assert!(body["message"].as_str().unwrap().contains("role"), "{body}");
        }
    }

    // The admin creates a tenant: its log names her credential.
    let (status, _) = {
        let response = reqwest::Client::new()
            .post(app.at("/v1/admin/tenants"))
            .bearer_auth(&tokens["alice"])
            .json(&json!({"id": "globex", "retention_days": 0}))
            .send()
            .await
            .unwrap();
        (response.status(), ())
    };
    assert_eq!(status, StatusCode::CREATED);
    let (_, events) = call(
        &app,
        &tokens["aud"],
        Method::GET,
        "/v1/audit/events?tenant=globex",
    )
    .await;
    let created = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "tenant.create")
        .unwrap();
    assert_eq!(created["actor"], format!("operator:{}", ids["alice"]));

    // Disabled: refused until enabled again.
    let alice_file = work.path().join("alice");
    let (code, _, err) = cli_as(&app, &alice_file, &["operator", "disable", &ids["kim"]]);
    assert_eq!(code, 0, "{err}");
    let (status, body) = call(&app, &tokens["kim"], Method::GET, "/v1/admin/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "credential_disabled");
    let (code, _, _) = cli_as(&app, &alice_file, &["operator", "enable", &ids["kim"]]);
    assert_eq!(code, 0);
    let (status, _) = call(&app, &tokens["kim"], Method::GET, "/v1/admin/jobs").await;
    assert_eq!(status, StatusCode::OK);

    // The last admin stays: with the bootstrap operator disabled, alice is it.
    let bootstrap_id = listed[0]["id"].as_str().unwrap().to_owned();
    let (code, _, _) = cli_as(&app, &alice_file, &["operator", "disable", &bootstrap_id]);
    assert_eq!(code, 0);
    let (code, _, err) = cli_as(
        &app,
        &alice_file,
        &["operator", "remove", &ids["alice"], "--yes"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("last_admin"), "{err}");
    let (code, _, _) = cli_as(&app, &alice_file, &["operator", "enable", &bootstrap_id]);
    assert_eq!(code, 0);

    // Removed: revoked for good, its name free again; removal needs --yes.
    let (code, _, err) = cli_as(&app, &alice_file, &["operator", "remove", &ids["aud"]]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = cli_as(
        &app,
        &alice_file,
        &["operator", "remove", &ids["aud"], "--yes"],
    );
    assert_eq!(code, 0);
    let (status, body) = call(&app, &tokens["aud"], Method::GET, "/v1/admin/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "credential_revoked");
    let (code, _, err) = cli_as(&app, &alice_file, &["operator", "enable", &ids["aud"]]);
    assert_ne!(code, 0);
    assert!(err.contains("operator_removed"), "{err}");
    let (code, _, err) = cli_as(
        &app,
        &alice_file,
        &["operator", "add", "aud", "--role", "auditor"],
    );
    assert_eq!(code, 0, "{err}");

    // A name taken, a bad name, a bad role: clear refusals.
    let (code, _, err) = cli_as(
        &app,
        &alice_file,
        &["operator", "add", "kim", "--role", "auditor"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("operator_name_taken"), "{err}");
    let (code, _, err) = cli_as(
        &app,
        &alice_file,
        &["operator", "add", "Bad Name", "--role", "auditor"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("invalid_operator_name"), "{err}");
    let (code, _, _) = cli_as(
        &app,
        &alice_file,
        &["operator", "add", "zed", "--role", "root"],
    );
    assert_eq!(code, 2);

    // An id is checked before it is put in a path: `../tenants/x` would
    // reach another endpoint.
    let (code, _, err) = cli_as(
        &app,
        &alice_file,
        &["operator", "disable", "../tenants/globex"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("16 lowercase hex digits"), "{err}");
    let (status, tenant) = call(
        &app,
        &tokens["alice"],
        Method::GET,
        "/v1/admin/tenants/globex",
    )
    .await;
    assert_eq!(
        (status, tenant["status"].as_str()),
        (StatusCode::OK, Some("active"))
    );

    // HEAD of an operator GET is no endpoint: 405, not a server error.
    let (status, _) = call(&app, &tokens["alice"], Method::HEAD, "/v1/admin/operators").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // kim rotates; disabling by the id from before the rotation disables the
    // credential kim holds now.
    let kim_file = work.path().join("kim");
    let (code, _, err) = cli_as(&app, &kim_file, &["operator", "rotate"]);
    assert_eq!(code, 0, "{err}");
    let kim_now = std::fs::read_to_string(&kim_file).unwrap();
    let (code, _, err) = cli_as(&app, &alice_file, &["operator", "disable", &ids["kim"]]);
    assert_eq!(code, 0, "{err}");
    let (status, body) = call(&app, kim_now.trim(), Method::GET, "/v1/admin/jobs").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("credential_disabled"))
    );
}

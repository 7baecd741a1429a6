//! Operators' second factor over the real server and CLI: enrolment and its
//! confirmation, step-up on sensitive operations (a code required, wrong,
//! reused, skewed; the step-up window), lock-out after wrong codes, the audit
//! trail of each, an admin's reset, and the `sensitive` policy refusing
//! operators who have not enrolled.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{json, Value};
use totp_rs::{Algorithm, Secret, TOTP};
use vault_e2e::{cli_binary, TestApp};

/// The operator's authenticator, from the secret the enrolment showed.
fn authenticator(secret_base32: &str) -> TOTP {
    let secret = Secret::Encoded(secret_base32.to_owned())
        .to_bytes()
        .unwrap();
    TOTP::new(Algorithm::SHA1, 6, 1, 30, secret, None, "test".into()).unwrap()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code of the time step `offset` steps from now's.
fn code(totp: &TOTP, offset: i64) -> String {
    let step = (now_secs() / 30) as i64 + offset;
    totp.generate(step as u64 * 30)
}

/// Waits until at least 8 s remain in the current 30 s step, so the codes of
/// the step before, this one and the next stay valid through a few requests.
async fn early_in_a_step() {
    while now_secs() % 30 > 22 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn send(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    mfa: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, app.at(path))
        .bearer_auth(token);
    if let Some(code) = mfa {
        request = request.header("X-Vault-MFA", code);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn add_operator(app: &TestApp, name: &str, roles: &[&str]) -> (String, String) {
    let bootstrap = std::fs::read_to_string(app.data_dir.join("operator-token")).unwrap();
    let (status, added) = send(
        app,
        bootstrap.trim(),
        reqwest::Method::POST,
        "/v1/admin/operators",
        None,
        Some(json!({"name": name, "roles": roles})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    (
        added["id"].as_str().unwrap().to_owned(),
        added["secret"].as_str().unwrap().to_owned(),
    )
}

fn issue_key_body() -> Option<Value> {
    Some(json!({"roles": ["reader"]}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_operations_need_a_fresh_code_once_enrolled() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let (alice_id, alice) = add_operator(&app, "alice", &["admin", "auditor"]).await;
    let issue = |mfa: Option<String>| {
        let app = &app;
        let alice = alice.clone();
        async move {
            send(
                app,
                &alice,
                reqwest::Method::POST,
                "/v1/admin/tenants/acme/api-keys",
                mfa.as_deref(),
                issue_key_body(),
            )
            .await
        }
    };

    // Not enrolled, default policy: not asked.
    assert_eq!(issue(None).await.0, StatusCode::CREATED);

    // Enrol: the secret is shown once; a wrong first code is refused.
    let (status, enrollment) = send(
        &app,
        &alice,
        reqwest::Method::POST,
        "/v1/admin/operator/mfa",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{enrollment}");
    let uri = enrollment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/billvault:alice?"), "{uri}");
    let totp = authenticator(enrollment["secret"].as_str().unwrap());
    early_in_a_step().await;
    let wrong = if code(&totp, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (status, body) = send(
        &app,
        &alice,
        reqwest::Method::POST,
        "/v1/admin/operator/mfa/confirm",
        None,
        Some(json!({"code": wrong})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("mfa_code_invalid"))
    );
    let (status, body) = send(
        &app,
        &alice,
        reqwest::Method::POST,
        "/v1/admin/operator/mfa/confirm",
        None,
        Some(json!({"code": "12345"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_mfa_code"))
    );
    // The previous step's code (30 s of skew) confirms.
    let (status, body) = send(
        &app,
        &alice,
        reqwest::Method::POST,
        "/v1/admin/operator/mfa/confirm",
        None,
        Some(json!({"code": code(&totp, -1)})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Enrolled: enrolling again needs an admin's reset first.
    let (status, body) = send(
        &app,
        &alice,
        reqwest::Method::POST,
        "/v1/admin/operator/mfa",
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("mfa_already_enrolled"))
    );

    // A sensitive call: no code, a wrong one, the confirmed (older) one, two
    // steps ahead: refused. This step's: accepted.
    let (status, body) = issue(None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("mfa_required")),
        "{body}"
    );
    let (status, body) = issue(Some(wrong.into())).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("mfa_code_invalid"))
    );
    let (status, body) = issue(Some(code(&totp, -1))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("mfa_code_reused"))
    );
    let (status, body) = issue(Some(code(&totp, 2))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("mfa_code_invalid"))
    );
    let (status, body) = issue(Some(code(&totp, 0))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same code again is a replay, window or not.
    let (status, body) = issue(Some(code(&totp, 0))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("mfa_code_reused"))
    );
    // Without a code, the step-up window of this credential lets it through.
    assert_eq!(issue(None).await.0, StatusCode::CREATED);
    // Given twice, the header is ambiguous.
    let response = reqwest::Client::new()
        .post(app.at("/v1/admin/tenants/acme/api-keys"))
        .bearer_auth(&alice)
        .header("X-Vault-MFA", "123456")
        .header("X-Vault-MFA", "654321")
        .json(&json!({"roles": ["reader"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // What is not sensitive asks for nothing.
    let (status, _) = send(
        &app,
        &alice,
        reqwest::Method::GET,
        "/v1/admin/tenants",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Wrong codes in a row lock the second factor, even against a right one.
    let mut answers = Vec::new();
    for _ in 0..5 {
        let (status, body) = issue(Some(wrong.into())).await;
        answers.push((status, body["code"].as_str().unwrap_or_default().to_owned()));
    }
    // One refusal (the reused code) was counted already: the fourth locks.
    assert_eq!(
        answers[3],
        (StatusCode::FORBIDDEN, "mfa_locked".to_owned()),
        "{answers:?}"
    );
    let (status, body) = issue(Some(code(&totp, 1))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("mfa_locked"))
    );

    // The audit logs tell each step-up apart, never a code: the tenant's
    // holds what was done to it, the system log the refusals (the step-up is
    // checked before the tenant in the path is read).
    let mut events = Vec::new();
    for log in [
        "/v1/audit/events?tenant=acme&limit=1000",
        "/v1/audit/events?limit=1000",
    ] {
        let (status, page) = send(&app, &alice, reqwest::Method::GET, log, None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(page["events"].as_array().unwrap().iter().cloned());
    }
    let issues: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e["action"] == "apikey.issue" && e["status"] != 102)
        .map(|e| {
            (
                e["status"].as_u64().unwrap(),
                e["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [
        "mfa=not-enrolled",
        "mfa=mfa_required",
        "mfa=mfa_code_invalid",
        "mfa=mfa_code_reused",
        "mfa=code",
        "mfa=window",
        "mfa=mfa_locked",
    ] {
        assert!(
            issues.iter().any(|(_, d)| d.contains(expected)),
            "{expected} not in {issues:?}"
        );
    }
    let all_events = Value::Array(events).to_string();
    assert!(!all_events.contains(&code(&totp, 0)) && !all_events.contains(&code(&totp, 1)));

    // An admin resets the locked factor (the bootstrap operator has none:
    // not asked); alice is then unenrolled and not asked.
    let bootstrap = std::fs::read_to_string(app.data_dir.join("operator-token")).unwrap();
    let (status, reset) = send(
        &app,
        bootstrap.trim(),
        reqwest::Method::DELETE,
        &format!("/v1/admin/operators/{alice_id}/mfa"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    assert_eq!(reset["mfa_enrolled"], false);
    assert_eq!(issue(None).await.0, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sensitive_policy_refuses_operators_without_mfa_and_the_cli_asks_for_a_code() {
    let app = TestApp::builder()
        .config("[operators]\nmfa = \"sensitive\"\nmfa_step_up_secs = 0\n")
        .start()
        .await;
    app.create_tenant("acme").await;
    // Even the bootstrap operator: adding an operator is sensitive.
    let bootstrap = std::fs::read_to_string(app.data_dir.join("operator-token")).unwrap();
    let bo = bootstrap.trim().to_owned();
    let (status, body) = send(
        &app,
        &bo,
        reqwest::Method::POST,
        "/v1/admin/operators",
        None,
        Some(json!({"name": "bo", "roles": ["admin"]})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("mfa_enrollment_required")),
        "{body}"
    );

    // Enrolled through the CLI (not a terminal: confirmed in a second step).
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("bo");
    std::fs::write(&token_file, format!("{bo}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let cli = |args: &[&str], mfa: Option<&str>| {
        let mut command = Command::new(cli_binary());
        command
            .arg("--server")
            .arg(&app.url)
            .arg("--token-file")
            .arg(&token_file)
            .args(args)
            .env_remove("BILLVAULT_MFA_CODE")
            .stdin(Stdio::null());
        if let Some(code) = mfa {
            command.env("BILLVAULT_MFA_CODE", code);
        }
        let out = command.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, enrolled, err) = cli(&["--json", "operator", "mfa", "enroll"], None);
    assert_eq!(status, 0, "{err}");
    let enrolled: Value = serde_json::from_str(&enrolled).unwrap();
    let totp = authenticator(enrolled["secret"].as_str().unwrap());
    let (status, _, _) = cli(&["operator", "mfa", "enroll"], None);
    assert_eq!(status, 0, "a pending enrolment may be restarted");
    let (status, shown, _) = cli(&["operator", "mfa", "enroll"], None);
    assert_eq!(status, 0);
    assert!(
        shown.contains("otpauth://totp/billvault:bootstrap?") && shown.contains('▀'),
        "{shown}"
    );
    let secret = shown
        .lines()
        .find_map(|l| l.strip_prefix("secret (to type in by hand): "))
        .unwrap();
    let totp_now = authenticator(secret);
    assert_ne!(
        totp.generate(0),
        totp_now.generate(0),
        "restarting makes a new secret"
    );
    early_in_a_step().await;
    let (status, _, err) = cli(&["operator", "mfa", "confirm", &code(&totp_now, -1)], None);
    assert_eq!(status, 0, "{err}");

    // A sensitive command without a code, and no terminal to ask at.
    let (status, _, err) = cli(&["apikey", "issue", "acme", "--role", "reader"], None);
    assert_ne!(status, 0);
    assert!(
        err.contains("--mfa-code") && err.contains("BILLVAULT_MFA_CODE"),
        "{err}"
    );
    let (status, out, err) = cli(
        &["apikey", "issue", "acme", "--role", "reader"],
        Some(&code(&totp_now, 0)),
    );
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("vlt_ak_"), "{out}");
    // No window (mfa_step_up_secs = 0): the next sensitive call needs its own code.
    let (status, _, err) = cli(&["apikey", "issue", "acme", "--role", "reader"], None);
    assert_ne!(status, 0, "{err}");
    let (status, _, err) = cli(
        &[
            "--mfa-code",
            &code(&totp_now, 1),
            "apikey",
            "issue",
            "acme",
            "--role",
            "reader",
        ],
        None,
    );
    assert_eq!(status, 0, "{err}");
}

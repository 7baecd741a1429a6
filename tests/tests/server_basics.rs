//! The server binary on its embedded defaults: health, readiness, metrics, the
//! OpenAPI document, the first operator credential, and admin authentication.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::os::unix::fs::PermissionsExt;

use reqwest::Method;
use serde_json::{json, Value};
use vault_e2e::TestApp;

#[tokio::test]
async fn a_new_vault_writes_a_private_operator_token_and_serves_health() {
    let app = TestApp::builder().start().await;
    let token_file = app.data_dir.join("operator-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(app.operator_token.starts_with("vlt_op_"));
    let root_key = app.data_dir.join("keys/root.key");
    assert_eq!(
        std::fs::metadata(&root_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The token is never printed or logged.
    let log = std::fs::read_to_string(app.data_dir.with_extension("log")).unwrap();
    assert!(!log.contains(&app.operator_token));
    assert!(log.contains("operator-token"), "{log}");

    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            app.http.get(app.at(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("vault_http_requests_total"), "{metrics}");
    let spec: Value = app
        .http
        .get(app.at("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    // Every route of the interface contract is described.
    for path in [
        "/healthz",
        "/readyz",
        "/v1/admin/tenants",
        "/v1/admin/tenants/{tenant}/api-keys",
        "/v1/admin/api-keys/{id}",
        "/v1/documents",
        "/v1/documents/{id}",
        "/v1/documents/{id}/metadata",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn admin_endpoints_need_the_operator_credential() {
    let app = TestApp::builder().start().await;
    let no_auth = app
        .http
        .get(app.at("/v1/admin/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), 401);
    let body: Value = no_auth.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    let forged = format!("{}x", &app.operator_token[..app.operator_token.len() - 1]);
    let r = app
        .http
        .get(app.at("/v1/admin/tenants"))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    app.create_tenant("acme").await;
    let dup = app
        .operator(Method::POST, "/v1/admin/tenants")
        .json(&json!({"id": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    let bad = app
        .operator(Method::POST, "/v1/admin/tenants")
        .json(&json!({"id": "Not Valid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["code"], "invalid_tenant_id");
    // Malformed bodies and query strings get the JSON envelope, never an echo.
    for (body, code) in [
        ("{\"id\": ", "invalid_json"),
        ("{\"id\": 1234567}", "invalid_body"),
        ("{\"id\": \"x\", \"name\": \"DOE, JOHN\"}", "invalid_body"),
    ] {
        let r = app
            .operator(Method::POST, "/v1/admin/tenants")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let text = r.text().await.unwrap();
        let envelope: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(envelope["code"], code, "{body}");
        assert!(!text.contains("DOE") && !text.contains("1234567"), "{text}");
    }
    let r = app
        .operator(Method::POST, "/v1/admin/tenants")
        .body("id=acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = app
        .operator(Method::GET, "/v1/audit/events?tenant=acme&limit=DOE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"invalid_parameters\"") && !text.contains("DOE"),
        "{text}"
    );

    // A tenant API key cannot use admin endpoints; a revoked one nothing at all.
    let key = app.api_key("acme", &["reader"]).await;
    let r = app
        .http
        .get(app.at("/v1/admin/tenants"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Authorisation comes before the body is read: a malformed or non-JSON body
    // to an operator route, sent with an API key, is refused as forbidden.
    for (method, path) in [
        (Method::POST, "/v1/admin/tenants"),
        (Method::POST, "/v1/admin/tenants/acme/api-keys"),
        (Method::POST, "/v1/admin/tenants/acme/disable"),
        (Method::POST, "/v1/admin/tenants/acme/keys/rewrap"),
        (Method::POST, "/v1/admin/tenants/acme/index/rotate"),
        (Method::PUT, "/v1/admin/tenants/acme/retention"),
        (Method::POST, "/v1/admin/drills"),
        (
            Method::POST,
            "/v1/admin/backups/20261203-000000-0123abcd/hold",
        ),
    ] {
        for (content_type, body) in [
            ("application/json", "{\"id\": ".to_owned()),
            ("text/plain", "x".repeat(64 << 10)),
        ] {
            let r = app
                .http
                .request(method.clone(), app.at(path))
                .bearer_auth(&key)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{method} {path} {content_type}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "forbidden", "{method} {path}");
        }
    }
    // The same for query strings: a key without the route's role is refused
    // as forbidden before its query string is parsed; one with the role gets
    // the parse error.
    let uploader = app.api_key("acme", &["uploader"]).await;
    for path in [
        "/v1/documents?limit=DOE",
        "/v1/search?limit=DOE",
        "/v1/audit/events?limit=DOE",
        "/v1/audit/checkpoint?tenant=DOE&tenant=DOE",
        "/v1/audit/proof?seq=DOE",
    ] {
        let r = app
            .http
            .get(app.at(path))
            .bearer_auth(&uploader)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "forbidden", "{path}");
    }
    for path in ["/v1/documents?limit=DOE", "/v1/search?limit=DOE"] {
        let r = app
            .http
            .get(app.at(path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_parameters", "{path}");
    }
    let id = key.split('_').nth(2).unwrap();
    let r = app
        .operator(Method::DELETE, &format!("/v1/admin/api-keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .http
        .get(app.at("/v1/admin/tenants"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "credential_revoked");
}

#[tokio::test]
async fn tenants_and_keys_survive_a_restart() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let app = app.restart().await;
    let r = app
        .operator(Method::GET, "/v1/admin/tenants/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No second operator token on restart.
    let tenants: Value = app
        .operator(Method::GET, "/v1/admin/tenants")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tenants.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tls_is_served_with_rustls_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let app = TestApp::builder().tls(&cert, &key).start().await;
    assert!(app.url.starts_with("https://"));
    assert_eq!(
        app.operator(Method::GET, "/v1/admin/tenants")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The CLI trusts the vault's private CA when told to (--ca-cert), and
    // otherwise says why it does not.
    let out = app.cli(&["tenant", "list"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    let out = app.cli(&["--ca-cert", cert.to_str().unwrap(), "tenant", "list"]);
    assert!(out.status.success(), "{out:?}");
    let out = app.cli(&["--ca-cert", key.to_str().unwrap(), "tenant", "list"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Plain HTTP on the TLS port gets no answer.
    let plain = app.url.replace("https://", "http://");
    let r = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
}

#[tokio::test]
async fn the_cli_lists_and_revokes_api_keys_without_showing_secrets() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let secret = app.api_key("acme", &["reader", "uploader"]).await;
    app.api_key("globex", &["reader"]).await;
    let out = app.cli(&["--json", "apikey", "list", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1, "only acme's keys: {keys:?}");
    let id = keys[0]["id"].as_str().unwrap().to_owned();
    assert!(secret.contains(&id));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(secret.rsplit('_').next().unwrap()) && !text.contains("sha256"));
    assert_eq!(keys[0]["roles"], json!(["reader", "uploader"]));

    let out = app.cli(&["apikey", "revoke", &id]);
    assert!(out.status.success());
    let out = app.cli(&["apikey", "list", "acme"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&id) && text.contains("revoked"), "{text}");
    let out = app.cli(&["apikey", "list", "nosuch"]);
    assert_eq!(out.status.code(), Some(4));
}

#[tokio::test]
async fn a_disabled_tenant_is_refused_and_others_are_not() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let acme = app.api_key("acme", &["reader", "uploader"]).await;
    let globex = app.api_key("globex", &["reader"]).await;
    assert_eq!(app.get_as(&acme, "/v1/documents").await.status(), 200);
    let out = app.cli(&["--json", "tenant", "disable", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "disabled");
    let r = app.get_as(&acme, "/v1/documents").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "tenant_disabled");
    let r = app
        .upload(&acme, "other", "text/plain", b"x".to_vec(), &[])
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(app.get_as(&globex, "/v1/documents").await.status(), 200);
    // No new keys for a disabled tenant; the disabling is in its audit log.
    let r = app
        .operator(Method::POST, "/v1/admin/tenants/acme/api-keys")
        .json(&json!({"roles": ["reader"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let events: Value = app
        .operator(Method::GET, "/v1/audit/events?tenant=acme")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "tenant.disable" && e["outcome"] == "allowed"));
    let out = app.cli(&["tenant", "disable", "nosuch"]);
    assert_eq!(out.status.code(), Some(4));

    // Enabled again, its keys work as before; that too is in its log.
    let out = app.cli(&["--json", "tenant", "enable", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "active");
    assert_eq!(app.get_as(&acme, "/v1/documents").await.status(), 200);
    let events = app.operator_get("/v1/audit/events?tenant=acme").await;
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "tenant.enable" && e["outcome"] == "allowed"));
    // An offboarded tenant stays offboarded.
    app.create_tenant("initech").await;
    let r = app
        .operator(Method::POST, "/v1/admin/tenants/initech/offboard")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .operator(Method::POST, "/v1/admin/tenants/initech/enable")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "tenant_offboarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_valued_header_given_twice_is_refused() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    // Two credentials: whichever a proxy reads, the vault would see another.
    let r = app
        .http
        .get(app.at("/v1/documents"))
        .header("Authorization", "Bearer vlt_ak_0000000000000000_xx")
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_header");
    // Two idempotency keys: which upload would a retry be?
    let r = app
        .upload(
            &key,
            "scan",
            "application/pdf",
            b"%PDF-1.7".to_vec(),
            &[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_header");
    let listed: Value = app
        .get_as(&key, "/v1/documents")
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["documents"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_docs_are_served_at_docs_from_the_binary() {
    let app = TestApp::builder().start().await;
    let page = app.http.get(app.at("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    // The UI's code is served from the binary (no CDN) and reads our document.
    let bundle = app
        .http
        .get(app.at("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    let initializer = app
        .http
        .get(app.at("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/v1/openapi.json"), "{initializer}");
    // Nothing of the request is written into the page.
    let probe = app
        .http
        .get(app.at("/docs/?q=%22%3E%3Cscript%3Ealert(1)%3C/script%3E"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!probe.contains("alert(1)"), "{probe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_can_come_from_the_environment() {
    // No file names it: the variable alone sets the upload limit.
    let app = TestApp::builder()
        .env("BILLVAULT_MAX_UPLOAD_BYTES", "1000")
        .start()
        .await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader"]).await;
    let headers = [("X-Vault-Extraction", "opaque")];
    let small = app
        .upload(&key, "scan", "application/pdf", vec![b'x'; 900], &headers)
        .await;
    assert_eq!(small.status(), 201);
    let large = app
        .upload(&key, "scan", "application/pdf", vec![b'x'; 2000], &headers)
        .await;
    assert_eq!(large.status(), 413);
}

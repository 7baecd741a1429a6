//! The HTTP API as integrations see it, pinned with insta snapshots: the OpenAPI
//! document, and the shape of representative answers and error envelopes (ids,
//! secrets, hashes and times redacted). A change to the contract shows up as a
//! snapshot diff to review (`cargo insta review`), never silently.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use reqwest::Method;
use serde_json::{json, Value};
use vault_e2e::TestApp;

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn the_openapi_document_is_pinned() {
    let app = TestApp::builder().start().await;
    let (status, spec) = json_of(
        app.http
            .get(app.at("/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("openapi", spec, {".info.version" => "[version]"});
}

#[tokio::test]
async fn the_openapi_document_is_valid() {
    let app = TestApp::builder().start().await;
    let spec = app
        .http
        .get(app.at("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), &spec).unwrap();
    let validator = vault_e2e::python_tool("openapi-spec-validator");
    let output = std::process::Command::new(&validator)
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {validator} ({e}): install it with `pip install openapi-spec-validator` or run the tests with infra/test.sh, which installs it")
        });
    assert!(
        output.status.success(),
        "openapi-spec-validator found errors:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn answers_and_error_envelopes_keep_their_shape() {
    let app = TestApp::builder().start().await;
    // With the defaults (the harness's create_tenant sets no retention).
    let (status, tenant) = json_of(
        app.operator(Method::POST, "/v1/admin/tenants")
            .json(&json!({"id": "acme"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    insta::assert_json_snapshot!("tenant_created", tenant, {".created_at" => "[time]"});

    let (status, issued) = json_of(
        app.operator(Method::POST, "/v1/admin/tenants/acme/api-keys")
            .json(&json!({"roles": ["uploader", "reader"], "expires_in_days": 90}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let key = issued["secret"].as_str().unwrap().to_owned();
    insta::assert_json_snapshot!("api_key_issued", issued, {
        ".id" => "[id]", ".secret" => "[secret]", ".created_at" => "[time]", ".expires_at" => "[time]"
    });

    let fields = json!({"claim_id": "CLM-0001", "patient_name": "DOE, JANE"}).to_string();
    let (status, uploaded) = json_of(
        app.upload(
            &key,
            "other",
            "application/octet-stream",
            b"a document".to_vec(),
            &[("X-Vault-Fields", fields.as_str())],
        )
        .await,
    )
    .await;
    assert_eq!(status, 201);
    let id = uploaded["id"].as_str().unwrap().to_owned();
    insta::assert_json_snapshot!("document_uploaded", uploaded, {".id" => "[id]", ".uploaded_at" => "[time]"});

    let (status, metadata) = json_of(
        app.get_as(&key, &format!("/v1/documents/{id}/metadata"))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("document_metadata", metadata, {".id" => "[id]", ".uploaded_at" => "[time]"});

    let (status, found) = json_of(app.get_as(&key, "/v1/search?q=claim_id:CLM-0001").await).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("search_page", found, {".hits[].id" => "[id]", ".hits[].uploaded_at" => "[time]"});

    let (status, listed) = json_of(app.get_as(&key, "/v1/documents?kind=other").await).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("document_list", listed, {".documents[].id" => "[id]", ".documents[].uploaded_at" => "[time]"});

    // Error envelopes: status and body together.
    let mut errors = Vec::new();
    let missing = app
        .get_as(&key, "/v1/documents/00000000000000000000000000000000")
        .await;
    errors.push(("unknown document", json_of(missing).await));
    let unauthenticated = app
        .http
        .get(app.at("/v1/search?q=claim_id:x"))
        .send()
        .await
        .unwrap();
    errors.push(("no credential", json_of(unauthenticated).await));
    errors.push((
        "query syntax",
        json_of(app.get_as(&key, "/v1/search?q=claim_id:(").await).await,
    ));
    errors.push((
        "unknown field",
        json_of(app.get_as(&key, "/v1/search?q=favourite_colour:blue").await).await,
    ));
    let not_json = app
        .operator(Method::POST, "/v1/admin/tenants")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    errors.push(("malformed body", json_of(not_json).await));
    let operator_only = app.get_as(&key, "/v1/admin/tenants").await;
    errors.push((
        "tenant key on an admin endpoint",
        json_of(operator_only).await,
    ));
    errors.push((
        "malformed query string",
        json_of(app.get_as(&key, "/v1/documents?limit=many").await).await,
    ));
    errors.push((
        "no such endpoint",
        json_of(app.get_as(&key, "/v1/no-such-endpoint").await).await,
    ));
    let wrong_method = app
        .http
        .put(app.at("/v1/search"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong_method
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("GET,HEAD"),
        "a 405 names the methods the endpoint takes"
    );
    errors.push((
        "method the endpoint does not take",
        json_of(wrong_method).await,
    ));
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(case, (status, body))| json!({"case": case, "status": status, "body": body}))
        .collect();
    insta::assert_json_snapshot!("error_envelopes", errors);
}

//! Jobs end to end: a long operation started with `Prefer: respond-async` is
//! answered 202 with its record and followed by id to its report; jobs are
//! listed, a finished one cannot be cancelled, unknown ids and callers without
//! the operator credential are refused; the CLI follows the job it starts and
//! prints the same report as before.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vault_e2e::TestApp;

async fn follow(app: &TestApp, id: &str) -> Value {
    for _ in 0..400 {
        let job = app.operator_get(&format!("/v1/admin/jobs/{id}")).await;
        if job["state"] != "running" {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

#[tokio::test]
async fn a_rebuild_started_async_is_followed_to_its_report() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    for i in 0..5 {
        let fields = json!({ "claim_id": format!("CLM{i}") }).to_string();
        let r = app
            .upload(
                &key,
                "claim",
                "application/pdf",
                b"%PDF-1.4".to_vec(),
                &[
                    ("X-Vault-Fields", &fields),
                    ("X-Vault-Extraction", "opaque"),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let started = app
        .operator(Method::POST, "/v1/admin/tenants/acme/index/rebuild")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(started.headers()["preference-applied"], "respond-async");
    let record: Value = started.json().await.unwrap();
    let id = record["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/admin/jobs/{id}"));
    assert_eq!(record["kind"], "index.rebuild");
    assert_eq!(record["tenant"], "acme");
    assert!(record["actor"].as_str().unwrap().starts_with("operator:"));

    let done = follow(&app, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["documents"], 5, "{done}");
    assert_eq!(done["result"]["added"], 5, "{done}");
    assert!(done["finished_at"].is_string());

    let list = app.operator_get("/v1/admin/jobs").await;
    assert!(list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["id"] == id.as_str()));

    // A finished job cannot be cancelled; an unknown or malformed id is not found.
    let again = app
        .operator(Method::POST, &format!("/v1/admin/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], "job_finished");
    for unknown in [
        "job_00000000000000000000000000000000",
        "nope",
        "job_../../etc",
    ] {
        let r = app
            .operator(Method::GET, &format!("/v1/admin/jobs/{unknown}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{unknown}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "job_not_found");
    }
    // Jobs are the operator's: a tenant key and no credential are refused.
    let as_tenant = app.get_as(&key, &format!("/v1/admin/jobs/{id}")).await;
    assert_eq!(as_tenant.status(), StatusCode::FORBIDDEN);
    let anonymous = app.http.get(app.at("/v1/admin/jobs")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Without the preference the endpoint answers with the report, as it always did.
    let sync = app
        .operator(Method::POST, "/v1/admin/tenants/acme/index/rebuild")
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), StatusCode::OK);
    assert_eq!(sync.json::<Value>().await.unwrap()["documents"], 5);

    // The CLI follows the job it starts and prints the report; `job list` shows it.
    let report = app.cli_json(&["--json", "key", "rewrap", "acme"]);
    assert_eq!(report["failed"], 0, "{report}");
    let jobs = app.cli_json(&["--json", "job", "list"]);
    assert!(
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["kind"] == "key.rewrap" && j["state"] == "succeeded"),
        "{jobs}"
    );
    let shown = app.cli_json(&["--json", "job", "show", &id]);
    assert_eq!(shown["state"], "succeeded");
    let (code, _) = app.cli_exit(&["job", "cancel", &id]);
    assert_eq!(
        code, 4,
        "cancelling a finished job is refused by the server"
    );
}

#[tokio::test]
async fn a_job_for_an_unknown_tenant_is_refused_before_it_starts() {
    let app = TestApp::builder().start().await;
    for path in [
        "/v1/admin/tenants/ghost/index/rebuild",
        "/v1/admin/tenants/ghost/index/rotate",
        "/v1/admin/tenants/ghost/keys/rewrap",
    ] {
        let r = app
            .operator(Method::POST, path)
            .header("Prefer", "respond-async")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let list = app.operator_get("/v1/admin/jobs").await;
    assert_eq!(list["jobs"], json!([]));
}

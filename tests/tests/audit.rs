//! The audit log, end to end: every endpoint records exactly its event; events
//! hold no plaintext; tampering of every kind is found offline by `vault-cli audit
//! verify` on both backends; a request whose event cannot be written fails and
//! returns nothing; a bulk reader is flagged and throttled.

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vault_e2e::{aws_config, Backend, TestApp};

/// The events of a tenant's log after `after` (operator view).
async fn events_after(app: &TestApp, tenant: &str, after: Option<u64>) -> Vec<Value> {
    let mut query = vec![("tenant", tenant.to_owned()), ("limit", "1000".to_owned())];
    if let Some(seq) = after {
        query.push(("cursor", seq.to_string()));
    }
    let r = app
        .operator(Method::GET, "/v1/audit/events")
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let page: Value = r.json().await.unwrap();
    page["events"].as_array().unwrap().clone()
}

fn last_seq(events: &[Value]) -> Option<u64> {
    events.last().and_then(|e| e["seq"].as_u64())
}

struct Keys {
    all: String,
    all_id: String,
    uploader: String,
    auditor: String,
    auditor_id: String,
}

async fn keys(app: &TestApp) -> Keys {
    let id_of = |secret: &str| secret.split('_').nth(2).unwrap().to_owned();
    let all = app
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let auditor = app.api_key("acme", &["auditor"]).await;
    Keys {
        all_id: id_of(&all),
        auditor_id: id_of(&auditor),
        uploader: app.api_key("acme", &["uploader"]).await,
        all,
        auditor,
    }
}

async fn start(backend: Backend, extra: &str) -> TestApp {
    let builder = TestApp::builder().backend(backend).config(extra);
    let app = builder.start().await;
    app.create_tenant("acme").await;
    app
}

/// One call and the event it must leave in acme's log (or the system log).
struct Case {
    name: &'static str,
    status: u16,
    action: &'static str,
    outcome: &'static str,
    actor: String,
    document: Option<String>,
    system_log: bool,
}

async fn check_case(
    app: &TestApp,
    case: &Case,
    response: reqwest::Response,
    before: (Option<u64>, Option<u64>),
) {
    assert_eq!(response.status().as_u16(), case.status, "{}", case.name);
    let (tenant, after) = if case.system_log {
        ("system", before.1)
    } else {
        ("acme", before.0)
    };
    let new: Vec<Value> = events_after(app, tenant, after)
        .await
        .into_iter()
        // The operator's own reads of the log: not this case's event.
        .filter(|e| {
            !(e["action"] == "audit.read"
                && e["actor"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("operator:")))
        })
        // A change's intent, recorded before it (checked where it matters).
        .filter(|e| e["outcome"] != "intent")
        .collect();
    assert_eq!(
        new.len(),
        1,
        "{}: exactly one event, got {new:?}",
        case.name
    );
    let e = &new[0];
    assert_eq!(e["action"], case.action, "{}", case.name);
    assert_eq!(e["outcome"], case.outcome, "{}", case.name);
    assert_eq!(
        e["status"].as_u64(),
        Some(u64::from(case.status)),
        "{}",
        case.name
    );
    assert_eq!(
        e["actor"].as_str(),
        Some(case.actor.as_str()),
        "{}",
        case.name
    );
    assert_eq!(
        e["document"].as_str(),
        case.document.as_deref(),
        "{}",
        case.name
    );
    assert!(
        e["request_id"].as_str().is_some_and(|r| r.len() > 8),
        "{}",
        case.name
    );
    assert_eq!(e["client"], "127.0.0.1", "{}", case.name);
}

async fn positions(app: &TestApp) -> (Option<u64>, Option<u64>) {
    (
        last_seq(&events_after(app, "acme", None).await),
        last_seq(&events_after(app, "system", None).await),
    )
}

async fn every_endpoint_records_its_event(backend: Backend) {
    let app = start(backend, "").await;
    let k = keys(&app).await;
    let actor = format!("apikey:{}", k.all_id);
    let body = b"ISA*00*          *00*          *ZZ*S              *ZZ*R              *240101*1200*^*00501*000000001*0*P*:~".to_vec();

    // Upload, then every document call on it.
    let before = positions(&app).await;
    let r = app
        .upload(
            &k.all,
            "scan",
            "application/pdf",
            b"%PDF-1.7 scan".to_vec(),
            &[("X-Vault-Fields", r#"{"member_id": "W99887766"}"#)],
        )
        .await;
    let id = {
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    };
    let upload_events = events_after(&app, "acme", before.0).await;
    // The intent, durable before the document became visible, then the outcome.
    let intent = upload_events
        .iter()
        .position(|e| e["action"] == "document.upload" && e["outcome"] == "intent")
        .expect("an upload intent");
    assert_eq!(
        upload_events[intent]["document"].as_str(),
        Some(id.as_str())
    );
    let upload = upload_events
        .iter()
        .skip(intent + 1)
        .find(|e| e["action"] == "document.upload")
        .unwrap();
    assert_eq!(upload["request_id"], upload_events[intent]["request_id"]);
    assert_eq!(upload["document"].as_str(), Some(id.as_str()));
    assert_eq!(upload["outcome"], "allowed");
    assert_eq!(upload["actor"].as_str(), Some(actor.as_str()));
    assert!(upload["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "uploader"));

    let operator = {
        let events = events_after(&app, "acme", None).await;
        events
            .iter()
            .find(|e| e["action"] == "apikey.issue")
            .and_then(|e| e["actor"].as_str())
            .unwrap()
            .to_owned()
    };
    assert!(operator.starts_with("operator:"));

    type Call = Box<dyn Fn(&TestApp) -> reqwest::RequestBuilder>;
    let doc_path = format!("/v1/documents/{id}");
    let cases: Vec<(Case, Call)> = vec![
        (
            Case {
                name: "download",
                status: 200,
                action: "document.download",
                outcome: "allowed",
                actor: actor.clone(),
                document: Some(id.clone()),
                system_log: false,
            },
            {
                let (p, key) = (doc_path.clone(), k.all.clone());
                Box::new(move |app| app.http.get(app.at(&p)).bearer_auth(&key))
            },
        ),
        (
            Case {
                name: "metadata",
                status: 200,
                action: "document.metadata",
                outcome: "allowed",
                actor: actor.clone(),
                document: Some(id.clone()),
                system_log: false,
            },
            {
                let (p, key) = (format!("{doc_path}/metadata"), k.all.clone());
                Box::new(move |app| app.http.get(app.at(&p)).bearer_auth(&key))
            },
        ),
        (
            Case {
                name: "list",
                status: 200,
                action: "document.list",
                outcome: "allowed",
                actor: actor.clone(),
                document: None,
                system_log: false,
            },
            {
                let key = k.all.clone();
                Box::new(move |app| app.http.get(app.at("/v1/documents")).bearer_auth(&key))
            },
        ),
        (
            Case {
                name: "search",
                status: 200,
                action: "search",
                outcome: "allowed",
                actor: actor.clone(),
                document: None,
                system_log: false,
            },
            {
                let key = k.all.clone();
                Box::new(move |app| {
                    app.http
                        .get(app.at("/v1/search"))
                        .query(&[("q", "member_id:W99887766")])
                        .bearer_auth(&key)
                })
            },
        ),
        (
            Case {
                name: "download without the reader role",
                status: 403,
                action: "document.download",
                outcome: "denied",
                actor: format!("apikey:{}", k.uploader.split('_').nth(2).unwrap()),
                document: Some(id.clone()),
                system_log: false,
            },
            {
                let (p, key) = (doc_path.clone(), k.uploader.clone());
                Box::new(move |app| app.http.get(app.at(&p)).bearer_auth(&key))
            },
        ),
        (
            Case {
                name: "missing document",
                status: 404,
                action: "document.download",
                outcome: "failed",
                actor: actor.clone(),
                document: Some("00000000000000000000000000000000".into()),
                system_log: false,
            },
            {
                let key = k.all.clone();
                Box::new(move |app| {
                    app.http
                        .get(app.at("/v1/documents/00000000000000000000000000000000"))
                        .bearer_auth(&key)
                })
            },
        ),
        (
            Case {
                name: "unreadable X12",
                status: 422,
                action: "document.upload",
                outcome: "failed",
                actor: actor.clone(),
                document: None,
                system_log: false,
            },
            {
                let (key, body) = (k.all.clone(), body.clone());
                Box::new(move |app| {
                    app.http
                        .post(app.at("/v1/documents"))
                        .bearer_auth(&key)
                        .header("X-Vault-Kind", "eob")
                        .header("Content-Type", "application/edi-x12")
                        .body(body.clone())
                })
            },
        ),
        (
            Case {
                name: "audit read by the auditor",
                status: 200,
                action: "audit.read",
                outcome: "allowed",
                actor: format!("apikey:{}", k.auditor_id),
                document: None,
                system_log: false,
            },
            {
                let key = k.auditor.clone();
                Box::new(move |app| app.http.get(app.at("/v1/audit/events")).bearer_auth(&key))
            },
        ),
        (
            Case {
                name: "issue a key",
                status: 201,
                action: "apikey.issue",
                outcome: "allowed",
                actor: operator.clone(),
                document: None,
                system_log: false,
            },
            Box::new(|app| {
                app.operator(Method::POST, "/v1/admin/tenants/acme/api-keys")
                    .json(&json!({"roles": ["reader"]}))
            }),
        ),
        (
            Case {
                name: "rebuild the index",
                status: 200,
                action: "index.rebuild",
                outcome: "allowed",
                actor: operator.clone(),
                document: None,
                system_log: false,
            },
            Box::new(|app| app.operator(Method::POST, "/v1/admin/tenants/acme/index/rebuild")),
        ),
        (
            Case {
                name: "show the tenant",
                status: 200,
                action: "tenant.show",
                outcome: "allowed",
                actor: operator.clone(),
                document: None,
                system_log: false,
            },
            Box::new(|app| app.operator(Method::GET, "/v1/admin/tenants/acme")),
        ),
        (
            Case {
                name: "list tenants",
                status: 200,
                action: "tenant.list",
                outcome: "allowed",
                actor: operator.clone(),
                document: None,
                system_log: true,
            },
            Box::new(|app| app.operator(Method::GET, "/v1/admin/tenants")),
        ),
        (
            Case {
                name: "delete",
                status: 204,
                action: "document.delete",
                outcome: "allowed",
                actor: actor.clone(),
                document: Some(id.clone()),
                system_log: false,
            },
            {
                let (p, key) = (doc_path.clone(), k.all.clone());
                Box::new(move |app| app.http.delete(app.at(&p)).bearer_auth(&key))
            },
        ),
    ];
    for (case, call) in &cases {
        let before = positions(&app).await;
        let response = call(&app).send().await.unwrap();
        check_case(&app, case, response, before).await;
    }

    // An unknown credential names no one: nothing in acme's log, and a sampled
    // event (written in the background) in the system log, without the document.
    let before = positions(&app).await;
    let r = app
        .http
        .get(app.at(&doc_path))
        .bearer_auth("vlt_op_nobody_secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let mut sampled = Vec::new();
    for _ in 0..50 {
        sampled = events_after(&app, "system", before.1)
            .await
            .into_iter()
            .filter(|e| e["actor"] == "anonymous")
            .collect();
        if !sampled.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sampled.len(), 1, "{sampled:?}");
    assert_eq!(sampled[0]["action"], "document.download");
    assert_eq!(sampled[0]["outcome"], "denied");
    assert_eq!(sampled[0]["document"], Value::Null);
    assert!(sampled[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("unauthenticated: malformed_credential"));
    assert!(events_after(&app, "acme", before.0)
        .await
        .iter()
        .all(|e| e["actor"] != "anonymous"));

    // Revocation lands in the key's tenant log; a new tenant's creation in its own.
    let issued: Value = app
        .operator(Method::POST, "/v1/admin/tenants/acme/api-keys")
        .json(&json!({"roles": ["reader"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = issued["id"].as_str().unwrap();
    let before = positions(&app).await;
    let r = app
        .operator(Method::DELETE, &format!("/v1/admin/api-keys/{key_id}"))
        .send()
        .await
        .unwrap();
    let case = Case {
        name: "revoke",
        status: 204,
        action: "apikey.revoke",
        outcome: "allowed",
        actor: operator.clone(),
        document: None,
        system_log: false,
    };
    check_case(&app, &case, r, before).await;
    app.create_tenant("beta").await;
    let beta = events_after(&app, "beta", None).await;
    assert_eq!(beta.len(), 1, "{beta:?}");
    assert_eq!(beta[0]["action"], "tenant.create");

    // An auditor key reads only its tenant; readers may not read the log.
    let r = app.get_as(&k.all, "/v1/audit/events").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The offline verifier agrees the logs are intact.
    let cp: Value = app
        .operator(Method::GET, "/v1/audit/checkpoint?tenant=acme")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let out = verify(&app, "acme", cp["public_key"].as_str().unwrap(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn every_endpoint_records_its_event_on_fs() {
    every_endpoint_records_its_event(Backend::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_records_its_event_on_s3() {
    every_endpoint_records_its_event(Backend::S3).await;
}

fn verify(
    app: &TestApp,
    tenant: &str,
    public_key: &str,
    saved: Option<&Path>,
) -> std::process::Output {
    let store = app.store_arg();
    let mut args = vec![
        "--json",
        "audit",
        "verify",
        "--store",
        &store,
        "--tenant",
        tenant,
        "--public-key",
        public_key,
    ];
    let saved_str;
    if let Some(path) = saved {
        saved_str = path.display().to_string();
        args.extend(["--checkpoint", &saved_str]);
    }
    app.cli(&args)
}

/// Raw access to the audit objects of a tenant, on either backend.
struct Objects<'a> {
    app: &'a TestApp,
}

impl Objects<'_> {
    fn fs_dir(&self, tenant: &str) -> PathBuf {
        self.app
            .data_dir
            .join("objects/tenants")
            .join(tenant)
            .join("audit")
    }

    async fn list(&self, tenant: &str, kind: &str) -> Vec<String> {
        match &self.app.bucket {
            None => {
                let mut names: Vec<String> = std::fs::read_dir(self.fs_dir(tenant).join(kind))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names
            }
            Some(bucket) => {
                let s3 = aws_sdk_s3::Client::new(&aws_config().await);
                let prefix = format!("vault/tenants/{tenant}/audit/{kind}/");
                let out = s3
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&prefix)
                    .send()
                    .await
                    .unwrap();
                let mut names: Vec<String> = out
                    .contents()
                    .iter()
                    .map(|o| o.key().unwrap().trim_start_matches(&prefix).to_owned())
                    .collect();
                names.sort();
                names
            }
        }
    }

    async fn get(&self, tenant: &str, kind: &str, name: &str) -> Vec<u8> {
        match &self.app.bucket {
            None => std::fs::read(self.fs_dir(tenant).join(kind).join(name)).unwrap(),
            Some(bucket) => {
                let s3 = aws_sdk_s3::Client::new(&aws_config().await);
                let key = format!("vault/tenants/{tenant}/audit/{kind}/{name}");
                let o = s3
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
                o.body.collect().await.unwrap().into_bytes().to_vec()
            }
        }
    }

    async fn put(&self, tenant: &str, kind: &str, name: &str, bytes: Vec<u8>) {
        match &self.app.bucket {
            None => std::fs::write(self.fs_dir(tenant).join(kind).join(name), bytes).unwrap(),
            Some(bucket) => {
                let s3 = aws_sdk_s3::Client::new(&aws_config().await);
                let key = format!("vault/tenants/{tenant}/audit/{kind}/{name}");
                s3.put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(bytes.into())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn delete(&self, tenant: &str, kind: &str, name: &str) {
        match &self.app.bucket {
            None => std::fs::remove_file(self.fs_dir(tenant).join(kind).join(name)).unwrap(),
            Some(bucket) => {
                let s3 = aws_sdk_s3::Client::new(&aws_config().await);
                let key = format!("vault/tenants/{tenant}/audit/{kind}/{name}");
                s3.delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// Every audit object of the tenant, to put back after a tampering case.
    async fn snapshot(&self, tenant: &str) -> Vec<(String, String, Vec<u8>)> {
        let mut out = Vec::new();
        for kind in ["segments", "checkpoints"] {
            for name in self.list(tenant, kind).await {
                let bytes = self.get(tenant, kind, &name).await;
                out.push((kind.to_owned(), name, bytes));
            }
        }
        out
    }

    async fn restore(&self, tenant: &str, snapshot: &[(String, String, Vec<u8>)]) {
        for kind in ["segments", "checkpoints"] {
            for name in self.list(tenant, kind).await {
                self.delete(tenant, kind, &name).await;
            }
        }
        for (kind, name, bytes) in snapshot {
            self.put(tenant, kind, name, bytes.clone()).await;
        }
    }
}

async fn tampering_is_found_offline(backend: Backend) {
    let mut app = start(backend, "").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    // Several segments and several checkpoints.
    let mut checkpoint_text = String::new();
    let mut public_key = String::new();
    for round in 0..4 {
        for i in 0..3 {
            let r = app
                .upload(
                    &key,
                    "other",
                    "text/plain",
                    format!("round {round} doc {i}").into_bytes(),
                    &[],
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
        }
        let cp: Value = app
            .operator(Method::GET, "/v1/audit/checkpoint?tenant=acme")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if round == 3 {
            checkpoint_text = cp["checkpoint"].as_str().unwrap().to_owned();
            public_key = cp["public_key"].as_str().unwrap().to_owned();
        }
    }
    app.kill();
    let saved = app.data_dir.with_extension("checkpoint.txt");
    std::fs::write(&saved, &checkpoint_text).unwrap();
    let objects = Objects { app: &app };
    let pristine = objects.snapshot("acme").await;
    let segments = objects.list("acme", "segments").await;
    assert!(segments.len() >= 12, "{} segments", segments.len());

    let out = verify(&app, "acme", &public_key, Some(&saved));
    assert!(
        out.status.success(),
        "intact log: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Each case: tamper, verify (exit 2 with the first bad position), restore.
    // The tampered segments lie after the first checkpoint, which pins what is
    // before them.
    let mut sizes: Vec<u64> = objects
        .list("acme", "checkpoints")
        .await
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    sizes.sort_unstable();
    let (at, cut) = (sizes[0] as usize, sizes[1] as usize);
    assert!(at + 1 < cut && cut < segments.len(), "{sizes:?}");
    let mid = segments[at].clone();
    let cases: Vec<(&str, u64)> = vec![
        ("modified", at as u64),
        ("deleted", at as u64),
        ("inserted", at as u64),
        ("reordered", at as u64),
        ("truncated", cut as u64),
    ];
    for (case, first_bad) in cases {
        match case {
            "modified" => {
                let mut bytes = objects.get("acme", "segments", &mid).await;
                let last = bytes.len() - 20;
                bytes[last] ^= 0x01;
                objects.put("acme", "segments", &mid, bytes).await;
            }
            "deleted" => objects.delete("acme", "segments", &mid).await,
            "inserted" => {
                // Shift segments `at..` up by one and put a copy of segment 2 there.
                for name in segments[at..].iter().rev() {
                    let index: u64 = name.parse().unwrap();
                    let bytes = objects.get("acme", "segments", name).await;
                    objects
                        .put("acme", "segments", &format!("{:020}", index + 1), bytes)
                        .await;
                }
                let copy = objects.get("acme", "segments", &segments[2]).await;
                objects.put("acme", "segments", &mid, copy).await;
            }
            "reordered" => {
                let a = objects.get("acme", "segments", &segments[at]).await;
                let b = objects.get("acme", "segments", &segments[at + 1]).await;
                objects.put("acme", "segments", &segments[at], b).await;
                objects.put("acme", "segments", &segments[at + 1], a).await;
            }
            "truncated" => {
                // The tail and every checkpoint that covers it: only the saved
                // checkpoint still knows.
                for name in &segments[cut..] {
                    objects.delete("acme", "segments", name).await;
                }
                for name in objects.list("acme", "checkpoints").await {
                    if name.parse::<u64>().unwrap() > cut as u64 {
                        objects.delete("acme", "checkpoints", &name).await;
                    }
                }
            }
            _ => unreachable!(),
        }
        let out = verify(&app, "acme", &public_key, Some(&saved));
        assert_eq!(
            out.status.code(),
            Some(5),
            "{case}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let found = report["first_bad_segment"].as_u64().unwrap();
        assert!(
            found <= first_bad,
            "{case}: first bad segment {found}, expected at most {first_bad}: {report}"
        );
        if case != "modified" && case != "reordered" {
            assert_eq!(found, first_bad, "{case}: {report}");
        }
        objects.restore("acme", &pristine).await;
    }
    // A forged checkpoint (another key) is refused.
    let out = verify(&app, "acme", &"11".repeat(32), Some(&saved));
    assert_ne!(out.status.code(), Some(0));
    let out = verify(&app, "acme", &public_key, Some(&saved));
    assert!(
        out.status.success(),
        "restored: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn tampering_is_found_offline_on_fs() {
    tampering_is_found_offline(Backend::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_found_offline_on_s3() {
    tampering_is_found_offline(Backend::S3).await;
}

#[tokio::test]
async fn events_hold_no_plaintext_and_a_request_fails_closed() {
    let app = start(Backend::Fs, "").await;
    let key = app
        .api_key("acme", &["uploader", "reader", "auditor"])
        .await;
    let phi = ["ZYXWVUTS", "Q98765432", "1944-02-29"];
    let fields =
        json!({"patient_name": "Zyxwvuts, Anna", "member_id": phi[1], "patient_dob": phi[2]});
    let r = app
        .upload(
            &key,
            "scan",
            "application/pdf",
            b"%PDF-1.7 ZYXWVUTS".to_vec(),
            &[("X-Vault-Fields", &fields.to_string())],
        )
        .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .http
        .get(app.at("/v1/search"))
        .query(&[(
            "q",
            "patient_name:\"Zyxwvuts, Anna\" AND member_id:Q98765432",
        )])
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let events = app
        .get_as(&key, "/v1/audit/events?limit=1000")
        .await
        .text()
        .await
        .unwrap();
    let search = serde_json::from_str::<Value>(&events).unwrap()["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "search")
        .cloned()
        .unwrap();
    assert_eq!(search["fields"], json!(["patient_name", "member_id"]));
    let stored: Vec<u8> =
        std::fs::read_dir(app.data_dir.join("objects/tenants/acme/audit/segments"))
            .unwrap()
            .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
    for value in phi.iter().chain(&["Zyxwvuts", "Anna"]) {
        assert!(
            !events.to_lowercase().contains(&value.to_lowercase()),
            "{value} in events"
        );
        assert!(
            !String::from_utf8_lossy(&stored).contains(value),
            "{value} in segments"
        );
    }

    // Audit storage made unavailable: the download fails and returns no data.
    let segments = app.data_dir.join("objects/tenants/acme/audit/segments");
    let aside = app.data_dir.join("segments-aside");
    std::fs::rename(&segments, &aside).unwrap();
    std::fs::write(&segments, b"not a directory").unwrap();
    let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("audit_unavailable") && !body.contains("ZYXWVUTS"),
        "{body}"
    );
    let r = app
        .upload(
            &key,
            "other",
            "text/plain",
            b"during the outage".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Back: the log continues where it was, intact.
    std::fs::remove_file(&segments).unwrap();
    std::fs::rename(&aside, &segments).unwrap();
    let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"%PDF-1.7 ZYXWVUTS");
    let metrics = app.metrics_text().await;
    assert!(
        // The download's event; the upload's intent (its document was not made
        // visible) and its outcome event.
        metrics.contains("vault_audit_failures_total 3"),
        "{metrics}"
    );
    let cp: Value = app
        .operator(Method::GET, "/v1/audit/checkpoint?tenant=acme")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let out = verify(&app, "acme", cp["public_key"].as_str().unwrap(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn a_bulk_reader_is_flagged_and_throttled() {
    let app = start(
        Backend::Fs,
        "[audit]\nbulk_read_threshold = 20\nbulk_read_window_secs = 600\nthrottle_bulk_readers = true",
    )
    .await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let other = app.api_key("acme", &["reader"]).await;
    let r = app
        .upload(&key, "other", "text/plain", b"x".to_vec(), &[])
        .await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(
            app.get_as(&key, &format!("/v1/documents/{id}"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        21,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        4,
        "{statuses:?}"
    );
    // Another key is not affected.
    assert_eq!(
        app.get_as(&other, &format!("/v1/documents/{id}"))
            .await
            .status(),
        200
    );
    let events = events_after(&app, "acme", None).await;
    let anomalies: Vec<&Value> = events.iter().filter(|e| e["action"] == "anomaly").collect();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert!(anomalies[0]["detail"]
        .as_str()
        .unwrap()
        .contains("throttled"));
    let throttled = events
        .iter()
        .filter(|e| e["status"] == 429 && e["outcome"] == "denied")
        .count();
    assert_eq!(throttled, 4);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("vault_bulk_access_anomalies_total 1"),
        "{metrics}"
    );
}

/// With a tenant's audit log unwritable, no change to it is made: every
/// state-changing request answers 503 and the stores are as before; once the log
/// is back the changes go through and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_audit_log_unwritable_a_tenant_changes_nothing() {
    let app = TestApp::builder().start().await;
    app.create_tenant_with("acme", "local").await;
    let key = app
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let r = app
        .upload(
            &key,
            "scan",
            "application/pdf",
            b"%PDF-1.7 kept".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let objects = app.data_dir.join("objects");
    let tenant_dir = objects.join("tenants/acme");
    let snapshot = || {
        let mut names: Vec<String> = walk(&objects)
            .into_iter()
            .filter(|p| !p.contains("/audit/") && !p.contains("/.tmp/"))
            .collect();
        names.sort();
        let record = std::fs::read(objects.join("system/tenants/acme")).unwrap();
        (names, record)
    };
    // Unwritable: the segments directory becomes a file.
    let segments = tenant_dir.join("audit/segments");
    let saved = tenant_dir.join("audit/segments.saved");
    std::fs::rename(&segments, &saved).unwrap();
    std::fs::write(&segments, b"").unwrap();
    let before = snapshot();

    let r = app
        .upload(
            &key,
            "scan",
            "application/pdf",
            b"%PDF-1.7 lost".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "upload");
    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "delete");
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/admin/tenants/acme/keys/rotate".to_owned(),
            None,
        ),
        (
            Method::POST,
            format!("/v1/admin/tenants/acme/documents/{id}/hold"),
            None,
        ),
        (
            Method::PUT,
            "/v1/admin/tenants/acme/retention".to_owned(),
            Some(json!({"days": 30})),
        ),
        (
            Method::POST,
            "/v1/admin/tenants/acme/disable".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/v1/admin/tenants/acme/offboard".to_owned(),
            None,
        ),
    ] {
        let mut request = app.operator(method.clone(), &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}"
        );
    }
    assert_eq!(
        snapshot(),
        before,
        "a change was made without its audit event"
    );

    // The log is back: the document is there, changes go through, it verifies.
    std::fs::remove_file(&segments).unwrap();
    std::fs::rename(&saved, &segments).unwrap();
    let r = app.get_as(&key, &format!("/v1/documents/{id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cp: Value = app.operator_get("/v1/audit/checkpoint?tenant=acme").await;
    let out = verify(&app, "acme", cp["public_key"].as_str().unwrap(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every file under `dir`, as a path relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

//! Uploads that are hard on the server (issue 14): a pathological but valid
//! 16 MB 835 and a 256 MiB body of white space, sent at the same time, finish
//! while `/healthz` keeps answering at once; documents past the per-document
//! limits are refused with their own 422 codes, naming the limit and never a value.
//!
//! The time bounds are generous sanity checks for a debug build on a loaded
//! machine, not measurements (those are in `index/benches/extraction.rs`).

#![allow(clippy::unwrap_used)] // a failing test should panic with the error

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use vault_e2e::TestApp;
use vault_index::synth::x12::{large_remittance_835, remittance_835, X12Version};
use vault_index::synth::SynthClaim;

/// Slowest `/healthz` answer allowed while the uploads run.
const HEALTHZ_BOUND: Duration = Duration::from_secs(1);
/// Longest an upload may take.
const UPLOAD_BOUND: Duration = Duration::from_secs(180);

const ISA: &str = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*^*00501*000000001*0*P*:~";

const WHITE_SPACE_BYTES: usize = 256 << 20;
static SPACES: [u8; 64 * 1024] = [b' '; 64 * 1024];

/// A 256 MiB body of spaces, made as it is sent (never held in memory).
fn white_space_body() -> reqwest::Body {
    let chunks = WHITE_SPACE_BYTES / SPACES.len();
    reqwest::Body::wrap_stream(
        futures::stream::iter(0..chunks)
            .map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&SPACES))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_uploads_leave_the_server_responsive() {
    // Limits raised so that the whole 835 is read, merged, sealed and indexed:
    // the heaviest work one upload can ask for.
    let app = TestApp::builder()
        .config(
            "[search]\nmax_extract_bytes = 33554432\nmax_values_per_field = 1000000\nmax_claims_per_document = 1000000",
        )
        .start()
        .await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let remittance = large_remittance_835(14, 16_000_000);
    assert!(remittance.text.len() > 15_000_000);
    let remittance = Bytes::from(remittance.text.into_bytes());

    let upload_835 = |n: usize| {
        let (app, key, body) = (&app, key.clone(), remittance.clone());
        async move {
            let started = Instant::now();
            let r = app
                .http
                .post(app.at("/v1/documents"))
                .bearer_auth(&key)
                .header("X-Vault-Kind", "eob")
                .header("Content-Type", "application/edi-x12")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (format!("835 #{n}"), status, body, started.elapsed())
        }
    };
    let upload_blank = async {
        let started = Instant::now();
        let r = app
            .http
            .post(app.at("/v1/documents"))
            .bearer_auth(&key)
            .header("X-Vault-Kind", "other")
            .header("Content-Type", "text/plain")
            .body(white_space_body())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        ("white space".to_owned(), status, body, started.elapsed())
    };
    let uploads = async {
        let (a, b, c) = tokio::join!(upload_835(1), upload_835(2), upload_blank);
        vec![a, b, c]
    };
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let probe = async {
        let mut slowest = Duration::ZERO;
        let mut answered = 0;
        let begun = Instant::now();
        // Bounded: stops when the uploads are done, or after the upload bound.
        let deadline = Instant::now() + UPLOAD_BOUND + HEALTHZ_BOUND;
        while !*done_rx.borrow() && Instant::now() < deadline {
            let started = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                app.http.get(app.at("/healthz")).send(),
            )
            .await
            .expect("healthz answers")
            .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let took = started.elapsed();
            if took > Duration::from_millis(100) {
                eprintln!("healthz at {:?} took {took:?}", started - begun);
            }
            slowest = slowest.max(took);
            answered += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = done_rx.changed() => {}
            }
        }
        (slowest, answered)
    };
    let uploads = async {
        let outcome = uploads.await;
        done_tx.send(true).unwrap();
        outcome
    };
    let (outcomes, (slowest, answered)) = tokio::join!(uploads, probe);

    for (what, status, body, took) in &outcomes {
        eprintln!("{what}: {status} in {took:?}");
        assert_eq!(*status, StatusCode::CREATED, "{what}: {body}");
        assert!(*took < UPLOAD_BOUND, "{what} took {took:?}");
    }
    eprintln!("healthz: {answered} answers, slowest {slowest:?}");
    assert!(answered >= 5, "healthz was probed {answered} times");
    assert!(
        slowest < HEALTHZ_BOUND,
        "healthz took {slowest:?} during the uploads"
    );
    let (_, _, remittance_answer, _) = &outcomes[0];
    assert!(
        remittance_answer["indexed_fields"]
            .as_array()
            .unwrap()
            .contains(&Value::from("claim_id")),
        "{remittance_answer}"
    );
    let (_, _, blank_answer, _) = &outcomes[2];
    assert_eq!(blank_answer["size"], WHITE_SPACE_BYTES);
    assert_eq!(blank_answer["indexed_fields"], serde_json::json!([]));
}

#[tokio::test]
async fn documents_past_the_limits_are_refused_with_their_own_codes() {
    let app = TestApp::builder()
        .config("[search]\nmax_values_per_field = 60\nmax_claims_per_document = 10")
        .start()
        .await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;

    // Ten claims carry at most 40 service dates and procedure codes: only the
    // eleventh claim is too many.
    let claims = SynthClaim::batch(7, 11);
    let too_many_claims = remittance_835(&claims, X12Version::V5010);
    let within = remittance_835(&claims[..10], X12Version::V5010);
    // One claim with 61 procedure codes.
    let mut too_many_values = format!("{ISA}GS*HP~ST*835*1~CLP*SECRETCLAIM*1~");
    for i in 0..61 {
        too_many_values.push_str(&format!("SVC*HC:SECRET{i:02}*1*1~"));
    }
    too_many_values.push_str("SE~");

    for (body, code, setting, limit) in [
        (
            &too_many_claims,
            "too_many_claims",
            "search.max_claims_per_document",
            "10",
        ),
        (
            &too_many_values,
            "too_many_fields",
            "search.max_values_per_field",
            "60",
        ),
    ] {
        let r = app
            .upload(
                &key,
                "eob",
                "application/edi-x12",
                body.clone().into_bytes(),
                &[],
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["code"], code, "{err}");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains(setting) && message.contains(limit),
            "{message}"
        );
        assert!(!message.contains("SECRET"), "{message}");
        assert!(
            claims.iter().all(|c| !message.contains(&c.claim_id)),
            "{message}"
        );
        // Opaque stores it as given.
        let r = app
            .upload(
                &key,
                "eob",
                "application/edi-x12",
                body.clone().into_bytes(),
                &[("X-Vault-Extraction", "opaque")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = app
        .upload(&key, "eob", "application/edi-x12", within.into_bytes(), &[])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Caller-supplied fields count too.
    let member_ids: Vec<String> = (0..61).map(|i| format!("W{i:05}")).collect();
    let fields = serde_json::json!({ "member_id": member_ids }).to_string();
    let r = app
        .upload(
            &key,
            "scan",
            "application/pdf",
            b"%PDF-1.7".to_vec(),
            &[("X-Vault-Fields", &fields)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["code"], "too_many_fields", "{err}");

    // Only the three documents accepted are there.
    let listed: Value = app
        .get_as(&key, "/v1/documents?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["documents"].as_array().unwrap().len(), 3, "{listed}");
}

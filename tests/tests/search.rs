//! Blind-indexed search, end to end: a tenant loaded with every X12 and FHIR
//! sample of `../shared/data` plus generated documents answers each query with
//! exactly the documents a plaintext scan of the same files finds; another tenant
//! finds nothing; the index directory holds no plaintext; the index survives a
//! restart, is rebuilt when lost, and follows deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;
use vault_e2e::{shared_data, Backend, TestApp};
use vault_index::extract;
use vault_index::fields::{search_terms, Field, Fields};
use vault_index::query::Query;
use vault_index::synth::{self, SynthClaim};

/// A document as uploaded, with what a plaintext scan finds in it.
struct Uploaded {
    id: String,
    terms: BTreeSet<(Field, String)>,
    /// Raw values, to look for in the index directory.
    fields: Fields,
}

/// One document to upload.
struct Doc {
    kind: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    caller_fields: Option<String>,
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read corpus dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every X12 and FHIR sample of the shared corpus.
fn corpus() -> Vec<Doc> {
    let data = shared_data();
    let mut docs = Vec::new();
    for path in files_under(&data.join("x12")) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("LICENSE") {
            continue;
        }
        let body = std::fs::read(&path).expect("read sample");
        let kind = if body.windows(6).any(|w| w == b"ST*835" || w == b"ST|835") {
            "eob"
        } else {
            "claim"
        };
        docs.push(Doc {
            kind,
            content_type: "application/edi-x12",
            body,
            caller_fields: None,
        });
    }
    for path in files_under(&data.join("fhir")) {
        if path.extension().and_then(|e| e.to_str()) != Some("json")
            || path.file_name().and_then(|n| n.to_str()) == Some("package.json")
        {
            continue;
        }
        docs.push(Doc {
            kind: "eob",
            content_type: "application/fhir+json",
            body: std::fs::read(&path).expect("read sample"),
            caller_fields: None,
        });
    }
    docs
}

/// Generated 835s, 837s, FHIR resources and scans with caller fields. Claims are
/// drawn from a small pool of patients so that queries find several documents.
fn generated() -> Vec<Doc> {
    let claims = SynthClaim::batch(4242, 120);
    let mut docs = Vec::new();
    for chunk in claims[..40].chunks(4) {
        docs.push(Doc {
            kind: "eob",
            content_type: "application/edi-x12",
            body: synth::x12::remittance_835(chunk, synth::x12::X12Version::V5010).into_bytes(),
            caller_fields: None,
        });
    }
    for chunk in claims[40..70].chunks(3) {
        docs.push(Doc {
            kind: "claim",
            content_type: "application/edi-x12",
            body: synth::x12::claim_837(
                chunk,
                synth::x12::ClaimVariant::Professional,
                synth::x12::X12Version::V5010,
            )
            .into_bytes(),
            caller_fields: None,
        });
    }
    for claim in &claims[70..100] {
        docs.push(Doc {
            kind: "eob",
            content_type: "application/fhir+json",
            body: synth::fhir::explanation_of_benefit(claim, synth::fhir::PatientLayout::Contained)
                .into_bytes(),
            caller_fields: None,
        });
    }
    // Scans reuse patients of the X12 documents, so queries cross formats.
    for claim in claims[..20].iter().chain(&claims[100..]) {
        let fields = serde_json::json!({
            "patient_name": claim.patient_name(),
            "member_id": claim.member_id,
            "service_date": claim.service_dates[0],
            "patient_dob": claim.dob,
        });
        docs.push(Doc {
            kind: "scan",
            content_type: "application/pdf",
            body: format!("%PDF-1.7 synthetic scan {}", claim.claim_id).into_bytes(),
            caller_fields: Some(fields.to_string()),
        });
    }
    docs
}

/// What a plaintext scan finds in a document: extraction where it applies, plus
/// the caller's fields.
fn plaintext_fields(doc: &Doc) -> Option<Fields> {
    let mut fields = match doc.caller_fields.as_deref() {
        Some(raw) => {
            let value: BTreeMap<String, Value> = serde_json::from_str(raw).expect("fields json");
            value
                .into_iter()
                .map(|(k, v)| (k, vec![v.as_str().expect("string").to_owned()]))
                .collect()
        }
        None => Fields::new(),
    };
    if doc.kind != "scan" {
        if let Some(format) = extract::detect(&doc.body, doc.content_type) {
            let extracted = extract::extract(format, &doc.body).ok()?;
            for (name, values) in extracted {
                fields.entry(name).or_default().extend(values);
            }
        }
    }
    Some(fields)
}

async fn load(app: &TestApp, key: &str, docs: &[Doc]) -> Vec<Uploaded> {
    let mut uploaded = Vec::new();
    for doc in docs {
        let mut headers = Vec::new();
        if let Some(fields) = &doc.caller_fields {
            headers.push(("X-Vault-Fields", fields.as_str()));
        }
        let expected = plaintext_fields(doc);
        if expected.is_none() {
            // Unreadable X12 / FHIR: refused with where it failed, then stored opaque.
            let r = app
                .upload(key, doc.kind, doc.content_type, doc.body.clone(), &headers)
                .await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let body: Value = r.json().await.expect("error json");
            assert_eq!(body["code"], "extraction_failed");
            assert!(
                body["message"].as_str().unwrap_or("").contains(" at "),
                "{body}"
            );
            headers.push(("X-Vault-Extraction", "opaque"));
        }
        let r = app
            .upload(key, doc.kind, doc.content_type, doc.body.clone(), &headers)
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        let body: Value = r.json().await.expect("upload json");
        let fields = expected.unwrap_or_default();
        let terms = search_terms(&fields);
        let indexed: BTreeSet<String> = body["indexed_fields"]
            .as_array()
            .expect("indexed_fields")
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_owned())
            .collect();
        let expected_names: BTreeSet<String> =
            terms.iter().map(|(f, _)| f.name().to_owned()).collect();
        assert_eq!(indexed, expected_names);
        uploaded.push(Uploaded {
            id: body["id"].as_str().expect("id").to_owned(),
            terms,
            fields,
        });
    }
    uploaded
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Queries over values the documents hold, plus combinations and misses.
fn queries(docs: &[Uploaded]) -> Vec<String> {
    let mut out = BTreeSet::new();
    let wanted = [
        Field::PatientName,
        Field::PatientLastName,
        Field::MemberId,
        Field::ClaimId,
        Field::PayerClaimId,
        Field::ProviderNpi,
        Field::TraceNumber,
        Field::ServiceDate,
        Field::ProcedureCode,
        Field::DiagnosisCode,
        Field::PatientNameDob,
        Field::Payer,
        Field::ClaimStatus,
        Field::PatientDob,
        Field::MemberIdLast4,
    ];
    for (i, doc) in docs.iter().enumerate() {
        for field in wanted {
            if let Some(value) = doc.fields.get(field.name()).and_then(|v| v.first()) {
                // Every document gives a few fields, every third gives all.
                if i % 3 == 0
                    || matches!(field, Field::PatientName | Field::MemberId | Field::ClaimId)
                {
                    out.insert(format!("{}:{}", field.name(), quoted(value)));
                }
            }
        }
        let names = doc.fields.get("patient_name");
        let dates = doc.fields.get("service_date");
        if let (Some(name), Some(date)) =
            (names.and_then(|v| v.first()), dates.and_then(|v| v.first()))
        {
            if let Some(month) = vault_index::normalize::month(date) {
                out.insert(format!(
                    "patient_name:{} AND service_month:[{month} TO {month}]",
                    quoted(name)
                ));
            }
            out.insert(format!(
                "(patient_name:{} OR service_date:{}) NOT claim_status:1",
                quoted(name),
                quoted(date)
            ));
        }
    }
    out.insert("service_month:[2019-01 TO 2020-06]".into());
    out.insert("member_id:NOSUCHMEMBER0 OR claim_id:NOSUCHCLAIM0".into());
    out.insert("procedure_code:99213 AND NOT diagnosis_code:I10".into());
    // Values of the wrong shape (a four-digit "NPI" in a sample) are stored and
    // readable but not searchable: no query is made of them.
    out.into_iter()
        .filter(|q| Query::parse(q).is_ok())
        .collect()
}

async fn search_all(app: &TestApp, key: &str, query: &str, limit: usize) -> (u64, Vec<String>) {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    loop {
        let mut request = app
            .http
            .get(app.at("/v1/search"))
            .bearer_auth(key)
            .query(&[("q", query), ("limit", &limit.to_string())]);
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        }
        let r = request.send().await.expect("search");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{query}: {}",
            r.text().await.unwrap_or_default()
        );
        let page: Value = r.json().await.expect("search json");
        let page_total = page["total"].as_u64().expect("total");
        assert_eq!(
            *total.get_or_insert(page_total),
            page_total,
            "total stays put across pages"
        );
        ids.extend(
            page["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| h["id"].as_str().expect("hit id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    (total.unwrap_or(0), ids)
}

fn expected_ids(docs: &[Uploaded], query: &Query) -> BTreeSet<String> {
    docs.iter()
        .filter(|d| query.matches(&d.terms))
        .map(|d| d.id.clone())
        .collect()
}

async fn assert_parity(app: &TestApp, key: &str, docs: &[Uploaded], queries: &[String]) -> usize {
    let mut non_empty = 0;
    for text in queries {
        let query = Query::parse(text).expect("test queries parse");
        let expected = expected_ids(docs, &query);
        let (total, ids) = search_all(app, key, text, 1000).await;
        let found: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(found.len(), ids.len(), "{text}: no document twice");
        assert_eq!(
            found, expected,
            "{text}: exactly the plaintext scan's documents"
        );
        assert_eq!(total as usize, expected.len(), "{text}");
        non_empty += usize::from(!expected.is_empty());
    }
    non_empty
}

/// Long, distinctive plaintext values that must never appear in the index files.
fn distinctive_values(docs: &[Uploaded]) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for doc in docs {
        for vs in doc.fields.values() {
            for v in vs {
                let v = v.trim();
                // Short or hex-only values could occur by chance in token terms.
                if v.len() >= 6
                    && v.chars()
                        .any(|c| c.is_ascii_alphabetic() && !c.is_ascii_hexdigit())
                {
                    values.insert(v.to_owned());
                    values.insert(vault_index::normalize::name(v));
                }
            }
        }
        for (field, term) in &doc.terms {
            if term.len() >= 6
                && term
                    .chars()
                    .any(|c| c.is_ascii_alphabetic() && !c.is_ascii_hexdigit())
                && *field != Field::Payer
            {
                values.insert(term.clone());
            }
        }
    }
    values.retain(|v| v.len() >= 6);
    values
}

fn index_files(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    files_under(&app.data_dir.join("index"))
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("read index file"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_a_plaintext_scan_of_the_corpus() {
    let app = TestApp::builder().backend(Backend::Fs).start().await;
    app.create_tenant("acme").await;
    app.create_tenant("other").await;
    let key = app
        .api_key("acme", &["uploader", "reader", "tenant-admin"])
        .await;
    let other = app.api_key("other", &["uploader", "reader"]).await;

    let mut docs = corpus();
    let corpus_len = docs.len();
    docs.extend(generated());
    let uploaded = load(&app, &key, &docs).await;
    assert!(
        corpus_len > 100,
        "the shared corpus is loaded: {corpus_len} files"
    );
    let with_fields = uploaded.iter().filter(|d| !d.terms.is_empty()).count();
    assert!(
        with_fields > 150,
        "most documents have fields: {with_fields}"
    );

    // Searchable as soon as the upload was answered.
    let queries = queries(&uploaded);
    assert!(queries.len() > 200, "{} queries", queries.len());
    let non_empty = assert_parity(&app, &key, &uploaded, &queries).await;
    assert!(non_empty > 200, "most queries find documents: {non_empty}");

    // Known values of real samples, found by a person's spelling of them.
    for (query, at_least) in [
        ("patient_last_name:bach", 1),
        ("claim_id:\"2005555A\" OR claim_id:2005555a", 1),
        ("payer_claim_id:4276512332", 1),
    ] {
        let (total, _) = search_all(&app, &key, query, 50).await;
        assert!(total >= at_least, "{query}: {total}");
    }

    // Generated claims: every document carrying a claim is found by its member id.
    for claim in SynthClaim::batch(4242, 120).iter().take(20) {
        let q = format!("member_id:{}", claim.member_id);
        let (total, _) = search_all(&app, &key, &q, 1000).await;
        assert!(
            total >= 2,
            "{q}: an 835 and a scan carry this member id ({total})"
        );
    }

    // Pagination: small pages give the same set as one large page.
    let broad = "service_month:[2019-01 TO 2025-12]";
    let (total_small, small) = search_all(&app, &key, broad, 7).await;
    let (total_large, large) = search_all(&app, &key, broad, 1000).await;
    assert_eq!(total_small, total_large);
    assert_eq!(small, large, "the same order page by page");
    assert!(total_small > 50);

    // Another tenant's keys find nothing of acme's.
    for query in queries.iter().take(60) {
        let (total, ids) = search_all(&app, &other, query, 1000).await;
        assert_eq!((total, ids.len()), (0, 0), "{query} from another tenant");
    }

    // The index directory holds none of the plaintext values.
    let files = index_files(&app);
    assert!(!files.is_empty());
    let values = distinctive_values(&uploaded);
    assert!(values.len() > 100, "{} values checked", values.len());
    for (path, bytes) in &files {
        let lower = String::from_utf8_lossy(bytes).to_lowercase();
        for value in &values {
            assert!(
                !lower.contains(&value.to_lowercase()),
                "a plaintext value appears in {path}"
            );
        }
    }

    // Deleting a document removes it from results at once.
    let victim = uploaded
        .iter()
        .find(|d| d.fields.contains_key("member_id"))
        .expect("a document with a member id");
    let member = &victim.fields["member_id"][0];
    let q = format!("member_id:{}", quoted(member));
    let (before, _) = search_all(&app, &key, &q, 1000).await;
    let r = app
        .http
        .delete(app.at(&format!("/v1/documents/{}", victim.id)))
        .bearer_auth(&key)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (after, ids) = search_all(&app, &key, &q, 1000).await;
    assert_eq!(after + 1, before);
    assert!(!ids.contains(&victim.id));
    let victim_id = victim.id.clone();
    let remaining: Vec<Uploaded> = uploaded.into_iter().filter(|d| d.id != victim_id).collect();

    // Lost index: removed while the server is down, rebuilt at start-up.
    let mut app = app;
    app.kill();
    std::fs::remove_dir_all(app.data_dir.join("index")).expect("remove index");
    let app = app.restart().await;
    let sample: Vec<String> = queries.iter().step_by(5).cloned().collect();
    assert_parity(&app, &key, &remaining, &sample).await;

    // Rebuild on request, through the CLI.
    let out = app.cli(&["--json", "index", "rebuild", "--tenant", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("rebuild json");
    assert_eq!(report["documents"].as_u64(), Some(remaining.len() as u64));
    assert_eq!(report["added"].as_u64(), Some(remaining.len() as u64));
    assert_eq!(report["failed"].as_u64(), Some(0));
    assert_parity(&app, &key, &remaining, &sample).await;
}

#[tokio::test]
async fn bad_queries_and_bad_documents_get_clear_errors() {
    let app = TestApp::builder().start().await;
    app.create_tenant("acme").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let uploader = app.api_key("acme", &["uploader"]).await;

    for (query, position) in [
        ("member_id:", "position 11"),
        ("(member_id:W1", "position"),
        ("ssn:123456789", "position 1"),
        ("member_id:W1 AND", "position"),
        ("service_date:yesterday", "position"),
        ("service_month:[2024-03 TO 2024-01]", "position"),
    ] {
        let r = app
            .http
            .get(app.at("/v1/search"))
            .bearer_auth(&key)
            .query(&[("q", query)])
            .send()
            .await
            .expect("search");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], "invalid_query", "{query}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(message.contains(position), "{query}: {message}");
        assert!(
            !message.contains("123456789") && !message.contains("yesterday"),
            "{message}"
        );
    }
    let r = app.get_as(&uploader, "/v1/search?q=member_id:W1").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .get_as(&key, "/v1/search?q=member_id:W1&cursor=junk")
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app.get_as(&key, "/v1/search?q=member_id:W1&limit=0").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Malformed X12 and JSON: 422 with the place, never a value; opaque stores it.
    let bad_x12 = b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*^*00501*000000001*0*P*:~GS*HC*S*R*20240101*1200*1*X*005010X222A1~ST*837*0001~**SECRETVALUE~".to_vec();
    for (body, content_type) in [
        (bad_x12.clone(), "application/edi-x12"),
        (
            b"{\"resourceType\": \"ExplanationOfBenefit\", \"patient\": SECRETVALUE".to_vec(),
            "application/fhir+json",
        ),
        (
            b"SECRETVALUE, not X12 at all".to_vec(),
            "application/edi-x12",
        ),
    ] {
        let r = app
            .upload(&key, "claim", content_type, body.clone(), &[])
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let err: Value = r.json().await.expect("json");
        assert_eq!(err["code"], "extraction_failed");
        assert!(
            !err["message"]
                .as_str()
                .unwrap_or("")
                .contains("SECRETVALUE"),
            "{err}"
        );
        let r = app
            .upload(
                &key,
                "claim",
                content_type,
                body,
                &[("X-Vault-Extraction", "opaque")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let stored: Value = r.json().await.expect("json");
        assert_eq!(stored["indexed_fields"], serde_json::json!([]));
    }
    // Nothing of the refused uploads is left visible.
    let listed: Value = app
        .get_as(&key, "/v1/documents?limit=100")
        .await
        .json()
        .await
        .expect("list json");
    assert_eq!(listed["documents"].as_array().map(Vec::len), Some(3));

    // Caller fields are checked for shape.
    let r = app
        .upload(
            &key,
            "scan",
            "application/pdf",
            b"%PDF".to_vec(),
            &[("X-Vault-Fields", r#"{"provider_npi": "12"}"#)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app
        .upload(
            &key,
            "scan",
            "application/pdf",
            b"%PDF".to_vec(),
            &[("X-Vault-Extraction", "maybe")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_works_on_s3_with_kms_keys() {
    let app = TestApp::builder()
        .backend(Backend::S3)
        .aws_kms()
        .start()
        .await;
    app.create_tenant_with("acme", "aws-kms").await;
    let key = app.api_key("acme", &["uploader", "reader"]).await;
    let docs: Vec<Doc> = generated().into_iter().step_by(3).collect();
    let uploaded = load(&app, &key, &docs).await;
    let queries: Vec<String> = queries(&uploaded).into_iter().step_by(3).collect();
    let non_empty = assert_parity(&app, &key, &uploaded, &queries).await;
    assert!(non_empty > 20, "{non_empty}");
    // The index is local and derived: lost, it is rebuilt from the bucket.
    let mut app = app;
    app.kill();
    std::fs::remove_dir_all(app.data_dir.join("index")).expect("remove index");
    let app = app.restart().await;
    assert_parity(&app, &key, &uploaded, &queries).await;
}

//! Search latency of the blind index against a plaintext Tantivy index of the same
//! fields, in the same run, and the indexing rate.
//!
//! Both indexes hold the same synthetic documents (one claim each, patients
//! shared by about four documents). The blind side does what the server does for a
//! search apart from HTTP: blind tokens for the query, candidates from Tantivy,
//! each candidate's sealed exact tags opened and the query evaluated over them,
//! and, for a candidate without sealed tags (too many values), its key record read
//! from disk, the DEK unwrapped, the metadata decrypted and the query evaluated. The plaintext side answers
//! from `field:value` terms alone. Every query's two answers are checked equal.
//!
//! `cargo bench -p vault-index --bench search [-- --docs N --queries Q --json FILE]`
//! (`--quick`: 10,000 documents).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use vault_crypto::blind::IndexRootKey;
use vault_crypto::envelope::{self, BodyHeader, KeyRecord, KeyRef};
use vault_crypto::{DocumentId, Key256, TenantId};
use vault_index::blind_index::{BlindIndex, IndexedDocument};
use vault_index::fields::{search_terms, Field, Fields};
use vault_index::plaintext_baseline::PlainIndex;
use vault_index::planner::TokenPlan;
use vault_index::query::Query;
use vault_index::synth::{expected_fields, SynthClaim};
use vault_index::tokens::{Exactness, Tokenizer};

struct Options {
    docs: usize,
    queries: usize,
    json: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        docs: 100_000,
        queries: 2_000,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--docs" => o.docs = args.next().and_then(|v| v.parse().ok()).unwrap_or(o.docs),
            "--queries" => {
                o.queries = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(o.queries)
            }
            "--json" => o.json = args.next().map(PathBuf::from),
            "--quick" => {
                o.docs = 10_000;
                o.queries = 500;
            }
            _ => {} // cargo bench passes --bench
        }
    }
    o
}

/// Documents with one claim each; about four documents per patient.
fn documents(count: usize) -> Vec<Fields> {
    let mut rng = StdRng::seed_from_u64(20_261_124);
    let patients = SynthClaim::batch(1, (count / 4).max(1));
    (0..count)
        .map(|_| {
            let mut claim = SynthClaim::random(&mut rng);
            let patient = patients.choose(&mut rng).unwrap_or(&patients[0]);
            claim.last_name.clone_from(&patient.last_name);
            claim.first_name.clone_from(&patient.first_name);
            claim.dob.clone_from(&patient.dob);
            claim.member_id.clone_from(&patient.member_id);
            expected_fields(&[claim], true, true)
        })
        .collect()
}

fn first(fields: &Fields, field: Field) -> String {
    fields
        .get(field.name())
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default()
}

fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\\\""))
}

/// A mix of the queries billing staff run, each for a value some document holds.
fn queries(docs: &[Fields], count: usize) -> Vec<(&'static str, Query)> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..count)
        .map(|i| {
            let d = &docs[rng.gen_range(0..docs.len())];
            let (class, text) = match i % 6 {
                0 => ("member_id", format!("member_id:{}", quoted(&first(d, Field::MemberId)))),
                1 => ("claim_id", format!("claim_id:{}", quoted(&first(d, Field::ClaimId)))),
                2 => (
                    "name+dob",
                    format!("patient_name_dob:{}", quoted(&first(d, Field::PatientNameDob))),
                ),
                3 => (
                    "trace_number",
                    format!("trace_number:{}", quoted(&first(d, Field::TraceNumber))),
                ),
                4 => (
                    "npi AND date",
                    format!(
                        "provider_npi:{} AND service_date:{}",
                        first(d, Field::ProviderNpi),
                        first(d, Field::ServiceDate)
                    ),
                ),
                _ => {
                    let month = vault_index::normalize::month(&first(d, Field::ServiceDate))
                        .unwrap_or_default();
                    (
                        "last name AND month",
                        format!(
                            "patient_last_name:{} AND patient_name:{} AND service_month:[{month} TO {month}]",
                            quoted(
                                &vault_index::fields::last_name(&first(d, Field::PatientName))
                                    .unwrap_or_default()
                            ),
                            quoted(&first(d, Field::PatientName))
                        ),
                    )
                }
            };
            (class, Query::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}")))
        })
        .collect()
}

/// The blind side: index, tokenizer, and key records on disk.
struct Blind {
    index: BlindIndex,
    tokenizer: Tokenizer,
    branch: Key256,
    records: PathBuf,
}

impl Blind {
    fn search(&self, query: &Query) -> BTreeSet<String> {
        let candidates = self
            .index
            .candidates(query, &self.tokenizer, usize::MAX)
            .expect("candidates");
        candidates
            .into_iter()
            .filter(|c| {
                if c.exactness == Exactness::Matches {
                    return true;
                }
                let bytes = std::fs::read(self.records.join(&c.document.id)).expect("key record");
                let record = KeyRecord::parse(&bytes).expect("parse");
                let dek = record.unwrap_dek(&self.branch).expect("unwrap");
                let metadata = record.open_metadata(&dek).expect("metadata");
                let fields: Fields = serde_json::from_slice(&metadata).expect("json");
                query.matches(&search_terms(&fields))
            })
            .map(|c| c.document.id)
            .collect()
    }
}

fn build_blind(dir: &Path, docs: &[Fields]) -> (Blind, Vec<String>, f64, f64) {
    let tenant = TenantId::new("bench").expect("tenant");
    let tokenizer = Tokenizer::new(
        &IndexRootKey::new(Key256::random(), 1),
        TokenPlan::new(docs.len() as u64, &BTreeMap::new()),
    );
    let (index, _) = BlindIndex::open(&dir.join("blind"), &tokenizer).expect("open");
    let records = dir.join("records");
    std::fs::create_dir_all(&records).expect("records dir");
    let branch = Key256::random();
    let key_ref = KeyRef {
        provider: "local".into(),
        kek_id: "bench".into(),
        version: 1,
    };
    // Sealing records is the upload's cost, not the index's: timed apart.
    let sealing = Instant::now();
    let mut ids = Vec::with_capacity(docs.len());
    for fields in docs {
        let id = DocumentId::random();
        let dek = Key256::random();
        let (header, _) = envelope::begin_body(&dek, &tenant, id, 65_536).expect("header");
        let (header, _) = BodyHeader::parse(&header).expect("header");
        let metadata = serde_json::to_vec(fields).expect("json");
        let record =
            KeyRecord::seal(&dek, &header, &branch, key_ref.clone(), &metadata).expect("seal");
        std::fs::write(records.join(id.to_string()), record.encode()).expect("write record");
        ids.push(id.to_string());
    }
    let sealing_s = sealing.elapsed().as_secs_f64();
    let started = Instant::now();
    for (i, (fields, id)) in docs.iter().zip(&ids).enumerate() {
        let tokens = tokenizer
            .document_tokens(id, &search_terms(fields))
            .expect("terms");
        let doc = IndexedDocument {
            id: id.clone(),
            kind: "eob".into(),
            uploaded_at_micros: i as i64,
        };
        index.add(&doc, &tokens).expect("add");
    }
    index.commit(None).expect("commit");
    let rate = docs.len() as f64 / started.elapsed().as_secs_f64();
    (
        Blind {
            index,
            tokenizer,
            branch,
            records,
        },
        ids,
        rate,
        docs.len() as f64 / sealing_s,
    )
}

/// The baseline: the same terms in plaintext, exact without a post-filter.
fn build_plain(dir: &Path, docs: &[Fields], ids: &[String]) -> (PlainIndex, f64) {
    let mut plain = PlainIndex::create(&dir.join("plain")).expect("create");
    let started = Instant::now();
    for (fields, doc_id) in docs.iter().zip(ids) {
        plain.add(doc_id, fields).expect("add");
    }
    plain.commit().expect("commit");
    let rate = docs.len() as f64 / started.elapsed().as_secs_f64();
    (plain, rate)
}

fn plain_search(plain: &PlainIndex, query: &Query) -> BTreeSet<String> {
    plain.search(query).expect("search").into_iter().collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("generating {} documents", o.docs);
    let docs = documents(o.docs);
    let (blind, ids, blind_rate, seal_rate) = build_blind(dir.path(), &docs);
    let (plain, plain_rate) = build_plain(dir.path(), &docs, &ids);
    let queries = queries(&docs, o.queries);

    // Warm both (page cache, Tantivy caches), then time them interleaved.
    for (_, q) in queries.iter().take(200) {
        blind.search(q);
        plain_search(&plain, q);
    }
    let mut by_class: BTreeMap<&str, (Vec<f64>, Vec<f64>, usize)> = BTreeMap::new();
    let (mut all_blind, mut all_plain) = (Vec::new(), Vec::new());
    let mut candidates = 0usize;
    for (class, query) in &queries {
        let t = Instant::now();
        let blind_hits = blind.search(query);
        let blind_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let plain_hits = plain_search(&plain, query);
        let plain_ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(blind_hits, plain_hits, "blind and plaintext answers differ");
        candidates += blind
            .index
            .candidates(query, &blind.tokenizer, usize::MAX)
            .map(|c| c.len())
            .unwrap_or(0);
        let entry = by_class.entry(class).or_default();
        entry.0.push(blind_ms);
        entry.1.push(plain_ms);
        entry.2 += plain_hits.len();
        all_blind.push(blind_ms);
        all_plain.push(plain_ms);
    }
    let sort = |v: &mut Vec<f64>| v.sort_by(|a, b| a.total_cmp(b));
    sort(&mut all_blind);
    sort(&mut all_plain);

    println!(
        "\n### Search, {} documents, {} queries (blind = tokens + candidates + decrypt + exact filter)\n",
        o.docs,
        queries.len()
    );
    println!("| queries | blind p50 ms | blind p99 ms | plaintext p50 ms | plaintext p99 ms | p99 ratio | hits/query |");
    println!("|---|---|---|---|---|---|---|");
    let mut classes_json = serde_json::Map::new();
    for (class, (b, p, hits)) in &mut by_class {
        sort(b);
        sort(p);
        let n = b.len();
        println!(
            "| {class} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2}x | {:.1} |",
            percentile(b, 50.0),
            percentile(b, 99.0),
            percentile(p, 50.0),
            percentile(p, 99.0),
            percentile(b, 99.0) / percentile(p, 99.0).max(1e-9),
            *hits as f64 / n as f64
        );
        classes_json.insert(
            (*class).to_owned(),
            serde_json::json!({
                "blind_p50_ms": percentile(b, 50.0), "blind_p99_ms": percentile(b, 99.0),
                "plain_p50_ms": percentile(p, 50.0), "plain_p99_ms": percentile(p, 99.0),
                "hits_per_query": *hits as f64 / n as f64,
            }),
        );
    }
    let (b50, b99, p50, p99) = (
        percentile(&all_blind, 50.0),
        percentile(&all_blind, 99.0),
        percentile(&all_plain, 50.0),
        percentile(&all_plain, 99.0),
    );
    println!(
        "| **all** | {b50:.3} | {b99:.3} | {p50:.3} | {p99:.3} | {:.2}x | |",
        b99 / p99.max(1e-9)
    );
    println!(
        "\nIndexing: blind {blind_rate:.0} docs/s (tokens + Tantivy), plaintext {plain_rate:.0} docs/s ({:.2}x); key records sealed {seal_rate:.0}/s. Candidates per query {:.2}.",
        blind_rate / plain_rate,
        candidates as f64 / queries.len() as f64
    );
    if let Some(path) = o.json {
        let report = serde_json::json!({
            "documents": o.docs, "queries": queries.len(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "blind_p50_ms": b50, "blind_p99_ms": b99, "plain_p50_ms": p50, "plain_p99_ms": p99,
            "p99_ratio": b99 / p99.max(1e-9),
            "blind_index_docs_per_s": blind_rate, "plain_index_docs_per_s": plain_rate,
            "candidates_per_query": candidates as f64 / queries.len() as f64,
            "classes": classes_json,
        });
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&report).unwrap_or_default(),
        )
        .expect("write json");
    }
}

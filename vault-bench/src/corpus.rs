//! The documents of the benchmark tenant: 2–20 KiB X12 835 / 837 and FHIR
//! documents from `vault_index::synth` (with the fields extraction will find in
//! them and a search query for one of their values), the files of
//! `../shared/data/{x12,fhir}`, 1–20 MiB scans of random bytes, and the large
//! upload, a stream of seeded 1 MiB chunks that can be regenerated at any offset.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt as _;
use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, RngCore, SeedableRng};
use vault_index::fields::{Field, Fields, FieldsBuilder};
use vault_index::synth::fhir::{self, PatientLayout};
use vault_index::synth::x12::{self, ClaimVariant, X12Version};
use vault_index::synth::{expected_fields, SynthClaim};

/// Smallest and largest size of a synthetic document.
pub const SMALL_MIN: usize = 2 * 1024;
/// See [`SMALL_MIN`].
pub const SMALL_MAX: usize = 20 * 1024;

/// One document to upload.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The body.
    pub body: Bytes,
    /// `X-Vault-Kind`.
    pub kind: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// What it is (`x12-835`, `fhir-bundle`, `scan`, `shared`, ...).
    pub format: &'static str,
    /// Its searchable fields, as the server will hold them (for the plaintext
    /// index); empty for shared files until read back from the server.
    pub fields: Fields,
    /// `X-Vault-Fields` (scans).
    pub header_fields: Option<String>,
    /// A query class and a query this document must be found by.
    pub query: Option<(&'static str, String)>,
    /// A relative file name for the plaintext copy (shared files keep theirs).
    pub file_name: Option<String>,
}

/// The query classes, in the order they are handed out.
pub const QUERY_CLASSES: &[&str] = &[
    "claim_id",
    "member_id",
    "name+dob",
    "trace_number",
    "npi AND date",
];

#[derive(Clone, Copy, Debug)]
enum Family {
    Remit835,
    Claim837,
    Fhir,
}

/// Bytes of a rendered document: a fixed part and a part per claim.
#[derive(Clone, Copy, Debug)]
struct Size {
    base: f64,
    per_claim: f64,
}

/// Draws documents from a seed.
pub struct Generator {
    rng: StdRng,
    patients: Vec<SynthClaim>,
    sizes: [Size; 3],
    next_query: usize,
}

fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

fn first(fields: &Fields, field: Field) -> Option<&str> {
    fields
        .get(field.name())
        .and_then(|v| v.first())
        .map(String::as_str)
}

/// The query of class `class` for a document with these fields, if it has the
/// values for it.
pub fn query_for(class: &str, fields: &Fields) -> Option<String> {
    Some(match class {
        "claim_id" => format!("claim_id:{}", quoted(first(fields, Field::ClaimId)?)),
        "member_id" => format!("member_id:{}", quoted(first(fields, Field::MemberId)?)),
        "name+dob" => {
            let (name, dob) = first(fields, Field::PatientNameDob)?.rsplit_once('|')?;
            format!(
                "patient_name:{} AND patient_dob:{}",
                quoted(name),
                quoted(dob)
            )
        }
        "trace_number" => format!(
            "trace_number:{}",
            quoted(first(fields, Field::TraceNumber)?)
        ),
        "npi AND date" => format!(
            "provider_npi:{} AND service_date:{}",
            quoted(first(fields, Field::ProviderNpi)?),
            quoted(first(fields, Field::ServiceDate)?)
        ),
        _ => return None,
    })
}

impl Generator {
    /// A generator for a tenant of about `documents` documents (patients recur:
    /// about one patient per document, each in several claims).
    pub fn new(seed: u64, documents: usize) -> Generator {
        let patients = SynthClaim::batch(seed ^ 0x5eed, documents.max(16));
        let mut g = Generator {
            rng: StdRng::seed_from_u64(seed),
            patients,
            sizes: [Size {
                base: 0.0,
                per_claim: 1.0,
            }; 3],
            next_query: 0,
        };
        for (i, family) in [Family::Remit835, Family::Claim837, Family::Fhir]
            .into_iter()
            .enumerate()
        {
            let claims: Vec<SynthClaim> = (0..17).map(|_| g.claim()).collect();
            let one = g.render(family, &claims[..1]).0.len() as f64;
            let many = g.render(family, &claims[1..]).0.len() as f64;
            let per_claim = ((many - one) / 15.0).max(64.0);
            g.sizes[i] = Size {
                base: (one - per_claim).max(0.0),
                per_claim,
            };
        }
        g
    }

    /// A random claim of one of the tenant's patients.
    fn claim(&mut self) -> SynthClaim {
        let mut claim = SynthClaim::random(&mut self.rng);
        let patient = &self.patients[self.rng.gen_range(0..self.patients.len())];
        claim.last_name.clone_from(&patient.last_name);
        claim.first_name.clone_from(&patient.first_name);
        claim.dob.clone_from(&patient.dob);
        claim.member_id.clone_from(&patient.member_id);
        claim
    }

    /// Renders claims: body, kind, content type, format, fields.
    fn render(
        &mut self,
        family: Family,
        claims: &[SynthClaim],
    ) -> (String, &'static str, &'static str, &'static str, Fields) {
        const X12: &str = "application/edi-x12";
        const FHIR: &str = "application/fhir+json";
        let version = if self.rng.gen_bool(0.8) {
            X12Version::V5010
        } else {
            X12Version::V4010
        };
        match family {
            Family::Remit835 => (
                x12::remittance_835(claims, version),
                "eob",
                X12,
                "x12-835",
                expected_fields(claims, false, true),
            ),
            Family::Claim837 => {
                let (variant, format) = match self.rng.gen_range(0..10) {
                    0..=5 => (ClaimVariant::Professional, "x12-837p"),
                    6..=8 => (ClaimVariant::Institutional, "x12-837i"),
                    _ => (ClaimVariant::Dental, "x12-837d"),
                };
                (
                    x12::claim_837(claims, variant, version),
                    "claim",
                    X12,
                    format,
                    expected_fields(claims, true, false),
                )
            }
            Family::Fhir if claims.len() == 1 => {
                let layout = if self.rng.gen_bool(0.7) {
                    PatientLayout::Contained
                } else {
                    PatientLayout::Display
                };
                if self.rng.gen_bool(0.5) {
                    (
                        fhir::explanation_of_benefit(&claims[0], layout),
                        "eob",
                        FHIR,
                        "fhir-eob",
                        fhir::expected_fhir_fields(claims, layout),
                    )
                } else {
                    (
                        fhir::claim(&claims[0], layout),
                        "claim",
                        FHIR,
                        "fhir-claim",
                        fhir::expected_claim_fields(claims, layout),
                    )
                }
            }
            Family::Fhir => (
                fhir::bundle(claims),
                "eob",
                FHIR,
                "fhir-bundle",
                fhir::expected_fhir_fields(claims, PatientLayout::Contained),
            ),
        }
    }

    /// A 2–20 KiB X12 835 (35 %), X12 837 (35 %) or FHIR (30 %) document.
    pub fn small(&mut self) -> Doc {
        let (i, family) = match self.rng.gen_range(0..20) {
            0..=6 => (0, Family::Remit835),
            7..=13 => (1, Family::Claim837),
            _ => (2, Family::Fhir),
        };
        let target = self.rng.gen_range(SMALL_MIN..=SMALL_MAX) as f64;
        let size = self.sizes[i];
        let mut n = (((target - size.base) / size.per_claim).round() as usize).max(1);
        let mut claims: Vec<SynthClaim> = (0..n).map(|_| self.claim()).collect();
        let mut rendered = self.render(family, &claims);
        // Estimates are close; correct the few that fall outside 2–20 KiB.
        for _ in 0..8 {
            if rendered.0.len() > SMALL_MAX && n > 1 {
                n -= 1;
                claims.truncate(n);
            } else if rendered.0.len() < SMALL_MIN {
                n += 1;
                let claim = self.claim();
                claims.push(claim);
            } else {
                break;
            }
            rendered = self.render(family, &claims);
        }
        let (body, kind, content_type, format, fields) = rendered;
        let query = self.next_query(&fields);
        Doc {
            body: Bytes::from(body),
            kind,
            content_type,
            format,
            fields,
            header_fields: None,
            query,
            file_name: None,
        }
    }

    /// The next query class this document has values for, round robin.
    fn next_query(&mut self, fields: &Fields) -> Option<(&'static str, String)> {
        for k in 0..QUERY_CLASSES.len() {
            let class = QUERY_CLASSES[(self.next_query + k) % QUERY_CLASSES.len()];
            if let Some(q) = query_for(class, fields) {
                self.next_query = (self.next_query + k + 1) % QUERY_CLASSES.len();
                return Some((class, q));
            }
        }
        None
    }

    /// A scan of `size` bytes: a PDF header, random bytes, and caller-supplied
    /// fields of one claim.
    pub fn scan(&mut self, size: usize) -> Doc {
        let mut body = vec![0u8; size];
        SmallRng::seed_from_u64(self.rng.next_u64()).fill_bytes(&mut body);
        let header = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";
        let n = header.len().min(size);
        body[..n].copy_from_slice(&header[..n]);
        let c = self.claim();
        let mut b = FieldsBuilder::new();
        b.add(Field::PatientName, &c.patient_name());
        b.add(Field::PatientDob, &c.dob);
        b.add(Field::MemberId, &c.member_id);
        b.add(Field::ClaimId, &c.claim_id);
        let header_fields = serde_json::json!({
            "patient_name": c.patient_name(),
            "patient_dob": c.dob,
            "member_id": c.member_id,
            "claim_id": c.claim_id,
        })
        .to_string();
        Doc {
            body: Bytes::from(body),
            kind: "scan",
            content_type: "application/pdf",
            format: "scan",
            fields: b.build(),
            header_fields: Some(header_fields),
            query: None,
            file_name: None,
        }
    }

    /// A scan of 1–20 MiB.
    pub fn mixed_scan(&mut self) -> Doc {
        let size = self.rng.gen_range(1 << 20..=20 << 20);
        self.scan(size)
    }

    /// A random index below `n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n.max(1))
    }
}

/// The X12 and FHIR files under `dir/x12` and `dir/fhir` (licence and other
/// files left out), as documents with no known fields.
pub fn shared_files(dir: &Path) -> anyhow::Result<Vec<Doc>> {
    let mut paths = Vec::new();
    for sub in ["x12", "fhir"] {
        collect(&dir.join(sub), &mut paths)?;
    }
    paths.sort();
    let mut docs = Vec::new();
    for path in paths {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let body = std::fs::read(&path)?;
        let text = String::from_utf8_lossy(&body);
        let (kind, content_type, format) = match ext {
            "json" => {
                let kind = if text.contains("ExplanationOfBenefit") {
                    "eob"
                } else if text.contains("\"Claim\"") {
                    "claim"
                } else {
                    "other"
                };
                (kind, "application/fhir+json", "shared-fhir")
            }
            "txt" | "edi" => {
                let kind = if text.contains("835") { "eob" } else { "claim" };
                (kind, "application/edi-x12", "shared-x12")
            }
            _ => continue,
        };
        let name = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('/', "__");
        docs.push(Doc {
            body: Bytes::from(body),
            kind,
            content_type,
            format,
            fields: Fields::new(),
            header_fields: None,
            query: None,
            file_name: Some(format!("shared/{name}")),
        });
    }
    Ok(docs)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with("LICENSE"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Chunk size of the large upload.
pub const LARGE_CHUNK: usize = 1 << 20;

/// Chunk `index` of the large object of `seed`: always [`LARGE_CHUNK`] bytes (the
/// last chunk of an object is a prefix of it).
pub fn large_chunk(seed: u64, index: u64) -> Vec<u8> {
    let mut chunk = vec![0u8; LARGE_CHUNK];
    SmallRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .fill_bytes(&mut chunk);
    chunk
}

/// The chunks of a large object of `total` bytes, in order, as a body stream.
pub fn large_stream(
    seed: u64,
    total: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::iter(0..total.div_ceil(LARGE_CHUNK as u64)).map(move |i| {
        let mut chunk = large_chunk(seed, i);
        let start = i * LARGE_CHUNK as u64;
        chunk.truncate((total - start).min(LARGE_CHUNK as u64) as usize);
        Ok(Bytes::from(chunk))
    })
}

/// Bytes `offset..offset + len` of the large object of `seed` (regenerated).
pub fn large_range(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut pos = offset;
    let end = offset + len as u64;
    while pos < end {
        let index = pos / LARGE_CHUNK as u64;
        let chunk = large_chunk(seed, index);
        let from = (pos - index * LARGE_CHUNK as u64) as usize;
        let to = ((end - index * LARGE_CHUNK as u64) as usize).min(LARGE_CHUNK);
        out.extend_from_slice(&chunk[from..to]);
        pos = index * LARGE_CHUNK as u64 + to as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_documents_are_2_to_20_kib_and_carry_a_query() {
        let mut g = Generator::new(1, 1000);
        let mut formats = std::collections::BTreeSet::new();
        let mut classes = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = g.small();
            assert!(
                (SMALL_MIN..=SMALL_MAX).contains(&d.body.len()),
                "{} of {} bytes",
                d.format,
                d.body.len()
            );
            let (class, q) = d.query.clone().unwrap();
            let query = vault_index::query::Query::parse(&q).unwrap();
            assert!(
                query.matches(&vault_index::fields::search_terms(&d.fields)),
                "{q}"
            );
            formats.insert(d.format);
            classes.insert(class);
        }
        assert!(formats.len() >= 5, "{formats:?}");
        assert_eq!(classes.len(), QUERY_CLASSES.len(), "{classes:?}");
    }

    #[test]
    fn scans_have_their_size_and_fields() {
        let mut g = Generator::new(2, 10);
        let d = g.scan(100_000);
        assert_eq!(d.body.len(), 100_000);
        assert!(d.body.starts_with(b"%PDF-"));
        let header: Fields =
            serde_json::from_str::<serde_json::Value>(d.header_fields.as_deref().unwrap())
                .unwrap()
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), vec![v.as_str().unwrap().to_owned()]))
                .collect();
        assert_eq!(header, d.fields);
    }

    #[tokio::test]
    async fn large_ranges_match_the_stream() {
        let total = 3 * LARGE_CHUNK as u64 + 12_345;
        let chunks: Vec<Bytes> = large_stream(9, total).map(|c| c.unwrap()).collect().await;
        let whole: Vec<u8> = chunks.concat();
        assert_eq!(whole.len() as u64, total);
        for (offset, len) in [
            (0u64, 10usize),
            (LARGE_CHUNK as u64 - 5, 10),
            (12_345, 2 * LARGE_CHUNK + 7),
            (total - 100, 100),
        ] {
            assert_eq!(
                large_range(9, offset, len),
                whole[offset as usize..offset as usize + len]
            );
        }
        assert_ne!(large_chunk(9, 0), large_chunk(9, 1));
        assert_ne!(large_chunk(9, 0), large_chunk(10, 0));
    }
}

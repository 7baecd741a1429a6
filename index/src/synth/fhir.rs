//! Synthetic FHIR R4 ExplanationOfBenefit and Claim resources, and searchset
//! Bundles of EOBs.
//!
//! [`explanation_of_benefit`] and [`claim`] render one claim as one resource whose
//! patient, coverage, insurer and provider are either contained resources
//! referenced by `#id` ([`PatientLayout::Contained`]) or only named on the
//! references themselves, by `display` and logical `identifier`
//! ([`PatientLayout::Display`]: no birth date then). [`bundle`] writes a searchset
//! of EOBs with the Patient, Coverage and Organization resources they reference by
//! `Type/id` as included entries.
//!
//! FHIR writes values its own way, so [`expected_fhir_fields`] (EOBs, Bundles) and
//! [`expected_claim_fields`] (Claims) say what extraction must return: dates as
//! `YYYY-MM-DD`, names in mixed case (`Smith, John`; `John Smith` as a display),
//! ICD-10 codes with their dot (`E11.9`), and for EOBs the outcome `complete` as
//! the claim status. Their search terms are those of
//! [`super::expected_fields`]`(claims, true, false)` (without the birth date for
//! the display layout) plus that status. No trace number or payer claim id is
//! written.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::SynthClaim;
use crate::fields::{Field, Fields, FieldsBuilder};

/// Where a resource's patient, coverage, insurer and provider are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientLayout {
    /// Contained Patient, Coverage and Organization resources, referenced by `#id`.
    Contained,
    /// Only the references: the patient's `display` name, the coverage's member id
    /// and the insurer's payer id as logical identifiers, the provider's NPI. No
    /// birth date.
    Display,
}

const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const C4BB_IDENTIFIER_TYPE: &str = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBIdentifierType";
const US_NPI: &str = "http://hl7.org/fhir/sid/us-npi";
const ICD_10_CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const CLAIM_TYPE: &str = "http://terminology.hl7.org/CodeSystem/claim-type";
const ADJUDICATION: &str = "http://terminology.hl7.org/CodeSystem/adjudication";
const ORGANIZATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/organization-type";
const MEMBER_ID_SYSTEM: &str = "https://payer.example.org/fhir/member-id";
const CLAIM_NUMBER_SYSTEM: &str = "https://provider.example.org/fhir/patient-control-number";
const BASE_URL: &str = "https://fhir.example.org/r4";

/// One claim as an ExplanationOfBenefit (outcome `complete`).
pub fn explanation_of_benefit(claim: &SynthClaim, layout: PatientLayout) -> String {
    let (links, contained) = links(claim, layout);
    eob_value(claim, &links, contained).to_string()
}

/// One claim as a Claim (no outcome, so no claim status).
pub fn claim(claim: &SynthClaim, layout: PatientLayout) -> String {
    let (links, contained) = links(claim, layout);
    claim_value(claim, &links, contained).to_string()
}

/// A searchset Bundle: an ExplanationOfBenefit per claim (search mode `match`),
/// then the Patient, Coverage and Organization (payer, provider) resources they
/// reference as `Type/id` (mode `include`; one Organization per payer and per NPI).
pub fn bundle(claims: &[SynthClaim]) -> String {
    let mut matches = Vec::new();
    let mut includes = Vec::new();
    let mut organizations = BTreeSet::new();
    for (i, c) in claims.iter().enumerate() {
        let payer_id = format!("payer-{}", c.payer_id);
        let provider_id = format!("provider-{}", c.provider_npi);
        let links = Links {
            patient: json!({ "reference": format!("Patient/patient-{i}") }),
            coverage: json!({ "reference": format!("Coverage/coverage-{i}") }),
            insurer: json!({
                "reference": format!("Organization/{payer_id}"),
                "display": c.payer_name,
            }),
            provider: json!({ "reference": format!("Organization/{provider_id}") }),
        };
        matches.push(entry(eob_value(c, &links, None), "match"));
        includes.push(entry(
            patient_resource(c, &format!("patient-{i}")),
            "include",
        ));
        includes.push(entry(
            coverage_resource(c, &format!("coverage-{i}"), &links.patient, &links.insurer),
            "include",
        ));
        if organizations.insert(payer_id.clone()) {
            includes.push(entry(payer_resource(c, &payer_id), "include"));
        }
        if organizations.insert(provider_id.clone()) {
            includes.push(entry(provider_resource(c, &provider_id), "include"));
        }
    }
    matches.extend(includes);
    json!({
        "resourceType": "Bundle",
        "id": "synthetic-searchset",
        "type": "searchset",
        "total": claims.len(),
        "link": [{
            "relation": "self",
            "url": format!("{BASE_URL}/ExplanationOfBenefit?_include=*"),
        }],
        "entry": matches,
    })
    .to_string()
}

/// What extraction must find in [`explanation_of_benefit`]s of `claims` with
/// `layout`, or in their [`bundle`] (with [`PatientLayout::Contained`]).
pub fn expected_fhir_fields(claims: &[SynthClaim], layout: PatientLayout) -> Fields {
    let mut b = FieldsBuilder::new();
    for c in claims {
        add_expected(&mut b, c, layout);
        b.add(Field::ClaimStatus, "complete");
    }
    b.build()
}

/// What extraction must find in [`claim`]s of `claims` with `layout`: as for EOBs,
/// without a claim status.
pub fn expected_claim_fields(claims: &[SynthClaim], layout: PatientLayout) -> Fields {
    let mut b = FieldsBuilder::new();
    for c in claims {
        add_expected(&mut b, c, layout);
    }
    b.build()
}

fn add_expected(b: &mut FieldsBuilder, c: &SynthClaim, layout: PatientLayout) {
    b.add(Field::ClaimId, &c.claim_id);
    b.add(Field::MemberId, &c.member_id);
    b.add(Field::Payer, &c.payer_name);
    b.add(Field::Payer, &c.payer_id);
    b.add(Field::ProviderNpi, &c.provider_npi);
    for d in &c.service_dates {
        b.add(Field::ServiceDate, &fhir_date(d));
    }
    for p in &c.procedure_codes {
        b.add(Field::ProcedureCode, p);
    }
    for d in &c.diagnosis_codes {
        b.add(Field::DiagnosisCode, &icd10(d));
    }
    match layout {
        PatientLayout::Contained => {
            let name = format!("{}, {}", title(&c.last_name), title(&c.first_name));
            let dob = fhir_date(&c.dob);
            b.add(Field::PatientName, &name);
            b.add(Field::PatientDob, &dob);
            b.add(Field::PatientNameDob, &format!("{name}|{dob}"));
        }
        PatientLayout::Display => b.add(Field::PatientName, &display_name(c)),
    }
}

/// The references of one resource.
struct Links {
    patient: Value,
    coverage: Value,
    insurer: Value,
    provider: Value,
}

/// The references of a resource in `layout`, and its contained resources.
fn links(c: &SynthClaim, layout: PatientLayout) -> (Links, Option<Vec<Value>>) {
    match layout {
        PatientLayout::Contained => {
            let links = Links {
                patient: json!({ "reference": "#patient" }),
                coverage: json!({ "reference": "#coverage" }),
                insurer: json!({ "reference": "#payer", "display": c.payer_name }),
                provider: json!({ "reference": "#provider" }),
            };
            let contained = vec![
                patient_resource(c, "patient"),
                coverage_resource(c, "coverage", &links.patient, &links.insurer),
                payer_resource(c, "payer"),
                provider_resource(c, "provider"),
            ];
            (links, Some(contained))
        }
        PatientLayout::Display => (
            Links {
                patient: json!({ "display": display_name(c) }),
                coverage: json!({
                    "identifier": {
                        "type": { "coding": [{ "system": V2_0203, "code": "MB" }] },
                        "system": MEMBER_ID_SYSTEM,
                        "value": c.member_id,
                    },
                }),
                insurer: json!({
                    "display": c.payer_name,
                    "identifier": {
                        "type": { "coding": [{ "system": C4BB_IDENTIFIER_TYPE, "code": "payerid" }] },
                        "value": c.payer_id,
                    },
                }),
                provider: json!({ "identifier": { "system": US_NPI, "value": c.provider_npi } }),
            },
            None,
        ),
    }
}

fn eob_value(c: &SynthClaim, links: &Links, contained: Option<Vec<Value>>) -> Value {
    let mut eob = json!({
        "resourceType": "ExplanationOfBenefit",
        "id": format!("eob-{}", c.claim_id),
        "identifier": claim_identifiers(c),
        "status": "active",
        "type": { "coding": [{ "system": CLAIM_TYPE, "code": "professional" }] },
        "use": "claim",
        "patient": links.patient,
        "billablePeriod": billable_period(c),
        "created": created(c),
        "insurer": links.insurer,
        "provider": links.provider,
        "outcome": "complete",
        "careTeam": [{
            "sequence": 1,
            "provider": links.provider,
            "responsible": true,
            "role": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/claimcareteamrole",
                "code": "primary",
            }] },
        }],
        "diagnosis": diagnoses(c),
        "insurance": [{ "focal": true, "coverage": links.coverage }],
        "item": items(c, true),
        "total": [{
            "category": { "coding": [{ "system": ADJUDICATION, "code": "submitted" }] },
            "amount": money(c.total_charge_cents()),
        }],
    });
    with_contained(&mut eob, contained);
    eob
}

fn claim_value(c: &SynthClaim, links: &Links, contained: Option<Vec<Value>>) -> Value {
    let mut claim = json!({
        "resourceType": "Claim",
        "id": format!("claim-{}", c.claim_id),
        "identifier": claim_identifiers(c),
        "status": "active",
        "type": { "coding": [{ "system": CLAIM_TYPE, "code": "professional" }] },
        "use": "claim",
        "patient": links.patient,
        "billablePeriod": billable_period(c),
        "created": created(c),
        "insurer": links.insurer,
        "provider": links.provider,
        "priority": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/processpriority",
            "code": "normal",
        }] },
        "careTeam": [{ "sequence": 1, "provider": links.provider }],
        "diagnosis": diagnoses(c),
        "insurance": [{ "sequence": 1, "focal": true, "coverage": links.coverage }],
        "item": items(c, false),
        "total": money(c.total_charge_cents()),
    });
    with_contained(&mut claim, contained);
    claim
}

fn with_contained(resource: &mut Value, contained: Option<Vec<Value>>) {
    if let (Some(contained), Some(obj)) = (contained, resource.as_object_mut()) {
        obj.insert("contained".to_owned(), Value::Array(contained));
    }
}

fn entry(resource: Value, mode: &str) -> Value {
    let kind = resource["resourceType"].as_str().unwrap_or_default();
    let id = resource["id"].as_str().unwrap_or_default();
    json!({
        "fullUrl": format!("{BASE_URL}/{kind}/{id}"),
        "resource": resource,
        "search": { "mode": mode },
    })
}

fn patient_resource(c: &SynthClaim, id: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [{
            "type": { "coding": [{ "system": V2_0203, "code": "MB", "display": "Member Number" }] },
            "system": MEMBER_ID_SYSTEM,
            "value": c.member_id,
        }],
        "name": [{
            "use": "official",
            "family": title(&c.last_name),
            "given": [title(&c.first_name)],
        }],
        "gender": "unknown",
        "birthDate": fhir_date(&c.dob),
    })
}

fn coverage_resource(c: &SynthClaim, id: &str, patient: &Value, payer: &Value) -> Value {
    json!({
        "resourceType": "Coverage",
        "id": id,
        "status": "active",
        "subscriberId": c.member_id,
        "beneficiary": patient,
        "relationship": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
            "code": "self",
        }] },
        "payor": [payer],
    })
}

fn payer_resource(c: &SynthClaim, id: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "id": id,
        "identifier": [{
            "type": { "coding": [{ "system": C4BB_IDENTIFIER_TYPE, "code": "payerid" }] },
            "value": c.payer_id,
        }],
        "active": true,
        "type": [{ "coding": [{ "system": ORGANIZATION_TYPE, "code": "pay" }] }],
        "name": c.payer_name,
    })
}

fn provider_resource(c: &SynthClaim, id: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "id": id,
        "identifier": [{
            "type": { "coding": [{ "system": V2_0203, "code": "NPI" }] },
            "system": US_NPI,
            "value": c.provider_npi,
        }],
        "active": true,
        "type": [{ "coding": [{ "system": ORGANIZATION_TYPE, "code": "prov" }] }],
        "name": format!("Synthetic Clinic {}", c.claim_id),
    })
}

fn claim_identifiers(c: &SynthClaim) -> Value {
    json!([{
        "type": { "coding": [{ "system": C4BB_IDENTIFIER_TYPE, "code": "uc" }] },
        "system": CLAIM_NUMBER_SYSTEM,
        "value": c.claim_id,
    }])
}

fn billable_period(c: &SynthClaim) -> Value {
    let first = c.service_dates.iter().min().map(|d| fhir_date(d));
    let last = c.service_dates.iter().max().map(|d| fhir_date(d));
    json!({ "start": first, "end": last })
}

fn created(c: &SynthClaim) -> String {
    let last = c.service_dates.iter().max().map(|d| fhir_date(d));
    format!("{}T12:00:00Z", last.unwrap_or_default())
}

fn diagnoses(c: &SynthClaim) -> Value {
    c.diagnosis_codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            json!({
                "sequence": i + 1,
                "diagnosisCodeableConcept": { "coding": [{ "system": ICD_10_CM, "code": icd10(code) }] },
            })
        })
        .collect()
}

fn items(c: &SynthClaim, adjudicated: bool) -> Value {
    c.procedure_codes
        .iter()
        .zip(&c.service_dates)
        .zip(&c.line_charges_cents)
        .enumerate()
        .map(|(i, ((code, date), &cents))| {
            let mut item = json!({
                "sequence": i + 1,
                "productOrService": { "coding": [{ "system": procedure_system(code), "code": code }] },
                "servicedDate": fhir_date(date),
                "net": money(cents),
            });
            if adjudicated {
                if let Some(obj) = item.as_object_mut() {
                    obj.insert(
                        "adjudication".to_owned(),
                        json!([{
                            "category": { "coding": [{ "system": ADJUDICATION, "code": "submitted" }] },
                            "amount": money(cents),
                        }]),
                    );
                }
            }
            item
        })
        .collect()
}

fn money(cents: u64) -> Value {
    // Whole cents as a decimal: 12345 → 123.45 (f64 prints the shortest exact form).
    json!({ "value": cents as f64 / 100.0, "currency": "USD" })
}

fn procedure_system(code: &str) -> &'static str {
    match code.chars().next() {
        Some('D') => "http://www.ada.org/cdt",
        Some(c) if c.is_ascii_alphabetic() => {
            "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
        }
        _ => "http://www.ama-assn.org/go/cpt",
    }
}

/// `YYYYMMDD` → `YYYY-MM-DD`.
fn fhir_date(d8: &str) -> String {
    match (d8.get(0..4), d8.get(4..6), d8.get(6..8)) {
        (Some(y), Some(m), Some(d)) => format!("{y}-{m}-{d}"),
        _ => d8.to_owned(),
    }
}

/// An ICD-10 code as FHIR writes it, with the dot after the category (`E11.9`).
fn icd10(code: &str) -> String {
    match (code.get(..3), code.get(3..)) {
        (Some(category), Some(rest)) if !rest.is_empty() => format!("{category}.{rest}"),
        _ => code.to_owned(),
    }
}

/// `SMITH` → `Smith`.
fn title(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// The patient as a reference's display: `John Smith`.
fn display_name(c: &SynthClaim) -> String {
    format!("{} {}", title(&c.first_name), title(&c.last_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::search_terms;
    use crate::synth::expected_fields;

    #[test]
    fn values_are_written_the_fhir_way() {
        assert_eq!(fhir_date("20240307"), "2024-03-07");
        assert_eq!(icd10("E119"), "E11.9");
        assert_eq!(icd10("Z0000"), "Z00.00");
        assert_eq!(icd10("I10"), "I10");
        assert_eq!(title("OBRIEN"), "Obrien");
    }

    #[test]
    fn documents_are_json_and_depend_only_on_the_claims() {
        let claims = SynthClaim::batch(11, 6);
        for layout in [PatientLayout::Contained, PatientLayout::Display] {
            for c in &claims {
                let eob: Value = serde_json::from_str(&explanation_of_benefit(c, layout)).unwrap();
                assert_eq!(eob["resourceType"], "ExplanationOfBenefit");
                assert_eq!(
                    explanation_of_benefit(c, layout),
                    explanation_of_benefit(c, layout)
                );
                let resource: Value = serde_json::from_str(&claim(c, layout)).unwrap();
                assert_eq!(resource["resourceType"], "Claim");
                assert_eq!(resource.get("outcome"), None);
            }
        }
        let searchset: Value = serde_json::from_str(&bundle(&claims)).unwrap();
        let entries = searchset["entry"].as_array().unwrap();
        // Six EOBs, Patients and Coverages, plus at least one payer and provider.
        assert!(entries.len() >= 6 * 3 + 2);
        assert_eq!(
            entries[0]["resource"]["patient"]["reference"],
            "Patient/patient-0"
        );
    }

    #[test]
    fn fhir_expectations_search_like_the_x12_ones() {
        // The same claims give the same search terms in every format, up to what a
        // format carries: FHIR adds the outcome, the display layout lacks the DOB.
        let claims = SynthClaim::batch(3, 20);
        let x12 = search_terms(&expected_fields(&claims, true, false));
        let status = |t: &(Field, String)| t.0 == Field::ClaimStatus;

        let contained = search_terms(&expected_fhir_fields(&claims, PatientLayout::Contained));
        let extra: Vec<_> = contained.difference(&x12).collect();
        assert!(extra.iter().all(|&t| status(t)), "{extra:?}");
        assert!(x12.is_subset(&contained));
        let claim_terms = search_terms(&expected_claim_fields(&claims, PatientLayout::Contained));
        assert_eq!(claim_terms, x12);

        let display = search_terms(&expected_fhir_fields(&claims, PatientLayout::Display));
        let no_dob =
            |t: &&(Field, String)| !matches!(t.0, Field::PatientDob | Field::PatientNameDob);
        let x12_no_dob: BTreeSet<_> = x12.iter().filter(no_dob).cloned().collect();
        // "John Smith" has no comma, so no first-and-last short form is derived; its
        // sorted words are the same term anyway.
        assert!(x12_no_dob.is_subset(&display));
        assert!(display.difference(&x12_no_dob).all(status));
    }
}

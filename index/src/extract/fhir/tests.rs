use proptest::prelude::*;
use serde_json::{json, Value};

use super::resolve::MAX_RESOURCES;
use super::*;
use crate::extract::Format;
use crate::synth::fhir::{
    bundle, claim as synth_claim, expected_claim_fields, expected_fhir_fields,
    explanation_of_benefit, PatientLayout,
};
use crate::synth::SynthClaim;

fn fields(doc: &Value) -> Fields {
    extract(doc.to_string().as_bytes()).unwrap()
}

fn values<'f>(fields: &'f Fields, name: &str) -> Vec<&'f str> {
    fields
        .get(name)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

fn failure(doc: &[u8]) -> ExtractError {
    let e = extract(doc).unwrap_err();
    assert_eq!(e.format, Format::Fhir);
    e
}

const NPI: &str = "http://hl7.org/fhir/sid/us-npi";

fn patient_resource(id: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [
            { "type": { "coding": [{ "code": "MB" }] }, "value": "M123456789" },
            { "type": { "coding": [{ "code": "MR" }] }, "value": "MRN-NOT-A-MEMBER-ID" },
        ],
        "name": [{ "use": "official", "family": "Doe", "given": ["Jane", "Q"] }],
        "birthDate": "1980-01-31",
    })
}

fn expect_patient(f: &Fields) {
    assert_eq!(values(f, "patient_name"), ["Doe, Jane Q"]);
    assert_eq!(values(f, "patient_dob"), ["1980-01-31"]);
    assert_eq!(values(f, "patient_name_dob"), ["Doe, Jane Q|1980-01-31"]);
    assert_eq!(values(f, "member_id"), ["M123456789"]);
}

// ---------------------------------------------------------------- resolution

#[test]
fn a_contained_patient_is_found_by_its_local_id() {
    let f = fields(&json!({
        "resourceType": "ExplanationOfBenefit",
        "contained": [{ "resourceType": "Organization", "id": "p1" }, patient_resource("p1"), patient_resource("p2")],
        "patient": { "reference": "#p1", "display": "Someone Else" },
    }));
    // The first resource with the id wins, and is not a Patient: display then.
    assert_eq!(values(&f, "patient_name"), ["Someone Else"]);

    let f = fields(&json!({
        "resourceType": "ExplanationOfBenefit",
        "contained": [patient_resource("p2")],
        "patient": { "reference": "#p2", "display": "Someone Else" },
    }));
    expect_patient(&f);
}

#[test]
fn a_bundle_patient_is_found_by_full_url() {
    let f = fields(&json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:0d1e", "resource": {
                "resourceType": "Claim",
                "patient": { "reference": "urn:uuid:5eed", "display": "Wrong Name" },
            } },
            { "fullUrl": "urn:uuid:5eed", "resource": patient_resource("unrelated-id") },
        ],
    }));
    expect_patient(&f);
    assert!(!values(&f, "patient_name").contains(&"Wrong Name"));
}

#[test]
fn a_bundle_patient_is_found_by_type_and_id() {
    for reference in [
        "Patient/p-7",
        "https://elsewhere.example/fhir/Patient/p-7",
        "Patient/p-7/_history/3",
    ] {
        let doc = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                { "fullUrl": "https://h.example/fhir/ExplanationOfBenefit/e1", "resource": {
                    "resourceType": "ExplanationOfBenefit",
                    "patient": { "reference": reference, "display": "Wrong Name" },
                } },
                { "fullUrl": "https://h.example/fhir/Patient/p-7", "resource": patient_resource("p-7") },
            ],
        });
        // The Patient entry is read on its own too; that the display is not used
        // shows the reference resolved.
        let f = fields(&doc);
        expect_patient(&f);
        assert!(
            !values(&f, "patient_name").contains(&"Wrong Name"),
            "{reference}"
        );
    }
}

#[test]
fn an_unresolved_patient_is_named_by_its_display() {
    for reference in [json!("Patient/absent"), json!("#absent"), json!(null)] {
        let f = fields(&json!({
            "resourceType": "ExplanationOfBenefit",
            "patient": { "reference": reference, "display": "Jane Q Doe" },
        }));
        assert_eq!(values(&f, "patient_name"), ["Jane Q Doe"]);
        assert!(values(&f, "patient_dob").is_empty());
        assert!(values(&f, "patient_name_dob").is_empty());
    }
    // A reference to a resource that is no Patient does not count as resolved.
    let f = fields(&json!({
        "resourceType": "ExplanationOfBenefit",
        "contained": [{ "resourceType": "Group", "id": "g" }],
        "patient": { "reference": "#g", "display": "Group Display" },
    }));
    assert_eq!(values(&f, "patient_name"), ["Group Display"]);
}

#[test]
fn patient_references_resolve_only_within_their_bundle() {
    // Entry 0 is a Bundle of its own; its claim cannot see the outer Patient.
    let f = fields(&json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            { "resource": { "resourceType": "Bundle", "type": "collection", "entry": [
                { "resource": { "resourceType": "Claim", "identifier": [{ "value": "INNER-1" }],
                    "patient": { "reference": "Patient/outer", "display": "Inner Display" } } },
            ] } },
            { "resource": patient_resource("outer") },
        ],
    }));
    assert_eq!(values(&f, "claim_id"), ["INNER-1"]);
    // The outer Patient is read on its own; the inner claim falls back on display.
    assert_eq!(values(&f, "patient_name"), ["Doe, Jane Q", "Inner Display"]);
}

#[test]
fn coverages_give_member_ids_and_payers() {
    let f = fields(&json!({
        "resourceType": "Claim",
        "contained": [
            { "resourceType": "Coverage", "id": "cov", "subscriberId": "SUB-1",
              "identifier": [
                  { "type": { "coding": [{ "code": "SN" }] }, "value": "SN-2" },
                  { "type": { "coding": [{ "code": "XX" }] }, "value": "NOT-A-MEMBER" },
              ],
              "payor": [{ "reference": "#org", "display": "Payer Display" }] },
            { "resourceType": "Organization", "id": "org", "name": "Payer Org Name",
              "identifier": [
                  { "type": { "coding": [{ "code": "payerid" }] }, "value": "60054" },
                  { "system": NPI, "value": "1234567893" },
              ] },
        ],
        "insurance": [
            { "coverage": { "reference": "#cov" } },
            { "coverage": { "identifier": { "type": { "coding": [{ "code": "MB" }] }, "value": "INLINE-3" } } },
            { "coverage": { "identifier": {
                "system": "https://bluebutton.cms.gov/resources/variables/fiss/payers-name",
                "value": "MEDICARE" } } },
            { "coverage": { "reference": "Coverage/not-here", "display": "Plan Name" } },
        ],
    }));
    assert_eq!(values(&f, "member_id"), ["INLINE-3", "SN-2", "SUB-1"]);
    assert_eq!(
        values(&f, "payer"),
        ["60054", "MEDICARE", "Payer Display", "Payer Org Name"]
    );
    // A payer's NPI is not a provider's.
    assert!(values(&f, "provider_npi").is_empty());
}

#[test]
fn insurers_give_display_name_and_payer_ids() {
    let f = fields(&json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            { "resource": { "resourceType": "ExplanationOfBenefit",
                "insurer": { "reference": "Organization/payer1", "display": "XXX Health Plan" } } },
            { "resource": { "resourceType": "Organization", "id": "payer1", "name": "Organization Payer 1",
                "identifier": [
                    { "type": { "coding": [{ "code": "NIIP" }] }, "value": "901234" },
                    { "type": { "coding": [{ "code": "TAX" }] }, "value": "99-999" },
                ] } },
            { "resource": { "resourceType": "Claim", "insurer": { "identifier": { "value": "CMS" } } } },
        ],
    }));
    assert_eq!(
        values(&f, "payer"),
        ["901234", "CMS", "Organization Payer 1", "XXX Health Plan"]
    );
}

#[test]
fn providers_give_npis_inline_or_resolved() {
    let f = fields(&json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            { "fullUrl": "urn:uuid:eob", "resource": {
                "resourceType": "ExplanationOfBenefit",
                "contained": [
                    { "resourceType": "Organization", "id": "fac", "identifier": [
                        { "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NPI" }] },
                          "value": "1000000004" },
                        { "type": { "coding": [{ "code": "PRN" }] }, "value": "PRN-NOT-NPI" },
                    ] },
                    { "resourceType": "ServiceRequest", "id": "ref",
                      "requester": { "reference": "urn:uuid:doc" },
                      "performer": [{ "identifier": { "system": NPI, "value": "1000000005" } }] },
                ],
                "provider": { "identifier": { "system": NPI, "value": "1000000001" } },
                "facility": { "reference": "#fac" },
                "referral": { "reference": "#ref" },
                "careTeam": [
                    { "provider": { "reference": "Practitioner/pr1" } },
                    { "provider": { "reference": "PractitionerRole/role1" } },
                    { "provider": { "identifier": {
                        "type": { "coding": [{ "code": "npi" }] }, "value": "1000000002" } } },
                    { "provider": { "identifier": {
                        "system": "https://bluebutton.cms.gov/resources/variables/carr_clm_blg_npi_num",
                        "value": "1000000003" } } },
                    { "provider": { "identifier": {
                        "system": "https://bluebutton.cms.gov/resources/variables/carr_num",
                        "value": "NOT-AN-NPI" } } },
                ],
                "payee": { "party": { "identifier": { "system": NPI, "value": "1000000008" } } },
            } },
            { "fullUrl": "urn:uuid:doc", "resource": { "resourceType": "Practitioner",
                "identifier": [{ "system": NPI, "value": "1000000006" }] } },
            { "resource": { "resourceType": "Practitioner", "id": "pr1",
                "identifier": [{ "system": NPI, "value": "1000000007" }] } },
            { "resource": { "resourceType": "PractitionerRole", "id": "role1",
                "practitioner": { "reference": "Practitioner/pr2" },
                "identifier": [{ "system": NPI, "value": "1000000009" }] } },
            { "resource": { "resourceType": "Practitioner", "id": "pr2",
                "identifier": [{ "system": NPI, "value": "1000000010" }] } },
        ],
    }));
    let npis: Vec<String> = (1..=10).map(|n| format!("10000000{n:02}")).collect();
    assert_eq!(values(&f, "provider_npi"), npis);
}

#[test]
fn claim_details_are_read() {
    let f = fields(&json!({
        "resourceType": "ExplanationOfBenefit",
        "identifier": [
            { "type": { "coding": [{ "code": "uc" }] }, "value": "AW1234" },
            { "system": "https://bluebutton.cms.gov/resources/identifier/claim-group", "value": "900" },
        ],
        "billablePeriod": { "start": "2019-01-01T08:00:00-05:00", "end": "2019-01-31" },
        "diagnosis": [
            { "diagnosisCodeableConcept": { "coding": [
                { "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "S06.0X1A" },
                { "system": "http://hl7.org/fhir/sid/icd-10", "code": "S06.0X1A" },
            ] } },
            { "diagnosisReference": { "reference": "#cond" } },
        ],
        "procedure": [
            { "procedureCodeableConcept": { "coding": [{ "code": "0DTJ4ZZ" }] } },
            { "procedureReference": { "reference": "#proc" } },
        ],
        "contained": [
            { "resourceType": "Condition", "id": "cond", "code": { "coding": [{ "code": "38341003" }] } },
            { "resourceType": "Procedure", "id": "proc", "code": { "coding": [{ "code": "430193006" }] } },
        ],
        "item": [
            { "productOrService": { "coding": [{ "code": "99213" }] }, "servicedDate": "2019-01-05" },
            { "productOrService": { "coding": [{ "code": "97110" }, { "code": "G0439" }] },
              "servicedPeriod": { "start": "2019-01-06", "end": "2019-01-07T23:59:59Z" } },
            { "servicedPeriod": { "end": "2019" } },
        ],
        "outcome": "partial",
        "status": "active",
    }));
    assert_eq!(values(&f, "claim_id"), ["900", "AW1234"]);
    assert_eq!(
        values(&f, "service_date"),
        [
            "2019",
            "2019-01-01",
            "2019-01-05",
            "2019-01-06",
            "2019-01-07",
            "2019-01-31"
        ]
    );
    assert_eq!(values(&f, "diagnosis_code"), ["38341003", "S06.0X1A"]);
    assert_eq!(
        values(&f, "procedure_code"),
        ["0DTJ4ZZ", "430193006", "97110", "99213", "G0439"]
    );
    assert_eq!(values(&f, "claim_status"), ["partial"]);
}

#[test]
fn names_are_official_usual_or_plain() {
    let f = fields(&json!({
        "resourceType": "Patient",
        "name": [
            { "use": "official", "family": "Quigley", "given": ["Renea", null, " "] },
            { "use": "maiden", "family": "Durgan", "given": ["Renea"] },
            { "use": "nickname", "given": ["Ren"] },
            { "use": "usual", "text": "Renea Q." },
            { "family": "Solo" },
            { "text": "ignored text", "family": "Baker", "given": ["Jim", "K."] },
            { "given": ["Only", "Given"] },
            { "text": "  " },
        ],
        "birthDate": "1957-12-26",
    }));
    assert_eq!(
        values(&f, "patient_name"),
        [
            "Baker, Jim K.",
            "Only Given",
            "Quigley, Renea",
            "Renea Q.",
            "Solo"
        ]
    );
    assert_eq!(values(&f, "patient_name_dob").len(), 5);
    assert!(values(&f, "patient_name_dob").contains(&"Quigley, Renea|1957-12-26"));
    assert_eq!(
        crate::fields::last_name("Quigley, Renea").as_deref(),
        Some("quigley")
    );
}

#[test]
fn other_resources_give_what_they_hold() {
    // Patient alone.
    expect_patient(&fields(&patient_resource("p")));
    // Coverage alone: member ids and payer.
    let f = fields(&json!({
        "resourceType": "Coverage",
        "subscriberId": "3456789",
        "identifier": [{ "type": { "coding": [{ "code": "MB" }] }, "value": "88800933501" }],
        "payor": [{ "identifier": { "value": "Centers for Medicare and Medicaid Services" } }],
    }));
    assert_eq!(values(&f, "member_id"), ["3456789", "88800933501"]);
    assert_eq!(
        values(&f, "payer"),
        ["Centers for Medicare and Medicaid Services"]
    );
    // ClaimResponse: identifiers, patient, outcome.
    let f = fields(&json!({
        "resourceType": "ClaimResponse",
        "contained": [patient_resource("patient")],
        "identifier": [{ "value": "123456d" }],
        "patient": { "reference": "#patient" },
        "outcome": "queued",
        "requestor": { "identifier": { "system": NPI, "value": "8876543211" } },
    }));
    expect_patient(&f);
    assert_eq!(values(&f, "claim_id"), ["123456d"]);
    assert_eq!(values(&f, "claim_status"), ["queued"]);
    assert_eq!(values(&f, "provider_npi"), ["8876543211"]);
    // Anything else: nothing, whatever it holds.
    for kind in [
        "Organization",
        "Practitioner",
        "Observation",
        "OperationOutcome",
    ] {
        let f = fields(&json!({
            "resourceType": kind,
            "identifier": [{ "system": NPI, "value": "1234567893" }],
            "name": "Some Name",
            "patient": 7,
        }));
        assert!(f.is_empty(), "{kind}");
    }
    // An empty Bundle, and entries without resources.
    assert!(fields(&json!({ "resourceType": "Bundle" })).is_empty());
    assert!(fields(&json!({
        "resourceType": "Bundle",
        "entry": [{ "response": { "status": "201" } }, null, { "resource": null }],
    }))
    .is_empty());
}

#[test]
fn a_byte_order_mark_is_allowed() {
    let doc = format!("\u{feff}  {}", patient_resource("p"));
    expect_patient(&extract(doc.as_bytes()).unwrap());
}

#[test]
fn entries_beyond_the_limit_are_skipped() {
    let mut doc = String::from(r#"{"resourceType":"Bundle","entry":["#);
    for i in 0..=MAX_RESOURCES {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!(
            r#"{{"resource":{{"resourceType":"Claim","identifier":[{{"value":"C{i}"}}]}}}}"#
        ));
    }
    doc.push_str("]}");
    let f = extract(doc.as_bytes()).unwrap();
    let ids = values(&f, "claim_id");
    assert_eq!(ids.len(), MAX_RESOURCES);
    assert!(ids.contains(&format!("C{}", MAX_RESOURCES - 1).as_str()));
    assert!(!ids.contains(&format!("C{MAX_RESOURCES}").as_str()));
}

// -------------------------------------------------------------------- errors

/// The error's text never holds the input's distinctive value.
fn assert_no_echo(e: &ExtractError, secret: &str) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(secret), "{text}");
}

#[test]
fn invalid_json_is_located_by_line_and_column() {
    let e = failure(b"{\"resourceType\": \"ExplanationOfBenefit\",\n  \"patient\": SECRETVALUE}");
    assert_eq!(e.location, "line 2 column 14");
    assert_eq!(e.problem, "invalid JSON: expected value");
    assert_no_echo(&e, "SECRETVALUE");
    assert_no_echo(&e, "SECRET");

    let e = failure(b"{\"resourceType\": \"Claim\", \"id\": \"SECRETVALUE");
    assert!(e.location.starts_with("line 1 column"), "{e}");
    assert_eq!(e.problem, "invalid JSON: EOF while parsing a string");
    assert_no_echo(&e, "SECRETVALUE");

    let e = failure(b"{\"resourceType\": \"Claim\"} SECRETVALUE");
    assert_eq!(e.problem, "invalid JSON: trailing characters");
    assert_no_echo(&e, "SECRETVALUE");

    let e = failure(b"{\"SECRETVALUE\": \"\\uZZZZ\"}");
    assert_no_echo(&e, "SECRETVALUE");
    let e = failure(b"{\"resourceType\": \"Claim\", \"x\": \"\xff\xfeSECRETVALUE\"}");
    assert_no_echo(&e, "SECRETVALUE");
    let e = failure(b"");
    assert_eq!(e.problem, "invalid JSON: EOF while parsing a value");
    assert_eq!(
        e.to_string(),
        "FHIR at line 1 column 0: invalid JSON: EOF while parsing a value"
    );
}

#[test]
fn deep_nesting_is_refused_by_the_parser() {
    let doc = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = failure(doc.as_bytes());
    assert_eq!(e.problem, "invalid JSON: recursion limit exceeded");
    assert_eq!(e.location, "line 1 column 128");
    // Within the limit, deep JSON is read (and here ignored).
    let doc = format!(
        "{{\"resourceType\":\"Claim\",\"x\":{}{}}}",
        "[".repeat(120),
        "]".repeat(120)
    );
    assert!(extract(doc.as_bytes()).unwrap().is_empty());
}

#[test]
fn documents_must_be_resources() {
    for doc in [
        json!(["SECRETVALUE"]),
        json!("SECRETVALUE"),
        json!(12345678),
        json!(null),
        json!({ "id": "SECRETVALUE" }),
        json!({ "resourceType": 12345678, "id": "SECRETVALUE" }),
        json!({ "resourceType": ["SECRETVALUE"] }),
    ] {
        let e = failure(doc.to_string().as_bytes());
        assert_eq!(e.location, "$.resourceType", "{doc}");
        assert_eq!(
            e.problem,
            "expected a FHIR resource: a JSON object with a string resourceType"
        );
        assert_no_echo(&e, "SECRETVALUE");
        assert_no_echo(&e, "12345678");
    }
}

#[test]
fn wrong_types_are_located_by_json_path() {
    let eob = |patch: Value| {
        let mut doc = json!({ "resourceType": "ExplanationOfBenefit" });
        if let (Some(doc), Value::Object(patch)) = (doc.as_object_mut(), patch) {
            doc.extend(patch);
        }
        doc
    };
    let cases = [
        (
            json!({ "resourceType": "Bundle", "entry": [
                { "resource": { "resourceType": "Observation" } },
                { "resource": { "resourceType": "Patient" } },
                { "fullUrl": "urn:x" },
                { "resource": { "resourceType": "ExplanationOfBenefit", "billablePeriod": "SECRETVALUE" } },
            ] }),
            "$.entry[3].resource.billablePeriod",
            "expected an object",
        ),
        (
            eob(
                json!({ "contained": [{ "resourceType": "Patient", "id": "p", "birthDate": 19800131 }],
                        "patient": { "reference": "#p" } }),
            ),
            "$.contained[0].birthDate",
            "expected a string",
        ),
        (
            eob(json!({ "identifier": { "value": "SECRETVALUE" } })),
            "$.identifier",
            "expected an array",
        ),
        (
            eob(json!({ "identifier": ["SECRETVALUE"] })),
            "$.identifier[0]",
            "expected an object",
        ),
        (
            eob(json!({ "identifier": [{ "value": 19800131 }] })),
            "$.identifier[0].value",
            "expected a string",
        ),
        (
            eob(
                json!({ "item": [{}, { "productOrService": { "coding": [{ "code": 19800131 }] } }] }),
            ),
            "$.item[1].productOrService.coding[0].code",
            "expected a string",
        ),
        (
            eob(
                json!({ "contained": [{ "resourceType": "Patient", "id": "p",
                                        "name": [{ "given": ["Jane", 19800131] }] }],
                        "patient": { "reference": "#p" } }),
            ),
            "$.contained[0].name[0].given[1]",
            "expected a string",
        ),
        (
            eob(json!({ "contained": [{ "id": "SECRETVALUE" }] })),
            "$.contained[0].resourceType",
            "expected a FHIR resource: an object with a string resourceType",
        ),
        (
            eob(json!({ "contained": { "resourceType": "Patient" } })),
            "$.contained",
            "expected an array",
        ),
        (
            eob(json!({ "contained": [{ "resourceType": "Patient", "id": 19800131 }] })),
            "$.contained[0].id",
            "expected a string",
        ),
        (
            eob(json!({ "patient": { "reference": ["SECRETVALUE"] } })),
            "$.patient.reference",
            "expected a string",
        ),
        (
            eob(json!({ "patient": "Patient/SECRETVALUE" })),
            "$.patient",
            "expected an object",
        ),
        (
            eob(json!({ "outcome": false })),
            "$.outcome",
            "expected a string",
        ),
        (
            eob(
                json!({ "provider": { "identifier": { "type": { "coding": "SECRETVALUE" }, "value": "x" } } }),
            ),
            "$.provider.identifier.type.coding",
            "expected an array",
        ),
        (
            json!({ "resourceType": "Bundle", "entry": [{ "resource": "SECRETVALUE" }] }),
            "$.entry[0].resource",
            "expected an object",
        ),
        (
            json!({ "resourceType": "Bundle", "entry": [{ "resource": { "id": "SECRETVALUE" } }] }),
            "$.entry[0].resource.resourceType",
            "expected a FHIR resource: an object with a string resourceType",
        ),
        (
            json!({ "resourceType": "Bundle", "entry": ["SECRETVALUE"] }),
            "$.entry[0]",
            "expected an object",
        ),
        (
            json!({ "resourceType": "Bundle", "entry": [{ "fullUrl": 19800131 }] }),
            "$.entry[0].fullUrl",
            "expected a string",
        ),
        (
            json!({ "resourceType": "Bundle", "entry": "SECRETVALUE" }),
            "$.entry",
            "expected an array",
        ),
        (
            json!({ "resourceType": "Bundle", "entry": [{ "resource": { "resourceType": "Bundle", "entry": [
                { "resource": { "resourceType": "Coverage", "subscriberId": 19800131 } } ] } }] }),
            "$.entry[0].resource.entry[0].resource.subscriberId",
            "expected a string",
        ),
        (
            json!({ "resourceType": "Bundle", "entry": [
                { "resource": { "resourceType": "Claim", "insurer": { "reference": "Organization/o" } } },
                { "resource": { "resourceType": "Organization", "id": "o", "name": ["SECRETVALUE"] } },
            ] }),
            "$.entry[1].resource.name",
            "expected a string",
        ),
    ];
    for (doc, location, problem) in cases {
        let e = failure(doc.to_string().as_bytes());
        assert_eq!(
            (e.location.as_str(), e.problem.as_str()),
            (location, problem),
            "{doc}"
        );
        assert_no_echo(&e, "SECRETVALUE");
        assert_no_echo(&e, "19800131");
    }
}

#[test]
fn elements_not_read_are_not_checked() {
    // `billablePeriod` of a Patient, a `name` of an Observation: not ours to judge.
    let f = fields(&json!({
        "resourceType": "Bundle",
        "entry": [
            { "resource": { "resourceType": "Observation", "name": 5, "identifier": "x" } },
            { "resource": { "resourceType": "Patient", "billablePeriod": 5, "name": [] } },
        ],
    }));
    assert!(f.is_empty());
}

// ---------------------------------------------------------------- properties

/// Keys the reader looks at, so random objects reach deep into it.
const KEYS: &[&str] = &[
    "resourceType",
    "id",
    "entry",
    "resource",
    "fullUrl",
    "contained",
    "identifier",
    "value",
    "system",
    "type",
    "coding",
    "code",
    "patient",
    "reference",
    "display",
    "name",
    "family",
    "given",
    "text",
    "use",
    "birthDate",
    "billablePeriod",
    "start",
    "end",
    "insurer",
    "provider",
    "facility",
    "referral",
    "requestor",
    "payee",
    "party",
    "careTeam",
    "insurance",
    "coverage",
    "subscriberId",
    "payor",
    "diagnosis",
    "diagnosisCodeableConcept",
    "diagnosisReference",
    "procedure",
    "procedureCodeableConcept",
    "procedureReference",
    "item",
    "productOrService",
    "servicedDate",
    "servicedPeriod",
    "outcome",
    "requester",
    "performer",
    "practitioner",
    "organization",
];
/// Strings that mean something to the reader.
const STRINGS: &[&str] = &[
    "Bundle",
    "ExplanationOfBenefit",
    "Claim",
    "ClaimResponse",
    "Patient",
    "Coverage",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "ServiceRequest",
    "Condition",
    "Procedure",
    "a",
    "#a",
    "Patient/a",
    "Organization/a",
    "urn:uuid:a",
    "official",
    "MB",
    "NPI",
    "payerid",
    "http://hl7.org/fhir/sid/us-npi",
    "2024-01-01T00:00:00Z",
    "",
    "é",
    "\u{0}",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(STRINGS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

/// Arbitrary JSON, its object keys mostly ones the reader knows.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(6, 96, 8, |inner| {
        let key = prop_oneof![
            4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
            1 => ".{0,6}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A resource of a type the reader reads, holding arbitrary elements.
fn resource_value() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(&STRINGS[..12]),
        proptest::collection::btree_map(proptest::sample::select(KEYS), json_value(), 0..10),
    )
        .prop_map(|(kind, elements)| {
            let mut obj: serde_json::Map<String, Value> = elements
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            obj.insert("resourceType".into(), kind.into());
            Value::Object(obj)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = extract(&bytes);
        let mut prefixed = b"{\"resourceType\":\"Bundle\",\"entry\":[".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = extract(&prefixed);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let _ = extract(value.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_resources_never_panic(
        resources in proptest::collection::vec(resource_value(), 1..5),
    ) {
        for r in &resources {
            if let Err(e) = extract(r.to_string().as_bytes()) {
                prop_assert!(e.location.starts_with('$'), "{}", e);
            }
        }
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|r| json!({ "fullUrl": "urn:uuid:a", "resource": r }))
            .collect();
        let doc = json!({ "resourceType": "Bundle", "entry": entries });
        if let Err(e) = extract(doc.to_string().as_bytes()) {
            prop_assert!(e.location.starts_with("$.entry["), "{}", e);
        }
    }

    #[test]
    fn synthetic_resources_round_trip(seed in any::<u64>(), count in 1usize..6) {
        let claims = SynthClaim::batch(seed, count);
        for layout in [PatientLayout::Contained, PatientLayout::Display] {
            for c in &claims {
                let one = std::slice::from_ref(c);
                prop_assert_eq!(
                    extract(explanation_of_benefit(c, layout).as_bytes()).unwrap(),
                    expected_fhir_fields(one, layout)
                );
                prop_assert_eq!(
                    extract(synth_claim(c, layout).as_bytes()).unwrap(),
                    expected_claim_fields(one, layout)
                );
            }
        }
        prop_assert_eq!(
            extract(bundle(&claims).as_bytes()).unwrap(),
            expected_fhir_fields(&claims, PatientLayout::Contained)
        );
    }
}

#[test]
fn a_synthetic_bundle_resolves_through_its_entries() {
    let claims = SynthClaim::batch(5, 3);
    let full: Value = serde_json::from_str(&bundle(&claims)).unwrap();
    assert_eq!(
        fields(&full),
        expected_fhir_fields(&claims, PatientLayout::Contained)
    );
    // NPIs and payer ids are reachable only through the EOBs' references: without
    // the included entries they are gone, and so is the patient.
    let mut only_eobs = full.clone();
    if let Some(entries) = only_eobs["entry"].as_array_mut() {
        entries.retain(|e| e["resource"]["resourceType"] == "ExplanationOfBenefit");
    }
    let f = fields(&only_eobs);
    assert!(values(&f, "provider_npi").is_empty());
    assert!(values(&f, "patient_name").is_empty());
    assert!(values(&f, "member_id").is_empty());
    let mut payers: Vec<&str> = claims.iter().map(|c| c.payer_name.as_str()).collect();
    payers.sort_unstable();
    payers.dedup();
    assert_eq!(values(&f, "payer"), payers);
    assert_eq!(values(&f, "claim_id").len(), 3);
}

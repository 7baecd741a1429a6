//! FHIR extraction over the public samples in the shared test data (CARIN Blue
//! Button 2.0.0 examples, CMS Blue Button 2.0 (BFD) v2 responses, Synthea R4
//! bundles): every resource extracts, and known values come out.

use std::path::{Path, PathBuf};

use vault_index::extract::{fhir, Format};
use vault_index::fields::Fields;

/// `shared/data`, beside the project checkout (or `$BILLVAULT_SHARED_DATA`).
fn data_dir() -> PathBuf {
    let dir = match std::env::var_os("BILLVAULT_SHARED_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../shared/data"),
    };
    assert!(
        dir.join("fhir").is_dir(),
        "the shared test data is missing at {}: check out the project beside shared/ \
         (…/main and …/shared/data) or set BILLVAULT_SHARED_DATA",
        dir.display()
    );
    dir
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().and_then(|e| e.to_str()) == Some("json") {
            out.push(path);
        }
    }
}

fn sample(relative: &str) -> Fields {
    let path = data_dir().join("fhir").join(relative);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fhir::extract(&bytes).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn values<'f>(fields: &'f Fields, name: &str) -> Vec<&'f str> {
    fields
        .get(name)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn every_sample_extracts() {
    let root = data_dir().join("fhir");
    let mut files = Vec::new();
    json_files(&root, &mut files);
    files.sort();
    let mut read = 0;
    let mut with_fields = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // The CARIN IG's npm package manifest is JSON but no FHIR resource: it is
        // refused where a resource type should be.
        if name == "package.json" {
            let e = fhir::extract(&bytes).expect_err("package.json is no resource");
            assert_eq!(
                (e.format, e.location.as_str()),
                (Format::Fhir, "$.resourceType")
            );
            continue;
        }
        let fields = fhir::extract(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        read += 1;
        with_fields += usize::from(!fields.is_empty());
    }
    // 32 CARIN examples (and package.json), 37 BFD responses, 10 Synthea bundles.
    assert_eq!(read, 79, "{files:?}");
    // CARIN's 10 Organizations, 5 Practitioners and a RelatedPerson give nothing
    // on their own.
    assert_eq!(with_fields, 79 - 16);
}

#[test]
fn carin_examples() {
    let eob = sample("carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json");
    assert_eq!(
        values(&eob, "claim_id"),
        ["AW123412341234123412341234123413"]
    );
    assert_eq!(values(&eob, "diagnosis_code"), ["S06.0X1A"]);
    assert_eq!(values(&eob, "procedure_code"), ["97110"]);
    assert_eq!(
        values(&eob, "service_date"),
        ["2019-01-01", "2019-07-02", "2019-10-31"]
    );
    assert_eq!(values(&eob, "payer"), ["XXX Health Plan"]);
    assert_eq!(values(&eob, "claim_status"), ["partial"]);
    // `Patient/Patient2` is not in the file and has no display.
    assert!(values(&eob, "patient_name").is_empty());

    let patient = sample("carin-bb-2.0.0/Patient-Patient2.json");
    assert_eq!(values(&patient, "patient_name"), ["Test, Member 01"]);
    assert_eq!(values(&patient, "patient_dob"), ["1943-01-01"]);
    assert_eq!(
        values(&patient, "patient_name_dob"),
        ["Test, Member 01|1943-01-01"]
    );
    assert_eq!(values(&patient, "member_id"), ["88800933501"]);

    let coverage = sample("carin-bb-2.0.0/Coverage-Coverage1.json");
    assert_eq!(values(&coverage, "member_id"), ["888009335", "88800933501"]);
    assert_eq!(values(&coverage, "payer"), ["UPMC Health Plan"]);

    assert!(sample("carin-bb-2.0.0/Organization-Payer1.json").is_empty());
}

#[test]
fn blue_button_responses() {
    let carrier = sample("cms-bfd-v2/eobReadCarrier.json");
    assert_eq!(values(&carrier, "claim_id"), ["900", "9991831999"]);
    // The billing NPI (`carr_clm_blg_npi_num`) and the care team's `npi`-typed ids.
    let npis = values(&carrier, "provider_npi");
    for npi in ["1234567890", "0000000000", "1923124"] {
        assert!(npis.contains(&npi), "{npis:?}");
    }
    assert_eq!(
        values(&carrier, "diagnosis_code"),
        ["A02", "A06", "A52", "B04", "B05"]
    );
    assert_eq!(values(&carrier, "procedure_code"), ["92999"]);
    assert_eq!(values(&carrier, "service_date"), ["1999-10-27"]);
    assert_eq!(values(&carrier, "payer"), ["CMS"]);
    assert_eq!(values(&carrier, "claim_status"), ["complete"]);

    // The provider is a contained Organization (`#provider-org`).
    let inpatient = sample("cms-bfd-v2/eobReadInpatient.json");
    assert!(values(&inpatient, "provider_npi").contains(&"0000000000"));
    assert!(values(&inpatient, "procedure_code").contains(&"BQ0HZZZ"));

    // A partially adjudicated claim: contained patient and provider.
    let fiss = sample("cms-bfd-v2/claimFissRead.json");
    assert_eq!(values(&fiss, "patient_name"), ["baker, jim k."]);
    assert_eq!(
        values(&fiss, "patient_name_dob"),
        ["baker, jim k.|1975-03-01"]
    );
    assert_eq!(values(&fiss, "member_id"), ["123456MBI"]);
    assert_eq!(values(&fiss, "provider_npi"), ["8876543211"]);
    assert_eq!(values(&fiss, "claim_id"), ["123456d"]);
    // FISS names the payers in the coverage identifiers.
    assert_eq!(values(&fiss, "payer"), ["BCBS KC", "MEDICARE"]);
    assert!(values(&fiss, "claim_status").is_empty());

    let response = sample("cms-bfd-v2/claimResponseFissRead.json");
    assert_eq!(values(&response, "claim_status"), ["queued"]);
    assert_eq!(values(&response, "patient_dob"), ["1975-03-01"]);

    let patient = sample("cms-bfd-v2/patientRead.json");
    assert_eq!(values(&patient, "patient_name"), ["Doe, John A"]);
    assert_eq!(values(&patient, "patient_dob"), ["1981-03-17"]);
    let members = values(&patient, "member_id");
    for id in ["567834", "9AB2WW3GR44", "3456789"] {
        assert!(members.contains(&id), "{members:?}");
    }

    let all = sample("cms-bfd-v2/eobByPatientIdAll.json");
    let ids = values(&all, "claim_id");
    for id in [
        "9991831999",
        "333333222222",
        "89",
        "777777777",
        "2925555555",
    ] {
        assert!(ids.contains(&id), "{ids:?}");
    }
}

#[test]
fn synthea_bundles() {
    let blair = sample("synthea-r4-smart/Blair_Conroy_8de41d0d-0ae7-4cb6-97e2-900b07a1e4f7.json");
    assert_eq!(values(&blair, "patient_name"), ["Conroy, Blair"]);
    assert_eq!(values(&blair, "patient_dob"), ["1975-10-26"]);
    assert_eq!(
        values(&blair, "patient_name_dob"),
        ["Conroy, Blair|1975-10-26"]
    );
    // Synthea's dateTimes give their dates; its insurer is a display only.
    assert!(values(&blair, "service_date").contains(&"1974-08-21"));
    assert_eq!(values(&blair, "payer"), ["private"]);
    // Practitioners are resolved through `urn:uuid:` references (Synthea's NPIs
    // are short counters, kept as written).
    assert!(values(&blair, "provider_npi").contains(&"40"));

    // The maiden name is not the patient's name.
    let louie = sample("synthea-r4-smart/Louie_Jast_14802fb7-f613-4c4f-816a-e92b7b144788.json");
    assert_eq!(values(&louie, "patient_name"), ["Jast, Louie"]);
    assert_eq!(values(&louie, "patient_dob"), ["1950-03-01"]);
}

//! Synthetic billing documents for tests and benchmarks (feature `synth`).
//!
//! A [`SynthClaim`] is one made-up claim with every searchable value; the writers
//! in [`x12`] and [`fhir`] render claims as an X12 835 remittance, an X12 837
//! claim file or FHIR ExplanationOfBenefit / Claim resources, and
//! [`expected_fields`] says what extraction must find in them. Names, ids and
//! dates are drawn from a seeded RNG, so a seed always gives the same documents.
//! Nothing here is real PHI.

pub mod fhir;
pub mod x12;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::fields::{Field, Fields, FieldsBuilder};

const FIRST_NAMES: &[&str] = &[
    "JOHN", "MARY", "JOSE", "LINDA", "WEI", "FATIMA", "OLIVER", "AMARA", "LUCAS", "SOFIA", "NOAH",
    "EMMA", "LIAM", "AVA", "ETHAN", "MIA", "RENEE", "ZOE", "DMITRI", "PRIYA",
];
const LAST_NAMES: &[&str] = &[
    "SMITH",
    "JOHNSON",
    "GARCIA",
    "NGUYEN",
    "OBRIEN",
    "MULLER",
    "KOWALSKI",
    "PATEL",
    "KIM",
    "HERNANDEZ",
    "ROSSI",
    "DUBOIS",
    "ANDERSEN",
    "OKAFOR",
    "TANAKA",
    "SILVA",
    "COHEN",
    "BROWN",
    "WILSON",
    "MARTIN",
    "LOPEZ",
    "CLARK",
    "LEWIS",
    "WALKER",
    "HALL",
    "YOUNG",
    "KING",
    "WRIGHT",
];
const PAYERS: &[(&str, &str)] = &[
    ("ACME HEALTH PLAN", "60054"),
    ("BLUE RIVER INSURANCE", "00590"),
    ("NORTHWIND MUTUAL", "87726"),
    ("SUMMIT CARE", "39026"),
    ("MERIDIAN BENEFITS", "62308"),
];
const PROCEDURES: &[&str] = &[
    "99213", "99214", "99203", "90834", "97110", "80053", "85025", "71046", "G0439", "J3420",
    "93000", "36415", "81002", "D1110", "D0120",
];
const DIAGNOSES: &[&str] = &[
    "E119", "I10", "J069", "M545", "Z0000", "F329", "K219", "N390", "R51", "E785", "Z23",
];
const STATUSES: &[&str] = &["1", "2", "3", "4", "19", "22"];

/// One made-up claim with all the values extraction should find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthClaim {
    /// Patient last name (upper case, as X12 carries it).
    pub last_name: String,
    /// Patient first name.
    pub first_name: String,
    /// Patient date of birth, `YYYYMMDD`.
    pub dob: String,
    /// Subscriber / member id.
    pub member_id: String,
    /// Patient control number (CLP01 / CLM01).
    pub claim_id: String,
    /// Payer claim control number (CLP07).
    pub payer_claim_id: String,
    /// Payer name.
    pub payer_name: String,
    /// Payer id.
    pub payer_id: String,
    /// Billing / payee provider NPI (10 digits, valid Luhn check digit).
    pub provider_npi: String,
    /// Dates of service, `YYYYMMDD`, one per service line.
    pub service_dates: Vec<String>,
    /// Procedure codes, one per service line.
    pub procedure_codes: Vec<String>,
    /// Diagnosis codes (ICD-10, without the dot).
    pub diagnosis_codes: Vec<String>,
    /// Claim status (CLP02).
    pub status: String,
    /// Check / EFT trace number (TRN02) of the payment carrying the claim.
    pub trace_number: String,
    /// Charge per service line, in cents.
    pub line_charges_cents: Vec<u64>,
}

impl SynthClaim {
    /// A random claim.
    pub fn random(rng: &mut impl Rng) -> SynthClaim {
        let lines = rng.gen_range(1..=4);
        let year = rng.gen_range(2019..=2025);
        let month = rng.gen_range(1..=12);
        let service_dates = (0..lines)
            .map(|_| format!("{year:04}{month:02}{:02}", rng.gen_range(1..=28)))
            .collect();
        let procedure_codes = (0..lines)
            .map(|_| (*PROCEDURES.choose(rng).unwrap_or(&"99213")).to_owned())
            .collect();
        let diagnosis_codes = (0..rng.gen_range(1..=3))
            .map(|_| (*DIAGNOSES.choose(rng).unwrap_or(&"I10")).to_owned())
            .collect();
        let (payer_name, payer_id) = *PAYERS.choose(rng).unwrap_or(&PAYERS[0]);
        SynthClaim {
            last_name: (*LAST_NAMES.choose(rng).unwrap_or(&"SMITH")).to_owned(),
            first_name: (*FIRST_NAMES.choose(rng).unwrap_or(&"JOHN")).to_owned(),
            dob: format!(
                "{:04}{:02}{:02}",
                rng.gen_range(1930..=2020),
                rng.gen_range(1..=12),
                rng.gen_range(1..=28)
            ),
            member_id: format!(
                "{}{:09}",
                ['W', 'M', 'X', 'B'][rng.gen_range(0..4)],
                rng.gen_range(0..1_000_000_000u64)
            ),
            claim_id: format!("PCN{:08}", rng.gen_range(0..100_000_000u64)),
            payer_claim_id: format!("{:013}", rng.gen_range(0..10_000_000_000_000u64)),
            payer_name: payer_name.to_owned(),
            payer_id: payer_id.to_owned(),
            provider_npi: npi(rng.gen_range(100_000_000..200_000_000u64)),
            service_dates,
            procedure_codes,
            diagnosis_codes,
            status: (*STATUSES.choose(rng).unwrap_or(&"1")).to_owned(),
            trace_number: format!("{:010}", rng.gen_range(0..10_000_000_000u64)),
            line_charges_cents: (0..lines).map(|_| rng.gen_range(1_000..500_000)).collect(),
        }
    }

    /// `count` random claims from a seed.
    pub fn batch(seed: u64, count: usize) -> Vec<SynthClaim> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count).map(|_| SynthClaim::random(&mut rng)).collect()
    }

    /// The patient name as X12 writes it in a sentence: `LAST, FIRST`.
    pub fn patient_name(&self) -> String {
        format!("{}, {}", self.last_name, self.first_name)
    }

    /// Total charge in cents.
    pub fn total_charge_cents(&self) -> u64 {
        self.line_charges_cents.iter().sum()
    }
}

/// A 10-digit NPI from a 9-digit base, with its Luhn check digit (prefix 80840).
pub fn npi(base9: u64) -> String {
    let base = format!("{:09}", base9 % 1_000_000_000);
    let digits: Vec<u32> = format!("80840{base}")
        .chars()
        .filter_map(|c| c.to_digit(10))
        .collect();
    // Luhn over the prefixed number, doubling from the rightmost digit.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    format!("{base}{check}")
}

/// Formats cents as an X12 / FHIR decimal amount (`123.45`).
pub fn amount(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The fields extraction must find for these claims, when rendered by a writer
/// that carries `with_dob` (837s and FHIR carry a date of birth, 835s do not) and
/// `with_trace` (835s carry a trace number). Claim-side documents (`with_dob`) also
/// carry diagnoses and the payer id (837 `NM1*PR` NM109); a remittance names its
/// payer but its payer id (`REF*2U`) is optional, and the synthetic 835 leaves it out.
pub fn expected_fields(claims: &[SynthClaim], with_dob: bool, with_trace: bool) -> Fields {
    let mut b = FieldsBuilder::new();
    for c in claims {
        b.add(Field::PatientName, &c.patient_name());
        b.add(Field::MemberId, &c.member_id);
        b.add(Field::ClaimId, &c.claim_id);
        b.add(Field::ProviderNpi, &c.provider_npi);
        b.add(Field::Payer, &c.payer_name);
        for d in &c.service_dates {
            b.add(Field::ServiceDate, d);
        }
        for p in &c.procedure_codes {
            b.add(Field::ProcedureCode, p);
        }
        if with_dob {
            b.add(Field::Payer, &c.payer_id);
            b.add(Field::PatientDob, &c.dob);
            b.add(
                Field::PatientNameDob,
                &format!("{}|{}", c.patient_name(), c.dob),
            );
            for d in &c.diagnosis_codes {
                b.add(Field::DiagnosisCode, d);
            }
        }
        if with_trace {
            b.add(Field::TraceNumber, &c.trace_number);
            b.add(Field::PayerClaimId, &c.payer_claim_id);
            b.add(Field::ClaimStatus, &c.status);
        }
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npis_have_valid_check_digits() {
        // The CMS example: 123456789 gives the NPI 1234567893.
        assert_eq!(npi(123_456_789), "1234567893");
        for claim in SynthClaim::batch(1, 50) {
            assert_eq!(claim.provider_npi.len(), 10);
        }
    }

    #[test]
    fn a_seed_gives_the_same_claims() {
        assert_eq!(SynthClaim::batch(7, 5), SynthClaim::batch(7, 5));
        assert_ne!(SynthClaim::batch(7, 5), SynthClaim::batch(8, 5));
    }
}

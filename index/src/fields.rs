//! Searchable fields: their names, the values a document carries, and the
//! normalised search terms derived from them.
//!
//! Extractors (X12, FHIR) and callers produce [`Fields`]: raw values per base field,
//! as a person would read them (`"DOE, JOHN Q"`, `"2024-03-01"`). The index and the
//! exact post-filter both go through [`search_terms`], which normalises those values
//! and adds the virtual fields (last name, year-month, last four of the member id).
//! One function for both sides is what makes results exact: a token can only match
//! where the plaintext comparison agrees.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::normalize;

/// Field values as stored (encrypted) with a document: each field may have several
/// values (a remittance holds many claims).
pub type Fields = BTreeMap<String, Vec<String>>;

/// A searchable field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Patient name, any word order (`"Doe, John"` = `"John Doe"`).
    PatientName,
    /// Patient last name (virtual, from `patient_name`; callers may also give it).
    PatientLastName,
    /// Patient date of birth, `YYYY-MM-DD`.
    PatientDob,
    /// Subscriber / member id.
    MemberId,
    /// Last four characters of the member id (virtual).
    MemberIdLast4,
    /// Patient control number (CLP01 / CLM01).
    ClaimId,
    /// Payer claim control number (CLP07).
    PayerClaimId,
    /// Payer name or payer id.
    Payer,
    /// Billing / payee / rendering provider NPI.
    ProviderNpi,
    /// Date of service, `YYYY-MM-DD`.
    ServiceDate,
    /// Year-month of service, `YYYY-MM` (virtual, from `service_date`).
    ServiceMonth,
    /// Check or EFT trace number (TRN02).
    TraceNumber,
    /// Procedure code (CPT / HCPCS / CDT).
    ProcedureCode,
    /// Diagnosis code (ICD-10).
    DiagnosisCode,
    /// Claim status (CLP02).
    ClaimStatus,
    /// Compound: patient name and date of birth of the same person, `name|YYYY-MM-DD`.
    PatientNameDob,
}

/// A value that does not have the shape its field needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} expects {expected}")]
pub struct ValueError {
    /// The field.
    pub field: Field,
    /// What it expects (never the rejected value: it may be PHI).
    pub expected: &'static str,
}

impl Field {
    /// Every field, base and virtual, in a fixed order.
    pub const ALL: [Field; 16] = [
        Field::PatientName,
        Field::PatientLastName,
        Field::PatientDob,
        Field::MemberId,
        Field::MemberIdLast4,
        Field::ClaimId,
        Field::PayerClaimId,
        Field::Payer,
        Field::ProviderNpi,
        Field::ServiceDate,
        Field::ServiceMonth,
        Field::TraceNumber,
        Field::ProcedureCode,
        Field::DiagnosisCode,
        Field::ClaimStatus,
        Field::PatientNameDob,
    ];

    /// The field's name in the API, the query language and token labels.
    /// FORMAT CONSTANT: names label HKDF field keys; renaming one changes its tokens.
    pub fn name(self) -> &'static str {
        match self {
            Field::PatientName => "patient_name",
            Field::PatientLastName => "patient_last_name",
            Field::PatientDob => "patient_dob",
            Field::MemberId => "member_id",
            Field::MemberIdLast4 => "member_id_last4",
            Field::ClaimId => "claim_id",
            Field::PayerClaimId => "payer_claim_id",
            Field::Payer => "payer",
            Field::ProviderNpi => "provider_npi",
            Field::ServiceDate => "service_date",
            Field::ServiceMonth => "service_month",
            Field::TraceNumber => "trace_number",
            Field::ProcedureCode => "procedure_code",
            Field::DiagnosisCode => "diagnosis_code",
            Field::ClaimStatus => "claim_status",
            Field::PatientNameDob => "patient_name_dob",
        }
    }

    /// The field of a name.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Normalises a value of this field into its search term; the same function
    /// serves indexing, queries and the exact post-filter.
    pub fn normalize(self, raw: &str) -> Result<String, ValueError> {
        let fail = |expected| ValueError {
            field: self,
            expected,
        };
        let term = match self {
            Field::PatientName => sorted_words(&normalize::name(raw)),
            Field::PatientLastName | Field::Payer => normalize::name(raw),
            Field::PatientDob | Field::ServiceDate => {
                normalize::date(raw).ok_or(fail("a date, YYYY-MM-DD"))?
            }
            Field::ServiceMonth => {
                month_of(raw).ok_or(fail("a month, YYYY-MM (or a date, YYYY-MM-DD)"))?
            }
            Field::MemberIdLast4 => {
                let id = normalize::identifier(raw);
                if id.chars().count() != 4 {
                    return Err(fail("exactly four characters"));
                }
                id
            }
            Field::ProviderNpi => {
                let id = normalize::identifier(raw);
                if id.len() != 10 || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(fail("a 10-digit NPI"));
                }
                id
            }
            Field::MemberId
            | Field::ClaimId
            | Field::PayerClaimId
            | Field::TraceNumber
            | Field::ProcedureCode
            | Field::DiagnosisCode
            | Field::ClaimStatus => normalize::identifier(raw),
            Field::PatientNameDob => {
                let (name, dob) = raw.rsplit_once('|').ok_or(fail(
                    "a name and a date joined by |, as in Doe John|1980-01-31",
                ))?;
                let name = sorted_words(&normalize::name(name));
                let dob = normalize::date(dob).ok_or(fail("a date, YYYY-MM-DD, after the |"))?;
                if name.is_empty() {
                    return Err(fail("a name before the |"));
                }
                format!("{name}|{dob}")
            }
        };
        if term.is_empty() {
            return Err(fail("a non-empty value"));
        }
        Ok(term)
    }

    /// Whether queries may ask for a range of this field (`[2024-01 TO 2024-03]`).
    pub fn is_monthly(self) -> bool {
        self == Field::ServiceMonth
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The base fields a document may carry (the others are derived).
pub const BASE_FIELDS: [Field; 14] = [
    Field::PatientName,
    Field::PatientLastName,
    Field::PatientDob,
    Field::MemberId,
    Field::ClaimId,
    Field::PayerClaimId,
    Field::Payer,
    Field::ProviderNpi,
    Field::ServiceDate,
    Field::TraceNumber,
    Field::ProcedureCode,
    Field::DiagnosisCode,
    Field::ClaimStatus,
    Field::PatientNameDob,
];

fn sorted_words(folded: &str) -> String {
    let mut words: Vec<&str> = folded.split_whitespace().collect();
    words.sort_unstable();
    words.join(" ")
}

fn month_of(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.len() == 7 && raw.as_bytes()[4] == b'-' {
        normalize::month(&format!("{raw}-01"))
    } else {
        normalize::month(raw)
    }
}

/// The last name in a person's name as written: before the comma in
/// `"Doe, John"`, else the last word of `"John Doe"`.
pub fn last_name(raw: &str) -> Option<String> {
    let last = match raw.split_once(',') {
        Some((family, _)) => normalize::name(family),
        None => normalize::name(raw)
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned(),
    };
    (!last.is_empty()).then_some(last)
}

/// The first-and-last-name form of `"Doe, John Quincy"` (`"doe john"`, sorted), so
/// a query without the middle name finds it too.
fn first_and_last(raw: &str) -> Option<String> {
    let (family, given) = raw.split_once(',')?;
    let first = normalize::name(given)
        .split_whitespace()
        .next()
        .map(str::to_owned)?;
    let family = normalize::name(family);
    (!family.is_empty()).then(|| sorted_words(&format!("{family} {first}")))
}

/// Collects values while extracting: trims, drops empties and duplicates.
#[derive(Debug, Default, Clone)]
pub struct FieldsBuilder {
    values: BTreeMap<Field, BTreeSet<String>>,
}

impl FieldsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a raw value (ignored when blank).
    pub fn add(&mut self, field: Field, raw: &str) {
        let value = raw.trim();
        if !value.is_empty() {
            self.values
                .entry(field)
                .or_default()
                .insert(value.to_owned());
        }
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The collected fields.
    pub fn build(self) -> Fields {
        self.values
            .into_iter()
            .map(|(field, values)| (field.name().to_owned(), values.into_iter().collect()))
            .collect()
    }
}

/// The normalised search terms of a document's fields, with the virtual fields
/// derived. Values that do not normalise (an unreadable date) are skipped: they
/// were stored as given and can be read back, but cannot be searched.
pub fn search_terms(fields: &Fields) -> BTreeSet<(Field, String)> {
    let mut terms = BTreeSet::new();
    let mut add = |field: Field, raw: &str| {
        if let Ok(term) = field.normalize(raw) {
            terms.insert((field, term));
        }
    };
    for (name, values) in fields {
        let Some(field) = Field::from_name(name) else {
            continue;
        };
        for raw in values {
            add(field, raw);
            match field {
                Field::PatientName => {
                    if let Some(last) = last_name(raw) {
                        add(Field::PatientLastName, &last);
                    }
                    if let Some(short) = first_and_last(raw) {
                        add(Field::PatientName, &short);
                    }
                }
                Field::ServiceDate => add(Field::ServiceMonth, raw),
                Field::MemberId => {
                    let id = normalize::identifier(raw);
                    let chars: Vec<char> = id.chars().collect();
                    if chars.len() >= 4 {
                        let last4: String = chars[chars.len() - 4..].iter().collect();
                        add(Field::MemberIdLast4, &last4);
                    }
                }
                Field::PatientNameDob => {
                    if let Some((name, dob)) = raw.rsplit_once('|') {
                        if let Some(short) = first_and_last(name) {
                            add(Field::PatientNameDob, &format!("{short}|{dob}"));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        let mut b = FieldsBuilder::new();
        for (name, value) in pairs {
            b.add(Field::from_name(name).unwrap(), value);
        }
        b.build()
    }

    #[test]
    fn names_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
        }
        assert_eq!(Field::from_name("ssn"), None);
    }

    #[test]
    fn name_order_and_middle_names_do_not_matter() {
        let terms = search_terms(&fields(&[("patient_name", "DOE, JOHN Q")]));
        for query in ["John Doe", "doe, john", "JOHN Q DOE", "Q John Doe"] {
            let term = Field::PatientName.normalize(query).unwrap();
            assert!(terms.contains(&(Field::PatientName, term)), "{query}");
        }
        assert!(terms.contains(&(Field::PatientLastName, "doe".into())));
    }

    #[test]
    fn virtual_fields_are_derived() {
        let terms = search_terms(&fields(&[
            ("service_date", "20240307"),
            ("member_id", "W123-45-6789"),
            ("patient_name_dob", "Doe, John Q|19800131"),
        ]));
        assert!(terms.contains(&(Field::ServiceDate, "2024-03-07".into())));
        assert!(terms.contains(&(Field::ServiceMonth, "2024-03".into())));
        assert!(terms.contains(&(Field::MemberIdLast4, "6789".into())));
        assert!(terms.contains(&(Field::PatientNameDob, "doe john q|1980-01-31".into())));
        assert!(terms.contains(&(Field::PatientNameDob, "doe john|1980-01-31".into())));
    }

    #[test]
    fn bad_shapes_are_refused_without_echoing_the_value() {
        let e = Field::PatientDob.normalize("Jan 5th").unwrap_err();
        assert_eq!(e.to_string(), "patient_dob expects a date, YYYY-MM-DD");
        assert!(Field::ProviderNpi.normalize("12345").is_err());
        assert_eq!(Field::ServiceMonth.normalize("2024-02").unwrap(), "2024-02");
        assert!(Field::ServiceMonth.normalize("2024-13").is_err());
        assert!(Field::PatientName.normalize(" ,. ").is_err());
    }
}

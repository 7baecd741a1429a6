//! Searchable fields: their names, the values a document carries, and the
//! normalised search terms derived from them.
//!
//! Extractors (X12, FHIR) and callers produce [`Fields`]: raw values per base field,
//! as a person would read them (`"DOE, JOHN Q"`, `"2024-03-01"`). The index and the
//! exact post-filter both go through [`search_terms`], which normalises those values
//! and adds the virtual fields (last name, year-month, last four of the member id).
//! One function for both sides is what makes results exact: a token can only match
//! where the plaintext comparison agrees.

use std::collections::{BTreeMap, BTreeSet, HashSet};
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

/// How much one document may carry: distinct values per field and claims. Past
/// either, extraction stops and the document is refused (its index terms, the
/// sealed metadata and the work to read it grow with both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimits {
    /// Distinct values of any one field.
    pub max_values_per_field: usize,
    /// Claims (an 835 `CLP`, an 837 `CLM`, a FHIR ExplanationOfBenefit, Claim or
    /// ClaimResponse).
    pub max_claims: usize,
}

impl FieldLimits {
    /// No limit (tests and offline tools).
    pub const NONE: FieldLimits = FieldLimits {
        max_values_per_field: usize::MAX,
        max_claims: usize::MAX,
    };
}

/// A document that carries more than its [`FieldLimits`] allow. Names the field
/// and the limit, never a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// More distinct values of one field than the limit.
    #[error("more than {limit} distinct values of {field}")]
    Values {
        /// The field.
        field: Field,
        /// The limit.
        limit: usize,
    },
    /// More claims than the limit.
    #[error("more than {limit} claims")]
    Claims {
        /// The limit.
        limit: usize,
    },
}

/// Collects values while extracting: trims, drops empties and duplicates, counts
/// claims, and remembers the first limit exceeded (after which it takes nothing
/// more: the extractor stops at [`FieldsBuilder::exceeded`]).
#[derive(Debug, Clone)]
pub struct FieldsBuilder {
    values: BTreeMap<Field, BTreeSet<String>>,
    limits: FieldLimits,
    claims: usize,
    exceeded: Option<LimitExceeded>,
}

impl Default for FieldsBuilder {
    fn default() -> Self {
        Self::with_limits(FieldLimits::NONE)
    }
}

impl FieldsBuilder {
    /// An empty builder without limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder that stops at `limits`.
    pub fn with_limits(limits: FieldLimits) -> Self {
        FieldsBuilder {
            values: BTreeMap::new(),
            limits,
            claims: 0,
            exceeded: None,
        }
    }

    /// Adds a raw value (ignored when blank).
    pub fn add(&mut self, field: Field, raw: &str) {
        let value = raw.trim();
        if value.is_empty() || self.exceeded.is_some() {
            return;
        }
        let values = self.values.entry(field).or_default();
        let limit = self.limits.max_values_per_field;
        if values.len() >= limit && !values.contains(value) {
            self.exceeded = Some(LimitExceeded::Values { field, limit });
            return;
        }
        values.insert(value.to_owned());
    }

    /// Counts one claim.
    pub fn add_claim(&mut self) {
        self.claims = self.claims.saturating_add(1);
        let limit = self.limits.max_claims;
        if self.claims > limit && self.exceeded.is_none() {
            self.exceeded = Some(LimitExceeded::Claims { limit });
        }
    }

    /// The first limit exceeded, if any.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        self.exceeded
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

/// Two sets of fields together: `first`'s values in their order, then `second`'s
/// not already there (duplicates dropped on both sides). Linear in the number of
/// values.
pub fn merge(first: Fields, second: Fields) -> Fields {
    let mut merged = Fields::new();
    for (name, values) in first.into_iter().chain(second) {
        let slot: &mut Vec<String> = merged.entry(name).or_default();
        let mut seen: HashSet<String> = slot.iter().cloned().collect();
        slot.reserve(values.len());
        for value in values {
            if !seen.contains(&value) {
                seen.insert(value.clone());
                slot.push(value);
            }
        }
    }
    merged
}

/// The first field of `fields` with more than `limits` allows distinct values.
pub fn check_limits(fields: &Fields, limits: &FieldLimits) -> Result<(), LimitExceeded> {
    for (name, values) in fields {
        let limit = limits.max_values_per_field;
        if values.len() <= limit {
            continue;
        }
        let distinct: HashSet<&String> = values.iter().collect();
        if distinct.len() > limit {
            if let Some(field) = Field::from_name(name) {
                return Err(LimitExceeded::Values { field, limit });
            }
        }
    }
    Ok(())
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
    fn merging_keeps_order_and_drops_duplicates() {
        let mut caller = Fields::new();
        caller.insert(
            "member_id".into(),
            vec!["W2".into(), "W1".into(), "W2".into()],
        );
        let mut extracted = Fields::new();
        extracted.insert(
            "member_id".into(),
            vec!["W1".into(), "W0".into(), "W3".into()],
        );
        extracted.insert("payer".into(), vec!["ACME".into()]);
        let merged = merge(caller, extracted);
        assert_eq!(merged["member_id"], ["W2", "W1", "W0", "W3"]);
        assert_eq!(merged["payer"], ["ACME"]);
    }

    #[test]
    fn merging_is_linear() {
        // 200,000 distinct values on each side: the old merge (a Vec::contains per
        // value) took minutes; a linear one takes well under a second even in a
        // debug build. The bound is a sanity check, not a measurement.
        let values = |offset: usize| -> Vec<String> {
            (0..200_000).map(|i| format!("V{}", i + offset)).collect()
        };
        let mut caller = Fields::new();
        caller.insert("claim_id".into(), values(0));
        let mut extracted = Fields::new();
        extracted.insert("claim_id".into(), values(100_000));
        let started = std::time::Instant::now();
        let merged = merge(caller, extracted);
        assert_eq!(merged["claim_id"].len(), 300_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn the_builder_stops_at_its_limits() {
        let limits = FieldLimits {
            max_values_per_field: 2,
            max_claims: 3,
        };
        let mut b = FieldsBuilder::with_limits(limits);
        b.add(Field::ClaimId, "A");
        b.add(Field::ClaimId, "B");
        b.add(Field::ClaimId, " A ");
        assert_eq!(b.exceeded(), None, "a value already there is no new value");
        b.add(Field::ClaimId, "SECRET");
        let exceeded = b.exceeded().unwrap();
        assert_eq!(
            exceeded,
            LimitExceeded::Values {
                field: Field::ClaimId,
                limit: 2
            }
        );
        assert_eq!(
            exceeded.to_string(),
            "more than 2 distinct values of claim_id"
        );
        b.add(Field::Payer, "ACME");
        assert_eq!(
            b.build()["claim_id"],
            ["A", "B"],
            "nothing is taken after the limit"
        );

        let mut b = FieldsBuilder::with_limits(limits);
        for _ in 0..3 {
            b.add_claim();
        }
        assert_eq!(b.exceeded(), None);
        b.add_claim();
        assert_eq!(b.exceeded(), Some(LimitExceeded::Claims { limit: 3 }));
    }

    #[test]
    fn merged_fields_are_checked_against_the_limits() {
        let limits = FieldLimits {
            max_values_per_field: 2,
            max_claims: 1,
        };
        let mut fields = Fields::new();
        fields.insert("member_id".into(), vec!["A".into(), "B".into(), "A".into()]);
        assert_eq!(check_limits(&fields, &limits), Ok(()));
        fields.insert("payer".into(), vec!["A".into(), "B".into(), "C".into()]);
        assert_eq!(
            check_limits(&fields, &limits),
            Err(LimitExceeded::Values {
                field: Field::Payer,
                limit: 2
            })
        );
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

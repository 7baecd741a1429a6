//! Synthetic X12 835 remittances and 837 claim files, 4010 or 5010, with any
//! delimiters.
//!
//! Each writer renders a whole interchange (ISA, one GS group, ST transaction sets,
//! trailers with correct counts). [`remittance_835`] writes one transaction set per
//! payment (claims grouped by payer and trace number): BPR/TRN, payer and payee
//! (`N1*PR`, `N1*PE` with the first claim's NPI), then per claim CLP, the patient
//! (`NM1*QC`; for a dependant, the subscriber's id in `NM1*IL`), a rendering
//! provider (`NM1*82`) when the claim's NPI is not the payee's, the statement
//! period and per service line SVC with its date and adjustments. An 835 carries no
//! birth date or diagnosis. [`claim_837`] writes up to four claims per transaction
//! set under billing-provider, subscriber and (for dependants) patient levels, with
//! birth dates in DMG, payer id, HI diagnoses and SV1/SV2/SV3 lines; no trace
//! number, payer claim id or status. Whether a claim's patient is a dependant of
//! the subscriber is decided from its claim id, so a claim always renders the same.
//! [`super::expected_fields`] says what extraction must return: with
//! `(false, true)` for an 835 and `(true, false)` for an 837.

use std::fmt::Write as _;

use super::{amount, SynthClaim};

/// The X12 version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X12Version {
    /// 004010 (ISA12 `00401`, ISA11 the standards id `U`, ICD-9 style HI qualifiers).
    V4010,
    /// 005010 (ISA12 `00501`, ISA11 the repetition separator).
    V5010,
}

/// The kind of 837.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimVariant {
    /// 837P: SV1 lines.
    Professional,
    /// 837I: SV2 lines (revenue code, then procedure), statement dates, CL1.
    Institutional,
    /// 837D: SV3 lines with ADA codes.
    Dental,
}

/// The delimiters to write (ASCII characters, all distinct, none a letter, digit or
/// character of the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X12Delimiters {
    /// Element separator.
    pub element: char,
    /// Component separator (ISA16).
    pub component: char,
    /// Repetition separator (ISA11, 5010 only).
    pub repetition: char,
    /// Segment terminator.
    pub segment: char,
}

impl X12Delimiters {
    /// `*` `:` `^` `~`, the usual set.
    pub const STANDARD: X12Delimiters = X12Delimiters {
        element: '*',
        component: ':',
        repetition: '^',
        segment: '~',
    };
    /// `|` `^` `{` `~`.
    pub const PIPE: X12Delimiters = X12Delimiters {
        element: '|',
        component: '^',
        repetition: '{',
        segment: '~',
    };
    /// `*` `>` `^` and a line feed as the segment terminator.
    pub const NEWLINE: X12Delimiters = X12Delimiters {
        element: '*',
        component: '>',
        repetition: '^',
        segment: '\n',
    };
}

/// What follows each segment terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineBreak {
    /// Nothing: one long line.
    None,
    /// `\n`.
    Lf,
    /// `\r\n`.
    CrLf,
}

/// How to write an interchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X12Options {
    /// The version.
    pub version: X12Version,
    /// The delimiters.
    pub delimiters: X12Delimiters,
    /// What follows each segment terminator.
    pub line_break: LineBreak,
}

impl X12Options {
    /// Standard delimiters, a line feed after each segment.
    pub fn new(version: X12Version) -> Self {
        X12Options {
            version,
            delimiters: X12Delimiters::STANDARD,
            line_break: LineBreak::Lf,
        }
    }
}

/// An 835 remittance of `claims`, with standard delimiters.
pub fn remittance_835(claims: &[SynthClaim], version: X12Version) -> String {
    remittance_835_with(claims, &X12Options::new(version))
}

/// An 837 claim file of `claims`, with standard delimiters.
pub fn claim_837(claims: &[SynthClaim], variant: ClaimVariant, version: X12Version) -> String {
    claim_837_with(claims, variant, &X12Options::new(version))
}

/// An 835 remittance of `claims`: one transaction set per payer and trace number.
pub fn remittance_835_with(claims: &[SynthClaim], options: &X12Options) -> String {
    let v5010 = options.version == X12Version::V5010;
    let date = production_date(claims);
    let mut payments: Vec<Vec<&SynthClaim>> = Vec::new();
    for claim in claims {
        let same = |p: &&mut Vec<&SynthClaim>| {
            p.first().is_some_and(|first| {
                (&first.payer_name, &first.payer_id, &first.trace_number)
                    == (&claim.payer_name, &claim.payer_id, &claim.trace_number)
            })
        };
        match payments.iter_mut().find(same) {
            Some(payment) => payment.push(claim),
            None => payments.push(vec![claim]),
        }
    }
    let gs08 = if v5010 {
        "005010X221A1"
    } else {
        "004010X091A1"
    };
    let mut w = Writer::new(options);
    w.open(&date, "HP", gs08);
    for (index, payment) in payments.iter().enumerate() {
        let Some(first) = payment.first() else {
            continue;
        };
        let control = format!("{:04}", index + 1);
        w.st("835", &control, v5010.then_some(gs08));
        let total: i64 = payment.iter().map(|c| paid_cents(c).1).sum();
        let total_text = signed_amount(total);
        if total > 0 {
            let payer_tax = format!("1{}", digits9(&first.payer_id));
            w.seg(
                "BPR",
                &[
                    "I",
                    &total_text,
                    "C",
                    "ACH",
                    "CCP",
                    "01",
                    "999999992",
                    "DA",
                    "123456789",
                    &payer_tax,
                    "",
                    "01",
                    "999988880",
                    "DA",
                    "987654321",
                    &date,
                ],
            );
        } else {
            w.seg(
                "BPR",
                &[
                    "H",
                    &total_text,
                    "C",
                    "NON",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    &date,
                ],
            );
        }
        w.seg(
            "TRN",
            &[
                "1",
                &first.trace_number,
                &format!("1{}", digits9(&first.payer_id)),
            ],
        );
        w.seg("DTM", &["405", &date]);
        w.seg("N1", &["PR", &first.payer_name]);
        w.seg("N3", &["PO BOX 1000"]);
        w.seg("N4", &["SPRINGFIELD", "IL", "62701"]);
        w.seg("PER", &["BL", "PROVIDER SERVICES", "TE", "8005550100"]);
        w.seg(
            "N1",
            &[
                "PE",
                &provider_org(&first.provider_npi),
                "XX",
                &first.provider_npi,
            ],
        );
        w.seg("N3", &["100 MAIN ST"]);
        w.seg("N4", &["SPRINGFIELD", "IL", "62704"]);
        w.seg("REF", &["TJ", &digits9(&first.provider_npi)]);
        w.seg("LX", &["1"]);
        for claim in payment {
            let (charge, paid) = paid_cents(claim);
            let sign = if charge < 0 { -1 } else { 1 };
            w.seg(
                "CLP",
                &[
                    &claim.claim_id,
                    &claim.status,
                    &signed_amount(charge),
                    &signed_amount(paid),
                    &signed_amount(charge - paid),
                    "12",
                    &claim.payer_claim_id,
                    "11",
                    "1",
                ],
            );
            if is_dependant(claim) {
                w.seg("NM1", &["QC", "1", &claim.last_name, &claim.first_name]);
                w.seg(
                    "NM1",
                    &[
                        "IL",
                        "1",
                        &claim.last_name,
                        subscriber_first_name(claim),
                        "",
                        "",
                        "",
                        "MI",
                        &claim.member_id,
                    ],
                );
            } else {
                w.seg(
                    "NM1",
                    &[
                        "QC",
                        "1",
                        &claim.last_name,
                        &claim.first_name,
                        "",
                        "",
                        "",
                        "MI",
                        &claim.member_id,
                    ],
                );
            }
            if claim.provider_npi != first.provider_npi {
                w.seg(
                    "NM1",
                    &[
                        "82",
                        "1",
                        "RENDER",
                        "PAT",
                        "",
                        "",
                        "",
                        "XX",
                        &claim.provider_npi,
                    ],
                );
            }
            if let (Some(from), Some(to)) = (
                claim.service_dates.iter().min(),
                claim.service_dates.iter().max(),
            ) {
                w.seg("DTM", &["232", from]);
                w.seg("DTM", &["233", to]);
            }
            let lines = claim
                .procedure_codes
                .iter()
                .zip(&claim.service_dates)
                .zip(&claim.line_charges_cents);
            for (line, ((code, date), &cents)) in lines.enumerate() {
                let charge = sign * i64::try_from(cents).unwrap_or(i64::MAX);
                let paid = paid_share(claim, charge);
                let modifier = if line == 1 { "25" } else { "" };
                let procedure = w.composite(&[procedure_qualifier(code), code, modifier]);
                w.seg(
                    "SVC",
                    &[
                        &procedure,
                        &signed_amount(charge),
                        &signed_amount(paid),
                        "",
                        "1",
                    ],
                );
                w.seg("DTM", &["472", date]);
                if charge != paid {
                    w.seg("CAS", &["CO", "45", &signed_amount(charge - paid)]);
                }
                w.seg("AMT", &["B6", &signed_amount(paid)]);
            }
        }
        w.se(&control);
    }
    w.close(payments.len())
}

/// A valid 835 of about `target_bytes` that is as hard on extraction and indexing
/// as the writer can make it: one payment of as many claims as fit, each with one
/// service line and its own claim ids, member id and rendering provider, so most
/// fields carry about one distinct value per claim. For stress tests and
/// benchmarks (`claims` says how many it holds).
pub fn large_remittance_835(seed: u64, target_bytes: usize) -> LargeRemittance {
    let shape = |mut claims: Vec<SynthClaim>| -> Vec<SynthClaim> {
        let payment = claims.first().cloned();
        for claim in &mut claims {
            if let Some(first) = &payment {
                claim.payer_name.clone_from(&first.payer_name);
                claim.payer_id.clone_from(&first.payer_id);
                claim.trace_number.clone_from(&first.trace_number);
            }
            claim.service_dates.truncate(1);
            claim.procedure_codes.truncate(1);
            claim.line_charges_cents.truncate(1);
        }
        claims
    };
    let options = X12Options::new(X12Version::V5010);
    let sample =
        |count| remittance_835_with(&shape(SynthClaim::batch(seed, count)), &options).len();
    let (small, large) = (sample(1), sample(101));
    let per_claim = ((large - small) / 100).max(1);
    let count = (target_bytes.saturating_sub(small) / per_claim).max(1);
    let claims = shape(SynthClaim::batch(seed, count));
    LargeRemittance {
        text: remittance_835_with(&claims, &options),
        claims: count,
    }
}

/// What [`large_remittance_835`] made.
#[derive(Debug, Clone)]
pub struct LargeRemittance {
    /// The 835.
    pub text: String,
    /// The claims in it.
    pub claims: usize,
}

/// An 837 claim file of `claims` of the given variant: up to four claims per
/// transaction set, each billing provider (NPI) a level with its claims beneath.
pub fn claim_837_with(
    claims: &[SynthClaim],
    variant: ClaimVariant,
    options: &X12Options,
) -> String {
    let v5010 = options.version == X12Version::V5010;
    let gs08 = match (variant, v5010) {
        (ClaimVariant::Professional, true) => "005010X222A1",
        (ClaimVariant::Institutional, true) => "005010X223A2",
        (ClaimVariant::Dental, true) => "005010X224A2",
        (ClaimVariant::Professional, false) => "004010X098A1",
        (ClaimVariant::Institutional, false) => "004010X096A1",
        (ClaimVariant::Dental, false) => "004010X097A1",
    };
    let date = production_date(claims);
    let mut w = Writer::new(options);
    w.open(&date, "HC", gs08);
    let chunks: Vec<&[SynthClaim]> = claims.chunks(4).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        let control = format!("{:04}", index + 1);
        w.st("837", &control, v5010.then_some(gs08));
        w.seg(
            "BHT",
            &["0019", "00", &format!("B{control}"), &date, "1200", "CH"],
        );
        if !v5010 {
            w.seg("REF", &["87", gs08]);
        }
        w.seg(
            "NM1",
            &[
                "41",
                "2",
                "SYNTHETIC BILLING SERVICE",
                "",
                "",
                "",
                "",
                "46",
                "SUBM0001",
            ],
        );
        w.seg("PER", &["IC", "EDI DESK", "TE", "5555550100"]);
        w.seg(
            "NM1",
            &[
                "40",
                "2",
                "SYNTHETIC CLEARINGHOUSE",
                "",
                "",
                "",
                "",
                "46",
                "RECV0001",
            ],
        );
        let mut providers: Vec<&str> = Vec::new();
        for claim in chunk.iter() {
            if !providers.contains(&claim.provider_npi.as_str()) {
                providers.push(&claim.provider_npi);
            }
        }
        let mut hl = 0usize;
        for npi in providers {
            hl += 1;
            let provider_hl = hl.to_string();
            w.seg("HL", &[&provider_hl, "", "20", "1"]);
            w.seg(
                "PRV",
                &["BI", if v5010 { "PXC" } else { "ZZ" }, "207Q00000X"],
            );
            w.seg(
                "NM1",
                &["85", "2", &provider_org(npi), "", "", "", "", "XX", npi],
            );
            w.seg("N3", &["100 MAIN ST"]);
            w.seg("N4", &["SPRINGFIELD", "IL", "62704"]);
            w.seg("REF", &["EI", &digits9(npi)]);
            for claim in chunk.iter().filter(|c| c.provider_npi == npi) {
                hl += 1;
                let subscriber_hl = hl.to_string();
                let dependant = is_dependant(claim);
                w.seg(
                    "HL",
                    &[
                        &subscriber_hl,
                        &provider_hl,
                        "22",
                        if dependant { "1" } else { "0" },
                    ],
                );
                let group = format!("GRP{}", digits9(&claim.member_id));
                w.seg(
                    "SBR",
                    &[
                        "P",
                        if dependant { "" } else { "18" },
                        &group,
                        "",
                        "",
                        "",
                        "",
                        "",
                        "CI",
                    ],
                );
                let (sub_first, sub_dob) = if dependant {
                    (subscriber_first_name(claim), subscriber_dob(claim))
                } else {
                    (claim.first_name.as_str(), claim.dob.clone())
                };
                w.seg(
                    "NM1",
                    &[
                        "IL",
                        "1",
                        &claim.last_name,
                        sub_first,
                        "",
                        "",
                        "",
                        "MI",
                        &claim.member_id,
                    ],
                );
                w.seg("N3", &["12 ELM ST"]);
                w.seg("N4", &["SPRINGFIELD", "IL", "62702"]);
                w.seg("DMG", &["D8", &sub_dob, "U"]);
                w.seg(
                    "NM1",
                    &[
                        "PR",
                        "2",
                        &claim.payer_name,
                        "",
                        "",
                        "",
                        "",
                        "PI",
                        &claim.payer_id,
                    ],
                );
                if dependant {
                    hl += 1;
                    w.seg("HL", &[&hl.to_string(), &subscriber_hl, "23", "0"]);
                    w.seg("PAT", &["19"]);
                    w.seg("NM1", &["QC", "1", &claim.last_name, &claim.first_name]);
                    w.seg("N3", &["12 ELM ST"]);
                    w.seg("N4", &["SPRINGFIELD", "IL", "62702"]);
                    w.seg("DMG", &["D8", &claim.dob, "U"]);
                }
                write_claim(&mut w, claim, variant, v5010);
            }
        }
        w.se(&control);
    }
    w.close(chunks.len())
}

/// The CLM loop of an 837: claim, dates, diagnoses, service lines.
fn write_claim(w: &mut Writer, claim: &SynthClaim, variant: ClaimVariant, v5010: bool) {
    let place = match (variant, v5010) {
        (ClaimVariant::Institutional, _) => w.composite(&["13", "A", "1"]),
        (_, true) => w.composite(&["11", "B", "1"]),
        (_, false) => w.composite(&["11", "", "1"]),
    };
    let total = amount(claim.total_charge_cents());
    w.seg(
        "CLM",
        &[&claim.claim_id, &total, "", "", &place, "Y", "A", "Y", "Y"],
    );
    if variant == ClaimVariant::Institutional {
        if let (Some(from), Some(to)) = (
            claim.service_dates.iter().min(),
            claim.service_dates.iter().max(),
        ) {
            w.seg("DTP", &["434", "RD8", &format!("{from}-{to}")]);
        }
        w.seg("CL1", &["1", "1", "01"]);
    }
    let (principal, other) = if v5010 { ("ABK", "ABF") } else { ("BK", "BF") };
    let diagnoses: Vec<String> = claim
        .diagnosis_codes
        .iter()
        .enumerate()
        .map(|(i, code)| w.composite(&[if i == 0 { principal } else { other }, code]))
        .collect();
    if variant == ClaimVariant::Institutional && diagnoses.len() > 1 {
        let (first, rest) = diagnoses.split_at(1);
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        w.seg("HI", &first);
        w.seg("HI", &rest);
    } else if !diagnoses.is_empty() {
        let all: Vec<&str> = diagnoses.iter().map(String::as_str).collect();
        w.seg("HI", &all);
    }
    let lines = claim
        .procedure_codes
        .iter()
        .zip(&claim.service_dates)
        .zip(&claim.line_charges_cents);
    for (line, ((code, date), &cents)) in lines.enumerate() {
        w.seg("LX", &[&(line + 1).to_string()]);
        let charge = amount(cents);
        let pointer = if claim.diagnosis_codes.len() > 1 {
            "1:2"
        } else {
            "1"
        };
        let pointer = pointer.replace(':', &w.delimiters.component.to_string());
        match variant {
            ClaimVariant::Professional => {
                let procedure = w.composite(&[procedure_qualifier(code), code]);
                w.seg("SV1", &[&procedure, &charge, "UN", "1", "", "", &pointer]);
            }
            ClaimVariant::Institutional => {
                let procedure = w.composite(&[procedure_qualifier(code), code]);
                w.seg("SV2", &["0450", &procedure, &charge, "UN", "1"]);
            }
            ClaimVariant::Dental => {
                let procedure = w.composite(&["AD", code]);
                w.seg("SV3", &[&procedure, &charge, "", "", "", "1"]);
            }
        }
        w.seg("DTP", &["472", "D8", date]);
    }
}

/// Writes segments and counts them for the trailers.
struct Writer {
    out: String,
    delimiters: X12Delimiters,
    version: X12Version,
    line_break: &'static str,
    /// Segments since the last ST, that ST included.
    in_set: usize,
}

impl Writer {
    fn new(options: &X12Options) -> Self {
        Writer {
            out: String::new(),
            delimiters: options.delimiters,
            version: options.version,
            line_break: match options.line_break {
                LineBreak::None => "",
                LineBreak::Lf => "\n",
                LineBreak::CrLf => "\r\n",
            },
            in_set: 0,
        }
    }

    /// A segment; trailing empty elements are left out, as X12 requires.
    fn seg(&mut self, id: &str, elements: &[&str]) {
        let used = elements
            .iter()
            .rposition(|e| !e.is_empty())
            .map_or(0, |last| last + 1);
        self.out.push_str(id);
        for element in elements.iter().take(used) {
            self.out.push(self.delimiters.element);
            self.out.push_str(element);
        }
        self.end_segment();
    }

    fn end_segment(&mut self) {
        self.out.push(self.delimiters.segment);
        self.out.push_str(self.line_break);
        self.in_set += 1;
    }

    /// A composite element; trailing empty components are left out.
    fn composite(&self, parts: &[&str]) -> String {
        let used = parts
            .iter()
            .rposition(|p| !p.is_empty())
            .map_or(0, |last| last + 1);
        let separator = self.delimiters.component.to_string();
        parts
            .iter()
            .take(used)
            .copied()
            .collect::<Vec<_>>()
            .join(&separator)
    }

    /// ISA (fixed length) and GS.
    fn open(&mut self, date: &str, functional_id: &str, gs08: &str) {
        let d = self.delimiters;
        let e = d.element;
        let (isa11, isa12) = match self.version {
            X12Version::V4010 => ('U', "00401"),
            X12Version::V5010 => (d.repetition, "00501"),
        };
        let short_date = date.get(2..).unwrap_or("240101");
        let _ = write!(
            self.out,
            "ISA{e}00{e}{:10}{e}00{e}{:10}{e}ZZ{e}{:<15}{e}ZZ{e}{:<15}{e}{short_date}{e}1200{e}{isa11}{e}{isa12}{e}{:09}{e}0{e}P{e}{}",
            "", "", "SYNTHSENDER", "SYNTHRECEIVER", 1, d.component
        );
        self.end_segment();
        self.seg(
            "GS",
            &[
                functional_id,
                "SYNTHSENDER",
                "SYNTHRECEIVER",
                date,
                "1200",
                "1",
                "X",
                gs08,
            ],
        );
    }

    fn st(&mut self, code: &str, control: &str, implementation: Option<&str>) {
        self.in_set = 0;
        self.seg("ST", &[code, control, implementation.unwrap_or_default()]);
    }

    fn se(&mut self, control: &str) {
        let count = (self.in_set + 1).to_string();
        self.seg("SE", &[&count, control]);
    }

    /// GE and IEA; the finished interchange.
    fn close(mut self, sets: usize) -> String {
        self.seg("GE", &[&sets.to_string(), "1"]);
        self.seg("IEA", &["1", "000000001"]);
        self.out
    }
}

/// The latest service date of the claims (`YYYYMMDD`): the file's production date.
fn production_date(claims: &[SynthClaim]) -> String {
    claims
        .iter()
        .flat_map(|c| c.service_dates.iter())
        .max()
        .cloned()
        .unwrap_or_else(|| "20240101".to_owned())
}

/// Whether the claim's patient is a dependant of the subscriber (about one in
/// three, decided by the claim id).
fn is_dependant(claim: &SynthClaim) -> bool {
    claim.claim_id.bytes().map(u32::from).sum::<u32>() % 3 == 0
}

/// The subscriber of a dependant: a first name no patient has.
fn subscriber_first_name(claim: &SynthClaim) -> &'static str {
    const NAMES: [&str; 4] = ["ROBERT", "PATRICIA", "JAMES", "JENNIFER"];
    let index = claim.member_id.bytes().map(usize::from).sum::<usize>() % NAMES.len();
    NAMES.get(index).copied().unwrap_or("ROBERT")
}

/// The subscriber of a dependant was born 28 years before the patient.
fn subscriber_dob(claim: &SynthClaim) -> String {
    let year: u32 = claim
        .dob
        .get(..4)
        .and_then(|y| y.parse().ok())
        .unwrap_or(1990);
    format!(
        "{:04}{}",
        year.saturating_sub(28),
        claim.dob.get(4..).unwrap_or("0101")
    )
}

/// The nine digits of an id, zero-padded (a tax id made from an NPI or payer id).
fn digits9(id: &str) -> String {
    let digits: String = id.chars().filter(char::is_ascii_digit).collect();
    let tail = digits
        .get(digits.len().saturating_sub(9)..)
        .unwrap_or_default();
    format!("{tail:0>9}")
}

fn provider_org(npi: &str) -> String {
    format!("SYNTH CLINIC {}", npi.get(6..).unwrap_or_default())
}

fn procedure_qualifier(code: &str) -> &'static str {
    if code.starts_with('D') {
        "AD"
    } else {
        "HC"
    }
}

/// A claim's charge and payment in cents: denied (status 4) claims are paid
/// nothing, reversals (status 22) are negative, others are paid 80 %.
fn paid_cents(claim: &SynthClaim) -> (i64, i64) {
    let charge = i64::try_from(claim.total_charge_cents()).unwrap_or(i64::MAX);
    let charge = if claim.status == "22" {
        -charge
    } else {
        charge
    };
    let paid = claim
        .line_charges_cents
        .iter()
        .map(|&c| {
            let c = i64::try_from(c).unwrap_or(i64::MAX);
            paid_share(claim, if charge < 0 { -c } else { c })
        })
        .sum();
    (charge, paid)
}

fn paid_share(claim: &SynthClaim, charge: i64) -> i64 {
    if claim.status == "4" {
        0
    } else {
        charge / 10 * 8
    }
}

fn signed_amount(cents: i64) -> String {
    let text = amount(cents.unsigned_abs());
    if cents < 0 {
        format!("-{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::x12::reader::{Reader, ISA_LEN};

    #[test]
    fn a_large_remittance_is_about_its_size_and_valid() {
        let large = large_remittance_835(3, 256 * 1024);
        let len = large.text.len();
        assert!((200 * 1024..300 * 1024).contains(&len), "{len}");
        check_envelope(&large.text);
        let fields = crate::extract::x12::extract(large.text.as_bytes()).unwrap();
        let claim_ids = fields["claim_id"].len();
        // Random ids rarely collide.
        assert!(
            claim_ids * 100 >= large.claims * 99,
            "{claim_ids} of {}",
            large.claims
        );
        assert_eq!(fields["trace_number"].len(), 1);
    }

    fn options(
        version: X12Version,
        delimiters: X12Delimiters,
        line_break: LineBreak,
    ) -> X12Options {
        X12Options {
            version,
            delimiters,
            line_break,
        }
    }

    /// Checks the envelope counts: SE01 segments, GE01 sets, and the ISA length.
    fn check_envelope(text: &str) {
        let segments: Vec<_> = Reader::new(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(segments[0].id(), "ISA");
        assert_eq!(segments[0].offset(), 0);
        assert!(segments[1].offset() >= ISA_LEN);
        let mut st = None;
        let mut sets = 0;
        for s in &segments {
            match s.id() {
                "ST" => st = Some(s.position()),
                "SE" => {
                    let count: usize = s.text(1).parse().unwrap();
                    assert_eq!(count, s.position() - st.take().unwrap() + 1);
                    sets += 1;
                }
                "GE" => assert_eq!(s.text(1), sets.to_string()),
                _ => {}
            }
        }
    }

    #[test]
    fn envelopes_have_correct_counts_in_every_form() {
        let claims = SynthClaim::batch(3, 9);
        for version in [X12Version::V4010, X12Version::V5010] {
            for delimiters in [
                X12Delimiters::STANDARD,
                X12Delimiters::PIPE,
                X12Delimiters::NEWLINE,
            ] {
                for line_break in [LineBreak::None, LineBreak::Lf, LineBreak::CrLf] {
                    let o = options(version, delimiters, line_break);
                    check_envelope(&remittance_835_with(&claims, &o));
                    for variant in [
                        ClaimVariant::Professional,
                        ClaimVariant::Institutional,
                        ClaimVariant::Dental,
                    ] {
                        check_envelope(&claim_837_with(&claims, variant, &o));
                    }
                }
            }
        }
    }

    #[test]
    fn versions_differ_in_the_header_and_qualifiers() {
        let claims = SynthClaim::batch(5, 2);
        let old = claim_837(&claims, ClaimVariant::Professional, X12Version::V4010);
        let new = claim_837(&claims, ClaimVariant::Professional, X12Version::V5010);
        assert!(old.contains("*U*00401*"));
        assert!(new.contains("*^*00501*"));
        assert!(old.contains("HI*BK:"));
        assert!(new.contains("HI*ABK:"));
        assert!(new.contains("ST*837*0001*005010X222A1~"));
        assert!(old.contains("ST*837*0001~"));
        let remit = remittance_835(&claims, X12Version::V5010);
        assert!(remit.contains("GS*HP*"));
        assert!(!remit.contains("DMG"));
    }

    #[test]
    fn payments_group_claims_by_payer_and_trace() {
        let mut claims = SynthClaim::batch(11, 3);
        claims[1].trace_number = claims[0].trace_number.clone();
        claims[1].payer_name = claims[0].payer_name.clone();
        claims[1].payer_id = claims[0].payer_id.clone();
        let remit = remittance_835(&claims, X12Version::V5010);
        assert_eq!(remit.matches("ST*835*").count(), 2);
        assert_eq!(remit.matches("CLP*").count(), 3);
    }

    #[test]
    fn both_subscriber_shapes_occur() {
        let claims = SynthClaim::batch(1, 30);
        let dependants = claims.iter().filter(|c| is_dependant(c)).count();
        assert!(dependants > 0 && dependants < claims.len());
    }

    #[test]
    fn no_claims_make_an_empty_group() {
        let text = remittance_835(&[], X12Version::V5010);
        assert!(text.contains("GE*0*1~"));
        check_envelope(&text);
    }
}

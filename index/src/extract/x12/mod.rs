//! X12 extraction: the fields of every claim in an interchange file.
//!
//! [`reader`] splits the file into segments with the delimiters each ISA header
//! declares; [`extract`] checks the envelope as it goes (ISA, then GS groups of ST
//! ... SE transaction sets) and hands each transaction set's segments to the reader
//! of its kind: 835 remittances (`remittance`), 837 claims (`claim`), or, for any
//! other set (270/271, 276/277, 275, 999...), the people it names (`common`).
//!
//! Refused: input that does not start with an ISA header, a malformed ISA header,
//! a segment without a valid identifier, content outside a GS group or an ST
//! transaction set, and a transaction set without its SE trailer (a truncated
//! file). Everything else is read as far as it goes: missing optional elements,
//! loops out of order or missing GE/IEA trailers are not errors, and control
//! numbers and counts are not checked. Errors name a byte offset or a segment
//! position and identifier, never a value.

mod claim;
mod common;
pub mod reader;
mod remittance;

use self::claim::Claim;
use self::common::OtherSet;
use self::reader::{Reader, Segment};
use self::remittance::Remittance;
use super::{ExtractError, Format};
use crate::fields::{Fields, FieldsBuilder};

/// Segment ids of the envelope, which may not appear inside a transaction set.
const ENVELOPE_IDS: [&str; 5] = ["ISA", "IEA", "GS", "GE", "ST"];

/// Extracts the fields of every claim in an X12 file (one or more interchanges).
pub fn extract(bytes: &[u8]) -> Result<Fields, ExtractError> {
    let mut out = FieldsBuilder::new();
    read_into(bytes, &mut out)?;
    Ok(out.build())
}

/// Reads the fields of an X12 file into `out`, stopping early (without an error)
/// once `out` has exceeded its limits.
pub(super) fn read_into(bytes: &[u8], out: &mut FieldsBuilder) -> Result<(), ExtractError> {
    let mut reader = Reader::new(bytes);
    let mut envelope = Envelope::default();
    for segment in &mut reader {
        envelope.segment(&segment?, out)?;
        if out.exceeded().is_some() {
            return Ok(());
        }
    }
    envelope.finish(&reader.end_location())
}

/// The reader of one transaction set, by its kind (ST01).
#[derive(Debug)]
enum TransactionSet {
    Remittance(Remittance),
    Claim(Box<Claim>),
    Other(OtherSet),
}

impl TransactionSet {
    fn begin(st: &Segment<'_>) -> Self {
        match st.text(1).as_ref() {
            "835" => TransactionSet::Remittance(Remittance),
            "837" => TransactionSet::Claim(Box::default()),
            _ => TransactionSet::Other(OtherSet::default()),
        }
    }

    fn segment(&mut self, seg: &Segment<'_>, out: &mut FieldsBuilder) {
        match self {
            TransactionSet::Remittance(r) => r.segment(seg, out),
            TransactionSet::Claim(c) => c.segment(seg, out),
            TransactionSet::Other(o) => o.segment(seg, out),
        }
    }

    fn finish(&mut self, out: &mut FieldsBuilder) {
        if let TransactionSet::Claim(c) = self {
            c.finish(out);
        }
    }
}

/// Where in the envelope the reader is.
#[derive(Debug, Default)]
enum State {
    /// Before the first ISA.
    #[default]
    Start,
    /// Inside an interchange, outside a group.
    Interchange { groups: usize },
    /// Inside a group, outside a transaction set.
    Group { sets: usize },
    /// Inside a transaction set begun at segment `st`.
    Set { st: usize, set: TransactionSet },
    /// After an IEA.
    Closed,
}

#[derive(Debug, Default)]
struct Envelope {
    state: State,
}

fn error(location: String, problem: String) -> ExtractError {
    ExtractError {
        format: Format::X12,
        location,
        problem,
    }
}

fn unclosed(st: usize) -> String {
    format!("expected SE closing the transaction set begun at segment {st} (ST)")
}

impl Envelope {
    fn segment(&mut self, seg: &Segment<'_>, out: &mut FieldsBuilder) -> Result<(), ExtractError> {
        let id = seg.id();
        let fail = |problem: &str| Err(error(seg.location(), problem.to_owned()));
        self.state = match std::mem::take(&mut self.state) {
            State::Start | State::Closed if id == "ISA" => State::Interchange { groups: 0 },
            State::Start => return fail("expected an ISA interchange header"),
            State::Closed => return fail("expected ISA (interchange header) after IEA"),
            State::Interchange { groups } => match id {
                "GS" => State::Group { sets: 0 },
                "IEA" => State::Closed,
                // A missing IEA is tolerated; a missing group is not.
                "ISA" if groups > 0 => State::Interchange { groups: 0 },
                _ => return fail("expected GS (functional group header) or IEA"),
            },
            State::Group { sets } => match id {
                "ST" => State::Set {
                    st: seg.position(),
                    set: TransactionSet::begin(seg),
                },
                "GE" => State::Interchange { groups: 1 },
                // Missing GE (and IEA) trailers are tolerated after a transaction set.
                "GS" if sets > 0 => State::Group { sets: 0 },
                "IEA" if sets > 0 => State::Closed,
                "ISA" if sets > 0 => State::Interchange { groups: 0 },
                _ => return fail("expected ST (transaction set header) or GE"),
            },
            State::Set { st, mut set } => {
                if id == "SE" {
                    set.finish(out);
                    State::Group { sets: 1 }
                } else if ENVELOPE_IDS.contains(&id) {
                    return Err(error(seg.location(), unclosed(st)));
                } else {
                    set.segment(seg, out);
                    State::Set { st, set }
                }
            }
        };
        Ok(())
    }

    fn finish(self, end: &str) -> Result<(), ExtractError> {
        let problem = match self.state {
            State::Start => "expected an ISA interchange header".to_owned(),
            State::Interchange { groups: 0 } => "expected GS (functional group header)".to_owned(),
            State::Group { sets: 0 } => "expected ST (transaction set header)".to_owned(),
            State::Set { st, .. } => unclosed(st),
            State::Interchange { .. } | State::Group { .. } | State::Closed => return Ok(()),
        };
        Err(error(end.to_owned(), problem))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::synth::x12::{
        claim_837_with, remittance_835_with, ClaimVariant, LineBreak, X12Delimiters, X12Options,
        X12Version,
    };
    use crate::synth::{expected_fields, SynthClaim};

    const ISA: &str = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*^*00501*000000001*0*P*:~\n";
    const ISA_4010: &str = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*U*00401*000000001*0*P*:~\n";

    fn fields(text: &str) -> BTreeMap<String, Vec<String>> {
        extract(text.as_bytes()).unwrap()
    }

    fn values<'a>(fields: &'a Fields, name: &str) -> Vec<&'a str> {
        fields
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn refused(text: &str) -> ExtractError {
        let e = extract(text.as_bytes()).expect_err("accepted malformed input");
        assert_eq!(e.format, Format::X12);
        e
    }

    const REMITTANCE: &str = "GS*HP*S*R*20240301*1200*1*X*005010X221A1~
ST*835*0001*005010X221A1~
BPR*I*160*C*ACH*CCP*01*999999992*DA*123456789*1512345678**01*999988880*DA*987654321*20240301~
TRN*1*EFT0042*1512345678~
DTM*405*20240301~
N1*PR*ACME HEALTH PLAN*XV*ACME01~
REF*2U*60054~
N1*PE*GOOD CLINIC*XX*1234567893~
LX*1~
CLP*PCN1*1*200*160*40*12*PAYERCLM9*11*1~
NM1*QC*1*DOE*JANE*Q***MI*W123456789~
NM1*82*1*HOUSE*GREGORY****XX*1999999992~
DTM*232*20240210~
DTM*233*20240212~
SVC*HC:99213:25*100*80**1~
DTM*472*20240211~
SVC*HC:85025*100*80**1*HC:85027~
DTM*150*20240212~
CLP*PCN2*4*50*0*0*12*PAYERCLM10~
NM1*QC*1*ROE*RICHARD~
NM1*IL*1*ROE*MARY****MI*M555~
NM1*74*1*WRONG*NAME~
SVC*NU:0450*50*0**1~
SE*23*0001~
GE*1*1~
IEA*1*000000001~
";

    #[test]
    fn a_remittance_gives_payment_claim_patient_and_service_fields() {
        let f = fields(&format!("{ISA}{REMITTANCE}"));
        assert_eq!(values(&f, "trace_number"), ["EFT0042"]);
        assert_eq!(values(&f, "payer"), ["60054", "ACME HEALTH PLAN", "ACME01"]);
        assert_eq!(values(&f, "provider_npi"), ["1234567893", "1999999992"]);
        assert_eq!(values(&f, "claim_id"), ["PCN1", "PCN2"]);
        assert_eq!(values(&f, "claim_status"), ["1", "4"]);
        assert_eq!(values(&f, "payer_claim_id"), ["PAYERCLM10", "PAYERCLM9"]);
        assert_eq!(values(&f, "patient_name"), ["DOE, JANE Q", "ROE, RICHARD"]);
        assert_eq!(values(&f, "member_id"), ["M555", "W123456789"]);
        assert_eq!(
            values(&f, "service_date"),
            ["20240210", "20240211", "20240212"]
        );
        assert_eq!(values(&f, "procedure_code"), ["85025", "85027", "99213"]);
        assert!(!f.contains_key("patient_dob"));
        assert!(!f.contains_key("diagnosis_code"));
    }

    #[test]
    fn a_4010_remittance_reads_the_same() {
        let old = REMITTANCE
            .replace("*005010X221A1", "*004010X091A1")
            .replace("ST*835*0001*004010X091A1", "ST*835*0001");
        assert_eq!(
            fields(&format!("{ISA_4010}{old}")),
            fields(&format!("{ISA}{REMITTANCE}"))
        );
    }

    const CLAIMS: &str = "GS*HC*S*R*20240301*1200*1*X*005010X222A1~
ST*837*0001*005010X222A1~
BHT*0019*00*B1*20240301*1200*CH~
NM1*41*2*SUBMITTER*****46*S1~
NM1*40*2*RECEIVER INC*****46*R1~
HL*1**20*1~
NM1*85*2*GOOD CLINIC*****XX*1234567893~
NM1*87*2~
HL*2*1*22*0~
SBR*P*18*GRP******CI~
NM1*IL*1*DOE*JANE*Q***MI*W123~
DMG*D8*19800131*F~
NM1*PR*2*ACME HEALTH PLAN*****PI*60054~
CLM*PCN1*100***11:B:1*Y*A*Y*Y~
HI*ABK:E119*ABF:I10*BE:02:::1~
LX*1~
SV1*HC:99213:25*100*UN*1***1:2~
DTP*472*D8*20240211~
NM1*82*1*HOUSE*GREGORY****XX*1999999992~
SBR*S*01*******CI~
NM1*IL*1*DOE*JOHN****MI*OTHER77~
NM1*PR*2*OTHER PAYER*****PI*99999~
HL*3*1*22*1~
SBR*P**GRP******CI~
NM1*IL*1*ROE*MARY****MI*M555~
DMG*D8*19600101*F~
NM1*PR*2*ACME HEALTH PLAN*****PI*60054~
HL*4*3*23*0~
PAT*19~
NM1*QC*1*ROE*RICHARD~
DMG*D8*20100505*M~
CLM*PCN2*300***11:B:1*Y*A*Y*Y~
DTP*472*RD8*20240301-20240303~
HI*BK:4019~
LX*1~
SV1*HC:80053*300*UN*1***1~
SE*36*0001~
GE*1*1~
IEA*1*000000001~
";

    #[test]
    fn a_claim_file_gives_the_patient_of_each_claim() {
        let f = fields(&format!("{ISA}{CLAIMS}"));
        assert_eq!(values(&f, "claim_id"), ["PCN1", "PCN2"]);
        // The subscriber of a dependant is not a patient; other subscribers of a
        // claim (coordination of benefits) are neither.
        assert_eq!(values(&f, "patient_name"), ["DOE, JANE Q", "ROE, RICHARD"]);
        assert_eq!(values(&f, "patient_dob"), ["19800131", "20100505"]);
        assert_eq!(
            values(&f, "patient_name_dob"),
            ["DOE, JANE Q|19800131", "ROE, RICHARD|20100505"]
        );
        assert_eq!(values(&f, "member_id"), ["M555", "OTHER77", "W123"]);
        assert_eq!(
            values(&f, "payer"),
            ["60054", "99999", "ACME HEALTH PLAN", "OTHER PAYER"]
        );
        assert_eq!(values(&f, "provider_npi"), ["1234567893", "1999999992"]);
        assert_eq!(values(&f, "diagnosis_code"), ["4019", "E119", "I10"]);
        assert_eq!(values(&f, "procedure_code"), ["80053", "99213"]);
        assert_eq!(
            values(&f, "service_date"),
            ["20240211", "20240301", "20240303"]
        );
        assert!(!f.contains_key("trace_number"));
        assert!(!f.contains_key("claim_status"));
    }

    #[test]
    fn institutional_and_dental_lines_and_statement_dates() {
        let text = format!(
            "{ISA}GS*HC*S*R*20240301*1200*1*X*005010X223A2~ST*837*1~HL*1**20*1~HL*2*1*22*0~\
             NM1*IL*1*DOE*JANE~CLM*I1*10***13:A:1~DTP*434*RD8*20240101-20240105~\
             HI*ABK:R51*ABJ:R509~HI*APR:R05~LX*1~SV2*0450*HC:99284*10*UN*1~SV2*0300~\
             SE*9*1~ST*837*2~HL*1**20*1~HL*2*1*22*0~NM1*IL*1*ROE*AMY~CLM*D1*5~\
             SV3*AD:D1110*5~DTP*472*D8*20240107~SE*6*2~GE*2*1~IEA*1*1~"
        );
        let f = fields(&text);
        assert_eq!(values(&f, "diagnosis_code"), ["R05", "R509", "R51"]);
        assert_eq!(values(&f, "procedure_code"), ["99284", "D1110"]);
        assert_eq!(
            values(&f, "service_date"),
            ["20240101", "20240105", "20240107"]
        );
        assert_eq!(values(&f, "patient_name"), ["DOE, JANE", "ROE, AMY"]);
    }

    #[test]
    fn other_transaction_sets_give_the_people_they_name() {
        let text = format!(
            "{ISA}GS*HS*S*R*20240301*1200*1*X*005010X279A1~ST*270*1~HL*1**20*1~\
             NM1*PR*2*ACME~HL*3*2*22*0~NM1*IL*1*DOE*JANE****MI*W1~REF*SY*1~DMG*D8*19800131~\
             NM1*03*1*DOE*KID~DMG*D8*20200101~SE*9*1~GE*1*1~\
             GS*FA*S*R*20240301*1200*2*X*005010X231A1~ST*999*2~AK1*HC*1~SE*3*2~GE*1*2~IEA*1*1~"
        );
        let f = fields(&text);
        assert_eq!(values(&f, "patient_name"), ["DOE, JANE"]);
        assert_eq!(values(&f, "patient_dob"), ["19800131"]);
        assert_eq!(values(&f, "patient_name_dob"), ["DOE, JANE|19800131"]);
        assert_eq!(values(&f, "member_id"), ["W1"]);
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn social_security_numbers_are_not_member_ids() {
        let text = format!(
            "{ISA}GS*HC~ST*837*1~HL*1**20*1~HL*2*1*22*0~NM1*IL*1*DOE*JANE****34*123456789~\
             CLM*C1~SE*5*1~"
        );
        let f = fields(&text);
        assert!(!f.contains_key("member_id"));
        assert_eq!(values(&f, "patient_name"), ["DOE, JANE"]);
    }

    #[test]
    fn a_subscriber_level_without_claims_is_still_a_patient() {
        let text = format!(
            "{ISA}GS*HC~ST*837*1~HL*1**20*1~HL*2*1*22*0~NM1*IL*1*DOE*JANE~DMG*D8*19800131~\
             HL*3*1*22*1~NM1*IL*1*ROE*MARY~HL*4*3*23*0~NM1*QC*1*ROE*KID~SE*9*1~"
        );
        let f = fields(&text);
        assert_eq!(values(&f, "patient_name"), ["DOE, JANE", "ROE, KID"]);
        assert_eq!(values(&f, "patient_name_dob"), ["DOE, JANE|19800131"]);
    }

    #[test]
    fn missing_trailers_and_elements_are_tolerated() {
        // No GE/IEA, no SE count check, a group ended by the next GS.
        let text =
            format!("{ISA}GS*HC~ST*837*1~CLM*C1~SE*99*7~GS*HP~ST*835*2~CLP~CLP*C2~NM1*QC~SE~");
        let f = fields(&text);
        assert_eq!(values(&f, "claim_id"), ["C1", "C2"]);
        // An empty group and an empty interchange.
        assert!(fields(&format!("{ISA}GS*HC~GE*0*1~IEA*1*1~")).is_empty());
        assert!(fields(&format!("{ISA}IEA*0*1~")).is_empty());
    }

    #[test]
    fn envelope_errors_say_where_and_what() {
        let cases: [(String, &str, &str); 9] = [
            (
                "GS*HC~ST*837*1~SE*2*1~".to_owned(),
                "byte 0",
                "expected an ISA interchange header",
            ),
            (
                String::new(),
                "byte 0 (end of input)",
                "expected an ISA interchange header",
            ),
            (
                format!("{ISA}ST*837*1~SE*2*1~"),
                "segment 2 (ST)",
                "expected GS (functional group header) or IEA",
            ),
            (
                ISA.to_string(),
                "byte 107 (end of input)",
                "expected GS (functional group header)",
            ),
            (
                format!("{ISA}GS*HC~CLM*SECRET~"),
                "segment 3 (CLM)",
                "expected ST (transaction set header) or GE",
            ),
            (
                format!("{ISA}GS*HC~"),
                "byte 113 (end of input)",
                "expected ST (transaction set header)",
            ),
            (
                format!("{ISA}GS*HC~ST*837*1~CLM*SECRET~"),
                "byte 133 (end of input)",
                "expected SE closing the transaction set begun at segment 3 (ST)",
            ),
            (
                format!("{ISA}GS*HC~ST*837*1~CLM*SECRET~ST*837*2~SE*1~"),
                "segment 5 (ST)",
                "expected SE closing the transaction set begun at segment 3 (ST)",
            ),
            (
                format!("{ISA}GS*HC~ST*837*1~SE*2*1~GE*1~IEA*1~GS*HC~"),
                "segment 7 (GS)",
                "expected ISA (interchange header) after IEA",
            ),
        ];
        for (input, location, problem) in cases {
            let e = refused(&input);
            assert_eq!(
                (e.location.as_str(), e.problem.as_str()),
                (location, problem),
                "{input}"
            );
            assert!(!e.to_string().contains("SECRET"));
        }
        let e = refused(&format!("{ISA}GS*HC~ST*837*1~NM1*IL~Nd4*SECRET~SE~"));
        assert_eq!(e.location, "segment 5");
        let e = refused(&format!("{ISA}GS*HC~ST*837*1~NM1*IL~~SE~"));
        assert_eq!(e.location, "segment 5");
        let e = refused(&ISA.replace("*P*", "*PP*"));
        assert_eq!(e.location, "segment 1 (ISA)");
    }

    #[test]
    fn work_is_linear_in_long_inputs() {
        // A million segments and a megabyte-long element: quick, and no stack use.
        let mut text = format!("{ISA}GS*HC~ST*837*1~");
        for i in 0..200_000 {
            text.push_str(&format!("HL*{i}**22*0~NM1*IL*1*A*B~CLM*C~HI*ABK:X~"));
        }
        text.push_str(&format!("NM1*IL*1*{}~SE~", "*".repeat(1 << 20)));
        let f = fields(&text);
        assert_eq!(values(&f, "claim_id"), ["C"]);
    }

    fn all_options() -> impl Strategy<Value = X12Options> {
        (
            prop_oneof![Just(X12Version::V4010), Just(X12Version::V5010)],
            prop_oneof![
                Just(X12Delimiters::STANDARD),
                Just(X12Delimiters::PIPE),
                Just(X12Delimiters::NEWLINE)
            ],
            prop_oneof![
                Just(LineBreak::None),
                Just(LineBreak::Lf),
                Just(LineBreak::CrLf)
            ],
        )
            .prop_map(|(version, delimiters, line_break)| X12Options {
                version,
                delimiters,
                line_break,
            })
    }

    fn variant() -> impl Strategy<Value = ClaimVariant> {
        prop_oneof![
            Just(ClaimVariant::Professional),
            Just(ClaimVariant::Institutional),
            Just(ClaimVariant::Dental)
        ]
    }

    /// A byte-level edit of a valid file.
    #[derive(Debug, Clone)]
    enum Edit {
        Replace(usize, u8),
        Insert(usize, u8),
        Delete(usize),
        Truncate(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let byte = prop_oneof![
            Just(b'*'),
            Just(b'~'),
            Just(b':'),
            Just(b'^'),
            Just(b'\n'),
            Just(b'\r'),
            Just(b' '),
            any::<u8>()
        ];
        prop_oneof![
            (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
            (any::<usize>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Delete),
            any::<usize>().prop_map(Edit::Truncate),
        ]
    }

    fn check_outcome(bytes: &[u8]) {
        if let Err(e) = extract(bytes) {
            assert_eq!(e.format, Format::X12);
            assert!(
                e.location.starts_with("byte ") || e.location.starts_with("segment "),
                "{e}"
            );
            assert!(e.problem.starts_with("expected "), "{e}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            check_outcome(&bytes);
        }

        #[test]
        fn arbitrary_segments_after_a_header_never_panic(
            body in "[A-Z0-9*:^~|\\r\\n ]{0,400}",
            header in prop_oneof![Just(ISA), Just(ISA_4010)],
        ) {
            check_outcome(format!("{header}{body}").as_bytes());
            check_outcome(format!("{header}GS*HC~ST*837*1~{body}").as_bytes());
            check_outcome(format!("{header}GS*HP~ST*835*1~{body}").as_bytes());
        }

        #[test]
        fn edited_files_never_panic(
            seed in any::<u64>(),
            count in 1usize..4,
            options in all_options(),
            variant in variant(),
            remittance in any::<bool>(),
            edits in proptest::collection::vec(edit(), 1..8),
        ) {
            let claims = SynthClaim::batch(seed, count);
            let text = if remittance {
                remittance_835_with(&claims, &options)
            } else {
                claim_837_with(&claims, variant, &options)
            };
            let mut bytes = text.into_bytes();
            for edit in edits {
                let len = bytes.len().max(1);
                match edit {
                    Edit::Replace(i, b) => {
                        if let Some(slot) = bytes.get_mut(i % len) {
                            *slot = b;
                        }
                    }
                    Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
                    Edit::Delete(i) => {
                        if !bytes.is_empty() {
                            bytes.remove(i % len);
                        }
                    }
                    Edit::Truncate(i) => bytes.truncate(i % len),
                }
            }
            check_outcome(&bytes);
        }

        #[test]
        fn remittances_extract_what_they_carry(
            seed in any::<u64>(),
            count in 1usize..8,
            options in all_options(),
        ) {
            let claims = SynthClaim::batch(seed, count);
            let text = remittance_835_with(&claims, &options);
            prop_assert_eq!(extract(text.as_bytes()).unwrap(), expected_fields(&claims, false, true));
        }

        #[test]
        fn claim_files_extract_what_they_carry(
            seed in any::<u64>(),
            count in 1usize..10,
            options in all_options(),
            variant in variant(),
        ) {
            let claims = SynthClaim::batch(seed, count);
            let text = claim_837_with(&claims, variant, &options);
            prop_assert_eq!(extract(text.as_bytes()).unwrap(), expected_fields(&claims, true, false));
        }
    }
}

//! Values every transaction set writes the same way (person names in NM1, birth
//! dates in DMG, dates in DTP/DTM, codes in composites), and the reader of
//! transaction sets other than 835 and 837 (270/271, 276/277, 275, 999...), which
//! keeps only the people they name.

use super::reader::{text, Segment};
use crate::fields::{Field, FieldsBuilder};

/// NM108 / N103 qualifier of a National Provider Identifier.
pub(super) const NPI_QUALIFIER: &str = "XX";

/// NM108 qualifier of a Social Security Number: never indexed as a member id.
const SSN_QUALIFIER: &str = "34";

/// Composite qualifiers of codes that are procedures: HCPCS/CPT (`HC`), ADA dental
/// (`AD`), HIPPS (`HP`), home infusion (`IV`), jurisdiction-specific (`ER`),
/// advanced billing concepts (`WK`), mutually defined (`ZZ`). Revenue codes (`NU`)
/// and drug codes (`N4`) are not procedures.
const PROCEDURE_QUALIFIERS: [&str; 7] = ["HC", "AD", "HP", "IV", "ER", "WK", "ZZ"];

/// A person's name from NM103 (last), NM104 (first) and NM105 (middle), written
/// `LAST, FIRST MIDDLE`; `None` without a last name.
pub(super) fn person_name(seg: &Segment<'_>) -> Option<String> {
    let last = seg.text(3);
    if last.is_empty() {
        return None;
    }
    let given: Vec<_> = [seg.text(4), seg.text(5)]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect();
    Some(if given.is_empty() {
        last.into_owned()
    } else {
        format!("{last}, {}", given.join(" "))
    })
}

/// The member id of an NM1 person (NM109), unless NM108 says it is an SSN.
pub(super) fn add_member_id(seg: &Segment<'_>, out: &mut FieldsBuilder) {
    if !seg.is(8, SSN_QUALIFIER) {
        out.add(Field::MemberId, &seg.text(9));
    }
}

/// NM109 as a provider NPI when NM108 is `XX`.
pub(super) fn add_nm1_npi(seg: &Segment<'_>, out: &mut FieldsBuilder) {
    if seg.is(8, NPI_QUALIFIER) {
        out.add(Field::ProviderNpi, &seg.text(9));
    }
}

/// A DTP date (`D8` date or `RD8` range `YYYYMMDD-YYYYMMDD`: both ends) into `field`.
pub(super) fn add_dtp_dates(seg: &Segment<'_>, field: Field, out: &mut FieldsBuilder) {
    let value = seg.text(3);
    if seg.is(2, "RD8") {
        for end in value.split('-') {
            out.add(field, end);
        }
    } else if seg.is(2, "D8") {
        out.add(field, &value);
    }
}

/// The code of a procedure composite (`HC:99213:25` → `99213`), when its qualifier
/// is a procedure coding system.
pub(super) fn add_procedure(seg: &Segment<'_>, element: usize, out: &mut FieldsBuilder) {
    let qualifier = text(seg.component(element, 1));
    if PROCEDURE_QUALIFIERS.contains(&qualifier.as_ref()) {
        out.add(Field::ProcedureCode, &text(seg.component(element, 2)));
    }
}

/// A person whose name and birth date may be read in separate segments.
#[derive(Debug, Default, Clone)]
pub(super) struct Person {
    pub(super) name: Option<String>,
    pub(super) dob: Option<String>,
}

impl Person {
    /// Adds this person as a patient: name, birth date and the two together.
    pub(super) fn add_as_patient(&self, out: &mut FieldsBuilder) {
        if let Some(name) = &self.name {
            out.add(Field::PatientName, name);
        }
        if let Some(dob) = &self.dob {
            out.add(Field::PatientDob, dob);
        }
        if let (Some(name), Some(dob)) = (&self.name, &self.dob) {
            out.add(Field::PatientNameDob, &format!("{name}|{dob}"));
        }
    }
}

/// A `DMG*D8*YYYYMMDD` birth date.
pub(super) fn birth_date(seg: &Segment<'_>) -> Option<String> {
    let dob = seg.text(2);
    (seg.is(1, "D8") && !dob.is_empty()).then(|| dob.into_owned())
}

/// Transaction sets other than 835 and 837: the subscriber (`NM1*IL`) or patient
/// (`NM1*QC`) they name, with the birth date of a `DMG` that follows.
#[derive(Debug, Default)]
pub(super) struct OtherSet {
    current: Option<String>,
}

impl OtherSet {
    pub(super) fn segment(&mut self, seg: &Segment<'_>, out: &mut FieldsBuilder) {
        match seg.id() {
            "NM1" => {
                self.current = None;
                if seg.is(1, "IL") || seg.is(1, "QC") {
                    add_member_id(seg, out);
                    if let Some(name) = person_name(seg) {
                        out.add(Field::PatientName, &name);
                        self.current = Some(name);
                    }
                }
            }
            "DMG" => {
                if let Some(name) = self.current.take() {
                    Person {
                        name: Some(name),
                        dob: birth_date(seg),
                    }
                    .add_as_patient(out);
                }
            }
            "HL" => self.current = None,
            _ => {}
        }
    }
}

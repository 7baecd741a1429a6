//! The 837 health care claim: professional (P), institutional (I) and dental (D),
//! 4010 and 5010.
//!
//! An 837 nests claims in hierarchical levels (`HL03`): billing provider (`20`),
//! subscriber (`22`) and, when the patient is not the subscriber, patient (`23`).
//! `NM1*85` billing and `NM1*87` pay-to provider NPIs (`NM108` = `XX`), `NM1*PR`
//! payer name and id; `NM1*IL` subscriber (name, `NM109` member id, birth date in
//! the `DMG` that follows); `NM1*QC` patient. A claim (`CLM`) under a subscriber
//! level is the subscriber's own; under a patient level it is the patient's. In the
//! claim: `CLM01` patient control number, `HI` diagnosis codes, `SV1`/`SV2`/`SV3`
//! procedure codes, `DTP*472` service dates, `DTP*434` (institutional) statement
//! dates, `NM1*82` rendering provider; `NM1*IL`/`NM1*PR` there are other
//! subscribers and payers (coordination of benefits): their ids and payer names are
//! kept, their names are not patient names.

use super::common::{
    add_dtp_dates, add_member_id, add_nm1_npi, add_procedure, birth_date, person_name, Person,
};
use super::reader::{text, Segment};
use crate::fields::{Field, FieldsBuilder};

/// HI composite qualifiers of diagnosis codes: ICD-10-CM principal, other,
/// admitting, external cause, patient's reason for visit (ABK, ABF, ABJ, ABN, APR)
/// and their ICD-9-CM forms (BK, BF, BJ, BN, PR).
const DIAGNOSIS_QUALIFIERS: [&str; 10] = [
    "ABK", "ABF", "ABJ", "ABN", "APR", "BK", "BF", "BJ", "BN", "PR",
];

/// Which hierarchical level the segments belong to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Before the first HL (submitter, receiver).
    #[default]
    Header,
    /// 2000A billing provider.
    Provider,
    /// 2000B subscriber.
    Subscriber,
    /// 2000C patient.
    Patient,
    /// Any other HL code.
    Other,
}

/// Whom a `DMG` describes: the person of the last NM1 outside a claim.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Named {
    #[default]
    Nobody,
    Subscriber,
    Patient,
}

/// Reads one 837 transaction set.
#[derive(Debug, Default)]
pub(super) struct Claim {
    level: Level,
    /// After a CLM of the current level (2300/2400 loops and below).
    in_claim: bool,
    named: Named,
    subscriber: Person,
    /// A claim of the subscriber level made the subscriber a patient.
    subscriber_added: bool,
    /// A patient level (or a patient NM1) under this subscriber: the subscriber is
    /// not the patient of its dependants' claims.
    subscriber_has_dependants: bool,
    patient: Person,
    patient_added: bool,
}

impl Claim {
    pub(super) fn segment(&mut self, seg: &Segment<'_>, out: &mut FieldsBuilder) {
        match seg.id() {
            "HL" => self.level(seg, out),
            "NM1" => self.name(seg, out),
            "DMG" if !self.in_claim => {
                let dob = birth_date(seg);
                match self.named {
                    Named::Subscriber => self.subscriber.dob = dob,
                    Named::Patient => self.patient.dob = dob,
                    Named::Nobody => {}
                }
            }
            "CLM" => {
                out.add_claim();
                out.add(Field::ClaimId, &seg.text(1));
                self.in_claim = true;
                self.named = Named::Nobody;
                if self.level == Level::Patient || self.patient.name.is_some() {
                    self.patient.add_as_patient(out);
                    self.patient_added = true;
                } else {
                    self.subscriber.add_as_patient(out);
                    self.subscriber_added = true;
                }
            }
            "HI" => {
                for element in seg.elements() {
                    let mut components = seg.components(element);
                    let qualifier = text(components.next().unwrap_or_default());
                    if DIAGNOSIS_QUALIFIERS.contains(&qualifier.as_ref()) {
                        let code = components.next().unwrap_or_default();
                        out.add(Field::DiagnosisCode, &text(code));
                    }
                }
            }
            "SV1" => add_procedure(seg, 1, out),
            "SV2" => add_procedure(seg, 2, out),
            "SV3" => add_procedure(seg, 1, out),
            "DTP" if seg.is(1, "472") || seg.is(1, "434") => {
                add_dtp_dates(seg, Field::ServiceDate, out);
            }
            _ => {}
        }
    }

    /// The end of the transaction set.
    pub(super) fn finish(&mut self, out: &mut FieldsBuilder) {
        self.close_patient(out);
        self.close_subscriber(out);
    }

    fn level(&mut self, seg: &Segment<'_>, out: &mut FieldsBuilder) {
        self.close_patient(out);
        let level = match seg.text(3).as_ref() {
            "20" => Level::Provider,
            "22" => Level::Subscriber,
            "23" => Level::Patient,
            _ => Level::Other,
        };
        if level == Level::Patient {
            self.subscriber_has_dependants = true;
        } else {
            self.close_subscriber(out);
        }
        self.level = level;
        self.in_claim = false;
        self.named = Named::Nobody;
    }

    fn name(&mut self, seg: &Segment<'_>, out: &mut FieldsBuilder) {
        self.named = Named::Nobody;
        match text(seg.element(1)).as_ref() {
            "85" | "87" | "82" => add_nm1_npi(seg, out),
            "PR" => {
                out.add(Field::Payer, &seg.text(3));
                out.add(Field::Payer, &seg.text(9));
            }
            "IL" => {
                add_member_id(seg, out);
                if !self.in_claim && self.level != Level::Patient {
                    self.subscriber.name = person_name(seg);
                    self.named = Named::Subscriber;
                }
            }
            "QC" => {
                // 4010 patients may carry their own member id.
                add_member_id(seg, out);
                if !self.in_claim {
                    self.patient.name = person_name(seg);
                    self.subscriber_has_dependants = true;
                    self.named = Named::Patient;
                }
            }
            _ => {}
        }
    }

    /// Leaves a patient level: a patient no claim was read for (a file missing its
    /// claims) is still a patient.
    fn close_patient(&mut self, out: &mut FieldsBuilder) {
        if !self.patient_added {
            self.patient.add_as_patient(out);
        }
        self.patient = Person::default();
        self.patient_added = false;
    }

    /// Leaves a subscriber level: a subscriber without dependants is the patient
    /// even when no claim was read.
    fn close_subscriber(&mut self, out: &mut FieldsBuilder) {
        if !self.subscriber_added && !self.subscriber_has_dependants {
            self.subscriber.add_as_patient(out);
        }
        self.subscriber = Person::default();
        self.subscriber_added = false;
        self.subscriber_has_dependants = false;
    }
}

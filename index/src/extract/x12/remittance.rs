//! The 835 health care claim payment/advice (remittance, EOB), 4010 and 5010.
//!
//! Header: `TRN02` check/EFT trace number; `N1*PR` payer name and id (`N104`), and
//! `REF*2U` payer id; `N1*PE` payee NPI when `N103` is `XX`. Per claim payment
//! (`CLP`): `CLP01` patient control number, `CLP02` status, `CLP07` payer claim
//! control number; `NM1*QC` patient name and id, `NM1*IL` subscriber id, `NM1*82`
//! rendering provider NPI; `DTM*232`/`233` statement period, and per service line
//! `DTM*472` (or the `150`/`151` service period) dates of service; `SVC01` (and
//! `SVC06`, the submitted code when it was changed) procedure codes. An 835 carries
//! no birth dates.

use super::common::{add_member_id, add_nm1_npi, add_procedure, person_name, NPI_QUALIFIER};
use super::reader::Segment;
use crate::fields::{Field, FieldsBuilder};

/// DTM qualifiers of service dates: claim statement period from/to (232/233),
/// service date (472), service period start/end (150/151).
const SERVICE_DATE_QUALIFIERS: [&str; 5] = ["232", "233", "472", "150", "151"];

/// Reads one 835 transaction set. Every value is added as it is read: nothing in an
/// 835 depends on what follows it.
#[derive(Debug, Default)]
pub(super) struct Remittance;

impl Remittance {
    pub(super) fn segment(&mut self, seg: &Segment<'_>, out: &mut FieldsBuilder) {
        match seg.id() {
            "TRN" => out.add(Field::TraceNumber, &seg.text(2)),
            "N1" if seg.is(1, "PR") => {
                out.add(Field::Payer, &seg.text(2));
                out.add(Field::Payer, &seg.text(4));
            }
            "N1" if seg.is(1, "PE") && seg.is(3, NPI_QUALIFIER) => {
                out.add(Field::ProviderNpi, &seg.text(4));
            }
            "REF" if seg.is(1, "2U") => out.add(Field::Payer, &seg.text(2)),
            "CLP" => {
                out.add_claim();
                out.add(Field::ClaimId, &seg.text(1));
                out.add(Field::ClaimStatus, &seg.text(2));
                out.add(Field::PayerClaimId, &seg.text(7));
            }
            "NM1" if seg.is(1, "QC") => {
                if let Some(name) = person_name(seg) {
                    out.add(Field::PatientName, &name);
                }
                add_member_id(seg, out);
            }
            "NM1" if seg.is(1, "IL") => add_member_id(seg, out),
            "NM1" if seg.is(1, "82") => add_nm1_npi(seg, out),
            "DTM" if SERVICE_DATE_QUALIFIERS.iter().any(|q| seg.is(1, q)) => {
                out.add(Field::ServiceDate, &seg.text(2));
            }
            "SVC" => {
                add_procedure(seg, 1, out);
                add_procedure(seg, 6, out);
            }
            _ => {}
        }
    }
}

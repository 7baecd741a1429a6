//! FHIR R4 JSON: the searchable fields of ExplanationOfBenefit, Claim and
//! ClaimResponse resources, alone or in Bundles (any type: searchset, collection,
//! transaction…), and of Patient and Coverage resources.
//!
//! A claim's patient, coverages, insurer and providers are references; they are
//! resolved ([`resolve`]) through contained resources (`#id`), the entries of the
//! Bundle the claim is in (by `fullUrl` or `Type/id`), and otherwise read from the
//! reference itself (`display`, a logical `identifier`).
//!
//! What each field is taken from:
//!
//! - `patient_name`: the patient's `official`, `usual` and use-less names, as
//!   `family, given given` (so [`crate::fields::last_name`] finds the family name),
//!   `text` when there is no family name; the reference's `display` when the
//!   patient does not resolve.
//! - `patient_dob`: `Patient.birthDate`; `patient_name_dob`: each name with it.
//! - `member_id`: `Coverage.subscriberId`; Coverage and Patient identifiers typed
//!   `MB` (member number), `SN` (subscriber number) or `MC` (Medicare number, the
//!   MBI an 837 carries as the subscriber id); a claim's `insurance[].coverage`
//!   logical identifier (unless its system names a payer, as BFD's
//!   `fiss/payers-name` does: then it is a payer).
//! - `claim_id`: every `identifier` of the claim (CARIN's `uc`, BFD's `clm_id`,
//!   claim group, `pde_id`…).
//! - `payer`: the insurer's (and a Coverage's payors') `display`, logical
//!   identifier, resolved `Organization.name` and Organization identifiers typed
//!   `payerid` or `NIIP`.
//! - `provider_npi`: NPI identifiers (system `http://hl7.org/fhir/sid/us-npi`, a
//!   type coded `NPI`, or a BFD variable system such as `carr_clm_blg_npi_num`) of
//!   the `provider`, `facility`, `referral`, `requestor`, `payee.party` and
//!   `careTeam[].provider`, inline or on the Organization, Practitioner or
//!   PractitionerRole referenced (one more hop through a PractitionerRole's
//!   practitioner and organization, or a ServiceRequest's requester and
//!   performers).
//! - `service_date`: `billablePeriod`, `item[].servicedDate` and
//!   `item[].servicedPeriod`; a dateTime gives its date (`2019-07-02T10:00:00Z` →
//!   `2019-07-02`, the date where it was written).
//! - `procedure_code`: `item[].productOrService` and
//!   `procedure[].procedureCodeableConcept` codes, or the resolved Procedure's code.
//! - `diagnosis_code`: `diagnosis[].diagnosisCodeableConcept` codes, or the
//!   resolved Condition's code (ICD-10 dots are dropped later, by normalisation).
//! - `claim_status`: the adjudication `outcome` (`queued`, `complete`, `error`,
//!   `partial`) of an ExplanationOfBenefit or ClaimResponse. Not `status`, which is
//!   the resource's own lifecycle (`active`, `cancelled`, `draft`,
//!   `entered-in-error`); the outcome is the closest thing to X12's CLP02 status,
//!   though its values differ.
//!
//! Values are kept as written (trimmed); [`crate::fields::search_terms`]
//! normalises them. Other resource types give nothing; a Bundle gives the fields
//! of all its entries. Errors name a JSON path or a line and column, never a value.

mod json;
mod resolve;
#[cfg(test)]
mod tests;

use serde_json::error::Category;
use serde_json::Value;

use super::ExtractError;
use crate::fields::{Field, Fields, FieldsBuilder};
use json::{Node, Res};
use resolve::{Budget, BundleIndex, Contained, Resource, Scope};

/// The system of US National Provider Identifiers.
const US_NPI: &str = "http://hl7.org/fhir/sid/us-npi";
/// Identifier type codes of member ids: v2-0203 member number, subscriber number,
/// Medicare number.
const MEMBER_TYPES: [&str; 3] = ["MB", "SN", "MC"];
/// Identifier type codes of payer ids: CARIN's `payerid`, v2-0203's National
/// Insurance Payor Identifier.
const PAYER_TYPES: [&str; 2] = ["payerid", "NIIP"];
/// References that name providers.
const PROVIDER_REFERENCES: [&str; 4] = ["provider", "facility", "referral", "requestor"];

/// Extracts the fields of a FHIR R4 JSON resource: an ExplanationOfBenefit,
/// Claim, ClaimResponse, Patient or Coverage, or a Bundle of them.
pub fn extract(bytes: &[u8]) -> Result<Fields, ExtractError> {
    let mut out = FieldsBuilder::new();
    read_into(bytes, &mut out)?;
    Ok(out.build())
}

/// Reads the fields of a FHIR resource into `out`, stopping early (without an
/// error) once `out` has exceeded its limits.
pub(super) fn read_into(bytes: &[u8], out: &mut FieldsBuilder) -> Result<(), ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // serde_json refuses nesting deeper than 128 (its default recursion limit).
    let value: Value = serde_json::from_slice(bytes).map_err(|e| json_error(&e))?;
    let root = Resource::at(&value, "$".to_owned()).map_err(|_| {
        json::error(
            "$.resourceType".to_owned(),
            "expected a FHIR resource: a JSON object with a string resourceType",
        )
    })?;
    let mut budget = Budget::new();
    read(&root, None, &mut budget, out)
}

/// Invalid JSON: where (line and column) and what was expected, never the input.
fn json_error(e: &serde_json::Error) -> ExtractError {
    // serde_json's syntax messages are fixed texts (its `ErrorCode`s); only data
    // errors carry input. Only the matched constant is used, never `text` itself.
    const SYNTAX: [&str; 21] = [
        "EOF while parsing a list",
        "EOF while parsing an object",
        "EOF while parsing a string",
        "EOF while parsing a value",
        "expected `:`",
        "expected `,` or `]`",
        "expected `,` or `}`",
        "expected ident",
        "expected value",
        "expected `\"`",
        "invalid escape",
        "invalid number",
        "number out of range",
        "invalid unicode code point",
        "control character (\\u0000-\\u001F) found while parsing a string",
        "key must be a string",
        "lone leading surrogate in hex escape",
        "trailing comma",
        "trailing characters",
        "unexpected end of hex escape",
        "recursion limit exceeded",
    ];
    let text = e.to_string();
    let problem = match SYNTAX.iter().find(|known| text.starts_with(*known)) {
        Some(known) => format!("invalid JSON: {known}"),
        None => match e.classify() {
            Category::Eof => "invalid JSON: unexpected end of input".to_owned(),
            Category::Syntax => "invalid JSON syntax".to_owned(),
            Category::Data => "invalid JSON data".to_owned(),
            Category::Io => "the input could not be read".to_owned(),
        },
    };
    json::error(format!("line {} column {}", e.line(), e.column()), &problem)
}

/// Reads one resource (an entry of `bundle`, if given) into `out`.
fn read(
    resource: &Resource<'_>,
    bundle: Option<&BundleIndex<'_>>,
    budget: &mut Budget,
    out: &mut FieldsBuilder,
) -> Res<()> {
    let read_one: fn(&Resource<'_>, Scope<'_, '_>, &mut FieldsBuilder) -> Res<()> =
        match resource.kind {
            "Bundle" => {
                // A nested Bundle resolves references among its own entries.
                let index = BundleIndex::of(&resource.node, budget)?;
                for entry in &index.entries {
                    if out.exceeded().is_some() {
                        break;
                    }
                    read(entry, Some(&index), budget, out)?;
                }
                return Ok(());
            }
            "ExplanationOfBenefit" | "Claim" | "ClaimResponse" => claim,
            "Patient" => |r, scope, out| patient(&r.node, scope, out),
            "Coverage" => |r, scope, out| coverage(&r.node, scope, out),
            _ => return Ok(()),
        };
    let contained = Contained::of(&resource.node, budget)?;
    let scope = Scope {
        contained: &contained,
        bundle,
    };
    read_one(resource, scope, out)
}

/// An ExplanationOfBenefit, Claim or ClaimResponse.
fn claim(resource: &Resource<'_>, scope: Scope<'_, '_>, out: &mut FieldsBuilder) -> Res<()> {
    out.add_claim();
    let n = &resource.node;
    for identifier in n.objs("identifier")? {
        if let Some(value) = identifier.str("value")? {
            out.add(Field::ClaimId, value);
        }
    }
    if let Some(reference) = n.obj("patient")? {
        patient_reference(&reference, scope, out)?;
    }
    if let Some(period) = n.obj("billablePeriod")? {
        service_period(&period, out)?;
    }
    if let Some(reference) = n.obj("insurer")? {
        payer_reference(&reference, scope, out)?;
    }
    for key in PROVIDER_REFERENCES {
        if let Some(reference) = n.obj(key)? {
            provider_reference(&reference, scope, 1, out)?;
        }
    }
    if let Some(payee) = n.obj("payee")? {
        if let Some(reference) = payee.obj("party")? {
            provider_reference(&reference, scope, 1, out)?;
        }
    }
    for member in n.objs("careTeam")? {
        if let Some(reference) = member.obj("provider")? {
            provider_reference(&reference, scope, 1, out)?;
        }
    }
    for insurance in n.objs("insurance")? {
        if let Some(reference) = insurance.obj("coverage")? {
            coverage_reference(&reference, scope, out)?;
        }
    }
    for diagnosis in n.objs("diagnosis")? {
        if let Some(concept) = diagnosis.obj("diagnosisCodeableConcept")? {
            codes(&concept, Field::DiagnosisCode, out)?;
        }
        if let Some(reference) = diagnosis.obj("diagnosisReference")? {
            coded_reference(&reference, scope, "Condition", Field::DiagnosisCode, out)?;
        }
    }
    for procedure in n.objs("procedure")? {
        if let Some(concept) = procedure.obj("procedureCodeableConcept")? {
            codes(&concept, Field::ProcedureCode, out)?;
        }
        if let Some(reference) = procedure.obj("procedureReference")? {
            coded_reference(&reference, scope, "Procedure", Field::ProcedureCode, out)?;
        }
    }
    for item in n.objs("item")? {
        if let Some(concept) = item.obj("productOrService")? {
            codes(&concept, Field::ProcedureCode, out)?;
        }
        if let Some(date) = item.str("servicedDate")? {
            out.add(Field::ServiceDate, date_part(date));
        }
        if let Some(period) = item.obj("servicedPeriod")? {
            service_period(&period, out)?;
        }
    }
    if let Some(outcome) = n.str("outcome")? {
        out.add(Field::ClaimStatus, outcome);
    }
    Ok(())
}

/// A Patient's names, birth date and member ids.
fn patient(n: &Node<'_>, _scope: Scope<'_, '_>, out: &mut FieldsBuilder) -> Res<()> {
    let birth_date = n.str("birthDate")?.map(str::trim).filter(|d| !d.is_empty());
    if let Some(dob) = birth_date {
        out.add(Field::PatientDob, dob);
    }
    for name in n.objs("name")? {
        if !matches!(name.str("use")?, None | Some("official" | "usual")) {
            continue;
        }
        if let Some(name) = human_name(&name)? {
            out.add(Field::PatientName, &name);
            if let Some(dob) = birth_date {
                out.add(Field::PatientNameDob, &format!("{name}|{dob}"));
            }
        }
    }
    member_identifiers(n, out)
}

/// A Coverage's member ids and payers.
fn coverage(n: &Node<'_>, scope: Scope<'_, '_>, out: &mut FieldsBuilder) -> Res<()> {
    if let Some(id) = n.str("subscriberId")? {
        out.add(Field::MemberId, id);
    }
    member_identifiers(n, out)?;
    for reference in n.objs("payor")? {
        payer_reference(&reference, scope, out)?;
    }
    Ok(())
}

/// A reference to the patient: the Patient it resolves to, else its `display`.
fn patient_reference(r: &Node<'_>, scope: Scope<'_, '_>, out: &mut FieldsBuilder) -> Res<()> {
    if let Some(identifier) = r.obj("identifier")? {
        if has_type(&identifier, &MEMBER_TYPES)? {
            if let Some(value) = identifier.str("value")? {
                out.add(Field::MemberId, value);
            }
        }
    }
    match resolved(r, scope, &["Patient"])? {
        Some(target) => patient(&target.node, scope, out),
        None => {
            if let Some(display) = r.str("display")? {
                out.add(Field::PatientName, display);
            }
            Ok(())
        }
    }
}

/// A reference to a payer: its `display`, logical identifier, and the resolved
/// Organization's name and payer ids.
fn payer_reference(r: &Node<'_>, scope: Scope<'_, '_>, out: &mut FieldsBuilder) -> Res<()> {
    if let Some(display) = r.str("display")? {
        out.add(Field::Payer, display);
    }
    if let Some(identifier) = r.obj("identifier")? {
        if let Some(value) = identifier.str("value")? {
            out.add(Field::Payer, value);
        }
    }
    if let Some(target) = resolved(r, scope, &["Organization"])? {
        let org = &target.node;
        if let Some(name) = org.str("name")? {
            out.add(Field::Payer, name);
        }
        for identifier in org.objs("identifier")? {
            if has_type(&identifier, &PAYER_TYPES)? {
                if let Some(value) = identifier.str("value")? {
                    out.add(Field::Payer, value);
                }
            }
        }
    }
    Ok(())
}

/// A reference to a coverage: the Coverage it resolves to, and its logical
/// identifier (a member id, or a payer when its system says so).
fn coverage_reference(r: &Node<'_>, scope: Scope<'_, '_>, out: &mut FieldsBuilder) -> Res<()> {
    if let Some(identifier) = r.obj("identifier")? {
        if let Some(value) = identifier.str("value")? {
            let names_payer = identifier
                .str("system")?
                .map(|s| last_segment(s).to_ascii_lowercase().contains("payer"))
                .unwrap_or(false);
            if names_payer && !has_type(&identifier, &MEMBER_TYPES)? {
                out.add(Field::Payer, value);
            } else {
                out.add(Field::MemberId, value);
            }
        }
    }
    if let Some(target) = resolved(r, scope, &["Coverage"])? {
        coverage(&target.node, scope, out)?;
    }
    Ok(())
}

/// A reference to a provider: NPIs on the reference and on what it resolves to,
/// following up to `hops` more provider references from there.
fn provider_reference(
    r: &Node<'_>,
    scope: Scope<'_, '_>,
    hops: u8,
    out: &mut FieldsBuilder,
) -> Res<()> {
    if let Some(identifier) = r.obj("identifier")? {
        npi(&identifier, out)?;
    }
    let Some(target) = resolved(
        r,
        scope,
        &[
            "Organization",
            "Practitioner",
            "PractitionerRole",
            "ServiceRequest",
        ],
    )?
    else {
        return Ok(());
    };
    let n = &target.node;
    let next: &[&str] = match target.kind {
        "ServiceRequest" => &["requester", "performer"],
        "PractitionerRole" => &["practitioner", "organization"],
        _ => &[],
    };
    if target.kind != "ServiceRequest" {
        for identifier in n.objs("identifier")? {
            npi(&identifier, out)?;
        }
    }
    if hops > 0 {
        for key in next {
            if *key == "performer" {
                for reference in n.objs(key)? {
                    provider_reference(&reference, scope, hops - 1, out)?;
                }
            } else if let Some(reference) = n.obj(key)? {
                provider_reference(&reference, scope, hops - 1, out)?;
            }
        }
    }
    Ok(())
}

/// A reference to a Condition or Procedure: its `code`'s codes.
fn coded_reference(
    r: &Node<'_>,
    scope: Scope<'_, '_>,
    kind: &str,
    field: Field,
    out: &mut FieldsBuilder,
) -> Res<()> {
    if let Some(target) = resolved(r, scope, &[kind])? {
        if let Some(concept) = target.node.obj("code")? {
            codes(&concept, field, out)?;
        }
    }
    Ok(())
}

/// The resource a Reference resolves to, when it is one of `kinds`.
fn resolved<'a, 'v>(
    r: &Node<'v>,
    scope: Scope<'a, 'v>,
    kinds: &[&str],
) -> Res<Option<&'a Resource<'v>>> {
    Ok(r.str("reference")?
        .and_then(|reference| scope.resolve(reference))
        .filter(|target| kinds.contains(&target.kind)))
}

/// The member-id identifiers of a Patient or Coverage.
fn member_identifiers(n: &Node<'_>, out: &mut FieldsBuilder) -> Res<()> {
    for identifier in n.objs("identifier")? {
        if has_type(&identifier, &MEMBER_TYPES)? {
            if let Some(value) = identifier.str("value")? {
                out.add(Field::MemberId, value);
            }
        }
    }
    Ok(())
}

/// Adds an identifier's value as an NPI when it is one.
fn npi(identifier: &Node<'_>, out: &mut FieldsBuilder) -> Res<()> {
    let by_system = match identifier.str("system")? {
        Some(system) => {
            system.trim() == US_NPI
                // BFD variables: carr_clm_blg_npi_num, rndrg_physn_npi, …
                || (system.contains("bluebutton.cms.gov")
                    && last_segment(system)
                        .split(['_', '-'])
                        .any(|word| word.eq_ignore_ascii_case("npi")))
        }
        None => false,
    };
    if by_system || has_type(identifier, &["NPI"])? {
        if let Some(value) = identifier.str("value")? {
            out.add(Field::ProviderNpi, value);
        }
    }
    Ok(())
}

/// Whether an identifier's `type` has a coding with one of `codes` (any system;
/// codes compared without case: v2-0203 writes `NPI`, CARIN `npi`).
fn has_type(identifier: &Node<'_>, codes: &[&str]) -> Res<bool> {
    let Some(concept) = identifier.obj("type")? else {
        return Ok(false);
    };
    for coding in concept.objs("coding")? {
        if let Some(code) = coding.str("code")? {
            if codes.iter().any(|c| c.eq_ignore_ascii_case(code.trim())) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Adds the codes of a CodeableConcept's codings.
fn codes(concept: &Node<'_>, field: Field, out: &mut FieldsBuilder) -> Res<()> {
    for coding in concept.objs("coding")? {
        if let Some(code) = coding.str("code")? {
            out.add(field, code);
        }
    }
    Ok(())
}

/// Adds a Period's start and end as dates of service.
fn service_period(period: &Node<'_>, out: &mut FieldsBuilder) -> Res<()> {
    for key in ["start", "end"] {
        if let Some(date) = period.str(key)? {
            out.add(Field::ServiceDate, date_part(date));
        }
    }
    Ok(())
}

/// A HumanName as `family, given given`; its `text` when it has no family name.
fn human_name(name: &Node<'_>) -> Res<Option<String>> {
    let family = name.str("family")?.map(str::trim).unwrap_or_default();
    let given: Vec<&str> = name
        .strs("given")?
        .into_iter()
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    let text = name.str("text")?.map(str::trim).unwrap_or_default();
    let formatted = if !family.is_empty() {
        if given.is_empty() {
            family.to_owned()
        } else {
            format!("{family}, {}", given.join(" "))
        }
    } else if !text.is_empty() {
        text.to_owned()
    } else {
        given.join(" ")
    };
    Ok((!formatted.is_empty()).then_some(formatted))
}

/// The date of a FHIR date or dateTime (`2019-07-02T10:00:00-05:00` →
/// `2019-07-02`); partial dates (`2019`, `2019-07`) as written.
fn date_part(raw: &str) -> &str {
    let raw = raw.trim();
    match (raw.get(..10), raw.as_bytes().get(10)) {
        (Some(date), Some(b'T')) => date,
        _ => raw,
    }
}

/// The last path segment of a URI.
fn last_segment(uri: &str) -> &str {
    uri.trim_end_matches('/').rsplit('/').next().unwrap_or(uri)
}

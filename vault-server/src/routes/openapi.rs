//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! completed from the endpoint table (`endpoint.rs`): every operation's id, its
//! path parameters and the error answers the edge can give any request are
//! filled in from the table, so no annotation can leave them out or get them
//! wrong.

use axum::http::StatusCode;
use axum::Json;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{admin, audit, backups, documents, health, jobs, keys, operators, search};
use crate::endpoint::{Access, Endpoint, Verb};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Billing records vault", description = "Encrypted storage, blind-indexed search and audit for healthcare billing documents."),
    paths(health::healthz, health::readyz, health::metrics, admin::create_tenant, admin::list_tenants, admin::get_tenant, admin::disable_tenant, admin::enable_tenant, admin::issue_api_key, admin::list_api_keys, admin::revoke_api_key, admin::rotate_operator,
        operators::list_operators, operators::add_operator, operators::disable_operator, operators::enable_operator, operators::remove_operator, operators::enroll_mfa, operators::confirm_mfa, operators::reset_operator_mfa,
        documents::upload, documents::download, documents::metadata, documents::delete, documents::list, search::search, search::rebuild, audit::events, audit::checkpoint, audit::proof, jobs::list, jobs::show, jobs::cancel,
        backups::list, backups::public_key, backups::start, backups::prune, backups::hold, backups::release, backups::record_drill,
        keys::rotate, keys::rewrap, keys::rotate_index, keys::offboard, keys::set_retention, keys::hold, keys::release),
    components(schemas(crate::error::ErrorBody, vault_core::tenants::TenantRecord, admin::CreateTenant, admin::IssueApiKey, admin::IssuedApiKey, admin::ListedApiKey, admin::RotatedOperator,
        operators::AddOperator, operators::AddedOperator, operators::ListedOperator, operators::MfaEnrollment, operators::ConfirmMfa, operators::MfaState, vault_api::OperatorRole,
        documents::DocumentBytes, documents::ExtractionMode, documents::UploadResponse, documents::MetadataResponse, documents::ListedDocument, documents::ListResponse, vault_core::documents::DocumentKind,
        search::SearchHit, search::SearchResponse, vault_core::search::ReconcileReport,
        keys::RewrapRequest, keys::RotateIndexRequest, keys::RetentionRequest, vault_core::key_lifecycle::RewrapReport, vault_core::key_lifecycle::OffboardReport,
        backups::BackupPublicKey, audit::EventsResponse, audit::CheckpointResponse, vault_core::audit::read::ProofResponse, vault_core::audit::AuditEvent, vault_core::audit::Outcome, vault_core::jobs::JobRecord, vault_core::jobs::JobList, vault_core::jobs::JobState, vault_core::jobs::JobProgress, vault_core::jobs::JobResult, vault_api::BackupSummary, vault_api::DrillReport, vault_api::TenantDrill)),
    modifiers(&BearerAuth, &FromEndpointTable)
)]
pub struct ApiDoc;

/// A tenant id, as `vault_crypto::TenantId::new` takes it.
const TENANT_ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";
/// A document id: 32 lowercase hex digits (any other names no document: 404).
const DOCUMENT_ID_PATTERN: &str = "^[0-9a-f]{32}$";
/// A job id (`vault_api::is_job_id`).
const JOB_ID_PATTERN: &str = "^job_[0-9a-fA-F]{32}$";
/// An API key id: 16 lowercase hex digits.
const API_KEY_ID_PATTERN: &str = "^[0-9a-f]{16}$";
/// A backup snapshot id (`vault_core::backup::manifest::is_snapshot_id`).
const SNAPSHOT_ID_PATTERN: &str = "^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$";

/// Completes each operation from its row of the endpoint table.
struct FromEndpointTable;

impl Modify for FromEndpointTable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (verb, operation) in [
                (Verb::Get, &mut item.get),
                (Verb::Post, &mut item.post),
                (Verb::Put, &mut item.put),
                (Verb::Delete, &mut item.delete),
            ] {
                let Some(operation) = operation else { continue };
                let Some(endpoint) = Endpoint::ALL
                    .iter()
                    .copied()
                    .find(|e| e.path() == path && e.verb() == verb)
                else {
                    continue;
                };
                operation.operation_id = Some(operation_id(endpoint));
                add_path_parameters(path, operation);
                add_mfa_header(endpoint, operation);
                add_edge_errors(endpoint, operation);
            }
        }
    }
}

/// The endpoint's name in lower camel case (`createTenant`): unique, because
/// the table names each endpoint once.
fn operation_id(endpoint: Endpoint) -> String {
    let name = format!("{endpoint:?}");
    let mut chars = name.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_lowercase().to_string() + chars.as_str()
    })
}

/// Declares each `{name}` of the path, with the pattern of its ids; one the
/// annotation declared gets the pattern when it has none.
fn add_path_parameters(path: &str, operation: &mut Operation) {
    let names = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'));
    for name in names {
        let (pattern, description) = match name {
            "tenant" => (Some(TENANT_ID_PATTERN), "Tenant id."),
            "id" if path.contains("/documents/{id}") => (Some(DOCUMENT_ID_PATTERN), "Document id."),
            "id" if path.starts_with("/v1/admin/jobs") => (Some(JOB_ID_PATTERN), "Job id."),
            "id" if path.starts_with("/v1/admin/api-keys") => {
                (Some(API_KEY_ID_PATTERN), "API key id.")
            }
            "id" if path.starts_with("/v1/admin/operators") => {
                (Some(API_KEY_ID_PATTERN), "Operator id (of its credential).")
            }
            "id" if path.starts_with("/v1/admin/backups") => {
                (Some(SNAPSHOT_ID_PATTERN), "Backup snapshot id.")
            }
            _ => (None, "Identifier."),
        };
        let schema = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(pattern)
                .build()
        };
        let parameters = operation.parameters.get_or_insert_with(Vec::new);
        match parameters
            .iter_mut()
            .find(|p| p.name == name && p.parameter_in == ParameterIn::Path)
        {
            Some(declared) => {
                let has_pattern = matches!(&declared.schema,
                    Some(RefOr::T(Schema::Object(o))) if o.pattern.is_some());
                if !has_pattern && pattern.is_some() {
                    declared.schema = Some(schema().into());
                }
            }
            None => parameters.push(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(description))
                    .schema(Some(schema()))
                    .build(),
            ),
        }
    }
}

/// Declares `X-Vault-MFA` on operator operations: a current TOTP code, needed
/// for sensitive ones (and for all under `[operators] mfa = "all"`).
fn add_mfa_header(endpoint: Endpoint, operation: &mut Operation) {
    if !matches!(endpoint.access(), Access::AnyOperator | Access::Operator(_)) {
        return;
    }
    let description = if endpoint.sensitive() {
        "A current code of the operator's authenticator (six digits). Sensitive operation: needed unless an accepted code opened a step-up window for this credential (`[operators] mfa_step_up_secs`); under `mfa = \"enrolled\"` only from operators who enrolled."
    } else {
        "A current code of the operator's authenticator (six digits): needed only under `[operators] mfa = \"all\"`."
    };
    operation.parameters.get_or_insert_with(Vec::new).push(
        ParameterBuilder::new()
            .name("X-Vault-MFA")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(description))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]{6}$"))
                    .build(),
            ))
            .build(),
    );
}

/// The error answers of the edge, for any request to `endpoint`, in the
/// `{"code", "message"}` envelope; those the annotation names are kept.
fn add_edge_errors(endpoint: Endpoint, operation: &mut Operation) {
    let credentialed = endpoint.access() != Access::Public;
    let with_role = matches!(
        endpoint.access(),
        Access::AnyOperator
            | Access::Operator(_)
            | Access::TenantRole(_)
            | Access::OperatorOrTenantRole(..)
    );
    let on_tenant_data = matches!(
        endpoint.access(),
        Access::TenantRole(_) | Access::OperatorOrTenantRole(..)
    );
    let writes = endpoint.verb() != Verb::Get;
    let has_json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key("application/json"));
    let path = endpoint.path();
    // Operators name the tenant in the query of the audit reads.
    let names_something = path.contains('{') || path.starts_with("/v1/audit/");
    // A tenant's state (offboarded, disabled) or the backup repository's
    // (none configured, a run in progress) can refuse an operator's change.
    let stateful_admin = writes
        && (path.starts_with("/v1/admin/tenants/{tenant}")
            || path.starts_with("/v1/admin/backups")
            || path.starts_with("/v1/admin/operators"));
    let errors: [(bool, StatusCode, &str); 12] = [
        (true, StatusCode::BAD_REQUEST, "The request is malformed (`code` says how): a parameter, a header given twice, or the body."),
        (credentialed, StatusCode::UNAUTHORIZED, "No credential, or one that is not valid; for an operator's sensitive operation, no MFA code, a wrong one or a reused one (`mfa_required`, `mfa_code_invalid`, `mfa_code_reused`)."),
        (with_role, StatusCode::FORBIDDEN, "The credential lacks the role this operation needs, or MFA is required and not enrolled (`mfa_enrollment_required`) or locked after wrong codes (`mfa_locked`)."),
        (names_something, StatusCode::NOT_FOUND, "Nothing by that id."),
        (stateful_admin, StatusCode::CONFLICT, "The tenant's state (offboarded), the backup repository's (none configured, a run in progress) or the operators' (a name taken, the last admin) does not allow it now."),
        (true, StatusCode::REQUEST_TIMEOUT, "The request ran past its time limit."),
        (on_tenant_data, StatusCode::GONE, "The tenant's keys are gone (offboarded)."),
        (has_json_body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "The body is not sent as `application/json`."),
        (true, StatusCode::TOO_MANY_REQUESTS, "Over a rate or concurrency limit; `Retry-After` says when to try again."),
        (true, StatusCode::INTERNAL_SERVER_ERROR, "An internal failure (logged with the request id, never detailed here)."),
        (true, StatusCode::SERVICE_UNAVAILABLE, "Storage, the key service or the audit log is unavailable, or the server is draining; retry (`Retry-After`)."),
        (writes, StatusCode::INSUFFICIENT_STORAGE, "The store is full."),
    ];
    for (applies, status, description) in errors {
        if !applies {
            continue;
        }
        operation
            .responses
            .responses
            .entry(status.as_u16().to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_operation_has_its_own_id_its_path_parameters_and_the_error_envelope() {
        let document = ApiDoc::openapi();
        let mut ids = BTreeSet::new();
        for (path, item) in &document.paths.paths {
            let operations = [&item.get, &item.post, &item.put, &item.delete];
            for operation in operations.into_iter().flatten() {
                let id = operation.operation_id.clone().unwrap_or_default();
                assert!(
                    !id.is_empty() && ids.insert(id.clone()),
                    "{path}: id {id:?}"
                );
                let parameters = operation.parameters.as_deref().unwrap_or_default();
                let in_path: BTreeSet<&str> = parameters
                    .iter()
                    .filter(|p| p.parameter_in == ParameterIn::Path)
                    .map(|p| p.name.as_str())
                    .collect();
                let templated: BTreeSet<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                assert_eq!(in_path, templated, "{path}: path parameters");
                for (status, response) in &operation.responses.responses {
                    // A not-ready /readyz answers its checks, not an error.
                    if status.as_str() < "400" || (path == "/readyz" && status == "503") {
                        continue;
                    }
                    let RefOr::T(response) = response else {
                        panic!("{path} {status}: a reference")
                    };
                    let described = response
                        .content
                        .get("application/json")
                        .and_then(|c| c.schema.as_ref());
                    assert!(
                        matches!(described, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/ErrorBody")),
                        "{path} {status}: not the error envelope"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn the_tenant_id_pattern_takes_exactly_what_tenant_ids_take(raw in "[a-z0-9_A./-]{0,66}") {
            let pattern = regex::Regex::new(TENANT_ID_PATTERN).unwrap();
            prop_assert_eq!(pattern.is_match(&raw), vault_crypto::TenantId::new(raw.clone()).is_ok());
        }

        #[test]
        fn the_document_id_pattern_takes_exactly_what_document_ids_take(raw in "[0-9a-f]{31,33}|[0-9a-fAG]{32}") {
            let pattern = regex::Regex::new(DOCUMENT_ID_PATTERN).unwrap();
            prop_assert_eq!(pattern.is_match(&raw), raw.parse::<vault_crypto::DocumentId>().is_ok());
        }

        #[test]
        fn the_job_id_pattern_takes_exactly_what_job_ids_take(raw in "(job_)?([0-9a-fA-F]{32}|[0-9a-fA-Fg]{30,34})") {
            let pattern = regex::Regex::new(JOB_ID_PATTERN).unwrap();
            prop_assert_eq!(pattern.is_match(&raw), vault_api::is_job_id(&raw));
        }

        #[test]
        fn the_api_key_id_pattern_takes_exactly_what_api_key_ids_take(raw in "[0-9a-fA-G]{14,18}") {
            let pattern = regex::Regex::new(API_KEY_ID_PATTERN).unwrap();
            prop_assert_eq!(
                pattern.is_match(&raw),
                vault_core::credentials::CredentialRecord::is_id(&raw)
            );
        }

        #[test]
        fn the_snapshot_id_pattern_takes_exactly_what_snapshot_ids_take(raw in "[0-9]{7,9}-[0-9a-f]{5,7}-[0-9a-gA]{7,9}") {
            let pattern = regex::Regex::new(SNAPSHOT_ID_PATTERN).unwrap();
            prop_assert_eq!(
                pattern.is_match(&raw),
                vault_core::backup::manifest::is_snapshot_id(&raw)
            );
        }
    }

    #[test]
    fn the_document_describes_exactly_the_documented_endpoints() {
        let document = ApiDoc::openapi();
        // (method, path, whether it asks for a bearer credential)
        let mut described = BTreeSet::new();
        for (path, item) in &document.paths.paths {
            for (method, operation) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
                ("HEAD", &item.head),
                ("OPTIONS", &item.options),
                ("TRACE", &item.trace),
            ] {
                if let Some(operation) = operation {
                    described.insert((
                        method.to_owned(),
                        path.clone(),
                        operation.security.is_some(),
                    ));
                }
            }
        }
        let table: BTreeSet<_> = Endpoint::ALL
            .iter()
            .filter(|e| e.is_documented())
            .map(|e| {
                (
                    e.verb().method().to_string(),
                    e.path().to_owned(),
                    e.access() != Access::Public,
                )
            })
            .collect();
        assert_eq!(
            described.difference(&table).collect::<Vec<_>>(),
            Vec::<&(String, String, bool)>::new(),
            "described, but not so in the endpoint table"
        );
        assert_eq!(
            table.difference(&described).collect::<Vec<_>>(),
            Vec::<&(String, String, bool)>::new(),
            "in the endpoint table, but not so in the document"
        );
    }
}

//! The OpenAPI 3 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, audit, backups, documents, health, jobs, keys, search};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Billing records vault", description = "Encrypted storage, blind-indexed search and audit for healthcare billing documents."),
    paths(health::healthz, health::readyz, health::metrics, admin::create_tenant, admin::list_tenants, admin::get_tenant, admin::disable_tenant, admin::issue_api_key, admin::list_api_keys, admin::revoke_api_key, admin::rotate_operator,
        documents::upload, documents::download, documents::metadata, documents::delete, documents::list, search::search, search::rebuild, audit::events, audit::checkpoint, audit::proof, jobs::list, jobs::show, jobs::cancel,
        backups::list, backups::public_key, backups::start, backups::prune, backups::hold, backups::release, backups::record_drill,
        keys::rotate, keys::rewrap, keys::rotate_index, keys::offboard, keys::set_retention, keys::hold, keys::release),
    components(schemas(crate::error::ErrorBody, vault_core::tenants::TenantRecord, admin::CreateTenant, admin::IssueApiKey, admin::IssuedApiKey, admin::ListedApiKey, admin::RotatedOperator,
        documents::UploadResponse, documents::MetadataResponse, documents::ListedDocument, documents::ListResponse, vault_core::documents::DocumentKind,
        search::SearchHit, search::SearchResponse, vault_core::search::ReconcileReport,
        keys::RewrapRequest, keys::RotateIndexRequest, keys::RetentionRequest, vault_core::key_lifecycle::RewrapReport, vault_core::key_lifecycle::OffboardReport,
        backups::BackupPublicKey, audit::EventsResponse, audit::CheckpointResponse, vault_core::audit::read::ProofResponse, vault_core::audit::AuditEvent, vault_core::audit::Outcome, vault_core::jobs::JobRecord, vault_core::jobs::JobList, vault_core::jobs::JobState, vault_core::jobs::JobProgress, vault_core::jobs::JobResult, vault_api::BackupSummary)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

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

    use super::*;
    use crate::endpoint::{Access, Endpoint};

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

//! The endpoint table: every route of the API once, with what the rest of the
//! edge needs to know about it.
//!
//! Each [`Endpoint`] names its method and path template, the action its audit
//! events carry, the credential it requires, its time budget and whether the
//! OpenAPI document describes it. The router is built from [`Endpoint::ALL`]
//! (`routes/mod.rs`, one handler per endpoint), a request's matched endpoint is put
//! in its extensions for the middleware (time budget, audit), and tests hold the
//! handlers' credential checks and the OpenAPI document to the table.

use axum::http::Method;
use axum::routing::MethodFilter;
use vault_core::credentials::{OperatorRole, Role};

use crate::limits::Budget;

/// Declares the endpoints and [`Endpoint::ALL`] from one list, so no endpoint can
/// be left out of it.
macro_rules! endpoints {
    ($($(#[doc = $doc:literal])* $name:ident,)+) => {
        /// One route of the API: a method and a path template.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Endpoint {
            $($(#[doc = $doc])* $name,)+
        }

        impl Endpoint {
            /// Every endpoint.
            pub const ALL: &'static [Endpoint] = &[$(Endpoint::$name,)+];
        }
    };
}

endpoints! {
    /// `GET /healthz`: liveness.
    Healthz,
    /// `GET /readyz`: readiness.
    Readyz,
    /// `GET /metrics`: Prometheus metrics.
    Metrics,
    /// `GET /v1/openapi.json`: the API description.
    OpenApi,
    /// `POST /v1/admin/tenants`.
    CreateTenant,
    /// `GET /v1/admin/tenants`.
    ListTenants,
    /// `GET /v1/admin/tenants/{tenant}`.
    GetTenant,
    /// `POST /v1/admin/tenants/{tenant}/disable`.
    DisableTenant,
    /// `POST /v1/admin/tenants/{tenant}/enable`.
    EnableTenant,
    /// `POST /v1/admin/tenants/{tenant}/api-keys`.
    IssueApiKey,
    /// `GET /v1/admin/tenants/{tenant}/api-keys`.
    ListApiKeys,
    /// `DELETE /v1/admin/api-keys/{id}`.
    RevokeApiKey,
    /// `POST /v1/admin/operator/rotate`.
    RotateOperator,
    /// `GET /v1/admin/operators`.
    ListOperators,
    /// `POST /v1/admin/operators`.
    AddOperator,
    /// `POST /v1/admin/operators/{id}/disable`.
    DisableOperator,
    /// `POST /v1/admin/operators/{id}/enable`.
    EnableOperator,
    /// `DELETE /v1/admin/operators/{id}`.
    RemoveOperator,
    /// `POST /v1/admin/operator/mfa`.
    EnrollMfa,
    /// `POST /v1/admin/operator/mfa/confirm`.
    ConfirmMfa,
    /// `DELETE /v1/admin/operators/{id}/mfa`.
    ResetOperatorMfa,
    /// `GET /v1/admin/backups`.
    ListBackups,
    /// `POST /v1/admin/backups`.
    StartBackup,
    /// `POST /v1/admin/backups/prune`.
    PruneBackups,
    /// `GET /v1/admin/backups/public-key`.
    BackupPublicKey,
    /// `POST /v1/admin/backups/{id}/hold`.
    HoldBackup,
    /// `DELETE /v1/admin/backups/{id}/hold`.
    ReleaseBackup,
    /// `POST /v1/admin/drills`.
    RecordDrill,
    /// `GET /v1/admin/jobs`.
    ListJobs,
    /// `GET /v1/admin/jobs/{id}`.
    ShowJob,
    /// `POST /v1/admin/jobs/{id}/cancel`.
    CancelJob,
    /// `POST /v1/admin/tenants/{tenant}/keys/rotate`.
    RotateKeys,
    /// `POST /v1/admin/tenants/{tenant}/keys/rewrap`.
    RewrapKeys,
    /// `POST /v1/admin/tenants/{tenant}/index/rotate`.
    RotateIndexKey,
    /// `POST /v1/admin/tenants/{tenant}/index/rebuild`.
    RebuildIndex,
    /// `POST /v1/admin/tenants/{tenant}/offboard`.
    OffboardTenant,
    /// `PUT /v1/admin/tenants/{tenant}/retention`.
    SetRetention,
    /// `POST /v1/admin/tenants/{tenant}/documents/{id}/hold`.
    HoldDocument,
    /// `DELETE /v1/admin/tenants/{tenant}/documents/{id}/hold`.
    ReleaseDocument,
    /// `POST /v1/documents`.
    UploadDocument,
    /// `GET /v1/documents`.
    ListDocuments,
    /// `GET /v1/documents/{id}`.
    DownloadDocument,
    /// `DELETE /v1/documents/{id}`.
    DeleteDocument,
    /// `GET /v1/documents/{id}/metadata`.
    DocumentMetadata,
    /// `GET /v1/search`.
    Search,
    /// `GET /v1/audit/events`.
    AuditEvents,
    /// `GET /v1/audit/checkpoint`.
    AuditCheckpoint,
    /// `GET /v1/audit/proof`.
    AuditProof,
}

/// The HTTP methods of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET (axum also routes HEAD to a GET handler).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Verb {
    /// As `http`'s method.
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
        }
    }

    /// As the router's method filter.
    pub fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// The credential an endpoint requires. The handlers check it (after parsing
/// what they parse first, so a malformed body is a 400 before a missing role is a
/// 403); `routes/mod.rs`'s tests hold every handler to its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a credential.
    Public,
    /// The metrics token, and nothing else (401 otherwise).
    MetricsToken,
    /// Any operator credential, whatever its roles (401 without a credential,
    /// 403 for an API key): what concerns the caller itself or only shows
    /// what runs.
    AnyOperator,
    /// An operator credential with this role (401 without a credential, 403
    /// for an API key or an operator without it).
    Operator(OperatorRole),
    /// A tenant API key with this role (401 without a credential, 403 otherwise).
    TenantRole(Role),
    /// An operator credential with the first role, or a tenant API key with
    /// the second.
    OperatorOrTenantRole(OperatorRole, Role),
}

/// The action recorded for a request that matched no endpoint: no route, or a
/// method its route does not take. FORMAT CONSTANT: persisted in audit logs.
pub const UNMATCHED_ACTION: &str = "unknown";

/// One row of the table.
struct Row {
    verb: Verb,
    path: &'static str,
    /// FORMAT CONSTANT: persisted in audit logs as the events' `action`.
    action: Option<&'static str>,
    access: Access,
    budget: Budget,
}

impl Endpoint {
    fn row(self) -> Row {
        use Access::{AnyOperator, MetricsToken, OperatorOrTenantRole, Public, TenantRole};
        use OperatorRole::{Admin, Auditor, BackupOperator, KeyOfficer};
        let operator = Access::Operator;
        use Budget::{Maintenance, Request, Transfer};
        use Verb::{Delete, Get, Post, Put};
        let row = |verb, path, action, access, budget| Row {
            verb,
            path,
            action,
            access,
            budget,
        };
        match self {
            Endpoint::Healthz => row(Get, "/healthz", None, Public, Request),
            Endpoint::Readyz => row(Get, "/readyz", None, Public, Request),
            Endpoint::Metrics => row(Get, "/metrics", None, MetricsToken, Request),
            Endpoint::OpenApi => row(Get, "/v1/openapi.json", None, Public, Request),
            Endpoint::CreateTenant => row(
                Post,
                "/v1/admin/tenants",
                Some("tenant.create"),
                operator(Admin),
                Request,
            ),
            Endpoint::ListTenants => row(
                Get,
                "/v1/admin/tenants",
                Some("tenant.list"),
                operator(Admin),
                Request,
            ),
            Endpoint::GetTenant => row(
                Get,
                "/v1/admin/tenants/{tenant}",
                Some("tenant.show"),
                operator(Admin),
                Request,
            ),
            Endpoint::DisableTenant => row(
                Post,
                "/v1/admin/tenants/{tenant}/disable",
                Some("tenant.disable"),
                operator(Admin),
                Request,
            ),
            Endpoint::EnableTenant => row(
                Post,
                "/v1/admin/tenants/{tenant}/enable",
                Some("tenant.enable"),
                operator(Admin),
                Request,
            ),
            Endpoint::IssueApiKey => row(
                Post,
                "/v1/admin/tenants/{tenant}/api-keys",
                Some("apikey.issue"),
                operator(Admin),
                Request,
            ),
            Endpoint::ListApiKeys => row(
                Get,
                "/v1/admin/tenants/{tenant}/api-keys",
                Some("apikey.list"),
                operator(Admin),
                Request,
            ),
            Endpoint::RevokeApiKey => row(
                Delete,
                "/v1/admin/api-keys/{id}",
                Some("apikey.revoke"),
                operator(Admin),
                Request,
            ),
            Endpoint::RotateOperator => row(
                Post,
                "/v1/admin/operator/rotate",
                Some("operator.rotate"),
                AnyOperator,
                Request,
            ),
            Endpoint::ListOperators => row(
                Get,
                "/v1/admin/operators",
                Some("operator.list"),
                operator(Admin),
                Request,
            ),
            Endpoint::AddOperator => row(
                Post,
                "/v1/admin/operators",
                Some("operator.add"),
                operator(Admin),
                Request,
            ),
            Endpoint::DisableOperator => row(
                Post,
                "/v1/admin/operators/{id}/disable",
                Some("operator.disable"),
                operator(Admin),
                Request,
            ),
            Endpoint::EnableOperator => row(
                Post,
                "/v1/admin/operators/{id}/enable",
                Some("operator.enable"),
                operator(Admin),
                Request,
            ),
            Endpoint::RemoveOperator => row(
                Delete,
                "/v1/admin/operators/{id}",
                Some("operator.remove"),
                operator(Admin),
                Request,
            ),
            Endpoint::EnrollMfa => row(
                Post,
                "/v1/admin/operator/mfa",
                Some("operator.mfa.enroll"),
                AnyOperator,
                Request,
            ),
            Endpoint::ConfirmMfa => row(
                Post,
                "/v1/admin/operator/mfa/confirm",
                Some("operator.mfa.confirm"),
                AnyOperator,
                Request,
            ),
            Endpoint::ResetOperatorMfa => row(
                Delete,
                "/v1/admin/operators/{id}/mfa",
                Some("operator.mfa.reset"),
                operator(Admin),
                Request,
            ),
            Endpoint::ListBackups => row(
                Get,
                "/v1/admin/backups",
                Some("backup.list"),
                operator(BackupOperator),
                Request,
            ),
            Endpoint::StartBackup => row(
                Post,
                "/v1/admin/backups",
                Some("backup.start"),
                operator(BackupOperator),
                Request,
            ),
            Endpoint::PruneBackups => row(
                Post,
                "/v1/admin/backups/prune",
                Some("backup.prune"),
                operator(BackupOperator),
                Maintenance,
            ),
            Endpoint::BackupPublicKey => row(
                Get,
                "/v1/admin/backups/public-key",
                Some("backup.public_key"),
                operator(BackupOperator),
                Request,
            ),
            Endpoint::HoldBackup => row(
                Post,
                "/v1/admin/backups/{id}/hold",
                Some("backup.hold"),
                operator(BackupOperator),
                Request,
            ),
            Endpoint::ReleaseBackup => row(
                Delete,
                "/v1/admin/backups/{id}/hold",
                Some("backup.release"),
                operator(BackupOperator),
                Request,
            ),
            Endpoint::RecordDrill => row(
                Post,
                "/v1/admin/drills",
                Some("drill.report"),
                operator(BackupOperator),
                Request,
            ),
            Endpoint::ListJobs => row(
                Get,
                "/v1/admin/jobs",
                Some("job.list"),
                AnyOperator,
                Request,
            ),
            Endpoint::ShowJob => row(
                Get,
                "/v1/admin/jobs/{id}",
                Some("job.show"),
                AnyOperator,
                Request,
            ),
            Endpoint::CancelJob => row(
                Post,
                "/v1/admin/jobs/{id}/cancel",
                Some("job.cancel"),
                AnyOperator,
                Request,
            ),
            Endpoint::RotateKeys => row(
                Post,
                "/v1/admin/tenants/{tenant}/keys/rotate",
                Some("key.rotate"),
                operator(KeyOfficer),
                Maintenance,
            ),
            Endpoint::RewrapKeys => row(
                Post,
                "/v1/admin/tenants/{tenant}/keys/rewrap",
                Some("key.rewrap"),
                operator(KeyOfficer),
                Maintenance,
            ),
            Endpoint::RotateIndexKey => row(
                Post,
                "/v1/admin/tenants/{tenant}/index/rotate",
                Some("index.rotate"),
                operator(KeyOfficer),
                Maintenance,
            ),
            Endpoint::RebuildIndex => row(
                Post,
                "/v1/admin/tenants/{tenant}/index/rebuild",
                Some("index.rebuild"),
                operator(KeyOfficer),
                Maintenance,
            ),
            Endpoint::OffboardTenant => row(
                Post,
                "/v1/admin/tenants/{tenant}/offboard",
                Some("tenant.offboard"),
                operator(KeyOfficer),
                Maintenance,
            ),
            Endpoint::SetRetention => row(
                Put,
                "/v1/admin/tenants/{tenant}/retention",
                Some("tenant.retention"),
                operator(KeyOfficer),
                Request,
            ),
            Endpoint::HoldDocument => row(
                Post,
                "/v1/admin/tenants/{tenant}/documents/{id}/hold",
                Some("document.hold"),
                operator(KeyOfficer),
                Request,
            ),
            Endpoint::ReleaseDocument => row(
                Delete,
                "/v1/admin/tenants/{tenant}/documents/{id}/hold",
                Some("document.release"),
                operator(KeyOfficer),
                Request,
            ),
            Endpoint::UploadDocument => row(
                Post,
                "/v1/documents",
                Some("document.upload"),
                TenantRole(Role::Uploader),
                Transfer,
            ),
            Endpoint::ListDocuments => row(
                Get,
                "/v1/documents",
                Some("document.list"),
                TenantRole(Role::Reader),
                Request,
            ),
            Endpoint::DownloadDocument => row(
                Get,
                "/v1/documents/{id}",
                Some("document.download"),
                TenantRole(Role::Reader),
                Transfer,
            ),
            Endpoint::DeleteDocument => row(
                Delete,
                "/v1/documents/{id}",
                Some("document.delete"),
                TenantRole(Role::TenantAdmin),
                Request,
            ),
            Endpoint::DocumentMetadata => row(
                Get,
                "/v1/documents/{id}/metadata",
                Some("document.metadata"),
                TenantRole(Role::Reader),
                Request,
            ),
            Endpoint::Search => row(
                Get,
                "/v1/search",
                Some("search"),
                TenantRole(Role::Reader),
                Request,
            ),
            Endpoint::AuditEvents => row(
                Get,
                "/v1/audit/events",
                Some("audit.read"),
                OperatorOrTenantRole(Auditor, Role::Auditor),
                Request,
            ),
            Endpoint::AuditCheckpoint => row(
                Get,
                "/v1/audit/checkpoint",
                Some("audit.checkpoint"),
                OperatorOrTenantRole(Auditor, Role::Auditor),
                Request,
            ),
            Endpoint::AuditProof => row(
                Get,
                "/v1/audit/proof",
                Some("audit.proof"),
                OperatorOrTenantRole(Auditor, Role::Auditor),
                Request,
            ),
        }
    }

    /// Its method.
    pub fn verb(self) -> Verb {
        self.row().verb
    }

    /// Its path template, as the router matches it (`{name}` for a parameter).
    pub fn path(self) -> &'static str {
        self.row().path
    }

    /// The `action` of its audit events; `None` for endpoints that touch no tenant
    /// data and are not audited (health, metrics, the API description).
    pub fn audit_action(self) -> Option<&'static str> {
        self.row().action
    }

    /// The credential it requires.
    pub fn access(self) -> Access {
        self.row().access
    }

    /// Whether it is sensitive: it issues or revokes credentials, destroys or
    /// retires keys, shortens retention, releases a hold or deletes backups, so
    /// an operator makes it only with a current second factor
    /// (`auth::require_step_up`). Re-wrapping asks for one only with
    /// `retire_old` (its handler checks).
    pub fn sensitive(self) -> bool {
        matches!(
            self,
            Endpoint::IssueApiKey
                | Endpoint::RevokeApiKey
                | Endpoint::RotateOperator
                | Endpoint::AddOperator
                | Endpoint::DisableOperator
                | Endpoint::EnableOperator
                | Endpoint::RemoveOperator
                | Endpoint::ResetOperatorMfa
                | Endpoint::OffboardTenant
                | Endpoint::SetRetention
                | Endpoint::ReleaseDocument
                | Endpoint::ReleaseBackup
                | Endpoint::PruneBackups
        )
    }

    /// Whether it enrolls the caller's second factor: asked for no code even
    /// when every operator call needs one (there is none yet).
    pub fn enrolls_mfa(self) -> bool {
        matches!(self, Endpoint::EnrollMfa | Endpoint::ConfirmMfa)
    }

    /// How long a request may take.
    pub fn budget(self) -> Budget {
        self.row().budget
    }

    /// Whether the OpenAPI document (`routes/openapi.rs`) describes it: all but
    /// the document itself.
    pub fn is_documented(self) -> bool {
        self != Endpoint::OpenApi
    }

    /// The endpoint of a method and a matched path template.
    pub fn find(method: &Method, path: &str) -> Option<Endpoint> {
        Endpoint::ALL
            .iter()
            .copied()
            .find(|e| e.path() == path && e.verb().method() == method)
    }
}

/// The audit action of a request: its endpoint's, or, for a request that matched
/// none, [`UNMATCHED_ACTION`] unless its route (the matched path template, empty
/// when no route matched) has only unaudited endpoints.
pub fn audit_action_of(endpoint: Option<Endpoint>, route: &str) -> Option<&'static str> {
    match endpoint {
        Some(endpoint) => endpoint.audit_action(),
        None => {
            let mut on_route = Endpoint::ALL
                .iter()
                .filter(|e| e.path() == route)
                .peekable();
            let unaudited =
                on_route.peek().is_some() && on_route.all(|e| e.audit_action().is_none());
            (!unaudited).then_some(UNMATCHED_ACTION)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;
    use vault_core::config::LimitsConfig;

    /// The action names as audit logs hold them (and as `vault-core`'s table named
    /// them before this one): an endpoint's action must never change.
    const PERSISTED_ACTIONS: &[(&str, &str, Option<&str>)] = &[
        ("POST", "/v1/documents", Some("document.upload")),
        ("GET", "/v1/documents", Some("document.list")),
        ("GET", "/v1/documents/{id}", Some("document.download")),
        ("DELETE", "/v1/documents/{id}", Some("document.delete")),
        (
            "GET",
            "/v1/documents/{id}/metadata",
            Some("document.metadata"),
        ),
        ("GET", "/v1/search", Some("search")),
        ("POST", "/v1/admin/tenants", Some("tenant.create")),
        ("GET", "/v1/admin/tenants", Some("tenant.list")),
        ("GET", "/v1/admin/tenants/{tenant}", Some("tenant.show")),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/disable",
            Some("tenant.disable"),
        ),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/enable",
            Some("tenant.enable"),
        ),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/api-keys",
            Some("apikey.issue"),
        ),
        (
            "GET",
            "/v1/admin/tenants/{tenant}/api-keys",
            Some("apikey.list"),
        ),
        ("DELETE", "/v1/admin/api-keys/{id}", Some("apikey.revoke")),
        ("POST", "/v1/admin/operator/rotate", Some("operator.rotate")),
        ("GET", "/v1/admin/operators", Some("operator.list")),
        ("POST", "/v1/admin/operators", Some("operator.add")),
        (
            "POST",
            "/v1/admin/operators/{id}/disable",
            Some("operator.disable"),
        ),
        (
            "POST",
            "/v1/admin/operators/{id}/enable",
            Some("operator.enable"),
        ),
        (
            "DELETE",
            "/v1/admin/operators/{id}",
            Some("operator.remove"),
        ),
        (
            "POST",
            "/v1/admin/operator/mfa",
            Some("operator.mfa.enroll"),
        ),
        (
            "POST",
            "/v1/admin/operator/mfa/confirm",
            Some("operator.mfa.confirm"),
        ),
        (
            "DELETE",
            "/v1/admin/operators/{id}/mfa",
            Some("operator.mfa.reset"),
        ),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/index/rebuild",
            Some("index.rebuild"),
        ),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/keys/rotate",
            Some("key.rotate"),
        ),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/keys/rewrap",
            Some("key.rewrap"),
        ),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/index/rotate",
            Some("index.rotate"),
        ),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/offboard",
            Some("tenant.offboard"),
        ),
        (
            "PUT",
            "/v1/admin/tenants/{tenant}/retention",
            Some("tenant.retention"),
        ),
        (
            "POST",
            "/v1/admin/tenants/{tenant}/documents/{id}/hold",
            Some("document.hold"),
        ),
        (
            "DELETE",
            "/v1/admin/tenants/{tenant}/documents/{id}/hold",
            Some("document.release"),
        ),
        ("GET", "/v1/admin/backups", Some("backup.list")),
        ("POST", "/v1/admin/backups", Some("backup.start")),
        ("POST", "/v1/admin/backups/prune", Some("backup.prune")),
        (
            "GET",
            "/v1/admin/backups/public-key",
            Some("backup.public_key"),
        ),
        ("POST", "/v1/admin/backups/{id}/hold", Some("backup.hold")),
        (
            "DELETE",
            "/v1/admin/backups/{id}/hold",
            Some("backup.release"),
        ),
        ("POST", "/v1/admin/drills", Some("drill.report")),
        ("GET", "/v1/admin/jobs", Some("job.list")),
        ("GET", "/v1/admin/jobs/{id}", Some("job.show")),
        ("POST", "/v1/admin/jobs/{id}/cancel", Some("job.cancel")),
        ("GET", "/v1/audit/events", Some("audit.read")),
        ("GET", "/v1/audit/checkpoint", Some("audit.checkpoint")),
        ("GET", "/v1/audit/proof", Some("audit.proof")),
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/openapi.json", None),
    ];

    #[test]
    fn every_endpoint_keeps_the_action_its_audit_events_were_written_with() {
        for (method, path, action) in PERSISTED_ACTIONS {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let endpoint = Endpoint::find(&method, path)
                .unwrap_or_else(|| panic!("{method} {path} is not in the table"));
            assert_eq!(endpoint.audit_action(), *action, "{endpoint:?}");
        }
        assert_eq!(PERSISTED_ACTIONS.len(), Endpoint::ALL.len());
    }

    #[test]
    fn a_request_that_matched_no_endpoint_is_unknown_unless_its_route_is_unaudited() {
        // No route at all.
        assert_eq!(audit_action_of(None, ""), Some("unknown"));
        // A method the route does not take (PUT /v1/documents, HEAD of a download).
        assert_eq!(audit_action_of(None, "/v1/documents"), Some("unknown"));
        assert_eq!(Endpoint::find(&Method::HEAD, "/v1/documents/{id}"), None);
        // Health, metrics and the API description are never audited.
        for route in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
            assert_eq!(audit_action_of(None, route), None, "{route}");
        }
        assert_eq!(
            audit_action_of(Some(Endpoint::Search), "/v1/search"),
            Some("search")
        );
        assert_eq!(audit_action_of(Some(Endpoint::Metrics), "/metrics"), None);
    }

    #[test]
    fn each_route_and_method_is_one_endpoint_with_an_action_of_its_own() {
        let mut routes = HashSet::new();
        let mut actions = HashSet::new();
        for endpoint in Endpoint::ALL {
            assert!(
                routes.insert((endpoint.verb(), endpoint.path())),
                "{endpoint:?} repeats a route"
            );
            assert!(endpoint.path().starts_with('/'), "{endpoint:?}");
            if let Some(action) = endpoint.audit_action() {
                assert!(actions.insert(action), "{endpoint:?} repeats {action}");
                assert_ne!(action, UNMATCHED_ACTION);
            }
            // Only what touches no tenant data goes unaudited.
            assert_eq!(
                endpoint.audit_action().is_none(),
                matches!(endpoint.access(), Access::Public | Access::MetricsToken),
                "{endpoint:?}"
            );
        }
    }

    #[test]
    fn budgets_follow_the_endpoint() {
        assert_eq!(Endpoint::UploadDocument.budget(), Budget::Transfer);
        assert_eq!(Endpoint::DownloadDocument.budget(), Budget::Transfer);
        let maintenance: HashSet<Endpoint> = Endpoint::ALL
            .iter()
            .copied()
            .filter(|e| e.budget() == Budget::Maintenance)
            .collect();
        assert_eq!(
            maintenance,
            HashSet::from([
                Endpoint::RotateKeys,
                Endpoint::RewrapKeys,
                Endpoint::RotateIndexKey,
                Endpoint::RebuildIndex,
                Endpoint::OffboardTenant,
                Endpoint::PruneBackups,
            ])
        );
        for endpoint in [Endpoint::ListDocuments, Endpoint::Search, Endpoint::Healthz] {
            assert_eq!(endpoint.budget(), Budget::Request, "{endpoint:?}");
        }
        let limits = LimitsConfig::default();
        assert_eq!(
            Budget::Request.duration(&limits),
            Duration::from_secs(limits.request_timeout_secs)
        );
    }
}

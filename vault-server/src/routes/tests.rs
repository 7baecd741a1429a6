//! The endpoint table against the router: every endpoint's declared access is
//! the one its handler enforces, and every audited request carries its
//! endpoint's action.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tower::ServiceExt;
use vault_core::audit::read::EventFilter;
use vault_core::audit::SYSTEM_LOG;
use vault_core::config::{Config, LimitsConfig};
use vault_core::credentials::{self, OperatorRole, Role};
use vault_core::tenants::NewTenant;
use vault_crypto::{DocumentId, TenantId};

use super::router;
use crate::endpoint::{Access, Endpoint, UNMATCHED_ACTION};
use crate::limits::{CredentialRates, UploadSlots};
use crate::metrics_token::MetricsToken;
use crate::state::{AppState, SharedState};

/// What a request can present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presented {
    Nothing,
    MetricsToken,
    /// The bootstrap operator: every operator role.
    Bootstrap,
    /// A named operator with this one role.
    Operator(OperatorRole),
    ApiKey(Role),
}

const PRESENTED: [Presented; 11] = [
    Presented::Nothing,
    Presented::MetricsToken,
    Presented::Bootstrap,
    Presented::Operator(OperatorRole::Admin),
    Presented::Operator(OperatorRole::KeyOfficer),
    Presented::Operator(OperatorRole::BackupOperator),
    Presented::Operator(OperatorRole::Auditor),
    Presented::ApiKey(Role::Uploader),
    Presented::ApiKey(Role::Reader),
    Presented::ApiKey(Role::Auditor),
    Presented::ApiKey(Role::TenantAdmin),
];

/// Whether `access` lets `presented` through.
fn admits(access: Access, presented: Presented) -> bool {
    match (access, presented) {
        (Access::Public, _)
        | (Access::MetricsToken, Presented::MetricsToken)
        | (Access::AnyOperator, Presented::Bootstrap | Presented::Operator(_))
        | (Access::Operator(_) | Access::OperatorOrTenantRole(..), Presented::Bootstrap) => true,
        (
            Access::Operator(wanted) | Access::OperatorOrTenantRole(wanted, _),
            Presented::Operator(role),
        ) => wanted == role,
        (
            Access::TenantRole(wanted) | Access::OperatorOrTenantRole(_, wanted),
            Presented::ApiKey(role),
        ) => wanted == role,
        _ => false,
    }
}

/// A request each endpoint's handler reads as far as its credential check: a
/// well-formed body and query, and, for what would change the vault, a tenant or
/// object that does not exist, so an admitted caller is answered 4xx (but never
/// 401 or 403) after the check.
fn sample(endpoint: Endpoint) -> (String, Option<Value>) {
    let document = DocumentId::random();
    let (path, body) = match endpoint {
        Endpoint::CreateTenant => ("/v1/admin/tenants".to_owned(), Some(json!({"id": "newco"}))),
        Endpoint::IssueApiKey => (
            "/v1/admin/tenants/ghost/api-keys".to_owned(),
            Some(json!({"roles": ["reader"]})),
        ),
        Endpoint::RevokeApiKey => ("/v1/admin/api-keys/0123456789abcdef".to_owned(), None),
        Endpoint::HoldBackup | Endpoint::ReleaseBackup => {
            ("/v1/admin/backups/no-such-snapshot/hold".to_owned(), None)
        }
        // Not a report: refused after the check.
        Endpoint::RecordDrill => ("/v1/admin/drills".to_owned(), Some(json!({}))),
        Endpoint::ShowJob => (
            "/v1/admin/jobs/job_00000000000000000000000000000000".to_owned(),
            None,
        ),
        Endpoint::CancelJob => (
            "/v1/admin/jobs/job_00000000000000000000000000000000/cancel".to_owned(),
            None,
        ),
        Endpoint::SetRetention => (
            "/v1/admin/tenants/ghost/retention".to_owned(),
            Some(json!({"days": 30})),
        ),
        Endpoint::HoldDocument | Endpoint::ReleaseDocument => (
            format!("/v1/admin/tenants/ghost/documents/{document}/hold"),
            None,
        ),
        Endpoint::DownloadDocument | Endpoint::DeleteDocument => {
            (format!("/v1/documents/{document}"), None)
        }
        Endpoint::DocumentMetadata => (format!("/v1/documents/{document}/metadata"), None),
        // No field of that name: refused after the check.
        Endpoint::Search => ("/v1/search?q=no_such_field:1".to_owned(), None),
        Endpoint::AuditEvents | Endpoint::AuditCheckpoint => {
            (format!("{}?tenant=acme", endpoint.path()), None)
        }
        Endpoint::AuditProof => ("/v1/audit/proof?seq=0&tenant=acme".to_owned(), None),
        Endpoint::GetTenant | Endpoint::ListApiKeys => {
            (endpoint.path().replace("{tenant}", "acme"), None)
        }
        // Not a valid name: refused after the check.
        Endpoint::AddOperator => (
            "/v1/admin/operators".to_owned(),
            Some(json!({"name": "Not A Name", "roles": ["auditor"]})),
        ),
        // Not six digits: refused after the check.
        Endpoint::ConfirmMfa => (
            "/v1/admin/operator/mfa/confirm".to_owned(),
            Some(json!({"code": "not a code"})),
        ),
        Endpoint::DisableOperator
        | Endpoint::EnableOperator
        | Endpoint::RemoveOperator
        | Endpoint::ResetOperatorMfa => (endpoint.path().replace("{id}", "0123456789abcdef"), None),
        // Without X-Vault-Kind: refused after the check.
        Endpoint::UploadDocument => ("/v1/documents".to_owned(), None),
        _ => (endpoint.path().replace("{tenant}", "ghost"), None),
    };
    assert!(!path.contains('{'), "{endpoint:?}: {path}");
    (path, body)
}

struct Vault {
    state: SharedState,
    operator: String,
    /// A named operator of each role.
    operators: Vec<(OperatorRole, String)>,
    metrics: String,
    keys: Vec<(Role, String)>,
    _dir: tempfile::TempDir,
}

async fn vault() -> Vault {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("vault"),
        limits: LimitsConfig {
            requests_per_second: 0,
            ..LimitsConfig::default()
        },
        ..Config::default()
    };
    let opened = vault_core::Vault::open(config).await.unwrap();
    let vault = opened.vault;
    let operator = std::fs::read_to_string(opened.new_operator_token.unwrap()).unwrap();
    let metrics_file = dir.path().join("metrics-token");
    let (metrics_token, _) = MetricsToken::load_or_create(&metrics_file, true).unwrap();
    let metrics = std::fs::read_to_string(&metrics_file).unwrap();
    let acme = TenantId::new("acme").unwrap();
    vault
        .lifecycle
        .create_tenant(NewTenant {
            id: acme.clone(),
            key_provider: "local".into(),
            kms_key_id: None,
            retention_days: None,
            expected_documents: None,
        })
        .await
        .unwrap();
    let mut keys = Vec::new();
    for role in [
        Role::Uploader,
        Role::Reader,
        Role::Auditor,
        Role::TenantAdmin,
    ] {
        let issued = credentials::issue_api_key(
            vault.store.as_ref(),
            &acme,
            vec![role],
            None,
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
        keys.push((role, issued.token.to_string()));
    }
    let mut operators = Vec::new();
    for role in OperatorRole::ALL {
        let issued = vault_core::operators::add(
            &vault.store,
            &vault.holder,
            &format!("op-{}", role.as_str()),
            vec![role],
            None,
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
        operators.push((role, issued.token.to_string()));
    }
    let state = Arc::new(AppState {
        rates: CredentialRates::new(&vault.config.limits),
        uploads: UploadSlots::new(4, 0),
        metrics_token,
        vault,
        draining: Default::default(),
    });
    Vault {
        state,
        operator: operator.trim().to_owned(),
        operators,
        metrics: metrics.trim().to_owned(),
        keys,
        _dir: dir,
    }
}

#[tokio::test]
async fn every_handler_requires_the_access_its_endpoint_declares() {
    let mut vault = vault().await;
    let app = router(Arc::clone(&vault.state));
    for &endpoint in Endpoint::ALL {
        let (path, body) = sample(endpoint);
        for presented in PRESENTED {
            let token = match presented {
                Presented::Nothing => None,
                Presented::MetricsToken => Some(vault.metrics.clone()),
                Presented::Bootstrap => Some(vault.operator.clone()),
                Presented::Operator(role) => vault
                    .operators
                    .iter()
                    .find(|(r, _)| *r == role)
                    .map(|(_, token)| token.clone()),
                Presented::ApiKey(role) => vault
                    .keys
                    .iter()
                    .find(|(r, _)| *r == role)
                    .map(|(_, key)| key.clone()),
            };
            let mut request = Request::builder()
                .method(endpoint.verb().method())
                .uri(&path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let request = match &body {
                Some(body) => request
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string())),
                None => request.body(Body::empty()),
            }
            .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let answer = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            assert_eq!(
                refused,
                !admits(endpoint.access(), presented),
                "{endpoint:?} declares {:?}, but {presented:?} was answered {status}: {}",
                endpoint.access(),
                String::from_utf8_lossy(&answer)
            );
            if endpoint == Endpoint::RotateOperator && status == StatusCode::CREATED {
                // The operator credential that asked is revoked: go on with the new one.
                let rotated: Value = serde_json::from_slice(&answer).unwrap();
                let secret = rotated["secret"].as_str().unwrap().to_owned();
                match presented {
                    Presented::Operator(role) => {
                        for (r, token) in &mut vault.operators {
                            if *r == role {
                                token.clone_from(&secret);
                            }
                        }
                    }
                    _ => vault.operator = secret,
                }
            }
        }
    }

    // Every authenticated request above was recorded with its endpoint's action.
    let mut recorded = BTreeSet::new();
    for log in ["acme", SYSTEM_LOG] {
        let page = vault
            .state
            .vault
            .audit
            .read_events(&TenantId::new(log).unwrap(), EventFilter::default(), 1000)
            .await
            .unwrap();
        assert!(page.next_cursor.is_none());
        recorded.extend(page.events.into_iter().map(|e| e.action));
    }
    let declared: BTreeSet<String> = Endpoint::ALL
        .iter()
        .filter_map(|e| e.audit_action())
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = declared.difference(&recorded).collect();
    assert!(missing.is_empty(), "never recorded: {missing:?}");
    assert!(!recorded.contains(UNMATCHED_ACTION), "{recorded:?}");
}

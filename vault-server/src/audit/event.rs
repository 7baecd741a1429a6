//! What an audit event records: who did what to which document, and how it went.
//! Never PHI: a search records the field names it used, not the values.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done (2xx).
    Allowed,
    /// Refused for lack of a valid credential or role, or throttled (401, 403, 429).
    Denied,
    /// Could not be done (any other error).
    Failed,
}

impl Outcome {
    /// The outcome of an HTTP status.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=399 => Outcome::Allowed,
            401 | 403 | 429 => Outcome::Denied,
            _ => Outcome::Failed,
        }
    }
}

/// One audit event. Format 1 (inside sealed segments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Position in the tenant's log, from 0.
    pub seq: u64,
    /// When the request was answered.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    /// `apikey:<id>`, `operator:<id>`, `system` or `anonymous`.
    pub actor: String,
    /// Roles of the credential (empty for operators and anonymous callers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// What was attempted: `document.upload`, `search`, `tenant.create`, ...
    pub action: String,
    /// The document acted on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// HTTP status of the answer.
    pub status: u16,
    /// Request id (`x-request-id`).
    pub request_id: String,
    /// Client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Search field names used (never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Non-PHI detail: an API key id issued or revoked, an anomaly's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The action name of a request, from its method and route template; `None` for
/// routes that touch no tenant data (health, metrics, the API description).
pub fn action_of(method: &str, route: &str) -> Option<&'static str> {
    Some(match (method, route) {
        ("POST", "/v1/documents") => "document.upload",
        ("GET", "/v1/documents") => "document.list",
        ("GET", "/v1/documents/{id}") => "document.download",
        ("DELETE", "/v1/documents/{id}") => "document.delete",
        ("GET", "/v1/documents/{id}/metadata") => "document.metadata",
        ("GET", "/v1/search") => "search",
        ("POST", "/v1/admin/tenants") => "tenant.create",
        ("GET", "/v1/admin/tenants") => "tenant.list",
        ("GET", "/v1/admin/tenants/{tenant}") => "tenant.show",
        ("POST", "/v1/admin/tenants/{tenant}/disable") => "tenant.disable",
        ("POST", "/v1/admin/tenants/{tenant}/api-keys") => "apikey.issue",
        ("GET", "/v1/admin/tenants/{tenant}/api-keys") => "apikey.list",
        ("DELETE", "/v1/admin/api-keys/{id}") => "apikey.revoke",
        ("POST", "/v1/admin/operator/rotate") => "operator.rotate",
        ("POST", "/v1/admin/tenants/{tenant}/index/rebuild") => "index.rebuild",
        ("POST", "/v1/admin/tenants/{tenant}/keys/rotate") => "key.rotate",
        ("POST", "/v1/admin/tenants/{tenant}/keys/rewrap") => "key.rewrap",
        ("POST", "/v1/admin/tenants/{tenant}/index/rotate") => "index.rotate",
        ("POST", "/v1/admin/tenants/{tenant}/offboard") => "tenant.offboard",
        ("PUT", "/v1/admin/tenants/{tenant}/retention") => "tenant.retention",
        ("POST", "/v1/admin/tenants/{tenant}/documents/{id}/hold") => "document.hold",
        ("DELETE", "/v1/admin/tenants/{tenant}/documents/{id}/hold") => "document.release",
        ("GET", "/v1/admin/backups") => "backup.list",
        ("POST", "/v1/admin/backups") => "backup.start",
        ("POST", "/v1/admin/backups/prune") => "backup.prune",
        ("POST", "/v1/admin/backups/{id}/hold") => "backup.hold",
        ("DELETE", "/v1/admin/backups/{id}/hold") => "backup.release",
        ("POST", "/v1/admin/drills") => "drill.report",
        ("GET", "/v1/audit/events") => "audit.read",
        ("GET", "/v1/audit/checkpoint") => "audit.checkpoint",
        ("GET", "/v1/audit/proof") => "audit.proof",
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json") => return None,
        _ => "unknown",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_status() {
        assert_eq!(Outcome::of_status(201), Outcome::Allowed);
        assert_eq!(Outcome::of_status(403), Outcome::Denied);
        assert_eq!(Outcome::of_status(429), Outcome::Denied);
        assert_eq!(Outcome::of_status(404), Outcome::Failed);
        assert_eq!(Outcome::of_status(503), Outcome::Failed);
    }

    #[test]
    fn events_serialize_without_empty_parts() {
        let event = AuditEvent {
            seq: 3,
            time: OffsetDateTime::UNIX_EPOCH,
            actor: "apikey:abc".into(),
            roles: vec![],
            action: "search".into(),
            document: None,
            outcome: Outcome::Allowed,
            status: 200,
            request_id: "r".into(),
            client: None,
            fields: vec!["member_id".into()],
            detail: None,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(!json.contains("document") && json.contains("member_id"));
        assert_eq!(serde_json::from_str::<AuditEvent>(&json).unwrap(), event);
        assert_eq!(action_of("GET", "/metrics"), None);
        assert_eq!(action_of("GET", "/v1/search"), Some("search"));
    }
}

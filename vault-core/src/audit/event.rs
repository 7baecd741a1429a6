//! What an audit event records: who did what to which document, and how it went.
//! Never PHI: a search records the field names it used, not the values.

pub use vault_api::{AuditEvent, Outcome};

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
        ("GET", "/v1/admin/jobs") => "job.list",
        ("GET", "/v1/admin/jobs/{id}") => "job.show",
        ("POST", "/v1/admin/jobs/{id}/cancel") => "job.cancel",
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
    use time::OffsetDateTime;

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

//! What an audit event records: who did what to which document, and how it went.
//! Never PHI: a search records the field names it used, not the values.

pub use vault_api::{AuditEvent, Outcome};

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
    }
}

//! `vault-cli audit`: offline verification against a store, and export.

use std::path::PathBuf;

use serde_json::json;
use vault_core::audit::verify::verify_log;
use vault_core::storage::StoreLocation;
use vault_crypto::signing::PublicKey;
use vault_crypto::TenantId;

use crate::client::{CliError, Client};

/// Verifies a tenant's log in a store, offline. `Integrity` (exit 5) when anything
/// is wrong, with the first bad position.
pub async fn verify(
    json_mode: bool,
    store: &str,
    tenant: &str,
    public_key: &str,
    checkpoint: Option<PathBuf>,
) -> Result<(), CliError> {
    let tenant = TenantId::new(tenant).map_err(|e| CliError::Usage(e.to_string()))?;
    let public = PublicKey::from_hex(public_key.trim())
        .map_err(|_| CliError::Usage("--public-key is not an Ed25519 public key in hex".into()))?;
    let saved = checkpoint
        .map(|path| {
            std::fs::read_to_string(&path)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
        })
        .transpose()?;
    let location = StoreLocation::parse(store).map_err(|e| CliError::Usage(e.to_string()))?;
    let store = location
        .open()
        .await
        .map_err(|e| CliError::Failed(format!("cannot open the store: {e}")))?;
    let report = verify_log(store.as_ref(), &tenant, &public, saved.as_deref())
        .await
        .map_err(|e| CliError::Failed(format!("verification could not run: {e}")))?;
    if json_mode {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        outln!(
            "audit log of {}: {} segments, {} events, {} checkpoints, verified up to {} segments",
            report.tenant,
            report.segments,
            report.events,
            report.checkpoints,
            report.verified_tree_size
        );
        for problem in &report.problems {
            outln!(
                "  {} at segment {}: {}",
                problem.kind,
                problem.segment,
                problem.message
            );
        }
    }
    match (report.first_bad_segment, report.first_bad_event) {
        (Some(segment), event) => Err(CliError::Integrity(format!(
            "the audit log is not intact: first bad position is segment {segment}{}",
            event.map(|e| format!(" (event {e})")).unwrap_or_default()
        ))),
        (None, _) => Ok(()),
    }
}

/// Writes every matching event as one JSON line, page by page.
pub async fn export(
    client: &Client,
    tenant: &str,
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
) -> Result<(), CliError> {
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("tenant", tenant.to_owned()), ("limit", "1000".to_owned())];
        for (name, value) in [
            ("since", &since),
            ("until", &until),
            ("actor", &actor),
            ("cursor", &cursor),
        ] {
            if let Some(value) = value {
                query.push((name, value.clone()));
            }
        }
        let page = client.get_with("/v1/audit/events", &query).await?;
        for event in page["events"].as_array().into_iter().flatten() {
            outln!(
                "{}",
                serde_json::to_string(event).unwrap_or_else(|_| json!({}).to_string())
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(()),
        }
    }
}

/// Runs one `AuditCommand`.
pub async fn run_command(
    client: &Client,
    json_mode: bool,
    command: crate::AuditCommand,
) -> Result<(), CliError> {
    use crate::AuditCommand;
    match command {
        AuditCommand::Verify {
            store,
            tenant,
            public_key,
            checkpoint,
        } => return verify(json_mode, &store, &tenant, &public_key, checkpoint).await,
        AuditCommand::Checkpoint { tenant } => {
            let latest = client
                .get(&format!("/v1/audit/checkpoint?tenant={tenant}"))
                .await?;
            if json_mode {
                crate::print(true, &latest, |_| String::new());
            } else {
                match latest["checkpoint"].as_str() {
                    Some(text) => out!("{text}"),
                    None => eprintln!("the log of {tenant} is empty"),
                }
                eprintln!(
                    "public key: {}",
                    latest["public_key"].as_str().unwrap_or("?")
                );
            }
        }
        AuditCommand::Export {
            tenant,
            since,
            until,
            actor,
        } => {
            export(client, &tenant, since, until, actor).await?;
        }
    }
    Ok(())
}

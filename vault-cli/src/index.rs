//! `vault-cli index ...`: rebuild a tenant's blind index, rotate its index key.

use serde_json::json;

use crate::client::{CliError, Client};
use crate::jobs;
use vault_api::ReconcileReport;

use crate::{print_as, IndexCommand};

/// Runs one `IndexCommand`.
pub async fn run(client: &Client, json_mode: bool, command: IndexCommand) -> Result<(), CliError> {
    match command {
        IndexCommand::Rebuild { tenant } => {
            let report = jobs::run_and_follow(
                client,
                json_mode,
                &format!("/v1/admin/tenants/{tenant}/index/rebuild"),
                &json!({}),
            )
            .await?;
            print_as(json_mode, &report, |r: &ReconcileReport| {
                format!(
                    "rebuilt the index of {tenant}: {} documents, {} indexed, {} unreadable, in {} ms",
                    r.documents, r.added, r.failed, r.duration_ms
                )
            })?;
        }
        IndexCommand::Rotate {
            tenant,
            expected_documents,
        } => {
            let mut body = json!({});
            if let Some(documents) = expected_documents {
                body["expected_documents"] = json!(documents);
            }
            let report = jobs::run_and_follow(
                client,
                json_mode,
                &format!("/v1/admin/tenants/{tenant}/index/rotate"),
                &body,
            )
            .await?;
            print_as(json_mode, &report, |r: &ReconcileReport| {
                format!(
                    "rotated the index key of {tenant} and rebuilt: {} documents indexed in {} ms",
                    r.added, r.duration_ms
                )
            })?;
        }
    }
    Ok(())
}

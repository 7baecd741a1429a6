//! `vault-cli doc ...`: legal holds and retention.

use serde_json::json;

use crate::client::{CliError, Client};
use crate::{print, DocCommand};

/// Runs one `DocCommand`.
pub async fn run(client: &Client, json_mode: bool, command: DocCommand) -> Result<(), CliError> {
    match command {
        DocCommand::Hold { tenant, id } => {
            client
                .post(
                    &format!("/v1/admin/tenants/{tenant}/documents/{id}/hold"),
                    &json!({}),
                )
                .await?;
            print(json_mode, &json!({"document": id, "held": true}), |_| {
                format!("document {id} is under legal hold")
            });
        }
        DocCommand::Release { tenant, id } => {
            client
                .delete(&format!("/v1/admin/tenants/{tenant}/documents/{id}/hold"))
                .await?;
            print(json_mode, &json!({"document": id, "held": false}), |_| {
                format!("released the legal hold on document {id}")
            });
        }
        DocCommand::Retention { tenant, days } => {
            let record = client
                .put(
                    &format!("/v1/admin/tenants/{tenant}/retention"),
                    &json!({ "days": days }),
                )
                .await?;
            print(json_mode, &record, |_| {
                format!("documents of {tenant} are kept {days} days after upload")
            });
        }
    }
    Ok(())
}

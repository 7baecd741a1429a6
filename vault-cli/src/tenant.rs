//! `vault-cli tenant ...`: create, list, show, disable, enable and offboard tenants.

use serde_json::json;

use crate::client::{CliError, Client};
use vault_api::OffboardReport;

use crate::{print, print_as, tenant_line, TenantCommand};

/// Runs one `TenantCommand`.
pub async fn run(client: &Client, json_mode: bool, command: TenantCommand) -> Result<(), CliError> {
    match command {
        TenantCommand::Create {
            id,
            key_provider,
            kms_key_id,
            retention_days,
            expected_documents,
        } => {
            let mut body = json!({"id": id, "key_provider": key_provider});
            if let Some(days) = retention_days {
                body["retention_days"] = json!(days);
            }
            if let Some(documents) = expected_documents {
                body["expected_documents"] = json!(documents);
            }
            if let Some(kms) = kms_key_id {
                body["kms_key_id"] = json!(kms);
            }
            let created = client.post("/v1/admin/tenants", &body).await?;
            print(json_mode, &created, |t| {
                format!("created tenant {}", tenant_line(t))
            });
        }
        TenantCommand::List => {
            let tenants = client.get("/v1/admin/tenants").await?;
            print(json_mode, &tenants, |v| {
                let lines: Vec<String> = v
                    .as_array()
                    .map(|a| a.iter().map(tenant_line).collect())
                    .unwrap_or_default();
                if lines.is_empty() {
                    "no tenants".into()
                } else {
                    lines.join("\n")
                }
            });
        }
        TenantCommand::Disable { id } => {
            let tenant = client
                .post(&format!("/v1/admin/tenants/{id}/disable"), &json!({}))
                .await?;
            print(json_mode, &tenant, |t| {
                format!("disabled tenant {}", tenant_line(t))
            });
        }
        TenantCommand::Enable { id } => {
            let tenant = client
                .post(&format!("/v1/admin/tenants/{id}/enable"), &json!({}))
                .await?;
            print(json_mode, &tenant, |t| {
                format!("enabled tenant {}", tenant_line(t))
            });
        }
        TenantCommand::Show { id } => {
            let tenant = client.get(&format!("/v1/admin/tenants/{id}")).await?;
            print(json_mode, &tenant, tenant_line);
        }
        TenantCommand::Offboard { id, yes } => {
            if !yes {
                return Err(CliError::Usage(format!(
                    "offboarding destroys every key of {id}; its documents can never be decrypted again. Repeat with --yes"
                )));
            }
            let report = client
                .post(&format!("/v1/admin/tenants/{id}/offboard"), &json!({}))
                .await?;
            print_as(json_mode, &report, |r: &OffboardReport| {
                format!(
                    "offboarded {id}: {} API keys revoked, {} key records destroyed, local KEK destroyed: {}, KMS keys scheduled for deletion: {:?}",
                    r.api_keys_revoked,
                    r.tenant_key_records_destroyed,
                    r.local_kek_destroyed,
                    r.kms_keys_scheduled_for_deletion
                )
            })?;
        }
    }
    Ok(())
}

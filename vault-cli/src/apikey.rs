//! `vault-cli apikey ...`: issue, list and revoke tenant API keys.

use serde_json::{json, Value};

use crate::client::{CliError, Client};
use crate::{print, ApikeyCommand};

/// Runs one `ApikeyCommand`.
pub async fn run(client: &Client, json_mode: bool, command: ApikeyCommand) -> Result<(), CliError> {
    match command {
        ApikeyCommand::Issue {
            tenant,
            roles,
            expires_in_days,
        } => {
            let body = json!({"roles": roles, "expires_in_days": expires_in_days});
            let issued = client
                .post(&format!("/v1/admin/tenants/{tenant}/api-keys"), &body)
                .await?;
            print(json_mode, &issued, |k| {
                format!(
                    "API key {} for tenant {} (roles: {})\nsecret (shown once, store it now):\n{}",
                    k["id"].as_str().unwrap_or("?"),
                    k["tenant"].as_str().unwrap_or("?"),
                    k["roles"]
                        .as_array()
                        .map(|r| r
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default(),
                    k["secret"].as_str().unwrap_or("?")
                )
            });
        }
        ApikeyCommand::List { tenant } => {
            let keys = client
                .get(&format!("/v1/admin/tenants/{tenant}/api-keys"))
                .await?;
            print(json_mode, &keys, |v| {
                let lines: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        let roles: Vec<&str> = k["roles"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        let state = if k["revoked_at"].is_string() {
                            "revoked"
                        } else {
                            "active"
                        };
                        format!(
                            "{}  {:<8} roles={} expires={}",
                            k["id"].as_str().unwrap_or("?"),
                            state,
                            roles.join(","),
                            k["expires_at"].as_str().unwrap_or("never")
                        )
                    })
                    .collect();
                if lines.is_empty() {
                    format!("no API keys for {tenant}")
                } else {
                    lines.join("\n")
                }
            });
        }
        ApikeyCommand::Revoke { id } => {
            client.delete(&format!("/v1/admin/api-keys/{id}")).await?;
            print(json_mode, &json!({"revoked": id}), |v| {
                format!("revoked API key {}", v["revoked"].as_str().unwrap_or("?"))
            });
        }
    }
    Ok(())
}

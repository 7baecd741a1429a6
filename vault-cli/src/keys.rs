//! `vault-cli key ...`: rotate and rewrap tenant keys.

use serde_json::json;

use crate::client::{CliError, Client};
use vault_api::RewrapReport;

use crate::{print, print_as, KeyCommand};

/// Runs one `KeyCommand`.
pub async fn run_key(
    client: &Client,
    json_mode: bool,
    command: KeyCommand,
) -> Result<(), CliError> {
    match command {
        KeyCommand::Rotate { tenant } => {
            let record = client
                .post(
                    &format!("/v1/admin/tenants/{tenant}/keys/rotate"),
                    &json!({}),
                )
                .await?;
            print(json_mode, &record, |t| {
                format!(
                    "rotated {tenant}: new uploads use branch key version {} under KEK {}",
                    t["branch_version"],
                    t["kek_id"].as_str().unwrap_or("?")
                )
            });
        }
        KeyCommand::Rewrap { tenant, retire_old } => {
            let report = crate::jobs::run_and_follow(
                client,
                json_mode,
                &format!("/v1/admin/tenants/{tenant}/keys/rewrap"),
                &json!({ "retire_old": retire_old }),
            )
            .await?;
            print_as(json_mode, &report, |r: &RewrapReport| {
                format!(
                    "rewrapped {tenant}: {} documents and {} audit segments under branch key {} ({} already current, {} failed), {} bytes read, {} written, {:.0} records/s; oldest accepted version {}",
                    r.documents_rewrapped,
                    r.audit_segments_rewrapped,
                    r.branch_version,
                    r.already_current,
                    r.failed,
                    r.bytes_read,
                    r.bytes_written,
                    r.records_per_second,
                    r.min_decryption_version
                )
            })?;
            if report["failed"].as_u64().unwrap_or(0) > 0 {
                return Err(CliError::Failed(
                    "some key records could not be re-wrapped; see the server log and run it again"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

//! `vault-cli key ...` and `vault-cli operator ...`: rotate and rewrap tenant keys, rotate the operator credential.

use serde_json::json;

use crate::client::{CliError, Client};
use vault_api::RewrapReport;

use crate::{print, print_as, KeyCommand, OperatorCommand};

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

/// Runs one `OperatorCommand`.
pub async fn run_operator(
    client: &Client,
    json_mode: bool,
    command: OperatorCommand,
) -> Result<(), CliError> {
    match command {
        OperatorCommand::Rotate => {
            rotate_operator(client, json_mode).await?;
        }
    }
    Ok(())
}

/// `operator rotate`: the token file must be writable before the server is asked,
/// since the old credential stops working the moment it answers.
async fn rotate_operator(client: &Client, json_mode: bool) -> Result<(), CliError> {
    use vault_keys::private_file::write_atomically;
    let path = client.token_file()?;
    let probe = path.with_extension("rotate-probe");
    write_atomically(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot write beside {} ({e}); nothing was rotated",
                path.display()
            ))
        })?;
    let rotated = client.post("/v1/admin/operator/rotate", &json!({})).await?;
    let secret = rotated["secret"]
        .as_str()
        .map(|s| zeroize::Zeroizing::new(format!("{s}\n")))
        .ok_or_else(|| CliError::Failed("the server's answer holds no new token".into()))?;
    write_atomically(&path, secret.as_bytes()).map_err(|e| {
        CliError::Failed(format!(
            "the operator credential was rotated but the new token could not be written to {} ({e}); the old token is revoked: use another operator credential",
            path.display()
        ))
    })?;
    let value = json!({
        "id": rotated["id"],
        "revoked": rotated["revoked"],
        "token_file": path.display().to_string(),
    });
    print(json_mode, &value, |v| {
        format!(
            "rotated the operator credential: new id {}, {} revoked; the new token is in {} (mode 0600)",
            v["id"].as_str().unwrap_or("?"),
            v["revoked"].as_str().unwrap_or("?"),
            path.display()
        )
    });
    Ok(())
}

//! `vault-cli operator ...`: named operators (add, list, disable, enable,
//! remove) and rotating one's own operator credential.

use serde_json::{json, Value};

use crate::client::{prompt_mfa_code, CliError, Client};
use crate::{print, MfaCommand, OperatorCommand};

/// Runs one `OperatorCommand`.
pub async fn run(
    client: &Client,
    json_mode: bool,
    command: OperatorCommand,
) -> Result<(), CliError> {
    match command {
        OperatorCommand::Rotate => rotate_operator(client, json_mode).await?,
        OperatorCommand::Add {
            name,
            roles,
            expires_in_days,
        } => {
            let body = json!({"name": name, "roles": roles, "expires_in_days": expires_in_days});
            let added = client.post("/v1/admin/operators", &body).await?;
            print(json_mode, &added, |o| {
                format!(
                    "operator {} ({}), roles: {}\ntoken (shown once: hand it to the operator over a safe channel):\n{}",
                    o["name"].as_str().unwrap_or("?"),
                    o["id"].as_str().unwrap_or("?"),
                    roles_of(o),
                    o["secret"].as_str().unwrap_or("?")
                )
            });
        }
        OperatorCommand::List => {
            let operators = client.get("/v1/admin/operators").await?;
            print(json_mode, &operators, |v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| {
                        let state = if o["revoked_at"].is_string() {
                            "removed"
                        } else if o["disabled_at"].is_string() {
                            "disabled"
                        } else {
                            "active"
                        };
                        format!(
                            "{}  {:<20} {:<8} roles={} expires={}",
                            o["id"].as_str().unwrap_or("?"),
                            o["name"].as_str().unwrap_or("?"),
                            state,
                            roles_of(o),
                            o["expires_at"].as_str().unwrap_or("never")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        OperatorCommand::Mfa { command } => mfa(client, json_mode, command).await?,
        OperatorCommand::Disable { id } => change(client, json_mode, &id, "disable").await?,
        OperatorCommand::Enable { id } => change(client, json_mode, &id, "enable").await?,
        OperatorCommand::Remove { id, yes } => {
            if !yes {
                return Err(CliError::Usage(
                    "removing an operator revokes its credential for good; add --yes".into(),
                ));
            }
            let removed = client.delete(&format!("/v1/admin/operators/{id}")).await?;
            print(json_mode, &removed, |o| {
                format!(
                    "removed operator {} ({}); its credential is revoked",
                    o["name"].as_str().unwrap_or("?"),
                    o["id"].as_str().unwrap_or("?")
                )
            });
        }
    }
    Ok(())
}

/// `operator mfa ...`.
async fn mfa(client: &Client, json_mode: bool, command: MfaCommand) -> Result<(), CliError> {
    use std::io::IsTerminal;
    match command {
        MfaCommand::Enroll => {
            let enrollment = client.post("/v1/admin/operator/mfa", &json!({})).await?;
            let uri = enrollment["otpauth_uri"].as_str().unwrap_or_default();
            if json_mode {
                print(true, &enrollment, |_| String::new());
                return Ok(());
            }
            let qr = qrcode::QrCode::new(uri.as_bytes())
                .map(|code| {
                    code.render::<qrcode::render::unicode::Dense1x2>()
                        .dark_color(qrcode::render::unicode::Dense1x2::Light)
                        .light_color(qrcode::render::unicode::Dense1x2::Dark)
                        .build()
                })
                .unwrap_or_default();
            outln!(
                "Scan this with your authenticator app (shown once; keep it private):\n{qr}\n{uri}\nsecret (to type in by hand): {}",
                enrollment["secret"].as_str().unwrap_or_default()
            );
            if std::io::stdin().is_terminal() {
                let code = prompt_mfa_code()?;
                confirm(client, false, &code).await?;
            } else {
                outln!("confirm with: vault-cli operator mfa confirm CODE");
            }
        }
        MfaCommand::Confirm { code } => confirm(client, json_mode, &code).await?,
        MfaCommand::Reset { id } => {
            let reset = client
                .delete(&format!("/v1/admin/operators/{id}/mfa"))
                .await?;
            print(json_mode, &reset, |o| {
                format!(
                    "MFA of operator {} ({}) reset: it enrolls again",
                    o["name"].as_str().unwrap_or("?"),
                    o["id"].as_str().unwrap_or("?")
                )
            });
        }
    }
    Ok(())
}

async fn confirm(client: &Client, json_mode: bool, code: &str) -> Result<(), CliError> {
    let state = client
        .post("/v1/admin/operator/mfa/confirm", &json!({ "code": code }))
        .await?;
    print(json_mode, &state, |_| {
        "MFA enrolled: sensitive operations now ask for a code".to_owned()
    });
    Ok(())
}

/// An operator id as the server gives them (16 lowercase hex digits), so
/// nothing else ever reaches a request path (`../tenants/x` would).
pub fn parse_id(raw: &str) -> Result<String, String> {
    if vault_core::credentials::CredentialRecord::is_id(raw) {
        Ok(raw.to_owned())
    } else {
        Err("an operator id is 16 lowercase hex digits (see `vault-cli operator list`)".into())
    }
}

fn roles_of(operator: &Value) -> String {
    operator["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

async fn change(client: &Client, json_mode: bool, id: &str, what: &str) -> Result<(), CliError> {
    let changed = client
        .post(&format!("/v1/admin/operators/{id}/{what}"), &json!({}))
        .await?;
    print(json_mode, &changed, |o| {
        format!(
            "operator {} ({}) {what}d",
            o["name"].as_str().unwrap_or("?"),
            o["id"].as_str().unwrap_or("?")
        )
    });
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

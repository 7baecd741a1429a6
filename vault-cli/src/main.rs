//! `vault-cli`: the operator's tool. Talks to a running vault with an operator
//! credential read from a file (never from a command-line argument, which would
//! land in shell history).

mod audit;
mod client;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use client::{CliError, Client};

/// Operate a billing records vault.
///
/// Examples:
///   vault-cli tenant create acme
///   vault-cli apikey issue acme --role uploader --role reader --expires-in-days 90
///   vault-cli --json tenant list
///   vault-cli index rebuild --tenant acme
///   vault-cli audit checkpoint --tenant acme > acme-checkpoint.txt
///   vault-cli audit verify --store ./vault-data --tenant acme \
///       --public-key <hex> --checkpoint acme-checkpoint.txt
///   vault-cli audit export --tenant acme --since 2026-01-01T00:00:00Z > acme.jsonl
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "VAULT_ADDR",
        default_value = "http://127.0.0.1:8200"
    )]
    server: String,
    /// File holding the operator credential [default: ./vault-data/operator-token].
    #[arg(long, global = true, env = "VAULT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the server is alive and ready.
    Status,
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Tenant API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Blind indexes.
    #[command(subcommand)]
    Index(IndexCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check a tenant's audit log offline, against the store and the vault's public
    /// key only. Exit 0 when intact, 2 when tampering is found, 1 on error.
    Verify {
        /// The store: a vault data directory, an objects directory, or
        /// s3://bucket/prefix (AWS_* environment for S3).
        #[arg(long)]
        store: String,
        /// Tenant id (`system` for the vault's own log).
        #[arg(long)]
        tenant: String,
        /// The vault's checkpoint public key (hex), from `audit checkpoint`.
        #[arg(long)]
        public_key: String,
        /// A signed checkpoint saved earlier (file): the log must still extend it.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Have the server sign a checkpoint now and print it (save it for `verify`).
    Checkpoint {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
    },
    /// Write a tenant's events as JSON lines (for a SIEM).
    Export {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only events of this actor.
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum IndexCommand {
    /// Empty a tenant's blind index and fill it again from the stored documents.
    Rebuild {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and its keys.
    Create {
        /// Tenant id (a-z, 0-9, '-', '_').
        id: String,
        /// Key provider: local or aws-kms.
        #[arg(long, default_value = "local")]
        key_provider: String,
        /// Existing KMS key ARN or alias (aws-kms only; default: create alias/vault/<tenant>).
        #[arg(long)]
        kms_key_id: Option<String>,
    },
    /// List tenants.
    List,
    /// Disable a tenant: its API keys are refused; keys and documents are kept.
    Disable {
        /// Tenant id.
        id: String,
    },
    /// Show one tenant.
    Show {
        /// Tenant id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Issue an API key; its secret is printed once.
    Issue {
        /// Tenant id.
        tenant: String,
        /// Role (repeat): uploader, reader, auditor, tenant-admin.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Days until expiry.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a tenant's API keys (ids, roles, dates; never secrets).
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Revoke an API key.
    Revoke {
        /// API key id.
        id: String,
    },
}

fn print(json_mode: bool, value: &Value, human: impl FnOnce(&Value) -> String) {
    if json_mode {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", human(value));
    }
}

fn tenant_line(t: &Value) -> String {
    format!(
        "{:<20} provider={:<8} kek={} status={}",
        t["id"].as_str().unwrap_or("?"),
        t["key_provider"].as_str().unwrap_or("?"),
        t["kek_id"].as_str().unwrap_or("?"),
        t["status"].as_str().unwrap_or("?")
    )
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let client = Client::new(&cli.server, cli.token_file.clone())?;
    match cli.command {
        Command::Status => {
            let health = client.get_public("/healthz").await?;
            let ready = client.get_public("/readyz").await?;
            let value = json!({"server": cli.server, "health": health, "ready": ready});
            print(cli.json, &value, |v| {
                format!(
                    "{}: alive, {}",
                    v["server"].as_str().unwrap_or("?"),
                    v["ready"]["status"].as_str().unwrap_or("?")
                )
            });
        }
        Command::Tenant(TenantCommand::Create {
            id,
            key_provider,
            kms_key_id,
        }) => {
            let mut body = json!({"id": id, "key_provider": key_provider});
            if let Some(kms) = kms_key_id {
                body["kms_key_id"] = json!(kms);
            }
            let created = client.post("/v1/admin/tenants", &body).await?;
            print(cli.json, &created, |t| {
                format!("created tenant {}", tenant_line(t))
            });
        }
        Command::Tenant(TenantCommand::List) => {
            let tenants = client.get("/v1/admin/tenants").await?;
            print(cli.json, &tenants, |v| {
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
        Command::Tenant(TenantCommand::Disable { id }) => {
            let tenant = client
                .post(&format!("/v1/admin/tenants/{id}/disable"), &json!({}))
                .await?;
            print(cli.json, &tenant, |t| {
                format!("disabled tenant {}", tenant_line(t))
            });
        }
        Command::Tenant(TenantCommand::Show { id }) => {
            let tenant = client.get(&format!("/v1/admin/tenants/{id}")).await?;
            print(cli.json, &tenant, tenant_line);
        }
        Command::Apikey(ApikeyCommand::Issue {
            tenant,
            roles,
            expires_in_days,
        }) => {
            let body = json!({"roles": roles, "expires_in_days": expires_in_days});
            let issued = client
                .post(&format!("/v1/admin/tenants/{tenant}/api-keys"), &body)
                .await?;
            print(cli.json, &issued, |k| {
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
        Command::Index(IndexCommand::Rebuild { tenant }) => {
            let report = client
                .post(
                    &format!("/v1/admin/tenants/{tenant}/index/rebuild"),
                    &json!({}),
                )
                .await?;
            print(cli.json, &report, |r| {
                format!(
                    "rebuilt the index of {tenant}: {} documents, {} indexed, {} unreadable, in {} ms",
                    r["documents"], r["added"], r["failed"], r["duration_ms"]
                )
            });
        }
        Command::Audit(AuditCommand::Verify {
            store,
            tenant,
            public_key,
            checkpoint,
        }) => return audit::verify(cli.json, &store, &tenant, &public_key, checkpoint).await,
        Command::Audit(AuditCommand::Checkpoint { tenant }) => {
            let latest = client
                .get(&format!("/v1/audit/checkpoint?tenant={tenant}"))
                .await?;
            if cli.json {
                print(true, &latest, |_| String::new());
            } else {
                match latest["checkpoint"].as_str() {
                    Some(text) => print!("{text}"),
                    None => eprintln!("the log of {tenant} is empty"),
                }
                eprintln!(
                    "public key: {}",
                    latest["public_key"].as_str().unwrap_or("?")
                );
            }
        }
        Command::Audit(AuditCommand::Export {
            tenant,
            since,
            until,
            actor,
        }) => {
            audit::export(&client, &tenant, since, until, actor).await?;
        }
        Command::Apikey(ApikeyCommand::List { tenant }) => {
            let keys = client
                .get(&format!("/v1/admin/tenants/{tenant}/api-keys"))
                .await?;
            print(cli.json, &keys, |v| {
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
        Command::Apikey(ApikeyCommand::Revoke { id }) => {
            client.delete(&format!("/v1/admin/api-keys/{id}")).await?;
            print(cli.json, &json!({"revoked": id}), |v| {
                format!("revoked API key {}", v["revoked"].as_str().unwrap_or("?"))
            });
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_mode = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_mode {
                eprintln!("{}", json!({"error": e.code(), "message": e.to_string()}));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

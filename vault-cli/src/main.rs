//! `vault-cli`: the operator's tool. Talks to a running vault with an operator
//! credential read from a file (never from a command-line argument, which would
//! land in shell history).

#[macro_use]
mod output;
mod apikey;
mod audit;
mod backup;
mod client;
mod documents;
mod index;
mod jobs;
mod keys;
mod operator;
mod tenant;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};
use vault_api::roles::{OperatorRole, Role};

use client::{CliError, Client, Connection};
use vault_core::backup::drill::DrillOptions;
use vault_core::storage::StoreLocation;

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
///   vault-cli backup run
///   vault-cli backup public-key > vault-backup.pub
///   vault-cli backup verify --store /backups/vault --read-data-subset 1/10
///   vault-cli restore --store /backups/vault --snapshot latest --to ./restored-vault
///   vault-cli drill --store /backups/vault --root-key-file ./vault-data/keys/root.key
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "BILLVAULT_ADDR",
        default_value = "http://127.0.0.1:8200"
    )]
    server: String,
    /// File holding the operator credential [default: $BILLVAULT_TOKEN if set, else
    /// ./vault-data/operator-token].
    #[arg(long, global = true, env = "BILLVAULT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A current code of your authenticator, for sensitive operations (sent
    /// as X-Vault-MFA). Without it the CLI asks at the terminal when needed.
    #[arg(
        long,
        global = true,
        env = "BILLVAULT_MFA_CODE",
        hide_env_values = true
    )]
    mfa_code: Option<String>,
    /// PEM file of CA certificates to trust for an https:// server (a private
    /// CA), besides the system's trust store.
    #[arg(long, global = true, env = "BILLVAULT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Seconds to wait for the server to accept a connection.
    #[arg(
        long,
        global = true,
        env = "BILLVAULT_CONNECT_TIMEOUT",
        default_value_t = 10
    )]
    connect_timeout: u64,
    /// Seconds the server may stay silent while answering (a backup or a
    /// rewrap is answered when it ends, unless it runs as a job).
    #[arg(
        long,
        global = true,
        env = "BILLVAULT_READ_TIMEOUT",
        default_value_t = 3600
    )]
    read_timeout: u64,
    /// Print JSON instead of text (the same as `--output json`).
    #[arg(long, global = true)]
    json: bool,
    /// Output format: `text` for people, `json` for scripts (the server's
    /// answers as they came, errors on stderr as `{"code","message"}`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "BILLVAULT_OUTPUT",
        default_value_t = OutputFormat::Text
    )]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

/// What `--output` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    /// Lines for people.
    Text,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the server is alive and ready.
    Status,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `vault-cli completions bash > /etc/bash_completion.d/vault-cli`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Tenant API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// The operator credential.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Blind indexes.
    #[command(subcommand)]
    Index(IndexCommand),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Tenant keys: rotate, rewrap.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Documents: legal hold and retention.
    #[command(subcommand)]
    Doc(DocCommand),
    /// Backups: run, list, verify, prune, hold, release.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// The server's jobs: index rebuilds and rotations, re-plans, rewraps, backups.
    #[command(subcommand)]
    Job(JobCommand),
    /// Restore a snapshot into an empty store (offline; every object hash-checked),
    /// only when its manifest verifies under the vault's backup public key; leaves
    /// out documents deleted in it or a newer snapshot. Exit 0 when restored, 5 when
    /// objects or signatures did not match, 2 on usage, 1 on error.
    Restore {
        /// The backup repository: a directory or s3://bucket/prefix.
        #[arg(long)]
        store: String,
        /// Snapshot id, or `latest`.
        #[arg(long)]
        snapshot: String,
        /// Target: a new vault data directory, or s3://bucket/prefix (with --data-dir).
        #[arg(long)]
        to: String,
        /// Where the local keystore goes (its `keys/`); default: the --to directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Resume a restore into a store that already holds part of the snapshot.
        #[arg(long)]
        allow_non_empty: bool,
        #[command(flatten)]
        key: VaultKeyArgs,
    },
    /// Disaster-recovery drill: restore a snapshot into a scratch vault, verify every
    /// object, decrypt samples, rebuild indexes, run probe searches, report RPO/RTO
    /// and record the report in the audit log. Exit 0 passed, 5 mismatch, 1 error, 2 usage.
    Drill {
        /// The backup repository: a directory or s3://bucket/prefix.
        #[arg(long)]
        store: String,
        /// Snapshot id (default: the newest).
        #[arg(long)]
        snapshot: Option<String>,
        /// Drill a random snapshot among those of the last N days.
        #[arg(long, conflicts_with = "snapshot")]
        random_within_days: Option<u32>,
        /// The live vault's root key file (unseals the snapshot's local keystore).
        #[arg(long, default_value = "./vault-data/keys/root.key")]
        root_key_file: PathBuf,
        /// The live vault's key custody (its `[keys] custody`), when not the
        /// directory of the root key file: read, never changed.
        #[arg(long)]
        custody: Option<String>,
        /// Reach AWS KMS for aws-kms tenants (AWS_* environment).
        #[arg(long)]
        aws_kms: bool,
        /// Scratch data directory (default: a new one under the temp directory).
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// Restore the scratch vault's objects into this S3 prefix instead.
        #[arg(long)]
        scratch_store: Option<String>,
        /// Documents decrypted and searched for per tenant.
        #[arg(long, default_value_t = 20)]
        samples: usize,
        /// Keep the scratch vault afterwards.
        #[arg(long)]
        keep: bool,
        /// Do not send the report to the server's audit log.
        #[arg(long)]
        no_record: bool,
        /// Also write the JSON report to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        key: VaultKeyArgs,
    },
}

/// The vault's backup public key, which every manifest must be signed with. It is
/// never taken from the repository: give it, or let the running server give it.
#[derive(Debug, Args)]
struct VaultKeyArgs {
    /// The vault's backup public key (hex) [default: asked from the running
    /// server; `vault-cli backup public-key` prints it].
    #[arg(long, conflicts_with = "public_key_file")]
    public_key: Option<String>,
    /// A file holding the vault's backup public key (hex), as saved from
    /// `vault-cli backup public-key`.
    #[arg(long)]
    public_key_file: Option<PathBuf>,
}

impl VaultKeyArgs {
    fn source(self) -> backup::KeySource {
        backup::KeySource {
            hex: self.public_key,
            file: self.public_key_file,
        }
    }
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Have the server take a snapshot now, and follow it.
    Run,
    /// The backup job's status and the repository's snapshots.
    List,
    /// Check a repository offline against the vault's backup public key: record,
    /// manifests, signatures, objects present; with --read-data every object's
    /// hash. Exit 0 intact, 5 problems, 1 error, 2 usage.
    Verify {
        /// The backup repository: a directory or s3://bucket/prefix.
        #[arg(long)]
        store: String,
        /// Only this snapshot.
        #[arg(long)]
        snapshot: Option<String>,
        /// Read and hash every object.
        #[arg(long)]
        read_data: bool,
        /// Read and hash part n of t of the objects (n/t).
        #[arg(long, conflicts_with = "read_data")]
        read_data_subset: Option<String>,
        #[command(flatten)]
        key: VaultKeyArgs,
    },
    /// Print the vault's backup public key (hex), which every snapshot manifest is
    /// signed with; save it with the root key file for restores without the server.
    PublicKey,
    /// Apply the server's retention rules (never removes held or locked snapshots).
    Prune,
    /// Put a legal hold on a snapshot.
    Hold {
        /// Snapshot id.
        id: String,
    },
    /// Release a snapshot's legal hold.
    Release {
        /// Snapshot id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check a tenant's audit log offline, against the store and the vault's public
    /// key only. Exit 0 when intact, 5 when tampering is found, 1 on error.
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
    /// Rotate a tenant's blind-index key and rebuild the index under it.
    Rotate {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Re-plan the token lengths for this many documents.
        #[arg(long)]
        expected_documents: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Running jobs and the most recent finished ones, newest first.
    List,
    /// A job: state, progress, and its report or error once it stopped.
    Show {
        /// Job id (`job_...`).
        id: String,
    },
    /// Cancel a running job; it stops and puts the tenant's index back in order.
    Cancel {
        /// Job id (`job_...`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Give a tenant a new KEK (local version or new KMS key) and branch key;
    /// new uploads use it at once.
    Rotate {
        /// Tenant id.
        tenant: String,
    },
    /// Re-wrap every key record of a tenant under its current branch key (bodies
    /// are never read or written). Safe to run again; runs online.
    Rewrap {
        /// Tenant id.
        tenant: String,
        /// Afterwards refuse the older branch keys (min_decryption_version).
        #[arg(long)]
        retire_old: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DocCommand {
    /// Put a document under legal hold: it cannot be deleted until released.
    Hold {
        /// Tenant id.
        tenant: String,
        /// Document id.
        id: String,
    },
    /// Release a document's legal hold.
    Release {
        /// Tenant id.
        tenant: String,
        /// Document id.
        id: String,
    },
    /// Set a tenant's retention period (days after upload a document is kept).
    Retention {
        /// Tenant id.
        tenant: String,
        /// Days.
        #[arg(long)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and its keys.
    Create {
        /// Tenant id (a-z, 0-9, '-', '_').
        id: String,
        /// Key provider.
        #[arg(long, default_value = "local",
              value_parser = PossibleValuesParser::new(vault_api::tenants::KEY_PROVIDERS))]
        key_provider: String,
        /// Existing KMS key ARN or alias (aws-kms only; default: create alias/vault/<tenant>).
        #[arg(long)]
        kms_key_id: Option<String>,
        /// Days a document is kept before it may be deleted (default: 2190, six years).
        #[arg(long)]
        retention_days: Option<u32>,
        /// Documents the tenant is expected to hold: sizes its blind-index tokens
        /// (default: the server's search.initial_expected_documents; grows by itself).
        #[arg(long)]
        expected_documents: Option<u64>,
    },
    /// List tenants.
    List,
    /// Disable a tenant: its API keys are refused; keys and documents are kept.
    Disable {
        /// Tenant id.
        id: String,
    },
    /// Enable a disabled tenant again: its API keys are accepted as before.
    Enable {
        /// Tenant id.
        id: String,
    },
    /// Offboard a tenant: revoke its API keys and destroy its keys
    /// (crypto-shredding). Irreversible; needs --yes.
    Offboard {
        /// Tenant id.
        id: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Show one tenant.
    Show {
        /// Tenant id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Replace this operator credential: the server issues a new one and revokes
    /// the one used; the new token is written to the token file (--token-file, else
    /// ./vault-data/operator-token) atomically with mode 0600. Only its path is printed.
    Rotate,
    /// Add a named operator with its roles (admin role needed); its token is
    /// printed once.
    Add {
        /// Name: 1-63 of a-z 0-9 . _ - starting with a letter.
        name: String,
        /// Role (repeat).
        #[arg(long = "role", required = true,
              value_parser = PossibleValuesParser::new(OperatorRole::ALL.map(OperatorRole::as_str)))]
        roles: Vec<String>,
        /// Days until its credential expires (1 to 3650).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List the operators: id, name, state, roles, expiry.
    List,
    /// Disable an operator: its credential is refused until enabled.
    Disable {
        /// Operator id (16 hex digits, from `operator list`).
        #[arg(value_parser = operator::parse_id)]
        id: String,
    },
    /// Enable a disabled operator.
    Enable {
        /// Operator id.
        #[arg(value_parser = operator::parse_id)]
        id: String,
    },
    /// Your second factor (TOTP): enroll, confirm; an admin resets a lost one.
    Mfa {
        #[command(subcommand)]
        command: MfaCommand,
    },
    /// Remove an operator for good: its credential is revoked.
    Remove {
        /// Operator id.
        #[arg(value_parser = operator::parse_id)]
        id: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum MfaCommand {
    /// Start enrolling: prints the otpauth URI and a QR code for your
    /// authenticator app (the secret is shown this once), then asks for a
    /// first code to confirm (at a terminal; else run `operator mfa confirm`).
    Enroll,
    /// Confirm the enrolment with a current code of the authenticator.
    Confirm {
        /// Six digits.
        code: String,
    },
    /// Remove an operator's enrolment (a lost authenticator); it enrolls again.
    Reset {
        /// Operator id.
        #[arg(value_parser = operator::parse_id)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Issue an API key; its secret is printed once.
    Issue {
        /// Tenant id.
        tenant: String,
        /// Role (repeat).
        #[arg(long = "role", required = true,
              value_parser = PossibleValuesParser::new(Role::ALL.map(Role::as_str)))]
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
        outln!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        outln!("{}", human(value));
    }
}

/// Prints a server answer: as it came with `--json`, else read as `vault-api`'s
/// type `T` and written for a person. An answer that is not a `T` is an error
/// (the server and the CLI disagree about the contract).
fn print_as<T: serde::de::DeserializeOwned>(
    json_mode: bool,
    value: &Value,
    human: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    if json_mode {
        print(true, value, |_| String::new());
        return Ok(());
    }
    let typed = T::deserialize(value).map_err(|e| {
        CliError::Failed(format!(
            "the server's answer is not a {}: {e}",
            std::any::type_name::<T>()
        ))
    })?;
    outln!("{}", human(&typed));
    Ok(())
}

/// One tenant record (the server's answer, read as `vault-api`'s type) as a line.
fn tenant_line(t: &Value) -> String {
    match vault_api::TenantRecord::deserialize(t) {
        Ok(t) => format!(
            "{:<20} provider={:<8} kek={} status={}",
            t.id.as_str(),
            t.key_provider,
            t.kek_id,
            t.status.as_str()
        ),
        Err(e) => format!("(not a tenant record: {e})"),
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let client = Client::new(
        &cli.server,
        cli.token_file.clone(),
        &Connection {
            ca_cert: cli.ca_cert.clone(),
            connect_timeout: Duration::from_secs(cli.connect_timeout),
            read_timeout: Duration::from_secs(cli.read_timeout),
        },
    )?
    .with_mfa_code(cli.mfa_code.clone());
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "vault-cli", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
        }
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
        Command::Restore {
            store,
            snapshot,
            to,
            data_dir,
            allow_non_empty,
            key,
        } => {
            backup::restore(
                &client,
                cli.json,
                backup::RestoreArgs {
                    store: &store,
                    snapshot: &snapshot,
                    to: &to,
                    data_dir,
                    allow_non_empty,
                    key: key.source(),
                },
            )
            .await?
        }
        Command::Drill {
            store,
            snapshot,
            random_within_days,
            root_key_file,
            custody,
            aws_kms,
            scratch,
            scratch_store,
            samples,
            keep,
            no_record,
            report,
            key,
        } => {
            let scratch_store = scratch_store
                .map(|s| StoreLocation::parse(&s))
                .transpose()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let options = DrillOptions {
                snapshot,
                random_within_days,
                scratch_dir: scratch.unwrap_or_else(backup::default_scratch),
                scratch_store,
                root_key_file: Some(root_key_file),
                custody,
                aws_kms,
                samples_per_tenant: samples,
            };
            backup::drill(
                &client,
                cli.json,
                backup::DrillArgs {
                    store,
                    options,
                    key: key.source(),
                    keep,
                    no_record,
                    report_file: report,
                },
            )
            .await?
        }
        Command::Tenant(command) => tenant::run(&client, cli.json, command).await?,
        Command::Apikey(command) => apikey::run(&client, cli.json, command).await?,
        Command::Index(command) => index::run(&client, cli.json, command).await?,
        Command::Key(command) => keys::run_key(&client, cli.json, command).await?,
        Command::Doc(command) => documents::run(&client, cli.json, command).await?,
        Command::Operator(command) => operator::run(&client, cli.json, command).await?,
        Command::Audit(command) => audit::run_command(&client, cli.json, command).await?,
        Command::Backup(command) => backup::run_command(&client, cli.json, command).await?,
        Command::Job(command) => jobs::run(&client, cli.json, command).await?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.json |= cli.output == OutputFormat::Json;
    let json_mode = cli.json;
    match vault_core::failpoints::arm_from_env() {
        Ok(None) => {}
        Ok(Some(armed)) => {
            eprintln!("warning: crash points armed ({armed}): for fault-injection tests only");
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_mode {
                eprintln!("{}", json!({"code": e.code(), "message": e.to_string()}));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

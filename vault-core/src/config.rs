//! Server configuration: a TOML file (`--config`), overridden by environment
//! variables and command-line options, over an embedded default that needs no file
//! at all (loopback, `./vault-data`, filesystem storage, local key provider).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use vault_crypto::TenantId;

use crate::backup::retention::KeepPolicy;
use crate::storage::StoreLocation;

/// Default listen address of the embedded mode.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8200";
/// Default data directory of the embedded mode.
pub const DEFAULT_DATA_DIR: &str = "./vault-data";

/// The whole configuration. Unknown keys in the file are errors.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Local state: the filesystem object store (when used), the local keystore and
    /// the first operator credential.
    pub data_dir: PathBuf,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
    /// Plaintext bytes per encrypted segment.
    pub segment_size: u32,
    /// Serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).
    pub allow_insecure_non_loopback: bool,
    /// TLS certificate and key; when set the server speaks HTTPS only.
    pub tls: Option<TlsConfig>,
    /// Where documents live.
    pub storage: StorageConfig,
    /// Key providers and caching.
    pub keys: KeysConfig,
    /// Field extraction and the blind index.
    pub search: SearchConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Logging.
    pub log: LogConfig,
    /// Scheduled backups.
    pub backup: BackupConfig,
    /// Connection, time, upload and rate limits of the HTTP edge.
    pub limits: LimitsConfig,
    /// The `/metrics` endpoint.
    pub metrics: MetricsConfig,
    /// Operators' second factor.
    pub operators: OperatorsConfig,
}

/// Operators' second factor (`[operators]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorsConfig {
    /// When a TOTP code is asked for: `enrolled` (sensitive operations, from
    /// operators who enrolled), `sensitive` (sensitive operations, from every
    /// operator: those without MFA are refused them) or `all` (every operator
    /// call).
    pub mfa: crate::mfa::MfaPolicy,
    /// Seconds an accepted code lets the same credential make further
    /// sensitive calls without another (0: a code per call; at most 3600).
    pub mfa_step_up_secs: u64,
}

impl Default for OperatorsConfig {
    fn default() -> Self {
        OperatorsConfig {
            mfa: crate::mfa::MfaPolicy::default(),
            mfa_step_up_secs: 300,
        }
    }
}

/// The longest any `[limits]` time may be, in seconds (a year).
const MAX_LIMIT_SECS: u64 = 365 * 24 * 3600;

/// Limits of the HTTP edge: what one client (or one credential) can hold.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Seconds a connection may take to send a complete request head (from the
    /// moment it waits for one: this is also the keep-alive idle timeout) and to
    /// finish its TLS handshake.
    pub header_read_timeout_secs: u64,
    /// Largest request head (request line and headers), in bytes; larger ones get 431.
    pub max_header_bytes: usize,
    /// Connections open at once; the ones beyond are accepted and closed at once.
    pub max_connections: usize,
    /// Seconds a JSON endpoint may take (408 `request_timeout` after that).
    pub request_timeout_secs: u64,
    /// Seconds an upload or a download may take in all.
    pub transfer_timeout_secs: u64,
    /// Seconds the long operator operations may take (key rotation and rewrap,
    /// index rotation and rebuild, offboarding, backup prune).
    pub maintenance_timeout_secs: u64,
    /// Seconds a transfer may make no progress (no upload bytes arriving, or the
    /// client not reading what is sent) before it is aborted.
    pub stall_timeout_secs: u64,
    /// Uploads in progress at once; more get 503 `too_many_uploads` with
    /// Retry-After. At most [`MAX_CONCURRENT_UPLOADS`].
    pub max_concurrent_uploads: usize,
    /// Uploads one tenant may have in progress at once (its share of the above, so
    /// one tenant's slow uploads cannot shut the others out); 0: no share limit.
    pub max_concurrent_uploads_per_tenant: usize,
    /// Connections one client address may hold open (0: no limit; behind a load
    /// balancer every connection comes from its address: raise it or set 0).
    pub max_connections_per_address: usize,
    /// Sustained requests per second per credential (API key or operator); more get
    /// 429 `rate_limited` with Retry-After. 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests a credential may make in a burst above that rate.
    pub burst: u32,
    /// Seconds a replica keeps serving after SIGTERM with `/readyz` unready, so a
    /// load balancer stops sending it requests before it stops accepting them
    /// (0: stop accepting at once). In-flight requests finish either way.
    pub shutdown_delay_secs: u64,
    /// Seconds after which the objects of an upload that never became visible (a
    /// crash's leftovers) are removed; unset: `transfer_timeout_secs` plus ten
    /// minutes. It must exceed `transfer_timeout_secs`, which bounds every upload,
    /// so an upload in flight is never touched; the margin above it absorbs clock
    /// differences between replicas and the object store. Collection runs at
    /// start-up and then at least as often as this, and at most every hour.
    pub leftovers_grace_secs: Option<u64>,
}

impl LimitsConfig {
    /// How old a crash leftover must be before it is removed.
    pub fn leftovers_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.leftovers_grace_secs
                .unwrap_or(self.transfer_timeout_secs + 600),
        )
    }
}

/// The most uploads a server takes at once. A large upload holds two threads
/// of the runtime's blocking pool (512) for its length, its body's writer and
/// its hash: this leaves a quarter of the pool to everything else.
pub const MAX_CONCURRENT_UPLOADS: usize = 192;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_read_timeout_secs: 10,
            max_header_bytes: 64 * 1024,
            max_connections: 1024,
            request_timeout_secs: 60,
            transfer_timeout_secs: 3600,
            maintenance_timeout_secs: 3600,
            stall_timeout_secs: 60,
            max_concurrent_uploads: 64,
            max_concurrent_uploads_per_tenant: 16,
            max_connections_per_address: 256,
            requests_per_second: 500,
            burst: 1000,
            shutdown_delay_secs: 0,
            leftovers_grace_secs: None,
        }
    }
}

/// The `/metrics` endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// File holding the bearer token scrapers send (0600; refused when group or
    /// others can read it). Unset: `<data_dir>/metrics-token`, created on first start.
    pub token_file: Option<PathBuf>,
}

/// TLS files (PEM).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

/// Object storage backend.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
pub enum StorageConfig {
    /// Files under `<data_dir>/objects` (or `root`).
    Fs {
        /// Root directory; defaults to `<data_dir>/objects`.
        #[serde(default)]
        root: Option<PathBuf>,
    },
    /// An S3 bucket (endpoint and credentials from the standard AWS environment).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket.
        #[serde(default)]
        prefix: String,
        /// Endpoint override (else `AWS_ENDPOINT_URL` or AWS itself).
        #[serde(default)]
        endpoint: Option<String>,
        /// Region override (else `AWS_REGION`).
        #[serde(default)]
        region: Option<String>,
        /// Bodies larger than this use multipart upload.
        #[serde(default = "default_multipart_threshold")]
        multipart_threshold: u64,
        /// Seconds an S3 operation may take, retries included (each attempt a
        /// third of it); default 90. A stalled S3 fails a request with 503 after it.
        #[serde(default)]
        operation_timeout_secs: Option<u64>,
    },
}

fn default_multipart_threshold() -> u64 {
    16 * 1024 * 1024
}

/// Key provider configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Root key of the local keystore; defaults to `<data_dir>/keys/root.key`.
    /// Every replica needs a copy of the same file.
    pub root_key_file: Option<PathBuf>,
    /// Where the key custody (the local keystore's root check and the tenants'
    /// seal keys) lives: a directory or `s3://bucket/prefix`. Default: the
    /// directory of the root key file on the fs backend; on S3 the vault's own
    /// bucket and prefix, under `custody/` (which backups never copy). Every
    /// replica must name the same one; keep a copy apart from the data, as of
    /// the root key file.
    pub custody: Option<String>,
    /// Set by the restore drill, which opens a scratch vault with the live
    /// vault's custody: a seal file of an earlier version beside the root key
    /// file is then neither imported nor removed.
    #[serde(skip)]
    pub custody_read_only: bool,
    /// Enable the `aws-kms` provider (endpoint and credentials from the AWS environment).
    pub aws_kms: bool,
    /// Seconds an unwrapped branch key stays cached.
    pub cache_ttl_secs: u64,
    /// Uses of a cached branch key before it is unwrapped again.
    pub cache_max_uses: u64,
}

/// Field extraction and the per-tenant blind index.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Documents a tenant is expected to hold, for tenants whose record carries no
    /// plan of its own (made before plans were per tenant): sizes the blind tokens
    /// (the token planner keeps 2 to sqrt(D) values per token). Changing it
    /// rebuilds those tenants' indexes.
    pub expected_documents: u64,
    /// The plan of a new tenant created without `expected_documents`. Small on
    /// purpose: tokens planned for far more documents than a tenant holds are
    /// nearly unique and link a patient's documents. A tenant's plan grows
    /// (a re-planned index, built beside the current one) once it holds more than
    /// four times its plan.
    pub initial_expected_documents: u64,
    /// Per-field token bit lengths overriding the planner (`{ member_id = 20 }`).
    /// Changing them rebuilds indexes.
    pub token_bits: std::collections::BTreeMap<String, u16>,
    /// A query whose blind tokens match more documents than this is refused
    /// (`query_too_broad`): every candidate is decrypted to make results exact.
    pub max_candidates: usize,
    /// X12 and FHIR uploads up to this size have their fields extracted; larger
    /// ones are refused unless sent as opaque (`X-Vault-Extraction: opaque`).
    pub max_extract_bytes: u64,
    /// A document with more distinct values of one field than this is refused
    /// (`too_many_fields`) unless sent as opaque.
    pub max_values_per_field: usize,
    /// A document with more claims than this is refused (`too_many_claims`)
    /// unless sent as opaque.
    pub max_claims_per_document: usize,
    /// Extractions (reading fields, sealing and tokenising them) running at once;
    /// further uploads wait for their turn. 0: one per CPU.
    pub max_concurrent_extractions: usize,
    /// How often pending index changes are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// How often a tenant's index, when it changed, is sealed into a snapshot in
    /// the store (one replica does it; the others skip while it is fresh). A
    /// replica with an empty data directory starts from the latest snapshot and
    /// the audit log after it instead of opening every document. 0: never
    /// (replicas then build their indexes from the store).
    pub snapshot_interval_secs: u64,
}

impl SearchConfig {
    /// The per-document limits of extraction.
    pub fn field_limits(&self) -> vault_index::fields::FieldLimits {
        vault_index::fields::FieldLimits {
            max_values_per_field: self.max_values_per_field,
            max_claims: self.max_claims_per_document,
        }
    }

    /// Extractions allowed to run at once.
    pub fn concurrent_extractions(&self) -> usize {
        match self.max_concurrent_extractions {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            expected_documents: vault_index::planner::DEFAULT_EXPECTED_DOCUMENTS,
            initial_expected_documents: 10_000,
            token_bits: std::collections::BTreeMap::new(),
            max_candidates: 10_000,
            max_extract_bytes: 16 << 20,
            max_values_per_field: 50_000,
            max_claims_per_document: 20_000,
            max_concurrent_extractions: 0,
            commit_interval_ms: 250,
            snapshot_interval_secs: 300,
        }
    }
}

/// The largest tenant a blind-index plan is made for.
pub const MAX_PLANNED_DOCUMENTS: u64 = 10_000_000_000;

/// The audit log and bulk-access detection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Seconds between signed checkpoints of a log that grew (also written at
    /// shutdown).
    pub checkpoint_interval_secs: u64,
    /// Length of the sliding window for per-key document reads, in seconds.
    pub bulk_read_window_secs: u64,
    /// Document reads in one window above which a key may be flagged.
    pub bulk_read_threshold: u64,
    /// ...and only when also this many times the key's usual reads per window.
    pub bulk_read_factor: f64,
    /// Refuse a flagged key's requests (429) for one window.
    pub throttle_bulk_readers: bool,
    /// Audit segment format written: 2 (clear event times, for time-bounded
    /// reads that grow with the answer) or 1. Set 1 while replicas of a version
    /// before segment v2 still share the bucket (a rolling upgrade: they cannot
    /// read v2), then 2 once every replica runs this version. Both are read.
    pub segment_format: u16,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_interval_secs: 60,
            bulk_read_window_secs: 60,
            bulk_read_threshold: 1000,
            bulk_read_factor: 10.0,
            throttle_bulk_readers: false,
            segment_format: 2,
        }
    }
}

/// Log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| unreachable!("valid literal")),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_upload_bytes: 1 << 30,
            segment_size: vault_crypto::envelope::DEFAULT_SEGMENT_SIZE,
            allow_insecure_non_loopback: false,
            tls: None,
            storage: StorageConfig::Fs { root: None },
            keys: KeysConfig::default(),
            search: SearchConfig::default(),
            audit: AuditConfig::default(),
            log: LogConfig::default(),
            backup: BackupConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            operators: OperatorsConfig::default(),
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            root_key_file: None,
            custody: None,
            custody_read_only: false,
            aws_kms: false,
            cache_ttl_secs: 300,
            cache_max_uses: 100_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong (from the TOML parser, with line and column).
        message: String,
    },
    /// The file and the `BILLVAULT_*` variables together are not valid
    /// configuration (a variable of the wrong type, or naming no setting).
    #[error("invalid configuration (file and {ENV_PREFIX}* variables): {0}")]
    Layered(String),
    /// A combination of settings is refused.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Prefix of the environment variables that set configuration keys: the key's
/// path in upper case with `__` between a section and its key
/// (`BILLVAULT_STORAGE__BUCKET`, `BILLVAULT_BACKUP__SCHEDULE`,
/// `BILLVAULT_MAX_UPLOAD_BYTES`). They override the file.
pub const ENV_PREFIX: &str = "BILLVAULT_";

/// Top-level keys, which have no section to name.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "max_upload_bytes",
    "segment_size",
    "allow_insecure_non_loopback",
];

impl Config {
    /// Loads the configuration: the embedded default, under `file` when given,
    /// under every `BILLVAULT_*` variable that names a setting ([`ENV_PREFIX`]).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let text = file
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        if let (Some(path), Some(text)) = (file, &text) {
            // The file's syntax first, so that its errors keep line and column.
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        }
        Self::layered(text.as_deref(), Env::prefixed(ENV_PREFIX)).map_err(ConfigError::Layered)
    }

    /// The default, under the TOML `text`, under the settings in `env`.
    fn layered(text: Option<&str>, env: Env) -> Result<Config, String> {
        let mut figment = Figment::new();
        if let Some(text) = text {
            figment = figment.merge(Toml::string(text));
        }
        // Only variables that name a setting: a section's key (`__` between
        // them) or one of the top-level keys; the others (BILLVAULT_LOG, the
        // CLI's, the tests') are not settings.
        let settings = env
            .filter(|key| {
                key.as_str().contains("__") || TOP_LEVEL_KEYS.iter().any(|top| key == *top)
            })
            .split("__");
        figment
            .merge(settings)
            .extract::<Config>()
            .map_err(|e| e.to_string())
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks settings that only make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.is_none()
            && !self.listen.ip().is_loopback()
            && !self.allow_insecure_non_loopback
        {
            return Err(ConfigError::Invalid(format!(
                "refusing plain HTTP on non-loopback address {}: configure [tls] or set allow_insecure_non_loopback = true",
                self.listen
            )));
        }
        if !(vault_crypto::envelope::MIN_SEGMENT_SIZE..=vault_crypto::envelope::MAX_SEGMENT_SIZE)
            .contains(&self.segment_size)
            || self.segment_size < 1024
        {
            return Err(ConfigError::Invalid(
                "segment_size must be between 1 KiB and 16 MiB".into(),
            ));
        }
        if let Some(name) = self
            .search
            .token_bits
            .keys()
            .find(|name| vault_index::fields::Field::from_name(name).is_none())
        {
            return Err(ConfigError::Invalid(format!(
                "search.token_bits names an unknown field {name:?}"
            )));
        }
        if self
            .search
            .token_bits
            .values()
            .any(|b| !(1..=64).contains(b))
        {
            return Err(ConfigError::Invalid(
                "search.token_bits values must be 1 to 64".into(),
            ));
        }
        if !(1..=MAX_PLANNED_DOCUMENTS).contains(&self.search.expected_documents)
            || !(1..=MAX_PLANNED_DOCUMENTS).contains(&self.search.initial_expected_documents)
        {
            return Err(ConfigError::Invalid(format!(
                "search.expected_documents and search.initial_expected_documents must be 1 to {MAX_PLANNED_DOCUMENTS}"
            )));
        }
        if self.search.max_candidates == 0
            || self.search.commit_interval_ms == 0
            || self.search.max_values_per_field == 0
            || self.search.max_claims_per_document == 0
        {
            return Err(ConfigError::Invalid(
                "search.max_candidates, search.commit_interval_ms, search.max_values_per_field and search.max_claims_per_document must be positive".into(),
            ));
        }
        self.backup.validate().map_err(ConfigError::Invalid)?;
        if self.operators.mfa_step_up_secs > 3600 {
            return Err(ConfigError::Invalid(
                "operators.mfa_step_up_secs must be at most 3600".into(),
            ));
        }
        self.validate_limits()?;
        self.validate_audit()
    }

    /// Checks the edge limits: every timeout and cap must be positive.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let timeouts = [
            l.header_read_timeout_secs,
            l.request_timeout_secs,
            l.transfer_timeout_secs,
            l.maintenance_timeout_secs,
            l.stall_timeout_secs,
        ];
        if timeouts.contains(&0)
            || l.max_connections == 0
            || l.max_concurrent_uploads == 0
            || l.max_header_bytes < 8192
        {
            return Err(ConfigError::Invalid(
                "limits: timeouts, max_connections and max_concurrent_uploads must be positive and max_header_bytes at least 8192".into(),
            ));
        }
        if l.max_concurrent_uploads > MAX_CONCURRENT_UPLOADS {
            return Err(ConfigError::Invalid(format!(
                "limits: max_concurrent_uploads is at most {MAX_CONCURRENT_UPLOADS}"
            )));
        }
        // Deadlines are instants now + the limit: a limit past a year is a typo,
        // and one near u64::MAX would overflow the clock on the first request.
        let longest = [
            l.header_read_timeout_secs,
            l.request_timeout_secs,
            l.transfer_timeout_secs,
            l.maintenance_timeout_secs,
            l.stall_timeout_secs,
            l.shutdown_delay_secs,
            l.leftovers_grace().as_secs(),
        ];
        if longest.iter().any(|secs| *secs > MAX_LIMIT_SECS) {
            return Err(ConfigError::Invalid(format!(
                "limits: timeouts, shutdown_delay_secs and leftovers_grace_secs must be at most {MAX_LIMIT_SECS} (a year)"
            )));
        }
        if l.leftovers_grace().as_secs() <= l.transfer_timeout_secs {
            return Err(ConfigError::Invalid(
                "limits.leftovers_grace_secs must exceed limits.transfer_timeout_secs: an upload in flight must never look like a leftover".into(),
            ));
        }
        if l.requests_per_second > 0 && l.burst == 0 {
            return Err(ConfigError::Invalid(
                "limits.burst must be positive when requests_per_second is".into(),
            ));
        }
        Ok(())
    }

    /// Checks the audit settings.
    fn validate_audit(&self) -> Result<(), ConfigError> {
        let a = &self.audit;
        if a.checkpoint_interval_secs == 0
            || a.bulk_read_window_secs == 0
            || a.bulk_read_threshold == 0
            || a.bulk_read_factor.is_nan()
            || a.bulk_read_factor < 1.0
        {
            return Err(ConfigError::Invalid(
                "audit intervals, window and threshold must be positive and bulk_read_factor at least 1".into(),
            ));
        }
        if !matches!(a.segment_format, 1 | 2) {
            return Err(ConfigError::Invalid(
                "audit.segment_format must be 1 or 2".into(),
            ));
        }
        Ok(())
    }

    /// Directory of the per-tenant blind indexes (derived data, rebuildable).
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    /// Root directory of the filesystem object store.
    pub fn fs_root(&self) -> PathBuf {
        match &self.storage {
            StorageConfig::Fs { root: Some(root) } => root.clone(),
            _ => self.data_dir.join("objects"),
        }
    }

    /// Root key file of the local keystore.
    pub fn root_key_file(&self) -> PathBuf {
        self.keys
            .root_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys/root.key"))
    }

    /// The keystore file of earlier versions (imported into the store at start-up,
    /// and where a restore puts the keystore of an older snapshot).
    pub fn keystore_file(&self) -> PathBuf {
        self.data_dir.join("keys/keystore.bin")
    }

    /// The file of the `/metrics` bearer token.
    pub fn metrics_token_file(&self) -> PathBuf {
        self.metrics
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("metrics-token"))
    }
}

/// `[backup]` settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// The repository: a directory or `s3://bucket/prefix`. Unset: no backups.
    pub target: Option<String>,
    /// When to back up, as a cron expression in UTC: crontab's five fields
    /// (`min hour day-of-month month day-of-week`, e.g. `0 2 * * *`) or six with
    /// seconds first (`0 0 2 * * *`). See [`parse_schedule`] for the numbering.
    pub schedule: Option<String>,
    /// Tenants to back up; empty: the whole vault.
    pub tenants: Vec<String>,
    /// Object Lock retention in days for a bucket with Object Lock (0: none).
    pub lock_days: u32,
    /// `governance` (default) or `compliance`.
    pub lock_mode: Option<String>,
    /// Retention rules applied after each scheduled backup (empty: keep all).
    pub retention: KeepPolicy,
}

impl BackupConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(expr) = &self.schedule {
            parse_schedule(expr)?;
            if self.target.is_none() {
                return Err("backup.schedule needs backup.target".into());
            }
        }
        if let Some(target) = &self.target {
            StoreLocation::parse(target).map_err(|e| format!("backup.target: {e}"))?;
        }
        for tenant in &self.tenants {
            TenantId::new(tenant)
                .map_err(|_| format!("backup.tenants: bad tenant id {tenant:?}"))?;
        }
        match self.lock_mode.as_deref() {
            None | Some("governance" | "compliance") => Ok(()),
            Some(other) => Err(format!(
                "backup.lock_mode is governance or compliance, not {other:?}"
            )),
        }
    }
}

/// A backup schedule: a cron expression in UTC, with 5 fields (minute hour
/// day-of-month month day-of-week, as in crontab) or 6 (seconds first).
///
/// Days of the week are numbered as crontab numbers them, 0 (or 7) for Sunday
/// to 6 for Saturday, or named (`MON`), in both forms. (Before 2026-12 the
/// six-field form followed the Quartz numbering, 1 for Sunday: a numeric
/// day-of-week written then now means the day after; names are unchanged.)
/// With both day-of-month and day-of-week restricted, a day matching either
/// fires, as in crontab. An expression that never fires (`0 0 30 2 *`) is
/// refused rather than scheduling nothing.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "backup.schedule {expr:?}: a cron expression has 5 fields (minute hour \
             day-of-month month day-of-week, e.g. \"0 2 * * *\" for 02:00 UTC daily) or 6 \
             (seconds first, e.g. \"0 0 2 * * *\"), not {fields}"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| format!("backup.schedule {expr:?}: {e}"))
        .and_then(
            |schedule| match schedule.find_next_occurrence(&chrono::Utc::now(), false) {
                Ok(_) => Ok(schedule),
                Err(_) => Err(format!(
                    "backup.schedule {expr:?} never fires (no such date): no backup would run"
                )),
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_take_five_or_six_fields_and_say_what_they_expect() {
        use chrono::{TimeZone, Utc};
        let from = Utc.with_ymd_and_hms(2026, 12, 3, 1, 0, 30).unwrap();
        let next = |expr: &str| {
            parse_schedule(expr)
                .unwrap()
                .find_next_occurrence(&from, false)
                .unwrap()
        };
        // crontab's five fields: minute first.
        assert_eq!(
            next("0 2 * * *"),
            Utc.with_ymd_and_hms(2026, 12, 3, 2, 0, 0).unwrap()
        );
        // Six: seconds first.
        assert_eq!(
            next("0 0 2 * * *"),
            Utc.with_ymd_and_hms(2026, 12, 3, 2, 0, 0).unwrap()
        );
        assert_eq!(
            next("*/2 * * * * *"),
            Utc.with_ymd_and_hms(2026, 12, 3, 1, 0, 32).unwrap()
        );
        for bad in [
            "",
            "* * * *",
            "0 0 2 * * * 2027 1",
            "61 * * * *",
            "0 2 * * nosuchday",
        ] {
            let error = parse_schedule(bad).unwrap_err();
            assert!(error.starts_with("backup.schedule"), "{bad:?}: {error}");
        }
        assert!(parse_schedule("* * * *").unwrap_err().contains("5 fields"));
        // Days of the week as crontab numbers them (2026-12-03 is a Thursday):
        // 1 is Monday, 0 and 7 Sunday, in five fields and in six.
        let monday = Utc.with_ymd_and_hms(2026, 12, 7, 2, 0, 0).unwrap();
        let sunday = Utc.with_ymd_and_hms(2026, 12, 6, 2, 0, 0).unwrap();
        assert_eq!(next("0 2 * * 1"), monday);
        assert_eq!(next("0 0 2 * * 1"), monday);
        assert_eq!(next("0 0 2 * * MON"), monday);
        assert_eq!(next("0 2 * * 0"), sunday);
        assert_eq!(next("0 2 * * 7"), sunday);
        // Day of month or day of week, as in crontab: the 5th (a Saturday)
        // comes before the next Monday.
        assert_eq!(
            next("0 2 5 * 1"),
            Utc.with_ymd_and_hms(2026, 12, 5, 2, 0, 0).unwrap()
        );
        // A date that never comes is refused, not scheduled for ever after.
        for never in ["0 0 30 2 *", "0 0 0 31 4 *"] {
            assert!(
                parse_schedule(never).unwrap_err().contains("never fires"),
                "{never}"
            );
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns its (large) error type
    fn variables_set_keys_over_the_file_and_others_are_left_alone() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BILLVAULT_STORAGE__BACKEND", "s3");
            jail.set_env("BILLVAULT_STORAGE__BUCKET", "claims");
            jail.set_env("BILLVAULT_BACKUP__TARGET", "/backups/vault");
            jail.set_env("BILLVAULT_LIMITS__MAX_CONNECTIONS", 64);
            jail.set_env("BILLVAULT_MAX_UPLOAD_BYTES", 1000);
            // Not settings: the log filter, the CLI's, the tests'.
            jail.set_env("BILLVAULT_LOG", "debug");
            jail.set_env("BILLVAULT_TOKEN", "vlt_op_x");
            jail.set_env("BILLVAULT_TEST_MOTO_URL", "http://127.0.0.1:1");
            let file = "max_upload_bytes = 5\n[backup]\ntarget = \"/elsewhere\"\n[limits]\nrequest_timeout_secs = 7\n";
            let config = Config::layered(Some(file), Env::prefixed(ENV_PREFIX))?;
            assert!(
                matches!(&config.storage, StorageConfig::S3 { bucket, .. } if bucket == "claims")
            );
            assert_eq!(config.backup.target.as_deref(), Some("/backups/vault"));
            assert_eq!(config.max_upload_bytes, 1000);
            assert_eq!(config.limits.max_connections, 64);
            // What no variable names stays as the file has it.
            assert_eq!(config.limits.request_timeout_secs, 7);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns its (large) error type
    fn a_variable_naming_no_setting_or_of_the_wrong_type_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BILLVAULT_LIMITS__MAX_CONECTIONS", 8);
            let refused = Config::layered(None, Env::prefixed(ENV_PREFIX)).unwrap_err();
            assert!(
                refused.to_lowercase().contains("max_conections"),
                "{refused}"
            );
            jail.clear_env();
            jail.set_env("BILLVAULT_LIMITS__MAX_CONNECTIONS", "many");
            let refused = Config::layered(None, Env::prefixed(ENV_PREFIX)).unwrap_err();
            assert!(
                refused.to_lowercase().contains("max_connections"),
                "{refused}"
            );
            Ok(())
        });
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(matches!(config.storage, StorageConfig::Fs { root: None }));
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.contains("listen_port"), "{err}");
        assert!(Config::parse("[storage]\nbackend = \"fs\"\nbucket = \"x\"\n").is_err());
    }

    #[test]
    fn search_settings_are_checked() {
        let config =
            Config::parse("[search]\nexpected_documents = 5000\ntoken_bits = { member_id = 20 }\n")
                .unwrap();
        assert_eq!(config.search.expected_documents, 5000);
        config.validate().unwrap();
        let config = Config::parse("[search]\ntoken_bits = { ssn = 20 }\n").unwrap();
        assert!(config.validate().is_err());
        let config = Config::parse("[search]\ntoken_bits = { member_id = 0 }\n").unwrap();
        assert!(config.validate().is_err());
        let config = Config::parse("[search]\nmax_claims_per_document = 0\n").unwrap();
        assert!(config.validate().is_err());
        let config = Config::parse("[search]\nmax_concurrent_extractions = 0\n").unwrap();
        assert!(config.search.concurrent_extractions() >= 1);
    }

    #[test]
    fn upload_concurrency_and_the_audit_format_are_bounded() {
        for (text, ok) in [
            ("[limits]\nmax_concurrent_uploads = 192\n", true),
            ("[limits]\nmax_concurrent_uploads = 193\n", false),
            ("[audit]\nsegment_format = 1\n", true),
            ("[audit]\nsegment_format = 3\n", false),
        ] {
            let config = Config::parse(text).unwrap();
            assert_eq!(config.validate().is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn s3_storage_parses() {
        let config = Config::parse("[storage]\nbackend = \"s3\"\nbucket = \"vault\"\nprefix = \"prod\"\n[keys]\naws_kms = true\n").unwrap();
        assert!(
            matches!(config.storage, StorageConfig::S3 { ref bucket, .. } if bucket == "vault")
        );
        assert!(config.keys.aws_kms);
    }

    #[test]
    fn limits_parse_and_are_checked() {
        let config = Config::parse(
            "[limits]\nheader_read_timeout_secs = 2\nmax_connections = 8\nrequests_per_second = 0\n[metrics]\ntoken_file = \"/etc/vault/metrics-token\"\n",
        )
        .unwrap();
        assert_eq!(config.limits.header_read_timeout_secs, 2);
        assert_eq!(config.limits.max_connections, 8);
        assert_eq!(config.limits.burst, LimitsConfig::default().burst);
        assert_eq!(
            config.metrics_token_file(),
            PathBuf::from("/etc/vault/metrics-token")
        );
        config.validate().unwrap();
        assert!(Config::parse("[limits]\nmax_conections = 8\n").is_err());
        for bad in [
            "[limits]\nmax_connections = 0\n",
            "[limits]\nstall_timeout_secs = 0\n",
            "[limits]\nburst = 0\n",
            "[limits]\nmax_header_bytes = 100\n",
            "[limits]\nheader_read_timeout_secs = 9223372036854775807\n",
            "[limits]\ntransfer_timeout_secs = 40000000\n",
            "[limits]\nshutdown_delay_secs = 40000000\n",
            "[limits]\ntransfer_timeout_secs = 60\nleftovers_grace_secs = 60\n",
        ] {
            assert!(Config::parse(bad).unwrap().validate().is_err(), "{bad}");
        }
        assert_eq!(
            Config::default().metrics_token_file(),
            PathBuf::from(DEFAULT_DATA_DIR).join("metrics-token")
        );
    }

    #[test]
    fn plain_http_off_loopback_is_refused() {
        let config = Config::parse("listen = \"0.0.0.0:8200\"").unwrap();
        assert!(config.validate().is_err());
        let config =
            Config::parse("listen = \"0.0.0.0:8200\"\nallow_insecure_non_loopback = true").unwrap();
        config.validate().unwrap();
    }
}

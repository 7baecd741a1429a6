//! The vault handle: everything the vault's operations share, opened from a
//! [`Config`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vault_keys::{AwsKmsProvider, CachePolicy, KeyHierarchy, KeyProvider, LocalKeyProvider};

use tokio::sync::mpsc;

use crate::audit::{AuditDeps, AuditService};
use crate::backup::schedule::BackupService;
use crate::catch_up::CatchUp;
use crate::config::{Config, StorageConfig};
use crate::credentials::{CredentialRecord, FirstOperator, OperatorProfile};
use crate::data_dir_lock::DataDirLock;
use crate::documents::{DocumentSettings, Documents};
use crate::jobs::Jobs;
use crate::key_lifecycle::KeyLifecycle;
use crate::leftovers::Leftovers;
use crate::maintenance::{Maintenance, MaintenanceDeps};
use crate::metrics::Metrics;
use crate::mfa::OperatorMfa;
use crate::search::{Replan, SearchDeps, SearchService};
use crate::storage::fs::FsStore;
use crate::storage::keys::{ObjectKeystore, ObjectTenantKeyStore};
use crate::storage::{ObjectName, ObjectStore, StoreLocation};
use crate::tenant_documents::TenantDocuments;
use crate::tenants::TenantRegistry;

/// An open vault: its store and keys, and the services over them. Each service
/// holds only what it works with; the vault composes them.
pub struct Vault {
    /// Effective configuration.
    pub config: Config,
    /// Where documents and records live.
    pub store: Arc<dyn ObjectStore>,
    /// Tenant keys with their cache.
    pub keys: Arc<KeyHierarchy>,
    /// The local key provider (always present: the embedded default).
    pub local_keys: Arc<LocalKeyProvider>,
    /// Tenant records.
    pub tenants: TenantRegistry,
    /// Audit logs.
    pub audit: AuditService,
    /// Documents: upload, open, delete.
    pub documents: Documents,
    /// Per-tenant blind indexes.
    pub search: SearchService,
    /// Tenant creation, key rotation, rewrap, offboarding, retention and holds.
    pub lifecycle: KeyLifecycle,
    /// The backup job.
    pub backups: BackupService,
    /// Long operations as jobs.
    pub maintenance: Maintenance,
    /// Tenants' documents as their users see them (upload, download, list, delete).
    pub tenant_documents: TenantDocuments,
    /// Applies other replicas' uploads and deletes to this replica's indexes.
    pub catch_up: CatchUp,
    /// Collects the leftovers of crashed uploads.
    pub leftovers: Leftovers,
    /// Operators' second factor.
    pub mfa: OperatorMfa,
    /// This process as the holder of leases in the store (host and data
    /// directory).
    pub holder: String,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// This process's hold on its data directory (a vault opened with
    /// [`Vault::open`]; the in-memory test vaults have none).
    _data_dir_lock: Option<DataDirLock>,
    /// Re-plans asked for by indexes, until [`Vault::run_maintenance`] takes them.
    replans: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Replan>>>,
}

/// The vault as its tasks share it.
pub type SharedVault = Arc<Vault>;

/// Why a vault could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// Keys could not be opened.
    #[error("keys: {0}")]
    Keys(#[from] vault_crypto::CryptoError),
    /// The vault's records could not be read or written (tenants, the first
    /// operator credential). The cause is shown: this goes to the operator
    /// starting the server, not to a client.
    #[error("{}", .0.for_log())]
    Records(#[from] crate::Error),
    /// The audit log's signing key could not be loaded or created.
    #[error("audit: {0}")]
    Audit(crate::audit::AuditError),
    /// Local files (data directory, operator token) could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl OpenError {
    /// Whether the object store (or the key records in it) did not answer: the
    /// same start may succeed once it does. Anything else (configuration, a root
    /// key that is not the vault's, local files) will not get better by waiting.
    pub fn is_storage_unavailable(&self) -> bool {
        fn backend(e: &crate::storage::StorageError) -> bool {
            matches!(e, crate::storage::StorageError::Backend(_))
        }
        match self {
            OpenError::Storage(e) => backend(e),
            // The key record store reports storage failures by their message
            // (`StorageError`'s own display, through `storage/keys.rs`).
            OpenError::Keys(vault_crypto::CryptoError::RecordStore(message)) => {
                message.starts_with("storage backend:")
            }
            OpenError::Records(e) => e.code() == "storage_unavailable",
            OpenError::Audit(crate::audit::AuditError::Storage(e)) => backend(e),
            OpenError::Audit(crate::audit::AuditError::Unavailable) => true,
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An opened vault and, on a new vault, where its first operator token went.
pub struct Opened {
    /// The vault.
    pub vault: SharedVault,
    /// Path of a newly written operator token file.
    pub new_operator_token: Option<PathBuf>,
}

impl Vault {
    /// Opens storage and keys, and bootstraps a new vault (its first operator
    /// credential).
    pub async fn open(config: Config) -> Result<Opened, OpenError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(io_err(&config.data_dir))?;
        let lock = DataDirLock::acquire(&config.data_dir).map_err(io_err(&config.data_dir))?;
        let store: Arc<dyn ObjectStore> = match &config.storage {
            StorageConfig::Fs { .. } => Arc::new(FsStore::open(&config.fs_root()).await?),
            StorageConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                multipart_threshold,
                operation_timeout_secs,
            } => {
                let store = crate::storage::s3::S3Store::new(
                    bucket,
                    prefix,
                    endpoint.as_deref(),
                    region.as_deref(),
                    *multipart_threshold,
                )
                .await;
                Arc::new(match operation_timeout_secs {
                    Some(secs) => store.with_operation_timeout(Duration::from_secs(*secs)),
                    None => store,
                })
            }
        };
        Self::open_parts(config, store, Some(lock)).await
    }

    /// Opens a vault over `store` instead of the one `config` names (the unit
    /// tests' in-memory store); keys and indexes still live under `data_dir`.
    pub async fn open_with_store(
        config: Config,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Opened, OpenError> {
        Self::open_parts(config, store, None).await
    }

    async fn open_parts(
        config: Config,
        store: Arc<dyn ObjectStore>,
        lock: Option<DataDirLock>,
    ) -> Result<Opened, OpenError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(io_err(&config.data_dir))?;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&config.data_dir))?;
        let custody = open_custody(&config, &store).await?;
        let local_keys = Arc::new(
            LocalKeyProvider::open(
                &config.root_key_file(),
                Arc::new(ObjectKeystore {
                    store: store.clone(),
                    custody,
                    custody_read_only: config.keys.custody_read_only,
                }),
            )
            .await?,
        );
        let tenants = TenantRegistry::new(store.clone());
        import_legacy_keystore(&config, &local_keys, &tenants).await?;
        let mut providers: Vec<Arc<dyn KeyProvider>> = vec![local_keys.clone()];
        let kms = if config.keys.aws_kms {
            let kms = Arc::new(AwsKmsProvider::from_env().await);
            providers.push(kms.clone());
            Some(kms)
        } else {
            None
        };
        let policy = CachePolicy {
            ttl: Duration::from_secs(config.keys.cache_ttl_secs),
            max_uses: config.keys.cache_max_uses,
        };
        let keys = Arc::new(KeyHierarchy::new(
            providers,
            Arc::new(ObjectTenantKeyStore(store.clone())),
            policy,
        ));

        let new_operator_token = bootstrap_operator(&config, store.as_ref()).await?;
        let metrics = Arc::new(Metrics::default());
        let audit = AuditService::open(
            AuditDeps {
                store: store.clone(),
                keys: keys.clone(),
                local_keys: local_keys.clone(),
                tenants: tenants.clone(),
                metrics: metrics.clone(),
            },
            config.audit.clone(),
        )
        .await
        .map_err(OpenError::Audit)?;
        let documents = Documents::new(
            store.clone(),
            keys.clone(),
            metrics.clone(),
            DocumentSettings::of(&config),
        );
        let (replan_requests, replans) = mpsc::unbounded_channel();
        let search = SearchService::new(
            SearchDeps {
                store: store.clone(),
                keys: keys.clone(),
                tenants: tenants.clone(),
                documents: documents.clone(),
                metrics: metrics.clone(),
            },
            config.index_dir(),
            config.search.clone(),
            replan_requests,
        );
        let lifecycle = KeyLifecycle {
            store: store.clone(),
            keys: keys.clone(),
            local_keys: local_keys.clone(),
            kms,
            tenants: tenants.clone(),
            documents: documents.clone(),
            search: search.clone(),
            initial_expected_documents: config.search.initial_expected_documents,
        };
        let backups = BackupService::new(&config, store.clone(), audit.clone(), metrics.clone());
        let maintenance = Maintenance::new(MaintenanceDeps {
            jobs: Jobs::default(),
            audit: audit.clone(),
            lifecycle: lifecycle.clone(),
            search: search.clone(),
            tenants: tenants.clone(),
            backups: backups.clone(),
            store: store.clone(),
            holder: crate::storage::lease::holder_name(&config.data_dir),
        });
        let tenant_documents = TenantDocuments::new(
            store.clone(),
            documents.clone(),
            search.clone(),
            lifecycle.clone(),
            metrics.clone(),
        )
        .in_run(lock.as_ref().map(|l| l.run().clone()));
        let catch_up = CatchUp::new(
            audit.clone(),
            search.clone(),
            documents.clone(),
            tenants.clone(),
            metrics.clone(),
        );
        let leftovers = Leftovers::new(
            store.clone(),
            tenants.clone(),
            metrics.clone(),
            crate::storage::lease::holder_name(&config.data_dir),
            // Longer than any upload may take: one in flight is never touched.
            config.limits.leftovers_grace(),
        );
        let holder = crate::storage::lease::holder_name(&config.data_dir);
        let mfa = OperatorMfa::new(
            store.clone(),
            local_keys.clone(),
            config.operators.mfa_step_up_secs,
        );
        let vault = Arc::new(Vault {
            config,
            store,
            keys,
            local_keys,
            tenants,
            audit,
            documents,
            search,
            lifecycle,
            backups,
            maintenance,
            tenant_documents,
            catch_up,
            leftovers,
            mfa,
            holder,
            metrics,
            _data_dir_lock: lock,
            replans: std::sync::Mutex::new(Some(replans)),
        });
        purge_offboarded_keks(&vault).await?;
        Ok(Opened {
            vault,
            new_operator_token,
        })
    }

    /// Runs the re-plans the indexes ask for, until dropped (a server runs this; a
    /// vault opened for offline work does not, and its indexes keep their plans).
    /// Only the first call takes them; later ones return at once.
    pub async fn run_maintenance(self: Arc<Self>) {
        let wanted = self
            .replans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(wanted) = wanted {
            self.maintenance.clone().run_replans(wanted).await;
        }
    }

    /// Drops expired tenant keys from the cache on time, so an idle tenant's
    /// branch and index keys do not stay in memory past their time to live. Runs
    /// until dropped.
    pub async fn sweep_key_cache(self: Arc<Self>) {
        let period = Duration::from_secs(self.config.keys.cache_ttl_secs.clamp(1, 120) / 4 + 1);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let dropped = self.keys.evict_expired().await;
            if dropped > 0 {
                tracing::debug!(dropped, "expired tenant keys dropped from the cache");
            }
        }
    }
}

/// Destroys local KEKs of tenants recorded as offboarded. Offboarding destroyed
/// them; this finishes an offboarding interrupted between its record and its
/// keys, and removes KEK objects a restore from before it brought back (they no
/// longer open: their seal key is gone).
async fn purge_offboarded_keks(vault: &Vault) -> Result<(), OpenError> {
    let tenants = vault.tenants.list().await?;
    for tenant in tenants {
        if tenant.status == crate::tenants::TenantStatus::Offboarded
            && tenant.key_provider == "local"
            && vault.local_keys.destroy_tenant_key(&tenant.id).await?
        {
            tracing::warn!(tenant = %tenant.id, "destroyed the local KEK of an offboarded tenant found in the keystore");
        }
    }
    Ok(())
}

/// The key custody's store (see [`crate::config::KeysConfig::custody`]).
async fn open_custody(
    config: &Config,
    store: &Arc<dyn ObjectStore>,
) -> Result<Arc<dyn ObjectStore>, OpenError> {
    let fs_custody = |dir: PathBuf| async move {
        Ok::<_, OpenError>(Arc::new(FsStore::open_shared(&dir).await?) as Arc<dyn ObjectStore>)
    };
    match (&config.keys.custody, &config.storage) {
        (None, StorageConfig::S3 { .. }) => Ok(store.clone()),
        (None, StorageConfig::Fs { .. }) => {
            let root_key = config.root_key_file();
            let dir = root_key
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_owned);
            fs_custody(dir).await
        }
        (Some(raw), storage) => match StoreLocation::parse(raw)? {
            StoreLocation::Fs(dir) => fs_custody(dir).await,
            StoreLocation::S3 { bucket, prefix } => {
                let (endpoint, region) = match storage {
                    StorageConfig::S3 {
                        endpoint, region, ..
                    } => (endpoint.as_deref(), region.as_deref()),
                    StorageConfig::Fs { .. } => (None, None),
                };
                Ok(Arc::new(
                    crate::storage::s3::S3Store::new(
                        &bucket,
                        &prefix,
                        endpoint,
                        region,
                        16 * 1024 * 1024,
                    )
                    .await,
                ))
            }
        },
    }
}

/// Imports the keystore files of earlier versions (or of a restored older
/// snapshot) into the store, leaving out offboarded tenants.
async fn import_legacy_keystore(
    config: &Config,
    local_keys: &LocalKeyProvider,
    tenants: &TenantRegistry,
) -> Result<(), OpenError> {
    let keystore = config.keystore_file();
    let seal_file = config
        .root_key_file()
        .with_file_name(vault_keys::SEALS_FILE_NAME);
    let seal_file = (!config.keys.custody_read_only).then_some(seal_file.as_path());
    if !keystore.exists() && !seal_file.is_some_and(Path::exists) {
        return Ok(());
    }
    let offboarded: Vec<_> = tenants
        .list()
        .await?
        .into_iter()
        .filter(|t| t.status == crate::tenants::TenantStatus::Offboarded)
        .map(|t| t.id)
        .collect();
    let imported = local_keys
        .import_legacy_files(&keystore, seal_file, &|t| offboarded.contains(t))
        .await?;
    tracing::info!(
        tenants = imported,
        "imported the local keystore file into the object store"
    );
    Ok(())
}

/// On a vault with no operator credential, issues one and writes it to
/// `<data dir>/operator-token` (mode 0600). The token is never printed or logged.
async fn bootstrap_operator(
    config: &Config,
    store: &dyn ObjectStore,
) -> Result<Option<PathBuf>, OpenError> {
    if !store
        .list(ObjectName::OPERATORS_PREFIX, None, 1)
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    let issued = CredentialRecord::issue_operator(OperatorProfile::bootstrap(), None);
    let path = config.data_dir.join("operator-token");
    // The file first: a crash before the claim only means a new token is issued
    // (and the file replaced) on the next start.
    let mut line = zeroize::Zeroizing::new(issued.token.as_bytes().to_vec());
    line.push(b'\n');
    vault_keys::private_file::write_atomically(&path, &line).map_err(io_err(&path))?;
    match crate::credentials::claim_first_operator(store, &issued.record).await? {
        FirstOperator::Ours => {
            crate::credentials::ensure_stored(store, &issued.record).await?;
            Ok(Some(path))
        }
        FirstOperator::Theirs(record) => {
            // Another replica issued it; its record is stored whoever crashed.
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            crate::credentials::ensure_stored(store, &record).await?;
            Ok(None)
        }
    }
}

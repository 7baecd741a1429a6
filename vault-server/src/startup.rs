//! From configuration to a serving vault: storage, keys, the first operator
//! credential, the router, TLS and graceful shutdown.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vault_keys::{AwsKmsProvider, CachePolicy, KeyHierarchy, KeyProvider, LocalKeyProvider};

use crate::auth::{CredentialKind, CredentialRecord};
use crate::config::{Config, StorageConfig};
use crate::metrics::Metrics;
use crate::state::{AppState, SharedState};
use crate::storage::fs::FsStore;
use crate::storage::keys::ObjectTenantKeyStore;
use crate::storage::{ObjectName, ObjectStore};
use crate::tenants::TenantRegistry;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// Keys could not be opened.
    #[error("keys: {0}")]
    Keys(#[from] vault_crypto::CryptoError),
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
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartupError + '_ {
    move |source| StartupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A built vault: its state and, on a new vault, where the operator token went.
pub struct Built {
    /// Shared state.
    pub state: SharedState,
    /// Path of a newly written operator token file.
    pub new_operator_token: Option<PathBuf>,
    /// Path of a newly written metrics token file.
    pub new_metrics_token: Option<PathBuf>,
}

/// Opens storage and keys and bootstraps a new vault.
pub async fn build(config: Config) -> Result<Built, StartupError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(io_err(&config.data_dir))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(&config.data_dir))?;

    let store: Arc<dyn ObjectStore> = match &config.storage {
        StorageConfig::Fs { .. } => Arc::new(FsStore::open(&config.fs_root()).await?),
        StorageConfig::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            multipart_threshold,
        } => Arc::new(
            crate::storage::s3::S3Store::new(
                bucket,
                prefix,
                endpoint.as_deref(),
                region.as_deref(),
                *multipart_threshold,
            )
            .await,
        ),
    };

    let local_keys = Arc::new(LocalKeyProvider::open(
        &config.root_key_file(),
        &config.keystore_file(),
    )?);
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
    let metrics_token_file = config.metrics_token_file();
    let (metrics_token, metrics_token_source) = crate::metrics::MetricsToken::load_or_create(
        &metrics_token_file,
        config.metrics.token_file.is_none(),
    )
    .map_err(io_err(&metrics_token_file))?;
    let new_metrics_token = match metrics_token_source {
        crate::metrics::MetricsTokenSource::Created(path) => Some(path),
        crate::metrics::MetricsTokenSource::Existing => None,
    };
    let audit = crate::audit::AuditService::open(store.as_ref(), &local_keys, config.audit.clone())
        .await
        .map_err(StartupError::Audit)?;
    let state = Arc::new(AppState {
        tenants: TenantRegistry::new(store.clone()),
        search: crate::search::SearchService::new(config.index_dir(), config.search.clone()),
        backups: crate::backup::schedule::BackupService::new(config.backup.clone()),
        audit,
        rates: crate::limits::CredentialRates::new(&config.limits),
        uploads: crate::limits::UploadSlots::new(
            config.limits.max_concurrent_uploads,
            config.limits.max_concurrent_uploads_per_tenant,
        ),
        metrics_token,
        config,
        store,
        keys,
        local_keys,
        kms,
        metrics: Metrics::default(),
    });
    purge_offboarded_keks(&state).await?;
    Ok(Built {
        state,
        new_operator_token,
        new_metrics_token,
    })
}

/// Destroys local KEKs of tenants recorded as offboarded. Offboarding destroyed
/// them, but a keystore copy restored from before that (a v1 keystore, which has
/// no per-tenant seal keys, is readable with the root key alone and gets new seal
/// keys when migrated) would bring them back.
async fn purge_offboarded_keks(state: &SharedState) -> Result<(), StartupError> {
    let tenants = state.tenants.list().await.map_err(|e| StartupError::Io {
        path: PathBuf::from("system/tenants"),
        source: std::io::Error::other(format!("tenant records could not be read ({})", e.code())),
    })?;
    for tenant in tenants {
        if tenant.status == crate::tenants::TenantStatus::Offboarded
            && tenant.key_provider == "local"
            && state.local_keys.destroy_tenant_key(&tenant.id)?
        {
            tracing::warn!(tenant = %tenant.id, "destroyed the local KEK of an offboarded tenant found in the keystore");
        }
    }
    Ok(())
}

/// On a vault with no operator credential, issues one and writes it to
/// `<data dir>/operator-token` (mode 0600). The token is never printed or logged.
async fn bootstrap_operator(
    config: &Config,
    store: &dyn ObjectStore,
) -> Result<Option<PathBuf>, StartupError> {
    if !store.list("system/operators/", None, 1).await?.is_empty() {
        return Ok(None);
    }
    let issued = CredentialRecord::issue(CredentialKind::Operator, None, Vec::new(), None);
    let path = config.data_dir.join("operator-token");
    // The file first: a crash before the record is stored only means a new token is
    // issued (and the file replaced) on the next start.
    let mut line = zeroize::Zeroizing::new(issued.token.as_bytes().to_vec());
    line.push(b'\n');
    vault_keys::private_file::write_atomically(&path, &line).map_err(io_err(&path))?;
    let record = serde_json::to_vec_pretty(&issued.record).map_err(|e| StartupError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    store
        .put_new_bytes(
            &ObjectName::operator(&issued.record.id),
            Bytes::from(record),
        )
        .await?;
    Ok(Some(path))
}

/// Drops expired tenant keys from the cache on time, so an idle tenant's branch
/// and index keys do not stay in memory past their time to live.
async fn sweep_key_cache(state: SharedState) {
    let period = Duration::from_secs(state.config.keys.cache_ttl_secs.clamp(1, 120) / 4 + 1);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dropped = state.keys.evict_expired().await;
        if dropped > 0 {
            tracing::debug!(dropped, "expired tenant keys dropped from the cache");
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// requests (uploads) finish. Speaks HTTPS (rustls) when `[tls]` is configured.
/// The connection limits are `http_server.rs`'s.
pub async fn serve(
    built: Built,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let state = built.state;
    let addr = state.config.listen;
    let app = crate::routes::router(state.clone());
    let tls = match &state.config.tls {
        None => None,
        Some(tls) => {
            // Several crates enable both rustls backends; pick one explicitly. An Err
            // only means a provider was installed already.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let cert = std::fs::read(&tls.cert_file).map_err(io_err(&tls.cert_file))?;
            let key = zeroize::Zeroizing::new(
                std::fs::read(&tls.key_file).map_err(io_err(&tls.key_file))?,
            );
            let config =
                crate::http_server::tls_config(&cert, &key).map_err(io_err(&tls.cert_file))?;
            Some(Arc::new(config))
        }
    };
    // Indexes are derived data: open and reconcile them in the background while
    // serving (a search waits for its tenant's reconciliation).
    tokio::spawn(crate::search::run_committer(state.clone()));
    tokio::spawn(crate::audit::run_checkpointer(state.clone()));
    tokio::spawn(crate::backup::schedule::run_scheduler(state.clone()));
    tokio::spawn(sweep_key_cache(state.clone()));
    {
        let state = state.clone();
        tokio::spawn(async move { crate::search::open_all(&state).await });
    }
    {
        // Rate-limiter entries of credentials that went quiet are dropped.
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                state.rates.forget_idle();
            }
        });
    }
    let bind_err = |source| StartupError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %local, scheme, limits = %crate::http_server::describe(&state.config.limits), "vault listening");
    println!("vault-server listening on {scheme}://{local}");
    if let Some(path) = &built.new_operator_token {
        println!(
            "New vault: the first operator credential is in {} (mode 0600).",
            path.display()
        );
        println!(
            "Use it with: vault-cli --token-file {} tenant list",
            path.display()
        );
    }
    if let Some(path) = &built.new_metrics_token {
        println!(
            "The /metrics bearer token (for scrapers) is in {} (mode 0600).",
            path.display()
        );
    }
    let serve_err = |source| StartupError::Io {
        path: PathBuf::from("<listener>"),
        source,
    };
    let listener = tokio::net::TcpListener::from_std(listener).map_err(serve_err)?;
    let served = crate::http_server::serve(&state, listener, tls, app, shutdown)
        .await
        .map_err(serve_err);
    // In-flight requests have finished: make their index entries durable and sign
    // where the audit logs stand.
    state.search.commit_all().await;
    crate::audit::checkpoint_all(&state).await;
    served
}

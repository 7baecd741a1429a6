//! From configuration to a serving vault: storage, keys, the first operator
//! credential, the router, TLS and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vault_core::config::Config;
use vault_core::Vault;

use crate::state::{AppState, SharedState};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The vault could not be opened.
    #[error(transparent)]
    Open(#[from] vault_core::OpenError),
    /// Local files (metrics token, TLS files) could not be read or written.
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

/// A built server: its state and, on a new vault, where the tokens went.
pub struct Built {
    /// Shared state.
    pub state: SharedState,
    /// Path of a newly written operator token file.
    pub new_operator_token: Option<PathBuf>,
    /// Path of a newly written metrics token file.
    pub new_metrics_token: Option<PathBuf>,
}

/// How long a start waits for an object store that does not answer before it
/// gives up (a replica restarted during an S3 blip comes up when S3 does).
const STORAGE_WAIT_AT_START: Duration = Duration::from_secs(120);

/// Opens the vault, trying again while the object store does not answer (for
/// up to [`STORAGE_WAIT_AT_START`]); any other failure ends the start at once.
async fn open_waiting_for_storage(
    config: Config,
) -> Result<vault_core::vault::Opened, StartupError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        match Vault::open(config.clone()).await {
            Err(e) if e.is_storage_unavailable() && started.elapsed() < STORAGE_WAIT_AT_START => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "the object store did not answer at start-up; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            opened => return Ok(opened?),
        }
    }
}

/// Opens the vault and adds what the edge needs: rate limits, upload slots and
/// the metrics token.
pub async fn build(config: Config) -> Result<Built, StartupError> {
    let opened = open_waiting_for_storage(config).await?;
    let vault = opened.vault;
    let config = &vault.config;
    let metrics_token_file = config.metrics_token_file();
    let (metrics_token, metrics_token_source) = crate::metrics_token::MetricsToken::load_or_create(
        &metrics_token_file,
        config.metrics.token_file.is_none(),
    )
    .map_err(io_err(&metrics_token_file))?;
    let new_metrics_token = match metrics_token_source {
        crate::metrics_token::MetricsTokenSource::Created(path) => Some(path),
        crate::metrics_token::MetricsTokenSource::Existing => None,
    };
    let state = Arc::new(AppState {
        rates: crate::limits::CredentialRates::new(&config.limits),
        uploads: crate::limits::UploadSlots::new(
            config.limits.max_concurrent_uploads,
            config.limits.max_concurrent_uploads_per_tenant,
        ),
        metrics_token,
        vault,
        draining: Default::default(),
    });
    Ok(Built {
        state,
        new_operator_token: opened.new_operator_token,
        new_metrics_token,
    })
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// requests (uploads) finish. Speaks HTTPS (rustls) when `[tls]` is configured.
/// The connection limits are `http_server.rs`'s.
pub async fn serve(
    built: Built,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let state = built.state;
    let addr = state.vault.config.listen;
    let app = crate::routes::router(state.clone());
    let tls = match &state.vault.config.tls {
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
    tokio::spawn(state.vault.search.clone().run_committer());
    tokio::spawn(state.vault.search.clone().run_snapshotter());
    tokio::spawn(state.vault.maintenance.board.clone().run());
    tokio::spawn(state.vault.catch_up.clone().run());
    tokio::spawn(state.vault.leftovers.clone().run());
    tokio::spawn(state.vault.audit.clone().run_checkpointer());
    tokio::spawn(state.vault.backups.clone().run_scheduler());
    tokio::spawn(state.vault.clone().sweep_key_cache());
    tokio::spawn(state.vault.clone().run_maintenance());
    {
        let search = state.vault.search.clone();
        tokio::spawn(async move { search.open_all().await });
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
    tracing::info!(address = %local, scheme, limits = %crate::http_server::describe(&state.vault.config.limits), "vault listening");
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
    // On the signal, /readyz turns unready first; requests are still served for
    // the shutdown delay (a load balancer's health checks see it), then new
    // connections are refused and in-flight requests finish.
    let shutdown = {
        let state = state.clone();
        async move {
            shutdown.await;
            state
                .draining
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let delay = state.vault.config.limits.shutdown_delay_secs;
            tracing::info!(
                delay_secs = delay,
                "draining: /readyz answers 503; in-flight requests finish"
            );
            tokio::time::sleep(Duration::from_secs(delay)).await;
        }
    };
    let served = crate::http_server::serve(&state, listener, tls, app, shutdown)
        .await
        .map_err(serve_err);
    // In-flight requests have finished: make their index entries durable and sign
    // where the audit logs stand.
    state.vault.search.commit_all().await;
    state.vault.audit.checkpoint_all().await;
    served
}

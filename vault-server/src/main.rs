//! `vault-server`: parses options, sets up logging, builds and serves the vault.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use vault_core::config::{Config, LogFormat};

/// The billing records vault server.
///
/// With no options it runs the embedded default: http://127.0.0.1:8200, data in
/// ./vault-data, filesystem storage and the local key provider. A new vault writes
/// its first operator credential to <data dir>/operator-token (mode 0600).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Options {
    /// TOML configuration file (see README.md, "Configuration").
    #[arg(long, env = "BILLVAULT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8200].
    #[arg(long, env = "BILLVAULT_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory [default: ./vault-data].
    #[arg(long, env = "BILLVAULT_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

fn init_logging(format: LogFormat) {
    // tantivy reports every segment merge at info: noise for an operator.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BILLVAULT_LOG")
        .unwrap_or_else(|_| "info,tantivy=warn".into());
    // Colours for a terminal only: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// jemalloc instead of glibc's malloc: glibc gives each thread that allocates
/// its own arena (up to 8 per core) and the blocking pool has many threads, so
/// the server's resident memory doubled under load (BENCHMARKS.md, "Server
/// memory"); jemalloc's few arenas and its decay of unused pages keep it flat
/// with no tuning and no restart.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let options = Options::parse();
    let mut config = Config::load(options.config.as_deref())?;
    if let Some(listen) = options.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = options.data_dir {
        config.data_dir = data_dir;
    }
    init_logging(config.log.format);
    if let Some(armed) = vault_core::failpoints::arm_from_env().map_err(|e| anyhow::anyhow!(e))? {
        tracing::warn!(crash_points = %armed, "crash points armed: this process is for fault-injection tests only");
    }
    let built = vault_server::startup::build(config)
        .await
        .context("starting the vault")?;
    vault_server::startup::serve(built, shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

//! The connection layer: accepting TCP connections (plain HTTP or TLS with
//! rustls) and serving HTTP/1.1 on them with hyper, with the limits a server
//! facing untrusted clients needs and `axum::serve` does not set:
//!
//! - a cap on open connections: beyond `max_connections` a new connection is
//!   accepted and closed at once (counted in `vault_connections_rejected_total`),
//!   so a flood neither queues in the kernel nor exhausts file descriptors;
//! - a header-read timeout: a connection must send a complete request head within
//!   `header_read_timeout_secs` of waiting for one (hyper's timer starts when the
//!   connection waits for a request, so this is also the keep-alive idle timeout),
//!   and finish its TLS handshake in the same time: a slowloris client holds a
//!   connection for seconds, not for ever;
//! - a cap on the request head's size (`max_header_bytes`, 431 beyond);
//! - a write-stall timeout: a connection whose client stops reading for
//!   `stall_timeout_secs` is closed, so a download cannot hold the server's
//!   resources for ever.
//!
//! HTTP/1.1 only (ALPN `http/1.1` under TLS): every client of the vault speaks it,
//! and the timeouts above are defined for it; HTTP/2 would add its own attack
//! surface (stream resets, CONTINUATION floods) for no client's benefit.
//!
//! Shutdown is graceful: the listener closes, idle connections are closed, and
//! requests in flight finish (bounded by their time budgets).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::state::SharedState;
use vault_core::config::LimitsConfig;

/// Loads a PEM certificate chain and private key into a rustls server
/// configuration that offers HTTP/1.1 only.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid("the certificate file is not PEM certificates"))?;
    if chain.is_empty() {
        return Err(invalid("the certificate file holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| invalid("the key file holds no PEM private key"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    state: &SharedState,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = state.vault.config.limits.clone();
    let header_timeout = Duration::from_secs(limits.header_read_timeout_secs);
    let stall = Duration::from_secs(limits.stall_timeout_secs);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = crate::limits::Shares::new(limits.max_connections_per_address);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Over the cap: close at once rather than let it wait unserved.
            state.vault.metrics.connections_rejected.inc();
            drop(stream);
            continue;
        };
        // One address may not take the whole cap (half-open connections from one
        // client would otherwise lock everyone out until the header timeout).
        let Some(address_share) = per_address.take(&peer.ip()) else {
            state.vault.metrics.connections_rejected.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(state);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let http = http.clone();
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        tokio::spawn(async move {
            state.vault.metrics.open_connections.inc();
            let stream = StallGuard::new(stream, stall);
            let served = match acceptor {
                None => watcher
                    .watch(http.serve_connection(TokioIo::new(stream), service))
                    .await
                    .map_err(|e| e.to_string()),
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => watcher
                            .watch(http.serve_connection(TokioIo::new(tls), service))
                            .await
                            .map_err(|e| e.to_string()),
                        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                        Err(_) => Err("TLS handshake timed out".to_owned()),
                    }
                }
            };
            if let Err(error) = served {
                // Client behaviour (timeouts, resets, bad requests): not our failure.
                tracing::debug!(%peer, error, "connection ended");
            }
            state.vault.metrics.open_connections.dec();
            drop(address_share);
            drop(slot);
        });
    }
    drop(listener);
    let drain = [
        limits.request_timeout_secs,
        limits.transfer_timeout_secs,
        limits.maintenance_timeout_secs,
    ]
    .into_iter()
    .max()
    .unwrap_or(limits.request_timeout_secs)
        + limits.stall_timeout_secs;
    if tokio::time::timeout(Duration::from_secs(drain), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = drain,
            "connections still open after the drain period; closing"
        );
    }
    Ok(())
}

/// An accept error: per-connection ones (reset before accept) are skipped; others
/// (out of file descriptors) are logged and waited out briefly.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Closes a connection whose writes make no progress for `stall` (the client
/// stopped reading). Reads are bounded elsewhere: request heads by the header-read
/// timeout, upload bodies by the upload's stall guard.
struct StallGuard<S> {
    inner: S,
    stall: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, stall: Duration) -> Self {
        StallGuard {
            inner,
            stall,
            waiting: None,
        }
    }

    /// Turns a pending write into a timeout error once it has waited `stall`.
    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stall = self.stall;
        let timer = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.pending_write(cx),
            ready => {
                self.waiting = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.after_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The limits' summary for the start-up log line.
pub fn describe(limits: &LimitsConfig) -> String {
    format!(
        "max {} connections, header timeout {} s, stall timeout {} s",
        limits.max_connections, limits.header_read_timeout_secs, limits.stall_timeout_secs
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_drains_times_out() {
        // A duplex pipe with a 16-byte buffer whose reader never reads.
        let (writer, _reader) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(writer, Duration::from_secs(3));
        guarded.write_all(&[0u8; 16]).await.unwrap();
        let err = guarded.write_all(&[0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_drains_is_not_cut() {
        let (writer, mut reader) = tokio::io::duplex(16);
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut sink)
                .await
                .unwrap();
            sink.len()
        });
        let mut guarded = StallGuard::new(writer, Duration::from_secs(3));
        guarded.write_all(&[7u8; 4096]).await.unwrap();
        guarded.shutdown().await.unwrap();
        drop(guarded);
        assert_eq!(drain.await.unwrap(), 4096);
    }
}

//! Every listener of the process (`serve`, `issuer`, the operator's metrics and health): one
//! accept loop with a connection limit, optional TLS, and hyper's HTTP/1 server with a
//! header-read timeout and a whole-request timeout, so that idle or dripping clients cannot
//! hold connections or workers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The peer address of a connection (`ConnectInfo<Peer>`), as every listener records it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<crate::api::Duration>().map(|d| d.as_std()).map_err(|e| e.to_string())
}

/// Limits of every connection a listener accepts.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct ConnectionLimits {
    /// Time a connection has to send a request's headers once it waits for one (after
    /// connecting, after the previous answer); also bounds the TLS handshake.
    #[arg(long, env = "TESSERA_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Time a request may take from its headers to its answer, body included (then 408).
    #[arg(long, env = "TESSERA_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A bound listener, plain or TLS (`--tls-dir`).
pub struct Bound {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {message}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub message: String,
}

/// Binds `addr`, with TLS from `tls_dir` if given.
pub async fn bind(addr: SocketAddr, tls_dir: Option<PathBuf>, limits: ConnectionLimits) -> Result<Bound, ListenError> {
    let error = |message: String| ListenError { addr, message };
    let tls = match tls_dir {
        Some(dir) => Some(crate::issuer::tls::acceptor(dir).map_err(|e| error(e.to_string()))?),
        None => None,
    };
    let tcp = TcpListener::bind(addr).await.map_err(|e| error(e.to_string()))?;
    Ok(Bound { tcp, tls, limits })
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `router` until the process stops. Each request carries `ConnectInfo<Peer>`.
    pub async fn serve(self, router: Router) {
        let limits = self.limits;
        let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        loop {
            // Over the limit, connections wait in the accept queue instead of being served.
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let (tcp, peer) = match self.tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (router, tls) = (router.clone(), self.tls.clone());
            tokio::spawn(async move {
                serve_connection(tcp, peer, tls, router, limits).await;
                drop(permit);
            });
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => http1(tcp, peer, router, limits).await,
        Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => http1(stream, peer, router, limits).await,
            _ => tracing::debug!(%peer, "TLS handshake failed or timed out"),
        },
    }
}

async fn http1<IO>(io: IO, peer: SocketAddr, router: Router, limits: ConnectionLimits)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(Peer(peer)));
        router.clone().oneshot(request)
    });
    // hyper runs the header timer whenever the connection waits for a request head: for a new
    // connection and for a kept-alive one between requests alike.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "connection closed");
    }
}

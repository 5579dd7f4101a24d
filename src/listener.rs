//! Every listener of the process (`serve`, `issuer`, the operator's metrics and health): one
//! accept loop with a connection limit, optional TLS, and hyper's HTTP/1 server with
//! header-read, idle and whole-request timeouts, so that idle or dripping clients cannot hold
//! connections or workers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
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
    /// Time a connection has to send a request's headers: from connecting, or from the first
    /// byte of a later request; also bounds the TLS handshake.
    #[arg(long, env = "TESSERA_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    #[arg(long, env = "TESSERA_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
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
            idle_timeout: Duration::from_secs(60),
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

/// Where a connection is, shared by its reads and its service.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Waiting for a request since `since`; `first` for a connection that has sent none yet.
    Waiting { since: Instant, first: bool },
    /// The first byte of a request arrived at `since`; its headers are not complete.
    Receiving { since: Instant },
    /// This many requests are being answered.
    Answering(usize),
}

/// When a connection in `phase` is closed if nothing changes; never while it is answered
/// (the request timeout bounds that).
fn deadline(phase: Phase, limits: &ConnectionLimits) -> Option<Instant> {
    match phase {
        Phase::Waiting { since, first: true } | Phase::Receiving { since } => Some(since + limits.header_read_timeout),
        Phase::Waiting { since, first: false } => Some(since + limits.idle_timeout),
        Phase::Answering(_) => None,
    }
}

/// The phase, and the task to wake when an answer ends (its reads waited without a deadline).
struct Shared {
    phase: Phase,
    waiting_reader: Option<std::task::Waker>,
}

type SharedPhase = Arc<Mutex<Shared>>;

fn phase_of(shared: &SharedPhase) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Marks a request answered from its headers until its response is ready.
struct Answering(SharedPhase);

impl Answering {
    fn start(shared: SharedPhase) -> Self {
        let mut p = phase_of(&shared);
        p.phase = match p.phase {
            Phase::Answering(n) => Phase::Answering(n + 1),
            _ => Phase::Answering(1),
        };
        drop(p);
        Self(shared)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let mut p = phase_of(&self.0);
        p.phase = match p.phase {
            Phase::Answering(n) if n > 1 => Phase::Answering(n - 1),
            _ => Phase::Waiting { since: Instant::now(), first: false },
        };
        // A read that waited without a deadline must arm the idle one now.
        if let (Phase::Waiting { .. }, Some(w)) = (p.phase, p.waiting_reader.take()) {
            w.wake();
        }
    }
}

/// A connection's stream whose reads fail once the connection's deadline has passed.
struct Watched<IO> {
    io: IO,
    phase: SharedPhase,
    limits: ConnectionLimits,
    timer: Pin<Box<tokio::time::Sleep>>,
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "header-read or idle timeout")
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let at = deadline(phase_of(&this.phase).phase, &this.limits);
        if at.is_some_and(|at| Instant::now() >= at) {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let mut p = phase_of(&this.phase);
                if buf.filled().len() > before
                    && let Phase::Waiting { first: false, .. } = p.phase
                {
                    p.phase = Phase::Receiving { since: Instant::now() };
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some(at) = at else {
                    phase_of(&this.phase).waiting_reader = Some(cx.waker().clone());
                    return Poll::Pending;
                };
                if this.timer.deadline() != at {
                    this.timer.as_mut().reset(at);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out())),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => ready,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

async fn http1<IO>(io: IO, peer: SocketAddr, router: Router, limits: ConnectionLimits)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = Phase::Waiting { since: Instant::now(), first: true };
    let phase: SharedPhase = Arc::new(Mutex::new(Shared { phase: first, waiting_reader: None }));
    let timer = Box::pin(tokio::time::sleep_until(Instant::now() + limits.header_read_timeout));
    let io = Watched { io, phase: phase.clone(), limits, timer };
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let answering = Answering::start(phase.clone());
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(Peer(peer)));
        let response = router.clone().oneshot(request);
        async move {
            let r = response.await;
            drop(answering);
            r
        }
    });
    // hyper's own header timer also runs while a kept-alive connection idles, so it cannot
    // tell the two apart: `Watched` keeps both deadlines instead.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_phase_of_a_connection() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ConnectionLimits::default()
        };
        let t = Instant::now();
        let at = |phase| deadline(phase, &limits);
        assert_eq!(at(Phase::Waiting { since: t, first: true }), Some(t + Duration::from_secs(10)));
        assert_eq!(at(Phase::Waiting { since: t, first: false }), Some(t + Duration::from_secs(60)));
        assert_eq!(at(Phase::Receiving { since: t }), Some(t + Duration::from_secs(10)));
        assert_eq!(at(Phase::Answering(1)), None);
    }
}

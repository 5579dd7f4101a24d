//! Every listener of the process (`serve`, `issuer`, the operator's metrics and health): one
//! accept loop with a connection limit, optional TLS, and hyper's HTTP/1 server with
//! header-read, idle and whole-request timeouts, so that idle or dripping clients cannot hold
//! connections or workers. On shutdown (`crate::shutdown`) it stops accepting, closes idle
//! connections and lets the requests it is answering finish, for at most the drain timeout.

mod tls;

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
    /// On SIGTERM or SIGINT: time the requests being answered have to finish once the listener
    /// stops accepting (then their connections are closed and the process exits).
    #[arg(long, env = "TESSERA_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Well inside the 30 s a kubelet waits between SIGTERM and SIGKILL by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
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
        Some(dir) => Some(tls::acceptor(dir).map_err(|e| error(e.to_string()))?),
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

    /// Serves `router` until the process is asked to shut down (`crate::shutdown`), then
    /// drains (see [`Bound::serve_until`]). Each request carries `ConnectInfo<Peer>`.
    pub async fn serve(self, router: Router) {
        self.serve_until(router, crate::shutdown::requested()).await;
    }

    /// Serves `router` until `stop` resolves. Then the listening socket closes at once (new
    /// connections are refused), idle and kept-alive connections close, and requests being
    /// answered finish (their connections close after the response) within the drain timeout;
    /// connections still open after it are closed.
    pub async fn serve_until(self, router: Router, stop: impl Future<Output = ()>) -> Drained {
        let Bound { tcp, tls, limits } = self;
        let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let (draining, drain_signal) = tokio::sync::watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            // Over the limit, connections wait in the accept queue instead of being served.
            let permit = tokio::select! {
                biased;
                () = &mut stop => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                biased;
                () = &mut stop => break,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (router, tls, drain_signal) = (router.clone(), tls.clone(), drain_signal.clone());
            connections.spawn(async move {
                serve_connection(stream, peer, tls, router, limits, drain_signal).await;
                drop(permit);
            });
            while connections.try_join_next().is_some() {}
        }
        let addr = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        drop(tcp);
        draining.send_replace(true);
        let (open, started) = (connections.len(), Instant::now());
        let finished =
            tokio::time::timeout(limits.drain_timeout, async { while connections.join_next().await.is_some() {} })
                .await;
        let drained = Drained { open, cut: connections.len(), took: started.elapsed() };
        connections.abort_all();
        if finished.is_ok() {
            tracing::info!(%addr, open, took_ms = drained.took.as_millis() as u64, "listener drained");
        } else {
            tracing::warn!(%addr, open, cut = drained.cut, "drain timeout: closed connections still answering");
        }
        drained
    }
}

/// What a listener's drain found and left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Connections open when the listener stopped accepting.
    pub open: usize,
    /// Those still answering at the drain timeout, closed unanswered.
    pub cut: usize,
    pub took: Duration,
}

/// `true` once the listener drains; its connections then finish what they answer and close.
type DrainSignal = tokio::sync::watch::Receiver<bool>;

async fn drain_started(signal: &mut DrainSignal) {
    // The listener dropping its end means it is gone: drain too.
    let _ = signal.wait_for(|draining| *draining).await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    mut drain: DrainSignal,
) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => http1(tcp, peer, router, limits, drain).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp));
            tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => http1(stream, peer, router, limits, drain).await,
                    _ => tracing::debug!(%peer, "TLS handshake failed or timed out"),
                },
                // Nothing was asked on this connection yet.
                () = drain_started(&mut drain) => {}
            }
        }
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

async fn http1<IO>(io: IO, peer: SocketAddr, router: Router, limits: ConnectionLimits, mut drain: DrainSignal)
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
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = drain_started(&mut drain) => {
            // hyper closes an idle connection at once, and one being answered after its response.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
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

    /// A router whose `/slow` answers once `release` is notified, telling `started` when it begins.
    fn slow_router(started: Arc<tokio::sync::Notify>, release: Arc<tokio::sync::Notify>) -> Router {
        let slow = move || {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                "done"
            }
        };
        Router::new().route("/slow", axum::routing::get(slow)).route("/fast", axum::routing::get(|| async { "fast" }))
    }

    async fn send(stream: &mut TcpStream, path: &str) {
        use tokio::io::AsyncWriteExt;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
    }

    /// Reads until the peer closes (or resets) the connection.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await.expect("never closed");
        String::from_utf8_lossy(&buf).into_owned()
    }

    async fn refused(addr: SocketAddr) -> bool {
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn on_stop_a_request_being_answered_gets_its_response_and_new_connections_are_refused() {
        use tokio::io::AsyncReadExt;
        let bound = bind("127.0.0.1:0".parse().unwrap(), None, ConnectionLimits::default()).await.unwrap();
        let addr = bound.local_addr().unwrap();
        let (started, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve_until(slow_router(started.clone(), release.clone()), async {
            let _ = stopped.await;
        }));

        let mut idle = TcpStream::connect(addr).await.unwrap();
        send(&mut idle, "/fast").await;
        let mut first = [0u8; 256];
        let n = idle.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).ends_with("fast"), "a kept-alive connection, now idle");
        let mut busy = TcpStream::connect(addr).await.unwrap();
        send(&mut busy, "/slow").await;
        started.notified().await;

        stop.send(()).unwrap();
        assert!(refused(addr).await, "the listener still accepts after the stop");
        assert_eq!(read_to_close(&mut idle).await, "", "an idle connection is closed at once");
        assert!(!server.is_finished(), "the drain waits for the request being answered");

        release.notify_one();
        let answer = read_to_close(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        let drained = tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
        assert_eq!((drained.open, drained.cut), (2, 0), "{drained:?}");
    }

    #[tokio::test]
    async fn a_request_still_answered_at_the_drain_timeout_is_cut() {
        let limits = ConnectionLimits { drain_timeout: Duration::from_millis(300), ..ConnectionLimits::default() };
        let bound = bind("127.0.0.1:0".parse().unwrap(), None, limits).await.unwrap();
        let addr = bound.local_addr().unwrap();
        let (started, never) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve_until(slow_router(started.clone(), never), async {
            let _ = stopped.await;
        }));
        let mut busy = TcpStream::connect(addr).await.unwrap();
        send(&mut busy, "/slow").await;
        started.notified().await;

        let asked = std::time::Instant::now();
        stop.send(()).unwrap();
        let drained = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
        assert_eq!((drained.open, drained.cut), (1, 1), "{drained:?}");
        assert!(asked.elapsed() >= Duration::from_millis(300), "cut before the drain timeout");
        assert_eq!(read_to_close(&mut busy).await, "", "the cut request gets no answer");
    }
}

//! HTTP/1.1 load generator for `benches/run`: a single-threaded process (pin it with
//! `taskset`) that drives one URL over N keep-alive connections, either as fast as the
//! server answers (closed loop) or at a fixed total rate (open loop, wrk2-style: latency is
//! measured from the time a request was due, so a stalled server cannot hide its queue).
//! With `--new-conn-per-request` every request opens (and, for https, handshakes) its own
//! connection. `--spin` keeps the load generator's thread busy-polling its sockets instead of
//! sleeping in the kernel between answers (it owns its core anyway); it then also reports how
//! long its own loop was held up (`paused_ms`, `longest_pause_ms`: gaps over 0.5 ms between two
//! turns of the loop, when its thread did not run). Without it, an open loop sleeps in the kernel
//! until each request is due (a timerfd, to the microsecond). Prints one JSON line.
//! `longest_answer_ms` is the longest wait for one answer from the write of its request.
//! `--trace FILE` writes every answered request (connection, due µs, sent µs, latency µs after
//! the start, whose CLOCK_MONOTONIC time is the first line) to tell a late sender from a late
//! answer.
//!
//! Not a test: run by `benches/run`, e.g.
//! `loadgen --url http://127.0.0.1:8080/p/v1/token --method POST --header 'Authorization: Basic ..'
//!  --body 'grant_type=client_credentials' --connections 16 --seconds 5 [--rate 20000]`.
//!
//! `--flow code|refresh` drives a person's sign-in instead (closed loop, keep-alive, `--url`
//! is the issuer): once, a browser signs in (authorize, login page, password); then each
//! connection loops. `code`: one `/v1/authorize` with the session cookie (answered at once
//! with a 303 carrying a code) and one authorization_code token request (PKCE) is one
//! operation. `refresh`: each connection redeems one code, then presents its current refresh
//! token again and again (each use rotates it). Counts and latencies are per operation.
//! `loadgen --flow code --url http://127.0.0.1:8080/oauth2/payments --client-id team-orders.example-spa
//!  --redirect-uri http://127.0.0.1:8400/callback --scope 'openid offline_access payments:read'
//!  --user alice --password alice-password`.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create, timerfd_settime,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

const USAGE: &str = "usage: loadgen --url URL [--method GET|POST] [--header 'K: V']... [--body STR] \
[--connections N] [--seconds S] [--rate REQ_PER_S] [--max-requests N] [--new-conn-per-request] [--spin] [--ca PEM] \
[--trace FILE] \
[--flow code|refresh --client-id ID --redirect-uri URI --scope S --user U --password P]";

/// The PKCE verifier of every flow request (a load generator needs no secrecy).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlowKind {
    Code,
    Refresh,
}

/// A person's sign-in flow to drive (`--flow`).
struct Flow {
    kind: FlowKind,
    authority: String,
    /// The issuer's path, e.g. `/oauth2/payments`.
    base: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    user: String,
    password: String,
}

#[derive(Clone)]
struct Options {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    request: Arc<Vec<u8>>,
    connections: usize,
    seconds: f64,
    rate: Option<f64>,
    max_requests: u64,
    new_conn_per_request: bool,
    /// Never sleep in the kernel while waiting for answers (see `--spin`).
    spin: bool,
    /// Where to write one line per answered request (`--trace`).
    trace: Option<String>,
    flow: Option<Arc<Flow>>,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
    /// The longest wait for one answer, from the write of its request (not from when it was due).
    longest_answer: Duration,
    /// With `--trace`: (connection, due µs, sent µs, latency µs) of every answered request.
    trace: Vec<(usize, u64, u64, u32)>,
}

fn parse_args() -> Result<Option<Options>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--url") {
        // Run with no arguments (for example by `cargo test --all-targets`): nothing to do.
        println!("{USAGE}");
        return Ok(None);
    }
    let (mut url, mut method, mut headers, mut body) = (String::new(), "GET".to_owned(), Vec::new(), String::new());
    let (mut connections, mut seconds, mut rate, mut max_requests) = (16usize, 5.0f64, None, u64::MAX);
    let (mut new_conn, mut ca, mut spin, mut trace) = (false, None::<String>, false, None);
    let (mut flow, mut client_id, mut redirect_uri, mut scope) = (None, String::new(), String::new(), String::new());
    let (mut user, mut password) = (String::new(), String::new());
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = value()?,
            "--method" => method = value()?,
            "--header" => headers.push(value()?),
            "--body" => body = value()?,
            "--connections" => connections = value()?.parse().map_err(|e| format!("--connections: {e}"))?,
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--rate" => rate = Some(value()?.parse().map_err(|e| format!("--rate: {e}"))?),
            "--max-requests" => max_requests = value()?.parse().map_err(|e| format!("--max-requests: {e}"))?,
            "--ca" => ca = Some(value()?),
            "--new-conn-per-request" => new_conn = true,
            "--spin" => spin = true,
            "--trace" => trace = Some(value()?),
            "--flow" => {
                flow = Some(match value()?.as_str() {
                    "code" => FlowKind::Code,
                    "refresh" => FlowKind::Refresh,
                    other => return Err(format!("--flow {other}: code or refresh")),
                })
            }
            "--client-id" => client_id = value()?,
            "--redirect-uri" => redirect_uri = value()?,
            "--scope" => scope = value()?,
            "--user" => user = value()?,
            "--password" => password = value()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("--url must start with http:// or https://".into());
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr: SocketAddr = authority.parse().map_err(|e| format!("{authority}: {e} (use IP:PORT)"))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: tessera-loadgen\r\n");
    for h in &headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if new_conn {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req.push_str(&body);
    if rate.is_some_and(|r: f64| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number".into());
    }
    let tls = if https {
        let mut roots = rustls::RootCertStore::empty();
        let ca = ca.ok_or("https needs --ca PEM")?;
        for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| format!("{ca}: {e}"))? {
            roots.add(cert.map_err(|e| format!("{ca}: {e}"))?).map_err(|e| format!("{ca}: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(Arc::new(config))
    } else {
        None
    };
    let flow = match flow {
        None => None,
        Some(kind) => {
            if https || new_conn || rate.is_some() {
                return Err("--flow runs closed loop over keep-alive http connections".into());
            }
            if [&client_id, &redirect_uri, &user, &password].iter().any(|v| v.is_empty()) {
                return Err(format!("--flow needs --client-id, --redirect-uri, --user and --password\n{USAGE}"));
            }
            let base = path.trim_end_matches('/').to_owned();
            let authority = authority.to_owned();
            Some(Arc::new(Flow { kind, authority, base, client_id, redirect_uri, scope, user, password }))
        }
    };
    Ok(Some(Options {
        addr,
        tls,
        request: Arc::new(req.into_bytes()),
        connections: connections.max(1),
        seconds,
        rate,
        max_requests,
        new_conn_per_request: new_conn,
        spin,
        trace,
        flow,
    }))
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(o: &Options) -> std::io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(o.addr).await?;
    tcp.set_nodelay(true)?;
    match &o.tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let name = ServerName::IpAddress(o.addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await?;
            Ok(Box::new(tls))
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request and reads one response; returns the status code.
async fn exchange(stream: &mut Box<dyn Stream>, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-response");
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    loop {
        let body = &buf[head_end..];
        let complete = match length {
            Some(n) => body.len() >= n,
            None if chunked => find(body, b"0\r\n\r\n").is_some_and(|i| i == 0 || body[..i].ends_with(b"\r\n")),
            None => true,
        };
        if complete {
            return Ok(status);
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(o: Options, index: usize, start: Instant, quota: u64) -> Tally {
    let mut tally = Tally::default();
    let end = start + Duration::from_secs_f64(o.seconds);
    // Open loop: this connection's share of the rate, staggered so connections do not fire together.
    let interval = o.rate.map(|r| Duration::from_secs_f64(o.connections as f64 / r));
    let mut due = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(index as f64 / o.connections as f64));
    let mut stream: Option<Box<dyn Stream>> = None;
    let mut buf = Vec::with_capacity(16384);
    let pacer = (interval.is_some() && !o.spin).then(|| Pacer::new().unwrap_or_else(|e| Pacer::failed(e)));
    let mut sent = 0u64;
    while sent < quota {
        if interval.is_some() {
            if due >= end {
                break;
            }
            // Sends at the due microsecond: tokio's timers tick in whole milliseconds, which
            // would bunch an open loop's requests into bursts and add up to 1 ms of wait.
            if let Some(pacer) = &pacer {
                pacer.until(due).await.unwrap_or_else(|e| Pacer::failed(e));
            } else {
                while Instant::now() < due {
                    tokio::task::yield_now().await;
                }
            }
        } else if Instant::now() >= end {
            break;
        }
        let began = if interval.is_some() { due } else { Instant::now() };
        let sent_at = Instant::now();
        sent += 1;
        let result = async {
            if stream.is_none() {
                stream = Some(connect(&o).await?);
            }
            let s = stream.as_mut().ok_or_else(|| std::io::Error::other("no stream"))?;
            exchange(s, &o.request, &mut buf).await
        }
        .await;
        let elapsed = began.elapsed();
        match result {
            Ok(200) => {
                tally.ok += 1;
                let micros = elapsed.as_micros().min(u32::MAX as u128) as u32;
                tally.latencies_us.push(micros);
                tally.longest_answer = tally.longest_answer.max(sent_at.elapsed());
                if o.trace.is_some() {
                    let after_start = |t: Instant| t.duration_since(start).as_micros() as u64;
                    tally.trace.push((index, after_start(began), after_start(sent_at), micros));
                }
            }
            Ok(status) => {
                tally.failed += 1;
                tally.first_error.get_or_insert_with(|| {
                    format!("HTTP {status}: {}", String::from_utf8_lossy(&buf[..buf.len().min(400)]))
                });
            }
            Err(e) => {
                tally.failed += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                stream = None;
            }
        }
        if o.new_conn_per_request {
            stream = None;
        }
        if let Some(i) = interval {
            due += i;
        }
    }
    tally
}

/// Sleeps in the kernel until an open loop's due time, to the microsecond: a timerfd (a
/// high-resolution timer) wakes the runtime's epoll_wait. Without `--spin` the load generator
/// then uses only the CPU its requests need, leaving the rest of its core idle.
struct Pacer(AsyncFd<OwnedFd>);

impl Pacer {
    fn new() -> std::io::Result<Pacer> {
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        // SAFETY: the AsyncFd owns the descriptor (an OwnedFd) for all of its life, and an
        // OwnedFd's raw descriptor never changes.
        Ok(Pacer(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?))
    }

    /// A timer that cannot be set ends the run: a phase without its pacing would measure nothing.
    fn failed(e: std::io::Error) -> ! {
        eprintln!("loadgen: timerfd: {e}");
        std::process::exit(1);
    }

    async fn until(&self, due: Instant) -> std::io::Result<()> {
        let wait = due.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        let at = Timespec { tv_sec: wait.as_secs() as _, tv_nsec: wait.subsec_nanos() as _ };
        timerfd_settime(self.0.get_ref(), TimerfdTimerFlags::empty(), &Itimerspec { it_interval: zero, it_value: at })?;
        loop {
            let mut ready = self.0.readable().await?;
            // The expiry count; a read before the timer fired says WouldBlock and clears the
            // readiness left over from the last expiry.
            let mut expirations = [0u8; 8];
            if let Ok(read) = ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
                return read.map(|_| ());
            }
        }
    }
}

/// One HTTP/1.1 response, parsed from what `exchange` left in its buffer.
struct Response {
    status: u16,
    location: Option<String>,
    cookies: Vec<String>,
    body: String,
}

fn parse_response(status: u16, buf: &[u8]) -> Response {
    let head_end = find(buf, b"\r\n\r\n").map_or(buf.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut r = Response { status, location: None, cookies: Vec::new(), body: String::new() };
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("location") {
            r.location = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("set-cookie") {
            r.cookies.push(value.split(';').next().unwrap_or_default().to_owned());
        }
    }
    r.body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    r
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Query parameter `name` of `url`.
fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The value of hidden input `name` of a page.
fn hidden(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    body[start..].split('"').next().map(str::to_owned)
}

/// String field `name` of a JSON body.
fn json_field(body: &str, name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get(name)?.as_str().map(str::to_owned)
}

/// One browser or app on one keep-alive connection, speaking to the issuer of `flow`.
struct Client {
    o: Options,
    flow: Arc<Flow>,
    stream: Option<Box<dyn Stream>>,
    buf: Vec<u8>,
    cookies: Vec<String>,
    authorize_path: String,
}

impl Client {
    fn new(o: &Options, cookies: Vec<String>) -> Option<Client> {
        let flow = o.flow.clone()?;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, VERIFIER.as_bytes()));
        let q = form(&[
            ("response_type", "code"),
            ("client_id", &flow.client_id),
            ("redirect_uri", &flow.redirect_uri),
            ("scope", &flow.scope),
            ("state", "bench"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let authorize_path = format!("{}/v1/authorize?{q}", flow.base);
        Some(Client { o: o.clone(), flow, stream: None, buf: Vec::with_capacity(16384), cookies, authorize_path })
    }

    /// Sends a GET (no body) or a form POST to `path` (or to an absolute URL of the issuer).
    async fn send(&mut self, path: &str, body: Option<&str>) -> std::io::Result<Response> {
        let path = path.strip_prefix(&format!("http://{}", self.flow.authority)).unwrap_or(path);
        let mut req = format!(
            "{} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tessera-loadgen\r\n",
            if body.is_some() { "POST" } else { "GET" },
            self.flow.authority
        );
        if !self.cookies.is_empty() {
            req.push_str(&format!("Cookie: {}\r\n", self.cookies.join("; ")));
        }
        if let Some(b) = body {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
        } else {
            req.push_str("\r\n");
        }
        if self.stream.is_none() {
            self.stream = Some(connect(&self.o).await?);
        }
        let s = self.stream.as_mut().ok_or_else(|| std::io::Error::other("no stream"))?;
        let status = match exchange(s, req.as_bytes(), &mut self.buf).await {
            Ok(s) => s,
            Err(e) => {
                self.stream = None;
                return Err(e);
            }
        };
        let r = parse_response(status, &self.buf);
        for c in &r.cookies {
            let name = c.split('=').next().unwrap_or_default();
            self.cookies.retain(|k| k.split('=').next() != Some(name));
            if !c.ends_with('=') {
                self.cookies.push(c.clone());
            }
        }
        Ok(r)
    }

    fn failed(what: &str, r: &Response) -> std::io::Error {
        let error = json_field(&r.body, "error").unwrap_or_default();
        std::io::Error::other(format!("{what}: HTTP {} {error}", r.status))
    }

    /// Signs the person in (the login page, then the password) and returns the first code.
    async fn sign_in(&mut self) -> std::io::Result<String> {
        let path = self.authorize_path.clone();
        let start = self.send(&path, None).await?;
        let login = match &start.location {
            Some(l) if start.status == 303 => l.clone(),
            _ => return Err(Self::failed("authorize", &start)),
        };
        let page = self.send(&login, None).await?;
        let field = |name| hidden(&page.body, name).ok_or_else(|| Self::failed("login page", &page));
        let (request, csrf) = (field("request")?, field("csrf")?);
        let f = self.flow.clone();
        let body = form(&[("request", &request), ("csrf", &csrf), ("username", &f.user), ("password", &f.password)]);
        let done = self.send(&format!("{}/v1/login", f.base), Some(&body)).await?;
        done.location.as_deref().and_then(|l| query_param(l, "code")).ok_or_else(|| Self::failed("login", &done))
    }

    /// A code for the signed-in person: `/v1/authorize` answers it at once.
    async fn code(&mut self) -> std::io::Result<String> {
        let path = self.authorize_path.clone();
        let r = self.send(&path, None).await?;
        r.location.as_deref().and_then(|l| query_param(l, "code")).ok_or_else(|| Self::failed("authorize", &r))
    }

    /// Redeems `code`; returns the refresh token, if any.
    async fn redeem(&mut self, code: &str) -> std::io::Result<Option<String>> {
        let f = self.flow.clone();
        let body = form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &f.client_id),
            ("code", code),
            ("redirect_uri", &f.redirect_uri),
            ("code_verifier", VERIFIER),
        ]);
        let r = self.send(&format!("{}/v1/token", f.base), Some(&body)).await?;
        if r.status != 200 {
            return Err(Self::failed("token (authorization_code)", &r));
        }
        Ok(json_field(&r.body, "refresh_token"))
    }

    /// Presents `token`; returns the rotated refresh token.
    async fn refresh(&mut self, token: &str) -> std::io::Result<String> {
        let f = self.flow.clone();
        let body = form(&[("grant_type", "refresh_token"), ("client_id", &f.client_id), ("refresh_token", token)]);
        let r = self.send(&format!("{}/v1/token", f.base), Some(&body)).await?;
        match json_field(&r.body, "refresh_token") {
            Some(next) if r.status == 200 => Ok(next),
            _ => Err(Self::failed("token (refresh_token)", &r)),
        }
    }
}

/// One connection of a flow: operations back to back until the time or the quota is up.
async fn flow_connection(o: Options, cookies: Vec<String>, start: Instant, quota: u64) -> Tally {
    let mut tally = Tally::default();
    let end = start + Duration::from_secs_f64(o.seconds);
    let Some(mut client) = Client::new(&o, cookies) else { return tally };
    let kind = client.flow.kind;
    // Refresh: this connection's own family.
    let mut refresh = None;
    let mut sent = 0u64;
    while sent < quota && Instant::now() < end {
        let began = Instant::now();
        sent += 1;
        let result = match (kind, refresh.take()) {
            (FlowKind::Code, _) => async {
                let code = client.code().await?;
                client.redeem(&code).await.map(|_| None)
            }
            .await
            .map(|_: Option<String>| true),
            (FlowKind::Refresh, None) => async {
                let code = client.code().await?;
                client.redeem(&code).await?.ok_or_else(|| std::io::Error::other("no refresh token (offline_access?)"))
            }
            .await
            .map(|t| {
                refresh = Some(t);
                false
            }),
            (FlowKind::Refresh, Some(t)) => client.refresh(&t).await.map(|next| {
                refresh = Some(next);
                true
            }),
        };
        match result {
            Ok(counted) => {
                if counted {
                    tally.ok += 1;
                    tally.latencies_us.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                } else {
                    sent -= 1;
                }
            }
            Err(e) => {
                tally.failed += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    tally
}

/// Gaps over 0.5 ms between two turns of the `--spin` loop.
#[derive(Clone, Copy, Default)]
struct Pauses {
    total: Duration,
    longest: Duration,
}

impl Pauses {
    fn add(&mut self, gap: Duration) {
        if gap > Duration::from_micros(500) {
            self.total += gap;
            self.longest = self.longest.max(gap);
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let options = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    };
    let (tally, seconds, start, pauses) = rt.block_on(async {
        // A flow signs its person in once; every connection then uses that session.
        let mut cookies = Vec::new();
        if let Some(mut client) = Client::new(&options, Vec::new()) {
            match client.sign_in().await.and(Ok(client.cookies)) {
                Ok(c) => cookies = c,
                Err(e) => {
                    eprintln!("loadgen: sign-in failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = options.spin.then(|| {
            // Keeps this thread runnable: the runtime then polls its sockets without blocking
            // and the load generator never sleeps in epoll_wait, so the server's answer does not
            // have to wake it (on a VM a cross-core wake-up is an IPI, costing the *server*
            // ~10 µs of CPU inside its write; see BENCHMARKS.md). Its turns come microseconds
            // apart, so a longer gap means the thread was held up: it sums those over 0.5 ms.
            let done = done.clone();
            tokio::spawn(async move {
                let mut pauses = Pauses::default();
                let mut last = Instant::now();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                    let now = Instant::now();
                    pauses.add(now - last);
                    last = now;
                }
                pauses
            })
        });
        let start = Instant::now();
        let quota = options.max_requests.div_ceil(options.connections as u64);
        let tasks: Vec<_> = (0..options.connections)
            .map(|i| {
                if options.flow.is_some() {
                    tokio::spawn(flow_connection(options.clone(), cookies.clone(), start, quota))
                } else {
                    tokio::spawn(connection(options.clone(), i, start, quota))
                }
            })
            .collect();
        let mut all = Tally::default();
        for t in tasks {
            if let Ok(t) = t.await {
                all.ok += t.ok;
                all.failed += t.failed;
                all.latencies_us.extend(t.latencies_us);
                all.trace.extend(t.trace);
                all.longest_answer = all.longest_answer.max(t.longest_answer);
                if all.first_error.is_none() {
                    all.first_error = t.first_error;
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let pauses = match spinner {
            Some(s) => s.await.ok(),
            None => None,
        };
        (all, seconds, start, pauses)
    });
    if let Some(path) = &options.trace {
        let mut rows = tally.trace;
        rows.sort_unstable_by_key(|r| r.1);
        // `Instant`'s Debug form is its CLOCK_MONOTONIC reading, the clock `perf -k` can use.
        let mut text = format!("# start {start:?}; connection due_us sent_us latency_us\n");
        for (c, due, sent, micros) in rows {
            text.push_str(&format!("{c} {due} {sent} {micros}\n"));
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("loadgen: --trace {path}: {e}");
            std::process::exit(1);
        }
    }
    let mut lat = tally.latencies_us;
    lat.sort_unstable();
    let report = serde_json::json!({
        "ok": tally.ok,
        "failed": tally.failed,
        "seconds": seconds,
        "rps": tally.ok as f64 / seconds,
        "p50_ms": percentile(&lat, 0.50),
        "p90_ms": percentile(&lat, 0.90),
        "p99_ms": percentile(&lat, 0.99),
        "max_ms": percentile(&lat, 1.0),
        "longest_answer_ms": tally.longest_answer.as_secs_f64() * 1e3,
        "paused_ms": pauses.map(|p| p.total.as_secs_f64() * 1e3),
        "longest_pause_ms": pauses.map(|p| p.longest.as_secs_f64() * 1e3),
        "first_error": tally.first_error,
    });
    println!("{report}");
}

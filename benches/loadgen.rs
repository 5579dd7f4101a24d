//! HTTP/1.1 load generator for `benches/run`: a single-threaded process (pin it with
//! `taskset`) that drives one URL over N keep-alive connections, either as fast as the
//! server answers (closed loop) or at a fixed total rate (open loop, wrk2-style: latency is
//! measured from the time a request was due, so a stalled server cannot hide its queue).
//! With `--new-conn-per-request` every request opens (and, for https, handshakes) its own
//! connection. Prints one JSON line.
//!
//! Not a test: run by `benches/run`, e.g.
//! `loadgen --url http://127.0.0.1:8080/p/v1/token --method POST --header 'Authorization: Basic ..'
//!  --body 'grant_type=client_credentials' --connections 16 --seconds 5 [--rate 20000]`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str = "usage: loadgen --url URL [--method GET|POST] [--header 'K: V']... [--body STR] \
[--connections N] [--seconds S] [--rate REQ_PER_S] [--max-requests N] [--new-conn-per-request] [--ca PEM]";

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
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
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
    let (mut new_conn, mut ca) = (false, None::<String>);
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
    Ok(Some(Options {
        addr,
        tls,
        request: Arc::new(req.into_bytes()),
        connections: connections.max(1),
        seconds,
        rate,
        max_requests,
        new_conn_per_request: new_conn,
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
    let mut sent = 0u64;
    while sent < quota {
        if interval.is_some() {
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        } else if Instant::now() >= end {
            break;
        }
        let began = if interval.is_some() { due } else { Instant::now() };
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
                tally.latencies_us.push(elapsed.as_micros().min(u32::MAX as u128) as u32);
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
    let (tally, seconds) = rt.block_on(async {
        let start = Instant::now();
        let quota = options.max_requests.div_ceil(options.connections as u64);
        let tasks: Vec<_> =
            (0..options.connections).map(|i| tokio::spawn(connection(options.clone(), i, start, quota))).collect();
        let mut all = Tally::default();
        for t in tasks {
            if let Ok(t) = t.await {
                all.ok += t.ok;
                all.failed += t.failed;
                all.latencies_us.extend(t.latencies_us);
                if all.first_error.is_none() {
                    all.first_error = t.first_error;
                }
            }
        }
        (all, start.elapsed().as_secs_f64())
    });
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
        "first_error": tally.first_error,
    });
    println!("{report}");
}

//! Item 7 of issue 17: a tenant's `jwksUri` pointing at a hostile server. Against `tessera
//! serve`, with hostile JWKS servers on loopback: one streams gigabytes, one drips, one
//! redirects, one fails. And the outbound allow-list, which `config::compile` enforces.

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a hostile server does after reading a request.
#[derive(Clone, Copy)]
enum Hostile {
    /// 200, then JSON-looking bytes without end (up to 1 GiB), no Content-Length.
    Huge,
    /// 200 with a Content-Length under the cap, then one byte every 500 ms.
    Drip,
    /// 302 to `target`.
    Redirect { target: u16 },
    /// 500.
    Fail,
    /// 200 with an empty JWKS: the redirect target, counting hits.
    Target,
}

struct HostileServer {
    port: u16,
    requests: Arc<AtomicU64>,
    bytes_sent: Arc<AtomicU64>,
}

async fn hostile(kind: Hostile) -> HostileServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicU64::new(0));
    let bytes_sent = Arc::new(AtomicU64::new(0));
    let (r, b) = (requests.clone(), bytes_sent.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let (r, b) = (r.clone(), b.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if sock.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                r.fetch_add(1, SeqCst);
                match kind {
                    Hostile::Huge => {
                        let head =
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"keys\":[";
                        if sock.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = vec![b' '; 64 * 1024];
                        for _ in 0..(1u64 << 30) / chunk.len() as u64 {
                            if sock.write_all(&chunk).await.is_err() {
                                return;
                            }
                            b.fetch_add(chunk.len() as u64, SeqCst);
                        }
                    }
                    Hostile::Drip => {
                        let head =
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200000\r\n\r\n";
                        if sock.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        loop {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            if sock.write_all(b" ").await.is_err() {
                                return;
                            }
                        }
                    }
                    Hostile::Redirect { target } => {
                        let head = format!(
                            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{target}/jwks\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                    }
                    Hostile::Fail => {
                        let head =
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                        let _ = sock.write_all(head.as_bytes()).await;
                    }
                    Hostile::Target => {
                        let body = r#"{"keys":[]}"#;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                    }
                }
            });
        }
    });
    HostileServer { port, requests, bytes_sent }
}

struct Serve {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn token_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/oauth2/payments/v1/token", self.port)
    }

    /// Peak resident memory of the serve process (`VmHWM`), in KiB.
    fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn server_yaml(port: u16, prefixes: &[String], internal: bool) -> String {
    format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: identity }}
spec:
  issuer: http://127.0.0.1:{port}/oauth2/payments
  audiences: [api://payments]
  signing: {{ algorithm: ES256 }}
  outbound:
    allowedUrlPrefixes: {prefixes}
    allowInternalAddresses: {internal}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: read, namespace: identity }}
spec: {{ serverRef: {{ name: payments }}, name: payments:read, default: true }}
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: machines, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules: [ {{ name: m2m, grantTypes: [client_credentials], scopes: [payments:read] }} ]
"#,
        prefixes = serde_json::to_string(prefixes).unwrap(),
    )
}

fn client_yaml(name: &str, jwks_uri: &str) -> String {
    format!(
        r#"
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: {name}, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  grantTypes: [client_credentials]
  authentication: {{ method: PrivateKeyJwt, jwksUri: "{jwks_uri}" }}
"#
    )
}

fn start_serve(port: u16, yaml: &str) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.yaml"), yaml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "-f"])
        .arg(dir.path().join("server.yaml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start tessera serve");
    let serve = Serve { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tessera serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    serve
}

/// A well-formed private_key_jwt assertion for `client_id` (signed by a key nobody published).
fn assertion(client_id: &str, audience: &str, jti: &str) -> String {
    let now = jiff::Timestamp::now();
    let key = tessera::keys::generate(tessera::api::SigningAlgorithm::ES256, now, now).unwrap();
    let keys = tessera::keys::ActiveKeys::new(&tessera::keys::KeySet { keys: vec![key] }).unwrap();
    let t = now.as_second();
    let claims = json!({ "iss": client_id, "sub": client_id, "aud": audience, "exp": t + 60, "iat": t, "jti": jti });
    keys.sign_access_token(now, &claims).unwrap().0
}

async fn token_request(serve: &Serve, client_id: &str, jti: &str) -> (u16, Value, Duration) {
    let form = [
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", client_id.to_owned()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()),
        ("client_assertion", assertion(client_id, &serve.token_endpoint(), jti)),
    ];
    let started = Instant::now();
    let resp = reqwest::Client::new().post(serve.token_endpoint()).form(&form).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_jwks_servers_cannot_exhaust_memory_stall_token_requests_or_be_hammered() {
    let huge = hostile(Hostile::Huge).await;
    let drip = hostile(Hostile::Drip).await;
    let target = hostile(Hostile::Target).await;
    let redirect = hostile(Hostile::Redirect { target: target.port }).await;
    let fail = hostile(Hostile::Fail).await;
    let port = free_port();
    let servers = [("huge", &huge), ("drip", &drip), ("redirect", &redirect), ("fail", &fail)];
    let prefixes: Vec<String> = servers.iter().map(|(_, s)| format!("http://127.0.0.1:{}/", s.port)).collect();
    let mut yaml = server_yaml(port, &prefixes, true);
    for (name, s) in &servers {
        yaml.push_str(&client_yaml(name, &format!("http://127.0.0.1:{}/jwks", s.port)));
    }
    let serve = start_serve(port, &yaml);

    // Loading the config fetches every jwksUri once, in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    while servers.iter().any(|(_, s)| s.requests.load(SeqCst) == 0) {
        assert!(Instant::now() < deadline, "the jwksUris were not fetched when the config loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let request_all = |name: &'static str| {
        let serve = &serve;
        async move {
            for i in 0..5 {
                let (status, body, took) =
                    token_request(serve, &format!("identity.{name}"), &format!("{name}-{i}")).await;
                assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{name}: {body}");
                // The token path waits on a fetch at most 1 s; the drip would hold it 10 s.
                assert!(took < Duration::from_secs(5), "{name}: the token request took {took:?}");
                if i == 0 {
                    eprintln!("{name}: invalid_client after {took:?}");
                }
            }
        }
    };
    for name in ["huge", "redirect", "fail"] {
        request_all(name).await;
    }
    // A failing URL is fetched once, not once per request (backoff: 5 s, doubling).
    assert_eq!(fail.requests.load(SeqCst), 1, "the failing jwksUri was fetched on every request");
    assert_eq!(redirect.requests.load(SeqCst), 1, "the redirecting jwksUri was fetched on every request");
    assert_eq!(huge.requests.load(SeqCst), 1, "the huge jwksUri was fetched on every request");
    // A redirect is not followed.
    assert_eq!(target.requests.load(SeqCst), 0, "the redirect was followed");
    // The slow server's fetch (begun when the config loaded) is shared, not repeated.
    request_all("drip").await;
    assert_eq!(drip.requests.load(SeqCst), 1, "the dripping jwksUri was fetched again while a fetch ran");

    // The 1 GiB body was cut off right after the 256 KiB cap (plus what socket buffers took).
    let sent = huge.bytes_sent.load(SeqCst);
    let hwm = serve.vm_hwm_kib();
    eprintln!("huge JWKS server sent {sent} bytes; serve VmHWM {hwm} KiB");
    assert!(sent < 64 << 20, "the huge JWKS server could send {sent} bytes");
    assert!(hwm < 128 * 1024, "serve peaked at {hwm} KiB of resident memory");
}

fn compiled(yaml: &str) -> tessera::config::Compiled {
    let mut m = tessera::standalone::Manifests::default();
    tessera::standalone::manifests::add_documents(&mut m, Path::new("test.yaml"), yaml).unwrap();
    tessera::standalone::compile_all(&m, None).unwrap().remove(0)
}

#[test]
fn a_jwks_uri_outside_the_servers_allow_list_is_refused_at_compile() {
    let mut yaml = server_yaml(8080, &["https://keys.example.com/team-a/".to_owned()], false);
    yaml.push_str(&client_yaml("listed", "https://keys.example.com/team-a/jwks.json"));
    yaml.push_str(&client_yaml("unlisted", "https://keys.example.com/team-b/jwks.json"));
    yaml.push_str(&client_yaml("metadata", "https://169.254.169.254/latest/meta-data/iam"));
    yaml.push_str(&client_yaml("loopback", "http://127.0.0.1:9999/jwks"));
    let c = compiled(&yaml);
    let ids: Vec<&str> = c.config.clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, ["identity.listed"]);
    let mut refused: Vec<(&str, &str)> = c.rejected.iter().map(|r| (r.name.as_str(), r.reason.as_str())).collect();
    refused.sort();
    assert_eq!(
        refused,
        [("loopback", "JwksUriNotAllowed"), ("metadata", "JwksUriNotAllowed"), ("unlisted", "JwksUriNotAllowed")]
    );
    let unlisted = c.rejected.iter().find(|r| r.name == "unlisted").unwrap();
    assert!(unlisted.message.contains("spec.outbound.allowedUrlPrefixes"), "{}", unlisted.message);

    // Without spec.outbound nothing is allowed, and a listed internal address still needs
    // allowInternalAddresses.
    let mut yaml = server_yaml(8080, &[], false)
        .replace("  outbound:\n    allowedUrlPrefixes: []\n    allowInternalAddresses: false\n", "");
    yaml.push_str(&client_yaml("any", "https://keys.example.com/jwks.json"));
    assert_eq!(compiled(&yaml).rejected[0].reason, "JwksUriNotAllowed");
    let mut yaml = server_yaml(8080, &["http://127.0.0.1:9999/".to_owned()], false);
    yaml.push_str(&client_yaml("loopback", "http://127.0.0.1:9999/jwks"));
    let why = &compiled(&yaml).rejected[0].message;
    assert!(why.contains("allowInternalAddresses"), "{why}");
}

//! Unauthenticated state and connections against `tessera serve`: the fields of a pending
//! sign-in are bounded in size, one source cannot start sign-ins without end (item 8), and
//! idle, dripping and surplus connections cannot hold the listener (item 10). Timeouts are set
//! short by flags so that each test takes seconds; no speed is asserted beyond generous bounds.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::serve::{Serve, free_port, issuer_at, start};
use reqwest::StatusCode;

const WEB_REDIRECT: &str = "https://web.example.com/cb";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// `tessera serve` of one server with a confidential web client and a static user, with `flags`.
fn serve(flags: &[&str]) -> Serve {
    let port = free_port();
    let issuer = issuer_at(port);
    let yaml = format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: identity }}
spec:
  issuer: {issuer}
  audiences: [api://payments]
  signing: {{ algorithm: ES256 }}
  identity: {{ staticUsers: {{ secretName: people }} }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: people, namespace: identity }}
stringData:
  users.yaml: |
    - username: alice
      passwordHash: "$2b$04$QDAKOYeNMlgBxNWx/uxC1uCTzzZLGKpkmS774QuRolfGAZu3rqCAC"
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: all, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules:
    - {{ name: people, grantTypes: [authorization_code], scopes: [openid], users: {{ everyone: true }} }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: web, namespace: identity }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [authorization_code]
  authentication: {{ method: ClientSecretBasic }}
  redirectUris: [{WEB_REDIRECT}]
---
apiVersion: v1
kind: Secret
metadata: {{ name: web-oauth, namespace: identity }}
stringData: {{ client_secret: web-secret }}
"#
    );
    start(port, &yaml, flags)
}

fn from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `/v1/authorize` of the web client with `extra` parameters: status, Location and body.
async fn authorize(s: &Serve, http: &reqwest::Client, extra: &[(&str, &str)]) -> (StatusCode, String, String) {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", "identity.web"),
        ("redirect_uri", WEB_REDIRECT),
        ("scope", "openid"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let r = http.get(format!("{}/v1/authorize?{query}", s.issuer)).send().await.unwrap();
    let status = r.status();
    let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

// --- item 8 ---

#[tokio::test]
async fn oversize_sign_in_fields_are_refused_with_invalid_request() {
    let s = serve(&[]);
    let http = from("127.0.0.1");
    let (status, _, body) = authorize(&s, &http, &[("state", &"s".repeat(60_000))]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a 60 KB state was accepted: {body}");
    assert!(body.contains("state is longer than 2048 bytes"), "{body}");
    let (status, location, _) = authorize(&s, &http, &[("state", "ok"), ("nonce", &"n".repeat(5_000))]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with(WEB_REDIRECT) && location.contains("error=invalid_request"), "{location}");
    assert!(location.contains("state=ok"), "{location}");
    // Within the limits the sign-in starts as before.
    let (status, location, _) = authorize(&s, &http, &[("state", &"s".repeat(2048))]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.contains("/v1/login?request="), "{location}");
}

#[tokio::test]
async fn one_source_cannot_start_sign_ins_without_end_while_another_still_can() {
    let s = serve(&[]);
    let attacker = from("127.0.0.2");
    let mut refused = 0;
    for _ in 0..80 {
        let (status, location, body) = authorize(&s, &attacker, &[("state", "x")]).await;
        match status {
            StatusCode::SEE_OTHER => assert!(location.contains("/v1/login?request="), "{location}"),
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("authorize answered {other}: {body}"),
        }
    }
    assert!(refused >= 15, "80 sign-ins from one source, only {refused} refused");
    let (status, location, _) = authorize(&s, &from("127.0.0.3"), &[("state", "x")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "another source was refused");
    assert!(location.contains("/v1/login?request="), "{location}");
}

// --- item 10 ---

/// Reads until the server closes the connection (or `within` passes); what it sent.
fn read_until_closed(c: &mut TcpStream, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(String::from_utf8_lossy(&got).into_owned()),
        }
    }
    None
}

#[test]
fn idle_and_dripping_connections_are_closed_and_slow_requests_time_out() {
    let s = serve(&["--header-read-timeout", "1s", "--idle-timeout", "3s", "--request-timeout", "2s"]);
    let connect = || TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    // Idle: never sends anything.
    let mut idle = connect();
    assert!(read_until_closed(&mut idle, Duration::from_secs(15)).is_some(), "an idle connection stayed open");
    // Dripping headers: one byte every 100 ms, never done.
    let mut drip = connect();
    let dripper = std::thread::spawn(move || {
        let _ = drip.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if drip.write_all(b"a").is_err() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    });
    assert!(dripper.join().unwrap().is_some(), "a connection dripping its headers was kept for 15 s");
    // Dripping a body: headers at once, then one byte every 100 ms: answered 408, not served.
    let mut slow = connect();
    let path = "/oauth2/payments/v1/token";
    write!(slow, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n").unwrap();
    let mut writer = slow.try_clone().unwrap();
    std::thread::spawn(move || {
        for _ in 0..150 {
            if writer.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let answer = read_until_closed(&mut slow, Duration::from_secs(15)).expect("a dripped request was kept for 15 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A kept-alive connection may idle longer than the header-read timeout between requests…
    let mut kept = connect();
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    std::thread::sleep(Duration::from_millis(1500));
    // …and is closed once it idles past the idle timeout.
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer =
        read_until_closed(&mut kept, Duration::from_secs(15)).expect("an idle kept-alive connection stayed open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn connections_over_the_limit_wait_until_one_is_free() {
    let s = serve(&["--max-connections", "3", "--header-read-timeout", "30s"]);
    let connect = || TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let held: Vec<TcpStream> = (0..3).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = connect();
    fourth.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    fourth.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    match fourth.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection over the limit was served: {other:?}"),
    }
    drop(held);
    let answer =
        read_until_closed(&mut fourth, Duration::from_secs(15)).expect("the queued connection was never served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

//! Whether a wrong password tells a known username from an unknown one by its timing: the
//! issuer in-process (no socket), `POST /v1/login` with a wrong password, alternating a known
//! user and an unknown name in one run, every sample from its own source address and name so
//! that no limit is hit. The users' hashes are the examples' argon2id (m = 19 MiB, t = 2).
//! Prints the two timings side by side and, as the noise to compare against, the same
//! difference between the two halves (odd and even rounds) of the known-user samples.
//!
//! `taskset -c 0 cargo run --release --example sign_in_timing -- [--rounds 200]`

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use tessera::api::SigningAlgorithm;
use tessera::issuer::{Issuer, IssuerOptions, Peer, Served};
use tessera::keys;
use tessera::standalone::{StateDir, compile_all, manifests};
use tessera::store::MemoryStore;
use tower::ServiceExt;

const ISSUER: &str = "http://127.0.0.1:9/oauth2/payments";
/// The examples' static user's hash (examples/15-people.yaml).
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$aPTe76ymSwcZVeLokosCKw$vl3PecimB/DrAxlBEx45mixuNTTPvC8YQW7slcN1w34";

fn manifests_for(users: usize) -> String {
    let list: String =
        (0..users).map(|n| format!("    - {{ username: user-{n}, passwordHash: \"{HASH}\" }}\n")).collect();
    format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: identity }}
spec:
  issuer: {ISSUER}
  audiences: [api://payments]
  signing: {{ algorithm: ES256 }}
  identity: {{ staticUsers: {{ secretName: people }} }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: people, namespace: identity }}
stringData:
  users.yaml: |
{list}---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: people, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules:
    - {{ name: people, grantTypes: [authorization_code], scopes: [openid], users: {{ everyone: true }} }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: spa, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  grantTypes: [authorization_code]
  redirectUris: [http://127.0.0.1:8400/callback]
  authentication: {{ method: None }}
"#
    )
}

fn request(method: &str, uri: &str, cookie: &str, body: String, source: u32) -> Request<Body> {
    let mut r = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap_or_default();
    let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + source));
    r.extensions_mut().insert(ConnectInfo(Peer(SocketAddr::new(ip, 40000))));
    r
}

struct Reply {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
    body: String,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Result<Reply, String> {
    let r = app.clone().oneshot(req).await.map_err(|e| e.to_string())?;
    let status = r.status();
    let header = |h| r.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let location = header(header::LOCATION);
    let cookies = r
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.map_err(|e| e.to_string())?;
    Ok(Reply { status, location, cookies, body: String::from_utf8_lossy(&bytes).into_owned() })
}

fn hidden(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    body[start..].split('"').next().map(str::to_owned)
}

#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len().max(1) as f64
    }

    fn sd(&self) -> f64 {
        let m = self.mean();
        (self.0.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (self.0.len().max(2) - 1) as f64).sqrt()
    }

    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// Half the width of the 95% confidence interval of this mean minus `other`'s.
    fn ci95(&self, other: &Samples) -> f64 {
        1.96 * (self.sd().powi(2) / self.0.len() as f64 + other.sd().powi(2) / other.0.len() as f64).sqrt()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut rounds = 200usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).ok_or("--rounds N")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let yaml = manifests_for(rounds + 10);
    let mut m = manifests::Manifests::default();
    manifests::add_documents(&mut m, Path::new("bench.yaml"), &yaml).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let compiled = compile_all(&m, Some(&StateDir::new(dir.path().into()))).map_err(|e| e.to_string())?;
    let compiled = compiled.into_iter().next().ok_or("no server compiled")?;
    let now = jiff::Timestamp::now();
    let key = keys::generate(SigningAlgorithm::ES256, now, now).map_err(|e| e.to_string())?;
    let served = Served::new(compiled.config, &keys::KeySet { keys: vec![key] }).map_err(|e| e.to_string())?;
    let issuer = Issuer::new(IssuerOptions::default(), Arc::new(MemoryStore::new()));
    issuer.replace(served);
    let app = issuer.router();

    // One pending sign-in, answered again and again with wrong passwords.
    let authorize = "/oauth2/payments/v1/authorize?response_type=code&client_id=identity.spa&redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2Fcallback&scope=openid&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";
    let start = send(&app, request("GET", authorize, "", String::new(), 1)).await?;
    let cookie = start.cookies.join("; ");
    let login_path = start.location.strip_prefix("http://127.0.0.1:9").unwrap_or(&start.location).to_owned();
    let page = send(&app, request("GET", &login_path, &cookie, String::new(), 1)).await?;
    let (Some(req_id), Some(csrf)) = (hidden(&page.body, "request"), hidden(&page.body, "csrf")) else {
        return Err(format!("no login form: {} {}", page.status, page.body));
    };
    let attempt = |user: String, source: u32| {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("request", req_id.as_str()),
                ("csrf", csrf.as_str()),
                ("username", &user),
                ("password", "wrong"),
            ])
            .finish();
        request("POST", "/oauth2/payments/v1/login", &cookie, body, source)
    };
    let mut source = 10u32;
    let mut timed = |user: String| {
        source += 1;
        let req = attempt(user, source);
        let app = app.clone();
        async move {
            let t = Instant::now();
            let r = send(&app, req).await?;
            let took = t.elapsed();
            if r.status != StatusCode::UNAUTHORIZED {
                return Err(format!("expected 401 for a wrong password, got {}", r.status));
            }
            Ok::<Duration, String>(took)
        }
    };
    for n in 0..5 {
        timed(format!("user-{}", rounds + n)).await?;
        timed(format!("warm-{n}")).await?;
    }
    let (mut known, mut unknown) = (Samples::default(), Samples::default());
    let (mut odd, mut even) = (Samples::default(), Samples::default());
    for n in 0..rounds {
        // Alternating, and which goes first alternates too, so drift hits both alike.
        let (k, u) = if n % 2 == 0 {
            let k = timed(format!("user-{n}")).await?;
            (k, timed(format!("nobody-{n}")).await?)
        } else {
            let u = timed(format!("nobody-{n}")).await?;
            (timed(format!("user-{n}")).await?, u)
        };
        let (k, u) = (k.as_secs_f64() * 1e3, u.as_secs_f64() * 1e3);
        known.0.push(k);
        unknown.0.push(u);
        if n % 2 == 0 { even.0.push(k) } else { odd.0.push(k) }
    }
    let row = |name: &str, s: &Samples| {
        println!(
            "{name:<44} {:>7.2} ms mean  {:>7.2} ms median  sd {:>5.2} ms  n={}",
            s.mean(),
            s.median(),
            s.sd(),
            s.0.len()
        );
    };
    row("POST /v1/login known user, wrong password", &known);
    row("POST /v1/login unknown user", &unknown);
    println!(
        "{:<44} {:>+7.3} ms ± {:.3} ms (95% CI)",
        "difference unknown − known",
        unknown.mean() - known.mean(),
        unknown.ci95(&known)
    );
    println!(
        "{:<44} {:>+7.3} ms ± {:.3} ms (95% CI)",
        "noise: known odd − known even rounds",
        odd.mean() - even.mean(),
        odd.ci95(&even)
    );
    Ok(())
}

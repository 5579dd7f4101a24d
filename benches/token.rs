//! Token path figures: signing alone per algorithm, and a whole `/v1/token` request
//! (client_secret_basic, policy, CEL claims, signing) in-process. Run: `cargo bench --bench token`.
//! `TOKEN_BENCH_PROFILE=ES256` runs only the `/v1/token` loop of that algorithm (what
//! `benches/run` profiles under callgrind); `TOKEN_BENCH_N` sets the iterations (2000).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine;
use tessera::api::SigningAlgorithm;
use tessera::issuer::{Issuer, IssuerOptions, Served};
use tessera::keys::{self, ActiveKeys, KeySet};
use tessera::standalone::{StateDir, compile_all, manifests};
use tessera::store::MemoryStore;
use tower::ServiceExt;

/// The allocator of the `tessera` binary, so the in-process figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn per_op(label: &str, n: u32, f: impl FnMut()) {
    let mut f = f;
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let each = t.elapsed() / n;
    println!("{label:<40} {:>10.1} µs/op {:>10.0} op/s", each.as_secs_f64() * 1e6, 1.0 / each.as_secs_f64());
}

fn main() {
    let only = std::env::var("TOKEN_BENCH_PROFILE").ok();
    let n: u32 = std::env::var("TOKEN_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let selected = |alg: SigningAlgorithm| only.as_deref().is_none_or(|o| o == alg.as_str());
    let now = jiff::Timestamp::now();
    let claims = serde_json::json!({ "ver": 1, "iss": "https://auth.example.com/payments", "sub": "team.api", "scp": ["payments:read"] });
    for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
        if only.is_some() {
            break;
        }
        let keys = ActiveKeys::new(&KeySet { keys: vec![keys::generate(alg, now, now).unwrap()] }).unwrap();
        per_op(&format!("sign access token {}", alg.as_str()), n, || {
            std::hint::black_box(keys.sign_access_token(now, &claims).unwrap());
        });
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut m = manifests::Manifests::default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for f in manifests::files(&[dir]).unwrap() {
        manifests::add_documents(&mut m, &f, &std::fs::read_to_string(&f).unwrap()).unwrap();
    }
    manifests::add_documents(
        &mut m,
        Path::new("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: { name: orders-api-oauth, namespace: team-orders }\nstringData: { client_secret: bench-secret }\n",
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut config = compile_all(&m, Some(&StateDir::new(state.path().into()))).unwrap().remove(0).config;
    config.rate_limit = None;
    for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
        if !selected(alg) {
            continue;
        }
        let issuer = Issuer::new(IssuerOptions::default(), Arc::new(MemoryStore::new()));
        let key = keys::generate(alg, now, now).unwrap();
        issuer.replace(Served::new(config.clone(), &KeySet { keys: vec![key] }).unwrap());
        let app = issuer.router();
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("team-orders.orders-api:bench-secret")
        );
        per_op(&format!("POST /v1/token client_credentials {}", alg.as_str()), n, || {
            let req = Request::post("/oauth2/payments/v1/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, auth.as_str())
                .body(Body::from("grant_type=client_credentials&scope=payments:read"))
                .unwrap();
            let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
            assert!(resp.status().is_success());
        });
    }
}

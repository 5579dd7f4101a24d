//! The reference for `benches/run`: raw aws-lc-rs signing rate of a typical access token's
//! signing input (`base64url(header).base64url(claims)`), per algorithm, on the calling
//! thread (pin it with `taskset`). Independent of Tessera's own code on purpose: it is the
//! limit a token endpoint is measured against. Prints one JSON line.
//!
//! `sign_rate --seconds 2 [--alg RS256|ES256|EdDSA]...`

use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Claims the size of what the example server issues for client_credentials.
const CLAIMS: &str = r#"{"ver":1,"jti":"AT.q1Zr8Qm3kJ2vYc5tWbX0nA","iss":"http://127.0.0.1:8080/oauth2/payments","aud":"api://payments","iat":1795000000,"exp":1795003600,"cid":"team-orders.orders-api","sub":"team-orders.orders-api","scp":["payments:read"],"tenant":"acme","client_id":"team-orders.orders-api"}"#;

fn signing_input(alg: &str) -> Vec<u8> {
    let header = format!(r#"{{"alg":"{alg}","kid":"k-20261126-0001","typ":"at+jwt"}}"#);
    format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(CLAIMS)).into_bytes()
}

/// Nanoseconds this thread has spent on a CPU (first field of schedstat), if the kernel says.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// Signs for `seconds` (after a short warm-up) and returns signatures per wall-clock second
/// and per second of this thread's CPU time (what a shared, busy core still gives us).
fn rate(seconds: f64, mut sign: impl FnMut() -> usize) -> (f64, f64) {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        std::hint::black_box(sign());
    }
    let t = Instant::now();
    let cpu0 = cpu_ns();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < seconds {
        for _ in 0..16 {
            std::hint::black_box(sign());
        }
        n += 16;
    }
    let wall = t.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => wall,
    };
    (n as f64 / wall, n as f64 / cpu)
}

fn measure(alg: &str, seconds: f64) -> Result<(f64, f64), String> {
    let rng = SystemRandom::new();
    let input = signing_input(alg);
    let failed = |e| format!("{alg}: {e}");
    Ok(match alg {
        "RS256" => {
            let pkcs8 = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map_err(|e| failed(e.to_string()))?;
            let key = RsaKeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| failed(e.to_string()))?;
            let mut sig = vec![0u8; key.public_modulus_len()];
            rate(seconds, || key.sign(&signature::RSA_PKCS1_SHA256, &rng, &input, &mut sig).map_or(0, |_| sig.len()))
        }
        "ES256" => {
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|e| failed(e.to_string()))?;
            let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).map_err(|e| failed(e.to_string()))?;
            rate(seconds, || key.sign(&rng, &input).map_or(0, |s| s.as_ref().len()))
        }
        "EdDSA" => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| failed(e.to_string()))?;
            let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| failed(e.to_string()))?;
            let _ = key.public_key();
            rate(seconds, || key.sign(&input).as_ref().len())
        }
        other => return Err(format!("unknown algorithm {other}")),
    })
}

fn main() {
    let mut seconds = 0.0;
    let mut algs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0),
            "--alg" => algs.extend(args.next()),
            _ => {}
        }
    }
    if seconds <= 0.0 {
        // Run with no arguments (for example by `cargo test --all-targets`): nothing to do.
        println!("usage: sign_rate --seconds S [--alg RS256|ES256|EdDSA]...");
        return;
    }
    if algs.is_empty() {
        algs = vec!["RS256".into(), "ES256".into(), "EdDSA".into()];
    }
    let mut out = serde_json::Map::new();
    for alg in &algs {
        match measure(alg, seconds) {
            Ok((wall, cpu)) => {
                out.insert(alg.clone(), serde_json::json!({ "wall": wall, "cpu": cpu }));
            }
            Err(e) => {
                eprintln!("sign_rate: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("{}", serde_json::Value::Object(out));
}

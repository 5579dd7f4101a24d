//! The entry points of the `cargo fuzz` targets in `fuzz/`. Each takes the fuzzer's bytes as
//! an attacker would send or write them and runs the code that reads them; results are
//! dropped. What counts as a finding is a panic, an abort (stack overflow), or time or memory
//! out of proportion to the input. They live in the crate, not in `fuzz/`, so that the
//! compiler and clippy keep them in step with the code they call.

use std::path::Path;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value, json};

use crate::api::GrantType;
use crate::config::ServerConfig;
use crate::expression;
use crate::issuer::client_auth::parse_basic;
use crate::issuer::form::Form;
use crate::issuer::protocol::redirect_uri_matches;
use crate::keys::jwt::{self, Alg, Clock, Rules};
use crate::policy::{CelVariables, PolicyEngine, UserInfo};
use crate::standalone::manifests::{Manifests, add_documents};

/// A form body (token, introspection, revocation) and an authorization request's query string.
pub fn form(data: &[u8]) {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    if let Ok(form) = Form::parse(&headers, data) {
        let _ = form.get("grant_type");
        let _ = form.require("client_id");
    }
    let _ = Form::from_query(&String::from_utf8_lossy(data));
}

/// An `Authorization` header value, as client authentication reads it.
pub fn basic_header(data: &[u8]) {
    let _ = parse_basic(&String::from_utf8_lossy(data));
}

/// Public keys of every algorithm the issuer accepts from outside, made once.
fn fixed_keys() -> &'static [Map<String, Value>] {
    static KEYS: OnceLock<Vec<Map<String, Value>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        use crate::api::SigningAlgorithm::{ES256, EdDSA, RS256};
        let t = jiff::Timestamp::from_second(0).expect("epoch");
        [RS256, ES256, EdDSA]
            .into_iter()
            .map(|alg| crate::keys::generate(alg, t, t).expect("key generation").public_jwk)
            .collect()
    })
}

/// A JWT from outside (client assertion, subject token, upstream ID token), verified against
/// fixed keys; when the input's first line is a JSON array, against those keys instead (a
/// tenant's `jwksUri` serves keys of its choosing).
pub fn jwt(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (keys, token) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with('[') => match serde_json::from_str::<Vec<Map<String, Value>>>(first) {
            Ok(keys) => (keys, rest),
            Err(_) => return,
        },
        _ => (fixed_keys().to_vec(), &*text),
    };
    let _ = jwt::peek(token);
    let audiences = ["api://fuzz".to_owned()];
    let rules = Rules {
        algorithms: &[Alg::RS256, Alg::PS256, Alg::ES256, Alg::EdDSA],
        typ: None,
        issuer: "https://issuer.example",
        audiences: Some(&audiences),
        clock: Some(Clock { now: 1_000_000, leeway_secs: 30 }),
    };
    let _ = jwt::verify(token, &keys, &rules);
}

/// A registered redirect URI and a requested one, separated by the first newline.
pub fn redirect_uri(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (registered, requested) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = redirect_uri_matches(registered, requested);
    let _ = redirect_uri_matches(requested, registered);
}

/// A server config with one client whose metadata is small, for evaluating expressions.
fn cel_config() -> &'static ServerConfig {
    static CONFIG: OnceLock<ServerConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        serde_json::from_value(json!({
            "name": "payments", "namespace": "identity", "issuer": "https://issuer.example/oauth2/payments",
            "audiences": ["api://payments"],
            "signing": { "algorithm": "ES256", "mode": "Automatic", "periodSecs": 1000, "prePublishSecs": 100, "retainRetiredSecs": 300 },
            "jwksMaxAgeSecs": 50, "scopes": [], "claims": [], "policies": [],
            "clients": [{ "clientId": "team.api", "namespace": "team", "name": "api", "grantTypes": ["client_credentials"],
                          "authMethod": "ClientSecretBasic", "metadata": { "tier": "gold", "tags": "a,b" } }]
        }))
        .expect("a valid config")
    })
}

/// A CEL expression (AuthClaim value, policy condition) through the guard and, when admitted,
/// evaluated once against small variables.
pub fn cel(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else { return };
    let Ok(program) = expression::compile(source) else { return };
    let config = cel_config();
    let user = UserInfo {
        sub: "static|alice".into(),
        name: Some("Alice".into()),
        email: Some("alice@example.com".into()),
        groups: vec!["admins".into(), "staff".into()],
        attributes: Map::new(),
        amr: vec!["pwd".into()],
        standard: Default::default(),
    };
    let scopes = ["openid".to_owned(), "payments:read".to_owned()];
    let vars = CelVariables::new(
        config,
        &config.clients[0],
        GrantType::AuthorizationCode,
        &scopes,
        &config.audiences,
        Some(&user),
        None,
    );
    let _ = program.execute(&vars.context());
}

/// A `ServerConfig` as the issuer reads it from its Secret, and the policy engine made from it.
pub fn server_config(data: &[u8]) {
    if let Ok(config) = ServerConfig::from_json(data) {
        let _ = PolicyEngine::new(&config);
    }
}

/// The YAML files `tessera serve` reads, compiled as it compiles them.
pub fn manifests(data: &[u8]) {
    let mut m = Manifests::default();
    if add_documents(&mut m, Path::new("fuzz.yaml"), &String::from_utf8_lossy(data)).is_ok() {
        let _ = crate::standalone::compile_all(&m, None);
    }
}

#[cfg(test)]
mod tests {
    //! Each entry point runs on the seeds of its corpus (`fuzz/seeds/<target>/`), so a
    //! change that breaks one is seen by `cargo test`, not only by the fuzzer.

    use std::path::PathBuf;

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        out.sort();
        assert!(!out.is_empty(), "{} has no seeds", dir.display());
        out
    }

    /// A target's name (its folder of seeds) and entry point.
    type Target = (&'static str, fn(&[u8]));

    #[test]
    fn every_target_runs_its_seeds() {
        let targets: [Target; 7] = [
            ("form", super::form),
            ("basic_header", super::basic_header),
            ("jwt", super::jwt),
            ("redirect_uri", super::redirect_uri),
            ("cel", super::cel),
            ("server_config", super::server_config),
            ("manifests", super::manifests),
        ];
        for (name, target) in targets {
            for seed in seeds(name) {
                target(&seed);
            }
        }
    }
}

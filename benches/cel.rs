//! The dearest CEL expressions admission lets through, evaluated against the largest variables
//! the request path admits (`tessera::expression::limits`), beside a trivial expression's
//! evaluation in the same run. Each family of expressions is grown until admission refuses
//! it; the last admitted one is measured. Prints one JSON line per expression.
//!
//! `cargo run --release --example cel [-- --seconds 1]`

use std::time::Instant;

use serde_json::{Map, Value, json};
use tessera::api::GrantType;
use tessera::config::ServerConfig;
use tessera::expression::{self, ExpressionError, MAX_COST, limits};
use tessera::policy::{CelVariables, UserInfo};

/// A string of `n` bytes that shares its first `n - 4` with every other one of the family
/// (comparisons run to the end), told apart by `i`.
fn text(n: u64, i: usize) -> String {
    let tail = format!("{i:04}");
    format!("{}{}", "x".repeat(n as usize - tail.len()), tail)
}

/// A JSON object of about `bytes` bytes: strings of 64 bytes under short keys.
fn json_of(bytes: u64) -> Map<String, Value> {
    let mut m = Map::new();
    let mut i = 0;
    while serde_json::to_string(&m).map(|s| s.len() as u64 + 80).unwrap_or(u64::MAX) < bytes {
        m.insert(format!("k{i}"), json!(text(64, i)));
        i += 1;
    }
    m
}

fn config() -> ServerConfig {
    let metadata: Map<String, Value> = (0..limits::METADATA_ENTRIES as usize)
        .map(|i| (text(limits::METADATA_KEY_BYTES, i), json!(text(limits::METADATA_VALUE_BYTES, i))))
        .collect();
    let namespace_labels: Map<String, Value> = (0..limits::NAMESPACE_LABELS as usize)
        .map(|i| (text(limits::NAMESPACE_LABEL_KEY_BYTES, i), json!(text(limits::NAMESPACE_LABEL_VALUE_BYTES, i))))
        .collect();
    serde_json::from_value(json!({
        "name": "payments", "namespace": "identity", "issuer": "http://127.0.0.1:8080/oauth2/payments",
        "audiences": ["api://payments"],
        "signing": { "algorithm": "ES256", "mode": "Automatic", "periodSecs": 1000, "prePublishSecs": 100, "retainRetiredSecs": 300 },
        "jwksMaxAgeSecs": 50, "scopes": [], "claims": [], "policies": [],
        "clients": [{ "clientId": "team.api", "namespace": "team", "name": "api", "grantTypes": ["client_credentials"],
                      "authMethod": "ClientSecretBasic", "metadata": metadata,
                      "namespaceLabels": namespace_labels }]
    }))
    .expect("a valid config")
}

/// An expression grown by `k`.
type Family = fn(usize) -> String;

/// Expressions grown by `k`: what admission must hold under 1 ms.
fn families() -> Vec<(&'static str, Family)> {
    vec![
        ("trivial (reference)", |_| "client.id".to_owned()),
        ("two nested comprehensions over literal lists", |k| {
            let list = format!("[{}]", (0..k).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
            format!("{list}.all(a, {list}.all(b, a != b || a == b))")
        }),
        ("scopes × a literal list", |k| {
            let list = format!("[{}]", (0..k).map(|i| format!("'{i}'")).collect::<Vec<_>>().join(","));
            format!("request.scopes.all(s, {list}.all(t, s != t))")
        }),
        ("groups compared with metadata values", |k| {
            let terms: Vec<String> = (0..k).map(|i| format!("g != client.metadata['{}']", text(256, i))).collect();
            format!("user.groups.all(g, {})", terms.join(" && "))
        }),
        ("groups containing a string", |k| format!("user.groups.exists(g, g.contains('{}'))", "y".repeat(k))),
        ("groups concatenated", |k| format!("user.groups.map(g, g{})", " + g".repeat(k))),
        ("metadata keys mapped to values", |k| {
            format!("client.metadata.map(m, client.metadata[m]{})", " + client.metadata[m]".repeat(k))
        }),
        ("namespace labels mapped to values", |k| {
            format!(
                "client.namespaceLabels.map(l, l + client.namespaceLabels[l]{})",
                " + client.namespaceLabels[l]".repeat(k)
            )
        }),
        ("groups compared with namespace labels", |k| {
            let terms: Vec<String> =
                (0..k).map(|i| format!("g != client.namespaceLabels['{}']", text(317, i))).collect();
            format!("user.groups.all(g, {})", terms.join(" && "))
        }),
        ("regex matches, one after another", |k| {
            let terms: Vec<String> =
                (0..k).map(|i| format!("user.email.matches('^[a-z0-9.]+@(example|test{i})[.]com$')")).collect();
            terms.join(" || ")
        }),
        ("subject and attributes compared whole", |k| vec!["subject == user.attributes"; k].join(" || ")),
        ("scopes within audience", |k| {
            format!("request.scopes.all(s, s in request.audience{})", " && s in request.audience".repeat(k - 1))
        }),
    ]
}

/// Median time of one evaluation, over `seconds`.
fn time(program: &cel::Program, vars: &CelVariables, seconds: f64) -> f64 {
    let ctx = vars.context();
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || samples.len() < 5 {
        let t = Instant::now();
        std::hint::black_box(program.execute(&ctx).is_ok());
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

fn main() {
    let mut seconds = 1.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--seconds" {
            seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seconds);
        }
    }
    let config = config();
    let user = UserInfo {
        sub: text(limits::USER_FIELD_BYTES, 0),
        name: Some(text(limits::USER_FIELD_BYTES, 1)),
        email: Some(format!("{}@example.com", "a".repeat(limits::USER_FIELD_BYTES as usize - 12))),
        groups: (0..limits::GROUPS as usize).map(|i| text(limits::GROUP_BYTES, i)).collect(),
        attributes: json_of(limits::ATTRIBUTES_BYTES),
        amr: (0..limits::AMR as usize).map(|i| text(limits::AMR_BYTES, i)).collect(),
        standard: Default::default(),
    };
    let subject = json_of(limits::SUBJECT_BYTES);
    let scopes: Vec<String> = (0..limits::SCOPES as usize).map(|i| text(limits::SCOPE_BYTES, i)).collect();
    let audience: Vec<String> = (0..limits::AUDIENCES as usize).map(|i| text(limits::AUDIENCE_BYTES, i)).collect();
    let vars = CelVariables::new(
        &config,
        &config.clients[0],
        GrantType::AuthorizationCode,
        &scopes,
        &audience,
        Some(&user),
        Some(&subject),
    );
    assert_eq!(vars.oversized(), None, "the variables are the largest admitted, not larger");

    let mut reference = None;
    for (name, family) in families() {
        // The largest k admitted.
        let mut k = 1;
        let mut admitted = None;
        while k < 5000 && !name.contains("reference") || k == 1 {
            match expression::admit(&family(k)) {
                Ok(p) => admitted = Some((k, p)),
                Err(ExpressionError::TooCostly { .. } | ExpressionError::TooLong(_) | ExpressionError::TooDeep(_)) => {
                    break;
                }
                Err(e) => panic!("{name}: {e}"),
            }
            k = if k < 16 { k + 1 } else { k + k / 8 };
        }
        let Some((k, (program, cost))) = admitted else {
            println!("{}", json!({ "expression": name, "admitted": false }));
            continue;
        };
        let micros = time(&program, &vars, seconds);
        let reference_us = *reference.get_or_insert(micros);
        println!(
            "{}",
            json!({
                "expression": name, "k": k, "length": family(k).len(),
                "estimated_cost": cost,
                "us_per_eval": (micros * 100.0).round() / 100.0,
                "ratio_to_trivial": (micros / reference_us).round(),
                "cost_limit": MAX_COST,
            })
        );
    }
}

use super::*;

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_norway::from_str(s).unwrap()
}

fn server() -> AuthorizationServer {
    yaml(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: { name: payments, namespace: identity }
spec:
  issuer: http://127.0.0.1:8080/oauth2/payments
  audiences: [api://payments]
  signing: { algorithm: ES256, rotation: { period: 2160h, prePublish: 168h, retainRetired: 1m } }
  trustedIssuers: [ { kubernetes: true } ]
"#,
    )
}

fn scope(name: &str, scope: &str, created: &str) -> AuthScope {
    yaml(&format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthScope\nmetadata: {{ name: {name}, namespace: identity, creationTimestamp: '{created}' }}\nspec: {{ serverRef: {{ name: payments }}, name: '{scope}' }}\n"
    ))
}

fn client(name: &str, client_id: &str, created: &str, labels: &str) -> ClientInput {
    ClientInput {
        client: yaml(&format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: AuthClient\nmetadata: {{ name: {name}, namespace: team, creationTimestamp: '{created}', labels: {{ {labels} }} }}\nspec: {{ serverRef: {{ name: payments, namespace: identity }}, clientId: {client_id}, grantTypes: [client_credentials] }}\n"
        )),
        secret_hashes: vec![crate::config::hash_secret("s3cret")],
    }
}

fn input() -> CompileInput {
    CompileInput { server: server(), scopes: vec![], claims: vec![], policies: vec![], clients: vec![] }
}

#[test]
fn older_scope_wins_and_newer_is_a_conflict() {
    let mut i = input();
    i.scopes = vec![
        scope("newer", "payments:read", "2026-02-01T00:00:00Z"),
        scope("older", "payments:read", "2026-01-01T00:00:00Z"),
    ];
    let c = compile(&i);
    assert_eq!(c.config.scopes.len(), 1);
    assert_eq!(c.rejected.len(), 1);
    assert_eq!(c.rejected[0].name, "newer");
    assert_eq!(c.rejected[0].reason, "Conflict");
}

#[test]
fn duplicate_client_id_rejects_the_newer_client() {
    let mut i = input();
    i.clients = vec![client("b", "dup", "2026-02-01T00:00:00Z", ""), client("a", "dup", "2026-01-01T00:00:00Z", "")];
    let c = compile(&i);
    assert_eq!(c.config.clients.len(), 1);
    assert_eq!(c.config.clients[0].name, "a");
    assert_eq!(c.rejected[0].kind, "AuthClient");
    assert_eq!(c.rejected[0].reason, "Conflict");
}

#[test]
fn claim_that_does_not_compile_is_rejected_with_the_cel_error() {
    let mut i = input();
    i.claims = vec![yaml(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthClaim\nmetadata: { name: bad, namespace: identity }\nspec: { serverRef: { name: payments }, name: tenant, value: 'client.metadata.(' }\n",
    )];
    let c = compile(&i);
    assert!(c.config.claims.is_empty());
    assert_eq!(c.rejected[0].reason, "InvalidExpression");
    assert!(c.rejected[0].message.contains("does not compile"), "{}", c.rejected[0].message);
}

#[test]
fn policy_with_bad_condition_is_rejected_and_selectors_resolve_to_client_ids() {
    let mut i = input();
    i.clients = vec![
        client("a", "team.a", "2026-01-01T00:00:00Z", "tier: gold"),
        client("b", "team.b", "2026-01-01T00:00:00Z", "tier: silver"),
    ];
    i.policies = vec![
        yaml(
            "apiVersion: tessera.dev/v1alpha1\nkind: AccessPolicy\nmetadata: { name: z-gold, namespace: identity }\nspec:\n  serverRef: { name: payments }\n  priority: 1\n  clients: { selector: { matchLabels: { tier: gold } } }\n  rules: [ { name: r, grantTypes: [client_credentials], scopes: ['*'] } ]\n",
        ),
        yaml(
            "apiVersion: tessera.dev/v1alpha1\nkind: AccessPolicy\nmetadata: { name: a-first, namespace: identity }\nspec:\n  serverRef: { name: payments }\n  priority: 1\n  clients: { all: true }\n  rules: [ { name: r, grantTypes: [client_credentials], scopes: ['*'], accessTokenLifetime: 15m } ]\n",
        ),
        yaml(
            "apiVersion: tessera.dev/v1alpha1\nkind: AccessPolicy\nmetadata: { name: broken, namespace: identity }\nspec:\n  serverRef: { name: payments }\n  priority: 0\n  clients: { all: true }\n  rules: [ { name: r, grantTypes: [client_credentials], scopes: ['*'], condition: '1 +' } ]\n",
        ),
    ];
    let c = compile(&i);
    let names: Vec<_> = c.config.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a-first", "z-gold"]);
    assert_eq!(c.config.policies[1].clients, PolicyClients::Ids(vec!["team.a".into()]));
    assert_eq!(c.config.policies[0].rules[0].access_token_lifetime_secs, 900);
    assert_eq!(c.rejected.len(), 1);
    assert_eq!((c.rejected[0].name.as_str(), c.rejected[0].reason.as_str()), ("broken", "InvalidExpression"));
}

#[test]
fn signing_minimums_and_trusted_issuer_defaults_are_applied() {
    let c = compile(&input()).config;
    assert_eq!(c.jwks_max_age_secs, 3600);
    // retainRetired: 1m is raised to cover a 1h token plus the JWKS cache lifetime.
    assert!(c.signing.retain_retired_secs >= 2 * 3600);
    assert_eq!(c.trusted_issuers[0].audiences, vec!["http://127.0.0.1:8080/oauth2/payments".to_owned()]);
    let json = c.to_json().unwrap();
    assert_eq!(ServerConfig::from_json(json.as_bytes()).unwrap(), c);
}

#[test]
fn debug_of_clients_never_shows_secret_hashes() {
    let mut i = input();
    i.clients = vec![client("a", "team.a", "2026-01-01T00:00:00Z", "")];
    let shown = format!("{:?} {:?}", compile(&i).config, i.clients);
    assert!(!shown.contains(&crate::config::hash_secret("s3cret")), "{shown}");
}

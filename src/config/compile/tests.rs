use super::*;
use std::collections::BTreeSet;

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
  # The clients below live in namespace team: compile admits them only if the server does.
  clientNamespaces: { from: All }
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
    CompileInput {
        server: server(),
        scopes: vec![],
        claims: vec![],
        policies: vec![],
        clients: vec![],
        identity_secrets: IdentitySecrets::default(),
        namespace_labels: BTreeMap::new(),
    }
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
    i.clients =
        vec![client("b", "team.dup", "2026-02-01T00:00:00Z", ""), client("a", "team.dup", "2026-01-01T00:00:00Z", "")];
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
fn claims_and_conditions_too_deep_or_too_costly_are_rejected_as_invalid_expressions() {
    let mut i = input();
    let deep = format!("user == null ? {}1{} : 0", "(".repeat(55), ")".repeat(55));
    let costly = "user.groups.map(g, user.groups.map(h, g + h))";
    i.claims = [("deep", deep.as_str()), ("costly", costly), ("fine", "client.namespace")]
        .iter()
        .map(|(name, value)| {
            yaml(&format!(
                "apiVersion: tessera.dev/v1alpha1\nkind: AuthClaim\nmetadata: {{ name: {name}, namespace: identity }}\nspec: {{ serverRef: {{ name: payments }}, name: {name}, value: '{value}' }}\n"
            ))
        })
        .collect();
    let condition = format!("{}true{}", "[".repeat(90), "]".repeat(90));
    i.policies = vec![yaml(&format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: deep, namespace: identity }}\nspec:\n  serverRef: {{ name: payments }}\n  priority: 0\n  clients: {{ all: true }}\n  rules: [ {{ name: r, grantTypes: [client_credentials], scopes: ['*'], condition: '{}' }} ]\n",
        condition
    ))];
    let c = compile(&i);
    assert_eq!(c.config.claims.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["fine"]);
    assert!(c.config.policies.is_empty());
    let reason =
        |name: &str| c.rejected.iter().find(|r| r.name == name).map(|r| (r.reason.as_str(), r.message.clone()));
    let (why, message) = reason("deep").unwrap();
    assert_eq!(why, "InvalidExpression");
    assert!(message.starts_with("value nests 223 deep"), "{message}");
    let (_, message) = reason("costly").unwrap();
    assert!(message.contains("estimated cost"), "{message}");
    let policy = c.rejected.iter().find(|r| r.kind == "AccessPolicy").unwrap();
    assert_eq!(policy.reason, "InvalidExpression");
    assert!(policy.message.contains("nests 450 deep"), "{}", policy.message);
}

#[test]
fn a_client_with_more_metadata_than_expressions_are_admitted_for_is_rejected() {
    let mut i = input();
    let mut big = client("big", "team.big", "2026-01-01T00:00:00Z", "");
    big.client.spec.metadata = (0..65).map(|n| (format!("k{n}"), "v".to_owned())).collect();
    let mut long = client("long", "team.long", "2026-01-01T00:00:00Z", "");
    long.client.spec.metadata = [("tenant".to_owned(), "x".repeat(1025))].into();
    i.clients = vec![big, long, client("ok", "team.ok", "2026-01-01T00:00:00Z", "")];
    let c = compile(&i);
    assert_eq!(c.config.clients.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["ok"]);
    let messages: Vec<(&str, &str)> = c.rejected.iter().map(|r| (r.reason.as_str(), r.message.as_str())).collect();
    assert_eq!(
        messages,
        [
            ("InvalidMetadata", "metadata has 65 entries; at most 64"),
            // The CRD's own rule on value length, which compile mirrors, refuses it first.
            (
                "InvalidSpec",
                "spec.metadata: each metadata key must be at most 256 characters and each value at most 1024"
            )
        ]
    );
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
    i.policies[0].spec.clients.namespaces = Some(vec!["team".into()]);
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

const ALICE_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

/// The server with sign-in through upstream `corp` and static users from Secret `people`.
fn identity_input() -> CompileInput {
    let mut i = input();
    i.server.spec.identity = Some(yaml(
        r#"
sessionLifetime: 2h
upstreams:
  - name: corp
    issuer: https://sso.example.com/
    clientId: tessera
    clientSecretRef: { name: corp-oidc }
  - name: partner
    displayName: Partner SSO
    issuer: https://partner.example.com
    clientId: t
    clientSecretRef: { name: corp-oidc, key: partner }
    scopes: [openid]
staticUsers: { secretName: people }
"#,
    ));
    i.identity_secrets.insert(
        "corp-oidc",
        BTreeMap::from([("client_secret".into(), b"corp-secret\n".to_vec()), ("partner".into(), b"p-secret".to_vec())]),
    );
    i.identity_secrets.insert(
        "people",
        BTreeMap::from([(
            "users.yaml".into(),
            format!("- username: alice\n  passwordHash: '{ALICE_HASH}'\n  email: alice@example.com\n").into_bytes(),
        )]),
    );
    i
}

#[test]
fn identity_is_compiled_with_secrets_read_and_defaults_applied() {
    let i = identity_input();
    assert_eq!(identity_secret_names(&i.server).into_iter().collect::<Vec<_>>(), ["corp-oidc", "people"]);
    let c = compile(&i);
    assert_eq!(c.server_error, None);
    let identity = c.config.identity.unwrap();
    assert_eq!(identity.session_lifetime_secs, 7200);
    let corp = &identity.upstreams[0];
    assert_eq!((corp.name.as_str(), corp.display_name.as_str()), ("corp", "corp"));
    assert_eq!(corp.issuer, "https://sso.example.com");
    assert_eq!(corp.client_secret, "corp-secret");
    assert_eq!(corp.scopes, ["openid", "email", "profile"]);
    assert_eq!(corp.claim_mapping, crate::api::ClaimMapping::default());
    let partner = &identity.upstreams[1];
    assert_eq!((partner.display_name.as_str(), partner.client_secret.as_str()), ("Partner SSO", "p-secret"));
    assert_eq!(partner.scopes, ["openid"]);
    assert_eq!(identity.users.len(), 1);
    assert_eq!(identity.users[0].subject(), "static|alice");
    assert_eq!(identity.users[0].password_hash, ALICE_HASH);
}

#[test]
fn server_without_identity_compiles_to_none() {
    let c = compile(&input());
    assert_eq!((c.config.identity, c.server_error), (None, None));
}

#[test]
fn missing_upstream_secret_or_key_is_a_precise_error_and_no_identity() {
    let mut i = identity_input();
    i.identity_secrets.secrets.remove("corp-oidc");
    let c = compile(&i);
    assert_eq!(c.config.identity, None);
    let e = c.server_error.unwrap();
    assert_eq!(e.reason, IDENTITY_SECRET_NOT_FOUND);
    assert_eq!(e.message, "spec.identity: Secret identity/corp-oidc (client secret of upstream corp) was not found");

    let mut i = identity_input();
    i.identity_secrets.secrets.get_mut("corp-oidc").unwrap().remove("partner");
    let e = compile(&i).server_error.unwrap();
    assert_eq!(e.reason, IDENTITY_SECRET_NOT_FOUND);
    assert_eq!(
        e.message,
        "spec.identity: Secret identity/corp-oidc (client secret of upstream partner) has no key partner"
    );

    let mut i = identity_input();
    i.identity_secrets.secrets.remove("people");
    let e = compile(&i).server_error.unwrap();
    assert_eq!(e.message, "spec.identity: Secret identity/people (static users) was not found");
}

#[test]
fn invalid_static_users_are_reported_without_quoting_the_secret() {
    let mut i = identity_input();
    let people = i.identity_secrets.secrets.get_mut("people").unwrap();
    people.insert("users.yaml".into(), b"- username: alice\n  passwordHash: hunter2-plain\n".to_vec());
    let c = compile(&i);
    assert_eq!(c.config.identity, None);
    let e = c.server_error.unwrap();
    assert_eq!(e.reason, INVALID_STATIC_USERS);
    assert!(e.message.starts_with("spec.identity: key users.yaml of Secret identity/people: "), "{}", e.message);
    assert!(!e.message.contains("hunter2"), "{}", e.message);

    let people = i.identity_secrets.secrets.get_mut("people").unwrap();
    people.insert("users.yaml".into(), b"{ not: [a list".to_vec());
    let e = compile(&i).server_error.unwrap();
    assert_eq!(e.reason, INVALID_STATIC_USERS);
    assert!(!e.message.contains("not: [a list"), "{}", e.message);
}

#[test]
fn debug_of_identity_never_shows_secrets_or_hashes() {
    let i = identity_input();
    let c = compile(&i);
    let shown = format!("{:?} {:?} {:?}", c.config, i.identity_secrets, i);
    for secret in ["corp-secret", "p-secret", ALICE_HASH, "argon2"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

// --- every CRD rule also holds without admission (item 13 of issue 17) ---

/// Every `x-kubernetes-validations` rule of the generated CRDs: (kind, schema path, message).
fn crd_rules() -> BTreeSet<(String, String, String)> {
    fn walk(kind: &str, path: &str, schema: &serde_json::Value, out: &mut BTreeSet<(String, String, String)>) {
        for rule in schema.get("x-kubernetes-validations").and_then(|v| v.as_array()).into_iter().flatten() {
            let message = rule["message"].as_str().unwrap_or_default().to_owned();
            out.insert((kind.to_owned(), path.to_owned(), message));
        }
        for (name, property) in schema.get("properties").and_then(|p| p.as_object()).into_iter().flatten() {
            let path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            walk(kind, &path, property, out);
        }
        if let Some(items) = schema.get("items") {
            walk(kind, &format!("{path}[]"), items, out);
        }
    }
    let mut out = BTreeSet::new();
    for crd in crate::api::crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(&kind, "", &schema["openAPIV3Schema"], &mut out);
    }
    out
}

fn d(s: &str) -> Option<crate::api::Duration> {
    Some(s.parse().unwrap())
}

/// A server with every optional part, and one scope, claim, policy and client, all valid.
fn full_input() -> CompileInput {
    let mut i = identity_input();
    i.server.spec.trusted_origins = vec!["https://app.example.com".into(), "http://localhost:8400".into()];
    i.server.spec.rate_limit = Some(crate::api::RateLimit { per_client: 5, burst: 10 });
    i.server.spec.trusted_issuers.push(yaml(
        "{ issuer: 'https://ci.example.com', audiences: [api://payments], jwksUri: 'https://ci.example.com/jwks' }",
    ));
    i.scopes = vec![scope("read", "payments:read", "2026-01-01T00:00:00Z")];
    i.claims = vec![yaml(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthClaim\nmetadata: { name: tenant, namespace: identity }\nspec: { serverRef: { name: payments }, name: tenant, value: 'client.metadata.tenant', scopes: [payments:read] }\n",
    )];
    i.policies = vec![yaml(
        "apiVersion: tessera.dev/v1alpha1\nkind: AccessPolicy\nmetadata: { name: p, namespace: identity }\nspec:\n  serverRef: { name: payments }\n  clients: { ids: [team.api] }\n  rules: [ { name: r, grantTypes: [client_credentials], scopes: ['*'], users: { groups: [g], subjects: ['static|alice'] }, accessTokenLifetime: 1h, refreshTokenLifetime: 2h, refreshTokenIdleTimeout: 1h, idTokenLifetime: 1h } ]\n",
    )];
    i.clients = vec![ClientInput {
        client: yaml(
            "apiVersion: tessera.dev/v1alpha1\nkind: AuthClient\nmetadata: { name: api, namespace: team }\nspec:\n  serverRef: { name: payments, namespace: identity }\n  clientId: team.api\n  grantTypes: [client_credentials, authorization_code]\n  redirectUris: ['https://app.example.com/cb']\n  postLogoutRedirectUris: ['http://127.0.0.1:8400/']\n  authentication: { method: ClientSecretBasic, secretName: api-oauth }\n",
        ),
        secret_hashes: vec![],
    }];
    i
}

type Breaks = fn(&mut CompileInput);

/// For each CRD rule (kind, schema path, a piece of its message): an edit of [`full_input`]
/// that breaks it and nothing else.
const BROKEN_RULES: &[(&str, &str, &str, Breaks)] = &[
    ("AuthorizationServer", "spec", "Memory keeps", |i| i.server.spec.workload.replicas = 2),
    ("AuthorizationServer", "spec.issuer", "absolute https", |i| {
        i.server.spec.issuer = "http://auth.example.com".into()
    }),
    ("AuthorizationServer", "spec.issuer", "no query", |i| i.server.spec.issuer = "https://auth.example.com/".into()),
    ("AuthorizationServer", "spec.outbound.allowedUrlPrefixes", "allowed URL prefix", |i| {
        i.server.spec.outbound = Some(crate::api::OutboundSpec {
            allowed_url_prefixes: vec!["https://keys.example.com/jwks?tenant=a".into()],
            allow_internal_addresses: false,
        })
    }),
    ("AuthClient", "spec.metadata", "each metadata key", |i| {
        i.clients[0].client.spec.metadata.insert("k".repeat(257), "v".into());
    }),
    ("AuthorizationServer", "spec.audiences", "1 to 512", |i| i.server.spec.audiences = vec!["".into()]),
    ("AuthorizationServer", "spec.audiences", "not repeat", |i| i.server.spec.audiences = vec!["a".into(), "a".into()]),
    ("AuthorizationServer", "spec.trustedOrigins", "trusted origin", |i| {
        i.server.spec.trusted_origins = vec!["https://app.example.com/path".into()]
    }),
    ("AuthorizationServer", "spec.identity", "at least one", |i| {
        let identity = i.server.spec.identity.as_mut().unwrap();
        (identity.upstreams, identity.static_users) = (vec![], None);
    }),
    ("AuthorizationServer", "spec.identity.sessionLifetime", "sessionLifetime", |i| {
        i.server.spec.identity.as_mut().unwrap().session_lifetime = "30s".parse().unwrap()
    }),
    ("AuthorizationServer", "spec.identity.upstreams", "unique", |i| {
        let upstreams = &mut i.server.spec.identity.as_mut().unwrap().upstreams;
        upstreams[1].name = upstreams[0].name.clone();
    }),
    ("AuthorizationServer", "spec.identity.upstreams[].name", "lowercase", |i| {
        i.server.spec.identity.as_mut().unwrap().upstreams[0].name = "Corp".into()
    }),
    ("AuthorizationServer", "spec.identity.upstreams[].name", "static is reserved", |i| {
        i.server.spec.identity.as_mut().unwrap().upstreams[0].name = "static".into()
    }),
    ("AuthorizationServer", "spec.identity.upstreams[].issuer", "upstream issuer", |i| {
        i.server.spec.identity.as_mut().unwrap().upstreams[0].issuer = "http://sso.example.com".into()
    }),
    ("AuthorizationServer", "spec.signing.rotation.period", "period", |i| {
        i.server.spec.signing.rotation.period = "1s".parse().unwrap()
    }),
    ("AuthorizationServer", "spec.signing.rotation.prePublish", "prePublish", |i| {
        i.server.spec.signing.rotation.pre_publish = "2161h".parse().unwrap()
    }),
    ("AuthorizationServer", "spec.signing.rotation.retainRetired", "retainRetired", |i| {
        i.server.spec.signing.rotation.retain_retired = "2161h".parse().unwrap()
    }),
    ("AuthorizationServer", "spec.clientNamespaces", "Selector needs", |i| {
        i.server.spec.client_namespaces.from = crate::api::NamespaceFrom::Selector
    }),
    ("AuthorizationServer", "spec.rateLimit", "burst", |i| i.server.spec.rate_limit.as_mut().unwrap().burst = 1),
    ("AuthorizationServer", "spec.storage", "Redis needs", |i| {
        i.server.spec.storage.type_ = crate::api::StorageType::Redis
    }),
    ("AuthorizationServer", "spec.trustedIssuers[]", "either kubernetes", |i| {
        i.server.spec.trusted_issuers[1].kubernetes = Some(true)
    }),
    ("AuthorizationServer", "spec.trustedIssuers[]", "jwksUri needs issuer", |i| {
        i.server.spec.trusted_issuers[0].jwks_uri = Some("https://ci.example.com/jwks".into())
    }),
    ("AuthorizationServer", "spec.trustedIssuers[].issuer", "https URL", |i| {
        i.server.spec.trusted_issuers[1].issuer = Some("http://ci.example.com".into())
    }),
    ("AuthorizationServer", "spec.trustedIssuers[].issuer", "no fragment", |i| {
        i.server.spec.trusted_issuers[1].issuer = Some("https://ci.example.com#x".into())
    }),
    ("AuthorizationServer", "spec.trustedIssuers[].audiences", "1 to 512", |i| {
        i.server.spec.trusted_issuers[1].audiences = vec!["".into()]
    }),
    ("AuthorizationServer", "spec.trustedIssuers[].jwksUri", "https URL", |i| {
        i.server.spec.trusted_issuers[1].jwks_uri = Some("ftp://ci.example.com/jwks".into())
    }),
    ("AuthScope", "", "metadata.name is used", |i| {
        i.scopes[0].spec.name = None;
        i.scopes[0].metadata.name = Some("groups".into());
    }),
    ("AuthScope", "spec.name", "scope-token", |i| i.scopes[0].spec.name = Some("payments read".into())),
    ("AuthScope", "spec.name", "is reserved", |i| i.scopes[0].spec.name = Some("okta.users.read".into())),
    ("AuthClaim", "spec", "alwaysInclude", |i| i.claims[0].spec.always_include = Some(false)),
    ("AuthClaim", "spec.name", "start with a letter", |i| i.claims[0].spec.name = "1tenant".into()),
    ("AuthClaim", "spec.name", "reserved", |i| i.claims[0].spec.name = "idp".into()),
    ("AuthClaim", "spec.value", "CEL expression", |i| i.claims[0].spec.value = "  ".into()),
    ("AuthClaim", "spec.scopes", "1 to 256", |i| i.claims[0].spec.scopes = vec!["".into()]),
    ("AccessPolicy", "spec.rules", "unique", |i| {
        let rule = i.policies[0].spec.rules[0].clone();
        i.policies[0].spec.rules.push(rule);
    }),
    ("AccessPolicy", "spec.clients", "exactly one", |i| i.policies[0].spec.clients.all = Some(true)),
    ("AccessPolicy", "spec.clients.ids", "1 to 256", |i| i.policies[0].spec.clients.ids = Some(vec!["".into()])),
    ("AccessPolicy", "spec.clients", "not both", |i| {
        let clients = &mut i.policies[0].spec.clients;
        (clients.namespaces, clients.namespace_selector) = (Some(vec!["team".into()]), Some(Default::default()));
    }),
    ("AccessPolicy", "spec.clients.namespaces", "namespace name", |i| {
        i.policies[0].spec.clients.namespaces = Some(vec!["Team".into()])
    }),
    ("AccessPolicy", "spec.rules[]", "refreshTokenLifetime must be 0", |i| {
        i.policies[0].spec.rules[0].refresh_token_lifetime = d("10m")
    }),
    ("AccessPolicy", "spec.rules[].name", "DNS label", |i| i.policies[0].spec.rules[0].name = "R".into()),
    ("AccessPolicy", "spec.rules[].scopes", "1 to 256", |i| i.policies[0].spec.rules[0].scopes = vec!["".into()]),
    ("AccessPolicy", "spec.rules[].accessTokenLifetime", "between 5m", |i| {
        i.policies[0].spec.rules[0].access_token_lifetime = d("1m")
    }),
    ("AccessPolicy", "spec.rules[].refreshTokenLifetime", "at most 43800h", |i| {
        i.policies[0].spec.rules[0].refresh_token_lifetime = d("43801h")
    }),
    ("AccessPolicy", "spec.rules[].refreshTokenIdleTimeout", "between 10m", |i| {
        i.policies[0].spec.rules[0].refresh_token_idle_timeout = d("5m")
    }),
    ("AccessPolicy", "spec.rules[].idTokenLifetime", "between 5m", |i| {
        i.policies[0].spec.rules[0].id_token_lifetime = d("25h")
    }),
    ("AccessPolicy", "spec.rules[].users", "either everyone", |i| {
        i.policies[0].spec.rules[0].users.as_mut().unwrap().everyone = Some(true)
    }),
    ("AccessPolicy", "spec.rules[].users.groups", "1 to 256", |i| {
        i.policies[0].spec.rules[0].users.as_mut().unwrap().groups = Some(vec!["".into()])
    }),
    ("AccessPolicy", "spec.rules[].users.subjects", "1 to 256", |i| {
        i.policies[0].spec.rules[0].users.as_mut().unwrap().subjects = Some(vec!["".into()])
    }),
    ("AuthClient", "spec", "authorization_code needs", |i| i.clients[0].client.spec.redirect_uris = vec![]),
    ("AuthClient", "spec", "public client", |i| {
        let spec = &mut i.clients[0].client.spec;
        (spec.authentication.method, spec.authentication.secret_name) = (AuthMethod::None, None);
    }),
    ("AuthClient", "spec.clientId", "start with a letter", |i| {
        i.clients[0].client.spec.client_id = Some("system:serviceaccount:team:api".into())
    }),
    ("AuthClient", "spec.grantTypes", "not repeat", |i| {
        i.clients[0].client.spec.grant_types.push(crate::api::GrantType::ClientCredentials)
    }),
    ("AuthClient", "spec.redirectUris", "redirect URI", |i| {
        i.clients[0].client.spec.redirect_uris = vec!["https://app.example.com/cb#x".into()]
    }),
    ("AuthClient", "spec.postLogoutRedirectUris", "post-logout", |i| {
        i.clients[0].client.spec.post_logout_redirect_uris = vec!["http://app.example.com/".into()]
    }),
    ("AuthClient", "spec.authentication", "PrivateKeyJwt needs", |i| {
        i.clients[0].client.spec.authentication.method = AuthMethod::PrivateKeyJwt
    }),
    ("AuthClient", "spec.authentication", "ServiceAccount needs", |i| {
        i.clients[0].client.spec.authentication.method = AuthMethod::ServiceAccount
    }),
    ("AuthClient", "spec.authentication", "apply only", |i| {
        i.clients[0].client.spec.authentication.jwks_uri = Some("https://app.example.com/jwks".into())
    }),
    ("AuthClient", "spec.authentication.secretName", "valid Secret name", |i| {
        i.clients[0].client.spec.authentication.secret_name = Some("Api_OAuth".into())
    }),
    ("AuthClient", "spec.authentication.jwksUri", "https URL", |i| {
        let auth = &mut i.clients[0].client.spec.authentication;
        (auth.method, auth.jwks_uri) = (AuthMethod::PrivateKeyJwt, Some("ftp://app.example.com/jwks".into()));
    }),
];

/// What compile refused: the server's error, or the rejections of `kind`.
fn refusals(c: &Compiled, kind: &str) -> Vec<String> {
    if kind == "AuthorizationServer" {
        c.server_error.iter().map(|e| format!("{}: {}", e.reason, e.message)).collect()
    } else {
        c.rejected.iter().filter(|r| r.kind == kind).map(|r| format!("{}: {}", r.reason, r.message)).collect()
    }
}

#[test]
fn every_rule_the_crds_enforce_also_holds_in_compile() {
    let base = compile(&full_input());
    assert_eq!((base.rejected.clone(), base.server_error.clone()), (vec![], None), "the base input is valid");
    let rules = crd_rules();
    let covered = |(kind, path, message): &(String, String, String)| {
        BROKEN_RULES.iter().any(|(k, p, piece, _)| k == kind && p == path && message.contains(piece))
    };
    let uncovered: Vec<_> = rules.iter().filter(|r| !covered(r)).collect();
    assert!(uncovered.is_empty(), "CRD rules without a compile counterpart and a case here: {uncovered:#?}");
    for (kind, path, piece, breaks) in BROKEN_RULES {
        let (_, _, message) = rules
            .iter()
            .find(|(k, p, m)| k == kind && p == path && m.contains(piece))
            .unwrap_or_else(|| panic!("no CRD rule {kind} {path} {piece:?}: remove the case"));
        let mut i = full_input();
        breaks(&mut i);
        let refused = refusals(&compile(&i), kind);
        assert!(
            refused.len() == 1 && refused[0].contains(message.as_str()),
            "{kind} {path}: breaking {message:?} was refused as {refused:?}"
        );
    }
}

// --- what the platform asserts against what a tenant asserts (item 4 of issue 17) ---

fn gold_policy(clients: &str) -> AccessPolicy {
    yaml(&format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: gold, namespace: identity }}\nspec:\n  serverRef: {{ name: payments }}\n  clients: {clients}\n  rules: [ {{ name: r, grantTypes: [client_credentials], scopes: ['*'] }} ]\n"
    ))
}

fn in_namespace(mut c: ClientInput, ns: &str, id: &str) -> ClientInput {
    c.client.metadata.namespace = Some(ns.into());
    c.client.spec.client_id = Some(id.into());
    c
}

#[test]
fn a_label_selector_alone_selects_only_clients_of_the_servers_namespace() {
    let mut i = input();
    i.clients = vec![
        in_namespace(client("own", "x", "2026-01-01T00:00:00Z", "tier: gold"), "identity", "console"),
        client("evil", "team.evil", "2026-01-01T00:00:00Z", "tier: gold"),
    ];
    i.policies = vec![gold_policy("{ selector: { matchLabels: { tier: gold } } }")];
    let c = compile(&i);
    assert_eq!(c.config.policies[0].clients, PolicyClients::Ids(vec!["console".into()]));
}

#[test]
fn namespace_selectors_match_the_platforms_namespace_labels_never_the_clients_own() {
    let mut i = input();
    i.clients = vec![
        client("gold", "team.gold", "2026-01-01T00:00:00Z", ""),
        in_namespace(client("evil", "x", "2026-01-01T00:00:00Z", "tier: gold"), "evil", "evil.app"),
        in_namespace(client("unread", "x", "2026-01-01T00:00:00Z", ""), "unread", "unread.app"),
    ];
    i.namespace_labels = BTreeMap::from([
        ("team".to_owned(), BTreeMap::from([("tier".to_owned(), "gold".to_owned())])),
        ("evil".to_owned(), BTreeMap::from([("tier".to_owned(), "free".to_owned())])),
    ]);
    i.policies = vec![gold_policy("{ all: true, namespaceSelector: { matchLabels: { tier: gold } } }")];
    let c = compile(&i);
    assert_eq!(c.config.policies[0].clients, PolicyClients::Ids(vec!["team.gold".into()]));
    // An empty selector takes every namespace the issuer has read, and only those.
    i.policies = vec![gold_policy("{ selector: { matchLabels: { tier: gold } }, namespaceSelector: {} }")];
    let c = compile(&i);
    assert_eq!(c.config.policies[0].clients, PolicyClients::Ids(vec!["evil.app".into()]));
    let gold = c.config.client("team.gold").unwrap();
    assert_eq!(gold.namespace_labels.get("tier").map(String::as_str), Some("gold"));
}

#[test]
fn only_the_servers_namespace_and_its_trusted_clients_are_first_party() {
    let mut i = input();
    i.server.spec.trusted_clients = vec!["team.b".into()];
    i.clients = vec![
        client("a", "team.a", "2026-01-01T00:00:00Z", ""),
        client("b", "team.b", "2026-01-01T00:00:00Z", ""),
        in_namespace(client("own", "x", "2026-01-01T00:00:00Z", ""), "identity", "console"),
    ];
    let c = compile(&i);
    let trusted: Vec<_> = c.config.clients.iter().filter(|c| c.trusted).map(|c| c.client_id.as_str()).collect();
    assert_eq!(trusted, ["console", "team.b"]);
}

#[test]
fn a_namespace_with_more_labels_than_cel_admits_leaves_its_clients_out() {
    let mut i = input();
    i.clients = vec![client("a", "team.a", "2026-01-01T00:00:00Z", "")];
    let labels = (0..65).map(|n| (format!("l{n}"), "v".to_owned())).collect();
    i.namespace_labels = BTreeMap::from([("team".to_owned(), labels)]);
    let c = compile(&i);
    assert!(c.config.clients.is_empty());
    assert_eq!(c.rejected[0].reason, INVALID_NAMESPACE_LABELS);
    assert!(c.rejected[0].message.contains("at most 64"), "{}", c.rejected[0].message);
}

#[test]
fn compile_admits_only_the_clients_of_namespaces_the_server_admits() {
    use crate::api::NamespaceFrom;
    use crate::config::subjects::NAMESPACE_NOT_ALLOWED;
    let mut i = input();
    i.clients = vec![
        client("a", "team.a", "2026-01-01T00:00:00Z", ""),
        in_namespace(client("own", "x", "2026-01-01T00:00:00Z", ""), "identity", "console"),
    ];
    let ids = |c: &Compiled| c.config.clients.iter().map(|c| c.client_id.clone()).collect::<Vec<_>>();
    i.server.spec.client_namespaces.from = NamespaceFrom::Same;
    let c = compile(&i);
    assert_eq!(ids(&c), ["console"]);
    assert_eq!((c.rejected[0].name.as_str(), c.rejected[0].reason.as_str()), ("a", NAMESPACE_NOT_ALLOWED));
    assert!(c.rejected[0].message.contains("namespace team may not hold clients"), "{}", c.rejected[0].message);
    // A selector reads the platform's labels of the namespace, as both sources pass them.
    i.server.spec.client_namespaces = yaml("{ from: Selector, selector: { matchLabels: { clients: payments } } }");
    assert_eq!(ids(&compile(&i)), ["console"]);
    i.namespace_labels = BTreeMap::from([("team".to_owned(), BTreeMap::from([("clients".into(), "payments".into())]))]);
    assert_eq!(ids(&compile(&i)), ["console", "team.a"]);
}

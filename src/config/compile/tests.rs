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
    CompileInput {
        server: server(),
        scopes: vec![],
        claims: vec![],
        policies: vec![],
        clients: vec![],
        identity_secrets: IdentitySecrets::default(),
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
    i.policies = vec![yaml(&format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{ name: deep, namespace: identity }}\nspec:\n  serverRef: {{ name: payments }}\n  priority: 0\n  clients: {{ all: true }}\n  rules: [ {{ name: r, grantTypes: [client_credentials], scopes: ['*'], condition: '{}' }} ]\n",
        format!("{}true{}", "[".repeat(90), "]".repeat(90))
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
            ("InvalidMetadata", "metadata value of \"tenant\" is 1025 bytes long; at most 1024")
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
    assert_eq!(c.identity_error, None);
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
    assert_eq!(identity.users[0].subject(), "alice");
    assert_eq!(identity.users[0].password_hash, ALICE_HASH);
}

#[test]
fn server_without_identity_compiles_to_none() {
    let c = compile(&input());
    assert_eq!((c.config.identity, c.identity_error), (None, None));
}

#[test]
fn missing_upstream_secret_or_key_is_a_precise_error_and_no_identity() {
    let mut i = identity_input();
    i.identity_secrets.secrets.remove("corp-oidc");
    let c = compile(&i);
    assert_eq!(c.config.identity, None);
    let e = c.identity_error.unwrap();
    assert_eq!(e.reason, IDENTITY_SECRET_NOT_FOUND);
    assert_eq!(e.message, "Secret identity/corp-oidc (client secret of upstream corp) was not found");

    let mut i = identity_input();
    i.identity_secrets.secrets.get_mut("corp-oidc").unwrap().remove("partner");
    let e = compile(&i).identity_error.unwrap();
    assert_eq!(e.reason, IDENTITY_SECRET_NOT_FOUND);
    assert_eq!(e.message, "Secret identity/corp-oidc (client secret of upstream partner) has no key partner");

    let mut i = identity_input();
    i.identity_secrets.secrets.remove("people");
    let e = compile(&i).identity_error.unwrap();
    assert_eq!(e.message, "Secret identity/people (static users) was not found");
}

#[test]
fn invalid_static_users_are_reported_without_quoting_the_secret() {
    let mut i = identity_input();
    let people = i.identity_secrets.secrets.get_mut("people").unwrap();
    people.insert("users.yaml".into(), b"- username: alice\n  passwordHash: hunter2-plain\n".to_vec());
    let c = compile(&i);
    assert_eq!(c.config.identity, None);
    let e = c.identity_error.unwrap();
    assert_eq!(e.reason, INVALID_STATIC_USERS);
    assert!(e.message.starts_with("key users.yaml of Secret identity/people: "), "{}", e.message);
    assert!(!e.message.contains("hunter2"), "{}", e.message);

    let people = i.identity_secrets.secrets.get_mut("people").unwrap();
    people.insert("users.yaml".into(), b"{ not: [a list".to_vec());
    let e = compile(&i).identity_error.unwrap();
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

use serde_json::json;

use super::*;

fn config() -> ServerConfig {
    serde_json::from_value(json!({
        "name": "payments", "namespace": "identity", "issuer": "http://127.0.0.1:8080/oauth2/payments",
        "audiences": ["api://payments"],
        "signing": { "algorithm": "ES256", "mode": "Automatic", "periodSecs": 1000, "prePublishSecs": 100, "retainRetiredSecs": 300 },
        "jwksMaxAgeSecs": 50,
        "scopes": [
            { "name": "payments:read", "default": true, "discoverable": true },
            { "name": "payments:write", "discoverable": true },
            { "name": "payments:admin" }
        ],
        "claims": [
            { "name": "tenant", "token": "AccessToken", "value": "has(client.metadata.tenant) ? client.metadata.tenant : null" },
            { "name": "k8s_namespace", "token": "AccessToken", "value": "client.namespace", "scopes": ["payments:write"] },
            { "name": "groups", "token": "IdToken", "value": "user == null ? null : user.groups" }
        ],
        "policies": [
            { "name": "machine", "priority": 1, "clients": "all", "rules": [
                { "name": "small", "grantTypes": ["client_credentials"], "scopes": ["payments:read", "payments:write"],
                  "condition": "request.scopes.size() <= 1", "accessTokenLifetimeSecs": 3600,
                  "refreshTokenLifetimeSecs": 0, "refreshTokenIdleTimeoutSecs": 0, "idTokenLifetimeSecs": 3600 }
            ]},
            { "name": "admins", "priority": 2, "clients": { "ids": ["team.admin"] }, "rules": [
                { "name": "admin", "grantTypes": ["client_credentials"], "scopes": ["*"], "accessTokenLifetimeSecs": 900,
                  "refreshTokenLifetimeSecs": 0, "refreshTokenIdleTimeoutSecs": 0, "idTokenLifetimeSecs": 3600 }
            ]}
        ],
        "clients": [
            { "clientId": "team.api", "namespace": "team", "name": "api", "grantTypes": ["client_credentials"],
              "authMethod": "ClientSecretBasic", "metadata": { "tenant": "acme" } },
            { "clientId": "team.admin", "namespace": "team", "name": "admin", "grantTypes": ["client_credentials"],
              "authMethod": "ClientSecretPost" }
        ]
    }))
    .unwrap()
}

fn request<'a>(config: &'a ServerConfig, client: &str, scopes: Option<&[&str]>) -> TokenRequest<'a> {
    TokenRequest {
        client: config.client(client).unwrap(),
        grant_type: GrantType::ClientCredentials,
        scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
        user: None,
        subject: None,
        audience: config.audiences.clone(),
    }
}

#[test]
fn first_matching_rule_decides_scopes_and_lifetime() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    let d = e.decide(&c, &request(&c, "team.api", Some(&["payments:write"])));
    let g = d.outcome.unwrap();
    assert_eq!((g.policy.as_str(), g.rule.as_str()), ("machine", "small"));
    assert_eq!(g.scopes, ["payments:write"]);
    assert_eq!(g.access_token_lifetime_secs, 3600);
}

#[test]
fn default_scopes_apply_when_none_requested() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    let d = e.decide(&c, &request(&c, "team.api", None));
    assert_eq!(d.outcome.unwrap().scopes, ["payments:read"]);
}

#[test]
fn scope_not_allowed_is_invalid_scope_and_trace_says_why() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    let d = e.decide(&c, &request(&c, "team.api", Some(&["payments:admin"])));
    assert_eq!(d.outcome, Err(Denial::InvalidScope));
    assert!(d.trace[0].rules[0].reasons.iter().any(|r| r.contains("payments:admin is not allowed")));
    assert!(d.trace[1].skipped.is_some());
}

#[test]
fn later_policy_matches_when_earlier_one_does_not() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    let d = e.decide(&c, &request(&c, "team.admin", Some(&["payments:admin", "payments:read"])));
    let g = d.outcome.unwrap();
    assert_eq!(g.policy, "admins");
    assert_eq!(g.access_token_lifetime_secs, 900);
    assert_eq!(d.trace[0].rules[0].reasons, ["condition is false", "scope payments:admin is not allowed by the rule"]);
}

#[test]
fn disallowed_grant_is_access_denied() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    let mut r = request(&c, "team.api", Some(&["payments:read"]));
    r.grant_type = GrantType::TokenExchange;
    assert_eq!(e.decide(&c, &r).outcome, Err(Denial::AccessDenied));
}

#[test]
fn claims_are_cel_values_with_nulls_omitted_and_scope_filters() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    let scopes = vec!["payments:read".to_owned()];
    let vars =
        CelVariables::new(&c, c.client("team.api").unwrap(), GrantType::ClientCredentials, &scopes, &[], None, None);
    let (claims, errors) = e.claims(TokenKind::AccessToken, &vars, &scopes, true);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(Value::Object(claims), json!({ "tenant": "acme" }));
    let vars =
        CelVariables::new(&c, c.client("team.admin").unwrap(), GrantType::ClientCredentials, &scopes, &[], None, None);
    let write = vec!["payments:write".to_owned()];
    let (claims, _) = e.claims(TokenKind::AccessToken, &vars, &write, true);
    assert_eq!(Value::Object(claims), json!({ "k8s_namespace": "team" }));
}

#[test]
fn remembered_outcomes_are_the_ones_cel_gives() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    // The condition reads `request`: remembered per client and request, never across them.
    for _ in 0..3 {
        let one = e.decide(&c, &request(&c, "team.api", Some(&["payments:read"])));
        assert!(one.outcome.is_ok());
        let two = e.decide(&c, &request(&c, "team.api", Some(&["payments:read", "payments:write"])));
        assert_eq!(two.trace[0].rules[0].reasons, ["condition is false"]);
        let other_grant = e.decide(
            &c,
            &TokenRequest { grant_type: GrantType::TokenExchange, ..request(&c, "team.api", Some(&["payments:read"])) },
        );
        assert_eq!(other_grant.outcome, Err(Denial::AccessDenied));
    }
    // `tenant` reads only `client`: worked out per client when the engine is built.
    assert!(e.claims[0].program.per_client.is_some() && e.conditions[0][0].as_ref().unwrap().per_request.is_some());
    assert!(e.claims[2].program.per_client.is_none() && e.claims[2].program.per_request.is_none());
    let scopes = vec!["payments:read".to_owned()];
    for (client, tenant) in [("team.api", json!({ "tenant": "acme" })), ("team.admin", json!({}))] {
        let vars =
            CelVariables::new(&c, c.client(client).unwrap(), GrantType::ClientCredentials, &scopes, &[], None, None);
        assert_eq!(Value::Object(e.claims(TokenKind::AccessToken, &vars, &scopes, true).0), tenant);
    }
}

#[test]
fn memory_of_request_outcomes_is_bounded() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    let memo = || e.conditions[0][0].as_ref().unwrap().per_request.as_ref().unwrap().read().unwrap().len();
    for i in 0..(MEMO_ENTRIES + 10) {
        let scope = format!("s{i}");
        e.decide(&c, &request(&c, "team.api", Some(&[scope.as_str()])));
        assert!(memo() <= MEMO_ENTRIES);
    }
    assert!(memo() > 0);
}

#[test]
fn programs_that_read_a_person_or_a_subject_are_never_remembered() {
    // Reads hidden in macros and comprehensions count as reads.
    for source in [
        "has(user.email) ? user.email : null",
        "request.scopes.exists(s, s == user.sub)",
        "[1].map(x, subject)",
        "client.name + (has(subject.sub) ? subject.sub : '')",
    ] {
        let program = compile_cel(|| source.to_owned(), source).unwrap();
        let fixed = PolicyEngine::new(&config()).unwrap().fixed;
        let compiled: Compiled<Result<Value, String>> = Compiled::new(&fixed, program);
        assert!(compiled.per_client.is_none() && compiled.per_request.is_none(), "{source}");
    }
}

#[test]
fn requests_with_variables_beyond_the_limits_expressions_were_admitted_for_are_refused() {
    let c = config();
    let e = PolicyEngine::new(&c).unwrap();
    let many: Vec<String> = (0..=limits::SCOPES).map(|n| format!("s{n}")).collect();
    let mut r = request(&c, "team.api", None);
    r.scopes = Some(many);
    let d = e.decide(&c, &r);
    assert_eq!(d.outcome, Err(Denial::TooLarge("request")));
    assert!(d.denial_description().contains("at most 64 scopes"), "{}", d.denial_description());

    let user = UserInfo {
        sub: "alice".into(),
        groups: (0..=limits::GROUPS).map(|n| format!("g{n}")).collect(),
        ..UserInfo::default()
    };
    let mut r = request(&c, "team.api", Some(&["payments:read"]));
    r.user = Some(&user);
    assert_eq!(e.decide(&c, &r).outcome, Err(Denial::TooLarge("user")));
    let subject: Map<String, Value> = [("blob".to_owned(), json!("x".repeat(20_000)))].into_iter().collect();
    let mut r = request(&c, "team.api", Some(&["payments:read"]));
    r.subject = Some(&subject);
    assert_eq!(e.decide(&c, &r).outcome, Err(Denial::TooLarge("subject")));
    // Within the limits, decided as before.
    assert!(e.decide(&c, &request(&c, "team.api", Some(&["payments:read"]))).outcome.is_ok());
}

#[test]
fn the_shapes_expressions_are_estimated_for_name_every_field_of_the_variables() {
    let c = config();
    let user = UserInfo { sub: "alice".into(), ..UserInfo::default() };
    let vars = CelVariables::new(&c, &c.clients[0], GrantType::AuthorizationCode, &[], &[], Some(&user), None);
    for (i, name) in ["client", "user", "request", "server"].into_iter().enumerate() {
        let json = vars.json(i);
        let Some(crate::expression::Shape::Object(fields)) = crate::expression::variable_shape(name) else {
            panic!("{name}")
        };
        for key in json.as_object().unwrap().keys() {
            assert!(
                fields.iter().any(|(f, _)| f == key),
                "{name}.{key} has no bound in crate::expression::variable_shape"
            );
        }
    }
}

#[test]
fn conditions_read_what_the_platform_asserts_about_a_client() {
    let mut c = config();
    c.policies[0].rules[0].condition =
        Some("client.trusted || ('tier' in client.namespaceLabels && client.namespaceLabels['tier'] == 'gold')".into());
    c.clients[0].namespace_labels = [("tier".to_owned(), "gold".to_owned())].into();
    c.clients[1].metadata = [("tier".to_owned(), "gold".to_owned())].into();
    let e = PolicyEngine::new(&c).unwrap();
    let gold = e.decide(&c, &request(&c, "team.api", Some(&["payments:read"])));
    assert!(gold.outcome.is_ok(), "the namespace's label counts");
    let claims_gold = e.decide(&c, &request(&c, "team.admin", Some(&["payments:read"])));
    assert_eq!(claims_gold.outcome.unwrap().policy, "admins", "the client's own metadata does not");
    c.clients[1].trusted = true;
    let e = PolicyEngine::new(&c).unwrap();
    let trusted = e.decide(&c, &request(&c, "team.admin", Some(&["payments:read"])));
    assert_eq!(trusted.outcome.unwrap().policy, "machine");
}

#[test]
fn the_platforms_client_fields_have_bounded_shapes_for_the_cost_estimate() {
    let client = crate::expression::variable_shape("client").unwrap();
    let labels = client.field("namespaceLabels");
    assert_eq!(labels.len(), limits::NAMESPACE_LABELS);
    assert_eq!(labels.elem(), crate::expression::Shape::Text(limits::NAMESPACE_LABEL_KEY_BYTES));
    assert_eq!(client.field("trusted"), crate::expression::Shape::Scalar);
}

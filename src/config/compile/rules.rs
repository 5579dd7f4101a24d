//! The rules the CRDs enforce at admission (their `x-kubernetes-validations`), checked again
//! here: `tessera serve` has no admission, and an object stored before a rule existed is never
//! checked again by the API server. Each message is the CRD rule's own, after the path of the
//! field it is about; `tests.rs` walks every rule of the generated CRDs and proves that each
//! one has its counterpart here.

use std::collections::HashSet;
use std::time::Duration as StdDuration;

use crate::api::{
    AccessPolicySpec, AuthClaimSpec, AuthClientSpec, AuthMethod, AuthScope, AuthorizationServerSpec, Duration,
    GrantType, NamespaceFrom, RESERVED_CLAIMS, StorageType, TokenKind,
};
use crate::config::subjects::STATIC_IDP;

/// `Accepted=False` (or `ConfigReady=False`) reason of an object that breaks a CRD rule.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// The violations found, each `path: message`.
#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    fn check(&mut self, ok: bool, path: &str, message: &str) {
        if !ok {
            self.0.push(format!("{path}: {message}"));
        }
    }
}

fn secs(s: u64) -> StdDuration {
    StdDuration::from_secs(s)
}

fn within(d: &Duration, min: StdDuration, max: StdDuration) -> bool {
    (min..=max).contains(&d.as_std())
}

fn optional_within(d: &Option<Duration>, min: StdDuration, max: StdDuration) -> bool {
    d.as_ref().is_none_or(|d| within(d, min, max))
}

fn unique<T: Eq + std::hash::Hash>(items: impl IntoIterator<Item = T>) -> bool {
    let mut seen = HashSet::new();
    items.into_iter().all(|i| seen.insert(i))
}

fn each_sized(items: &[String], max: usize) -> bool {
    items.iter().all(|i| !i.is_empty() && i.chars().count() <= max)
}

/// A DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit.
fn dns_label(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.chars().next().is_some_and(ok) && s.chars().last().is_some_and(ok) && s.chars().all(|c| ok(c) || c == '-')
}

/// CEL `cel_https_or_loopback`: an absolute https URL, or http on localhost, 127.0.0.1 or [::1].
fn https_or_loopback(s: &str) -> bool {
    let Ok(url) = url::Url::parse(s) else { return false };
    let host = url.host_str().unwrap_or_default();
    !host.is_empty()
        && (url.scheme() == "https"
            || (url.scheme() == "http" && ["localhost", "127.0.0.1", "[::1]", "::1"].contains(&host)))
}

/// `scheme://host[:port]` with no path: https, or http on a loopback host.
fn trusted_origin(o: &str) -> bool {
    if o.len() > 256 {
        return false;
    }
    if let Some(host) = o.strip_prefix("https://") {
        return !host.is_empty() && !host.contains(['/', '?', '#']) && !host.chars().any(char::is_whitespace);
    }
    let Some(rest) = o.strip_prefix("http://") else { return false };
    let port_ok = |p: &str| p.is_empty() || (p.len() > 1 && p[1..].chars().all(|c| c.is_ascii_digit()));
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .any(|h| rest.strip_prefix(h).is_some_and(|p| p.is_empty() || (p.starts_with(':') && port_ok(p))))
}

/// The AuthScope rule on names: reserved and Okta's own scopes are refused.
fn scope_name_allowed(name: &str) -> bool {
    !["openid", "profile", "email", "address", "phone", "offline_access", "device_sso", "groups", "*", "okta"]
        .contains(&name)
        && !name.starts_with("okta.")
        && !name.starts_with("okta:")
}

/// RFC 6749 scope-token: printable ASCII without space, `"` or `\`.
fn scope_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

pub(super) fn server(spec: &AuthorizationServerSpec) -> Vec<String> {
    let mut v = Violations::default();
    v.check(
        spec.storage.type_ != StorageType::Memory || spec.workload.replicas == 1,
        "spec.workload.replicas",
        "storage.type Memory keeps token state in one pod: set workload.replicas to 1, or use storage.type Redis for several replicas",
    );
    v.check(
        https_or_loopback(&spec.issuer),
        "spec.issuer",
        "issuer must be an absolute https URL (http is allowed only for localhost, 127.0.0.1 or [::1])",
    );
    v.check(
        !spec.issuer.contains(['?', '#']) && !spec.issuer.ends_with('/'),
        "spec.issuer",
        "issuer must have no query, no fragment and no trailing slash",
    );
    v.check(each_sized(&spec.audiences, 512), "spec.audiences", "each audience must be 1 to 512 characters");
    if let Some(outbound) = &spec.outbound {
        v.check(
            outbound.allowed_url_prefixes.iter().all(|p| !p.contains(['?', '#']) && https_or_loopback(p)),
            "spec.outbound.allowedUrlPrefixes",
            "each allowed URL prefix must be an absolute https URL (http only on localhost) without query or fragment",
        );
    }
    v.check(unique(&spec.audiences), "spec.audiences", "audiences must not repeat");
    v.check(
        spec.trusted_clients.len() <= 256 && each_sized(&spec.trusted_clients, 256),
        "spec.trustedClients",
        "at most 256 trusted client ids, each 1 to 256 characters",
    );
    v.check(
        spec.trusted_origins.iter().all(|o| trusted_origin(o)),
        "spec.trustedOrigins",
        "each trusted origin must be scheme://host[:port] with no path: https, or http on localhost",
    );
    if let Some(identity) = &spec.identity {
        v.check(
            !identity.upstreams.is_empty() || identity.static_users.is_some(),
            "spec.identity",
            "identity needs at least one of upstreams or staticUsers",
        );
        v.check(
            within(&identity.session_lifetime, secs(60), secs(720 * 3600)),
            "spec.identity.sessionLifetime",
            "sessionLifetime must be between 1m and 720h",
        );
        v.check(
            unique(identity.upstreams.iter().map(|u| &u.name)),
            "spec.identity.upstreams",
            "upstream names must be unique",
        );
        for u in &identity.upstreams {
            v.check(
                dns_label(&u.name),
                "spec.identity.upstreams.name",
                "upstream name must be lowercase letters, digits and '-'",
            );
            v.check(
                u.name != STATIC_IDP,
                "spec.identity.upstreams.name",
                "upstream name static is reserved: static users' subjects are static|<username>",
            );
            v.check(
                https_or_loopback(&u.issuer),
                "spec.identity.upstreams.issuer",
                "upstream issuer must be an https URL (http only on localhost)",
            );
        }
    }
    let rotation = &spec.signing.rotation;
    v.check(
        within(&rotation.period, secs(5), secs(8760 * 3600)),
        "spec.signing.rotation.period",
        "rotation.period must be between 5s and 8760h (one year)",
    );
    v.check(
        rotation.pre_publish.as_std() <= secs(2160 * 3600),
        "spec.signing.rotation.prePublish",
        "rotation.prePublish must be at most 2160h (90 days)",
    );
    v.check(
        rotation.retain_retired.as_std() <= secs(2160 * 3600),
        "spec.signing.rotation.retainRetired",
        "rotation.retainRetired must be at most 2160h (90 days)",
    );
    v.check(
        spec.client_namespaces.from != NamespaceFrom::Selector || spec.client_namespaces.selector.is_some(),
        "spec.clientNamespaces.selector",
        "clientNamespaces.from Selector needs clientNamespaces.selector",
    );
    if let Some(r) = &spec.rate_limit {
        v.check(
            r.burst >= r.per_client,
            "spec.rateLimit.burst",
            "rateLimit.burst must be at least rateLimit.perClient",
        );
    }
    v.check(
        spec.storage.type_ != StorageType::Redis || spec.storage.redis.is_some(),
        "spec.storage.redis",
        "storage.type Redis needs storage.redis.urlSecretRef",
    );
    for t in &spec.trusted_issuers {
        v.check(
            t.kubernetes.unwrap_or(false) != t.issuer.is_some(),
            "spec.trustedIssuers",
            "a trusted issuer sets either kubernetes: true or issuer, not both and not neither",
        );
        let jwks_uri = t.jwks_uri.as_deref().unwrap_or_default();
        v.check(jwks_uri.is_empty() || t.issuer.is_some(), "spec.trustedIssuers.jwksUri", "jwksUri needs issuer");
        if let Some(issuer) = &t.issuer {
            v.check(
                https_or_loopback(issuer),
                "spec.trustedIssuers.issuer",
                "trusted issuer must be an https URL (http only on localhost)",
            );
            v.check(
                !issuer.contains('#'),
                "spec.trustedIssuers.issuer",
                "trusted issuer must have no fragment: exchanged subjects are <issuer>#<sub>",
            );
        }
        v.check(
            each_sized(&t.audiences, 512),
            "spec.trustedIssuers.audiences",
            "each audience must be 1 to 512 characters",
        );
        v.check(
            jwks_uri.is_empty() || https_or_loopback(jwks_uri),
            "spec.trustedIssuers.jwksUri",
            "jwksUri must be an https URL (http only on localhost)",
        );
    }
    v.0
}

pub(super) fn scope(s: &AuthScope) -> Vec<String> {
    let mut v = Violations::default();
    match &s.spec.name {
        None => v.check(
            scope_name_allowed(s.metadata.name.as_deref().unwrap_or_default()),
            "metadata.name",
            "metadata.name is used as the scope name and is reserved: set spec.name to another scope (openid, profile, email, address, phone, offline_access are built in)",
        ),
        Some(name) => {
            v.check(
                scope_token(name),
                "spec.name",
                "scope name must be printable ASCII without spaces, double quotes or backslashes (RFC 6749 scope-token)",
            );
            v.check(
                scope_name_allowed(name),
                "spec.name",
                "scope name is reserved: openid, profile, email, address, phone, offline_access are built in, and '*', 'okta' and okta.* / okta:* are not allowed",
            );
        }
    }
    v.0
}

pub(super) fn claim(spec: &AuthClaimSpec) -> Vec<String> {
    let mut v = Violations::default();
    v.check(
        spec.token == TokenKind::IdToken || spec.always_include.unwrap_or(true),
        "spec.alwaysInclude",
        "alwaysInclude: false applies to IdToken claims only; access token claims are always included",
    );
    let mut chars = spec.name.chars();
    v.check(
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')),
        "spec.name",
        "claim name must start with a letter or underscore and contain only letters, digits, '_', '.', ':', '/' or '-'",
    );
    v.check(
        !RESERVED_CLAIMS.contains(&spec.name.as_str()),
        "spec.name",
        "claim name is reserved (iss sub aud exp nbf iat jti cid uid scp ver client_id auth_time nonce at_hash c_hash amr azp typ are set by the issuer): choose another name",
    );
    v.check(!spec.value.trim().is_empty(), "spec.value", "value must be a CEL expression, e.g. client.metadata.tenant");
    v.check(each_sized(&spec.scopes, 256), "spec.scopes", "each scope must be 1 to 256 characters");
    v.0
}

pub(super) fn policy(spec: &AccessPolicySpec) -> Vec<String> {
    let mut v = Violations::default();
    v.check(unique(spec.rules.iter().map(|r| &r.name)), "spec.rules", "rule names must be unique within a policy");
    let c = &spec.clients;
    v.check(
        [c.all.unwrap_or(false), c.ids.is_some(), c.selector.is_some()].iter().filter(|x| **x).count() == 1,
        "spec.clients",
        "clients must set exactly one of all: true, ids or selector",
    );
    if let Some(ids) = &c.ids {
        v.check(each_sized(ids, 256), "spec.clients.ids", "each client id must be 1 to 256 characters");
    }
    v.check(
        c.namespaces.is_none() || c.namespace_selector.is_none(),
        "spec.clients",
        "clients may set namespaces or namespaceSelector, not both",
    );
    if let Some(namespaces) = &c.namespaces {
        v.check(
            namespaces.iter().all(|n| n.len() <= 63 && dns_label(n)),
            "spec.clients.namespaces",
            "each namespace must be a namespace name: lowercase letters, digits and '-'",
        );
    }
    let (min5, day, min10, years5) = (secs(300), secs(24 * 3600), secs(600), secs(43800 * 3600));
    for r in &spec.rules {
        v.check(
            match (&r.refresh_token_lifetime, &r.access_token_lifetime) {
                (Some(refresh), Some(access)) => refresh.as_std().is_zero() || refresh.as_std() >= access.as_std(),
                _ => true,
            },
            "spec.rules.refreshTokenLifetime",
            "refreshTokenLifetime must be 0 (unlimited) or at least accessTokenLifetime",
        );
        v.check(
            dns_label(&r.name),
            "spec.rules.name",
            "rule name must be a DNS label: lowercase letters, digits and '-'",
        );
        v.check(each_sized(&r.scopes, 256), "spec.rules.scopes", "each scope must be 1 to 256 characters");
        v.check(
            optional_within(&r.access_token_lifetime, min5, day),
            "spec.rules.accessTokenLifetime",
            "accessTokenLifetime must be between 5m and 24h",
        );
        v.check(
            optional_within(&r.refresh_token_lifetime, StdDuration::ZERO, years5),
            "spec.rules.refreshTokenLifetime",
            "refreshTokenLifetime must be at most 43800h (5 years), or 0 for unlimited",
        );
        v.check(
            optional_within(&r.refresh_token_idle_timeout, min10, years5),
            "spec.rules.refreshTokenIdleTimeout",
            "refreshTokenIdleTimeout must be between 10m and 43800h (5 years)",
        );
        v.check(
            optional_within(&r.id_token_lifetime, min5, day),
            "spec.rules.idTokenLifetime",
            "idTokenLifetime must be between 5m and 24h",
        );
        if let Some(u) = &r.users {
            v.check(
                u.everyone.unwrap_or(false) != (u.groups.is_some() || u.subjects.is_some()),
                "spec.rules.users",
                "users must set either everyone: true, or groups and/or subjects",
            );
            let sized = |l: &Option<Vec<String>>| l.as_deref().is_none_or(|l| each_sized(l, 256));
            v.check(sized(&u.groups), "spec.rules.users.groups", "each group must be 1 to 256 characters");
            v.check(sized(&u.subjects), "spec.rules.users.subjects", "each subject must be 1 to 256 characters");
        }
    }
    v.0
}

/// The client's CRD rules but `clientId`'s, which [`crate::config::subjects::client_id_refusal`] checks.
pub(super) fn client(spec: &AuthClientSpec) -> Vec<String> {
    let mut v = Violations::default();
    v.check(
        spec.metadata.iter().all(|(k, val)| k.chars().count() <= 256 && val.chars().count() <= 1024),
        "spec.metadata",
        "each metadata key must be at most 256 characters and each value at most 1024",
    );
    let grants = &spec.grant_types;
    v.check(
        !grants.contains(&GrantType::AuthorizationCode) || !spec.redirect_uris.is_empty(),
        "spec.redirectUris",
        "grant type authorization_code needs at least one redirectUris entry",
    );
    let auth = &spec.authentication;
    v.check(
        auth.method != AuthMethod::None
            || !grants.iter().any(|g| matches!(g, GrantType::ClientCredentials | GrantType::TokenExchange)),
        "spec.authentication.method",
        "a public client (authentication.method None) cannot use client_credentials or token-exchange: choose a method that authenticates",
    );
    v.check(unique(grants), "spec.grantTypes", "grantTypes must not repeat");
    v.check(
        spec.redirect_uris.iter().all(|u| !u.contains('#') && https_or_loopback(u)),
        "spec.redirectUris",
        "each redirect URI must be an absolute https URL without a fragment (http only on localhost, 127.0.0.1 or [::1])",
    );
    v.check(
        spec.post_logout_redirect_uris.iter().all(|u| !u.contains('#') && https_or_loopback(u)),
        "spec.postLogoutRedirectUris",
        "each post-logout redirect URI must be an absolute https URL without a fragment (http only on localhost)",
    );
    let jwks_uri = auth.jwks_uri.as_deref().unwrap_or_default();
    v.check(
        auth.method != AuthMethod::PrivateKeyJwt || auth.jwks.is_some() || !jwks_uri.is_empty(),
        "spec.authentication",
        "authentication.method PrivateKeyJwt needs jwks or jwksUri",
    );
    v.check(
        auth.method != AuthMethod::ServiceAccount || auth.service_account_name.is_some(),
        "spec.authentication.serviceAccountName",
        "authentication.method ServiceAccount needs serviceAccountName",
    );
    v.check(
        auth.method == AuthMethod::PrivateKeyJwt || (auth.jwks.is_none() && jwks_uri.is_empty()),
        "spec.authentication",
        "jwks and jwksUri apply only to authentication.method PrivateKeyJwt",
    );
    if let Some(name) = &auth.secret_name {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        v.check(
            name.chars().next().is_some_and(ok)
                && name.chars().last().is_some_and(ok)
                && name.chars().all(|c| ok(c) || c == '-' || c == '.'),
            "spec.authentication.secretName",
            "secretName must be a valid Secret name (lowercase letters, digits, '-' and '.')",
        );
    }
    v.check(
        jwks_uri.is_empty() || https_or_loopback(jwks_uri),
        "spec.authentication.jwksUri",
        "jwksUri must be an https URL (http only on localhost)",
    );
    v.0
}

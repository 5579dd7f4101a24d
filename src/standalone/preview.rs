//! `tessera preview`: evaluate a token request against the policies of resource files and
//! show which policy and rule match (or why each does not) and the claims of the token.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::{Manifests, StandaloneError, compile_all};
use crate::api::{GrantType, TokenKind};
use crate::issuer::AccessTokenClaims;
use crate::policy::{Denial, PolicyEngine, TokenRequest, UserInfo};

/// The person a user grant is previewed for (`--user`, `--group`, `--amr`, ...).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UserArgs {
    /// Preview a user grant for this subject (authorization_code, device_code, refresh_token).
    #[arg(long = "user", value_name = "SUB")]
    pub sub: Option<String>,
    /// A group of the user (repeatable).
    #[arg(long = "group", requires = "sub")]
    pub groups: Vec<String>,
    /// Authentication methods of the sign-in, as in `amr` (repeatable; default: pwd).
    #[arg(long = "amr", requires = "sub")]
    pub amr: Vec<String>,
    #[arg(long, requires = "sub")]
    pub email: Option<String>,
    #[arg(long, requires = "sub")]
    pub name: Option<String>,
}

impl UserArgs {
    pub fn user(&self) -> Option<UserInfo> {
        let sub = self.sub.clone()?;
        Some(UserInfo {
            sub,
            name: self.name.clone(),
            email: self.email.clone(),
            groups: self.groups.clone(),
            attributes: Map::new(),
            amr: if self.amr.is_empty() { vec!["pwd".into()] } else { self.amr.clone() },
            standard: Default::default(),
        })
    }
}

pub struct PreviewRequest {
    /// Limit to this server when the files hold several.
    pub server: Option<String>,
    pub client_id: String,
    pub grant_type: String,
    /// Empty: the server's default scopes.
    pub scopes: Vec<String>,
    /// Claims of a subject token (token exchange), as read from its payload.
    pub subject: Option<Map<String, Value>>,
    /// The person of a user grant.
    pub user: Option<UserInfo>,
}

/// Accepts the full grant type URN or its last segment (`token-exchange`).
pub fn parse_grant_type(s: &str) -> Option<GrantType> {
    GrantType::parse(s).or_else(|| GrantType::ALL.into_iter().find(|g| g.as_str().rsplit(':').next() == Some(s)))
}

/// The preview as text for a person.
pub fn preview(m: &Manifests, req: &PreviewRequest) -> Result<String, StandaloneError> {
    let grant = parse_grant_type(&req.grant_type)
        .ok_or_else(|| StandaloneError::State(format!("unknown grant type {:?}", req.grant_type)))?;
    let compiled = compile_all(m, None)?;
    let candidates: Vec<_> = compiled
        .iter()
        .filter(|c| req.server.as_ref().is_none_or(|s| *s == c.config.name))
        .filter(|c| c.config.client(&req.client_id).is_some())
        .collect();
    let Some(compiled) = candidates.first() else {
        return Err(StandaloneError::State(format!("no server in the files has client {:?}", req.client_id)));
    };
    let config = &compiled.config;
    let engine = PolicyEngine::new(config)
        .map_err(|e| StandaloneError::Serve { server: config.name.clone(), message: e.to_string() })?;
    let Some(client) = config.client(&req.client_id) else {
        return Err(StandaloneError::State(format!("unknown client {:?}", req.client_id)));
    };
    let mut out = String::new();
    let _ = writeln!(out, "server   {}/{} ({})", config.namespace, config.name, config.issuer);
    for r in &compiled.rejected {
        let _ = writeln!(out, "ignored  {} {}/{}: {} ({})", r.kind, r.namespace, r.name, r.message, r.reason);
    }
    let _ = writeln!(
        out,
        "client   {} (grant types: {})",
        client.client_id,
        join(client.grant_types.iter().map(|g| g.as_str()))
    );
    if let Some(u) = &req.user {
        let _ = writeln!(
            out,
            "user     {} (groups: {}; amr: {})",
            u.sub,
            join(u.groups.iter().map(String::as_str)),
            join(u.amr.iter().map(String::as_str))
        );
    } else if grant.is_user_grant() {
        let _ = writeln!(
            out,
            "note     {} is a user grant: pass --user (and --group, --amr) to preview it for a person",
            grant.as_str()
        );
    }
    if !client.grant_types.contains(&grant) {
        let _ = writeln!(
            out,
            "note     the client itself may not use {}: the token endpoint answers unauthorized_client",
            grant.as_str()
        );
    }
    let request = TokenRequest {
        client,
        grant_type: grant,
        scopes: if req.scopes.is_empty() { None } else { Some(req.scopes.clone()) },
        user: req.user.as_ref(),
        subject: req.subject.as_ref(),
        audience: config.audiences.clone(),
    };
    // The variables the decision was made with are the ones the granted token's claims see.
    let (decision, vars) = engine.decide_with_variables(config, &request);
    let source = if req.scopes.is_empty() { "defaults" } else { "requested" };
    let _ = writeln!(out, "scopes   {} ({source})", join(decision.requested_scopes.iter().map(String::as_str)));
    let _ = writeln!(out, "\npolicies, in order:");
    for p in &decision.trace {
        let _ = writeln!(out, "  {} (priority {})", p.policy, p.priority);
        if let Some(why) = &p.skipped {
            let _ = writeln!(out, "    skipped: {why}");
        }
        for r in &p.rules {
            if r.matched {
                let _ = writeln!(out, "    rule {}: MATCH", r.rule);
            } else {
                let _ = writeln!(out, "    rule {}: no match", r.rule);
                for reason in &r.reasons {
                    let _ = writeln!(out, "      - {reason}");
                }
            }
        }
    }
    match &decision.outcome {
        Ok(g) => {
            let (custom, errors) = engine.claims(TokenKind::AccessToken, &vars, &g.scopes, true);
            let sub = match (req.subject.as_ref().and_then(|s| s.get("sub")), &req.user) {
                (_, Some(u)) => u.sub.clone(),
                // As the token endpoint would: a ServiceAccount keeps its form, others carry their issuer.
                (Some(Value::String(s)), _) if grant == GrantType::TokenExchange => {
                    match req.subject.as_ref().and_then(|c| c.get("iss")).and_then(Value::as_str) {
                        Some(iss) if !s.starts_with(crate::config::subjects::SERVICE_ACCOUNT_PREFIX) => {
                            crate::config::subjects::exchanged_subject(iss, s)
                        }
                        _ => s.clone(),
                    }
                }
                _ => client.client_id.clone(),
            };
            let now = jiff::Timestamp::now().as_second();
            let mut claims = AccessTokenClaims::new(config, client, g, sub, custom, now, "AT.<preview>".into());
            claims.uid = req.user.as_ref().map(|u| u.sub.clone());
            let _ = writeln!(
                out,
                "\nGRANTED by {}/{}: access token lifetime {}s",
                g.policy, g.rule, g.access_token_lifetime_secs
            );
            for (claim, error) in errors {
                let _ = writeln!(out, "warning  claim {claim} omitted: {error}");
            }
            let _ =
                writeln!(out, "access token claims:\n{}", serde_json::to_string_pretty(&claims).unwrap_or_default());
            if req.user.is_some() && g.scopes.iter().any(|s| s == "openid") {
                let (id, errors) = engine.claims(TokenKind::IdToken, &vars, &g.scopes, true);
                for (claim, error) in errors {
                    let _ = writeln!(out, "warning  ID token claim {claim} omitted: {error}");
                }
                let _ = writeln!(
                    out,
                    "custom ID token / userinfo claims (ID token lifetime {}s):\n{}",
                    g.id_token_lifetime_secs,
                    serde_json::to_string_pretty(&id).unwrap_or_default()
                );
            }
        }
        Err(d) => {
            let code = match d {
                Denial::InvalidScope => "invalid_scope",
                Denial::AccessDenied => "access_denied",
                Denial::TooLarge(_) => "invalid_request",
            };
            let _ = writeln!(out, "\nDENIED: {code}: {}", decision.denial_description());
        }
    }
    Ok(out)
}

fn join<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn examples() -> Manifests {
        super::super::load(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")]).unwrap()
    }

    fn req(client: &str, scopes: &[&str]) -> PreviewRequest {
        PreviewRequest {
            server: None,
            client_id: client.into(),
            grant_type: "client_credentials".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            subject: None,
            user: None,
        }
    }

    #[test]
    fn preview_of_a_user_grant_applies_users_and_conditions() {
        let mut r = req("team-orders.example-spa", &["openid", "payments:read"]);
        r.grant_type = "authorization_code".into();
        let anonymous = preview(&examples(), &r).unwrap();
        assert!(anonymous.contains("pass --user"), "{anonymous}");
        r.user =
            UserArgs { sub: Some("alice".into()), groups: vec!["payments-admins".into()], ..Default::default() }.user();
        let out = preview(&examples(), &r).unwrap();
        assert!(out.contains("user     alice (groups: payments-admins; amr: pwd)"), "{out}");
        assert!(out.contains("GRANTED by"), "{out}");
        assert!(out.contains("\"uid\": \"alice\""), "{out}");
    }

    #[test]
    fn preview_shows_the_matching_rule_and_claims() {
        let out = preview(&examples(), &req("team-orders.orders-api", &[])).unwrap();
        assert!(out.contains("GRANTED by machine-access/m2m-read-write"), "{out}");
        assert!(out.contains("\"tenant\": \"acme\""), "{out}");
        assert!(out.contains("payments:read (defaults)"), "{out}");
    }

    #[test]
    fn preview_explains_why_each_rule_did_not_match() {
        let out = preview(&examples(), &req("team-orders.orders-api", &["payments:admin"])).unwrap();
        assert!(out.contains("scope payments:admin is not allowed by the rule"), "{out}");
        assert!(out.contains("skipped: client team-orders.orders-api is not among the policy's clients"), "{out}");
        assert!(out.contains("DENIED: invalid_scope"), "{out}");
        let admin = preview(&examples(), &req("team-orders.orders-admin", &["payments:admin"])).unwrap();
        assert!(admin.contains("GRANTED by admins/admin"), "{admin}");
    }
}

//! The login page and static users' password sign-in.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::Response;
use base64::Engine;
use tokio::sync::Semaphore;

use super::{Step, error_page, pages, proceed, sign_in_of, start_session, with_query};
use crate::api::Endpoint;
use crate::config::StaticUser;
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::rate_limit::{Limit, RateLimiter, source_key};
use crate::issuer::{Incoming, Issuer, Served};
use crate::policy::UserInfo;

/// Sign-in attempts per submitted username, known or not (normalised: trimmed, lower case),
/// per replica: 10 at once, then one a second.
pub const ATTEMPTS_PER_NAME: Limit = Limit::one_every(10, Duration::from_secs(1));
/// Failed sign-ins from one source address (IPv4, IPv6 /64), per replica: 30 at once, then
/// one every 2 seconds. Spent, the source is refused before any password is checked.
pub const FAILURES_PER_SOURCE: Limit = Limit::one_every(30, Duration::from_secs(2));
/// Password checks at once per process, at most (each holds a core, and argon2 its memory).
const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 4;

/// Guessing limits of password sign-in. Known and unknown usernames take the same path: a
/// bucket of their own, and a password check of the same cost.
pub struct SignInLimits {
    by_name: RateLimiter,
    failures_by_source: RateLimiter,
    checks: Arc<Semaphore>,
}

impl Default for SignInLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            by_name: RateLimiter::default(),
            failures_by_source: RateLimiter::default(),
            checks: Arc::new(Semaphore::new(cores.clamp(1, MAX_CONCURRENT_PASSWORD_CHECKS))),
        }
    }
}

/// The key of a submitted username's bucket: `Alice` and ` alice` are one name to a guesser.
fn normalized(username: &str) -> String {
    username.trim().to_lowercase()
}

/// Stand-ins for unknown usernames, derived once per config: for each user's hash one of the
/// same algorithm and parameters, with random salt and output (no hash is computed for it).
/// An unknown name is checked against the stand-in of the user its keyed hash picks, so if
/// users mix algorithms or costs, unknown names are spread over them as the users are, and
/// one name always gets the same cost: its timing looks like some user's.
pub struct PasswordStandIns {
    by_user: Vec<String>,
    /// Keyed by the users' hashes (unknown to a guesser), the same on every replica.
    key: aws_lc_rs::hmac::Key,
}

/// argon2id as OWASP recommends it (m = 19 MiB, t = 2), for a server without users.
const DEFAULT_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

impl PasswordStandIns {
    pub fn new(users: &[StaticUser]) -> Self {
        let mut seed = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for u in users {
            seed.update(u.password_hash.as_bytes());
            seed.update(b"\n");
        }
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, seed.finish().as_ref());
        let mut by_user: Vec<String> = users.iter().map(|u| stand_in(&u.password_hash)).collect();
        if by_user.is_empty() {
            by_user.push(stand_in(DEFAULT_HASH));
        }
        Self { by_user, key }
    }

    /// The hash an unknown `username` is checked against.
    fn for_unknown(&self, username: &str) -> &str {
        let tag = aws_lc_rs::hmac::sign(&self.key, normalized(username).as_bytes());
        let mut n = [0u8; 8];
        n.copy_from_slice(&tag.as_ref()[..8]);
        let i = usize::try_from(u64::from_le_bytes(n) % self.by_user.len() as u64).unwrap_or(0);
        &self.by_user[i]
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Without randomness the stand-in is still a valid hash of the same cost; nobody knows its password.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

/// A hash of the same kind and cost as `hash`, that no password matches.
fn stand_in(hash: &str) -> String {
    if hash.starts_with("$2") {
        // `$2b$12$` + 22 characters of salt + 31 of hash, in bcrypt's own base64.
        let prefix_len = hash.match_indices('$').nth(2).map_or(0, |(i, _)| i + 1);
        let prefix = if prefix_len == 7 { &hash[..7] } else { "$2b$12$" };
        let (salt, out) = (random_bytes::<16>(), random_bytes::<23>());
        return format!("{prefix}{}{}", bcrypt::BASE_64.encode(salt), bcrypt::BASE_64.encode(out));
    }
    match argon2::password_hash::PasswordHash::new(hash) {
        Ok(parsed) if parsed.algorithm.as_str().starts_with("argon2") => stand_in_argon2(parsed),
        // Not a hash we can check: the user's own check fails at once, and so does this.
        _ => hash.to_owned(),
    }
}

fn stand_in_argon2(parsed: argon2::password_hash::PasswordHash<'_>) -> String {
    use argon2::password_hash::{Output, PasswordHash, SaltString};
    let salt_len = parsed.salt.map_or(16, |s| s.len() * 3 / 4).clamp(8, 48);
    let salt = SaltString::encode_b64(&random_bytes::<48>()[..salt_len]);
    let out_len = parsed.hash.map_or(32, |h| h.len()).clamp(Output::MIN_LENGTH, Output::MAX_LENGTH);
    match (salt, Output::new(&random_bytes::<64>()[..out_len])) {
        (Ok(salt), Ok(output)) => PasswordHash { salt: Some(salt.as_salt()), hash: Some(output), ..parsed }.to_string(),
        // Cannot happen with the lengths above; the user's own hash costs the same, and an
        // unknown name never signs in whatever it matches.
        _ => parsed.to_string(),
    }
}

pub async fn page(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Response {
    match sign_in_of(issuer, served, req, form, false).await {
        Ok((id, p)) => render(served, id, &p.client_id, &p.csrf, None, ""),
        Err(e) => error_page(&e),
    }
}

fn render(served: &Served, id: &str, client_id: &str, csrf: &str, error: Option<&str>, username: &str) -> Response {
    let Some(identity) = &served.config.identity else {
        return error_page(&OAuthError::access_denied("sign-in is not enabled on this server"));
    };
    let client = served.config.client(client_id);
    let client_name = client.and_then(|c| c.display_name.as_deref()).unwrap_or(client_id);
    let upstreams = identity
        .upstreams
        .iter()
        .map(|u| pages::UpstreamLink {
            href: with_query(
                &served.endpoint(Endpoint::LoginUpstream),
                &[("request", id.to_owned()), ("upstream", u.name.clone())],
            ),
            label: &u.display_name,
        })
        .collect();
    pages::login(&pages::Login {
        client: client_name,
        action: served.endpoint(Endpoint::Login),
        request: id,
        csrf,
        upstreams,
        passwords: !identity.users.is_empty(),
        error,
        username,
    })
}

/// Checks `password` against a bcrypt or argon2 hash, off the async threads (it is slow on
/// purpose), at most as many at once as `checks` has permits.
async fn verify_password(checks: &Arc<Semaphore>, password: String, hash: String) -> bool {
    let Ok(permit) = checks.clone().acquire_owned().await else { return false };
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        if hash.starts_with("$argon2") {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            PasswordHash::new(&hash)
                .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        } else {
            bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false)
        }
    })
    .await
    .unwrap_or(false)
}

pub fn user_info(u: &StaticUser) -> UserInfo {
    let mut attributes = serde_json::Map::new();
    attributes.insert("idp".into(), crate::config::subjects::STATIC_IDP.into());
    attributes.insert("username".into(), u.username.clone().into());
    UserInfo {
        sub: u.subject(),
        name: u.name.clone(),
        email: u.email.clone(),
        groups: u.groups.clone(),
        attributes,
        amr: vec!["pwd".into()],
        standard: u.standard.clone(),
    }
}

pub async fn submit(issuer: &Issuer, served: &Served, req: &Incoming, form: &Form) -> Response {
    let (id, pending) = match sign_in_of(issuer, served, req, form, true).await {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let Some(identity) = &served.config.identity else {
        return error_page(&OAuthError::access_denied("sign-in is not enabled on this server"));
    };
    let username = form.get("username").unwrap_or_default();
    let password = form.get("password").unwrap_or_default().to_owned();
    let user = identity.users.iter().find(|u| u.username == username);
    // Known and unknown names take the same steps from here: the same limits, and a
    // password check of the same cost.
    let limits = &issuer.sign_in_limits;
    let server = format!("{}/{}", served.config.namespace, served.config.name);
    let source = format!("{server}/{}", source_key(req.source));
    let name = format!("{server}/{}", normalized(username));
    let limited = limits
        .failures_by_source
        .allows(&source, &FAILURES_PER_SOURCE, req.at)
        .and_then(|()| limits.by_name.check(&name, &ATTEMPTS_PER_NAME, req.at));
    if let Err(wait) = limited {
        let mut r = pages::error(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a little and try again.",
        );
        r.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return r;
    }
    let stand_in = served.password_stand_ins.for_unknown(username);
    let hash = user.map_or(stand_in, |u| u.password_hash.as_str());
    let ok = verify_password(&limits.checks, password, hash.to_owned()).await && user.is_some();
    if !ok {
        limits.failures_by_source.charge(&source, &FAILURES_PER_SOURCE, req.at);
    }
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!(target: "tessera::audit", server = %served.config.name, "sign-in failed: wrong username or password");
        return render(served, id, &pending.client_id, &pending.csrf, Some("Wrong username or password."), username);
    };
    let now = req.now.as_second();
    let (signed, cookie) = match start_session(issuer, served, user_info(user), "static", now).await {
        Ok(s) => s,
        Err(e) => return error_page(&e),
    };
    tracing::info!(target: "tessera::audit", server = %served.config.name, sub = %signed.session.user.sub, idp = "static", "signed in");
    let mut r = proceed(issuer, served, id, &pending, &signed, Step::Continue, now).await;
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(2))
    }

    fn user(name: &str, hash: &str) -> StaticUser {
        StaticUser {
            username: name.into(),
            password_hash: hash.into(),
            sub: None,
            name: None,
            email: None,
            groups: vec![],
            standard: Default::default(),
            unknown: Default::default(),
        }
    }

    #[tokio::test]
    async fn bcrypt_and_argon2_hashes_verify() {
        let b = bcrypt::hash("pw", 4).unwrap();
        assert!(verify_password(&checks(), "pw".into(), b.clone()).await);
        assert!(!verify_password(&checks(), "nope".into(), b).await);
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        let a = argon2::Argon2::default().hash_password(b"pw", &salt).unwrap().to_string();
        assert!(verify_password(&checks(), "pw".into(), a.clone()).await);
        assert!(!verify_password(&checks(), "nope".into(), a).await);
    }

    #[test]
    fn unknown_names_are_checked_against_a_hash_of_the_same_algorithm_and_cost() {
        use argon2::password_hash::PasswordHash;
        let argon = "$argon2id$v=19$m=19456,t=2,p=1$aPTe76ymSwcZVeLokosCKw$vl3PecimB/DrAxlBEx45mixuNTTPvC8YQW7slcN1w34";
        let stand_ins = PasswordStandIns::new(&[user("alice", argon)]);
        let dummy = stand_ins.for_unknown("mallory");
        let (real, fake) = (PasswordHash::new(argon).unwrap(), PasswordHash::new(dummy).unwrap());
        assert_eq!((real.algorithm, real.version, &real.params), (fake.algorithm, fake.version, &fake.params));
        assert_eq!(real.hash.unwrap().len(), fake.hash.unwrap().len());
        assert_ne!(real.salt, fake.salt);
        // It verifies like a real hash (the whole cost is paid), and nothing matches it.
        let argon2 = argon2::Argon2::default();
        use argon2::password_hash::PasswordVerifier;
        assert_eq!(argon2.verify_password(b"alice-password", &fake), Err(argon2::password_hash::Error::Password));

        let b = bcrypt::hash("pw", 5).unwrap();
        let stand_ins = PasswordStandIns::new(&[user("bob", &b)]);
        let dummy = stand_ins.for_unknown("mallory");
        assert_eq!(&dummy[..7], "$2b$05$");
        assert_eq!(bcrypt::verify("pw", dummy).ok(), Some(false), "the stand-in must parse and be computed");
    }

    #[test]
    fn with_mixed_hashes_each_unknown_name_always_gets_the_same_users_cost() {
        let argon = "$argon2id$v=19$m=19456,t=2,p=1$aPTe76ymSwcZVeLokosCKw$vl3PecimB/DrAxlBEx45mixuNTTPvC8YQW7slcN1w34";
        let b = "$2b$04$QDAKOYeNMlgBxNWx/uxC1uCTzzZLGKpkmS774QuRolfGAZu3rqCAC";
        let stand_ins = PasswordStandIns::new(&[user("alice", argon), user("bob", b)]);
        let kinds: std::collections::HashSet<bool> =
            (0..64).map(|n| stand_ins.for_unknown(&format!("name-{n}")).starts_with("$argon2")).collect();
        assert_eq!(kinds.len(), 2, "unknown names are spread over both kinds");
        assert_eq!(stand_ins.for_unknown("Mallory "), stand_ins.for_unknown("mallory"));
    }
}

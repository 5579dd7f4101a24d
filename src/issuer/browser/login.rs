//! The login page and static users' password sign-in.

use axum::http::{HeaderMap, header};
use axum::response::Response;

use super::{Step, error_page, pages, proceed, sign_in_of, start_session, with_query};
use crate::config::StaticUser;
use crate::issuer::error::OAuthError;
use crate::issuer::form::Form;
use crate::issuer::{Issuer, Served};
use crate::policy::UserInfo;

/// A bcrypt hash of random bytes: unknown users cost as much as known ones.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut b = [0u8; 18];
        let _ = aws_lc_rs::rand::fill(&mut b);
        bcrypt::hash(b, bcrypt::DEFAULT_COST).unwrap_or_default()
    })
}

const LOGIN_LIMIT: crate::api::RateLimit = crate::api::RateLimit { per_client: 1, burst: 10 };

pub async fn page(issuer: &Issuer, served: &Served, headers: &HeaderMap, form: &Form) -> Response {
    match sign_in_of(issuer, served, headers, form, false).await {
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
                &served.endpoint("/v1/login/upstream"),
                &[("request", id.to_owned()), ("upstream", u.name.clone())],
            ),
            label: &u.display_name,
        })
        .collect();
    pages::login(&pages::Login {
        client: client_name,
        action: served.endpoint("/v1/login"),
        request: id,
        csrf,
        upstreams,
        passwords: !identity.users.is_empty(),
        error,
        username,
    })
}

/// Checks `password` against a bcrypt or argon2 hash, off the async threads (it is slow on purpose).
async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
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
    }
}

pub async fn submit(issuer: &Issuer, served: &Served, headers: &HeaderMap, form: &Form) -> Response {
    let (id, pending) = match sign_in_of(issuer, served, headers, form, true).await {
        Ok(p) => p,
        Err(e) => return error_page(&e),
    };
    let Some(identity) = &served.config.identity else {
        return error_page(&OAuthError::access_denied("sign-in is not enabled on this server"));
    };
    let username = form.get("username").unwrap_or_default();
    let password = form.get("password").unwrap_or_default().to_owned();
    let user = identity.users.iter().find(|u| u.username == username);
    // Password guessing: 10 attempts, then one a second, per known user (unknown names share
    // one bucket, so the limiter's memory stays bounded by the users list), per replica.
    let key = format!(
        "login/{}/{}/{}",
        served.config.namespace,
        served.config.name,
        user.map_or("", |u| u.username.as_str())
    );
    if let Err(wait) = issuer.limiter.check(&key, &LOGIN_LIMIT, std::time::Instant::now()) {
        let mut r = pages::error(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a little and try again.",
        );
        r.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return r;
    }
    let hash = user.map_or(dummy_hash(), |u| u.password_hash.as_str()).to_owned();
    let ok = verify_password(password, hash).await && user.is_some();
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!(target: "tessera::audit", server = %served.config.name, "sign-in failed: wrong username or password");
        return render(served, id, &pending.client_id, &pending.csrf, Some("Wrong username or password."), username);
    };
    let (sid, session, cookie) = match start_session(issuer, served, user_info(user), "static").await {
        Ok(s) => s,
        Err(e) => return error_page(&e),
    };
    tracing::info!(target: "tessera::audit", server = %served.config.name, sub = %session.user.sub, idp = "static", "signed in");
    let mut r = proceed(issuer, served, id, &pending, &sid, &session, Step::Continue).await;
    r.headers_mut().append(header::SET_COOKIE, cookie);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bcrypt_and_argon2_hashes_verify() {
        let b = bcrypt::hash("pw", 4).unwrap();
        assert!(verify_password("pw".into(), b.clone()).await);
        assert!(!verify_password("nope".into(), b).await);
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        let a = argon2::Argon2::default().hash_password(b"pw", &salt).unwrap().to_string();
        assert!(verify_password("pw".into(), a.clone()).await);
        assert!(!verify_password("nope".into(), a).await);
        assert!(!verify_password("pw".into(), dummy_hash().into()).await);
    }
}

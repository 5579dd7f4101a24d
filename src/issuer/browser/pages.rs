//! Server-rendered pages: login, consent, device code entry, results and errors. Small,
//! accessible (labels, headings, `lang`), no scripts, every value HTML-escaped.

use std::fmt::Write;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}\
h1{font-size:1.4rem}label{display:block;margin-top:.8rem}input{width:100%;padding:.5rem;margin-top:.2rem;box-sizing:border-box}\
button,a.upstream{display:block;width:100%;margin-top:1rem;padding:.6rem;font-size:1rem;text-align:center;box-sizing:border-box}\
.error{color:#a00000}ul{padding-left:1.2rem}";

/// A whole page with the security headers every page carries.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    r
}

/// An error shown to the person, never redirected (bad client or redirect URI, expired sign-in).
pub fn error(status: StatusCode, message: &str) -> Response {
    error_titled(status, "Sign-in error", message)
}

/// A refused sign-out (RP-initiated logout): its own title, the parameter at fault in `message`.
pub fn logout_error(status: StatusCode, message: &str) -> Response {
    error_titled(status, "Sign-out error", message)
}

fn error_titled(status: StatusCode, title: &str, message: &str) -> Response {
    page(status, title, &format!("<p class=\"error\" role=\"alert\">{}</p>", esc(message)))
}

/// A sign-in step that cannot be taken right now (token state or an upstream unreachable):
/// the person is told to try again, the browser gets `Retry-After` from the caller.
pub fn unavailable(message: &str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        &format!("<p class=\"error\" role=\"alert\">{}</p><p>Try again in a moment.</p>", esc(message)),
    )
}

/// One "Sign in with" link per upstream.
pub struct UpstreamLink<'a> {
    pub href: String,
    pub label: &'a str,
}

pub struct Login<'a> {
    pub client: &'a str,
    pub action: String,
    pub request: &'a str,
    pub csrf: &'a str,
    pub upstreams: Vec<UpstreamLink<'a>>,
    pub passwords: bool,
    pub error: Option<&'a str>,
    pub username: &'a str,
}

pub fn login(l: &Login<'_>) -> Response {
    let mut body = format!("<p>Sign in to continue to <strong>{}</strong>.</p>", esc(l.client));
    if let Some(e) = l.error {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    for u in &l.upstreams {
        let _ = write!(body, "<a class=\"upstream\" href=\"{}\">Sign in with {}</a>", esc(&u.href), esc(u.label));
    }
    if l.passwords {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"request\" value=\"{request}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" required value=\"{user}\">\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>",
            action = esc(&l.action),
            request = esc(l.request),
            csrf = esc(l.csrf),
            user = esc(l.username),
        );
    }
    let status = if l.error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    page(status, "Sign in", &body)
}

pub struct Consent<'a> {
    pub client: &'a str,
    pub user: &'a str,
    pub action: String,
    pub request: &'a str,
    pub csrf: &'a str,
    /// (scope, description)
    pub scopes: Vec<(String, String)>,
    pub device: bool,
    /// The client id of a client the server's owner does not vouch for.
    pub third_party: Option<&'a str>,
}

pub fn consent(c: &Consent<'_>) -> Response {
    let mut body = if c.device {
        format!(
            "<p>A device is asking to act for <strong>{}</strong> as <strong>{}</strong>. Only allow it if you started this on your device.</p>",
            esc(c.user),
            esc(c.client)
        )
    } else {
        format!("<p><strong>{}</strong> asks to act for <strong>{}</strong>.</p>", esc(c.client), esc(c.user))
    };
    if let Some(id) = c.third_party {
        let _ = write!(
            body,
            "<p>This application (<code>{}</code>) is not operated by this sign-in service; its name was chosen by whoever registered it. Only allow it if you trust it.</p>",
            esc(id)
        );
    }
    if !c.scopes.is_empty() {
        body.push_str("<p>It asks for:</p><ul>");
        for (name, description) in &c.scopes {
            let _ = write!(body, "<li><strong>{}</strong> {}</li>", esc(name), esc(description));
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"request\" value=\"{request}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        action = esc(&c.action),
        request = esc(c.request),
        csrf = esc(c.csrf),
    );
    page(StatusCode::OK, "Allow access?", &body)
}

pub fn device_entry(action: &str, user_code: &str, error: Option<&str>) -> Response {
    let mut body = String::from("<p>Enter the code shown on your device.</p>");
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{}\"><label for=\"user_code\">Code</label>\
         <input id=\"user_code\" name=\"user_code\" autocomplete=\"off\" autocapitalize=\"characters\" required value=\"{}\">\
         <button type=\"submit\">Continue</button></form>",
        esc(action),
        esc(user_code)
    );
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    page(status, "Connect a device", &body)
}

/// "Sign out?": a form that posts `hidden` back to `action` (RP-Initiated Logout §2).
pub fn logout_confirm(action: &str, hidden: &[(&str, String)], signed_in: bool) -> Response {
    let why = if signed_in {
        "<p>An application asked to sign you out of this sign-in service.</p>"
    } else {
        "<p>You are not signed in to this sign-in service. Continue to finish signing out of the application.</p>"
    };
    let mut body = format!("{why}<form method=\"post\" action=\"{}\">", esc(action));
    for (name, value) in hidden {
        let _ = write!(body, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(name), esc(value));
    }
    body.push_str(if signed_in {
        "<button type=\"submit\">Sign out</button></form>"
    } else {
        "<button type=\"submit\">Continue</button></form>"
    });
    page(StatusCode::OK, "Sign out?", &body)
}

pub fn message(title: &str, text: &str) -> Response {
    page(StatusCode::OK, title, &format!("<p role=\"status\">{}</p>", esc(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}

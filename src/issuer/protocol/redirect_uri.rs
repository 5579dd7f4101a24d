//! Matching a requested redirect URI against a client's registered ones.

/// Loopback IP literals, whose redirect URIs may use any port (not `localhost`, which a
/// resolver or hosts file may send elsewhere: RFC 8252 §8.3).
const LOOPBACK_HOSTS: [&str; 2] = ["127.0.0.1", "[::1]"];

/// Whether `requested` is exactly `registered`; for http loopback redirect URIs the port may
/// differ (RFC 8252 §7.3). Nothing is normalized: case, encoding and dots must match.
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let split = |u: &str| -> Option<(String, String)> {
        let rest = u.strip_prefix("http://")?;
        let host = LOOPBACK_HOSTS.iter().find(|h| rest.starts_with(**h))?;
        let after = &rest[host.len()..];
        let after = match after.strip_prefix(':') {
            Some(p) => {
                let digits = p.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 || digits > 5 {
                    return None;
                }
                &p[digits..]
            }
            None => after,
        };
        if !(after.is_empty() || after.starts_with('/') || after.starts_with('?')) {
            return None;
        }
        Some(((*host).to_owned(), after.to_owned()))
    };
    match (split(registered), split(requested)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::redirect_uri_matches as m;

    #[test]
    fn redirect_uris_match_exactly_except_loopback_ports() {
        let reg = "https://app.example.com/cb";
        assert!(m(reg, reg));
        for bad in [
            "https://APP.example.com/cb",
            "https://app.example.com/CB",
            "https://app.example.com/cb/",
            "https://app.example.com/cb?x=1",
            "https://app.example.com/cb#f",
            "https://app.example.com@evil.example/cb",
            "https://evil.example@app.example.com/cb",
            "https://app.example.com%2Fcb",
            "https://app.example.com/cb%2F..",
            "https://app.example.com/x/../cb",
            "http://app.example.com/cb",
            "https://app.example.com:443/cb",
        ] {
            assert!(!m(reg, bad), "{bad}");
        }
        let lo = "http://127.0.0.1:8400/callback";
        assert!(m(lo, "http://127.0.0.1:51234/callback"));
        assert!(m(lo, "http://127.0.0.1/callback"));
        assert!(!m(lo, "http://127.0.0.1:51234/callback/"));
        assert!(!m(lo, "http://127.0.0.1:51234/Callback"));
        assert!(!m(lo, "http://127.0.0.1:51234@evil.example/callback"));
        assert!(!m(lo, "http://127.0.0.1.evil.example/callback"));
        assert!(!m(lo, "http://localhost:8400/callback"));
        assert!(m("http://[::1]:1/cb", "http://[::1]:2/cb"));
        assert!(!m("http://localhost:1/cb", "http://localhost:2/cb"));
        assert!(!m(lo, "https://127.0.0.1:8400/callback"));
    }
}

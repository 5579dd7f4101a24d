//! PKCE (RFC 7636): what a code verifier or challenge may look like.

/// A `code_verifier` or S256 `code_challenge`: 43 to 128 unreserved characters.
pub fn is_pkce_value(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

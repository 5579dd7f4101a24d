//! The `scope` parameter (RFC 6749 §3.3), as the token and the authorization endpoints read it.

use crate::issuer::error::OAuthError;

/// Longest `scope` parameter accepted (as Okta).
const MAX_SCOPE_LEN: usize = 1024;

/// The `scope` parameter: space-separated RFC 6749 scope-tokens, or `None` when absent.
pub fn parse_scope(param: Option<&str>) -> Result<Option<Vec<String>>, OAuthError> {
    let Some(s) = param else { return Ok(None) };
    if s.len() > MAX_SCOPE_LEN {
        return Err(OAuthError::invalid_scope("scope is too long"));
    }
    let valid = |t: &str| t.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
    let mut out: Vec<String> = Vec::new();
    for t in s.split(' ').filter(|t| !t.is_empty()) {
        if !valid(t) {
            return Err(OAuthError::invalid_scope("scope contains characters RFC 6749 does not allow"));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

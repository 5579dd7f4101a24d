//! Verifying JWTs from others (client assertions, ServiceAccount tokens, subject tokens).
//!
//! Only asymmetric algorithms are accepted; `none` and every HMAC algorithm are refused
//! before any key is looked at (RFC 8725 §3.1–3.2), and `jku`/`x5u` headers are ignored.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Largest JWT we parse at all.
pub const MAX_JWT_LEN: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("no key matches the token")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("issuer not accepted")]
    Issuer,
    #[error("audience not accepted")]
    Audience,
    #[error("claim {0} missing")]
    Missing(&'static str),
}

#[derive(Debug, Clone)]
pub struct Jwt {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

struct Parts<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_JWT_LEN {
        return Err(JwtError::Malformed);
    }
    let mut it = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed);
    };
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed);
    let header: Map<String, Value> = serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Malformed)?;
    let claims: Map<String, Value> = serde_json::from_slice(&decode(c)?).map_err(|_| JwtError::Malformed)?;
    Ok(Parts { header, claims, signing_input: &token[..h.len() + 1 + c.len()], signature: decode(s)? })
}

/// Header and claims without checking the signature: only to pick the issuer and key.
pub fn peek(token: &str) -> Result<Jwt, JwtError> {
    let p = split(token)?;
    Ok(Jwt { header: p.header, claims: p.claims })
}

fn b64(jwk: &Map<String, Value>, member: &str) -> Option<Vec<u8>> {
    jwk.get(member).and_then(Value::as_str).and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
}

fn verify_one(alg: &str, jwk: &Map<String, Value>, input: &[u8], sig: &[u8]) -> Option<bool> {
    let kty = jwk.get("kty").and_then(Value::as_str)?;
    if let Some(key_alg) = jwk.get("alg").and_then(Value::as_str)
        && key_alg != alg
    {
        return None;
    }
    let crv = jwk.get("crv").and_then(Value::as_str);
    match (alg, kty) {
        ("RS256", "RSA") => {
            let key = RsaPublicKeyComponents { n: b64(jwk, "n")?, e: b64(jwk, "e")? };
            Some(key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, input, sig).is_ok())
        }
        ("PS256", "RSA") => {
            let key = RsaPublicKeyComponents { n: b64(jwk, "n")?, e: b64(jwk, "e")? };
            Some(key.verify(&signature::RSA_PSS_2048_8192_SHA256, input, sig).is_ok())
        }
        ("ES256", "EC") if crv == Some("P-256") => {
            let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Some(UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(input, sig).is_ok())
        }
        ("EdDSA", "OKP") if crv == Some("Ed25519") => {
            let x = b64(jwk, "x")?;
            Some(UnparsedPublicKey::new(&signature::ED25519, x).verify(input, sig).is_ok())
        }
        _ => None,
    }
}

/// Verifies the signature of `token` with one of `keys` (a JWKS's `keys`), chosen by kid.
pub fn verify(token: &str, keys: &[Map<String, Value>]) -> Result<Jwt, JwtError> {
    let p = split(token)?;
    let alg = p.header.get("alg").and_then(Value::as_str).unwrap_or("none");
    if !matches!(alg, "RS256" | "PS256" | "ES256" | "EdDSA") {
        return Err(JwtError::Algorithm(alg.to_owned()));
    }
    let kid = p.header.get("kid").and_then(Value::as_str);
    let mut tried = false;
    for jwk in keys {
        if let Some(kid) = kid
            && jwk.get("kid").and_then(Value::as_str) != Some(kid)
        {
            continue;
        }
        match verify_one(alg, jwk, p.signing_input.as_bytes(), &p.signature) {
            Some(true) => return Ok(Jwt { header: p.header, claims: p.claims }),
            Some(false) => tried = true,
            None => {}
        }
    }
    Err(if tried { JwtError::BadSignature } else { JwtError::UnknownKey })
}

/// What a verified token's claims must satisfy.
pub struct Expectations<'a> {
    pub issuer: &'a str,
    /// At least one of these must be in `aud`.
    pub audiences: &'a [String],
    pub now: i64,
    pub leeway_secs: i64,
}

/// Checks `iss`, `aud`, `exp` (required), `nbf` and `iat`.
pub fn check_claims(claims: &Map<String, Value>, e: &Expectations<'_>) -> Result<(), JwtError> {
    if claims.get("iss").and_then(Value::as_str) != Some(e.issuer) {
        return Err(JwtError::Issuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => e.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| e.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(JwtError::Audience);
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(JwtError::Missing("exp"))?;
    if exp + e.leeway_secs <= e.now {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && nbf - e.leeway_secs > e.now
    {
        return Err(JwtError::NotYetValid);
    }
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64)
        && iat - e.leeway_secs > e.now
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, claims: &str, sig: &[u8]) -> String {
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims), URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn alg_none_and_hmac_are_refused_before_key_lookup() {
        let keys = vec![serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB"}).as_object().unwrap().clone()];
        assert_eq!(
            verify(&jwt(r#"{"alg":"none"}"#, "{}", b""), &keys).unwrap_err(),
            JwtError::Algorithm("none".into())
        );
        assert_eq!(
            verify(&jwt(r#"{"alg":"HS256"}"#, "{}", b"x"), &keys).unwrap_err(),
            JwtError::Algorithm("HS256".into())
        );
        assert_eq!(verify(&jwt(r#"{}"#, "{}", b"x"), &keys).unwrap_err(), JwtError::Algorithm("none".into()));
    }

    #[test]
    fn ecdsa_zero_signature_unknown_kid_and_jku_are_refused() {
        let now = jiff::Timestamp::now();
        let key = crate::keys::generate(crate::api::SigningAlgorithm::ES256, now, now).unwrap();
        let kid = key.public_jwk["kid"].as_str().unwrap().to_owned();
        let keys = vec![key.public_jwk.clone()];
        // "Psychic signature": r = s = 0.
        let zero = jwt(&format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#), r#"{"sub":"x"}"#, &[0u8; 64]);
        assert_eq!(verify(&zero, &keys).unwrap_err(), JwtError::BadSignature);
        let unknown = jwt(r#"{"alg":"ES256","kid":"nope"}"#, r#"{"sub":"x"}"#, &[1u8; 64]);
        assert_eq!(verify(&unknown, &keys).unwrap_err(), JwtError::UnknownKey);
        // A jku header pointing elsewhere changes nothing: only the given keys are tried.
        let active = crate::keys::ActiveKeys::new(&crate::keys::KeySet { keys: vec![key] }).unwrap();
        let (good, _) = active.sign_access_token(now, &serde_json::json!({ "sub": "x" })).unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let jku =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","kid":"{kid}","jku":"https://evil.example/jwks"}}"#));
        parts[0] = &jku;
        assert_eq!(verify(&parts.join("."), &keys).unwrap_err(), JwtError::BadSignature);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for t in ["", "a", "a.b", "a.b.c.d", "!!.??.**", "e30.e30"] {
            assert!(verify(t, &[]).is_err());
        }
    }
}

//! Verifying JWTs from outside (client assertions, ServiceAccount and subject tokens, upstream
//! ID tokens) and our own tokens when they come back (introspection, `id_token_hint`).
//!
//! The JWS and the registered claims are checked by the `jsonwebtoken` crate (aws-lc-rs
//! backend): signature, `alg` against the caller's list, `iss` and `aud` through its
//! `Validation`. On top of it, before it parses anything: a size cap, an algorithm allow-list
//! per caller that can only name asymmetric algorithms (so `none` and HMAC cannot be
//! accepted, RFC 8725 §3.1–3.2), no key-carrying headers (`jku`, `x5u`, `jwk`, `x5c`) and no
//! `crit`, and the `typ` the caller expects. `exp`, `nbf` and `iat` are checked here against
//! the `now` the caller passes in, because `jsonwebtoken` reads the system clock for them.
//!
//! Signing does not go through `jsonwebtoken`: its `encode` parses the private key's DER
//! again on every token (`EcdsaKeyPair::from_pkcs8`, `RsaKeyPair::from_der`), while
//! [`super::ActiveKeys`] parses each key once per key-set change and signs with it directly.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest JWT we parse at all.
pub const MAX_JWT_LEN: usize = 16 * 1024;

/// Header members that name or carry a key: a verifier that used them would let the token
/// choose its own key, so a token that has one is refused outright.
const KEY_HEADERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("token is larger than {MAX_JWT_LEN} bytes")]
    TooLarge,
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("header {0} is not accepted")]
    Header(&'static str),
    #[error("token type (typ) is not accepted")]
    Type,
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

/// The signature algorithms a caller may accept: asymmetric ones only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    RS256,
    PS256,
    ES256,
    EdDSA,
}

impl Alg {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "PS256" => Self::PS256,
            "ES256" => Self::ES256,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    fn algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::PS256 => jsonwebtoken::Algorithm::PS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// The algorithms this server signs its own tokens with.
pub const OWN_ALGS: &[Alg] = &[Alg::RS256, Alg::ES256, Alg::EdDSA];

/// The time a token is checked at: Unix seconds, from the caller.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: i64,
    /// Allowance for the issuer's clock.
    pub leeway_secs: i64,
}

/// What one caller accepts.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    pub algorithms: &'a [Alg],
    /// The `typ` header the token must have (case-insensitive, `application/` optional).
    pub typ: Option<&'a str>,
    /// `iss` must be exactly this string.
    pub issuer: &'a str,
    /// At least one of these must be in `aud`; `None`: `aud` is not checked.
    pub audiences: Option<&'a [String]>,
    /// `exp` (required), `nbf` and `iat` at this time; `None`: not checked (a logout hint may
    /// have expired).
    pub clock: Option<Clock>,
}

#[derive(Debug, Clone)]
pub struct Jwt {
    pub header: jsonwebtoken::Header,
    pub claims: Map<String, Value>,
}

impl Jwt {
    pub fn kid(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }
}

/// The header members our own rules look at, read before `jsonwebtoken` sees the token.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    typ: Option<Value>,
    crit: Option<Value>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

fn raw_header(token: &str) -> Result<RawHeader, JwtError> {
    if token.len() > MAX_JWT_LEN {
        return Err(JwtError::TooLarge);
    }
    let encoded = token.split('.').next().ok_or(JwtError::Malformed)?;
    let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| JwtError::Malformed)
}

/// Header and claims without checking the signature: only to pick the issuer and key.
pub fn peek(token: &str) -> Result<Jwt, JwtError> {
    if token.len() > MAX_JWT_LEN {
        return Err(JwtError::TooLarge);
    }
    let data =
        jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token).map_err(|_| JwtError::Malformed)?;
    Ok(Jwt { header: data.header, claims: data.claims })
}

/// `typ` values compare case-insensitively, with or without `application/` (RFC 7515 §4.1.9).
fn same_type(given: &str, expected: &str) -> bool {
    let bare = |t: &str| {
        let t = t.trim();
        t.get(..12).filter(|p| p.eq_ignore_ascii_case("application/")).map_or(t, |_| &t[12..]).to_ascii_lowercase()
    };
    bare(given) == bare(expected)
}

/// Our rules on the header, before any key is looked at; the accepted algorithm.
fn check_header(token: &str, rules: &Rules<'_>) -> Result<Alg, JwtError> {
    let h = raw_header(token)?;
    let name = match &h.alg {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "none".to_owned(),
    };
    let alg = Alg::parse(&name).filter(|a| rules.algorithms.contains(a)).ok_or(JwtError::Algorithm(name))?;
    if let Some(member) = KEY_HEADERS.into_iter().find(|m| h.rest.contains_key(*m)) {
        return Err(JwtError::Header(member));
    }
    if h.crit.is_some() {
        return Err(JwtError::Header("crit"));
    }
    if let Some(expected) = rules.typ {
        match &h.typ {
            Some(Value::String(t)) if same_type(t, expected) => {}
            _ => return Err(JwtError::Type),
        }
    }
    Ok(alg)
}

fn b64(jwk: &Map<String, Value>, member: &str) -> Option<Vec<u8>> {
    jwk.get(member).and_then(Value::as_str).and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
}

/// The key of `jwk` for `alg`, or `None` when the JWK is not a key of that algorithm.
fn decoding_key(alg: Alg, jwk: &Map<String, Value>) -> Option<DecodingKey> {
    let text = |m: &str| jwk.get(m).and_then(Value::as_str);
    if let Some(key_alg) = text("alg")
        && key_alg != alg.as_str()
    {
        return None;
    }
    match (alg, text("kty")?, text("crv")) {
        (Alg::RS256 | Alg::PS256, "RSA", _) => {
            Some(DecodingKey::from_rsa_raw_components(&b64(jwk, "n")?, &b64(jwk, "e")?))
        }
        (Alg::ES256, "EC", Some("P-256")) => {
            let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            DecodingKey::from_ec_components(text("x")?, text("y")?).ok()
        }
        (Alg::EdDSA, "OKP", Some("Ed25519")) => DecodingKey::from_ed_components(text("x")?).ok(),
        _ => None,
    }
}

fn validation(alg: Alg, rules: &Rules<'_>) -> Validation {
    let mut v = Validation::new(alg.algorithm());
    // The clock is ours (`rules.clock`), checked in `check_time`: jsonwebtoken would read the
    // system clock for these.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.set_issuer(&[rules.issuer]);
    match rules.audiences {
        Some(audiences) => {
            v.set_audience(audiences);
            v.set_required_spec_claims(&["iss", "aud"]);
        }
        None => {
            v.validate_aud = false;
            v.set_required_spec_claims(&["iss"]);
        }
    }
    v
}

fn claims_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidIssuer => JwtError::Issuer,
        ErrorKind::InvalidAudience => JwtError::Audience,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => JwtError::Audience,
        ErrorKind::MissingRequiredClaim(_) => JwtError::Issuer,
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        _ => JwtError::Malformed,
    }
}

/// `exp` (required), `nbf` and `iat` against the caller's clock.
fn check_time(claims: &Map<String, Value>, clock: Clock) -> Result<(), JwtError> {
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(JwtError::Missing("exp"))?;
    if exp.saturating_add(clock.leeway_secs) <= clock.now {
        return Err(JwtError::Expired);
    }
    for name in ["nbf", "iat"] {
        if let Some(t) = claims.get(name).and_then(Value::as_i64)
            && t.saturating_sub(clock.leeway_secs) > clock.now
        {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(())
}

/// Verifies `token` with one of `keys` (a JWKS's `keys`, chosen by `kid`) under `rules`.
pub fn verify(token: &str, keys: &[Map<String, Value>], rules: &Rules<'_>) -> Result<Jwt, JwtError> {
    let alg = check_header(token, rules)?;
    let validation = validation(alg, rules);
    let kid = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?.kid;
    let mut tried = false;
    for jwk in keys {
        if let Some(kid) = &kid
            && jwk.get("kid").and_then(Value::as_str) != Some(kid.as_str())
        {
            continue;
        }
        let Some(key) = decoding_key(alg, jwk) else { continue };
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
            Ok(data) => {
                // RFC 7519 §4.1.1: one issuer, a string (jsonwebtoken also takes an array).
                if data.claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
                    return Err(JwtError::Issuer);
                }
                if let Some(clock) = rules.clock {
                    check_time(&data.claims, clock)?;
                }
                return Ok(Jwt { header: data.header, claims: data.claims });
            }
            Err(e) => match e.kind() {
                ErrorKind::InvalidSignature => tried = true,
                ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {}
                ErrorKind::InvalidKeyFormat | ErrorKind::InvalidAlgorithm => {}
                kind => return Err(claims_error(kind)),
            },
        }
    }
    Err(if tried { JwtError::BadSignature } else { JwtError::UnknownKey })
}

/// Checks only the signature (tests of what we sign, whose claims they look at themselves).
#[cfg(test)]
pub(crate) fn verify_signature(token: &str, keys: &[Map<String, Value>]) -> Result<Jwt, JwtError> {
    let header = peek(token)?.header;
    let alg = Alg::parse(&format!("{:?}", header.alg)).ok_or(JwtError::Algorithm(format!("{:?}", header.alg)))?;
    let mut validation = Validation::new(alg.algorithm());
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims::<&str>(&[]);
    for jwk in keys {
        if header.kid.is_some() && jwk.get("kid").and_then(Value::as_str) != header.kid.as_deref() {
            continue;
        }
        if let Some(key) = decoding_key(alg, jwk)
            && let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        {
            return Ok(Jwt { header: data.header, claims: data.claims });
        }
    }
    Err(JwtError::BadSignature)
}

#[cfg(test)]
mod tests;

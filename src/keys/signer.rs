//! Keys parsed once per key-set change; signing a token parses nothing.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde::Serialize;

use super::{KeyError, KeySet, StoredKey};
use crate::api::SigningAlgorithm;

/// JWK members that may appear in a published JWKS; everything else (d, p, q, k, ...) is dropped.
const PUBLIC_MEMBERS: &[&str] = &["kty", "crv", "n", "e", "x", "y", "kid", "alg", "use"];

enum PrivateKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

struct ParsedKey {
    meta: StoredKey,
    key: PrivateKey,
    /// base64url of `{"alg":..,"kid":..,"typ":"at+jwt"}`, the first JWT segment.
    access_token_header: String,
    /// The same with `"typ":"JWT"`, for ID tokens.
    id_token_header: String,
}

/// The parsed keys of one key set, built once when the set changes.
pub struct ActiveKeys {
    keys: Vec<ParsedKey>,
    rng: SystemRandom,
}

impl fmt::Debug for ActiveKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| &k.meta.kid)).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no signing key is active")]
    NoActiveKey,
    #[error("signing failed")]
    Failed,
    #[error("claims could not be serialized")]
    Serialize,
}

/// A JWK Set as `/v1/keys` serves it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Jwks {
    pub keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl ActiveKeys {
    /// Parses every key that is not revoked.
    pub fn new(set: &KeySet) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for k in set.keys.iter().filter(|k| !k.revoked) {
            let invalid = || KeyError::InvalidPrivateKey { kid: k.kid.clone(), algorithm: k.algorithm.as_str() };
            let der = STANDARD.decode(&k.private_key).map_err(|_| invalid())?;
            let key = match k.algorithm {
                SigningAlgorithm::RS256 => PrivateKey::Rsa(RsaKeyPair::from_pkcs8(&der).map_err(|_| invalid())?),
                SigningAlgorithm::ES256 => PrivateKey::Ec(
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                        .map_err(|_| invalid())?,
                ),
                SigningAlgorithm::EdDSA => PrivateKey::Ed(Ed25519KeyPair::from_pkcs8(&der).map_err(|_| invalid())?),
            };
            let header = serde_json::json!({ "alg": k.algorithm.as_str(), "kid": k.kid, "typ": "at+jwt" });
            let access_token_header = URL_SAFE_NO_PAD.encode(header.to_string());
            let header = serde_json::json!({ "alg": k.algorithm.as_str(), "kid": k.kid, "typ": "JWT" });
            let id_token_header = URL_SAFE_NO_PAD.encode(header.to_string());
            keys.push(ParsedKey { meta: k.clone(), key, access_token_header, id_token_header });
        }
        Ok(Self { keys, rng: SystemRandom::new() })
    }

    fn signing(&self, now: Timestamp) -> Option<&ParsedKey> {
        self.keys.iter().filter(|k| k.meta.can_sign(now)).max_by_key(|k| (k.meta.activates_at, k.meta.created_at))
    }

    /// The kid that signs at `now`.
    pub fn signing_kid(&self, now: Timestamp) -> Option<&str> {
        self.signing(now).map(|k| k.meta.kid.as_str())
    }

    /// Signs `claims` as an RFC 9068 access token (`typ: at+jwt`); returns the token and its kid.
    pub fn sign_access_token<T: Serialize>(&self, now: Timestamp, claims: &T) -> Result<(String, &str), SignError> {
        let key = self.signing(now).ok_or(SignError::NoActiveKey)?;
        self.sign_with(key, &key.access_token_header, claims)
    }

    /// Signs `claims` as an OpenID Connect ID token (`typ: JWT`) with the key that signs at
    /// `now`; returns the token and its algorithm (to compute `at_hash`).
    pub fn sign_id_token<T: Serialize>(
        &self,
        now: Timestamp,
        claims: &T,
    ) -> Result<(String, SigningAlgorithm), SignError> {
        let key = self.signing(now).ok_or(SignError::NoActiveKey)?;
        let (token, _) = self.sign_with(key, &key.id_token_header, claims)?;
        Ok((token, key.meta.algorithm))
    }

    /// The algorithm of the key that signs at `now`.
    pub fn signing_algorithm(&self, now: Timestamp) -> Option<SigningAlgorithm> {
        self.signing(now).map(|k| k.meta.algorithm)
    }

    fn sign_with<'k, T: Serialize>(
        &self,
        key: &'k ParsedKey,
        header: &str,
        claims: &T,
    ) -> Result<(String, &'k str), SignError> {
        let payload = serde_json::to_vec(claims).map_err(|_| SignError::Serialize)?;
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 400);
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = match &key.key {
            PrivateKey::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &self.rng, token.as_bytes(), &mut sig)
                    .map_err(|_| SignError::Failed)?;
                sig
            }
            PrivateKey::Ec(pair) => {
                pair.sign(&self.rng, token.as_bytes()).map_err(|_| SignError::Failed)?.as_ref().to_vec()
            }
            PrivateKey::Ed(pair) => pair.sign(token.as_bytes()).as_ref().to_vec(),
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok((token, key.meta.kid.as_str()))
    }

    /// Every algorithm a key published at `now` uses, the signing key's first: what a verifier
    /// must accept while tokens of each published key may still be in use (an algorithm change
    /// keeps the old algorithm listed while its key signs or stays published).
    pub fn published_algorithms(&self, now: Timestamp) -> Vec<SigningAlgorithm> {
        let mut algorithms: Vec<SigningAlgorithm> = self.signing_algorithm(now).into_iter().collect();
        for k in self.keys.iter().filter(|k| k.meta.published(now)) {
            if !algorithms.contains(&k.meta.algorithm) {
                algorithms.push(k.meta.algorithm);
            }
        }
        algorithms
    }

    /// The JWKS at `now`: public members of every Next, Active and Retired key, unique kids.
    pub fn jwks(&self, now: Timestamp) -> Jwks {
        let mut seen = std::collections::HashSet::new();
        let keys = self
            .keys
            .iter()
            .filter(|k| k.meta.published(now) && seen.insert(k.meta.kid.as_str()))
            .map(|k| {
                k.meta
                    .public_jwk
                    .iter()
                    .filter(|(name, _)| PUBLIC_MEMBERS.contains(&name.as_str()))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect()
            })
            .collect();
        Jwks { keys }
    }

    /// Public JWK of `kid`, if it is published at `now` (to verify our own tokens).
    pub fn public_jwk(&self, kid: &str, now: Timestamp) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.keys.iter().find(|k| k.meta.kid == kid && k.meta.published(now)).map(|k| &k.meta.public_jwk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate, jwt};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn tokens_of_every_algorithm_verify_against_the_published_jwks() {
        for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
            let set = KeySet { keys: vec![generate(alg, ts(0), ts(0)).unwrap()] };
            let keys = ActiveKeys::new(&set).unwrap();
            let (token, kid) = keys.sign_access_token(ts(5), &serde_json::json!({ "sub": "x" })).unwrap();
            let jwks = keys.jwks(ts(5));
            assert_eq!(jwks.keys.len(), 1);
            assert_eq!(jwks.keys[0]["kid"], kid);
            let parsed = jwt::verify_signature(&token, &jwks.keys).unwrap();
            assert_eq!(parsed.header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(parsed.claims["sub"], "x");
        }
    }

    #[test]
    fn jwks_has_only_public_members() {
        let mut key = generate(SigningAlgorithm::ES256, ts(0), ts(0)).unwrap();
        key.public_jwk.insert("d".into(), "secret".into());
        let keys = ActiveKeys::new(&KeySet { keys: vec![key] }).unwrap();
        let jwks = serde_json::to_string(&keys.jwks(ts(1))).unwrap();
        assert!(!jwks.contains("\"d\""));
    }
}

//! Signing keys: generation, the keys Secret format, lifecycle by the clock, rotation
//! planning, the in-memory signer and the JWKS.
//!
//! The operator stores a [`KeySet`] as JSON in Secret `<server>-signing-keys`, data key
//! `keys.json`. A key's state is never stored: it follows from its timestamps and `now`.

pub mod jwt;
mod request;
mod rotation;
mod signer;

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::api::{KeyState, SigningAlgorithm};
pub use request::rotation_request;
pub use rotation::{RotationPlan, RotationRequest, RotationSettings, manual_hold, plan, plan_with};
pub use signer::{ActiveKeys, Jwks, SignError};

/// Name of the Secret holding the keys of server `server`.
pub fn keys_secret_name(server: &str) -> String {
    format!("{server}-signing-keys")
}

/// Data key of the key set in its Secret.
pub const KEYS_SECRET_KEY: &str = "keys.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    Generate,
    #[error("key {kid}: private key is not valid base64 PKCS#8 for {algorithm}")]
    InvalidPrivateKey { kid: String, algorithm: &'static str },
    #[error("key set is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Every key of one server, in the order they were created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<StoredKey>,
}

/// One key as stored in the keys Secret.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// PKCS#8 DER, standard base64.
    pub private_key: String,
    /// The public JWK (kty, crv/n/e/x/y, kid, alg, use).
    pub public_jwk: serde_json::Map<String, serde_json::Value>,
    pub created_at: Timestamp,
    pub activates_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<Timestamp>,
    #[serde(default)]
    pub revoked: bool,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .field("delete_at", &self.delete_at)
            .field("revoked", &self.revoked)
            .finish()
    }
}

impl StoredKey {
    /// Whether the JWKS lists this key at `now`.
    pub fn published(&self, now: Timestamp) -> bool {
        !self.revoked && self.delete_at.is_none_or(|d| now < d)
    }

    /// Whether this key may sign at `now` (the signing key is the newest of these).
    pub fn can_sign(&self, now: Timestamp) -> bool {
        self.published(now) && self.activates_at <= now && self.retires_at.is_none_or(|r| now < r)
    }
}

impl KeySet {
    /// The set without its key material (private keys, public JWKs): what planning a rotation
    /// and reporting on the keys need, and all the operator keeps between reconciles.
    pub fn schedule_only(&self) -> Self {
        let keys = self
            .keys
            .iter()
            .map(|k| StoredKey { private_key: String::new(), public_jwk: Default::default(), ..k.clone() })
            .collect();
        Self { keys }
    }

    pub fn from_json(json: &[u8]) -> Result<Self, KeyError> {
        Ok(serde_json::from_slice(json)?)
    }

    pub fn to_json(&self) -> Result<String, KeyError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The key that signs at `now`: the newest one whose `activatesAt` has passed, not revoked.
    pub fn signing_key(&self, now: Timestamp) -> Option<&StoredKey> {
        self.keys.iter().filter(|k| k.can_sign(now)).max_by_key(|k| (k.activates_at, k.created_at))
    }

    /// State of `key` at `now`; `None` when it is revoked or past `deleteAt`.
    pub fn state(&self, key: &StoredKey, now: Timestamp) -> Option<KeyState> {
        if !key.published(now) {
            None
        } else if key.activates_at > now {
            Some(KeyState::Next)
        } else if self.signing_key(now).is_some_and(|s| s.kid == key.kid) {
            Some(KeyState::Active)
        } else {
            Some(KeyState::Retired)
        }
    }

    /// Keys the JWKS lists at `now`: every Next, Active and Retired key.
    pub fn published(&self, now: Timestamp) -> impl Iterator<Item = &StoredKey> {
        self.keys.iter().filter(move |k| k.published(now))
    }
}

/// Generates a key for `algorithm`: RS256 is 2048-bit RSA, ES256 is P-256, EdDSA is Ed25519.
pub fn generate(algorithm: SigningAlgorithm, now: Timestamp, activates_at: Timestamp) -> Result<StoredKey, KeyError> {
    let (pkcs8, mut jwk) = match algorithm {
        SigningAlgorithm::RS256 => {
            let pair =
                aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
            let der = pair.as_der().map_err(|_| KeyError::Generate)?;
            let public = pair.public_key();
            let jwk = serde_json::json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
            });
            (der.as_ref().to_vec(), jwk)
        }
        SigningAlgorithm::ES256 => {
            let pair =
                aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Generate)?;
            let der = pair.to_pkcs8v1().map_err(|_| KeyError::Generate)?;
            let point = pair.public_key().as_ref();
            // Uncompressed SEC1 point: 0x04 || x || y.
            if point.len() != 65 {
                return Err(KeyError::Generate);
            }
            let jwk = serde_json::json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            });
            (der.as_ref().to_vec(), jwk)
        }
        SigningAlgorithm::EdDSA => {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().map_err(|_| KeyError::Generate)?;
            let der = pair.to_pkcs8().map_err(|_| KeyError::Generate)?;
            let jwk = serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            });
            (der.as_ref().to_vec(), jwk)
        }
    };
    let kid = kid_for(&jwk, now);
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("kid".into(), kid.clone().into());
        obj.insert("alg".into(), algorithm.as_str().into());
        obj.insert("use".into(), "sig".into());
    }
    let public_jwk = match jwk {
        serde_json::Value::Object(m) => m,
        _ => return Err(KeyError::Generate),
    };
    Ok(StoredKey {
        kid,
        algorithm,
        private_key: STANDARD.encode(pkcs8),
        public_jwk,
        created_at: now,
        activates_at,
        retires_at: None,
        delete_at: None,
        revoked: false,
    })
}

/// `YYYY-MM-DD-<12 chars of the RFC 7638 thumbprint>`: sortable by day, and derived from the
/// key itself, so the same key always has the same kid (a retried write cannot mint a second).
fn kid_for(jwk: &serde_json::Value, now: Timestamp) -> String {
    // RFC 7638: the required members, in lexicographic order, without whitespace.
    let members: &[&str] = match jwk["kty"].as_str() {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["crv", "kty", "x"],
    };
    let canonical: serde_json::Map<String, serde_json::Value> =
        members.iter().map(|m| ((*m).to_owned(), jwk[*m].clone())).collect();
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        serde_json::Value::Object(canonical).to_string().as_bytes(),
    );
    let thumbprint = URL_SAFE_NO_PAD.encode(digest.as_ref());
    format!("{}-{}", now.strftime("%Y-%m-%d"), &thumbprint[..12])
}

/// 256 bits of randomness, base64url: a generated client secret.
pub fn generate_client_secret() -> Result<String, KeyError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError::Generate)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn state_follows_the_clock_and_the_newest_active_key_signs() {
        let mut a = generate(SigningAlgorithm::EdDSA, ts(0), ts(0)).unwrap();
        let b = generate(SigningAlgorithm::EdDSA, ts(10), ts(100)).unwrap();
        a.retires_at = Some(ts(100));
        a.delete_at = Some(ts(200));
        let set = KeySet { keys: vec![a.clone(), b.clone()] };
        assert_eq!(set.signing_key(ts(50)).unwrap().kid, a.kid);
        assert_eq!(set.state(&b, ts(50)), Some(KeyState::Next));
        assert_eq!(set.signing_key(ts(100)).unwrap().kid, b.kid);
        assert_eq!(set.state(&a, ts(150)), Some(KeyState::Retired));
        assert_eq!(set.state(&a, ts(200)), None);
        assert_eq!(set.published(ts(150)).count(), 2);
        assert_eq!(set.published(ts(250)).count(), 1);
    }

    #[test]
    fn revoked_key_neither_signs_nor_is_published() {
        let mut a = generate(SigningAlgorithm::ES256, ts(0), ts(0)).unwrap();
        a.revoked = true;
        let set = KeySet { keys: vec![a] };
        assert!(set.signing_key(ts(1)).is_none());
        assert_eq!(set.published(ts(1)).count(), 0);
    }

    #[test]
    fn debug_never_shows_private_key() {
        let k = generate(SigningAlgorithm::ES256, ts(0), ts(0)).unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains(&k.private_key));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn key_set_round_trips_through_json() {
        let set = KeySet { keys: vec![generate(SigningAlgorithm::RS256, ts(0), ts(0)).unwrap()] };
        assert_eq!(KeySet::from_json(set.to_json().unwrap().as_bytes()).unwrap(), set);
        assert!(set.to_json().unwrap().contains("\"activatesAt\""));
    }
}

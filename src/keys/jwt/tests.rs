use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::*;
use crate::api::SigningAlgorithm;
use crate::keys::{ActiveKeys, KeySet, StoredKey, generate};

const ISS: &str = "https://issuer.example";
const NOW: i64 = 1_000_000;

fn jwt(header: &str, claims: &str, sig: &[u8]) -> String {
    format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims), URL_SAFE_NO_PAD.encode(sig))
}

fn key(alg: SigningAlgorithm) -> StoredKey {
    let t = jiff::Timestamp::from_second(0).unwrap();
    generate(alg, t, t).unwrap()
}

/// Signs `claims` under any header, as an attacker with the key could.
fn sign_with_header(key: &StoredKey, header: jsonwebtoken::Header, claims: &Value) -> String {
    let der = STANDARD.decode(&key.private_key).unwrap();
    let encoding = match key.algorithm {
        SigningAlgorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_der(&der),
        SigningAlgorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_der(&der),
        SigningAlgorithm::RS256 => unreachable!("RS256 test tokens are signed by ActiveKeys"),
    };
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

fn header(key: &StoredKey) -> jsonwebtoken::Header {
    let alg = match key.algorithm {
        SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        SigningAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
    };
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = Some(key.kid.clone());
    h
}

fn claims() -> Value {
    json!({ "iss": ISS, "sub": "x", "aud": "api://a", "exp": NOW + 60, "iat": NOW })
}

fn audiences() -> Vec<String> {
    vec!["api://a".to_owned()]
}

fn rules<'a>(algorithms: &'a [Alg], audiences: &'a [String]) -> Rules<'a> {
    Rules {
        algorithms,
        typ: None,
        issuer: ISS,
        audiences: Some(audiences),
        clock: Some(Clock { now: NOW, leeway_secs: 0 }),
    }
}

const ALL: &[Alg] = &[Alg::RS256, Alg::PS256, Alg::ES256, Alg::EdDSA];

#[test]
fn tokens_of_every_accepted_algorithm_verify_with_iss_aud_and_the_injected_clock() {
    let aud = audiences();
    for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
        let k = key(alg);
        let keys = vec![k.public_jwk.clone()];
        let active = ActiveKeys::new(&KeySet { keys: vec![k] }).unwrap();
        let t = jiff::Timestamp::from_second(1).unwrap();
        let (token, _) = active.sign_access_token(t, &claims()).unwrap();
        // NOW is in 1970: the system clock would call this token expired; ours does not.
        let v = verify(&token, &keys, &rules(ALL, &aud)).unwrap();
        assert_eq!(v.claims["sub"], "x", "{alg:?}");
    }
}

#[test]
fn alg_none_and_hmac_are_refused_before_key_lookup() {
    let keys = vec![json!({"kty":"RSA","n":"AQAB","e":"AQAB"}).as_object().unwrap().clone()];
    let aud = audiences();
    let r = rules(ALL, &aud);
    assert_eq!(
        verify(&jwt(r#"{"alg":"none"}"#, "{}", b""), &keys, &r).unwrap_err(),
        JwtError::Algorithm("none".into())
    );
    assert_eq!(
        verify(&jwt(r#"{"alg":"HS256"}"#, "{}", b"x"), &keys, &r).unwrap_err(),
        JwtError::Algorithm("HS256".into())
    );
    assert_eq!(verify(&jwt(r#"{}"#, "{}", b"x"), &keys, &r).unwrap_err(), JwtError::Algorithm("none".into()));
    assert_eq!(
        verify(&jwt(r#"{"alg":"None"}"#, "{}", b""), &keys, &r).unwrap_err(),
        JwtError::Algorithm("None".into())
    );
}

#[test]
fn hs256_signed_with_the_rsa_public_key_as_secret_is_refused() {
    let k = key(SigningAlgorithm::RS256);
    let keys = vec![k.public_jwk.clone()];
    // The attacker's HMAC secret: the public key exactly as published.
    let secret = serde_json::to_vec(&k.public_jwk).unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(k.kid.clone());
    let token = jsonwebtoken::encode(&h, &claims(), &jsonwebtoken::EncodingKey::from_secret(&secret)).unwrap();
    let aud = audiences();
    assert_eq!(verify(&token, &keys, &rules(ALL, &aud)).unwrap_err(), JwtError::Algorithm("HS256".into()));
    // Also with the modulus bytes as the secret.
    let n = URL_SAFE_NO_PAD.decode(k.public_jwk["n"].as_str().unwrap()).unwrap();
    let token = jsonwebtoken::encode(&h, &claims(), &jsonwebtoken::EncodingKey::from_secret(&n)).unwrap();
    assert_eq!(verify(&token, &keys, &rules(ALL, &aud)).unwrap_err(), JwtError::Algorithm("HS256".into()));
}

#[test]
fn an_algorithm_outside_the_callers_list_is_refused() {
    let k = key(SigningAlgorithm::EdDSA);
    let token = sign_with_header(&k, header(&k), &claims());
    let aud = audiences();
    let err = verify(&token, std::slice::from_ref(&k.public_jwk), &rules(&[Alg::RS256, Alg::ES256], &aud)).unwrap_err();
    assert_eq!(err, JwtError::Algorithm("EdDSA".into()));
}

#[test]
fn key_carrying_headers_and_crit_are_refused() {
    let k = key(SigningAlgorithm::ES256);
    let keys = vec![k.public_jwk.clone()];
    let aud = audiences();
    let mut h = header(&k);
    h.jku = Some("https://evil.example/jwks".into());
    assert_eq!(
        verify(&sign_with_header(&k, h, &claims()), &keys, &rules(ALL, &aud)).unwrap_err(),
        JwtError::Header("jku")
    );
    let mut h = header(&k);
    h.x5u = Some("https://evil.example/cert".into());
    assert_eq!(
        verify(&sign_with_header(&k, h, &claims()), &keys, &rules(ALL, &aud)).unwrap_err(),
        JwtError::Header("x5u")
    );
    let mut h = header(&k);
    h.jwk = Some(serde_json::from_value(Value::Object(k.public_jwk.clone())).unwrap());
    assert_eq!(
        verify(&sign_with_header(&k, h, &claims()), &keys, &rules(ALL, &aud)).unwrap_err(),
        JwtError::Header("jwk")
    );
    let mut h = header(&k);
    h.crit = Some(vec!["exp".into()]);
    assert_eq!(
        verify(&sign_with_header(&k, h, &claims()), &keys, &rules(ALL, &aud)).unwrap_err(),
        JwtError::Header("crit")
    );
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    let big = format!("{}.e30.", "A".repeat(MAX_JWT_LEN));
    let aud = audiences();
    assert_eq!(verify(&big, &[], &rules(ALL, &aud)).unwrap_err(), JwtError::TooLarge);
    assert_eq!(peek(&big).unwrap_err(), JwtError::TooLarge);
}

#[test]
fn a_token_of_the_wrong_typ_is_refused() {
    let k = key(SigningAlgorithm::ES256);
    let keys = vec![k.public_jwk.clone()];
    let active = ActiveKeys::new(&KeySet { keys: vec![k] }).unwrap();
    let t = jiff::Timestamp::from_second(1).unwrap();
    let aud = audiences();
    let access = Rules { typ: Some("at+jwt"), ..rules(OWN_ALGS, &aud) };
    let (id_token, _) = active.sign_id_token(t, &claims()).unwrap();
    assert_eq!(verify(&id_token, &keys, &access).unwrap_err(), JwtError::Type);
    let (at, _) = active.sign_access_token(t, &claims()).unwrap();
    assert!(verify(&at, &keys, &access).is_ok());
    // RFC 7515 §4.1.9: "application/" may be spelled out, case does not matter.
    assert!(same_type("application/AT+JWT", "at+jwt"));
    assert!(!same_type("jwt", "at+jwt"));
}

#[test]
fn issuer_audience_and_time_are_checked() {
    let k = key(SigningAlgorithm::ES256);
    let keys = vec![k.public_jwk.clone()];
    let aud = audiences();
    let r = rules(ALL, &aud);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        verify(&sign_with_header(&k, header(&k), &c), &keys, &r)
    };
    assert!(with(&|_| {}).is_ok());
    assert_eq!(with(&|c| c["iss"] = json!("https://other.example")).unwrap_err(), JwtError::Issuer);
    assert_eq!(with(&|c| c["iss"] = json!([ISS, "https://other.example"])).unwrap_err(), JwtError::Issuer);
    assert_eq!(with(&|c| drop(c.as_object_mut().unwrap().remove("iss"))).unwrap_err(), JwtError::Issuer);
    assert_eq!(with(&|c| c["aud"] = json!("api://b")).unwrap_err(), JwtError::Audience);
    assert!(with(&|c| c["aud"] = json!(["api://b", "api://a"])).is_ok());
    assert_eq!(with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))).unwrap_err(), JwtError::Audience);
    assert_eq!(with(&|c| c["exp"] = json!(NOW)).unwrap_err(), JwtError::Expired);
    assert_eq!(with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))).unwrap_err(), JwtError::Missing("exp"));
    assert_eq!(with(&|c| c["nbf"] = json!(NOW + 10)).unwrap_err(), JwtError::NotYetValid);
    assert_eq!(with(&|c| c["iat"] = json!(NOW + 10)).unwrap_err(), JwtError::NotYetValid);
    // Leeway covers a little clock difference.
    let lenient = Rules { clock: Some(Clock { now: NOW, leeway_secs: 30 }), ..r };
    let token = sign_with_header(&k, header(&k), &json!({ "iss": ISS, "aud": "api://a", "exp": NOW - 10 }));
    assert!(verify(&token, &keys, &lenient).is_ok());
}

#[test]
fn ecdsa_zero_signature_and_unknown_kid_are_refused() {
    let k = key(SigningAlgorithm::ES256);
    let kid = k.kid.clone();
    let keys = vec![k.public_jwk.clone()];
    let aud = audiences();
    let r = rules(ALL, &aud);
    let c = claims().to_string();
    // "Psychic signature": r = s = 0.
    let zero = jwt(&format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#), &c, &[0u8; 64]);
    assert_eq!(verify(&zero, &keys, &r).unwrap_err(), JwtError::BadSignature);
    let unknown = jwt(r#"{"alg":"ES256","kid":"nope"}"#, &c, &[1u8; 64]);
    assert_eq!(verify(&unknown, &keys, &r).unwrap_err(), JwtError::UnknownKey);
    // A key of another type under the same kid is never used.
    let ed = key(SigningAlgorithm::EdDSA);
    let mut h = header(&ed);
    h.kid = Some(kid);
    assert_eq!(verify(&sign_with_header(&ed, h, &claims()), &keys, &r).unwrap_err(), JwtError::UnknownKey);
}

#[test]
fn garbage_is_refused_not_a_panic() {
    let aud = audiences();
    for t in ["", "a", "a.b", "a.b.c.d", "!!.??.**", "e30.e30", "e30.e30.e30", "eyJhbGciOiJFUzI1NiJ9.!!.x"] {
        assert!(verify(t, &[], &rules(ALL, &aud)).is_err(), "{t}");
        let _ = peek(t);
    }
}

//! Which claims go where (OpenID Connect Core §2, §5), named after the conformance suite's
//! conditions where one applies.

use super::*;

/// What OpenID Connect Core §2 and §3.1.3.6 let an ID token carry unasked.
const ID_TOKEN_CLAIMS: [&str; 11] =
    ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "at_hash"];

/// The access token and ID token of a code flow for alice with `scope`.
async fn tokens_for_alice(h: &H, scope: &str) -> (Value, serde_json::Map<String, Value>) {
    let mut b = Browser::default();
    let code = spa_code(h, &mut b, scope).await;
    let (status, t) = redeem_spa(h, &code).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let id = id_token_claims(h, t["id_token"].as_str().unwrap());
    (t, id)
}

// EnsureIdTokenDoesNotContainNonRequestedClaims
#[tokio::test]
async fn id_tokens_carry_no_okta_claims_and_access_tokens_keep_them() {
    let h = harness().await;
    let (t, id) = tokens_for_alice(&h, "openid orders:read").await;
    // `groups` is an AuthClaim of the server (IdToken, alwaysInclude): asked for by its admin.
    let extra: Vec<&String> = id.keys().filter(|k| !ID_TOKEN_CLAIMS.contains(&k.as_str()) && *k != "groups").collect();
    assert!(extra.is_empty(), "not asked for: {extra:?}");
    let access = jwt::peek(t["access_token"].as_str().unwrap()).unwrap().claims;
    assert_eq!(access["ver"], 1);
    assert!(access["jti"].as_str().unwrap().starts_with("AT."));
    assert_eq!(access["scp"], json!(["openid", "orders:read"]));
    assert_eq!(access["scope"], "openid orders:read", "RFC 9068 §2.2.3");
}

async fn userinfo(h: &H, access_token: &str) -> Value {
    let mut b = Browser::default();
    let req =
        Request::get(format!("{BASE}/v1/userinfo")).header(header::AUTHORIZATION, format!("Bearer {access_token}"));
    let info = b.send(&h.app, req.body(Body::empty()).unwrap()).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    info.json()
}

// VerifyScopesReturnedInUserInfoClaims
#[tokio::test]
async fn userinfo_returns_the_standard_claims_the_granted_scopes_cover() {
    let h = harness().await;
    let (t, _) = tokens_for_alice(&h, "openid profile email address phone").await;
    let info = userinfo(&h, t["access_token"].as_str().unwrap()).await;
    assert_eq!(info["sub"], "static|alice-1");
    assert_eq!(info["name"], "Alice");
    assert_eq!(info["preferred_username"], "alice");
    assert_eq!(info["given_name"], "Alice");
    assert_eq!(info["family_name"], "Example");
    assert_eq!(info["locale"], "en-GB");
    assert_eq!(info["updated_at"], 1_700_000_000);
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["email_verified"], true);
    assert_eq!(info["address"], json!({ "locality": "Utrecht", "country": "NL" }));
    assert_eq!(info["phone_number"], "+31 30 000 0000");
    assert_eq!(info["phone_number_verified"], false);

    let (t, _) = tokens_for_alice(&h, "openid profile").await;
    let info = userinfo(&h, t["access_token"].as_str().unwrap()).await;
    assert_eq!(info["given_name"], "Alice");
    for withheld in ["email", "email_verified", "address", "phone_number", "phone_number_verified"] {
        assert!(info.get(withheld).is_none(), "{withheld} without its scope");
    }
}

// EnsureIdTokenDoesNotContainEmailForScopeEmail (OpenID Connect Core §5.4)
#[tokio::test]
async fn id_token_leaves_scope_claims_to_userinfo_when_an_access_token_is_issued() {
    let h = harness().await;
    let (t, id) = tokens_for_alice(&h, "openid profile email address phone").await;
    for claim in ["name", "preferred_username", "given_name", "email", "email_verified", "address", "phone_number"] {
        assert!(id.get(claim).is_none(), "{claim} in the ID token");
    }
    assert_eq!(id["groups"], json!(["readers"]), "an IdToken AuthClaim with alwaysInclude stays");
    assert!(id.get("dept").is_none());
    let info = userinfo(&h, t["access_token"].as_str().unwrap()).await;
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["dept"], "sales", "alwaysInclude: false is served from userinfo");
}

#[tokio::test]
async fn discovery_lists_the_standard_claims_and_their_scopes() {
    let h = harness().await;
    let mut b = Browser::default();
    let d = b.get(&h.app, &format!("{BASE}/.well-known/openid-configuration")).await.json();
    let list = |k: &str| -> Vec<String> { serde_json::from_value(d[k].clone()).unwrap() };
    let scopes = list("scopes_supported");
    for s in ["openid", "profile", "email", "address", "phone", "offline_access"] {
        assert!(scopes.contains(&s.to_owned()), "{s}: {scopes:?}");
    }
    let claims = list("claims_supported");
    for c in ["given_name", "birthdate", "updated_at", "email_verified", "address", "phone_number_verified"] {
        assert!(claims.contains(&c.to_owned()), "{c}: {claims:?}");
    }
}

// ValidateIdTokenACRClaimAgainstAcrValuesRequest (oidcc-ensure-request-with-acr-values-succeeds)
#[tokio::test]
async fn acr_says_how_the_person_signed_in_and_follows_acr_values() {
    let h = harness().await;
    let (t, id) = tokens_for_alice(&h, "openid offline_access").await;
    assert_eq!(id["acr"], "1", "a static user's password is one factor");

    let mut b = Browser::default();
    let c = challenge(VERIFIER);
    let pkce = [("code_challenge", c.as_str()), ("code_challenge_method", "S256")];
    for (asked, got) in [("1 2", "1"), ("2", "1"), ("urn:example:gold 1", "1")] {
        let extra = [pkce[0], pkce[1], ("acr_values", asked)];
        let start = b.get(&h.app, &authorize_url(SPA, SPA_REDIRECT, "openid", &extra)).await;
        let done =
            if b.cookies.contains_key("tessera_session") { start } else { login_alice(&h, &mut b, &start).await };
        let code = done.params().get("code").cloned().unwrap_or_else(|| panic!("{:?}", done.location));
        let (_, t) = redeem_spa(&h, &code).await;
        assert_eq!(id_token_claims(&h, t["id_token"].as_str().unwrap())["acr"], got, "acr_values={asked}");
    }
    let too_many = [pkce[0], pkce[1], ("acr_values", "1 2 3 4 5 6 7 8 9")];
    let r = b.get(&h.app, &authorize_url(SPA, SPA_REDIRECT, "openid", &too_many)).await;
    assert_eq!(r.params().get("error").map(String::as_str), Some("invalid_request"));

    // A refresh keeps the acr of the sign-in.
    let rt = t["refresh_token"].as_str().unwrap();
    let (s, t2) = token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", rt)], None).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    assert_eq!(id_token_claims(&h, t2["id_token"].as_str().unwrap())["acr"], "1");

    let d = b.get(&h.app, &format!("{BASE}/.well-known/openid-configuration")).await.json();
    assert_eq!(d["acr_values_supported"], json!(["1", "2"]), "an upstream can report a second factor");
}

/// The authorization response for alice (signed in on `b`) to an SPA request with `extra`.
async fn authorize_alice(h: &H, b: &mut Browser, scope: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let c = challenge(VERIFIER);
    let mut all = vec![("code_challenge", c.as_str()), ("code_challenge_method", "S256")];
    all.extend_from_slice(extra);
    let start = b.get(&h.app, &authorize_url(SPA, SPA_REDIRECT, scope, &all)).await;
    let done = if b.cookies.contains_key("tessera_session") { start } else { login_alice(h, b, &start).await };
    done.params()
}

// EnsureUserInfoContainsName (oidcc-claims-essential), OpenID Connect Core §5.5
#[tokio::test]
async fn the_claims_parameter_asks_for_userinfo_and_id_token_claims_and_survives_refresh() {
    let h = harness().await;
    let mut b = Browser::default();
    let claims = r#"{"userinfo":{"name":{"essential":true},"nickname":null},"id_token":{"email":null,"dept":{"essential":false},"unknown_claim":null}}"#;
    let p = authorize_alice(&h, &mut b, "openid offline_access", &[("claims", claims)]).await;
    let (s, t) = redeem_spa(&h, &p["code"]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let id = id_token_claims(&h, t["id_token"].as_str().unwrap());
    assert_eq!(id["email"], "alice@example.com", "asked for in the ID token by name");
    assert_eq!(id["dept"], "sales", "an AuthClaim served from userinfo, asked for in the ID token");
    assert!(id.get("unknown_claim").is_none() && id.get("name").is_none());
    let info = userinfo(&h, t["access_token"].as_str().unwrap()).await;
    assert_eq!(info["name"], "Alice", "essential name in userinfo without the profile scope");
    assert!(info.get("nickname").is_none(), "alice has no nickname: omitted, not an error");
    assert!(info.get("email").is_none(), "asked for in the ID token only");

    let rt = t["refresh_token"].as_str().unwrap();
    let (s, t2) = token(&h, &[("grant_type", "refresh_token"), ("client_id", SPA), ("refresh_token", rt)], None).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    assert_eq!(id_token_claims(&h, t2["id_token"].as_str().unwrap())["email"], "alice@example.com");
    assert_eq!(userinfo(&h, t2["access_token"].as_str().unwrap()).await["name"], "Alice");
}

#[tokio::test]
async fn an_essential_acr_or_a_sub_the_sign_in_does_not_meet_fails_it() {
    let h = harness().await;
    let mut b = Browser::default();
    let essential = r#"{"id_token":{"acr":{"essential":true,"values":["2"]}}}"#;
    let p = authorize_alice(&h, &mut b, "openid", &[("claims", essential)]).await;
    assert_eq!(p.get("error").map(String::as_str), Some("access_denied"), "{p:?}");
    assert_eq!(p.get("state").map(String::as_str), Some("st-1"));

    let voluntary = r#"{"id_token":{"acr":{"values":["urn:x","1"]}}}"#;
    let p = authorize_alice(&h, &mut b, "openid", &[("claims", voluntary), ("acr_values", "2")]).await;
    let (_, t) = redeem_spa(&h, &p["code"]).await;
    assert_eq!(id_token_claims(&h, t["id_token"].as_str().unwrap())["acr"], "1", "claims' acr values over acr_values");

    let bob = r#"{"id_token":{"sub":{"value":"static|bob"}}}"#;
    let p = authorize_alice(&h, &mut b, "openid", &[("claims", bob)]).await;
    assert_eq!(p.get("error").map(String::as_str), Some("access_denied"), "{p:?}");
    let alice = r#"{"id_token":{"sub":{"value":"static|alice-1"}}}"#;
    assert!(authorize_alice(&h, &mut b, "openid", &[("claims", alice)]).await.contains_key("code"));

    for bad in ["[1]", "{\"userinfo\":{\"name\":3}}", "{{{{"] {
        let p = authorize_alice(&h, &mut b, "openid", &[("claims", bad)]).await;
        assert_eq!(p.get("error").map(String::as_str), Some("invalid_request"), "{bad}: {p:?}");
    }
    let d = b.get(&h.app, &format!("{BASE}/.well-known/openid-configuration")).await.json();
    assert_eq!(d["claims_parameter_supported"], true);
}

const RP: &str = "team.rp";

/// The harness with one more client, `team.rp`, a public client like the SPA that registered
/// the key it signs request objects with; returns that key.
async fn harness_with_request_objects() -> (H, ActiveKeys) {
    let h = harness().await;
    let now = jiff::Timestamp::now();
    let rp_key = keys::generate(SigningAlgorithm::ES256, now, now - jiff::SignedDuration::from_secs(60)).unwrap();
    let jwk = rp_key.public_jwk.clone();
    let signer = ActiveKeys::new(&keys::KeySet { keys: vec![rp_key] }).unwrap();
    let served = h.issuer.current("identity", "people").unwrap();
    let mut config = crate::config::ServerConfig::clone(&served.config);
    let mut rp = config.client(SPA).unwrap().clone();
    rp.client_id = RP.into();
    rp.jwks = Some(serde_json::from_value(json!({ "keys": [jwk] })).unwrap());
    config.clients.push(rp);
    let key = keys::generate(SigningAlgorithm::ES256, now, now).unwrap();
    h.issuer.replace(Served::new(config, &keys::KeySet { keys: vec![key] }).unwrap());
    (h, signer)
}

fn request_object(signer: &ActiveKeys, extra: Value) -> String {
    let now = jiff::Timestamp::now().as_second();
    let mut claims = json!({
        "iss": RP, "aud": ISSUER, "exp": now + 60, "iat": now, "client_id": RP, "response_type": "code",
        "redirect_uri": SPA_REDIRECT, "scope": "openid profile", "state": "st-ro", "nonce": "n-ro",
        "code_challenge": challenge(VERIFIER), "code_challenge_method": "S256",
        "claims": { "id_token": { "email": null } },
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    signer.sign_access_token(jiff::Timestamp::now(), &claims).unwrap().0
}

// oidcc-request-object (RFC 9101, OpenID Connect Core §6.1)
#[tokio::test]
async fn a_signed_request_object_takes_the_place_of_the_query_parameters() {
    let (h, signer) = harness_with_request_objects().await;
    let mut b = Browser::default();
    let object = request_object(&signer, json!({}));
    let start = b.get(&h.app, &authorize_url(RP, SPA_REDIRECT, "openid", &[("request", &object)])).await;
    let p = login_alice(&h, &mut b, &start).await.params();
    assert_eq!(p.get("state").map(String::as_str), Some("st-ro"), "the object's state, not the query's: {p:?}");
    let body = [
        ("grant_type", "authorization_code"),
        ("client_id", RP),
        ("code", p["code"].as_str()),
        ("redirect_uri", SPA_REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (s, t) = token(&h, &body, None).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["scope"], "openid profile");
    let id = id_token_claims(&h, t["id_token"].as_str().unwrap());
    assert_eq!((&id["nonce"], &id["email"]), (&json!("n-ro"), &json!("alice@example.com")));

    let d = b.get(&h.app, &format!("{BASE}/.well-known/openid-configuration")).await.json();
    assert_eq!(d["request_parameter_supported"], true);
    assert_eq!(d["request_object_signing_alg_values_supported"], json!(["RS256", "PS256", "ES256", "EdDSA"]));
}

#[tokio::test]
async fn request_objects_unsigned_forged_expired_or_by_reference_are_refused() {
    let (h, signer) = harness_with_request_objects().await;
    let mut b = Browser::default();
    let now = jiff::Timestamp::now().as_second();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(json!({ "iss": RP, "aud": ISSUER, "exp": now + 60, "state": "x" }).to_string())
    );
    let other = harness_with_request_objects().await.1;
    for (object, why) in [
        (unsigned, "not none"),
        (request_object(&other, json!({})), "registered keys"),
        (request_object(&signer, json!({ "exp": now - 120 })), "expired"),
        (request_object(&signer, json!({ "aud": "https://elsewhere.example" })), "aud"),
        (request_object(&signer, json!({ "client_id": SPA })), "client_id"),
        (request_object(&signer, json!({ "response_type": "token" })), "response_type"),
        ("x".repeat(crate::issuer::browser::authorize::MAX_REQUEST_OBJECT + 1), "16384"),
    ] {
        let r = b.get(&h.app, &authorize_url(RP, SPA_REDIRECT, "openid", &[("request", &object)])).await;
        let p = r.params();
        assert_eq!(p.get("error").map(String::as_str), Some("invalid_request_object"), "{why}: {p:?}");
        assert!(p["error_description"].contains(why), "{why}: {p:?}");
        assert_eq!(p.get("state").map(String::as_str), Some("st-1"), "the query's state");
        assert!(r.location.unwrap().starts_with(SPA_REDIRECT), "the query's registered redirect URI");
    }
    // Without a registered redirect URI in the query, the error is shown on our page.
    let object = request_object(&other, json!({}));
    let r = b.get(&h.app, &authorize_url(RP, "https://evil.example/cb", "openid", &[("request", &object)])).await;
    assert_eq!((r.status, r.location.is_none()), (StatusCode::BAD_REQUEST, true));
    let by_reference = [("request_uri", "https://rp.example/ro.jwt")];
    let r = b.get(&h.app, &authorize_url(RP, SPA_REDIRECT, "openid", &by_reference)).await;
    assert_eq!(r.params().get("error").map(String::as_str), Some("request_uri_not_supported"));
}

//! The standard claims of a person (OpenID Connect Core §5.1) beyond `sub`, `name` and
//! `email`, the scopes that release them (§5.4), and their bounds.
//!
//! They come from a static users Secret (platform input: refused whole when out of bounds)
//! or from an upstream's ID token (outside input: a value out of bounds or of the wrong type
//! is dropped, the sign-in goes on).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest text claim, in bytes (a name, a locale, a phone number, an address line).
pub const MAX_TEXT_BYTES: usize = 512;
/// Largest URL claim (`profile`, `picture`, `website`), in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Claims each standard scope releases (OpenID Connect Core §5.4), `sub` aside.
pub const SCOPE_CLAIMS: [(&str, &[&str]); 4] = [
    (
        "profile",
        &[
            "name",
            "family_name",
            "given_name",
            "middle_name",
            "nickname",
            "preferred_username",
            "profile",
            "picture",
            "website",
            "gender",
            "birthdate",
            "zoneinfo",
            "locale",
            "updated_at",
        ],
    ),
    ("email", &["email", "email_verified"]),
    ("address", &["address"]),
    ("phone", &["phone_number", "phone_number_verified"]),
];

/// The scope that releases `claim`, if a standard scope does.
pub fn scope_of(claim: &str) -> Option<&'static str> {
    SCOPE_CLAIMS.iter().find(|(_, claims)| claims.contains(&claim)).map(|(scope, _)| *scope)
}

/// The standard claims some person of a server can have (besides `sub`): every one when an
/// upstream may send it, otherwise those some static user has.
pub fn claims_available(identity: &super::IdentityConfig) -> Vec<&'static str> {
    let all = SCOPE_CLAIMS.iter().flat_map(|(_, claims)| claims.iter().copied());
    if !identity.upstreams.is_empty() {
        return all.collect();
    }
    let has = |claim: &str| {
        identity.users.iter().any(|u| match claim {
            // Every static user has a username.
            "preferred_username" => true,
            "name" => u.name.is_some(),
            "email" => u.email.is_some(),
            other => u.standard.claim(other).is_some(),
        })
    };
    all.filter(|c| has(c)).collect()
}

/// OpenID Connect Core §5.1.1.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl Address {
    /// (claim name, value) of each member that is set.
    fn members(&self) -> [(&'static str, &Option<String>); 6] {
        [
            ("formatted", &self.formatted),
            ("street_address", &self.street_address),
            ("locality", &self.locality),
            ("region", &self.region),
            ("postal_code", &self.postal_code),
            ("country", &self.country),
        ]
    }

    fn is_empty(&self) -> bool {
        self.members().iter().all(|(_, v)| v.is_none())
    }

    fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (k, v) in self.members() {
            if let Some(v) = v {
                out.insert(k.into(), v.clone().into());
            }
        }
        Value::Object(out)
    }

    /// From an upstream's `address` claim: text members within bounds, the rest dropped.
    fn from_claim(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        let text = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| s.len() <= MAX_TEXT_BYTES).map(str::to_owned);
        let a = Self {
            formatted: text("formatted"),
            street_address: text("street_address"),
            locality: text("locality"),
            region: text("region"),
            postal_code: text("postal_code"),
            country: text("country"),
        };
        (!a.is_empty()).then_some(a)
    }
}

/// A person's standard claims other than `sub`, `name`, `preferred_username` and `email`
/// (those are fields of the user already). Field names are camelCase in a static users
/// Secret (as `passwordHash`); the claims carry OpenID Connect's names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StandardClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// URL of the person's profile page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// `YYYY-MM-DD`, `YYYY` or `0000-MM-DD` (§5.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthdate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoneinfo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_verified: Option<bool>,
}

impl StandardClaims {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// (claim name, bound in bytes, value) of every text claim.
    fn texts(&self) -> [(&'static str, usize, &Option<String>); 12] {
        [
            ("given_name", MAX_TEXT_BYTES, &self.given_name),
            ("family_name", MAX_TEXT_BYTES, &self.family_name),
            ("middle_name", MAX_TEXT_BYTES, &self.middle_name),
            ("nickname", MAX_TEXT_BYTES, &self.nickname),
            ("profile", MAX_URL_BYTES, &self.profile),
            ("picture", MAX_URL_BYTES, &self.picture),
            ("website", MAX_URL_BYTES, &self.website),
            ("gender", MAX_TEXT_BYTES, &self.gender),
            ("birthdate", MAX_TEXT_BYTES, &self.birthdate),
            ("zoneinfo", MAX_TEXT_BYTES, &self.zoneinfo),
            ("locale", MAX_TEXT_BYTES, &self.locale),
            ("phone_number", MAX_TEXT_BYTES, &self.phone_number),
        ]
    }

    /// The claim names this person has a value for.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> =
            self.texts().iter().filter(|(_, _, v)| v.is_some()).map(|(k, _, _)| *k).collect();
        for (k, set) in [
            ("updated_at", self.updated_at.is_some()),
            ("address", self.address.is_some()),
            ("email_verified", self.email_verified.is_some()),
            ("phone_number_verified", self.phone_number_verified.is_some()),
        ] {
            if set {
                out.push(k);
            }
        }
        out
    }

    /// The first value beyond its bound, named without quoting it (static users are refused
    /// whole on it).
    pub fn out_of_bounds(&self) -> Option<String> {
        for (k, max, v) in self.texts() {
            if v.as_ref().is_some_and(|v| v.len() > max) {
                return Some(format!("{k} is longer than {max} bytes"));
            }
        }
        if let Some(a) = &self.address {
            for (k, v) in a.members() {
                if v.as_ref().is_some_and(|v| v.len() > MAX_TEXT_BYTES) {
                    return Some(format!("address.{k} is longer than {MAX_TEXT_BYTES} bytes"));
                }
            }
        }
        None
    }

    /// The claim named `name`, as JSON, if this person has it.
    pub fn claim(&self, name: &str) -> Option<Value> {
        if let Some((_, _, v)) = self.texts().into_iter().find(|(k, _, _)| *k == name) {
            return v.clone().map(Value::from);
        }
        match name {
            "updated_at" => self.updated_at.map(Value::from),
            "address" => self.address.as_ref().map(Address::to_json),
            "email_verified" => self.email_verified.map(Value::from),
            "phone_number_verified" => self.phone_number_verified.map(Value::from),
            _ => None,
        }
    }

    /// From an upstream's claims, by their OpenID Connect names: a value of the wrong type or
    /// beyond its bound is dropped (the upstream is outside input; the sign-in goes on).
    pub fn from_upstream(claims: &Map<String, Value>) -> Self {
        let text =
            |k: &str, max: usize| claims.get(k).and_then(Value::as_str).filter(|s| s.len() <= max).map(str::to_owned);
        let flag = |k: &str| match claims.get(k) {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "true" || s == "false" => Some(s == "true"),
            _ => None,
        };
        Self {
            given_name: text("given_name", MAX_TEXT_BYTES),
            family_name: text("family_name", MAX_TEXT_BYTES),
            middle_name: text("middle_name", MAX_TEXT_BYTES),
            nickname: text("nickname", MAX_TEXT_BYTES),
            profile: text("profile", MAX_URL_BYTES),
            picture: text("picture", MAX_URL_BYTES),
            website: text("website", MAX_URL_BYTES),
            gender: text("gender", MAX_TEXT_BYTES),
            birthdate: text("birthdate", MAX_TEXT_BYTES),
            zoneinfo: text("zoneinfo", MAX_TEXT_BYTES),
            locale: text("locale", MAX_TEXT_BYTES),
            updated_at: claims.get("updated_at").and_then(Value::as_i64),
            address: claims.get("address").and_then(Address::from_claim),
            email_verified: flag("email_verified"),
            phone_number: text("phone_number", MAX_TEXT_BYTES),
            phone_number_verified: flag("phone_number_verified"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_standard_claim_has_one_scope() {
        let all: Vec<&str> = SCOPE_CLAIMS.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        assert_eq!(all.len(), 19);
        assert_eq!(scope_of("phone_number_verified"), Some("phone"));
        assert_eq!(scope_of("groups"), None);
        let full = StandardClaims {
            given_name: Some("g".into()),
            updated_at: Some(1),
            address: Some(Address { country: Some("NL".into()), ..Default::default() }),
            email_verified: Some(true),
            phone_number_verified: Some(false),
            ..Default::default()
        };
        for name in full.names() {
            assert!(scope_of(name).is_some(), "{name}");
            assert!(full.claim(name).is_some(), "{name}");
        }
    }

    #[test]
    fn upstream_claims_out_of_bounds_or_of_the_wrong_type_are_dropped() {
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        let claims = json!({
            "given_name": "Ada", "family_name": long, "nickname": 7, "updated_at": "yesterday",
            "picture": "https://pics.example/ada.png", "email_verified": "true", "phone_number_verified": "maybe",
            "address": { "country": "NL", "locality": ["not", "text"] },
        });
        let s = StandardClaims::from_upstream(claims.as_object().unwrap());
        assert_eq!(s.given_name.as_deref(), Some("Ada"));
        assert_eq!((&s.family_name, &s.nickname, s.updated_at, s.phone_number_verified), (&None, &None, None, None));
        assert_eq!(s.email_verified, Some(true));
        assert_eq!(s.claim("address"), Some(json!({ "country": "NL" })));
        assert_eq!(s.out_of_bounds(), None);
        let over = StandardClaims { address: Some(Address { region: Some(long), ..Default::default() }), ..s };
        assert_eq!(over.out_of_bounds().as_deref(), Some("address.region is longer than 512 bytes"));
    }
}

//! The endpoints of an issuer: one table, from which the issuer's routing, its discovery
//! documents, the audiences of client assertions and the endpoints in a server's status are
//! all derived.

/// An endpoint of an issuer, at a fixed path under its issuer URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    OpenIdConfiguration,
    AuthorizationServerMetadata,
    Keys,
    Token,
    Introspect,
    Revoke,
    Authorize,
    Login,
    LoginUpstream,
    LoginCallback,
    Consent,
    UserInfo,
    Logout,
    DeviceAuthorize,
    Device,
}

impl Endpoint {
    pub const ALL: [Endpoint; 15] = [
        Self::OpenIdConfiguration,
        Self::AuthorizationServerMetadata,
        Self::Keys,
        Self::Token,
        Self::Introspect,
        Self::Revoke,
        Self::Authorize,
        Self::Login,
        Self::LoginUpstream,
        Self::LoginCallback,
        Self::Consent,
        Self::UserInfo,
        Self::Logout,
        Self::DeviceAuthorize,
        Self::Device,
    ];

    /// Its path under the issuer URI (Okta's paths).
    pub const fn path(self) -> &'static str {
        match self {
            Self::OpenIdConfiguration => "/.well-known/openid-configuration",
            Self::AuthorizationServerMetadata => "/.well-known/oauth-authorization-server",
            Self::Keys => "/v1/keys",
            Self::Token => "/v1/token",
            Self::Introspect => "/v1/introspect",
            Self::Revoke => "/v1/revoke",
            Self::Authorize => "/v1/authorize",
            Self::Login => "/v1/login",
            Self::LoginUpstream => "/v1/login/upstream",
            Self::LoginCallback => "/v1/login/callback",
            Self::Consent => "/v1/consent",
            Self::UserInfo => "/v1/userinfo",
            Self::Logout => "/v1/logout",
            Self::DeviceAuthorize => "/v1/device/authorize",
            Self::Device => "/v1/device",
        }
    }

    /// The endpoint at `path` (relative to the issuer URI).
    pub fn parse(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Its URL at the issuer `issuer`.
    pub fn url(self, issuer: &str) -> String {
        format!("{issuer}{}", self.path())
    }

    /// The HTTP methods it answers.
    pub const fn methods(self) -> &'static [&'static str] {
        match self {
            Self::OpenIdConfiguration | Self::AuthorizationServerMetadata | Self::Keys => &["GET", "HEAD"],
            Self::Token | Self::Introspect | Self::Revoke | Self::DeviceAuthorize => &["POST"],
            Self::LoginUpstream | Self::LoginCallback => &["GET"],
            Self::Authorize | Self::Login | Self::Consent | Self::UserInfo | Self::Logout | Self::Device => {
                &["GET", "POST"]
            }
        }
    }

    /// Pages for people: no CORS, answers are HTML or redirects.
    pub const fn is_browser(self) -> bool {
        matches!(
            self,
            Self::Authorize
                | Self::Login
                | Self::LoginUpstream
                | Self::LoginCallback
                | Self::Consent
                | Self::Logout
                | Self::Device
        )
    }

    /// Whether a client assertion (`private_key_jwt`, RFC 7523 §3) may name its URL as the
    /// audience: the endpoints a client authenticates at (the issuer URI may be named too).
    pub const fn is_assertion_audience(self) -> bool {
        matches!(self, Self::Token | Self::Introspect | Self::Revoke)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_found_by_its_own_path_only() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::parse(e.path()), Some(e));
            assert!(!e.methods().is_empty(), "{e:?}");
        }
        assert_eq!(Endpoint::parse("/v1/token/"), None);
        assert_eq!(Endpoint::Token.url("https://auth.example.com/p"), "https://auth.example.com/p/v1/token");
    }
}

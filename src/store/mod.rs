//! Token state: revocations, single-use markers (client assertion `jti`s), one-time codes
//! (authorization and device codes) and refresh-token families. In memory for one replica,
//! in Redis for several; both behind [`TokenStore`], both run through the same tests.

mod memory;
mod redis;

use futures::future::BoxFuture;

pub use memory::{DEFAULT_MEMORY_LIMIT_MIB, MemoryStore};
pub use redis::RedisStore;

/// Seconds a client is told to wait when token state is unavailable.
pub const RETRY_AFTER_SECS: u64 = 2;

/// The one error of the store: its state cannot be read or written right now. The message is
/// for logs only and never holds the store's URL or password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("token store unavailable: {0}")]
pub struct StoreError(pub String);

/// The authorization server whose state an operation touches; every key lives under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerScope<'a> {
    pub namespace: &'a str,
    pub server: &'a str,
}

impl ServerScope<'_> {
    /// `{namespace}/{server}`: the prefix of every key of this server.
    pub fn prefix(&self) -> String {
        format!("{}/{}", self.namespace, self.server)
    }
}

/// Kinds of one-time codes, each redeemed at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeKind {
    Authorization,
    Device,
    /// The short code a user types for a device code; maps to the device code.
    UserCode,
    /// A browser sign-in in progress (authorize or device approval), by its id.
    Request,
    /// A person's sign-in at this server, by the id in their session cookie.
    Session,
    /// A sign-in sent to an upstream provider, by the `state` given to it.
    UpstreamState,
    /// What an authorization code issued, recorded when it is redeemed (first writer wins).
    Redeemed,
    /// The userinfo claims of a person's access token, by its `jti`, until it expires.
    UserInfo,
    /// A person's answer to a device code (approved or denied), by the device code's hash.
    DeviceDecision,
    /// The scopes a person allowed a third-party client, by the hash of person and client.
    Consent,
}

impl CodeKind {
    /// State an unauthenticated browser makes (a sign-in in progress): the only state the
    /// memory store's ceiling may drop.
    pub fn is_pending_sign_in(self) -> bool {
        matches!(self, Self::Request | Self::UpstreamState)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorization => "code",
            Self::Device => "device",
            Self::UserCode => "usercode",
            Self::Request => "request",
            Self::Session => "session",
            Self::UpstreamState => "upstream",
            Self::Redeemed => "redeemed",
            Self::UserInfo => "userinfo",
            Self::DeviceDecision => "devicedecision",
            Self::Consent => "consent",
        }
    }
}

/// What presenting a refresh token did to its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was the current one; `next` replaced it. Holds the family's grant.
    Rotated(Vec<u8>),
    /// The presented token was already rotated away: a replay. The whole family is revoked.
    ReuseDetected,
    /// No such family (never issued, expired or revoked).
    Unknown,
}

/// A new refresh-token family: the grant it carries, its first token and its lifetime.
#[derive(Debug, Clone, Copy)]
pub struct NewFamily<'a> {
    pub family: &'a str,
    pub token: &'a str,
    pub grant: &'a [u8],
    /// Unix seconds after which the family and all its tokens are gone.
    pub until: i64,
}

/// Token state shared by the replicas of a server. Times are Unix seconds; `until` is when an
/// entry stops mattering (the expiry of what it guards) and is its TTL in the backend; `now`
/// is the caller's clock, read once per request (the store reads none of its own).
pub trait TokenStore: Send + Sync + 'static {
    /// Marks access token `jti` revoked until `until` (its expiry).
    fn revoke<'a>(
        &'a self,
        s: ServerScope<'a>,
        jti: &'a str,
        until: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn is_revoked<'a>(&'a self, s: ServerScope<'a>, jti: &'a str, now: i64) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Records `key` as used until `until`; true exactly once across all replicas.
    fn first_use<'a>(
        &'a self,
        s: ServerScope<'a>,
        key: &'a str,
        until: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Stores a one-time code; false (and nothing written) if it already exists.
    fn put_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        value: &'a [u8],
        until: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Reads a code without consuming it (a device code being polled).
    fn get_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;
    /// Replaces the value of an existing code, keeping its expiry (a device code approved);
    /// false if it no longer exists.
    fn update_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        value: &'a [u8],
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Consumes a code: its value to exactly one caller across all replicas, None to the rest.
    fn take_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// Starts a refresh-token family whose current token is `f.token`.
    fn create_family<'a>(
        &'a self,
        s: ServerScope<'a>,
        f: NewFamily<'a>,
        now: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Presents `token` of `family`: if current, `next` becomes current (atomically, once);
    /// if an older token, the family is revoked.
    fn rotate_refresh<'a>(
        &'a self,
        s: ServerScope<'a>,
        family: &'a str,
        token: &'a str,
        next: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>>;
    /// The grant a live family carries (its client), without rotating it: `None` if there is
    /// no such family (never issued, expired or revoked).
    fn family_grant<'a>(
        &'a self,
        s: ServerScope<'a>,
        family: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;
    /// Revokes a family and every token of it.
    fn revoke_family<'a>(&'a self, s: ServerScope<'a>, family: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether the store answers now (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

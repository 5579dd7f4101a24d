//! Token state: revocations and single-use markers (client assertion `jti`s). In memory for
//! one replica; a Redis implementation of the same trait comes for several replicas.

mod memory;

use futures::future::BoxFuture;

pub use memory::MemoryStore;

#[derive(Debug, thiserror::Error)]
#[error("token store unavailable: {0}")]
pub struct StoreError(pub String);

/// Keys are namespaced by the caller (`<namespace>/<server>/...`). Times are Unix seconds.
pub trait TokenStore: Send + Sync + 'static {
    /// Marks token `jti` revoked until `until` (its expiry).
    fn revoke<'a>(&'a self, jti: &'a str, until: i64) -> BoxFuture<'a, Result<(), StoreError>>;
    fn is_revoked<'a>(&'a self, jti: &'a str, now: i64) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Records `key` as used until `until`; true when this is its first use.
    fn first_use<'a>(&'a self, key: &'a str, until: i64, now: i64) -> BoxFuture<'a, Result<bool, StoreError>>;
}

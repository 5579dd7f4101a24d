//! In-memory token state for a single replica.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt};

use super::{StoreError, TokenStore};

/// Entries are dropped once expired; a sweep runs every this many inserts.
const SWEEP_EVERY: usize = 1024;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    revoked: HashMap<String, i64>,
    used: HashMap<String, i64>,
    inserts: usize,
}

impl Inner {
    fn sweep(&mut self, now: i64) {
        self.inserts += 1;
        if self.inserts.is_multiple_of(SWEEP_EVERY) {
            self.revoked.retain(|_, until| *until > now);
            self.used.retain(|_, until| *until > now);
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T, StoreError> {
        let mut guard = self.inner.lock().map_err(|_| StoreError("memory store lock poisoned".into()))?;
        Ok(f(&mut guard))
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl TokenStore for MemoryStore {
    fn revoke<'a>(&'a self, jti: &'a str, until: i64) -> BoxFuture<'a, Result<(), StoreError>> {
        let r = self.with(|i| {
            i.revoked.insert(jti.to_owned(), until);
            i.sweep(until);
        });
        async move { r }.boxed()
    }

    fn is_revoked<'a>(&'a self, jti: &'a str, now: i64) -> BoxFuture<'a, Result<bool, StoreError>> {
        let r = self.with(|i| i.revoked.get(jti).is_some_and(|until| *until > now));
        async move { r }.boxed()
    }

    fn first_use<'a>(&'a self, key: &'a str, until: i64, now: i64) -> BoxFuture<'a, Result<bool, StoreError>> {
        let r = self.with(|i| {
            i.sweep(now);
            match i.used.get(key) {
                Some(u) if *u > now => false,
                _ => {
                    i.used.insert(key.to_owned(), until);
                    true
                }
            }
        });
        async move { r }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_used_once_until_it_expires() {
        let s = MemoryStore::new();
        assert!(s.first_use("a", 100, 0).await.unwrap());
        assert!(!s.first_use("a", 100, 50).await.unwrap());
        assert!(s.first_use("a", 200, 100).await.unwrap());
    }

    #[tokio::test]
    async fn revocation_lasts_until_expiry() {
        let s = MemoryStore::new();
        s.revoke("j", 100).await.unwrap();
        assert!(s.is_revoked("j", 99).await.unwrap());
        assert!(!s.is_revoked("j", 100).await.unwrap());
    }
}

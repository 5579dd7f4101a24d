//! In-memory token state for a single replica.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt};

use super::{CodeKind, NewFamily, Rotation, ServerScope, StoreError, TokenStore};

/// Entries are dropped once expired; a sweep runs every this many inserts.
const SWEEP_EVERY: usize = 1024;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

struct Family {
    current: String,
    grant: Vec<u8>,
    until: i64,
}

#[derive(Default)]
struct Inner {
    revoked: HashMap<String, i64>,
    used: HashMap<String, i64>,
    codes: HashMap<String, (Vec<u8>, i64)>,
    families: HashMap<String, Family>,
    inserts: usize,
}

impl Inner {
    fn sweep(&mut self, now: i64) {
        self.inserts += 1;
        if self.inserts.is_multiple_of(SWEEP_EVERY) {
            self.revoked.retain(|_, until| *until > now);
            self.used.retain(|_, until| *until > now);
            self.codes.retain(|_, (_, until)| *until > now);
            self.families.retain(|_, f| f.until > now);
        }
    }

    fn live_code(&mut self, key: &str, now: i64) -> Option<&mut (Vec<u8>, i64)> {
        self.codes.get_mut(key).filter(|(_, until)| *until > now)
    }
}

fn key(s: ServerScope<'_>, kind: &str, id: &str) -> String {
    format!("{}:{kind}:{id}", s.prefix())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Inner) -> T) -> BoxFuture<'static, Result<T, StoreError>> {
        let r = match self.inner.lock() {
            Ok(mut guard) => Ok(f(&mut guard)),
            Err(_) => Err(StoreError("memory store lock poisoned".into())),
        };
        async move { r }.boxed()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl TokenStore for MemoryStore {
    fn revoke<'a>(&'a self, s: ServerScope<'a>, jti: &'a str, until: i64) -> BoxFuture<'a, Result<(), StoreError>> {
        let k = key(s, "revoked", jti);
        let now = crate::issuer::unix_now();
        self.with(move |i| {
            i.revoked.insert(k, until);
            i.sweep(now);
        })
    }

    fn is_revoked<'a>(&'a self, s: ServerScope<'a>, jti: &'a str, now: i64) -> BoxFuture<'a, Result<bool, StoreError>> {
        let k = key(s, "revoked", jti);
        self.with(move |i| i.revoked.get(&k).is_some_and(|until| *until > now))
    }

    fn first_use<'a>(
        &'a self,
        s: ServerScope<'a>,
        id: &'a str,
        until: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let k = key(s, "used", id);
        self.with(move |i| {
            i.sweep(now);
            match i.used.get(&k) {
                Some(u) if *u > now => false,
                _ => {
                    i.used.insert(k, until);
                    true
                }
            }
        })
    }

    fn put_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        value: &'a [u8],
        until: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let k = key(s, kind.as_str(), code);
        let value = value.to_vec();
        let now = crate::issuer::unix_now();
        self.with(move |i| {
            i.sweep(now);
            if i.live_code(&k, now).is_some() {
                return false;
            }
            i.codes.insert(k, (value, until));
            true
        })
    }

    fn get_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let k = key(s, kind.as_str(), code);
        self.with(move |i| i.live_code(&k, now).map(|(v, _)| v.clone()))
    }

    fn update_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        value: &'a [u8],
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let k = key(s, kind.as_str(), code);
        let value = value.to_vec();
        self.with(move |i| match i.live_code(&k, now) {
            Some(entry) => {
                entry.0 = value;
                true
            }
            None => false,
        })
    }

    fn take_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let k = key(s, kind.as_str(), code);
        self.with(move |i| i.codes.remove(&k).filter(|(_, until)| *until > now).map(|(v, _)| v))
    }

    fn create_family<'a>(&'a self, s: ServerScope<'a>, f: NewFamily<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        let k = key(s, "rf", f.family);
        let family = Family { current: f.token.to_owned(), grant: f.grant.to_vec(), until: f.until };
        let now = crate::issuer::unix_now();
        self.with(move |i| {
            i.sweep(now);
            i.families.insert(k, family);
        })
    }

    fn rotate_refresh<'a>(
        &'a self,
        s: ServerScope<'a>,
        family: &'a str,
        token: &'a str,
        next: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Rotation, StoreError>> {
        let k = key(s, "rf", family);
        let (token, next) = (token.to_owned(), next.to_owned());
        self.with(move |i| match i.families.get_mut(&k) {
            Some(f) if f.until <= now => {
                i.families.remove(&k);
                Rotation::Unknown
            }
            Some(f) if f.current == token => {
                f.current = next;
                Rotation::Rotated(f.grant.clone())
            }
            Some(_) => {
                i.families.remove(&k);
                Rotation::ReuseDetected
            }
            None => Rotation::Unknown,
        })
    }

    fn family_grant<'a>(
        &'a self,
        s: ServerScope<'a>,
        family: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let k = key(s, "rf", family);
        self.with(move |i| i.families.get(&k).filter(|f| f.until > now).map(|f| f.grant.clone()))
    }

    fn revoke_family<'a>(&'a self, s: ServerScope<'a>, family: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let k = key(s, "rf", family);
        self.with(move |i| {
            i.families.remove(&k);
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.with(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_entries_are_swept() {
        let s = MemoryStore::new();
        let scope = ServerScope { namespace: "ns", server: "srv" };
        for n in 0..(SWEEP_EVERY as i64 * 2) {
            s.first_use(scope, &n.to_string(), 10, 0).await.unwrap();
        }
        s.first_use(scope, "late", 1000, 500).await.unwrap();
        for n in 0..(SWEEP_EVERY as i64) {
            s.first_use(scope, &format!("x{n}"), 1000, 500).await.unwrap();
        }
        assert!(s.inner.lock().unwrap().used.len() <= SWEEP_EVERY + 1);
    }

    #[tokio::test]
    async fn a_sweep_run_by_a_revocation_keeps_what_is_still_live() {
        // A revocation's `until` is its token's expiry, not now: sweeping with it dropped every
        // entry expiring before it (other revocations, codes, sessions, families).
        let s = MemoryStore::new();
        let scope = ServerScope { namespace: "ns", server: "srv" };
        let now = crate::issuer::unix_now();
        s.revoke(scope, "earlier", now + 60).await.unwrap();
        assert!(s.put_code(scope, CodeKind::Session, "sid", b"v", now + 600).await.unwrap());
        for n in 0..SWEEP_EVERY {
            s.revoke(scope, &format!("later-{n}"), now + 24 * 3600).await.unwrap();
        }
        assert!(s.is_revoked(scope, "earlier", now).await.unwrap(), "a live revocation was swept");
        assert!(s.get_code(scope, CodeKind::Session, "sid", now).await.unwrap().is_some(), "a live code was swept");
    }
}

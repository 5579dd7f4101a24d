//! In-memory token state for a single replica, under a memory ceiling: beyond it the oldest
//! pending sign-ins (what unauthenticated browsers make) are dropped first; codes, sessions,
//! revocations, used markers and refresh families are never dropped for space.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt};

use super::{CodeKind, NewFamily, Rotation, ServerScope, StoreError, TokenStore};

/// Entries are dropped once expired; a sweep runs every this many inserts.
const SWEEP_EVERY: usize = 1024;
/// Default ceiling of the accounted bytes, in MiB (the issuer pod's default memory limit is 128 MiB).
pub const DEFAULT_MEMORY_LIMIT_MIB: usize = 32;
/// What an entry costs beyond its key and value (map slot, allocation headers, expiry).
const ENTRY_OVERHEAD: usize = 96;

pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MEMORY_LIMIT_MIB << 20)
    }
}

struct Family {
    current: String,
    grant: Vec<u8>,
    until: i64,
}

struct Code {
    value: Vec<u8>,
    until: i64,
    /// Its place in the shedding order, for pending sign-ins.
    pending: Option<u64>,
}

/// What a value costs beyond its key.
trait Cost {
    fn cost(&self) -> usize;
}

impl Cost for i64 {
    fn cost(&self) -> usize {
        0
    }
}

impl Cost for Code {
    fn cost(&self) -> usize {
        self.value.len()
    }
}

impl Cost for Family {
    fn cost(&self) -> usize {
        self.current.len() + self.grant.len()
    }
}

fn entry_cost(key: &str, v: &impl Cost) -> usize {
    key.len() + v.cost() + ENTRY_OVERHEAD
}

/// A map that knows how many bytes its entries take.
struct Table<V> {
    map: HashMap<String, V>,
    bytes: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self { map: HashMap::new(), bytes: 0 }
    }
}

impl<V: Cost> Table<V> {
    fn insert(&mut self, k: String, v: V) -> Option<V> {
        self.bytes += entry_cost(&k, &v);
        let old = self.map.remove(&k);
        if let Some(o) = &old {
            self.bytes -= entry_cost(&k, o);
        }
        self.map.insert(k, v);
        old
    }

    fn remove(&mut self, k: &str) -> Option<V> {
        let v = self.map.remove(k)?;
        self.bytes -= entry_cost(k, &v);
        Some(v)
    }

    fn get(&self, k: &str) -> Option<&V> {
        self.map.get(k)
    }

    fn update<T>(&mut self, k: &str, f: impl FnOnce(&mut V) -> T) -> Option<T> {
        let v = self.map.get_mut(k)?;
        self.bytes -= entry_cost(k, v);
        let out = f(v);
        self.bytes += entry_cost(k, v);
        Some(out)
    }

    /// Keeps what `keep` says; calls `dropped` with each value removed.
    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool, mut dropped: impl FnMut(&V)) {
        let mut freed = 0;
        self.map.retain(|k, v| {
            let k_ = keep(v);
            if !k_ {
                freed += entry_cost(k, v);
                dropped(v);
            }
            k_
        });
        self.bytes -= freed;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

struct Inner {
    revoked: Table<i64>,
    used: Table<i64>,
    codes: Table<Code>,
    families: Table<Family>,
    /// Pending sign-ins, oldest first: order of insertion → key in `codes`.
    pending: BTreeMap<u64, String>,
    next_pending: u64,
    inserts: usize,
    limit: usize,
}

impl Inner {
    fn new(limit: usize) -> Self {
        Self {
            revoked: Table::default(),
            used: Table::default(),
            codes: Table::default(),
            families: Table::default(),
            pending: BTreeMap::new(),
            next_pending: 0,
            inserts: 0,
            limit,
        }
    }

    fn bytes(&self) -> usize {
        self.revoked.bytes + self.used.bytes + self.codes.bytes + self.families.bytes
    }

    fn sweep(&mut self, now: i64) {
        self.inserts += 1;
        if self.inserts.is_multiple_of(SWEEP_EVERY) {
            self.sweep_now(now);
        }
    }

    fn sweep_now(&mut self, now: i64) {
        self.revoked.retain(|until| *until > now, |_| {});
        self.used.retain(|until| *until > now, |_| {});
        let pending = &mut self.pending;
        self.codes.retain(
            |c| c.until > now,
            |c| {
                if let Some(n) = c.pending {
                    pending.remove(&n);
                }
            },
        );
        self.families.retain(|f| f.until > now, |_| {});
    }

    fn live_code(&self, key: &str, now: i64) -> Option<&Code> {
        self.codes.get(key).filter(|c| c.until > now)
    }

    fn remove_code(&mut self, key: &str) -> Option<Code> {
        let c = self.codes.remove(key)?;
        if let Some(n) = c.pending {
            self.pending.remove(&n);
        }
        Some(c)
    }

    /// Makes room for `extra` bytes: expired entries, then the oldest pending sign-ins. Whether
    /// the store is within its ceiling afterwards.
    fn make_room(&mut self, extra: usize, now: i64) -> bool {
        if self.bytes() + extra <= self.limit {
            return true;
        }
        self.sweep_now(now);
        while self.bytes() + extra > self.limit {
            let Some((_, key)) = self.pending.pop_first() else { return false };
            if let Some(mut c) = self.codes.remove(&key) {
                c.pending = None;
            }
        }
        true
    }

    /// Stores a code; false if a live one exists. A pending sign-in that does not fit under
    /// the ceiling even after shedding is refused; anything else is always stored.
    fn put_code(
        &mut self,
        key: String,
        kind: CodeKind,
        value: Vec<u8>,
        until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.sweep(now);
        if self.live_code(&key, now).is_some() {
            return Ok(false);
        }
        self.remove_code(&key);
        let pending = kind.is_pending_sign_in();
        let fits = self.make_room(key.len() + value.len() + ENTRY_OVERHEAD, now);
        if pending && !fits {
            return Err(StoreError("memory store is at its ceiling; sign-ins cannot start now".into()));
        }
        let order = pending.then(|| {
            let n = self.next_pending;
            self.next_pending += 1;
            self.pending.insert(n, key.clone());
            n
        });
        self.codes.insert(key, Code { value, until, pending: order });
        Ok(true)
    }
}

fn key(s: ServerScope<'_>, kind: &str, id: &str) -> String {
    format!("{}:{kind}:{id}", s.prefix())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose accounted size (keys, values and a fixed overhead per entry) stays under
    /// `limit` bytes as far as pending sign-ins can be shed.
    pub fn with_limit(limit: usize) -> Self {
        Self { inner: Mutex::new(Inner::new(limit)) }
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
    fn revoke<'a>(
        &'a self,
        s: ServerScope<'a>,
        jti: &'a str,
        until: i64,
        now: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let k = key(s, "revoked", jti);
        self.with(move |i| {
            i.sweep(now);
            i.revoked.insert(k, until);
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
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let k = key(s, kind.as_str(), code);
        let value = value.to_vec();
        async move { self.with(move |i| i.put_code(k, kind, value, until, now)).await? }.boxed()
    }

    fn get_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let k = key(s, kind.as_str(), code);
        self.with(move |i| i.live_code(&k, now).map(|c| c.value.clone()))
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
        self.with(move |i| i.live_code(&k, now).is_some() && i.codes.update(&k, |c| c.value = value).is_some())
    }

    fn take_code<'a>(
        &'a self,
        s: ServerScope<'a>,
        kind: CodeKind,
        code: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        let k = key(s, kind.as_str(), code);
        self.with(move |i| i.remove_code(&k).filter(|c| c.until > now).map(|c| c.value))
    }

    fn create_family<'a>(
        &'a self,
        s: ServerScope<'a>,
        f: NewFamily<'a>,
        now: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let k = key(s, "rf", f.family);
        let family = Family { current: f.token.to_owned(), grant: f.grant.to_vec(), until: f.until };
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
        self.with(move |i| match i.families.get(&k) {
            Some(f) if f.until <= now => {
                i.families.remove(&k);
                Rotation::Unknown
            }
            Some(f) if f.current == token => {
                let grant = f.grant.clone();
                i.families.update(&k, |f| f.current = next);
                Rotation::Rotated(grant)
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

    fn scope() -> ServerScope<'static> {
        ServerScope { namespace: "ns", server: "srv" }
    }

    #[tokio::test]
    async fn a_full_store_sheds_the_oldest_pending_sign_ins_and_nothing_else() {
        let now = jiff::Timestamp::now().as_second();
        let s = MemoryStore::with_limit(64 * 1024);
        let until = now + 600;
        assert!(s.put_code(scope(), CodeKind::Session, "sid", &[0; 512], until, now).await.unwrap());
        assert!(s.put_code(scope(), CodeKind::Authorization, "code", &[0; 512], until, now).await.unwrap());
        s.revoke(scope(), "jti", until, now).await.unwrap();
        s.create_family(scope(), NewFamily { family: "f", token: "t", grant: b"g", until }, now).await.unwrap();
        // 200 sign-ins of 1 KiB each: far more than 64 KiB.
        for n in 0..200 {
            assert!(s.put_code(scope(), CodeKind::Request, &format!("r{n}"), &[1; 1024], until, now).await.unwrap());
            if n % 3 == 0 {
                assert!(
                    s.put_code(scope(), CodeKind::UpstreamState, &format!("u{n}"), &[2; 256], until, now)
                        .await
                        .unwrap()
                );
            }
            assert!(s.inner.lock().unwrap().bytes() <= 64 * 1024);
        }
        let get = |kind, id: &'static str| {
            let s = &s;
            async move { s.get_code(scope(), kind, id, now).await.unwrap().is_some() }
        };
        assert!(!get(CodeKind::Request, "r0").await, "the oldest sign-in was kept");
        assert!(!get(CodeKind::UpstreamState, "u0").await, "the oldest upstream sign-in was kept");
        assert!(get(CodeKind::Request, "r199").await, "the newest sign-in was shed");
        assert!(get(CodeKind::Session, "sid").await, "a session was shed");
        assert!(get(CodeKind::Authorization, "code").await, "a code was shed");
        assert!(s.is_revoked(scope(), "jti", now).await.unwrap(), "a revocation was shed");
        assert!(s.family_grant(scope(), "f", now).await.unwrap().is_some(), "a refresh family was shed");
        // What is kept is a run of the newest: nothing newer was shed before something older.
        let mut kept = Vec::new();
        for n in 0..200 {
            let id = format!("r{n}");
            kept.push(s.get_code(scope(), CodeKind::Request, &id, now).await.unwrap().is_some());
        }
        let first = kept.iter().position(|k| *k).unwrap();
        assert!(kept[first..].iter().all(|k| *k), "{kept:?}");
    }

    #[tokio::test]
    async fn state_of_authenticated_requests_is_stored_past_the_ceiling_and_new_sign_ins_wait() {
        let now = jiff::Timestamp::now().as_second();
        let s = MemoryStore::with_limit(8 * 1024);
        let until = now + 600;
        assert!(s.put_code(scope(), CodeKind::Request, "early", &[1; 1024], until, now).await.unwrap());
        for n in 0..20 {
            assert!(s.put_code(scope(), CodeKind::Session, &format!("s{n}"), &[0; 1024], until, now).await.unwrap());
            s.revoke(scope(), &format!("j{n}"), until, now).await.unwrap();
        }
        for n in 0..20 {
            assert!(s.get_code(scope(), CodeKind::Session, &format!("s{n}"), now).await.unwrap().is_some());
            assert!(s.is_revoked(scope(), &format!("j{n}"), now).await.unwrap());
        }
        assert!(s.get_code(scope(), CodeKind::Request, "early", now).await.unwrap().is_none());
        assert!(s.put_code(scope(), CodeKind::Request, "late", &[1; 1024], until, now).await.is_err());
    }

    #[tokio::test]
    async fn accounted_bytes_follow_every_write_and_removal() {
        let now = jiff::Timestamp::now().as_second();
        let s = MemoryStore::with_limit(1 << 20);
        let until = now + 600;
        assert!(s.put_code(scope(), CodeKind::Request, "r", &[1; 100], until, now).await.unwrap());
        assert!(s.update_code(scope(), CodeKind::Request, "r", &[1; 300], now).await.unwrap());
        s.create_family(scope(), NewFamily { family: "f", token: "t1", grant: b"g", until }, now).await.unwrap();
        assert!(matches!(s.rotate_refresh(scope(), "f", "t1", "t2-longer", now).await.unwrap(), Rotation::Rotated(_)));
        s.revoke(scope(), "j", until, now).await.unwrap();
        s.revoke(scope(), "j", until, now).await.unwrap();
        assert!(s.take_code(scope(), CodeKind::Request, "r", now).await.unwrap().is_some());
        s.revoke_family(scope(), "f").await.unwrap();
        let i = s.inner.lock().unwrap();
        assert_eq!(i.bytes(), entry_cost("ns/srv:revoked:j", &0i64));
        assert!(i.pending.is_empty());
    }

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
        let now = jiff::Timestamp::now().as_second();
        s.revoke(scope, "earlier", now + 60, now).await.unwrap();
        assert!(s.put_code(scope, CodeKind::Session, "sid", b"v", now + 600, now).await.unwrap());
        for n in 0..SWEEP_EVERY {
            s.revoke(scope, &format!("later-{n}"), now + 24 * 3600, now).await.unwrap();
        }
        assert!(s.is_revoked(scope, "earlier", now).await.unwrap(), "a live revocation was swept");
        assert!(s.get_code(scope, CodeKind::Session, "sid", now).await.unwrap().is_some(), "a live code was swept");
    }
}

//! Token buckets by key, bounded in memory: the per-client limit of the token endpoint
//! (`spec.rateLimit`) and the failure limits of client authentication, sign-in and device codes.
//!
//! Keys are hashed, so a key an attacker chooses (a username, a client id) costs 32 bytes
//! whatever its length. A full map first forgets the buckets that have refilled (they are the
//! same as no bucket), then the quarter closest to full: an attacker who floods new keys
//! loses the least information possible and pays O(1) per key on average.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::RateLimit;

/// Buckets one limiter keeps at most (about 80 bytes each).
pub const DEFAULT_CAPACITY: usize = 16_384;

/// A bucket's size and how fast it refills.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl Limit {
    /// `burst` at once, then one every `every`.
    pub const fn one_every(burst: u32, every: Duration) -> Self {
        Self { burst, per_second: 1.0 / every.as_secs_f64() }
    }

    fn burst(&self) -> f64 {
        f64::from(self.burst.max(1))
    }

    fn rate(&self) -> f64 {
        self.per_second.max(f64::MIN_POSITIVE)
    }
}

impl From<&RateLimit> for Limit {
    fn from(r: &RateLimit) -> Self {
        Self { burst: r.burst.max(r.per_client).max(1), per_second: f64::from(r.per_client.max(1)) }
    }
}

pub struct RateLimiter {
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
    capacity: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// When it is full again if nothing is taken: from then on it is as good as absent.
    full_at: Instant,
}

impl Bucket {
    fn refill(&mut self, limit: &Limit, now: Instant) {
        // A request's instant is read when it arrives, so one that arrived first may reach the
        // bucket last: the bucket's time never goes back, or that span would refill twice.
        let now = now.max(self.at);
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.rate()).min(limit.burst());
        self.at = now;
    }

    fn wait(&self, limit: &Limit) -> u64 {
        ((1.0 - self.tokens) / limit.rate()).ceil().max(1.0) as u64
    }
}

fn digest(key: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl RateLimiter {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buckets: Mutex::new(HashMap::new()), capacity: capacity.max(4) }
    }

    /// Takes one token for `key`; `Err(seconds)` to wait when the bucket is empty.
    pub fn check(&self, key: &str, limit: &Limit, now: Instant) -> Result<(), u64> {
        self.with_bucket(key, limit, now, |b| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                Err(b.wait(limit))
            }
        })
    }

    /// Takes one token for `key` if there is one; never refuses (failures are counted after
    /// they happened, and `allows` is asked before the next attempt).
    pub fn charge(&self, key: &str, limit: &Limit, now: Instant) {
        self.with_bucket(key, limit, now, |b| b.tokens = (b.tokens - 1.0).max(0.0));
    }

    /// Whether `check` would succeed, without taking anything: `Err(seconds)` to wait.
    pub fn allows(&self, key: &str, limit: &Limit, now: Instant) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        match buckets.get_mut(&digest(key)) {
            Some(b) => {
                b.refill(limit, now);
                if b.tokens >= 1.0 { Ok(()) } else { Err(b.wait(limit)) }
            }
            None => Ok(()),
        }
    }

    /// Whether nothing was taken from `key` in the time it takes to refill (no recent use).
    pub fn is_full(&self, key: &str, now: Instant) -> bool {
        let Ok(buckets) = self.buckets.lock() else { return true };
        buckets.get(&digest(key)).is_none_or(|b| b.full_at <= now)
    }

    fn with_bucket<T>(&self, key: &str, limit: &Limit, now: Instant, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let key = digest(key);
        let fresh = Bucket { tokens: limit.burst(), at: now, full_at: now };
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock (a panic elsewhere) must not take the endpoints down: no limit.
            let mut b = fresh;
            return f(&mut b);
        };
        if !buckets.contains_key(&key) && buckets.len() >= self.capacity {
            evict(&mut buckets, self.capacity, now);
        }
        let b = buckets.entry(key).or_insert(fresh);
        b.refill(limit, now);
        let out = f(b);
        let missing = (limit.burst() - b.tokens).max(0.0);
        b.full_at = b.at + Duration::from_secs_f64((missing / limit.rate()).min(86_400.0 * 365.0));
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

/// Frees at least a quarter of `capacity`: refilled buckets first, then those closest to full.
fn evict(buckets: &mut HashMap<[u8; 32], Bucket>, capacity: usize, now: Instant) {
    buckets.retain(|_, b| b.full_at > now);
    let target = capacity - capacity / 4;
    if buckets.len() <= target {
        return;
    }
    let mut full_at: Vec<Instant> = buckets.values().map(|b| b.full_at).collect();
    let drop = buckets.len() - target;
    let (_, nth, _) = full_at.select_nth_unstable(drop - 1);
    let threshold = *nth;
    let mut dropped = 0;
    buckets.retain(|_, b| {
        if dropped < drop && b.full_at <= threshold {
            dropped += 1;
            false
        } else {
            true
        }
    });
}

/// The part of a source address one party controls: an IPv4 address, an IPv6 /64
/// (one customer's prefix). `None` (no peer address known) is one shared source.
pub fn source_key(source: Option<IpAddr>) -> String {
    match source.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let r = RateLimiter::default();
        let limit = Limit::from(&RateLimit { per_client: 1, burst: 2 });
        let t0 = Instant::now();
        assert!(r.check("c", &limit, t0).is_ok());
        assert!(r.check("c", &limit, t0).is_ok());
        assert_eq!(r.check("c", &limit, t0), Err(1));
        assert!(r.check("other", &limit, t0).is_ok());
        assert!(r.check("c", &limit, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn failures_are_charged_and_asked_about_separately() {
        let r = RateLimiter::default();
        let limit = Limit::one_every(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(r.is_full("src", t0));
        r.charge("src", &limit, t0);
        assert!(!r.is_full("src", t0));
        assert!(r.allows("src", &limit, t0).is_ok());
        r.charge("src", &limit, t0);
        r.charge("src", &limit, t0);
        assert_eq!(r.allows("src", &limit, t0), Err(10));
        assert!(r.allows("src", &limit, t0 + Duration::from_secs(10)).is_ok());
        assert!(r.is_full("src", t0 + Duration::from_secs(20)));
    }

    #[test]
    fn a_request_that_reaches_the_bucket_late_refills_nothing_twice() {
        let r = RateLimiter::default();
        let limit = Limit::one_every(1, Duration::from_secs(10));
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        assert!(r.check("c", &limit, later).is_ok());
        // The request of t0 arrived first and reaches the bucket second: it finds it empty.
        assert_eq!(r.check("c", &limit, t0), Err(10));
        // The token comes back 10 s after `later`, not 10 s after t0.
        assert!(r.check("c", &limit, t0 + Duration::from_secs(10)).is_err());
        assert!(r.check("c", &limit, later + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn a_flood_of_new_keys_stays_within_capacity_and_keeps_the_emptiest_buckets() {
        let r = RateLimiter::with_capacity(64);
        let limit = Limit::one_every(3, Duration::from_secs(60));
        let t0 = Instant::now();
        // The key under attack is empty; a flood of keys each charged once follows.
        for _ in 0..3 {
            r.charge("victim", &limit, t0);
        }
        for n in 0..10_000 {
            r.charge(&format!("random-{n}"), &limit, t0 + Duration::from_millis(n));
            assert!(r.len() <= 64);
        }
        assert!(r.allows("victim", &limit, t0 + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(source_key(Some(a)), source_key(Some(b)));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(Some(mapped)), "192.0.2.7");
    }
}

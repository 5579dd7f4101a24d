//! Per-client token buckets for the token endpoint (`spec.rateLimit`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::api::RateLimit;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes one token for `key`; `Err(seconds)` to wait when the bucket is empty.
    pub fn check(&self, key: &str, limit: &RateLimit, now: Instant) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let rate = f64::from(limit.per_client.max(1));
        let burst = f64::from(limit.burst.max(limit.per_client).max(1));
        let b = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let r = RateLimiter::default();
        let limit = RateLimit { per_client: 1, burst: 2 };
        let t0 = Instant::now();
        assert!(r.check("c", &limit, t0).is_ok());
        assert!(r.check("c", &limit, t0).is_ok());
        assert_eq!(r.check("c", &limit, t0), Err(1));
        assert!(r.check("other", &limit, t0).is_ok());
        assert!(r.check("c", &limit, t0 + std::time::Duration::from_secs(1)).is_ok());
    }
}

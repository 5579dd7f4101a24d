//! Fetched documents, shared by every request: one fetch per URL at a time, refreshed in the
//! background, and a failed URL left alone for a growing interval (negative caching).
//!
//! A request never waits on a fetch longer than the `wait` it passes: the fetch runs in its
//! own task and goes on (up to the fetcher's timeout) for whoever asks next.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::fetch::FetchError;
use super::policy::Reach;

/// First pause after a failed fetch; it doubles with each failure in a row.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(5);
/// Longest pause between attempts at a failing URL.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub type Fetch<T> = Pin<Box<dyn Future<Output = Result<T, FetchError>> + Send>>;

/// How recent a cached document must be for this use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any copy; a stale one is refreshed in the background.
    Cached,
    /// Fetched less than this long ago (a token names a key the cached copy lacks).
    NewerThan(Duration),
}

/// What is known of one URL, besides the document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    fetched: Option<Instant>,
    /// Failed fetches in a row.
    failures: u32,
    /// No fetch before this (after a failure).
    retry_at: Option<Instant>,
}

/// What a request does with the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    /// Answer from the cached copy now.
    serve: bool,
    /// Start a fetch.
    fetch: bool,
    /// Wait (boundedly) for the fetch in flight before answering.
    wait: bool,
}

fn plan(s: State, has_value: bool, in_flight: bool, now: Instant, need: Need, ttl: Duration) -> Plan {
    let age = s.fetched.map(|f| now.saturating_duration_since(f));
    let may_fetch = !in_flight && s.retry_at.is_none_or(|r| now >= r);
    let recent = match need {
        Need::Cached => true,
        Need::NewerThan(d) => age.is_some_and(|a| a < d),
    };
    if has_value && recent {
        let stale = age.is_none_or(|a| a >= ttl);
        return Plan { serve: true, fetch: may_fetch && stale, wait: false };
    }
    Plan { serve: false, fetch: may_fetch, wait: may_fetch || in_flight }
}

/// The pause after `failures` failed fetches in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

struct Entry<T> {
    value: Option<T>,
    state: State,
    last_error: Option<FetchError>,
    /// Turns true when the fetch in flight ends; closed if its task died.
    in_flight: Option<watch::Receiver<bool>>,
}

impl<T> Default for Entry<T> {
    fn default() -> Self {
        Self { value: None, state: State::default(), last_error: None, in_flight: None }
    }
}

impl<T> Entry<T> {
    fn fetching(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|rx| !*rx.borrow() && rx.has_changed().is_ok())
    }
}

type Key = (String, Reach);

/// Documents by URL; cheap to clone, clones share the cache.
pub struct DocumentCache<T> {
    entries: Arc<Mutex<HashMap<Key, Entry<T>>>>,
    ttl: Duration,
}

impl<T> Clone for DocumentCache<T> {
    fn clone(&self) -> Self {
        Self { entries: self.entries.clone(), ttl: self.ttl }
    }
}

impl<T: Clone + Send + 'static> DocumentCache<T> {
    /// Documents older than `ttl` are refreshed in the background.
    pub fn new(ttl: Duration) -> Self {
        Self { entries: Arc::default(), ttl }
    }

    /// The document at `url`, waiting at most `wait` for a fetch; `fetch` runs only when a
    /// fetch is due and none is in flight.
    pub async fn get(
        &self,
        url: &str,
        reach: Reach,
        need: Need,
        wait: Duration,
        fetch: impl FnOnce() -> Fetch<T>,
    ) -> Result<T, FetchError> {
        let key = (url.to_owned(), reach);
        let in_flight = {
            let Ok(mut entries) = self.entries.lock() else { return Err(FetchError::new(url, "cache unavailable")) };
            let entry = entries.entry(key.clone()).or_default();
            let p = plan(entry.state, entry.value.is_some(), entry.fetching(), Instant::now(), need, self.ttl);
            if p.fetch {
                let (done, rx) = watch::channel(false);
                entry.in_flight = Some(rx);
                self.spawn(key.clone(), fetch(), done);
            }
            if p.serve
                && let Some(v) = &entry.value
            {
                return Ok(v.clone());
            }
            p.wait.then(|| entry.in_flight.clone()).flatten()
        };
        if let Some(mut rx) = in_flight {
            let _ = tokio::time::timeout(wait, rx.wait_for(|done| *done)).await;
        }
        let entries = self.entries.lock().map_err(|_| FetchError::new(url, "cache unavailable"))?;
        let entry = entries.get(&key);
        match (entry.and_then(|e| e.value.clone()), entry.and_then(|e| e.last_error.clone())) {
            (Some(v), _) => Ok(v),
            (None, Some(e)) => Err(e),
            (None, None) => Err(FetchError::new(url, format!("not fetched yet (waited {} ms)", wait.as_millis()))),
        }
    }

    fn spawn(&self, key: Key, fetch: Fetch<T>, done: watch::Sender<bool>) {
        let entries = self.entries.clone();
        tokio::spawn(async move {
            let result = fetch.await;
            let now = Instant::now();
            if let Ok(mut entries) = entries.lock()
                && let Some(entry) = entries.get_mut(&key)
            {
                match result {
                    Ok(v) => {
                        entry.value = Some(v);
                        entry.state = State { fetched: Some(now), failures: 0, retry_at: None };
                        entry.last_error = None;
                    }
                    Err(e) => {
                        let failures = entry.state.failures.saturating_add(1);
                        let pause = backoff(failures);
                        tracing::warn!(error = %e, failures, retry_in_secs = pause.as_secs(), "outbound fetch failed");
                        entry.state.failures = failures;
                        entry.state.retry_at = Some(now + pause);
                        entry.last_error = Some(e);
                    }
                }
                entry.in_flight = None;
            }
            let _ = done.send(true);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn nothing_cached_fetches_and_waits() {
        let t = Instant::now();
        let p = plan(State::default(), false, false, t, Need::Cached, TTL);
        assert_eq!(p, Plan { serve: false, fetch: true, wait: true });
        // Another request while that fetch runs joins it instead of starting its own.
        let p = plan(State::default(), false, true, t, Need::Cached, TTL);
        assert_eq!(p, Plan { serve: false, fetch: false, wait: true });
    }

    #[test]
    fn fresh_copies_are_served_and_stale_ones_refreshed_in_the_background() {
        let t = Instant::now();
        let s = State { fetched: Some(t), ..State::default() };
        assert_eq!(plan(s, true, false, at(t, 10), Need::Cached, TTL), Plan { serve: true, fetch: false, wait: false });
        assert_eq!(plan(s, true, false, at(t, 301), Need::Cached, TTL), Plan { serve: true, fetch: true, wait: false });
        assert_eq!(plan(s, true, true, at(t, 301), Need::Cached, TTL), Plan { serve: true, fetch: false, wait: false });
    }

    #[test]
    fn a_failed_url_is_not_fetched_again_until_its_backoff_ends() {
        let t = Instant::now();
        let s = State { fetched: None, failures: 1, retry_at: Some(at(t, 5)) };
        assert_eq!(
            plan(s, false, false, at(t, 1), Need::Cached, TTL),
            Plan { serve: false, fetch: false, wait: false }
        );
        assert_eq!(plan(s, false, false, at(t, 5), Need::Cached, TTL), Plan { serve: false, fetch: true, wait: true });
        // With a copy from before the failures, the copy is served meanwhile.
        let s = State { fetched: Some(t), failures: 3, retry_at: Some(at(t, 400)) };
        assert_eq!(
            plan(s, true, false, at(t, 350), Need::Cached, TTL),
            Plan { serve: true, fetch: false, wait: false }
        );
    }

    #[test]
    fn an_unknown_key_refetches_only_copies_older_than_asked() {
        let t = Instant::now();
        let s = State { fetched: Some(t), ..State::default() };
        let need = Need::NewerThan(Duration::from_secs(30));
        assert_eq!(plan(s, true, false, at(t, 10), need, TTL), Plan { serve: true, fetch: false, wait: false });
        assert_eq!(plan(s, true, false, at(t, 31), need, TTL), Plan { serve: false, fetch: true, wait: true });
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch_and_failures_are_remembered() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let cache: DocumentCache<u32> = DocumentCache::new(TTL);
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = || {
            let calls = calls.clone();
            move || -> Fetch<u32> {
                Box::pin(async move {
                    calls.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(FetchError::new("http://x", "down"))
                })
            }
        };
        let wait = Duration::from_secs(2);
        let (a, b) = tokio::join!(
            cache.get("http://x", Reach::Any, Need::Cached, wait, fetch()),
            cache.get("http://x", Reach::Any, Need::Cached, wait, fetch())
        );
        assert_eq!(a.unwrap_err().message, "down");
        assert_eq!(b.unwrap_err().message, "down");
        for _ in 0..5 {
            assert!(cache.get("http://x", Reach::Any, Need::Cached, wait, fetch()).await.is_err());
        }
        assert_eq!(calls.load(SeqCst), 1);
    }
}

//! The operator's heap under glibc. Its caches are long-lived and built while watch events,
//! JSON patches and API responses come and go: glibc keeps the freed memory between them in
//! its arenas (one per contending thread, up to 8 per core) and returns it to the kernel only
//! from the top of a heap, so VmRSS stays at its peak. Two arenas and a periodic
//! `malloc_trim` (which returns every free page, not only the top) keep RSS near the live
//! heap. The issuer runs in the same binary and is left as it is.

use std::time::Duration;

/// How often free pages are returned to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// At most two malloc arenas; call before the controllers start.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; M_ARENA_MAX is valid at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the kernel every `TRIM_EVERY`, for as long as the operator runs.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory; it is thread-safe in glibc.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

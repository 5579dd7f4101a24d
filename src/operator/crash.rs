//! Crash points for the crash-safety tests: with `TESSERA_CRASH_AT=<point>`, the operator exits
//! at once the first time it reaches that point while changing a key set. Unset (always, in
//! production) it costs one environment read per process.

use std::sync::OnceLock;

pub const BEFORE_KEYS_WRITE: &str = "before-keys-write";
pub const AFTER_KEYS_WRITE: &str = "after-keys-write";
pub const AFTER_KEYS_EVENT: &str = "after-keys-event";
pub const AFTER_CONFIG_APPLY: &str = "after-config-apply";
pub const AFTER_WORKLOAD_APPLY: &str = "after-workload-apply";
pub const BEFORE_STATUS_WRITE: &str = "before-status-write";

pub fn point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT.get_or_init(|| std::env::var("TESSERA_CRASH_AT").ok()).as_deref() == Some(name) {
        eprintln!("crash point {name} reached: exiting");
        std::process::exit(86);
    }
}

//! What the operator last wrote to each child, so that a reconcile skips the writes (and the
//! reads) that would change nothing, and its own writes seen by the watches wake nobody.
//!
//! An entry is the digest of the object we applied and the resourceVersion the API server
//! returned. It is dropped when the owned-object watch reports that object deleted or at
//! another resourceVersion (someone else changed it: the next reconcile repairs it), and it
//! is only trusted for `TTL`: kinds that are not watched (ServiceAccount, Role, RoleBinding,
//! Service, PodDisruptionBudget) are re-applied by the first reconcile after that, at the
//! latest by the hourly resync, so drift there is repaired as it was before.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long an entry may skip a write without the watch having confirmed it.
pub const TTL: Duration = Duration::from_secs(600);

/// (kind, namespace, name) of one object the operator writes, hashed: ~13 entries per server
/// are kept, and strings would be most of their memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key(u64);

impl Key {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (kind, namespace, name).hash(&mut h);
        Self(h.finish())
    }
}

/// A resourceVersion, hashed (it is only ever compared); 0 for none.
fn version_hash(resource_version: Option<&str>) -> u64 {
    resource_version.map_or(0, |v| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v.hash(&mut h);
        h.finish().max(1)
    })
}

/// What a reconcile may need again of an object it wrote, instead of reading it back.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Memo {
    #[default]
    None,
    /// A client Secret.
    ClientSecret(Box<ClientSecretMemo>),
    /// The keys Secret.
    Keys(Box<KeysMemo>),
    /// The issuer Deployment: what the server's status reports of it (its status cannot have
    /// changed while the resourceVersion has not).
    Workload { current: bool, available: i32, updated: i32, ready_replicas: i32 },
}

/// Hashes of the secrets a client Secret holds (never the secrets), and when that set next
/// changes.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecretMemo {
    pub hashes: Vec<String>,
    pub changes_at: Option<jiff::Timestamp>,
}

/// The key set, the rotation requests the Secret records as handled, and the resourceVersion
/// a replace must be conditional on.
#[derive(Clone, PartialEq, Eq)]
pub struct KeysMemo {
    pub keys: crate::keys::KeySet,
    pub handled: std::collections::BTreeMap<String, String>,
    pub resource_version: Option<String>,
}

// Never print key material or hashes.
impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Memo::None => "None",
            Memo::ClientSecret(_) => "ClientSecret(..)",
            Memo::Keys(_) => "Keys(..)",
            Memo::Workload { .. } => "Workload(..)",
        })
    }
}

#[derive(Debug)]
struct Entry {
    digest: u64,
    version: u64,
    at: Instant,
    memo: Memo,
}

#[derive(Debug)]
struct Entries {
    map: HashMap<Key, Entry>,
    /// When expired entries were last dropped.
    swept: Instant,
}

/// The entries, shared by every reconcile and the owned-object watches.
#[derive(Debug)]
pub struct Applied {
    entries: Mutex<Entries>,
}

impl Default for Applied {
    fn default() -> Self {
        Self { entries: Mutex::new(Entries { map: HashMap::new(), swept: Instant::now() }) }
    }
}

/// A digest of anything serializable (the desired object, the inputs of a client Secret).
pub fn digest<T: serde::Serialize + ?Sized>(value: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Serializing a built object cannot fail; an error hashes as empty and is never "unchanged"
    // for long (the write that follows records the real digest).
    serde_json::to_vec(value).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl Applied {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The memo of `key` if what we last wrote there had `digest`, nobody changed it since, and
    /// the entry is younger than `TTL`.
    pub fn unchanged(&self, key: &Key, digest: u64, now: Instant) -> Option<Memo> {
        let entries = self.lock();
        let e = entries.map.get(key)?;
        (e.digest == digest && now.saturating_duration_since(e.at) < TTL).then(|| e.memo.clone())
    }

    /// Records a successful write (or read); returns whether the object changed since the last
    /// one (a new resourceVersion). Entries past `TTL` (of deleted servers, say) are dropped
    /// once per `TTL`.
    pub fn record(&self, key: Key, digest: u64, resource_version: Option<&str>, memo: Memo, now: Instant) -> bool {
        let version = version_hash(resource_version);
        let mut entries = self.lock();
        let previous = entries.map.insert(key, Entry { digest, version, at: now, memo });
        if now.saturating_duration_since(entries.swept) >= TTL {
            entries.map.retain(|_, e| now.saturating_duration_since(e.at) < TTL);
            entries.swept = now;
        }
        previous.is_none_or(|p| p.version != version)
    }

    /// Forgets `key` (a write failed, or its object must be read again).
    pub fn forget(&self, key: &Key) {
        self.lock().map.remove(key);
    }

    /// A watch saw `key` at `resource_version`: true if that is our own last write (nothing to
    /// do), otherwise the entry is dropped so that the next reconcile writes it again.
    pub fn observed(&self, key: &Key, resource_version: Option<&str>) -> bool {
        let mut entries = self.lock();
        match entries.map.get(key) {
            Some(e) if e.version != 0 && e.version == version_hash(resource_version) => true,
            Some(_) => {
                entries.map.remove(key);
                false
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::new("Secret", "ns", name)
    }

    #[test]
    fn an_unchanged_write_is_skipped_until_someone_else_changes_the_object() {
        let a = Applied::default();
        let now = Instant::now();
        assert!(a.unchanged(&key("s-config"), 1, now).is_none(), "never written: write");
        assert!(a.record(key("s-config"), 1, Some("10"), Memo::None, now), "first write counts");
        assert_eq!(a.unchanged(&key("s-config"), 1, now), Some(Memo::None));
        assert!(a.unchanged(&key("s-config"), 2, now).is_none(), "another desired object: write");
        assert!(a.unchanged(&key("s-keys"), 1, now).is_none(), "another object");
        assert!(a.unchanged(&Key::new("Deployment", "ns", "s-config"), 1, now).is_none(), "another kind");
        // Our own write coming back through the watch changes nothing.
        assert!(a.observed(&key("s-config"), Some("10")));
        assert!(a.unchanged(&key("s-config"), 1, now).is_some());
        // Someone else's write (another resourceVersion) makes the next reconcile write again.
        assert!(!a.observed(&key("s-config"), Some("11")));
        assert!(a.unchanged(&key("s-config"), 1, now).is_none());
        assert!(!a.observed(&key("s-config"), Some("11")), "unknown objects are not ours");
    }

    #[test]
    fn a_no_op_apply_is_not_counted_as_a_write() {
        let a = Applied::default();
        let now = Instant::now();
        assert!(a.record(key("x"), 1, Some("5"), Memo::None, now));
        assert!(!a.record(key("x"), 1, Some("5"), Memo::None, now), "same resourceVersion: no-op");
        assert!(a.record(key("x"), 2, Some("6"), Memo::None, now));
    }

    #[test]
    fn an_entry_without_a_version_never_swallows_a_watch_event() {
        let a = Applied::default();
        let now = Instant::now();
        a.record(Key::new("PodDisruptionBudget", "ns", "s-issuer"), 3, None, Memo::None, now);
        assert!(!a.observed(&Key::new("PodDisruptionBudget", "ns", "s-issuer"), None));
    }

    #[test]
    fn entries_expire_so_that_unwatched_children_are_applied_again() {
        let a = Applied::default();
        let then = Instant::now();
        a.record(Key::new("Service", "ns", "s-issuer"), 7, Some("1"), Memo::None, then);
        assert!(a.unchanged(&Key::new("Service", "ns", "s-issuer"), 7, then + TTL / 2).is_some());
        assert!(a.unchanged(&Key::new("Service", "ns", "s-issuer"), 7, then + TTL).is_none());
    }

    #[test]
    fn expired_entries_are_dropped() {
        let a = Applied::default();
        let then = Instant::now();
        a.record(Key::new("Service", "gone", "s-issuer"), 1, Some("1"), Memo::None, then);
        a.record(Key::new("Service", "ns", "t-issuer"), 1, Some("1"), Memo::None, then + TTL);
        assert_eq!(a.len(), 1);
        assert!(a.observed(&Key::new("Service", "ns", "t-issuer"), Some("1")));
    }

    #[test]
    fn memos_are_not_printed() {
        let m = Memo::ClientSecret(Box::new(ClientSecretMemo { hashes: vec!["abcdef".into()], changes_at: None }));
        assert!(!format!("{m:?}").contains("abcdef"));
    }
}

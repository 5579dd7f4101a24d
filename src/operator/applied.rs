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

/// (kind, namespace, name) of one object the operator writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

/// What a reconcile may need again of an object it wrote, instead of reading it back.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Memo {
    #[default]
    None,
    /// A client Secret: hashes of the secrets it holds (never the secrets) and when that set
    /// next changes.
    ClientSecret { hashes: Vec<String>, changes_at: Option<jiff::Timestamp> },
    /// The keys Secret: its key set, the rotation requests it records as handled, and the
    /// resourceVersion a replace must be conditional on.
    Keys {
        keys: Box<crate::keys::KeySet>,
        handled: std::collections::BTreeMap<String, String>,
        resource_version: Option<String>,
    },
    /// The issuer Deployment: what the server's status reports of it (its status cannot have
    /// changed while the resourceVersion has not).
    Workload { current: bool, available: i32, updated: i32, ready_replicas: i32 },
}

// Never print key material or hashes.
impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Memo::None => "None",
            Memo::ClientSecret { .. } => "ClientSecret(..)",
            Memo::Keys { .. } => "Keys(..)",
            Memo::Workload { .. } => "Workload(..)",
        })
    }
}

#[derive(Debug)]
struct Entry {
    digest: u64,
    resource_version: Option<String>,
    at: Instant,
    memo: Memo,
}

/// The entries, shared by every reconcile and the owned-object watches.
#[derive(Debug, Default)]
pub struct Applied {
    entries: Mutex<HashMap<Key, Entry>>,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The memo of `key` if what we last wrote there had `digest`, nobody changed it since, and
    /// the entry is younger than `TTL`.
    pub fn unchanged(&self, key: &Key, digest: u64, now: Instant) -> Option<Memo> {
        let entries = self.lock();
        let e = entries.get(key)?;
        (e.digest == digest && now.saturating_duration_since(e.at) < TTL).then(|| e.memo.clone())
    }

    /// Records a successful write; returns whether it changed the object (a new resourceVersion).
    pub fn record(&self, key: Key, digest: u64, resource_version: Option<String>, memo: Memo, now: Instant) -> bool {
        let previous =
            self.lock().insert(key, Entry { digest, resource_version: resource_version.clone(), at: now, memo });
        previous.is_none_or(|p| p.resource_version != resource_version)
    }

    /// Forgets `key` (a write failed, or its object must be read again).
    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// A watch saw `key` at `resource_version`: true if that is our own last write (nothing to
    /// do), otherwise the entry is dropped so that the next reconcile writes it again.
    pub fn observed(&self, key: &Key, resource_version: Option<&str>) -> bool {
        let mut entries = self.lock();
        match entries.get(key) {
            Some(e) if e.resource_version.is_some() && e.resource_version.as_deref() == resource_version => true,
            Some(_) => {
                entries.remove(key);
                false
            }
            None => false,
        }
    }

    /// Drops the entries of the children of server `namespace/name` (it is being deleted).
    pub fn forget_server(&self, namespace: &str, name: &str) {
        let prefix = format!("{name}-");
        self.lock().retain(|k, _| !(k.namespace == namespace && k.name.starts_with(&prefix)));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
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
        assert!(a.record(key("s-config"), 1, Some("10".into()), Memo::None, now), "first write counts");
        assert_eq!(a.unchanged(&key("s-config"), 1, now), Some(Memo::None));
        assert!(a.unchanged(&key("s-config"), 2, now).is_none(), "another desired object: write");
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
        assert!(a.record(key("x"), 1, Some("5".into()), Memo::None, now));
        assert!(!a.record(key("x"), 1, Some("5".into()), Memo::None, now), "same resourceVersion: no-op");
        assert!(a.record(key("x"), 2, Some("6".into()), Memo::None, now));
    }

    #[test]
    fn entries_expire_so_that_unwatched_children_are_applied_again() {
        let a = Applied::default();
        let then = Instant::now();
        a.record(Key::new("Service", "ns", "s-issuer"), 7, Some("1".into()), Memo::None, then);
        assert!(a.unchanged(&Key::new("Service", "ns", "s-issuer"), 7, then + TTL / 2).is_some());
        assert!(a.unchanged(&Key::new("Service", "ns", "s-issuer"), 7, then + TTL).is_none());
    }

    #[test]
    fn deleting_a_server_forgets_its_children_only() {
        let a = Applied::default();
        let now = Instant::now();
        for (ns, name) in
            [("ns", "pay-config"), ("ns", "pay-issuer"), ("ns", "payroll-config"), ("other", "pay-config")]
        {
            a.record(Key::new("Secret", ns, name), 1, Some("1".into()), Memo::None, now);
        }
        a.forget_server("ns", "pay");
        assert_eq!(a.len(), 2);
        assert!(a.unchanged(&Key::new("Secret", "ns", "payroll-config"), 1, now).is_some());
        assert!(a.unchanged(&Key::new("Secret", "other", "pay-config"), 1, now).is_some());
    }

    #[test]
    fn memos_are_not_printed() {
        let m = Memo::ClientSecret { hashes: vec!["abcdef".into()], changes_at: None };
        assert!(!format!("{m:?}").contains("abcdef"));
    }
}

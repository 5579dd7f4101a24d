//! What the operator last wrote to each child, so that a reconcile skips the writes (and the
//! reads) that would change nothing, and its own writes seen by the watches wake nobody.
//!
//! An entry is the digest of the object we applied and the resourceVersion the API server
//! returned. It is dropped when the owned-object watch reports that object deleted or at
//! another resourceVersion (someone else changed it: the next reconcile repairs it), and it
//! is only trusted for `TTL`: kinds that are not watched (ServiceAccount, Role, RoleBinding,
//! Service, PodDisruptionBudget) are re-applied by the first reconcile after that, at the
//! latest by the hourly resync, so drift there is repaired as it was before.
//!
//! For an object whose spec the API server versions (`metadata.generation`: the Deployment),
//! an event at the same generation, labels and owners is a change of its status only (the
//! Deployment controller's progress): the entry stays and the next reconcile reads the object
//! for its status instead of applying it again.

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

/// The key set without its key material (`KeySet::schedule_only`), the rotation requests the
/// Secret records as handled, and the resourceVersion a replace must be conditional on.
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
    /// [`spec_fingerprint`] of the object as written; 0 when the kind has no generation.
    spec: u64,
    /// Someone else changed only the status since: read the object again, do not write it.
    status_moved: bool,
    at: Instant,
    memo: Memo,
}

/// What of an object's metadata says whether anything but its status changed: its generation
/// (bumped by every spec change), labels, owners and deletion; 0 for kinds without a generation
/// (a Secret's data changes leave its metadata alone).
pub fn spec_fingerprint(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    let Some(generation) = meta.generation else { return 0 };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    generation.hash(&mut h);
    meta.labels.hash(&mut h);
    for o in meta.owner_references.iter().flatten() {
        o.uid.hash(&mut h);
    }
    meta.deletion_timestamp.is_some().hash(&mut h);
    h.finish().max(1)
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
        (e.digest == digest && !e.status_moved && now.saturating_duration_since(e.at) < TTL).then(|| e.memo.clone())
    }

    /// Whether what we last wrote at `key` had `digest` and someone else has since changed only
    /// its status (see [`Self::observed`]); the spec fingerprint it was written with, to check
    /// the object read back against.
    pub fn status_moved(&self, key: &Key, digest: u64, now: Instant) -> Option<u64> {
        let entries = self.lock();
        let e = entries.map.get(key)?;
        (e.digest == digest && e.status_moved && now.saturating_duration_since(e.at) < TTL).then_some(e.spec)
    }

    /// Records a successful write (or read), with the object's [`spec_fingerprint`] (0 where it
    /// has none); returns whether the object changed since the last one (a new resourceVersion). Entries past `TTL` (of deleted servers, say) are dropped
    /// once per `TTL`.
    pub fn record(
        &self,
        key: Key,
        digest: u64,
        resource_version: Option<&str>,
        spec: u64,
        memo: Memo,
        now: Instant,
    ) -> bool {
        let version = version_hash(resource_version);
        let mut entries = self.lock();
        let previous = entries.map.insert(key, Entry { digest, version, spec, status_moved: false, at: now, memo });
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

    /// A watch saw `key` at `resource_version` with [`spec_fingerprint`] `spec`: true if that is
    /// our own last write (nothing to do). Otherwise the next reconcile must look: at the same
    /// spec fingerprint it reads the object (its status moved), else the entry is dropped so
    /// that it writes the object again.
    pub fn observed(&self, key: &Key, resource_version: Option<&str>, spec: u64) -> bool {
        let mut entries = self.lock();
        match entries.map.get_mut(key) {
            Some(e) if e.version != 0 && e.version == version_hash(resource_version) => true,
            Some(e) if e.spec != 0 && e.spec == spec => {
                e.status_moved = true;
                false
            }
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

/// The Secrets the operator manages (its label) that exist, as its owned-Secret watches saw
/// them: once every watch has listed, a Secret none of them has seen is created without being
/// read first (a brand-new server's keys and client Secrets: 6 reads saved per tenant). A
/// Secret that appeared meanwhile makes the create fail with a conflict, and the caller reads
/// it then; a Secret deleted during a watch's re-list stays "present", which only costs a read.
#[derive(Debug)]
pub struct Existing {
    names: Mutex<std::collections::HashSet<Key>>,
    /// Watches that have not finished their first list.
    unlisted: std::sync::atomic::AtomicUsize,
}

impl Default for Existing {
    fn default() -> Self {
        Self { names: Mutex::default(), unlisted: std::sync::atomic::AtomicUsize::new(1) }
    }
}

impl Existing {
    /// Before `watches` watches start; nothing is known absent until each has listed.
    pub fn expect(&self, watches: usize) {
        self.unlisted.store(watches.max(1), std::sync::atomic::Ordering::SeqCst);
    }

    /// One watch finished its first list.
    pub fn listed(&self) {
        let _ =
            self.unlisted.fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                n.checked_sub(1)
            });
    }

    pub fn seen(&self, key: Key, present: bool) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if present {
            names.insert(key);
        } else {
            names.remove(&key);
        }
    }

    /// Whether the Secret `key` is known not to exist.
    pub fn absent(&self, key: &Key) -> bool {
        self.unlisted.load(std::sync::atomic::Ordering::SeqCst) == 0
            && !self.names.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
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
        assert!(a.record(key("s-config"), 1, Some("10"), 0, Memo::None, now), "first write counts");
        assert_eq!(a.unchanged(&key("s-config"), 1, now), Some(Memo::None));
        assert!(a.unchanged(&key("s-config"), 2, now).is_none(), "another desired object: write");
        assert!(a.unchanged(&key("s-keys"), 1, now).is_none(), "another object");
        assert!(a.unchanged(&Key::new("Deployment", "ns", "s-config"), 1, now).is_none(), "another kind");
        // Our own write coming back through the watch changes nothing.
        assert!(a.observed(&key("s-config"), Some("10"), 0));
        assert!(a.unchanged(&key("s-config"), 1, now).is_some());
        // Someone else's write (another resourceVersion) makes the next reconcile write again.
        assert!(!a.observed(&key("s-config"), Some("11"), 0));
        assert!(a.unchanged(&key("s-config"), 1, now).is_none());
        assert!(!a.observed(&key("s-config"), Some("11"), 0), "unknown objects are not ours");
    }

    #[test]
    fn a_no_op_apply_is_not_counted_as_a_write() {
        let a = Applied::default();
        let now = Instant::now();
        assert!(a.record(key("x"), 1, Some("5"), 0, Memo::None, now));
        assert!(!a.record(key("x"), 1, Some("5"), 0, Memo::None, now), "same resourceVersion: no-op");
        assert!(a.record(key("x"), 2, Some("6"), 0, Memo::None, now));
    }

    #[test]
    fn an_entry_without_a_version_never_swallows_a_watch_event() {
        let a = Applied::default();
        let now = Instant::now();
        a.record(Key::new("PodDisruptionBudget", "ns", "s-issuer"), 3, None, 0, Memo::None, now);
        assert!(!a.observed(&Key::new("PodDisruptionBudget", "ns", "s-issuer"), None, 0));
    }

    #[test]
    fn entries_expire_so_that_unwatched_children_are_applied_again() {
        let a = Applied::default();
        let then = Instant::now();
        a.record(Key::new("Service", "ns", "s-issuer"), 7, Some("1"), 0, Memo::None, then);
        assert!(a.unchanged(&Key::new("Service", "ns", "s-issuer"), 7, then + TTL / 2).is_some());
        assert!(a.unchanged(&Key::new("Service", "ns", "s-issuer"), 7, then + TTL).is_none());
    }

    #[test]
    fn expired_entries_are_dropped() {
        let a = Applied::default();
        let then = Instant::now();
        a.record(Key::new("Service", "gone", "s-issuer"), 1, Some("1"), 0, Memo::None, then);
        a.record(Key::new("Service", "ns", "t-issuer"), 1, Some("1"), 0, Memo::None, then + TTL);
        assert_eq!(a.len(), 1);
        assert!(a.observed(&Key::new("Service", "ns", "t-issuer"), Some("1"), 0));
    }

    #[test]
    fn a_change_of_status_only_asks_for_a_read_and_any_other_change_for_a_write() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let a = Applied::default();
        let now = Instant::now();
        let d = Key::new("Deployment", "ns", "s-issuer");
        let meta = |generation: i64, label: &str| ObjectMeta {
            generation: Some(generation),
            labels: Some([("app".to_owned(), label.to_owned())].into()),
            ..ObjectMeta::default()
        };
        a.record(d, 9, Some("1"), spec_fingerprint(&meta(1, "issuer")), Memo::None, now);
        assert!(a.status_moved(&d, 9, now).is_none());
        // The Deployment controller writes its status: same generation and labels.
        assert!(!a.observed(&d, Some("2"), spec_fingerprint(&meta(1, "issuer"))), "the reconcile must look");
        assert!(a.unchanged(&d, 9, now).is_none(), "no memo to trust");
        assert_eq!(a.status_moved(&d, 9, now), Some(spec_fingerprint(&meta(1, "issuer"))), "read, do not write");
        assert!(a.status_moved(&d, 8, now).is_none(), "another desired object: write");
        // The read back records the object again.
        a.record(d, 9, Some("2"), spec_fingerprint(&meta(1, "issuer")), Memo::None, now);
        assert!(a.unchanged(&d, 9, now).is_some());
        // Someone else edits the spec (a new generation) or our labels: write again.
        assert!(!a.observed(&d, Some("3"), spec_fingerprint(&meta(2, "issuer"))));
        assert!(a.unchanged(&d, 9, now).is_none() && a.status_moved(&d, 9, now).is_none());
        a.record(d, 9, Some("4"), spec_fingerprint(&meta(3, "issuer")), Memo::None, now);
        assert!(!a.observed(&d, Some("5"), spec_fingerprint(&meta(3, "other"))));
        assert!(a.status_moved(&d, 9, now).is_none());
        // Kinds without a generation never count as a status change.
        assert_eq!(spec_fingerprint(&ObjectMeta::default()), 0);
        let s = Key::new("Secret", "ns", "s-config");
        a.record(s, 1, Some("7"), 0, Memo::None, now);
        assert!(!a.observed(&s, Some("8"), 0));
        assert!(a.status_moved(&s, 1, now).is_none() && a.unchanged(&s, 1, now).is_none());
    }

    #[test]
    fn memos_are_not_printed() {
        let m = Memo::ClientSecret(Box::new(ClientSecretMemo { hashes: vec!["abcdef".into()], changes_at: None }));
        assert!(!format!("{m:?}").contains("abcdef"));
    }

    #[test]
    fn a_secret_is_known_absent_only_once_every_watch_has_listed() {
        let existing = Existing::default();
        let key = Key::new("Secret", "ns", "a-config");
        assert!(!existing.absent(&key), "nothing is known before the watches start");
        existing.expect(2);
        existing.listed();
        assert!(!existing.absent(&key), "one watch has not listed yet");
        existing.listed();
        assert!(existing.absent(&key));
        existing.seen(key, true);
        assert!(!existing.absent(&key));
        existing.seen(key, false);
        assert!(existing.absent(&key));
        existing.listed(); // a re-list: still known
        assert!(existing.absent(&key));
    }
}

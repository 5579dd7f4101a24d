//! Dependents' status conditions, written only when more than timestamps change.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::Dependent;
use crate::api::conditions::{self, ACCEPTED, Condition, READY};
use crate::operator::{Context, MANAGER};

/// Whether a server accepted one of its scopes, claims, policies or clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acceptance {
    pub accepted: bool,
    pub reason: String,
    pub message: String,
}

impl Acceptance {
    pub fn accepted(message: impl Into<String>) -> Self {
        Self { accepted: true, reason: "Accepted".into(), message: message.into() }
    }

    /// What a dependent its server compiled without complaint reports.
    pub fn by_server() -> Self {
        Self::accepted("accepted by its AuthorizationServer")
    }

    pub fn rejected(reason: &str, message: impl Into<String>) -> Self {
        Self { accepted: false, reason: reason.into(), message: message.into() }
    }
}

/// What a reconcile decided about the dependents it did not accept: (kind, namespace, name) →
/// why.
pub type Refusals = std::collections::BTreeMap<(&'static str, String, String), Acceptance>;

/// The conditions a dependent should carry for `acceptance`, keeping unchanged transition times.
pub fn dependent_conditions(
    existing: &[Condition],
    acceptance: &Acceptance,
    generation: Option<i64>,
) -> Vec<Condition> {
    let now = jiff::Timestamp::now();
    let mut list = existing.to_vec();
    let a = acceptance;
    conditions::set(&mut list, conditions::new(ACCEPTED, a.accepted, &a.reason, a.message.clone(), generation, now));
    let ready_reason = if a.accepted { "Ready" } else { a.reason.as_str() };
    conditions::set(&mut list, conditions::new(READY, a.accepted, ready_reason, a.message.clone(), generation, now));
    // kstatus (Flux, kpt): a dependent waiting for its server to appear is in progress; one
    // refused for anything else is stalled on its reason until someone changes it.
    let waiting = !a.accepted && WAITING_REASONS.contains(&a.reason.as_str());
    let stalled = !a.accepted && !waiting;
    let (reconciling_reason, reconciling_message) =
        if waiting { (a.reason.as_str(), a.message.clone()) } else { ("Reconciled", String::new()) };
    conditions::set(
        &mut list,
        conditions::new(conditions::RECONCILING, waiting, reconciling_reason, reconciling_message, generation, now),
    );
    let (stalled_reason, stalled_message) =
        if stalled { (a.reason.as_str(), a.message.clone()) } else { ("NotStalled", String::new()) };
    conditions::set(
        &mut list,
        conditions::new(conditions::STALLED, stalled, stalled_reason, stalled_message, generation, now),
    );
    list
}

/// The dependent's server does not exist (yet, or any more).
pub const SERVER_NOT_FOUND: &str = "ServerNotFound";

/// Refusals that clear without a change to the dependent: the operator reconciles it when its
/// server appears.
const WAITING_REASONS: &[&str] = &[SERVER_NOT_FOUND];

/// Writes `acceptance` to a dependent's status unless nothing but timestamps would change.
pub async fn set_dependent<K: Dependent>(ctx: &Context, obj: &K, acceptance: Acceptance) -> Result<(), kube::Error> {
    write_dependent::<K>(ctx, &Target::of(obj), &acceptance, serde_json::Map::new()).await
}

/// What decides whether a status must be written: all of it but the conditions' timestamps
/// and their order (as `conditions::differ_beyond_timestamps`), absent and null alike.
pub fn status_fingerprint(status: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let Some(fields) = status.as_object() else { return h.finish() };
    for (k, v) in fields.iter().filter(|(_, v)| !v.is_null()).collect::<std::collections::BTreeMap<_, _>>() {
        k.hash(&mut h);
        match (k.as_str(), v.as_array()) {
            ("conditions", Some(list)) => {
                let mut keys: Vec<String> = list
                    .iter()
                    .map(|c| {
                        let f = |name: &str| c.get(name).filter(|v| !v.is_null()).map(|v| v.to_string());
                        format!("{:?}", [f("type"), f("status"), f("reason"), f("message"), f("observedGeneration")])
                    })
                    .collect();
                keys.sort();
                keys.hash(&mut h);
            }
            _ => v.to_string().hash(&mut h),
        }
    }
    h.finish()
}

/// The status fingerprint of each dependent, as the watch last saw it or we last wrote it: the
/// caches keep dependents without their status (most of their memory), and a reconcile that
/// reports an unchanged acceptance compares against this instead.
#[derive(Debug, Default)]
pub struct Statuses {
    /// (kind, namespace, name) hashed → (fingerprint, whether it holds conditions).
    known: std::sync::Mutex<std::collections::HashMap<u64, (u64, bool)>>,
}

fn status_key(kind: &str, namespace: &str, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (kind, namespace, name).hash(&mut h);
    h.finish()
}

impl Statuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, (u64, bool)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the status of `obj` and removes it from the object (before it is cached).
    pub fn take<K: Dependent>(&self, obj: &mut K) {
        let status = obj.take_status();
        let has_conditions = status.get("conditions").and_then(|c| c.as_array()).is_some_and(|c| !c.is_empty());
        let key = status_key(K::KIND, obj.meta().namespace.as_deref().unwrap_or_default(), &obj.name_any());
        self.lock().insert(key, (status_fingerprint(&status), has_conditions));
    }

    pub fn forget<K: Dependent>(&self, obj: &K) {
        self.lock().remove(&status_key(K::KIND, obj.meta().namespace.as_deref().unwrap_or_default(), &obj.name_any()));
    }

    fn get(&self, key: u64) -> Option<(u64, bool)> {
        self.lock().get(&key).copied()
    }

    fn insert(&self, key: u64, value: (u64, bool)) {
        self.lock().insert(key, value);
    }
}

/// The dependent whose status is written: all a write needs of the object.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
}

impl Target {
    pub fn of<K: Dependent>(obj: &K) -> Self {
        Self { namespace: obj.namespace().unwrap_or_default(), name: obj.name_any(), generation: obj.meta().generation }
    }

    pub fn key(&self, kind: &str) -> u64 {
        status_key(kind, &self.namespace, &self.name)
    }
}

/// The status a dependent should hold, with fresh condition timestamps.
fn desired_status(
    target: &Target,
    acceptance: &Acceptance,
    extra: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut status = extra;
    status.insert("observedGeneration".into(), json!(target.generation));
    status.insert(
        "conditions".into(),
        serde_json::to_value(dependent_conditions(&[], acceptance, target.generation)).unwrap_or_default(),
    );
    status
}

/// Whether the dependent already holds this status, as far as the operator knows (its watch
/// or its last write), timestamps aside.
pub fn holds(
    ctx: &Context,
    kind: &str,
    target: &Target,
    acceptance: &Acceptance,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    let status = desired_status(target, acceptance, extra.clone());
    ctx.statuses.get(target.key(kind)).is_some_and(|(fingerprint, _)| fingerprint == status_fingerprint(&json!(status)))
}

/// Writes `acceptance` (and `extra` fields) to a dependent's status unless nothing but
/// timestamps would change.
pub async fn write_dependent<K: Dependent>(
    ctx: &Context,
    target: &Target,
    acceptance: &Acceptance,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), kube::Error> {
    let (name, generation) = (&target.name, target.generation);
    let key = target.key(K::KIND);
    let mut status = desired_status(target, acceptance, extra);
    let known = ctx.statuses.get(key);
    if known.is_some_and(|(fingerprint, _)| fingerprint == status_fingerprint(&json!(status))) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &target.namespace);
    // A change to a status that holds conditions keeps the transition time of those that
    // stay the same: only then is the object read (the cache holds no statuses).
    if known.is_none_or(|(_, has_conditions)| has_conditions)
        && let Some(mut current) = api.get_opt(name).await?
    {
        let existing = current.take_status();
        let existing: Vec<Condition> =
            existing.get("conditions").and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default();
        let desired = dependent_conditions(&existing, acceptance, generation);
        status.insert("conditions".into(), serde_json::to_value(&desired).unwrap_or_default());
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let mut written = api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.metrics.write(K::KIND, "patch-status");
    let written_status = written.take_status();
    let has_conditions = written_status.get("conditions").and_then(|c| c.as_array()).is_some_and(|c| !c.is_empty());
    ctx.statuses.insert(key, (status_fingerprint(&written_status), has_conditions));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fingerprint_ignores_timestamps_order_and_nulls_only() {
        let a = Acceptance::accepted("accepted by its AuthorizationServer");
        let conds = dependent_conditions(&[], &a, Some(2));
        let mut later = conds.clone();
        later.reverse();
        for c in &mut later {
            c.last_transition_time.0 = jiff::Timestamp::from_second(1_900_000_000).unwrap();
        }
        let status = |conds: &[Condition], extra: serde_json::Value| {
            let mut v = json!({ "observedGeneration": 2, "conditions": conds });
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            v
        };
        let fp = |v: serde_json::Value| status_fingerprint(&v);
        let base = fp(status(&conds, json!({ "clientId": "ns.api" })));
        assert_eq!(base, fp(status(&later, json!({ "clientId": "ns.api", "secretName": null }))));
        assert_ne!(base, fp(status(&conds, json!({ "clientId": "ns.other" }))));
        assert_ne!(base, fp(status(&conds, json!({}))));
        let rejected = dependent_conditions(&conds, &Acceptance::rejected(SERVER_NOT_FOUND, "gone"), Some(2));
        assert_ne!(base, fp(status(&rejected, json!({ "clientId": "ns.api" }))));
        let newer = dependent_conditions(&[], &a, Some(3));
        assert_ne!(base, fp(status(&newer, json!({ "clientId": "ns.api" }))));
        assert_ne!(fp(json!(null)), base);
    }

    #[test]
    fn kstatus_sees_a_waiting_dependent_in_progress_and_a_refused_one_stalled_with_its_message() {
        let get = |list: &[Condition], t: &str| list.iter().find(|c| c.type_ == t).cloned().unwrap();
        let waiting = dependent_conditions(&[], &Acceptance::rejected(SERVER_NOT_FOUND, "no server yet"), Some(1));
        let reconciling = get(&waiting, conditions::RECONCILING);
        assert_eq!((reconciling.status.as_str(), reconciling.message.as_str()), ("True", "no server yet"));
        assert_eq!(get(&waiting, conditions::STALLED).status, "False");

        let refused = dependent_conditions(&waiting, &Acceptance::rejected("Conflict", "scope name taken"), Some(1));
        let stalled = get(&refused, conditions::STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str(), stalled.message.as_str()),
            ("True", "Conflict", "scope name taken")
        );
        assert_eq!(get(&refused, conditions::RECONCILING).status, "False");

        let accepted = dependent_conditions(&refused, &Acceptance::by_server(), Some(1));
        assert_eq!(get(&accepted, conditions::STALLED).status, "False");
        assert_eq!(get(&accepted, conditions::RECONCILING).status, "False");
    }
}

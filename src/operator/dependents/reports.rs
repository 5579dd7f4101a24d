//! Dependents' statuses, reported in the background. A server's reconcile writes its keys,
//! config and workload, and queues what it decided about its scopes, claims, policies and
//! clients; writers drain the queue. While many servers reconcile, fewer writers run (one at
//! 12 or more of them), so that new configs reach the API server before the status reports of
//! their dependents (15 per server in a typical tenant): what issuers serve comes first, what
//! `kubectl get` shows follows.
//!
//! One entry per server, small: the dependents decided on (hashed, with the generation seen)
//! and the reasons of those not accepted. The writer takes the objects from the operator's
//! caches and reports on those still at the generation decided on; one that appeared or
//! changed since waits for the reconcile its change triggers. A newer decision replaces one
//! still queued, and two writers never report on one server at once.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use kube::ResourceExt;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use tracing::warn;

use super::{
    Dependent, Dependents,
    status::{self, Acceptance, Refusals},
};
use crate::{
    api::{AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer},
    operator::{Context, Error, shutdown_signal},
};

/// Writers when few servers reconcile; writer `i` runs while fewer than `16 - 4 i` do.
const WRITERS: usize = 4;
/// Before a failed report is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a server's reconcile decided about its dependents.
#[derive(Debug)]
pub struct Report {
    pub namespace: String,
    pub server: String,
    /// Status key (`status::Target::key`) of each dependent decided on → its generation then.
    pub decided: HashMap<u64, Option<i64>>,
    /// The dependents not accepted, and why.
    pub refused: HashMap<u64, Acceptance>,
}

impl Report {
    /// What to report for the dependent `key` at `generation`; `None` if it is not the one
    /// decided on (new or changed since).
    pub fn acceptance(&self, key: u64, generation: Option<i64>) -> Option<Acceptance> {
        (self.decided.get(&key) == Some(&generation))
            .then(|| self.refused.get(&key).cloned().unwrap_or_else(Acceptance::by_server))
    }
}

#[derive(Default)]
struct Queue {
    /// Servers in the order their first pending report came.
    order: VecDeque<u64>,
    pending: HashMap<u64, Report>,
    /// Servers a writer reports on now.
    writing: HashSet<u64>,
}

#[derive(Default)]
pub struct Reports {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    servers_reconciling: AtomicUsize,
    /// Servers whose dependents' reports are queued or being written
    /// (`tessera_operator_status_reports_pending`).
    pub gauge: Gauge,
}

/// Marks a server reconcile in progress while it lives.
pub struct Reconciling<'a>(&'a AtomicUsize);

impl Drop for Reconciling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn server_key(namespace: &str, server: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (namespace, server).hash(&mut h);
    h.finish()
}

impl Reports {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reconciling(&self) -> Reconciling<'_> {
        self.servers_reconciling.fetch_add(1, Ordering::SeqCst);
        Reconciling(&self.servers_reconciling)
    }

    fn count(&self, queue: &Queue) {
        self.gauge.set((queue.pending.len() + queue.writing.len()) as i64);
    }

    /// Queues `report`, replacing one still queued for its server; unless `up_to_date` (every
    /// dependent already holds what it says) and no older report is queued or being written,
    /// which could otherwise land after it.
    pub fn queue(&self, report: Report, up_to_date: bool) {
        let key = server_key(&report.namespace, &report.server);
        let mut queue = self.lock();
        if up_to_date && !queue.pending.contains_key(&key) && !queue.writing.contains(&key) {
            return;
        }
        if queue.pending.insert(key, report).is_none() {
            queue.order.push_back(key);
        }
        self.count(&queue);
        drop(queue);
        self.wake.notify_one();
    }

    /// The oldest report whose server no writer is reporting on.
    fn take(&self) -> Option<(u64, Report)> {
        let mut queue = self.lock();
        for _ in 0..queue.order.len() {
            let key = queue.order.pop_front()?;
            if queue.writing.contains(&key) {
                queue.order.push_back(key);
                continue;
            }
            if let Some(report) = queue.pending.remove(&key) {
                queue.writing.insert(key);
                return Some((key, report));
            }
        }
        None
    }

    /// After reporting on `key`; a failed report is queued again unless a newer one came.
    fn done(&self, key: u64, failed: Option<Report>) {
        let mut queue = self.lock();
        queue.writing.remove(&key);
        if let Some(report) = failed
            && !queue.pending.contains_key(&key)
        {
            queue.pending.insert(key, report);
            queue.order.push_back(key);
        }
        self.count(&queue);
        drop(queue);
        self.wake.notify_one();
    }
}

/// Runs the writers until the operator shuts down.
pub async fn run(ctx: Arc<Context>) {
    let writers = futures::future::join_all((0..WRITERS).map(|i| writer(ctx.clone(), i)));
    tokio::select! {
        _ = writers => {}
        _ = shutdown_signal() => {}
    }
}

async fn writer(ctx: Arc<Context>, i: usize) {
    let reports = &ctx.reports;
    let room = 16usize.saturating_sub(4 * i);
    loop {
        if i > 0 && reports.servers_reconciling.load(Ordering::SeqCst) >= room {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let Some((key, report)) = reports.take() else {
            // Woken by a new report or a finished one; now and then the writers that pause
            // while servers reconcile look again.
            let _ = tokio::time::timeout(Duration::from_secs(1), reports.wake.notified()).await;
            continue;
        };
        match write_reports(&ctx, &report).await {
            Ok(()) => reports.done(key, None),
            Err(error) => {
                warn!(namespace = %report.namespace, server = %report.server, %error,
                    "could not write the status of a dependent; retrying");
                ctx.metrics.error("status", &error);
                tokio::time::sleep(RETRY_AFTER).await;
                reports.done(key, Some(report));
            }
        }
    }
}

/// Queues what a reconcile decided about each dependent of `server` (`refused`: those not
/// accepted); written after the configs.
pub fn queue(ctx: &Context, server: &AuthorizationServer, deps: &Dependents, refused: &Refusals) {
    let mut report = Report {
        namespace: server.namespace().unwrap_or_default(),
        server: server.name_any(),
        decided: HashMap::new(),
        refused: HashMap::new(),
    };
    let mut up_to_date = true;
    let mut decide = |kind: &'static str, target: status::Target, extra: serde_json::Map<String, serde_json::Value>| {
        let key = target.key(kind);
        let a = refused.get(&(kind, target.namespace.clone(), target.name.clone()));
        let shown = a.cloned().unwrap_or_else(Acceptance::by_server);
        up_to_date &= status::holds(ctx, kind, &target, &shown, &extra);
        report.decided.insert(key, target.generation);
        if let Some(a) = a {
            report.refused.insert(key, a.clone());
        }
    };
    for s in &deps.scopes {
        decide(AuthScope::KIND, status::Target::of(s), serde_json::Map::new());
    }
    for c in &deps.claims {
        decide(AuthClaim::KIND, status::Target::of(c), serde_json::Map::new());
    }
    for p in &deps.policies {
        decide(AccessPolicy::KIND, status::Target::of(p), serde_json::Map::new());
    }
    for c in &deps.clients {
        let target = status::Target::of(c);
        let accepted = !refused.contains_key(&(AuthClient::KIND, target.namespace.clone(), target.name.clone()));
        decide(AuthClient::KIND, target, client_status_fields(c, accepted));
    }
    ctx.reports.queue(report, up_to_date);
}

/// What a client's status shows besides its conditions.
fn client_status_fields(client: &AuthClient, accepted: bool) -> serde_json::Map<String, serde_json::Value> {
    let mut extra = serde_json::Map::new();
    extra.insert("clientId".into(), json!(client.client_id()));
    if client.spec.authentication.method.uses_secret() && accepted {
        extra.insert("secretName".into(), json!(client.secret_name()));
    }
    extra
}

/// Writes what `report` decided to the dependents of its server that are still as it saw
/// them (from the operator's caches).
async fn write_reports(ctx: &Context, report: &Report) -> Result<(), Error> {
    async fn write_each<K: Dependent>(
        ctx: &Context,
        report: &Report,
        items: &[K],
        extra: impl Fn(&K, bool) -> serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        for item in items {
            let target = status::Target::of(item);
            let Some(acceptance) = report.acceptance(target.key(K::KIND), target.generation) else { continue };
            let fields = extra(item, acceptance.accepted);
            match status::write_dependent::<K>(ctx, &target, &acceptance, fields).await {
                // Deleted since: nothing to report on.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                other => other?,
            }
        }
        Ok(())
    }
    let deps = Dependents::of(ctx, &report.namespace, &report.server).await?;
    fn none<K>(_: &K, _: bool) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    write_each(ctx, report, &deps.scopes, none).await?;
    write_each(ctx, report, &deps.claims, none).await?;
    write_each(ctx, report, &deps.policies, none).await?;
    write_each(ctx, report, &deps.clients, client_status_fields).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(server: &str, reason: &str) -> Report {
        Report {
            namespace: "ns".into(),
            server: server.into(),
            decided: HashMap::from([(1, Some(1)), (2, Some(3))]),
            refused: HashMap::from([(2, Acceptance::rejected(reason, "m"))]),
        }
    }

    fn reason(r: &Report) -> String {
        r.refused[&2].reason.clone()
    }

    #[test]
    fn a_report_covers_the_dependents_at_the_generation_decided_on() {
        let r = report("a", "Invalid");
        assert!(r.acceptance(1, Some(1)).unwrap().accepted);
        assert_eq!(r.acceptance(2, Some(3)).unwrap().reason, "Invalid");
        assert_eq!(r.acceptance(2, Some(4)), None, "changed since: its own reconcile reports it");
        assert_eq!(r.acceptance(3, Some(1)), None, "new since");
    }

    #[test]
    fn newest_report_replaces_a_queued_one_in_place() {
        let reports = Reports::default();
        reports.queue(report("a", "First"), false);
        reports.queue(report("b", "First"), false);
        reports.queue(report("a", "Second"), false);
        assert_eq!(reports.gauge.get(), 2);
        let (_, r) = reports.take().unwrap();
        assert_eq!((r.server.as_str(), reason(&r).as_str()), ("a", "Second"));
    }

    #[test]
    fn an_up_to_date_report_is_dropped_unless_an_older_one_could_land_after_it() {
        let reports = Reports::default();
        reports.queue(report("a", "First"), true);
        assert!(reports.take().is_none());
        reports.queue(report("a", "First"), false);
        reports.queue(report("a", "Second"), true);
        assert_eq!(reason(&reports.take().unwrap().1), "Second");
    }

    #[test]
    fn a_server_is_reported_on_by_one_writer_at_a_time() {
        let reports = Reports::default();
        reports.queue(report("a", "First"), false);
        let (a, _) = reports.take().unwrap();
        reports.queue(report("a", "Second"), true); // "a" is being written: still queued
        reports.queue(report("b", "First"), false);
        // "a" is being written: "b" comes first, and "a" waits for its write to finish.
        assert_eq!(reports.take().unwrap().1.server, "b");
        assert!(reports.take().is_none());
        reports.done(a, Some(report("a", "First")));
        // The failed older report does not replace the newer one.
        let (key, r) = reports.take().unwrap();
        assert_eq!((key, reason(&r).as_str()), (a, "Second"));
        reports.done(a, None);
        assert_eq!(reports.gauge.get(), 1); // "b" is still being written
    }
}

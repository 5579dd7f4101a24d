//! Dependents' statuses, reported in the background. A server's reconcile writes its keys,
//! config and workload, and queues what each of its scopes, claims, policies and clients
//! should report; writers drain the queue. While servers are reconciling only one writer
//! runs, so that new configs reach the API server before the status reports of their
//! dependents (15 per server in a typical tenant): what issuers serve comes first, what
//! `kubectl get` shows follows. With no server reconciling, four writers run.
//!
//! The newest report for an object replaces one still queued, and two writes to one object
//! never run at once, so the last report queued is the last written.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use prometheus_client::metrics::gauge::Gauge;
use tracing::warn;

use super::{
    Context,
    dependents::Dependent,
    status::{self, Acceptance, Target},
};

/// Writers with no server reconciling; one of them also runs while servers reconcile.
const WRITERS: usize = 4;
/// Before a failed write is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

type Write = for<'a> fn(&'a Context, &'a Report) -> BoxFuture<'a, Result<(), kube::Error>>;

/// One status to write.
pub struct Report {
    kind: &'static str,
    target: Target,
    acceptance: Acceptance,
    extra: serde_json::Map<String, serde_json::Value>,
    write: Write,
}

fn write<'a, K: Dependent>(ctx: &'a Context, report: &'a Report) -> BoxFuture<'a, Result<(), kube::Error>> {
    Box::pin(status::write_dependent::<K>(ctx, &report.target, &report.acceptance, report.extra.clone()))
}

#[derive(Default)]
struct Queue {
    /// Keys in the order their first pending report came.
    order: VecDeque<u64>,
    pending: HashMap<u64, Report>,
    /// Keys a writer is writing now.
    writing: HashSet<u64>,
}

#[derive(Default)]
pub struct Reports {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    servers_reconciling: AtomicUsize,
    /// Reports queued or being written (`tessera_operator_status_reports_pending`).
    pub gauge: Gauge,
}

/// Marks a server reconcile in progress while it lives.
pub struct Reconciling<'a>(&'a AtomicUsize);

impl Drop for Reconciling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Reports {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reconciling(&self) -> Reconciling<'_> {
        self.servers_reconciling.fetch_add(1, Ordering::SeqCst);
        Reconciling(&self.servers_reconciling)
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        let queue = self.lock();
        queue.pending.len() + queue.writing.len()
    }

    fn count(&self, queue: &Queue) {
        self.gauge.set((queue.pending.len() + queue.writing.len()) as i64);
    }

    /// Queues `acceptance` (and `extra` status fields) for `obj`, unless its status already says
    /// so; a report still queued for it is replaced.
    pub fn report<K: Dependent>(
        &self,
        ctx: &Context,
        obj: &K,
        acceptance: Acceptance,
        extra: serde_json::Map<String, serde_json::Value>,
    ) {
        let target = Target::of(obj);
        let key = target.key(K::KIND);
        let mut queue = self.lock();
        if !queue.pending.contains_key(&key)
            && !queue.writing.contains(&key)
            && status::holds(ctx, K::KIND, &target, &acceptance, &extra)
        {
            return;
        }
        let report = Report { kind: K::KIND, target, acceptance, extra, write: write::<K> };
        if queue.pending.insert(key, report).is_none() {
            queue.order.push_back(key);
        }
        self.count(&queue);
        drop(queue);
        self.wake.notify_one();
    }

    /// The oldest report whose object no writer is writing.
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

    /// After a write of `key`; a failed one is queued again unless a newer report came.
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
    let writers = futures::future::join_all((0..WRITERS).map(|i| writer(ctx.clone(), i > 0)));
    tokio::select! {
        _ = writers => {}
        _ = super::shutdown_signal() => {}
    }
}

async fn writer(ctx: Arc<Context>, only_when_servers_idle: bool) {
    let reports = &ctx.reports;
    loop {
        if only_when_servers_idle && reports.servers_reconciling.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let Some((key, report)) = reports.take() else {
            // Woken by a new report or a finished write; the extra writers look again now and
            // then whether servers are still reconciling.
            let _ = tokio::time::timeout(Duration::from_secs(1), reports.wake.notified()).await;
            continue;
        };
        match (report.write)(&ctx, &report).await {
            Ok(()) => reports.done(key, None),
            // Deleted since: nothing to report on.
            Err(kube::Error::Api(e)) if e.code == 404 => reports.done(key, None),
            Err(error) => {
                warn!(kind = report.kind, namespace = %report.target.namespace, name = %report.target.name, %error,
                    "could not write status; retrying");
                ctx.metrics.errors.get_or_create(&super::metrics::KindLabel { kind: report.kind.into() }).inc();
                tokio::time::sleep(RETRY_AFTER).await;
                reports.done(key, Some(report));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, reason: &str) -> Report {
        Report {
            kind: "AuthScope",
            target: Target { namespace: "ns".into(), name: name.into(), generation: Some(1) },
            acceptance: Acceptance::rejected(reason, "m"),
            extra: Default::default(),
            write: write::<crate::api::AuthScope>,
        }
    }

    fn queue(reports: &Reports, name: &str, reason: &str) -> u64 {
        let r = report(name, reason);
        let key = r.target.key(r.kind);
        let mut q = reports.lock();
        if q.pending.insert(key, r).is_none() {
            q.order.push_back(key);
        }
        key
    }

    #[test]
    fn newest_report_replaces_a_queued_one_in_place() {
        let reports = Reports::default();
        let a = queue(&reports, "a", "First");
        queue(&reports, "b", "First");
        queue(&reports, "a", "Second");
        assert_eq!(reports.pending(), 2);
        let (key, r) = reports.take().unwrap();
        assert_eq!((key, r.acceptance.reason.as_str()), (a, "Second"));
    }

    #[test]
    fn an_object_being_written_is_not_written_twice_at_once() {
        let reports = Reports::default();
        let a = queue(&reports, "a", "First");
        let (taken, _) = reports.take().unwrap();
        assert_eq!(taken, a);
        queue(&reports, "a", "Second");
        queue(&reports, "b", "First");
        // "a" is being written: "b" comes first, and "a" waits for its write to finish.
        assert_eq!(reports.take().unwrap().1.target.name, "b");
        assert!(reports.take().is_none());
        reports.done(a, Some(report("a", "First")));
        // The failed older write does not replace the newer report.
        let (key, r) = reports.take().unwrap();
        assert_eq!((key, r.acceptance.reason.as_str()), (a, "Second"));
        reports.done(a, None);
        assert_eq!(reports.pending(), 1); // "b" is still being written
    }
}

//! Reporting: status conditions (written only when more than timestamps change), the
//! operator's health and metrics endpoints.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, routing::get};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{Context, MANAGER, dependents::Dependent, metrics::Metrics};
use crate::api::conditions::{self, ACCEPTED, Condition, READY};

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

    pub fn rejected(reason: &str, message: impl Into<String>) -> Self {
        Self { accepted: false, reason: reason.into(), message: message.into() }
    }
}

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
    // kstatus: a dependent is never "in progress"; it is either accepted or stalled on its reason.
    conditions::set(&mut list, conditions::new(conditions::RECONCILING, false, "Reconciled", "", generation, now));
    conditions::set(
        &mut list,
        conditions::new(
            conditions::STALLED,
            !a.accepted,
            if a.accepted { "Accepted" } else { &a.reason },
            "",
            generation,
            now,
        ),
    );
    list
}

/// Writes `acceptance` to a dependent's status unless nothing but timestamps would change.
pub async fn set_dependent<K: Dependent>(ctx: &Context, obj: &K, acceptance: Acceptance) -> Result<(), kube::Error> {
    set_dependent_with(ctx, obj, acceptance, serde_json::Map::new()).await
}

pub async fn set_dependent_with<K: Dependent>(
    ctx: &Context,
    obj: &K,
    acceptance: Acceptance,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<(), kube::Error> {
    let generation = obj.meta().generation;
    let existing = obj.conditions();
    let desired = dependent_conditions(&existing, &acceptance, generation);
    let current_status = serde_json::to_value(obj).ok().and_then(|v| v.get("status").cloned()).unwrap_or(json!({}));
    let extra_same = extra.iter().all(|(k, v)| current_status.get(k) == Some(v));
    let generation_same = current_status.get("observedGeneration").and_then(|g| g.as_i64()) == generation;
    if !conditions::differ_beyond_timestamps(&existing, &desired) && extra_same && generation_same {
        return Ok(());
    }
    let mut status = extra;
    status.insert("observedGeneration".into(), json!(generation));
    status.insert("conditions".into(), serde_json::to_value(&desired).unwrap_or_default());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.metrics.write(K::KIND, "patch-status");
    Ok(())
}

/// `/metrics`, `/healthz` and `/readyz`. A standby is ready too (it is healthy and can take
/// over at once); `/readyz` says which role it has, so a PDB never blocks evicting the leader.
pub async fn serve_health(addr: SocketAddr, metrics: Arc<Metrics>, leading: Arc<AtomicBool>) {
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move { if leading.load(Ordering::SeqCst) { "leader" } else { "standby" } }),
        );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "health server stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, %addr, "cannot bind the health and metrics address"),
    }
}

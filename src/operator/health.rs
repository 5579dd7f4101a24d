//! The operator's own endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, routing::get};

use super::metrics::Metrics;

/// `/metrics`, `/healthz` and `/readyz`. A standby is ready too (it is healthy and can take
/// over at once); `/readyz` says which role it has, so a PDB never blocks evicting the leader.
pub async fn serve_health(
    addr: SocketAddr,
    limits: crate::listener::ConnectionLimits,
    metrics: Arc<Metrics>,
    leading: Arc<AtomicBool>,
) {
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move { if leading.load(Ordering::SeqCst) { "leader" } else { "standby" } }),
        );
    match crate::listener::bind(addr, None, limits).await {
        Ok(bound) => bound.serve(app).await,
        Err(e) => tracing::error!(error = %e, "cannot bind the health and metrics address"),
    }
}

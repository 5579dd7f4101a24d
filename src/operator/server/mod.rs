//! The AuthorizationServer reconcile, a pipeline: read (its dependents, identity Secrets,
//! namespace labels) → decide (pure: admission, compile, keys, status) → write (client and
//! keys Secrets, config, workload, status) → report (its dependents' statuses, queued).

mod cleanup;
mod decide;
mod keys;
mod read;

use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use tracing::instrument;

use super::{
    Context, Error, children, client_secrets, crash,
    dependents::{Dependents, reports},
    metrics::{KindLabel, ServerLabel},
    write,
};
use crate::{api::AuthorizationServer, config::ClientInput};

pub use read::servers_reading_secret;

pub const FINALIZER: &str = "tessera.dev/cleanup";

pub fn error_policy(server: Arc<AuthorizationServer>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(server = %server.name_any(), namespace = ?server.namespace(), %error, "reconcile failed");
    ctx.metrics.error("AuthorizationServer", error);
    super::retry_after_error()
}

#[instrument(skip_all, fields(namespace = server.namespace().unwrap_or_default(), server = server.name_any()))]
pub async fn reconcile(server: Arc<AuthorizationServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let _reconciling = ctx.reports.reconciling();
    let kind = KindLabel { kind: "AuthorizationServer".into() };
    ctx.metrics.reconciles.get_or_create(&kind).inc();
    let api: Api<AuthorizationServer> = Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, server, |event| async {
        match event {
            Finalizer::Apply(server) => apply(&server, &ctx).await,
            Finalizer::Cleanup(server) => cleanup::cleanup(&server, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.duration.get_or_create(&kind).observe(started.elapsed().as_secs_f64());
    result
}

async fn apply(server: &AuthorizationServer, ctx: &Context) -> Result<Action, Error> {
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let now = jiff::Timestamp::now();

    // read
    let deps = Dependents::of(ctx, &ns, &name).await?;
    let namespace_labels = read::namespace_labels(server, &deps.clients, ctx).await?;

    // decide which clients may have credentials; write theirs
    let (admitted, refused) = decide::admit(server, &deps.clients, &namespace_labels);
    let mut clients = Vec::with_capacity(admitted.len());
    let mut secrets_change_at: Option<jiff::Timestamp> = None;
    for client in admitted {
        let secret_hashes = if client.spec.authentication.method.uses_secret() {
            let secrets = client_secrets::ensure(ctx, server, client).await?;
            if let Some(t) = secrets.changes_at {
                secrets_change_at = Some(secrets_change_at.map_or(t, |c| c.min(t)));
            }
            secrets.hashes
        } else {
            Vec::new()
        };
        clients.push(ClientInput { client: client.clone(), secret_hashes });
    }

    // decide the config; keep the keys (the operator is their only writer)
    let input = crate::config::CompileInput {
        namespace_labels,
        server: server.clone(),
        scopes: deps.scopes.clone(),
        claims: deps.claims.clone(),
        policies: deps.policies.clone(),
        clients,
        identity_secrets: read::identity_secrets(server, ctx).await?,
    };
    let plan = decide::decide(&input, refused)?;
    if let Some(e) = &plan.server_error {
        tracing::warn!(reason = e.reason, "{}; the issuer keeps its last good config", e.message);
    }
    let keys = keys::ensure(server, &plan.signing, ctx, now).await?;

    // write: the config first (what the issuer serves), then its workload
    let deployment = write_children(server, ctx, &plan, keys.changed).await?;

    // report: the dependents' statuses are queued, the server's is written
    reports::queue(ctx, server, &deps, &plan.refused);
    let report = plan.report(server, &keys.signing, &deployment, secrets_change_at, now);
    if keys.changed {
        crash::point(crash::BEFORE_STATUS_WRITE);
    }
    write::server_status(ctx, server, report.status).await?;

    let labels = ServerLabel { namespace: ns, server: name };
    if let Some(age) = keys.signing.active_age {
        ctx.metrics.active_key_age.get_or_create(&labels).set(age.as_secs_f64());
    }
    if let Some(d) = keys.signing.next_due {
        ctx.metrics.next_rotation_in.get_or_create(&labels).set(d.as_secs_f64());
    }
    Ok(Action::requeue(report.requeue))
}

/// Applies the config Secret (when servable) and the issuer workload; returns what the
/// Deployment's status says. `keys_changed` arms the crash points of the crash-safety tests.
async fn write_children(
    server: &AuthorizationServer,
    ctx: &Context,
    plan: &decide::ServerPlan,
    keys_changed: bool,
) -> Result<super::applied::Memo, Error> {
    let ns = server.namespace().unwrap_or_default();
    let crash_point = |name| {
        if keys_changed {
            crash::point(name)
        }
    };
    // A config that is not servable is never written: the last good one stays.
    if let Some(config_json) = &plan.config_json {
        write::apply(ctx, &ns, children::config_secret(server, config_json.clone()), write::no_memo).await?;
    }
    crash_point(crash::AFTER_CONFIG_APPLY);
    write::apply(ctx, &ns, children::service_account(server), write::no_memo).await?;
    write::apply(ctx, &ns, children::role(server), write::no_memo).await?;
    write::apply(ctx, &ns, children::role_binding(server), write::no_memo).await?;
    let deployment = write::apply(ctx, &ns, children::deployment(server, &ctx.build), decide::deployment_memo).await?;
    crash_point(crash::AFTER_WORKLOAD_APPLY);
    write::apply(ctx, &ns, children::service(server), write::no_memo).await?;
    match children::pod_disruption_budget(server) {
        Some(pdb) => {
            write::apply(ctx, &ns, pdb, write::no_memo).await?;
        }
        // At generation 1 the server never asked for more replicas: no budget of ours exists.
        None if server.metadata.generation == Some(1) => {}
        None => {
            let name = children::issuer_name(&server.name_any());
            write::delete_if_present::<PodDisruptionBudget>(ctx, &ns, &name).await?;
        }
    }
    Ok(deployment)
}

//! A deleted server: its children in its namespace go with their owner (garbage collection);
//! its client Secrets, which may live elsewhere, are deleted here, and its dependents report
//! that it is gone.

use kube::ResourceExt;
use kube::runtime::{controller::Action, events::EventType};

use super::decide;
use crate::{
    api::AuthorizationServer,
    operator::{
        Context, Error, client_secrets,
        dependents::{Dependents, reports},
        write,
    },
};

pub async fn cleanup(server: &AuthorizationServer, ctx: &Context) -> Result<Action, Error> {
    client_secrets::delete_all(ctx, server).await?;
    // Entries of its children go with them (the watch sees them collected, or they expire).
    let deps = Dependents::of(ctx, &server.namespace().unwrap_or_default(), &server.name_any()).await?;
    // Through the report queue, so that no report of the server queued earlier lands after it.
    reports::queue(ctx, server, &deps, &decide::deleted(server, &deps));
    write::publish(
        ctx,
        server,
        EventType::Normal,
        "Deleted",
        "client Secrets removed; the workload goes with its owner".into(),
    )
    .await;
    Ok(Action::await_change())
}

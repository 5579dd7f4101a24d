//! `kubectl tessera preview`: the server's resources read from the cluster, evaluated by the
//! same preview as `tessera preview` over files.

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, ResourceExt};

use super::{PluginError, PreviewArgs};
use crate::api::{AccessPolicy, AuthClaim, AuthScope, AuthorizationServer};
use crate::standalone::{Manifests, preview::PreviewRequest};

pub async fn preview(client: &Client, ns: &str, args: &PreviewArgs) -> Result<String, PluginError> {
    let server = Api::<AuthorizationServer>::namespaced(client.clone(), ns)
        .get_opt(&args.server)
        .await?
        .ok_or_else(|| PluginError::NotFound(format!("AuthorizationServer {ns}/{} not found", args.server)))?;
    let of_server = |server_ref: &str| server_ref == args.server;
    let lp = Default::default();
    let mut m = Manifests {
        scopes: Api::<AuthScope>::namespaced(client.clone(), ns).list(&lp).await?.items,
        claims: Api::<AuthClaim>::namespaced(client.clone(), ns).list(&lp).await?.items,
        policies: Api::<AccessPolicy>::namespaced(client.clone(), ns).list(&lp).await?.items,
        clients: super::clients_of(client, ns, &args.server).await?,
        ..Default::default()
    };
    m.scopes.retain(|s| of_server(&s.spec.server_ref.name));
    m.claims.retain(|c| of_server(&c.spec.server_ref.name));
    m.policies.retain(|p| of_server(&p.spec.server_ref.name));
    // Namespace labels decide clientNamespaces selectors; unreadable ones count as unlabelled.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for c in &m.clients {
        let name = c.namespace().unwrap_or_default();
        let labels = namespaces.get_opt(&name).await.ok().flatten().map(|n| n.labels().clone()).unwrap_or_default();
        m.namespaces.insert(name, labels);
    }
    m.servers.push(server);
    let request = PreviewRequest {
        server: Some(args.server.clone()),
        client_id: args.client.clone(),
        grant_type: args.grant_type.clone(),
        scopes: args.scope.iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        subject: None,
        user: args.user.user(),
    };
    Ok(crate::standalone::preview::preview(&m, &request)?)
}

//! The reads of a server's reconcile besides its dependents (`Dependents::of`): the Secrets
//! its `spec.identity` names and the labels of its clients' namespaces.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, ResourceExt, runtime::reflector::ObjectRef};

use crate::{
    api::{AuthClient, AuthorizationServer, NamespaceFrom},
    config::{
        IdentitySecrets, NamespaceLabels, identity_secret_names,
        subjects::{namespace_admits, namespace_or_default},
    },
    operator::{Context, Error},
};

/// The Secrets `spec.identity` references that exist in the server's namespace; their values
/// go only into the config Secret.
pub async fn identity_secrets(server: &AuthorizationServer, ctx: &Context) -> Result<IdentitySecrets, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let mut out = IdentitySecrets::default();
    for name in identity_secret_names(server) {
        if let Some(secret) = api.get_opt(&name).await? {
            let mut data: BTreeMap<String, Vec<u8>> =
                secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            // stringData is write-only in the API; honoured in case a client sends it back.
            data.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
            out.insert(name, data);
        }
    }
    Ok(out)
}

/// Servers in `namespace` whose `spec.identity` reads Secret `secret`.
pub fn servers_reading_secret<'a>(
    servers: impl IntoIterator<Item = &'a AuthorizationServer>,
    namespace: &str,
    secret: &str,
) -> Vec<ObjectRef<AuthorizationServer>> {
    servers
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace) && identity_secret_names(s).contains(secret))
        .map(ObjectRef::from_obj)
        .collect()
}

/// Labels of the namespaces the clients live in (platform-asserted facts for admission,
/// policies and CEL).
pub async fn namespace_labels(
    server: &AuthorizationServer,
    clients: &[AuthClient],
    ctx: &Context,
) -> Result<NamespaceLabels, Error> {
    let mut out = BTreeMap::new();
    let server_ns = namespace_or_default(server.metadata.namespace.as_deref());
    for c in clients {
        let ns = namespace_or_default(c.metadata.namespace.as_deref()).to_owned();
        // Only a selector over other namespaces needs their labels to admit; a namespace not
        // admitted anyway needs none.
        let selects = server.spec.client_namespaces.from == NamespaceFrom::Selector && ns != server_ns;
        if out.contains_key(&ns) || !(selects || namespace_admits(server, &ns, None)) {
            continue;
        }
        let labels = match Api::<Namespace>::all(ctx.client.clone()).get_opt(&ns).await {
            Ok(namespace) => namespace.map(|n| n.labels().clone()).unwrap_or_default(),
            // Not readable (RBAC): no labels, so no namespaceSelector matches it (fails closed).
            Err(kube::Error::Api(e)) if e.code == 403 && !selects => {
                tracing::warn!(namespace = %ns, "cannot read the namespace's labels; namespaceSelector policies skip its clients");
                BTreeMap::new()
            }
            Err(e) => return Err(e.into()),
        };
        out.insert(ns, labels);
    }
    Ok(out)
}

//! The four kinds that point at an AuthorizationServer, behind one trait.

use std::fmt::Debug;

use kube::{Resource, ResourceExt};
use serde::{Serialize, de::DeserializeOwned};

use crate::api::{AccessPolicy, AuthClaim, AuthClient, AuthScope};

/// A resource that points at an AuthorizationServer.
pub trait Dependent:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// (namespace, name) of the server it belongs to.
    fn server(&self) -> (String, String);
    /// Whether it belongs to server `namespace/name` (no allocation: called for every cached
    /// object on every server reconcile).
    fn belongs_to(&self, namespace: &str, name: &str) -> bool;
    /// Its status as JSON (null when it has none), taken out of the object.
    fn take_status(&mut self) -> serde_json::Value;
}

macro_rules! dependent {
    ($ty:ty, $kind:literal, |$s:ident| $server_ns:expr, |$b:ident| $server_ns_ref:expr) => {
        impl Dependent for $ty {
            const KIND: &'static str = $kind;
            fn server(&self) -> (String, String) {
                let $s = self;
                ($server_ns, self.spec.server_ref.name.clone())
            }
            fn belongs_to(&self, namespace: &str, name: &str) -> bool {
                let $b = self;
                self.spec.server_ref.name == name && $server_ns_ref == Some(namespace)
            }
            fn take_status(&mut self) -> serde_json::Value {
                self.status.take().and_then(|s| serde_json::to_value(s).ok()).unwrap_or_default()
            }
        }
    };
}

dependent!(AuthScope, "AuthScope", |s| s.namespace().unwrap_or_default(), |b| b.metadata.namespace.as_deref());
dependent!(AuthClaim, "AuthClaim", |s| s.namespace().unwrap_or_default(), |b| b.metadata.namespace.as_deref());
dependent!(AccessPolicy, "AccessPolicy", |s| s.namespace().unwrap_or_default(), |b| b.metadata.namespace.as_deref());
dependent!(AuthClient, "AuthClient", |s| s.server_namespace(), |b| {
    b.spec.server_ref.namespace.as_deref().or(b.metadata.namespace.as_deref())
});

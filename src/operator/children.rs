//! The *build* step: pure functions from a validated server to the objects its issuer needs.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Secret, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;
use serde_json::json;

use crate::api::{AuthorizationServer, StorageType};
use crate::config::{CONFIG_SECRET_KEY, config_secret_name};
use crate::keys::{KEYS_SECRET_KEY, keys_secret_name};

pub const MANAGER: &str = "tessera-operator";
pub const ISSUER_PORT: i32 = 8080;
const TLS_DIR: &str = "/etc/tessera/tls";

pub fn issuer_name(server: &str) -> String {
    format!("{server}-issuer")
}

/// Labels on every object built for `server`; the Deployment selects its pods by them.
pub fn labels(server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "tessera-issuer".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), server.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned()),
        ("tessera.dev/server".to_owned(), server.to_owned()),
    ])
}

fn selector_labels(server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "tessera-issuer".to_owned()),
        ("tessera.dev/server".to_owned(), server.to_owned()),
    ])
}

/// Everything the build step needs besides the server itself.
#[derive(Clone, Debug)]
pub struct BuildContext {
    pub image: String,
}

fn owner(server: &AuthorizationServer) -> OwnerReference {
    server.controller_owner_ref(&()).unwrap_or_else(|| OwnerReference {
        api_version: "tessera.dev/v1alpha1".into(),
        kind: "AuthorizationServer".into(),
        name: server.metadata.name.clone().unwrap_or_default(),
        uid: server.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn meta(server: &AuthorizationServer, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: server.metadata.namespace.clone(),
        labels: Some(labels(&server.name())),
        owner_references: Some(vec![owner(server)]),
        ..Default::default()
    }
}

trait ServerName {
    fn name(&self) -> String;
}

impl ServerName for AuthorizationServer {
    fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    // The literals below are written to match the k8s-openapi types; a mismatch is a bug here.
    serde_json::from_value(value).expect("built object matches its Kubernetes type")
}

pub fn service_account(server: &AuthorizationServer) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(server, issuer_name(&server.name())),
        automount_service_account_token: Some(true),
        ..Default::default()
    }
}

/// The issuer may read its own two Secrets and nothing else.
pub fn role(server: &AuthorizationServer) -> Role {
    let name = server.name();
    let mut role: Role = from_json(json!({
        "rules": [{
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [config_secret_name(&name), keys_secret_name(&name)],
            "verbs": ["get", "list", "watch"],
        }]
    }));
    role.metadata = meta(server, issuer_name(&name));
    role
}

pub fn role_binding(server: &AuthorizationServer) -> RoleBinding {
    let name = server.name();
    let mut binding: RoleBinding = from_json(json!({
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": issuer_name(&name) },
        "subjects": [{ "kind": "ServiceAccount", "name": issuer_name(&name), "namespace": server.metadata.namespace }],
    }));
    binding.metadata = meta(server, issuer_name(&name));
    binding
}

/// The compiled `ServerConfig`, as the issuer reads it.
pub fn config_secret(server: &AuthorizationServer, config_json: String) -> Secret {
    Secret {
        metadata: meta(server, config_secret_name(&server.name())),
        type_: Some("Opaque".into()),
        string_data: None,
        data: Some(BTreeMap::from([(CONFIG_SECRET_KEY.to_owned(), k8s_openapi::ByteString(config_json.into_bytes()))])),
        ..Default::default()
    }
}

/// The key set; `handled` records which rotation annotations were acted on, in the same write.
pub fn keys_secret(server: &AuthorizationServer, keys_json: Vec<u8>, handled: BTreeMap<String, String>) -> Secret {
    let mut metadata = meta(server, keys_secret_name(&server.name()));
    metadata.annotations = (!handled.is_empty()).then_some(handled);
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(KEYS_SECRET_KEY.to_owned(), k8s_openapi::ByteString(keys_json))])),
        ..Default::default()
    }
}

/// The issuer's command line: the same binary, in issuer mode, for this server.
pub fn issuer_args(server: &AuthorizationServer) -> Vec<String> {
    vec![
        "issuer".into(),
        "--namespace".into(),
        server.metadata.namespace.clone().unwrap_or_default(),
        "--server".into(),
        server.name(),
        "--listen".into(),
        format!("0.0.0.0:{ISSUER_PORT}"),
    ]
}

/// The issuer's environment; the Redis URL comes straight from the user's Secret, so it never
/// passes through the operator, the ServerConfig or a log line.
fn issuer_env(server: &AuthorizationServer) -> serde_json::Value {
    let mut env = vec![json!({ "name": "RUST_LOG", "value": "info" })];
    if let (StorageType::Redis, Some(redis)) = (server.spec.storage.type_, &server.spec.storage.redis) {
        let r = &redis.url_secret_ref;
        env.push(json!({
            "name": "TESSERA_REDIS_URL",
            "valueFrom": { "secretKeyRef": { "name": r.name, "key": r.key } }
        }));
    }
    json!(env)
}

/// The issuer Deployment, under the restricted Pod Security profile.
pub fn deployment(server: &AuthorizationServer, ctx: &BuildContext) -> Deployment {
    let name = server.name();
    let w = &server.spec.workload;
    let mut pod_labels = w.pod_labels.clone();
    pod_labels.extend(labels(&name));
    let mut volumes = vec![json!({ "name": "tmp", "emptyDir": { "sizeLimit": "16Mi" } })];
    let mut mounts = vec![json!({ "name": "tmp", "mountPath": "/tmp" })];
    let mut args = issuer_args(server);
    let scheme = match &server.spec.tls {
        Some(tls) => {
            // The issuer serves https itself from a kubernetes.io/tls Secret, re-read when it changes.
            volumes.push(json!({ "name": "tls", "secret": { "secretName": tls.secret_name } }));
            mounts.push(json!({ "name": "tls", "mountPath": TLS_DIR, "readOnly": true }));
            args.extend(["--tls-dir".into(), TLS_DIR.into()]);
            "HTTPS"
        }
        None => "HTTP",
    };
    let probe = |path: &str, period: i32| json!({ "httpGet": { "path": path, "port": "http", "scheme": scheme }, "periodSeconds": period, "timeoutSeconds": 2 });
    let mut deployment: Deployment = from_json(json!({
        "spec": {
            "replicas": w.replicas,
            "selector": { "matchLabels": selector_labels(&name) },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": {
                "metadata": { "labels": pod_labels, "annotations": w.pod_annotations },
                "spec": {
                    "serviceAccountName": issuer_name(&name),
                    "automountServiceAccountToken": true,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" }
                    },
                    "nodeSelector": w.node_selector,
                    "tolerations": w.tolerations,
                    "affinity": w.affinity,
                    "priorityClassName": w.priority_class_name,
                    "topologySpreadConstraints": if w.replicas > 1 { json!([{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": { "matchLabels": selector_labels(&name) }
                    }]) } else { json!(null) },
                    "containers": [{
                        "name": "issuer",
                        "image": ctx.image,
                        "args": args,
                        "ports": [{ "name": "http", "containerPort": ISSUER_PORT, "protocol": "TCP" }],
                        "env": issuer_env(server),
                        "resources": w.resources.clone().unwrap_or_else(|| from_json(json!({
                            "requests": { "cpu": "50m", "memory": "32Mi" }, "limits": { "memory": "128Mi" }
                        }))),
                        "readinessProbe": probe(crate::issuer::KUBELET_READINESS_PATH, 5),
                        "livenessProbe": probe("/livez", 10),
                        "startupProbe": { "httpGet": { "path": "/livez", "port": "http", "scheme": scheme }, "periodSeconds": 1, "failureThreshold": 30 },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": { "drop": ["ALL"] },
                            "seccompProfile": { "type": "RuntimeDefault" }
                        },
                        "volumeMounts": mounts
                    }],
                    "volumes": volumes
                }
            }
        }
    }));
    deployment.metadata = meta(server, issuer_name(&name));
    deployment
}

pub fn service(server: &AuthorizationServer) -> Service {
    let name = server.name();
    let mut service: Service = from_json(json!({
        "spec": {
            "selector": selector_labels(&name),
            "ports": [{ "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" }]
        }
    }));
    service.metadata = meta(server, issuer_name(&name));
    service
}

/// Only with more than one replica: a PDB on a single pod would block node drains.
pub fn pod_disruption_budget(server: &AuthorizationServer) -> Option<PodDisruptionBudget> {
    if server.spec.workload.replicas <= 1 {
        return None;
    }
    let name = server.name();
    let mut pdb: PodDisruptionBudget = from_json(json!({
        "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector_labels(&name) } }
    }));
    pdb.metadata = meta(server, issuer_name(&name));
    Some(pdb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(yaml: &str) -> AuthorizationServer {
        let mut s: AuthorizationServer = serde_norway::from_str(yaml).unwrap();
        s.metadata.uid = Some("uid-1".into());
        s
    }

    const BASIC: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: { name: payments, namespace: identity }
spec: { issuer: "https://auth.example.com/payments", audiences: [api://payments] }
"#;

    #[test]
    fn issuer_pod_meets_the_restricted_pod_security_profile() {
        let d = deployment(&server(BASIC), &BuildContext { image: "tessera:test".into() });
        let pod = d.spec.unwrap().template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), vec!["ALL".to_string()]);
        assert_eq!(c.args.clone().unwrap()[..5], ["issuer", "--namespace", "identity", "--server", "payments"]);
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
        assert_eq!(pod.service_account_name.as_deref(), Some("payments-issuer"));
    }

    #[test]
    fn every_child_is_owned_by_its_server() {
        let s = server(BASIC);
        let owners = [
            service_account(&s).metadata.owner_references,
            role(&s).metadata.owner_references,
            role_binding(&s).metadata.owner_references,
            config_secret(&s, "{}".into()).metadata.owner_references,
            service(&s).metadata.owner_references,
        ];
        for o in owners {
            let o = o.unwrap();
            assert_eq!(o[0].kind, "AuthorizationServer");
            assert_eq!(o[0].uid, "uid-1");
            assert_eq!(o[0].controller, Some(true));
        }
    }

    #[test]
    fn issuer_role_reads_only_its_two_secrets() {
        let r = role(&server(BASIC));
        let rules = r.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].resources.clone().unwrap(), ["secrets"]);
        assert_eq!(rules[0].resource_names.clone().unwrap(), ["payments-config", "payments-signing-keys"]);
        assert!(!rules[0].verbs.iter().any(|v| v == "create" || v == "update" || v == "patch" || v == "delete"));
    }

    #[test]
    fn tls_secret_is_mounted_and_served_by_the_issuer() {
        let mut s = server(BASIC);
        s.spec.tls = Some(crate::api::TlsSpec { secret_name: "payments-tls".into() });
        let pod = deployment(&s, &BuildContext { image: "x".into() }).spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert!(c.args.clone().unwrap().windows(2).any(|w| w == ["--tls-dir", "/etc/tessera/tls"]));
        assert_eq!(c.readiness_probe.clone().unwrap().http_get.unwrap().scheme.as_deref(), Some("HTTPS"));
        let volumes = pod.volumes.unwrap();
        assert!(
            volumes.iter().any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("payments-tls"))
        );
    }

    #[test]
    fn redis_url_reaches_the_issuer_only_as_a_secret_reference() {
        let memory = deployment(&server(BASIC), &BuildContext { image: "x".into() });
        let env = |d: Deployment| d.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
        assert!(!env(memory).iter().any(|e| e.name == "TESSERA_REDIS_URL"));
        let redis = server(&BASIC.replace(
            "audiences: [api://payments] }",
            "audiences: [api://payments], workload: { replicas: 3 }, storage: { type: Redis, redis: { urlSecretRef: { name: payments-redis } } } }",
        ));
        let env = env(deployment(&redis, &BuildContext { image: "x".into() }));
        let url = env.iter().find(|e| e.name == "TESSERA_REDIS_URL").unwrap();
        assert!(url.value.is_none());
        let key_ref = url.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!((key_ref.name.as_str(), key_ref.key.as_str()), ("payments-redis", "url"));
    }

    #[test]
    fn pdb_only_with_several_replicas() {
        assert!(pod_disruption_budget(&server(BASIC)).is_none());
        let mut s = server(BASIC);
        s.spec.workload.replicas = 3;
        assert!(pod_disruption_budget(&s).is_some());
        let d = deployment(&s, &BuildContext { image: "x".into() });
        assert!(d.spec.unwrap().template.spec.unwrap().topology_spread_constraints.is_some());
    }
}

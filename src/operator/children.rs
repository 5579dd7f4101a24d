//! The *build* step: pure functions from a validated server to the objects its issuer needs,
//! built as the Kubernetes types themselves (a misspelt field does not compile).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
            Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount,
            ServicePort, ServiceSpec, SleepAction, TopologySpreadConstraint, Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::Resource;

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

pub fn service_account(server: &AuthorizationServer) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(server, issuer_name(&server.name())),
        automount_service_account_token: Some(true),
        ..Default::default()
    }
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.into_iter().map(str::to_owned).collect()
}

/// The issuer may read its own two Secrets and nothing else.
pub fn role(server: &AuthorizationServer) -> Role {
    let name = server.name();
    Role {
        metadata: meta(server, issuer_name(&name)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(strings([""])),
            resources: Some(strings(["secrets"])),
            resource_names: Some(vec![config_secret_name(&name), keys_secret_name(&name)]),
            verbs: strings(["get", "list", "watch"]),
            non_resource_urls: None,
        }]),
    }
}

pub fn role_binding(server: &AuthorizationServer) -> RoleBinding {
    let name = server.name();
    RoleBinding {
        metadata: meta(server, issuer_name(&name)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: issuer_name(&name),
        },
        subjects: Some(vec![Subject {
            api_group: None,
            kind: "ServiceAccount".into(),
            name: issuer_name(&name),
            namespace: server.metadata.namespace.clone(),
        }]),
    }
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
fn issuer_env(server: &AuthorizationServer) -> Vec<EnvVar> {
    let mut env = vec![EnvVar { name: "RUST_LOG".into(), value: Some("info".into()), value_from: None }];
    if let (StorageType::Redis, Some(redis)) = (server.spec.storage.type_, &server.spec.storage.redis) {
        let r = &redis.url_secret_ref;
        env.push(EnvVar {
            name: "TESSERA_REDIS_URL".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: r.name.clone(), key: r.key.clone(), optional: None }),
                ..Default::default()
            }),
        });
    }
    env
}

fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector { match_labels: Some(labels), match_expressions: None }
}

fn runtime_default_seccomp() -> Option<SeccompProfile> {
    Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None })
}

/// An HTTP GET of `path` on the issuer's port.
fn http_get(path: &str, scheme: &str) -> Option<HTTPGetAction> {
    Some(HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::String("http".into()),
        scheme: Some(scheme.into()),
        ..Default::default()
    })
}

fn probe(path: &str, scheme: &str, period: i32) -> Probe {
    Probe {
        http_get: http_get(path, scheme),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// Requests and limits of an issuer that `spec.workload.resources` does not set.
fn default_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect())
    };
    ResourceRequirements {
        requests: quantities(&[("cpu", "50m"), ("memory", "32Mi")]),
        limits: quantities(&[("memory", "128Mi")]),
        claims: None,
    }
}

/// Seconds the kubelet waits (preStop `sleep`, run by the kubelet itself: the image has no
/// shell) before it sends SIGTERM to an issuer that is being deleted. A deleted pod leaves its
/// Service's EndpointSlice at once, but kube-proxy on every node takes a moment (its minimum
/// sync period is 1 s) to stop sending it new connections; until then the issuer keeps
/// accepting, so a client of the Service never meets a closed port. Then SIGTERM starts the
/// drain (`--drain-timeout`, [`crate::listener::DEFAULT_DRAIN_TIMEOUT`]).
pub const PRE_STOP_SLEEP_SECONDS: i64 = 2;

/// Grace period of an issuer pod: the preStop sleep, the drain timeout (20 s by default) and
/// the 5 s the process allows itself after the drain fit inside it.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// The issuer container, under the restricted Pod Security profile.
fn issuer_container(server: &AuthorizationServer, ctx: &BuildContext) -> (Container, Vec<Volume>) {
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource { medium: None, size_limit: Some(Quantity("16Mi".into())) }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() }];
    let mut args = issuer_args(server);
    let scheme = match &server.spec.tls {
        Some(tls) => {
            // The issuer serves https itself from a kubernetes.io/tls Secret, re-read when it changes.
            volumes.push(Volume {
                name: "tls".into(),
                secret: Some(SecretVolumeSource { secret_name: Some(tls.secret_name.clone()), ..Default::default() }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "tls".into(),
                mount_path: TLS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
            args.extend(["--tls-dir".into(), TLS_DIR.into()]);
            "HTTPS"
        }
        None => "HTTP",
    };
    let container = Container {
        name: "issuer".into(),
        image: Some(ctx.image.clone()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: ISSUER_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(issuer_env(server)),
        resources: Some(server.spec.workload.resources.clone().unwrap_or_else(default_resources)),
        readiness_probe: Some(probe(crate::issuer::KUBELET_READINESS_PATH, scheme, 5)),
        liveness_probe: Some(probe("/livez", scheme, 10)),
        startup_probe: Some(Probe {
            http_get: http_get("/livez", scheme),
            period_seconds: Some(1),
            failure_threshold: Some(30),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { add: None, drop: Some(strings(["ALL"])) }),
            seccomp_profile: runtime_default_seccomp(),
            ..Default::default()
        }),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: PRE_STOP_SLEEP_SECONDS }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    (container, volumes)
}

/// The issuer Deployment, under the restricted Pod Security profile.
pub fn deployment(server: &AuthorizationServer, ctx: &BuildContext) -> Deployment {
    let name = server.name();
    let w = &server.spec.workload;
    let mut pod_labels = w.pod_labels.clone();
    pod_labels.extend(labels(&name));
    let (container, volumes) = issuer_container(server, ctx);
    let spread = (w.replicas > 1).then(|| {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(match_labels(selector_labels(&name))),
            ..Default::default()
        }]
    });
    let pod = PodSpec {
        service_account_name: Some(issuer_name(&name)),
        automount_service_account_token: Some(true),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: runtime_default_seccomp(),
            ..Default::default()
        }),
        node_selector: Some(w.node_selector.clone()),
        tolerations: Some(w.tolerations.clone()),
        affinity: w.affinity.clone(),
        priority_class_name: w.priority_class_name.clone(),
        topology_spread_constraints: spread,
        containers: vec![container],
        volumes: Some(volumes),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
        ..Default::default()
    };
    Deployment {
        metadata: meta(server, issuer_name(&name)),
        spec: Some(DeploymentSpec {
            replicas: Some(w.replicas),
            selector: match_labels(selector_labels(&name)),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(w.pod_annotations.clone()),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

pub fn service(server: &AuthorizationServer) -> Service {
    let name = server.name();
    Service {
        metadata: meta(server, issuer_name(&name)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Only with more than one replica: a PDB on a single pod would block node drains.
pub fn pod_disruption_budget(server: &AuthorizationServer) -> Option<PodDisruptionBudget> {
    if server.spec.workload.replicas <= 1 {
        return None;
    }
    let name = server.name();
    Some(PodDisruptionBudget {
        metadata: meta(server, issuer_name(&name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(match_labels(selector_labels(&name))),
            ..Default::default()
        }),
        status: None,
    })
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
    fn issuer_pod_keeps_accepting_until_kube_proxy_forgets_it_then_drains_inside_its_grace() {
        let d = deployment(&server(BASIC), &BuildContext { image: "tessera:test".into() });
        let pod = d.spec.unwrap().template.spec.unwrap();
        let pre_stop = pod.containers[0].lifecycle.clone().unwrap().pre_stop.unwrap();
        // The kubelet's own sleep: the image has no shell for an exec hook.
        assert!(pre_stop.exec.is_none() && pre_stop.http_get.is_none());
        let sleep = pre_stop.sleep.unwrap().seconds;
        assert!((1..=2).contains(&sleep), "long enough for kube-proxy, short enough for a quick exit: {sleep}");
        let drain = crate::listener::DEFAULT_DRAIN_TIMEOUT.as_secs() as i64;
        assert!(sleep + drain + 5 < pod.termination_grace_period_seconds.unwrap());
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

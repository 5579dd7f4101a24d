//! The *decide* step, pure: from what the reconcile read (the server, its dependents, its
//! namespaces' labels, its key set) and `now`, what to write and what to report. No client,
//! no clock: unit-tested below, scenario by scenario.

use std::{collections::BTreeMap, time::Duration};

use kube::{Resource, ResourceExt};

use crate::{
    api::{
        AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer, AuthorizationServerStatus, Endpoints,
        KeyState, KeyStatus, SigningStatus, conditions,
    },
    config::{CompileInput, NamespaceLabels, ServerError, subjects::client_refusal},
    keys::{self, KeySet, RotationPlan, RotationSettings},
    operator::{
        Error,
        applied::Memo,
        dependents::{
            Dependent, Dependents,
            status::{Acceptance, Refusals, SERVER_NOT_FOUND},
        },
    },
};

/// The longest a server waits for its next reconcile when nothing is due.
pub const RESYNC: Duration = Duration::from_secs(3600);
/// The shortest requeue (a change due "now" must not spin).
const MIN_REQUEUE: Duration = Duration::from_millis(200);

fn refusal_key(kind: &'static str, meta: &kube::api::ObjectMeta) -> (&'static str, String, String) {
    (kind, meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// Clients that may hold credentials of `server`, and why the others may not: their
/// namespace is not admitted (`spec.clientNamespaces`), or their client id belongs to
/// another namespace. Checked again by compile; here so that a squatter never gets a
/// credentials Secret.
pub fn admit<'a>(
    server: &AuthorizationServer,
    clients: &'a [AuthClient],
    labels: &NamespaceLabels,
) -> (Vec<&'a AuthClient>, Refusals) {
    let mut admitted = Vec::new();
    let mut refused = Refusals::new();
    for client in clients {
        match client_refusal(server, client, labels) {
            Some((reason, why)) => {
                refused.insert(refusal_key(AuthClient::KIND, &client.metadata), Acceptance::rejected(reason, why));
            }
            None => admitted.push(client),
        }
    }
    (admitted, refused)
}

/// What a server's reconcile writes and reports, but for its keys and workload.
#[derive(Debug)]
pub struct ServerPlan {
    /// The config Secret's content; `None` when the spec is not servable (the last good config
    /// stays).
    pub config_json: Option<String>,
    /// What the compile found wrong with the server itself.
    pub server_error: Option<ServerError>,
    /// Dependents not accepted, and why.
    pub refused: Refusals,
    /// Rotation settings of the compiled config (raised to safe minimums).
    pub signing: RotationSettings,
    /// `ConfigReady`'s message when the config compiled.
    config_message: String,
}

/// Compiles `input` (the admitted clients, with their secrets) into the config to serve;
/// `refused` are the clients `admit` already refused.
pub fn decide(input: &CompileInput, mut refused: Refusals) -> Result<ServerPlan, Error> {
    let compiled = crate::config::compile(input);
    for r in &compiled.rejected {
        refused
            .insert((r.kind, r.namespace.clone(), r.name.clone()), Acceptance::rejected(&r.reason, r.message.clone()));
    }
    let config_message = if compiled.rejected.is_empty() {
        format!(
            "{} scopes, {} claims, {} policies, {} clients",
            compiled.config.scopes.len(),
            compiled.config.claims.len(),
            compiled.config.policies.len(),
            compiled.config.clients.len()
        )
    } else {
        format!("compiled; {} resource(s) not accepted: see their Accepted condition", compiled.rejected.len())
    };
    // A config that breaks a rule or lacks the sign-in it asks for is never served.
    let config_json = match compiled.server_error {
        None => Some(compiled.config.to_json().map_err(|source| Error::Serialize { what: "ServerConfig", source })?),
        Some(_) => None,
    };
    Ok(ServerPlan {
        config_json,
        server_error: compiled.server_error,
        refused,
        signing: compiled.config.signing,
        config_message,
    })
}

/// What the rotation schedule and the annotations ask of a key set.
#[derive(Debug)]
pub struct KeyDecision {
    pub plan: RotationPlan,
    /// The annotations the keys Secret should carry (rotation requests handled).
    pub handled: BTreeMap<String, String>,
}

impl KeyDecision {
    /// Whether the keys Secret must be written.
    pub fn writes(&self, handled_now: &BTreeMap<String, String>) -> bool {
        !self.plan.is_empty() || &self.handled != handled_now
    }
}

/// The key change due at `now` for `keys`, whose Secret records `handled` as handled.
pub fn keys(
    server: &AuthorizationServer,
    settings: &RotationSettings,
    current: &KeySet,
    handled: &BTreeMap<String, String>,
    now: jiff::Timestamp,
) -> KeyDecision {
    let (request, mut now_handled) = keys::rotation_request(server.annotations(), handled);
    let plan = keys::plan_with(settings, current, now, request);
    if plan.request_pending {
        // Not handled yet: the Next key is not in every verifier's cache; we come back when it is.
        now_handled = handled.clone();
    }
    KeyDecision { plan, handled: now_handled }
}

/// The Event of a key change: (warning, reason, note).
pub fn key_event(plan: &RotationPlan, next: &KeySet, now: jiff::Timestamp) -> Option<(bool, &'static str, String)> {
    let reason = plan.reason?;
    let active = next.signing_key(now).map(|k| k.kid.clone()).unwrap_or_default();
    Some(if plan.revoked.is_empty() {
        (false, "KeyRotated", format!("{reason}: {active} signs; {} key(s) published", next.published(now).count()))
    } else {
        (
            true,
            "KeyRevoked",
            format!("{reason}: revoked {} and removed it from the JWKS; {active} signs", plan.revoked.join(", ")),
        )
    })
}

/// What status says of a server's keys.
#[derive(Clone, Debug)]
pub struct Signing {
    pub ready: bool,
    pub reason: String,
    pub message: String,
    pub status: SigningStatus,
    pub next_due: Option<Duration>,
    pub active_age: Option<Duration>,
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What `status.signing` shows of a key set at `now`.
fn signing_status(keys: &KeySet, now: jiff::Timestamp) -> SigningStatus {
    let active = keys.signing_key(now);
    // The Next key's activation; none in Manual mode, where it waits for a person.
    let next_rotation = keys
        .published(now)
        .filter(|k| k.activates_at > now && k.activates_at < keys::manual_hold())
        .map(|k| k.activates_at)
        .min();
    SigningStatus {
        active_key_id: active.map(|k| k.kid.clone()),
        next_rotation_time: next_rotation.map(rfc3339),
        last_rotation_time: active.map(|k| rfc3339(k.activates_at)),
        keys: keys
            .keys
            .iter()
            .filter_map(|k| {
                let state = if k.revoked { KeyState::Revoked } else { keys.state(k, now)? };
                Some(KeyStatus {
                    kid: k.kid.clone(),
                    algorithm: k.algorithm,
                    state,
                    created_at: rfc3339(k.created_at),
                    activates_at: rfc3339(k.activates_at),
                    retires_at: k.retires_at.map(rfc3339),
                    delete_at: k.delete_at.map(rfc3339),
                })
            })
            .collect(),
    }
}

/// What status says of `keys` (as written or found) under `plan`.
pub fn signing(
    server: &AuthorizationServer,
    settings: &RotationSettings,
    keys: &KeySet,
    plan: &RotationPlan,
    now: jiff::Timestamp,
) -> Signing {
    let status = signing_status(keys, now);
    let active = keys.signing_key(now);
    let ready = active.is_some();
    let mut message = if ready {
        format!(
            "{} key(s) published; {} signs",
            keys.published(now).count(),
            status.active_key_id.clone().unwrap_or_default()
        )
    } else {
        "no key can sign yet".to_owned()
    };
    let rotation = &server.spec.signing.rotation;
    for (field, asked, used) in [
        ("prePublish", rotation.pre_publish.as_secs(), settings.pre_publish_secs),
        ("retainRetired", rotation.retain_retired.as_secs(), settings.retain_retired_secs),
    ] {
        if used > asked {
            message.push_str(&format!(
                "; {field} raised from {asked}s to {used}s so that no verifier with a cached JWKS fails"
            ));
        }
    }
    if plan.request_pending {
        message.push_str("; manual rotation waits until the Next key is in every verifier's cache");
    }
    Signing {
        ready,
        reason: if ready { "KeysPublished".into() } else { "NoActiveKey".into() },
        message,
        active_age: active.map(|k| now.duration_since(k.activates_at).unsigned_abs()),
        next_due: plan.next_due.map(|t| t.duration_since(now).unsigned_abs()),
        status,
    }
}

/// What the server's status needs of its Deployment, as the apply returned it.
pub fn deployment_memo(deployment: &k8s_openapi::api::apps::v1::Deployment) -> Memo {
    let status = deployment.status.clone().unwrap_or_default();
    Memo::Workload {
        current: status.observed_generation >= deployment.metadata.generation,
        available: status.available_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
    }
}

struct Workload {
    ready: bool,
    ready_replicas: i32,
    reason: &'static str,
    message: String,
}

fn workload(server: &AuthorizationServer, deployment: &Memo) -> Workload {
    let want = server.spec.workload.replicas;
    let (current, available, updated, ready_replicas) = match *deployment {
        Memo::Workload { current, available, updated, ready_replicas } => (current, available, updated, ready_replicas),
        _ => (false, 0, 0, 0),
    };
    let ready = current && available >= want && updated >= want;
    Workload {
        ready,
        ready_replicas,
        reason: if ready { "Available" } else { "Progressing" },
        message: format!("{available}/{want} issuer replicas available"),
    }
}

/// The status to write and when to reconcile again.
#[derive(Debug)]
pub struct Report {
    pub status: AuthorizationServerStatus,
    pub requeue: Duration,
}

impl ServerPlan {
    /// The server's status once its keys (`signing`) and workload (`deployment`, as applied)
    /// are known; `secrets_change_at` is when a client secret's overlap next ends.
    pub fn report(
        &self,
        server: &AuthorizationServer,
        signing: &Signing,
        deployment: &Memo,
        secrets_change_at: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
    ) -> Report {
        let generation = server.metadata.generation;
        let workload = workload(server, deployment);
        let mut conds = server.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        let mut set = |t: &str, ok: bool, reason: &str, msg: String| {
            conditions::set(&mut conds, conditions::new(t, ok, reason, msg, generation, now));
        };
        match &self.server_error {
            None => set(conditions::CONFIG_READY, true, "Compiled", self.config_message.clone()),
            Some(e) => set(conditions::CONFIG_READY, false, e.reason, e.message.clone()),
        }
        set(conditions::SIGNING_KEYS_READY, signing.ready, &signing.reason, signing.message.clone());
        set(conditions::WORKLOAD_READY, workload.ready, workload.reason, workload.message.clone());
        let ready = self.server_error.is_none() && workload.ready && signing.ready;
        let (ready_reason, ready_message) = if ready {
            ("Ready".to_owned(), format!("issuer {} is serving", server.spec.issuer))
        } else if let Some(e) = &self.server_error {
            (e.reason.to_owned(), e.message.clone())
        } else if !signing.ready {
            (signing.reason.clone(), signing.message.clone())
        } else {
            (workload.reason.to_owned(), workload.message.clone())
        };
        set(conditions::READY, ready, &ready_reason, ready_message.clone());
        // kstatus (Flux, kpt): Reconciling while progress is possible without anyone's help,
        // Stalled (with the reason) when only a change to the spec or a Secret can clear it.
        match self.server_error.as_ref().filter(|e| e.is_permanent()) {
            Some(e) => {
                set(conditions::RECONCILING, false, "Stalled", String::new());
                set(conditions::STALLED, true, e.reason, e.message.clone());
            }
            None => {
                set(
                    conditions::RECONCILING,
                    !ready,
                    if ready { "Reconciled" } else { &ready_reason },
                    if ready { String::new() } else { ready_message },
                );
                set(conditions::STALLED, false, "NotStalled", String::new());
            }
        }
        let status = AuthorizationServerStatus {
            observed_generation: generation,
            conditions: conds,
            issuer: Some(server.spec.issuer.clone()),
            endpoints: Some(Endpoints::for_issuer(&server.spec.issuer)),
            replicas: Some(server.spec.workload.replicas),
            ready_replicas: Some(workload.ready_replicas),
            signing: Some(signing.status.clone()),
        };
        // Requeue at the exact moment the next key change (or the end of a client secret's
        // overlap) is due; an hourly resync at most otherwise.
        let overlap_ends = secrets_change_at.map(|t| t.duration_since(now).unsigned_abs());
        let requeue = [signing.next_due, overlap_ends, Some(RESYNC)].into_iter().flatten().min().unwrap_or_default();
        Report { status, requeue: requeue.max(MIN_REQUEUE) }
    }
}

/// What a deleted server's dependents report: each waits for it to return.
pub fn deleted(server: &AuthorizationServer, deps: &Dependents) -> Refusals {
    let ns = server.namespace().unwrap_or_default();
    let gone = |k: &str| {
        Acceptance::rejected(
            SERVER_NOT_FOUND,
            format!(
                "AuthorizationServer {ns}/{} was deleted; this {k} takes effect when it returns",
                server.name_any()
            ),
        )
    };
    let mut refused = Refusals::new();
    let mut refuse = |kind: &'static str, meta: &kube::api::ObjectMeta| {
        refused.insert(refusal_key(kind, meta), gone(kind));
    };
    deps.scopes.iter().for_each(|s| refuse(AuthScope::KIND, s.meta()));
    deps.claims.iter().for_each(|c| refuse(AuthClaim::KIND, c.meta()));
    deps.policies.iter().for_each(|p| refuse(AccessPolicy::KIND, p.meta()));
    deps.clients.iter().for_each(|c| refuse(AuthClient::KIND, c.meta()));
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientInput, IdentitySecrets};

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_norway::from_str(s).unwrap()
    }

    fn server(extra: &str) -> AuthorizationServer {
        yaml(&format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: AuthorizationServer\nmetadata: {{ name: payments, namespace: identity, generation: 1 }}\nspec: {{ issuer: 'https://auth.example.com/payments', audiences: [api://payments]{extra} }}\n"
        ))
    }

    fn client(name: &str, namespace: &str, client_id: &str) -> AuthClient {
        yaml(&format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: AuthClient\nmetadata: {{ name: {name}, namespace: {namespace} }}\nspec: {{ serverRef: {{ name: payments, namespace: identity }}, clientId: {client_id}, grantTypes: [client_credentials] }}\n"
        ))
    }

    fn input(server: &AuthorizationServer, clients: &[&AuthClient]) -> CompileInput {
        CompileInput {
            server: server.clone(),
            scopes: vec![],
            claims: vec![],
            policies: vec![],
            clients: clients.iter().map(|c| ClientInput { client: (*c).clone(), secret_hashes: vec![] }).collect(),
            identity_secrets: IdentitySecrets::default(),
            namespace_labels: NamespaceLabels::new(),
        }
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn available(replicas: i32) -> Memo {
        Memo::Workload { current: true, available: replicas, updated: replicas, ready_replicas: replicas }
    }

    fn condition<'a>(status: &'a AuthorizationServerStatus, type_: &str) -> &'a conditions::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    /// The reconcile of `server` at `now` from `current` keys: the plan, the keys after it, the report.
    fn reconcile(
        server: &AuthorizationServer,
        current: &KeySet,
        deployment: &Memo,
        now: jiff::Timestamp,
    ) -> (ServerPlan, KeyDecision, KeySet, Report) {
        let plan = decide(&input(server, &[]), Refusals::new()).unwrap();
        let decision = keys(server, &plan.signing, current, &BTreeMap::new(), now);
        let next = if decision.plan.is_empty() {
            current.clone()
        } else {
            decision.plan.apply(current, &plan.signing, now).unwrap()
        };
        let signing = signing(server, &plan.signing, &next, &decision.plan, now);
        let report = plan.report(server, &signing, deployment, None, now);
        (plan, decision, next, report)
    }

    #[test]
    fn a_new_server_gets_its_config_and_first_keys_and_waits_for_its_workload() {
        let s = server("");
        let (plan, decision, keys, report) = reconcile(&s, &KeySet::default(), &Memo::None, at(0));
        let config = plan.config_json.expect("a valid server's config is served");
        assert!(config.contains("https://auth.example.com/payments"));
        assert_eq!(decision.plan.reason, Some("Bootstrap"));
        assert!(decision.writes(&BTreeMap::new()));
        assert!(keys.signing_key(at(0)).is_some(), "a new server can sign at once");
        let status = &report.status;
        assert_eq!(condition(status, conditions::CONFIG_READY).status, "True");
        assert_eq!(condition(status, conditions::SIGNING_KEYS_READY).status, "True");
        assert_eq!(condition(status, conditions::WORKLOAD_READY).reason, "Progressing");
        let ready = condition(status, conditions::READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Progressing"));
        assert_eq!(condition(status, conditions::RECONCILING).status, "True");
        assert_eq!(status.signing.as_ref().unwrap().active_key_id, keys.signing_key(at(0)).map(|k| k.kid.clone()));
        assert_eq!(status.endpoints.as_ref().unwrap().token, "https://auth.example.com/payments/v1/token");
        assert!(report.requeue <= RESYNC);
    }

    #[test]
    fn an_update_keeps_transition_times_of_unchanged_conditions_and_reports_ready() {
        let s = server("");
        let (_, _, keys, first) = reconcile(&s, &KeySet::default(), &Memo::None, at(0));
        let mut updated = server("");
        updated.spec.audiences.push("api://orders".into());
        updated.metadata.generation = Some(2);
        updated.status = Some(first.status);
        let (_, decision, _, report) = reconcile(&updated, &keys, &available(1), at(60));
        assert!(!decision.writes(&BTreeMap::new()), "nothing about the keys changed");
        let status = &report.status;
        assert_eq!(status.observed_generation, Some(2));
        let config = condition(status, conditions::CONFIG_READY);
        assert_eq!(config.last_transition_time.0, at(0), "still True: its transition time stays");
        assert_eq!(config.observed_generation, Some(2));
        let ready = condition(status, conditions::READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Ready"));
        assert_eq!(ready.last_transition_time.0, at(60));
        assert_eq!(condition(status, conditions::RECONCILING).status, "False");
        assert_eq!(status.ready_replicas, Some(1));
    }

    #[test]
    fn a_key_change_is_due_exactly_when_the_requeue_says() {
        let s = server(", signing: { rotation: { period: 2h, prePublish: 30m } }");
        let (plan, decision, keys, report) = reconcile(&s, &KeySet::default(), &available(1), at(0));
        let due = signing(&s, &plan.signing, &keys, &decision.plan, at(0)).next_due.expect("a rotation is scheduled");
        assert_eq!(report.requeue, due.min(RESYNC), "requeued for the change, at most an hour ahead");
        let due = due.as_secs() as i64;
        let before = super::keys(&s, &plan.signing, &keys, &BTreeMap::new(), at(due - 1));
        assert!(before.plan.is_empty(), "nothing is due a second early");
        let after = super::keys(&s, &plan.signing, &keys, &BTreeMap::new(), at(due));
        assert!(!after.plan.is_empty() && after.plan.reason.is_some(), "due at {due}s");
        let rotated = after.plan.apply(&keys, &plan.signing, at(due)).unwrap();
        assert_ne!(rotated.signing_key(at(due)).map(|k| &k.kid), keys.signing_key(at(0)).map(|k| &k.kid));
    }

    #[test]
    fn a_rotation_asked_for_by_annotation_is_marked_handled_in_the_same_write() {
        let s = server("");
        let (plan, _, keys, _) = reconcile(&s, &KeySet::default(), &available(1), at(0));
        let mut asked = s.clone();
        asked.metadata.annotations = Some(BTreeMap::from([(crate::api::ROTATE_REVOKE_ANNOTATION.into(), "1".into())]));
        let decision = super::keys(&asked, &plan.signing, &keys, &BTreeMap::new(), at(10));
        assert_eq!(decision.plan.reason, Some("EmergencyRotation"));
        assert_eq!(decision.handled.get("tessera.dev/rotate-revoke-handled").map(String::as_str), Some("1"));
        let next = decision.plan.apply(&keys, &plan.signing, at(10)).unwrap();
        let (warning, reason, note) = key_event(&decision.plan, &next, at(10)).unwrap();
        assert!(warning);
        assert_eq!(reason, "KeyRevoked");
        assert!(note.contains("removed it from the JWKS"));
    }

    #[test]
    fn dependents_outside_the_admitted_namespaces_or_squatting_an_id_are_refused() {
        let s = server("");
        let own = client("console", "identity", "console");
        let foreign = client("orders-api", "team-orders", "team-orders.orders-api");
        let squatter = client("fake", "identity", "team-orders.orders-api");
        let clients = [own.clone(), foreign.clone(), squatter];
        let (admitted, refused) = admit(&s, &clients, &NamespaceLabels::new());
        assert_eq!(admitted.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["console"]);
        let reason = |ns: &str, name: &str| refused[&("AuthClient", ns.to_owned(), name.to_owned())].reason.clone();
        assert_eq!(reason("team-orders", "orders-api"), "NamespaceNotAllowed");
        assert_eq!(reason("identity", "fake"), "ClientIdNotOwned");

        let all = server(", clientNamespaces: { from: All }");
        let (admitted, _) = admit(&all, &clients, &NamespaceLabels::new());
        assert_eq!(admitted.len(), 2, "from: All admits other namespaces' clients");
        let plan = decide(&input(&all, &[&own, &foreign]), refused).unwrap();
        assert_eq!(plan.refused.len(), 2, "admission's refusals are kept");
    }

    #[test]
    fn a_server_that_breaks_a_rule_keeps_its_last_config_and_says_why() {
        let mut s = server("");
        s.spec.audiences = vec!["api://payments".into(), "api://payments".into()];
        let plan = decide(&input(&s, &[]), Refusals::new()).unwrap();
        let error = plan.server_error.clone().expect("an invalid spec");
        assert!(plan.config_json.is_none(), "an invalid config is never served");
        let signing = Signing {
            ready: true,
            reason: "KeysPublished".into(),
            message: String::new(),
            status: SigningStatus::default(),
            next_due: None,
            active_age: None,
        };
        let report = plan.report(&s, &signing, &available(1), None, at(0));
        let ready = condition(&report.status, conditions::READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", error.reason));
        let stalled = condition(&report.status, conditions::STALLED);
        assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", error.reason));
        assert_eq!(stalled.message, error.message, "kstatus shows the reason's message");
        assert_eq!(condition(&report.status, conditions::RECONCILING).status, "False", "no progress without a change");
        assert_eq!(report.requeue, RESYNC);
    }

    #[test]
    fn a_server_waiting_for_a_secret_is_reconciling_not_stalled() {
        let s = server(", identity: { staticUsers: { secretName: people } }");
        let plan = decide(&input(&s, &[]), Refusals::new()).unwrap();
        let error = plan.server_error.clone().expect("the Secret does not exist");
        assert_eq!(error.reason, crate::config::IDENTITY_SECRET_NOT_FOUND);
        let signing = Signing {
            ready: true,
            reason: "KeysPublished".into(),
            message: String::new(),
            status: SigningStatus::default(),
            next_due: None,
            active_age: None,
        };
        let report = plan.report(&s, &signing, &available(1), None, at(0));
        let reconciling = condition(&report.status, conditions::RECONCILING);
        assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("True", error.reason));
        assert_eq!(reconciling.message, error.message);
        assert_eq!(condition(&report.status, conditions::STALLED).status, "False");
    }

    #[test]
    fn a_deleted_servers_dependents_wait_for_it_to_return() {
        let s = server("");
        let deps = Dependents {
            scopes: vec![yaml(
                "apiVersion: tessera.dev/v1alpha1\nkind: AuthScope\nmetadata: { name: read, namespace: identity }\nspec: { serverRef: { name: payments }, name: 'payments:read' }\n",
            )],
            clients: vec![client("orders-api", "team-orders", "team-orders.orders-api")],
            ..Default::default()
        };
        let refused = deleted(&s, &deps);
        assert_eq!(refused.len(), 2);
        for (key, a) in &refused {
            assert!(!a.accepted);
            assert_eq!(a.reason, "ServerNotFound", "{key:?}");
            assert!(a.message.contains("AuthorizationServer identity/payments was deleted"));
        }
    }
}

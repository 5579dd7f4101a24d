//! The AuthorizationServer reconcile: read its scopes, claims, policies and clients, compile
//! them into a `ServerConfig`, keep its keys, apply its issuer workload, report status.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Secret},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{Event as Finalizer, finalizer},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{info, instrument};

use super::{
    Context, Error, MANAGER,
    applied::{self, Key, KeysMemo, Memo},
    children, client_secrets, crash,
    dependents::Dependent,
    metrics::{KindLabel, ServerLabel},
    reports,
    status::{self, Acceptance},
};
use crate::{
    api::{
        AccessPolicy, AuthClaim, AuthClient, AuthScope, AuthorizationServer, AuthorizationServerStatus, Endpoints,
        KeyState, KeyStatus, NamespaceFrom, ROTATE_ANNOTATION, ROTATE_REVOKE_ANNOTATION, SigningStatus, conditions,
    },
    config::{
        ClientInput, CompileInput, IdentitySecrets, identity_secret_names,
        subjects::{client_id_refusal, namespace_admits, namespace_or_default},
    },
    keys::{self, KeySet, RotationRequest},
};

pub const FINALIZER: &str = "tessera.dev/cleanup";

pub fn error_policy(server: Arc<AuthorizationServer>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(server = %server.name_any(), namespace = ?server.namespace(), %error, "reconcile failed");
    ctx.metrics.errors.get_or_create(&KindLabel { kind: "AuthorizationServer".into() }).inc();
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
            Finalizer::Cleanup(server) => cleanup(&server, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.duration.get_or_create(&kind).observe(started.elapsed().as_secs_f64());
    result
}

/// Everything that points at one server.
struct Dependents {
    scopes: Vec<AuthScope>,
    claims: Vec<AuthClaim>,
    policies: Vec<AccessPolicy>,
    clients: Vec<AuthClient>,
}

/// The objects of `stores` that point at server `ns/name`.
async fn from_stores<K: Dependent>(
    stores: &[kube::runtime::reflector::Store<K>],
    ns: &str,
    name: &str,
) -> Result<Vec<K>, Error> {
    let mut out = Vec::new();
    for store in stores {
        store.wait_until_ready().await.map_err(|e| Error::Invalid(format!("{} cache: {e}", K::KIND)))?;
        out.extend(store.state().into_iter().filter(|o| o.belongs_to(ns, name)).map(|o| (*o).clone()));
    }
    // The API lists by name; keep that order (the compiled config does not depend on it).
    out.sort_by_key(|o| (o.namespace(), o.name_any()));
    Ok(out)
}

async fn read_dependents(server: &AuthorizationServer, ctx: &Context) -> Result<Dependents, Error> {
    read_dependents_of(ctx, &server.namespace().unwrap_or_default(), &server.name_any()).await
}

async fn read_dependents_of(ctx: &Context, ns: &str, name: &str) -> Result<Dependents, Error> {
    let (ns, name) = (ns.to_owned(), name.to_owned());
    if let Some(stores) = ctx.stores.get() {
        return Ok(Dependents {
            scopes: from_stores(&stores.scopes, &ns, &name).await?,
            claims: from_stores(&stores.claims, &ns, &name).await?,
            policies: from_stores(&stores.policies, &ns, &name).await?,
            clients: from_stores(&stores.clients, &ns, &name).await?,
        });
    }
    let lp = ListParams::default();
    let scopes = Api::<AuthScope>::namespaced(ctx.client.clone(), &ns).list(&lp).await?.items;
    let claims = Api::<AuthClaim>::namespaced(ctx.client.clone(), &ns).list(&lp).await?.items;
    let policies = Api::<AccessPolicy>::namespaced(ctx.client.clone(), &ns).list(&lp).await?.items;
    let mut clients = Vec::new();
    for api in ctx.apis::<AuthClient>() {
        clients.extend(
            api.list(&lp)
                .await?
                .items
                .into_iter()
                .filter(|c| c.server_namespace() == ns && c.spec.server_ref.name == name),
        );
    }
    Ok(Dependents {
        scopes: scopes.into_iter().filter(|s| s.spec.server_ref.name == name).collect(),
        claims: claims.into_iter().filter(|s| s.spec.server_ref.name == name).collect(),
        policies: policies.into_iter().filter(|s| s.spec.server_ref.name == name).collect(),
        clients,
    })
}

/// The Secrets `spec.identity` references that exist in the server's namespace; their values
/// go only into the config Secret.
async fn read_identity_secrets(server: &AuthorizationServer, ctx: &Context) -> Result<IdentitySecrets, Error> {
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
) -> Vec<kube::runtime::reflector::ObjectRef<AuthorizationServer>> {
    servers
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace) && identity_secret_names(s).contains(secret))
        .map(kube::runtime::reflector::ObjectRef::from_obj)
        .collect()
}

/// Why a client's namespace may not use this server, if it may not.
async fn namespace_refusal(
    server: &AuthorizationServer,
    client: &AuthClient,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let server_ns = namespace_or_default(server.metadata.namespace.as_deref());
    let client_ns = namespace_or_default(client.metadata.namespace.as_deref());
    let cn = &server.spec.client_namespaces;
    // Only a selector over other namespaces needs their labels.
    let labels = if cn.from == NamespaceFrom::Selector && client_ns != server_ns {
        let namespace = Api::<Namespace>::all(ctx.client.clone()).get_opt(client_ns).await?;
        Some(namespace.map(|n| n.labels().clone()).unwrap_or_default())
    } else {
        None
    };
    Ok((!namespace_admits(server, client_ns, labels.as_ref())).then(|| {
        format!(
            "namespace {client_ns} may not hold clients of AuthorizationServer {server_ns}/{}: its spec.clientNamespaces (from: {:?}) does not allow it",
            server.name_any(),
            cn.from
        )
    }))
}

/// Labels of the namespaces the clients live in (platform-asserted facts for policies and CEL).
async fn read_namespace_labels(
    clients: &[ClientInput],
    ctx: &Context,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, Error> {
    let mut out = BTreeMap::new();
    for c in clients {
        let ns = namespace_or_default(c.client.metadata.namespace.as_deref()).to_owned();
        if out.contains_key(&ns) {
            continue;
        }
        let labels = match Api::<Namespace>::all(ctx.client.clone()).get_opt(&ns).await {
            Ok(namespace) => namespace.map(|n| n.labels().clone()).unwrap_or_default(),
            // Not readable (RBAC): no labels, so no namespaceSelector matches it (fails closed).
            Err(kube::Error::Api(e)) if e.code == 403 => {
                tracing::warn!(namespace = %ns, "cannot read the namespace's labels; namespaceSelector policies skip its clients");
                BTreeMap::new()
            }
            Err(e) => return Err(e.into()),
        };
        out.insert(ns, labels);
    }
    Ok(out)
}

async fn apply(server: &AuthorizationServer, ctx: &Context) -> Result<Action, Error> {
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let generation = server.metadata.generation;
    let now = jiff::Timestamp::now();

    // read
    let deps = read_dependents(server, ctx).await?;

    // validate: namespaces, then client secrets for the clients that may exist
    let mut acceptance: BTreeMap<(&'static str, String, String), Acceptance> = BTreeMap::new();
    let mut client_inputs = Vec::new();
    let mut secrets_change_at: Option<jiff::Timestamp> = None;
    for client in &deps.clients {
        let key = ("AuthClient", client.namespace().unwrap_or_default(), client.name_any());
        if let Some(why) = namespace_refusal(server, client, ctx).await? {
            acceptance.insert(key, Acceptance::rejected("NamespaceNotAllowed", why));
            continue;
        }
        // Checked again by compile; here so that a squatter never gets a credentials Secret.
        let client_ns = namespace_or_default(client.metadata.namespace.as_deref());
        let server_ns = namespace_or_default(server.metadata.namespace.as_deref());
        if let Some((reason, why)) = client_id_refusal(&client.client_id(), client_ns, server_ns) {
            acceptance.insert(key, Acceptance::rejected(reason, why));
            continue;
        }
        let secret_hashes = if client.spec.authentication.method.uses_secret() {
            let secrets = client_secrets::ensure(ctx, server, client).await?;
            if let Some(t) = secrets.changes_at {
                secrets_change_at = Some(secrets_change_at.map_or(t, |c| c.min(t)));
            }
            secrets.hashes
        } else {
            Vec::new()
        };
        client_inputs.push(ClientInput { client: client.clone(), secret_hashes });
    }
    let input = CompileInput {
        namespace_labels: read_namespace_labels(&client_inputs, ctx).await?,
        server: server.clone(),
        scopes: deps.scopes.clone(),
        claims: deps.claims.clone(),
        policies: deps.policies.clone(),
        clients: client_inputs,
        identity_secrets: read_identity_secrets(server, ctx).await?,
    };
    let compiled = crate::config::compile(&input);
    if let Some(e) = &compiled.server_error {
        tracing::warn!(reason = e.reason, "{}; the issuer keeps its last good config", e.message);
    }
    for r in &compiled.rejected {
        acceptance
            .insert((r.kind, r.namespace.clone(), r.name.clone()), Acceptance::rejected(&r.reason, r.message.clone()));
    }
    let config_json = compiled.config.to_json().map_err(|source| Error::Serialize { what: "ServerConfig", source })?;

    // keys: the operator is their only writer
    let keys_outcome = ensure_keys(server, &compiled.config.signing, ctx, now, true).await?;

    // build + apply: the config first (what the issuer serves), then its workload
    // A config that breaks a rule or lacks the sign-in it asks for is never served: the last good one stays.
    if compiled.server_error.is_none() {
        apply_object(ctx, &ns, children::config_secret(server, config_json), no_memo).await?;
    }
    let crash_point = |name| {
        if keys_outcome.changed {
            crash::point(name)
        }
    };
    crash_point(crash::AFTER_CONFIG_APPLY);
    apply_object(ctx, &ns, children::service_account(server), no_memo).await?;
    apply_object(ctx, &ns, children::role(server), no_memo).await?;
    apply_object(ctx, &ns, children::role_binding(server), no_memo).await?;
    let deployment = apply_object(ctx, &ns, children::deployment(server, &ctx.build), deployment_memo).await?;
    crash_point(crash::AFTER_WORKLOAD_APPLY);
    apply_object(ctx, &ns, children::service(server), no_memo).await?;
    match children::pod_disruption_budget(server) {
        Some(pdb) => {
            apply_object(ctx, &ns, pdb, no_memo).await?;
        }
        // At generation 1 the server never asked for more replicas: no budget of ours exists.
        None if generation == Some(1) => {}
        None => delete_if_present::<PodDisruptionBudget>(ctx, &ns, &children::issuer_name(&name)).await?,
    }

    // report: the dependents' statuses are queued, the server's is written
    report_dependents(ctx, server, &deps, &acceptance);
    let workload = workload_state(server, &deployment);
    let rejected = compiled.rejected.len();
    let config_message = if rejected == 0 {
        format!(
            "{} scopes, {} claims, {} policies, {} clients",
            compiled.config.scopes.len(),
            compiled.config.claims.len(),
            compiled.config.policies.len(),
            compiled.config.clients.len()
        )
    } else {
        format!("compiled; {rejected} resource(s) not accepted: see their Accepted condition")
    };
    let mut conds = server.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let set = |list: &mut Vec<conditions::Condition>, t: &str, ok: bool, reason: &str, msg: String| {
        conditions::set(list, conditions::new(t, ok, reason, msg, generation, now));
    };
    let config_ready = compiled.server_error.is_none();
    match &compiled.server_error {
        None => set(&mut conds, conditions::CONFIG_READY, true, "Compiled", config_message),
        Some(e) => set(&mut conds, conditions::CONFIG_READY, false, e.reason, e.message.clone()),
    }
    set(
        &mut conds,
        conditions::SIGNING_KEYS_READY,
        keys_outcome.ready,
        &keys_outcome.reason,
        keys_outcome.message.clone(),
    );
    set(&mut conds, conditions::WORKLOAD_READY, workload.ready, &workload.reason, workload.message.clone());
    let ready = config_ready && workload.ready && keys_outcome.ready;
    let (ready_reason, ready_message) = if ready {
        ("Ready".to_owned(), format!("issuer {} is serving", server.spec.issuer))
    } else if let Some(e) = &compiled.server_error {
        (e.reason.to_owned(), e.message.clone())
    } else if !keys_outcome.ready {
        (keys_outcome.reason.clone(), keys_outcome.message.clone())
    } else {
        (workload.reason.clone(), workload.message.clone())
    };
    set(&mut conds, conditions::READY, ready, &ready_reason, ready_message.clone());
    set(
        &mut conds,
        conditions::RECONCILING,
        !ready,
        if ready { "Reconciled" } else { &ready_reason },
        if ready { String::new() } else { ready_message },
    );
    set(&mut conds, conditions::STALLED, false, "NotStalled", String::new());

    let desired = AuthorizationServerStatus {
        observed_generation: generation,
        conditions: conds,
        issuer: Some(server.spec.issuer.clone()),
        endpoints: Some(Endpoints::for_issuer(&server.spec.issuer)),
        replicas: Some(server.spec.workload.replicas),
        ready_replicas: Some(workload.ready_replicas),
        signing: Some(keys_outcome.status.clone()),
    };
    crash_point(crash::BEFORE_STATUS_WRITE);
    write_server_status(ctx, server, desired).await?;

    let labels = ServerLabel { namespace: ns.clone(), server: name.clone() };
    if let Some(age) = keys_outcome.active_age {
        ctx.metrics.active_key_age.get_or_create(&labels).set(age.as_secs_f64());
    }
    // Requeue at the exact moment the next key change (or the end of a client secret's overlap)
    // is due; an hourly resync at most otherwise.
    let overlap_ends = secrets_change_at.map(|t| t.duration_since(now).unsigned_abs());
    let requeue = [keys_outcome.next_due, overlap_ends, Some(Duration::from_secs(3600))]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_default();
    if let Some(d) = keys_outcome.next_due {
        ctx.metrics.next_rotation_in.get_or_create(&labels).set(d.as_secs_f64());
    }
    Ok(Action::requeue(requeue.max(Duration::from_millis(200))))
}

/// Queues what the reconcile decided about each dependent (written after the configs:
/// `reports`).
fn report_dependents(
    ctx: &Context,
    server: &AuthorizationServer,
    deps: &Dependents,
    acceptance: &BTreeMap<(&'static str, String, String), Acceptance>,
) {
    let mut report = reports::Report {
        namespace: server.namespace().unwrap_or_default(),
        server: server.name_any(),
        decided: HashMap::new(),
        refused: HashMap::new(),
    };
    let mut up_to_date = true;
    let mut decide = |kind: &'static str, target: status::Target, extra: serde_json::Map<String, serde_json::Value>| {
        let key = target.key(kind);
        let a = acceptance.get(&(kind, target.namespace.clone(), target.name.clone()));
        let shown = a.cloned().unwrap_or_else(Acceptance::by_server);
        up_to_date &= status::holds(ctx, kind, &target, &shown, &extra);
        report.decided.insert(key, target.generation);
        if let Some(a) = a {
            report.refused.insert(key, a.clone());
        }
    };
    for s in &deps.scopes {
        decide(AuthScope::KIND, status::Target::of(s), serde_json::Map::new());
    }
    for c in &deps.claims {
        decide(AuthClaim::KIND, status::Target::of(c), serde_json::Map::new());
    }
    for p in &deps.policies {
        decide(AccessPolicy::KIND, status::Target::of(p), serde_json::Map::new());
    }
    for c in &deps.clients {
        let target = status::Target::of(c);
        let accepted = !acceptance.contains_key(&(AuthClient::KIND, target.namespace.clone(), target.name.clone()));
        decide(AuthClient::KIND, target, client_status_fields(c, accepted));
    }
    ctx.reports.queue(report, up_to_date);
}

/// What a client's status shows besides its conditions.
fn client_status_fields(client: &AuthClient, accepted: bool) -> serde_json::Map<String, serde_json::Value> {
    let mut extra = serde_json::Map::new();
    extra.insert("clientId".into(), json!(client.client_id()));
    if client.spec.authentication.method.uses_secret() && accepted {
        extra.insert("secretName".into(), json!(client.secret_name()));
    }
    extra
}

/// Writes what `report` decided to the dependents of its server that are still as it saw
/// them (from the operator's caches).
pub(super) async fn write_reports(ctx: &Context, report: &reports::Report) -> Result<(), Error> {
    async fn write_each<K: Dependent>(
        ctx: &Context,
        report: &reports::Report,
        items: &[K],
        extra: impl Fn(&K, bool) -> serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        for item in items {
            let target = status::Target::of(item);
            let Some(acceptance) = report.acceptance(target.key(K::KIND), target.generation) else { continue };
            let fields = extra(item, acceptance.accepted);
            match status::write_dependent::<K>(ctx, &target, &acceptance, fields).await {
                // Deleted since: nothing to report on.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                other => other?,
            }
        }
        Ok(())
    }
    let deps = read_dependents_of(ctx, &report.namespace, &report.server).await?;
    fn none<K>(_: &K, _: bool) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    write_each(ctx, report, &deps.scopes, none).await?;
    write_each(ctx, report, &deps.claims, none).await?;
    write_each(ctx, report, &deps.policies, none).await?;
    write_each(ctx, report, &deps.clients, client_status_fields).await
}

struct WorkloadState {
    ready: bool,
    ready_replicas: i32,
    reason: String,
    message: String,
}

/// What the server's status needs of its Deployment, as the apply returned it.
fn deployment_memo(deployment: &Deployment) -> Memo {
    let status = deployment.status.clone().unwrap_or_default();
    Memo::Workload {
        current: status.observed_generation >= deployment.metadata.generation,
        available: status.available_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
    }
}

fn workload_state(server: &AuthorizationServer, deployment: &Memo) -> WorkloadState {
    let want = server.spec.workload.replicas;
    let (current, available, updated, ready_replicas) = match *deployment {
        Memo::Workload { current, available, updated, ready_replicas } => (current, available, updated, ready_replicas),
        _ => (false, 0, 0, 0),
    };
    let ready = current && available >= want && updated >= want;
    WorkloadState {
        ready,
        ready_replicas,
        reason: if ready { "Available".into() } else { "Progressing".into() },
        message: format!("{available}/{want} issuer replicas available"),
    }
}

/// Server-side apply of one child, unless what we applied last is identical and nobody changed
/// it since (`Applied`); returns what `memo` keeps of the object as the API server holds it.
async fn apply_object<K>(ctx: &Context, ns: &str, obj: K, memo: impl FnOnce(&K) -> Memo) -> Result<Memo, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut patch = serde_json::to_value(&obj).map_err(|source| Error::Serialize { what: "child object", source })?;
    patch["apiVersion"] = json!(<K as k8s_openapi::Resource>::API_VERSION);
    patch["kind"] = json!(<K as k8s_openapi::Resource>::KIND);
    let key = Key::new(<K as k8s_openapi::Resource>::KIND, ns, &name);
    let digest = applied::digest(&patch);
    if let Some(memo) = ctx.applied.unchanged(&key, digest, Instant::now()) {
        return Ok(memo);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    // Only its status moved since our write (the Deployment controller's progress): a read is
    // all the reconcile needs, unless the object read shows more than that changed.
    if let Some(spec) = ctx.applied.status_moved(&key, digest, Instant::now()) {
        match api.get_opt(&name).await {
            Ok(Some(current)) if applied::spec_fingerprint(current.meta()) == spec => {
                let memo = memo(&current);
                let version = current.meta().resource_version.as_deref();
                ctx.applied.record(key, digest, version, spec, memo.clone(), Instant::now());
                return Ok(memo);
            }
            Ok(_) => ctx.applied.forget(&key),
            Err(e) => {
                ctx.applied.forget(&key);
                return Err(e.into());
            }
        }
    }
    let after = match api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(after) => after,
        Err(e) => {
            ctx.applied.forget(&key);
            return Err(e.into());
        }
    };
    let memo = memo(&after);
    // An unchanged apply is a no-op that keeps the resourceVersion: count only real writes.
    let (version, spec) = (after.meta().resource_version.as_deref(), applied::spec_fingerprint(after.meta()));
    if ctx.applied.record(key, digest, version, spec, memo.clone(), Instant::now()) {
        ctx.metrics.write(<K as k8s_openapi::Resource>::KIND, "apply");
    }
    Ok(memo)
}

fn no_memo<K>(_: &K) -> Memo {
    Memo::None
}

/// Marks "known to be absent" in `Applied` (no object has this digest).
const ABSENT: u64 = u64::MAX;

async fn delete_if_present<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let key = Key::new(<K as k8s_openapi::Resource>::KIND, ns, name);
    if ctx.applied.unchanged(&key, ABSENT, Instant::now()).is_some() {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    if api.get_opt(name).await?.is_some() {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => ctx.metrics.write(<K as k8s_openapi::Resource>::KIND, "delete"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.applied.record(key, ABSENT, None, 0, Memo::None, Instant::now());
    Ok(())
}

async fn write_server_status(
    ctx: &Context,
    server: &AuthorizationServer,
    desired: AuthorizationServerStatus,
) -> Result<(), Error> {
    let current = server.status.clone().unwrap_or_default();
    let same = !conditions::differ_beyond_timestamps(&current.conditions, &desired.conditions)
        && AuthorizationServerStatus { conditions: vec![], ..current.clone() }
            == AuthorizationServerStatus { conditions: vec![], ..desired.clone() };
    if same {
        return Ok(());
    }
    let api: Api<AuthorizationServer> = Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let patch = json!({ "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthorizationServer", "status": desired });
    api.patch_status(&server.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.metrics.write("AuthorizationServer", "patch-status");
    let was_ready = current.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True");
    let is_ready = desired.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True");
    if was_ready != is_ready {
        let (type_, reason, note) = if is_ready {
            (EventType::Normal, "Ready", format!("issuer {} is serving", server.spec.issuer))
        } else {
            (EventType::Warning, "NotReady", "the issuer is not serving yet".to_owned())
        };
        publish(ctx, server, type_, reason, note).await;
    }
    Ok(())
}

pub(super) async fn publish(ctx: &Context, server: &AuthorizationServer, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
    // A recorder per event: kube's keeps every event it sent for 6 minutes (to count repeats),
    // ~1,000 events at 1,000 servers; ours are transitions, rarely repeated.
    let recorder = Recorder::new(ctx.client.clone(), Reporter { controller: MANAGER.into(), instance: None });
    if let Err(e) = recorder.publish(&event, &server.object_ref(&())).await {
        tracing::debug!(error = %e, "could not publish event");
    } else {
        ctx.metrics.write("Event", "create");
    }
}

/// Keys of the server, created when missing; what status should say about them.
struct KeysOutcome {
    /// The key set was written in this reconcile.
    changed: bool,
    ready: bool,
    reason: String,
    message: String,
    status: SigningStatus,
    next_due: Option<Duration>,
    active_age: Option<Duration>,
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

/// The rotation a person asked for through the server's annotations and that is not handled yet.
fn rotation_request(
    server: &AuthorizationServer,
    handled: &BTreeMap<String, String>,
) -> (RotationRequest, BTreeMap<String, String>) {
    let asked = server.annotations();
    let mut now_handled = handled.clone();
    let mut request = RotationRequest::None;
    for (annotation, kind) in
        [(ROTATE_ANNOTATION, RotationRequest::Rotate), (ROTATE_REVOKE_ANNOTATION, RotationRequest::Revoke)]
    {
        let marker = format!("{annotation}-handled");
        if let Some(value) = asked.get(annotation)
            && handled.get(&marker) != Some(value)
        {
            now_handled.insert(marker, value.clone());
            if request != RotationRequest::Revoke {
                request = kind;
            }
        }
    }
    (request, now_handled)
}

/// The keys Secret is written with create/replace, not applied: its entry has no digest.
const KEYS_DIGEST: u64 = 0;

/// With `trust_absent`, a keys Secret the watches know to be absent is created without a read.
async fn ensure_keys(
    server: &AuthorizationServer,
    settings: &crate::keys::RotationSettings,
    ctx: &Context,
    now: jiff::Timestamp,
    trust_absent: bool,
) -> Result<KeysOutcome, Error> {
    let ns = server.namespace().unwrap_or_default();
    let secret_name = children::keys_secret_name(&server.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    // The key set as we last wrote or read it, while the watch has not seen anyone change it.
    let key = Key::new("Secret", &ns, &secret_name);
    let remembered = ctx.applied.unchanged(&key, KEYS_DIGEST, Instant::now());
    let schedule_only = matches!(remembered, Some(Memo::Keys(_)));
    let guessed = !schedule_only && trust_absent && ctx.existing.absent(&key);
    let (current, handled, existing_version) = match remembered {
        Some(Memo::Keys(memo)) => (memo.keys, memo.handled, memo.resource_version),
        // Known absent (a new server): created below.
        _ if guessed => (KeySet::default(), BTreeMap::new(), None),
        _ => match api.get_opt(&secret_name).await? {
            None => (KeySet::default(), BTreeMap::new(), None),
            Some(existing) => {
                let current = match existing.data.as_ref().and_then(|d| d.get(children::KEYS_KEY)) {
                    Some(bytes) => KeySet::from_json(&bytes.0).map_err(|e| {
                        Error::Invalid(format!("Secret {ns}/{secret_name} does not hold a valid key set: {e}"))
                    })?,
                    None => KeySet::default(),
                };
                let handled = existing.annotations().clone();
                let version = existing.metadata.resource_version.clone();
                let memo = KeysMemo {
                    keys: current.schedule_only(),
                    handled: handled.clone(),
                    resource_version: version.clone(),
                };
                ctx.applied.record(key, KEYS_DIGEST, version.as_deref(), 0, Memo::Keys(Box::new(memo)), Instant::now());
                (current, handled, version)
            }
        },
    };
    let (request, mut now_handled) = rotation_request(server, &handled);
    let plan = keys::plan_with(settings, &current, now, request);
    if plan.request_pending {
        // Not handled yet: the Next key is not in every verifier's cache; we come back when it is.
        now_handled = handled.clone();
    }
    let mut changed = false;
    let keys = if plan.is_empty() && now_handled == handled {
        current
    } else if schedule_only {
        // What we keep has no key material, and a write carries every key: read them first.
        ctx.applied.forget(&key);
        return Box::pin(ensure_keys(server, settings, ctx, now, trust_absent)).await;
    } else {
        let next = if plan.is_empty() {
            current
        } else {
            plan.apply(&current, settings, now).map_err(|e| Error::Invalid(e.to_string()))?
        };
        let json = next.to_json().map_err(|e| Error::Invalid(e.to_string()))?;
        let mut secret = children::keys_secret(server, json.into_bytes(), now_handled.clone());
        crash::point(crash::BEFORE_KEYS_WRITE);
        let params = kube::api::PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        // The new key is written before anyone's state changes, with a precondition on the
        // version we read: a concurrent or restarted operator fails here instead of duplicating.
        // A failed write forgets the cached copy, so that the retry reads the Secret again.
        let written = match &existing_version {
            None => api.create(&params, &secret).await.map(|s| (s, "create")),
            Some(version) => {
                secret.metadata.resource_version = Some(version.clone());
                api.replace(&secret_name, &params, &secret).await.map(|s| (s, "replace"))
            }
        };
        let (written, verb) = match written {
            // It exists after all (created meanwhile, or without our label): read it, plan again.
            Err(kube::Error::Api(e)) if e.code == 409 && guessed => {
                return Box::pin(ensure_keys(server, settings, ctx, now, false)).await;
            }
            other => other.inspect_err(|_| ctx.applied.forget(&key))?,
        };
        ctx.metrics.write("Secret", verb);
        let version = written.metadata.resource_version.clone();
        let memo = KeysMemo { keys: next.schedule_only(), handled: now_handled, resource_version: version.clone() };
        ctx.applied.record(key, KEYS_DIGEST, version.as_deref(), 0, Memo::Keys(Box::new(memo)), Instant::now());
        crash::point(crash::AFTER_KEYS_WRITE);
        if let Some(reason) = plan.reason {
            let active = next.signing_key(now).map(|k| k.kid.clone()).unwrap_or_default();
            info!(reason, active_key = %active, "signing keys changed");
            let (type_, event_reason) = if plan.revoked.is_empty() {
                (EventType::Normal, "KeyRotated")
            } else {
                (EventType::Warning, "KeyRevoked")
            };
            let note = if plan.revoked.is_empty() {
                format!("{reason}: {active} signs; {} key(s) published", next.published(now).count())
            } else {
                format!("{reason}: revoked {} and removed it from the JWKS; {active} signs", plan.revoked.join(", "))
            };
            publish(ctx, server, type_, event_reason, note).await;
            crash::point(crash::AFTER_KEYS_EVENT);
        }
        changed = true;
        next
    };
    let status = signing_status(&keys, now);
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
    Ok(KeysOutcome {
        changed,
        ready,
        reason: if ready { "KeysPublished".into() } else { "NoActiveKey".into() },
        message,
        active_age: active.map(|k| now.duration_since(k.activates_at).unsigned_abs()),
        next_due: plan.next_due.map(|t| t.duration_since(now).unsigned_abs()),
        status,
    })
}

async fn cleanup(server: &AuthorizationServer, ctx: &Context) -> Result<Action, Error> {
    // Children in the server's namespace go with their owner (garbage collection); client
    // Secrets may live elsewhere, where owner references cannot reach.
    client_secrets::delete_all(ctx, server).await?;
    // Entries of its children go with them (the watch sees them collected, or they expire).
    let deps = read_dependents(server, ctx).await?;
    let ns = server.namespace().unwrap_or_default();
    let gone = |k: &str| {
        Acceptance::rejected(
            "ServerNotFound",
            format!(
                "AuthorizationServer {ns}/{} was deleted; this {k} takes effect when it returns",
                server.name_any()
            ),
        )
    };
    // Through the report queue, so that no report of the server queued earlier lands after it.
    let mut acceptance = BTreeMap::new();
    let mut refuse = |kind: &'static str, meta: &kube::api::ObjectMeta| {
        let key = (kind, meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default());
        acceptance.insert(key, gone(kind));
    };
    deps.scopes.iter().for_each(|s| refuse(AuthScope::KIND, s.meta()));
    deps.claims.iter().for_each(|c| refuse(AuthClaim::KIND, c.meta()));
    deps.policies.iter().for_each(|p| refuse(AccessPolicy::KIND, p.meta()));
    deps.clients.iter().for_each(|c| refuse(AuthClient::KIND, c.meta()));
    report_dependents(ctx, server, &deps, &acceptance);
    publish(
        ctx,
        server,
        EventType::Normal,
        "Deleted",
        "client Secrets removed; the workload goes with its owner".into(),
    )
    .await;
    Ok(Action::await_change())
}

//! Control-plane benchmark for `benches/run control-plane`: the release `tessera operator`
//! as a process against kube-testenv (etcd + kube-apiserver + kube-controller-manager, no
//! kubelet: issuer pods stay Pending, which is fine, we measure rendering, not pods).
//!
//! 1. Ramps AuthorizationServers 1 → 100 → 1,000 (each with 5 AuthScopes, 3 AuthClaims,
//!    2 AccessPolicies and 5 ClientSecretBasic AuthClients, server-side applied), waits until
//!    every `<server>-config` Secret holds all of them, lets the operator go quiet, and samples
//!    its VmRSS/VmHWM (`/proc/PID/status`) and CPU time at each plateau.
//! 2. At each plateau, against a running `tessera issuer` process for the first server:
//!    AuthScope change → discovery latency (toggles one scope's `discoverable`, polls
//!    `/.well-known/openid-configuration`), and key Secret update → JWKS latency (annotates
//!    the server `tessera.dev/rotate-revoke`, the one rotation that publishes a new key at
//!    once; polls `/v1/keys` for the new kid). Both time from just before the API request.
//!
//! Prints one JSON document on stdout, progress on stderr. Run with no arguments (for example
//! by `cargo test --all-targets`), it prints its usage and does nothing.

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tessera::api::{AuthScope, AuthorizationServer};

const USAGE: &str = "usage: control_plane --tessera PATH --kube-testenv PATH --work-dir DIR \
[--servers 1,100,1000] [--per-namespace 100] [--scope-changes 50] [--rotations 20] [--concurrency 32]";

struct Options {
    tessera: PathBuf,
    kube_testenv: PathBuf,
    work_dir: PathBuf,
    levels: Vec<usize>,
    per_namespace: usize,
    scope_changes: usize,
    rotations: usize,
    concurrency: usize,
}

fn parse_args() -> Result<Option<Options>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!("{USAGE}");
        return Ok(None);
    }
    let mut o = Options {
        tessera: PathBuf::new(),
        kube_testenv: PathBuf::new(),
        work_dir: PathBuf::new(),
        levels: vec![1, 100, 1000],
        per_namespace: 100,
        scope_changes: 50,
        rotations: 20,
        concurrency: 32,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--tessera" => o.tessera = value.into(),
            "--kube-testenv" => o.kube_testenv = value.into(),
            "--work-dir" => o.work_dir = value.into(),
            "--servers" => o.levels = value.split(',').map(num).collect::<Result<_, _>>()?,
            "--per-namespace" => o.per_namespace = num(&value)?.max(1),
            "--scope-changes" => o.scope_changes = num(&value)?,
            "--rotations" => o.rotations = num(&value)?,
            "--concurrency" => o.concurrency = num(&value)?.max(1),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if o.tessera.as_os_str().is_empty() || o.kube_testenv.as_os_str().is_empty() || o.work_dir.as_os_str().is_empty() {
        return Err(USAGE.into());
    }
    Ok(Some(o))
}

fn say(msg: impl AsRef<str>) {
    eprintln!("control-plane: {}", msg.as_ref());
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time all threads of `pid` have had, in seconds (schedstat).
fn cpu_secs(pid: u32) -> f64 {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The Go GC target of kube-testenv (`BENCH_CP_GOGC`, default 400). Here the API server shares
/// two cores with the operator and this client, and at Go's default of 100 a CPU profile of it
/// during the 1,000-server apply had over a third of its time in the garbage collector: 400
/// trades its memory (~2 → ~4–5 GiB) for that CPU, as a control plane on cores of its own would
/// not need to.
fn testenv_gogc() -> String {
    std::env::var("BENCH_CP_GOGC").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "400".into())
}

fn start_kube_testenv(o: &Options) -> anyhow::Result<(Proc, PathBuf)> {
    let data = o.work_dir.join("kube-testenv");
    std::fs::create_dir_all(&data)?;
    let mut child = Command::new(&o.kube_testenv)
        .env("GOGC", testenv_gogc())
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(data.join("stderr.log"))?))
        .spawn()?;
    let stdin = child.stdin.take();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let proc = Proc { child, _stdin: stdin };
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("READY ") => {
                let kubeconfig = PathBuf::from(line.split_whitespace().nth(1).unwrap_or_default());
                return Ok((proc, kubeconfig));
            }
            Some(Ok(_)) => continue,
            _ => anyhow::bail!("kube-testenv exited before it was ready; see {}/stderr.log", data.display()),
        }
    }
}

async fn client_for(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// `tessera crds`, applied, each waited for until Established.
async fn install_crds(client: &Client, tessera: &Path) -> anyhow::Result<()> {
    let out = Command::new(tessera).arg("crds").output()?;
    anyhow::ensure!(out.status.success(), "tessera crds failed");
    let text = String::from_utf8(out.stdout)?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for de in serde_norway::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(de)?;
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&crd)).await?;
        names.push(name);
    }
    for name in names {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let crd = api.get(&name).await?;
            let conds = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            if conds.iter().any(|c| c.type_ == "Established" && c.status == "True") {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "CRD {name} not Established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn namespace_of(i: usize, per_ns: usize) -> String {
    format!("bench-{}", i / per_ns)
}

fn server_name(i: usize) -> String {
    format!("s{i:04}")
}

/// The 16 documents of server `i`: the server, 5 scopes, 3 claims, 2 policies, 5 clients.
fn server_docs(i: usize, per_ns: usize, issuer_port: u16) -> Vec<Value> {
    let ns = namespace_of(i, per_ns);
    let s = server_name(i);
    let meta = |name: String| json!({ "name": name, "namespace": ns });
    let sref = json!({ "name": s });
    let mut docs = vec![json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthorizationServer", "metadata": meta(s.clone()),
        "spec": {
            "issuer": format!("http://127.0.0.1:{issuer_port}/oauth2/{s}"),
            "audiences": [format!("api://{s}")],
            "description": format!("bench server {i}"),
            "signing": { "algorithm": "ES256" },
            "trustedOrigins": ["http://localhost:3000"],
        }
    })];
    for k in 0..5 {
        docs.push(json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthScope", "metadata": meta(format!("{s}-scope{k}")),
            "spec": { "serverRef": sref, "name": format!("{s}:scope{k}"), "description": format!("scope {k}"),
                      "default": k == 0, "discoverable": true }
        }));
    }
    let claims = [
        ("tenant", "has(client.metadata.tenant) ? client.metadata.tenant : null"),
        ("k8s_namespace", "client.namespace"),
        ("team", "'payments'"),
    ];
    for (k, (name, value)) in claims.iter().enumerate() {
        docs.push(json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthClaim", "metadata": meta(format!("{s}-claim{k}")),
            "spec": { "serverRef": sref, "name": name, "token": "AccessToken", "value": value }
        }));
    }
    docs.push(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AccessPolicy", "metadata": meta(format!("{s}-machines")),
        "spec": { "serverRef": sref, "priority": 1, "clients": { "all": true }, "rules": [{
            "name": "m2m", "grantTypes": ["client_credentials"],
            "scopes": [format!("{s}:scope0"), format!("{s}:scope1")],
            "condition": "request.scopes.size() <= 3", "accessTokenLifetime": "1h" }] }
    }));
    docs.push(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "AccessPolicy", "metadata": meta(format!("{s}-admins")),
        "spec": { "serverRef": sref, "priority": 2, "clients": { "ids": [format!("{ns}.{s}-client0")] }, "rules": [{
            "name": "admin", "grantTypes": ["client_credentials"], "scopes": ["*"], "accessTokenLifetime": "15m" }] }
    }));
    for k in 0..5 {
        docs.push(json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthClient", "metadata": meta(format!("{s}-client{k}")),
            "spec": { "serverRef": sref, "grantTypes": ["client_credentials"],
                      "authentication": { "method": "ClientSecretBasic", "secretName": format!("{s}-client{k}-oauth") },
                      "metadata": { "tenant": "acme" } }
        }));
    }
    docs
}

fn api_resource(kind: &str) -> ApiResource {
    tessera::api::api_resource(kind).unwrap_or_else(|| panic!("unexpected kind {kind}"))
}

async fn apply_doc(client: &Client, doc: &Value) -> anyhow::Result<()> {
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
    let ar = api_resource(doc["kind"].as_str().unwrap_or_default());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(doc.clone())?;
    // A conflict with a concurrent status write is retried.
    for attempt in 0.. {
        match api.patch(&obj.name_any(), &PatchParams::apply("bench").force(), &Patch::Apply(&obj)).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 5 => {
                say(format!("apply {}: {e}; retrying", obj.name_any()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!()
}

/// When each server's config Secret first held all of its 5 scopes, 3 claims, 2 policies and
/// 5 clients, from a watch of the operator's Secrets.
type Rendered = Arc<Mutex<HashMap<String, Instant>>>;

fn complete(secret: &Secret) -> bool {
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get("config.json")) else { return false };
    let Ok(cfg) = serde_json::from_slice::<Value>(&bytes.0) else { return false };
    let name = secret.name_any();
    let server = name.trim_end_matches("-config");
    let prefix = format!("{server}:");
    let len = |k: &str| cfg[k].as_array().map_or(0, |a| a.len());
    let scopes = cfg["scopes"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with(&prefix))).count());
    scopes == 5 && len("claims") >= 3 && len("policies") == 2 && len("clients") == 5
}

fn watch_rendered(client: Client) -> Rendered {
    let rendered: Rendered = Arc::default();
    let out = rendered.clone();
    tokio::spawn(async move {
        let secrets: Api<Secret> = Api::all(client);
        let cfg = watcher::Config::default().labels("app.kubernetes.io/managed-by=tessera-operator");
        let mut stream = watcher(secrets, cfg).default_backoff().applied_objects().boxed();
        while let Some(item) = stream.next().await {
            let Ok(secret) = item else { continue };
            if !secret.name_any().ends_with("-config") {
                continue;
            }
            let key = format!("{}/{}", secret.namespace().unwrap_or_default(), secret.name_any());
            if complete(&secret) {
                out.lock().unwrap().entry(key).or_insert_with(Instant::now);
            }
        }
    });
    rendered
}

/// The reconciles of one kind so far (the counter of AuthorizationServers, say).
async fn reconciles_of(http: &reqwest::Client, metrics: &str, kind: &str) -> Option<f64> {
    let text = http.get(metrics).send().await.ok()?.text().await.ok()?;
    let prefix = format!("tessera_operator_reconciles_total{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok())
}

/// The reconciles of every kind so far, and the dependents' status reports not written yet.
async fn progress(http: &reqwest::Client, metrics: &str) -> Option<(f64, f64)> {
    let text = http.get(metrics).send().await.ok()?.text().await.ok()?;
    let sum = |prefix: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    Some((sum("tessera_operator_reconciles"), sum("tessera_operator_status_reports_pending")))
}

/// Waits until no reconcile ran for `quiet` and every status report is written; the reconcile
/// count then.
async fn settle(http: &reqwest::Client, metrics: &str, quiet: Duration, max: Duration) -> f64 {
    let deadline = Instant::now() + max;
    let mut last = progress(http, metrics).await.map_or(0.0, |p| p.0);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (now, pending) = progress(http, metrics).await.unwrap_or((last, 0.0));
        if now != last || pending > 0.0 {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut ms: Vec<f64>, timeouts: usize) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(), "timeouts": timeouts,
        "p50_ms": percentile(&ms, 50.0), "p99_ms": percentile(&ms, 99.0),
        "min_ms": ms.first().copied().unwrap_or(0.0), "max_ms": ms.last().copied().unwrap_or(0.0),
    })
}

/// Polls `url` (about every 2 ms) until `check` holds of its JSON; elapsed since `t0`.
async fn poll_until(
    http: &reqwest::Client,
    url: &str,
    t0: Instant,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Option<f64> {
    while t0.elapsed() < timeout {
        if let Ok(resp) = http.get(url).send().await
            && let Ok(v) = resp.json::<Value>().await
            && check(&v)
        {
            return Some(t0.elapsed().as_secs_f64() * 1e3);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

fn scopes_supported(doc: &Value) -> BTreeSet<String> {
    doc["scopes_supported"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

fn kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"].as_array().into_iter().flatten().filter_map(|k| k["kid"].as_str().map(str::to_owned)).collect()
}

/// AuthScope `discoverable` toggled `n` times → visible in the issuer's discovery document.
async fn scope_latency(client: &Client, http: &reqwest::Client, ns: &str, issuer: &str, n: usize) -> Value {
    let scopes: Api<AuthScope> = Api::namespaced(client.clone(), ns);
    let (object, scope) = ("s0000-scope4", "s0000:scope4");
    let url = format!("{issuer}/.well-known/openid-configuration");
    let (mut ms, mut timeouts) = (Vec::new(), 0);
    for i in 0..n {
        let discoverable = i % 2 == 1; // starts discoverable: first hide it, then show it, ...
        let t0 = Instant::now();
        let patch = json!({ "spec": { "discoverable": discoverable } });
        if let Err(e) = scopes.patch(object, &PatchParams::default(), &Patch::Merge(&patch)).await {
            say(format!("patching {object}: {e}"));
            continue;
        }
        match poll_until(http, &url, t0, Duration::from_secs(60), |d| {
            scopes_supported(d).contains(scope) == discoverable
        })
        .await
        {
            Some(v) => ms.push(v),
            None => timeouts += 1,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    summary(ms, timeouts)
}

/// `tessera.dev/rotate-revoke` annotated `n` times → a new kid in the issuer's JWKS.
async fn rotation_latency(client: &Client, http: &reqwest::Client, ns: &str, issuer: &str, n: usize) -> Value {
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), ns);
    let url = format!("{issuer}/v1/keys");
    let (mut ms, mut timeouts) = (Vec::new(), 0);
    for _ in 0..n {
        let before = match http.get(&url).send().await {
            Ok(r) => kids(&r.json::<Value>().await.unwrap_or_default()),
            Err(_) => BTreeSet::new(),
        };
        let value = format!("bench-{}", jiff::Timestamp::now().as_nanosecond());
        let patch = json!({ "metadata": { "annotations": { tessera::api::ROTATE_REVOKE_ANNOTATION: value } } });
        let t0 = Instant::now();
        if let Err(e) = servers.patch("s0000", &PatchParams::default(), &Patch::Merge(&patch)).await {
            say(format!("annotating s0000: {e}"));
            continue;
        }
        match poll_until(http, &url, t0, Duration::from_secs(60), |j| kids(j).difference(&before).next().is_some())
            .await
        {
            Some(v) => ms.push(v),
            None => timeouts += 1,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    summary(ms, timeouts)
}

async fn run(o: Options) -> anyhow::Result<Value> {
    std::fs::create_dir_all(&o.work_dir)?;
    let started = Instant::now();
    let (testenv, kubeconfig) = start_kube_testenv(&o)?;
    say(format!("kube-testenv ready in {:.1} s", started.elapsed().as_secs_f64()));
    let client = client_for(&kubeconfig).await?;
    install_crds(&client, &o.tessera).await?;
    let max = o.levels.iter().copied().max().unwrap_or(0);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for n in 0..max.div_ceil(o.per_namespace) {
        let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": format!("bench-{n}") } }))?;
        namespaces.create(&PostParams::default(), &ns).await?;
    }

    let op_port = free_port();
    let metrics = format!("http://127.0.0.1:{op_port}/metrics");
    let operator = Proc {
        child: Command::new(&o.tessera)
            .args(["operator", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{op_port}"), "--issuer-image", "tessera:bench"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(o.work_dir.join("operator.log"))?))
            .spawn()?,
        _stdin: None,
    };
    let op = operator.pid();
    let http = reqwest::Client::builder().pool_max_idle_per_host(4).build()?;
    let rendered = watch_rendered(client.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = status_kib(op, "VmRSS");
    say(format!("operator started (pid {op}), idle VmRSS {} KiB", idle_rss));

    let issuer_port = free_port();
    let issuer = format!("http://127.0.0.1:{issuer_port}/oauth2/{}", server_name(0));
    let mut issuer_proc: Option<Proc> = None;
    let mut levels = Vec::new();
    let mut done = 0usize;
    for &level in &o.levels {
        if level <= done {
            continue;
        }
        say(format!("applying servers {done}..{level} ({} objects)", (level - done) * 16));
        let cpu0 = cpu_secs(op);
        let kte_cpu0 = cpu_secs(testenv.pid());
        let t0 = Instant::now();
        let docs: Vec<Value> = (done..level).flat_map(|i| server_docs(i, o.per_namespace, issuer_port)).collect();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(docs.iter().map(|d| apply_doc(&client, d)))
            .buffer_unordered(o.concurrency)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let applied_s = t0.elapsed().as_secs_f64();
        say(format!("applied in {applied_s:.1} s; waiting for {level} config Secrets"));
        let keys: Vec<String> =
            (0..level).map(|i| format!("{}/{}-config", namespace_of(i, o.per_namespace), server_name(i))).collect();
        let deadline = Instant::now() + Duration::from_secs(1800);
        let mut last_report = Instant::now();
        let render_s = loop {
            let (count, last) = {
                let r = rendered.lock().unwrap();
                let times: Vec<Instant> = keys.iter().filter_map(|k| r.get(k).copied()).collect();
                (times.len(), times.into_iter().max())
            };
            if count == keys.len() {
                break last.map_or(0.0, |l| l.saturating_duration_since(t0).as_secs_f64());
            }
            anyhow::ensure!(Instant::now() < deadline, "only {count}/{level} config Secrets complete after 30 min");
            if last_report.elapsed() > Duration::from_secs(15) {
                say(format!(
                    "{count}/{level} rendered after {:.0} s; operator VmRSS {} KiB",
                    t0.elapsed().as_secs_f64(),
                    status_kib(op, "VmRSS")
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let rss_rendered = status_kib(op, "VmRSS");
        say(format!("all {level} rendered {render_s:.1} s after the first apply; settling"));
        let total_reconciles = settle(&http, &metrics, Duration::from_secs(5), Duration::from_secs(300)).await;
        let settled_s = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs(op) - cpu0;
        let kte_cpu = cpu_secs(testenv.pid()) - kte_cpu0;
        let server_reconciles = reconciles_of(&http, &metrics, "AuthorizationServer").await.unwrap_or_default();
        let (rss, hwm) = (status_kib(op, "VmRSS"), status_kib(op, "VmHWM"));
        say(format!(
            "{level} servers: VmRSS {rss} KiB, VmHWM {hwm} KiB, operator CPU {cpu:.1} s, settled after {settled_s:.0} s"
        ));
        if let Ok(text) = async { http.get(&metrics).send().await?.text().await }.await {
            for line in text.lines().filter(|l| {
                l.starts_with("tessera_operator_reconciles_total") || l.starts_with("tessera_operator_api_writes_total")
            }) {
                say(format!("  {line}"));
            }
        }
        done = level;

        if issuer_proc.is_none() {
            let p = Proc {
                child: Command::new(&o.tessera)
                    .args(["issuer", "--namespace", &namespace_of(0, o.per_namespace), "--server", &server_name(0)])
                    .args(["--listen", &format!("127.0.0.1:{issuer_port}")])
                    .env("KUBECONFIG", &kubeconfig)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(std::fs::File::create(o.work_dir.join("issuer.log"))?))
                    .spawn()?,
                _stdin: None,
            };
            let ready = format!("http://127.0.0.1:{issuer_port}/readyz");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "the issuer was not ready after 60 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            issuer_proc = Some(p);
        }
        let ns0 = namespace_of(0, o.per_namespace);
        say(format!("{level} servers: {} AuthScope changes → discovery", o.scope_changes));
        let scope = scope_latency(&client, &http, &ns0, &issuer, o.scope_changes).await;
        say(format!("  {scope}"));
        say(format!("{level} servers: {} key rotations → JWKS", o.rotations));
        let rotation = rotation_latency(&client, &http, &ns0, &issuer, o.rotations).await;
        say(format!("  {rotation}"));
        levels.push(json!({
            "servers": level,
            "objects": level * 16,
            "apply_s": applied_s,
            "render_s": render_s,
            "settled_s": settled_s,
            "operator_rss_rendered_kib": rss_rendered,
            "operator_rss_kib": rss,
            "operator_hwm_kib": hwm,
            "operator_cpu_s": cpu,
            "reconciles_total": total_reconciles,
            "server_reconciles_total": server_reconciles,
            "kube_testenv_cpu_s": kte_cpu,
            "kube_testenv_rss_kib": status_kib(testenv.pid(), "VmRSS"),
            "scope_to_discovery": scope,
            "rotation_to_jwks": rotation,
        }));
    }
    let out = json!({
        "operator_idle_rss_kib": idle_rss,
        "operator_final_hwm_kib": status_kib(op, "VmHWM"),
        "per_namespace": o.per_namespace,
        "testenv_gogc": testenv_gogc(),
        "levels": levels,
    });
    drop(issuer_proc);
    drop(operator);
    drop(testenv);
    Ok(out)
}

#[tokio::main]
async fn main() {
    let options = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // On SIGINT/SIGTERM the run is dropped, and with it (kill on drop) every process it started.
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let result = tokio::select! {
        r = run(options) => r,
        _ = stop => Err(anyhow::anyhow!("interrupted")),
    };
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("control-plane: {e:#}");
            std::process::exit(1);
        }
    }
}

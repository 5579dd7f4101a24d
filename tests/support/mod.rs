//! Test support: one real control plane (tools/kube-testenv: etcd + kube-apiserver +
//! kube-controller-manager) per test binary, a fresh namespace per test, the CRDs installed.
//!
//! The control plane reads our end of a pipe on its stdin and exits when it closes, so no
//! process outlives the test binary, however the binary ends.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub url: String,
    pub data_dir: PathBuf,
    // Held for the life of the binary: dropping our end of stdin stops the control plane.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shared control plane, started (and built, the first time) on first use.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        // Started from a plain thread: the caller may be inside a Tokio runtime.
        std::thread::spawn(start_control_plane).join().expect("control plane start panicked")
    })
}

fn kube_testenv_binary() -> PathBuf {
    if let Ok(path) = std::env::var("KUBE_TESTENV_BIN") {
        return PathBuf::from(path);
    }
    let out = Command::new("bash")
        .arg(repo_root().join("tools/kube-testenv/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running tools/kube-testenv/build.sh (is bash installed?)");
    assert!(out.status.success(), "building kube-testenv failed: is Go 1.26 installed and the module proxy reachable?");
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("build.sh printed no path").trim())
}

fn remove_stale_runs(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or_default();
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start_control_plane() -> ControlPlane {
    let plane = start_dedicated(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = client_for(&plane.kubeconfig).await;
        install_crds(&client).await;
    });
    plane
}

/// A control plane of its own (without our CRDs), for a test that needs kube-apiserver
/// flags the shared one lacks (`--apiserver-arg` each). It stops when dropped.
/// Blocking: call it from a plain thread or `spawn_blocking`.
pub fn start_dedicated(apiserver_args: &[String]) -> ControlPlane {
    let binary = kube_testenv_binary();
    let runs = repo_root().join("target/kube-testenv/runs");
    remove_stale_runs(&runs);
    let data_dir = runs.join(format!("{}-{}", std::process::id(), unique_suffix()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(apiserver_args.iter().map(|a| format!("--apiserver-arg={a}")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(data_dir.join("stderr.log")).unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (kubeconfig, url) = loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("READY ") => {
                let mut parts = line.split_whitespace().skip(1);
                break (PathBuf::from(parts.next().unwrap()), parts.next().unwrap().to_owned());
            }
            Some(Ok(_)) => continue,
            _ => panic!("kube-testenv exited before it was ready; see {}", data_dir.join("stderr.log").display()),
        }
    };
    eprintln!("kube-testenv ready at {url} in {:.1}s", started.elapsed().as_secs_f64());
    ControlPlane { kubeconfig, url, data_dir, _stdin: Mutex::new(stdin), _child: Mutex::new(child) }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}{:x}", nanos % 0xfffff, COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// A client of the shared control plane, bound to the calling test's runtime.
pub async fn client() -> Client {
    let plane = tokio::task::spawn_blocking(control_plane).await.unwrap();
    client_for(&plane.kubeconfig).await
}

/// Applies every CRD under `crds/` and waits until each is Established.
async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("crds")).unwrap() {
        let path = entry.unwrap().path();
        let crd: CustomResourceDefinition = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply("tessera-tests").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("installing {}: {e}", path.display()));
        names.push(name);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in names {
        loop {
            let crd = api.get(&name).await.unwrap();
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not Established after 60s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Creates a fresh namespace for one test and returns its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", unique_suffix());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    name
}

/// Polls `check` until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub mod examples;
pub mod helm;
pub mod node;
pub mod operator;
pub mod redis;

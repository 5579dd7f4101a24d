//! The helm binary built from the Go module proxy by tools/helm/build.sh (or `$HELM_BIN`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
};

use super::repo_root;

/// The helm binary, built on first use. A missing Go or proxy is a failure, never a skip.
pub fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(path) = std::env::var("HELM_BIN") {
            return PathBuf::from(path);
        }
        let out = Command::new("bash")
            .arg(repo_root().join("tools/helm/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running tools/helm/build.sh (is bash installed?)");
        assert!(out.status.success(), "building helm failed: is Go 1.26 installed and the module proxy reachable?");
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().expect("build.sh printed no path").trim())
    })
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/tessera")
}

/// Runs helm with `args`; returns its output whatever the exit status.
pub fn run(args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut cmd = Command::new(helm_binary());
    cmd.args(args);
    // Keep helm's caches and config out of the user's home.
    let home = repo_root().join("target/helm/home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    if let Some(kc) = kubeconfig {
        cmd.env("KUBECONFIG", kc);
    }
    cmd.output().expect("running helm")
}

/// Runs helm and panics with its stderr unless it succeeds; returns stdout.
pub fn ok(args: &[&str], kubeconfig: Option<&Path>) -> String {
    let out = run(args, kubeconfig);
    assert!(
        out.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` of the chart with extra `args`, as YAML documents.
pub fn render(release: &str, namespace: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let chart = chart_dir();
    let mut all = vec!["template", release, chart.to_str().unwrap(), "--namespace", namespace];
    all.extend_from_slice(args);
    documents(&ok(&all, None))
}

pub fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|de| serde::Deserialize::deserialize(de).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// One line per (role, apiGroup, resource, verb[, resourceNames]) of the rendered Roles and
/// ClusterRoles, sorted: the chart's permissions as a reviewer reads them.
pub fn permission_lines(mode: &str, docs: &[serde_json::Value]) -> Vec<String> {
    let mut lines = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let role = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => format!("{kind}/{ns}/{name}"),
            None => format!("{kind}/{name}"),
        };
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap_or_default().to_owned()).collect())
                .unwrap_or_default()
        };
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let names = strings(&rule["resourceNames"]);
            let names = if names.is_empty() { String::new() } else { format!(" names={}", names.join(",")) };
            for group in strings(&rule["apiGroups"]) {
                let group = if group.is_empty() { "core".to_owned() } else { group };
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        lines.push(format!("{mode} {role} {group} {resource} {verb}{names}"));
                    }
                }
            }
        }
    }
    lines.sort();
    lines
}

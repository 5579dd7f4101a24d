//! charts/tessera rendered by a real helm (built from the Go module proxy): lint, values
//! schema, least-privilege permissions against a golden list, and deploy/ kept in sync.

mod support;

use serde_json::Value;
use support::helm;

const GOLDEN: &str = "charts/tessera/permissions.golden.txt";
const NAMESPACED: &[&str] = &["--set", "watchNamespaces={team-a,team-b}"];

fn permissions() -> String {
    let cluster = helm::permission_lines("cluster", &helm::render("tessera", "tessera-system", &[]));
    let namespaced = helm::permission_lines("namespaced", &helm::render("tessera", "tessera-system", NAMESPACED));
    let mut out = String::from(
        "# Permissions granted by charts/tessera, per RBAC mode (release `tessera` in tessera-system;\n\
         # namespaced: watchNamespaces=[team-a, team-b]). Checked by tests/chart.rs; after a deliberate\n\
         # change run `TESSERA_UPDATE_GOLDEN=1 cargo test --test chart` and review the diff.\n",
    );
    for line in cluster.iter().chain(&namespaced) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn deployment(docs: &[Value]) -> &Value {
    docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment")
}

fn env(container: &Value, name: &str) -> Option<String> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str().map(str::to_owned)
}

#[test]
fn chart_lints_clean_in_both_rbac_modes() {
    let chart = helm::chart_dir();
    helm::ok(&["lint", "--strict", chart.to_str().unwrap()], None);
    let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
    args.extend_from_slice(NAMESPACED);
    helm::ok(&args, None);
}

#[test]
fn bad_values_fail_at_install_with_a_clear_message() {
    let chart = helm::chart_dir();
    for (set, expected) in [
        ("replicas=0", "/replicas"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("replica=2", "additional properties 'replica' not allowed"),
    ] {
        let out = helm::run(&["template", "t", chart.to_str().unwrap(), "--set", set], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(stderr.contains(expected), "--set {set}: expected {expected:?} in:\n{stderr}");
    }
}

#[test]
fn chart_permissions_match_the_golden_list() {
    let rendered = permissions();
    let path = support::repo_root().join(GOLDEN);
    if std::env::var_os("TESSERA_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        golden == rendered,
        "the chart's permissions changed; review and run `TESSERA_UPDATE_GOLDEN=1 cargo test --test chart`.\n\
         rendered:\n{rendered}"
    );
}

#[test]
fn no_wildcards_and_no_privilege_escalation_verbs() {
    for line in permissions().lines().filter(|l| !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(!words.contains(&"*"), "wildcard: {line}");
        for verb in ["escalate", "bind", "impersonate"] {
            assert_ne!(words[4], verb, "{line}");
        }
    }
}

#[test]
fn namespaced_mode_has_no_cluster_wide_grant_but_reading_its_own_namespaces() {
    let docs = helm::render("tessera", "tessera-system", NAMESPACED);
    let lines = helm::permission_lines("namespaced", &docs);
    let operator: Vec<&String> =
        lines.iter().filter(|l| l.contains("-operator") && l.contains(" ClusterRole/")).collect();
    assert_eq!(
        operator,
        ["namespaced ClusterRole/tessera-operator-namespaces core namespaces get names=team-a,team-b"],
        "the only cluster-wide grant of the operator"
    );
    for ns in ["team-a", "team-b"] {
        assert!(lines.iter().any(|l| l.contains(&format!("Role/{ns}/tessera-operator core secrets get"))));
    }
    assert!(lines.iter().any(|l| l.contains("Role/tessera-system/tessera-leader-election coordination.k8s.io leases")));
    assert!(!docs.iter().any(|d| d["kind"] == "ClusterRoleBinding" && d["roleRef"]["name"] == "tessera-operator"));
    let container = &deployment(&docs)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(container, "TESSERA_WATCH_NAMESPACES").as_deref(), Some("team-a,team-b"));
}

#[test]
fn leader_election_is_on_only_with_several_replicas() {
    for (replicas, elect) in [("1", "false"), ("3", "true")] {
        let docs = helm::render("tessera", "tessera-system", &["--set", &format!("replicas={replicas}")]);
        let container = &deployment(&docs)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(env(container, "TESSERA_LEADER_ELECT").as_deref(), Some(elect), "replicas={replicas}");
    }
}

#[test]
fn operator_pod_meets_the_restricted_pod_security_profile() {
    let docs = helm::render("tessera", "tessera-system", &[]);
    let pod = &deployment(&docs)["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["args"].as_array().unwrap().iter().any(|a| a == "--listen=0.0.0.0:8081"));
    let downward: Vec<&str> =
        c["env"].as_array().unwrap().iter().filter_map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str()).collect();
    assert_eq!(downward, ["metadata.namespace", "metadata.name"]);
}

#[test]
fn deploy_manifests_are_the_rendered_chart_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let repo = support::repo_root();
    // Render into a copy so the check never rewrites the working tree.
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::create_dir_all(dir.path().join("deploy")).unwrap();
    std::fs::copy(repo.join("scripts/render-deploy"), dir.path().join("scripts/render-deploy")).unwrap();
    std::os::unix::fs::symlink(repo.join("charts"), dir.path().join("charts")).unwrap();
    let out = std::process::Command::new("bash")
        .arg(dir.path().join("scripts/render-deploy"))
        .arg(helm::helm_binary())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/render-deploy: {}", String::from_utf8_lossy(&out.stderr));
    let fresh = std::fs::read_to_string(dir.path().join("deploy/tessera.yaml")).unwrap();
    let committed = std::fs::read_to_string(repo.join("deploy/tessera.yaml")).unwrap_or_default();
    assert!(fresh == committed, "deploy/tessera.yaml is out of date: run scripts/render-deploy and commit it");
    let kustomization = std::fs::read_to_string(repo.join("deploy/kustomization.yaml")).unwrap();
    assert!(kustomization.contains("tessera.yaml") && kustomization.contains("namespace.yaml"));
}

//! A control plane with a real node (`kube-testenv --node`): kube-scheduler, a kubelet,
//! kube-proxy and containerd with runc and a CNI bridge, in network and mount namespaces of
//! their own. Needs root and Debian's containerd, runc, containernetworking-plugins, iptables
//! (scripts/test installs them). A missing prerequisite fails the test; it never skips.
//!
//! kube-testenv records the host's state before the node starts and restores it when it
//! exits (our end of its stdin closes when the node is dropped or the test binary dies);
//! `Node::stop` then checks its report and compares the host with a snapshot of our own.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use super::repo_root;

/// A line on stderr past libtest's capture (which takes `eprintln!`), so that CI's log shows
/// where the pods ran (pod IPs, container ids) and the host check even when the test passes.
pub fn show(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub const NODE_NAME: &str = "tessera-node";
/// The host's end of the veth pair to the node's network namespace (tools/kube-testenv/node.go):
/// pods reach the host there, e.g. a redis-server listening on it.
pub const HOST_IP: &str = "172.31.255.1";

pub struct Node {
    pub kubeconfig: PathBuf,
    pub url: String,
    pub data_dir: PathBuf,
    /// DATA/node: the components' logs, configs and the host-state report.
    pub node_dir: PathBuf,
    /// containerd's socket, as the host reaches it (through the node's mount namespace).
    pub containerd: String,
    stdin: Option<ChildStdin>,
    child: Option<Child>,
    before: HostSnapshot,
}

fn build(script: &str, what: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join(script))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(out.status.success(), "building {what} failed: is Go 1.26 installed and the module proxy reachable?");
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or_else(|| panic!("{script} printed no path")).trim())
}

fn require_prerequisites() {
    let uid = Command::new("id").arg("-u").output().expect("running id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "tests/node.rs runs a kubelet and containerd: it must run as root"
    );
    for tool in ["containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "ip", "iptables", "iptables-save"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap();
        assert!(
            found.status.success(),
            "tests/node.rs needs {tool}: apt-get install containerd runc containernetworking-plugins iptables iproute2 (scripts/test does)"
        );
    }
    assert!(
        Path::new("/usr/lib/cni/bridge").exists() || Path::new("/opt/cni/bin/bridge").exists(),
        "tests/node.rs needs the CNI plugins: apt-get install containernetworking-plugins"
    );
}

impl Node {
    /// Builds what is missing and starts the node. Blocking: call it from a plain thread or
    /// `spawn_blocking`.
    pub fn start() -> Node {
        require_prerequisites();
        let binary = match std::env::var("KUBE_TESTENV_BIN") {
            Ok(path) => PathBuf::from(path),
            Err(_) => build("tools/kube-testenv/build.sh", "kube-testenv"),
        };
        let bin_dir = match std::env::var("KUBE_NODE_BIN_DIR") {
            Ok(path) => PathBuf::from(path),
            Err(_) => build("tools/kube-testenv/build-node.sh", "kube-node (kubelet, kube-proxy, kube-scheduler)"),
        };
        let before = HostSnapshot::take();
        let data_dir = repo_root().join(format!("target/kube-testenv/node-runs/{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).unwrap();
        let started = Instant::now();
        let mut child = Command::new(&binary)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--node")
            .arg("--node-bin-dir")
            .arg(&bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(data_dir.join("stderr.log")).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut node = None;
        let (kubeconfig, url) = loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("NODE ") => {
                    let parts: Vec<_> = line.split_whitespace().skip(1).map(str::to_owned).collect();
                    node = Some((parts[1].clone(), PathBuf::from(&parts[2])));
                }
                Some(Ok(line)) if line.starts_with("READY ") => {
                    let mut parts = line.split_whitespace().skip(1);
                    break (PathBuf::from(parts.next().unwrap()), parts.next().unwrap().to_owned());
                }
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.wait();
                    panic!(
                        "kube-testenv --node exited before it was ready:\n{}\n(logs under {})",
                        std::fs::read_to_string(data_dir.join("stderr.log")).unwrap_or_default(),
                        data_dir.display()
                    )
                }
            }
        };
        let (containerd, node_dir) = node.expect("kube-testenv printed no NODE line");
        show(format_args!(
            "kube-testenv --node ready at {url} in {:.1}s (node {NODE_NAME}, containerd {containerd}, logs {})",
            started.elapsed().as_secs_f64(),
            node_dir.display()
        ));
        Node { kubeconfig, url, data_dir, node_dir, containerd, stdin: Some(stdin), child: Some(child), before }
    }

    /// `ctr images import` of an image archive into the node's containerd.
    pub fn import_image(&self, archive: &Path) {
        let started = Instant::now();
        let out = Command::new("ctr")
            .args(["--address", &self.containerd, "-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .expect("running ctr");
        assert!(
            out.status.success(),
            "ctr images import {} failed: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        show(format_args!(
            "imported {} in {:.1}s: {}",
            archive.display(),
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }

    /// A second name for an image already imported (`ctr images tag`).
    pub fn tag_image(&self, from: &str, to: &str) {
        let out = Command::new("ctr")
            .args(["--address", &self.containerd, "-n", "k8s.io", "images", "tag", "--force", from, to])
            .output()
            .expect("running ctr");
        assert!(out.status.success(), "ctr images tag {from} {to}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `kubectl` against the node's API server: (success, stdout and stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl (scripts/test installs it)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// The containerd task of a container (`containerd://<id>`): Some(status) while it exists.
    pub fn task_status(&self, container_id: &str) -> Option<String> {
        let id = container_id.trim_start_matches("containerd://");
        let out = Command::new("ctr")
            .args(["--address", &self.containerd, "-n", "k8s.io", "tasks", "ls"])
            .output()
            .expect("running ctr");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
    }

    /// Stops the node and checks that the host is as it was; returns what differs.
    pub fn stop(&mut self) -> Vec<String> {
        let Some(mut child) = self.child.take() else { return Vec::new() };
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut problems = Vec::new();
        match status {
            Some(s) if s.success() => {}
            Some(s) => problems.push(format!("kube-testenv --node exited with {s} (3: host not restored)")),
            None => problems.push("kube-testenv --node did not stop within 60s".to_owned()),
        }
        match std::fs::read_to_string(self.node_dir.join("host-check.txt")) {
            Ok(report) if report.trim() == "ok" => {}
            Ok(report) => problems.push(format!("kube-testenv's host check:\n{report}")),
            Err(e) => problems.push(format!("no host check report ({e})")),
        }
        problems.extend(self.before.differences(&HostSnapshot::take()));
        if problems.is_empty() {
            show(format_args!(
                "host state restored and checked (sysctls, iptables, mounts, /var dirs, cgroups, links, routes)"
            ));
            // The logs are for a failure; a passing run leaves nothing behind.
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.data_dir);
            }
        }
        problems
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let problems = self.stop();
        if problems.is_empty() {
            return;
        }
        let text = format!("the host was not restored after the node:\n{}", problems.join("\n"));
        if std::thread::panicking() {
            show(format_args!("{text}"));
        } else {
            panic!("{text}");
        }
    }
}

/// What the node may change on the host, as seen from here (independently of kube-testenv's
/// own record): sysctls, iptables rules, mounts, directories, cgroups, links and routes.
#[derive(Debug, PartialEq)]
struct HostSnapshot {
    sysctls: Vec<(String, String)>,
    iptables: String,
    mounts: Vec<String>,
    paths: Vec<(String, bool)>,
    cgroups: Vec<String>,
    links: Vec<String>,
    routes: Vec<String>,
}

fn command_lines(cmd: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(cmd).args(args).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out).lines().map(str::to_owned).collect()
}

impl HostSnapshot {
    fn take() -> HostSnapshot {
        let sysctls = [
            "kernel/panic",
            "kernel/panic_on_oops",
            "vm/overcommit_memory",
            "net/ipv4/ip_forward",
            "net/ipv4/conf/all/route_localnet",
            "net/ipv6/conf/all/forwarding",
        ]
        .iter()
        .map(|k| (k.to_string(), std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_default()))
        .collect();
        let iptables = ["iptables-save", "ip6tables-save"]
            .iter()
            .flat_map(|t| command_lines(t, &[]))
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                // Counters move with any traffic; the rules are what matters.
                l.split_whitespace().filter(|w| !(w.starts_with('[') && w.ends_with(']'))).collect::<Vec<_>>().join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .filter(|m| {
                m.starts_with("/var/lib/kubelet")
                    || m.starts_with("/var/lib/containerd")
                    || m.starts_with("/var/lib/cni")
                    || m.starts_with("/var/log")
                    || m.starts_with("/run/containerd")
                    || m.starts_with("/run/netns/cni-")
                    || m.starts_with("/proc/sys")
                    || m.starts_with("/sys/fs/cgroup")
                    || m.contains("kube-testenv")
            })
            .collect();
        mounts.sort();
        let paths = [
            "/var/lib/kubelet",
            "/var/log/containers",
            "/var/log/pods",
            "/usr/libexec/kubernetes",
            "/var/lib/cni",
            "/run/netns",
        ]
        .iter()
        .map(|p| (p.to_string(), Path::new(p).exists()))
        .collect();
        let mut cgroups = Vec::new();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            for entry in std::fs::read_dir(hierarchy.path()).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("tessera-node") || name.starts_with("kubepods") {
                    cgroups.push(entry.path().display().to_string());
                }
            }
        }
        cgroups.sort();
        let links = command_lines("ip", &["-o", "link", "show"])
            .into_iter()
            .filter_map(|l| l.split_whitespace().nth(1).map(|n| n.trim_end_matches(':').to_owned()))
            .filter(|n| n.starts_with("tessera-node") || n.starts_with("cni") || n.starts_with("veth"))
            .collect();
        let routes = command_lines("ip", &["route", "show"])
            .into_iter()
            .filter(|r| r.contains("10.88.") || r.contains("tessera-node") || r.contains("cni0"))
            .collect();
        HostSnapshot { sysctls, iptables, mounts, paths, cgroups, links, routes }
    }

    fn differences(&self, after: &HostSnapshot) -> Vec<String> {
        let mut d = Vec::new();
        if self.sysctls != after.sysctls {
            d.push(format!("sysctls: {:?} before, {:?} after", self.sysctls, after.sysctls));
        }
        if self.iptables != after.iptables {
            d.push(format!("iptables rules differ:\n--- before\n{}\n--- after\n{}", self.iptables, after.iptables));
        }
        if self.mounts != after.mounts {
            d.push(format!("mounts: {:?} before, {:?} after", self.mounts, after.mounts));
        }
        if self.paths != after.paths {
            d.push(format!("paths: {:?} before, {:?} after", self.paths, after.paths));
        }
        if self.cgroups != after.cgroups {
            d.push(format!("cgroups: {:?} before, {:?} after", self.cgroups, after.cgroups));
        }
        if self.links != after.links {
            d.push(format!("links: {:?} before, {:?} after", self.links, after.links));
        }
        if self.routes != after.routes {
            d.push(format!("routes: {:?} before, {:?} after", self.routes, after.routes));
        }
        d
    }
}

/// The tessera image (`scripts/image`) of the test binary's own `tessera`, named `name`;
/// returns the archive.
pub fn build_image(name: &str) -> PathBuf {
    let out_dir = repo_root().join("target/kube-testenv/node-image");
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/image"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .arg("--out")
        .arg(&out_dir)
        .arg("--name")
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/image (python3)");
    assert!(out.status.success(), "scripts/image failed");
    let archive = out_dir.join("tessera.tar");
    show(format_args!(
        "scripts/image: {name} ({} MB) in {:.1}s",
        std::fs::metadata(&archive).unwrap().len() / 1_000_000,
        started.elapsed().as_secs_f64()
    ));
    archive
}

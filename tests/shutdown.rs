//! Every long-running Tessera process shuts down gracefully on SIGTERM, as a kubelet stops a
//! pod: it stops accepting at once, answers the request it is in the middle of, and exits 0
//! well inside the default 30 s grace period; also as PID 1 of its own PID namespace, where
//! the kernel drops signals that have no handler. The operator also releases its Lease. The
//! times are printed for the record; the bounds asserted are generous.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const CLIENT_SECRET: &str = "worker-secret";
/// Far more than any of these processes needs to exit; a hang shows as a failure, not a stuck test.
const EXIT_BOUND: Duration = Duration::from_secs(15);

/// One server with a machine client `<ns>.worker` (secret `worker-secret`).
fn manifests(ns: &str, issuer: &str) -> String {
    format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: {ns} }}
spec: {{ issuer: "{issuer}", audiences: [api://payments], signing: {{ algorithm: ES256 }} }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: read, namespace: {ns} }}
spec: {{ serverRef: {{ name: payments }}, name: payments:read, default: true }}
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: machines, namespace: {ns} }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules: [ {{ name: m2m, grantTypes: [client_credentials], scopes: [payments:read] }} ]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: worker, namespace: {ns} }}
spec:
  serverRef: {{ name: payments }}
  grantTypes: [client_credentials]
  authentication: {{ method: ClientSecretBasic }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: worker-oauth, namespace: {ns} }}
stringData: {{ client_secret: {CLIENT_SECRET} }}
"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Tessera process; `pid` is Tessera's own, which differs from the child's under `unshare`.
struct Process {
    child: Child,
    pid: u32,
}

impl Process {
    fn new(child: Child) -> Self {
        let pid = child.id();
        Self { child, pid }
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.pid.to_string()).status().unwrap();
        assert!(sent.success(), "kill -{signal} {}", self.pid);
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(self.running(), "exited before listening on {port}");
            assert!(Instant::now() < deadline, "nothing listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tessera serve` of `manifests` on `port`, run by `wrapper` (a command line ending in `--`) if any.
fn start_serve(port: u16, files: &Path, state: &Path, wrapper: &[&str]) -> Process {
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(tessera);
            c
        }
        None => Command::new(tessera),
    };
    cmd.args(["serve", "-f"]).arg(files).arg("--listen").arg(format!("127.0.0.1:{port}"));
    cmd.arg("--state-dir").arg(state).env("RUST_LOG", "warn").stdout(Stdio::null());
    Process::new(cmd.spawn().unwrap())
}

fn serve_files(port: u16) -> (tempfile::TempDir, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let issuer = format!("http://127.0.0.1:{port}/oauth2/payments");
    std::fs::write(files.path().join("server.yaml"), manifests("identity", &issuer)).unwrap();
    (files, tempfile::tempdir().unwrap())
}

/// A token request whose headers and half of whose body are sent: the server is answering it.
struct HeldRequest {
    stream: TcpStream,
    rest: String,
}

fn hold_token_request(port: u16, client_id: &str) -> HeldRequest {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{CLIENT_SECRET}"));
    let body = "grant_type=client_credentials&scope=payments%3Aread";
    let head = format!(
        "POST /oauth2/payments/v1/token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(format!("{head}{first}").as_bytes()).unwrap();
    // The headers reach the server and its handler starts reading the body.
    std::thread::sleep(Duration::from_millis(500));
    HeldRequest { stream, rest: rest.to_owned() }
}

impl HeldRequest {
    /// Sends the rest of the body; the whole answer, read until the server closes.
    fn finish(mut self) -> String {
        self.stream.write_all(self.rest.as_bytes()).unwrap();
        self.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        self.stream.read_to_string(&mut answer).unwrap();
        answer
    }
}

fn refused_within(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// SIGTERM with a token request in flight: new connections are refused, the request gets its
/// token, and the process exits 0 soon after.
fn answers_in_flight_then_exits(process: &mut Process, port: u16, client_id: &str, what: &str) {
    let held = hold_token_request(port, client_id);
    let signalled = Instant::now();
    process.signal("TERM");
    assert!(refused_within(port, Duration::from_secs(5)), "{what} still accepts connections after SIGTERM");
    let stopped_accepting = signalled.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    assert!(process.running(), "{what} exited with a request in flight");

    let answer = held.finish();
    let answered = Instant::now();
    assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer}");
    assert!(answer.contains("\"access_token\""), "{what}: {answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{what}: {answer}");
    let status = process.wait_exit(EXIT_BOUND).unwrap_or_else(|| panic!("{what} did not exit after SIGTERM"));
    assert!(status.success(), "{what} exited with {status}");
    eprintln!(
        "{what}: stopped accepting {stopped_accepting:?} after SIGTERM; exited {:?} after answering the held request",
        answered.elapsed()
    );
}

#[test]
fn serve_answers_the_request_in_flight_and_exits_zero_on_sigterm() {
    let port = free_port();
    let (files, state) = serve_files(port);
    let mut serve = start_serve(port, files.path(), state.path(), &[]);
    serve.wait_listening(port);
    answers_in_flight_then_exits(&mut serve, port, "identity.worker", "tessera serve");
}

/// The host pid of the process `unshare --fork` started: PID 1 of the new namespace.
fn forked_child(unshare: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "unshare started no child");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serve_as_pid_1_exits_zero_on_sigterm_and_on_sigint() {
    for signal in ["TERM", "INT"] {
        let port = free_port();
        let (files, state) = serve_files(port);
        // As in a container: Tessera is PID 1 of its PID namespace (unshare waits and passes its status on).
        let mut serve = start_serve(port, files.path(), state.path(), &["unshare", "--pid", "--kill-child", "--"]);
        serve.pid = forked_child(serve.pid);
        let status = std::fs::read_to_string(format!("/proc/{}/status", serve.pid)).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert_eq!(nspid.split_whitespace().last(), Some("1"), "not PID 1 of its namespace: {nspid}");
        serve.wait_listening(port);

        let signalled = Instant::now();
        serve.signal(signal);
        let exit = serve.wait_exit(EXIT_BOUND).unwrap_or_else(|| panic!("PID 1 ignored SIG{signal}"));
        let took = signalled.elapsed();
        assert!(exit.success(), "exited with {exit} on SIG{signal}");
        eprintln!("tessera serve as PID 1, no load: exited {took:?} after SIG{signal}");
        assert!(took < Duration::from_secs(5), "an idle serve took {took:?} to stop");
    }
}

fn secret(name: &str, key: &str, value: String) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name },
        "data": { key: base64::engine::general_purpose::STANDARD.encode(value) },
    })
}

#[tokio::test]
async fn issuer_answers_the_request_in_flight_and_exits_zero_on_sigterm() {
    use tessera::config::{CONFIG_SECRET_KEY, config_secret_name};
    use tessera::keys::{KEYS_SECRET_KEY, KeySet, keys_secret_name, plan};
    use tessera::standalone::{StateDir, compile_all, manifests as docs};

    let client = support::client().await;
    let plane = support::control_plane();
    let ns = support::namespace(&client, "shutdown").await;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}/oauth2/payments");

    let mut m = docs::Manifests::default();
    docs::add_documents(&mut m, Path::new("cluster.yaml"), &manifests(&ns, &issuer)).unwrap();
    let state = tempfile::tempdir().unwrap();
    let compiled = compile_all(&m, Some(&StateDir::new(state.path().into()))).unwrap().remove(0);
    assert!(compiled.rejected.is_empty(), "{:?}", compiled.rejected);
    let config = compiled.config;
    let now = jiff::Timestamp::now();
    let keys = plan(&config.signing, &KeySet::default(), now).apply(&KeySet::default(), &config.signing, now).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply("tests").force();
    for (name, key, value) in [
        (config_secret_name("payments"), CONFIG_SECRET_KEY, config.to_json().unwrap()),
        (keys_secret_name("payments"), KEYS_SECRET_KEY, keys.to_json().unwrap()),
    ] {
        secrets.patch(&name, &apply, &Patch::Apply(&secret(&name, key, value))).await.unwrap();
    }

    let log = plane.data_dir.join(format!("issuer-shutdown-{ns}.log"));
    let mut process = Process::new(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["issuer", "--namespace", &ns, "--server", "payments", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", &plane.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    support::eventually(Duration::from_secs(30), "the issuer to be ready", || async {
        http.get(&ready).send().await.ok()?.status().is_success().then_some(())
    })
    .await;
    let client_id = format!("{ns}.worker");
    tokio::task::spawn_blocking(move || {
        answers_in_flight_then_exits(&mut process, port, &client_id, "tessera issuer");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_leader_releases_its_lease_and_exits_zero_on_sigterm() {
    let client = support::client().await;
    let plane = support::control_plane();
    let ns = support::namespace(&client, "shutdown-lease").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let log = plane.data_dir.join(format!("operator-shutdown-{ns}.log"));
    let args = ["--listen", &listen, "--leader-elect", "--lease-namespace", &ns, "--identity", "op-stopping"];
    let mut operator = support::operator::OperatorProcess::start_with(&plane.kubeconfig, &[&ns], &log, &args);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = || async { leases.get_opt("tessera-operator").await.unwrap()?.spec?.holder_identity };
    support::eventually(Duration::from_secs(60), "the operator to hold the Lease", || async {
        (holder().await? == "op-stopping").then_some(())
    })
    .await;

    let signalled = Instant::now();
    operator.signal("TERM");
    let code = tokio::task::spawn_blocking(move || operator.wait_exit(EXIT_BOUND)).await.unwrap();
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "the operator did not exit 0 after SIGTERM; see {}", log.display());
    assert_eq!(holder().await, None, "the Lease is still held; see {}", log.display());
    eprintln!("tessera operator (leader): released its Lease and exited {took:?} after SIGTERM");
}

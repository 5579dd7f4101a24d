//! Interop with clients nobody here wrote: Node's openid-client and jose, Python's authlib
//! and PyJWT, Go's go-oidc v3, each against `tessera serve` on a free loopback port with a
//! temporary state dir.
//!
//! Prerequisites (scripts/test installs them): `npm ci` in tests/interop/node, the Python
//! packages of tests/interop/python/requirements.txt (in target/interop-venv, or `$PYTHON`),
//! the Go relying party of tests/interop/go built into target/interop-go/rp (or `$GO_RP`).
//! A missing prerequisite fails the test (in CI and everywhere else): it never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "team-orders.orders-api";

struct Server {
    child: Child,
    issuer: String,
    state: tempfile::TempDir,
    files: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails in CI, skips (loudly) elsewhere.
fn missing(what: &str, fix: &str) {
    let msg = format!("interop prerequisite missing: {what}. Install it with: {fix}");
    // A missing interop client fails the test everywhere, as in CI: it never skips.
    panic!("{msg}");
}

/// `tessera serve` of the examples, with the issuer moved to a free port.
fn start() -> Server {
    start_with(|text| text.to_owned())
}

/// As [`start`], with every example file passed through `edit` first.
fn start_with(edit: impl Fn(&str) -> String) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let files = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let text =
            edit(&std::fs::read_to_string(&path).unwrap().replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")));
        std::fs::write(files.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "-f"])
        .arg(files.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--reload-interval", "0.2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start tessera serve");
    let server = Server { child, issuer: format!("http://127.0.0.1:{port}/oauth2/payments"), state, files };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tessera serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn client_secret(state: &Path) -> String {
    let path = state.join("identity/payments/clients").join(format!("{CLIENT_ID}.json"));
    let creds: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    creds["client_secret"].as_str().unwrap().to_owned()
}

fn run(mut cmd: Command, server: &Server) {
    let out = cmd
        .env("ISSUER", &server.issuer)
        .env("CLIENT_ID", CLIENT_ID)
        .env("CLIENT_SECRET", client_secret(server.state.path()))
        .env("AUDIENCE", "api://payments")
        .env("SCOPE", "payments:read")
        .output()
        .expect("run interop client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "interop client failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    println!("{stdout}");
}

#[test]
fn node_openid_client_and_jose() {
    let dir = root().join("tests/interop/node");
    if Command::new("node").arg("--version").output().is_err() {
        return missing("node", "install Node.js 20+");
    }
    if !dir.join("node_modules/openid-client").exists() || !dir.join("node_modules/jose").exists() {
        return missing("node_modules in tests/interop/node", "cd tests/interop/node && npm ci");
    }
    let server = start();
    let mut cmd = Command::new("node");
    cmd.arg("interop.mjs").current_dir(&dir);
    run(cmd, &server);
}

#[test]
fn python_authlib_and_pyjwt() {
    // scripts/test installs the packages into target/interop-venv and sets PYTHON to it.
    let venv = root().join("target/interop-venv/bin/python");
    let python = std::env::var("PYTHON")
        .unwrap_or_else(|_| if venv.exists() { venv.display().to_string() } else { "python3".into() });
    let importable = Command::new(&python)
        .args(["-c", "import authlib, jwt, requests, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        return missing(
            "Python packages authlib, PyJWT[crypto], requests",
            "scripts/test (it makes target/interop-venv), or pip install -r tests/interop/python/requirements.txt",
        );
    }
    let server = start();
    let mut cmd = Command::new(&python);
    cmd.arg(root().join("tests/interop/python/interop.py"));
    run(cmd, &server);
}

/// The Go relying party (tests/interop/go), built by scripts/test into target/interop-go/rp.
fn go_relying_party() -> Option<PathBuf> {
    let built = std::env::var_os("GO_RP").map(PathBuf::from).unwrap_or_else(|| root().join("target/interop-go/rp"));
    built.exists().then_some(built)
}

/// The signing algorithm of the example server set to `alg`, with `prePublish` of 10 s so an
/// algorithm change completes within the test.
fn with_algorithm(alg: &'static str) -> impl Fn(&str) -> String {
    move |text| {
        text.replace("algorithm: ES256", &format!("algorithm: {alg}")).replace("prePublish: 168h", "prePublish: 10s")
    }
}

fn run_go(rp: &Path, server: &Server, expect_alg: &str, saved: &Path) {
    let mut cmd = Command::new(rp);
    cmd.env("SPA_ID", "team-orders.example-spa")
        .env("SPA_REDIRECT", "http://127.0.0.1:8400/callback")
        .env("USERNAME", "alice")
        .env("PASSWORD", "alice-password")
        .env("EXPECT_ALG", expect_alg)
        .env("SAVED", saved);
    run(cmd, server);
}

fn discovered_algs(server: &Server) -> Vec<String> {
    let url = format!("{}/.well-known/openid-configuration", server.issuer);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let d: serde_json::Value =
        rt.block_on(async { reqwest::get(&url).await.ok()?.json().await.ok() }).unwrap_or_default();
    d["id_token_signing_alg_values_supported"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[test]
fn go_oidc_verifies_id_and_access_tokens_of_every_algorithm() {
    let Some(rp) = go_relying_party() else {
        return missing(
            "the Go relying party",
            "scripts/test, or: cd tests/interop/go && go build -o ../../../target/interop-go/rp .",
        );
    };
    for alg in ["RS256", "ES256", "EdDSA"] {
        let server = start_with(with_algorithm(alg));
        let saved = server.state.path().join("go-tokens.json");
        run_go(&rp, &server, alg, &saved);
    }
}

#[test]
fn go_oidc_keeps_verifying_across_an_algorithm_change() {
    let Some(rp) = go_relying_party() else {
        return missing(
            "the Go relying party",
            "scripts/test, or: cd tests/interop/go && go build -o ../../../target/interop-go/rp .",
        );
    };
    let server = start_with(with_algorithm("RS256"));
    let saved = server.state.path().join("go-tokens.json");
    run_go(&rp, &server, "RS256", &saved);
    // RS256 -> ES256 in the running server's files: the ES256 key is published first and
    // signs prePublish later, while RS256 still signs and then stays published.
    let file = server.files.path().join("10-authorization-server.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace("algorithm: RS256", "algorithm: ES256");
    std::fs::write(&file, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while discovered_algs(&server) != ["RS256", "ES256"] {
        assert!(Instant::now() < deadline, "discovery did not list both: {:?}", discovered_algs(&server));
        std::thread::sleep(Duration::from_millis(200));
    }
    // go-oidc takes the algorithms from discovery: RS256 tokens, old and new, still verify.
    run_go(&rp, &server, "RS256", &saved);
    let deadline = Instant::now() + Duration::from_secs(30);
    while discovered_algs(&server).first().map(String::as_str) != Some("ES256") {
        assert!(Instant::now() < deadline, "the ES256 key never signed: {:?}", discovered_algs(&server));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(discovered_algs(&server), ["ES256", "RS256"], "the retired RS256 key is still published");
    // New tokens are ES256; the RS256 ones saved before still verify.
    run_go(&rp, &server, "ES256", &saved);
}

//! `tessera serve` as a process: it picks up changed resource files and key state without a
//! restart (a bad edit keeps the last good config and says why), and `tessera rotate` rotates
//! the keys of its state directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Serve {
    child: Child,
    base: String,
    files: tempfile::TempDir,
    state: tempfile::TempDir,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn start() -> Serve {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let files = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
        std::fs::write(files.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--reload-interval", "0.2", "-f"])
        .arg(files.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state.path().join("state"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start tessera serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tessera serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Serve { child, base: format!("http://127.0.0.1:{port}/oauth2/payments"), files, state, log }
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn kids(s: &Serve) -> Vec<String> {
    get(&format!("{}/v1/keys", s.base)).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn has_scope(s: &Serve, scope: &str) -> bool {
    get(&format!("{}/.well-known/openid-configuration", s.base)).await["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k.as_str() == Some(scope))
}

/// Waits up to 15 s for `check`; on failure shows serve's log.
macro_rules! eventually {
    ($serve:expr, $what:expr, $check:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(15);
        while !$check {
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(&$serve.log).unwrap_or_default();
                panic!("{}: not within 15 s; serve's log:\n{log}", $what);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

fn rotate(files: &Path, state: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["rotate", "-f"])
        .arg(files)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .output()
        .unwrap()
}

const AUDIT_SCOPE: &str = "apiVersion: tessera.dev/v1alpha1\nkind: AuthScope\nmetadata: { name: payments-audit, namespace: identity }\nspec: { serverRef: { name: payments }, name: payments:audit }\n";

#[tokio::test]
async fn serve_picks_up_changed_files_keeps_the_last_good_config_and_rotated_keys() {
    let s = start();
    assert!(!has_scope(&s, "payments:audit").await);

    // A new resource: served without a restart.
    std::fs::write(s.files.path().join("60-audit.yaml"), AUDIT_SCOPE).unwrap();
    eventually!(s, "the new scope is served", has_scope(&s, "payments:audit").await);

    // A bad edit: the last good config stays, and the log names the file and the reason.
    std::fs::write(s.files.path().join("70-broken.yaml"), "kind: AuthScope\nspec: [not, a, map\n").unwrap();
    eventually!(s, "the bad edit is reported", std::fs::read_to_string(&s.log).unwrap().contains("70-broken.yaml"));
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("the last good config stays"), "{log}");
    assert!(has_scope(&s, "payments:audit").await, "a bad edit dropped the last good config");
    std::fs::remove_file(s.files.path().join("70-broken.yaml")).unwrap();

    // `tessera rotate` on the state directory: a young Next key is not promoted...
    let before = kids(&s).await;
    assert_eq!(before.len(), 2, "an Active and a Next key: {before:?}");
    let state = s.state.path().join("state");
    let out = rotate(s.files.path(), &state, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prePublish") && err.contains("--revoke"), "{err}");
    // ...an emergency rotation is, and the running serve drops the old key at once.
    let out = rotate(s.files.path(), &state, &["--revoke", "--server", "identity/payments"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("revoked"), "{said}");
    eventually!(s, "serve publishes the rotated keys", {
        let now = kids(&s).await;
        now.len() == 2 && now.iter().filter(|k| before.contains(k)).count() == 1
    });
}

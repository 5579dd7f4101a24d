//! `tessera serve` of one file a test writes, on a loopback port, stopped when dropped: the
//! harness of the tenancy cases that need no control plane.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Serve {
    child: Child,
    pub port: u16,
    /// The issuer of the `payments` server the files define, at this port.
    pub issuer: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// The URL of an endpoint of the issuer.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The issuer URI of the `payments` server when served on `port`.
pub fn issuer_at(port: u16) -> String {
    format!("http://127.0.0.1:{port}/oauth2/payments")
}

/// Starts `tessera serve` of `yaml` on `port` with `flags`, and waits until it listens.
pub fn start(port: u16, yaml: &str, flags: &[&str]) -> Serve {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("server.yaml"), yaml).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "-f"])
        .arg(files.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state.path())
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start tessera serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tessera serve exited ({status}) before listening");
        }
        assert!(Instant::now() < deadline, "tessera serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve { child, port, issuer: issuer_at(port), _dirs: (files, state) }
}

//! A real `redis-server` on a free loopback port, without persistence. One is shared per test
//! binary ([`shared`]); a test that stops and restarts Redis starts its own ([`RedisServer::start`]).
//!
//! Each server runs under a small shell that kills it when our end of its stdin closes, so no
//! redis-server outlives the test binary. In CI (`CI=true`) a missing redis-server fails.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    /// The address it listens on: 127.0.0.1 unless started with [`RedisServer::start_on`].
    pub bind: String,
    dir: tempfile::TempDir,
    running: Mutex<Option<(Child, ChildStdin)>>,
}

fn binary() -> PathBuf {
    PathBuf::from(std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()))
}

/// Whether redis-server can run here; its absence fails the test (never a skip).
pub fn available() -> bool {
    let ok = Command::new(binary()).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "redis-server is not installed (apt-get install redis-server)";
        panic!("{msg}");
    }
    ok
}

impl RedisServer {
    /// Starts a new redis-server owned by the caller; stopped when dropped.
    pub fn start() -> RedisServer {
        RedisServer::start_on("127.0.0.1")
    }

    /// Starts a new redis-server listening on `bind` (an address of this host), e.g. one that
    /// the pods of tests/node.rs reach.
    pub fn start_on(bind: &str) -> RedisServer {
        let port = std::net::TcpListener::bind((bind, 0)).unwrap().local_addr().unwrap().port();
        let server =
            RedisServer { port, bind: bind.to_owned(), dir: tempfile::tempdir().unwrap(), running: Mutex::new(None) };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}/", self.bind, self.port)
    }

    /// Starts (again) on the same port, with empty state.
    pub fn resume(&self) {
        let mut running = self.running.lock().unwrap();
        assert!(running.is_none(), "redis-server already running");
        let script = r#""$0" "$@" & pid=$!; read -r _; kill $pid; wait $pid"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(binary())
            .args(["--bind", &self.bind, "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            // Protected mode refuses clients from other addresses than loopback when there is no
            // password: a server on another address is there for such clients (the node's pods).
            .args(["--protected-mode", if self.bind == "127.0.0.1" { "yes" } else { "no" }])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let stdin = child.stdin.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((self.bind.as_str(), self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        *running = Some((child, stdin));
    }

    /// Stops the server (state is lost); `resume` starts it again on the same port.
    pub fn stop(&self) {
        if let Some((mut child, mut stdin)) = self.running.lock().unwrap().take() {
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((self.bind.as_str(), self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED: OnceLock<RedisServer> = OnceLock::new();

/// The test binary's shared redis-server, or None when it is missing outside CI.
pub fn shared() -> Option<&'static RedisServer> {
    if !available() {
        return None;
    }
    Some(SHARED.get_or_init(RedisServer::start))
}

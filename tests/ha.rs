//! High availability: three `tessera serve` processes (same files, same state dir for keys,
//! one Redis through TESSERA_REDIS_URL) behind a round-robin client, as replicas behind a
//! Service. Token state is shared; Redis outages and replica deaths are survived.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::redis::{RedisServer, available};
use tessera::api::SigningAlgorithm;
use tessera::keys::{self, ActiveKeys};

const PATH: &str = "/oauth2/payments";
const SECRET: &str = "basic-secret";

struct Replica {
    child: Option<Child>,
    base: String,
}

impl Replica {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three replicas of one server, a client key for private_key_jwt, and a round-robin cursor.
struct Cluster {
    replicas: Vec<Replica>,
    issuer: String,
    client_key: ActiveKeys,
    next: AtomicUsize,
    http: reqwest::Client,
    _files: tempfile::TempDir,
    _state: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn manifests(issuer: &str, jwk: &str) -> String {
    format!(
        r#"
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: payments, namespace: identity }}
spec:
  issuer: {issuer}
  audiences: [api://payments]
  signing: {{ algorithm: ES256 }}
  clientNamespaces: {{ from: All }}
  rateLimit: {{ perClient: 100000, burst: 100000 }}
  storage: {{ type: Redis, redis: {{ urlSecretRef: {{ name: payments-redis }} }} }}
  workload: {{ replicas: 3 }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: read, namespace: identity }}
spec: {{ serverRef: {{ name: payments }}, name: payments:read, default: true }}
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: machines, namespace: identity }}
spec:
  serverRef: {{ name: payments }}
  clients: {{ all: true }}
  rules: [ {{ name: m2m, grantTypes: [client_credentials], scopes: [payments:read] }} ]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: basic, namespace: team }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [client_credentials]
  authentication: {{ method: ClientSecretBasic }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: basic-oauth, namespace: team }}
stringData: {{ client_secret: {SECRET} }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: pkjwt, namespace: team }}
spec:
  serverRef: {{ name: payments, namespace: identity }}
  grantTypes: [client_credentials]
  authentication: {{ method: PrivateKeyJwt, jwks: {{ keys: [{jwk}] }} }}
"#
    )
}

fn start_replica(files: &std::path::Path, state: &std::path::Path, redis_url: &str, log: PathBuf) -> Replica {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "-f"])
        .arg(files)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state)
        .env("TESSERA_REDIS_URL", redis_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("start tessera serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tessera serve did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Replica { child: Some(child), base: format!("http://127.0.0.1:{port}") }
}

impl Cluster {
    fn start(redis: &RedisServer) -> Cluster {
        let t = jiff::Timestamp::now();
        let key = keys::generate(SigningAlgorithm::ES256, t, t - jiff::SignedDuration::from_secs(60)).unwrap();
        let jwk = serde_json::to_string(&key.public_jwk).unwrap();
        let client_key = ActiveKeys::new(&keys::KeySet { keys: vec![key] }).unwrap();
        // The issuer URI names one address, as a Service would; every replica serves it.
        let issuer = format!("http://127.0.0.1:{}{PATH}", free_port());
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("server.yaml"), manifests(&issuer, &jwk)).unwrap();
        let state = tempfile::tempdir().unwrap();
        // The first replica creates the signing keys in the state dir; the others read them.
        let mut replicas = Vec::new();
        for i in 0..3 {
            let log = state.path().join(format!("replica-{i}.log"));
            replicas.push(start_replica(files.path(), state.path(), &redis.url(), log));
        }
        Cluster {
            replicas,
            issuer,
            client_key,
            next: AtomicUsize::new(0),
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap(),
            _files: files,
            _state: state,
        }
    }

    fn round_robin(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len()
    }

    fn assertion(&self, jti: &str) -> String {
        let claims = json!({
            "iss": "team.pkjwt", "sub": "team.pkjwt", "aud": format!("{}/v1/token", self.issuer),
            "exp": now() + 60, "iat": now(), "jti": jti
        });
        self.client_key.sign_access_token(jiff::Timestamp::now(), &claims).unwrap().0
    }

    async fn post(&self, replica: usize, endpoint: &str, form: &[(&str, &str)], basic: bool) -> Reply {
        let url = format!("{}{PATH}{endpoint}", self.replicas[replica].base);
        let mut req = self.http.post(url).form(form);
        if basic {
            req = req.basic_auth("team.basic", Some(SECRET));
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
                let json = r.json::<Value>().await.unwrap_or(Value::Null);
                Reply { status, retry_after, json }
            }
            Err(_) => Reply { status: 0, retry_after: None, json: Value::Null },
        }
    }

    /// client_credentials with a client secret: needs no token state.
    async fn secret_token(&self, replica: usize) -> Reply {
        self.post(replica, "/v1/token", &[("grant_type", "client_credentials")], true).await
    }

    /// client_credentials with private_key_jwt: its jti must be recorded.
    async fn assertion_token(&self, replica: usize, jti: &str) -> Reply {
        let a = self.assertion(jti);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", a.as_str()),
        ];
        self.post(replica, "/v1/token", &form, false).await
    }

    async fn introspect(&self, replica: usize, token: &str) -> Reply {
        self.post(replica, "/v1/introspect", &[("token", token)], true).await
    }

    async fn revoke(&self, replica: usize, token: &str) -> Reply {
        self.post(replica, "/v1/revoke", &[("token", token)], true).await
    }

    async fn readyz(&self, replica: usize) -> u16 {
        let url = format!("{}/readyz", self.replicas[replica].base);
        self.http.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    json: Value,
}

impl Reply {
    fn token(&self) -> String {
        assert_eq!(self.status, 200, "{:?}", self.json);
        self.json["access_token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn a_jti_consumed_on_one_replica_is_refused_on_the_others() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let a = c.assertion("once-only");
    let form = |a: &str| {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()),
            ("client_assertion", a.to_owned()),
        ]
    };
    let send = |replica: usize| {
        let url = format!("{}{PATH}/v1/token", c.replicas[replica].base);
        c.http.post(url).form(&form(&a)).send()
    };
    assert_eq!(send(0).await.unwrap().status(), 200);
    for replica in [1, 2, 0] {
        let r = send(replica).await.unwrap();
        assert_eq!(r.status(), 401, "replica {replica} accepted a replayed assertion");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        assert!(body["error_description"].as_str().unwrap().contains("already used"));
    }
}

#[tokio::test]
async fn a_revocation_on_one_replica_is_seen_by_introspection_on_the_others() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let token = c.secret_token(0).await.token();
    for replica in 0..3 {
        assert_eq!(c.introspect(replica, &token).await.json["active"], true, "replica {replica}");
    }
    assert_eq!(c.revoke(1, &token).await.status, 200);
    for replica in [0, 2, 1] {
        assert_eq!(
            c.introspect(replica, &token).await.json["active"],
            false,
            "replica {replica} missed the revocation"
        );
    }
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    unavailable: usize,
    other: Vec<u16>,
}

impl Tally {
    fn add(&mut self, r: &Reply) {
        match r.status {
            200 => self.ok += 1,
            503 => {
                assert_eq!(r.json["error"], "temporarily_unavailable", "{r:?}");
                assert!(r.retry_after.is_some(), "503 without Retry-After: {r:?}");
                self.unavailable += 1;
            }
            s => self.other.push(s),
        }
    }
}

#[derive(Default, Debug)]
struct Phase {
    stateless: Tally,
    stateful: Tally,
}

/// One round of load on the next replica: a secret-based token, a private_key_jwt token and
/// an introspection.
async fn round(c: &Cluster, n: usize, held: &str, phase: &mut Phase) {
    let replica = c.round_robin();
    phase.stateless.add(&c.secret_token(replica).await);
    phase.stateful.add(&c.assertion_token(replica, &format!("load-{n}")).await);
    let r = c.introspect(replica, held).await;
    phase.stateful.add(&r);
    if r.status == 200 {
        assert_eq!(r.json["active"], true);
    }
}

#[tokio::test]
async fn redis_outage_fails_only_stateful_requests_and_recovers_without_restart() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let c = Cluster::start(&redis);
    let held = c.secret_token(0).await.token();
    let mut n = 0;
    let mut run = async |phase: &mut Phase, secs: f64| {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            n += 1;
            round(&c, n, &held, phase).await;
        }
    };

    let mut before = Phase::default();
    run(&mut before, 2.0).await;
    redis.stop();
    let mut during = Phase::default();
    run(&mut during, 3.0).await;
    let ready_during: Vec<u16> = futures::future::join_all((0..3).map(|i| c.readyz(i))).await;
    redis.resume();
    let resumed = Instant::now();
    // Recovery: every replica ready again, without a restart.
    let mut recovering = Phase::default();
    while futures::future::join_all((0..3).map(|i| c.readyz(i))).await.iter().any(|s| *s != 200) {
        assert!(resumed.elapsed() < Duration::from_secs(15), "replicas not ready 15s after Redis returned");
        run(&mut recovering, 0.1).await;
    }
    let recovered_in = resumed.elapsed();
    let mut after = Phase::default();
    run(&mut after, 2.0).await;

    eprintln!("redis outage: before {before:?}");
    eprintln!("redis outage: during {during:?} readyz {ready_during:?}");
    eprintln!("redis outage: recovering ({recovered_in:?}) {recovering:?}");
    eprintln!("redis outage: after {after:?}");

    for (name, p) in [("before", &before), ("during", &during), ("recovering", &recovering), ("after", &after)] {
        assert!(p.stateless.other.is_empty() && p.stateful.other.is_empty(), "{name}: unexpected statuses {p:?}");
        assert_eq!(p.stateless.unavailable, 0, "{name}: client_secret tokens need no state");
    }
    assert_eq!(before.stateful.unavailable, 0);
    assert_eq!(after.stateful.unavailable, 0, "after recovery every request succeeds");
    assert!(after.stateful.ok > 0 && after.stateless.ok > 0);
    assert!(during.stateful.unavailable > 0 && during.stateless.ok > 0);
    assert_eq!(during.stateful.ok, 0, "nothing stateful can succeed while Redis is down");
    assert_eq!(ready_during, [503, 503, 503]);
}

#[tokio::test]
async fn killing_a_replica_under_load_loses_no_issued_token() {
    if !available() {
        return;
    }
    let redis = RedisServer::start();
    let mut c = Cluster::start(&redis);
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(std::sync::Mutex::new(Vec::<(usize, String)>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let failed_after_retry = Arc::new(AtomicUsize::new(0));
    let c_ref: &Cluster = &c;
    // The balancer ejects a replica that refuses a connection, as endpoints drop an unready pod.
    let ejected: [AtomicBool; 3] = Default::default();
    let pick = || loop {
        let r = c_ref.round_robin();
        if !ejected[r].load(Ordering::Relaxed) {
            return r;
        }
    };
    let worker = async |_: usize| {
        while !stop.load(Ordering::Relaxed) {
            let replica = pick();
            sent.fetch_add(1, Ordering::Relaxed);
            let mut r = c_ref.secret_token(replica).await;
            let mut served_by = replica;
            if r.status != 200 {
                failed.fetch_add(1, Ordering::Relaxed);
                if r.status == 0 {
                    ejected[replica].store(true, Ordering::Relaxed);
                }
                // A client (or the balancer) retries once on another replica.
                served_by = pick();
                r = c_ref.secret_token(served_by).await;
                if r.status != 200 {
                    failed_after_retry.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            issued.lock().unwrap().push((served_by, r.token()));
        }
    };
    let load = futures::future::join_all((0..4).map(worker));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = sent.load(Ordering::Relaxed);
        // SIGKILL: no graceful shutdown, in-flight requests on it are cut.
        let victim = c_ref.replicas[1].child.as_ref().map(|ch| ch.id()).unwrap();
        let _ = Command::new("kill").arg("-9").arg(victim.to_string()).status();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        before
    };
    let (_, sent_before_kill) = futures::join!(load, killer);
    c.replicas[1].kill();

    let sent = sent.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let failed_after_retry = failed_after_retry.load(Ordering::Relaxed);
    let during = sent - sent_before_kill;
    eprintln!(
        "replica kill: {sent} requests ({during} from the kill on), {failed} failed on first try ({:.2}% of those), {failed_after_retry} after one retry on another replica",
        100.0 * failed as f64 / during.max(1) as f64
    );
    assert_eq!(failed_after_retry, 0);

    // Every token issued, by any replica including the dead one, is still valid on the survivors.
    let issued = issued.lock().unwrap().clone();
    let from_victim = issued.iter().filter(|(r, _)| *r == 1).count();
    assert!(from_victim > 0, "the killed replica issued nothing before it died");
    for (i, (_, token)) in issued.iter().enumerate() {
        let survivor = if i % 2 == 0 { 0 } else { 2 };
        let r = c.introspect(survivor, token).await;
        assert_eq!(r.json["active"], true, "token lost: {r:?}");
    }
    eprintln!("replica kill: {} issued tokens ({from_victim} by the killed replica) all still active", issued.len());
}

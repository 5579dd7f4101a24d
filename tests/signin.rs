//! People signing in, end to end, with software nobody here wrote:
//!
//! - `browser_upstream_code_flow`: a headless Chromium (playwright-core) signs in through
//!   Tessera at an upstream OpenID Connect provider (Node's `oidc-provider`) and back, for
//!   an `openid-client` relying party doing code + PKCE; the RP validates the ID token,
//!   calls userinfo and refreshes.
//! - `kubernetes_accepts_id_token`: kube-apiserver, configured with structured
//!   authentication (`--authentication-config`) trusting Tessera over https (a CA made
//!   here), accepts an ID token from the device flow: `kubectl auth whoami` shows the user
//!   and groups.
//!
//! Prerequisites: Node.js 20+ and `npm ci` in tests/interop/node, Chromium
//! (`apt-get install chromium`, or `CHROMIUM=/path`), kubectl, Go (kube-testenv). A missing
//! prerequisite fails the test: it never skips.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Password of every static user here; its bcrypt hash (cost 4) is `PASSWORD_HASH`.
const PASSWORD: &str = "correct horse battery";
const PASSWORD_HASH: &str = "$2b$04$QDAKOYeNMlgBxNWx/uxC1uCTzzZLGKpkmS774QuRolfGAZu3rqCAC";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn node_dir() -> PathBuf {
    root().join("tests/interop/node")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A missing prerequisite fails the test, in CI and everywhere else.
fn require_node(packages: &[&str]) {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "prerequisite missing: node. Install Node.js 20+ (apt-get install nodejs npm)"
    );
    for package in packages {
        assert!(
            node_dir().join("node_modules").join(package).exists(),
            "prerequisite missing: npm package {package}. Install it with: cd tests/interop/node && npm ci"
        );
    }
}

fn chromium() -> String {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let runs = Command::new(&path).args(["--headless", "--no-sandbox", "--version"]).output();
    assert!(
        runs.is_ok_and(|o| o.status.success()),
        "prerequisite missing: Chromium at {path}. Install it with: apt-get install chromium (or set CHROMIUM)"
    );
    path
}

/// A child process killed when dropped.
struct Process {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tessera serve` of the files in `files`, listening on `port` (https with `tls_dir`).
fn tessera_serve(files: &Path, port: u16, state: &Path, tls_dir: Option<&Path>) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args(["serve", "-f"])
        .arg(files)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(dir) = tls_dir {
        cmd.arg("--tls-dir").arg(dir);
    }
    let mut child = cmd.spawn().expect("start tessera serve");
    wait_listening(port, "tessera serve", &mut child);
    Process { child, _stdin: None }
}

// ---------------------------------------------------------------------------------------
// A. Browser sign-in through an upstream provider.

/// oidc-provider on a free port, its stderr in `log`; it exits when our end of its stdin closes.
fn start_upstream(client_id: &str, client_secret: &str, redirect_uri: &str, log: &Path) -> (Process, String) {
    let port = free_port();
    let mut child = Command::new("node")
        .arg("upstream.mjs")
        .current_dir(node_dir())
        .env("PORT", port.to_string())
        .env("CLIENT_ID", client_id)
        .env("CLIENT_SECRET", client_secret)
        .env("REDIRECT_URI", redirect_uri)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start node upstream.mjs");
    let stdin = child.stdin.take();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let issuer = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(issuer) = line.strip_prefix("UPSTREAM ") {
                    break issuer.to_owned();
                }
            }
            _ => panic!("upstream.mjs exited before listening"),
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (Process { child, _stdin: stdin }, issuer)
}

fn upstream_manifests(issuer: &str, upstream: &str, upstream_secret: &str, redirect_uri: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{ name: identity }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: corp-oidc, namespace: identity }}
stringData:
  client_secret: "{upstream_secret}"
---
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: people, namespace: identity }}
spec:
  issuer: {issuer}
  audiences: [api://people]
  signing: {{ algorithm: ES256 }}
  identity:
    sessionLifetime: 1h
    upstreams:
      - name: corp
        displayName: Corporate SSO
        issuer: {upstream}
        clientId: tessera
        clientSecretRef: {{ name: corp-oidc }}
        scopes: [openid, email, profile, groups]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClaim
metadata: {{ name: groups, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  name: groups
  token: IdToken
  value: 'user == null ? null : user.groups'
  alwaysInclude: true
---
apiVersion: tessera.dev/v1alpha1
kind: AuthScope
metadata: {{ name: calendar-read, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  name: calendar:read
  displayName: Read your calendar
  consent: Required
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: people, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  clients: {{ all: true }}
  rules:
    - name: sign-in
      grantTypes: [authorization_code, refresh_token]
      scopes: [openid, profile, email, offline_access, calendar:read]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: spa, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  clientId: example-spa
  grantTypes: [authorization_code, refresh_token]
  redirectUris: ["{redirect_uri}"]
  postLogoutRedirectUris: ["{redirect_uri}"]
  authentication: {{ method: None }}
"#
    )
}

#[test]
fn browser_upstream_code_flow() {
    require_node(&["openid-client", "oidc-provider", "playwright-core"]);
    let chromium = chromium();
    let started = Instant::now();

    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}/oauth2/people");
    let redirect_uri = format!("http://127.0.0.1:{}/callback", free_port());
    // Generated per run, never printed.
    let upstream_secret =
        format!("up-{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let files = tempfile::tempdir().unwrap();
    let upstream_log = files.path().join("upstream.log");
    let (_upstream, upstream_issuer) =
        start_upstream("tessera", &upstream_secret, &format!("{issuer}/v1/login/callback"), &upstream_log);

    std::fs::write(
        files.path().join("people.yaml"),
        upstream_manifests(&issuer, &upstream_issuer, &upstream_secret, &redirect_uri),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let _tessera = tessera_serve(files.path(), port, state.path(), None);

    let out = Command::new("node")
        .arg("signin.mjs")
        .current_dir(node_dir())
        .env("ISSUER", &issuer)
        .env("CLIENT_ID", "example-spa")
        .env_remove("CLIENT_SECRET")
        .env("REDIRECT_URI", &redirect_uri)
        .env("SCOPE", "openid profile email offline_access calendar:read")
        .env("UPSTREAM", "corp")
        .env("UPSTREAM_LOGIN", "ada")
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node signin.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let upstream_errors = || {
        let log = std::fs::read_to_string(&upstream_log).unwrap_or_default();
        log.lines().filter(|l| !l.contains("WARNING") && !l.contains("NOTICE")).collect::<Vec<_>>().join("\n")
    };
    assert!(
        out.status.success(),
        "signin.mjs failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nupstream (oidc-provider) errors:\n{}",
        upstream_errors()
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    println!("{}", serde_json::to_string_pretty(&result).unwrap());

    let pages: Vec<&str> = result["pages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(pages.first(), Some(&"tessera-login"), "{pages:?}");
    assert!(pages.contains(&"upstream-login"), "{pages:?}");
    assert!(pages.contains(&"tessera-consent"), "calendar:read needs consent at Tessera: {pages:?}");
    let scope: Vec<&str> = result["scope"].as_str().unwrap().split(' ').collect();
    for wanted in ["openid", "profile", "email", "offline_access", "calendar:read"] {
        assert!(scope.contains(&wanted), "granted scope {scope:?} lacks {wanted}");
    }
    assert_eq!(pages.last(), Some(&"callback"), "{pages:?}");
    let id = &result["id_token"];
    assert_eq!(id["iss"], issuer.as_str());
    assert_eq!(id["aud"], "example-spa");
    assert_eq!(id["sub"], "corp|ada", "sub is the upstream's sub, namespaced by the upstream");
    // With an access token issued, scope claims are userinfo's (OpenID Connect Core §5.4).
    assert!(id["email"].is_null() && id["name"].is_null(), "scope claims in the ID token: {id}");
    assert_eq!(id["groups"], serde_json::json!(["engines", "analysts"]));
    assert!(id["amr"].as_array().is_some_and(|a| !a.is_empty()), "amr: {}", id["amr"]);
    assert_eq!(result["id_token_typ"], "JWT");
    assert_eq!(result["id_token_alg"], "ES256");
    assert_eq!(result["has"], serde_json::json!({ "auth_time": true, "at_hash": true, "nonce": true }));
    assert_eq!(result["userinfo"]["sub"], "corp|ada");
    assert_eq!(result["userinfo"]["email"], "ada@example.org");
    assert_eq!(result["userinfo"]["name"], "Ada Lovelace");
    assert!(!result["rotated_refresh_reuse_error"].is_null(), "a rotated refresh token must be refused");
    assert!(!result["family_revoked_error"].is_null(), "reuse of a rotated refresh token revokes its family");
    assert_eq!(result["silent_pages"], serde_json::json!(["callback"]), "prompt=none with Tessera's session");
    assert_eq!(result["silent_sub"], "corp|ada");
    assert_eq!(
        result["after_logout"],
        serde_json::json!({ "error": "login_required", "state": "after-logout", "iss": issuer }),
        "after RP-initiated logout, prompt=none needs a new sign-in"
    );
    eprintln!("browser sign-in through the upstream: {:.1}s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------
// B. Kubernetes accepts Tessera's ID tokens.

/// A CA and a server certificate for 127.0.0.1, written as tls.crt/tls.key in `dir`;
/// returns the CA's PEM.
fn make_tls(dir: &Path) -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "tessera test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = server.signed_by(&key, &ca_issuer).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca_cert.pem()
}

fn static_user_manifests(issuer: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{ name: identity }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: people, namespace: identity }}
stringData:
  users.yaml: |
    - username: alice
      passwordHash: "{PASSWORD_HASH}"
      name: Alice Example
      email: alice@example.com
      groups: [payments-admins, developers]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthorizationServer
metadata: {{ name: people, namespace: identity }}
spec:
  issuer: {issuer}
  audiences: [api://people]
  identity:
    staticUsers: {{ secretName: people }}
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClaim
metadata: {{ name: groups, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  name: groups
  token: IdToken
  value: 'user == null ? null : user.groups'
  alwaysInclude: true
---
apiVersion: tessera.dev/v1alpha1
kind: AccessPolicy
metadata: {{ name: people, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  clients: {{ all: true }}
  rules:
    - name: kubectl
      grantTypes: ["urn:ietf:params:oauth:grant-type:device_code", refresh_token]
      scopes: [openid, profile, email, offline_access]
---
apiVersion: tessera.dev/v1alpha1
kind: AuthClient
metadata: {{ name: kubectl, namespace: identity }}
spec:
  serverRef: {{ name: people }}
  clientId: kubectl
  grantTypes: ["urn:ietf:params:oauth:grant-type:device_code", refresh_token]
  authentication: {{ method: None }}
"#
    )
}

fn authentication_config(issuer: &str, ca_pem: &str) -> String {
    let ca = ca_pem.lines().map(|l| format!("        {l}\n")).collect::<String>();
    format!(
        r#"apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
  - issuer:
      url: {issuer}
      audiences: [kubectl]
      certificateAuthority: |
{ca}    claimMappings:
      username: {{ claim: sub, prefix: "tessera:" }}
      groups: {{ claim: groups, prefix: "tessera:" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_accepts_id_token() {
    let kubectl = Command::new("kubectl").args(["version", "--client"]).output();
    assert!(
        kubectl.is_ok_and(|o| o.status.success()),
        "prerequisite missing: kubectl. Install it with: apt-get install kubernetes-client"
    );
    let started = Instant::now();
    let port = free_port();
    let issuer = format!("https://127.0.0.1:{port}/oauth2/people");
    let work = tempfile::tempdir().unwrap();
    let (files, tls, state) = (work.path().join("files"), work.path().join("tls"), work.path().join("state"));
    for dir in [&files, &tls, &state] {
        std::fs::create_dir(dir).unwrap();
    }
    let ca_pem = make_tls(&tls);
    std::fs::write(files.join("people.yaml"), static_user_manifests(&issuer)).unwrap();
    let _tessera = tessera_serve(&files, port, &state, Some(&tls));

    let auth_config = work.path().join("authentication-config.yaml");
    std::fs::write(&auth_config, authentication_config(&issuer, &ca_pem)).unwrap();
    let arg = format!("--authentication-config={}", auth_config.display());
    let plane = tokio::task::spawn_blocking(move || support::start_dedicated(&[arg])).await.unwrap();

    let browser = Agent::new(&ca_pem);
    let tokens = browser.device_flow(&issuer, "kubectl", "alice", PASSWORD).await;
    let id_token = tokens["id_token"].as_str().expect("an ID token from the device flow");

    // The API server fetches Tessera's discovery and keys in the background after it starts:
    // retry until it accepts the token (or give up after 60s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let review = loop {
        match whoami(&plane, work.path(), id_token).await {
            Ok(review) => break review,
            Err(stderr) => assert!(
                Instant::now() < deadline,
                "kubectl auth whoami with the ID token kept failing: {stderr}\nkube-apiserver log: {}",
                plane.data_dir.join("testenv.log").display()
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let user = &review["status"]["userInfo"];
    println!("kubectl auth whoami: {user}");
    assert_eq!(user["username"], "tessera:static|alice");
    let groups: Vec<&str> = user["groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    for group in ["tessera:payments-admins", "tessera:developers", "system:authenticated"] {
        assert!(groups.contains(&group), "groups {groups:?} lack {group}");
    }

    // Refused: the access token (its audience is the API's, not kubectl) and an ID token
    // whose signature was tampered with.
    let access_token = tokens["access_token"].as_str().unwrap();
    let refused = whoami(&plane, work.path(), access_token).await.expect_err("the access token must be refused");
    assert!(refused.contains("Unauthorized"), "{refused}");
    let signature_at = id_token.rfind('.').unwrap() + 10;
    let flipped = if &id_token[signature_at..=signature_at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &id_token[..signature_at], &id_token[signature_at + 1..]);
    let refused = whoami(&plane, work.path(), &tampered).await.expect_err("a tampered ID token must be refused");
    assert!(refused.contains("Unauthorized"), "{refused}");
    eprintln!("kubernetes sign-in with a Tessera ID token: {:.1}s", started.elapsed().as_secs_f64());
}

/// `kubectl auth whoami` with `token` as the only credential: the SelfSubjectReview, or stderr.
async fn whoami(plane: &support::ControlPlane, dir: &Path, token: &str) -> Result<Value, String> {
    // A kubeconfig with only the cluster of the admin kubeconfig, and the token as user.
    let admin: Value = serde_norway::from_str(&std::fs::read_to_string(&plane.kubeconfig).unwrap()).unwrap();
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "test", "cluster": admin["clusters"][0]["cluster"] }],
        "users": [{ "name": "person", "user": { "token": token } }],
        "contexts": [{ "name": "person", "context": { "cluster": "test", "user": "person" } }],
        "current-context": "person",
    });
    let path = dir.join("person.kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&path)
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .await
        .expect("run kubectl");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

// ---------------------------------------------------------------------------------------
// A browser without a browser: follows redirects, keeps cookies, fills HTML forms.

struct Agent {
    http: reqwest::Client,
    cookies: std::sync::Mutex<BTreeMap<String, String>>,
}

struct Page {
    url: reqwest::Url,
    status: u16,
    body: String,
}

#[derive(Debug)]
struct Form {
    action: String,
    method: String,
    /// Inputs (hidden ones with their values) in document order.
    fields: Vec<(String, String, String)>,
    /// Submit buttons: (name, value).
    buttons: Vec<(String, String)>,
}

impl Agent {
    fn new(ca_pem: &str) -> Self {
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self { http, cookies: Default::default() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep_cookies(&self, response: &reqwest::Response) {
        let mut jar = self.cookies.lock().unwrap();
        for header in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = header.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else { continue };
            let expired = text.to_ascii_lowercase().contains("max-age=0") || value.is_empty();
            if expired {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    /// Sends a request and follows redirects (303/302 as GET), keeping cookies.
    async fn request(&self, method: reqwest::Method, url: reqwest::Url, form: Option<Vec<(String, String)>>) -> Page {
        let (mut method, mut url, mut form) = (method, url, form);
        for _ in 0..10 {
            let mut req = self.http.request(method.clone(), url.clone()).header("cookie", self.cookie_header());
            if let Some(fields) = &form {
                req = req.form(fields);
            }
            let response = req.send().await.unwrap_or_else(|e| panic!("{method} {}: {e}", url.path()));
            self.keep_cookies(&response);
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()["location"].to_str().unwrap().to_owned();
                url = url.join(&location).unwrap();
                if status != reqwest::StatusCode::TEMPORARY_REDIRECT
                    && status != reqwest::StatusCode::PERMANENT_REDIRECT
                {
                    method = reqwest::Method::GET;
                    form = None;
                }
                continue;
            }
            let body = response.text().await.unwrap();
            return Page { url, status: status.as_u16(), body };
        }
        panic!("too many redirects from {}", url.path());
    }

    async fn submit(&self, page: &Page, form: &Form, fill: &[(&str, &str)], button: Option<(&str, &str)>) -> Page {
        let mut fields: Vec<(String, String)> = Vec::new();
        for (name, _kind, value) in &form.fields {
            let value = fill.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_string()).unwrap_or(value.clone());
            fields.push((name.clone(), value));
        }
        for (name, value) in fill {
            if !fields.iter().any(|(n, _)| n == name) {
                fields.push((name.to_string(), value.to_string()));
            }
        }
        if let Some((name, value)) = button {
            fields.push((name.to_owned(), value.to_owned()));
        }
        let action = if form.action.is_empty() { page.url.clone() } else { page.url.join(&form.action).unwrap() };
        let method = if form.method.eq_ignore_ascii_case("get") { reqwest::Method::GET } else { reqwest::Method::POST };
        if method == reqwest::Method::GET {
            let mut url = action;
            url.query_pairs_mut().clear().extend_pairs(&fields);
            self.request(method, url, None).await
        } else {
            self.request(method, action, Some(fields)).await
        }
    }

    /// RFC 8628 device flow of a public client, approved by a static user on Tessera's
    /// pages; returns the token response.
    async fn device_flow(&self, issuer: &str, client_id: &str, username: &str, password: &str) -> Value {
        let token_endpoint = format!("{issuer}/v1/token");
        let authorization: Value = self
            .http
            .post(format!("{issuer}/v1/device/authorize"))
            .form(&[("client_id", client_id), ("scope", "openid profile email")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let user_code = authorization["user_code"].as_str().unwrap_or_else(|| panic!("no user_code: {authorization}"));
        let device_code = authorization["device_code"].as_str().unwrap().to_owned();
        let verification = authorization["verification_uri"].as_str().unwrap();
        assert_eq!(verification, format!("{issuer}/v1/device"));

        // Before approval, polling says authorization_pending.
        let pending = self.poll(&token_endpoint, client_id, &device_code).await;
        assert_eq!(pending["error"], "authorization_pending", "{pending}");

        let mut page = self.request(reqwest::Method::GET, verification.parse().unwrap(), None).await;
        let mut seen = Vec::new();
        for _ in 0..8 {
            assert_eq!(page.status, 200, "{}: {}", page.url.path(), text_of(&page.body));
            let forms = forms(&page.body);
            let has = |f: &Form, name: &str| f.fields.iter().any(|(n, _, _)| n == name);
            if let Some(form) = forms.iter().find(|f| has(f, "user_code")) {
                seen.push("user-code");
                page = self.submit(&page, form, &[("user_code", user_code)], None).await;
            } else if let Some(form) = forms.iter().find(|f| has(f, "password")) {
                seen.push("login");
                page = self.submit(&page, form, &[("username", username), ("password", password)], None).await;
            } else if let Some(form) =
                forms.iter().find(|f| f.buttons.iter().any(|(n, v)| n == "decision" && v == "allow"))
            {
                seen.push("approve");
                page = self.submit(&page, form, &[], Some(("decision", "allow"))).await;
            } else {
                break;
            }
        }
        assert!(seen.contains(&"login") && seen.contains(&"approve"), "device pages seen: {seen:?}");
        eprintln!("device flow pages: {seen:?}, then {}", text_of(&page.body));

        // Poll at the pace the server asked for (RFC 8628 §3.5).
        let mut interval = authorization["interval"].as_u64().unwrap_or(5);
        let deadline = Instant::now() + Duration::from_secs(60);
        let tokens = loop {
            tokio::time::sleep(Duration::from_secs(interval)).await;
            let answer = self.poll(&token_endpoint, client_id, &device_code).await;
            match answer["error"].as_str() {
                None => break answer,
                Some("authorization_pending") => {}
                Some("slow_down") => interval += 5,
                Some(error) => panic!("device token request failed: {error}: {}", answer["error_description"]),
            }
            assert!(Instant::now() < deadline, "device flow: no tokens after 60s");
        };
        assert_eq!(tokens["token_type"], "Bearer");
        tokens
    }

    async fn poll(&self, token_endpoint: &str, client_id: &str, device_code: &str) -> Value {
        self.http
            .post(token_endpoint)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", client_id),
                ("device_code", device_code),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The visible text of a page, shortened, for failure messages.
fn text_of(html: &str) -> String {
    let html = match (html.find("<style"), html.find("</style>")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &html[..a], &html[b + 8..]),
        _ => html.to_owned(),
    };
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    text.chars().take(400).collect()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Attributes of the tag starting at `tag` (just after its name) up to '>'.
fn attributes(tag: &str) -> BTreeMap<String, String> {
    let end = tag.find('>').unwrap_or(tag.len());
    let mut rest = &tag[..end];
    let mut attrs = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '/').unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (value, tail) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let close = after[1..].find(q).map(|i| i + 1).unwrap_or(after.len());
                    (&after[1..close], after.get(close + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            rest = tail;
            unescape(value)
        } else {
            String::new()
        };
        if name.is_empty() {
            break;
        }
        attrs.insert(name, value);
    }
    attrs
}

/// The forms of a page: inputs, and buttons (or submit inputs) with a name.
fn forms(html: &str) -> Vec<Form> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<form").map(|i| i + at) {
        let end = lower[start..].find("</form").map(|i| i + start).unwrap_or(html.len());
        let attrs = attributes(&html[start + 5..]);
        let mut form = Form {
            action: attrs.get("action").cloned().unwrap_or_default(),
            method: attrs.get("method").cloned().unwrap_or_else(|| "get".into()),
            fields: Vec::new(),
            buttons: Vec::new(),
        };
        let body = &html[start..end];
        let body_lower = &lower[start..end];
        for (tag, len) in [("<input", 6), ("<button", 7)] {
            let mut i = 0;
            while let Some(pos) = body_lower[i..].find(tag).map(|p| p + i) {
                let a = attributes(&body[pos + len..]);
                let name = a.get("name").cloned().unwrap_or_default();
                let kind =
                    a.get("type").cloned().unwrap_or_else(|| if len == 7 { "submit".into() } else { "text".into() });
                let value = a.get("value").cloned().unwrap_or_default();
                if kind == "submit" || kind == "image" {
                    form.buttons.push((name, value));
                } else if !name.is_empty() {
                    form.fields.push((name, kind, value));
                }
                i = pos + len;
            }
        }
        out.push(form);
        at = end.max(start + 5);
    }
    out
}

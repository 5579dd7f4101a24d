//! The image `scripts/image` writes without Docker is the image the Dockerfile describes: the
//! final stage's user, entry point, command, ports, environment, working directory and labels
//! are the image config's; the binary the Dockerfile copies is there, with the libraries it
//! links, the CA bundle and the nonroot user of distroless, and nothing else (no shell). The
//! image is built from the test binary (`--binary`, the dev profile: no release build in CI),
//! unpacked, and run: `tessera serve` from it, in a chroot as uid 65532, serves discovery and
//! stops on SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What the final stage of the Dockerfile declares.
#[derive(Debug, Default)]
struct FinalStage {
    from: String,
    user: String,
    workdir: String,
    entrypoint: Value,
    cmd: Value,
    exposed: BTreeSet<String>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    /// Destinations of its COPY instructions.
    copied: Vec<String>,
    /// Instructions this test does not compare (RUN, ...): none may be in the final stage.
    others: Vec<String>,
}

/// `key=value` words, values in double quotes or bare, as LABEL and ENV take them.
fn pairs(args: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = args.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('='), "{key} without a value in {args:?}");
        let value: String = if chars.next_if_eq(&'"').is_some() {
            let v = std::iter::from_fn(|| chars.next_if(|c| *c != '"')).collect();
            assert_eq!(chars.next(), Some('"'), "unterminated quote in {args:?}");
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect()
        };
        out.insert(key.trim().to_owned(), value);
    }
}

fn final_stage(dockerfile: &str) -> FinalStage {
    let joined = dockerfile.replace("\\\n", " ");
    let mut stage = FinalStage::default();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (instruction, args) = line.split_once(' ').unwrap_or((line, ""));
        let args = args.trim();
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => stage = FinalStage { from: args.to_owned(), ..FinalStage::default() },
            "USER" => stage.user = args.to_owned(),
            "WORKDIR" => stage.workdir = args.to_owned(),
            "ENTRYPOINT" => stage.entrypoint = serde_json::from_str(args).expect("ENTRYPOINT in exec form"),
            "CMD" => stage.cmd = serde_json::from_str(args).expect("CMD in exec form"),
            "EXPOSE" => stage.exposed.extend(
                args.split_whitespace().map(|p| if p.contains('/') { p.to_owned() } else { format!("{p}/tcp") }),
            ),
            "ENV" => stage.env.extend(pairs(args)),
            "LABEL" => stage.labels.extend(pairs(args)),
            "COPY" => stage.copied.push(args.split_whitespace().last().unwrap().to_owned()),
            other => stage.others.push(other.to_owned()),
        }
    }
    assert!(stage.others.is_empty(), "the final stage has {:?}, which this test does not compare", stage.others);
    stage
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A blob of the layout, its digest and size checked against `descriptor`.
fn blob(layout: &Path, descriptor: &Value) -> (PathBuf, Vec<u8>) {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(sha256_hex(&bytes), hex, "blob {digest}");
    assert_eq!(bytes.len() as u64, descriptor["size"].as_u64().unwrap(), "size of {digest}");
    (path, bytes)
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", out.status);
    out.stdout
}

/// One entry of a layer: its `tar -tv` mode string, owner and group.
#[derive(Debug, Clone)]
struct Entry {
    mode: String,
    owner: String,
}

/// The entries of a gzipped layer, by path (no leading `/`, no trailing `/`).
fn list_layer(layer: &Path) -> BTreeMap<String, Entry> {
    let listing = run(Command::new("tar").arg("--numeric-owner").arg("-tvzf").arg(layer));
    String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let path = words[5..].join(" ").trim_end_matches('/').to_owned();
            (path, Entry { mode: words[0].to_owned(), owner: words[1].to_owned() })
        })
        .collect()
}

/// The libraries `ldd` resolves for `binary`, as paths without a leading `/`.
fn linked_libraries(binary: &str) -> BTreeSet<String> {
    let text = String::from_utf8(run(Command::new("ldd").arg(binary))).unwrap();
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once(" => ").map_or(l, |(_, p)| p);
            path.starts_with('/').then(|| path.split_whitespace().next().unwrap().trim_start_matches('/').to_owned())
        })
        .collect()
}

#[test]
fn the_image_built_without_docker_is_the_one_the_dockerfile_describes() {
    let binary = env!("CARGO_BIN_EXE_tessera");
    let stage = final_stage(&std::fs::read_to_string(repo().join("Dockerfile")).unwrap());
    assert_eq!(stage.from, "gcr.io/distroless/cc-debian12:nonroot", "a new base: check what it holds, then this test");
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let printed =
        run(Command::new(repo().join("scripts/image")).arg("--binary").arg(binary).arg("--out").arg(out.path()));
    eprintln!(
        "scripts/image --binary (dev profile, {} MB): {:?}",
        std::fs::metadata(binary).unwrap().len() >> 20,
        started.elapsed()
    );
    let archive = PathBuf::from(String::from_utf8(printed).unwrap().lines().last().unwrap());
    assert_eq!(archive, out.path().join("tessera.tar"));
    let layout = out.path().join("oci");

    // The layout: one manifest, named as the chart names its default image.
    assert_eq!(json_of(&std::fs::read(layout.join("oci-layout")).unwrap()), json!({ "imageLayoutVersion": "1.0.0" }));
    let index = json_of(&std::fs::read(layout.join("index.json")).unwrap());
    let [descriptor] = index["manifests"].as_array().unwrap().as_slice() else { panic!("{index}") };
    let name = format!("ghcr.io/tessera-dev/tessera:{}", env!("CARGO_PKG_VERSION"));
    let values = std::fs::read_to_string(repo().join("charts/tessera/values.yaml")).unwrap();
    assert!(values.contains("repository: ghcr.io/tessera-dev/tessera\n"), "the chart's image repository changed");
    assert_eq!(descriptor["annotations"]["io.containerd.image.name"], name);
    assert_eq!(descriptor["annotations"]["org.opencontainers.image.ref.name"], env!("CARGO_PKG_VERSION"));
    let manifest = json_of(&blob(&layout, descriptor).1);
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let config = json_of(&blob(&layout, &manifest["config"]).1);
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some("amd64")));

    // The config is the final stage's.
    let c = &config["config"];
    assert_eq!(c["User"], stage.user);
    assert_eq!(c["Entrypoint"], stage.entrypoint);
    assert_eq!(c["Cmd"], stage.cmd);
    assert_eq!(c["WorkingDir"], stage.workdir);
    let exposed: BTreeSet<String> = c["ExposedPorts"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(exposed, stage.exposed);
    let labels: BTreeMap<String, String> = serde_json::from_value(c["Labels"].clone()).unwrap();
    assert_eq!(labels, stage.labels);
    let env: BTreeMap<String, String> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).unwrap())
        .collect();
    for (key, value) in &stage.env {
        assert_eq!(env.get(key), Some(value), "ENV {key}");
    }
    let from_base: Vec<&String> = env.keys().filter(|k| !stage.env.contains_key(*k)).collect();
    assert_eq!(from_base, ["PATH"], "environment the Dockerfile does not declare (distroless sets PATH)");

    // The layers: each as its diff_id says, together exactly the files the stage holds.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), config["rootfs"]["diff_ids"].as_array().unwrap().len());
    let rootfs = out.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let mut entries = BTreeMap::new();
    for (layer, diff_id) in layers.iter().zip(config["rootfs"]["diff_ids"].as_array().unwrap()) {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let (path, _) = blob(&layout, layer);
        let tar = run(Command::new("gzip").arg("-dc").arg(&path));
        assert_eq!(format!("sha256:{}", sha256_hex(&tar)), diff_id.as_str().unwrap(), "diff_id of {path:?}");
        entries.extend(list_layer(&path));
        run(Command::new("tar").arg("--numeric-owner").arg("-xzf").arg(&path).arg("-C").arg(&rootfs));
    }
    let files: BTreeSet<String> =
        entries.iter().filter(|(_, e)| !e.mode.starts_with('d')).map(|(p, _)| p.clone()).collect();
    let libraries = linked_libraries(binary);
    assert!(libraries.iter().any(|l| l.ends_with("/libc.so.6")), "{libraries:?}");
    let mut expected: BTreeSet<String> =
        ["etc/passwd", "etc/group", "etc/nsswitch.conf", "etc/ssl/certs/ca-certificates.crt"].map(String::from).into();
    expected.extend(stage.copied.iter().map(|d| d.trim_start_matches('/').to_owned()));
    expected.extend(libraries.iter().cloned());
    assert_eq!(files, expected, "the image holds other files than the binary, its libraries, the CA bundle and users");
    for (path, entry) in &entries {
        assert!(entry.mode.starts_with(['d', '-']), "{path} is a {}: no links or devices", entry.mode);
    }
    assert!(!rootfs.join("bin").exists() && !rootfs.join("usr/bin").exists(), "no shell, no tools");

    // The files are the ones of this machine, the binary the one given.
    let copied = stage.copied[0].trim_start_matches('/');
    assert_eq!(std::fs::read(rootfs.join(copied)).unwrap(), std::fs::read(binary).unwrap());
    assert_eq!(entries[copied].mode, "-rwxr-xr-x");
    for library in &libraries {
        let host = std::fs::canonicalize(Path::new("/").join(library)).unwrap();
        assert_eq!(std::fs::read(rootfs.join(library)).unwrap(), std::fs::read(host).unwrap(), "{library}");
    }
    let bundle = std::fs::read(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert_eq!(bundle, std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap());
    assert!(String::from_utf8_lossy(&bundle).contains("BEGIN CERTIFICATE"));
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:nonroot:/home/nonroot:")), "{passwd}");
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
    assert_eq!(
        (entries["home/nonroot"].mode.as_str(), entries["home/nonroot"].owner.as_str()),
        ("drwx------", "65532/65532")
    );
    assert_eq!(entries["tmp"].mode, "drwxrwxrwt");

    // The archive: the same layout in one file, with Docker's manifest.json too.
    let listed = String::from_utf8(run(Command::new("tar").arg("-tf").arg(&archive))).unwrap();
    let listed: BTreeSet<&str> = listed.lines().collect();
    for path in ["oci-layout", "index.json", "manifest.json"] {
        assert!(listed.contains(path), "{path} not in the archive: {listed:?}");
    }
    for d in layers.iter().chain([&manifest["config"], descriptor]) {
        let path = format!("blobs/sha256/{}", d["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        assert!(listed.contains(path.as_str()), "{path} not in the archive");
    }
    let docker = json_of(&std::fs::read(layout.join("manifest.json")).unwrap());
    assert_eq!(docker[0]["RepoTags"], json!([name]));
    assert_eq!(docker[0]["Layers"].as_array().unwrap().len(), layers.len());

    // Reproducible: the same binary and commit give the same image, byte for byte.
    let again = tempfile::tempdir().unwrap();
    run(Command::new(repo().join("scripts/image")).arg("--binary").arg(binary).arg("--out").arg(again.path()));
    let index_again = json_of(&std::fs::read(again.path().join("oci/index.json")).unwrap());
    assert_eq!(index_again, index, "a second build of the same binary gave another image");

    serve_from_the_image(&rootfs, &stage, &env);
}

/// The body of a 200 answer to `GET path` on a loopback port.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// `tessera serve`, started from the unpacked image as its entry point and user would start
/// it, answers discovery and exits 0 on SIGTERM.
fn serve_from_the_image(rootfs: &Path, stage: &FinalStage, env: &BTreeMap<String, String>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}/oauth2/payments");
    let yaml = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: AuthorizationServer\nmetadata: {{ name: payments, namespace: identity }}\n\
         spec: {{ issuer: \"{issuer}\", audiences: [api://payments], signing: {{ algorithm: ES256 }} }}\n"
    );
    std::fs::write(rootfs.join("tmp/server.yaml"), yaml).unwrap();
    let entrypoint: Vec<String> = serde_json::from_value(stage.entrypoint.clone()).unwrap();
    let is_root = String::from_utf8(run(Command::new("id").arg("-u"))).unwrap().trim() == "0";
    let mut cmd = if is_root {
        let mut c = Command::new("chroot");
        c.arg(format!("--userspec={}", stage.user)).arg(rootfs);
        c
    } else {
        // Not root: a user namespace of our own (as its root, not as 65532).
        let mut c = Command::new("unshare");
        c.arg("--map-root-user").arg(format!("--root={}", rootfs.display()));
        c
    };
    let serve = ["serve", "-f", "/tmp/server.yaml", "--state-dir", "/tmp/state", "--listen"];
    cmd.args(&entrypoint).args(serve).arg(format!("127.0.0.1:{port}"));
    // The image's environment only (its PATH also finds chroot on this machine).
    cmd.env_clear().envs(env).env("RUST_LOG", "warn");
    let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some(body) = get(port, "/oauth2/payments/.well-known/openid-configuration") {
            break body;
        }
        assert!(child.try_wait().unwrap().is_none(), "tessera serve from the image exited");
        assert!(Instant::now() < deadline, "tessera serve from the image never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(json_of(body.as_bytes())["issuer"], issuer);
    run(Command::new("kill").arg("-TERM").arg(child.id().to_string()));
    let status = child.wait().unwrap();
    assert!(status.success(), "tessera serve from the image exited with {status} on SIGTERM");
}

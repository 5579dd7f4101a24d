use std::os::unix::fs::PermissionsExt;

use super::*;

fn examples() -> Manifests {
    load(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")]).unwrap()
}

#[test]
fn examples_compile_without_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let m = examples();
    let compiled = compile_all(&m, Some(&StateDir::new(dir.path().into()))).unwrap();
    assert_eq!(compiled.len(), 1);
    let c = &compiled[0];
    assert!(c.rejected.is_empty(), "{:?}", c.rejected);
    let ids: Vec<_> = c.config.clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(
        ids,
        ["team-orders.example-spa", "team-orders.orders-admin", "team-orders.orders-api", "team-orders.orders-worker"]
    );
    assert_eq!(c.config.scopes.len(), 3);
    let identity = c.config.identity.as_ref().expect("the examples sign people in");
    let users: Vec<_> = identity.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(users, ["alice"]);
    assert_eq!(identity.session_lifetime_secs, 8 * 3600);
}

#[test]
fn identity_secrets_are_read_from_secret_manifests_in_any_encoding() {
    let mut m = examples();
    m.servers[0].spec.identity = Some(
        serde_norway::from_str(
            "upstreams: [ { name: corp, issuer: 'https://sso.example.com', clientId: tessera, clientSecretRef: { name: corp-oidc, key: secret } } ]\nstaticUsers: { secretName: people }\n",
        )
        .unwrap(),
    );
    // base64 `data`, any key name
    manifests::add_documents(
        &mut m,
        std::path::Path::new("corp.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: { name: corp-oidc, namespace: identity }\ndata: { secret: Y29ycC1zZWNyZXQ= }\n",
    )
    .unwrap();
    let config = compile_for_serving(&m, None).unwrap().remove(0).config;
    let identity = config.identity.unwrap();
    assert_eq!(identity.upstreams[0].client_secret, "corp-secret");
    assert_eq!(identity.users.len(), 1);
}

#[test]
fn missing_identity_secret_is_a_startup_error_naming_it() {
    let mut m = examples();
    m.secrets.clear();
    assert!(compile_all(&m, None).unwrap()[0].server_error.is_some(), "preview still compiles");
    let err = compile_for_serving(&m, None).unwrap_err().to_string();
    assert_eq!(
        err,
        "AuthorizationServer identity/payments: spec.identity: Secret identity/people (static users) was not found"
    );
}

#[test]
fn generated_secret_is_stored_once_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().into());
    let a = state.client_secret("identity", "payments", "team.a", "http://127.0.0.1:8080/oauth2/payments").unwrap();
    let b = state.client_secret("identity", "payments", "team.a", "http://127.0.0.1:8080/oauth2/payments").unwrap();
    assert_eq!(a, b);
    assert!(a.len() >= 43);
    let path = state.client_file("identity", "payments", "team.a").unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let creds: ClientCredentials = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(creds.token_endpoint, "http://127.0.0.1:8080/oauth2/payments/v1/token");
}

#[test]
fn secret_from_a_secret_manifest_wins_over_generation() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = examples();
    manifests::add_documents(
        &mut m,
        std::path::Path::new("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: { name: orders-api-oauth, namespace: team-orders }\nstringData: { client_secret: from-file }\n",
    )
    .unwrap();
    let state = StateDir::new(dir.path().into());
    let compiled = compile_all(&m, Some(&state)).unwrap();
    let api = compiled[0].config.client("team-orders.orders-api").unwrap();
    assert_eq!(api.secret_hashes, vec![crate::config::hash_secret("from-file")]);
    assert!(!state.client_file("identity", "payments", "team-orders.orders-api").unwrap().exists());
}

#[test]
fn keys_are_created_on_first_run_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().into());
    let m = examples();
    let config = compile_all(&m, Some(&state)).unwrap().remove(0).config;
    let now = jiff::Timestamp::now();
    let (first, due) = state.rotate_keys(&config, now).unwrap();
    assert_eq!(first.keys.len(), 2, "the signing key and its Next key");
    assert!(due.is_some());
    let (again, _) = state.rotate_keys(&config, now).unwrap();
    assert_eq!(first, again);
}

#[test]
fn servers_of_one_name_in_two_namespaces_keep_their_own_keys_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().into());
    let mut m = examples();
    let mut twin = m.servers[0].clone();
    twin.metadata.namespace = Some("other".into());
    m.servers.push(twin);
    let compiled = compile_all(&m, Some(&state)).unwrap();
    let (a, b) = (&compiled[0].config, &compiled[1].config);
    assert_eq!((a.name.as_str(), b.name.as_str()), ("payments", "payments"));
    assert_ne!(a.namespace, b.namespace);
    let now = jiff::Timestamp::now();
    let (keys_a, _) = state.rotate_keys(a, now).unwrap();
    let (keys_b, _) = state.rotate_keys(b, now).unwrap();
    assert_ne!(keys_a, keys_b, "each server has its own signing keys");
    let issuer = "http://127.0.0.1:8080/oauth2/payments";
    let secret_a = state.client_secret("identity", "payments", "x.y", issuer).unwrap();
    let secret_b = state.client_secret("other", "payments", "x.y", issuer).unwrap();
    assert_ne!(secret_a, secret_b, "and its own client secrets");
    assert!(dir.path().join("identity/payments/keys.json").is_file());
    assert!(dir.path().join("other/payments/keys.json").is_file());
}

#[test]
fn state_of_earlier_versions_moves_under_its_namespace_when_the_name_is_unambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().into());
    let m = examples();
    let config = compile_all(&m, None).unwrap().remove(0).config;
    // An earlier version's layout: .tessera/<server>/{keys.json,clients/}.
    let (keys, _) = state.rotate_keys(&config, jiff::Timestamp::now()).unwrap();
    std::fs::rename(dir.path().join("identity/payments"), dir.path().join("payments")).unwrap();
    let one = [("identity".to_owned(), "payments".to_owned())];
    let notes = state.migrate_unnamespaced(&one);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(!dir.path().join("payments").exists());
    let (again, _) = state.rotate_keys(&config, jiff::Timestamp::now()).unwrap();
    assert_eq!(keys, again, "the keys moved, none were generated");

    // Two servers of that name: nobody can tell whose it was, so it stays.
    std::fs::rename(dir.path().join("identity/payments"), dir.path().join("payments")).unwrap();
    let two = [one[0].clone(), ("other".to_owned(), "payments".to_owned())];
    let notes = state.migrate_unnamespaced(&two);
    assert!(notes[0].contains("left in place"), "{notes:?}");
    assert!(dir.path().join("payments/keys.json").is_file());
}

#[test]
fn rotate_promotes_a_next_key_published_long_enough_and_publishes_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")];
    let state = StateDir::new(dir.path().into());
    let config = compile_for_serving(&examples(), Some(&state)).unwrap().remove(0).config;
    let t0 = jiff::Timestamp::now();
    let (keys, _) = state.rotate_keys(&config, t0).unwrap();
    let next = keys.keys.iter().find(|k| k.activates_at > t0).unwrap().kid.clone();
    let options = RotateOptions { files, state_dir: dir.path().into(), server: Some("payments".into()), revoke: false };
    let young = rotate(&options, t0).unwrap_err().to_string();
    assert!(young.contains("prePublish"), "{young}");
    let later = t0 + jiff::SignedDuration::from_secs(config.signing.pre_publish_secs as i64 + 1);
    let said = rotate(&options, later).unwrap();
    assert_eq!(said, [format!("identity/payments: {next} signs; 3 key(s) published")]);
    let (keys, _) = state.rotate_keys(&config, later).unwrap();
    assert_eq!(keys.signing_key(later).unwrap().kid, next);
    assert_eq!(keys.keys.iter().filter(|k| k.activates_at > later).count(), 1, "a new Next key");
    let other = RotateOptions { server: Some("elsewhere".into()), ..options };
    assert!(rotate(&other, later).unwrap_err().to_string().contains("no AuthorizationServer elsewhere"));
}

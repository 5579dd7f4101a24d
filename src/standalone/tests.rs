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
    assert_eq!(ids, ["team-orders.orders-admin", "team-orders.orders-api", "team-orders.orders-worker"]);
    assert_eq!(c.config.scopes.len(), 3);
}

#[test]
fn generated_secret_is_stored_once_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().into());
    let a = state.client_secret("payments", "team.a", "http://127.0.0.1:8080/oauth2/payments").unwrap();
    let b = state.client_secret("payments", "team.a", "http://127.0.0.1:8080/oauth2/payments").unwrap();
    assert_eq!(a, b);
    assert!(a.len() >= 43);
    let path = state.client_file("payments", "team.a").unwrap();
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
    assert!(!state.client_file("payments", "team-orders.orders-api").unwrap().exists());
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

//! Client credentials: a 256-bit secret per AuthClient, written once to the Secret named by
//! `spec.authentication.secretName` in the client's namespace. Only its hash leaves here.

use std::{collections::BTreeMap, time::Instant};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};

use super::{
    Context, Error, MANAGER,
    applied::{self, ClientSecretMemo, Key, Memo},
};
use crate::api::{AuthClient, AuthorizationServer, Endpoints};

pub const SERVER_NAMESPACE_LABEL: &str = "tessera.dev/server-namespace";
pub const SERVER_NAME_LABEL: &str = "tessera.dev/server-name";
pub const CLIENT_SECRET_KEY: &str = "client_secret";
const PREVIOUS_SECRET_KEY: &str = "previous_client_secret";
const PREVIOUS_VALID_UNTIL_KEY: &str = "previous_valid_until";
/// On the client: any new value issues a new secret (`kubectl tessera rotate-secret`).
pub const ROTATE_SECRET_ANNOTATION: &str = "tessera.dev/rotate-secret";
const ROTATE_SECRET_HANDLED: &str = "tessera.dev/rotate-secret-handled";
/// How long the previous secret stays valid after a rotation, so that workloads can roll.
pub const SECRET_OVERLAP: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// Hashes of the secrets a client may present now, and when the set next changes.
pub struct ClientSecrets {
    pub hashes: Vec<String>,
    pub changes_at: Option<jiff::Timestamp>,
}

impl ClientSecrets {
    fn of(valid: impl IntoIterator<Item = String>, changes_at: Option<jiff::Timestamp>) -> Self {
        Self { hashes: valid.into_iter().map(|s| crate::config::hash_secret(&s)).collect(), changes_at }
    }
}

fn field(secret: &Secret, key: &str) -> Option<String> {
    let data = secret.data.as_ref()?.get(key)?;
    String::from_utf8(data.0.clone()).ok()
}

fn new_secret() -> Result<String, Error> {
    Ok(crate::keys::generate_client_secret()?)
}

/// Ensures the client's Secret exists with a secret and the server's current endpoints, and
/// carries out a requested secret rotation (the previous secret stays valid for
/// `SECRET_OVERLAP`); returns the valid secrets (to hash) without ever logging them.
pub async fn ensure(ctx: &Context, server: &AuthorizationServer, client: &AuthClient) -> Result<ClientSecrets, Error> {
    ensure_with(ctx, server, client, true).await
}

/// `ensure`; with `trust_absent`, a Secret the watches know to be absent is not read first.
async fn ensure_with(
    ctx: &Context,
    server: &AuthorizationServer,
    client: &AuthClient,
    trust_absent: bool,
) -> Result<ClientSecrets, Error> {
    let ns = client.namespace().unwrap_or_default();
    let name = client.secret_name();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let now = jiff::Timestamp::now();
    let asked = client.annotations().get(ROTATE_SECRET_ANNOTATION).cloned();
    // What the Secret's content depends on besides its secrets: while none of it changed, no
    // rotation is asked for, no previous secret expired and nobody else wrote the Secret (the
    // owned-Secret watch), the hashes we kept of our last write or read answer without a GET.
    let key = Key::new("Secret", &ns, &name);
    let inputs = applied::digest(&(
        client.client_id(),
        &server.spec.issuer,
        server.namespace(),
        server.name_any(),
        client.uid(),
        &asked,
    ));
    if let Some(Memo::ClientSecret(memo)) = ctx.applied.unchanged(&key, inputs, Instant::now())
        && memo.changes_at.is_none_or(|t| t > now)
    {
        return Ok(ClientSecrets { hashes: memo.hashes, changes_at: memo.changes_at });
    }
    let guessed = trust_absent && ctx.existing.absent(&key);
    let existing = if guessed { None } else { api.get_opt(&name).await? };
    let (secret, previous) = secrets_to_hold(existing.as_ref(), asked.as_ref(), now)?;
    let result = ClientSecrets::of(
        std::iter::once(secret.clone()).chain(previous.iter().map(|(s, _)| s.clone())),
        previous.as_ref().map(|(_, until)| *until),
    );
    let remember = |version: Option<String>, result: &ClientSecrets| {
        let memo = ClientSecretMemo { hashes: result.hashes.clone(), changes_at: result.changes_at };
        ctx.applied.record(key, inputs, version.as_deref(), 0, Memo::ClientSecret(Box::new(memo)), Instant::now())
    };
    let desired = desired_secret(server, client, secret, previous, asked);
    if let Some(existing) = existing.as_ref().filter(|s| up_to_date(s, &desired)) {
        remember(existing.metadata.resource_version.clone(), &result);
        return Ok(result);
    }
    if existing.is_none() {
        // Create, not apply: if another reconcile created it meanwhile, keep its secret.
        match api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &desired).await {
            Ok(created) => {
                ctx.metrics.write("Secret", "create");
                remember(created.metadata.resource_version, &result);
                return Ok(result);
            }
            // It appeared after the watch last looked: read it, and go on from what it holds.
            Err(kube::Error::Api(s)) if s.code == 409 && guessed => {
                ctx.applied.forget(&key);
                return Box::pin(ensure_with(ctx, server, client, false)).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                ctx.applied.forget(&key);
                return created_meanwhile(&api, &ns, &name).await;
            }
            Err(e) => {
                ctx.applied.forget(&key);
                return Err(e.into());
            }
        }
    }
    match api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired)).await {
        Ok(after) => {
            ctx.metrics.write("Secret", "apply");
            remember(after.metadata.resource_version, &result);
            Ok(result)
        }
        Err(e) => {
            ctx.applied.forget(&key);
            Err(e.into())
        }
    }
}

/// The secret the client holds next, and its previous one while that is still valid: a
/// rotation asked for (an annotation value not handled yet) makes the current secret the
/// previous one for `SECRET_OVERLAP`.
fn secrets_to_hold(
    existing: Option<&Secret>,
    asked: Option<&String>,
    now: jiff::Timestamp,
) -> Result<(String, Option<(String, jiff::Timestamp)>), Error> {
    let current = existing.and_then(|s| field(s, CLIENT_SECRET_KEY)).filter(|s| !s.is_empty());
    let mut previous = existing.and_then(|s| {
        let until: jiff::Timestamp = field(s, PREVIOUS_VALID_UNTIL_KEY)?.parse().ok()?;
        Some((field(s, PREVIOUS_SECRET_KEY)?, until))
    });
    let handled = existing.and_then(|s| s.annotations().get(ROTATE_SECRET_HANDLED).cloned());
    let secret = match current {
        Some(current) if asked.is_some() && asked != handled.as_ref() && existing.is_some() => {
            previous = Some((current, now.checked_add(SECRET_OVERLAP).unwrap_or(now)));
            new_secret()?
        }
        Some(current) => current,
        None => new_secret()?,
    };
    Ok((secret, previous.filter(|(_, until)| *until > now)))
}

/// The client's Secret as it should be: its secrets, the server's issuer and token endpoint,
/// the labels naming the server and the rotation annotation handled.
fn desired_secret(
    server: &AuthorizationServer,
    client: &AuthClient,
    secret: String,
    previous: Option<(String, jiff::Timestamp)>,
    asked: Option<String>,
) -> Secret {
    let endpoints = Endpoints::for_issuer(&server.spec.issuer);
    let mut wanted = BTreeMap::from([
        ("client_id".to_owned(), client.client_id()),
        (CLIENT_SECRET_KEY.to_owned(), secret),
        ("issuer".to_owned(), server.spec.issuer.clone()),
        ("token_endpoint".to_owned(), endpoints.token),
    ]);
    if let Some((old, until)) = previous {
        wanted.insert(PREVIOUS_SECRET_KEY.to_owned(), old);
        wanted.insert(PREVIOUS_VALID_UNTIL_KEY.to_owned(), until.to_string());
    }
    let annotations: BTreeMap<String, String> =
        asked.into_iter().map(|v| (ROTATE_SECRET_HANDLED.to_owned(), v)).collect();
    let labels = BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned()),
        (SERVER_NAMESPACE_LABEL.to_owned(), server.namespace().unwrap_or_default()),
        (SERVER_NAME_LABEL.to_owned(), server.name_any()),
    ]);
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(client.secret_name()),
            namespace: Some(client.namespace().unwrap_or_default()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: client.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(wanted.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    }
}

/// Whether `existing` holds exactly the data of `desired`, and its labels and annotations.
fn up_to_date(existing: &Secret, desired: &Secret) -> bool {
    let wanted = desired.data.as_ref().expect("a desired Secret has data");
    existing.data.as_ref().map_or(0, |d| d.len()) == wanted.len()
        && wanted.iter().all(|(k, v)| existing.data.as_ref().and_then(|d| d.get(k)) == Some(v))
        && desired.labels().iter().all(|(k, v)| existing.labels().get(k) == Some(v))
        && desired.annotations().iter().all(|(k, v)| existing.annotations().get(k) == Some(v))
}

/// The secret of a client Secret that another reconcile created first.
async fn created_meanwhile(api: &Api<Secret>, ns: &str, name: &str) -> Result<ClientSecrets, Error> {
    let current = api.get(name).await?;
    let secret = field(&current, CLIENT_SECRET_KEY).ok_or_else(|| Error::ClientSecretMissing {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        key: CLIENT_SECRET_KEY,
    })?;
    Ok(ClientSecrets::of([secret], None))
}

/// Deletes the client Secrets written for `server`, in every namespace we can see.
pub async fn delete_all(ctx: &Context, server: &AuthorizationServer) -> Result<(), Error> {
    let selector = format!(
        "{SERVER_NAMESPACE_LABEL}={},{SERVER_NAME_LABEL}={}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    );
    for api in ctx.apis::<Secret>() {
        for s in api.list(&ListParams::default().labels(&selector)).await?.items {
            let ns_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
            match ns_api.delete(&s.name_any(), &DeleteParams::default()).await {
                Ok(_) => ctx.metrics.write("Secret", "delete"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

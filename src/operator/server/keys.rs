//! The keys Secret's I/O: a cached read, a write conditional on the version read (the
//! operator is the only writer of keys), a retry after a 409, the Event of a change. What to
//! change is `decide::keys`.

use std::{collections::BTreeMap, time::Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, runtime::events::EventType};
use tracing::info;

use super::decide::{self, Signing};
use crate::{
    api::AuthorizationServer,
    keys::{KEYS_SECRET_KEY, KeySet, RotationSettings, keys_secret_name},
    operator::{
        Context, Error, MANAGER,
        applied::{Key, KeysMemo, Memo},
        children, crash, write,
    },
};

/// The keys Secret is written with create/replace, not applied: its entry has no digest.
const KEYS_DIGEST: u64 = 0;

/// The server's keys after this reconcile, and whether they were written by it.
pub struct Keys {
    pub changed: bool,
    pub signing: Signing,
}

/// The key set as found: its keys (without material when `schedule_only`), the annotations
/// its Secret records as handled, and the resourceVersion to write against.
struct Found {
    keys: KeySet,
    handled: BTreeMap<String, String>,
    version: Option<String>,
    /// From what we kept of our last write or read: no key material.
    schedule_only: bool,
    /// Not read: the watches know it to be absent.
    guessed: bool,
}

/// Reads the key set: what we last wrote or read, while the watch has not seen anyone change
/// it; with `trust_absent`, nothing for a Secret the watches know to be absent.
async fn read(ctx: &Context, api: &Api<Secret>, key: Key, name: &str, trust_absent: bool) -> Result<Found, Error> {
    let remembered = ctx.applied.unchanged(&key, KEYS_DIGEST, Instant::now());
    if let Some(Memo::Keys(memo)) = remembered {
        let memo = *memo;
        return Ok(Found {
            keys: memo.keys,
            handled: memo.handled,
            version: memo.resource_version,
            schedule_only: true,
            guessed: false,
        });
    }
    let absent = || Found {
        keys: KeySet::default(),
        handled: BTreeMap::new(),
        version: None,
        schedule_only: false,
        guessed: false,
    };
    if trust_absent && ctx.existing.absent(&key) {
        return Ok(Found { guessed: true, ..absent() });
    }
    let Some(existing) = api.get_opt(name).await? else { return Ok(absent()) };
    let keys = match existing.data.as_ref().and_then(|d| d.get(KEYS_SECRET_KEY)) {
        Some(bytes) => KeySet::from_json(&bytes.0).map_err(|source| Error::InvalidKeySet {
            namespace: existing.namespace().unwrap_or_default(),
            name: name.to_owned(),
            source,
        })?,
        None => KeySet::default(),
    };
    let handled = existing.annotations().clone();
    let version = existing.metadata.resource_version.clone();
    let memo = KeysMemo { keys: keys.schedule_only(), handled: handled.clone(), resource_version: version.clone() };
    ctx.applied.record(key, KEYS_DIGEST, version.as_deref(), 0, Memo::Keys(Box::new(memo)), Instant::now());
    Ok(Found { keys, handled, version, schedule_only: false, guessed: false })
}

/// Keeps the server's keys as `decide::keys` wants them at `now`, creating them when missing.
pub async fn ensure(
    server: &AuthorizationServer,
    settings: &RotationSettings,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Result<Keys, Error> {
    let ns = server.namespace().unwrap_or_default();
    let name = keys_secret_name(&server.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let key = Key::new("Secret", &ns, &name);
    let mut trust_absent = true;
    loop {
        let found = read(ctx, &api, key, &name, trust_absent).await?;
        let decision = decide::keys(server, settings, &found.keys, &found.handled, now);
        if !decision.writes(&found.handled) {
            let signing = decide::signing(server, settings, &found.keys, &decision.plan, now);
            return Ok(Keys { changed: false, signing });
        }
        if found.schedule_only {
            // What we keep has no key material, and a write carries every key: read them first.
            ctx.applied.forget(&key);
            continue;
        }
        let next =
            if decision.plan.is_empty() { found.keys } else { decision.plan.apply(&found.keys, settings, now)? };
        let json = next.to_json()?;
        let mut secret = children::keys_secret(server, json.into_bytes(), decision.handled.clone());
        crash::point(crash::BEFORE_KEYS_WRITE);
        let params = kube::api::PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        // The new key is written before anyone's state changes, with a precondition on the
        // version we read: a concurrent or restarted operator fails here instead of duplicating.
        // A failed write forgets the cached copy, so that the retry reads the Secret again.
        let written = match &found.version {
            None => api.create(&params, &secret).await.map(|s| (s, "create")),
            Some(version) => {
                secret.metadata.resource_version = Some(version.clone());
                api.replace(&name, &params, &secret).await.map(|s| (s, "replace"))
            }
        };
        let (written, verb) = match written {
            // It exists after all (created meanwhile, or without our label): read it, plan again.
            Err(kube::Error::Api(e)) if e.code == 409 && found.guessed => {
                trust_absent = false;
                continue;
            }
            other => other.inspect_err(|_| ctx.applied.forget(&key))?,
        };
        ctx.metrics.write("Secret", verb);
        let version = written.metadata.resource_version.clone();
        let memo =
            KeysMemo { keys: next.schedule_only(), handled: decision.handled, resource_version: version.clone() };
        ctx.applied.record(key, KEYS_DIGEST, version.as_deref(), 0, Memo::Keys(Box::new(memo)), Instant::now());
        crash::point(crash::AFTER_KEYS_WRITE);
        if let Some((warning, reason, note)) = decide::key_event(&decision.plan, &next, now) {
            let active = next.signing_key(now).map(|k| k.kid.clone()).unwrap_or_default();
            info!(reason = decision.plan.reason.unwrap_or_default(), active_key = %active, "signing keys changed");
            let type_ = if warning { EventType::Warning } else { EventType::Normal };
            write::publish(ctx, server, type_, reason, note).await;
            crash::point(crash::AFTER_KEYS_EVENT);
        }
        let signing = decide::signing(server, settings, &next, &decision.plan, now);
        return Ok(Keys { changed: true, signing });
    }
}

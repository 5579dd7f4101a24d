//! The rotation planner: what a key set should look like at `now`, and when to look again.
//! Pure: the operator and `serve` apply the same plan; only `apply` makes key material.
//!
//! Lifecycle: `Next → Active → Retired → deleted`. A Next key is published at least
//! `prePublish` before it signs; an Active key signs for `period`; a Retired key stays
//! published for `retainRetired`. A revoked key leaves the JWKS at once and is kept (unpublished)
//! only as a record until its `deleteAt`.

use jiff::{SignedDuration, Timestamp};

use super::{KeyError, KeySet, StoredKey, generate};
use crate::api::{RotationMode, SigningAlgorithm};

/// Rotation settings, with the safe minimums already applied by `config::compile`.
pub type RotationSettings = crate::config::SigningConfig;

/// Activation time of a Next key in Manual mode: it waits for a person to promote it.
pub fn manual_hold() -> Timestamp {
    Timestamp::from_second(253_402_214_400).unwrap_or(Timestamp::MAX) // 9999-12-31
}

/// What a person asked for through annotations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RotationRequest {
    #[default]
    None,
    /// `tessera.dev/rotate`: promote the Next key now and publish a new Next.
    Rotate,
    /// `tessera.dev/rotate-revoke`: also drop the signing key from the JWKS at once.
    Revoke,
}

/// One key of the planned set: an existing key (by kid) or one to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedKey {
    /// `None`: generate a key of `algorithm` when the plan is applied.
    pub kid: Option<String>,
    pub algorithm: SigningAlgorithm,
    pub created_at: Timestamp,
    pub activates_at: Timestamp,
    pub retires_at: Option<Timestamp>,
    pub delete_at: Option<Timestamp>,
    pub revoked: bool,
}

impl PlannedKey {
    fn of(k: &StoredKey) -> Self {
        Self {
            kid: Some(k.kid.clone()),
            algorithm: k.algorithm,
            created_at: k.created_at,
            activates_at: k.activates_at,
            retires_at: k.retires_at,
            delete_at: k.delete_at,
            revoked: k.revoked,
        }
    }

    fn new(algorithm: SigningAlgorithm, now: Timestamp, activates_at: Timestamp) -> Self {
        Self { kid: None, algorithm, created_at: now, activates_at, retires_at: None, delete_at: None, revoked: false }
    }

    fn live(&self) -> bool {
        !self.revoked
    }
}

/// The key set as it should be; empty (`is_empty`) when the current one is already right.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationPlan {
    pub keys: Vec<PlannedKey>,
    /// Whether anything differs from the key set the plan was made from.
    pub changed: bool,
    /// Why, in a word, for events and logs (`Bootstrap`, `RotationDue`, `ManualRotation`, ...).
    pub reason: Option<&'static str>,
    /// Kids revoked by this plan.
    pub revoked: Vec<String>,
    /// A rotation was asked for but waits until the Next key has been published long enough.
    pub request_pending: bool,
    /// When to plan again (the next scheduled change), if anything is scheduled.
    pub next_due: Option<Timestamp>,
}

impl RotationPlan {
    pub fn is_empty(&self) -> bool {
        !self.changed
    }

    /// The key set after this plan, generating the keys it adds.
    pub fn apply(&self, keys: &KeySet, _settings: &RotationSettings, _now: Timestamp) -> Result<KeySet, KeyError> {
        let mut out = Vec::with_capacity(self.keys.len());
        for p in &self.keys {
            let mut key = match &p.kid {
                Some(kid) => match keys.keys.iter().find(|k| &k.kid == kid) {
                    Some(k) => k.clone(),
                    None => continue,
                },
                None => generate(p.algorithm, p.created_at, p.activates_at)?,
            };
            key.activates_at = p.activates_at;
            key.retires_at = p.retires_at;
            key.delete_at = p.delete_at;
            key.revoked = p.revoked;
            out.push(key);
        }
        Ok(KeySet { keys: out })
    }
}

fn add(t: Timestamp, s: u64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(i64::try_from(s).unwrap_or(i64::MAX / 4))).unwrap_or(Timestamp::MAX)
}

/// Plans the key set at `now` with no request from a person.
pub fn plan(settings: &RotationSettings, keys: &KeySet, now: Timestamp) -> RotationPlan {
    plan_with(settings, keys, now, RotationRequest::None)
}

/// Plans the key set at `now`, honouring `request`.
pub fn plan_with(settings: &RotationSettings, keys: &KeySet, now: Timestamp, request: RotationRequest) -> RotationPlan {
    let mut reason: Option<&'static str> = None;
    let mut revoked_now = Vec::new();
    let retain = settings.retain_retired_secs;

    // Keys past deleteAt are gone.
    let mut set: Vec<PlannedKey> =
        keys.keys.iter().filter(|k| k.delete_at.is_none_or(|d| d > now)).map(PlannedKey::of).collect();
    set.sort_by_key(|k| (k.activates_at, k.created_at));

    // The signing key: the newest live key that has activated and not retired.
    let signing = |set: &[PlannedKey]| {
        set.iter()
            .enumerate()
            .filter(|(_, k)| k.live() && k.activates_at <= now && k.retires_at.is_none_or(|r| r > now))
            .map(|(i, _)| i)
            .next_back()
    };
    let next_index = |set: &[PlannedKey]| set.iter().position(|k| k.live() && k.activates_at > now);
    let mut pending_request = false;
    let mut extra_due: Vec<Timestamp> = Vec::new();

    // Emergency: the signing key leaves the JWKS now and its successor signs at once.
    if request == RotationRequest::Revoke
        && let Some(i) = signing(&set)
    {
        let k = &mut set[i];
        k.revoked = true;
        k.retires_at = Some(now);
        k.delete_at = Some(add(now, retain));
        revoked_now.push(k.kid.clone().unwrap_or_default());
        reason = Some("EmergencyRotation");
    }

    // Nothing can sign (first key, or the signing key was revoked): a Next key of the
    // configured algorithm takes over now if there is one, else a new key signs at once.
    if signing(&set).is_none() {
        match next_index(&set) {
            Some(n) if set[n].algorithm == settings.algorithm => set[n].activates_at = now,
            _ => set.push(PlannedKey::new(settings.algorithm, now, now)),
        }
        reason = reason.or(Some(if keys.keys.is_empty() { "Bootstrap" } else { "NoActiveKey" }));
    }

    // A person asked for a rotation: the Next key signs now, once it has been published for
    // prePublish like any Next key (normally long ago: it is published right after the
    // previous rotation).
    if request == RotationRequest::Rotate {
        match next_index(&set) {
            Some(n) if now >= add(set[n].created_at, settings.pre_publish_secs) => {
                set[n].activates_at = now;
                reason = Some("ManualRotation");
            }
            Some(n) => {
                pending_request = true;
                extra_due.push(add(set[n].created_at, settings.pre_publish_secs));
            }
            None => pending_request = true,
        }
    }

    // There is always one Next key, published from the moment its predecessor starts signing.
    // A Next key whose planned activation has already passed (the period was shortened, or
    // Manual became Automatic, while nobody planned) signs from now, never from the past, so
    // its predecessor's tokens stay verifiable; the second round publishes its successor in
    // this same step.
    for _ in 0..2 {
        let Some(active) = signing(&set) else { break };
        let active_key = set[active].clone();
        if let Some(n) = next_index(&set)
            && set[n].algorithm != settings.algorithm
        {
            // A Next key of an old algorithm never signed: replace it.
            set.remove(n);
        }
        let algorithm_changed = active_key.algorithm != settings.algorithm;
        if next_index(&set).is_none() {
            set.push(PlannedKey::new(settings.algorithm, now, manual_hold()));
            reason = reason.or(Some(if algorithm_changed { "AlgorithmChanged" } else { "NextKeyPublished" }));
            if request == RotationRequest::Rotate && pending_request {
                extra_due.push(add(now, settings.pre_publish_secs));
            }
        }
        let Some(n) = next_index(&set) else { break };
        let earliest = add(set[n].created_at, settings.pre_publish_secs);
        let planned = if algorithm_changed {
            earliest
        } else if settings.mode == RotationMode::Automatic {
            add(active_key.activates_at, settings.period_secs).max(earliest)
        } else {
            manual_hold()
        };
        set[n].activates_at = planned.max(now);
        if planned > now {
            break;
        }
        reason = reason.or(Some("RotationDue"));
    }
    set.sort_by_key(|k| (k.activates_at, k.created_at));

    // Each key retires when the next live one activates, and stays published retainRetired
    // after; a retirement already past is history and stays as it was.
    let live: Vec<usize> = (0..set.len()).filter(|&i| set[i].live()).collect();
    for pair in live.windows(2) {
        let retires = set[pair[1]].activates_at;
        let k = &mut set[pair[0]];
        if k.retires_at.is_some_and(|r| r <= now) {
            continue;
        }
        if retires < manual_hold() {
            k.retires_at = Some(retires);
            k.delete_at = Some(add(retires, retain));
        } else {
            k.retires_at = None;
            k.delete_at = None;
        }
    }
    if let Some(&last) = live.last() {
        set[last].retires_at = None;
        set[last].delete_at = None;
    }

    // When to look again: the next publication, activation or deletion.
    let mut due: Vec<Timestamp> = extra_due;
    for k in &set {
        due.extend([Some(k.activates_at), k.delete_at].into_iter().flatten());
    }
    let next_due = due.into_iter().filter(|d| *d > now && *d < manual_hold()).min();

    let before: Vec<PlannedKey> = {
        let mut b: Vec<PlannedKey> = keys.keys.iter().map(PlannedKey::of).collect();
        b.sort_by_key(|k| (k.activates_at, k.created_at));
        b
    };
    let changed = before != set;
    RotationPlan {
        keys: set,
        changed,
        reason: if changed { reason.or(Some("Retention")) } else { None },
        revoked: revoked_now,
        request_pending: pending_request,
        next_due,
    }
}

#[cfg(test)]
mod tests;

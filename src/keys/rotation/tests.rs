use std::collections::HashMap;

use super::*;
use crate::api::{KeyState, SigningAlgorithm};

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn settings() -> RotationSettings {
    RotationSettings {
        algorithm: SigningAlgorithm::EdDSA,
        mode: RotationMode::Automatic,
        period_secs: 1000,
        pre_publish_secs: 100,
        retain_retired_secs: 300,
    }
}

fn step_with(s: &RotationSettings, keys: &KeySet, now: Timestamp, request: RotationRequest) -> (KeySet, RotationPlan) {
    let p = plan_with(s, keys, now, request);
    (p.apply(keys, s, now).unwrap(), p)
}

fn step(keys: &KeySet, now: Timestamp) -> KeySet {
    step_with(&settings(), keys, now, RotationRequest::None).0
}

fn signing_kid(keys: &KeySet, now: Timestamp) -> String {
    keys.signing_key(now).unwrap().kid.clone()
}

#[test]
fn empty_set_gets_a_key_that_signs_now_and_a_next_key() {
    let (keys, p) = step_with(&settings(), &KeySet::default(), ts(0), RotationRequest::None);
    assert_eq!(p.reason, Some("Bootstrap"));
    assert_eq!(keys.keys.len(), 2);
    assert!(keys.signing_key(ts(0)).is_some());
    assert_eq!(keys.state(&keys.keys[1], ts(0)), Some(KeyState::Next));
    assert_eq!(keys.keys[1].activates_at, ts(1000));
    assert_eq!(plan(&settings(), &keys, ts(0)).next_due, Some(ts(1000)), "next look: when the Next key signs");
}

#[test]
fn an_unchanged_set_plans_nothing() {
    let keys = step(&KeySet::default(), ts(0));
    let p = plan(&settings(), &keys, ts(10));
    assert!(p.is_empty());
    assert_eq!(p.reason, None);
}

#[test]
fn next_key_signs_after_the_period_and_old_key_retires_then_goes() {
    let keys = step(&KeySet::default(), ts(0));
    let (first, second) = (keys.keys[0].kid.clone(), keys.keys[1].kid.clone());
    assert!(plan(&settings(), &keys, ts(999)).is_empty());
    assert_eq!(signing_kid(&keys, ts(999)), first);
    assert_eq!(signing_kid(&keys, ts(1000)), second, "the clock, not the operator, switches keys");
    assert_eq!(keys.keys[0].retires_at, Some(ts(1000)));
    assert_eq!(keys.keys[0].delete_at, Some(ts(1300)));
    let (keys, p) = step_with(&settings(), &keys, ts(1000), RotationRequest::None);
    assert_eq!(p.reason, Some("NextKeyPublished"));
    assert_eq!(keys.keys.len(), 3);
    assert_eq!(keys.state(&keys.keys[0], ts(1100)), Some(KeyState::Retired));
    assert_eq!(keys.keys[2].activates_at, ts(2000));
    let keys = step(&keys, ts(1300));
    assert_eq!(keys.keys.len(), 2, "the retired key is deleted after retainRetired");
}

#[test]
fn a_late_operator_still_publishes_the_next_key_pre_publish_before_it_signs() {
    let keys = step(&KeySet::default(), ts(0));
    // The operator was down from 1000 to 1950: the next rotation moves to 1950 + prePublish.
    let keys = step(&keys, ts(1950));
    let next = keys.keys.iter().find(|k| k.activates_at > ts(1950)).unwrap();
    assert_eq!(next.activates_at, ts(2050));
    assert_eq!(keys.keys.iter().find(|k| k.retires_at == Some(ts(2050))).map(|k| k.activates_at), Some(ts(1000)));
}

#[test]
fn manual_mode_publishes_a_next_key_and_never_rotates_by_itself() {
    let s = RotationSettings { mode: RotationMode::Manual, ..settings() };
    let (mut keys, _) = step_with(&s, &KeySet::default(), ts(0), RotationRequest::None);
    let first = signing_kid(&keys, ts(0));
    for t in (0..100_000).step_by(997) {
        keys = step_with(&s, &keys, ts(t), RotationRequest::None).0;
        assert_eq!(signing_kid(&keys, ts(t)), first, "manual mode rotated by itself at {t}");
    }
    assert_eq!(keys.keys.len(), 2, "the active key and one Next key");
    assert_eq!(keys.state(&keys.keys[1], ts(100_000)), Some(KeyState::Next));
}

#[test]
fn manual_rotation_promotes_the_next_key_now_and_publishes_a_new_next() {
    let s = RotationSettings { mode: RotationMode::Manual, ..settings() };
    let (keys, _) = step_with(&s, &KeySet::default(), ts(0), RotationRequest::None);
    let next = keys.keys[1].kid.clone();
    let (keys, p) = step_with(&s, &keys, ts(500), RotationRequest::Rotate);
    assert_eq!(p.reason, Some("ManualRotation"));
    assert!(!p.request_pending);
    assert_eq!(signing_kid(&keys, ts(500)), next);
    assert_eq!(keys.keys.len(), 3, "old Active (now Retired), new Active, new Next");
    assert_eq!(keys.state(&keys.keys[0], ts(500)), Some(KeyState::Retired));
    assert_eq!(keys.state(&keys.keys[2], ts(500)), Some(KeyState::Next));
}

#[test]
fn manual_rotation_waits_until_the_next_key_was_published_pre_publish() {
    let keys = step(&KeySet::default(), ts(0));
    let p = plan_with(&settings(), &keys, ts(40), RotationRequest::Rotate);
    assert!(p.request_pending);
    assert_eq!(p.next_due, Some(ts(100)));
    let (keys, p) = step_with(&settings(), &keys, ts(100), RotationRequest::Rotate);
    assert!(!p.request_pending);
    assert_eq!(p.reason, Some("ManualRotation"));
    assert_eq!(signing_kid(&keys, ts(100)), keys.keys[1].kid);
}

#[test]
fn emergency_rotation_drops_the_signing_key_from_the_jwks_at_once() {
    let keys = step(&KeySet::default(), ts(0));
    let keys = step(&keys, ts(1000));
    let compromised = signing_kid(&keys, ts(1010));
    let (keys, p) = step_with(&settings(), &keys, ts(1010), RotationRequest::Revoke);
    assert_eq!(p.revoked, vec![compromised.clone()]);
    assert_eq!(p.reason, Some("EmergencyRotation"));
    assert!(keys.published(ts(1010)).all(|k| k.kid != compromised), "revoked key still published");
    assert_ne!(signing_kid(&keys, ts(1010)), compromised);
    assert!(keys.keys.iter().any(|k| k.kid == compromised && k.revoked), "kept as a record");
}

#[test]
fn emergency_rotation_right_after_bootstrap_promotes_the_young_next_key() {
    let keys = step(&KeySet::default(), ts(0));
    let compromised = signing_kid(&keys, ts(10));
    let (keys, _) = step_with(&settings(), &keys, ts(10), RotationRequest::Revoke);
    assert_ne!(signing_kid(&keys, ts(10)), compromised);
    assert!(keys.published(ts(10)).all(|k| k.kid != compromised));
    assert_eq!(keys.published(ts(10)).count(), 2, "the promoted key and a fresh Next");
}

#[test]
fn algorithm_change_prepublishes_a_key_of_the_new_algorithm() {
    let keys = step(&KeySet::default(), ts(0));
    let s = RotationSettings { algorithm: SigningAlgorithm::ES256, ..settings() };
    let (keys, p) = step_with(&s, &keys, ts(10), RotationRequest::None);
    assert_eq!(p.reason, Some("AlgorithmChanged"));
    let new = keys.keys.iter().find(|k| k.algorithm == SigningAlgorithm::ES256).unwrap();
    assert_eq!(new.activates_at, ts(110));
    assert_eq!(keys.signing_key(ts(109)).unwrap().algorithm, SigningAlgorithm::EdDSA);
    assert_eq!(keys.signing_key(ts(110)).unwrap().algorithm, SigningAlgorithm::ES256);
}

#[test]
fn a_next_key_of_the_old_algorithm_is_replaced() {
    let keys = step(&KeySet::default(), ts(0));
    let s = RotationSettings { algorithm: SigningAlgorithm::RS256, ..settings() };
    let (keys, _) = step_with(&s, &keys, ts(10), RotationRequest::None);
    let next: Vec<_> = keys.keys.iter().filter(|k| k.activates_at > ts(10)).collect();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].algorithm, SigningAlgorithm::RS256);
    assert_eq!(next[0].activates_at, ts(110));
}

/// A small deterministic PRNG, so the property test needs no extra crate and replays exactly.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

/// Property, over years of simulated time with an operator that wakes at random moments (and
/// sometimes not for days), random manual and emergency rotations, and a fake clock:
/// - at every instant the signing key has been published for at least prePublish (which the
///   compiler keeps above the JWKS max-age plus skew), except the first key and keys promoted
///   by an emergency;
/// - every unexpired token's kid is published, unless its key was revoked.
fn check_property(settings: &RotationSettings, token_lifetime: i64, seed: u64, horizon: i64) {
    let pre_publish = settings.pre_publish_secs as i64;
    let mut rng = Lcg(seed);
    let mut keys = KeySet::default();
    let mut published_since: HashMap<String, i64> = HashMap::new();
    let mut emergency_promoted: Vec<String> = Vec::new();
    let mut issued: Vec<(String, i64)> = Vec::new();
    let mut t = 0i64;
    let mut rotations = 0;
    let mut last_signing = String::new();
    while t < horizon {
        // The operator wakes when the plan asks, or earlier, or (rarely) much later.
        let request = match rng.next(200) {
            0 => RotationRequest::Rotate,
            1 if t > 0 => RotationRequest::Revoke,
            _ => RotationRequest::None,
        };
        let (next_keys, p) = step_with(settings, &keys, ts(t), request);
        keys = next_keys;
        let now = ts(t);
        if request == RotationRequest::Revoke {
            emergency_promoted.push(signing_kid(&keys, now));
            issued.retain(|(kid, _)| !p.revoked.contains(kid));
        }
        for k in keys.published(now) {
            published_since.entry(k.kid.clone()).or_insert(t);
        }
        // Walk the instants up to the next wake-up, checking the properties at each.
        let due = p.next_due.map(|d| d.as_second() - ts(0).as_second()).unwrap_or(t + settings.period_secs as i64);
        let wake = match rng.next(10) {
            0 => due + rng.next(3 * settings.period_secs) as i64,
            1 => t + 1 + rng.next((due - t).max(1) as u64) as i64,
            _ => due,
        }
        .max(t + 1);
        let mut u = t;
        while u < wake.min(horizon) {
            let at = ts(u);
            let s = signing_kid(&keys, at);
            if s != last_signing {
                rotations += 1;
                last_signing = s.clone();
            }
            let since = published_since.get(&s).copied().unwrap_or(u);
            assert!(
                u - since >= pre_publish || since == 0 || emergency_promoted.contains(&s),
                "seed {seed}: kid {s} signs at {u}, published only since {since}"
            );
            issued.push((s, u));
            issued.retain(|(_, at)| u - at < token_lifetime);
            for (kid, at) in &issued {
                assert!(
                    keys.published(ts(u)).any(|k| &k.kid == kid),
                    "seed {seed}: kid {kid} (token at {at}) dropped at {u}"
                );
            }
            u += (wake - u).clamp(1, 1 + (settings.period_secs as i64 / 50));
        }
        t = wake;
    }
    assert!(rotations > 3, "seed {seed}: only {rotations} rotations");
}

#[test]
fn property_signing_keys_were_published_long_enough_and_token_keys_stay_published() {
    for seed in 0..40 {
        let s = settings();
        let s = RotationSettings {
            retain_retired_secs: s.retain_retired_secs.max(200 + crate::config::jwks_max_age_secs(s.pre_publish_secs)),
            ..s
        };
        check_property(&s, 200, seed, 40_000);
    }
}

#[test]
fn property_holds_over_years_with_the_default_schedule() {
    // 90-day period, 7-day prePublish and retention, 24h tokens: ten simulated years.
    let day = 86_400;
    let s = RotationSettings {
        algorithm: SigningAlgorithm::EdDSA,
        mode: RotationMode::Automatic,
        period_secs: 90 * day,
        pre_publish_secs: 7 * day,
        retain_retired_secs: 7 * day,
    };
    for seed in 0..4 {
        check_property(&s, day as i64, seed, 10 * 365 * day as i64);
    }
}

fn next_keys(keys: &KeySet, now: Timestamp) -> usize {
    keys.keys.iter().filter(|k| keys.state(k, now) == Some(KeyState::Next)).count()
}

#[test]
fn a_restart_after_the_next_key_activated_publishes_a_new_next_key_in_the_same_step() {
    let keys = step(&KeySet::default(), ts(0));
    let promoted = keys.keys[1].kid.clone();
    // Down from before the Next key's activation (1000) until after it: one step on restart.
    let (after, p) = step_with(&settings(), &keys, ts(1010), RotationRequest::None);
    assert_eq!(signing_kid(&after, ts(1010)), promoted);
    assert_eq!(next_keys(&after, ts(1010)), 1, "no Next key right after the restart: {p:?}");
    // The same with an algorithm change and with a switch to Manual made while it was down.
    for s in [
        RotationSettings { algorithm: SigningAlgorithm::ES256, ..settings() },
        RotationSettings { mode: RotationMode::Manual, ..settings() },
    ] {
        let (after, _) = step_with(&s, &keys, ts(1010), RotationRequest::None);
        assert_eq!(signing_kid(&after, ts(1010)), promoted);
        assert_eq!(next_keys(&after, ts(1010)), 1, "{s:?}");
    }
}

/// Every planner step, whatever the key set it starts from (settings changed in between,
/// requests, long outages), leaves one key that signs and at least one Next key published.
#[test]
fn property_every_planner_step_leaves_a_signing_key_and_a_next_key() {
    // Not RS256: generating RSA keys would make this test take minutes; the planner treats
    // every algorithm alike.
    let algorithms = [SigningAlgorithm::ES256, SigningAlgorithm::EdDSA];
    for seed in 0..60 {
        let mut rng = Lcg(seed);
        let mut keys = KeySet::default();
        let mut t = 0i64;
        let mut s = settings();
        for _ in 0..120 {
            if rng.next(8) == 0 {
                s.algorithm = algorithms[rng.next(2) as usize];
            }
            if rng.next(10) == 0 {
                s.mode = if s.mode == RotationMode::Manual { RotationMode::Automatic } else { RotationMode::Manual };
            }
            let request = match rng.next(12) {
                0 => RotationRequest::Rotate,
                1 => RotationRequest::Revoke,
                _ => RotationRequest::None,
            };
            let now = ts(t);
            let (next, p) = step_with(&s, &keys, now, request);
            keys = next;
            assert!(keys.signing_key(now).is_some(), "seed {seed} at {t}: nothing signs after {p:?}");
            assert!(next_keys(&keys, now) >= 1, "seed {seed} at {t}: no Next key after {p:?}");
            let due = p.next_due.map(|d| d.as_second() - ts(0).as_second());
            t = match rng.next(4) {
                0 => t + 1 + rng.next(5000) as i64,
                1 => due.unwrap_or(t + 1).max(t + 1) + rng.next(3) as i64,
                _ => t + 1 + rng.next(300) as i64,
            };
        }
    }
}

#[test]
fn a_next_key_whose_planned_activation_has_passed_signs_from_now_and_gets_a_successor() {
    // Manual mode, then Automatic long after a period: the Next key's activation (0 + period)
    // lies in the past when it is planned.
    let manual = RotationSettings { mode: RotationMode::Manual, ..settings() };
    let keys = step_with(&manual, &KeySet::default(), ts(0), RotationRequest::None).0;
    let (first, next) = (keys.keys[0].kid.clone(), keys.keys[1].kid.clone());
    let (keys, p) = step_with(&settings(), &keys, ts(2500), RotationRequest::None);
    assert_eq!(signing_kid(&keys, ts(2500)), next, "{p:?}");
    let old = keys.keys.iter().find(|k| k.kid == first).unwrap();
    assert_eq!(old.retires_at, Some(ts(2500)), "the old key signed until now: it retires now, not in the past");
    assert!(keys.published(ts(2500 + 299)).any(|k| k.kid == first), "its tokens stay verifiable");
    assert_eq!(next_keys(&keys, ts(2500)), 1, "a successor is published in the same step");
    assert!(plan(&settings(), &keys, ts(2500)).is_empty(), "the step is complete");
}

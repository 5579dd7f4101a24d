//! The rotation planner: what to change in a key set, and when to look again. Pure; the
//! operator and `serve` apply the same plan.

use jiff::{SignedDuration, Timestamp};

use super::{KeyError, KeySet, StoredKey, generate};
use crate::api::RotationMode;

/// Rotation settings, with the safe minimums already applied by `config::compile`.
pub type RotationSettings = crate::config::SigningConfig;

/// Changes to make to a key set; empty when nothing is due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationPlan {
    /// Generate a key of the configured algorithm that activates at this time.
    pub generate: Option<Timestamp>,
    /// Set `retiresAt` and `deleteAt` of these keys.
    pub retire: Vec<(String, Timestamp, Timestamp)>,
    /// Drop these keys from the set (revoked, or past `deleteAt`).
    pub remove: Vec<String>,
    /// Why the plan generates a key, for events and logs.
    pub reason: Option<&'static str>,
    /// When to plan again (the next scheduled change), if anything is scheduled.
    pub next_due: Option<Timestamp>,
}

impl RotationPlan {
    pub fn is_empty(&self) -> bool {
        self.generate.is_none() && self.retire.is_empty() && self.remove.is_empty()
    }

    /// The key set after this plan, generating the new key if there is one.
    pub fn apply(&self, keys: &KeySet, settings: &RotationSettings, now: Timestamp) -> Result<KeySet, KeyError> {
        let mut out: Vec<StoredKey> = keys.keys.iter().filter(|k| !self.remove.contains(&k.kid)).cloned().collect();
        for (kid, retires_at, delete_at) in &self.retire {
            if let Some(k) = out.iter_mut().find(|k| &k.kid == kid) {
                k.retires_at = Some(*retires_at);
                k.delete_at = Some(*delete_at);
            }
        }
        if let Some(activates_at) = self.generate {
            out.push(generate(settings.algorithm, now, activates_at)?);
        }
        Ok(KeySet { keys: out })
    }
}

fn secs(s: u64) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(s).unwrap_or(i64::MAX / 2))
}

fn add(t: Timestamp, s: u64) -> Timestamp {
    t.checked_add(secs(s)).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, s: u64) -> Timestamp {
    t.checked_sub(secs(s)).unwrap_or(Timestamp::MIN)
}

/// Plans the next changes to `keys` at `now`.
///
/// A key signs for `period`; its successor is generated `prePublish` before that and
/// activates at the end of the period (never sooner than `prePublish` after it is published),
/// and the old key stays published `retainRetired` after it retires.
pub fn plan(settings: &RotationSettings, keys: &KeySet, now: Timestamp) -> RotationPlan {
    let mut out = RotationPlan::default();
    let mut due: Vec<Timestamp> = Vec::new();

    for k in &keys.keys {
        if k.revoked || k.delete_at.is_some_and(|d| d <= now) {
            out.remove.push(k.kid.clone());
        }
    }
    let mut live: Vec<&StoredKey> = keys.keys.iter().filter(|k| !out.remove.contains(&k.kid)).collect();
    live.sort_by_key(|k| (k.activates_at, k.created_at));

    // Each key retires when the next newer one activates.
    for pair in live.windows(2) {
        let (older, newer) = (pair[0], pair[1]);
        if older.retires_at.is_none() {
            let retires = newer.activates_at;
            out.retire.push((older.kid.clone(), retires, add(retires, settings.retain_retired_secs)));
        }
    }

    let live_set = KeySet { keys: live.iter().map(|k| (*k).clone()).collect() };
    let signing = live_set.signing_key(now);
    let newest = live.last().copied();
    match (signing, newest) {
        (None, _) => {
            out.generate = Some(now);
            out.reason = Some("NoActiveKey");
            if let Some(newest) = newest
                && newest.retires_at.is_none()
            {
                out.retire.push((newest.kid.clone(), now, add(now, settings.retain_retired_secs)));
            }
            due.push(sub(add(now, settings.period_secs), settings.pre_publish_secs));
        }
        (Some(active), Some(newest)) if newest.kid == active.kid => {
            let rotation_at = add(active.activates_at, settings.period_secs);
            let publish_at = sub(rotation_at, settings.pre_publish_secs);
            let algorithm_changed = active.algorithm != settings.algorithm;
            let automatic_due = settings.mode == RotationMode::Automatic && now >= publish_at;
            if algorithm_changed || automatic_due {
                let activates = if algorithm_changed {
                    add(now, settings.pre_publish_secs)
                } else {
                    rotation_at.max(add(now, settings.pre_publish_secs))
                };
                out.generate = Some(activates);
                out.reason = Some(if algorithm_changed { "AlgorithmChanged" } else { "RotationDue" });
                if active.retires_at.is_none() {
                    out.retire.push((active.kid.clone(), activates, add(activates, settings.retain_retired_secs)));
                }
                due.push(activates);
            } else if settings.mode == RotationMode::Automatic {
                due.push(publish_at);
            }
        }
        (Some(_), Some(newest)) => {
            // A Next key is published: look again when it activates.
            due.push(newest.activates_at);
        }
        (Some(_), None) => {}
    }
    for k in &live {
        if let Some(d) = k.delete_at {
            due.push(d);
        }
    }
    for (_, _, d) in &out.retire {
        due.push(*d);
    }
    out.next_due = due.into_iter().filter(|d| *d > now).min();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SigningAlgorithm;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
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

    fn step(keys: &KeySet, now: Timestamp) -> KeySet {
        let p = plan(&settings(), keys, now);
        p.apply(keys, &settings(), now).unwrap()
    }

    #[test]
    fn empty_set_gets_a_key_that_signs_now() {
        let keys = step(&KeySet::default(), ts(0));
        assert_eq!(keys.keys.len(), 1);
        assert!(keys.signing_key(ts(0)).is_some());
        assert_eq!(plan(&settings(), &keys, ts(0)).next_due, Some(ts(900)));
    }

    #[test]
    fn next_key_is_published_pre_publish_before_it_signs_and_old_key_retires() {
        let keys = step(&KeySet::default(), ts(0));
        let first = keys.keys[0].kid.clone();
        assert!(plan(&settings(), &keys, ts(899)).is_empty());
        let keys = step(&keys, ts(900));
        assert_eq!(keys.keys.len(), 2);
        assert_eq!(keys.signing_key(ts(999)).unwrap().kid, first);
        assert_ne!(keys.signing_key(ts(1000)).unwrap().kid, first);
        assert_eq!(keys.keys[0].delete_at, Some(ts(1300)));
        let keys = step(&keys, ts(1300));
        assert_eq!(keys.keys.len(), 1);
    }

    #[test]
    fn signing_key_was_always_published_for_at_least_pre_publish() {
        // Property over a fake clock: at every tick the signing kid was published >= prePublish earlier
        // (except the bootstrap key), and every kid that signed within the last token lifetime is published.
        let mut keys = KeySet::default();
        let mut first_seen: std::collections::HashMap<String, i64> = Default::default();
        let mut signed_at: Vec<(String, i64)> = Vec::new();
        let mut t = 0;
        while t < 10_000 {
            let now = ts(t);
            keys = step(&keys, now);
            for k in keys.published(now) {
                first_seen.entry(k.kid.clone()).or_insert(t);
            }
            let s = keys.signing_key(now).unwrap().kid.clone();
            if t > 0 {
                assert!(t - first_seen[&s] >= 100 || first_seen[&s] == 0, "kid {s} signed too early at {t}");
            }
            signed_at.push((s, t));
            for (kid, at) in &signed_at {
                if t - at < 200 {
                    assert!(keys.published(now).any(|k| &k.kid == kid), "kid {kid} dropped at {t}");
                }
            }
            t += 7;
        }
        assert!(first_seen.len() >= 9);
    }

    #[test]
    fn algorithm_change_prepublishes_a_key_of_the_new_algorithm() {
        let keys = step(&KeySet::default(), ts(0));
        let mut s = settings();
        s.algorithm = SigningAlgorithm::ES256;
        let p = plan(&s, &keys, ts(10));
        assert_eq!(p.generate, Some(ts(110)));
        assert_eq!(p.reason, Some("AlgorithmChanged"));
    }
}

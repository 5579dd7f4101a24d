//! Status conditions: the standard `metav1.Condition` shape, kstatus-compatible.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::{Schema, SchemaGenerator, json_schema};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const ACCEPTED: &str = "Accepted";
pub const CONFIG_READY: &str = "ConfigReady";
pub const SIGNING_KEYS_READY: &str = "SigningKeysReady";
pub const WORKLOAD_READY: &str = "WorkloadReady";

/// Schema of a condition list: a map keyed by `type`, so server-side apply merges per condition.
pub fn schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": { "type": "string", "maxLength": 316 },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"] },
                "observedGeneration": { "type": "integer", "format": "int64", "minimum": 0 },
                "lastTransitionTime": { "type": "string", "format": "date-time" },
                "reason": { "type": "string", "maxLength": 1024 },
                "message": { "type": "string", "maxLength": 32768 }
            }
        }
    })
}

/// Sets `desired` in `conditions`, keeping `lastTransitionTime` when the status did not change.
pub fn set(conditions: &mut Vec<Condition>, mut desired: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            if existing.status == desired.status {
                desired.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = desired;
        }
        None => conditions.push(desired),
    }
}

/// A condition for `generation`, stamped `now`.
pub fn new(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// True when the two lists differ in anything but timestamps.
pub fn differ_beyond_timestamps(a: &[Condition], b: &[Condition]) -> bool {
    let key =
        |c: &Condition| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone(), c.observed_generation);
    let mut ka: Vec<_> = a.iter().map(key).collect();
    let mut kb: Vec<_> = b.iter().map(key).collect();
    ka.sort();
    kb.sort();
    ka != kb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap();
        let mut list = vec![new(READY, true, "Ready", "ok", Some(1), t0)];
        set(&mut list, new(READY, true, "Ready", "still ok", Some(2), t1));
        assert_eq!(list[0].last_transition_time.0, t0);
        set(&mut list, new(READY, false, "Broken", "no", Some(3), t1));
        assert_eq!(list[0].last_transition_time.0, t1);
        assert_eq!(list.len(), 1);
    }
}

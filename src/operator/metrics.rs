//! Prometheus metrics of the operator: reconciles, errors, durations, API writes.

use std::sync::Mutex;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// A failed reconcile: the kind and the error's variant name (`operator::Error::reason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub resource: String,
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    pub namespace: String,
    pub server: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub reconciles: Family<KindLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    pub duration: Family<KindLabel, Histogram>,
    pub api_writes: Family<WriteLabel, Counter>,
    pub active_key_age: Family<ServerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub next_rotation_in: Family<ServerLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tessera_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let api_writes = Family::<WriteLabel, Counter>::default();
        let active_key_age = Family::default();
        let next_rotation_in = Family::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed", errors.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile", duration.clone());
        registry.register("api_writes", "Writes made to the Kubernetes API", api_writes.clone());
        registry.register("active_key_age_seconds", "Age of the signing key in use", active_key_age.clone());
        registry.register("next_rotation_seconds", "Time until the next key rotation", next_rotation_in.clone());
        Self {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            duration,
            api_writes,
            active_key_age,
            next_rotation_in,
        }
    }
}

impl Metrics {
    pub fn write(&self, resource: &str, verb: &str) {
        self.api_writes.get_or_create(&WriteLabel { resource: resource.into(), verb: verb.into() }).inc();
    }

    pub fn error(&self, kind: &str, error: &super::Error) {
        self.errors.get_or_create(&ErrorLabel { kind: kind.into(), reason: error.reason().into() }).inc();
    }

    pub fn register_gauge(&self, name: &str, help: &str, gauge: Gauge) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, gauge);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Error;
    use kube::runtime::finalizer::Error as Finalizer;

    #[test]
    fn reconcile_errors_are_counted_by_the_name_of_their_kind() {
        let m = Metrics::default();
        let keys = || Error::InvalidKeySet {
            namespace: "team-a".into(),
            name: "orders-keys".into(),
            source: crate::keys::KeyError::Generate,
        };
        m.error("AuthorizationServer", &keys());
        m.error("AuthorizationServer", &Error::Finalizer(Box::new(Finalizer::ApplyFailed(keys()))));
        m.error("AuthClient", &Error::CachesNotReady);
        m.error("AuthClient", &Error::Finalizer(Box::new(Finalizer::UnnamedObject)));
        let text = m.render();
        for line in [
            r#"tessera_operator_reconcile_errors_total{kind="AuthorizationServer",reason="InvalidKeySet"} 2"#,
            r#"tessera_operator_reconcile_errors_total{kind="AuthClient",reason="CachesNotReady"} 1"#,
            r#"tessera_operator_reconcile_errors_total{kind="AuthClient",reason="Finalizer"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        // A label never carries the error's text (a Secret's name, an API message).
        assert!(!text.contains("orders-keys"), "{text}");
    }
}

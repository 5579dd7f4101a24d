//! Label selector matching, as Kubernetes defines it (pure).

use std::collections::BTreeMap;

use super::LabelSelector;

/// True when `labels` satisfy `selector`. An empty selector matches everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector.match_labels.as_ref().is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let by_expressions = selector.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            match (e.operator.as_str(), labels.get(&e.key)) {
                ("In", Some(v)) => values.contains(v),
                ("In", None) => false,
                ("NotIn", Some(v)) => !values.contains(v),
                ("NotIn", None) => true,
                ("Exists", found) => found.is_some(),
                ("DoesNotExist", found) => found.is_none(),
                _ => false,
            }
        })
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn matches_labels_and_expressions() {
        let labels = BTreeMap::from([("team".to_string(), "orders".to_string())]);
        assert!(selector_matches(&sel(serde_json::json!({})), &labels));
        assert!(selector_matches(&sel(serde_json::json!({"matchLabels": {"team": "orders"}})), &labels));
        assert!(!selector_matches(&sel(serde_json::json!({"matchLabels": {"team": "billing"}})), &labels));
        assert!(selector_matches(
            &sel(serde_json::json!({"matchExpressions": [{"key": "team", "operator": "In", "values": ["orders", "x"]}]})),
            &labels
        ));
        assert!(!selector_matches(&sel(serde_json::json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]})), &labels));
        assert!(selector_matches(
            &sel(serde_json::json!({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]})),
            &labels
        ));
    }
}

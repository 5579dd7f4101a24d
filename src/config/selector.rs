//! Label selectors over AuthClient labels (matchLabels and matchExpressions).

use std::collections::BTreeMap;

use crate::api::LabelSelector;

/// True when `labels` satisfy `selector`; an unknown operator matches nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|g| values.contains(g)),
            "NotIn" => got.is_none_or(|g| !values.contains(g)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    #[test]
    fn match_labels_and_expressions_both_apply() {
        let labels: BTreeMap<String, String> = [("team".to_owned(), "orders".to_owned())].into();
        let mut sel = LabelSelector { match_labels: Some(labels.clone()), ..Default::default() };
        assert!(matches(&sel, &labels));
        sel.match_expressions =
            Some(vec![LabelSelectorRequirement { key: "tier".into(), operator: "Exists".into(), values: None }]);
        assert!(!matches(&sel, &labels));
    }
}

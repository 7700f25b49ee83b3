//! Lineage: how two versions differ (metrics, slices, hyperparameters, clients, privacy) and which versions a
//! version descends from.

use crate::Registry;
use crate::error::{RegistryError, Result};
use crate::types::{PrivacySpend, Version, VersionRecord};
use cohort_core::metrics::EvalMetrics;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Change of one metric between two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricDelta {
    /// Value in the first version.
    pub a: Option<f64>,
    /// Value in the second version.
    pub b: Option<f64>,
    /// `b - a` when both exist.
    pub delta: Option<f64>,
}

/// Change of one JSON leaf (hyperparameter) between two versions, at a dotted path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueChange {
    /// Dotted path, e.g. `training.lr`; `$` for a non-object root.
    pub path: String,
    /// Value in the first version (None: absent).
    pub a: Option<Value>,
    /// Value in the second version (None: absent).
    pub b: Option<Value>,
}

/// Differences between two versions (`cohort models diff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDiff {
    /// First version, as `name vN`.
    pub a: String,
    /// Second version.
    pub b: String,
    /// Aggregate metric changes, for every metric in either version.
    pub metrics: BTreeMap<String, MetricDelta>,
    /// Per-client metric changes, for every client with a slice in either version.
    pub slices: BTreeMap<String, BTreeMap<String, MetricDelta>>,
    /// Strategy change `(a, b)`, if the strategy differs.
    pub strategy: Option<(String, String)>,
    /// Hyperparameter leaves that differ.
    pub hyperparameters: Vec<ValueChange>,
    /// Clients in `b` but not in `a`.
    pub clients_added: Vec<String>,
    /// Clients in `a` but not in `b`.
    pub clients_removed: Vec<String>,
    /// Privacy spend changes `(a, b)` for clients whose spend differs.
    pub privacy: BTreeMap<String, (Option<PrivacySpend>, Option<PrivacySpend>)>,
    /// Whether the config hashes differ.
    pub config_hash_changed: bool,
    /// Whether the weights differ (different artifact hash).
    pub weights_changed: bool,
}

fn metric_deltas(a: Option<&EvalMetrics>, b: Option<&EvalMetrics>) -> BTreeMap<String, MetricDelta> {
    let keys: BTreeSet<&String> = a.iter().chain(b.iter()).flat_map(|m| m.values.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let va = a.and_then(|m| m.get(k));
            let vb = b.and_then(|m| m.get(k));
            let delta = va.zip(vb).map(|(x, y)| y - x);
            (k.clone(), MetricDelta { a: va, b: vb, delta })
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, child, out);
            }
        }
        Value::Null if prefix.is_empty() => {}
        leaf => {
            out.insert(if prefix.is_empty() { "$".to_owned() } else { prefix.to_owned() }, leaf.clone());
        }
    }
}

/// Differences between two version records (they may belong to different model names).
pub fn diff_records(a: &VersionRecord, b: &VersionRecord) -> VersionDiff {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &a.hyperparameters, &mut fa);
    flatten("", &b.hyperparameters, &mut fb);
    let paths: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let hyperparameters = paths
        .into_iter()
        .filter(|p| fa.get(*p) != fb.get(*p))
        .map(|p| ValueChange { path: p.clone(), a: fa.get(p).cloned(), b: fb.get(p).cloned() })
        .collect();
    let ca: BTreeSet<&String> = a.clients.iter().collect();
    let cb: BTreeSet<&String> = b.clients.iter().collect();
    let slice_clients: BTreeSet<&String> = a.slices.keys().chain(b.slices.keys()).collect();
    let privacy_clients: BTreeSet<&String> = a.privacy.keys().chain(b.privacy.keys()).collect();
    VersionDiff {
        a: format!("{} {}", a.name, a.version),
        b: format!("{} {}", b.name, b.version),
        metrics: metric_deltas(a.metrics.as_ref(), b.metrics.as_ref()),
        slices: slice_clients
            .into_iter()
            .map(|c| (c.clone(), metric_deltas(a.slices.get(c), b.slices.get(c))))
            .collect(),
        strategy: (a.strategy != b.strategy).then(|| (a.strategy.clone(), b.strategy.clone())),
        hyperparameters,
        clients_added: cb.difference(&ca).map(|c| (*c).clone()).collect(),
        clients_removed: ca.difference(&cb).map(|c| (*c).clone()).collect(),
        privacy: privacy_clients
            .into_iter()
            .filter(|c| a.privacy.get(*c) != b.privacy.get(*c))
            .map(|c| (c.clone(), (a.privacy.get(c).copied(), b.privacy.get(c).copied())))
            .collect(),
        config_hash_changed: a.config_hash != b.config_hash,
        weights_changed: a.sha256 != b.sha256,
    }
}

/// The ancestors of `version` of `name`, nearest first, starting from its `parent` and following registered
/// parents until one is missing or a version repeats.
pub(crate) fn ancestors(
    registry: &Registry,
    name: &str,
    version: Version,
    parent: Option<Version>,
) -> Result<Vec<Version>> {
    let mut ancestors = Vec::new();
    let mut seen = BTreeSet::from([version]);
    let mut next = parent;
    while let Some(p) = next {
        if !seen.insert(p) {
            break;
        }
        ancestors.push(p);
        next = match registry.get(name, p) {
            Ok(rec) => rec.parent,
            Err(RegistryError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
    }
    Ok(ancestors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{new_version, weights};
    use serde_json::json;

    #[test]
    fn diff_reports_metric_hyperparameter_and_client_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        reg.register(&new_version("heart", 1, None, 0.80), &weights(1.0)).unwrap();
        let mut n2 = new_version("heart", 2, Some(1), 0.85);
        n2.hyperparameters["training"]["lr"] = json!(0.01);
        n2.hyperparameters["mu"] = json!(0.1);
        n2.strategy = "fedprox".into();
        n2.clients = vec!["hospital-a".into(), "hospital-c".into()];
        reg.register(&n2, &weights(2.0)).unwrap();
        let d = reg.diff("heart", Version(1), Version(2)).unwrap();
        assert!((d.metrics["accuracy"].delta.unwrap() - 0.05).abs() < 1e-12);
        assert!((d.slices["hospital-a"]["accuracy"].delta.unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(d.strategy, Some(("fedavg".into(), "fedprox".into())));
        let paths: Vec<&str> = d.hyperparameters.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["mu", "training.lr"]);
        assert_eq!(d.hyperparameters[1].a, Some(json!(0.05)));
        assert_eq!(d.hyperparameters[0].a, None);
        assert_eq!(d.clients_added, ["hospital-c"]);
        assert_eq!(d.clients_removed, ["hospital-b"]);
        assert!(d.weights_changed && !d.config_hash_changed);
        assert_eq!(d.privacy.len(), 2);
        assert!(reg.diff("heart", Version(1), Version(1)).unwrap().hyperparameters.is_empty());
    }
}

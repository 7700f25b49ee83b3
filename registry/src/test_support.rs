//! Fixtures shared by the unit tests of the registry's modules.

use crate::types::{NewVersion, PrivacySpend, Version};
use cohort_core::Round;
use cohort_core::metrics::EvalMetrics;
use cohort_core::model::parameters_to_bytes;
use serde_json::json;

pub(crate) fn metrics(acc: f64, n: u64) -> EvalMetrics {
    EvalMetrics { examples: n, values: [("accuracy".to_owned(), acc), ("loss".to_owned(), 1.0 - acc)].into() }
}

pub(crate) fn fp(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

pub(crate) fn new_version(name: &str, round: u64, parent: Option<u64>, acc: f64) -> NewVersion {
    NewVersion {
        name: name.into(),
        round: Round(round),
        parent: parent.map(Version),
        clients: vec!["hospital-b".into(), "hospital-a".into()],
        strategy: "fedavg".into(),
        hyperparameters: json!({"training": {"lr": 0.05, "local_epochs": 1}, "clip": 1.0}),
        config_hash: "cfg-1".into(),
        data_fingerprints: [("hospital-a".into(), fp('a')), ("hospital-b".into(), fp('b'))].into(),
        metrics: Some(metrics(acc, 200)),
        slices: [("hospital-a".into(), metrics(acc + 0.01, 100)), ("hospital-b".into(), metrics(acc - 0.01, 100))]
            .into(),
        central: Some(metrics(acc - 0.02, 50)),
        privacy: [
            ("hospital-a".into(), PrivacySpend { epsilon: 0.5 * round as f64, delta: 1e-5 }),
            ("hospital-b".into(), PrivacySpend { epsilon: 0.4 * round as f64, delta: 1e-5 }),
        ]
        .into(),
        secure_aggregation: json!({"enabled": true, "threshold": 2, "ring_dim": 4096}),
        preprocessing: json!({"mean": [0.5, -1.0], "std": [1.0, 2.0]}),
        schema: json!({"features": ["age", "bp"], "label": "disease", "task": "binary", "classes": 2}),
        model_spec: json!({"layers": [2, 2], "task": "binary"}),
    }
}

pub(crate) fn weights(seed: f32) -> Vec<u8> {
    parameters_to_bytes(&[seed, 0.25, -1.5, 3.0, 0.1, seed * 2.0])
}

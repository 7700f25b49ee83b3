//! Fixtures for the unit tests: a real registry holding versions of a one-feature binary model, `dosing`.

use cohort_core::Round;
use cohort_core::model::parameters_to_bytes;
use cohort_registry::{ExportDocument, NewVersion, Registry, Version};
use serde_json::json;

/// Version `round` of `dosing`: feature `dose` declared on [0, 10], label `responds`, a `[1, 2]` model.
fn new_version(round: u64) -> NewVersion {
    NewVersion {
        name: "dosing".into(),
        round: Round(round),
        strategy: "fedavg".into(),
        secure_aggregation: json!(null),
        hyperparameters: json!({}),
        preprocessing: json!({"kind": "declared-range", "center": [5.0], "scale": [5.0]}),
        schema: json!({"features": ["dose"], "label": "responds", "task": "binary", "classes": 2,
                       "bounds": [[0.0, 10.0]]}),
        model_spec: json!({"layers": [1, 2], "task": "binary"}),
        ..Default::default()
    }
}

/// A registry with `count` versions of `dosing` (version `v` has weights `[v, -v, 0, 0]`), `production`
/// promoted.
pub(crate) fn registry_with_versions(count: u64, production: Option<u64>) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut registry = Registry::open(dir.path()).expect("a registry");
    for v in 1..=count {
        let w = v as f32;
        registry.register(&new_version(v), &parameters_to_bytes(&[w, -w, 0.0, 0.0])).expect("registered");
    }
    if let Some(v) = production {
        registry.promote("dosing", Version(v), "test", "fixture").expect("promoted");
    }
    (dir, registry)
}

/// The export document of one version of `dosing` with these weights.
pub(crate) fn export(weights: &[f32]) -> ExportDocument {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut registry = Registry::open(dir.path()).expect("a registry");
    let record = registry.register(&new_version(1), &parameters_to_bytes(weights)).expect("registered");
    registry.export_document("dosing", record.version).expect("an export")
}

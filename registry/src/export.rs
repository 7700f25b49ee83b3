//! The export document: one self-describing JSON file per version, with its weights, preprocessing, schema,
//! model spec and lineage. It is read without the coordinator (a serving process needs only this crate).

use crate::error::{RegistryError, Result, io};
use crate::types::{PrivacySpend, Stage, StageEvent, Version};
use cohort_core::Round;
use cohort_core::metrics::EvalMetrics;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Value of [`ExportDocument::format`].
pub const EXPORT_FORMAT: &str = "cohort-model";

/// Value of [`ExportDocument::format_version`].
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// The weights inside an [`ExportDocument`].
///
/// Encoding choice: a JSON array of `f32` numbers rather than base64, so the file is readable by any JSON
/// parser without a second decoding step. serde_json prints each `f32` in its shortest round-tripping form, so
/// parsing the numbers back as `f32` gives the exact bits; `sha256` (of the little-endian bytes) lets a consumer
/// check that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedWeights {
    /// Always `"f32-array"`.
    pub encoding: String,
    /// The parameter layout.
    pub layout: String,
    /// Number of parameters.
    pub count: usize,
    /// SHA-256 (hex) of the parameters as little-endian `f32` bytes: the registry artifact hash.
    pub sha256: String,
    /// The parameters.
    pub values: Vec<f32>,
}

/// Lineage, evaluation and privacy metadata inside an [`ExportDocument`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMetadata {
    /// Round that produced the version.
    pub round: Round,
    /// Parent version.
    pub parent: Option<Version>,
    /// Ancestors, nearest first (parent, grandparent, ...).
    pub ancestors: Vec<Version>,
    /// Registration time.
    pub created_at: String,
    /// Participating clients.
    pub clients: Vec<String>,
    /// Strategy.
    pub strategy: String,
    /// Hyperparameters.
    pub hyperparameters: Value,
    /// Config hash.
    pub config_hash: String,
    /// Data fingerprints per client.
    pub data_fingerprints: BTreeMap<String, String>,
    /// Aggregate metrics.
    pub metrics: Option<EvalMetrics>,
    /// Per-client metrics.
    pub slices: BTreeMap<String, EvalMetrics>,
    /// Central evaluation metrics.
    #[serde(default)]
    pub central: Option<EvalMetrics>,
    /// Privacy spend per client.
    pub privacy: BTreeMap<String, PrivacySpend>,
    /// Secure-aggregation parameters.
    pub secure_aggregation: Value,
    /// Stage history.
    pub stage_events: Vec<StageEvent>,
}

/// A self-describing export of one version: everything needed to serve it with exactly the training
/// preprocessing (one JSON document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportDocument {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// Always [`EXPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// Model name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// Stage at export time.
    pub stage: Stage,
    /// The weights.
    pub weights: ExportedWeights,
    /// Model specification (layer sizes, task).
    pub model_spec: Value,
    /// Data schema (feature names, label, task, classes).
    pub schema: Value,
    /// Preprocessing statistics (per-feature mean and standard deviation).
    pub preprocessing: Value,
    /// Lineage, metrics and privacy.
    pub metadata: ExportMetadata,
}

impl ExportDocument {
    /// Reads an exported file.
    ///
    /// # Errors
    /// [`RegistryError::Io`] or [`RegistryError::Json`]; [`RegistryError::Invalid`] for another format.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| io("reading", path, source))?;
        let doc: Self = serde_json::from_str(&text)?;
        if doc.format != EXPORT_FORMAT || doc.format_version != EXPORT_FORMAT_VERSION {
            return Err(RegistryError::Invalid(format!(
                "{} is format {} v{}, expected {EXPORT_FORMAT} v{EXPORT_FORMAT_VERSION}",
                path.display(),
                doc.format,
                doc.format_version
            )));
        }
        Ok(doc)
    }

    /// Checks the weights against their recorded hash and count.
    ///
    /// # Errors
    /// [`RegistryError::CorruptArtifact`] when the values do not hash to `weights.sha256`;
    /// [`RegistryError::Invalid`] when the count disagrees.
    pub fn verify_weights(&self) -> Result<()> {
        if self.weights.values.len() != self.weights.count {
            return Err(RegistryError::Invalid(format!(
                "export lists {} weights but contains {}",
                self.weights.count,
                self.weights.values.len()
            )));
        }
        let actual = cohort_core::model::parameters_sha256(&self.weights.values);
        if actual != self.weights.sha256 {
            return Err(RegistryError::CorruptArtifact { expected: self.weights.sha256.clone(), actual });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;
    use crate::test_support::{fp, new_version, weights};
    use serde_json::json;

    #[test]
    fn export_contains_weights_preprocessing_schema_spec_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry::open(dir.path()).unwrap();
        reg.register(&new_version("heart", 1, None, 0.8), &weights(1.0)).unwrap();
        let v2 = reg.register(&new_version("heart", 2, Some(1), 0.85), &weights(0.1)).unwrap();
        reg.promote("heart", v2.version, "alice", "release").unwrap();
        let out = dir.path().join("heart-v2.json");
        reg.export("heart", Version(2), &out).unwrap();

        let doc = ExportDocument::read(&out).unwrap();
        doc.verify_weights().unwrap();
        assert_eq!(doc.weights.values, cohort_core::model::parameters_from_bytes(&weights(0.1)).unwrap());
        assert_eq!(doc.weights.sha256, v2.sha256);
        assert_eq!((doc.name.as_str(), doc.version, doc.stage), ("heart", Version(2), Stage::Production));
        assert_eq!(doc.preprocessing["mean"], json!([0.5, -1.0]));
        assert_eq!(doc.preprocessing["std"], json!([1.0, 2.0]));
        assert_eq!(doc.schema["features"], json!(["age", "bp"]));
        assert_eq!(doc.model_spec["layers"], json!([2, 2]));
        assert_eq!(doc.metadata.ancestors, [Version(1)]);
        assert_eq!(doc.metadata.privacy["hospital-a"].epsilon, 1.0);
        assert_eq!(doc.metadata.slices.len(), 2);
        assert_eq!(doc.metadata.data_fingerprints["hospital-b"], fp('b'));
        assert_eq!(doc.metadata.secure_aggregation["threshold"], 2);
        assert_eq!(doc.metadata.stage_events.len(), 2);

        // The raw file is one JSON document with the documented top-level keys.
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        for key in ["format", "format_version", "weights", "preprocessing", "schema", "model_spec", "metadata"] {
            assert!(raw.get(key).is_some(), "missing {key}");
        }
        // A tampered weight is detected.
        let mut tampered = doc.clone();
        tampered.weights.values[0] += 1.0;
        assert!(matches!(tampered.verify_weights(), Err(RegistryError::CorruptArtifact { .. })));
    }
}

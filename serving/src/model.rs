//! One servable model version: the registry's export document turned into a checked predictor that applies
//! exactly the training preprocessing.

use crate::error::ServeError;
use cohort_core::config::Schema;
use cohort_model::{DenseStack, ModelSpec, TaskKind, inference_device};
use cohort_registry::{ExportDocument, Version};
use std::sync::Mutex;

/// A feature matrix in the model's feature order, `rows × features`, row-major, as the client sent it (not yet
/// scaled).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Number of rows.
    pub rows: usize,
    /// The values.
    pub values: Vec<f32>,
}

/// The model's answer for a batch of rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// Classification: per row, the class with the highest probability and the softmax probabilities.
    Classes {
        /// The predicted class of each row.
        classes: Vec<u32>,
        /// `rows × classes` probabilities, row-major.
        probabilities: Vec<f32>,
        /// Number of classes.
        width: usize,
    },
    /// Regression: one value per row, in the label's units.
    Values(Vec<f32>),
}

impl Prediction {
    /// Number of rows predicted.
    pub fn rows(&self) -> usize {
        match self {
            Self::Classes { classes, .. } => classes.len(),
            Self::Values(values) => values.len(),
        }
    }
}

/// A model version ready to serve. Built once per version from its [`ExportDocument`]; immutable afterwards,
/// so a request that holds one finishes on it even when the registry moves on.
#[derive(Debug)]
pub struct ServedModel {
    name: String,
    version: Version,
    sha256: String,
    schema: Schema,
    spec: ModelSpec,
    /// `(x - center) / scale`, per feature: the federation-wide scaling every node trained with.
    center: Vec<f32>,
    scale: Vec<f32>,
    stack: DenseStack,
    created_at: String,
    round: u64,
    /// The export's lineage, evaluation and privacy metadata, as JSON.
    lineage: serde_json::Value,
    /// Per feature, the sum of the scaled values served, and the rows served (for [`ServedModel::drift`]).
    served: Mutex<(Vec<f64>, u64)>,
}

impl ServedModel {
    /// Checks an export document and builds its predictor.
    ///
    /// # Errors
    /// [`ServeError::Unservable`] when the weights do not verify, the spec or schema do not parse or disagree,
    /// or the version was trained with per-node standardization (which no server can reproduce: the federation
    /// must declare `schema.bounds`).
    pub fn from_export(doc: &ExportDocument) -> Result<Self, ServeError> {
        let unservable =
            |reason: String| ServeError::Unservable { model: doc.name.clone(), version: doc.version, reason };
        doc.verify_weights().map_err(|e| unservable(e.to_string()))?;
        let spec: ModelSpec =
            serde_json::from_value(doc.model_spec.clone()).map_err(|e| unservable(format!("model spec: {e}")))?;
        let schema: Schema =
            serde_json::from_value(doc.schema.clone()).map_err(|e| unservable(format!("schema: {e}")))?;
        if spec.inputs() != schema.features.len() || spec.outputs() != schema.outputs() || spec.task != schema.task {
            return Err(unservable(format!(
                "the model spec {:?} ({:?}) does not fit the schema's {} features and {} outputs ({:?})",
                spec.layers,
                spec.task,
                schema.features.len(),
                schema.outputs(),
                schema.task
            )));
        }
        let (center, scale) = declared_range(&doc.preprocessing, schema.features.len()).map_err(unservable)?;
        let stack = DenseStack::from_flat(&spec.layers, &doc.weights.values, &inference_device())
            .map_err(|e| unservable(e.to_string()))?;
        let served = Mutex::new((vec![0.0; spec.inputs()], 0));
        Ok(Self {
            name: doc.name.clone(),
            version: doc.version,
            sha256: doc.weights.sha256.clone(),
            schema,
            spec,
            center,
            scale,
            stack,
            created_at: doc.metadata.created_at.clone(),
            round: doc.metadata.round.0,
            lineage: serde_json::to_value(&doc.metadata).map_err(|e| unservable(format!("metadata: {e}")))?,
            served,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// SHA-256 of the weights (the registry artifact hash).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The feature names, in input order.
    pub fn features(&self) -> &[String] {
        &self.schema.features
    }

    /// The declared plausible range of each feature, when the schema declares one.
    pub fn bounds(&self) -> Option<&[[f64; 2]]> {
        self.schema.bounds.as_deref()
    }

    /// What the model predicts.
    pub fn task(&self) -> TaskKind {
        self.spec.task
    }

    /// Number of outputs: classes for classification, 1 for regression.
    pub fn outputs(&self) -> usize {
        self.spec.outputs()
    }

    /// The layer widths.
    pub fn layers(&self) -> &[usize] {
        &self.spec.layers
    }

    /// The label column it was trained to predict.
    pub fn label(&self) -> &str {
        &self.schema.label
    }

    /// When the version was registered (RFC 3339).
    pub fn created_at(&self) -> &str {
        &self.created_at
    }

    /// The round that produced it.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The export's lineage, evaluation and privacy metadata (parents, clients, metrics, privacy spend, stage
    /// history), as JSON.
    pub fn lineage(&self) -> &serde_json::Value {
        &self.lineage
    }

    /// The input-drift score of each feature: the mean scaled value `(x - center) / scale` of the rows served
    /// so far (0 at the centre of the declared range, ±1 at its bounds); `None` before the first row.
    pub fn drift(&self) -> Option<Vec<f64>> {
        let served = self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (sums, rows) = &*served;
        (*rows > 0).then(|| sums.iter().map(|s| s / *rows as f64).collect())
    }

    /// Checks every value against the schema: finite, and inside the declared bounds when there are some.
    ///
    /// # Errors
    /// [`ServeError::BadInput`] naming the feature and row of the first bad value.
    pub fn check(&self, features: &Features) -> Result<(), ServeError> {
        let dims = self.features().len();
        if features.values.len() != features.rows * dims {
            return Err(ServeError::bad(
                "inputs",
                format!("{} values do not make {} rows of {dims} features", features.values.len(), features.rows),
            ));
        }
        for (row, values) in features.values.chunks_exact(dims.max(1)).enumerate() {
            for (column, &value) in values.iter().enumerate() {
                let name = &self.schema.features[column];
                if !value.is_finite() {
                    return Err(ServeError::bad(name, format!("row {row}: {value} is not a finite number")));
                }
                if let Some([lo, hi]) = self.bounds().and_then(|b| b.get(column))
                    && !(*lo..=*hi).contains(&f64::from(value))
                {
                    return Err(ServeError::bad(
                        name,
                        format!("row {row}: {value} is outside the declared range [{lo}, {hi}]"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the rows ([`ServedModel::check`]), applies the training preprocessing and runs the model.
    ///
    /// # Errors
    /// [`ServeError::BadInput`] for a bad value; [`ServeError::Internal`] when the model cannot run.
    pub fn predict(&self, features: &Features) -> Result<Prediction, ServeError> {
        self.check(features)?;
        let dims = self.features().len();
        let mut scaled = features.values.clone();
        {
            // Scaling and the drift sums in one pass.
            let mut served = self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (sums, rows) = &mut *served;
            for row in scaled.chunks_exact_mut(dims.max(1)) {
                for (((v, c), s), sum) in row.iter_mut().zip(&self.center).zip(&self.scale).zip(sums.iter_mut()) {
                    *v = (*v - c) / s;
                    *sum += f64::from(*v);
                }
            }
            *rows += features.rows as u64;
        }
        let outputs =
            self.stack.predict_for(self.spec.loss(), &scaled).map_err(|e| ServeError::Internal(e.to_string()))?;
        Ok(match self.spec.task {
            TaskKind::Regression => Prediction::Values(outputs),
            TaskKind::Binary | TaskKind::Multiclass => {
                let width = self.outputs();
                let classes = outputs.chunks_exact(width).map(argmax).collect();
                Prediction::Classes { classes, probabilities: outputs, width }
            }
        })
    }
}

/// The index of the largest value (the first on ties).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    u32::try_from(best).unwrap_or(u32::MAX)
}

/// The `center` and `scale` of a `declared-range` preprocessing document, checked.
fn declared_range(preprocessing: &serde_json::Value, dims: usize) -> Result<(Vec<f32>, Vec<f32>), String> {
    let kind = preprocessing.get("kind").and_then(|k| k.as_str()).unwrap_or("unknown");
    if kind != "declared-range" {
        return Err(format!(
            "it was trained with preprocessing {kind:?}, which a server cannot reproduce; only models of \
             federations that declare schema.bounds (preprocessing \"declared-range\") can be served"
        ));
    }
    let vector = |key: &str| -> Result<Vec<f32>, String> {
        let values: Vec<f32> = serde_json::from_value(preprocessing.get(key).cloned().unwrap_or_default())
            .map_err(|e| format!("preprocessing.{key}: {e}"))?;
        if values.len() != dims {
            return Err(format!("preprocessing.{key} has {} values for {dims} features", values.len()));
        }
        Ok(values)
    };
    let (center, scale) = (vector("center")?, vector("scale")?);
    if center.iter().chain(&scale).any(|v| !v.is_finite()) || scale.iter().any(|s| *s <= 0.0) {
        return Err("preprocessing has a non-finite center or a scale that is not positive".into());
    }
    Ok((center, scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::export;

    #[test]
    fn predictions_apply_the_declared_scaling_and_softmax() {
        // One feature on [0, 10] scaled to [-1, 1]; logits (w·x + b) with w = [[1, -1]], b = [0, 0].
        let model = ServedModel::from_export(&export(&[1.0, -1.0, 0.0, 0.0])).unwrap();
        let got = model.predict(&Features { rows: 2, values: vec![10.0, 0.0] }).unwrap();
        let Prediction::Classes { classes, probabilities, width } = got else { panic!("a classifier") };
        assert_eq!((classes, width), (vec![0, 1], 2));
        // Scaled x = 1: logits (1, -1); softmax gives 1 / (1 + e^-2) for class 0.
        let p0 = 1.0 / (1.0 + (-2.0f32).exp());
        assert!((probabilities[0] - p0).abs() < 1e-6 && (probabilities[3] - p0).abs() < 1e-6, "{probabilities:?}");
    }

    #[test]
    fn values_outside_the_declared_range_or_not_finite_are_named() {
        let model = ServedModel::from_export(&export(&[1.0, -1.0, 0.0, 0.0])).unwrap();
        for bad in [f32::NAN, 10.5, -0.1] {
            let err = model.predict(&Features { rows: 2, values: vec![1.0, bad] }).unwrap_err();
            let ServeError::BadInput { field, message } = &err else { panic!("{err}") };
            assert_eq!(field, "dose");
            assert!(message.starts_with("row 1:"), "{message}");
        }
    }

    #[test]
    fn a_model_without_declared_scaling_or_with_tampered_weights_is_refused() {
        let mut doc = export(&[1.0, -1.0, 0.0, 0.0]);
        doc.preprocessing = serde_json::json!({"kind": "per-node-standardization"});
        let err = ServedModel::from_export(&doc).unwrap_err();
        assert!(err.to_string().contains("schema.bounds"), "{err}");
        let mut doc = export(&[1.0, -1.0, 0.0, 0.0]);
        doc.weights.values[0] = 2.0;
        assert!(matches!(ServedModel::from_export(&doc), Err(ServeError::Unservable { .. })));
    }
}

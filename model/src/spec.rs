//! The architecture of the federation's model, as the plan states it: layer widths and the task.

use crate::layout::{self, check_parameters, parameter_count};
use crate::{Loss, ModelError};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Two classes, labels 0 and 1. The model has two outputs (softmax).
    Binary,
    /// `classes` classes, labels `0..classes`.
    Multiclass,
    /// One real-valued target.
    Regression,
}

/// The architecture of the federation's model: a stack of dense layers `[input, hidden..., output]` with ReLU
/// between layers (logistic regression is the stack with no hidden layer), whose parameters follow the flat
/// layout of [`crate::layout`].
///
/// # Example
/// ```
/// use cohort_model::{Loss, ModelSpec, TaskKind};
/// let spec = ModelSpec::new(30, &[], 2, TaskKind::Binary)?;
/// assert_eq!(spec.parameter_count(), 62);
/// assert_eq!(spec.loss(), Loss::CrossEntropy { classes: 2 });
/// # Ok::<(), cohort_model::ModelError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Layer widths, input first and output last. At least two entries.
    pub layers: Vec<usize>,
    /// What the model predicts.
    pub task: TaskKind,
}

impl ModelSpec {
    /// Builds a spec for `input` features, the given hidden widths and `outputs` outputs.
    ///
    /// # Errors
    /// [`ModelError::Sizes`] when a width is zero.
    pub fn new(input: usize, hidden: &[usize], outputs: usize, task: TaskKind) -> Result<Self, ModelError> {
        let mut layers = vec![input];
        layers.extend_from_slice(hidden);
        layers.push(outputs);
        let spec = Self { layers, task };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the widths.
    ///
    /// # Errors
    /// [`ModelError::Sizes`] for fewer than two widths, a zero width, or a parameter count that overflows.
    pub fn validate(&self) -> Result<(), ModelError> {
        layout::validate_sizes(&self.layers)
    }

    /// Total number of parameters in the flat layout.
    pub fn parameter_count(&self) -> usize {
        parameter_count(&self.layers)
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        self.layers.first().copied().unwrap_or(0)
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.layers.last().copied().unwrap_or(0)
    }

    /// The per-example loss the task trains on: squared error for regression, cross-entropy over the outputs
    /// otherwise.
    pub fn loss(&self) -> Loss {
        match self.task {
            TaskKind::Regression => Loss::SquaredError,
            TaskKind::Binary | TaskKind::Multiclass => Loss::CrossEntropy { classes: self.outputs() },
        }
    }

    /// Draws initial parameters by [`layout::initial_parameters`], the one initialization.
    ///
    /// # Errors
    /// [`ModelError::Sizes`] for a spec that does not [`validate`](Self::validate).
    pub fn initial_parameters<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Vec<f32>, ModelError> {
        layout::initial_parameters(&self.layers, rng)
    }

    /// Checks that `params` fits this spec and is finite.
    ///
    /// # Errors
    /// [`ModelError::Sizes`], [`ModelError::ParameterCount`] or [`ModelError::NonFiniteParameter`].
    pub fn check_parameters(&self, params: &[f32]) -> Result<(), ModelError> {
        check_parameters(&self.layers, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_counts_and_checks_its_parameters() {
        let spec = ModelSpec::new(30, &[64, 64], 2, TaskKind::Binary).unwrap();
        assert_eq!(spec.parameter_count(), 30 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2);
        assert_eq!((spec.inputs(), spec.outputs()), (30, 2));
        assert!(matches!(ModelSpec::new(3, &[0], 2, TaskKind::Binary), Err(ModelError::Sizes(_))));
        let small = ModelSpec::new(2, &[], 2, TaskKind::Binary).unwrap();
        assert!(matches!(
            small.check_parameters(&[0.0; 5]),
            Err(ModelError::ParameterCount { expected: 6, actual: 5 })
        ));
    }

    #[test]
    fn the_loss_follows_the_task() {
        let loss = |task, outputs| ModelSpec::new(4, &[], outputs, task).unwrap().loss();
        assert_eq!(loss(TaskKind::Multiclass, 10), Loss::CrossEntropy { classes: 10 });
        assert_eq!(loss(TaskKind::Regression, 1), Loss::SquaredError);
    }

    #[test]
    fn the_spec_reads_and_writes_the_plans_toml_words() {
        let spec: ModelSpec = serde_json::from_str(r#"{"layers":[3,1],"task":"regression"}"#).unwrap();
        assert_eq!(spec, ModelSpec::new(3, &[], 1, TaskKind::Regression).unwrap());
    }
}

//! Model specifications and the flat parameter layout shared by every node.
//!
//! A model is a stack of dense layers `[input, hidden..., output]` with ReLU between layers. Logistic
//! regression is the stack with no hidden layer. Parameters travel as one flat `f32` vector: for each layer in
//! order, the weight matrix row-major as `[in][out]`, then the bias `[out]`. This is the layout of
//! `cohort_dp::dense::DenseStack`.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// The architecture of the federation's model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Layer widths, input first and output last. At least two entries.
    pub layers: Vec<usize>,
    /// What the model predicts.
    pub task: TaskKind,
}

/// A model specification that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Fewer than two layer widths, or a zero width.
    #[error("invalid layer widths {0:?}: need at least an input and an output width, all non-zero")]
    BadLayers(Vec<usize>),
    /// A parameter vector of the wrong length.
    #[error("model has {expected} parameters but {actual} were given")]
    WrongLength {
        /// Expected number of parameters.
        expected: usize,
        /// Number supplied.
        actual: usize,
    },
    /// A model file whose byte length is not a multiple of 4.
    #[error("model bytes have length {0}, which is not a whole number of f32 values")]
    RaggedBytes(usize),
    /// A non-finite parameter.
    #[error("parameter {index} is not finite ({value})")]
    NonFinite {
        /// Index of the first bad parameter.
        index: usize,
        /// Its value.
        value: f32,
    },
}

impl ModelSpec {
    /// Builds a spec for `input` features, the given hidden widths and `outputs` outputs.
    ///
    /// # Errors
    /// [`ModelError::BadLayers`] when a width is zero.
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
    /// [`ModelError::BadLayers`] for fewer than two widths or a zero width.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.layers.len() < 2 || self.layers.contains(&0) {
            return Err(ModelError::BadLayers(self.layers.clone()));
        }
        Ok(())
    }

    /// Total number of parameters in the flat layout.
    pub fn parameter_count(&self) -> usize {
        self.layers.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        self.layers.first().copied().unwrap_or(0)
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.layers.last().copied().unwrap_or(0)
    }

    /// Draws initial parameters: Glorot-uniform weights (Glorot & Bengio 2010) and zero biases.
    pub fn initial_parameters<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.parameter_count());
        for w in self.layers.windows(2) {
            let (fan_in, fan_out) = (w[0], w[1]);
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            out.extend((0..fan_in * fan_out).map(|_| rng.random_range(-limit..=limit)));
            out.extend(std::iter::repeat_n(0.0, fan_out));
        }
        out
    }

    /// Checks that `params` fits this spec and is finite.
    ///
    /// # Errors
    /// [`ModelError::WrongLength`] or [`ModelError::NonFinite`].
    pub fn check_parameters(&self, params: &[f32]) -> Result<(), ModelError> {
        if params.len() != self.parameter_count() {
            return Err(ModelError::WrongLength { expected: self.parameter_count(), actual: params.len() });
        }
        check_finite(params)
    }
}

/// Checks every value is finite.
///
/// # Errors
/// [`ModelError::NonFinite`] naming the first bad index.
pub fn check_finite(values: &[f32]) -> Result<(), ModelError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(ModelError::NonFinite { index, value: values[index] }),
        None => Ok(()),
    }
}

/// Serializes parameters as little-endian `f32` bytes: the model's wire and artifact format.
pub fn parameters_to_bytes(params: &[f32]) -> Vec<u8> {
    crate::protocol::codec::f32s_to_le(params)
}

/// Parses little-endian `f32` bytes.
///
/// # Errors
/// [`ModelError::RaggedBytes`] when the length is not a multiple of 4.
pub fn parameters_from_bytes(bytes: &[u8]) -> Result<Vec<f32>, ModelError> {
    crate::protocol::codec::f32s_from_le(bytes).map_err(|_| ModelError::RaggedBytes(bytes.len()))
}

/// SHA-256 of the serialized parameters, as lowercase hex.
pub fn parameters_sha256(params: &[f32]) -> String {
    hex::encode(Sha256::digest(parameters_to_bytes(params)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parameter_count_counts_weights_and_biases() {
        let spec = ModelSpec::new(30, &[64, 64], 2, TaskKind::Binary).unwrap();
        assert_eq!(spec.parameter_count(), 30 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2);
    }

    #[test]
    fn zero_width_is_rejected() {
        assert!(matches!(ModelSpec::new(3, &[0], 2, TaskKind::Binary), Err(ModelError::BadLayers(_))));
    }

    #[test]
    fn wrong_length_and_nan_are_rejected() {
        let spec = ModelSpec::new(2, &[], 2, TaskKind::Binary).unwrap();
        assert!(matches!(spec.check_parameters(&[0.0; 5]), Err(ModelError::WrongLength { expected: 6, actual: 5 })));
        let mut p = vec![0.0; 6];
        p[4] = f32::NAN;
        assert!(matches!(spec.check_parameters(&p), Err(ModelError::NonFinite { index: 4, .. })));
    }

    #[test]
    fn ragged_bytes_are_rejected() {
        assert_eq!(parameters_from_bytes(&[0, 1, 2]), Err(ModelError::RaggedBytes(3)));
    }

    proptest! {
        #[test]
        fn bytes_round_trip(values in proptest::collection::vec(-1e6f32..1e6, 0..200)) {
            prop_assert_eq!(parameters_from_bytes(&parameters_to_bytes(&values)).unwrap(), values);
        }
    }
}

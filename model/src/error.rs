//! The one error type of the model crate: a model, data or loss shape that does not fit.

use crate::loss::Loss;

/// A model, data or loss shape that does not fit: the caller passed something the model cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Fewer than two layer sizes, or a zero size, or a parameter count that overflows.
    #[error("invalid layer sizes {0:?}: need at least [input, output], all non-zero")]
    Sizes(Vec<usize>),
    /// A flat parameter (or global-model) vector of the wrong length.
    #[error("the network has {expected} parameters but {actual} were given")]
    ParameterCount {
        /// Length the layer sizes imply.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// A parameter that is NaN or infinite.
    #[error("parameter {0} is not finite")]
    NonFiniteParameter(usize),
    /// The loss does not fit the output layer (cross-entropy needs `classes` ≥ 2 outputs, squared error 1).
    #[error("loss {loss:?} does not fit an output layer of width {outputs}")]
    LossShape {
        /// The loss.
        loss: Loss,
        /// Output width of the network.
        outputs: usize,
    },
    /// Feature values that do not form `rows × input` (row-major).
    #[error("{values} feature values do not form {rows} rows of {dims} features")]
    Features {
        /// Number of feature values given.
        values: usize,
        /// Number of rows (targets) given.
        rows: usize,
        /// Input width of the network.
        dims: usize,
    },
    /// A feature value that is NaN or infinite.
    #[error("feature value {0} (row-major index) is not finite")]
    NonFiniteFeature(usize),
    /// A target that is not valid for the loss (not a class id in `0..classes`, or not finite).
    #[error("target {index} = {value} is not valid for {loss:?}")]
    Target {
        /// Row of the target.
        index: usize,
        /// The target.
        value: f32,
        /// The loss.
        loss: Loss,
    },
    /// A tensor could not be read back from the device.
    #[error("tensor readback failed: {0}")]
    Readback(String),
}

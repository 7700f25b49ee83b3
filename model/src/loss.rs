//! The per-example losses of Cohort's tasks, summed over a batch.

use crate::ModelError;
use burn::tensor::{Tensor, TensorData, activation};

/// The per-example loss. Losses over a batch are always **summed** (not averaged), so the gradient of the
/// batch loss is the sum of each example's own gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Softmax cross-entropy `−log softmax(z)_y` over `classes` outputs; targets are class ids `0..classes`
    /// stored as `f32` (binary classification uses `classes = 2`).
    CrossEntropy {
        /// Number of classes, which must equal the output width.
        classes: usize,
    },
    /// Squared error `(z − y)²` of a single output (no factor ½); targets are real values.
    SquaredError,
}

impl Loss {
    /// Checks that this loss fits a network whose last layer has `outputs` units.
    ///
    /// # Errors
    /// [`ModelError::LossShape`] when it does not.
    pub fn check_outputs(self, outputs: usize) -> Result<(), ModelError> {
        let ok = match self {
            Loss::CrossEntropy { classes } => classes >= 2 && classes == outputs,
            Loss::SquaredError => outputs == 1,
        };
        if ok { Ok(()) } else { Err(ModelError::LossShape { loss: self, outputs }) }
    }

    /// Checks one target value.
    pub(crate) fn check_target(self, index: usize, value: f32) -> Result<(), ModelError> {
        let ok = match self {
            Loss::CrossEntropy { classes } => value >= 0.0 && value.fract() == 0.0 && (value as usize) < classes,
            Loss::SquaredError => value.is_finite(),
        };
        if ok { Ok(()) } else { Err(ModelError::Target { index, value, loss: self }) }
    }

    /// The summed per-example loss of `output` (`rows × outputs`) against `targets`, as a one-element tensor
    /// on `output`'s device (tracked when `output` is).
    ///
    /// # Errors
    /// [`ModelError`] for a target invalid for the loss or a row count that does not match.
    pub fn summed(self, output: Tensor<2>, targets: &[f32]) -> Result<Tensor<1>, ModelError> {
        let [rows, outputs] = output.dims();
        self.check_outputs(outputs)?;
        if rows != targets.len() {
            return Err(ModelError::Features { values: rows * outputs, rows: targets.len(), dims: outputs });
        }
        let device = output.device();
        match self {
            Loss::SquaredError => {
                for (i, t) in targets.iter().enumerate() {
                    self.check_target(i, *t)?;
                }
                let y = Tensor::<2>::from_data(TensorData::new(targets.to_vec(), [rows, 1]), &device);
                let diff = output - y;
                Ok((diff.clone() * diff).sum())
            }
            Loss::CrossEntropy { classes } => {
                let mut onehot = vec![0.0f32; rows * classes];
                for (i, t) in targets.iter().enumerate() {
                    self.check_target(i, *t)?;
                    onehot[i * classes + *t as usize] = 1.0;
                }
                let y = Tensor::<2>::from_data(TensorData::new(onehot, [rows, classes]), &device);
                Ok((activation::log_softmax(output, 1) * y).sum().neg())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_fits_only_its_output_width() {
        assert!(Loss::CrossEntropy { classes: 3 }.check_outputs(3).is_ok());
        assert!(Loss::CrossEntropy { classes: 3 }.check_outputs(2).is_err());
        assert!(Loss::CrossEntropy { classes: 1 }.check_outputs(1).is_err());
        assert!(Loss::SquaredError.check_outputs(1).is_ok());
        assert!(matches!(Loss::SquaredError.check_outputs(2), Err(ModelError::LossShape { outputs: 2, .. })));
    }

    #[test]
    fn targets_must_be_class_ids_or_finite_values() {
        let ce = Loss::CrossEntropy { classes: 2 };
        assert!(ce.check_target(0, 1.0).is_ok());
        for bad in [2.0, 0.5, -1.0, f32::NAN] {
            assert!(matches!(ce.check_target(3, bad), Err(ModelError::Target { index: 3, .. })), "{bad}");
        }
        assert!(Loss::SquaredError.check_target(0, -7.25).is_ok());
        assert!(Loss::SquaredError.check_target(0, f32::INFINITY).is_err());
    }
}

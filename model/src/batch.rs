//! A borrowed batch of examples: row-major features and one target per row.

use crate::{Loss, ModelError};

/// A batch (or a whole data set) of examples, borrowed: row-major features `rows × dims` and one target per
/// row. The number of rows is the number of targets.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Row-major features, `rows × dims`.
    pub features: &'a [f32],
    /// One target per row: a class id as `f32` for [`Loss::CrossEntropy`], a value for [`Loss::SquaredError`].
    pub targets: &'a [f32],
}

impl<'a> Batch<'a> {
    /// A batch of `features` (row-major) and `targets`.
    pub fn new(features: &'a [f32], targets: &'a [f32]) -> Self {
        Self { features, targets }
    }

    /// Number of rows (= number of targets).
    pub fn rows(&self) -> usize {
        self.targets.len()
    }

    /// Checks that the batch has `dims` features per row, finite features, and targets valid for `loss`.
    ///
    /// # Errors
    /// [`ModelError::Features`], [`ModelError::NonFiniteFeature`] or [`ModelError::Target`].
    pub fn validate(&self, dims: usize, loss: Loss) -> Result<(), ModelError> {
        if Some(self.features.len()) != self.rows().checked_mul(dims) {
            return Err(ModelError::Features { values: self.features.len(), rows: self.rows(), dims });
        }
        if let Some(i) = self.features.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::NonFiniteFeature(i));
        }
        for (i, t) in self.targets.iter().enumerate() {
            loss.check_target(i, *t)?;
        }
        Ok(())
    }

    /// The rows `indices` of this batch, copied into `features` and `targets` buffers (cleared first).
    /// Indices out of range are skipped.
    pub fn gather(&self, dims: usize, indices: &[usize], features: &mut Vec<f32>, targets: &mut Vec<f32>) {
        features.clear();
        targets.clear();
        for &r in indices {
            if let (Some(row), Some(t)) = (self.features.get(r * dims..(r + 1) * dims), self.targets.get(r)) {
                features.extend_from_slice(row);
                targets.push(*t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_copies_the_chosen_rows_and_skips_those_out_of_range() {
        let features = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let targets = [0.0, 1.0, 0.0];
        let batch = Batch::new(&features, &targets);
        let (mut x, mut y) = (vec![9.0], vec![9.0]);
        batch.gather(2, &[2, 7, 0], &mut x, &mut y);
        assert_eq!((x, y), (vec![5.0, 6.0, 1.0, 2.0], vec![0.0, 0.0]));
    }

    #[test]
    fn validate_names_the_first_problem() {
        let ce = Loss::CrossEntropy { classes: 2 };
        assert!(Batch::new(&[0.0; 4], &[0.0, 1.0]).validate(2, ce).is_ok());
        assert!(matches!(Batch::new(&[0.0; 3], &[0.0, 1.0]).validate(2, ce), Err(ModelError::Features { .. })));
        assert!(matches!(
            Batch::new(&[0.0, f32::NAN, 0.0, 0.0], &[0.0, 1.0]).validate(2, ce),
            Err(ModelError::NonFiniteFeature(1))
        ));
        assert!(matches!(Batch::new(&[0.0; 4], &[0.0, 2.0]).validate(2, ce), Err(ModelError::Target { index: 1, .. })));
    }
}

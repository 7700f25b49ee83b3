//! Closed-form per-example gradients of the models with no hidden layer, the defaults of Cohort: logistic
//! (softmax) regression, sizes `[d, k]` with [`Loss::CrossEntropy`], and linear regression, sizes `[d, 1]` with
//! [`Loss::SquaredError`]. No autodiff, no probe, no tensors: one pass over the batch on the host.
//!
//! # The formulas
//! For one dense layer `z_i = x_i·W + b` (W is `d × k`, row-major as in the [flat layout](crate::layout)), the
//! gradient of example `i`'s own loss is `∂loss_i/∂W = x_iᵀ g_i` and `∂loss_i/∂b = g_i`, where
//! `g_i = ∂loss_i/∂z_i` is
//! - `softmax(z_i) − onehot(y_i)` for softmax cross-entropy `−log softmax(z_i)_{y_i}`;
//! - `2(z_i − y_i)` for the squared error `(z_i − y_i)²` (no factor ½, as in [`Loss::SquaredError`]).
//!
//! So `‖∇_i‖² = (‖x_i‖² + 1)·‖g_i‖²` exactly ([`gradient_norm`]), the one-layer case of the ghost norm of Li et
//! al. 2022 ("Large Language Models Can Be Strong Differentially Private Learners", ICLR) and Bu et al. 2023
//! ("Differentially Private Optimization on Large Model at Small Cost", ICML). [`weighted_sum`] gives
//! `Σ_i c_i x_iᵀ g_i` and `Σ_i c_i g_i` for per-example weights `c_i` chosen by the caller: 1 for ordinary
//! SGD ([`summed_gradient`]), the clip factor `min(1, C/‖∇_i‖)` for DP-SGD (`cohort_dp::clip`), so both
//! train on the same code. These are the gradients of Abadi et al. 2016 §3.1 written out for a generalized
//! linear model; the textbook derivation of the softmax gradient is Bishop, "Pattern Recognition and Machine
//! Learning", eq. 4.109.
//!
//! Cost: `O(B·d·k)` multiply-adds and no allocation beyond the output, against a burn forward and backward
//! pass for deeper stacks ([`crate::DenseStack::summed_gradient`]).
//!
//! # Example
//! ```
//! use cohort_model::{linear, Batch, Loss};
//! // Logistic regression on two features at W = 0, b = 0: for class 1, g = softmax(0) − onehot(1) = (½, −½),
//! // the weight gradient is xᵀg and the norm is √(‖x‖² + 1)·‖g‖ = √13.
//! let batch = Batch::new(&[3.0, 4.0], &[1.0]);
//! let mut norm = 0.0;
//! let sum = linear::weighted_sum(&[2, 2], &[0.0; 6], Loss::CrossEntropy { classes: 2 }, batch, |x, g| {
//!     norm = linear::gradient_norm(x, g);
//!     1.0
//! })?;
//! assert_eq!(sum.gradient, vec![1.5, -1.5, 2.0, -2.0, 0.5, -0.5]);
//! assert!((norm - 13f64.sqrt()).abs() < 1e-12);
//! # Ok::<(), cohort_model::ModelError>(())
//! ```

use crate::layout::check_parameters;
use crate::{Batch, Loss, ModelError};

/// Whether this module applies: a single dense layer (`sizes = [d, k]`).
pub fn applies(sizes: &[usize]) -> bool {
    sizes.len() == 2
}

/// A weighted sum of per-example gradients.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleSum {
    /// `Σ_i c_i ∇_i` in the flat parameter layout.
    pub gradient: Vec<f32>,
    /// The summed (unweighted) per-example loss over the batch.
    pub loss_sum: f64,
}

/// `‖∇_i‖ = √((‖x‖² + 1)·‖g‖²)`, the norm of the whole gradient (weights and bias) of the example with
/// features `x` and output gradient `g` (see the [module docs](self)).
pub fn gradient_norm(x: &[f32], g: &[f32]) -> f64 {
    let x_sq: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum();
    let g_sq: f64 = g.iter().map(|v| f64::from(*v).powi(2)).sum();
    ((x_sq + 1.0) * g_sq).sqrt()
}

/// `Σ_i c_i ∇_i` over `batch` for the one-layer model `sizes = [d, k]` at `params`, where `weight(x_i, g_i)`
/// gives `c_i` from example `i`'s features and output gradient (see the [module docs](self)). An example of
/// weight 0 contributes nothing, even when its gradient is not finite (no 0·∞ = NaN). An empty batch gives a
/// zero gradient.
///
/// # Errors
/// [`ModelError::Sizes`] for sizes that are not one layer, or the error of parameters, loss or batch that do
/// not fit.
pub fn weighted_sum(
    sizes: &[usize],
    params: &[f32],
    loss: Loss,
    batch: Batch<'_>,
    mut weight: impl FnMut(&[f32], &[f32]) -> f32,
) -> Result<ExampleSum, ModelError> {
    if !applies(sizes) {
        return Err(ModelError::Sizes(sizes.to_vec()));
    }
    let (d, k) = (sizes[0], sizes[1]);
    check_parameters(sizes, params)?;
    loss.check_outputs(k)?;
    batch.validate(d, loss)?;
    let (weights, bias) = params.split_at(d * k);
    let mut gradient = vec![0.0f32; params.len()];
    let mut loss_sum = 0.0f64;
    let mut g = vec![0.0f32; k];
    for (x, y) in batch.features.chunks_exact(d).zip(batch.targets) {
        // z = x·W + b.
        g.copy_from_slice(bias);
        for (xm, row) in x.iter().zip(weights.chunks_exact(k)) {
            for (z, w) in g.iter_mut().zip(row) {
                *z += xm * w;
            }
        }
        // g = ∂loss/∂z, overwriting z.
        match loss {
            Loss::SquaredError => {
                let diff = g[0] - y;
                loss_sum += f64::from(diff) * f64::from(diff);
                g[0] = 2.0 * diff;
            }
            Loss::CrossEntropy { .. } => {
                let class = *y as usize;
                let max = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut total = 0.0f64;
                for z in g.iter_mut() {
                    let e = f64::from(*z - max).exp();
                    total += e;
                    *z = e as f32;
                }
                loss_sum += total.ln() - f64::from(g[class]).ln();
                let inv = (1.0 / total) as f32;
                for z in g.iter_mut() {
                    *z *= inv;
                }
                g[class] -= 1.0;
            }
        }
        let factor = weight(x, &g);
        if factor == 0.0 {
            // The example contributes nothing, even a non-finite gradient (not 0·∞ = NaN).
            continue;
        }
        for v in g.iter_mut() {
            *v *= factor;
        }
        // Σ c·xᵀg and Σ c·g.
        let (w_grad, b_grad) = gradient.split_at_mut(d * k);
        for (xm, row) in x.iter().zip(w_grad.chunks_exact_mut(k)) {
            for (s, gj) in row.iter_mut().zip(&g) {
                *s += xm * gj;
            }
        }
        for (s, gj) in b_grad.iter_mut().zip(&g) {
            *s += gj;
        }
    }
    Ok(ExampleSum { gradient, loss_sum })
}

/// The plain sum of per-example gradients and the summed loss of the one-layer model `sizes = [d, k]`
/// ([`weighted_sum`] with every weight 1), what ordinary SGD needs.
///
/// # Errors
/// As [`weighted_sum`].
pub fn summed_gradient(
    sizes: &[usize],
    params: &[f32],
    loss: Loss,
    batch: Batch<'_>,
) -> Result<(Vec<f32>, f64), ModelError> {
    let sum = weighted_sum(sizes, params, loss, batch, |_, _| 1.0)?;
    Ok((sum.gradient, sum.loss_sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DenseStack, parameter_count, training_device};

    /// Deterministic pseudo-random parameters, features and targets (an LCG).
    fn setup(sizes: &[usize], rows: usize, seed: u64, loss: Loss) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let params = (0..parameter_count(sizes)).map(|_| 2.0 * next()).collect();
        let features = (0..rows * sizes[0]).map(|_| 3.0 * next()).collect();
        let targets = match loss {
            Loss::CrossEntropy { classes } => (0..rows).map(|i| ((i * 5 + seed as usize) % classes) as f32).collect(),
            Loss::SquaredError => (0..rows).map(|_| 2.0 * next()).collect(),
        };
        (params, features, targets)
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        let scale = a.iter().chain(b).map(|v| v.abs()).fold(0.0f32, f32::max);
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * scale + 1e-6)
    }

    #[test]
    fn the_plain_sum_is_burns_summed_gradient() {
        for (sizes, loss) in [([30, 2], Loss::CrossEntropy { classes: 2 }), ([7, 1], Loss::SquaredError)] {
            let (params, features, targets) = setup(&sizes, 33, 4, loss);
            let batch = Batch::new(&features, &targets);
            let (closed, loss_sum) = summed_gradient(&sizes, &params, loss, batch).unwrap();
            let trainable = DenseStack::from_flat(&sizes, &params, &training_device()).unwrap();
            let (burn, burn_loss) = trainable.summed_gradient(loss, batch).unwrap();
            assert!(close(&closed, &burn), "{sizes:?}");
            assert!((loss_sum - burn_loss).abs() < 1e-4 * (1.0 + burn_loss.abs()));
        }
    }

    #[test]
    fn each_example_is_weighted_by_its_own_weight_and_the_norm_is_its_gradients() {
        let (sizes, loss) = ([5, 3], Loss::CrossEntropy { classes: 3 });
        let (params, features, targets) = setup(&sizes, 4, 2, loss);
        let one = |i: usize| {
            let batch = Batch::new(&features[5 * i..5 * i + 5], &targets[i..=i]);
            summed_gradient(&sizes, &params, loss, batch).unwrap().0
        };
        let weights = [0.5f32, 0.0, 2.0, 1.0];
        let mut seen = 0;
        let weighted = weighted_sum(&sizes, &params, loss, Batch::new(&features, &targets), |x, g| {
            let own = one(seen);
            let norm = own.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            assert!((gradient_norm(x, g) - norm).abs() < 1e-5 * norm, "example {seen}");
            seen += 1;
            weights[seen - 1]
        })
        .unwrap();
        let mut want = vec![0.0f32; params.len()];
        for (i, w) in weights.iter().enumerate() {
            want.iter_mut().zip(one(i)).for_each(|(s, g)| *s += w * g);
        }
        assert!(close(&weighted.gradient, &want));
    }

    #[test]
    fn an_example_of_weight_zero_adds_nothing_even_when_it_overflows() {
        let mut huge = vec![0.3f32; 10];
        huge[..5].fill(f32::MAX);
        for (sizes, loss) in [([5, 3], Loss::CrossEntropy { classes: 3 }), ([5, 1], Loss::SquaredError)] {
            let params = vec![1.0; parameter_count(&sizes)];
            let targets = [0.0, 1.0];
            let finite = |x: &[f32], g: &[f32]| if gradient_norm(x, g).is_finite() { 1.0 } else { 0.0 };
            let both = weighted_sum(&sizes, &params, loss, Batch::new(&huge, &targets), finite).unwrap();
            let second = weighted_sum(&sizes, &params, loss, Batch::new(&huge[5..], &targets[1..]), finite).unwrap();
            assert_eq!(both.gradient, second.gradient, "{sizes:?}");
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_typed_errors() {
        let ce = Loss::CrossEntropy { classes: 2 };
        let batch = Batch::new(&[1.0, 2.0], &[1.0]);
        assert!(!applies(&[2, 3, 2]));
        assert!(matches!(summed_gradient(&[2, 3, 2], &[0.0; 17], ce, batch), Err(ModelError::Sizes(_))));
        assert!(matches!(summed_gradient(&[2, 2], &[0.0; 5], ce, batch), Err(ModelError::ParameterCount { .. })));
        assert!(matches!(summed_gradient(&[2, 1], &[0.0; 3], ce, batch), Err(ModelError::LossShape { .. })));
        assert!(matches!(summed_gradient(&[3, 2], &[0.0; 8], ce, batch), Err(ModelError::Features { .. })));
        assert!(matches!(
            summed_gradient(&[2, 2], &[0.0; 6], ce, Batch::new(&[1.0, 2.0], &[2.0])),
            Err(ModelError::Target { .. })
        ));
    }
}

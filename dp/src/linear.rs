//! Closed-form per-example gradients of the models with no hidden layer, the defaults of Cohort: logistic
//! (softmax) regression, sizes `[d, k]` with [`Loss::CrossEntropy`], and linear regression, sizes `[d, 1]` with
//! [`Loss::SquaredError`]. No autodiff, no probe, no tensors: one pass over the batch on the host.
//!
//! # The formulas
//! For one dense layer `z_i = x_i·W + b` (W is `d × k`, row-major as in the [flat layout](crate::dense)), the
//! gradient of example `i`'s own loss is `∂loss_i/∂W = x_iᵀ g_i` and `∂loss_i/∂b = g_i`, where
//! `g_i = ∂loss_i/∂z_i` is
//! - `softmax(z_i) − onehot(y_i)` for softmax cross-entropy `−log softmax(z_i)_{y_i}`;
//! - `2(z_i − y_i)` for the squared error `(z_i − y_i)²` (no factor ½, as in [`Loss::SquaredError`]).
//!
//! So `‖∇_i‖² = (‖x_i‖² + 1)·‖g_i‖²` exactly, the one-layer case of the ghost norm of Li et al. 2022 ("Large
//! Language Models Can Be Strong Differentially Private Learners", ICLR) and Bu et al. 2023 ("Differentially
//! Private Optimization on Large Model at Small Cost", ICML), and the clipped sum is
//! `Σ_i c_i x_iᵀ g_i` and `Σ_i c_i g_i` with `c_i = min(1, C/‖∇_i‖)` ([`ClipNorm::factor`]). These are the
//! gradients of Abadi et al. 2016 §3.1 written out for a generalized linear model; the textbook derivation of
//! the softmax gradient is Bishop, "Pattern Recognition and Machine Learning", eq. 4.109.
//!
//! Cost: `O(B·d·k)` multiply-adds and no allocation beyond the output, against a burn forward and backward
//! pass for the general path ([`crate::clip::ghost_clipped_sum`]). The tests check both against the reference
//! path ([`crate::clip::reference_clipped_sum_dense`]), which runs one autodiff backward per example.
//!
//! # Example
//! ```
//! use cohort_dp::clip::ClipNorm;
//! use cohort_dp::dense::{Batch, Loss};
//! use cohort_dp::linear::clipped_sum;
//! // Logistic regression on two features at W = 0, b = 0: for class 1, g = softmax(0) − onehot(1) = (½, −½),
//! // the weight gradient is xᵀg and the norm is √(‖x‖² + 1)·‖g‖ = √13.
//! let sum = clipped_sum(&[2, 2], &[0.0; 6], Loss::CrossEntropy { classes: 2 }, Batch::new(&[3.0, 4.0], &[1.0]), ClipNorm::new(1e9).unwrap()).unwrap();
//! assert_eq!(sum.gradient, vec![1.5, -1.5, 2.0, -2.0, 0.5, -0.5]);
//! assert!((sum.norms[0] - 26f32.sqrt() * 0.5f32.sqrt()).abs() < 1e-6);
//! ```

use crate::clip::{ClipError, ClipNorm, ClippedSum};
use crate::dense::{Batch, DenseError, Loss, check_parameters};

/// Whether [`clipped_sum`] and [`summed_gradient`] apply: a single dense layer (`sizes = [d, k]`).
pub fn applies(sizes: &[usize]) -> bool {
    sizes.len() == 2
}

/// The clipped sum of per-example gradients of the one-layer model `sizes = [d, k]` at `params` (flat
/// layout), in closed form (see the [module docs](self)). An empty batch gives a zero gradient.
///
/// # Errors
/// [`ClipError::Dense`] for sizes that are not one layer ([`DenseError::Sizes`]), parameters, loss or batch
/// that do not fit.
pub fn clipped_sum(
    sizes: &[usize],
    params: &[f32],
    loss: Loss,
    batch: Batch<'_>,
    clip: ClipNorm,
) -> Result<ClippedSum, ClipError> {
    gradients(sizes, params, loss, batch, Some(clip))
}

/// The unclipped sum of per-example gradients and the summed loss of the one-layer model `sizes = [d, k]`
/// (what ordinary SGD needs; the same code as [`clipped_sum`] with every clip factor 1).
///
/// # Errors
/// As [`clipped_sum`].
pub fn summed_gradient(
    sizes: &[usize],
    params: &[f32],
    loss: Loss,
    batch: Batch<'_>,
) -> Result<(Vec<f32>, f64), ClipError> {
    let sum = gradients(sizes, params, loss, batch, None)?;
    Ok((sum.gradient, sum.loss_sum))
}

fn gradients(
    sizes: &[usize],
    params: &[f32],
    loss: Loss,
    batch: Batch<'_>,
    clip: Option<ClipNorm>,
) -> Result<ClippedSum, ClipError> {
    if !applies(sizes) {
        return Err(DenseError::Sizes(sizes.to_vec()).into());
    }
    let (d, k) = (sizes[0], sizes[1]);
    check_parameters(sizes, params)?;
    loss.check_outputs(k)?;
    batch.validate(d, loss)?;
    let (weights, bias) = params.split_at(d * k);
    let mut gradient = vec![0.0f32; params.len()];
    let (mut loss_sum, mut clipped) = (0.0f64, 0usize);
    let mut norms = Vec::with_capacity(if clip.is_some() { batch.rows() } else { 0 });
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
        let factor = match clip {
            Some(clip) => {
                let x_sq: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum();
                let g_sq: f64 = g.iter().map(|v| f64::from(*v).powi(2)).sum();
                let norm = ((x_sq + 1.0) * g_sq).sqrt();
                clipped += usize::from(norm > f64::from(clip.get()));
                norms.push(norm as f32);
                clip.factor(norm) as f32
            }
            None => 1.0,
        };
        if factor == 0.0 {
            // A non-finite norm (factor 0): the example contributes nothing, not 0·∞ = NaN.
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
    Ok(ClippedSum { gradient, loss_sum, norms, clipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::{ghost_clipped_sum, reference_clipped_sum_dense};
    use crate::dense::{DenseStack, inference_device, parameter_count, training_device};
    use proptest::prelude::*;

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

    /// Every coordinate within 1e-4 of the larger vector's scale (plus a tiny floor).
    fn close(a: &[f32], b: &[f32]) -> bool {
        let scale = a.iter().chain(b).map(|v| v.abs()).fold(0.0f32, f32::max);
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * scale + 1e-6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn closed_form_agrees_with_the_reference_and_ghost_paths(
            d in 1usize..12,
            regression in any::<bool>(),
            classes in 2usize..6,
            rows in 0usize..20,
            clip in 0.05f32..5.0,
            seed in 0u64..10_000,
        ) {
            let loss = if regression { Loss::SquaredError } else { Loss::CrossEntropy { classes } };
            let sizes = [d, if regression { 1 } else { classes }];
            let (params, features, targets) = setup(&sizes, rows, seed, loss);
            let batch = Batch::new(&features, &targets);
            let clip = ClipNorm::new(clip).unwrap();
            let model = DenseStack::from_flat(&sizes, &params, &inference_device()).unwrap();
            let closed = clipped_sum(&sizes, &params, loss, batch, clip).unwrap();
            let reference = reference_clipped_sum_dense(&model, loss, batch, clip).unwrap();
            prop_assert!(close(&closed.gradient, &reference.gradient), "{sizes:?}\n{:?}\nvs\n{:?}", closed.gradient, reference.gradient);
            prop_assert!(close(&closed.norms, &reference.norms), "{:?} vs {:?}", closed.norms, reference.norms);
            prop_assert_eq!(closed.clipped, reference.clipped);
            prop_assert!((closed.loss_sum - reference.loss_sum).abs() <= 1e-4 * (1.0 + reference.loss_sum.abs()));
            let ghost = ghost_clipped_sum(&model, loss, batch, clip).unwrap();
            prop_assert!(close(&closed.gradient, &ghost.gradient));
        }
    }

    #[test]
    fn the_unclipped_sum_is_burns_summed_gradient() {
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
    fn each_clipped_example_has_norm_c_and_a_nan_example_contributes_nothing() {
        let (sizes, loss) = ([5, 3], Loss::CrossEntropy { classes: 3 });
        let (params, features, targets) = setup(&sizes, 4, 2, loss);
        let c = ClipNorm::new(0.01).unwrap();
        for i in 0..4 {
            let one = clipped_sum(&sizes, &params, loss, Batch::new(&features[5 * i..5 * i + 5], &targets[i..=i]), c)
                .unwrap();
            let norm = one.gradient.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 0.01).abs() < 1e-6, "{norm}");
            assert_eq!(one.clipped, 1);
        }
        // Logits that overflow f32 give a NaN or infinite norm, factor 0: that example adds nothing (not NaN).
        let mut huge = features[..10].to_vec();
        huge[..5].fill(f32::MAX);
        for (sizes, loss, targets) in [([5, 3], loss, [0.0, 1.0]), ([5, 1], Loss::SquaredError, [0.0, 1.0])] {
            let params = vec![1.0; parameter_count(&sizes)];
            let both = clipped_sum(&sizes, &params, loss, Batch::new(&huge, &targets), c).unwrap();
            let second = clipped_sum(&sizes, &params, loss, Batch::new(&huge[5..], &targets[1..]), c).unwrap();
            assert_eq!(both.gradient, second.gradient, "{sizes:?}");
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_typed_errors() {
        let ce = Loss::CrossEntropy { classes: 2 };
        let c = ClipNorm::new(1.0).unwrap();
        let batch = Batch::new(&[1.0, 2.0], &[1.0]);
        assert!(!applies(&[2, 3, 2]));
        assert!(matches!(
            clipped_sum(&[2, 3, 2], &[0.0; 17], ce, batch, c),
            Err(ClipError::Dense(DenseError::Sizes(_)))
        ));
        assert!(matches!(clipped_sum(&[2, 2], &[0.0; 5], ce, batch, c), Err(ClipError::Dense(_))));
        assert!(matches!(clipped_sum(&[2, 1], &[0.0; 3], ce, batch, c), Err(ClipError::Dense(_))));
        assert!(matches!(clipped_sum(&[3, 2], &[0.0; 8], ce, batch, c), Err(ClipError::Dense(_))));
        assert!(clipped_sum(&[2, 2], &[0.0; 6], ce, Batch::new(&[1.0, 2.0], &[2.0]), c).is_err());
    }
}

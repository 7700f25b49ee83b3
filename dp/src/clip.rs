//! Per-example gradient clipping to norm C, summed over a batch: `Σ_i g_i · min(1, C/‖g_i‖)`, where `g_i` is
//! the gradient of example `i`'s own loss with respect to all parameters (Abadi et al. 2016).
//!
//! # Fastest path: one-layer models in closed form
//! For logistic and linear regression (sizes `[d, k]`), [`linear_clipped_sum`] weights each example of
//! `cohort_model::linear::weighted_sum` by its clip factor: there `‖∇_i‖² = (‖x_i‖² + 1)·‖g_i‖²` exactly, the
//! one-layer case of the ghost norm below, with no autodiff and no tensor.
//!
//! # Fast path: ghost clipping for dense stacks
//! Following Li, Tramèr, Liang and Hashimoto 2022 ("Large Language Models Can Be Strong Differentially Private
//! Learners", ICLR) and Bu, Wang, Zha and Karypis 2023 ("Differentially Private Optimization on Large Model at
//! Small Cost", ICML): for a dense layer `z_i = a_i·W + b`, example `i`'s weight gradient is the outer product
//! `a_iᵀ g_i` (with `g_i = ∂loss_i/∂z_i`) and its bias gradient is `g_i`, so
//!
//! `‖∇_i‖² = Σ_l (‖a_{l,i}‖² · ‖g_{l,i}‖² + ‖g_{l,i}‖²)`
//!
//! without materializing any per-example gradient. One forward pass with zero probes on each pre-activation
//! and one backward pass give every `G_l` ([`DenseStack::forward_probed`]); with clip factors
//! `c_i = min(1, C/‖∇_i‖)` the clipped sum is `A_lᵀ · diag(c) · G_l` for the weights (one matmul per layer)
//! and `Σ_i c_i g_{l,i}` for the biases. Cost: one forward, one input-gradient backward and one weight-sized
//! matmul per layer — about an ordinary training step.
//!
//! # Reference path: any burn module
//! [`reference_clipped_sum`] runs each example's own backward pass, flattens its gradient in burn's parameter
//! visiting order ([`flatten_gradients`]), clips and sums. It is slow (one backward per example) and exists to
//! check the fast path and to serve models that are not dense stacks.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor, TensorData};
use cohort_model::{Batch, DenseStack, Loss, ModelError, features_tensor, tensor_values};

/// Clipping that cannot proceed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClipError {
    /// A clip norm that is not a finite positive number.
    #[error("clip norm C = {0} must be finite and > 0")]
    ClipNorm(f32),
    /// The model, loss or batch does not fit.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A per-example loss that autodiff does not track (the module is not on an autodiff device, or none of
    /// its parameters requires grad), so it has no gradient.
    #[error("example {0}'s loss is not tracked by autodiff")]
    NotTracked(usize),
}

/// The per-example clipping norm C: finite and > 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct ClipNorm(f32);

impl ClipNorm {
    /// A clip norm C.
    ///
    /// # Errors
    /// [`ClipError::ClipNorm`] unless `c` is finite and > 0.
    pub fn new(c: f32) -> Result<Self, ClipError> {
        if c.is_finite() && c > 0.0 { Ok(Self(c)) } else { Err(ClipError::ClipNorm(c)) }
    }

    /// C.
    pub fn get(self) -> f32 {
        self.0
    }

    /// The clip factor `min(1, C/norm)` of a gradient with this norm (1 for a zero norm). A NaN norm (a
    /// gradient that overflowed or met a NaN) gets factor 0: the example contributes nothing, rather than an
    /// unclipped gradient of unbounded sensitivity.
    pub fn factor(self, norm: f64) -> f64 {
        let c = f64::from(self.0);
        if norm.is_nan() {
            0.0
        } else if norm > c {
            c / norm
        } else {
            1.0
        }
    }
}

/// A clipped, summed gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct ClippedSum {
    /// `Σ_i g_i · min(1, C/‖g_i‖)` in the flat parameter layout.
    pub gradient: Vec<f32>,
    /// Summed (unclipped) per-example loss over the batch. Not differentially private.
    pub loss_sum: f64,
    /// Each example's unclipped gradient norm `‖g_i‖`. Not differentially private.
    pub norms: Vec<f32>,
    /// How many examples had a norm above C.
    pub clipped: usize,
}

/// The clipped sum of per-example gradients of the one-layer model `sizes = [d, k]` at `params` (flat layout),
/// in closed form (see the [module docs](self)). An empty batch gives a zero gradient.
///
/// # Example
/// ```
/// use cohort_dp::clip::{linear_clipped_sum, ClipNorm};
/// use cohort_model::{Batch, Loss};
/// // Logistic regression on two features at W = 0, b = 0: for class 1, g = softmax(0) − onehot(1) = (½, −½),
/// // the weight gradient is xᵀg and the norm is √(‖x‖² + 1)·‖g‖ = √13, clipped here to 1.
/// let batch = Batch::new(&[3.0, 4.0], &[1.0]);
/// let sum = linear_clipped_sum(&[2, 2], &[0.0; 6], Loss::CrossEntropy { classes: 2 }, batch, ClipNorm::new(1.0)?)?;
/// assert!((sum.norms[0] - 13f32.sqrt()).abs() < 1e-6);
/// assert_eq!(sum.clipped, 1);
/// let norm: f32 = sum.gradient.iter().map(|v| v * v).sum::<f32>().sqrt();
/// assert!((norm - 1.0).abs() < 1e-6);
/// # Ok::<(), cohort_dp::clip::ClipError>(())
/// ```
///
/// # Errors
/// [`ClipError::Model`] for sizes that are not one layer ([`ModelError::Sizes`]), parameters, loss or batch
/// that do not fit.
pub fn linear_clipped_sum(
    sizes: &[usize],
    params: &[f32],
    loss: Loss,
    batch: Batch<'_>,
    clip: ClipNorm,
) -> Result<ClippedSum, ClipError> {
    let mut norms = Vec::with_capacity(batch.rows());
    let mut clipped = 0;
    let sum = cohort_model::linear::weighted_sum(sizes, params, loss, batch, |x, g| {
        let norm = cohort_model::linear::gradient_norm(x, g);
        clipped += usize::from(norm > f64::from(clip.get()));
        norms.push(norm as f32);
        clip.factor(norm) as f32
    })?;
    Ok(ClippedSum { gradient: sum.gradient, loss_sum: sum.loss_sum, norms, clipped })
}

/// Ghost-clipped sum of per-example gradients of a dense stack (see the [module docs](self)): one forward,
/// one backward, one matmul per layer, no per-example loop. An empty batch gives a zero gradient.
///
/// The model may be on any device; the pass runs on a copy without autodiff so that the backward pass
/// computes only the probes' gradients.
///
/// # Errors
/// [`ClipError::Model`] for a loss or batch that does not fit the model, or a failed readback.
pub fn ghost_clipped_sum(
    model: &DenseStack,
    loss: Loss,
    batch: Batch<'_>,
    clip: ClipNorm,
) -> Result<ClippedSum, ClipError> {
    loss.check_outputs(model.outputs())?;
    batch.validate(model.inputs(), loss)?;
    let rows = batch.rows();
    if rows == 0 {
        return Ok(ClippedSum {
            gradient: vec![0.0; model.parameter_count()],
            loss_sum: 0.0,
            norms: Vec::new(),
            clipped: 0,
        });
    }
    let model = model.valid();
    let device = model.device().inner();
    let x = features_tensor(batch.features, rows, model.inputs(), &device)?;
    let probed = model.forward_probed(x);
    let total = loss.summed(probed.output, batch.targets)?;
    if !total.is_tracked() {
        return Err(ClipError::NotTracked(0));
    }
    let loss_sum = tensor_values(total.clone().inner())?.first().copied().map_or(f64::NAN, f64::from);
    let grads = total.backward();

    // G_l for every layer, and Σ_l (|a|² + 1)·|g|² per example, accumulated in f64 on the host (the
    // activations and output gradients are small next to the weights).
    let mut outputs = Vec::with_capacity(probed.probes.len());
    let mut squared = vec![0.0f64; rows];
    for (l, (a, probe)) in probed.activations.iter().zip(&probed.probes).enumerate() {
        let g = probe.grad(&grads).unwrap_or_else(|| Tensor::zeros(probe.shape(), &device));
        // Layer 0's input is the batch itself, already on the host.
        let a_read;
        let a_host: &[f32] = if l == 0 {
            batch.features
        } else {
            a_read = tensor_values(a.clone())?;
            &a_read
        };
        let g_host = tensor_values(g.clone())?;
        let (a_width, g_width) = (a_host.len() / rows, g_host.len() / rows);
        for (i, s) in squared.iter_mut().enumerate() {
            let a_sq: f64 = a_host[i * a_width..(i + 1) * a_width].iter().map(|v| f64::from(*v).powi(2)).sum();
            let g_sq: f64 = g_host[i * g_width..(i + 1) * g_width].iter().map(|v| f64::from(*v).powi(2)).sum();
            *s += (a_sq + 1.0) * g_sq;
        }
        outputs.push(g);
    }
    let norms: Vec<f64> = squared.iter().map(|s| s.sqrt()).collect();
    let factors: Vec<f32> = norms.iter().map(|n| clip.factor(*n) as f32).collect();
    let clipped = norms.iter().filter(|n| **n > f64::from(clip.get())).count();
    let norms = norms.into_iter().map(|n| n as f32).collect();

    // Σ_i c_i a_iᵀ g_i = Aᵀ·diag(c)·G per layer, and Σ_i c_i g_i for the bias.
    let c = Tensor::<2>::from_data(TensorData::new(factors, [rows, 1]), &device);
    let mut parts = Vec::with_capacity(2 * outputs.len());
    for (a, g) in probed.activations.into_iter().zip(outputs) {
        let scaled = g * c.clone();
        parts.push(a.transpose().matmul(scaled.clone()).reshape([-1]));
        parts.push(scaled.sum_dim(0).reshape([-1]));
    }
    let gradient = tensor_values(Tensor::cat(parts, 0))?;
    Ok(ClippedSum { gradient, loss_sum, norms, clipped })
}

/// Collects the gradients of every float parameter of `module`, in burn's visiting order, into one flat
/// vector (zeros for a parameter without a gradient). For a [`DenseStack`] this is exactly the flat parameter
/// layout.
struct Flatten<'a> {
    grads: &'a Gradients,
    out: Vec<f32>,
    error: Option<ModelError>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.error.is_some() {
            return;
        }
        let value = param.val();
        match value.grad(self.grads) {
            Some(g) => match tensor_values(g) {
                Ok(v) => self.out.extend(v),
                Err(e) => self.error = Some(e),
            },
            None => self.out.extend(std::iter::repeat_n(0.0, value.shape().num_elements())),
        }
    }
}

/// The gradient of every float parameter of `module` in `grads`, flattened in burn's visiting order (zeros
/// for parameters without a gradient). For a [`DenseStack`] this is the flat parameter layout.
///
/// # Errors
/// [`ModelError::Readback`] when a gradient cannot be read.
pub fn flatten_gradients<M: Module>(module: &M, grads: &Gradients) -> Result<Vec<f32>, ModelError> {
    let mut visitor = Flatten { grads, out: Vec::new(), error: None };
    module.visit(&mut visitor);
    match visitor.error {
        Some(e) => Err(e),
        None => Ok(visitor.out),
    }
}

/// Reference path for any burn module: for each example `i` in `0..rows`, `example_loss(module, i)` returns
/// example `i`'s own loss (a one-element tensor tracked by autodiff: the module must be on an autodiff device
/// with parameters requiring grad, e.g. after [`Module::train`]); its own backward pass gives `g_i`, which is
/// clipped to `C` and summed. Gradients are flattened by [`flatten_gradients`].
///
/// # Errors
/// [`ClipError::NotTracked`] for a loss without a graph, or whatever `example_loss` returns.
pub fn reference_clipped_sum<M: Module>(
    module: &M,
    rows: usize,
    clip: ClipNorm,
    mut example_loss: impl FnMut(&M, usize) -> Result<Tensor<1>, ClipError>,
) -> Result<ClippedSum, ClipError> {
    let mut gradient = vec![0.0f64; module.num_params()];
    let (mut loss_sum, mut norms, mut clipped) = (0.0, Vec::with_capacity(rows), 0);
    for i in 0..rows {
        let loss = example_loss(module, i)?;
        if !loss.is_tracked() {
            return Err(ClipError::NotTracked(i));
        }
        loss_sum += tensor_values(loss.clone().inner())?.first().copied().map_or(f64::NAN, f64::from);
        let g = flatten_gradients(module, &loss.backward())?;
        let norm = g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        let f = clip.factor(norm);
        clipped += usize::from(norm > f64::from(clip.get()));
        norms.push(norm as f32);
        if gradient.len() < g.len() {
            gradient.resize(g.len(), 0.0);
        }
        for (s, v) in gradient.iter_mut().zip(&g) {
            *s += f64::from(*v) * f;
        }
    }
    Ok(ClippedSum { gradient: gradient.into_iter().map(|v| v as f32).collect(), loss_sum, norms, clipped })
}

/// The reference path applied to a dense stack: one forward and backward pass per example.
///
/// # Errors
/// [`ClipError::Model`] for a loss or batch that does not fit.
pub fn reference_clipped_sum_dense(
    model: &DenseStack,
    loss: Loss,
    batch: Batch<'_>,
    clip: ClipNorm,
) -> Result<ClippedSum, ClipError> {
    loss.check_outputs(model.outputs())?;
    let dims = model.inputs();
    batch.validate(dims, loss)?;
    let trainable = model.clone().train();
    let device = trainable.device();
    reference_clipped_sum(&trainable, batch.rows(), clip, |m, i| {
        let x = features_tensor(&batch.features[i * dims..(i + 1) * dims], 1, dims, &device)?;
        Ok(loss.summed(m.forward(x), &batch.targets[i..=i])?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_model::{inference_device, parameter_count, training_device};
    use proptest::prelude::*;

    #[test]
    fn a_nan_norm_clips_to_zero_and_an_infinite_one_too() {
        let clip = ClipNorm::new(1.0).unwrap();
        assert_eq!(clip.factor(f64::NAN), 0.0);
        assert_eq!(clip.factor(f64::INFINITY), 0.0);
        assert_eq!(clip.factor(0.0), 1.0);
        assert_eq!(clip.factor(0.5), 1.0);
        assert_eq!(clip.factor(4.0), 0.25);
    }

    /// Deterministic pseudo-random data for `sizes` (an LCG, so shapes and values vary with `seed`).
    fn setup(sizes: &[usize], rows: usize, seed: u64, loss: Loss) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let params = (0..parameter_count(sizes)).map(|_| next()).collect();
        let features = (0..rows * sizes[0]).map(|_| 3.0 * next()).collect();
        let targets = match loss {
            Loss::CrossEntropy { classes } => (0..rows).map(|i| ((i * 7 + seed as usize) % classes) as f32).collect(),
            Loss::SquaredError => (0..rows).map(|_| 2.0 * next()).collect(),
        };
        (params, features, targets)
    }

    /// Relative agreement: every coordinate within 1e-4 of the larger vector's scale (plus a tiny absolute
    /// floor for vectors that are almost zero).
    fn close(a: &[f32], b: &[f32]) -> bool {
        let scale = a.iter().chain(b).map(|v| v.abs()).fold(0.0f32, f32::max);
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * scale + 1e-6)
    }

    fn model(sizes: &[usize], params: &[f32]) -> DenseStack {
        DenseStack::from_flat(sizes, params, &inference_device()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn fast_and_reference_paths_agree(
            input in 1usize..7,
            hidden in prop::collection::vec(1usize..9, 0..3),
            regression in any::<bool>(),
            classes in 2usize..5,
            rows in 1usize..14,
            clip in 0.05f32..5.0,
            seed in 0u64..10_000,
        ) {
            let loss = if regression { Loss::SquaredError } else { Loss::CrossEntropy { classes } };
            let mut sizes = vec![input];
            sizes.extend(&hidden);
            sizes.push(if regression { 1 } else { classes });
            let (params, features, targets) = setup(&sizes, rows, seed, loss);
            let m = model(&sizes, &params);
            let batch = Batch::new(&features, &targets);
            let clip = ClipNorm::new(clip).unwrap();
            let fast = ghost_clipped_sum(&m, loss, batch, clip).unwrap();
            let reference = reference_clipped_sum_dense(&m, loss, batch, clip).unwrap();
            prop_assert!(close(&fast.gradient, &reference.gradient), "{sizes:?}\n{:?}\nvs\n{:?}", fast.gradient, reference.gradient);
            prop_assert!(close(&fast.norms, &reference.norms), "{:?} vs {:?}", fast.norms, reference.norms);
            prop_assert!((fast.loss_sum - reference.loss_sum).abs() <= 1e-4 * (1.0 + reference.loss_sum.abs()));
        }
    }

    #[test]
    fn unclipped_fast_path_equals_the_ordinary_summed_gradient() {
        let huge = ClipNorm::new(1e30).unwrap();
        for sizes in [vec![3, 2], vec![4, 5, 3], vec![6, 8, 7, 4], vec![2, 3, 3, 1]] {
            let loss = if sizes.last() == Some(&1) {
                Loss::SquaredError
            } else {
                Loss::CrossEntropy { classes: *sizes.last().unwrap() }
            };
            let (params, features, targets) = setup(&sizes, 9, 3, loss);
            let batch = Batch::new(&features, &targets);
            let fast = ghost_clipped_sum(&model(&sizes, &params), loss, batch, huge).unwrap();
            let trainable = DenseStack::from_flat(&sizes, &params, &training_device()).unwrap();
            let (plain, loss_sum) = trainable.summed_gradient(loss, batch).unwrap();
            assert!(close(&fast.gradient, &plain), "{sizes:?}");
            assert!((fast.loss_sum - loss_sum).abs() < 1e-4 * (1.0 + loss_sum.abs()));
            assert_eq!(fast.clipped, 0);
        }
    }

    #[test]
    fn each_example_contributes_at_most_c() {
        let sizes = [4, 6, 3];
        let loss = Loss::CrossEntropy { classes: 3 };
        let (params, features, targets) = setup(&sizes, 5, 9, loss);
        let m = model(&sizes, &params);
        let c = ClipNorm::new(0.01).unwrap();
        // Each single example, clipped, has norm exactly C (all norms here exceed 0.01).
        for i in 0..5 {
            let one =
                ghost_clipped_sum(&m, loss, Batch::new(&features[i * 4..(i + 1) * 4], &targets[i..=i]), c).unwrap();
            let norm = one.gradient.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 0.01).abs() < 1e-6, "{norm}");
            assert_eq!(one.clipped, 1);
        }
        // The sum of five has norm at most 5C.
        let all = ghost_clipped_sum(&m, loss, Batch::new(&features, &targets), c).unwrap();
        let norm = all.gradient.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        assert!(norm <= 0.05 + 1e-6);
        assert_eq!(all.clipped, 5);
    }

    #[test]
    fn empty_batches_and_bad_inputs() {
        let m = model(&[2, 2], &[0.1; 6]);
        let ce = Loss::CrossEntropy { classes: 2 };
        let c = ClipNorm::new(1.0).unwrap();
        let empty = ghost_clipped_sum(&m, ce, Batch::new(&[], &[]), c).unwrap();
        assert_eq!(empty.gradient, vec![0.0; 6]);
        assert_eq!(reference_clipped_sum_dense(&m, ce, Batch::new(&[], &[]), c).unwrap().gradient, vec![0.0; 6]);
        assert!(matches!(ghost_clipped_sum(&m, ce, Batch::new(&[0.0; 3], &[0.0]), c), Err(ClipError::Model(_))));
        assert!(matches!(
            ghost_clipped_sum(&m, Loss::SquaredError, Batch::new(&[0.0; 2], &[0.0]), c),
            Err(ClipError::Model(_))
        ));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(ClipNorm::new(bad).is_err());
        }
        // The reference path refuses a module whose losses autodiff does not track.
        let plain = m.valid();
        let r = reference_clipped_sum(&plain, 1, c, |m, _| {
            Ok(ce.summed(m.forward(Tensor::zeros([1, 2], &inference_device())), &[0.0])?)
        });
        assert!(matches!(r, Err(ClipError::NotTracked(0))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn the_closed_form_agrees_with_the_reference_and_ghost_paths(
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
            let m = model(&sizes, &params);
            let closed = linear_clipped_sum(&sizes, &params, loss, batch, clip).unwrap();
            let reference = reference_clipped_sum_dense(&m, loss, batch, clip).unwrap();
            prop_assert!(close(&closed.gradient, &reference.gradient), "{sizes:?}\n{:?}\nvs\n{:?}", closed.gradient, reference.gradient);
            prop_assert!(close(&closed.norms, &reference.norms), "{:?} vs {:?}", closed.norms, reference.norms);
            prop_assert_eq!(closed.clipped, reference.clipped);
            prop_assert!((closed.loss_sum - reference.loss_sum).abs() <= 1e-4 * (1.0 + reference.loss_sum.abs()));
            let ghost = ghost_clipped_sum(&m, loss, batch, clip).unwrap();
            prop_assert!(close(&closed.gradient, &ghost.gradient));
        }
    }

    #[test]
    fn in_closed_form_each_clipped_example_has_norm_c_and_a_nan_example_contributes_nothing() {
        let (sizes, loss) = ([5, 3], Loss::CrossEntropy { classes: 3 });
        let (params, features, targets) = setup(&sizes, 4, 2, loss);
        let c = ClipNorm::new(0.01).unwrap();
        for i in 0..4 {
            let batch = Batch::new(&features[5 * i..5 * i + 5], &targets[i..=i]);
            let one = linear_clipped_sum(&sizes, &params, loss, batch, c).unwrap();
            let norm = one.gradient.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 0.01).abs() < 1e-6, "{norm}");
            assert_eq!(one.clipped, 1);
        }
        // Logits that overflow f32 give a NaN or infinite norm, factor 0: that example adds nothing (not NaN).
        let mut huge = features[..10].to_vec();
        huge[..5].fill(f32::MAX);
        for (sizes, loss, targets) in [([5, 3], loss, [0.0, 1.0]), ([5, 1], Loss::SquaredError, [0.0, 1.0])] {
            let params = vec![1.0; parameter_count(&sizes)];
            let both = linear_clipped_sum(&sizes, &params, loss, Batch::new(&huge, &targets), c).unwrap();
            let second = linear_clipped_sum(&sizes, &params, loss, Batch::new(&huge[5..], &targets[1..]), c).unwrap();
            assert_eq!(both.gradient, second.gradient, "{sizes:?}");
        }
        assert!(matches!(
            linear_clipped_sum(&[2, 3, 2], &[0.0; 17], loss, Batch::new(&[1.0, 2.0], &[1.0]), c),
            Err(ClipError::Model(ModelError::Sizes(_)))
        ));
    }
}

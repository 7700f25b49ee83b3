//! Ordinary (non-private) training and prediction of a [`DenseStack`] through its flat parameter vector.
//!
//! # Ordinary SGD ([`train_sgd`])
//! Shuffled minibatches of a fixed size, mean gradient (in closed form for one-layer models,
//! [`crate::linear`], from burn's backward pass otherwise), and the FedProx proximal gradient `μ(w − w_global)`
//! if asked (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"). DP-SGD (`cohort_dp::sgd`)
//! trains the same [`Network`] on the same gradient code, so the two are compared on equal terms.
//!
//! # Example
//! ```
//! use cohort_model::train::{predict, train_sgd, Network, SgdConfig};
//! use cohort_model::{Batch, Loss};
//! use rand::SeedableRng;
//! let net = Network::new(&[2, 2], Loss::CrossEntropy { classes: 2 })?;
//! let (x, y) = (vec![1.0, 0.0, -1.0, 0.0], vec![1.0, 0.0]);
//! let config = SgdConfig { epochs: 20, batch_size: 2, learning_rate: 0.5 };
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let out = train_sgd(net, &[0.0; 6], Batch::new(&x, &y), &config, None, &mut rng)?;
//! assert_eq!(out.summary.steps, 20);
//! let p = predict(net, &out.params, &[1.0, 0.0])?;
//! assert!(p[1] > 0.9); // the probability of class 1 for (1, 0)
//! # Ok::<(), cohort_model::train::TrainError>(())
//! ```

use crate::layout::check_parameters;
use crate::{Batch, DenseStack, Loss, ModelError, inference_device};
use rand::Rng;
use rand::seq::SliceRandom;

/// Training that cannot proceed: the caller's settings or data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The network, parameters or data do not fit.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A learning rate that is not finite and > 0.
    #[error("learning rate {0} must be finite and > 0")]
    LearningRate(f64),
    /// A minibatch size of zero.
    #[error("batch size must be at least 1")]
    BatchSize,
    /// A proximal coefficient that is negative or not finite, or a global model of the wrong length or with
    /// non-finite values.
    #[error("invalid proximal term: {0}")]
    Proximal(String),
    /// The parameters stopped being finite.
    #[error("training diverged at step {0} (non-finite parameters); lower the learning rate")]
    Diverged(u64),
}

/// A network to train: layer sizes and the per-example loss, checked to fit each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network<'a> {
    sizes: &'a [usize],
    loss: Loss,
}

impl<'a> Network<'a> {
    /// A network with layer sizes `[input, hidden..., output]` and loss `loss`.
    ///
    /// # Errors
    /// [`ModelError::Sizes`] for invalid sizes, [`ModelError::LossShape`] when the loss does not fit the
    /// output width (cross-entropy over `classes` needs `classes` outputs, squared error one).
    pub fn new(sizes: &'a [usize], loss: Loss) -> Result<Self, TrainError> {
        crate::layout::validate_sizes(sizes)?;
        loss.check_outputs(sizes[sizes.len() - 1])?;
        Ok(Self { sizes, loss })
    }

    /// Layer sizes.
    pub fn sizes(&self) -> &'a [usize] {
        self.sizes
    }

    /// The loss.
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.sizes[0]
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        crate::layout::parameter_count(self.sizes)
    }

    /// The burn stack of this network holding `params`, on the inference device.
    ///
    /// # Errors
    /// [`ModelError`] for parameters that do not fit.
    pub fn stack(&self, params: &[f32]) -> Result<DenseStack, ModelError> {
        DenseStack::from_flat(self.sizes, params, &inference_device())
    }
}

/// Ordinary (non-private) minibatch SGD settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Passes over the data.
    pub epochs: u32,
    /// Minibatch size (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Learning rate η.
    pub learning_rate: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Steps taken.
    pub steps: u64,
    /// Mean per-example loss over the examples seen, each at the parameters before its step (`None` when no
    /// example was seen). **Not differentially private**: do not release it off the node in DP mode.
    pub mean_loss: Option<f64>,
    /// Examples processed, counting repeats (in DP mode the total of the realized batch sizes, also not
    /// private).
    pub examples: u64,
}

/// The result of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutput {
    /// The new parameters, flat layout.
    pub params: Vec<f32>,
    /// What happened.
    pub summary: TrainSummary,
}

/// What one step saw (data-dependent, not private).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Summed per-example loss of the batch, before the update.
    pub loss_sum: f64,
    /// Rows in the batch.
    pub rows: usize,
    /// Rows whose gradient was clipped (always 0 for ordinary SGD).
    pub clipped: usize,
}

/// Checks a learning rate: finite and > 0.
///
/// # Errors
/// [`TrainError::LearningRate`] otherwise.
pub fn check_learning_rate(lr: f64) -> Result<(), TrainError> {
    if lr.is_finite() && lr > 0.0 { Ok(()) } else { Err(TrainError::LearningRate(lr)) }
}

/// Checks a FedProx term `(μ, w_global)`: μ finite and ≥ 0, a global model of `len` finite values.
///
/// # Errors
/// [`TrainError::Proximal`] naming what is wrong.
pub fn check_proximal(proximal: Option<(f64, &[f32])>, len: usize) -> Result<(), TrainError> {
    if let Some((mu, global)) = proximal {
        if !(mu.is_finite() && mu >= 0.0) {
            return Err(TrainError::Proximal(format!("μ = {mu} must be finite and ≥ 0")));
        }
        if global.len() != len {
            return Err(TrainError::Proximal(format!("global model has {} parameters, expected {len}", global.len())));
        }
        if global.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::Proximal("global model has non-finite values".into()));
        }
    }
    Ok(())
}

/// `w ← w − η·(scale·g + μ(w − w_global))`.
fn update(params: &mut [f32], gradient: &[f32], scale: f64, lr: f64, proximal: Option<(f64, &[f32])>) {
    let (scale, lr) = (scale as f32, lr as f32);
    match proximal {
        Some((mu, global)) => {
            let mu = mu as f32;
            for ((w, g), w0) in params.iter_mut().zip(gradient).zip(global) {
                *w -= lr * (scale * g + mu * (*w - w0));
            }
        }
        None => {
            for (w, g) in params.iter_mut().zip(gradient) {
                *w -= lr * scale * g;
            }
        }
    }
}

/// Whether training diverged: some parameter is no longer finite.
pub fn diverged(params: &[f32]) -> bool {
    params.iter().any(|w| !w.is_finite())
}

/// One ordinary SGD step on `batch`: mean gradient (closed form for one-layer models, burn's backward pass
/// otherwise) plus the proximal gradient, then `params ← params − η·gradient`. An empty batch applies only the proximal term.
///
/// # Errors
/// [`TrainError`] for parameters, data or settings that do not fit. On error `params` is unchanged.
pub fn sgd_step(
    net: Network<'_>,
    params: &mut [f32],
    batch: Batch<'_>,
    learning_rate: f64,
    proximal: Option<(f64, &[f32])>,
) -> Result<StepStats, TrainError> {
    check_learning_rate(learning_rate)?;
    check_proximal(proximal, params.len())?;
    let (gradient, loss_sum) = if crate::linear::applies(net.sizes) {
        crate::linear::summed_gradient(net.sizes, params, net.loss, batch)?
    } else {
        net.stack(params)?.summed_gradient(net.loss, batch)?
    };
    update(params, &gradient, 1.0 / batch.rows().max(1) as f64, learning_rate, proximal);
    Ok(StepStats { loss_sum, rows: batch.rows(), clipped: 0 })
}

/// Runs ordinary minibatch SGD from `params`: `epochs` passes, each over a fresh shuffle (from `rng`) cut
/// into batches of `batch_size`, one [`sgd_step`] per batch. **Not private.**
///
/// # Errors
/// [`TrainError`] for parameters, data or settings that do not fit, or divergence.
pub fn train_sgd<R: Rng + ?Sized>(
    net: Network<'_>,
    params: &[f32],
    data: Batch<'_>,
    config: &SgdConfig,
    proximal: Option<(f64, &[f32])>,
    rng: &mut R,
) -> Result<TrainOutput, TrainError> {
    check_parameters(net.sizes, params)?;
    data.validate(net.inputs(), net.loss)?;
    check_learning_rate(config.learning_rate)?;
    check_proximal(proximal, params.len())?;
    if config.batch_size == 0 {
        return Err(TrainError::BatchSize);
    }
    let dims = net.inputs();
    let mut current = params.to_vec();
    let mut order: Vec<usize> = (0..data.rows()).collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let (mut loss_total, mut examples, mut steps) = (0.0f64, 0u64, 0u64);
    for _ in 0..config.epochs {
        order.shuffle(rng);
        for chunk in order.chunks(config.batch_size) {
            data.gather(dims, chunk, &mut x, &mut y);
            let stats = sgd_step(net, &mut current, Batch::new(&x, &y), config.learning_rate, proximal)?;
            loss_total += stats.loss_sum;
            examples += stats.rows as u64;
            if diverged(&current) {
                return Err(TrainError::Diverged(steps));
            }
            steps += 1;
        }
    }
    let mean_loss = (examples > 0).then(|| loss_total / examples as f64);
    Ok(TrainOutput { params: current, summary: TrainSummary { steps, mean_loss, examples } })
}

/// Model outputs for every row of row-major `features`: class probabilities (`rows × classes`, softmax) for
/// cross-entropy, values (`rows × 1`) for squared error.
///
/// # Errors
/// [`TrainError::Dense`] for parameters or features that do not fit.
pub fn predict(net: Network<'_>, params: &[f32], features: &[f32]) -> Result<Vec<f32>, TrainError> {
    Ok(net.stack(params)?.predict_for(net.loss, features)?)
}

/// Mean per-example loss of `params` on `data` (`None` for no rows). Evaluated in chunks without autodiff.
///
/// # Errors
/// [`TrainError::Dense`] for parameters or data that do not fit.
pub fn mean_loss(net: Network<'_>, params: &[f32], data: Batch<'_>) -> Result<Option<f64>, TrainError> {
    data.validate(net.inputs(), net.loss)?;
    let model = net.stack(params)?;
    let outputs = model.predict(data.features)?;
    let width = net.sizes[net.sizes.len() - 1];
    let mut total = 0.0f64;
    for (row, t) in outputs.chunks(width).zip(data.targets) {
        total += match net.loss {
            Loss::SquaredError => f64::from(row[0] - t).powi(2),
            Loss::CrossEntropy { .. } => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = f64::from(max) + row.iter().map(|z| f64::from(z - max).exp()).sum::<f64>().ln();
                lse - f64::from(row[*t as usize])
            }
        };
    }
    Ok((!data.targets.is_empty()).then(|| total / data.targets.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::blobs;
    use crate::layout::{initial_parameters, parameter_count};
    use rand::SeedableRng;

    const CE2: Loss = Loss::CrossEntropy { classes: 2 };

    fn seeded(seed: u64) -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(seed)
    }

    #[test]
    fn sgd_learns_a_separable_problem_in_counted_steps() {
        let (x, y) = blobs(400);
        let data = Batch::new(&x, &y);
        for sizes in [vec![2, 2], vec![2, 8, 2]] {
            let net = Network::new(&sizes, CE2).unwrap();
            let start = initial_parameters(&sizes, &mut seeded(4)).unwrap();
            let before = mean_loss(net, &start, data).unwrap().unwrap();
            let config = SgdConfig { epochs: 2, batch_size: 32, learning_rate: 0.5 };
            let out = train_sgd(net, &start, data, &config, None, &mut seeded(2)).unwrap();
            assert_eq!(out.summary.steps, 2 * 13);
            assert_eq!(out.summary.examples, 800);
            assert!(mean_loss(net, &out.params, data).unwrap().unwrap() < 0.5 * before, "{sizes:?}");
            let p = predict(net, &out.params, &x).unwrap();
            let right = p.chunks(2).zip(&y).filter(|(r, t)| (r[1] > r[0]) == (**t == 1.0)).count();
            assert!(right as f64 > 0.95 * y.len() as f64, "{sizes:?}: {right} of {}", y.len());
            assert_eq!(out.params, train_sgd(net, &start, data, &config, None, &mut seeded(2)).unwrap().params);
        }
    }

    #[test]
    fn regression_learns_a_line() {
        // y = 2·x0 − x1 + 0.5.
        let n = 200;
        let x: Vec<f32> = (0..2 * n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let y: Vec<f32> = x.chunks(2).map(|r| 2.0 * r[0] - r[1] + 0.5).collect();
        let net = Network::new(&[2, 1], Loss::SquaredError).unwrap();
        let data = Batch::new(&x, &y);
        let before = mean_loss(net, &[0.0; 3], data).unwrap().unwrap();
        let config = SgdConfig { epochs: 20, batch_size: 16, learning_rate: 0.1 };
        let out = train_sgd(net, &[0.0; 3], data, &config, None, &mut seeded(1)).unwrap();
        assert!(mean_loss(net, &out.params, data).unwrap().unwrap() < 1e-3 * before);
    }

    #[test]
    fn proximal_term_pulls_towards_the_global_model() {
        let sizes = [2, 2];
        let net = Network::new(&sizes, CE2).unwrap();
        let (x, y) = blobs(64);
        let data = Batch::new(&x, &y);
        let global = vec![0.0; parameter_count(&sizes)];
        let cfg = SgdConfig { epochs: 3, batch_size: 16, learning_rate: 0.5 };
        let dist = |p: &[f32]| p.iter().map(|v| v * v).sum::<f32>();
        let free = train_sgd(net, &global, data, &cfg, None, &mut seeded(1)).unwrap();
        let prox = train_sgd(net, &global, data, &cfg, Some((1.0, &global)), &mut seeded(1)).unwrap();
        assert!(dist(&prox.params) < 0.8 * dist(&free.params));
        // Exact form: with an empty batch, one step is w ← w − η·μ(w − w_g).
        let mut w = vec![1.0f32; 6];
        sgd_step(net, &mut w, Batch::new(&[], &[]), 0.5, Some((0.2, &global))).unwrap();
        assert!(w.iter().all(|v| (v - 0.9).abs() < 1e-6));
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let net = Network::new(&[2, 2], CE2).unwrap();
        let (x, y) = blobs(8);
        let data = Batch::new(&x, &y);
        let p = vec![0.0; 6];
        let cfg = SgdConfig { epochs: 1, batch_size: 2, learning_rate: 0.1 };
        assert!(matches!(Network::new(&[2, 3], CE2), Err(TrainError::Model(ModelError::LossShape { .. }))));
        assert!(matches!(Network::new(&[2], CE2), Err(TrainError::Model(ModelError::Sizes(_)))));
        let mut rng = seeded(0);
        let mut run =
            |params: &[f32], data, cfg: &SgdConfig, proximal| train_sgd(net, params, data, cfg, proximal, &mut rng);
        assert!(matches!(run(&p, data, &SgdConfig { batch_size: 0, ..cfg }, None), Err(TrainError::BatchSize)));
        assert!(matches!(
            run(&p, data, &SgdConfig { learning_rate: 0.0, ..cfg }, None),
            Err(TrainError::LearningRate(_))
        ));
        assert!(matches!(run(&p[..5], data, &cfg, None), Err(TrainError::Model(ModelError::ParameterCount { .. }))));
        assert!(matches!(run(&p, Batch::new(&x, &y[..3]), &cfg, None), Err(TrainError::Model(_))));
        assert!(matches!(run(&p, data, &cfg, Some((1.0, &p[..3]))), Err(TrainError::Proximal(_))));
        assert!(matches!(run(&p, data, &cfg, Some((f64::NAN, &p))), Err(TrainError::Proximal(_))));
        // A learning rate far too large for a regression overshoots further at every step until the
        // parameters overflow: a typed error, not NaN parameters.
        let line = Network::new(&[2, 1], Loss::SquaredError).unwrap();
        let huge = SgdConfig { epochs: 50, batch_size: 2, learning_rate: 1e3 };
        let r = train_sgd(line, &[0.0; 3], Batch::new(&x, &[1.0; 8]), &huge, None, &mut seeded(0));
        assert!(matches!(r, Err(TrainError::Diverged(_))), "{r:?}");
    }
}

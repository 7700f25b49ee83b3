//! DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") of a `cohort_model` [`Network`],
//! through its flat parameter vector ([`cohort_model::layout`]). Ordinary SGD on the same network code is
//! `cohort_model::train::train_sgd`.
//!
//! # One DP-SGD step ([`dp_step`])
//! 1. Poisson-sample a batch: each of the n records joins with probability q ([`crate::sampling`]).
//! 2. Clip every example's gradient to norm C and sum: in closed form for logistic and linear regression
//!    ([`crate::clip::linear_clipped_sum`]), by ghost clipping ([`crate::clip::ghost_clipped_sum`]) for deeper
//!    stacks.
//! 3. Add N(0, σ²C²) to every coordinate ([`crate::noise`]).
//! 4. Divide by the **expected** batch size q·n, a public constant, never by the realized size (which would
//!    leak it; Opacus issue #571).
//! 5. Add the FedProx proximal gradient μ(w − w_global) if asked (Li et al. 2020, "Federated Optimization in
//!    Heterogeneous Networks"). It depends only on the parameters, not on the data, so adding it after the
//!    noise costs no privacy.
//! 6. `w ← w − η·gradient`.
//!
//! An empty batch still takes a step: the update is pure noise divided by q·n. A DP run of `T` steps at rate q
//! and noise multiplier σ is exactly the event the accountant charges ([`DpSgdConfig::accounting`]).
//!
//! # Example
//! ```
//! use cohort_dp::clip::ClipNorm;
//! use cohort_dp::noise::NoiseMultiplier;
//! use cohort_dp::sampling::SampleRate;
//! use cohort_dp::sgd::{train_dp, DpRandomness, DpSgdConfig, TrainingLength};
//! use cohort_model::train::Network;
//! use cohort_model::{parameter_count, Batch, Loss};
//! let net = Network::new(&[2, 2], Loss::CrossEntropy { classes: 2 }).unwrap();
//! let (x, y) = (vec![1.0, 0.0, -1.0, 0.0], vec![1.0, 0.0]);
//! let config = DpSgdConfig {
//!     clip_norm: ClipNorm::new(1.0).unwrap(),
//!     noise_multiplier: NoiseMultiplier::new(1.0).unwrap(),
//!     sample_rate: SampleRate::new(0.5).unwrap(),
//!     learning_rate: 0.1,
//!     length: TrainingLength::Epochs(2.0),
//! };
//! assert_eq!(config.accounting().unwrap().steps, 4); // round(epochs / q), charged before training
//! let out = train_dp(net, &vec![0.0; parameter_count(&[2, 2])], Batch::new(&x, &y), &config, None, &mut DpRandomness::from_os()).unwrap();
//! assert_eq!(out.summary.steps, 4);
//! ```

use crate::clip::{ClipError, ClipNorm, ghost_clipped_sum, linear_clipped_sum};
use crate::noise::{GaussianNoise, NoiseJob, NoiseMultiplier, SharedNoise};
use crate::sampling::{PoissonSampler, SampleRate};
use cohort_model::layout::check_parameters;
use cohort_model::train::{
    Network, StepStats, TrainError, TrainOutput, TrainSummary, check_learning_rate, check_proximal, diverged,
};
use cohort_model::{Batch, ModelError};
use std::sync::Arc;

/// DP training that cannot proceed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SgdError {
    /// The network, parameters, data or training settings (learning rate, proximal term) do not fit, or the
    /// training diverged.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Clipping failed.
    #[error(transparent)]
    Clip(#[from] ClipError),
    /// A training length that is negative or not finite.
    #[error("training length {0} epochs must be finite and ≥ 0")]
    Epochs(f64),
    /// DP training on a data set with no records (q·n = 0).
    #[error("DP-SGD needs at least one record")]
    NoRecords,
    /// The thread preparing batches and noise stopped before the training did (a bug; no step is taken
    /// without noise).
    #[error("the batch and noise generator stopped before the training did")]
    NoiseStopped,
}

impl From<ModelError> for SgdError {
    fn from(e: ModelError) -> Self {
        Self::Train(TrainError::Model(e))
    }
}

/// How long DP-SGD runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainingLength {
    /// Expected passes over the data: `round(epochs / q)` steps.
    Epochs(f64),
    /// An exact number of steps.
    Steps(u64),
}

/// DP-SGD settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgdConfig {
    /// Per-example clipping norm C.
    pub clip_norm: ClipNorm,
    /// Noise multiplier σ: noise per coordinate is N(0, σ²C²).
    pub noise_multiplier: NoiseMultiplier,
    /// Poisson sampling rate q.
    pub sample_rate: SampleRate,
    /// Learning rate η.
    pub learning_rate: f64,
    /// Number of steps.
    pub length: TrainingLength,
}

impl DpSgdConfig {
    /// Steps the run takes: `round(epochs / q)` for [`TrainingLength::Epochs`] (saturating), or the given
    /// count. Use this before training to charge the accountant.
    ///
    /// # Errors
    /// [`SgdError::Epochs`] for a negative or non-finite number of epochs.
    pub fn steps(&self) -> Result<u64, SgdError> {
        match self.length {
            TrainingLength::Steps(s) => Ok(s),
            TrainingLength::Epochs(e) if e.is_finite() && e >= 0.0 => Ok((e / self.sample_rate.get()).round() as u64),
            TrainingLength::Epochs(e) => Err(SgdError::Epochs(e)),
        }
    }

    /// What a run with these settings charges the accountant, known before it trains.
    ///
    /// # Errors
    /// As [`steps`](Self::steps).
    pub fn accounting(&self) -> Result<DpAccounting, SgdError> {
        Ok(DpAccounting {
            sample_rate: self.sample_rate.get(),
            noise_multiplier: self.noise_multiplier.get(),
            clip_norm: self.clip_norm.get(),
            steps: self.steps()?,
        })
    }
}

/// The randomness of DP-SGD: Gaussian noise and Poisson sampling, each from its own OS-seeded ChaCha12
/// CSPRNG.
#[derive(Debug, Clone)]
pub struct DpRandomness {
    /// Noise source.
    pub noise: GaussianNoise,
    /// Batch sampler.
    pub sampler: PoissonSampler,
}

impl DpRandomness {
    /// Both seeded by the operating system. Use this for real training.
    pub fn from_os() -> Self {
        Self { noise: GaussianNoise::from_os(), sampler: PoissonSampler::from_os() }
    }

    /// INSECURE: both from a fixed seed (independent generators), for reproducible simulation and tests.
    /// Provides **no privacy**.
    pub fn from_insecure_seed(seed: u64) -> Self {
        Self { noise: GaussianNoise::from_insecure_seed(seed), sampler: PoissonSampler::from_insecure_seed(seed) }
    }

    /// Whether either source was seeded by hand.
    pub fn is_insecure(&self) -> bool {
        self.noise.is_insecure() || self.sampler.is_insecure()
    }
}

/// The parameters of a DP-SGD run that the accountant charges: `steps` runs of the Gaussian mechanism with
/// noise multiplier σ on Poisson samples of rate q (add/remove neighbouring), with clip norm C.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpAccounting {
    /// Sampling rate q.
    pub sample_rate: f64,
    /// Noise multiplier σ.
    pub noise_multiplier: f64,
    /// Clip norm C.
    pub clip_norm: f32,
    /// Steps taken.
    pub steps: u64,
}

/// One DP-SGD step on an already sampled `batch` (steps 2–6 of the [module docs](self)): ghost-clipped sum,
/// plus N(0, σ²C²) per coordinate, divided by the expected batch size `q·records`, plus the proximal
/// gradient, then `params ← params − η·gradient`. The batch may be empty.
///
/// # Errors
/// [`SgdError`] for parameters, data or settings that do not fit, or `records = 0`. On error `params` is
/// unchanged.
pub fn dp_step(
    net: Network<'_>,
    params: &mut [f32],
    batch: Batch<'_>,
    config: &DpSgdConfig,
    records: usize,
    proximal: Option<(f64, &[f32])>,
    noise: &mut GaussianNoise,
) -> Result<StepStats, SgdError> {
    check_learning_rate(config.learning_rate)?;
    check_proximal(proximal, params.len())?;
    if records == 0 {
        return Err(SgdError::NoRecords);
    }
    let expected = config.sample_rate.expected_batch_size(records);
    check_parameters(net.sizes(), params)?;
    // The noise does not depend on the data, so a second thread draws its chunks while this one computes the
    // clipped gradient, and this thread draws whatever is left once the gradient is done: the step then costs
    // about max(gradient, noise) or (gradient + noise)/2, whichever is larger, rather than their sum. The
    // values are the same as on one thread ([`GaussianNoise::fill`]).
    let shared = SharedNoise::new(params.len());
    shared.start(noise.job(params.len(), noise_std(config)));
    std::thread::scope(|scope| {
        let drawing = scope.spawn(|| shared.work());
        let result = clipped_gradient(net, params, batch, config.clip_norm);
        let result = result.map(|(gradient, stats)| {
            apply_noisy_update(params, &gradient, &shared, expected, config.learning_rate, proximal);
            stats
        });
        // A panic while drawing noise is a bug; resume it on this thread rather than train without noise.
        if let Err(panic) = drawing.join() {
            std::panic::resume_unwind(panic);
        }
        result
    })
}

/// What one DP-SGD step needs that does not depend on the model: its Poisson batch (indices and gathered rows)
/// and its noise.
struct StepInput {
    rows: Vec<usize>,
    features: Vec<f32>,
    targets: Vec<f32>,
    /// Drawn by the worker after it hands the batch over, and by the training thread for what is left.
    noise: Arc<SharedNoise>,
}

impl StepInput {
    fn new(parameters: usize) -> Self {
        Self {
            rows: Vec::new(),
            features: Vec::new(),
            targets: Vec::new(),
            noise: Arc::new(SharedNoise::new(parameters)),
        }
    }
}

/// σ·C, the standard deviation of the noise on each coordinate.
fn noise_std(config: &DpSgdConfig) -> f64 {
    config.noise_multiplier.get() * f64::from(config.clip_norm.get())
}

/// A shape or data error of the closed-form path as the same [`TrainError::Model`] the burn paths give.
fn model_first(e: ClipError) -> SgdError {
    match e {
        ClipError::Model(e) => e.into(),
        e => SgdError::Clip(e),
    }
}

/// The clipped gradient sum of `batch` at `params` (zero for an empty batch) and what the step saw: in closed
/// form for one-layer models ([`crate::linear`]), by ghost clipping otherwise.
fn clipped_gradient(
    net: Network<'_>,
    params: &[f32],
    batch: Batch<'_>,
    clip: ClipNorm,
) -> Result<(Vec<f32>, StepStats), SgdError> {
    if batch.rows() == 0 {
        return Ok((vec![0.0f32; params.len()], StepStats { loss_sum: 0.0, rows: 0, clipped: 0 }));
    }
    let sum = if cohort_model::linear::applies(net.sizes()) {
        linear_clipped_sum(net.sizes(), params, net.loss(), batch, clip).map_err(model_first)?
    } else {
        ghost_clipped_sum(&net.stack(params)?, net.loss(), batch, clip)?
    };
    Ok((sum.gradient, StepStats { loss_sum: sum.loss_sum, rows: batch.rows(), clipped: sum.clipped }))
}

/// `params ← params − η·((gradient + noise)/expected + proximal term)`, in one pass per noise chunk: the noise
/// is added, scaled by 1/(q·n) and applied without an intermediate buffer.
fn apply_noisy_update(
    params: &mut [f32],
    gradient: &[f32],
    noise: &SharedNoise,
    expected: f64,
    lr: f64,
    proximal: Option<(f64, &[f32])>,
) {
    noise.for_each(|range, z| apply_chunk(params, gradient, range, z, expected, lr, proximal));
}

/// As [`apply_noisy_update`], with the noise of `job` drawn chunk by chunk on this thread into `scratch`
/// (one chunk long): the same values and the same arithmetic, so the same parameters.
fn apply_noisy_update_here(
    params: &mut [f32],
    gradient: &[f32],
    job: &NoiseJob,
    scratch: &mut [f32],
    expected: f64,
    lr: f64,
    proximal: Option<(f64, &[f32])>,
) {
    for k in 0..job.chunks() {
        let range = job.range(k);
        let z = &mut scratch[..range.len()];
        job.fill_chunk(k, z);
        apply_chunk(params, gradient, range, z, expected, lr, proximal);
    }
}

/// The update of the coordinates `range` with their noise `z`.
#[inline]
fn apply_chunk(
    params: &mut [f32],
    gradient: &[f32],
    range: std::ops::Range<usize>,
    z: &[f32],
    expected: f64,
    lr: f64,
    proximal: Option<(f64, &[f32])>,
) {
    let (scale, lr) = ((1.0 / expected) as f32, lr as f32);
    let (w, g) = (&mut params[range.clone()], &gradient[range.clone()]);
    match proximal {
        Some((mu, global)) => {
            let mu = mu as f32;
            for (((w, g), z), w0) in w.iter_mut().zip(g).zip(z).zip(&global[range]) {
                *w -= lr * (scale * (g + z) + mu * (*w - w0));
            }
        }
        None => {
            for ((w, g), z) in w.iter_mut().zip(g).zip(z) {
                *w -= lr * scale * (g + z);
            }
        }
    }
}

/// Runs DP-SGD from `params` on all of `data` (n = `data.rows()` records): [`DpSgdConfig::steps`] steps of
/// [`dp_step`] on Poisson batches from `rng.sampler`, noise from `rng.noise`. The summary's
/// [`DpAccounting`] is what to charge the accountant.
///
/// # Errors
/// [`SgdError`] for parameters, data or settings that do not fit, an empty data set, or divergence.
pub fn train_dp(
    net: Network<'_>,
    params: &[f32],
    data: Batch<'_>,
    config: &DpSgdConfig,
    proximal: Option<(f64, &[f32])>,
    rng: &mut DpRandomness,
) -> Result<TrainOutput, SgdError> {
    train_dp_scheduled(net, params, data, config, proximal, rng, None)
}

/// How [`train_dp`] spreads a step's work over the two cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schedule {
    /// Sampling, noise and gradient one after the other on the calling thread.
    OneThread,
    /// A worker samples the next batch and draws the noise chunks while the calling thread computes the
    /// gradient, and the calling thread draws the chunks still unclaimed once it is done.
    Worker,
}

/// Models with fewer parameters train on one thread: measured with `cargo bench --bench dp_sgd`, see
/// [`Schedule::for_parameters`].
const ONE_THREAD_BELOW: usize = 2 * crate::noise::CHUNK;

impl Schedule {
    /// The schedule for a model of `parameters`. For the demo's 30-2 logistic regression (62 parameters) a
    /// step takes a few microseconds, less than spawning the worker and handing each step over; from a few
    /// thousand parameters on the noise is worth drawing on the second core.
    fn for_parameters(parameters: usize) -> Self {
        if parameters < ONE_THREAD_BELOW { Self::OneThread } else { Self::Worker }
    }
}

/// [`train_dp`] with the schedule forced (`None`: by the model's size); the output does not depend on it.
fn train_dp_scheduled(
    net: Network<'_>,
    params: &[f32],
    data: Batch<'_>,
    config: &DpSgdConfig,
    proximal: Option<(f64, &[f32])>,
    rng: &mut DpRandomness,
    schedule: Option<Schedule>,
) -> Result<TrainOutput, SgdError> {
    let steps = config.steps()?;
    check_parameters(net.sizes(), params)?;
    data.validate(net.inputs(), net.loss())?;
    check_learning_rate(config.learning_rate)?;
    check_proximal(proximal, params.len())?;
    let n = data.rows();
    if n == 0 {
        return Err(SgdError::NoRecords);
    }
    let dims = net.inputs();
    let expected = config.sample_rate.expected_batch_size(n);
    let std = noise_std(config);
    let mut current = params.to_vec();
    let (mut loss_total, mut examples) = (0.0f64, 0u64);
    let DpRandomness { noise, sampler } = rng;
    let len = current.len();
    let mut step_done = |current: &mut Vec<f32>, stats: StepStats, step: u64| {
        loss_total += stats.loss_sum;
        examples += stats.rows as u64;
        if diverged(current) { Err(SgdError::from(TrainError::Diverged(step))) } else { Ok(()) }
    };
    if schedule.unwrap_or_else(|| Schedule::for_parameters(len)) == Schedule::OneThread {
        // Small models: a step is a few microseconds, less than handing work to another thread costs.
        let (mut rows, mut features, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        let mut scratch = vec![0.0f32; crate::noise::CHUNK.min(len)];
        for step in 0..steps {
            sampler.sample_into(n, config.sample_rate, &mut rows);
            data.gather(dims, &rows, &mut features, &mut targets);
            let job = noise.job(len, std);
            let (gradient, stats) = clipped_gradient(net, &current, Batch::new(&features, &targets), config.clip_norm)?;
            apply_noisy_update_here(
                &mut current,
                &gradient,
                &job,
                &mut scratch,
                expected,
                config.learning_rate,
                proximal,
            );
            step_done(&mut current, stats, step)?;
        }
    } else {
        // Everything a step needs that does not depend on the model (its Poisson batch, gathered, and its noise)
        // is prepared ahead by a second thread, into one of two recycled buffers, while this thread clips and
        // updates. The worker hands a batch over as soon as it is sampled and then draws that step's noise
        // chunks; this thread, once its gradient is done, draws any chunk still unclaimed instead of waiting.
        // Each generator makes the same draws as on one thread (the noise is a function of the chunk numbers,
        // not of who draws them); the worker stops after `steps` inputs or as soon as this loop ends.
        std::thread::scope(|scope| {
            let (filled_tx, filled_rx) = std::sync::mpsc::sync_channel::<StepInput>(1);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<StepInput>();
            scope.spawn(move || {
                for _ in 0..steps {
                    let mut input = empty_rx.recv().unwrap_or_else(|_| StepInput::new(len));
                    sampler.sample_into(n, config.sample_rate, &mut input.rows);
                    data.gather(dims, &input.rows, &mut input.features, &mut input.targets);
                    input.noise.start(noise.job(len, std));
                    let step_noise = Arc::clone(&input.noise);
                    if filled_tx.send(input).is_err() {
                        return;
                    }
                    step_noise.work();
                }
            });
            for _ in 0..2 {
                // The worker holds the receiver until it has prepared every step.
                let _ = empty_tx.send(StepInput::new(len));
            }
            for step in 0..steps {
                let input = filled_rx.recv().map_err(|_| SgdError::NoiseStopped)?;
                let batch = Batch::new(&input.features, &input.targets);
                let (gradient, stats) = clipped_gradient(net, &current, batch, config.clip_norm)?;
                apply_noisy_update(&mut current, &gradient, &input.noise, expected, config.learning_rate, proximal);
                let _ = empty_tx.send(input);
                step_done(&mut current, stats, step)?;
            }
            Ok::<(), SgdError>(())
        })?;
    }
    let mean_loss = (examples > 0).then(|| loss_total / examples as f64);
    Ok(TrainOutput { params: current, summary: TrainSummary { steps, mean_loss, examples } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_model::fixtures::blobs;
    use cohort_model::layout::initial_parameters;
    use cohort_model::train::{mean_loss, predict};
    use cohort_model::{DenseStack, Loss, inference_device, parameter_count};
    use rand::SeedableRng;

    const CE2: Loss = Loss::CrossEntropy { classes: 2 };

    fn accuracy(net: Network<'_>, params: &[f32], x: &[f32], y: &[f32]) -> f64 {
        let p = predict(net, params, x).unwrap();
        p.chunks(2).zip(y).filter(|(r, t)| (r[1] > r[0]) == (**t == 1.0)).count() as f64 / y.len() as f64
    }

    fn config(sigma: f64, q: f64, length: TrainingLength, lr: f64) -> DpSgdConfig {
        DpSgdConfig {
            clip_norm: ClipNorm::new(1.0).unwrap(),
            noise_multiplier: NoiseMultiplier::new(sigma).unwrap(),
            sample_rate: SampleRate::new(q).unwrap(),
            learning_rate: lr,
            length,
        }
    }

    #[test]
    fn dp_sgd_learns_a_separable_problem() {
        let (x, y) = blobs(400);
        let data = Batch::new(&x, &y);
        for sizes in [vec![2, 2], vec![2, 8, 2]] {
            let net = Network::new(&sizes, CE2).unwrap();
            let start = initial_parameters(&sizes, &mut rand_chacha::ChaCha20Rng::seed_from_u64(4)).unwrap();
            let before = mean_loss(net, &start, data).unwrap().unwrap();
            let dp_config = config(1.0, 0.1, TrainingLength::Epochs(5.0), 0.5);
            let dp = train_dp(net, &start, data, &dp_config, None, &mut DpRandomness::from_insecure_seed(1)).unwrap();
            assert_eq!(dp.summary.steps, 50);
            assert_eq!(
                dp_config.accounting().unwrap(),
                DpAccounting { sample_rate: 0.1, noise_multiplier: 1.0, clip_norm: 1.0, steps: 50 }
            );
            assert!(mean_loss(net, &dp.params, data).unwrap().unwrap() < 0.5 * before, "{sizes:?}");
            assert!(accuracy(net, &dp.params, &x, &y) > 0.95);
        }
    }

    #[test]
    fn a_seeded_run_reproduces_bit_for_bit() {
        // The insecure seeded path (simulation, tests) gives the same parameters on every run, whichever thread
        // draws which noise chunk: one-layer (closed form) and deeper (ghost clipping) models, and a parameter
        // count of several noise chunks.
        let (x, y) = blobs(300);
        let data = Batch::new(&x, &y);
        for sizes in [vec![2, 2], vec![2, 8, 2], vec![2, 900, 2]] {
            let net = Network::new(&sizes, CE2).unwrap();
            let start = initial_parameters(&sizes, &mut rand_chacha::ChaCha20Rng::seed_from_u64(5)).unwrap();
            let cfg = config(1.0, 0.05, TrainingLength::Steps(30), 0.2);
            let run = |seed| train_dp(net, &start, data, &cfg, None, &mut DpRandomness::from_insecure_seed(seed));
            let (a, b, other) = (run(7).unwrap(), run(7).unwrap(), run(8).unwrap());
            let bits = |p: &[f32]| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.params), bits(&b.params), "{sizes:?}");
            assert_eq!(a.summary, b.summary);
            assert_ne!(a.params, other.params);
            for schedule in [Schedule::OneThread, Schedule::Worker] {
                let forced = train_dp_scheduled(
                    net,
                    &start,
                    data,
                    &cfg,
                    Some((0.1, &start)),
                    &mut DpRandomness::from_insecure_seed(7),
                    Some(schedule),
                )
                .unwrap();
                let free =
                    train_dp(net, &start, data, &cfg, Some((0.1, &start)), &mut DpRandomness::from_insecure_seed(7))
                        .unwrap();
                assert_eq!(bits(&forced.params), bits(&free.params), "{sizes:?} {schedule:?}");
            }
        }
    }

    #[test]
    fn regression_learns_a_line() {
        // y = 2·x0 − x1 + 0.5.
        let n = 200;
        let x: Vec<f32> = (0..2 * n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let y: Vec<f32> = x.chunks(2).map(|r| 2.0 * r[0] - r[1] + 0.5).collect();
        let net = Network::new(&[2, 1], Loss::SquaredError).unwrap();
        let start = vec![0.0; 3];
        let data = Batch::new(&x, &y);
        let before = mean_loss(net, &start, data).unwrap().unwrap();
        let dp = train_dp(
            net,
            &start,
            data,
            &config(0.5, 0.1, TrainingLength::Steps(300), 0.1),
            None,
            &mut DpRandomness::from_insecure_seed(3),
        )
        .unwrap();
        assert!(mean_loss(net, &dp.params, data).unwrap().unwrap() < 0.1 * before);
    }

    #[test]
    fn an_empty_batch_is_pure_noise_divided_by_the_expected_batch_size() {
        let sizes = [2, 3, 2];
        let net = Network::new(&sizes, CE2).unwrap();
        let start: Vec<f32> = (0..parameter_count(&sizes)).map(|i| i as f32 * 0.1).collect();
        let (records, sigma, lr) = (40, 2.0, 0.3);
        let cfg = config(sigma, 0.05, TrainingLength::Steps(1), lr);
        let mut params = start.clone();
        let stats = dp_step(
            net,
            &mut params,
            Batch::new(&[], &[]),
            &cfg,
            records,
            None,
            &mut GaussianNoise::from_insecure_seed(9),
        )
        .unwrap();
        assert_eq!(stats.rows, 0);
        // Replay the noise: the update is −η·N(0, σ²C²)/(q·n) with q·n = 2, not divided by the realized 0.
        let mut noise = vec![0.0f32; start.len()];
        GaussianNoise::from_insecure_seed(9).add_to(&mut noise, sigma * 1.0);
        assert!(noise.iter().all(|v| *v != 0.0));
        for ((p, s), z) in params.iter().zip(&start).zip(&noise) {
            let want = s - (lr as f32) * z / 2.0;
            assert!(p.is_finite() && (p - want).abs() < 1e-5, "{p} vs {want}");
        }
        // A whole run whose batches are empty (q·n tiny) does not panic or produce NaN.
        let (x, y) = blobs(10);
        let out = train_dp(
            net,
            &start,
            Batch::new(&x, &y),
            &config(1.0, 1e-6, TrainingLength::Steps(3), 1e-6),
            None,
            &mut DpRandomness::from_insecure_seed(2),
        )
        .unwrap();
        assert_eq!(out.summary.examples, 0);
        assert_eq!(out.summary.mean_loss, None);
        assert!(out.params.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn a_full_batch_step_is_clipped_sum_plus_noise_over_q_n() {
        // With σ = 0 the update is the clipped sum divided by q·n (not by the realized batch size).
        let sizes = [2, 4, 2];
        let net = Network::new(&sizes, CE2).unwrap();
        let start = initial_parameters(&sizes, &mut rand_chacha::ChaCha20Rng::seed_from_u64(8)).unwrap();
        let (x, y) = blobs(6);
        let cfg = config(0.0, 0.5, TrainingLength::Steps(1), 1.0);
        let mut params = start.clone();
        dp_step(net, &mut params, Batch::new(&x, &y), &cfg, 20, None, &mut GaussianNoise::from_insecure_seed(1))
            .unwrap();
        let model = DenseStack::from_flat(&sizes, &start, &inference_device()).unwrap();
        let sum = ghost_clipped_sum(&model, CE2, Batch::new(&x, &y), cfg.clip_norm).unwrap();
        for ((p, s), g) in params.iter().zip(&start).zip(&sum.gradient) {
            assert!((p - (s - g / 10.0)).abs() < 1e-6);
        }
    }

    #[test]
    fn huge_noise_does_not_blow_up() {
        let sizes = [2, 3, 2];
        let net = Network::new(&sizes, CE2).unwrap();
        let (x, y) = blobs(50);
        let start = vec![0.1; parameter_count(&sizes)];
        let out = train_dp(
            net,
            &start,
            Batch::new(&x, &y),
            &config(1e4, 0.2, TrainingLength::Steps(20), 1e-3),
            None,
            &mut DpRandomness::from_insecure_seed(3),
        )
        .unwrap();
        assert!(out.params.iter().all(|v| v.is_finite()));
        assert_eq!(out.summary.steps, 20);
        // ...and a learning rate that overflows is a typed error, not NaN parameters.
        let bad = train_dp(
            net,
            &start,
            Batch::new(&x, &y),
            &config(1e4, 0.2, TrainingLength::Steps(20), 1e35),
            None,
            &mut DpRandomness::from_insecure_seed(3),
        );
        assert!(matches!(bad, Err(SgdError::Train(TrainError::Diverged(_) | TrainError::Model(_)))), "{bad:?}");
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let net = Network::new(&[2, 2], CE2).unwrap();
        let (x, y) = blobs(8);
        let data = Batch::new(&x, &y);
        let p = vec![0.0; 6];
        let mut rng = DpRandomness::from_insecure_seed(0);
        assert!(matches!(
            train_dp(net, &p[..5], data, &config(1.0, 0.5, TrainingLength::Steps(1), 0.1), None, &mut rng),
            Err(SgdError::Train(TrainError::Model(_)))
        ));
        assert!(matches!(
            train_dp(net, &p, data, &config(1.0, 0.5, TrainingLength::Steps(1), -0.1), None, &mut rng),
            Err(SgdError::Train(TrainError::LearningRate(_)))
        ));
        assert!(matches!(
            train_dp(net, &p, data, &config(1.0, 0.5, TrainingLength::Epochs(f64::NAN), 0.1), None, &mut rng),
            Err(SgdError::Epochs(_))
        ));
        assert!(matches!(
            train_dp(net, &p, Batch::new(&[], &[]), &config(1.0, 0.5, TrainingLength::Steps(1), 0.1), None, &mut rng),
            Err(SgdError::NoRecords)
        ));
        assert!(matches!(
            train_dp(net, &p, data, &config(1.0, 0.5, TrainingLength::Steps(1), 0.1), Some((1.0, &p[..3])), &mut rng),
            Err(SgdError::Train(TrainError::Proximal(_)))
        ));
        assert!(matches!(
            train_dp(net, &p, data, &config(1.0, 0.5, TrainingLength::Steps(1), 0.1), Some((-1.0, &p)), &mut rng),
            Err(SgdError::Train(TrainError::Proximal(_)))
        ));
        assert_eq!(config(1.0, 0.01, TrainingLength::Epochs(2.5), 0.1).steps().unwrap(), 250);
    }
}

//! Local training and evaluation of the federation's model on this node's data: `cohort_model`'s networks
//! (burn, `flex` CPU backend) trained by plain SGD or by `cohort_dp`'s DP-SGD.

use crate::data::Dataset;
use cohort_core::metrics::{self, EvalMetrics};
use cohort_core::model::{ModelError, ModelSpec};
use cohort_dp::sgd::{self, DpRandomness, DpSgdConfig, SgdError};
use cohort_model::Batch;
use cohort_model::train::{self, Network, SgdConfig, TrainOutput};

/// Training or evaluation that cannot proceed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Parameters that do not fit the spec.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Data that does not fit the spec.
    #[error("data has {actual} features but the model takes {expected}")]
    Shape {
        /// Model inputs.
        expected: usize,
        /// Data columns.
        actual: usize,
    },
    /// Plain training failed.
    #[error(transparent)]
    Train(#[from] train::TrainError),
    /// DP training failed.
    #[error(transparent)]
    Sgd(#[from] SgdError),
    /// Metrics could not be computed.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

/// The network of `spec`, after checking that `params` and `data` fit it.
fn network<'a>(spec: &'a ModelSpec, params: &[f32], data: &Dataset) -> Result<Network<'a>, TrainError> {
    spec.check_parameters(params)?;
    if data.dims != spec.inputs() {
        return Err(TrainError::Shape { expected: spec.inputs(), actual: data.dims });
    }
    Ok(Network::new(&spec.layers, spec.loss())?)
}

fn batch(data: &Dataset) -> Batch<'_> {
    Batch::new(&data.features, &data.targets)
}

/// Ordinary minibatch SGD from `global` (shuffles from `rng`), with an optional FedProx coefficient `mu`.
///
/// # Errors
/// [`TrainError`] for mismatched shapes or divergence.
pub fn train_sgd<R: rand::Rng + ?Sized>(
    spec: &ModelSpec,
    global: &[f32],
    data: &Dataset,
    config: &SgdConfig,
    mu: Option<f64>,
    rng: &mut R,
) -> Result<TrainOutput, TrainError> {
    let net = network(spec, global, data)?;
    let proximal = mu.map(|mu| (mu, global));
    Ok(train::train_sgd(net, global, batch(data), config, proximal, rng)?)
}

/// DP-SGD from `global`, with an optional FedProx coefficient `mu`.
///
/// # Errors
/// [`TrainError`] for mismatched shapes, bad settings or divergence.
pub fn train_dp(
    spec: &ModelSpec,
    global: &[f32],
    data: &Dataset,
    config: &DpSgdConfig,
    mu: Option<f64>,
    randomness: &mut DpRandomness,
) -> Result<TrainOutput, TrainError> {
    let net = network(spec, global, data)?;
    let proximal = mu.map(|mu| (mu, global));
    Ok(sgd::train_dp(net, global, batch(data), config, proximal, randomness)?)
}

/// Model outputs for every row: class probabilities (`rows × classes`) or regression values.
///
/// # Errors
/// [`TrainError`] for mismatched shapes.
pub fn predict(spec: &ModelSpec, params: &[f32], data: &Dataset) -> Result<Vec<f32>, TrainError> {
    let net = network(spec, params, data)?;
    Ok(train::predict(net, params, &data.features)?)
}

/// Evaluates `params` on `data` with the metrics of the task.
///
/// # Errors
/// [`TrainError`] for mismatched shapes or empty data.
pub fn evaluate(spec: &ModelSpec, params: &[f32], data: &Dataset) -> Result<EvalMetrics, TrainError> {
    let out = predict(spec, params, data)?;
    Ok(metrics::for_task(spec.task, &out, spec.outputs(), &data.targets)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::model::TaskKind;

    fn toy(n: usize) -> Dataset {
        let mut features = Vec::new();
        let mut targets = Vec::new();
        for i in 0..n {
            let c = i % 2;
            let jitter = ((i * 7919) % 100) as f32 / 100.0 - 0.5;
            features.extend([if c == 1 { 1.5 } else { -1.5 } + jitter, jitter]);
            targets.push(c as f32);
        }
        Dataset { features, targets, dims: 2 }
    }

    #[test]
    fn sgd_learns_a_separable_problem() {
        let spec = ModelSpec::new(2, &[], 2, TaskKind::Binary).unwrap();
        let data = toy(64);
        let start = vec![0.0; spec.parameter_count()];
        let before = evaluate(&spec, &start, &data).unwrap();
        let config = SgdConfig { epochs: 5, batch_size: 16, learning_rate: 0.5 };
        let out = train_sgd(&spec, &start, &data, &config, None, &mut rand::rng()).unwrap();
        let after = evaluate(&spec, &out.params, &data).unwrap();
        assert!(after.get("loss").unwrap() < before.get("loss").unwrap());
        assert_eq!(after.get("accuracy"), Some(1.0));
    }

    #[test]
    fn proximal_term_pulls_towards_the_global_model() {
        let spec = ModelSpec::new(2, &[], 2, TaskKind::Binary).unwrap();
        let data = toy(64);
        let start = vec![0.0; spec.parameter_count()];
        let config = SgdConfig { epochs: 3, batch_size: 16, learning_rate: 0.5 };
        let dist = |p: &[f32]| p.iter().map(|v| v * v).sum::<f32>();
        let free = train_sgd(&spec, &start, &data, &config, None, &mut rand::rng()).unwrap();
        let prox = train_sgd(&spec, &start, &data, &config, Some(1.0), &mut rand::rng()).unwrap();
        assert!(dist(&prox.params) < dist(&free.params));
    }

    #[test]
    fn wrong_shapes_are_typed_errors() {
        let spec = ModelSpec::new(3, &[], 2, TaskKind::Binary).unwrap();
        let data = toy(4);
        assert!(matches!(evaluate(&spec, &vec![0.0; spec.parameter_count()], &data), Err(TrainError::Shape { .. })));
        assert!(matches!(evaluate(&spec, &[0.0], &data), Err(TrainError::Model(_))));
    }
}

//! The standard [`LocalWork`]: trains the federation's dense model on the node's data with burn.

use crate::data::LocalData;
use crate::node::{ClientError, LocalWork, Participation, TrainOutcome, TrainSettings};
use crate::outbound::Outbound;
use crate::trainer;
use cohort_core::Round;
use cohort_core::config::FederationPlan;
use cohort_core::metrics::EvalMetrics;
use cohort_core::model::ModelSpec;
use cohort_model::train::SgdConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Trains and evaluates with plain (non-private) minibatch SGD.
#[derive(Debug, Default)]
pub struct TrainingWork {
    state: Option<(ModelSpec, LocalData)>,
    /// The shuffles' generator when seeded for a reproducible simulation (else the thread's OS-seeded CSPRNG).
    seeded: Option<ChaCha20Rng>,
}

impl TrainingWork {
    /// A worker that is prepared when the node joins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reproducible minibatch shuffles from `seed`, for simulations that replay bit for bit.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seeded = Some(ChaCha20Rng::seed_from_u64(seed));
        self
    }

    fn state(&self) -> Result<&(ModelSpec, LocalData), ClientError> {
        self.state.as_ref().ok_or_else(|| ClientError::Local("training requested before the node joined".into()))
    }
}

impl LocalWork for TrainingWork {
    fn prepare(&mut self, plan: &FederationPlan, data: &LocalData) -> Result<(), ClientError> {
        self.state = Some((plan.model.clone(), data.clone()));
        Ok(())
    }

    fn participate(&mut self, _round: Round, _settings: &TrainSettings) -> Result<Participation, ClientError> {
        Ok(Participation::Train)
    }

    fn train(&mut self, _round: Round, global: &[f32], settings: &TrainSettings) -> Result<TrainOutcome, ClientError> {
        let config = SgdConfig {
            epochs: settings.local_epochs,
            learning_rate: settings.learning_rate,
            batch_size: settings.batch_size,
        };
        let (spec, data) = self
            .state
            .as_ref()
            .ok_or_else(|| ClientError::Local("training requested before the node joined".into()))?;
        let out = match &mut self.seeded {
            Some(rng) => trainer::train_sgd(spec, global, &data.train, &config, settings.proximal_mu, rng),
            None => trainer::train_sgd(spec, global, &data.train, &config, settings.proximal_mu, &mut rand::rng()),
        }
        .map_err(|e| ClientError::Training(e.to_string()))?;
        // A node without DP promises no privacy: what it computed leaves as it is.
        Ok(TrainOutcome {
            params: Outbound::unprotected(out.params),
            train_loss: out.summary.mean_loss.map(Outbound::unprotected),
            examples: Outbound::unprotected(data.train.rows() as u64),
        })
    }

    fn evaluate(&mut self, params: &[f32]) -> Result<EvalMetrics, ClientError> {
        let (spec, data) = self.state()?;
        trainer::evaluate(spec, params, &data.holdout).map_err(|e| ClientError::Training(e.to_string()))
    }
}

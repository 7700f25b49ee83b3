//! Central evaluation: the coordinator's own test set, on which every new global model is evaluated beside the
//! federated (per-node) evaluation.
//!
//! The test set is read against the federation schema (the same loader and checks as a node's data), scaled
//! with the schema's declared bounds, exactly as the nodes scale theirs, or, without declared bounds, with the
//! test set's own statistics (the nodes then standardize with theirs, so the figure is only indicative).

use cohort_core::config::Schema;
use cohort_core::data::{self, DataError, Dataset, Standardizer};
use cohort_core::metrics::{self, EvalMetrics, MetricsError};
use cohort_core::model::ModelSpec;
use cohort_model::train::{self, Network, TrainError};
use std::path::Path;

/// Why the central evaluation cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CentralError {
    /// The test set does not fit the schema (names the file, line and column).
    #[error("central test set: {0}")]
    Data(#[from] DataError),
    /// The model cannot run on the test set.
    #[error("central evaluation: {0}")]
    Model(#[from] TrainError),
    /// The metrics cannot be computed.
    #[error("central evaluation: {0}")]
    Metrics(#[from] MetricsError),
}

/// The coordinator's test set, scaled, with the model it evaluates.
#[derive(Debug, Clone)]
pub struct CentralEval {
    spec: ModelSpec,
    data: Dataset,
}

impl CentralEval {
    /// Loads the test set at `path` against `schema` and scales it (see the [module docs](self)).
    ///
    /// # Errors
    /// [`CentralError::Data`] naming the first problem in the file.
    pub fn load(path: &Path, schema: &Schema, spec: ModelSpec) -> Result<Self, CentralError> {
        let mut data = data::load_csv(path, schema)?;
        Standardizer::for_schema(schema, &data).apply(&mut data);
        Ok(Self { spec, data })
    }

    /// Number of test rows.
    pub fn rows(&self) -> usize {
        self.data.rows()
    }

    /// The metrics of the task for the global model `params` on the test set.
    ///
    /// # Errors
    /// [`CentralError`] for parameters that do not fit the model.
    pub fn evaluate(&self, params: &[f32]) -> Result<EvalMetrics, CentralError> {
        let net = Network::new(&self.spec.layers, self.spec.loss())?;
        let outputs = train::predict(net, params, &self.data.features)?;
        Ok(metrics::for_task(self.spec.task, &outputs, self.spec.outputs(), &self.data.targets)?)
    }
}

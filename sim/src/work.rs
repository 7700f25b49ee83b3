//! A simulated node's local work: the deployment's own [`PrivateWork`] (DP) or [`TrainingWork`] (no DP),
//! unchanged, with a tap that copies each exact evaluation to the simulator.
//!
//! The tap is the simulator's privilege: it owns every client's rows, so it may look at their exact metrics, as
//! a hospital may look at its own. Nothing the tap sees goes over the link; the coordinator still gets only what
//! the node's work releases.

use cohort_client::node::{ClientError, JoinReleases, LocalWork, Participation, TrainOutcome, TrainSettings};
use cohort_client::outbound::Outbound;
use cohort_client::privacy::PrivateWork;
use cohort_client::work::TrainingWork;
use cohort_core::config::FederationPlan;
use cohort_core::data::LocalData;
use cohort_core::ledger::LedgerRecord;
use cohort_core::metrics::EvalMetrics;
use cohort_core::{ModelVersion, Round};
use std::sync::{Arc, Mutex};

/// One client's exact evaluation of one global model version, as the simulator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The client's index.
    pub client: usize,
    /// The version evaluated.
    pub version: ModelVersion,
    /// Exact metrics on the client's held-out rows.
    pub metrics: EvalMetrics,
    /// The client's cumulative ε after releasing this evaluation (None without DP).
    pub epsilon: Option<f64>,
}

/// Where every simulated node's tap writes.
pub(crate) type Sink = Arc<Mutex<Vec<Observation>>>;

/// The node's real work.
enum Inner {
    Private(Box<PrivateWork>),
    Plain(Box<TrainingWork>),
}

/// A simulated node's [`LocalWork`]: the deployment's work, delegated to call for call, plus the tap.
pub(crate) struct SimWork {
    inner: Inner,
    client: usize,
    sink: Sink,
}

impl SimWork {
    pub(crate) fn private(work: PrivateWork, client: usize, sink: Sink) -> Self {
        Self { inner: Inner::Private(Box::new(work)), client, sink }
    }

    pub(crate) fn plain(work: TrainingWork, client: usize, sink: Sink) -> Self {
        Self { inner: Inner::Plain(Box::new(work)), client, sink }
    }

    fn work(&mut self) -> &mut dyn LocalWork {
        match &mut self.inner {
            Inner::Private(w) => w.as_mut(),
            Inner::Plain(w) => w.as_mut(),
        }
    }

    /// The ε recorded in the node's ledger so far (None without DP).
    pub(crate) fn spent(&self) -> Option<f64> {
        match &self.inner {
            Inner::Private(w) => w.recorded_spend(),
            Inner::Plain(_) => None,
        }
    }
}

impl LocalWork for SimWork {
    fn prepare(&mut self, plan: &FederationPlan, data: &LocalData) -> Result<(), ClientError> {
        self.work().prepare(plan, data)
    }

    fn participate(&mut self, round: Round, settings: &TrainSettings) -> Result<Participation, ClientError> {
        self.work().participate(round, settings)
    }

    fn train(&mut self, round: Round, global: &[f32], settings: &TrainSettings) -> Result<TrainOutcome, ClientError> {
        self.work().train(round, global, settings)
    }

    fn evaluate(&mut self, params: &[f32]) -> Result<EvalMetrics, ClientError> {
        self.work().evaluate(params)
    }

    fn release_evaluation(
        &mut self,
        version: ModelVersion,
        model_sha256: &str,
        params: &[f32],
        exact: &EvalMetrics,
    ) -> Result<Outbound<EvalMetrics>, ClientError> {
        let released = self.work().release_evaluation(version, model_sha256, params, exact)?;
        // A node without held-out rows evaluated nothing exactly: there is nothing to observe.
        if exact.examples > 0 {
            let observation =
                Observation { client: self.client, version, metrics: exact.clone(), epsilon: self.spent() };
            self.sink
                .lock()
                .map_err(|_| ClientError::Local("the simulator's metrics sink is poisoned".into()))?
                .push(observation);
        }
        Ok(released)
    }

    fn refuse(&mut self, round: Option<Round>, reason: &str) -> Result<Option<LedgerRecord>, ClientError> {
        self.work().refuse(round, reason)
    }

    fn take_ledger_records(&mut self) -> Vec<LedgerRecord> {
        self.work().take_ledger_records()
    }

    fn resend_ledger(&mut self) {
        self.work().resend_ledger();
    }

    fn public_keys(&self) -> (Vec<u8>, Vec<u8>) {
        match &self.inner {
            Inner::Private(w) => w.public_keys(),
            Inner::Plain(w) => w.public_keys(),
        }
    }

    fn join_releases(&mut self, data: &LocalData) -> Result<JoinReleases, ClientError> {
        self.work().join_releases(data)
    }
}

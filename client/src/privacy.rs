//! Differentially private local work: DP-SGD with a privacy budget that this node enforces itself, and the
//! small OpenDP releases (noisy example count, label histogram) it makes at join.
//!
//! Before each round the node recomputes, from its own ledger, the ε the round would bring (the composition
//! rule of [`cohort_dp::accountant::composition`] over every record plus this round). If that exceeds its
//! budget it declines, records the decline, and the coordinator goes on without it. The ledger is on disk, so
//! the budget survives restarts.

use crate::data::LocalData;
use crate::ledger::Ledger;
use crate::node::{ClientError, JoinReleases, LocalWork, Participation, TrainOutcome, TrainSettings};
use crate::outbound::Outbound;
use crate::trainer;
use cohort_core::config::{FederationPlan, PrivacySection};
use cohort_core::ledger::{LedgerRecord, Mechanism, PrivacyEvent, RecordBody};
use cohort_core::metrics::{self, EvalMetrics, regression_sums};
use cohort_core::model::{ModelSpec, TaskKind};
use cohort_core::{ModelVersion, Round};
use cohort_dp::accountant::composition::{self, Bound, SpendEvent};
use cohort_dp::accountant::{self, Epsilon, SampledGaussian};
use cohort_dp::clip::ClipNorm;
use cohort_dp::noise::NoiseMultiplier;
use cohort_dp::releases::{self, ReleaseNoise};
use cohort_dp::sampling::SampleRate;
use cohort_dp::sgd::{DpRandomness, DpSgdConfig, TrainingLength};
use std::path::PathBuf;

/// The DP-SGD schedule a node settles on when it joins.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DpSchedule {
    /// Poisson sampling rate.
    pub sample_rate: f64,
    /// Noise multiplier.
    pub noise_multiplier: f64,
    /// Clipping norm.
    pub clip_norm: f64,
    /// DP-SGD steps per round.
    pub steps_per_round: u64,
    /// δ.
    pub delta: f64,
}

impl DpSchedule {
    /// Plans the schedule: q from the config (or batch size / rows), steps per round = ⌈epochs / q⌉, and σ from
    /// the config or calibrated so that the planned rounds spend the target ε.
    ///
    /// # Errors
    /// [`ClientError::Local`] when the target cannot be met.
    pub fn plan(privacy: &PrivacySection, plan: &FederationPlan, rows: usize) -> Result<Self, ClientError> {
        let q = privacy.sample_rate.unwrap_or_else(|| (plan.training.batch_size as f64 / rows.max(1) as f64).min(1.0));
        let steps_per_round = (f64::from(plan.training.local_epochs.max(1)) / q).ceil() as u64;
        let noise_multiplier = match privacy.noise_multiplier {
            Some(sigma) => sigma,
            None => {
                let target = privacy
                    .dp_sgd_target()
                    .unwrap_or(privacy.epsilon_budget * cohort_core::config::DEFAULT_DP_SGD_SHARE);
                accountant::calibrate(target, privacy.delta, q, steps_per_round * plan.training.rounds)
                    .map_err(|e| ClientError::Local(format!("cannot calibrate DP-SGD noise: {e}")))?
            }
        };
        Ok(Self {
            sample_rate: q,
            noise_multiplier,
            clip_norm: privacy.clip_norm,
            steps_per_round,
            delta: privacy.delta,
        })
    }
}

/// The cumulative ε of a node's records under the ledger's composition rule
/// ([`cohort_dp::accountant::composition::cumulative_epsilon`], by the default accountant), optionally with one
/// more event, at `delta`.
///
/// # Errors
/// [`ClientError::Local`] for parameters the accountant rejects.
pub fn cumulative_epsilon(
    records: &[LedgerRecord],
    extra: Option<PrivacyEvent>,
    delta: f64,
) -> Result<f64, ClientError> {
    let events = records.iter().filter_map(LedgerRecord::privacy_event).chain(extra).map(|event| match event {
        PrivacyEvent::SampledGaussian { q, sigma, steps } => {
            SpendEvent::SampledGaussian(SampledGaussian { q, sigma, steps })
        }
        PrivacyEvent::PureEpsilon(e) => SpendEvent::PureEpsilon(e),
    });
    composition::cumulative_epsilon(accountant::DEFAULT_ACCOUNTANT, Bound::Composed, events, delta)
        .map_err(|e| ClientError::Local(format!("privacy ledger: {e}")))
}

struct State {
    plan: FederationPlan,
    spec: ModelSpec,
    schema: cohort_core::config::Schema,
    data: LocalData,
    /// Planned from the noisy example count once it is released (never from the exact count, which would then
    /// leave the node as q = B/n and the step count in every ledger record).
    schedule: Option<DpSchedule>,
    /// The released noisy count of training examples: the node's FedAvg weight.
    noisy_examples: Option<Outbound<u64>>,
    ledger: Ledger,
    reported: usize,
}

impl State {
    fn schedule(&self) -> Result<DpSchedule, ClientError> {
        self.schedule.ok_or_else(|| ClientError::Local("the DP-SGD schedule is planned after the join releases".into()))
    }
}

/// Local work with DP-SGD and a self-enforced budget.
pub struct PrivateWork {
    name: String,
    data_dir: PathBuf,
    privacy: PrivacySection,
    randomness: DpRandomness,
    release_noise: ReleaseNoise,
    state: Option<State>,
}

impl std::fmt::Debug for PrivateWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateWork").field("name", &self.name).field("privacy", &self.privacy).finish_non_exhaustive()
    }
}

impl PrivateWork {
    /// A worker for node `name` keeping its ledger in `data_dir`. Noise comes from an OS-seeded CSPRNG.
    pub fn new(name: &str, data_dir: PathBuf, privacy: PrivacySection) -> Self {
        Self {
            name: name.to_owned(),
            data_dir,
            privacy,
            randomness: DpRandomness::from_os(),
            release_noise: ReleaseNoise::OpenDp,
            state: None,
        }
    }

    /// INSECURE: deterministic noise for reproducible simulation (`--insecure-seed`): DP-SGD's noise and
    /// sampling, and the count, histogram and evaluation releases (feature statistics, off by default, stay
    /// OS-seeded). Gives no privacy.
    pub fn with_insecure_seed(mut self, seed: u64) -> Self {
        tracing::warn!(node = %self.name, "INSECURE: DP noise is seeded by hand ({seed}); this run gives NO privacy");
        self.randomness = DpRandomness::from_insecure_seed(seed);
        self.release_noise = ReleaseNoise::insecure_seeded(seed);
        self
    }

    fn state(&mut self) -> Result<&mut State, ClientError> {
        self.state.as_mut().ok_or_else(|| ClientError::Local("training requested before the node joined".into()))
    }

    /// The ε this node has spent so far (None before it joined).
    pub fn spent(&self) -> Option<f64> {
        let s = self.state.as_ref()?;
        cumulative_epsilon(s.ledger.records(), None, self.privacy.delta).ok()
    }

    /// The cumulative ε of the newest ledger record, as recorded there (None before the node joined). Unlike
    /// [`PrivateWork::spent`] it composes nothing, so it is cheap to ask after every round.
    pub fn recorded_spend(&self) -> Option<f64> {
        self.state.as_ref()?.ledger.head().map(|r| r.body.cumulative_epsilon)
    }

    /// The schedule (None before the node joined and made its join releases).
    pub fn schedule(&self) -> Option<DpSchedule> {
        self.state.as_ref().and_then(|s| s.schedule)
    }

    /// Appends a record for `draft` with its cumulative ε computed by the composition rule.
    fn record(&mut self, draft: RecordBody) -> Result<LedgerRecord, ClientError> {
        let s = self.state()?;
        let extra =
            LedgerRecord { body: draft.clone(), hash: String::new(), signer: String::new(), signature: String::new() };
        let cumulative = cumulative_epsilon(s.ledger.records(), extra.privacy_event(), draft.delta)?;
        s.ledger
            .append(RecordBody { cumulative_epsilon: cumulative, ..draft })
            .map_err(|e| ClientError::Local(format!("cannot write the privacy ledger: {e}")))
    }

    /// A draft record of this node's data set for `mechanism`, with the schedule's parameters (zero before the
    /// schedule is planned).
    fn draft(&self, mechanism: Mechanism, round: Option<Round>) -> Result<RecordBody, ClientError> {
        let s = self.state.as_ref().ok_or_else(|| ClientError::Local("the node has not joined".into()))?;
        let (sample_rate, noise_multiplier, clip_norm) =
            s.schedule.map_or((0.0, 0.0, 0.0), |d| (d.sample_rate, d.noise_multiplier, d.clip_norm));
        Ok(RecordBody {
            round: round.map(|r| r.0),
            sample_rate,
            noise_multiplier,
            clip_norm,
            delta: self.privacy.delta,
            accountant: accountant::ACCOUNTANT_NAME.into(),
            accountant_version: accountant::ACCOUNTANT_VERSION.into(),
            epsilon_budget: self.privacy.epsilon_budget,
            ..RecordBody::new(&self.name, &s.data.fingerprint, mechanism)
        })
    }

    /// The value of an earlier release of `mechanism` on this data set, kept in its record's note, so that a
    /// node that rejoins (after a restart or a reconnect) reports the same figures without spending again.
    fn earlier_release<T: serde::de::DeserializeOwned>(&self, mechanism: Mechanism) -> Option<Outbound<T>> {
        let s = self.state.as_ref()?;
        let r = s
            .ledger
            .records()
            .iter()
            .rev()
            .find(|r| r.body.mechanism == mechanism && r.body.dataset_fingerprint == s.data.fingerprint)?;
        let value = serde_json::from_str(r.body.note.strip_prefix(RELEASED_PREFIX)?).ok()?;
        Some(Outbound::released(value, r))
    }

    /// Releases (or recalls) one OpenDP figure and records it.
    fn release<T: serde::Serialize + serde::de::DeserializeOwned>(
        &mut self,
        mechanism: Mechanism,
        epsilon: Epsilon,
        make: impl FnOnce(Epsilon, &mut ReleaseNoise) -> Result<releases::Release<T>, releases::ReleaseError>,
    ) -> Result<Outbound<T>, ClientError> {
        if let Some(value) = self.earlier_release(mechanism) {
            return Ok(value);
        }
        self.check_budget(mechanism, epsilon)?;
        let released = make(epsilon, &mut self.release_noise)
            .map_err(|e| ClientError::Local(format!("DP release failed: {e}")))?;
        let value_json = serde_json::to_string(&released.value).map_err(|e| ClientError::Local(e.to_string()))?;
        let draft = RecordBody {
            epsilon_spent: Some(released.epsilon.get()),
            sample_rate: 0.0,
            noise_multiplier: 0.0,
            clip_norm: 0.0,
            note: format!("{RELEASED_PREFIX}{value_json}"),
            ..self.draft(mechanism, None)?
        };
        let record = self.record(draft)?;
        Ok(Outbound::released(released.value, &record))
    }

    /// The same budget check as a DP-SGD round, before anything is computed from the data: a pure-ε release
    /// of `epsilon` must keep the node within its budget.
    ///
    /// # Errors
    /// [`ClientError::Policy`] naming the release, the ε it would bring and the budget.
    fn check_budget(&mut self, mechanism: Mechanism, epsilon: Epsilon) -> Result<(), ClientError> {
        let (delta, budget) = (self.privacy.delta, self.privacy.epsilon_budget);
        let records = self.state()?.ledger.records();
        let would_be = cumulative_epsilon(records, Some(PrivacyEvent::PureEpsilon(epsilon.get())), delta)?;
        if would_be > budget {
            let spent = cumulative_epsilon(records, None, delta)?;
            return Err(ClientError::Policy(format!(
                "privacy budget: the {mechanism:?} release (ε = {}) would bring ε to {would_be:.4}, above this node's budget \
                 of {budget} (spent {spent:.4}); nothing was released",
                epsilon.get()
            )));
        }
        Ok(())
    }

    /// Releases DP feature statistics (mean, robust min and max, missing rate) of the raw training columns
    /// against the federation's declared bounds with budget `epsilon`, records them, and returns a warning for
    /// every column whose robust minimum or maximum sits at a declared bound: about 1% or more of its values are
    /// at or beyond it, which usually means other units or a different coding than the federation's.
    fn check_features(
        &mut self,
        data: &LocalData,
        bounds: &[[f64; 2]],
        epsilon: f64,
    ) -> Result<Vec<String>, ClientError> {
        let declared = bounds
            .iter()
            .map(|[lo, hi]| releases::ColumnBounds::new(*lo, *hi))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Local(format!("schema bounds: {e}")))?;
        let epsilon =
            Epsilon::new(epsilon).map_err(|e| ClientError::Local(format!("privacy.feature_stats_epsilon: {e}")))?;
        let (train, std) = (&data.train, &data.standardizer);
        let columns: Vec<Vec<Option<f64>>> = (0..train.dims)
            .map(|c| {
                let (mean, scale) = (f64::from(std.mean[c]), f64::from(std.std[c]));
                train.features.chunks_exact(train.dims).map(|row| Some(f64::from(row[c]) * scale + mean)).collect()
            })
            .collect();
        // The statistics stay on the node: they only decide which warnings to log.
        let stats: Outbound<Vec<releases::ColumnStats>> =
            self.release(Mechanism::OpenDpFeatureStats, epsilon, |eps, _| {
                releases::feature_statistics(&columns, &declared, eps, releases::StatsOptions::default())
            })?;
        let names = &self.state()?.schema.features;
        Ok(names
            .iter()
            .zip(stats.get())
            .zip(bounds)
            .filter(|((_, s), [lo, hi])| s.min <= *lo || s.max >= *hi)
            .map(|((name, s), [lo, hi])| {
                format!(
                    "column {name:?}: about 1% or more of its values lie at or beyond the federation's declared range \
                     [{lo}, {hi}] (DP robust min {:.4}, max {:.4}); check its units and coding",
                    s.min, s.max
                )
            })
            .collect())
    }
}

/// Prefix of the note of an OpenDP release record; the released value follows as JSON.
const RELEASED_PREFIX: &str = "released ";

/// What a DP evaluation record keeps: the model it evaluated and what it released, a noisy confusion matrix
/// (classification) or noisy clipped sums (regression).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct EvaluationRelease {
    model_sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    confusion: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    regression_sums: Vec<i64>,
}

/// The DP evaluation a task gets.
#[derive(Debug, Clone, Copy)]
enum EvaluationQuery {
    /// A `classes × classes` confusion matrix.
    Confusion { classes: usize },
    /// Clipped sums against the declared target range.
    RegressionSums { label_bounds: [f64; 2] },
}

impl EvaluationQuery {
    /// The query for `spec`'s task, or `None` for a regression task whose schema declares no target range.
    fn of(spec: &ModelSpec, schema: &cohort_core::config::Schema) -> Option<Self> {
        match spec.task {
            TaskKind::Regression => schema.label_bounds.map(|label_bounds| Self::RegressionSums { label_bounds }),
            TaskKind::Binary | TaskKind::Multiclass => Some(Self::Confusion { classes: spec.outputs() }),
        }
    }

    /// Runs the release on the held-out rows. No held-out rows release like any other (a confusion matrix of
    /// zeros, or empty sums): the coordinator cannot tell it from a small split beyond what the noise allows.
    fn release(
        self,
        spec: &ModelSpec,
        params: &[f32],
        holdout: &crate::data::Dataset,
        model_sha256: &str,
        epsilon: Epsilon,
        noise: &mut ReleaseNoise,
    ) -> Result<EvaluationRelease, ClientError> {
        let failed = |e: releases::ReleaseError| ClientError::Local(format!("DP release failed: {e}"));
        let outputs = if holdout.rows() == 0 {
            Vec::new()
        } else {
            trainer::predict(spec, params, holdout).map_err(|e| ClientError::Training(e.to_string()))?
        };
        let mut released = EvaluationRelease {
            model_sha256: model_sha256.to_owned(),
            confusion: Vec::new(),
            regression_sums: Vec::new(),
        };
        match self {
            Self::Confusion { classes } => {
                let cells = if outputs.is_empty() {
                    Vec::new()
                } else {
                    metrics::confusion_cells(&outputs, classes, &holdout.class_ids())
                        .map_err(|e| ClientError::Training(e.to_string()))?
                };
                released.confusion =
                    releases::label_histogram(&cells, classes * classes, epsilon, noise).map_err(failed)?.value;
            }
            Self::RegressionSums { label_bounds } => {
                let rows: Vec<Vec<i64>> = outputs
                    .iter()
                    .zip(&holdout.targets)
                    .map(|(p, t)| regression_sums::contribution(*p, *t, label_bounds).to_vec())
                    .collect();
                released.regression_sums =
                    releases::clipped_sums(&rows, &regression_sums::CAPS, epsilon, noise).map_err(failed)?.value;
            }
        }
        Ok(released)
    }

    /// The metrics derived from a release (post-processing: spends nothing).
    fn metrics(self, released: &EvaluationRelease) -> Result<EvalMetrics, ClientError> {
        match self {
            Self::Confusion { classes } => metrics::from_confusion(&released.confusion, classes),
            Self::RegressionSums { label_bounds } => regression_sums::metrics(&released.regression_sums, label_bounds),
        }
        .map_err(|e| ClientError::Local(e.to_string()))
    }
}

impl LocalWork for PrivateWork {
    fn prepare(&mut self, plan: &FederationPlan, data: &LocalData) -> Result<(), ClientError> {
        if plan.schema.bounds.is_none() {
            return Err(ClientError::Policy(
                "DP-SGD needs the federation schema to declare feature bounds (schema.bounds): without them each node \
                 standardizes its features with its own exact means and deviations, so one record moves every other \
                 record's features and DP-SGD's per-record guarantee fails. Ask the coordinator's operator to declare \
                 [schema] bounds, or turn privacy off on this node ([privacy] enabled = false)"
                    .into(),
            ));
        }
        // Every share of the budget must fit, now that the federation's round count is known.
        self.privacy.check_shares_for(Some(plan.training.rounds)).map_err(|e| ClientError::Policy(e.to_string()))?;
        let ledger = Ledger::open(&self.data_dir)
            .map_err(|e| ClientError::Local(format!("privacy ledger in {}: {e}", self.data_dir.display())))?;
        self.state = Some(State {
            plan: plan.clone(),
            spec: plan.model.clone(),
            schema: plan.schema.clone(),
            data: data.clone(),
            schedule: None,
            noisy_examples: None,
            ledger,
            reported: 0,
        });
        Ok(())
    }

    fn participate(&mut self, round: Round, _settings: &TrainSettings) -> Result<Participation, ClientError> {
        let (delta, budget) = (self.privacy.delta, self.privacy.epsilon_budget);
        let s = self.state()?;
        let schedule = s.schedule()?;
        let next = PrivacyEvent::SampledGaussian {
            q: schedule.sample_rate,
            sigma: schedule.noise_multiplier,
            steps: schedule.steps_per_round,
        };
        let spent = cumulative_epsilon(s.ledger.records(), None, delta)?;
        let would_be = cumulative_epsilon(s.ledger.records(), Some(next), delta)?;
        if would_be <= budget {
            return Ok(Participation::Train);
        }
        let reason = format!(
            "privacy budget: round {round} would bring ε to {would_be:.4}, above this node's budget of {budget} (spent {spent:.4})"
        );
        let record =
            self.record(RecordBody { note: reason.clone(), ..self.draft(Mechanism::Decline, Some(round))? })?;
        // The decline travels with the decline message, so it is not repeated in the next report.
        if let Some(s) = self.state.as_mut() {
            s.reported = s.ledger.records().len();
        }
        Ok(Participation::Decline { reason, record: Some(Box::new(record)) })
    }

    fn refuse(&mut self, round: Option<Round>, reason: &str) -> Result<Option<LedgerRecord>, ClientError> {
        if self.state.is_none() {
            // Refused before the node loaded its data (for example a plaintext federation at join): the record
            // names no data set.
            let mut ledger = Ledger::open(&self.data_dir)
                .map_err(|e| ClientError::Local(format!("privacy ledger in {}: {e}", self.data_dir.display())))?;
            let cumulative_epsilon = cumulative_epsilon(ledger.records(), None, self.privacy.delta)?;
            let record = ledger
                .append(RecordBody {
                    note: reason.to_owned(),
                    round: round.map(|r| r.0),
                    delta: self.privacy.delta,
                    epsilon_budget: self.privacy.epsilon_budget,
                    cumulative_epsilon,
                    ..RecordBody::new(&self.name, "", Mechanism::Decline)
                })
                .map_err(|e| ClientError::Local(format!("cannot write the privacy ledger: {e}")))?;
            return Ok(Some(record));
        }
        let record = self.record(RecordBody { note: reason.to_owned(), ..self.draft(Mechanism::Decline, round)? })?;
        if let Some(s) = self.state.as_mut() {
            s.reported = s.ledger.records().len();
        }
        Ok(Some(record))
    }

    fn train(&mut self, round: Round, global: &[f32], settings: &TrainSettings) -> Result<TrainOutcome, ClientError> {
        let schedule = self.state()?.schedule()?;
        let bad = |e: &dyn std::fmt::Display| ClientError::Local(format!("DP-SGD settings: {e}"));
        let config = DpSgdConfig {
            clip_norm: ClipNorm::new(schedule.clip_norm as f32).map_err(|e| bad(&e))?,
            noise_multiplier: NoiseMultiplier::new(schedule.noise_multiplier).map_err(|e| bad(&e))?,
            sample_rate: SampleRate::new(schedule.sample_rate).map_err(|e| bad(&e))?,
            learning_rate: settings.learning_rate,
            length: TrainingLength::Steps(schedule.steps_per_round),
        };
        // Charged before any step touches the data: a run that fails part-way (divergence, a stopped noise
        // worker, a crash) is over-counted, never under-counted.
        let charged =
            self.record(RecordBody { steps: schedule.steps_per_round, ..self.draft(Mechanism::DpSgd, Some(round))? })?;
        let s = self
            .state
            .as_ref()
            .ok_or_else(|| ClientError::Local("training requested before the node joined".into()))?;
        let out =
            trainer::train_dp(&s.spec, global, &s.data.train, &config, settings.proximal_mu, &mut self.randomness)
                .map_err(|e| {
                    ClientError::Training(format!("{e} (the round's privacy spend is already in the ledger)"))
                })?;
        // The FedAvg weight is the released noisy count, never the exact one.
        let examples = s
            .noisy_examples
            .clone()
            .ok_or_else(|| ClientError::Local("the FedAvg weight is released at join, before training".into()))?;
        // The training loss is data-dependent and not differentially private: it stays on the node.
        Ok(TrainOutcome { params: Outbound::released(out.params, &charged), train_loss: None, examples })
    }

    fn evaluate(&mut self, params: &[f32]) -> Result<EvalMetrics, ClientError> {
        let s = self.state()?;
        trainer::evaluate(&s.spec, params, &s.data.holdout).map_err(|e| ClientError::Training(e.to_string()))
    }

    /// The DP evaluation of `version`, recorded in the ledger and charged to the budget (ε =
    /// `privacy.evaluation_epsilon`), and the metrics derived from it: for classification a noisy confusion matrix
    /// of the held-out rows (OpenDP histogram), for regression noisy clipped sums of errors and targets against
    /// the schema's `label_bounds` ([`cohort_core::metrics::regression_sums`]). A version is evaluated at most
    /// once: asked again for the same model, the node repeats its release without spending; asked again with
    /// another model under the same version, it refuses. Over budget, or for a regression task without declared
    /// label bounds, it reports nothing.
    fn release_evaluation(
        &mut self,
        version: ModelVersion,
        model_sha256: &str,
        params: &[f32],
        _exact: &EvalMetrics,
    ) -> Result<Outbound<EvalMetrics>, ClientError> {
        let nothing = Outbound::data_free(EvalMetrics { examples: 0, values: Default::default() });
        let s = self.state()?;
        let Some(query) = EvaluationQuery::of(&s.spec, &s.schema) else {
            tracing::warn!(node = %self.name, version = version.0, "reporting no evaluation: a DP evaluation of a regression task needs the federation schema to declare label_bounds");
            return Ok(nothing);
        };
        let earlier = s.ledger.records().iter().rev().find(|r| {
            r.body.mechanism == Mechanism::OpenDpEvaluation
                && r.body.round == Some(version.0)
                && r.body.dataset_fingerprint == s.data.fingerprint
        });
        if let Some(r) = earlier {
            let released: EvaluationRelease =
                r.body.note.strip_prefix(RELEASED_PREFIX).and_then(|json| serde_json::from_str(json).ok()).ok_or_else(
                    || ClientError::Local(format!("ledger record {} holds no evaluation release", r.body.seq)),
                )?;
            if released.model_sha256 != model_sha256 {
                return Err(ClientError::Policy(format!(
                    "refusing to evaluate model version {version} again with another model (sha256 {model_sha256}, \
                     evaluated {}): a node evaluates each version once",
                    released.model_sha256
                )));
            }
            return Ok(Outbound::released(query.metrics(&released)?, r));
        }
        let rounds = s.plan.training.rounds;
        let epsilon = Epsilon::new(self.privacy.evaluation_epsilon_for(rounds))
            .map_err(|e| ClientError::Local(format!("privacy.evaluation_epsilon: {e}")))?;
        if let Err(e) = self.check_budget(Mechanism::OpenDpEvaluation, epsilon) {
            tracing::warn!(node = %self.name, version = version.0, "reporting no evaluation: {e}");
            return Ok(nothing);
        }
        let s = self.state.as_ref().ok_or_else(|| ClientError::Local("the node has not joined".into()))?;
        let released =
            query.release(&s.spec, params, &s.data.holdout, model_sha256, epsilon, &mut self.release_noise)?;
        let note = serde_json::to_string(&released).map_err(|e| ClientError::Local(e.to_string()))?;
        let draft = RecordBody {
            epsilon_spent: Some(epsilon.get()),
            sample_rate: 0.0,
            noise_multiplier: 0.0,
            clip_norm: 0.0,
            note: format!("{RELEASED_PREFIX}{note}"),
            ..self.draft(Mechanism::OpenDpEvaluation, Some(Round(version.0)))?
        };
        let record = self.record(draft)?;
        Ok(Outbound::released(query.metrics(&released)?, &record))
    }

    fn take_ledger_records(&mut self) -> Vec<LedgerRecord> {
        let Some(s) = self.state.as_mut() else { return Vec::new() };
        let fresh = s.ledger.records()[s.reported..].to_vec();
        s.reported = s.ledger.records().len();
        fresh
    }

    fn join_releases(&mut self, data: &LocalData) -> Result<JoinReleases, ClientError> {
        let rows = data.train.rows();
        let epsilon = Epsilon::new(self.privacy.release_epsilon)
            .map_err(|e| ClientError::Local(format!("privacy.release_epsilon: {e}")))?;
        let count = self.release(Mechanism::OpenDpCount, epsilon, |eps, noise| {
            releases::noisy_count(rows, eps, noise).map(|r| releases::Release {
                value: vec![r.value],
                epsilon: r.epsilon,
                mechanism: r.mechanism,
            })
        })?;
        let spec = &self.state()?.spec;
        let label_histogram = match spec.task {
            TaskKind::Regression => Outbound::data_free(Vec::new()),
            TaskKind::Binary | TaskKind::Multiclass => {
                let (labels, classes) = (data.train.class_ids(), spec.outputs());
                self.release(Mechanism::OpenDpHistogram, epsilon, |eps, noise| {
                    releases::label_histogram(&labels, classes, eps, noise)
                })?
            }
        };
        if let (Some(bounds), Some(epsilon)) = (self.state()?.schema.bounds.clone(), self.privacy.feature_stats_epsilon)
        {
            for warning in self.check_features(data, &bounds, epsilon)? {
                tracing::warn!(node = %self.name, "{warning}");
            }
        }
        // Clamping the noisy count to at least 1 is post-processing, and so is everything planned from it: the
        // FedAvg weight, q = B/n and the step count.
        let noisy = count.map(|c| c.first().map_or(1, |c| (*c).max(1) as u64));
        let privacy = self.privacy.clone();
        let s = self.state.as_mut().ok_or_else(|| ClientError::Local("the node has not joined".into()))?;
        let schedule = DpSchedule::plan(&privacy, &s.plan, *noisy.get() as usize)?;
        tracing::info!(node = %self.name, q = schedule.sample_rate, sigma = schedule.noise_multiplier, steps = schedule.steps_per_round, "DP-SGD schedule (from the noisy example count)");
        s.schedule = Some(schedule);
        s.noisy_examples = Some(noisy.clone());
        Ok(JoinReleases { examples: noisy.map(|n| n as f64), label_histogram })
    }

    fn resend_ledger(&mut self) {
        if let Some(s) = self.state.as_mut() {
            s.reported = 0;
        }
    }

    fn public_keys(&self) -> (Vec<u8>, Vec<u8>) {
        match Ledger::open(&self.data_dir) {
            Ok(ledger) => (ledger.public_key_bytes().to_vec(), Vec::new()),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::config::{Schema, SecureAggregationSection, StrategyConfig, TrainingSection};

    fn plan() -> FederationPlan {
        let schema = Schema {
            features: vec!["x".into(), "z".into()],
            label: "y".into(),
            task: TaskKind::Binary,
            classes: None,
            bounds: Some(vec![[-50.0, 50.0], [-50.0, 50.0]]),
            label_bounds: None,
        };
        FederationPlan {
            federation_id: "f".into(),
            model_name: "m".into(),
            model: ModelSpec::new(2, &[], 2, TaskKind::Binary).unwrap(),
            schema,
            training: TrainingSection {
                rounds: 2,
                local_epochs: 1,
                learning_rate: 0.1,
                batch_size: 8,
                min_clients: 1,
                round_deadline_secs: 10,
                clients_per_round: None,
                max_round_failures: 5,
            },
            strategy: StrategyConfig::Fedavg,
            secure_aggregation: SecureAggregationSection::default(),
            influence: cohort_core::config::InfluenceSection::default(),
        }
    }

    fn data(dir: &std::path::Path, plan: &FederationPlan) -> LocalData {
        data_with_secret(dir, plan, 7)
    }

    /// A worker with default privacy settings that has joined: prepared and its join releases made.
    fn joined_worker() -> (tempfile::TempDir, FederationPlan, LocalData, PrivateWork) {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan();
        let local = data(dir.path(), &plan);
        let mut work = PrivateWork::new("h", dir.path().join("state"), PrivacySection::default());
        work.prepare(&plan, &local).unwrap();
        work.join_releases(&local).unwrap();
        (dir, plan, local, work)
    }

    /// The same rows under another node secret: another (salted) fingerprint, so another data set to the ledger.
    fn data_with_secret(dir: &std::path::Path, plan: &FederationPlan, secret: u8) -> LocalData {
        let csv = dir.join("d.csv");
        let rows: Vec<String> = (0..60).map(|i| format!("{},{},{}", i % 7, (i * 3) % 5, i % 2)).collect();
        std::fs::write(&csv, format!("x,z,y\n{}\n", rows.join("\n"))).unwrap();
        crate::data::prepare(&csv, &plan.schema, 0.2, 0, &cohort_core::secret::NodeSecret::from_bytes([secret; 32]))
            .unwrap()
    }

    #[test]
    fn releases_are_recorded_once_and_the_ledger_is_resent_on_a_new_session() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan();
        let local = data(dir.path(), &plan);
        let privacy = PrivacySection::default();
        let mut work = PrivateWork::new("h", dir.path().join("state"), privacy.clone());
        work.prepare(&plan, &local).unwrap();
        let first = work.join_releases(&local).unwrap();
        assert_eq!(first.label_histogram.get().len(), 2);
        // A rejoin reports the same figures without spending again.
        assert_eq!(work.join_releases(&local).unwrap(), first);
        assert_eq!(work.take_ledger_records().len(), 2);
        assert!(work.take_ledger_records().is_empty());
        // Two pure releases compose (PLD, as randomized response) to at most the sum of their ε, and not much less.
        let spent = work.spent().unwrap();
        assert!(spent <= 2.0 * privacy.release_epsilon && spent > 0.099, "{spent}");
        // A new session resends everything (the coordinator skips what it has).
        work.resend_ledger();
        assert_eq!(work.take_ledger_records().len(), 2);
    }

    /// DP-SGD refuses a schema without declared bounds: local standardization would let one record move every
    /// other record's features.
    #[test]
    fn local_standardization_under_dp_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = plan();
        let local = data(dir.path(), &plan);
        plan.schema.bounds = None;
        let mut work = PrivateWork::new("h", dir.path().join("state"), PrivacySection::default());
        let err = work.prepare(&plan, &local).unwrap_err();
        assert!(matches!(err, ClientError::Policy(_)), "{err:?}");
        assert!(err.to_string().contains("schema.bounds") && err.to_string().contains("standardizes"), "{err}");
    }

    /// A round is charged before its first step: a run that fails is in the ledger all the same.
    #[test]
    fn a_failed_run_is_charged() {
        let (_dir, _plan, _local, mut work) = joined_worker();
        let before = work.spent().unwrap();
        let settings =
            TrainSettings { local_epochs: 1, learning_rate: 0.1, batch_size: 8, proximal_mu: None, secure: None };
        // A global model of the wrong shape makes training fail after the charge.
        let err = work.train(Round(1), &[0.0; 3], &settings).unwrap_err();
        assert!(err.to_string().contains("already in the ledger"), "{err}");
        let records = work.take_ledger_records();
        assert_eq!(records.last().unwrap().body.mechanism, Mechanism::DpSgd);
        assert!(work.spent().unwrap() > before);
    }

    /// A version is evaluated once: asked again for the same model the node repeats its release without spending;
    /// asked with another model under the same version it refuses.
    #[test]
    fn a_second_evaluation_of_the_same_version_is_refused() {
        let (_dir, plan, _local, mut work) = joined_worker();
        let params = plan.model.initial_parameters(&mut rand::rng()).unwrap();
        let exact = work.evaluate(&params).unwrap();
        let first = work.release_evaluation(ModelVersion(1), "aa", &params, &exact).unwrap();
        let spent = work.spent().unwrap();
        assert_eq!(work.release_evaluation(ModelVersion(1), "aa", &params, &exact).unwrap(), first);
        assert_eq!(work.spent().unwrap(), spent, "a repeated evaluation spends nothing");
        let err = work.release_evaluation(ModelVersion(1), "bb", &params, &exact).unwrap_err();
        assert!(matches!(err, ClientError::Policy(_)) && err.to_string().contains("once"), "{err}");
        let evaluations =
            work.take_ledger_records().iter().filter(|r| r.body.mechanism == Mechanism::OpenDpEvaluation).count();
        assert_eq!(evaluations, 1);
    }

    /// A regression task's DP evaluation is a charged, recorded release of clipped sums against the declared
    /// target range, and its metrics follow the exact ones at a large ε; without declared label bounds the node
    /// reports nothing and spends nothing.
    #[test]
    fn a_regression_evaluation_is_a_charged_release_of_clipped_sums() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = plan();
        plan.schema.task = TaskKind::Regression;
        plan.model = ModelSpec::new(2, &[], 1, TaskKind::Regression).unwrap();
        let csv = dir.path().join("r.csv");
        let rows: Vec<String> =
            (0..400).map(|i| format!("{},{},{}", i % 7, (i * 3) % 5, (i % 7) * 2 + (i % 3))).collect();
        std::fs::write(&csv, format!("x,z,y\n{}\n", rows.join("\n"))).unwrap();
        let secret = cohort_core::secret::NodeSecret::from_bytes([3; 32]);
        let local = crate::data::prepare(&csv, &plan.schema, 0.5, 0, &secret).unwrap();
        let params = [0.1f32, 0.2, 5.0];
        let privacy = PrivacySection {
            epsilon_budget: 1000.0,
            target_epsilon: Some(1.0),
            evaluation_epsilon: Some(200.0),
            ..PrivacySection::default()
        };

        let mut unbounded = PrivateWork::new("h", dir.path().join("a"), privacy.clone());
        unbounded.prepare(&plan, &local).unwrap();
        unbounded.join_releases(&local).unwrap();
        let spent = unbounded.spent().unwrap();
        let exact = unbounded.evaluate(&params).unwrap();
        let released = unbounded.release_evaluation(ModelVersion(1), "aa", &params, &exact).unwrap();
        assert!(released.get().values.is_empty(), "{released:?}");
        assert_eq!(released.basis(), crate::outbound::Basis::DataFree);
        assert_eq!(unbounded.spent().unwrap(), spent);

        plan.schema.label_bounds = Some([-5.0, 25.0]);
        let mut work = PrivateWork::new("h", dir.path().join("b"), privacy);
        work.prepare(&plan, &local).unwrap();
        work.join_releases(&local).unwrap();
        let spent = work.spent().unwrap();
        let released = work.release_evaluation(ModelVersion(1), "aa", &params, &exact).unwrap();
        assert!(work.spent().unwrap() > spent, "the release is charged");
        for name in ["mse", "mae", "r2", "loss"] {
            let (r, e) = (released.get().get(name).unwrap(), exact.get(name).unwrap());
            assert!((r - e).abs() < 0.05 * e.abs().max(1.0), "{name}: released {r}, exact {e}");
        }
        // Asked again, the same figures without spending.
        let spent = work.spent().unwrap();
        assert_eq!(work.release_evaluation(ModelVersion(1), "aa", &params, &exact).unwrap(), released);
        assert_eq!(work.spent().unwrap(), spent);
        let record = work.take_ledger_records().into_iter().find(|r| r.body.mechanism == Mechanism::OpenDpEvaluation);
        assert!(record.unwrap().body.note.contains("regression_sums"));
    }

    /// A node without held-out rows cannot evaluate exactly, but still makes its DP evaluation release (of an
    /// all-zero confusion matrix), charged and recorded like any other, so its report looks like everyone's.
    #[test]
    fn a_node_without_held_out_rows_still_releases_a_charged_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan();
        let mut local = data(dir.path(), &plan);
        local.holdout = crate::data::Dataset { features: Vec::new(), targets: Vec::new(), dims: local.holdout.dims };
        let mut work = PrivateWork::new("h", dir.path().join("state"), PrivacySection::default());
        work.prepare(&plan, &local).unwrap();
        work.join_releases(&local).unwrap();
        let params = plan.model.initial_parameters(&mut rand::rng()).unwrap();
        assert!(matches!(work.evaluate(&params), Err(ClientError::Training(_))));
        let before = work.spent().unwrap();
        let nothing = EvalMetrics { examples: 0, values: Default::default() };
        let released = work.release_evaluation(ModelVersion(1), "aa", &params, &nothing).unwrap();
        assert!(matches!(released.basis(), crate::outbound::Basis::Released { .. }), "{released:?}");
        assert!(work.spent().unwrap() > before, "the release is charged");
        let evaluations =
            work.take_ledger_records().iter().filter(|r| r.body.mechanism == Mechanism::OpenDpEvaluation).count();
        assert_eq!(evaluations, 1);
    }

    /// A join release that would overspend is refused before anything is computed, and nothing is recorded.
    #[test]
    fn over_budget_join_releases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan();
        let local = data(dir.path(), &plan);
        // The shares fit the budget (0.1 of releases, 0.002 of evaluations, out of 0.15), but the ledger already
        // spent 0.1 on another data set: the second data set's count fits, its histogram does not.
        let privacy = PrivacySection {
            epsilon_budget: 0.15,
            noise_multiplier: Some(1.0),
            evaluation_epsilon: Some(0.001),
            ..PrivacySection::default()
        };
        let mut work = PrivateWork::new("h", dir.path().join("state"), privacy);
        work.prepare(&plan, &local).unwrap();
        work.join_releases(&local).unwrap();
        let other = data_with_secret(dir.path(), &plan, 8);
        work.prepare(&plan, &other).unwrap();
        let err = work.join_releases(&other).unwrap_err();
        assert!(matches!(err, ClientError::Policy(_)), "{err:?}");
        assert!(err.to_string().contains("above this node's budget of 0.15"), "{err}");
        // The first data set's two releases and the second's count were recorded; the refused histogram left
        // nothing behind.
        let records = work.take_ledger_records();
        assert_eq!(records.len(), 3, "{records:?}");
        assert!(work.spent().unwrap() <= 0.15);
    }

    #[test]
    fn feature_statistics_flag_a_column_outside_the_declared_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = plan();
        // x takes values 0..6, well inside its range; z takes 0..4, far beyond its declared [-1, 1].
        plan.schema.bounds = Some(vec![[-50.0, 50.0], [-1.0, 1.0]]);
        let local = data(dir.path(), &plan);
        let privacy = PrivacySection {
            feature_stats_epsilon: Some(200.0),
            epsilon_budget: 1000.0,
            target_epsilon: Some(1.0),
            ..PrivacySection::default()
        };
        let mut work = PrivateWork::new("h", dir.path().join("state"), privacy);
        work.prepare(&plan, &local).unwrap();
        let warnings = work.check_features(&local, &[[-50.0, 50.0], [-1.0, 1.0]], 200.0).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"z\""), "{warnings:?}");
        // The release is one ledger record with its ε, and the join reports it only once.
        work.join_releases(&local).unwrap();
        let kinds: Vec<Mechanism> = work.take_ledger_records().iter().map(|r| r.body.mechanism).collect();
        assert_eq!(kinds, [Mechanism::OpenDpFeatureStats, Mechanism::OpenDpCount, Mechanism::OpenDpHistogram]);
        let spent = work.spent().unwrap();
        assert!((200.0 - 1e-6..=200.0 + 0.1 + 1e-9).contains(&spent), "{spent}");
    }
}

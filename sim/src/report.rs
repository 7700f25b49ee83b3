//! What a simulation reports: per round, per round × client, each client's share of the data, and the
//! settings, for people (`report.html`), spreadsheets (`metrics.csv`) and programs (`summary.json`).

use crate::conditions::Conditions;
use crate::link::Missed;
use crate::network::Mark;
use crate::simulation::{Simulation, Transport};
use crate::work::Observation;
use cohort_coordinator::RunReport;
use cohort_coordinator::round::RoundSummary;
use cohort_core::config::StrategyConfig;
use cohort_core::metrics::{EvalMetrics, PrimaryMetric, weighted_aggregate};
use cohort_core::model::{TaskKind, parameters_sha256};
use cohort_core::{ModelVersion, Round};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One client's share of the data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClientPartition {
    /// The node's name.
    pub name: String,
    /// Rows per label (class, or quantile bin of a regression target), before the split.
    pub labels: Vec<usize>,
    /// The client's training rows, as indices into the data set in increasing order (to replay the partition
    /// elsewhere).
    pub train: Vec<usize>,
    /// Its held-out rows, likewise.
    pub holdout: Vec<usize>,
}

/// One client's exact evaluation of one round's model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClientRound {
    /// The round.
    pub round: u64,
    /// The client.
    pub client: String,
    /// Held-out rows evaluated.
    pub holdout_rows: u64,
    /// Exact metrics.
    pub metrics: BTreeMap<String, f64>,
    /// The client's cumulative ε after this round (None without DP).
    pub epsilon: Option<f64>,
}

/// One round of the federation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundRow {
    /// The round.
    pub round: u64,
    /// The model version it produced.
    pub version: u64,
    /// Clients whose updates went into the model.
    pub contributors: usize,
    /// Exact metrics pooled over every evaluating client's held-out rows (the simulator's view).
    pub exact: BTreeMap<String, f64>,
    /// What the federation itself measured: the clients' released evaluations pooled by the coordinator (DP
    /// releases under DP, hence noisy).
    pub federated: BTreeMap<String, f64>,
    /// The primary metric per evaluating client, sorted (for the spread).
    pub client_scores: Vec<f64>,
    /// The largest cumulative ε of any client after the round (None without DP).
    pub max_epsilon: Option<f64>,
    /// The simulated time its model was aggregated at, in seconds since the start (None in real time).
    pub simulated_seconds: Option<f64>,
    /// Selected clients that dropped out of it (in every attempt at it).
    pub dropped: usize,
    /// Messages of it that arrived after their deadline and were refused (stragglers).
    pub late: usize,
}

/// An attempt at a round that closed without enough updates; the federation retried it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailedAttempt {
    /// The round.
    pub round: u64,
    /// Updates it got.
    pub updates: usize,
    /// Updates it needed.
    pub required: usize,
    /// When it failed, in simulated seconds since the start.
    pub simulated_seconds: f64,
}

/// What happened on the virtual clock: the rounds' moments and the clients' missed messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timeline {
    pub(crate) marks: Vec<(Duration, Mark)>,
    pub(crate) misses: Vec<(Round, usize, Missed)>,
}

/// What a simulation did, for people (`report.html`), spreadsheets (`metrics.csv`) and programs
/// (`summary.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SimulationReport {
    /// The settings.
    pub settings: SimulationSettings,
    /// The primary metric's name (`accuracy`, or `r2` for regression).
    pub primary_metric: String,
    /// Per round.
    pub rounds: Vec<RoundRow>,
    /// Per round × client.
    pub client_rounds: Vec<ClientRound>,
    /// Each client's share of the data.
    pub partitions: Vec<ClientPartition>,
    /// Each client's final ε (None without DP), in client order.
    pub epsilon: Vec<Option<f64>>,
    /// SHA-256 of the final model's parameters.
    pub model_sha256: String,
    /// The final model version.
    pub model_version: u64,
    /// Wall-clock seconds of the whole run, set-up included.
    pub wall_seconds: f64,
    /// How long the federation took in simulated time, in seconds (None in real time, over mTLS).
    pub simulated_seconds: Option<f64>,
    /// Round attempts that failed and were retried.
    pub failed_attempts: Vec<FailedAttempt>,
    /// Whether a seed made the run reproducible, and therefore NOT private.
    pub insecure_seed: bool,
    /// Where the federation's files were kept (None when they were in a removed temporary directory).
    pub work_dir: Option<PathBuf>,
}

/// The settings a report echoes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SimulationSettings {
    /// The data set.
    pub dataset: String,
    /// Clients.
    pub clients: usize,
    /// Rounds.
    pub rounds: u64,
    /// Clients per round (None: all).
    pub clients_per_round: Option<usize>,
    /// The strategy, as configured.
    pub strategy: StrategyConfig,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// The partition.
    pub partition: String,
    /// ε budget per client (None: no DP).
    pub epsilon: Option<f64>,
    /// Secure aggregation.
    pub secure_aggregation: bool,
    /// The seed.
    pub seed: Option<u64>,
    /// The transport.
    pub transport: Transport,
    /// The clients' machines, links and dropouts.
    pub conditions: Conditions,
    /// The round deadline, in seconds.
    pub round_deadline_secs: u64,
    /// The fewest updates a round needed.
    pub min_clients: usize,
}

impl SimulationReport {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        sim: &Simulation,
        task: TaskKind,
        names: &[String],
        partitions: Vec<ClientPartition>,
        run: &RunReport,
        mut observations: Vec<Observation>,
        timeline: Option<Timeline>,
        epsilon: Vec<Option<f64>>,
        wall_seconds: f64,
        work_dir: Option<PathBuf>,
    ) -> Self {
        let primary = PrimaryMetric::for_task(task).name().to_owned();
        observations.sort_by_key(|o| (o.version, o.client));
        let mut by_version: BTreeMap<ModelVersion, Vec<&Observation>> = BTreeMap::new();
        for o in &observations {
            by_version.entry(o.version).or_default().push(o);
        }
        let round_of: BTreeMap<ModelVersion, &RoundSummary> = run.history.iter().map(|s| (s.version, s)).collect();
        let timeline = timeline.as_ref();
        let seconds = |d: &Duration| d.as_secs_f64();
        let aggregated: BTreeMap<Round, f64> = timeline
            .into_iter()
            .flat_map(|t| &t.marks)
            .filter_map(|(at, m)| match m {
                Mark::Aggregated(round) => Some((*round, seconds(at))),
                _ => None,
            })
            .collect();
        // Counted once, not scanned once per round.
        let mut misses: BTreeMap<(Round, Missed), usize> = BTreeMap::new();
        for (round, _, kind) in timeline.into_iter().flat_map(|t| &t.misses) {
            *misses.entry((*round, *kind)).or_default() += 1;
        }
        let missed = |round: Round, kind: Missed| misses.get(&(round, kind)).copied().unwrap_or(0);
        let mut rounds = Vec::new();
        let mut client_rounds = Vec::new();
        for summary in &run.history {
            let seen = by_version.get(&summary.version).map(Vec::as_slice).unwrap_or_default();
            let slices: Vec<(String, EvalMetrics)> =
                seen.iter().map(|o| (names[o.client].clone(), o.metrics.clone())).collect();
            let mut client_scores: Vec<f64> =
                seen.iter().filter_map(|o| o.metrics.values.get(&primary).copied()).collect();
            client_scores.sort_by(f64::total_cmp);
            rounds.push(RoundRow {
                round: summary.round.0,
                version: summary.version.0,
                contributors: summary.contributors.len(),
                exact: weighted_aggregate(&slices).map(|m| m.values).unwrap_or_default(),
                federated: summary.metrics.as_ref().map(|m| m.values.clone()).unwrap_or_default(),
                client_scores,
                max_epsilon: seen.iter().filter_map(|o| o.epsilon).reduce(f64::max),
                simulated_seconds: aggregated.get(&summary.round).copied(),
                dropped: missed(summary.round, Missed::Dropped),
                late: missed(summary.round, Missed::Late),
            });
        }
        drop(by_version);
        for o in observations {
            if let Some(summary) = round_of.get(&o.version) {
                client_rounds.push(ClientRound {
                    round: summary.round.0,
                    client: names[o.client].clone(),
                    holdout_rows: o.metrics.examples,
                    metrics: o.metrics.values,
                    epsilon: o.epsilon,
                });
            }
        }
        Self {
            settings: SimulationSettings {
                dataset: sim.source.describe(),
                clients: names.len(),
                rounds: sim.rounds,
                clients_per_round: sim.clients_per_round,
                strategy: sim.strategy.clone(),
                hidden: sim.hidden.clone(),
                partition: sim.partition.to_string(),
                epsilon: sim.epsilon,
                secure_aggregation: sim.secure_aggregation,
                seed: sim.seed,
                transport: sim.transport,
                conditions: sim.conditions,
                round_deadline_secs: sim.round_deadline_secs,
                min_clients: sim.min_clients_for(names.len()),
            },
            primary_metric: primary,
            rounds,
            client_rounds,
            partitions,
            epsilon,
            model_sha256: parameters_sha256(&run.global),
            model_version: run.version.0,
            wall_seconds,
            simulated_seconds: timeline.map(|t| {
                let finished = t.marks.iter().find(|(_, m)| *m == Mark::Finished).or(t.marks.last());
                finished.map_or(0.0, |(at, _)| seconds(at))
            }),
            failed_attempts: timeline
                .into_iter()
                .flat_map(|t| &t.marks)
                .filter_map(|(at, m)| match *m {
                    Mark::Failed { round, updates, required } => {
                        Some(FailedAttempt { round: round.0, updates, required, simulated_seconds: seconds(at) })
                    }
                    _ => None,
                })
                .collect(),
            insecure_seed: sim.seed.is_some(),
            work_dir,
        }
    }

    /// The primary metric of the final model, pooled exactly over every client's held-out rows.
    pub fn final_score(&self) -> Option<f64> {
        self.rounds.last().and_then(|r| r.exact.get(&self.primary_metric).copied())
    }

    /// Selected clients that dropped out, over every round.
    pub fn dropped(&self) -> usize {
        self.rounds.iter().map(|r| r.dropped).sum()
    }

    /// Messages refused as late, over every round.
    pub fn late(&self) -> usize {
        self.rounds.iter().map(|r| r.late).sum()
    }

    /// The largest ε any client spent (None without DP).
    pub fn max_epsilon(&self) -> Option<f64> {
        self.epsilon.iter().flatten().copied().reduce(f64::max)
    }
}

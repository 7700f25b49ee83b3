//! [`Simulation`]: a whole federation in one process, built like a deployment and run through its code.
//!
//! What is real: the coordinator's [`Host`](cohort_coordinator::host::Host) and round machine, its strategies,
//! influence bounds and registry; every client's node loop, DP-SGD, ledger, secure-aggregation client and
//! evaluation releases; a federation CA with one certificate per client. What is swapped: the transport (the
//! in-memory [`MemoryLink`] by default, loopback mutual TLS with [`Transport::Mtls`]) and where a node's rows come
//! from (its partition of one loaded data set, by index, instead of its own CSV file).
//!
//! ```no_run
//! # async fn run() -> Result<(), cohort_sim::SimError> {
//! use cohort_sim::{Partition, Simulation, Source};
//! let report = Simulation::new("digits".parse()?)
//!     .clients(100)
//!     .rounds(20)
//!     .partition(Partition::Dirichlet { alpha: 0.5 })
//!     .no_dp()
//!     .insecure_seed(7)
//!     .run()
//!     .await?;
//! println!("accuracy {:?}, model {}", report.final_score(), report.model_sha256);
//! # Ok(()) }
//! ```

use crate::conditions::{Conditions, Profile};
use crate::dataset::{Source, SourceError, Table};
use crate::link::{MemoryLink, Misses, SimulatedNode};
use crate::network::{Network, VirtualClock};
use crate::partition::{Partition, PartitionError, Rows};
use crate::report::Timeline;
use crate::report::{ClientPartition, SimulationReport};
use crate::threads::{self, NodeJob};
use crate::work::{SimWork, Sink};
use cohort_client::node::{ClientError, NodeReport, run_prepared, run_session};
use cohort_client::privacy::PrivateWork;
use cohort_client::work::TrainingWork;
use cohort_coordinator::round::Event;
use cohort_coordinator::server::{self, Hosted, plan_of};
use cohort_coordinator::{Coordinator, CoordinatorError, RunReport};
use cohort_core::Round;
use cohort_core::config::{
    ClientConfig, ClientSecureAggregation, CoordinatorConfig, CoordinatorEndpoint, DataSection, ModelSection,
    PrivacySection, SecureAggregationMode, SecureAggregationSection, StrategyConfig, TlsSection, TrainingSection,
};
use cohort_core::data::{DataError, Split, prepare_rows};
use cohort_core::pki::{self, NodeFiles, PkiError};
use cohort_core::secret::NodeSecret;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The federation id of every simulation.
pub const FEDERATION: &str = "cohort-sim";

/// The round deadline of a simulation unless told otherwise: a deployment's default.
pub const DEFAULT_ROUND_DEADLINE_SECS: u64 = 120;

/// The share of each client's rows held out for its evaluations.
pub const HOLDOUT_FRACTION: f64 = 0.2;

/// Where a simulation keeps its federation's files unless told otherwise: a memory-backed file system, when the
/// machine has one (else the system's temporary directory).
const MEMORY_BACKED_TMP: &str = "/dev/shm";

/// How the simulated nodes reach the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// [`MemoryLink`]: the protobuf messages of the gRPC service, handed over in memory.
    #[default]
    Memory,
    /// gRPC over mutual TLS on 127.0.0.1, one connection per node.
    Mtls,
}

/// A simulation that could not be set up or did not finish. Each says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The data set could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A `--dataset`-style argument could not be understood.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The rows cannot be dealt out as asked.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// The simulation's settings make no federation (the coordinator's own validation says why).
    #[error("the simulated federation is misconfigured: {0}")]
    Config(String),
    /// The work directory cannot be used.
    #[error("work directory {path}: {message}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The federation PKI could not be made.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The coordinator failed.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// A node failed: the run is not a valid result.
    #[error("client {name} failed: {error}")]
    Client {
        /// The node.
        name: String,
        /// Its error.
        error: ClientError,
    },
    /// Every node waits for the coordinator and the coordinator for a message: a simulation that cannot end. Or
    /// (a simulator bug) a message broke virtual-time order, so the result might not replay.
    #[error("{0}")]
    Stalled(String),
    /// The federation stopped before its last round.
    #[error("the federation stopped after round {completed} of {rounds}: {reason}")]
    Stopped {
        /// Rounds completed.
        completed: u64,
        /// Rounds asked for.
        rounds: u64,
        /// Why.
        reason: String,
    },
}

/// A simulation's settings, built with [`Simulation::new`] and its setters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Simulation {
    /// The data set.
    pub source: Source,
    /// Clients (None: 10, or one per value for [`Partition::Column`]).
    pub clients: Option<usize>,
    /// Rounds.
    pub rounds: u64,
    /// Clients sampled per round (None: all).
    pub clients_per_round: Option<usize>,
    /// The aggregation strategy.
    pub strategy: StrategyConfig,
    /// Hidden layer widths (empty: logistic or linear regression).
    pub hidden: Vec<usize>,
    /// How rows are dealt out.
    pub partition: Partition,
    /// Each client's ε budget (None: no DP).
    pub epsilon: Option<f64>,
    /// Threshold-RLWE secure aggregation.
    pub secure_aggregation: bool,
    /// INSECURE: the seed of every random choice, DP noise included (None: the operating system's randomness).
    pub seed: Option<u64>,
    /// The transport.
    pub transport: Transport,
    /// Local epochs per round.
    pub local_epochs: u32,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Local batch size.
    pub batch_size: usize,
    /// Where the federation's files go (None: a temporary directory, on `/dev/shm` when there is one, removed
    /// afterwards).
    pub work_dir: Option<PathBuf>,
    /// The clients' machines, links and dropouts, in virtual time (the memory transport only).
    pub conditions: Conditions,
    /// How long a round (and each stage of a secure one) waits for stragglers, in seconds.
    pub round_deadline_secs: u64,
    /// The fewest updates a round can be aggregated from (None: half of each round's sample, rounded up).
    pub min_clients: Option<usize>,
    /// Threads the nodes run on (None: one per core). Results do not depend on it.
    pub threads: Option<usize>,
}

impl Simulation {
    /// A simulation of `source` with the defaults: 10 clients, 10 rounds, all clients every round, FedAvg,
    /// logistic (or linear) regression, IID, DP at ε = 3 per client, no secure aggregation, OS randomness, the
    /// in-memory transport, one local epoch at learning rate 0.5 in batches of 32, the default [`Conditions`]
    /// (no dropouts), a 120 s round deadline, and rounds that need half their sample.
    pub fn new(source: Source) -> Self {
        Self {
            source,
            clients: None,
            rounds: 10,
            clients_per_round: None,
            strategy: StrategyConfig::Fedavg,
            hidden: Vec::new(),
            partition: Partition::Iid,
            epsilon: Some(3.0),
            secure_aggregation: false,
            seed: None,
            transport: Transport::Memory,
            local_epochs: 1,
            learning_rate: 0.5,
            batch_size: 32,
            work_dir: None,
            conditions: Conditions::default(),
            round_deadline_secs: DEFAULT_ROUND_DEADLINE_SECS,
            min_clients: None,
            threads: None,
        }
    }

    /// Number of clients.
    pub fn clients(mut self, clients: usize) -> Self {
        self.clients = Some(clients);
        self
    }

    /// Number of rounds.
    pub fn rounds(mut self, rounds: u64) -> Self {
        self.rounds = rounds;
        self
    }

    /// Clients sampled per round.
    pub fn clients_per_round(mut self, k: usize) -> Self {
        self.clients_per_round = Some(k);
        self
    }

    /// The aggregation strategy.
    pub fn strategy(mut self, strategy: StrategyConfig) -> Self {
        self.strategy = strategy;
        self
    }

    /// Hidden layer widths (an MLP; empty for a one-layer model).
    pub fn hidden(mut self, hidden: Vec<usize>) -> Self {
        self.hidden = hidden;
        self
    }

    /// How rows are dealt out.
    pub fn partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self
    }

    /// DP-SGD with this ε budget per client.
    pub fn dp_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = Some(epsilon);
        self
    }

    /// No DP: exact updates and metrics (no privacy for the simulated patients).
    pub fn no_dp(mut self) -> Self {
        self.epsilon = None;
        self
    }

    /// Threshold-RLWE secure aggregation on or off.
    pub fn secure_aggregation(mut self, on: bool) -> Self {
        self.secure_aggregation = on;
        self
    }

    /// INSECURE: every random choice, DP noise included, from `seed`. Reproducible, and NOT private.
    pub fn insecure_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The transport.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Local training settings.
    pub fn local_training(mut self, epochs: u32, learning_rate: f64, batch_size: usize) -> Self {
        (self.local_epochs, self.learning_rate, self.batch_size) = (epochs, learning_rate, batch_size);
        self
    }

    /// The clients' machines, links and dropout rate (virtual time; the memory transport only).
    pub fn conditions(mut self, conditions: Conditions) -> Self {
        self.conditions = conditions;
        self
    }

    /// The round deadline, in seconds.
    pub fn round_deadline(mut self, seconds: u64) -> Self {
        self.round_deadline_secs = seconds;
        self
    }

    /// The fewest updates a round can be aggregated from.
    pub fn min_clients(mut self, min: usize) -> Self {
        self.min_clients = Some(min);
        self
    }

    /// The number of threads the nodes run on (the results are the same for any number).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Keep the federation's files (PKI, ledgers, registry) in `dir`, which must not hold a federation yet.
    pub fn work_dir(mut self, dir: PathBuf) -> Self {
        self.work_dir = Some(dir);
        self
    }

    /// Runs the simulation to its last round.
    ///
    /// # Errors
    /// [`SimError`] when it cannot be set up, a node fails, or the federation stops early.
    pub async fn run(self) -> Result<SimulationReport, SimError> {
        self.run_observed(|_| {}).await
    }

    /// [`Simulation::run`], handing `observe` a [`Watch`] on the run (for a progress display) as soon as the
    /// federation exists.
    ///
    /// # Errors
    /// As [`Simulation::run`].
    pub async fn run_observed(self, observe: impl FnOnce(Watch)) -> Result<SimulationReport, SimError> {
        let started = Instant::now();
        self.conditions.validate().map_err(|e| SimError::Config(e.to_string()))?;
        if self.round_deadline_secs == 0 {
            return Err(SimError::Config("the round deadline must be at least 1 second".into()));
        }
        if self.transport == Transport::Mtls && self.conditions.dropout_rate > 0.0 {
            return Err(SimError::Config(
                "dropouts are simulated in virtual time, on the memory transport; the mTLS transport runs in real \
                 time (drop --dropout-rate or use --transport memory)"
                    .into(),
            ));
        }
        let (scratch, dir) = match &self.work_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                // Memory-backed when the machine has one: the federation's fsyncs then cost nothing, and its
                // files are removed when the run ends.
                let base = Path::new(MEMORY_BACKED_TMP);
                let base = if base.is_dir() { base.to_owned() } else { std::env::temp_dir() };
                let temp = tempfile::Builder::new()
                    .prefix("cohort-sim-")
                    .tempdir_in(&base)
                    .map_err(|e| SimError::WorkDir { path: base.clone(), message: e.to_string() })?;
                let path = temp.path().to_owned();
                (Some(temp), path)
            }
        };
        let work_err = |e: &dyn std::fmt::Display| SimError::WorkDir { path: dir.clone(), message: e.to_string() };
        std::fs::create_dir_all(&dir).map_err(|e| work_err(&e))?;
        if dir.join(cohort_coordinator::registry::DB_FILE).exists() {
            return Err(work_err(&"it already holds a federation's registry; give the simulation a new directory"));
        }
        let mut seeds = Seeds::new(self.seed);
        let mut data_rng = seeds.rng();
        let column = match &self.partition {
            Partition::Column { name } => Some(name.as_str()),
            _ => None,
        };
        // A synthetic data set needs the client count first; a column partition decides it from the data.
        let provisional = self.clients.unwrap_or(10);
        let table = Table::load(&self.source, column, provisional, &dir.join("data"), &mut data_rng)?;
        let labels = table.partition_labels();
        let classes = labels.iter().max().map_or(0, |m| m + 1);
        let rows = Rows { labels: &labels, column: table.column.as_deref() };
        let clients = self.partition.clients(rows, self.clients)?;
        let parts = self.partition.assign(rows, clients, &mut seeds.rng())?;
        let names: Vec<String> = (1..=clients).map(|i| client_name(i, clients)).collect();

        let pki_dir = dir.join("pki");
        let coordinator_files = pki::local_federation(&pki_dir, FEDERATION)?;
        let config = self.coordinator_config(&dir, &table, &names, &coordinator_files)?;
        let plan = plan_of(&config)?;
        let mut coordinator_rng = self.seed.map(|_| ChaCha20Rng::seed_from_u64(seeds.next()));

        // The coordinator: hosted in memory on a virtual clock, or listening on loopback in real time.
        let clock = VirtualClock::new();
        let (hosted, addr) = match self.transport {
            Transport::Memory => {
                (Some(server::host_with_clock(&config, coordinator_rng.take(), Box::new(clock.clone()))?), None)
            }
            Transport::Mtls => {
                let coordinator = Coordinator::bind_with_rng(&config, coordinator_rng.take()).await?;
                let addr = coordinator.local_addr().map_err(|e| work_err(&e))?;
                (None, Some((coordinator, addr)))
            }
        };

        let sink: Sink = Arc::new(Mutex::new(Vec::new()));
        let mut partitions = Vec::with_capacity(clients);
        let mut nodes = Vec::with_capacity(clients);
        let mut sizes = Vec::with_capacity(clients);
        for (index, (name, part)) in names.iter().zip(&parts).enumerate() {
            let files = pki::local_client(&pki_dir, name)?;
            let node_dir = dir.join("nodes").join(name);
            let seed = self.seed.map(|_| seeds.next());
            let secret = match seed {
                Some(seed) => NodeSecret::create_insecure_seeded(&node_dir, seed),
                None => NodeSecret::load_or_create(&node_dir),
            }
            .map_err(|e| work_err(&e))?;
            let origin = PathBuf::from(format!("<partition of {name}>"));
            let rows = table.data.select(part);
            let split = Split::of(&rows, HOLDOUT_FRACTION, 0, &secret);
            let local = prepare_rows(&rows, &split, &origin, &table.schema, &secret)?;
            drop(rows);
            // The split, as indices into the whole data set, for other tools to replay.
            partitions.push(ClientPartition {
                name: name.clone(),
                labels: label_counts(part, &labels, classes),
                train: split.train.iter().map(|&r| part[r]).collect(),
                holdout: split.holdout.iter().map(|&r| part[r]).collect(),
            });
            let client_config = self.client_config(name, &files, &node_dir, addr.as_ref().map(|(_, a)| *a));
            let mut work = match self.epsilon {
                Some(_) => {
                    let work = PrivateWork::new(name, node_dir.clone(), client_config.privacy.clone());
                    SimWork::private(
                        if let Some(seed) = seed { work.with_insecure_seed(seed) } else { work },
                        index,
                        sink.clone(),
                    )
                }
                None => {
                    let work = TrainingWork::new();
                    SimWork::plain(if let Some(seed) = seed { work.with_seed(seed) } else { work }, index, sink.clone())
                }
            };
            let client_err = |error| SimError::Client { name: name.clone(), error };
            cohort_client::node::LocalWork::prepare(&mut work, &plan, &local).map_err(client_err)?;
            sizes.push((local.train.rows(), local.holdout.rows()));
            let certificate = cohort_core::tls::load_certs(&files.cert)
                .map_err(|e| work_err(&e))?
                .into_iter()
                .next()
                .map(|c| c.to_vec());
            nodes.push((client_config, work, local, certificate));
        }
        drop(table);
        tracing::debug!(clients, seconds = started.elapsed().as_secs_f64(), "simulation set up");

        // Drawn after everything else, so that the conditions do not change the other random choices.
        let mut conditions_rng = seeds.rng();
        let profiles: Vec<Profile> = (0..clients).map(|_| self.conditions.profile(&mut conditions_rng)).collect();
        let misses: Misses = Arc::new(Mutex::new(Vec::new()));
        let mut network = None;

        // The nodes run on their own threads, one per core; the coordinator runs here.
        let mut jobs: Vec<NodeJob<NodeOutcome>> = Vec::with_capacity(clients);
        let coordinator = match (hosted, addr) {
            (Some(Hosted { host, .. }), _) => {
                observe(Watch { events: host.subscribe(), sink: sink.clone(), clients, clock: Some(clock.clone()) });
                let latencies: Vec<Duration> = profiles.iter().map(|p| p.latency).collect();
                let net = Network::new(host.clone(), clock, &latencies);
                network = Some(net.clone());
                let offline = Duration::from_secs(self.round_deadline_secs);
                let nodes = nodes.into_iter().zip(profiles).zip(sizes);
                for (index, (((config, mut work, local, certificate), profile), rows)) in nodes.enumerate() {
                    let rng = ChaCha20Rng::from_seed(conditions_rng.random());
                    let rate = self.conditions.dropout_rate;
                    let node =
                        SimulatedNode::new(net.clone(), index, profile, rows, rate, offline, rng, misses.clone());
                    let mut link = MemoryLink::simulated(host.clone(), &config.name, certificate, node);
                    let plan = plan.clone();
                    jobs.push(Box::pin(async move {
                        let mut report = NodeReport::default();
                        let result =
                            run_session(&mut link, &config, &mut work, &mut Some((plan, local)), &mut report).await;
                        // The link leaves the network as soon as the node is done.
                        drop(link);
                        (index, result.map(|()| report), work.spent())
                    }));
                }
                Box::pin(async move {
                    // The driver returns once every node is done.
                    net.drive().await.map_err(|e| SimError::Stalled(e.to_string()))?;
                    Ok(server::run_report(&host, Round(0)))
                }) as Running
            }
            (None, Some((coordinator, _))) => {
                observe(Watch { events: coordinator.subscribe(), sink: sink.clone(), clients, clock: None });
                for (index, (config, mut work, local, _)) in nodes.into_iter().enumerate() {
                    let plan = plan.clone();
                    jobs.push(Box::pin(async move {
                        let result = run_prepared(&config, &mut work, Some((plan, local))).await;
                        (index, result, work.spent())
                    }));
                }
                Box::pin(async move { Ok(coordinator.run(std::future::pending()).await?) })
            }
            (None, None) => unreachable!("a simulation hosts its coordinator in memory or on loopback"),
        };
        let (_threads, mut outcomes) = threads::spawn(jobs, self.threads);
        // A node that fails ends the run at once: its rounds would only wait out their deadlines.
        let mut epsilon = vec![None; clients];
        let mut finished = |outcome: Option<Result<NodeOutcome, threads::ThreadFailure>>| {
            let (index, result, spent) = outcome
                .ok_or_else(|| work_err(&"the node threads ended before every node finished"))?
                .map_err(|e| work_err(&e))?;
            result.map_err(|error| SimError::Client { name: names[index].clone(), error })?;
            epsilon[index] = spent;
            Ok::<(), SimError>(())
        };
        tokio::pin!(coordinator);
        let mut done = 0;
        let report = loop {
            tokio::select! {
                report = &mut coordinator => break report?,
                outcome = outcomes.recv(), if done < clients => {
                    finished(outcome)?;
                    done += 1;
                }
            }
        };
        for _ in done..clients {
            finished(outcomes.recv().await)?;
        }
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "simulation finished");
        if let Some(stopped) = &report.stopped {
            return Err(SimError::Stopped {
                completed: report.history.last().map_or(0, |s| s.round.0),
                rounds: self.rounds,
                reason: stopped.to_string(),
            });
        }
        let observations = std::mem::take(&mut *sink.lock().map_err(|_| work_err(&"the metrics sink is poisoned"))?);
        let timeline = match network {
            Some(network) => Some(Timeline {
                marks: network.marks(),
                misses: std::mem::take(&mut *misses.lock().map_err(|_| work_err(&"the dropout log is poisoned"))?),
            }),
            None => None,
        };
        let task = config.schema.task;
        let built = SimulationReport::build(
            &self,
            task,
            &names,
            partitions,
            &report,
            observations,
            timeline,
            epsilon,
            started.elapsed().as_secs_f64(),
            scratch.is_none().then(|| dir.clone()),
        );
        drop(scratch);
        Ok(built)
    }

    /// The fewest updates a round of a federation of `clients` needs: as set, or half of each round's sample.
    pub(crate) fn min_clients_for(&self, clients: usize) -> usize {
        self.min_clients.unwrap_or_else(|| self.clients_per_round.unwrap_or(clients).min(clients).div_ceil(2)).max(1)
    }

    fn coordinator_config(
        &self,
        dir: &Path,
        table: &Table,
        names: &[String],
        files: &NodeFiles,
    ) -> Result<CoordinatorConfig, SimError> {
        let config = CoordinatorConfig {
            federation_id: FEDERATION.into(),
            listen: "127.0.0.1:0".into(),
            data_dir: dir.to_owned(),
            tls: tls_section(files),
            roster: names.to_vec(),
            schema: table.schema.clone(),
            model: ModelSection { name: "sim".into(), hidden: self.hidden.clone() },
            training: TrainingSection {
                rounds: self.rounds,
                local_epochs: self.local_epochs,
                learning_rate: self.learning_rate,
                batch_size: self.batch_size,
                min_clients: self.min_clients_for(names.len()),
                round_deadline_secs: self.round_deadline_secs,
                clients_per_round: self.clients_per_round,
                max_round_failures: 3,
            },
            strategy: self.strategy.clone(),
            secure_aggregation: SecureAggregationSection {
                mode: if self.secure_aggregation {
                    SecureAggregationMode::ThresholdRlwe
                } else {
                    SecureAggregationMode::None
                },
                ..SecureAggregationSection::default()
            },
            gate: None,
            central_test_set: None,
            admission: Default::default(),
            influence: Default::default(),
        };
        config.validate().map_err(|e| SimError::Config(e.to_string()))?;
        Ok(config)
    }

    fn client_config(
        &self,
        name: &str,
        files: &NodeFiles,
        node_dir: &Path,
        addr: Option<std::net::SocketAddr>,
    ) -> ClientConfig {
        ClientConfig {
            name: name.to_owned(),
            federation_id: FEDERATION.into(),
            coordinator: CoordinatorEndpoint {
                url: addr.map_or_else(|| "memory://coordinator".to_owned(), |a| format!("https://{a}")),
                server_name: Some("localhost".into()),
            },
            tls: tls_section(files),
            // Never read: the node gets its partition in memory.
            data: DataSection {
                path: PathBuf::from(format!("<partition of {name}>")),
                holdout_fraction: HOLDOUT_FRACTION,
                split_seed: 0,
            },
            data_dir: node_dir.to_owned(),
            privacy: match self.epsilon {
                Some(epsilon_budget) => PrivacySection { enabled: true, epsilon_budget, ..PrivacySection::default() },
                None => PrivacySection { enabled: false, ..PrivacySection::default() },
            },
            secure_aggregation: ClientSecureAggregation {
                required: self.secure_aggregation,
                ..ClientSecureAggregation::default()
            },
        }
    }
}

/// What a node's task ends with: its index, its report or error, and the ε it spent.
type NodeOutcome = (usize, Result<NodeReport, ClientError>, Option<f64>);

/// The coordinator side of a running simulation, whichever the transport.
type Running = std::pin::Pin<Box<dyn Future<Output = Result<RunReport, SimError>> + Send>>;

/// A running simulation, as a progress display sees it.
#[derive(Debug)]
pub struct Watch {
    /// The coordinator's round events.
    pub events: broadcast::Receiver<Event>,
    /// Clients in the federation.
    pub clients: usize,
    sink: Sink,
    clock: Option<VirtualClock>,
}

impl Watch {
    /// The simulated time the federation has reached, in seconds (None in real time, over mTLS).
    pub fn simulated_seconds(&self) -> Option<f64> {
        self.clock.as_ref().map(|c| c.elapsed().as_secs_f64())
    }

    /// The largest cumulative ε any client has recorded so far (None without DP or before any release).
    pub fn max_epsilon(&self) -> Option<f64> {
        self.sink.lock().ok()?.iter().filter_map(|o| o.epsilon).reduce(f64::max)
    }
}

fn tls_section(files: &NodeFiles) -> TlsSection {
    TlsSection { ca_cert: files.ca_cert.clone(), cert: files.cert.clone(), key: files.key.clone() }
}

/// `client-007` of 100: zero-padded, so that name order is number order.
fn client_name(i: usize, of: usize) -> String {
    format!("client-{i:0width$}", width = of.to_string().len())
}

/// How many of the rows `part` have each of the `classes` labels.
fn label_counts(part: &[usize], labels: &[usize], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &row in part {
        counts[labels[row]] += 1;
    }
    counts
}

/// Where a simulation's randomness comes from: one seeded ChaCha20 stream that every other seed is drawn from
/// (INSECURE, for reproducible runs), or the operating system.
struct Seeds(Option<ChaCha20Rng>);

impl Seeds {
    fn new(seed: Option<u64>) -> Self {
        Self(seed.map(ChaCha20Rng::seed_from_u64))
    }

    /// The next derived seed (from the OS without a seed).
    fn next(&mut self) -> u64 {
        match &mut self.0 {
            Some(rng) => rng.next_u64(),
            None => rand::rng().random(),
        }
    }

    /// A generator for one purpose: seeded from the stream, or from the OS.
    fn rng(&mut self) -> ChaCha20Rng {
        match &mut self.0 {
            Some(rng) => ChaCha20Rng::seed_from_u64(rng.next_u64()),
            None => ChaCha20Rng::from_os_rng(),
        }
    }
}

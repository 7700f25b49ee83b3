//! The coordinator process: a TLS listener that admits only roster clients (in the handshake, see
//! [`cohort_core::admission`]) within connection caps ([`crate::limits`]), the tonic server with bounded HTTP/2
//! resources, a deadline ticker, and the run loop that ends when the federation is finished.

use crate::federation::{Clock, Federation, SystemClock};
use crate::gate::GateConfig;
use crate::host::Host;
use crate::limits::{ConnectionLimits, Http2Limits};
use crate::recorder::Recorder;
use crate::registry::Registry;
use crate::round::{Event, RoundMachine, RoundSettings, RoundSummary};
use crate::secure::SecureSettings;
use crate::service::FederationService;
use crate::strategy;
use cohort_core::admission::Admission;
use cohort_core::binding::FederationTrust;
use cohort_core::config::{CoordinatorConfig, FederationPlan, SecureAggregationMode};
use cohort_core::metrics::PrimaryMetric;
use cohort_core::model::parameters_from_bytes;
use cohort_core::protocol::{codec::MAX_MESSAGE_BYTES, proto};
use cohort_core::tls::{
    describe_server_handshake_failure, is_logged_certificate_refusal, peer_identity, server_config,
};
use cohort_core::{ModelVersion, NodeName, Round};
use cohort_crypto::SecAggParams;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// A coordinator that cannot start or failed while running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] cohort_core::config::ConfigError),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] cohort_core::tls::TlsError),
    /// The revocation list is unusable.
    #[error(transparent)]
    Revocation(#[from] cohort_core::admission::RevocationError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The strategy cannot run with the chosen settings.
    #[error("{0}")]
    Incompatible(String),
    /// The registry failed.
    #[error("registry: {0}")]
    Registry(String),
    /// The central test set cannot be used.
    #[error(transparent)]
    Central(#[from] crate::central::CentralError),
    /// The configured model cannot be built.
    #[error("model: {0}")]
    Model(#[from] cohort_core::model::ModelError),
}

/// The result of a finished federation.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Round summaries, in order.
    pub history: Vec<RoundSummary>,
    /// The final global model.
    pub global: Vec<f32>,
    /// Its version.
    pub version: ModelVersion,
    /// Versions registered by this run, with their gate decisions.
    pub recorded: Vec<crate::recorder::Recorded>,
    /// The round this run resumed after (0 for a fresh federation).
    pub resumed_after: Round,
    /// Why the federation stopped before its last round (None when it finished, or was shut down).
    pub stopped: Option<crate::round::Stopped>,
    /// Whether the federation ran its last round. False with no `stopped` reason: it was shut down (a signal)
    /// mid-run, and the round in progress was abandoned; a restart resumes after the last registered version.
    pub finished: bool,
}

/// The federation plan a coordinator config implies.
///
/// # Errors
/// [`CoordinatorError::Config`] when the model spec is invalid.
pub fn plan_of(config: &CoordinatorConfig) -> Result<FederationPlan, CoordinatorError> {
    Ok(FederationPlan {
        federation_id: config.federation_id.clone(),
        model_name: config.model.name.clone(),
        schema: config.schema.clone(),
        model: config.model_spec()?,
        training: config.training.clone(),
        strategy: config.strategy.clone(),
        secure_aggregation: config.secure_aggregation.clone(),
        influence: config.influence,
    })
}

/// The validation gate a config implies. Without a `primary_metric` the gate judges the task's own metric
/// (accuracy for classification, R² for regression), so a regression federation is never gated on accuracy it
/// does not report.
///
/// # Errors
/// [`CoordinatorError::Incompatible`] for an invalid `[gate]` section.
pub fn gate_of(config: &CoordinatorConfig) -> Result<GateConfig, CoordinatorError> {
    let mut gate: GateConfig = match &config.gate {
        Some(table) => table
            .clone()
            .try_into()
            .map_err(|e| CoordinatorError::Incompatible(format!("invalid [gate] section: {e}")))?,
        None => GateConfig::default(),
    };
    if !config.gate.as_ref().is_some_and(|t| t.contains_key("primary_metric")) {
        gate.primary_metric = PrimaryMetric::for_task(config.schema.task);
    }
    gate.validate().map_err(|e| CoordinatorError::Incompatible(e.to_string()))?;
    Ok(gate)
}

/// Refuses a strategy that needs each client's update (median, Krum) under secure aggregation.
///
/// # Errors
/// [`CoordinatorError::Incompatible`] naming the strategy.
pub fn check_strategy(strategy: &dyn strategy::Strategy, mode: SecureAggregationMode) -> Result<(), CoordinatorError> {
    if mode != SecureAggregationMode::None && strategy.needs_individual_updates() {
        return Err(CoordinatorError::Incompatible(format!(
            "strategy {} needs individual updates and cannot run with secure aggregation",
            strategy.name()
        )));
    }
    Ok(())
}

/// The secure-aggregation settings a config asks for (None for mode `none`), checked against the
/// roster: the threshold must be a strict majority of the clients selected per round.
///
/// # Errors
/// [`CoordinatorError::Incompatible`] naming the problem.
pub fn secure_settings(config: &CoordinatorConfig) -> Result<Option<SecureSettings>, CoordinatorError> {
    let section = &config.secure_aggregation;
    if section.mode == SecureAggregationMode::None {
        return Ok(None);
    }
    let incompatible = |e: crate::secure::SecureError| CoordinatorError::Incompatible(e.to_string());
    let settings = SecureSettings::new(
        &SecAggParams::default(),
        section.max_colluders,
        section.threshold,
        section.min_participants,
    )
    .map_err(incompatible)?;
    let per_round = config
        .training
        .clients_per_round
        .map_or(config.roster.len(), |k| k.max(config.training.min_clients))
        .min(config.roster.len());
    if settings.quorum() > config.roster.len() {
        return Err(CoordinatorError::Incompatible(format!(
            "secure aggregation with max_colluders = {} needs at least {} clients (threshold and min_participants) but the \
             roster has {}",
            section.max_colluders,
            settings.quorum(),
            config.roster.len()
        )));
    }
    settings.check_round_size(per_round).map_err(incompatible)?;
    Ok(Some(settings))
}

/// A federation's core, hosted and ready to be served by any transport.
#[derive(Debug)]
pub struct Hosted {
    /// The host.
    pub host: Arc<Host>,
    /// The round the federation resumes after (0 for a fresh one).
    pub resumed_after: Round,
    /// The secure-aggregation guarantee in one line, for operators (None without secure aggregation).
    pub guarantee: Option<String>,
}

/// Opens the registry in the configured data directory, resumes from its checkpoint (or draws the initial
/// model), and hosts the federation's core. `rng` replaces the operating system's randomness for client
/// selection, round ids and mask seeds: reproducible simulations only (see [`RoundMachine::with_rng`]).
///
/// # Errors
/// [`CoordinatorError`] for an incompatible strategy or gate, an unusable CA or central test set, or a registry
/// that cannot be opened.
pub fn host(config: &CoordinatorConfig, rng: Option<ChaCha20Rng>) -> Result<Hosted, CoordinatorError> {
    host_with_clock(config, rng, Box::new(SystemClock))
}

/// [`host`], with deadlines measured on `clock` instead of the system clock (a simulation's virtual clock).
///
/// # Errors
/// As [`host`].
pub fn host_with_clock(
    config: &CoordinatorConfig,
    mut rng: Option<ChaCha20Rng>,
    clock: Box<dyn Clock>,
) -> Result<Hosted, CoordinatorError> {
    let plan = plan_of(config)?;
    let strategy = strategy::from_config(&config.strategy);
    check_strategy(strategy.as_ref(), config.secure_aggregation.mode)?;
    let secure = secure_settings(config)?;
    let gate = gate_of(config)?;
    // Everything that can be checked without touching the data directory comes first, so a start that fails
    // on a bad test set leaves no state behind.
    let trust =
        FederationTrust::load(&config.tls.ca_cert).map_err(|e| CoordinatorError::Incompatible(e.to_string()))?;
    let central = match &config.central_test_set {
        Some(path) => {
            let central = crate::central::CentralEval::load(path, &config.schema, plan.model.clone())?;
            tracing::info!(rows = central.rows(), path = %path.display(), "central evaluation on the coordinator's test set");
            Some(central)
        }
        None => None,
    };
    let registry = Registry::open(&config.data_dir).map_err(|e| CoordinatorError::Registry(e.to_string()))?;
    let checkpoint =
        registry.load_checkpoint(&config.federation_id).map_err(|e| CoordinatorError::Registry(e.to_string()))?;
    let mut strategy = strategy;
    let (global, completed) = match checkpoint {
        Some(cp) => {
            let global =
                parameters_from_bytes(&cp.model_bytes).map_err(|e| CoordinatorError::Registry(e.to_string()))?;
            plan.model.check_parameters(&global).map_err(|e| {
                CoordinatorError::Registry(format!("checkpoint does not fit the configured model: {e}"))
            })?;
            strategy.restore(&cp.strategy_state);
            tracing::info!(round = cp.round.0, "resuming federation {} after round {}", config.federation_id, cp.round);
            (global, cp.round)
        }
        None => {
            let initial = match rng.as_mut() {
                Some(rng) => plan.model.initial_parameters(rng),
                None => plan.model.initial_parameters(&mut rand::rng()),
            }?;
            (initial, Round(0))
        }
    };
    let mut machine = RoundMachine::new(
        &config.federation_id,
        config.roster.iter().map(|n| NodeName(n.clone())),
        RoundSettings::from_plan(&plan),
        strategy,
        global,
        completed,
        ModelVersion(completed.0),
    );
    if let Some(rng) = rng {
        machine = machine.with_rng(rng);
    }
    let guarantee = secure.as_ref().map(SecureSettings::guarantee);
    if let Some(settings) = secure {
        tracing::info!(
            max_colluders = settings.max_colluders(),
            min_participants = settings.min_participants(),
            "{} (threshold RLWE, {})",
            settings.guarantee(),
            settings.context().summary().security
        );
        machine = machine.with_secure_aggregation(settings);
    }
    let config_hash = hex::encode(Sha256::digest(serde_json::to_vec(config).unwrap_or_default()));
    let mut recorder = Recorder::new(registry, plan.clone(), gate, config_hash);
    if let Some(central) = central {
        recorder = recorder.with_central(central);
    }
    let ledgers = recorder
        .ledger_copies(config.roster.iter().map(|n| NodeName(n.clone())))
        .map_err(|e| CoordinatorError::Registry(format!("the coordinator's copy of a ledger: {e}")))?;
    let federation = Federation::new(machine, plan.clone(), trust, clock, ledgers);
    let host = Host::new(federation, Some(recorder));
    Ok(Hosted { host, resumed_after: completed, guarantee })
}

/// How often the coordinator logs what it waits for.
pub const WAITING_LOG_EVERY: Duration = Duration::from_secs(5);

/// Ticks `host`'s deadlines until the federation finishes (plus a short grace period so nodes fetch the final
/// model) or `shutdown` resolves.
pub async fn run_until_finished(host: &Arc<Host>, shutdown: impl Future<Output = ()>) {
    let finished = async {
        tick_until_finished(host).await;
        // Let nodes collect the final model.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    };
    tokio::select! {
        () = finished => {}
        () = shutdown => {}
    }
}

/// Ticks `host`'s deadlines until the federation finishes, and returns at once then (an in-process caller that
/// can see its nodes waits for them instead of a grace period).
pub async fn tick_until_finished(host: &Arc<Host>) {
    /// The ticker stops when this future is dropped, whoever drops it.
    struct Ticker(tokio::task::JoinHandle<()>);
    impl Drop for Ticker {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _ticker = {
        let host = host.clone();
        Ticker(tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(250));
            let mut last_said = tokio::time::Instant::now();
            loop {
                interval.tick().await;
                host.tick();
                // While the federation waits, one line every few seconds says for whom and for how long.
                if last_said.elapsed() >= WAITING_LOG_EVERY {
                    if let Some(line) = host.with_federation(|f| f.waiting_line()) {
                        tracing::info!("{line}");
                    }
                    last_said = tokio::time::Instant::now();
                }
            }
        }))
    };
    let mut watch = host.watch();
    while !host.with_federation(|f| f.machine().is_finished()) {
        if watch.changed().await.is_err() {
            break;
        }
    }
}

/// What `host`'s federation did, for its run report.
pub fn run_report(host: &Host, resumed_after: Round) -> RunReport {
    let (history, global, version, stopped, finished) = host.with_federation(|f| {
        let m = f.machine();
        (
            m.history().to_vec(),
            m.global().to_vec(),
            m.version(),
            m.stopped().cloned(),
            m.is_finished() && m.stopped().is_none(),
        )
    });
    RunReport { history, global, version, recorded: host.recorded(), resumed_after, stopped, finished }
}

/// A coordinator bound to its address, ready to run.
pub struct Coordinator {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: ConnectionLimits,
    http2: Http2Limits,
    shared: Arc<Host>,
    admission: Arc<Admission>,
    resumed_after: Round,
    guarantee: Option<String>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Loads TLS material, hosts the federation's core ([`host`]) and binds the listen address.
    ///
    /// # Errors
    /// [`CoordinatorError`] for bad TLS material, an unbindable address or an incompatible strategy.
    pub async fn bind(config: &CoordinatorConfig) -> Result<Self, CoordinatorError> {
        Self::bind_with_rng(config, None).await
    }

    /// [`Coordinator::bind`], with `rng` in place of the operating system's randomness for the initial model,
    /// client selection, round ids and mask seeds: reproducible simulations only.
    ///
    /// # Errors
    /// As [`Coordinator::bind`].
    pub async fn bind_with_rng(config: &CoordinatorConfig, rng: Option<ChaCha20Rng>) -> Result<Self, CoordinatorError> {
        // TLS material is checked before the data directory is touched, so a start that fails on a missing
        // certificate leaves no state behind.
        config.admission.validate()?;
        let admission =
            Arc::new(Admission::new(config.roster.iter().cloned(), config.admission.revocation_list.as_deref())?);
        let tls = server_config(&config.tls.files(), admission.clone())?;
        let Hosted { host, resumed_after, guarantee } = host(config, rng)?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| CoordinatorError::Bind { addr: config.listen.clone(), source })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            connections: ConnectionLimits::new(&config.admission),
            http2: Http2Limits::new(&config.admission),
            shared: host,
            admission,
            resumed_after,
            guarantee,
        })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// The socket's error, if it has none.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The round this coordinator resumes after (0 for a fresh federation).
    pub fn resumed_after(&self) -> Round {
        self.resumed_after
    }

    /// Subscribes to round events (for progress displays).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.shared.subscribe()
    }

    /// Serves until the federation finishes (plus a short grace period so nodes fetch the final model) or
    /// `shutdown` resolves.
    ///
    /// # Errors
    /// [`CoordinatorError::Transport`] when the gRPC server fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<RunReport, CoordinatorError> {
        self.serve(shutdown, |service| service).await
    }

    /// The secure-aggregation guarantee in one line, for operators (None without secure aggregation).
    pub fn guarantee(&self) -> Option<&str> {
        self.guarantee.as_deref()
    }

    /// As [`Coordinator::run`], serving the gRPC API through `wrap(service)`: a layer of the caller's (logging,
    /// fault injection in tests) around the coordinator's own [`FederationService`].
    ///
    /// # Errors
    /// [`CoordinatorError::Transport`] when the gRPC server fails.
    pub async fn serve<S: proto::federation_server::Federation>(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        wrap: impl FnOnce(FederationService) -> S,
    ) -> Result<RunReport, CoordinatorError> {
        let Self { listener, acceptor, connections, http2, shared, admission, resumed_after, guarantee: _ } = self;
        let (conn_tx, conn_rx) = tokio::sync::mpsc::channel(64);
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, connections, conn_tx));
        let stop = {
            let host = shared.clone();
            async move { run_until_finished(&host, shutdown).await }
        };
        let service = proto::federation_server::FederationServer::new(wrap(
            FederationService::new(shared.clone()).with_admission(admission),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let result = http2
            .apply(tonic::transport::Server::builder())
            .add_service(service)
            .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stop)
            .await;
        accept_task.abort();
        result?;
        Ok(run_report(&shared, resumed_after))
    }
}

/// A connection handed to the gRPC server: the TLS stream and its place under the connection caps.
type Admitted = crate::limits::Counted<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// Accepts TCP connections and completes TLS handshakes concurrently, within the global connection cap and the
/// handshake timeout; the TLS verifier refuses every certificate the admission policy does not admit, so only
/// roster clients reach the gRPC layer, and no more than the per-node cap of connections per node. Every refusal
/// is logged once, with the peer address (the verifier's log line carries it through the `handshake` span).
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    out: tokio::sync::mpsc::Sender<Result<Admitted, std::io::Error>>,
) {
    use tracing::Instrument;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limits.connection_slot() else {
            tracing::warn!(%peer, max = limits.max_connections(), "refused TCP connection: the coordinator holds its maximum of connections");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let out = out.clone();
        let limits = limits.clone();
        let handshake = async move {
            let tls = match tokio::time::timeout(limits.handshake_timeout(), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) if is_logged_certificate_refusal(&err) => return,
                Ok(Err(err)) => {
                    tracing::warn!("refused TLS connection: {}", describe_server_handshake_failure(&err));
                    return;
                }
                Err(_) => {
                    tracing::warn!("TLS handshake timed out after {} s", limits.handshake_timeout().as_secs());
                    return;
                }
            };
            let name = tls.get_ref().1.peer_certificates().and_then(|chain| peer_identity(chain).ok()).map(|(n, _)| n);
            // The verifier admitted the certificate, so it has a valid name.
            let Some(name) = name else { return };
            match limits.node_slot(&name, slot) {
                Ok(counted) => {
                    let _ = out.send(Ok(crate::limits::Counted::new(tls, counted))).await;
                }
                Err(open) => {
                    tracing::warn!(node = %name, open, "refused connection of node {name}: it already holds {open} connections (admission.max_connections_per_node)");
                }
            }
        };
        tokio::spawn(handshake.instrument(tracing::info_span!("handshake", %peer)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{AggregateError, Strategy, WeightedSum};

    struct Median;

    impl Strategy for Median {
        fn name(&self) -> &'static str {
            "median"
        }
        fn hyperparameters(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn needs_individual_updates(&self) -> bool {
            true
        }
        fn aggregate(&mut self, _global: &[f32], _deltas: &WeightedSum) -> Result<Vec<f32>, AggregateError> {
            Err(AggregateError::Empty)
        }
    }

    fn config(task: &str, gate: &str) -> CoordinatorConfig {
        let text = format!(
            "federation_id = \"f\"\ndata_dir = \"d\"\nroster = [\"a\"]\n[tls]\nca_cert = \"c\"\ncert = \"c\"\nkey = \"k\"\n\
             [schema]\nfeatures = [\"x\"]\nlabel = \"y\"\ntask = \"{task}\"\n{gate}"
        );
        toml::from_str(&text).expect("a config")
    }

    /// A regression federation is gated on R² unless the operator names another metric.
    #[test]
    fn the_gate_judges_the_tasks_own_metric_by_default() {
        assert_eq!(gate_of(&config("regression", "")).unwrap().primary_metric, PrimaryMetric::R2);
        assert_eq!(gate_of(&config("binary", "")).unwrap().primary_metric, PrimaryMetric::Accuracy);
        let gated = config("regression", "[gate]\nmax_regression = 0.1");
        assert_eq!(gate_of(&gated).unwrap().primary_metric, PrimaryMetric::R2);
        let chosen = config("regression", "[gate]\nprimary_metric = \"mse\"");
        assert_eq!(gate_of(&chosen).unwrap().primary_metric, PrimaryMetric::Mse);
    }

    #[test]
    fn strategies_needing_individual_updates_are_refused_under_secure_aggregation() {
        let err = check_strategy(&Median, SecureAggregationMode::ThresholdRlwe).unwrap_err();
        assert!(err.to_string().contains("median needs individual updates"), "{err}");
        assert!(check_strategy(&Median, SecureAggregationMode::None).is_ok());
        assert!(
            check_strategy(&strategy::FedAdam::new(0.1, 0.9, 0.99, 1e-3), SecureAggregationMode::ThresholdRlwe).is_ok()
        );
    }
}
